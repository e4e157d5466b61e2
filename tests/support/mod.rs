//! The netns lab of DESIGN.md: a `switch` namespace with a bridge, and hosts (client, lb,
//! backends) attached to it by veth pairs, each with `eth0`. Names are unique per lab, so
//! tests run in parallel, and everything is removed on drop, panics included.
//!
//! Building the lab needs root. Without it a test is skipped with a message, except under
//! `CI=true`, where it fails: CI must never pass by skipping.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

pub mod cluster;
pub mod frames;
pub mod kube;
pub mod neigh;
pub mod traffic;

pub use xlb::io::packet_socket::enter_netns as enter_netns_for_tests;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use xlb::wire::EthernetAddress;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A number unique in this test process (for file and namespace names).
pub fn next_id() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "`{cmd} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// A lab: one switch and the hosts attached to it.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    pub dir: PathBuf,
}

/// A host of the lab.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub mac: EthernetAddress,
}

impl Lab {
    /// A new lab with an empty switch, or `None` (with a message) where the lab cannot be
    /// built because this is not root and not CI.
    pub fn new(test: &str) -> Option<Lab> {
        if !is_root() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("lab test {test}: needs root to build network namespaces, and CI=true forbids skipping");
            }
            eprintln!("SKIPPED lab test {test}: needs root (network namespaces, XDP)");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("xl-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        fs::create_dir_all(&dir).unwrap();
        let mut lab = Lab { prefix, namespaces: Vec::new(), dir };
        let sw = lab.add_ns("switch");
        run("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
        run("ip", &["-n", &sw, "link", "set", "br0", "up"]);
        // A switch forwards frames; it does not judge their IP headers. Where br_netfilter
        // is loaded (Docker loads it), bridged traffic would otherwise go through iptables
        // and lose every frame with a bad IP header, which the hostile-frame tests send.
        for t in ["iptables", "ip6tables", "arptables"] {
            let key = format!("net.bridge.bridge-nf-call-{t}=0");
            let _ = Command::new("ip").args(["netns", "exec", &sw, "sysctl", "-qw", &key]).output();
        }
        Some(lab)
    }

    fn add_ns(&mut self, role: &str) -> String {
        let ns = format!("{}-{role}", self.prefix);
        run("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    fn switch(&self) -> &str {
        &self.namespaces[0]
    }

    /// The state directory of the xlb started in `host` (tmpfs; removed with the lab).
    pub fn state_dir(&self, host: &Host) -> PathBuf {
        Path::new("/dev/shm").join(&self.prefix).join(&host.ns)
    }

    /// Sets the switch's port `port` (`p-ROLE`) down or up: the host's link goes with it.
    #[allow(dead_code)] // not every test binary takes links down
    pub fn switch_link(&self, port: &str, up: bool) {
        run("ip", &["-n", self.switch(), "link", "set", port, if up { "up" } else { "down" }]);
    }

    /// Runs `nft ARGS` in the switch's namespace (e.g. to drop some frames on the bridge).
    pub fn switch_nft(&self, args: &[&str]) {
        let mut full = vec!["netns", "exec", self.switch(), "nft"];
        full.extend_from_slice(args);
        run("ip", &full);
    }

    /// Adds a host with `eth0` on the switch and these addresses (CIDR notation; IPv6
    /// ones without duplicate-address detection). `queues` > 1 makes a multi-queue veth.
    pub fn host(&mut self, role: &str, addrs: &[&str], queues: u32) -> Host {
        let ns = self.add_ns(role);
        let mac = self.plug(&ns, "eth0", &format!("p-{role}"), "br0", addrs, queues);
        Host { ns, mac }
    }

    /// A second segment: bridge `br` on the switch, for hosts of [`Lab::host_on`] and
    /// interfaces of [`Lab::attach`].
    #[allow(dead_code)] // only the tests of several interfaces use it
    pub fn segment(&self, br: &str) {
        run("ip", &["-n", self.switch(), "link", "add", br, "type", "bridge", "mcast_snooping", "0"]);
        run("ip", &["-n", self.switch(), "link", "set", br, "up"]);
    }

    /// Like [`Lab::host`], with `eth0` on bridge `br` (see [`Lab::segment`]).
    #[allow(dead_code)]
    pub fn host_on(&mut self, br: &str, role: &str, addrs: &[&str]) -> Host {
        let ns = self.add_ns(role);
        let mac = self.plug(&ns, "eth0", &format!("p-{role}"), br, addrs, 1);
        Host { ns, mac }
    }

    /// A host whose interfaces are `links`, each (name, bridge, addresses); its MAC is the
    /// first one's.
    #[allow(dead_code)]
    pub fn host_with(&mut self, role: &str, links: &[(&str, &str, &[&str])]) -> Host {
        let ns = self.add_ns(role);
        let macs: Vec<EthernetAddress> = links
            .iter()
            .enumerate()
            .map(|(k, (dev, br, addrs))| self.plug(&ns, dev, &format!("p-{role}-{k}"), br, addrs, 1))
            .collect();
        Host { ns, mac: macs[0] }
    }

    /// Gives `host` another interface `dev` on bridge `br`, with these addresses; its MAC.
    #[allow(dead_code)]
    pub fn attach(&self, host: &Host, dev: &str, br: &str, addrs: &[&str]) -> EthernetAddress {
        let port = format!("p{}-{dev}", self.namespaces.iter().position(|n| *n == host.ns).unwrap_or(0));
        self.plug(&host.ns, dev, &port, br, addrs, 1)
    }

    /// A veth pair: `dev` in `ns` (up, with `addrs`, sending full checksums), `port` on
    /// bridge `br` of the switch.
    fn plug(&self, ns: &str, dev: &str, port: &str, br: &str, addrs: &[&str], queues: u32) -> EthernetAddress {
        let q = queues.to_string();
        run(
            "ip",
            &[
                "-n",
                self.switch(),
                "link",
                "add",
                port,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                dev,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
                "netns",
                ns,
            ],
        );
        run("ip", &["-n", self.switch(), "link", "set", port, "master", br, "up"]);
        run("ip", &["netns", "exec", ns, "sysctl", "-qw", &format!("net.ipv6.conf.{dev}.accept_dad=0")]);
        run("ip", &["-n", ns, "link", "set", dev, "up"]);
        // A veth hands frames on with the TCP/UDP checksum still to be filled in
        // (CHECKSUM_PARTIAL); AF_XDP copies the bytes as they are, so a frame xlb forwards
        // would reach the backend with a half-done checksum. Real NICs put full checksums
        // on the wire: make the lab's senders do the same.
        run("ip", &["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
        for a in addrs {
            if a.contains(':') {
                run("ip", &["-n", ns, "addr", "add", a, "dev", dev, "nodad"]);
            } else {
                run("ip", &["-n", ns, "addr", "add", a, "dev", dev]);
            }
        }
        link_mac(ns, dev)
    }

    /// Runs a command inside a host's namespace.
    pub fn exec(&self, host: &Host, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &host.ns];
        full.extend_from_slice(args);
        Command::new("ip").args(&full).output().unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of every veth pair, and so the pair.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "pids", ns]).output().map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_dir_all(Path::new("/dev/shm").join(&self.prefix));
    }
}

/// Makes `host` a DSR backend for `vips`: the VIPs on its loopback, ARP for them never
/// answered by it (arp_ignore/arp_announce), and a TCP + UDP server on `port` that answers
/// with `name`. The server dies with the lab.
pub fn dsr_backend(lab: &Lab, host: &Host, name: &str, vips: &[&str], port: u16) {
    for (k, v) in [("arp_ignore", "1"), ("arp_announce", "2")] {
        for scope in ["all", "eth0"] {
            run("ip", &["netns", "exec", &host.ns, "sysctl", "-qw", &format!("net.ipv4.conf.{scope}.{k}={v}")]);
        }
    }
    for vip in vips {
        let cidr = if vip.contains(':') { format!("{vip}/128") } else { format!("{vip}/32") };
        run("ip", &["-n", &host.ns, "addr", "add", &cidr, "dev", "lo"]);
    }
    let v6 = vips.iter().any(|v| v.contains(':'));
    start_servers(lab, host, name, port, v6, Some(vips[0]));
}

/// (Re)starts the servers of a DSR backend whose VIPs are already set up.
#[allow(dead_code)]
pub fn dsr_servers(lab: &Lab, host: &Host, name: &str, vip: &str, port: u16) {
    start_servers(lab, host, name, port, vip.contains(':'), Some(vip));
}

/// A lab with a client and an lb host on 10.N.0.0/24 and three backends (10.N.0.11-13) that
/// serve a DSR service on VIP:80 (the VIP on their loopback) and a SNAT one on their own
/// address:8080; with the two `--service` specs (DSR on VIP:80, SNAT on VIP:81).
#[allow(dead_code)] // not every test binary serves both modes
pub fn dsr_and_snat_lab(test: &str, net: u8, vip: &str) -> Option<(Lab, Host, Host, [String; 2])> {
    let mut lab = Lab::new(test)?;
    let client = lab.host("client", &[&format!("10.{net}.0.1/24")], 1);
    let lb = lab.host("lb", &[&format!("10.{net}.0.2/24")], 1);
    let (mut dsr, mut snat) = (Vec::new(), Vec::new());
    for i in 1..=3 {
        let addr = format!("10.{net}.0.{}", 10 + i);
        let b = lab.host(&format!("backend-{i}"), &[&format!("{addr}/24")], 1);
        dsr_backend(&lab, &b, &format!("backend-{i}"), &[vip], 80);
        snat_backend(&lab, &b, &format!("backend-{i}-snat"), 8080, false);
        dsr.push(format!("{addr}:80"));
        snat.push(format!("{addr}:8080"));
    }
    let services = [format!("tcp:{vip}:80={}", dsr.join(",")), format!("tcp:{vip}:81={};mode=snat", snat.join(","))];
    Some((lab, client, lb, services))
}

/// Kills every process running in namespace `ns` (a backend's servers).
#[allow(dead_code)]
pub fn kill_processes(ns: &str) {
    let out = run("ip", &["netns", "pids", ns]);
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).output();
    }
}

/// Makes `host` a SNAT backend: plain servers on its own addresses (TCP and UDP on `port`).
#[allow(dead_code)] // not every test binary has SNAT tests
pub fn snat_backend(lab: &Lab, host: &Host, name: &str, port: u16, v6: bool) {
    start_servers(lab, host, name, port, v6, None);
}

/// Starts tests/support/servers.py in `host` and waits until its sockets are bound.
fn start_servers(lab: &Lab, host: &Host, name: &str, port: u16, v6: bool, vip: Option<&str>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/servers.py");
    let log = lab.dir.join(format!("{name}.log"));
    let port = port.to_string();
    let mut args = vec!["netns", "exec", &host.ns, "python3", script, name, &port, if v6 { "6" } else { "4" }];
    args.extend(vip);
    let mut child =
        Command::new("ip").args(&args).stdout(Stdio::piped()).stderr(fs::File::create(&log).unwrap()).spawn().unwrap();
    // Wait for "ready": the sockets are bound.
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap_or_else(|e| panic!("{name} did not start: {e}"));
    std::mem::forget(child); // killed with its namespace's processes when the lab drops
}

/// The MAC of `dev` in namespace `ns`.
pub fn link_mac(ns: &str, dev: &str) -> EthernetAddress {
    let out = run("ip", &["-n", ns, "link", "show", dev]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap_or_default();
    mac.parse().unwrap_or_else(|_| panic!("no MAC for {dev} in {ns}: {text}"))
}

/// Whether an XDP program is attached to `dev` in `ns`.
pub fn xdp_attached(ns: &str, dev: &str) -> bool {
    let out = run("ip", &["-n", ns, "link", "show", dev]);
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// The xlb binary under test.
pub fn xlb_bin() -> &'static str {
    env!("CARGO_BIN_EXE_xlb")
}

/// The optimised xlb binary, built once (`cargo build --release --bin xlb`) for the scale
/// tests: five unoptimised xlb processes with 1,000 VIPs each, beside an API server on two
/// cores, measure the debug build's control loop, not xlb.
#[allow(dead_code)] // only the scale tests use it
pub fn release_xlb() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| cargo_build(&["--release", "--bin", "xlb"], "release/xlb"))
}

/// The workspace's pktgen, built once (debug: the tests pace it, so it sleeps most of the
/// time).
#[allow(dead_code)] // only the flood tests use it
pub fn pktgen() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| cargo_build(&["-p", "pktgen", "--bin", "pktgen"], "debug/pktgen"))
}

/// Runs `cargo build --quiet ARGS` in the workspace; the path of `target/BIN`.
fn cargo_build(args: &[&str], bin: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = Command::new(cargo)
        .arg("build")
        .arg("--quiet")
        .args(args)
        .current_dir(root)
        .status()
        .unwrap_or_else(|e| panic!("running cargo build {}: {e}", args.join(" ")));
    assert!(st.success(), "cargo build {} failed", args.join(" "));
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    target.join(bin).display().to_string()
}

/// A running xlb in a lab host.
pub struct Xlb {
    child: Option<Child>,
    pub log: PathBuf,
    pub stats: PathBuf,
    /// Its admin socket.
    pub admin: PathBuf,
}

impl Xlb {
    /// Starts `xlb run -i eth0 ARGS` in `host` and waits until it logs that it runs.
    pub fn start(lab: &Lab, host: &Host, args: &[&str]) -> Xlb {
        let mut all = vec!["-i", "eth0"];
        all.extend_from_slice(args);
        Self::spawn(lab, host, xlb_bin(), &all)
    }

    /// Starts `xlb run ARGS` in `host` (the interfaces among ARGS) and waits until it runs.
    #[allow(dead_code)]
    pub fn start_args(lab: &Lab, host: &Host, args: &[&str]) -> Xlb {
        Self::spawn(lab, host, xlb_bin(), args)
    }

    /// Like [`Xlb::start`], with the optimised build ([`release_xlb`]).
    #[allow(dead_code)] // only the scale tests use it
    pub fn start_release(lab: &Lab, host: &Host, args: &[&str]) -> Xlb {
        let mut all = vec!["-i", "eth0"];
        all.extend_from_slice(args);
        Self::spawn(lab, host, release_xlb(), &all)
    }

    /// Starts `xlb run --config FILE ARGS` in `host` and waits until it logs that it runs.
    #[allow(dead_code)] // not every test binary runs from a config
    pub fn start_config(lab: &Lab, host: &Host, config: &Path, args: &[&str]) -> Xlb {
        let path = config.display().to_string();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        Self::spawn(lab, host, xlb_bin(), &all)
    }

    fn spawn(lab: &Lab, host: &Host, bin: &str, args: &[&str]) -> Xlb {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let log = lab.dir.join(format!("xlb-{n}.log"));
        let stats = lab.dir.join(format!("xlb-{n}.json"));
        let admin = lab.dir.join(format!("xlb-{n}.sock"));
        let mut full: Vec<String> = ["netns", "exec", &host.ns].iter().map(|s| s.to_string()).collect();
        // XLB_TEST_WRAP: a command xlb runs under, words split at spaces (e.g. setpriv with a
        // bounding set, to measure the capabilities a configuration needs).
        if let Ok(wrap) = std::env::var("XLB_TEST_WRAP") {
            full.extend(wrap.split_whitespace().map(str::to_string));
        }
        full.extend([bin, "run", "--stats-file"].iter().map(|s| s.to_string()));
        full.push(stats.display().to_string());
        full.push("--admin-socket".into());
        full.push(admin.display().to_string());
        // The host's own state directory (the next xlb started in it takes the tables
        // over), on tmpfs, removed with the lab.
        if !args.iter().any(|a| *a == "--no-state" || *a == "--state-dir") {
            full.push("--state-dir".into());
            full.push(lab.state_dir(host).display().to_string());
        }
        full.extend(args.iter().map(|s| s.to_string()));
        let child = Command::new("ip")
            .args(&full)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut x = Xlb { child: Some(child), log, stats, admin };
        x.wait_log("xlb running", Duration::from_secs(20));
        x
    }

    /// Runs `xlb ARGS --socket <its admin socket>` and returns (exit status, stdout, stderr).
    #[allow(dead_code)] // not every test binary uses the CLI
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(xlb_bin()).args(args).arg("--socket").arg(&self.admin).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log on timeout or exit.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("xlb exited ({st}) before logging {needle:?}:\n{}", self.log_text());
            }
            assert!(Instant::now() < end, "xlb did not log {needle:?} within {timeout:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGHUP (a config reload) and returns at once.
    #[allow(dead_code)]
    pub fn hup(&self) {
        if let Some(c) = &self.child {
            run("kill", &["-HUP", &c.id().to_string()]);
        }
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for the exit; returns the exit code
    /// (None when killed by a signal).
    pub fn signal(&mut self, signal: &str) -> Option<i32> {
        let mut child = self.child.take().expect("xlb already stopped");
        run("kill", &[&format!("-{signal}"), &child.id().to_string()]);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < end, "xlb did not exit within 10 s of SIG{signal}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for xlb to exit on its own; its exit code (None: still running
    /// then, or killed by a signal).
    #[allow(dead_code)] // only the restart tests use it
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        loop {
            let st = self.child.as_mut()?.try_wait().unwrap();
            if let Some(st) = st {
                self.child = None;
                return st.code();
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops xlb with SIGTERM and returns its stats file.
    pub fn stop(&mut self) -> serde_json::Value {
        let code = self.signal("TERM");
        assert_eq!(code, Some(0), "xlb exited with {code:?}:\n{}", self.log_text());
        let text = fs::read_to_string(&self.stats).unwrap_or_else(|e| panic!("stats file: {e}\n{}", self.log_text()));
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Xlb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

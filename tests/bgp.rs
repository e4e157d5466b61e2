//! BGP + BFD + ECMP in the netns lab, with FRR on both sides: a router namespace running
//! FRR (zebra, bgpd, bfdd; multipath, L4 hashing) peers with three xlb nodes, each of which
//! runs its own FRR as xlb's child. A client sits behind the router; the DSR backends sit on
//! the nodes' segment; the VIP is in a range on no segment, so the only way to it is the
//! routes the nodes advertise.
//!
//! ```text
//!   client 10.92.0.2 ── br1 ── router 10.92.0.1 | 10.91.0.1 ── br0 ── lb-1..3 10.91.0.21-23
//!                                                                └── backend-1..3 10.91.0.11-13
//!   VIP 10.93.0.1 (on the backends' loopback, advertised by the nodes)
//! ```
//!
//! The same scene runs over IPv6 (fd91::/64, fd92::/64, VIP fd93::1), and with BIRD 2 as
//! the router (interop: its BGP, its BFD, its ECMP).

#![allow(clippy::unwrap_used, clippy::cast_precision_loss)] // test code: a panic is the report

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{
    cluster::{endpoint_slice, node_object},
    dsr_backend, run,
    traffic::{assert_spread, in_netns, tcp_connections, Pinger},
    Host, Lab, Xlb,
};

/// The addresses of one family's lab.
struct Net {
    vip: &'static str,
    /// The router on the nodes' segment, and on the client's.
    router: &'static str,
    router_client: &'static str,
    client: &'static str,
    /// Prefix length of both segments.
    len: u8,
    nodes: [&'static str; 3],
    backends: [&'static str; 3],
}

const V4: Net = Net {
    vip: "10.93.0.1",
    router: "10.91.0.1",
    router_client: "10.92.0.1",
    client: "10.92.0.2",
    len: 24,
    nodes: ["10.91.0.21", "10.91.0.22", "10.91.0.23"],
    backends: ["10.91.0.11", "10.91.0.12", "10.91.0.13"],
};

const V6: Net = Net {
    vip: "fd93::1",
    router: "fd91::1",
    router_client: "fd92::1",
    client: "fd92::2",
    len: 64,
    nodes: ["fd91::21", "fd91::22", "fd91::23"],
    backends: ["fd91::11", "fd91::12", "fd91::13"],
};

impl Net {
    fn v6(&self) -> bool {
        self.vip.contains(':')
    }

    fn family(&self) -> &'static str {
        if self.v6() {
            "ipv6 unicast"
        } else {
            "ipv4 unicast"
        }
    }

    fn host_route(&self) -> String {
        format!("{}/{}", self.vip, if self.v6() { 128 } else { 32 })
    }

    fn cidr(&self, a: &str) -> String {
        format!("{a}/{}", self.len)
    }

    fn to(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.vip.parse().unwrap(), port)
    }
}

/// The BFD interval of the lab, in ms: 100, or XLB_TEST_BFD_MS (to measure others).
fn bfd_ms() -> u32 {
    std::env::var("XLB_TEST_BFD_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

/// The router's FRR: eBGP with every node, BFD at 100 ms x 3, up to 8 paths per prefix.
fn router_config(net: &Net) -> (String, String) {
    let nodes = &net.nodes;
    let ms = bfd_ms();
    let bfdd = format!(
        "frr defaults traditional\nhostname router\nlog stdout informational\n\
         bfd\n profile fast\n  receive-interval {ms}\n  transmit-interval {ms}\n  detect-multiplier 3\n exit\nexit\n"
    );
    let mut bgpd = String::from(
        "frr defaults traditional\nhostname router\nlog stdout informational\n\
         router bgp 64500\n bgp router-id 10.91.0.1\n no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n",
    );
    for n in nodes {
        bgpd.push_str(&format!(
            " neighbor {n} remote-as 64512\n neighbor {n} timers 3 9\n neighbor {n} timers connect 1\n neighbor {n} advertisement-interval 0\n neighbor {n} bfd\n neighbor {n} bfd profile fast\n"
        ));
    }
    bgpd.push_str(&format!(" address-family {}\n  maximum-paths 8\n", net.family()));
    if net.v6() {
        for n in nodes {
            bgpd.push_str(&format!("  neighbor {n} activate\n"));
        }
    }
    bgpd.push_str(" exit-address-family\nexit\n");
    (bfdd, bgpd)
}

/// BIRD 2 as the router: eBGP with every node, BFD at 100 ms x 3, equal routes merged into
/// one ECMP route in the kernel.
fn bird_config(net: &Net) -> String {
    let mut c = format!(
        "router id 10.91.0.1;\nlog stderr all;\nprotocol device {{ }}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n\
         protocol bfd {{ interface \"eth0\" {{ min rx interval {ms} ms; min tx interval {ms} ms; multiplier 3; }}; }}\n\
         template bgp nodes {{ local {} as 64500; ipv4 {{ import all; export none; }}; bfd on; hold time 9; keepalive time 3; connect retry time 1; }}\n",
        net.router,
        ms = bfd_ms()
    );
    for (k, n) in net.nodes.iter().enumerate() {
        c.push_str(&format!("protocol bgp lb{} from nodes {{ neighbor {n} as 64512; }}\n", k + 1));
    }
    c
}

/// Starts BIRD in `host` with `config`.
fn start_bird(lab: &Lab, host: &Host, config: &str) -> RouterFrr {
    let dir = lab.dir.join("router-bird");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("bird.conf");
    std::fs::write(&conf, config).unwrap();
    let log = std::fs::File::create(dir.join("bird.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &host.ns, "bird", "-f", "-c"])
        .arg(&conf)
        .arg("-s")
        .arg(dir.join("bird.ctl"))
        .arg("-P")
        .arg(dir.join("bird.pid"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    RouterFrr { dir, children: vec![child] }
}

/// The router's daemons: stopped when dropped (and with the lab's namespaces).
struct RouterFrr {
    dir: std::path::PathBuf,
    children: Vec<std::process::Child>,
}

impl Drop for RouterFrr {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts zebra, bfdd and bgpd in `host` with `files` (bfdd's, bgpd's).
fn start_frr(lab: &Lab, host: &Host, (bfdd, bgpd): (String, String)) -> RouterFrr {
    let dir = lab.dir.join("router-frr");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bfdd.conf"), bfdd).unwrap();
    std::fs::write(dir.join("bgpd.conf"), bgpd).unwrap();
    run("chown", &["-R", "frr:frr", &dir.display().to_string()]);
    // The lab's directory is private to root: FRR drops to the frr user.
    run("chmod", &["755", &lab.dir.display().to_string()]);
    let d = dir.display().to_string();
    let common = |name: &str| -> Vec<String> {
        [
            "netns",
            "exec",
            &host.ns,
            &format!("/usr/lib/frr/{name}"),
            "-u",
            "frr",
            "-g",
            "frr",
            "--vty_socket",
            &d,
            "-z",
            &format!("{d}/zserv.api"),
            "-P",
            "0",
            "--log",
            "stdout",
            "-i",
            &format!("{d}/{name}.pid"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let spawn = |name: &str, extra: &[String]| {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        Command::new("ip")
            .args(common(name))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let mut children = vec![spawn("zebra", &["-f".into(), "/dev/null".into()])];
    let end = Instant::now() + Duration::from_secs(10);
    while !dir.join("zserv.api").exists() {
        assert!(Instant::now() < end, "the router's zebra did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    children.push(spawn("bfdd", &["-f".into(), format!("{d}/bfdd.conf"), "--bfdctl".into(), format!("{d}/bfdd.sock")]));
    children.push(spawn("bgpd", &["-f".into(), format!("{d}/bgpd.conf")]));
    RouterFrr { dir, children }
}

/// The router's next hops for the VIP, as its kernel's FIB holds them.
fn next_hops(lab: &Lab, router: &Host, net: &Net) -> Vec<String> {
    let family = if net.v6() { "-6" } else { "-4" };
    let out = lab.exec(router, &["ip", family, "-j", "route", "show", net.vip]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let Some(route) = v.as_array().and_then(|a| a.first()) else { return Vec::new() };
    match route.get("nexthops").and_then(|n| n.as_array()) {
        Some(hops) => hops.iter().filter_map(|h| h["gateway"].as_str().map(str::to_string)).collect(),
        None => route["gateway"].as_str().map(|g| vec![g.to_string()]).unwrap_or_default(),
    }
}

/// Waits until the router's FIB has `n` next hops for the VIP; how long that took.
#[allow(clippy::too_many_arguments)] // the scene, and what is waited for
fn wait_hops(lab: &Lab, router: &Host, net: &Net, n: usize, within: Duration, what: &str, dir: &Path) -> Duration {
    let t0 = Instant::now();
    loop {
        let hops = next_hops(lab, router, net);
        if hops.len() == n {
            return t0.elapsed();
        }
        if t0.elapsed() > within {
            // The router's own view: FRR's vtysh, or BIRD's birdc.
            let ctl = dir.join("bird.ctl");
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &router.ns]);
            let bgp = if ctl.exists() {
                cmd.arg("birdc").arg("-s").arg(&ctl).args(["show", "protocols"]);
                cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
            } else {
                vtysh(router, dir, &["show bgp summary", "show bfd peers brief"])
            };
            panic!("{what}: the router has next hops {hops:?} for {}, not {n}, after {within:?}\n{bgp}", net.vip);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the router's FRR answers to `cmds` (vtysh on the socket directory `dir`), as text;
/// empty if vtysh could not be run.
fn vtysh(router: &Host, dir: &Path, cmds: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &router.ns, "vtysh", "--vty_socket", &dir.display().to_string()]);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// Waits until the router's FRR has `n` BFD sessions up. A cut is seen by BFD only on a
/// session that was up: bgpd drops a peer when its BFD session goes from up to down, so a
/// session still coming back from a flap (BFD at 100 ms x 3 can flap on a loaded machine,
/// and then bgpd resets the peer) would keep its route until the 9 s hold timer.
fn wait_bfd_up(router: &Host, n: usize, within: Duration, what: &str, dir: &Path) -> Duration {
    let t0 = Instant::now();
    loop {
        let out = vtysh(router, dir, &["show bfd peers brief"]);
        let up = out.lines().filter(|l| l.split_whitespace().last() == Some("up")).count();
        if up >= n {
            return t0.elapsed();
        }
        if t0.elapsed() > within {
            panic!("{what}: the router has {up} of {n} BFD sessions up after {within:?}\n{out}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Node `k`'s config file, its advertisement with `communities` (a YAML list).
fn node_config_with(lab: &Lab, net: &Net, k: usize, communities: &str) -> std::path::PathBuf {
    let path = lab.dir.join(format!("lb-{k}.yaml"));
    let [b1, b2, b3] = net.backends;
    let (vip, router, ms) = (net.vip, net.router, bfd_ms());
    // IPv6 nodes have no IPv4 address to take a router ID from.
    let router_id = if net.v6() { format!("\n  routerID: 10.0.0.{k}") } else { String::new() };
    let text = format!(
        "interfaces: [{{name: eth0}}]\n\
         services:\n  - name: web\n    vip: '{vip}'\n    mode: dsr\n    ports: [{{port: 80}}]\n    backends: [{{address: '{b1}'}}, {{address: '{b2}'}}, {{address: '{b3}'}}]\n\
         announce: {{dadProbes: 0}}\n\
         bgp:\n  localASN: 64512{router_id}\n  peers:\n    - {{peerAddress: '{router}', peerASN: 64500, holdTimeSeconds: 9, keepAliveTimeSeconds: 3, connectRetryTimeSeconds: 1, bfdProfile: fast}}\n\
         \x20 bfdProfiles: [{{name: fast, receiveInterval: {ms}, transmitInterval: {ms}, detectMultiplier: 3}}]\n\
         \x20 advertisements: [{{services: [web], communities: {communities}}}]\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn node_config(lab: &Lab, net: &Net, k: usize) -> std::path::PathBuf {
    node_config_with(lab, net, k, "[]")
}

/// The router's view of its session with `peer`: how many times it was established, and the
/// communities on the VIP's route from that peer.
fn router_view(router: &Host, net: &Net, dir: &Path, peer: &str) -> (u64, Vec<String>) {
    let json =
        |cmd: &str| -> serde_json::Value { serde_json::from_str(&vtysh(router, dir, &[cmd])).unwrap_or_default() };
    let n = json(&format!("show bgp neighbors {peer} json"));
    let established = n[peer]["connectionsEstablished"].as_u64().unwrap_or(0);
    let route = json(&format!("show bgp {} {} json", net.family(), net.host_route()));
    let communities = route["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["peer"]["peerId"] == peer)
        .flat_map(|p| p["community"]["list"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    (established, communities)
}

/// Cuts node `k` off the nodes' segment: its switch port drops everything.
fn cut_off(lab: &Lab, k: usize) {
    let port = format!("p-lb-{k}");
    lab.switch_nft(&["add", "table", "bridge", "cut"]);
    lab.switch_nft(&["add", "chain", "bridge", "cut", "fw", "{ type filter hook forward priority 0; }"]);
    lab.switch_nft(&["add", "rule", "bridge", "cut", "fw", "iifname", &port, "drop"]);
    lab.switch_nft(&["add", "rule", "bridge", "cut", "fw", "oifname", &port, "drop"]);
}

/// Checks that each node forwarded 20-47% of the packets (ECMP spread the flows).
fn assert_node_shares(what: &str, xlbs: &[Xlb]) {
    let per_node: Vec<u64> = xlbs.iter().map(forwarded).collect();
    let total: u64 = per_node.iter().sum();
    eprintln!("{what}: packets forwarded per node: {per_node:?}");
    for (k, p) in per_node.iter().enumerate() {
        let share = *p as f64 / total as f64;
        assert!(
            (0.20..=0.47).contains(&share),
            "{what}: lb-{} took {:.1}% of the packets: {per_node:?}",
            k + 1,
            share * 100.0
        );
    }
}

/// Stops `pinger`: every connection must have lasted; prints each phase's worst round.
fn finish(what: &str, pinger: Pinger, phases: &[&str]) {
    let (rounds, worst) = pinger.finish();
    for (p, w) in phases.iter().zip(&worst) {
        eprintln!("{what}, {p}: worst round {} ms", w.as_millis());
    }
    let rounds = rounds.unwrap_or_else(|e| panic!("{what}: a long-lived connection broke: {e}"));
    // Rounds went on after the last change: every connection answered, on its backend.
    assert!(
        worst.len() == phases.len() && worst.last().is_some_and(|w| !w.is_zero()),
        "{what}: no round after the last change ({rounds} rounds: {worst:?})"
    );
}

/// Forwarded packets, as a node's `xlb service list` counts them.
fn forwarded(x: &Xlb) -> u64 {
    let (ok, out, err) = x.cli(&["service", "list", "-o", "json"]);
    assert!(ok, "xlb service list: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["services"].as_array().unwrap().iter().map(|s| s["packets"].as_u64().unwrap_or(0)).sum()
}

/// The lab of `net`: a router (FRR running) between a client's segment and the nodes' one,
/// three DSR backends, three nodes running xlb.
struct Scene {
    lab: Lab,
    router: Host,
    client: Host,
    nodes: Vec<Host>,
    xlbs: Vec<Xlb>,
    frr: RouterFrr,
}

/// The router the nodes peer with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RouterKind {
    Frr,
    Bird,
    /// Seed 003's VyOS gateway, as its commands configure it (VyOS runs FRR).
    Vyos,
}

/// Seed 003's network: the nodes on 10.10.30.0/24 peering with the VyOS gateway at
/// 10.10.30.1 (AS 64512, dynamic neighbours), Service addresses in 10.10.50.0/24.
const SEED_003: Net = Net {
    vip: "10.10.50.100",
    router: "10.10.30.1",
    router_client: "10.10.60.1",
    client: "10.10.60.2",
    len: 24,
    nodes: ["10.10.30.21", "10.10.30.22", "10.10.30.23"],
    backends: ["10.10.30.11", "10.10.30.12", "10.10.30.13"],
};

/// Seed 003's VyOS configuration as FRR's (VyOS renders the same):
/// `set protocols bgp 64512 parameters router-id '10.10.10.1'`,
/// `set protocols bgp 64512 neighbor 10.10.30.0/24 remote-as '64513'` (a listen range),
/// `set protocols bgp 64512 maximum-paths ebgp '8'`.
fn vyos_config() -> (String, String) {
    let bfdd = "frr defaults traditional\nhostname vyos\nlog stdout informational\n".to_string();
    let bgpd = "frr defaults traditional\nhostname vyos\nlog stdout informational\n\
                router bgp 64512\n bgp router-id 10.10.10.1\n no bgp ebgp-requires-policy\n\
                \x20neighbor NODES peer-group\n neighbor NODES remote-as 64513\n bgp listen range 10.10.30.0/24 peer-group NODES\n\
                \x20address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\nexit\n"
        .to_string();
    (bfdd, bgpd)
}

fn scene(test: &str, net: &Net) -> Option<Scene> {
    scene_with(test, net, RouterKind::Frr)
}

fn scene_with(test: &str, net: &Net, kind: RouterKind) -> Option<Scene> {
    let (lab, router, client, nodes, frr) = lab_scene(test, net, kind)?;
    let xlbs = (1..=3).map(|k| Xlb::start_config(&lab, &nodes[k - 1], &node_config(&lab, net, k), &[])).collect();
    Some(Scene { lab, router, client, nodes, xlbs, frr })
}

/// The lab of `net` with its router running, and the nodes' hosts without xlb.
fn lab_scene(test: &str, net: &Net, kind: RouterKind) -> Option<(Lab, Host, Host, Vec<Host>, RouterFrr)> {
    let mut lab = Lab::new(test)?;
    lab.segment("br1");
    let (r0, r1) = (net.cidr(net.router), net.cidr(net.router_client));
    let router = lab.host_with("router", &[("eth0", "br0", &[r0.as_str()]), ("eth1", "br1", &[r1.as_str()])]);
    let sysctls: &[&str] = if net.v6() {
        &["net.ipv6.conf.all.forwarding=1", "net.ipv6.fib_multipath_hash_policy=1"]
    } else {
        &["net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"]
    };
    for s in sysctls {
        run("ip", &["netns", "exec", &router.ns, "sysctl", "-qw", s]);
    }
    let client = lab.host_on("br1", "client", &[&net.cidr(net.client)]);
    run("ip", &["-n", &client.ns, "route", "add", "default", "via", net.router_client]);
    for (i, b) in net.backends.iter().enumerate() {
        let h = lab.host(&format!("backend-{}", i + 1), &[&net.cidr(b)], 1);
        run("ip", &["-n", &h.ns, "route", "add", "default", "via", net.router]);
        dsr_backend(&lab, &h, &format!("backend-{}", i + 1), &[net.vip], 80);
    }
    let nodes: Vec<Host> = (1..=3).map(|k| lab.host(&format!("lb-{k}"), &[&net.cidr(net.nodes[k - 1])], 1)).collect();
    let frr = match kind {
        RouterKind::Frr => start_frr(&lab, &router, router_config(net)),
        RouterKind::Bird => start_bird(&lab, &router, &bird_config(net)),
        RouterKind::Vyos => start_frr(&lab, &router, vyos_config()),
    };
    Some((lab, router, client, nodes, frr))
}

#[test]
fn three_nodes_share_a_vip_by_ecmp_and_leave_it_fast() {
    let net = &V4;
    let Some(Scene { lab, router, client, nodes, mut xlbs, frr }) = scene("bgp_ecmp", net) else { return };
    let dir = frr.dir.clone();

    // Every node advertises the VIP once it can serve it: one next hop per node.
    let took = wait_hops(&lab, &router, net, 3, Duration::from_secs(30), "start", &dir);
    eprintln!("the router has 3 next hops for {} {took:?} after the last xlb started", net.vip);
    let mut hops = next_hops(&lab, &router, net);
    hops.sort();
    assert_eq!(hops, ["10.91.0.21", "10.91.0.22", "10.91.0.23"]);
    for x in &mut xlbs {
        x.wait_log("BGP session established", Duration::from_secs(5));
    }
    // A routed-only VIP gets no ARP answer from any node.
    let arp = lab.exec(&router, &["arping", "-c", "2", "-w", "2", "-I", "eth0", net.vip]);
    assert!(
        !arp.status.success(),
        "a node answered ARP for the routed-only VIP:\n{}",
        String::from_utf8_lossy(&arp.stdout)
    );

    // Many client flows, hashed by the router over the three nodes (L4 hash), each sent to
    // its backend by Maglev.
    const N: usize = 300;
    let to = net.to(80);
    let out = in_netns(&client.ns, move || tcp_connections(to, N));
    assert_spread("through ECMP", &out, N, 3);
    assert_node_shares("IPv4", &xlbs);

    // What each node says: its session up, BFD up, the VIP advertised and not on the segment.
    let (ok, peers, _) = xlbs[0].cli(&["bgp", "peers", "-o", "json"]);
    assert!(ok);
    let peers: serde_json::Value = serde_json::from_str(&peers).unwrap();
    assert_eq!(peers["peers"][0]["state"], "Established", "{peers}");
    assert_eq!(peers["peers"][0]["bfd"], "up", "{peers}");
    assert_eq!(peers["peers"][0]["routes_sent"], 1, "{peers}");
    let (ok, routes, _) = xlbs[0].cli(&["bgp", "routes", "-o", "json"]);
    assert!(ok);
    let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
    let route = &routes["routes"][0];
    assert_eq!(
        (&route["prefix"], &route["advertised"], &route["l2"], &route["why"]),
        (
            &serde_json::json!("10.93.0.1/32"),
            &serde_json::json!(true),
            &serde_json::json!(false),
            &serde_json::json!("served here")
        ),
        "{routes}"
    );

    // 200 long-lived connections, each pinged round after round: every one must stay on its
    // backend through every change below (a flow the router moves to another node is sent
    // by that node's Maglev table, the same on every node, to the same backend).
    let pinger = Pinger::start(&client.ns, &[to], 200, Duration::from_millis(20), Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));

    // A configuration change (a community on the advertisement), applied by a reload: the
    // route carries it, and the session is not reset.
    pinger.next_phase();
    let (established, communities) = router_view(&router, net, &dir, "10.91.0.21");
    assert_eq!((established, communities.len()), (1, 0), "{communities:?}");
    node_config_with(&lab, net, 1, "['65000:7', '65000:8']");
    xlbs[0].hup();
    xlbs[0].wait_log("changed configuration is applied to FRR", Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (established, communities) = router_view(&router, net, &dir, "10.91.0.21");
        assert_eq!(established, 1, "the reload reset the session");
        if communities == ["65000:7", "65000:8"] {
            break;
        }
        if Instant::now() > end {
            panic!(
                "the route never carried the new communities: {communities:?}\n{}\nlb-1:\n{}",
                vtysh(&router, &dir, &[&format!("show bgp ipv4 unicast {}", net.host_route())]),
                xlbs[0].log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("config change: communities applied, the session kept (established once)");
    assert_eq!(next_hops(&lab, &router, net).len(), 3);

    // A node cut off (its link drops everything): BFD takes its route away.
    wait_bfd_up(&router, 3, Duration::from_secs(10), "before the cut", &dir);
    pinger.next_phase();
    cut_off(&lab, 2);
    let cut = wait_hops(&lab, &router, net, 2, Duration::from_secs(5), "link cut", &dir);
    eprintln!("link cut: the router dropped lb-2's next hop after {} ms (BFD {} ms x 3)", cut.as_millis(), bfd_ms());
    assert!(!next_hops(&lab, &router, net).contains(&"10.91.0.22".to_string()));
    std::thread::sleep(Duration::from_millis(1500));

    // A node crashed (kill -9): its FRR dies with it, and its route goes.
    pinger.next_phase();
    xlbs[2].signal("KILL");
    let crashed = wait_hops(&lab, &router, net, 1, Duration::from_secs(5), "crash", &dir);
    eprintln!("crash: the router dropped lb-3's next hop after {} ms", crashed.as_millis());
    assert_eq!(next_hops(&lab, &router, net), ["10.91.0.21"]);
    // New connections through the one node left: every one answered, by every backend
    // (60 are too few to hold each share to assert_spread's bounds).
    let out = in_netns(&client.ns, move || tcp_connections(to, 60));
    assert!(out.failures.is_empty(), "through the one node left: {:?}", out.failures);
    assert_eq!(out.by_backend.len(), 3, "through the one node left: {:?}", out.by_backend);
    std::thread::sleep(Duration::from_millis(1500));

    // The cut heals, and the crashed node starts again: both routes come back, and the
    // router moves flows onto them.
    pinger.next_phase();
    lab.switch_nft(&["delete", "table", "bridge", "cut"]);
    xlbs[2] = Xlb::start_config(&lab, &nodes[2], &node_config(&lab, net, 3), &[]);
    let back = wait_hops(&lab, &router, net, 3, Duration::from_secs(30), "healed and added", &dir);
    eprintln!("healed and added: 3 next hops again after {} ms", back.as_millis());
    std::thread::sleep(Duration::from_millis(1500));

    // A node frozen (SIGSTOP: its workers forward nothing, its FRR runs on): FRR's
    // supervisor hears nothing from xlb for 0.3 s and stops, and the route goes with it.
    pinger.next_phase();
    let pid = xlbs[2].pid().to_string();
    run("kill", &["-STOP", &pid]);
    let frozen = wait_hops(&lab, &router, net, 2, Duration::from_secs(5), "frozen", &dir);
    eprintln!("frozen: the router dropped lb-3's next hop after {} ms", frozen.as_millis());
    assert!(!next_hops(&lab, &router, net).contains(&"10.91.0.23".to_string()));
    std::thread::sleep(Duration::from_millis(500));
    // Thawed: xlb starts FRR again, and the route comes back.
    run("kill", &["-CONT", &pid]);
    let thawed = wait_hops(&lab, &router, net, 3, Duration::from_secs(30), "thawed", &dir);
    eprintln!("thawed: 3 next hops again after {} ms", thawed.as_millis());
    assert!(xlbs[2].log_text().contains("no sign of life from xlb"), "{}", xlbs[2].log_text());
    std::thread::sleep(Duration::from_millis(1000));

    // No flap loop: for 30 s after the recoveries, the healed node's and the thawed node's
    // sessions stay up (established no more times) and the router keeps its 3 next hops.
    pinger.next_phase();
    let sessions = || ["10.91.0.22", "10.91.0.23"].map(|p| router_view(&router, net, &dir, p).0);
    let before = sessions();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        assert_eq!(next_hops(&lab, &router, net).len(), 3, "a next hop went {:?} after the recoveries", t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sessions(), before, "a session was established again within 30 s of its recovery");
    eprintln!("30 s after the recoveries: 3 next hops throughout, sessions established {before:?} times, no more");

    // SIGTERM: the routes are withdrawn (and seen sent) before xlb exits.
    pinger.next_phase();
    let stats = xlbs[0].stop();
    assert!(
        xlbs[0].log_text().contains("every route withdrawn from the peers"),
        "no withdrawal before the exit:\n{}",
        xlbs[0].log_text()
    );
    let mut left = next_hops(&lab, &router, net);
    left.sort();
    assert_eq!(left, ["10.91.0.22", "10.91.0.23"], "lb-1's route outlived it");
    assert!(stats["counters"]["forwarded"].as_u64().unwrap() > 0);
    // No FRR of lb-1's is left.
    let procs = Command::new("ip").args(["netns", "pids", &nodes[0].ns]).output().unwrap();
    assert!(String::from_utf8_lossy(&procs.stdout).trim().is_empty(), "processes left in lb-1: {:?}", procs.stdout);
    std::thread::sleep(Duration::from_millis(1500));

    let phases = [
        "steady",
        "config change",
        "link cut",
        "crash",
        "healed + node added",
        "frozen + thawed",
        "30 s steady",
        "SIGTERM",
    ];
    finish("200 long-lived connections", pinger, &phases);
}

/// The IPv6 twin: IPv6 sessions, an IPv6 VIP through ECMP, BFD, and the withdrawal at stop.
#[test]
fn ipv6_three_nodes_share_a_vip_by_ecmp() {
    let net = &V6;
    let Some(Scene { lab, router, client, nodes: _, mut xlbs, frr }) = scene("bgp_ecmp6", net) else { return };
    let dir = frr.dir.clone();
    let took = wait_hops(&lab, &router, net, 3, Duration::from_secs(30), "start", &dir);
    eprintln!("IPv6: the router has 3 next hops for {} {took:?} after the last xlb started", net.vip);
    let to = net.to(80);
    let pinger = Pinger::start(&client.ns, &[to], 100, Duration::from_millis(20), Duration::from_secs(5));
    const N: usize = 300;
    let out = in_netns(&client.ns, move || tcp_connections(to, N));
    assert_spread("IPv6 through ECMP", &out, N, 3);
    assert_node_shares("IPv6", &xlbs);
    // A node cut off: BFD over IPv6 takes its route away.
    wait_bfd_up(&router, 3, Duration::from_secs(10), "IPv6, before the cut", &dir);
    pinger.next_phase();
    cut_off(&lab, 2);
    let cut = wait_hops(&lab, &router, net, 2, Duration::from_secs(5), "link cut", &dir);
    eprintln!(
        "IPv6 link cut: the router dropped lb-2's next hop after {} ms (BFD {} ms x 3)",
        cut.as_millis(),
        bfd_ms()
    );
    std::thread::sleep(Duration::from_millis(1500));
    // SIGTERM: withdrawn before the exit.
    pinger.next_phase();
    xlbs[0].stop();
    assert!(xlbs[0].log_text().contains("every route withdrawn from the peers"), "{}", xlbs[0].log_text());
    wait_hops(&lab, &router, net, 1, Duration::from_secs(1), "lb-1 stopped", &dir);
    std::thread::sleep(Duration::from_millis(1000));
    finish("IPv6, 100 long-lived connections", pinger, &["steady", "link cut", "SIGTERM"]);
}

/// Interop: the same nodes against BIRD 2 as the router (its BGP, its BFD, its ECMP).
#[test]
fn nodes_peer_with_bird_as_the_router() {
    let net = &V4;
    let Some(Scene { lab, router, client, nodes, mut xlbs, frr }) = scene_with("bgp_bird", net, RouterKind::Bird)
    else {
        return;
    };
    let dir = frr.dir.clone();
    let took = wait_hops(&lab, &router, net, 3, Duration::from_secs(30), "start", &dir);
    eprintln!("BIRD: the router has 3 next hops for {} {took:?} after the last xlb started", net.vip);
    for x in &mut xlbs {
        x.wait_log("BGP session established", Duration::from_secs(5));
    }
    let to = net.to(80);
    const N: usize = 300;
    let out = in_netns(&client.ns, move || tcp_connections(to, N));
    assert_spread("through BIRD's ECMP", &out, N, 3);
    let per_node: Vec<u64> = xlbs.iter().map(forwarded).collect();
    eprintln!("BIRD: packets forwarded per node: {per_node:?}");
    assert!(per_node.iter().all(|p| *p > 0), "a node took no traffic: {per_node:?}");
    // BFD between BIRD and xlb's bfdd: a cut-off node's route goes.
    // Here the node's link goes down (its switch port), where the other tests drop its
    // traffic: the router's own link stays up, so BFD is what notices.
    lab.switch_link("p-lb-2", false);
    let cut = wait_hops(&lab, &router, net, 2, Duration::from_secs(5), "link down", &dir);
    eprintln!(
        "BIRD, link down: the router dropped lb-2's next hop after {} ms (BFD {} ms x 3)",
        cut.as_millis(),
        bfd_ms()
    );
    assert!(!next_hops(&lab, &router, net).contains(&"10.91.0.22".to_string()));
    // lb-3 loses its last backend (a reload that takes them away): it withdraws the VIP,
    // and advertises it again once a backend is back.
    let path = node_config(&lab, net, 3);
    let text = std::fs::read_to_string(&path).unwrap();
    let without = text.replace(
        "backends: [{address: '10.91.0.11'}, {address: '10.91.0.12'}, {address: '10.91.0.13'}]",
        "backends: []",
    );
    assert_ne!(text, without);
    std::fs::write(&path, &without).unwrap();
    xlbs[2].hup();
    wait_hops(&lab, &router, net, 1, Duration::from_secs(10), "lb-3 without backends", &dir);
    std::fs::write(&path, &text).unwrap();
    xlbs[2].hup();
    wait_hops(&lab, &router, net, 2, Duration::from_secs(10), "lb-3's backends back", &dir);
    // lb-1 also on the segment (l2: true): it answers ARP for the VIP, the others do not.
    let path = node_config(&lab, net, 1);
    let text = std::fs::read_to_string(&path).unwrap().replace("communities: []", "communities: [], l2: true");
    std::fs::write(&path, text).unwrap();
    xlbs[0].hup();
    xlbs[0].wait_log("to=\"owned\"", Duration::from_secs(10));
    let arp = lab.exec(&router, &["arping", "-c", "2", "-w", "3", "-I", "eth0", net.vip]);
    let said = String::from_utf8_lossy(&arp.stdout).to_lowercase();
    let lb1 = nodes[0].mac.to_string().to_lowercase();
    assert!(arp.status.success() && said.contains(&lb1), "lb-1 ({lb1}) did not answer ARP for the VIP:\n{said}");
    for n in &nodes[1..] {
        assert!(!said.contains(&n.mac.to_string().to_lowercase()), "a routed-only node answered ARP:\n{said}");
    }
    // SIGTERM: withdrawn before the exit.
    xlbs[0].stop();
    wait_hops(&lab, &router, net, 1, Duration::from_secs(1), "lb-1 stopped", &dir);
    assert_eq!(next_hops(&lab, &router, net), ["10.91.0.23"], "lb-1's route outlived it");
}

/// The objects of the Kubernetes scene: the three nodes, a pool of one address on no
/// segment, a Service on it served straight to the DSR backends, and BGP as objects: a
/// BFD profile, two BGPPeers for every node (the router, and a second router running BIRD),
/// an advertisement of the pool with a community, to the first router only. No
/// L2AnnouncementPolicy: the VIP is routed only.
fn kube_objects(api: &support::kube::Api, net: &Net) {
    for (k, addr) in net.nodes.iter().enumerate() {
        node_object(api, &format!("lb-{}", k + 1), &[addr.parse().unwrap()], &[], &[("ingress", "true")]);
    }
    let router = net.router;
    api.apply(&format!(
        "apiVersion: xlb.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {{name: routed}}\nspec:\n  blocks: [{{cidr: {}}}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default, annotations: {{xlb.dev/backends: endpoints, xlb.dev/mode: dsr}}}}\n\
         spec: {{type: LoadBalancer, loadBalancerClass: xlb.dev/xlb, ports: [{{port: 80, protocol: TCP}}]}}\n---\n\
         apiVersion: xlb.dev/v1alpha1\nkind: BFDProfile\nmetadata: {{name: fast}}\nspec: {{receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3}}\n---\n\
         apiVersion: xlb.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: router}}\n\
         spec: {{localASN: 64512, peerAddress: '{router}', peerASN: 64500, holdTimeSeconds: 9, keepAliveTimeSeconds: 3, connectRetryTimeSeconds: 1, bfdProfile: fast}}\n---\n\
         apiVersion: xlb.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: bird}}\n\
         spec: {{localASN: 64512, peerAddress: '10.91.0.2', peerASN: 64501, holdTimeSeconds: 9, keepAliveTimeSeconds: 3, connectRetryTimeSeconds: 1}}\n---\n\
         apiVersion: xlb.dev/v1alpha1\nkind: BGPAdvertisement\nmetadata: {{name: routed}}\nspec: {{pools: [routed], communities: ['65000:7'], peers: [router]}}\n",
        net.host_route()
    ));
    let backends: Vec<(std::net::IpAddr, String, bool)> =
        net.backends.iter().map(|b| (b.parse().unwrap(), "lb-1".to_string(), true)).collect();
    endpoint_slice(api, "web", &[("", 80, "TCP")], &backends);
}

/// The router peers with three nodes that run `xlb run --kubernetes` on a real API server,
/// configured by xlb's BGP objects alone: every node advertises the Service's address, the
/// route carries the advertisement's community, the BGPPeer's status and Events say each
/// node's session, and the route follows the objects: a node labelled out of load balancing,
/// an advertisement changed (no session reset), a node stopped, the advertisement removed and
/// added; 200 long-lived connections kept through the first four.
#[test]
fn kubernetes_objects_make_every_node_advertise_the_service() {
    let net = &V4;
    let Some(api) = support::kube::Api::start() else { return };
    api.apply_crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds.yaml"));
    let Some((mut lab, router, client, nodes, frr)) = lab_scene("bgp_kube", net, RouterKind::Frr) else { return };
    let dir = frr.dir.clone();
    // A second router on the nodes' segment: BIRD, AS 64501.
    let router_b = lab.host("router-b", &["10.91.0.2/24"], 1);
    let mut bird = String::from(
        "router id 10.91.0.2;\nlog stderr all;\nprotocol device { }\n\
         template bgp nodes { local 10.91.0.2 as 64501; ipv4 { import all; export none; }; hold time 9; keepalive time 3; connect retry time 1; }\n",
    );
    for (k, n) in net.nodes.iter().enumerate() {
        bird.push_str(&format!("protocol bgp lb{} from nodes {{ neighbor {n} as 64512; }}\n", k + 1));
    }
    let bird = start_bird(&lab, &router_b, &bird);
    let birdc = |args: &[&str]| -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &router_b.ns, "birdc", "-s"])
            .arg(bird.dir.join("bird.ctl"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // BIRD's paths to the VIP, one per node that sends it (birdc's answer checked: a
    // question it did not understand must not read as no path).
    let bird_paths = || {
        let shown = birdc(&["show", "route", &net.host_route()]);
        assert!(shown.contains("BIRD") && !shown.contains("error"), "birdc: {shown}");
        shown.matches("via 10.91.0.2").count()
    };
    kube_objects(&api, net);
    let mut xlbs: Vec<Xlb> = nodes
        .iter()
        .enumerate()
        .map(|(k, n)| {
            api.reach_from(&n.ns);
            let name = format!("lb-{}", k + 1);
            Xlb::start(&lab, n, &["--kubernetes", "--node-name", &name, "--kubeconfig", &api.xlb])
        })
        .collect();
    api.wait_for("the Service's address", 30, &xlbs[0].log, |a| a.ingress("web") == net.vip);

    // Every node advertises it: one next hop each, with the advertisement's community.
    let took = wait_hops(&lab, &router, net, 3, Duration::from_secs(30), "start", &dir);
    eprintln!("kubernetes: the router has 3 next hops {took:?} after the address was allocated");
    let (established, communities) = router_view(&router, net, &dir, "10.91.0.21");
    assert_eq!((established, communities.clone()), (1, vec!["65000:7".to_string()]));
    let arp = lab.exec(&router, &["arping", "-c", "2", "-w", "2", "-I", "eth0", net.vip]);
    assert!(!arp.status.success(), "a node answered ARP for the routed-only VIP");
    const N: usize = 300;
    let to = net.to(80);
    let out = in_netns(&client.ns, move || tcp_connections(to, N));
    assert_spread("kubernetes, through ECMP", &out, N, 3);
    assert_node_shares("kubernetes", &xlbs);
    // The advertisement names the first router only: BIRD has its three sessions and no
    // route; the marks that say so never leave the nodes.
    let t = Instant::now();
    while birdc(&["show", "protocols"]).matches("Established").count() < 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "BIRD's sessions:\n{}", birdc(&["show", "protocols"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(bird_paths(), 0, "{}", birdc(&["show", "route", &net.host_route()]));
    let shown = vtysh(&router, &dir, &["show bgp ipv4 unicast 10.93.0.1/32 json"]);
    assert!(shown.contains("65000:7") && !shown.contains("largeCommunity"), "{shown}");

    // The BGPPeer's status has each node's session, and each node said it by an Event.
    let status = |a: &support::kube::Api| {
        a.kubectl(&[
            "get",
            "bgppeer",
            "router",
            "-o",
            r#"jsonpath={range .status.nodes[*]}{.node} {.session} {.bfd} {.advertised}{"\n"}{end}"#,
        ])
    };
    api.wait_for("three sessions in the BGPPeer's status", 20, &xlbs[0].log, |a| {
        status(a).lines().filter(|l| l.ends_with(" Established up 1")).count() == 3
    });
    let events = api.kubectl(&[
        "get",
        "events.events.k8s.io",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.reason} {.regarding.kind} {.note}{\"\\n\"}{end}",
    ]);
    for k in 1..=3 {
        let line = format!("SessionEstablished BGPPeer node lb-{k}: BGP session with {} established", net.router);
        assert!(events.contains(&line), "no {line:?} in\n{events}");
    }

    // A peer that does not check out: left out, said on the object, and the others go on.
    api.apply("apiVersion: xlb.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: bad}\nspec: {localASN: 64512, peerAddress: 10.91.0.9, peerASN: 64500, keepAliveTimeSeconds: 100}\n");
    let said = "InvalidSpec BGPPeer node lb-1: BGPPeer bad: spec.keepAliveTimeSeconds: 100 s must be less than holdTimeSeconds (90 s)";
    api.wait_for("the bad peer's Event", 20, &xlbs[0].log, |a| {
        a.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.reason} {.regarding.kind} {.note}{\"\\n\"}{end}",
        ])
        .contains(said)
    });
    let described = api.kubectl(&["describe", "bgppeer", "bad"]);
    assert!(described.contains("InvalidSpec"), "kubectl describe shows no Event:\n{described}");
    api.kubectl(&["delete", "bgppeer", "bad"]);
    assert_eq!(next_hops(&lab, &router, net).len(), 3);

    // Long-lived connections through every change below.
    let pinger = Pinger::start(&client.ns, &[to], 200, Duration::from_millis(20), Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let phases = ["steady", "excluded", "back", "community", "stopped"];

    // A node labelled out of load balancing withdraws; back when the label goes.
    pinger.next_phase();
    api.kubectl(&["label", "node", "lb-3", "node.kubernetes.io/exclude-from-external-load-balancers=true"]);
    wait_hops(&lab, &router, net, 2, Duration::from_secs(10), "lb-3 excluded", &dir);
    assert!(!next_hops(&lab, &router, net).contains(&"10.91.0.23".to_string()));
    pinger.next_phase();
    api.kubectl(&["label", "node", "lb-3", "node.kubernetes.io/exclude-from-external-load-balancers-"]);
    wait_hops(&lab, &router, net, 3, Duration::from_secs(10), "lb-3 back", &dir);

    // The advertisement's communities changed and BIRD added to its peers: applied without a
    // session reset; BIRD gets the route from every node.
    pinger.next_phase();
    api.apply("apiVersion: xlb.dev/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: routed}\nspec: {pools: [routed], communities: ['65000:8', '65000:9'], peers: [router, bird]}\n");
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (established, communities) = router_view(&router, net, &dir, "10.91.0.21");
        assert_eq!(established, 1, "the change reset the session");
        if communities == ["65000:8", "65000:9"] {
            break;
        }
        assert!(
            Instant::now() < end,
            "the route never carried the new communities: {communities:?}\n{}",
            xlbs[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    while bird_paths() < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "BIRD never got the route from every node:\n{}",
            birdc(&["show", "route", &net.host_route()])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("kubernetes: BIRD added to the advertisement's peers: its 3 routes after {:?}", t.elapsed());

    // A node stopped (SIGTERM): its route goes before it exits, and so does its status entry.
    pinger.next_phase();
    xlbs[1].stop();
    wait_hops(&lab, &router, net, 2, Duration::from_secs(1), "lb-2 stopped", &dir);
    api.wait_for("lb-2's status entry gone", 10, &xlbs[0].log, |a| {
        let s = status(a);
        s.lines().count() == 2 && !s.contains("lb-2")
    });
    std::thread::sleep(Duration::from_millis(500));
    finish("kubernetes", pinger, &phases);

    // No advertisement: every route goes; back with it.
    api.kubectl(&["delete", "bgpadvertisement", "routed"]);
    wait_hops(&lab, &router, net, 0, Duration::from_secs(10), "advertisement deleted", &dir);
    api.apply(
        "apiVersion: xlb.dev/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: routed}\nspec: {pools: [routed]}\n",
    );
    wait_hops(&lab, &router, net, 2, Duration::from_secs(10), "advertisement back", &dir);
    assert_eq!(router_view(&router, net, &dir, "10.91.0.21").0, 1, "a new advertisement reset lb-1's session");
    // Rolled up into its /24 (aggregationLength): the router holds the /24 from both nodes
    // left, and no host route.
    api.apply(
        "apiVersion: xlb.dev/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: routed}\nspec: {pools: [routed], aggregationLength: 24}\n",
    );
    wait_hops(&lab, &router, net, 0, Duration::from_secs(10), "host route replaced by the aggregate", &dir);
    let t = Instant::now();
    loop {
        let out = lab.exec(&router, &["ip", "-4", "-j", "route", "show", "10.93.0.0/24"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let hops = v[0]["nexthops"].as_array().map_or(0, Vec::len);
        if hops == 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no /24 with 2 next hops: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }

    for x in &mut xlbs {
        if x.alive() {
            x.stop();
        }
    }
}

/// Seed 003, unchanged: its CiliumBGPPeeringPolicy (nodes labelled bgp=enabled, AS 64513,
/// the VyOS gateway 10.10.30.1/32 at AS 64512, Services with an `app` label) on a real API
/// server, and a router configured as its VyOS commands say (dynamic neighbours, ECMP over 8
/// paths). The labelled nodes advertise the Service's address; a node labelled later joins.
#[test]
fn seed_003_cilium_bgp_policy_with_its_vyos_gateway() {
    let net = &SEED_003;
    let Some(api) = support::kube::Api::start() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    api.apply_crds(&root.join("deploy/crds.yaml"));
    api.apply_crds(&root.join("deploy/crds-cilium.yaml"));
    api.apply_crds(&root.join("tests/fixtures/cilium-bgp-crd-for-tests.yaml"));
    let Some((lab, router, client, nodes, frr)) = lab_scene("bgp_seed3", net, RouterKind::Vyos) else { return };
    let dir = frr.dir.clone();
    for (k, addr) in net.nodes.iter().enumerate() {
        let labels: &[(&str, &str)] = if k < 2 { &[("bgp", "enabled")] } else { &[] };
        node_object(&api, &format!("lb-{}", k + 1), &[addr.parse().unwrap()], &[], labels);
    }
    api.apply_file(&root.join("tests/fixtures/seeds/003-bgp.yaml"));
    // A Cilium pool and a Service as Cilium users write them (no class).
    api.apply(
        "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: vips}\nspec:\n  blocks: [{start: 10.10.50.100, stop: 10.10.50.100}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default, labels: {app: web}, annotations: {xlb.dev/backends: endpoints, xlb.dev/mode: dsr}}\n\
         spec: {type: LoadBalancer, ports: [{port: 80, protocol: TCP}]}\n",
    );
    let backends: Vec<(std::net::IpAddr, String, bool)> =
        net.backends.iter().map(|b| (b.parse().unwrap(), "lb-1".to_string(), true)).collect();
    endpoint_slice(&api, "web", &[("", 80, "TCP")], &backends);
    let mut xlbs: Vec<Xlb> = nodes
        .iter()
        .enumerate()
        .map(|(k, n)| {
            api.reach_from(&n.ns);
            let name = format!("lb-{}", k + 1);
            Xlb::start(&lab, n, &["--kubernetes", "--unclassed", "--node-name", &name, "--kubeconfig", &api.xlb])
        })
        .collect();
    api.wait_for("the Service's address", 30, &xlbs[0].log, |a| a.ingress("web") == net.vip);
    // The two labelled nodes peer and advertise; the third does not.
    let took = wait_hops(&lab, &router, net, 2, Duration::from_secs(30), "seed 003", &dir);
    eprintln!("seed 003: the gateway has 2 next hops {took:?} after the address was allocated");
    let mut hops = next_hops(&lab, &router, net);
    hops.sort();
    assert_eq!(hops, ["10.10.30.21", "10.10.30.22"]);
    let (ok, peers, _) = xlbs[2].cli(&["bgp", "peers", "-o", "json"]);
    assert!(!ok || !peers.contains("10.10.30.1"), "the unlabelled node peers: {peers}");
    const N: usize = 200;
    let to = net.to(80);
    let out = in_netns(&client.ns, move || tcp_connections(to, N));
    assert_spread("seed 003, through the gateway", &out, N, 3);
    // The third node labelled: it joins.
    api.kubectl(&["label", "node", "lb-3", "bgp=enabled"]);
    wait_hops(&lab, &router, net, 3, Duration::from_secs(30), "lb-3 labelled", &dir);
    for x in &mut xlbs {
        x.stop();
    }
}

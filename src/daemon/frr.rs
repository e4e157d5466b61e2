//! FRR run and driven: zebra, bfdd and bgpd as children of xlb, told what to advertise.
//!
//! One thread (`xlb-frr`) owns the daemons. They run in a PID namespace of their own under
//! one shell: the shell is its PID 1 and dies with this thread (`io::child`), and the kernel
//! then kills every process of the namespace. So FRR never outlives xlb, even after
//! `kill -9`, and its routes go with it; a frozen xlb (no sign of life for 0.3 s) too. If
//! one daemon exits, all of them are started again with what is advertised now. Their log lines go to xlb's log (target `xlb::frr`).
//!
//! VIPs are advertised and withdrawn with vtysh (`network` lines), without a reload, so no
//! session is reset. The control thread never waits for FRR: it sends the changes here.
//! At stop, every route is withdrawn and the withdrawal is seen sent before FRR is stopped.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use xlb::{
    control::bgp::{render, route_commands, BgpConfig, RouteChange, RouteOf},
    io::child::spawn_tied,
};

/// Where Debian's frr package puts the daemons.
const FRR_LIB: &str = "/usr/lib/frr";

/// The path of frr-reload.py (Debian's frr-pythontools).
const FRR_RELOAD: &str = "/usr/lib/frr/frr-reload.py";

/// How often the sessions' state is read.
const POLL: Duration = Duration::from_secs(2);

/// The longest a vtysh or frr-reload.py call may take (coreutils' `timeout`).
const COMMAND_TIMEOUT: &str = "5";

/// How long FRR must have run for a restart's back-off to start again from 1 s.
const STABLE: Duration = Duration::from_secs(30);

/// Writes bfdd's and bgpd's files in `dir`, readable by their owner only from the start
/// (bgpd's may hold a peer's password).
fn write_files(dir: &Path, files: &xlb::control::bgp::FrrConfig) -> anyhow::Result<()> {
    for (name, text) in [("bfdd.conf", &files.bfdd), ("bgpd.conf", &files.bgpd)] {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {} (in frr's directory: root needs DAC_OVERRIDE)", path.display()))?;
        std::io::Write::write_all(&mut f, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One BGP session as FRR reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// The peer.
    pub(crate) peer: IpAddr,
    /// BGP's state (`Established`, `Active`, `Connect`, ...).
    pub(crate) state: String,
    /// Routes this node sends it.
    pub(crate) sent: u64,
    /// BFD's state where a profile watches the session (`up`, `down`, `init`).
    pub(crate) bfd: Option<String>,
    /// When BGP's or BFD's state last changed, as xlb saw it (seconds since the epoch).
    pub(crate) since: u64,
}

enum Cmd {
    Routes(Vec<RouteChange>),
    Reconfigure(Box<BgpConfig>),
    Stop(Sender<()>),
}

/// The running FRR.
pub(super) struct Frr {
    tx: Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    /// The sessions as last read.
    pub(super) sessions: Arc<Mutex<Vec<Session>>>,
    /// The configuration it was last given.
    pub(super) config: BgpConfig,
}

impl std::fmt::Debug for Frr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frr").finish_non_exhaustive()
    }
}

/// The `frr` user's ids, from the password database (FRR's daemons drop to it and need
/// their directory).
fn frr_ids() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"frr")).then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
        })
        .context("no user frr: install Debian's frr package (scripts/setup.sh does)")
}

/// The PID 1 of FRR's namespace: starts zebra, then bfdd and bgpd, and ends when any of
/// them does, or when xlb stops writing to its standard input (a byte every
/// [`ALIVE_EVERY`]): silence for [`ALIVE_TIMEOUT`] means xlb is frozen or gone, and a
/// frozen xlb forwards nothing, so its routes must go. The kernel then kills the others.
const SUPERVISOR: &str = r#"
d=$1; lib=$2; port=$3; alive_s=$4
exec 3<&0 </dev/null
common=(-u frr -g frr --vty_socket "$d" -z "$d/zserv.api" -P 0 --log stdout)
"$lib/zebra" "${common[@]}" -i "$d/zebra.pid" -f /dev/null 3<&- &
for _ in $(seq 200); do [ -S "$d/zserv.api" ] && break; sleep 0.05; done
[ -S "$d/zserv.api" ] || { echo "xlb: zebra did not open $d/zserv.api within 10 s" >&2; exit 1; }
"$lib/bfdd" "${common[@]}" -i "$d/bfdd.pid" -f "$d/bfdd.conf" --bfdctl "$d/bfdd.sock" 3<&- &
"$lib/bgpd" "${common[@]}" -i "$d/bgpd.pid" -f "$d/bgpd.conf" -p "$port" -n 3<&- &
(
  while read -r -t "$alive_s" -n 1 _; do :; done
  echo "xlb: no sign of life from xlb for ${alive_s} s (frozen, or gone): FRR stops, and its routes with it" >&2
) <&3 &
# bash 5.1 and later: wait -n also reports a job that ended before it was called.
wait -n
echo "xlb: FRR stops: one of its daemons, or xlb's watch, ended" >&2
exit 1
"#;

/// How often xlb tells FRR's supervisor it is alive.
const ALIVE_EVERY: Duration = Duration::from_millis(50);

/// Silence after which FRR's supervisor stops FRR (its routes go with its TCP sessions).
const ALIVE_TIMEOUT: &str = "0.3";

/// The daemons, running.
struct Running {
    child: Child,
    dir: PathBuf,
}

impl Running {
    fn start(
        cfg: &BgpConfig,
        router_id: Ipv4Addr,
        dir: &Path,
        routes: &BTreeMap<IpAddr, RouteOf>,
    ) -> anyhow::Result<Self> {
        let (uid, gid) = frr_ids()?;
        // Nothing of a previous run: FRR refuses a pid file it cannot lock.
        let _ = std::fs::remove_dir_all(dir);
        std::fs::DirBuilder::new().mode(0o750).create(dir).with_context(|| {
            format!("creating {} (its parent must exist and be searchable by the frr user)", dir.display())
        })?;
        // Handing them to frr takes CHOWN, writing in them after DAC_OVERRIDE (a container
        // that drops capabilities must add both).
        let hand_over = |p: &Path| {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to the frr user (chown: the CHOWN capability)", p.display()))
        };
        hand_over(dir)?;
        write_files(dir, &render(cfg, router_id, routes))?;
        for name in ["bfdd.conf", "bgpd.conf"] {
            hand_over(&dir.join(name))?;
        }
        // frr-reload.py reads the directory's vtysh.conf.
        std::fs::write(dir.join("vtysh.conf"), "")?;
        let port = if cfg.listen { "179" } else { "0" };
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child=SIGKILL", "bash", "-c", SUPERVISOR, "frr"])
            .arg(dir)
            .args([FRR_LIB, port, ALIVE_TIMEOUT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = spawn_tied(&mut cmd).context("starting FRR (unshare, from util-linux)")?;
        // From here, every way out kills FRR (Running's Drop).
        let mut run = Running { child, dir: dir.to_path_buf() };
        let child = &mut run.child;
        for out in [
            child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|e| Box::new(e) as _),
        ]
        .into_iter()
        .flatten()
        {
            std::thread::Builder::new().name("xlb-frr-log".into()).spawn(move || log_lines(out))?;
        }
        // Signs of life, from a thread that does nothing else (vtysh calls may take a while
        // on FRR's own thread). It ends when FRR does.
        if let Some(mut stdin) = child.stdin.take() {
            std::thread::Builder::new().name("xlb-frr-alive".into()).spawn(move || {
                use std::io::Write as _;
                while stdin.write_all(b".").is_ok() {
                    std::thread::sleep(ALIVE_EVERY);
                }
            })?;
        }
        // Ready when bgpd answers.
        let t0 = Instant::now();
        while run.vtysh(&["show bgp summary json".into()]).is_err() {
            if t0.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("FRR's bgpd did not answer within 10 s (its log lines above say why)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(took_ms = t0.elapsed().as_millis(), dir = %dir.display(), "FRR started (zebra, bfdd, bgpd)");
        Ok(run)
    }

    /// Writes FRR's files for `cfg` and makes the running daemons' configuration what they
    /// say, with frr-reload.py (it applies the difference through vtysh).
    fn reconfigure(
        &self,
        cfg: &BgpConfig,
        router_id: Ipv4Addr,
        routes: &BTreeMap<IpAddr, RouteOf>,
    ) -> anyhow::Result<()> {
        write_files(&self.dir, &render(cfg, router_id, routes))?;
        for daemon in ["bfdd", "bgpd"] {
            let path = self.dir.join(format!("{daemon}.conf"));
            // Its log goes to stderr; at warning level it never shows a configuration line
            // (a password), which its info level does.
            let out = Command::new("timeout")
                .args([COMMAND_TIMEOUT, "python3", FRR_RELOAD])
                .args(["--reload", "--stdout", "--log-level", "warning", "--daemon", daemon, "--bindir", "/usr/bin"])
                .arg("--vty_socket")
                .arg(&self.dir)
                .arg("--confdir")
                .arg(&self.dir)
                .arg("--rundir")
                .arg(&self.dir)
                .arg(&path)
                .stdin(Stdio::null())
                .output()
                .context("running frr-reload.py (Debian's frr-pythontools)")?;
            let text = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.contains(" password ")).collect();
            for l in &lines {
                tracing::warn!(target: "xlb::frr", daemon, "frr-reload: {l}");
            }
            anyhow::ensure!(
                out.status.success(),
                "frr-reload.py for {daemon} failed ({}): {}",
                out.status,
                lines.join("; ")
            );
        }
        Ok(())
    }

    /// Runs vtysh with `lines`, each a command; its output, or what went wrong.
    fn vtysh(&self, lines: &[String]) -> anyhow::Result<String> {
        // A daemon that stops answering must not hang xlb's FRR thread.
        let mut cmd = Command::new("timeout");
        cmd.args([COMMAND_TIMEOUT, "vtysh", "--vty_socket"]).arg(&self.dir);
        for l in lines {
            cmd.args(["-c", l]);
        }
        let out = cmd.stdin(Stdio::null()).output().context("running vtysh")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with('%')).collect();
        if !out.status.success() || !errors.is_empty() {
            anyhow::bail!("vtysh: {} {}", errors.join("; "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(text)
    }

    /// The sessions: BGP's state and routes sent, and BFD's state.
    fn sessions(&self) -> anyhow::Result<Vec<Session>> {
        let text = self.vtysh(&["show bgp neighbors json".into(), "show bfd peers json".into()])?;
        let mut docs = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
        let bgp = docs.next().transpose()?.unwrap_or_default();
        let bfd = docs.next().transpose()?.unwrap_or_default();
        let bfd_of = |peer: IpAddr| {
            bfd.as_array()?
                .iter()
                .find(|p| p.get("peer").and_then(|a| a.as_str()).and_then(|a| a.parse().ok()) == Some(peer))?
                .get("status")?
                .as_str()
                .map(str::to_string)
        };
        let Some(peers) = bgp.as_object() else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for (addr, n) in peers {
            let Ok(peer) = addr.parse::<IpAddr>() else { continue };
            let sent = n
                .get("addressFamilyInfo")
                .and_then(|a| a.as_object())
                .map(|a| a.values().filter_map(|f| f.get("sentPrefixCounter")?.as_u64()).sum())
                .unwrap_or(0);
            let state = n.get("bgpState").and_then(|s| s.as_str()).unwrap_or("unknown").to_string();
            out.push(Session { peer, state, sent, bfd: bfd_of(peer), since: unix_now() });
        }
        Ok(out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The shell is PID 1 of FRR's namespace: with it, every daemon goes. Its exit ends
        // only once they are all gone, so waiting for it means that a restart finds no
        // daemon of this run still holding a port (BFD's) or a pid file.
        let shell = shell_of(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = shell {
            let t0 = Instant::now();
            while alive(pid) && t0.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The shell that `unshare` (process `pid`) started: PID 1 of FRR's namespace.
fn shell_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// Whether process `pid` still runs (a zombie, or gone: no).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) S ...`: the state follows the last parenthesis.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|st| st != "Z" && st != "X")
}

/// Logs FRR's lines, without their own timestamps.
fn log_lines(out: Box<dyn std::io::Read + Send>) {
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        // `2026/11/30 21:11:01 BGP: [MNSF9-KVB43] text`
        let text = match line.split_once(' ').and_then(|(_, r)| r.split_once(' ')) {
            Some((_, rest)) if line.as_bytes().get(4) == Some(&b'/') => rest,
            _ => line.as_str(),
        };
        if text.contains("[EC ") || text.contains("xlb:") {
            tracing::warn!(target: "xlb::frr", "{text}");
        } else {
            tracing::info!(target: "xlb::frr", "{text}");
        }
    }
}

impl Frr {
    /// Starts FRR for `cfg` in `dir` (made and owned by the `frr` user; removed at stop),
    /// advertising nothing yet. With `wait`, returns once bgpd answers (or fails with why it
    /// did not); without, at once: FRR's thread starts it, and starts it again with a
    /// back-off while it fails, as after a fall.
    /// `interface_id`: the router ID taken from the interface, which a `routerID` removed
    /// from the configuration falls back to.
    pub(super) fn start(
        cfg: BgpConfig,
        router_id: Ipv4Addr,
        interface_id: Option<Ipv4Addr>,
        dir: PathBuf,
        wait: bool,
    ) -> anyhow::Result<Frr> {
        for d in ["zebra", "bfdd", "bgpd"] {
            let p = Path::new(FRR_LIB).join(d);
            anyhow::ensure!(
                p.exists(),
                "bgp: {} is missing: install Debian's frr package (scripts/setup.sh does)",
                p.display()
            );
        }
        let config = cfg.clone();
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let shared = sessions.clone();
        // The daemons die with the thread that starts them: this one, which lives as long
        // as they should.
        let thread = std::thread::Builder::new().name("xlb-frr".into()).spawn(move || {
            let run = match Running::start(&cfg, router_id, &dir, &BTreeMap::new()) {
                Ok(r) => {
                    let _ = ready_tx.send(Ok(()));
                    Some(r)
                }
                Err(e) if !wait => {
                    tracing::error!(error = %format!("{e:#}"), "FRR did not start; trying again");
                    None
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            drive(cfg, (router_id, interface_id), &dir, run, &rx, &shared);
        })?;
        if wait {
            ready_rx.recv().context("the FRR thread ended")??;
        }
        Ok(Frr { tx, thread: Some(thread), sessions, config })
    }

    /// Advertises and withdraws as `changes` say (FRR's thread carries them out).
    pub(super) fn routes(&self, changes: &[RouteChange]) {
        if !changes.is_empty() {
            let _ = self.tx.send(Cmd::Routes(changes.to_vec()));
        }
    }

    /// Applies a changed `bgp:` section to the running FRR, without a restart: sessions
    /// whose settings stay are not reset.
    pub(super) fn reconfigure(&mut self, cfg: BgpConfig) {
        self.config = cfg.clone();
        let _ = self.tx.send(Cmd::Reconfigure(Box::new(cfg)));
    }

    /// Withdraws every route, waits (up to 2 s) until the peers have been sent the
    /// withdrawals, then `drain` more for them to act on it, and stops FRR.
    pub(super) fn stop(&mut self, drain: Duration) {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        let acked = self.tx.send(Cmd::Stop(ack_tx)).is_ok() && ack_rx.recv_timeout(Duration::from_secs(10)).is_ok();
        let thread = self.thread.take();
        if acked {
            std::thread::sleep(drain);
            if let Some(t) = thread {
                let _ = t.join();
            }
        } else {
            // FRR's thread is stuck (each of its calls is bounded, so this is a bug): it is
            // left behind, and FRR dies with xlb's exit.
            tracing::error!("BGP: FRR's thread did not stop within 10 s; leaving it");
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop(Duration::ZERO);
        }
    }
}

/// FRR's thread: carries out route changes, reads the sessions, restarts FRR if it fell
/// or if a change could not be made (then it starts again from the configuration and the
/// routes as they should be: FRR and xlb never stay apart).
fn drive(
    mut cfg: BgpConfig,
    (mut router_id, interface_id): (Ipv4Addr, Option<Ipv4Addr>),
    dir: &Path,
    mut run: Option<Running>,
    rx: &Receiver<Cmd>,
    shared: &Mutex<Vec<Session>>,
) {
    let mut advertised: BTreeMap<IpAddr, RouteOf> = BTreeMap::new();
    let mut next_poll = Instant::now();
    let mut retry = Duration::from_secs(1);
    let mut started = Instant::now();
    // A change FRR refused: restart it, at the next poll, from what it should hold.
    let mut astray = false;
    loop {
        match rx.recv_timeout(next_poll.saturating_duration_since(Instant::now())) {
            Ok(Cmd::Routes(changes)) => {
                let before = advertised.clone();
                for c in &changes {
                    match &c.adverts {
                        Some(a) => advertised.insert(c.vip, a.clone()),
                        None => advertised.remove(&c.vip),
                    };
                }
                if let Some(r) = &run {
                    match r.vtysh(&route_commands(&cfg, &before, &advertised)) {
                        Ok(_) => tracing::info!(
                            advertised = %xlb::control::bgp::describe(&advertised),
                            "BGP: routes changed"
                        ),
                        Err(e) => {
                            tracing::error!(error = %e, "BGP: FRR refused a route change; it starts again with the routes as they should be");
                            astray = true;
                            next_poll = Instant::now();
                        }
                    }
                }
            }
            Ok(Cmd::Reconfigure(new)) => {
                cfg = *new;
                router_id = cfg.router_id.or(interface_id).unwrap_or(router_id);
                if let Some(r) = &run {
                    match r.reconfigure(&cfg, router_id, &advertised) {
                        Ok(()) => tracing::info!(
                            "BGP: the changed configuration is applied to FRR (no session reset where a peer's settings stayed)"
                        ),
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "BGP: applying the changed configuration to FRR failed; it starts again with it");
                            astray = true;
                            next_poll = Instant::now();
                        }
                    }
                }
            }
            Ok(Cmd::Stop(ack)) => {
                if let Some(r) = &run {
                    withdraw_all(&cfg, r, &advertised);
                }
                drop(run.take());
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                next_poll = Instant::now() + POLL;
                let fell = match run.as_mut().map(|r| r.child.try_wait()) {
                    Some(Ok(None)) => false,
                    Some(Ok(Some(status))) => {
                        tracing::error!(%status, "FRR stopped; starting it again with the routes advertised now");
                        true
                    }
                    Some(Err(_)) | None => true,
                };
                if fell || astray {
                    drop(run.take());
                    // An FRR that keeps falling soon after its start is started less and less
                    // often; one that ran a while starts again at once.
                    if started.elapsed() >= STABLE {
                        retry = Duration::from_secs(1);
                    }
                    match Running::start(&cfg, router_id, dir, &advertised) {
                        Ok(r) => {
                            run = Some(r);
                            astray = false;
                            started = Instant::now();
                        }
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), retry_s = retry.as_secs(), "FRR did not start again");
                        }
                    }
                    next_poll = Instant::now() + retry;
                    retry = (retry * 2).min(Duration::from_secs(30));
                    continue;
                }
                if let Some(r) = &run {
                    match r.sessions() {
                        Ok(now) => report_sessions(shared, now),
                        Err(e) => tracing::debug!(error = %e, "BGP: reading the sessions"),
                    }
                }
            }
        }
    }
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Logs each session that changed state, and keeps the new list (a session whose state
/// stays keeps the time it last changed).
fn report_sessions(shared: &Mutex<Vec<Session>>, mut now: Vec<Session>) {
    let Ok(mut before) = shared.lock() else { return };
    for s in &mut now {
        let old = before.iter().find(|b| b.peer == s.peer);
        if let Some(o) = old.filter(|o| (&o.state, &o.bfd) == (&s.state, &s.bfd)) {
            s.since = o.since;
        }
        if old.map(|o| (&o.state, &o.bfd)) != Some((&s.state, &s.bfd)) {
            let bfd = s.bfd.as_deref().unwrap_or("none");
            if s.state == "Established" {
                tracing::info!(peer = %s.peer, bfd, sent = s.sent, "BGP session established");
            } else {
                tracing::warn!(peer = %s.peer, state = %s.state, bfd, "BGP session not established");
            }
        }
    }
    *before = now;
}

/// Withdraws `advertised` and waits (up to 2 s) until no established session still
/// carries a route of this node.
fn withdraw_all(cfg: &BgpConfig, run: &Running, advertised: &BTreeMap<IpAddr, RouteOf>) {
    if advertised.is_empty() {
        return;
    }
    if let Err(e) = run.vtysh(&route_commands(cfg, advertised, &BTreeMap::new())) {
        tracing::error!(error = %e, "BGP: withdrawing the routes before stopping");
        return;
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        match run.sessions() {
            Ok(s) if s.iter().all(|s| s.state != "Established" || s.sent == 0) => {
                tracing::info!(
                    took_ms = t0.elapsed().as_millis(),
                    routes = advertised.len(),
                    "BGP: every route withdrawn from the peers"
                );
                return;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    tracing::warn!("BGP: the withdrawals were not all seen sent within 2 s; stopping FRR anyway");
}

//! The admin API: a unix socket where a running xlb answers queries in JSON, and the client
//! side of `xlb status`, `xlb service list`, ... that asks it and prints tables (or `-o json`).
//!
//! Protocol: one JSON request per connection (a line of at most 64 KiB, read within 2 s),
//! one JSON answer, then the connection closes. The socket is made `0600` (root's: it
//! shows VIPs, backends and flows). Each connection is served on a thread of its own (at
//! most 16 at once), so a client that connects and says nothing delays nobody else. The
//! threads only carry requests to the control loop, which owns the state and answers; a
//! query never blocks the datapath.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::IpAddr,
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use crossbeam_channel::{SendTimeoutError, Sender};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) mod answers;

/// What can be asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub(crate) enum Query {
    /// Interfaces, queues, workers, generation.
    Status,
    /// Services.
    Services,
    /// Backends.
    Backends,
    /// Pools.
    Pools,
    /// Tracked flows.
    Conntrack {
        /// Only this service.
        service: Option<String>,
        /// Only this client address.
        client: Option<IpAddr>,
        /// Only this backend.
        backend: Option<IpAddr>,
        /// Most per worker.
        limit: usize,
    },
    /// A Maglev table.
    Maglev {
        /// Which service.
        service: String,
    },
    /// The Prometheus exposition (as a JSON string).
    Metrics,
    /// BGP sessions.
    BgpPeers,
    /// Routed VIPs and whether they are advertised.
    BgpRoutes,
}

/// A query on its way to the control loop, with where the answer goes.
#[derive(Debug)]
pub(crate) struct AdminRequest {
    pub(crate) query: Query,
    pub(crate) reply: Sender<Value>,
}

/// The socket's accept thread.
pub(crate) struct AdminServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `path` (refusing if another xlb answers there; a stale file is replaced) and
    /// serves it until dropped.
    pub(crate) fn start(path: &Path, to_control: Sender<AdminRequest>) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "admin socket {} is in use by another xlb; stop it or give this one its own (--admin-socket or admin.socket)",
                    path.display()
                );
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).with_context(|| format!("binding admin socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making admin socket {} private (0600)", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let busy = Arc::new(AtomicUsize::new(0));
        // Blocks in accept (no wake-ups while idle); Drop connects once to end it.
        let thread = std::thread::Builder::new().name("xlb-admin".into()).spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                match conn {
                    Ok(s) => serve(s, &to_control, &busy),
                    Err(e) => {
                        tracing::warn!(error = %e, "admin socket accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
        Ok(AdminServer { path: path.to_path_buf(), stop, thread: Some(thread) })
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long an asker waits for the control loop, queueing included.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Asks the control loop and waits (bounded) for its answer. One deadline covers both the
/// queue and the answer: with the queue full (a stuck loop, a flood of askers) the asker
/// gives up like one that was queued and never answered, instead of waiting without end.
pub(crate) fn ask(to_control: &Sender<AdminRequest>, query: Query) -> Value {
    ask_until(to_control, query, Instant::now() + ANSWER_WITHIN)
}

fn ask_until(to_control: &Sender<AdminRequest>, query: Query, deadline: Instant) -> Value {
    let late = || refusal(format!("no answer from the control loop within {} s", ANSWER_WITHIN.as_secs()));
    let (tx, rx) = crossbeam_channel::bounded(1);
    match to_control.send_deadline(AdminRequest { query, reply: tx }, deadline) {
        Ok(()) => rx.recv_deadline(deadline).unwrap_or_else(|_| late()),
        Err(SendTimeoutError::Timeout(_)) => late(),
        Err(SendTimeoutError::Disconnected(_)) => refusal("xlb is stopping".into()),
    }
}

/// A refusal as the socket carries it.
pub(crate) fn refusal(error: String) -> Value {
    serde_json::to_value(answers::Refusal { error }).unwrap_or(Value::Null)
}

/// Connections served at once at most; past it, a client is told to come back.
const MAX_CLIENTS: usize = 16;
/// The longest request line.
const MAX_REQUEST: u64 = 64 * 1024;

/// Serves one connection on a thread of its own, or refuses it when too many are open.
fn serve(s: UnixStream, to_control: &Sender<AdminRequest>, busy: &Arc<AtomicUsize>) {
    if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
        busy.fetch_sub(1, Ordering::AcqRel);
        let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
        let mut w = &s;
        let _ = writeln!(w, "{}", refusal(format!("more than {MAX_CLIENTS} admin clients at once; try again")));
        return;
    }
    let (to_control, busy2) = (to_control.clone(), busy.clone());
    let spawned = std::thread::Builder::new().name("xlb-admin-conn".into()).spawn(move || {
        serve_one(&s, &to_control);
        busy2.fetch_sub(1, Ordering::AcqRel);
    });
    if let Err(e) = spawned {
        busy.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(error = %e, "admin socket: no thread for a client");
    }
}

fn serve_one(s: &UnixStream, to_control: &Sender<AdminRequest>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut reader = BufReader::new(s.take(MAX_REQUEST));
    let answer = match reader.read_line(&mut line) {
        Ok(_) if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST => {
            refusal(format!("request longer than {MAX_REQUEST} bytes"))
        }
        Ok(_) => match serde_json::from_str::<Query>(line.trim()) {
            Ok(q) => ask(to_control, q),
            Err(e) => refusal(format!("bad request: {e}")),
        },
        Err(e) => refusal(format!("reading the request: {e}")),
    };
    let mut w = s;
    let _ = writeln!(w, "{answer}");
}

// ---- The client side -----------------------------------------------------------------------

/// Asks the xlb at `socket` and prints the answer.
pub(crate) fn client(socket: &Path, json: bool, query: Query) -> anyhow::Result<()> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!("cannot reach xlb at {} (is it running? is this its admin socket? see --socket)", socket.display())
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(s, "{}", serde_json::to_string(&query)?)?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    let v: Value = serde_json::from_str(answer.trim()).context("the answer is not JSON")?;
    if let Ok(r) = serde_json::from_value::<answers::Refusal>(v.clone()) {
        anyhow::bail!("{}", r.error);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let text = render(&query, v)
        .context("the answer is not what this xlb command expects (is the running xlb another version?)")?;
    print!("{text}");
    Ok(())
}

/// A table: a header and rows, columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

/// `secs` as the largest two units: `45s`, `3m12s`, `5h02m`, `2d03h`.
fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// A cell: `-` for nothing.
fn cell<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), ToString::to_string)
}

/// Human tables of the answers.
fn render(q: &Query, v: Value) -> Result<String, serde_json::Error> {
    Ok(match q {
        Query::Status => {
            let st: answers::Status = serde_json::from_value(v)?;
            let mut out = format!(
                "interface {}  mac {}  xdp {}  snapshot generation {}  reloads {}  uptime {}s\n",
                st.interface, st.mac, st.xdp_mode, st.generation, st.reloads, st.uptime_s
            );
            if let Some(e) = &st.last_reload_error {
                out += &format!("last reload refused: {e}\n");
            }
            out += "\n";
            let workers: Vec<Vec<String>> = st
                .workers
                .iter()
                .map(|w| {
                    vec![
                        w.interface.clone(),
                        w.queue.to_string(),
                        w.socket.clone(),
                        cell(&w.core),
                        w.rx_frames.to_string(),
                        w.tx_frames.to_string(),
                        w.drops.to_string(),
                        w.flows.to_string(),
                    ]
                })
                .collect();
            out += &table(&["INTERFACE", "QUEUE", "SOCKET", "CORE", "RX", "TX", "DROPS", "FLOWS"], &workers);
            out += "\n";
            let vips: Vec<Vec<String>> =
                st.vips.iter().map(|x| vec![x.vip.clone(), x.state.clone(), x.interfaces.clone()]).collect();
            out += &table(&["VIP", "STATE", "INTERFACES"], &vips);
            if let Some(f) = &st.failover {
                out += &format!(
                    "\nfailover: node {}, alive: {}, quorum {}, fenced {}{}\n",
                    f.node,
                    f.alive.join(", "),
                    f.quorum,
                    f.fenced,
                    if f.witness { ", holds the witness" } else { "" }
                );
            }
            if let Some(k) = &st.kubernetes {
                out += &format!("\nkubernetes: {} plans applied, live members: {}\n", k.plans, k.members.join(", "));
                let owners: Vec<Vec<String>> = k
                    .announced_by
                    .iter()
                    .map(|(vip, n)| vec![vip.clone(), n.clone().unwrap_or_else(|| "nobody".into())])
                    .collect();
                out += &table(&["VIP", "ANNOUNCED BY"], &owners);
            }
            out
        }
        Query::Services => {
            let a: answers::Services = serde_json::from_value(v)?;
            let rows: Vec<Vec<String>> = a
                .services
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.vip.clone(),
                        s.port.to_string(),
                        s.protocol.clone(),
                        s.mode.clone(),
                        s.backends.to_string(),
                        s.up.to_string(),
                        s.packets.to_string(),
                        s.bytes.to_string(),
                    ]
                })
                .collect();
            table(&["SERVICE", "VIP", "PORT", "PROTO", "MODE", "BACKENDS", "UP", "PACKETS", "BYTES"], &rows)
        }
        Query::Backends => {
            let a: answers::Backends = serde_json::from_value(v)?;
            let rows: Vec<Vec<String>> = a
                .backends
                .iter()
                .map(|b| {
                    vec![
                        b.service.clone(),
                        b.backend.clone(),
                        b.health.clone(),
                        b.weight.to_string(),
                        b.share.clone(),
                        cell(&b.path),
                        cell(&b.mac),
                        cell(&b.packets),
                        cell(&b.bytes),
                    ]
                })
                .collect();
            table(&["SERVICE", "BACKEND", "HEALTH", "WEIGHT", "SHARE", "PATH", "MAC", "PACKETS", "BYTES"], &rows)
        }
        Query::BgpPeers => {
            let a: answers::BgpPeers = serde_json::from_value(v)?;
            if !a.configured {
                return Ok(
                    "BGP is not configured (no bgp: in the config; with --kubernetes, no BGPPeer selects this node)\n"
                        .into(),
                );
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let rows: Vec<Vec<String>> = a
                .peers
                .iter()
                .map(|p| {
                    let since = p.since.map_or_else(|| "-".into(), |t| age(now.saturating_sub(t)));
                    vec![p.peer.clone(), p.asn.to_string(), p.state.clone(), cell(&p.bfd), cell(&p.routes_sent), since]
                })
                .collect();
            table(&["PEER", "ASN", "BGP", "BFD", "ROUTES SENT", "FOR"], &rows)
        }
        Query::BgpRoutes => {
            let a: answers::BgpRoutes = serde_json::from_value(v)?;
            let rows: Vec<Vec<String>> = a
                .routes
                .iter()
                .map(|r| {
                    let yes = if r.advertised { "yes" } else { "no" };
                    vec![r.prefix.clone(), yes.into(), if r.l2 { "yes" } else { "no" }.into(), r.why.clone()]
                })
                .collect();
            table(&["PREFIX", "ADVERTISED", "ARP/NDP", "WHY"], &rows)
        }
        Query::Pools => {
            let a: answers::Pools = serde_json::from_value(v)?;
            let rows: Vec<Vec<String>> = a
                .pools
                .iter()
                .map(|p| vec![p.name.clone(), p.size.clone(), p.used.clone(), p.free.clone(), p.state.clone()])
                .collect();
            table(&["POOL", "SIZE", "USED", "FREE", "STATE"], &rows)
        }
        Query::Conntrack { .. } => {
            let a: answers::Conntrack = serde_json::from_value(v)?;
            let rows: Vec<Vec<String>> = a
                .flows
                .iter()
                .map(|f| {
                    vec![
                        f.worker.to_string(),
                        f.protocol.clone(),
                        f.client.clone(),
                        f.vip.clone(),
                        cell(&f.backend),
                        f.state.clone(),
                        cell(&f.snat),
                        f.expires_in_s.to_string(),
                    ]
                })
                .collect();
            let mut out =
                table(&["WORKER", "PROTO", "CLIENT", "VIP", "BACKEND", "STATE", "SNAT", "EXPIRES_IN_S"], &rows);
            out += &format!("{} flows shown\n", a.flows.len());
            out
        }
        Query::Maglev { .. } => {
            let a: answers::Maglev = serde_json::from_value(v)?;
            let mut out = format!(
                "service {}  table size {} ({}), {} byte(s) a slot\n\n",
                a.service, a.size, a.sizing, a.slot_bytes
            );
            let rows: Vec<Vec<String>> = a
                .backends
                .iter()
                .map(|b| vec![b.backend.clone(), b.weight.to_string(), b.slots.to_string(), b.share.clone()])
                .collect();
            out += &table(&["BACKEND", "WEIGHT", "SLOTS", "SHARE"], &rows);
            out += &format!("\nfirst slots: {}\n", a.first_slots);
            out
        }
        Query::Metrics => serde_json::from_value::<String>(v)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sessions_age_reads_in_its_two_largest_units() {
        assert_eq!(
            [age(0), age(59), age(61), age(3_599), age(3_600 * 5 + 120), age(86_400 * 2 + 3_600 * 3)],
            ["0s", "59s", "1m01s", "59m59s", "5h02m", "2d03h"]
        );
    }

    #[test]
    fn queries_round_trip_as_json() {
        let q = Query::Conntrack { service: Some("web".into()), client: None, backend: None, limit: 5 };
        let text = serde_json::to_string(&q).unwrap();
        assert_eq!(text, r#"{"query":"conntrack","service":"web","client":null,"backend":null,"limit":5}"#);
        assert_eq!(serde_json::from_str::<Query>(&text).unwrap(), q);
    }

    #[test]
    fn an_asker_gives_up_at_the_deadline_even_when_the_queue_is_full() {
        // A control loop that never reads: its queue holds one request, already taken.
        let (tx, rx) = crossbeam_channel::bounded::<AdminRequest>(1);
        let (reply, _never) = crossbeam_channel::bounded(1);
        tx.send(AdminRequest { query: Query::Status, reply }).unwrap();
        let t0 = Instant::now();
        let v = ask_until(&tx, Query::Metrics, t0 + Duration::from_millis(100));
        assert!(v["error"].as_str().unwrap().contains("no answer from the control loop"), "{v}");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        // Queued but not answered: the same.
        let _ = rx.recv().unwrap();
        let v = ask_until(&tx, Query::Metrics, Instant::now() + Duration::from_millis(100));
        assert!(v["error"].as_str().unwrap().contains("no answer from the control loop"), "{v}");
        drop(rx);
        assert!(ask(&tx, Query::Metrics)["error"].as_str().unwrap().contains("stopping"));
    }

    #[test]
    fn a_silent_client_delays_nobody_and_the_socket_is_private() {
        let path = std::env::temp_dir().join(format!("xlb-admin-test-{}.sock", std::process::id()));
        let (tx, rx) = crossbeam_channel::bounded::<AdminRequest>(4);
        // The control loop's stand-in: answers every query.
        std::thread::spawn(move || {
            for req in rx {
                let _ = req.reply.send(serde_json::json!({"pools": [], "assignments": []}));
            }
        });
        let server = AdminServer::start(&path, tx).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // One client connects and says nothing (the server waits 2 s for its line).
        let silent = UnixStream::connect(&path).unwrap();
        let ask = |line: &[u8]| {
            let mut c = UnixStream::connect(&path).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(line).unwrap();
            let mut answer = String::new();
            BufReader::new(&c).read_line(&mut answer).unwrap();
            answer
        };
        let answer = ask(b"{\"query\":\"pools\"}\n");
        assert!(answer.contains("assignments"), "{answer}");
        // Answered while the silent client's turn is not over: its connection is still open,
        // with nothing written to it yet.
        silent.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let r = (&silent).read(&mut [0u8; 1]);
        assert!(
            matches!(&r, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "another client was answered only after the silent one was done with: {r:?}"
        );
        // A request past the cap is refused, not read on without end.
        let mut long = vec![b'a'; 70 * 1024];
        long.push(b'\n');
        assert!(ask(&long).contains("longer than 65536 bytes"));
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn tables_align_their_columns() {
        let t = table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(t, "A    LONG\nxyz  1\nq    22\n");
    }
}

//! The admin API: a unix socket where a running xlb answers queries in JSON, and the client
//! side of `xlb status`, `xlb service list`, ... that asks it and prints tables (or `-o json`).
//!
//! Protocol: one JSON request per connection (a line), one JSON answer, then the connection
//! closes. The socket thread only carries requests to the control loop, which owns the state
//! and answers; a query never blocks the datapath.

use std::{
    io::{BufRead, BufReader, Write},
    net::IpAddr,
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        // Blocks in accept (no wake-ups while idle); Drop connects once to end it.
        let thread = std::thread::Builder::new().name("xlb-admin".into()).spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                match conn {
                    Ok(s) => serve_one(s, &to_control),
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

/// Asks the control loop and waits (bounded) for its answer.
pub(crate) fn ask(to_control: &Sender<AdminRequest>, query: Query) -> Value {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if to_control.send(AdminRequest { query, reply: tx }).is_err() {
        return serde_json::json!({"error": "xlb is stopping"});
    }
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| serde_json::json!({"error": "no answer from the control loop within 5 s"}))
}

fn serve_one(s: UnixStream, to_control: &Sender<AdminRequest>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut reader = BufReader::new(&s);
    let answer = match reader.read_line(&mut line) {
        Ok(_) => match serde_json::from_str::<Query>(line.trim()) {
            Ok(q) => ask(to_control, q),
            Err(e) => serde_json::json!({"error": format!("bad request: {e}")}),
        },
        Err(e) => serde_json::json!({"error": format!("reading the request: {e}")}),
    };
    let mut w = &s;
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
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        anyhow::bail!("{e}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", render(&query, &v));
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

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn rows(v: &Value, key: &str, cols: &[&str]) -> Vec<Vec<String>> {
    v[key].as_array().map_or_else(Vec::new, |a| a.iter().map(|o| cols.iter().map(|c| s(&o[*c])).collect()).collect())
}

/// Human tables of the answers.
fn render(q: &Query, v: &Value) -> String {
    match q {
        Query::Status => {
            let mut out = format!(
                "interface {}  mac {}  xdp {}  snapshot generation {}  reloads {}  uptime {}s\n",
                s(&v["interface"]),
                s(&v["mac"]),
                s(&v["xdp_mode"]),
                s(&v["generation"]),
                s(&v["reloads"]),
                s(&v["uptime_s"])
            );
            if let Some(e) = v["last_reload_error"].as_str() {
                out += &format!("last reload refused: {e}\n");
            }
            out += "\n";
            out += &table(
                &["QUEUE", "SOCKET", "CORE", "RX", "TX", "DROPS", "FLOWS"],
                &rows(v, "workers", &["queue", "socket", "core", "rx_frames", "tx_frames", "drops", "flows"]),
            );
            out += "\n";
            out += &table(&["VIP", "STATE"], &rows(v, "vips", &["vip", "state"]));
            if let Some(f) = v["failover"].as_object() {
                let alive: Vec<String> = f["alive"].as_array().map_or_else(Vec::new, |m| m.iter().map(s).collect());
                out += &format!(
                    "\nfailover: node {}, alive: {}, quorum {}, fenced {}{}\n",
                    s(&f["node"]),
                    alive.join(", "),
                    s(&f["quorum"]),
                    s(&f["fenced"]),
                    if f["witness"].as_bool() == Some(true) { ", holds the witness" } else { "" }
                );
            }
            if let Some(k) = v["kubernetes"].as_object() {
                let members: Vec<String> = k["members"].as_array().map_or_else(Vec::new, |m| m.iter().map(s).collect());
                out +=
                    &format!("\nkubernetes: {} plans applied, live members: {}\n", s(&k["plans"]), members.join(", "));
                let owners: Vec<Vec<String>> = k["announced_by"].as_object().map_or_else(Vec::new, |o| {
                    o.iter().map(|(vip, n)| vec![vip.clone(), n.as_str().unwrap_or("nobody").to_string()]).collect()
                });
                out += &table(&["VIP", "ANNOUNCED BY"], &owners);
            }
            out
        }
        Query::Services => table(
            &["SERVICE", "VIP", "PORT", "PROTO", "MODE", "BACKENDS", "UP", "PACKETS", "BYTES"],
            &rows(v, "services", &["name", "vip", "port", "protocol", "mode", "backends", "up", "packets", "bytes"]),
        ),
        Query::Backends => table(
            &["SERVICE", "BACKEND", "HEALTH", "WEIGHT", "SHARE", "MAC", "PACKETS", "BYTES"],
            &rows(v, "backends", &["service", "backend", "health", "weight", "share", "mac", "packets", "bytes"]),
        ),
        Query::Pools => table(
            &["POOL", "SIZE", "USED", "FREE", "STATE"],
            &rows(v, "pools", &["name", "size", "used", "free", "state"]),
        ),
        Query::Conntrack { .. } => {
            let mut out = table(
                &["WORKER", "PROTO", "CLIENT", "VIP", "BACKEND", "STATE", "SNAT", "EXPIRES_IN_S"],
                &rows(v, "flows", &["worker", "protocol", "client", "vip", "backend", "state", "snat", "expires_in_s"]),
            );
            out += &format!("{} flows shown\n", v["flows"].as_array().map_or(0, Vec::len));
            out
        }
        Query::Maglev { .. } => {
            let mut out = format!("service {}  table size {}\n\n", s(&v["service"]), s(&v["size"]));
            out += &table(
                &["BACKEND", "WEIGHT", "SLOTS", "SHARE"],
                &rows(v, "backends", &["backend", "weight", "slots", "share"]),
            );
            out += &format!("\nfirst slots: {}\n", s(&v["first_slots"]));
            out
        }
        Query::Metrics => s(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_round_trip_as_json() {
        let q = Query::Conntrack { service: Some("web".into()), client: None, backend: None, limit: 5 };
        let text = serde_json::to_string(&q).unwrap();
        assert_eq!(text, r#"{"query":"conntrack","service":"web","client":null,"backend":null,"limit":5}"#);
        assert_eq!(serde_json::from_str::<Query>(&text).unwrap(), q);
    }

    #[test]
    fn tables_align_their_columns() {
        let t = table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(t, "A    LONG\nxyz  1\nq    22\n");
    }
}

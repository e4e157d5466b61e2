//! Active health checks of backends: a TCP connect or an HTTP GET (hyper's HTTP/1 client),
//! every interval, with a timeout; `fall` failures in a row take a backend down, `rise`
//! successes bring it back.
//! Backends start up (a restart does not black-hole traffic while the first checks run).
//!
//! Runs on its own thread with a single-threaded tokio runtime, one task per target; the
//! control loop hands it the target list and hears back only about changes.

use std::{collections::HashMap, net::SocketAddr};

use crossbeam_channel::{Receiver, Sender};
use http_body_util::Empty;
use hyper::{
    body::Bytes,
    header::{CONNECTION, HOST, USER_AGENT},
    Request,
};
use hyper_util::rt::TokioIo;

use super::{
    compile::HealthTarget,
    config::{CheckKind, HealthConfig},
};

/// A backend going down or coming back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// Which check.
    pub target: HealthTarget,
    /// Up now.
    pub up: bool,
    /// The last check's outcome, for the log (`ok`, or what failed).
    pub detail: String,
}

/// The running checker.
#[derive(Debug)]
pub struct HealthChecker {
    /// New target lists; dropping it stops the thread.
    targets: Option<tokio::sync::mpsc::UnboundedSender<Vec<HealthTarget>>>,
    /// Changes, for the control loop.
    pub events: Receiver<HealthEvent>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One check: `Ok` or what went wrong, all of it within the check's timeout.
async fn check_once(addr: SocketAddr, cfg: &HealthConfig) -> Result<(), String> {
    let io = async {
        let s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        if let CheckKind::Http { path, status } = &cfg.kind {
            match http_status(s, addr, path).await? {
                c if c == *status => {}
                c => return Err(format!("HTTP status {c}, expected {status}")),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(cfg.timeout, io).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {} ms", cfg.timeout.as_millis())),
    }
}

/// `GET path` on the connection `s` to `addr`, with hyper's HTTP/1 client: the status of the
/// answer. Only the answer's head is read. The connection is driven here, not by a task of
/// its own, so that it closes when this returns or when the check's timeout drops it.
async fn http_status(s: tokio::net::TcpStream, addr: SocketAddr, path: &str) -> Result<u16, String> {
    let host = match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let req = Request::get(path)
        .header(HOST, host)
        .header(USER_AGENT, "xlb-health")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("HTTP request for {path:?}: {e}"))?;
    // Title-case header names, as the hand-written checks sent: some health endpoints are
    // hand-written too.
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(s))
        .await
        .map_err(http_error)?;
    let (mut conn, mut answer) = (std::pin::pin!(conn), std::pin::pin!(sender.send_request(req)));
    tokio::select! {
        biased;
        a = &mut answer => return a.map(|a| a.status().as_u16()).map_err(http_error),
        end = &mut conn => end.map_err(http_error)?,
    }
    // The connection ended first, as it does once it has read an answer to `Connection:
    // close`: the answer (or why there is none) is ready now.
    answer.await.map(|a| a.status().as_u16()).map_err(http_error)
}

/// hyper's error with its causes (hyper's own text alone says "connection error", not which).
fn http_error(e: hyper::Error) -> String {
    let mut out = format!("HTTP: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out += &format!(": {c}");
        cause = c.source();
    }
    out
}

/// Checks one target forever, reporting changes.
async fn watch(t: HealthTarget, events: Sender<HealthEvent>) {
    let addr = SocketAddr::new(t.addr, t.port);
    let (mut up, mut oks, mut fails) = (true, 0u32, 0u32);
    let mut tick = tokio::time::interval(t.check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = check_once(addr, &t.check).await;
        match &r {
            Ok(()) => {
                oks += 1;
                fails = 0;
            }
            Err(_) => {
                fails += 1;
                oks = 0;
            }
        }
        let now_up = if up { fails < t.check.fall } else { oks >= t.check.rise };
        if now_up != up {
            up = now_up;
            let detail = r.err().unwrap_or_else(|| "ok".into());
            if events.send(HealthEvent { target: t.clone(), up, detail }).is_err() {
                return;
            }
        }
    }
}

impl HealthChecker {
    /// Starts the checker thread (with no targets).
    pub fn start() -> std::io::Result<Self> {
        let (targets_tx, mut targets_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<HealthTarget>>();
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("xlb-health".into()).spawn(move || {
            rt.block_on(async move {
                let mut tasks: HashMap<HealthTarget, tokio::task::JoinHandle<()>> = HashMap::new();
                // Sleeps until a new target list comes; ends when the sender is dropped.
                while let Some(list) = targets_rx.recv().await {
                    {
                        tasks.retain(|t, h| {
                            let keep = list.contains(t);
                            if !keep {
                                h.abort();
                            }
                            keep
                        });
                        for t in list {
                            if let std::collections::hash_map::Entry::Vacant(v) = tasks.entry(t) {
                                let h = tokio::spawn(watch(v.key().clone(), events_tx.clone()));
                                v.insert(h);
                            }
                        }
                    }
                }
                for (_, h) in tasks {
                    h.abort();
                }
            });
        })?;
        Ok(HealthChecker { targets: Some(targets_tx), events: events_rx, thread: Some(thread) })
    }

    /// Checks exactly these targets from now on (running checks of kept targets go on).
    pub fn set_targets(&self, targets: Vec<HealthTarget>) {
        if let Some(t) = &self.targets {
            let _ = t.send(targets);
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.targets = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::TcpListener,
        time::Instant,
    };

    use std::time::Duration;

    use super::*;

    fn target(port: u16, kind: CheckKind) -> HealthTarget {
        HealthTarget {
            service: "web".into(),
            addr: "127.0.0.1".parse().unwrap(),
            port,
            check: HealthConfig {
                kind,
                port: None,
                interval: Duration::from_millis(50),
                timeout: Duration::from_millis(200),
                rise: 2,
                fall: 2,
            },
        }
    }

    #[test]
    fn a_closed_port_goes_down_and_comes_back_when_served() {
        // A port that was free a moment ago: nothing listens.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let checker = HealthChecker::start().unwrap();
        let t0 = Instant::now();
        checker.set_targets(vec![target(port, CheckKind::Tcp)]);
        let down = checker.events.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!down.up, "{down:?}");
        assert!(down.detail.contains("connect"), "{down:?}");
        // fall 2 at 50 ms: well under a second.
        assert!(t0.elapsed() < Duration::from_secs(2));
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let up = checker.events.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(up.up, "{up:?}");
        drop(l);
    }

    #[test]
    fn an_http_check_of_a_backend_that_never_answers_times_out() {
        // Accepts, and neither reads nor answers: the connections are held until the test ends.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let _held: Vec<_> = l.incoming().collect();
        });
        let checker = HealthChecker::start().unwrap();
        let t0 = Instant::now();
        checker.set_targets(vec![target(port, CheckKind::Http { path: "/healthz".into(), status: 200 })]);
        let down = checker.events.recv_timeout(Duration::from_secs(5)).unwrap();
        let took = t0.elapsed();
        assert!(!down.up, "{down:?}");
        assert_eq!(down.detail, "timed out after 200 ms");
        // fall 2, each check cut at its 200 ms timeout.
        assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn http_checks_compare_the_status() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                // The request as the hand-written checks sent it: path, Host, User-Agent.
                let expected = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
                let answer = if req.starts_with("GET /garbage ") {
                    "hello\r\n\r\n".to_string()
                } else if req.starts_with(&expected) && req.contains("\r\nUser-Agent: xlb-health\r\n") {
                    // A body the check does not read.
                    format!("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n{}", "x".repeat(5000))
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
                };
                let _ = s.write_all(answer.as_bytes());
            }
        });
        let checker = HealthChecker::start().unwrap();
        let check = |service: &str, path: &str| HealthTarget {
            service: service.into(),
            ..target(port, CheckKind::Http { path: path.into(), status: 200 })
        };
        checker.set_targets(vec![check("web", "/healthz"), check("other", "/nope"), check("junk", "/garbage")]);
        let mut down: Vec<HealthEvent> =
            (0..2).map(|_| checker.events.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        down.sort_by(|a, b| a.target.service.cmp(&b.target.service));
        assert_eq!(down[0].target.service, "junk", "{down:?}");
        assert!(!down[0].up && down[0].detail.starts_with("HTTP: "), "{down:?}");
        assert_eq!(down[1].target.service, "other", "{down:?}");
        assert!(!down[1].up && down[1].detail == "HTTP status 404, expected 200", "{down:?}");
        // The good one never changes.
        assert!(checker.events.recv_timeout(Duration::from_millis(400)).is_err());
    }
}

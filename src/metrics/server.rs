//! The `/metrics` listener: hyper's HTTP/1 server on a thread of its own, with a
//! current-thread tokio runtime (as the health checker and the Kubernetes source have
//! theirs: the daemon itself is synchronous).
//!
//! Each connection is a task of its own, so a client that connects and says nothing, or
//! sends its headers a byte at a time, delays no other scrape. Every connection is bounded:
//! 5 s to send the request line and headers (8 KiB at most, else 431), one request (the
//! answer says `Connection: close`, as before), 15 s in all, and 64 connections at once
//! (past that a new one is closed unanswered). The numbers come from the control loop,
//! asked from a blocking thread one scrape at a time, so a flood of scrapes costs the loop
//! no more than one scrape after another, and the loop never waits on a scraper: it drops
//! its answer into a channel and goes on.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use crossbeam_channel::Sender;
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::sync::{oneshot, Semaphore};

use crate::admin::{ask, AdminRequest, Query};

/// Time a client has to send its request line and headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a connection lives: the headers, the control loop's answer (5 s at most, see
/// `admin::ask`) and the response written.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
/// Request line and headers, at most; a scraper sends a few hundred bytes.
const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Connections served at once, at most.
const MAX_CONNECTIONS: usize = 64;

/// The exposition's content type (OpenMetrics text).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The running listener; dropping it stops it.
pub(crate) struct MetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `http://addr/metrics` until dropped.
    pub(crate) fn start(addr: SocketAddr, to_control: Sender<AdminRequest>) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("listening for metrics on {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // One blocking thread carries the asks to the control loop, one at a time (see `answer`).
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(1).build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new().name("xlb-metrics".into()).spawn(move || {
            rt.block_on(serve(listener, to_control, stopped));
            // An ask still waiting on the control loop is not waited for.
            rt.shutdown_timeout(Duration::from_millis(100));
        })?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        if !is_loopback(addr.ip()) {
            tracing::warn!(
                %addr,
                "/metrics exposes VIPs, backends and counters unauthenticated to anyone who can reach {addr}; \
                 to restrict it, listen on 127.0.0.1 (metrics.listen or --metrics-listen) or filter the port \
                 (a host firewall, or a NetworkPolicy where the network plugin applies it to host ports)"
            );
        }
        Ok(MetricsServer { addr, stop: Some(stop), thread: Some(thread) })
    }

    /// The address served (the port the system chose, for port 0).
    #[cfg(test)]
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        tracing::debug!(addr = %self.addr, "stopped serving /metrics");
    }
}

/// Only the host itself can reach it (an IPv4-mapped loopback address included).
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Accepts until told to stop; each connection is served by a task of its own.
async fn serve(listener: std::net::TcpListener, to_control: Sender<AdminRequest>, mut stop: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "/metrics: the listening socket cannot be served; no metrics");
            return;
        }
    };
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let asking = Arc::new(Semaphore::new(1));
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, most likely: let some close.
                    tracing::debug!(error = %e, "/metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "/metrics: more than {MAX_CONNECTIONS} connections at once; closed this one");
            continue;
        };
        let (to_control, asking) = (to_control.clone(), asking.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, to_control.clone(), asking.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_header_size(MAX_HEADER_BYTES)
                .keep_alive(false)
                .title_case_headers(true)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "/metrics: connection ended in error"),
                Err(_) => {
                    tracing::debug!(%peer, "/metrics: connection still open after {CONNECTION_DEADLINE:?}; closed")
                }
            }
            drop(slot);
        });
    }
}

/// A response with a body of text.
fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// GET or HEAD of `/metrics` (any query string): the control loop's exposition, or 503 with
/// its refusal when it does not answer in time. Any other path 404, any other method 405.
async fn answer(
    req: Request<Incoming>,
    to_control: Sender<AdminRequest>,
    asking: Arc<Semaphore>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(text(StatusCode::NOT_FOUND, "text/plain", "xlb serves /metrics only\n".into()));
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "/metrics answers GET and HEAD\n".into());
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    // The permit goes with the ask: one ask is in flight at a time, even when the scrape
    // that made it has gone (its connection's deadline passed).
    let v = match asking.acquire_owned().await {
        Ok(permit) => tokio::task::spawn_blocking(move || {
            let _one_at_a_time = permit;
            ask(&to_control, Query::Metrics)
        })
        .await
        .unwrap_or_else(|e| crate::admin::refusal(format!("asking the control loop failed: {e}"))),
        Err(_) => crate::admin::refusal("xlb is stopping".into()),
    };
    Ok(match v {
        Value::String(exposition) => text(StatusCode::OK, OPENMETRICS, exposition),
        v => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{v}\n")),
    })
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::TcpStream,
        sync::atomic::{AtomicBool, Ordering},
        time::Instant,
    };

    use super::*;

    /// What the control loop's stand-in answers.
    const EXPOSITION: &str = "# TYPE xlb_snapshot_generation gauge\nxlb_snapshot_generation 7\n# EOF\n";

    /// A server whose control loop answers every query with `EXPOSITION`.
    fn server() -> MetricsServer {
        let (tx, rx) = crossbeam_channel::bounded::<AdminRequest>(64);
        std::thread::spawn(move || {
            for req in rx {
                assert_eq!(req.query, Query::Metrics);
                let _ = req.reply.send(Value::String(EXPOSITION.into()));
            }
        });
        MetricsServer::start("127.0.0.1:0".parse().unwrap(), tx).unwrap()
    }

    /// Sends `request` on a new connection and reads the answer to its end.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn a_silent_or_dripping_client_delays_no_scrape() {
        let server = server();
        let addr = server.addr();
        // One connects and says nothing; another sends a header a byte at a time.
        let _silent = TcpStream::connect(addr).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let dripping = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ");
                // A byte every 100 ms, 3 s at most.
                for _ in 0..30 {
                    if done.load(Ordering::Relaxed) || s.write_all(b"a").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let took = t0.elapsed();
        done.store(true, Ordering::Relaxed);
        dripping.join().unwrap();
        eprintln!("a scrape beside a silent and a dripping client took {took:?}");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with(&format!("\r\n\r\n{EXPOSITION}")), "{answer}");
        assert!(took < Duration::from_secs(1), "the scrape waited {took:?} behind slow clients");
    }

    #[test]
    fn slow_clients_are_let_go_at_the_header_timeout() {
        let server = server();
        let addr = server.addr();
        let t0 = Instant::now();
        // Each client's thread reads until the server closes, and says when that was.
        let silent = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(HEADER_TIMEOUT * 3)).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
            t0.elapsed()
        });
        let dripping = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ");
            // A byte every 250 ms until the server is gone (15 s at most).
            for _ in 0..60 {
                if s.write_all(b"a").is_err() {
                    break;
                }
                s.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
                // An answer or the end: the server is done with it.
                if s.read(&mut [0u8; 512]).is_ok() {
                    break;
                }
            }
            t0.elapsed()
        });
        for (who, t) in [("silent", silent.join().unwrap()), ("dripping", dripping.join().unwrap())] {
            assert!(t >= HEADER_TIMEOUT && t < HEADER_TIMEOUT + Duration::from_secs(2), "{who} let go after {t:?}");
        }
    }

    #[test]
    fn the_answer_carries_the_exposition_as_before() {
        let server = server();
        let answer = exchange(server.addr(), b"GET /metrics?name[]=x HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, EXPOSITION);
        let head: Vec<&str> = head.lines().collect();
        assert_eq!(head[0], "HTTP/1.1 200 OK");
        for h in [
            format!("Content-Type: {OPENMETRICS}"),
            format!("Content-Length: {}", EXPOSITION.len()),
            "Connection: close".into(),
        ] {
            assert!(head.contains(&h.as_str()), "{h} missing: {head:?}");
        }
        // HEAD: the same head, no body (a probe may use it).
        let answer = exchange(server.addr(), b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains(&format!("Content-Length: {}\r\n", EXPOSITION.len())), "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "{answer}");
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let server = server();
        let answer = exchange(server.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        assert!(answer.ends_with("xlb serves /metrics only\n"), "{answer}");
        let answer = exchange(server.addr(), b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{answer}");
        assert!(answer.contains("Allow: GET, HEAD\r\n"), "{answer}");
        // Not HTTP at all.
        let answer = exchange(server.addr(), b"hello\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    }

    #[test]
    fn an_oversized_header_is_refused() {
        let server = server();
        let mut request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 2 * MAX_HEADER_BYTES));
        request.extend(b"\r\n\r\n");
        let answer = exchange(server.addr(), &request);
        assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{answer}");
        // And the server goes on.
        assert!(exchange(server.addr(), b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn no_answer_from_the_control_loop_is_a_503() {
        // A control loop that is gone.
        let (tx, rx) = crossbeam_channel::bounded::<AdminRequest>(1);
        drop(rx);
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), tx).unwrap();
        let answer = exchange(server.addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
        assert!(answer.contains("xlb is stopping"), "{answer}");
    }

    #[test]
    fn only_loopback_listeners_go_unwarned() {
        for (ip, loopback) in
            [("127.0.0.1", true), ("::1", true), ("::ffff:127.0.0.1", true), ("0.0.0.0", false), ("::", false)]
        {
            assert_eq!(is_loopback(ip.parse().unwrap()), loopback, "{ip}");
        }
        assert!(!is_loopback("10.0.0.1".parse().unwrap()));
    }
}

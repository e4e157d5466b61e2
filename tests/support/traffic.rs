//! Traffic helpers for the lab tests: run code inside a namespace, short TCP connections
//! and UDP echoes through a VIP, and what they found.

use std::{
    collections::{BTreeSet, HashMap},
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use super::{enter_netns_for_tests as enter_netns, Xlb};

/// Runs `f` on a thread inside namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// What `n` short TCP connections to `addr` found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Connections answered, by backend name.
    pub by_backend: HashMap<String, usize>,
    /// The source addresses the backends saw.
    pub peers: BTreeSet<String>,
    /// What went wrong, per failed connection.
    pub failures: Vec<String>,
}

/// `n` short TCP connections to `addr`: who answered, what they saw, what failed.
pub fn tcp_connections(addr: SocketAddr, n: usize) -> Outcome {
    let mut out = Outcome::default();
    for i in 0..n {
        let res = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"hello\n")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply.trim().to_string())
        })();
        // The servers answer "NAME PEER".
        match res.as_deref().map(|r| r.split_once(' ')) {
            Ok(Some((name, peer))) => {
                *out.by_backend.entry(name.to_string()).or_insert(0) += 1;
                out.peers.insert(peer.to_string());
            }
            Ok(None) => out.failures.push(format!("connection {i}: reply {res:?}")),
            Err(e) => out.failures.push(format!("connection {i}: {e}")),
        }
        if out.failures.len() >= 20 {
            break; // Broken, not flaky: stop before the timeouts add up to minutes.
        }
    }
    out
}

/// Checks that all `n` connections were answered and each backend's share is 25-42%.
pub fn assert_spread(what: &str, out: &Outcome, n: usize, backends: usize) {
    let Outcome { by_backend, failures, .. } = out;
    assert!(
        failures.is_empty(),
        "{what}: {} of {n} connections failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(by_backend.len(), backends, "{what}: {by_backend:?}");
    assert_eq!(by_backend.values().sum::<usize>(), n, "{what}: {by_backend:?}");
    if backends == 3 {
        for (name, c) in by_backend {
            let share = *c as f64 / n as f64;
            assert!((0.25..=0.42).contains(&share), "{what}: {name} got {:.1}% of connections", share * 100.0);
        }
    }
}

/// Waits until xlb has resolved `n` backends and owns its addresses.
pub fn wait_ready(xlb: &mut Xlb, n: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    while xlb.log_text().matches("backend next hop resolved").count() < n {
        assert!(Instant::now() < end, "backends not resolved:\n{}", xlb.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    xlb.wait_log("to=\"owned\"", Duration::from_secs(5));
}

/// UDP datagrams to `to` from the client namespace; the replies and where they came from.
pub fn udp_echo(ns: &str, to: SocketAddr, n: usize) -> Vec<(SocketAddr, String)> {
    in_netns(ns, move || {
        let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        for i in 0..n {
            s.send_to(format!("ping {i}").as_bytes(), to).unwrap();
            let mut buf = [0u8; 256];
            if let Ok((len, from)) = s.recv_from(&mut buf) {
                got.push((from, String::from_utf8_lossy(&buf[..len]).to_string()));
            }
        }
        got
    })
}

pub fn total_drops(stats: &serde_json::Value) -> u64 {
    stats["drops"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum()
}

/// A long-lived connection to `addr` (the servers' "hold" mode): the backend's name, the
/// stream and a reader of its lines. Each line written is echoed after the name.
#[allow(dead_code)] // not every test binary holds connections
pub fn hold(addr: SocketAddr, read_timeout: Duration) -> (String, TcpStream, BufReader<TcpStream>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s.write_all(b"hold\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    (first.split_whitespace().next().unwrap().to_string(), s, r)
}

/// Long-lived TCP connections pinged round after round from a client namespace, without
/// pause: the longest round in each phase is the stall a client saw (a restart, a handover).
#[allow(dead_code)] // only the restart, upgrade and flood tests hold connections
pub struct Pinger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The worst round of each phase so far (the current phase last).
    worst: std::sync::Arc<std::sync::Mutex<Vec<Duration>>>,
    thread: std::thread::JoinHandle<Result<u32, String>>,
}

#[allow(dead_code)]
impl Pinger {
    /// Opens `each` connections to every address of `addrs` from namespace `ns` (each read
    /// waits up to `read_timeout`) and starts pinging, a round every `every` at most;
    /// returns once they are all open.
    pub fn start(ns: &str, addrs: &[SocketAddr], each: usize, every: Duration, read_timeout: Duration) -> Pinger {
        use std::sync::{atomic::Ordering, mpsc};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let worst = std::sync::Arc::new(std::sync::Mutex::new(vec![Duration::ZERO]));
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let thread = {
            let (stop, worst, ns, addrs) = (stop.clone(), worst.clone(), ns.to_string(), addrs.to_vec());
            std::thread::spawn(move || {
                enter_netns(&ns).unwrap();
                let mut conns = Vec::new();
                for addr in std::iter::repeat_n(addrs, each).flatten() {
                    let (name, s, r) = hold(addr, read_timeout);
                    conns.push((name, s, r, addr));
                }
                ready_tx.send(()).unwrap();
                let mut round = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let t0 = Instant::now();
                    for (i, (name, s, r, addr)) in conns.iter_mut().enumerate() {
                        let what = format!("connection {i} to {addr} ({name}), round {round}");
                        s.write_all(format!("ping {round}\n").as_bytes()).map_err(|e| format!("{what}: {e}"))?;
                        let mut line = String::new();
                        r.read_line(&mut line).map_err(|e| format!("{what}: {e}"))?;
                        if line.trim() != format!("{name} ping {round}") {
                            return Err(format!("{what}: answered {line:?}"));
                        }
                    }
                    let took = t0.elapsed();
                    let mut w = worst.lock().unwrap();
                    let last = w.last_mut().unwrap();
                    *last = (*last).max(took);
                    drop(w);
                    std::thread::sleep(every);
                }
                Ok(round)
            })
        };
        ready_rx.recv_timeout(Duration::from_secs(20)).expect("long-lived connections not opened");
        Pinger { stop, worst, thread }
    }

    /// Starts a new phase: rounds from now on count towards it.
    pub fn next_phase(&self) {
        self.worst.lock().unwrap().push(Duration::ZERO);
    }

    /// Stops pinging: the rounds done (or how a connection broke) and each phase's worst
    /// round.
    pub fn finish(self) -> (Result<u32, String>, Vec<Duration>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rounds = self.thread.join().unwrap();
        let worst = self.worst.lock().unwrap().clone();
        (rounds, worst)
    }
}

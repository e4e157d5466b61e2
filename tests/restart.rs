//! Lab test of restarts (issue 17): xlb killed with SIGKILL, then stopped with SIGTERM, and
//! started again each time at once, under long-lived DSR and SNAT connections. The new xlb
//! takes the flow and SNAT tables over from the state directory, so every connection must
//! be kept; the longest stall each connection saw is reported.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, clippy::cast_precision_loss)] // test code

mod support;

use std::{
    io::{BufRead, Write},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use support::{
    traffic::{hold, wait_ready},
    Xlb,
};

const VIP: &str = "10.81.0.100";
const DSR_PORT: u16 = 80;
const SNAT_PORT: u16 = 81;
const CONNS: usize = 10;

fn xlb_args(dsr: &str, snat: &str) -> Vec<String> {
    ["--vip", VIP, "--snat-addr", "10.81.0.200", "--conntrack-capacity", "65536"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--service".into(), dsr.to_string(), "--service".into(), snat.to_string()])
        .collect()
}

/// The longest time one round of pings (over every connection) took in each phase.
#[derive(Debug, Default)]
struct Stalls {
    phase: usize,
    worst: Vec<Duration>,
}

#[test]
fn connections_survive_kill_9_and_sigterm_restarts() {
    let Some((lab, client, lb, [dsr, snat])) = support::dsr_and_snat_lab("connections_survive_restarts", 81, VIP)
    else {
        return;
    };
    let args = xlb_args(&dsr, &snat);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut xlb = Xlb::start_release(&lab, &lb, &args);
    wait_ready(&mut xlb, 3);

    // Long-lived connections in both modes, pinged round after round; each round's time is
    // the stall a client would see.
    let (dsr_addr, snat_addr): (SocketAddr, SocketAddr) =
        (format!("{VIP}:{DSR_PORT}").parse().unwrap(), format!("{VIP}:{SNAT_PORT}").parse().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let stalls = Arc::new(Mutex::new(Stalls { phase: 0, worst: vec![Duration::ZERO] }));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let pinger = {
        let (stop, stalls, ns) = (stop.clone(), stalls.clone(), client.ns.clone());
        std::thread::spawn(move || {
            support::enter_netns_for_tests(&ns).unwrap();
            let mut conns = Vec::new();
            for addr in std::iter::repeat_n([dsr_addr, snat_addr], CONNS).flatten() {
                let (name, s, r) = hold(addr, Duration::from_secs(15));
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
                let mut st = stalls.lock().unwrap();
                let p = st.phase;
                st.worst[p] = st.worst[p].max(took);
                drop(st);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok::<u32, String>(round)
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(20)).expect("long-lived connections not opened");
    std::thread::sleep(Duration::from_secs(1));

    let mut logs = Vec::new();
    for (how, signal) in [("kill -9", "KILL"), ("SIGTERM", "TERM")] {
        {
            let mut st = stalls.lock().unwrap();
            st.phase += 1;
            st.worst.push(Duration::ZERO);
        }
        let t0 = Instant::now();
        let code = xlb.signal(signal);
        let exited = t0.elapsed();
        logs.push(xlb.log_text());
        xlb = Xlb::start_release(&lab, &lb, &args);
        wait_ready(&mut xlb, 3);
        let running = t0.elapsed();
        eprintln!("{how}: old xlb gone after {exited:?} (status {code:?}), new one running after {running:?}");
        // The new xlb took the tables over.
        let log = xlb.log_text();
        assert!(log.contains("the previous xlb's flow table taken over"), "{how}: no flow table taken over:\n{log}");
        assert!(log.contains("the previous xlb's SNAT table taken over"), "{how}: no SNAT table taken over:\n{log}");
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = pinger.join().unwrap();
    let stats = xlb.stop();
    let st = stalls.lock().unwrap();
    logs.push(xlb.log_text());
    let taken: Vec<&str> = logs
        .iter()
        .flat_map(|l| l.lines().filter(|l| l.contains("taken over") || l.contains("new flow table")))
        .collect();
    eprintln!(
        "restarts under {CONNS} DSR + {CONNS} SNAT long-lived connections: rounds {rounds:?}; worst round before: \
         {:?}, across kill -9: {:?}, across SIGTERM: {:?}\n{taken:#?}\ndrops {}",
        st.worst[0], st.worst[1], st.worst[2], stats["drops"]
    );
    let rounds = rounds.unwrap_or_else(|e| panic!("a connection broke across a restart: {e}"));
    assert!(rounds > 50, "{rounds} rounds of pings");
    // Nothing was lost; a stall is bounded by what TCP retransmission adds to the restart.
    for (how, worst) in [("kill -9", st.worst[1]), ("SIGTERM", st.worst[2])] {
        assert!(worst < Duration::from_secs(5), "{how}: a round of pings took {worst:?}");
    }
}

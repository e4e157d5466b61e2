//! Lab test of restarts (issue 17): xlb killed with SIGKILL, then stopped with SIGTERM, and
//! started again each time at once, then replaced by a new xlb started beside it
//! (`--takeover`, an upgrade in place), under long-lived DSR and SNAT connections. The new xlb
//! takes the flow and SNAT tables over from the state directory, so every connection must
//! be kept; the longest stall each connection saw is reported.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, clippy::cast_precision_loss)] // test code

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use support::{
    traffic::{wait_ready, Pinger},
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
    let pinger =
        Pinger::start(&client.ns, &[dsr_addr, snat_addr], CONNS, Duration::from_millis(5), Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));

    let mut logs = Vec::new();
    let mut takeover = args.clone();
    takeover.push("--takeover");
    for (how, signal) in [("kill -9", Some("KILL")), ("SIGTERM", Some("TERM")), ("handover", None)] {
        pinger.next_phase();
        let t0 = Instant::now();
        let (code, exited) = match signal {
            Some(signal) => {
                let code = xlb.signal(signal);
                let exited = t0.elapsed();
                logs.push(xlb.log_text());
                xlb = Xlb::start_release(&lab, &lb, &args);
                (code, exited)
            }
            // An upgrade in place: the new xlb asks the running one to hand over; the old
            // one lets go of the queues and exits (standalone) once the new one runs.
            None => {
                let mut old = std::mem::replace(&mut xlb, Xlb::start_release(&lab, &lb, &takeover));
                let code = old.wait_exit(Duration::from_secs(10));
                let log = old.log_text();
                assert!(log.contains("handed over: queues, tables and the state directory let go"), "{log}");
                logs.push(log);
                (code, t0.elapsed())
            }
        };
        wait_ready(&mut xlb, 3);
        let running = t0.elapsed();
        eprintln!("{how}: old xlb gone after {exited:?} (status {code:?}), new one running after {running:?}");
        // The new xlb took the tables over.
        let log = xlb.log_text();
        assert!(log.contains("the previous xlb's flow table taken over"), "{how}: no flow table taken over:\n{log}");
        assert!(log.contains("the previous xlb's SNAT table taken over"), "{how}: no SNAT table taken over:\n{log}");
        std::thread::sleep(Duration::from_secs(2));
    }
    let (rounds, worst) = pinger.finish();
    let stats = xlb.stop();
    logs.push(xlb.log_text());
    let taken: Vec<&str> = logs
        .iter()
        .flat_map(|l| {
            l.lines().filter(|l| l.contains("taken over") || l.contains("new flow table") || l.contains("still held"))
        })
        .collect();
    eprintln!(
        "restarts under {CONNS} DSR + {CONNS} SNAT long-lived connections: rounds {rounds:?}; worst round before: \
         {:?}, across kill -9: {:?}, across SIGTERM: {:?}, across a handover: {:?}\n{taken:#?}\ndrops {}",
        worst[0], worst[1], worst[2], worst[3], stats["drops"]
    );
    let rounds = rounds.unwrap_or_else(|e| panic!("a connection broke across a restart: {e}"));
    assert!(rounds > 50, "{rounds} rounds of pings");
    // Nothing was lost; a stall is bounded by what TCP retransmission adds to the restart.
    for (how, worst) in [("kill -9", worst[1]), ("SIGTERM", worst[2]), ("handover", worst[3])] {
        assert!(worst < Duration::from_secs(5), "{how}: a round of pings took {worst:?}");
    }
}

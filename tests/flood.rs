//! Lab test of a spoofed-source SYN flood (issue 17): pktgen, from an attacker namespace,
//! floods a DSR and a SNAT service of one VIP with SYNs from made-up clients for 20 s,
//! while long-lived connections carry traffic and a real client keeps opening new ones.
//! Every long-lived connection must be kept, and at least 99% of the new connections
//! answered, in both modes, during the flood and right after it.
//!
//! The SNAT service gets 8,192 ports: the flood's 5,000 new SYNs a second would take them
//! all within two seconds if an unanswered SYN held its port for the 60 s of the SYN
//! timeout (what xlb did before), and no client would get through for the rest of the
//! flood.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, clippy::cast_precision_loss)] // test code

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use support::{
    traffic::{in_netns, wait_ready, Pinger},
    Xlb,
};

const VIP: &str = "10.79.0.100";
/// DSR on VIP:80, SNAT on VIP:81 (support::dsr_and_snat_lab).
const DSR_PORT: u16 = 80;
const SNAT_PORT: u16 = 81;
const FLOOD_SECONDS: u64 = 20;
const FLOOD_PPS: u64 = 10_000;
const LONG_LIVED: usize = 10;

/// What one kind of connection (DSR or SNAT) met.
#[derive(Debug, Default, Clone)]
struct Tally {
    tried: usize,
    answered: usize,
    failures: Vec<String>,
}

/// One short connection to `addr`; the backend's answer.
fn connect_once(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"hello\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    if reply.starts_with("backend-") {
        Ok(reply)
    } else {
        Err(std::io::Error::other(format!("answered {reply:?}")))
    }
}

#[test]
fn a_spoofed_syn_flood_starves_neither_dsr_nor_snat() {
    let Some((mut lab, client, lb, [dsr, snat])) = support::dsr_and_snat_lab("a_spoofed_syn_flood", 79, VIP) else {
        return;
    };
    let attacker = lab.host("attacker", &["10.79.0.3/24"], 1);
    let args = [
        "--vip",
        VIP,
        "--snat-addr",
        "10.79.0.200",
        "--snat-ports",
        "20000-28191",
        "--conntrack-capacity",
        "16384",
        "--dad-probes",
        "0",
        "--service",
        &dsr,
        "--service",
        &snat,
    ];
    let mut xlb = Xlb::start(&lab, &lb, &args);
    wait_ready(&mut xlb, 3);
    let pktgen = support::pktgen();
    let (dsr_addr, snat_addr): (SocketAddr, SocketAddr) =
        (format!("{VIP}:{DSR_PORT}").parse().unwrap(), format!("{VIP}:{SNAT_PORT}").parse().unwrap());
    for addr in [dsr_addr, snat_addr] {
        in_netns(&client.ns, move || connect_once(addr)).unwrap_or_else(|e| panic!("{addr} before the flood: {e}"));
    }

    // Long-lived connections in both modes, pinged every 100 ms through the flood.
    let addrs = [dsr_addr, snat_addr];
    let long = Pinger::start(&client.ns, &addrs, LONG_LIVED, Duration::from_millis(100), Duration::from_secs(3));

    // The flood: SYNs from 100 made-up sources of the lab's subnet (nobody holds them, so
    // the backends' answers go nowhere), 60,000 (address, port) pairs, half to each service.
    let flood_log = lab.dir.join("pktgen.log");
    let mut flood = Command::new("ip")
        .args(["netns", "exec", &attacker.ns, pktgen, "send", "-i", "eth0", "--dst-mac"])
        .arg(lb.mac.to_string())
        .args(["--dst", &format!("{VIP}:{DSR_PORT}"), "--dports", "2", "--src", "10.79.0.128", "--src-count", "100"])
        .args(["--sport", "1024", "--flows", "60000", "--proto", "syn", "--size", "66"])
        .args(["--rate", &FLOOD_PPS.to_string(), "--duration", &FLOOD_SECONDS.to_string()])
        .stdout(std::fs::File::create(&flood_log).unwrap())
        .stderr(std::fs::File::create(lab.dir.join("pktgen.err")).unwrap())
        .spawn()
        .unwrap();

    // New connections, alternately to each service, all through the flood and for 5 s after.
    let started = Instant::now();
    let (during, after) = in_netns(&client.ns, move || {
        let (mut during, mut after) = ([Tally::default(), Tally::default()], [Tally::default(), Tally::default()]);
        let mut i = 0usize;
        while started.elapsed() < Duration::from_secs(FLOOD_SECONDS + 5) {
            let t = if started.elapsed() < Duration::from_secs(FLOOD_SECONDS) { &mut during } else { &mut after };
            let (k, addr) = if i.is_multiple_of(2) { (0, dsr_addr) } else { (1, snat_addr) };
            i += 1;
            t[k].tried += 1;
            match connect_once(addr) {
                Ok(_) => t[k].answered += 1,
                Err(e) => t[k].failures.push(format!("{addr} at {:.1} s: {e}", started.elapsed().as_secs_f64())),
            }
            std::thread::sleep(Duration::from_millis(40));
        }
        (during, after)
    });
    let flood_status = flood.wait().unwrap();
    let (pings, _) = long.finish();
    let stats = xlb.stop();
    let warnings: Vec<String> = xlb.log_text().lines().filter(|l| l.contains("WARN")).map(String::from).collect();
    let sent = std::fs::read_to_string(&flood_log).unwrap_or_default();
    eprintln!(
        "SYN flood, {FLOOD_PPS} pps for {FLOOD_SECONDS} s ({flood_status}): pktgen {}\n\
         during: DSR {}/{} SNAT {}/{}; after: DSR {}/{} SNAT {}/{}\n\
         long-lived: {pings:?}\nconntrack {}; drops {}; counters {}\nservices {}\nxdp {}\nwarnings: {warnings:#?}",
        sent.lines().filter(|l| l.contains("\"sent\"") || l.contains("\"pps\"")).collect::<Vec<_>>().join(" "),
        during[0].answered,
        during[0].tried,
        during[1].answered,
        during[1].tried,
        after[0].answered,
        after[0].tried,
        after[1].answered,
        after[1].tried,
        stats["conntrack"],
        stats["drops"],
        stats["counters"],
        stats["services"],
        stats["xdp_classes"],
    );
    let err = std::fs::read_to_string(lab.dir.join("pktgen.err")).unwrap_or_default();
    assert!(flood_status.success(), "pktgen failed: {sent}{err}");
    // The flood reached xlb, and pressed on both the flow table and the SNAT ports.
    let rx = stats["counters"]["rx_frames"].as_u64().unwrap();
    assert!(rx as f64 > 0.9 * (FLOOD_PPS * FLOOD_SECONDS) as f64, "xlb received {rx} frames: {stats}");
    assert!(stats["conntrack"]["evictions"].as_u64().unwrap() > 10_000, "{}", stats["conntrack"]);
    // Every long-lived connection kept.
    let pings = pings.unwrap_or_else(|e| panic!("a long-lived connection broke: {e}"));
    assert!(pings as u64 > FLOOD_SECONDS * 5, "{pings} rounds of pings");
    // At least 99% of new connections answered, in each mode, during the flood and after.
    for (when, t) in [("during", &during), ("after", &after)] {
        for (mode, t) in ["DSR", "SNAT"].iter().zip(t.iter()) {
            assert!(t.tried >= 20, "{mode} {when}: only {} tried", t.tried);
            assert!(
                t.answered as f64 >= 0.99 * t.tried as f64,
                "{mode} {when} the flood: {} of {} answered; first failures: {:?}",
                t.answered,
                t.tried,
                &t.failures[..t.failures.len().min(5)]
            );
        }
    }
    // No SNAT flow was refused a port: the flood's unanswered SYNs gave theirs back.
    assert_eq!(stats["drops"]["snat_ports_exhausted"].as_u64(), Some(0), "{}", stats["drops"]);
}

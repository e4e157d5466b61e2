//! Failover between three standalone xlb boxes (`ha` in the config: heartbeats every 50 ms,
//! dead after 5 missed, fencing at 150 ms), 50 VIPs, in the netns lab with a real client:
//! - each VIP answered by exactly one box, spread over the three;
//! - owner failures alternating kill -9 and link down, timed from the client (ARP probes
//!   every 10 ms) while TCP connections run through every VIP; only the failed box's VIPs
//!   move, the new owners send gratuitous ARP, and the box takes them back on return;
//! - heartbeats signed with the cluster's key (`ha.keyFile`): forged ones move nothing;
//! - a VIP sent to a box that does not announce it is forwarded all the same;
//! - a one-way cut (one box's heartbeats dropped on its way out): the others take its VIPs,
//!   it fences itself (its answers stop), and healing moves ownership back once;
//! - an upgrade in place (`--takeover`): the box keeps its VIPs, nobody takes them over,
//!   no connection through them fails.
//!
//! Figures are printed (`cargo test --test ha -- --nocapture`); XLB_HA_FAILURES sets how
//! many failures are timed (default 6). Needs root: under CI=true, no lab is a failure.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: a panic is the report

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use support::{
    dsr_backend, enter_netns_for_tests,
    neigh::{overlap, quantile, Asker},
    run,
    traffic::{in_netns, tcp_connections},
    Host, Lab, Xlb,
};
use xlb::{io::packet_socket::PacketSocket, wire::EthernetAddress};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const BOXES: [&str; 3] = ["box-a", "box-b", "box-c"];
const VIPS: u8 = 50;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(dir.join("ha.key"), "a shared key of the lab's three boxes\n").unwrap();
    let mut y = format!(
        "interfaces: [{{name: eth0}}]\nha: {{peers: [box-a, box-b, box-c], cluster: lab, keyFile: {}}}\nservices:\n",
        dir.join("ha.key").display()
    );
    for i in 0..VIPS {
        y.push_str(&format!(
            "  - {{name: s{i}, vip: 10.77.0.{}, ports: [{{port: 80}}], backends: [{{address: 10.77.0.21}}, {{address: 10.77.0.22}}]}}\n",
            100 + u32::from(i)
        ));
    }
    let path = dir.join("ha.yaml");
    std::fs::write(&path, y).unwrap();
    path
}

struct Box_ {
    name: &'static str,
    host: Host,
    xlb: Option<Xlb>,
}

/// Short TCP connections through every VIP in turn, from the client, until stopped:
/// (answered, failed).
fn traffic(ns: &str, vips: Vec<Ipv4Addr>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns_for_tests(&ns).unwrap();
        let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let addr = SocketAddr::from((vips[i % vips.len()], 80));
            i += 1;
            let r = (|| -> std::io::Result<()> {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                s.write_all(b"hello\n")?;
                let mut reply = String::new();
                s.read_to_string(&mut reply)?;
                if reply.starts_with("be") {
                    Ok(())
                } else {
                    Err(std::io::Error::other(reply))
                }
            })();
            match r {
                Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
            };
            std::thread::sleep(Duration::from_millis(5));
        }
        (ok.into_inner(), failed.into_inner())
    })
}

/// Drops heartbeats on the lab's bridge by these (direction, port) matches, then watches
/// `target` (owned by `mac`) for 2 s: when another box first answered, and how long both did.
fn cut(
    lab: &Lab,
    ask: &Asker<'_>,
    target: Ipv4Addr,
    mac: EthernetAddress,
    rules: &[(&str, &str)],
) -> (Duration, Duration) {
    lab.switch_nft(&["add", "table", "bridge", "cut"]);
    lab.switch_nft(&["add", "chain", "bridge", "cut", "fw", "{ type filter hook forward priority 0; }"]);
    for (dir, port) in rules {
        lab.switch_nft(&["add", "rule", "bridge", "cut", "fw", dir, port, "ether", "type", "0x88b5", "drop"]);
    }
    let seen_by = ask.answers(&[target], Duration::from_secs(2)).remove(&target).unwrap();
    let new = seen_by.iter().filter(|(m, _)| **m != mac).map(|(_, x)| x.0).min();
    let new = new.unwrap_or_else(|| panic!("nobody took {target} from the cut-off box: {seen_by:?}"));
    (new, overlap(&seen_by, mac))
}

#[test]
fn three_boxes_fail_over_in_under_a_second_and_fence_when_cut_off() {
    let Some(mut lab) = Lab::new("three_boxes_fail_over") else { return };
    let client = lab.host("client", &["10.77.0.1/24"], 1);
    let mut boxes: Vec<Box_> = BOXES
        .iter()
        .enumerate()
        .map(|(i, n)| Box_ { name: n, host: lab.host(n, &[&format!("10.77.0.{}/24", 11 + i)], 1), xlb: None })
        .collect();
    let be1 = lab.host("be1", &["10.77.0.21/24"], 1);
    let be2 = lab.host("be2", &["10.77.0.22/24"], 1);
    let vips: Vec<Ipv4Addr> = (0..VIPS).map(|i| Ipv4Addr::new(10, 77, 0, 100 + i)).collect();
    let vip_strs: Vec<String> = vips.iter().map(ToString::to_string).collect();
    let vip_refs: Vec<&str> = vip_strs.iter().map(String::as_str).collect();
    dsr_backend(&lab, &be1, "be1", &vip_refs, 80);
    dsr_backend(&lab, &be2, "be2", &vip_refs, 80);
    let cfg = config(&lab.dir);
    let start = |lab: &Lab, b: &Box_| Xlb::start_config(lab, &b.host, &cfg, &["--node-name", b.name]);
    for b in &mut boxes {
        b.xlb = Some(start(&lab, b));
    }

    let sock = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    let ask = Asker { sock: &sock, mac: client.mac, ip: CLIENT };
    let owners = ask.settled(&vips, Duration::from_secs(20));
    let macs: BTreeMap<EthernetAddress, &str> = boxes.iter().map(|b| (b.host.mac, b.name)).collect();
    let mut per_box: BTreeMap<&str, usize> = BTreeMap::new();
    for m in owners.values() {
        *per_box.entry(macs.get(m).unwrap_or_else(|| panic!("{m} is not a box"))).or_default() += 1;
    }
    println!("VIPs per box: {per_box:?}");
    let (ok, status, err) = boxes[0].xlb.as_ref().unwrap().cli(&["status"]);
    assert!(ok, "{err}");
    assert!(status.contains("failover: node box-a, alive: box-a, box-b, box-c, quorum true, fenced false"), "{status}");
    if per_box.len() != 3 {
        let logs: Vec<String> = boxes.iter().map(|b| b.xlb.as_ref().unwrap().log_text()).collect();
        panic!("VIPs not spread over the three boxes: {per_box:?}\n{}", logs.join("\n-----\n"));
    }

    // Heartbeats are signed: "leaving" beats forged in box-a's name (from the client, every
    // 10 ms, with the highest incarnation) are dropped, and box-a keeps its VIPs.
    let va = *owners.iter().find(|(_, m)| **m == boxes[0].host.mac).unwrap().0;
    let forged = xlb::lb::heartbeat::build(
        client.mac,
        &xlb::lb::heartbeat::Beat {
            name: "box-a",
            cluster: xlb::control::ha::cluster_hash("lab"),
            incarnation: u64::MAX,
            seq: 1,
            digest: 0,
            hears: u64::MAX,
            flags: xlb::lb::heartbeat::FLAG_LEAVING,
        },
    );
    let forger = {
        let ns = client.ns.clone();
        std::thread::spawn(move || {
            let s = PacketSocket::open(Some(&ns), "eth0").unwrap();
            for _ in 0..150 {
                s.send(forged.bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let during = ask.answers(&[va], Duration::from_secs(1)).remove(&va).unwrap();
    forger.join().unwrap();
    assert_eq!(
        during.keys().copied().collect::<Vec<_>>(),
        vec![boxes[0].host.mac],
        "forged heartbeats moved {va}: {during:?}"
    );

    // A VIP that box-a announces also works through box-b's MAC: box-b forwards it too
    // (forward-only), so a client that has not yet learnt a move loses nothing.
    let (va_s, b_mac) = (va.to_string(), boxes[1].host.mac.to_string());
    run("ip", &["-n", &client.ns, "neigh", "replace", &va_s, "lladdr", &b_mac, "dev", "eth0", "nud", "permanent"]);
    let t = SocketAddr::from((va, 80));
    let through_b = in_netns(&client.ns, move || tcp_connections(t, 20));
    run("ip", &["-n", &client.ns, "neigh", "del", &va_s, "dev", "eth0"]);
    assert!(
        through_b.failures.is_empty() && through_b.by_backend.values().sum::<usize>() == 20,
        "{va} (announced by box-a) sent to box-b's MAC: {:?} {:?}",
        through_b.by_backend,
        through_b.failures
    );

    // Failures, alternating kill -9 and link down, under TCP traffic through every VIP.
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&client.ns, vips.clone(), stop.clone());
    let failures: usize = std::env::var("XLB_HA_FAILURES").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let mut times = Vec::new();
    for k in 0..failures {
        let v = k % 3;
        let victim_mac = boxes[v].host.mac;
        let target = *owners.iter().find(|(_, m)| **m == victim_mac).unwrap().0;
        let kill = k % 2 == 0;
        let t0 = Instant::now();
        if kill {
            boxes[v].xlb.take().unwrap().signal("KILL");
        } else {
            run("ip", &["-n", &boxes[v].host.ns, "link", "set", "eth0", "down"]);
        }
        let (took, garp) = ask.takeover(target, victim_mac, t0);
        assert!(garp, "no gratuitous ARP for {target} from its new owner");
        times.push(took);
        let after = ask.settled(&vips, Duration::from_secs(10));
        for (vip, m) in &owners {
            if *m == victim_mac {
                assert_ne!(after[vip], victim_mac, "{vip} still answered by the failed box");
            } else {
                assert_eq!(after[vip], *m, "{vip} moved though its owner lives");
            }
        }
        println!(
            "failure {} ({}): {} -> {target} answered by another box after {took:?}",
            k + 1,
            if kill { "kill -9" } else { "link down" },
            boxes[v].name
        );
        if kill {
            let x = start(&lab, &boxes[v]);
            boxes[v].xlb = Some(x);
        } else {
            run("ip", &["-n", &boxes[v].host.ns, "link", "set", "eth0", "up"]);
        }
        // Back: it takes exactly its VIPs back.
        let end = Instant::now() + Duration::from_secs(15);
        while ask.settled(&vips, Duration::from_secs(10)) != owners {
            assert!(
                Instant::now() < end,
                "ownership did not return to its first state after {} came back",
                boxes[v].name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    if !times.is_empty() {
        println!(
            "failover seen by the client over {} failures: median {:?}, p99 {:?}, max {:?}; TCP connections: {ok} answered, {failed} failed",
            times.len(),
            quantile(&times, 0.5),
            quantile(&times, 0.99),
            quantile(&times, 1.0)
        );
        assert!(quantile(&times, 1.0) < Duration::from_secs(1), "a failover took a second or more: {times:?}");
    }
    assert!(failures == 0 || ok > 0, "no TCP connection answered");

    // A two-way cut: box-a hears nobody and nobody hears it. It loses quorum and fences
    // before the others take over: no overlap at all is expected.
    let a = &boxes[0];
    let target = *owners.iter().find(|(_, m)| **m == a.host.mac).unwrap().0;
    let port = format!("p-{}", a.name);
    let (new, overlap) = cut(&lab, &ask, target, a.host.mac, &[("iifname", &port), ("oifname", &port)]);
    println!("two-way cut: {target} answered by another box after {new:?}; both answered for {overlap:?}");
    assert!(overlap <= Duration::from_millis(50), "two boxes answered for {overlap:?}");
    lab.switch_nft(&["delete", "table", "bridge", "cut"]);
    let end = Instant::now() + Duration::from_secs(10);
    while ask.settled(&vips, Duration::from_secs(10)) != owners {
        assert!(Instant::now() < end, "ownership did not return after the two-way cut healed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A one-way cut: box-a's heartbeats dropped by the switch on their way out. The others
    // take its VIPs; box-a, hearing that they no longer hear it, fences itself.
    let (new, overlap) = cut(&lab, &ask, target, a.host.mac, &[("iifname", &port)]);
    println!("one-way cut: {target} answered by another box after {new:?}; both answered for {overlap:?}");
    assert!(
        overlap <= Duration::from_millis(250),
        "two boxes answered for {overlap:?} (more than one announcement round)"
    );
    let after_cut = ask.settled(&vips, Duration::from_secs(5));
    assert!(after_cut.values().all(|m| *m != a.host.mac), "the cut-off box still answers");
    // Healing: back to the first owners, once, and stable.
    lab.switch_nft(&["delete", "table", "bridge", "cut"]);
    let end = Instant::now() + Duration::from_secs(10);
    while ask.settled(&vips, Duration::from_secs(10)) != owners {
        assert!(Instant::now() < end, "ownership did not return after the cut healed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let moves: BTreeSet<EthernetAddress> =
        ask.answers(&[target], Duration::from_secs(3)).remove(&target).unwrap().into_keys().collect();
    assert_eq!(moves, BTreeSet::from([a.host.mac]), "ownership flapped after healing");

    // An upgrade in place: box-c's xlb replaced by a new one started beside it
    // (`--takeover`). The old one hands over and exits; its VIPs stay on box-c (no other
    // MAC answers for them), the others take none over, and connections go on.
    let c = &boxes[2];
    let c_vips: Vec<Ipv4Addr> = owners.iter().filter(|(_, m)| **m == c.host.mac).map(|(v, _)| *v).collect();
    let takeovers = |b: &Box_| b.xlb.as_ref().unwrap().log_text().matches("taking the VIP over").count();
    let before: Vec<usize> = boxes[..2].iter().map(takeovers).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flows = traffic(&client.ns, c_vips.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let args = ["--node-name", c.name, "--takeover"];
    let (new, seen) = std::thread::scope(|s| {
        let new = s.spawn(|| Xlb::start_config(&lab, &c.host, &cfg, &args));
        let seen = ask.answers(&c_vips, Duration::from_secs(3));
        (new.join().unwrap(), seen)
    });
    let mut old = boxes[2].xlb.replace(new).unwrap();
    assert_eq!(old.wait_exit(Duration::from_secs(5)), Some(0), "the old xlb did not exit after handing over");
    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = flows.join().unwrap();
    let answering: BTreeSet<EthernetAddress> = seen.values().flat_map(|m| m.keys().copied()).collect();
    println!(
        "upgrade in place of box-c: {answered} connections answered, {failed} failed; its {} VIPs answered by {answering:?} only",
        c_vips.len()
    );
    for (v, macs) in &seen {
        assert_eq!(macs.keys().copied().collect::<Vec<_>>(), vec![boxes[2].host.mac], "{v} answered by {macs:?}");
    }
    assert_eq!(boxes[..2].iter().map(takeovers).collect::<Vec<_>>(), before, "a box took VIPs over in the upgrade");
    assert_eq!(failed, 0, "connections failed across the upgrade");
    assert_eq!(ask.settled(&vips, Duration::from_secs(5)), owners, "a VIP moved in the upgrade");

    // A graceful stop: the last heartbeat says "leaving", and the others take over at once.
    let b_mac = boxes[1].host.mac;
    let target = *owners.iter().find(|(_, m)| **m == b_mac).unwrap().0;
    let t0 = Instant::now();
    boxes[1].xlb.as_mut().unwrap().signal("TERM");
    let (took, _) = ask.takeover(target, b_mac, t0);
    println!("graceful stop: {target} answered by another box after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    boxes[1].xlb = None;
    for b in boxes.iter_mut().filter(|b| b.xlb.is_some()) {
        b.xlb.as_mut().unwrap().stop();
    }
}

//! Lab tests of load balancing: real TCP and UDP from a client namespace, through xlb, to
//! backend namespaces running servers, in DSR mode.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: a panic is the report

mod support;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use support::{dsr_backend, Lab, Xlb};
use xlb::{
    io::packet_socket::{enter_netns, PacketSocket},
    wire::{parse::Network, parse_frame, EthernetAddress},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

/// Runs `f` on a thread inside namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// `n` short TCP connections to `addr`; returns how many each backend answered, and the
/// failures.
fn tcp_connections(addr: SocketAddr, n: usize) -> (HashMap<String, usize>, Vec<String>) {
    let mut by_backend = HashMap::new();
    let mut failures = Vec::new();
    for i in 0..n {
        let res = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"hello\n")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply.trim().to_string())
        })();
        match res {
            Ok(name) if !name.is_empty() => *by_backend.entry(name).or_insert(0) += 1,
            Ok(_) => failures.push(format!("connection {i}: empty reply")),
            Err(e) => failures.push(format!("connection {i}: {e}")),
        }
        if failures.len() >= 20 {
            break; // Broken, not flaky: stop before the timeouts add up to minutes.
        }
    }
    (by_backend, failures)
}

#[test]
fn dsr_spreads_tcp_and_udp_over_three_backends() {
    let Some(mut lab) = Lab::new("dsr_spreads_tcp_and_udp_over_three_backends") else { return };
    let client = lab.host("client", &["10.77.0.1/24"], 1);
    let lb = lab.host("lb", &["10.77.0.2/24"], 1);
    let mut backends = Vec::new();
    for i in 1..=3 {
        let b = lab.host(&format!("backend-{i}"), &[&format!("10.77.0.1{i}/24")], 1);
        dsr_backend(&lab, &b, &format!("backend-{i}"), &["10.77.0.100"], 80);
        backends.push(b);
    }
    let pool = "10.77.0.11:80,10.77.0.12:80,10.77.0.13:80";
    let mut xlb = Xlb::start(
        &lab,
        &lb,
        &[
            "--vip",
            "10.77.0.100",
            "--dad-probes",
            "0",
            "--service",
            &format!("tcp:10.77.0.100:80={pool}"),
            "--service",
            &format!("udp:10.77.0.100:80={pool}"),
        ],
    );
    let end = Instant::now() + Duration::from_secs(10);
    while xlb.log_text().matches("backend next hop resolved").count() < 3 {
        assert!(Instant::now() < end, "backends not resolved:\n{}", xlb.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    xlb.wait_log("to=\"owned\"", Duration::from_secs(5));

    // Watch, from the client, which MAC the VIP's packets come from.
    let sniff = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    sniff.set_recv_buffer(32 << 20).unwrap();

    const CONNS: usize = 3000;
    let started = Instant::now();
    let (by_backend, failures) = in_netns(&client.ns, move || tcp_connections(SocketAddr::from((VIP, 80)), CONNS));
    let elapsed = started.elapsed();
    eprintln!("DSR: {CONNS} TCP connections in {elapsed:?}: {by_backend:?}, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {CONNS} connections failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(by_backend.len(), 3, "{by_backend:?}");
    for (name, n) in &by_backend {
        let share = *n as f64 / CONNS as f64;
        assert!((0.25..=0.42).contains(&share), "{name} got {:.1}% of connections", share * 100.0);
    }

    // UDP echo through the VIP.
    let replies = in_netns(&client.ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        for i in 0..20 {
            s.send_to(format!("ping {i}").as_bytes(), (VIP, 80)).unwrap();
            let mut buf = [0u8; 256];
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                got.push((from, String::from_utf8_lossy(&buf[..n]).to_string()));
            }
        }
        got
    });
    assert_eq!(replies.len(), 20, "UDP echo replies: {replies:?}");
    assert!(
        replies.iter().all(|(from, text)| from.ip() == IpAddr::V4(VIP) && text.starts_with("backend-")),
        "{replies:?}"
    );

    // DSR: every packet from the VIP came straight from a backend's MAC, none through lb.
    let backend_macs: Vec<EthernetAddress> = backends.iter().map(|b| b.mac).collect();
    let (mut from_backends, mut from_lb) = (0usize, 0usize);
    let mut buf = [0u8; 2048];
    while let Some(n) = sniff.recv(&mut buf, Duration::from_millis(50)).unwrap() {
        let Ok(p) = parse_frame(&buf[..n]) else { continue };
        if let Network::Ipv4 { src, .. } = p.network {
            if src == VIP {
                if backend_macs.contains(&p.src_mac) {
                    from_backends += 1;
                } else if p.src_mac == lb.mac {
                    from_lb += 1;
                }
            }
        }
    }
    let stats = xlb.stop();
    eprintln!("DSR: client saw {from_backends} packets from the VIP sent by backends, {from_lb} by lb");
    assert!(from_backends >= CONNS * 2, "too few replies seen: {from_backends}");
    assert_eq!(from_lb, 0, "replies went through the load balancer");
    // xlb forwarded only the client's direction: a few packets per connection.
    let forwarded = stats["counters"]["forwarded"].as_u64().unwrap();
    assert!(forwarded >= (CONNS * 3) as u64 && forwarded <= (CONNS * 8 + 100) as u64, "forwarded {forwarded}: {stats}");
    let dropped: u64 = stats["drops"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(dropped, 0, "{stats}");
}

#[test]
fn dsr_over_an_ipv6_vip() {
    let Some(mut lab) = Lab::new("dsr_over_an_ipv6_vip") else { return };
    let client = lab.host("client", &["fd77::1/64"], 1);
    let lb = lab.host("lb", &["fd77::2/64"], 1);
    for i in 1..=2 {
        let b = lab.host(&format!("backend-{i}"), &[&format!("fd77::1{i}/64")], 1);
        dsr_backend(&lab, &b, &format!("backend-{i}"), &["fd77::100"], 80);
    }
    let mut xlb = Xlb::start(
        &lab,
        &lb,
        &["--vip", "fd77::100", "--dad-probes", "0", "--service", "tcp:[fd77::100]:80=[fd77::11]:80,[fd77::12]:80"],
    );
    let end = Instant::now() + Duration::from_secs(10);
    while xlb.log_text().matches("backend next hop resolved").count() < 2 {
        assert!(Instant::now() < end, "backends not resolved:\n{}", xlb.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    xlb.wait_log("to=\"owned\"", Duration::from_secs(5));
    const CONNS: usize = 300;
    let vip: SocketAddr = "[fd77::100]:80".parse().unwrap();
    let (by_backend, failures) = in_netns(&client.ns, move || tcp_connections(vip, CONNS));
    let stats = xlb.stop();
    eprintln!("DSR over IPv6: {CONNS} connections: {by_backend:?}, {} failed", failures.len());
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(by_backend.len(), 2, "{by_backend:?}");
    assert!(stats["counters"]["forwarded"].as_u64().unwrap() >= (CONNS * 3) as u64, "{stats}");
}

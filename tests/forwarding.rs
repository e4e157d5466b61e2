//! Lab tests of load balancing: real TCP and UDP from a client namespace, through xlb, to
//! backend namespaces running servers, in DSR mode.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: a panic is the report

mod support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use support::{
    dsr_backend,
    frames::{arp_request, seen, Seen},
    traffic::{assert_spread, in_netns, tcp_connections, total_drops, udp_echo, wait_ready},
    Lab, Xlb,
};
use xlb::{
    io::packet_socket::PacketSocket,
    wire::{parse::Network, parse_frame, EthernetAddress},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

/// Of the IPv4 packets from `vip` the sniffer holds: how many were sent by a backend's MAC,
/// and how many by lb's.
fn senders_of(
    sniff: &PacketSocket,
    vip: Ipv4Addr,
    backends: &[EthernetAddress],
    lb: EthernetAddress,
) -> (usize, usize) {
    let (mut from_backends, mut from_lb) = (0usize, 0usize);
    let mut buf = [0u8; 2048];
    while let Some(n) = sniff.recv(&mut buf, Duration::from_millis(50)).unwrap() {
        let Ok(p) = parse_frame(&buf[..n]) else { continue };
        if let Network::Ipv4 { src, .. } = p.network {
            if src == vip {
                if backends.contains(&p.src_mac) {
                    from_backends += 1;
                } else if p.src_mac == lb {
                    from_lb += 1;
                }
            }
        }
    }
    (from_backends, from_lb)
}

/// Per-service and per-backend counters agree with the totals, and every backend had traffic.
fn assert_object_counters(stats: &serde_json::Value) {
    let sum = |list: &str, field: &str| -> u64 {
        stats[list].as_array().unwrap().iter().map(|o| o[field].as_u64().unwrap()).sum()
    };
    let forwarded = stats["counters"]["forwarded"].as_u64().unwrap();
    let replies = stats["counters"]["snat_replies"].as_u64().unwrap();
    assert_eq!(sum("services", "packets"), forwarded, "{stats}");
    assert_eq!(sum("backends", "packets"), forwarded, "{stats}");
    assert_eq!(sum("services", "reply_packets"), replies, "{stats}");
    assert_eq!(sum("backends", "reply_packets"), replies, "{stats}");
    // Every backend of a TCP service took some of the many connections (a UDP client with
    // one socket is one flow, on one backend).
    for b in stats["backends"].as_array().unwrap() {
        if b["service"].as_str().unwrap().starts_with("tcp:") {
            let (p, bytes) = (b["packets"].as_u64().unwrap(), b["bytes"].as_u64().unwrap());
            assert!(p > 0 && bytes >= 54 * p, "{b}");
        }
    }
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
    wait_ready(&mut xlb, 3);

    // Watch, from the client, which MAC the VIP's packets come from.
    let sniff = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    sniff.set_recv_buffer(32 << 20).unwrap();

    const CONNS: usize = 3000;
    let started = Instant::now();
    let out = in_netns(&client.ns, move || tcp_connections(SocketAddr::from((VIP, 80)), CONNS));
    let elapsed = started.elapsed();
    eprintln!("DSR: {CONNS} TCP connections in {elapsed:?}: {:?}, {} failed", out.by_backend, out.failures.len());
    assert_spread("DSR", &out, CONNS, 3);
    // DSR leaves the client's address alone.
    assert_eq!(out.peers.iter().collect::<Vec<_>>(), ["10.77.0.1"], "backends saw {:?}", out.peers);

    // UDP echo through the VIP.
    let replies = udp_echo(&client.ns, SocketAddr::from((VIP, 80)), 20);
    assert_eq!(replies.len(), 20, "UDP echo replies: {replies:?}");
    assert!(
        replies.iter().all(|(from, text)| from.ip() == IpAddr::V4(VIP) && text.starts_with("backend-")),
        "{replies:?}"
    );

    // DSR: every packet from the VIP came straight from a backend's MAC, none through lb.
    let backend_macs: Vec<EthernetAddress> = backends.iter().map(|b| b.mac).collect();
    let (from_backends, from_lb) = senders_of(&sniff, VIP, &backend_macs, lb.mac);
    let stats = xlb.stop();
    eprintln!("DSR: client saw {from_backends} packets from the VIP sent by backends, {from_lb} by lb");
    assert!(from_backends >= CONNS * 2, "too few replies seen: {from_backends}");
    assert_eq!(from_lb, 0, "replies went through the load balancer");
    // xlb forwarded only the client's direction: a few packets per connection.
    let forwarded = stats["counters"]["forwarded"].as_u64().unwrap();
    assert!(forwarded >= (CONNS * 3) as u64 && forwarded <= (CONNS * 8 + 100) as u64, "forwarded {forwarded}: {stats}");
    assert_eq!(total_drops(&stats), 0, "{stats}");
    assert_eq!(stats["counters"]["snat_replies"], 0, "{stats}");
    assert_object_counters(&stats);
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
    wait_ready(&mut xlb, 2);
    const CONNS: usize = 300;
    let vip: SocketAddr = "[fd77::100]:80".parse().unwrap();
    let out = in_netns(&client.ns, move || tcp_connections(vip, CONNS));
    let stats = xlb.stop();
    eprintln!("DSR over IPv6: {CONNS} connections: {:?}, {} failed", out.by_backend, out.failures.len());
    assert_spread("DSR over IPv6", &out, CONNS, 2);
    assert!(stats["counters"]["forwarded"].as_u64().unwrap() >= (CONNS * 3) as u64, "{stats}");
}

/// Starts a SNAT lab: client, lb (with `queues` queues), three backends serving on 8080.
/// `None` where the lab cannot be built (not root, not CI).
fn snat_lab(test: &str, v6: bool, queues: u32) -> Option<(Lab, support::Host, support::Host, Vec<support::Host>)> {
    let mut lab = Lab::new(test)?;
    let addr = |i: u32| if v6 { format!("fd78::{i}/64") } else { format!("10.78.0.{i}/24") };
    let client = lab.host("client", &[&addr(1)], 1);
    let lb = lab.host("lb", &[&addr(2)], queues);
    let mut backends = Vec::new();
    for i in 1..=3 {
        let b = lab.host(&format!("backend-{i}"), &[&addr(10 + i)], 1);
        support::snat_backend(&lab, &b, &format!("backend-{i}"), 8080, v6);
        backends.push(b);
    }
    Some((lab, client, lb, backends))
}

fn snat_args(v6: bool) -> Vec<String> {
    let (vip, snat, pool) = if v6 {
        ("fd78::100", "fd78::200", "[fd78::11]:8080,[fd78::12]:8080,[fd78::13]:8080")
    } else {
        ("10.78.0.100", "10.78.0.200", "10.78.0.11:8080,10.78.0.12:8080,10.78.0.13:8080")
    };
    let front = if v6 { format!("[{vip}]:80") } else { format!("{vip}:80") };
    [
        "--vip",
        vip,
        "--snat-addr",
        snat,
        "--dad-probes",
        "0",
        "--service",
        &format!("tcp:{front}={pool};mode=snat"),
        "--service",
        &format!("udp:{front}={pool};mode=snat"),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn snat_spreads_tcp_and_udp_over_three_backends() {
    let Some((lab, client, lb, backends)) = snat_lab("snat_spreads_tcp_and_udp", false, 1) else { return };
    let args = snat_args(false);
    let mut xlb = Xlb::start(&lab, &lb, &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_ready(&mut xlb, 3);
    let sniff = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    sniff.set_recv_buffer(32 << 20).unwrap();

    const CONNS: usize = 3000;
    let vip = Ipv4Addr::new(10, 78, 0, 100);
    let started = Instant::now();
    let out = in_netns(&client.ns, move || tcp_connections(SocketAddr::from((vip, 80)), CONNS));
    eprintln!(
        "SNAT: {CONNS} TCP connections in {:?}: {:?}, {} failed",
        started.elapsed(),
        out.by_backend,
        out.failures.len()
    );
    assert_spread("SNAT", &out, CONNS, 3);
    // The backends saw only xlb's SNAT address.
    assert_eq!(out.peers.iter().collect::<Vec<_>>(), ["10.78.0.200"], "backends saw {:?}", out.peers);

    let replies = udp_echo(&client.ns, SocketAddr::from((vip, 80)), 20);
    assert_eq!(replies.len(), 20, "UDP echo replies: {replies:?}");
    assert!(
        replies.iter().all(|(from, text)| *from == SocketAddr::from((vip, 80)) && text.starts_with("backend-")),
        "{replies:?}"
    );

    // SNAT: every packet from the VIP reached the client through lb, none from a backend.
    let backend_macs: Vec<EthernetAddress> = backends.iter().map(|b| b.mac).collect();
    let (from_backends, from_lb) = senders_of(&sniff, vip, &backend_macs, lb.mac);
    let stats = xlb.stop();
    eprintln!(
        "SNAT: client saw {from_lb} packets from the VIP sent by lb, {from_backends} by backends; {}",
        stats["counters"]
    );
    assert_eq!(from_backends, 0);
    assert!(from_lb >= CONNS * 2, "too few replies seen: {from_lb}");
    let replies_translated = stats["counters"]["snat_replies"].as_u64().unwrap();
    assert!(replies_translated >= (CONNS * 2) as u64, "{stats}");
    assert_eq!(total_drops(&stats), 0, "{stats}");
    assert_object_counters(&stats);
}

#[test]
fn snat_with_two_queues_answers_every_connection() {
    let Some((lab, client, lb, _backends)) = snat_lab("snat_two_queues", false, 2) else { return };
    let mut args = snat_args(false);
    args.extend(["--queues", "2"].map(String::from));
    let mut xlb = Xlb::start(&lab, &lb, &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_ready(&mut xlb, 3);
    const CONNS: usize = 3000;
    let vip = SocketAddr::from((Ipv4Addr::new(10, 78, 0, 100), 80));
    let out = in_netns(&client.ns, move || tcp_connections(vip, CONNS));
    let stats = xlb.stop();
    eprintln!("SNAT, 2 queues: {:?}, {} failed; queues {}", out.by_backend, out.failures.len(), stats["queues"]);
    assert_spread("SNAT with 2 queues", &out, CONNS, 3);
    // Both workers took traffic, and replies did arrive at the worker that does not own
    // their flow's port: the shared reverse table translated them.
    for q in stats["queues"].as_array().unwrap() {
        assert!(q["rx_frames"].as_u64().unwrap() > 100, "a queue saw (almost) nothing: {}", stats["queues"]);
    }
    let crossed = stats["counters"]["snat_replies_crossed"].as_u64().unwrap();
    eprintln!("SNAT, 2 queues: {crossed} of {} replies crossed workers", stats["counters"]["snat_replies"]);
    assert!(crossed > 100, "{stats}");
    assert_eq!(total_drops(&stats), 0, "{stats}");
}

#[test]
fn snat_over_an_ipv6_vip() {
    let Some((lab, client, lb, _backends)) = snat_lab("snat_over_ipv6", true, 1) else { return };
    let args = snat_args(true);
    let mut xlb = Xlb::start(&lab, &lb, &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_ready(&mut xlb, 3);
    const CONNS: usize = 600;
    let vip: SocketAddr = "[fd78::100]:80".parse().unwrap();
    let out = in_netns(&client.ns, move || tcp_connections(vip, CONNS));
    let replies = udp_echo(&client.ns, vip, 10);
    let stats = xlb.stop();
    eprintln!("SNAT over IPv6: {:?}, {} failed", out.by_backend, out.failures.len());
    assert_spread("SNAT over IPv6", &out, CONNS, 3);
    assert_eq!(out.peers.iter().collect::<Vec<_>>(), ["fd78::200"], "backends saw {:?}", out.peers);
    assert_eq!(replies.len(), 10, "{replies:?}");
    assert!(replies.iter().all(|(from, _)| *from == vip), "{replies:?}");
    assert_eq!(total_drops(&stats), 0, "{stats}");
}

#[test]
fn icmp_through_xlb_pings_and_unreachable_ports() {
    let Some((lab, client, lb, _backends)) = snat_lab("icmp_through_xlb", false, 1) else { return };
    // Port 9 has no listener on the backends: they answer "port unreachable" to the SNAT
    // address, which xlb must translate back to the client.
    let args = [
        "--vip",
        "10.78.0.100",
        "--snat-addr",
        "10.78.0.200",
        "--dad-probes",
        "0",
        "--service",
        "udp:10.78.0.100:9=10.78.0.11:9;mode=snat",
        "--service",
        "udp:10.78.0.100:80=10.78.0.11:8080;mode=snat",
    ];
    let mut xlb = Xlb::start(&lab, &lb, &args);
    wait_ready(&mut xlb, 1);
    let ping = lab.exec(&client, &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.78.0.100"]);
    assert!(ping.status.success(), "ping of the VIP failed: {}", String::from_utf8_lossy(&ping.stdout));
    let ping = lab.exec(&client, &["ping", "-c", "1", "-W", "1", "10.78.0.200"]);
    assert!(ping.status.success(), "ping of the SNAT address failed: {}", String::from_utf8_lossy(&ping.stdout));
    let refused = in_netns(&client.ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect("10.78.0.100:9").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send(b"anyone?").unwrap();
        let mut buf = [0u8; 64];
        s.recv(&mut buf).map_err(|e| e.kind())
    });
    // The same socket kind against a live port still gets its echo.
    let echoed = udp_echo(&client.ns, "10.78.0.100:80".parse().unwrap(), 1);
    let stats = xlb.stop();
    eprintln!("ICMP: {}", stats["counters"]);
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused), "no port unreachable reached the client");
    assert_eq!(echoed.len(), 1, "{echoed:?}");
    assert!(stats["counters"]["echo_replies"].as_u64().unwrap() >= 4, "{stats}");
    assert!(stats["counters"]["icmp_errors"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(total_drops(&stats), 0, "{stats}");
}

/// A TCP SYN frame from `src`:`sport` to `dst`:`dport` with a correct IPv4 header checksum
/// (TCP checksum left 0: xlb does not verify it, the kernel behind it would).
fn syn_frame(
    dst_mac: EthernetAddress,
    src_mac: EthernetAddress,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut f = vec![0u8; 128];
    let l2 = xlb::wire::build::L2 { src: src_mac, dst: dst_mac, vlan_tci: None };
    let ip = xlb::wire::ipv4::Ipv4Repr { src, dst, protocol: 6, payload_len: 20, ttl: 64 };
    let n = xlb::wire::build::ipv4(&mut f, l2, &ip).unwrap();
    f.truncate(n);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x02;
    f
}

/// Rewrites the IPv4 header checksum of a frame after its header was edited.
fn fix_ip_sum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0xf) * 4;
    f[24..26].copy_from_slice(&[0, 0]);
    if 14 + ihl <= f.len() {
        let c = xlb::wire::checksum::checksum(&f[14..14 + ihl]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
}

#[test]
fn malformed_burst_at_the_vip_is_counted_and_crashes_nothing() {
    let Some((lab, client, lb, _backends)) = snat_lab("malformed_burst_at_the_vip", false, 1) else { return };
    let args = snat_args(false);
    let mut xlb = Xlb::start(&lab, &lb, &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_ready(&mut xlb, 3);
    let sock = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    let (vip, snat, me) = (Ipv4Addr::new(10, 78, 0, 100), Ipv4Addr::new(10, 78, 0, 200), Ipv4Addr::new(10, 78, 0, 1));
    let syn = syn_frame(lb.mac, client.mac, me, vip, 40000, 80);
    let mut crafted: Vec<(&str, Vec<u8>)> = Vec::new();
    let edit = |f: &[u8], e: &dyn Fn(&mut Vec<u8>)| {
        let mut g = f.to_vec();
        e(&mut g);
        g
    };
    // Truncated headers: TCP cut to 10 bytes (lengths consistent), IPv4 cut inside.
    crafted.push((
        "tcp header cut",
        edit(&syn, &|f| {
            f.truncate(14 + 20 + 10);
            f[16..18].copy_from_slice(&30u16.to_be_bytes());
            fix_ip_sum(f);
        }),
    ));
    crafted.push(("ip header cut", syn[..14 + 12].to_vec()));
    // Bad lengths: total length past the frame, below the header; TCP data offset 3 and 15.
    crafted.push((
        "total length past the frame",
        edit(&syn, &|f| {
            f[16..18].copy_from_slice(&900u16.to_be_bytes());
            fix_ip_sum(f);
        }),
    ));
    crafted.push((
        "total length below the header",
        edit(&syn, &|f| {
            f[16..18].copy_from_slice(&12u16.to_be_bytes());
            fix_ip_sum(f);
        }),
    ));
    crafted.push(("tcp data offset 3", edit(&syn, &|f| f[46] = 0x30)));
    crafted.push(("tcp data offset 15", edit(&syn, &|f| f[46] = 0xf0)));
    // IP options (a 4-byte NOP option) to a port with no service.
    crafted.push(("ip options, no service", {
        let mut f = syn[..34].to_vec();
        f[14] = 0x46;
        f[16..18].copy_from_slice(&44u16.to_be_bytes());
        f.extend_from_slice(&[1, 1, 1, 0]);
        f.extend_from_slice(&syn[34..]);
        f[36 + 4..38 + 4].copy_from_slice(&81u16.to_be_bytes());
        fix_ip_sum(&mut f);
        f
    }));
    // A later fragment.
    crafted.push((
        "later fragment",
        edit(&syn, &|f| {
            f[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
            fix_ip_sum(f);
        }),
    ));
    // ICMP to the VIP: an unknown type, and an error whose quote is cut short.
    crafted.push((
        "icmp unknown type",
        edit(&syn, &|f| {
            f[23] = 1;
            f[34] = 42;
            fix_ip_sum(f);
        }),
    ));
    crafted.push((
        "icmp error quote cut",
        edit(&syn, &|f| {
            f[23] = 1;
            f[34..38].copy_from_slice(&[3, 4, 0, 0]);
            f.truncate(14 + 20 + 8 + 10);
            f[16..18].copy_from_slice(&38u16.to_be_bytes());
            fix_ip_sum(f);
        }),
    ));
    // "Replies" to the SNAT address no flow holds.
    crafted.push(("stray reply to the SNAT address", syn_frame(lb.mac, client.mac, me, snat, 8080, 1500)));
    let named = crafted.len();
    // And mutations of the SYN, deterministic (xorshift), truncated at random lengths.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..600 {
        let mut f = syn.clone();
        for _ in 0..1 + next() % 3 {
            let r = next();
            let at = 14 + usize::try_from(r % (f.len() as u64 - 14)).unwrap();
            f[at] ^= (r >> 32) as u8 | 1;
        }
        let cut = 14 + usize::try_from(next() % (f.len() as u64 - 13)).unwrap();
        f.truncate(cut);
        crafted.push(("mutation", f));
    }
    for (_, f) in &crafted {
        sock.send(f).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(xlb.alive(), "xlb died under malformed frames:\n{}", xlb.log_text());
    // Still forwarding.
    let out = in_netns(&client.ns, || tcp_connections(SocketAddr::from((Ipv4Addr::new(10, 78, 0, 100), 80)), 30));
    assert!(out.failures.is_empty(), "{:?}", out.failures);

    let stats = xlb.stop();
    let c = |k: &str| stats["counters"][k].as_u64().unwrap();
    let d = |k: &str| stats["drops"][k].as_u64().unwrap();
    eprintln!(
        "malformed burst: {} frames ({named} named), xlb saw {}, drops {}",
        crafted.len(),
        c("rx_frames"),
        stats["drops"]
    );
    // Every frame that reached xlb was sent on or dropped under a reason.
    let sent_on: u64 = ["arp_replies", "ndp_adverts", "forwarded", "icmp_errors", "echo_replies", "snat_replies"]
        .iter()
        .map(|k| c(k))
        .sum();
    assert_eq!(c("rx_frames"), sent_on + total_drops(&stats), "{stats}");
    for reason in ["truncated", "malformed", "fragment", "no_service", "no_snat_flow"] {
        assert!(d(reason) > 0, "no {reason} drop counted: {stats}");
    }
    assert!(c("rx_frames") >= named as u64, "{stats}");
}

/// The ARP frames (requests and replies) about `vip` that `sock` holds or gets within `max`:
/// (sender MAC, is a reply).
fn arp_about(sock: &PacketSocket, vip: Ipv4Addr, max: Duration) -> Vec<(EthernetAddress, bool)> {
    let end = Instant::now() + max;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(n) = sock.recv(&mut buf, end.saturating_duration_since(Instant::now())).unwrap() {
        match seen(&buf[..n]) {
            Seen::ArpRequest { spa, sha, .. } if spa == vip => out.push((sha, false)),
            Seen::ArpReply { spa, sha, .. } if spa == vip => out.push((sha, true)),
            _ => {}
        }
        if Instant::now() >= end {
            break;
        }
    }
    out
}

/// `../shared/seeds/002` on one box: two interfaces on two segments (an internal one and a
/// public one), each with its own clients, backends and VIP. Each VIP is announced,
/// answered and served on its own interface only, from that interface's MAC; the other
/// segment never hears of it.
#[test]
fn each_interface_announces_answers_and_serves_only_its_own_vips() {
    two_interfaces(
        "each_interface_announces_answers_and_serves_only_its_own_vips",
        "interfaces: [{name: eth0}, {name: eth1}]
services:
  - name: internal
    vip: 10.77.0.100
    interfaces: [eth0]
    ports: [{port: 80}]
    backends: [{address: 10.77.0.11}]
  - name: public
    vip: 10.88.0.100
    interfaces: [eth1]
    ports: [{port: 80}]
    backends: [{address: 10.88.0.11}]
  # public's backend, for a VIP on eth0: a frame would have to leave by eth1. It gets no
  # flows of this VIP (said in the log), and keeps serving public's.
  - name: cross
    vip: 10.77.0.101
    interfaces: [eth0]
    ports: [{port: 80}]
    backends: [{address: 10.88.0.11}]
announce: {dadProbes: 0}
",
    );
}

/// The same box configured as seed 002's cluster is: a Cilium pool and a Cilium L2
/// announcement policy per interface, written as Kubernetes objects beside xlb's settings
/// (`xlb run --config` reads them), and services that pick theirs by a label. The pools
/// are one address each (`start` alone, as Cilium reads it).
#[test]
fn cilium_pools_and_policies_in_the_config_place_each_vip() {
    let pool = |iface: &str, addr: &str| {
        format!(
            "---
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {{name: ip-pool-{iface}}}
spec:
  blocks: [{{start: {addr}}}]
  serviceSelector: {{matchLabels: {{network.example.com/interface: {iface}}}}}
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {{name: l2-policy-{iface}}}
spec:
  serviceSelector: {{matchLabels: {{network.example.com/interface: {iface}}}}}
  interfaces: [{iface}]
  loadBalancerIPs: true
"
        )
    };
    let cfg = format!(
        "interfaces: [{{name: eth0}}, {{name: eth1}}]
services:
  - name: internal
    labels: {{network.example.com/interface: eth0}}
    ports: [{{port: 80}}]
    backends: [{{address: 10.77.0.11}}]
  - name: public
    labels: {{network.example.com/interface: eth1}}
    ports: [{{port: 80}}]
    backends: [{{address: 10.88.0.11}}]
announce: {{dadProbes: 0}}
{}{}",
        pool("eth0", "10.77.0.100"),
        pool("eth1", "10.88.0.100")
    );
    two_interfaces("cilium_pools_and_policies_in_the_config_place_each_vip", &cfg);
}

/// A box with `eth0` on the internal segment (client, backend-1 serving VIP 10.77.0.100)
/// and `eth1` on the public one (client2, backend-2 serving 10.88.0.100), running `config`:
/// each VIP must be announced, answered and served on its own interface only.
fn two_interfaces(test: &str, config: &str) {
    let Some(mut lab) = Lab::new(test) else { return };
    lab.segment("br1");
    let client = lab.host("client", &["10.77.0.1/24"], 1);
    let lb = lab.host("lb", &["10.77.0.2/24"], 1);
    let lb_eth1 = lab.attach(&lb, "eth1", "br1", &["10.88.0.2/24"]);
    let internal = lab.host("backend-1", &["10.77.0.11/24"], 1);
    dsr_backend(&lab, &internal, "internal-1", &["10.77.0.100"], 80);
    let client2 = lab.host_on("br1", "client2", &["10.88.0.1/24"]);
    let public = lab.host_on("br1", "backend-2", &["10.88.0.11/24"]);
    dsr_backend(&lab, &public, "public-1", &["10.88.0.100"], 80);
    let (vip1, vip2) = (Ipv4Addr::new(10, 77, 0, 100), Ipv4Addr::new(10, 88, 0, 100));
    // Open before xlb starts: they hold the announcements of its start.
    let sock1 = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    let sock2 = PacketSocket::open(Some(&client2.ns), "eth0").unwrap();
    let cfg = lab.dir.join("two.yaml");
    std::fs::write(&cfg, config).unwrap();
    let mut xlb = Xlb::start_config(&lab, &lb, &cfg, &[]);
    wait_ready(&mut xlb, 2);
    if config.contains("name: cross") {
        xlb.wait_log(
            "backend gets no new flows of this VIP: it is reached through eth1, and 10.77.0.101 is on eth0 only",
            Duration::from_secs(5),
        );
    }

    // Start-up: gratuitous ARP for each VIP on its own segment only, from its interface.
    let on1 = arp_about(&sock1, vip1, Duration::from_secs(1));
    let on2 = arp_about(&sock2, vip2, Duration::from_secs(1));
    assert!(!on1.is_empty() && on1.iter().all(|(mac, _)| *mac == lb.mac), "internal segment: {on1:?}");
    assert!(!on2.is_empty() && on2.iter().all(|(mac, _)| *mac == lb_eth1), "public segment: {on2:?}");
    assert_eq!(arp_about(&sock1, vip2, Duration::ZERO), [], "the public VIP announced on the internal segment");
    assert_eq!(arp_about(&sock2, vip1, Duration::ZERO), [], "the internal VIP announced on the public segment");

    // Asked for: each VIP answered on its own segment, by its interface's MAC; never on the
    // other segment.
    let ask = |sock: &PacketSocket, from: &support::Host, from_ip: Ipv4Addr, vip: Ipv4Addr| {
        sock.send(&arp_request(from.mac, from_ip, vip)).unwrap();
        arp_about(sock, vip, Duration::from_millis(700)).into_iter().filter(|(_, reply)| *reply).collect::<Vec<_>>()
    };
    let c1 = Ipv4Addr::new(10, 77, 0, 1);
    let c2 = Ipv4Addr::new(10, 88, 0, 1);
    assert_eq!(ask(&sock1, &client, c1, vip1), [(lb.mac, true)]);
    assert_eq!(ask(&sock2, &client2, c2, vip2), [(lb_eth1, true)]);
    assert_eq!(ask(&sock1, &client, c1, vip2), [], "the public VIP answered on the internal segment");
    assert_eq!(ask(&sock2, &client2, c2, vip1), [], "the internal VIP answered on the public segment");

    // Served: each segment's clients reach their own backends through their own interface.
    let n = 30;
    let out1 = in_netns(&client.ns, move || tcp_connections(SocketAddr::new(vip1.into(), 80), n));
    let out2 = in_netns(&client2.ns, move || tcp_connections(SocketAddr::new(vip2.into(), 80), n));
    assert_spread("internal", &out1, n, 1);
    assert_spread("public", &out2, n, 1);
    assert_eq!(out1.by_backend.get("internal-1"), Some(&n), "{out1:?}");
    assert_eq!(out2.by_backend.get("public-1"), Some(&n), "{out2:?}");

    // Each interface has its worker; both are in the status.
    let (ok, status, _) = xlb.cli(&["status"]);
    assert!(ok, "{status}");
    assert!(status.contains("interface eth0,eth1"), "{status}");
    let row = |vip: &str| status.lines().find(|l| l.starts_with(vip)).unwrap_or_default().to_string();
    assert!(row("10.88.0.100").trim_end().ends_with(" eth1"), "{status}");
    assert!(row("10.77.0.100").trim_end().ends_with(" eth0"), "{status}");
    let stats = xlb.stop();
    let queues = stats["queues"].as_array().unwrap();
    let on: Vec<&str> = queues.iter().map(|q| q["interface"].as_str().unwrap()).collect();
    assert_eq!(on, ["eth0", "eth1"], "{stats}");
    assert!(
        queues.iter().all(|q| q["rx_frames"].as_u64().unwrap() > 0),
        "every interface's worker took traffic: {stats}"
    );
}

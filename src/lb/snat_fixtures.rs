//! SNAT, ICMP and session-affinity fixtures: sequences of frames through one worker's state,
//! each with the expected verdict and the exact expected frame out. Expected frames are built from
//! scratch with checksums computed over the whole packet, so they check the datapath's
//! incremental updates independently.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use super::{
    conntrack::{Conntrack, Timeouts},
    process,
    snapshot::{Backend, ForwardMode, Service, ServiceKey},
    snat::SnatTable,
    Ctx, DropReason, Reply, Snapshot, Verdict, VipMode, WorkerState,
};
use crate::wire::{
    build::{self, L2},
    checksum::{finish, pseudo_v4, pseudo_v6, sum},
    ipv4::{Ipv4Repr, Protocol},
    ipv6::Ipv6Repr,
    EthernetAddress,
};

const OURS: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x10]);
const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x20]);
const BACKEND_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x30]);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const SNAT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
const BACKEND4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200);
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x30);
const SEC: u64 = 1_000_000_000;

/// A TCP or UDP packet in a frame, with correct checksums.
#[derive(Clone, Copy)]
struct Pkt {
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    vlan: Option<u16>,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    /// TCP flags.
    flags: u8,
    /// An IPv4 UDP datagram sent without a checksum.
    no_udp_sum: bool,
}

const PAYLOAD: &[u8] = b"xlb fixture payload";

fn frame(p: Pkt) -> Vec<u8> {
    let hdr = if p.proto == Protocol::TCP { 20 } else { 8 };
    let l4_len = hdr + PAYLOAD.len();
    let l4_len16 = u16::try_from(l4_len).unwrap();
    let mut f = vec![0u8; 256];
    let l2 = L2 { src: p.src_mac, dst: p.dst_mac, vlan_tci: p.vlan };
    let n = match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            build::ipv4(&mut f, l2, &Ipv4Repr { src: s, dst: d, protocol: p.proto, payload_len: l4_len16, ttl: 64 })
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => build::ipv6(
            &mut f,
            l2,
            &Ipv6Repr { src: s, dst: d, next_header: p.proto, payload_len: l4_len16, hop_limit: 64 },
        ),
        _ => panic!("mixed families"),
    }
    .unwrap();
    f.truncate(n);
    let l4 = &mut f[n - l4_len..];
    l4[0..2].copy_from_slice(&p.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&p.dport.to_be_bytes());
    let c_at = if p.proto == Protocol::TCP {
        l4[12] = 0x50;
        l4[13] = p.flags;
        l4[14..16].copy_from_slice(&1024u16.to_be_bytes());
        16
    } else {
        l4[4..6].copy_from_slice(&l4_len16.to_be_bytes());
        6
    };
    l4[hdr..].copy_from_slice(PAYLOAD);
    if !p.no_udp_sum {
        let pseudo = match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_v4(s, d, p.proto, l4_len16),
            (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_v6(&s, &d, p.proto, u32::from(l4_len16)),
            _ => 0,
        };
        let mut c = finish(sum(pseudo, l4));
        if p.proto == Protocol::UDP && c == 0 {
            c = 0xffff;
        }
        l4[c_at..c_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    f
}

/// The frame with IPv4's more-fragments flag set (a first fragment) and its header checksum
/// recomputed.
fn first_fragment(mut f: Vec<u8>) -> Vec<u8> {
    f[14 + 6] |= 0x20;
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let c = finish(sum(0, &f[14..34]));
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    f
}

fn client_to_vip(vip: IpAddr, proto: u8, sport: u16, flags: u8) -> Pkt {
    let src = if vip.is_ipv4() { IpAddr::V4(CLIENT4) } else { IpAddr::V6(CLIENT6) };
    Pkt {
        src_mac: CLIENT_MAC,
        dst_mac: OURS,
        vlan: None,
        src,
        dst: vip,
        proto,
        sport,
        dport: if proto == Protocol::TCP { 80 } else { 53 },
        flags,
        no_udp_sum: false,
    }
}

/// What the backend receives for `p`: from SNAT address:port to the backend.
fn to_backend(p: Pkt, snat: IpAddr, port: u16, backend: IpAddr, bport: u16) -> Pkt {
    Pkt { src_mac: OURS, dst_mac: BACKEND_MAC, src: snat, dst: backend, sport: port, dport: bport, ..p }
}

/// The backend's reply to `p` (as `to_backend` made it).
fn backend_reply(p: Pkt, flags: u8) -> Pkt {
    Pkt { src_mac: BACKEND_MAC, dst_mac: OURS, src: p.dst, dst: p.src, sport: p.dport, dport: p.sport, flags, ..p }
}

fn snat_services() -> Vec<Service> {
    let svc = |vip: IpAddr, port: u16, proto: u8, backend: IpAddr, bport: u16| {
        let b = Backend { mac: Some(BACKEND_MAC), ..Backend::new(backend, bport, 1) };
        Service::new(ServiceKey { vip, port, proto }, ForwardMode::Snat, vec![b], 251).unwrap()
    };
    vec![
        svc(IpAddr::V4(VIP4), 80, Protocol::TCP, IpAddr::V4(BACKEND4), 8080),
        svc(IpAddr::V4(VIP4), 53, Protocol::UDP, IpAddr::V4(BACKEND4), 5353),
        svc(IpAddr::V6(VIP6), 80, Protocol::TCP, IpAddr::V6(BACKEND6), 8080),
    ]
}

fn snat_snapshot() -> Snapshot {
    let owned = [IpAddr::V4(VIP4), IpAddr::V6(VIP6), IpAddr::V4(SNAT4), IpAddr::V6(SNAT6)];
    Snapshot::new(1, owned.map(|a| (a, VipMode::Answer))).with_services(snat_services())
}

/// One worker owning ports 1024..=1027 of both SNAT addresses.
fn snat_state() -> WorkerState {
    let table = SnatTable::new(vec![IpAddr::V4(SNAT4), IpAddr::V6(SNAT6)], 1024, 1027, 1).unwrap();
    let mut st = WorkerState::new(Conntrack::new(1024, Timeouts::default()));
    st.snat = Some(Arc::new(table).worker(0));
    st
}

struct Step {
    what: &'static str,
    now: u64,
    input: Vec<u8>,
    verdict: Verdict,
    output: Option<Vec<u8>>,
}

fn run(snap: &Snapshot, st: &mut WorkerState, steps: Vec<Step>) {
    for s in steps {
        let mut buf = s.input.clone();
        let len = buf.len();
        buf.resize(2048, 0xee);
        let verdict = process(&Ctx { now: s.now, snap, mac: OURS }, st, &mut buf, len);
        assert_eq!(verdict, s.verdict, "{}", s.what);
        match (&s.output, verdict) {
            (Some(want), Verdict::Tx { len, .. }) => assert_eq!(&buf[..len], &want[..], "{}", s.what),
            (None, _) => assert_eq!(&buf[..len], &s.input[..], "{}: a dropped frame is left alone", s.what),
            (Some(_), v) => panic!("{}: expected a frame out, got {v:?}", s.what),
        }
    }
}

fn tx(f: &[u8], reply: Reply) -> Verdict {
    Verdict::Tx { len: f.len(), reply }
}

#[test]
fn snat_both_directions_v4_v6_udp_and_exhaustion() {
    let (vip4, vip6, snat4, snat6) = (IpAddr::V4(VIP4), IpAddr::V6(VIP6), IpAddr::V4(SNAT4), IpAddr::V6(SNAT6));
    let (b4, b6) = (IpAddr::V4(BACKEND4), IpAddr::V6(BACKEND6));
    let syn = client_to_vip(vip4, Protocol::TCP, 40000, 0x02);
    let syn_out = to_backend(syn, snat4, 1024, b4, 8080);
    let synack = backend_reply(syn_out, 0x12);
    // The client sees the reply come from the VIP:80, sent by us, to the MAC it came from.
    let synack_out =
        Pkt { src_mac: OURS, dst_mac: CLIENT_MAC, src: vip4, dst: syn.src, sport: 80, dport: 40000, ..synack };
    let ack = Pkt { flags: 0x10, ..syn };
    let tagged = Pkt { vlan: Some(7), flags: 0x18, ..syn };
    let udp = Pkt { no_udp_sum: true, ..client_to_vip(vip4, Protocol::UDP, 5353, 0) };
    let udp_out = to_backend(udp, snat4, 1024, b4, 5353);
    let udp_summed = client_to_vip(vip4, Protocol::UDP, 5354, 0);
    let syn6 = client_to_vip(vip6, Protocol::TCP, 40000, 0x02);
    let syn6_out = to_backend(syn6, snat6, 1024, b6, 8080);
    let synack6 = backend_reply(syn6_out, 0x12);
    let synack6_out =
        Pkt { src_mac: OURS, dst_mac: CLIENT_MAC, src: vip6, dst: syn6.src, sport: 80, dport: 40000, ..synack6 };
    let more = |sport| client_to_vip(vip4, Protocol::TCP, sport, 0x02);
    let steps = vec![
        Step {
            what: "SNAT: SYN to VIP:80 leaves from SNAT:1024 to the backend:8080",
            now: SEC,
            input: frame(syn),
            verdict: tx(&frame(syn_out), Reply::Forward),
            output: Some(frame(syn_out)),
        },
        Step {
            what: "SNAT: the backend's SYN-ACK goes back as VIP:80 -> client:40000",
            now: SEC,
            input: frame(synack),
            verdict: tx(&frame(synack_out), Reply::SnatReply { crossed: false }),
            output: Some(frame(synack_out)),
        },
        Step {
            what: "SNAT: the flow's next segment keeps its port",
            now: 2 * SEC,
            input: frame(ack),
            verdict: tx(&frame(ack), Reply::Forward),
            output: Some(frame(to_backend(ack, snat4, 1024, b4, 8080))),
        },
        Step {
            what: "SNAT: a VLAN-tagged segment keeps its tag",
            now: 2 * SEC,
            input: frame(tagged),
            verdict: tx(&frame(tagged), Reply::Forward),
            output: Some(frame(to_backend(tagged, snat4, 1024, b4, 8080))),
        },
        Step {
            what: "SNAT: a first fragment (ports present, MF set) is translated like any packet",
            now: 2 * SEC,
            input: first_fragment(frame(ack)),
            verdict: tx(&frame(ack), Reply::Forward),
            output: Some(first_fragment(frame(to_backend(ack, snat4, 1024, b4, 8080)))),
        },
        Step {
            what: "SNAT: IPv4 UDP without a checksum keeps none; UDP has its own ports",
            now: 2 * SEC,
            input: frame(udp),
            verdict: tx(&frame(udp_out), Reply::Forward),
            output: Some(frame(udp_out)),
        },
        Step {
            what: "SNAT: IPv4 UDP with a checksum gets it updated",
            now: 2 * SEC,
            input: frame(udp_summed),
            verdict: tx(&frame(udp_summed), Reply::Forward),
            output: Some(frame(to_backend(udp_summed, snat4, 1025, b4, 5353))),
        },
        Step {
            what: "SNAT: IPv6 SYN leaves from the IPv6 SNAT address",
            now: 2 * SEC,
            input: frame(syn6),
            verdict: tx(&frame(syn6_out), Reply::Forward),
            output: Some(frame(syn6_out)),
        },
        Step {
            what: "SNAT: IPv6 reply translated back",
            now: 2 * SEC,
            input: frame(synack6),
            verdict: tx(&frame(synack6_out), Reply::SnatReply { crossed: false }),
            output: Some(frame(synack6_out)),
        },
        Step {
            what: "SNAT: a packet to the SNAT port from another port of the backend",
            now: 2 * SEC,
            input: frame(Pkt { sport: 9999, ..synack }),
            verdict: Verdict::Drop(DropReason::NoSnatFlow),
            output: None,
        },
        Step {
            what: "SNAT: a packet to a SNAT port no flow holds",
            now: 2 * SEC,
            input: frame(Pkt { dport: 1027, ..synack }),
            verdict: Verdict::Drop(DropReason::NoSnatFlow),
            output: None,
        },
        Step {
            what: "SNAT: second TCP flow takes 1025",
            now: 3 * SEC,
            input: frame(more(40001)),
            verdict: tx(&frame(more(40001)), Reply::Forward),
            output: Some(frame(to_backend(more(40001), snat4, 1025, b4, 8080))),
        },
        Step {
            what: "SNAT: third takes 1026",
            now: 3 * SEC,
            input: frame(more(40002)),
            verdict: tx(&frame(more(40002)), Reply::Forward),
            output: Some(frame(to_backend(more(40002), snat4, 1026, b4, 8080))),
        },
        Step {
            what: "SNAT: fourth takes 1027, the last",
            now: 3 * SEC,
            input: frame(more(40003)),
            verdict: tx(&frame(more(40003)), Reply::Forward),
            output: Some(frame(to_backend(more(40003), snat4, 1027, b4, 8080))),
        },
        Step {
            what: "SNAT: a fifth flow finds every port in use: dropped and counted",
            now: 3 * SEC,
            input: frame(more(40004)),
            verdict: Verdict::Drop(DropReason::SnatPortsExhausted),
            output: None,
        },
        Step {
            what: "SNAT: the established flow still passes while ports are exhausted",
            now: 4 * SEC,
            input: frame(ack),
            verdict: tx(&frame(ack), Reply::Forward),
            output: Some(frame(to_backend(ack, snat4, 1024, b4, 8080))),
        },
        Step {
            what: "SNAT: once the embryonic flows time out (60 s), their ports are free again",
            now: 64 * SEC,
            input: frame(more(40004)),
            verdict: tx(&frame(more(40004)), Reply::Forward),
            output: Some(frame(to_backend(more(40004), snat4, 1025, b4, 8080))),
        },
        Step {
            what: "SNAT: and the old flow's replies no longer reach anyone",
            now: 64 * SEC,
            input: frame(backend_reply(to_backend(more(40002), snat4, 1026, b4, 8080), 0x12)),
            verdict: Verdict::Drop(DropReason::NoSnatFlow),
            output: None,
        },
    ];
    run(&snat_snapshot(), &mut snat_state(), steps);
}

#[test]
fn snat_without_an_address_of_the_family_is_counted() {
    let mut st = WorkerState::new(Conntrack::new(64, Timeouts::default()));
    let syn = client_to_vip(IpAddr::V4(VIP4), Protocol::TCP, 40000, 0x02);
    run(
        &snat_snapshot(),
        &mut st,
        vec![Step {
            what: "SNAT service, no SNAT table",
            now: SEC,
            input: frame(syn),
            verdict: Verdict::Drop(DropReason::NoSnatAddress),
            output: None,
        }],
    );
}

/// Backend i of the affinity fixtures: 192.0.2.(40+i), MAC ..:(40+i).
fn affinity_backend(i: u8) -> Backend {
    Backend {
        mac: Some(EthernetAddress([0x02, 0, 0, 0, 0, 40 + i])),
        ..Backend::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 40 + i)), 80, 1)
    }
}

fn affinity_snapshot(backends: u8, affinity: Option<Duration>) -> Snapshot {
    let key = ServiceKey { vip: IpAddr::V4(VIP4), port: 80, proto: Protocol::TCP };
    let svc = Service::new(key, ForwardMode::Dsr, (0..backends).map(affinity_backend).collect(), 251)
        .unwrap()
        .with_affinity(affinity);
    Snapshot::new(1, [(IpAddr::V4(VIP4), VipMode::Answer)]).with_services(vec![svc])
}

/// The backend MAC a new connection from `client`:`sport` is sent to.
fn chosen(snap: &Snapshot, st: &mut WorkerState, now: u64, client: Ipv4Addr, sport: u16) -> u8 {
    let p = Pkt { src: IpAddr::V4(client), ..client_to_vip(IpAddr::V4(VIP4), Protocol::TCP, sport, 0x02) };
    let mut buf = frame(p);
    let len = buf.len();
    assert!(matches!(process(&Ctx { now, snap, mac: OURS }, st, &mut buf, len), Verdict::Tx { .. }));
    buf[5]
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_backend_until_the_timeout() {
    let timeout = Duration::from_secs(30);
    let snap3 = affinity_snapshot(3, Some(timeout));
    let mut st = WorkerState::new(Conntrack::new(4096, Timeouts::default()));
    // Every connection of one client lands on one backend...
    let first = chosen(&snap3, &mut st, SEC, CLIENT4, 1000);
    for sport in 1001..1100 {
        assert_eq!(chosen(&snap3, &mut st, SEC, CLIENT4, sport), first, "source port {sport}");
    }
    // ...while without affinity the same connections spread.
    let plain = affinity_snapshot(3, None);
    let mut st_plain = WorkerState::new(Conntrack::new(4096, Timeouts::default()));
    let spread: std::collections::BTreeSet<u8> =
        (1000..1100).map(|sport| chosen(&plain, &mut st_plain, SEC, CLIENT4, sport)).collect();
    assert_eq!(spread.len(), 3);

    // With more backends Maglev would pick another one for some clients; the affinity
    // record keeps them where they were until it times out. Find such a client.
    let snap9 = affinity_snapshot(9, Some(timeout));
    let moved = (1..=250u8)
        .map(|i| Ipv4Addr::new(198, 51, 100, i))
        .find(|c| {
            let mut a = WorkerState::new(Conntrack::new(64, Timeouts::default()));
            let mut b = WorkerState::new(Conntrack::new(64, Timeouts::default()));
            chosen(&snap3, &mut a, SEC, *c, 1) != chosen(&snap9, &mut b, SEC, *c, 1)
        })
        .unwrap();
    let was = chosen(&snap3, &mut st, SEC, moved, 2000);
    // 20 s later (within 30 s of the last connection) the table changed: still the same.
    assert_eq!(chosen(&snap9, &mut st, 21 * SEC, moved, 2001), was);
    // Each new connection renews the record: 40 s after the first, 19 s after the last.
    assert_eq!(chosen(&snap9, &mut st, 40 * SEC, moved, 2002), was);
    // 31 s of silence: the record has expired and Maglev's choice for the new table rules.
    let now = chosen(&snap9, &mut st, 72 * SEC, moved, 2003);
    assert_ne!(now, was);
}

const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
const ROUTER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x40]);

/// An ICMP error from `src` to `dst` quoting the IP packet of `quoted` (a whole frame), with
/// the checksum computed over the whole message.
fn icmp_error(
    l2: (EthernetAddress, EthernetAddress),
    src: IpAddr,
    dst: IpAddr,
    ty: u8,
    code: u8,
    quoted: &[u8],
) -> Vec<u8> {
    let quote = &quoted[14..];
    let mut msg = vec![ty, code, 0, 0, 0, 0, 0x05, 0x00]; // next-hop MTU / MTU 1280
    msg.extend_from_slice(quote);
    let len = u16::try_from(msg.len()).unwrap();
    let mut f = vec![0u8; 512];
    let l2 = L2 { src: l2.0, dst: l2.1, vlan_tci: None };
    let (n, sum0) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = Ipv4Repr { src: s, dst: d, protocol: Protocol::ICMP, payload_len: len, ttl: 64 };
            (build::ipv4(&mut f, l2, &ip).unwrap(), 0)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Repr { src: s, dst: d, next_header: Protocol::ICMPV6, payload_len: len, hop_limit: 64 };
            (build::ipv6(&mut f, l2, &ip).unwrap(), pseudo_v6(&s, &d, Protocol::ICMPV6, u32::from(len)))
        }
        _ => panic!("mixed families"),
    };
    f.truncate(n);
    let c = finish(sum(sum0, &msg));
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let at = n - msg.len();
    f[at..].copy_from_slice(&msg);
    f
}

/// An echo request (v4 type 8, v6 type 128) from the client to `dst`, or the reply to it.
fn echo(dst: IpAddr, reply: bool) -> Vec<u8> {
    let v6 = dst.is_ipv6();
    let client = if v6 { IpAddr::V6(CLIENT6) } else { IpAddr::V4(CLIENT4) };
    let ty = match (v6, reply) {
        (false, false) => 8,
        (false, true) => 0,
        (true, false) => 128,
        (true, true) => 129,
    };
    let (src, to, l2) = if reply { (dst, client, (OURS, CLIENT_MAC)) } else { (client, dst, (CLIENT_MAC, OURS)) };
    let mut f = icmp_error(l2, src, to, ty, 0, &[0u8; 14 + 12]);
    // Echo identifier and sequence in place of the MTU; the checksum again from scratch.
    let at = f.len() - 12 - 8;
    f[at + 4..at + 8].copy_from_slice(&[0x12, 0x34, 0, 1]);
    f[at + 2..at + 4].copy_from_slice(&[0, 0]);
    let sum0 = match (src, to) {
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_v6(&s, &d, Protocol::ICMPV6, 20),
        _ => 0,
    };
    let c = finish(sum(sum0, &f[at..]));
    f[at + 2..at + 4].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn icmp_errors_follow_their_flow_and_pings_are_answered() {
    let (vip4, vip6, snat4) = (IpAddr::V4(VIP4), IpAddr::V6(VIP6), IpAddr::V4(SNAT4));
    let (b4, r4, r6) = (IpAddr::V4(BACKEND4), IpAddr::V4(ROUTER4), IpAddr::V6(ROUTER6));
    let from_router = (ROUTER_MAC, OURS);

    // SNAT: the client's SYN creates the flow (SNAT4:1024 -> backend:8080).
    let syn = client_to_vip(vip4, Protocol::TCP, 40000, 0x02);
    let syn_out = to_backend(syn, snat4, 1024, b4, 8080);
    // The client-facing packet that was too big: VIP:80 -> client:40000, as xlb sent it...
    let big = Pkt {
        src_mac: OURS,
        dst_mac: CLIENT_MAC,
        src: vip4,
        dst: syn.src,
        sport: 80,
        dport: 40000,
        flags: 0x18,
        ..syn
    };
    // ...and as the backend sent it: backend:8080 -> SNAT4:1024.
    let big_backend = backend_reply(syn_out, 0x18);
    let frag_needed = icmp_error(from_router, r4, vip4, 3, 4, &frame(big));
    let frag_needed_out = icmp_error((OURS, BACKEND_MAC), r4, b4, 3, 4, &frame(big_backend));

    // SNAT, other direction: the backend's "port unreachable" for a UDP flow.
    let udp = client_to_vip(vip4, Protocol::UDP, 5354, 0);
    let udp_out = to_backend(udp, snat4, 1024, b4, 5353);
    let unreachable = icmp_error((BACKEND_MAC, OURS), b4, snat4, 3, 3, &frame(udp_out));
    let unreachable_out = icmp_error((OURS, CLIENT_MAC), b4, udp.src, 3, 3, &frame(Pkt { src_mac: OURS, ..udp }));

    let steps = vec![
        Step {
            what: "SNAT flow set up",
            now: SEC,
            input: frame(syn),
            verdict: tx(&frame(syn_out), Reply::Forward),
            output: Some(frame(syn_out)),
        },
        Step {
            what: "ICMP frag-needed quoting VIP:80 -> client: to the backend, as about its own packet",
            now: 2 * SEC,
            input: frag_needed.clone(),
            verdict: tx(&frag_needed, Reply::IcmpError),
            output: Some(frag_needed_out),
        },
        Step {
            what: "UDP SNAT flow set up",
            now: 2 * SEC,
            input: frame(udp),
            verdict: tx(&frame(udp), Reply::Forward),
            output: Some(frame(udp_out)),
        },
        Step {
            what: "ICMP port unreachable from the backend to the SNAT address: back to the client",
            now: 2 * SEC,
            input: unreachable.clone(),
            verdict: tx(&unreachable, Reply::IcmpError),
            output: Some(unreachable_out),
        },
        Step {
            what: "ICMP error quoting a SNAT port no flow holds",
            now: 2 * SEC,
            input: icmp_error((BACKEND_MAC, OURS), b4, snat4, 3, 3, &frame(Pkt { sport: 1030, ..udp_out })),
            verdict: Verdict::Drop(DropReason::NoSnatFlow),
            output: None,
        },
        Step {
            what: "ICMP error quoting a packet the VIP did not send",
            now: 2 * SEC,
            input: icmp_error(from_router, r4, vip4, 3, 4, &frame(Pkt { src: IpAddr::V4(ROUTER4), ..big })),
            verdict: Verdict::Drop(DropReason::Malformed),
            output: None,
        },
        Step {
            what: "ICMP error quoting a VIP port with no service",
            now: 2 * SEC,
            input: icmp_error(from_router, r4, vip4, 3, 4, &frame(Pkt { sport: 81, ..big })),
            verdict: Verdict::Drop(DropReason::NoService),
            output: None,
        },
        Step {
            what: "ping of a VIP: answered",
            now: 2 * SEC,
            input: echo(vip4, false),
            verdict: tx(&echo(vip4, false), Reply::Echo),
            output: Some(echo(vip4, true)),
        },
        Step {
            what: "ping of an IPv6 VIP: answered",
            now: 2 * SEC,
            input: echo(vip6, false),
            verdict: tx(&echo(vip6, false), Reply::Echo),
            output: Some(echo(vip6, true)),
        },
        Step {
            what: "ping of the SNAT address: answered",
            now: 2 * SEC,
            input: echo(snat4, false),
            verdict: tx(&echo(snat4, false), Reply::Echo),
            output: Some(echo(snat4, true)),
        },
    ];
    run(&snat_snapshot(), &mut snat_state(), steps);

    // A worker that never saw the flow (its replies and errors come in on another queue)
    // finds it through the shared table's client index.
    let table = Arc::new(SnatTable::new(vec![snat4, IpAddr::V6(SNAT6)], 1024, 1027, 2).unwrap());
    let mut owner = WorkerState::new(Conntrack::new(64, Timeouts::default()));
    owner.snat = Some(table.worker(0));
    let mut other = WorkerState::new(Conntrack::new(64, Timeouts::default()));
    other.snat = Some(table.worker(1));
    let snap = snat_snapshot();
    run(
        &snap,
        &mut owner,
        vec![Step {
            what: "flow on worker 0",
            now: SEC,
            input: frame(syn),
            verdict: tx(&frame(syn), Reply::Forward),
            output: Some(frame(syn_out)),
        }],
    );
    let frag_needed_out = icmp_error((OURS, BACKEND_MAC), r4, b4, 3, 4, &frame(big_backend));
    run(
        &snap,
        &mut other,
        vec![Step {
            what: "frag-needed on worker 1",
            now: 2 * SEC,
            input: frag_needed.clone(),
            verdict: tx(&frag_needed, Reply::IcmpError),
            output: Some(frag_needed_out),
        }],
    );

    // DSR: the error goes to the flow's backend unchanged but for the MACs; IPv6 too.
    let dsr = |f: Vec<u8>| {
        let mut f = f;
        f[0..6].copy_from_slice(&BACKEND_MAC.0);
        f[6..12].copy_from_slice(&OURS.0);
        f
    };
    let dsr_snapshot = {
        let key = |vip, port| ServiceKey { vip, port, proto: Protocol::TCP };
        let b = |a| vec![Backend { mac: Some(BACKEND_MAC), ..Backend::new(a, 80, 1) }];
        let svcs = vec![
            Service::new(key(vip4, 80), ForwardMode::Dsr, b(b4), 251).unwrap(),
            Service::new(key(vip6, 80), ForwardMode::Dsr, b(IpAddr::V6(BACKEND6)), 251).unwrap(),
        ];
        Snapshot::new(1, [(vip4, VipMode::Answer), (vip6, VipMode::Answer)]).with_services(svcs)
    };
    let big6 =
        Pkt { src_mac: OURS, dst_mac: CLIENT_MAC, src: vip6, dst: IpAddr::V6(CLIENT6), sport: 80, dport: 40000, ..big };
    let too_big6 = icmp_error(from_router, r6, vip6, 2, 0, &frame(big6));
    run(
        &dsr_snapshot,
        &mut WorkerState::new(Conntrack::new(64, Timeouts::default())),
        vec![
            Step {
                what: "DSR: frag-needed to the backend of the quoted flow (no state needed)",
                now: SEC,
                input: frag_needed.clone(),
                verdict: tx(&frag_needed, Reply::IcmpError),
                output: Some(dsr(frag_needed.clone())),
            },
            Step {
                what: "DSR: IPv6 packet-too-big to the backend of the quoted flow",
                now: SEC,
                input: too_big6.clone(),
                verdict: tx(&too_big6, Reply::IcmpError),
                output: Some(dsr(too_big6.clone())),
            },
        ],
    );
}

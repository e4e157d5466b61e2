//! SNAT, ICMP and session-affinity fixtures: sequences of frames through one worker's state,
//! each with the expected verdict and the exact expected frame out. Expected frames are built from
//! scratch with checksums computed over the whole packet, so they check the datapath's
//! incremental updates independently. Frames and state come from the shared
//! [`testing`](super::testing) scene and builder.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use super::{
    process,
    testing::{
        backend, client_of, ctx, icmp, PacketBuilder as Pkt, Scene, BACKEND_MAC, CLIENT4, CLIENT6, CLIENT_MAC,
        CLOSED_PORT, DSR_PORT, OURS, ROUTER4, ROUTER6, ROUTER_MAC, SNAT4, SNAT6, SNAT_BACKEND_PORT, SNAT_PORT, VIP4,
        VIP6,
    },
    DropReason, Reply, Snapshot, Verdict, WorkerState,
};
use crate::wire::{
    icmpv4::Icmpv4Type, icmpv6::Icmpv6Type, ipv4::Protocol, tcp::TcpFlags, EthernetAddress, EthernetFrame,
};

const SEC: u64 = 1_000_000_000;

const PAYLOAD: &[u8] = b"xlb fixture payload";

fn client_to_vip(vip: IpAddr, proto: u8, sport: u16, flags: u8) -> Pkt {
    Pkt { proto, sport, flags, payload: PAYLOAD, ..Pkt::tcp(vip, SNAT_PORT, 0) }
}

/// What the backend receives for `p`: from SNAT address:port to the backend.
fn to_backend(p: Pkt, snat: IpAddr, port: u16, backend: IpAddr, bport: u16) -> Pkt {
    Pkt { src_mac: OURS, dst_mac: BACKEND_MAC, src: snat, dst: backend, sport: port, dport: bport, ..p }
}

/// The backend's reply to `p` (as `to_backend` made it).
fn backend_reply(p: Pkt, flags: u8) -> Pkt {
    Pkt { src_mac: BACKEND_MAC, dst_mac: OURS, src: p.dst, dst: p.src, sport: p.dport, dport: p.sport, flags, ..p }
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
        let verdict = process(&ctx(s.now, snap), st, &mut buf, len);
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
    let (b4, b6) = (backend(false, 0), backend(true, 0));
    let syn = client_to_vip(vip4, Protocol::TCP, 40000, TcpFlags::SYN);
    let syn_out = to_backend(syn, snat4, 1024, b4, SNAT_BACKEND_PORT);
    let synack = backend_reply(syn_out, TcpFlags::SYN | TcpFlags::ACK);
    // The client sees the reply come from the VIP:81, sent by us, to the MAC it came from.
    let synack_out =
        Pkt { src_mac: OURS, dst_mac: CLIENT_MAC, src: vip4, dst: syn.src, sport: SNAT_PORT, dport: 40000, ..synack };
    let ack = Pkt { flags: TcpFlags::ACK, ..syn };
    let tagged = Pkt { vlan: Some(7), flags: TcpFlags::PSH | TcpFlags::ACK, ..syn };
    let udp = Pkt { no_udp_sum: true, ..client_to_vip(vip4, Protocol::UDP, 5353, 0) };
    let udp_out = to_backend(udp, snat4, 1024, b4, SNAT_BACKEND_PORT);
    let udp_summed = client_to_vip(vip4, Protocol::UDP, 5354, 0);
    let syn6 = client_to_vip(vip6, Protocol::TCP, 40000, TcpFlags::SYN);
    let syn6_out = to_backend(syn6, snat6, 1024, b6, SNAT_BACKEND_PORT);
    let synack6 = backend_reply(syn6_out, TcpFlags::SYN | TcpFlags::ACK);
    let synack6_out =
        Pkt { src_mac: OURS, dst_mac: CLIENT_MAC, src: vip6, dst: syn6.src, sport: SNAT_PORT, dport: 40000, ..synack6 };
    let more = |sport| client_to_vip(vip4, Protocol::TCP, sport, TcpFlags::SYN);
    let steps = vec![
        Step {
            what: "SNAT: SYN to VIP:81 leaves from SNAT:1024 to the backend:8080",
            now: SEC,
            input: syn.build(),
            verdict: tx(&syn_out.build(), Reply::Forward),
            output: Some(syn_out.build()),
        },
        Step {
            what: "SNAT: the backend's SYN-ACK goes back as VIP:81 -> client:40000",
            now: SEC,
            input: synack.build(),
            verdict: tx(&synack_out.build(), Reply::SnatReply { crossed: false }),
            output: Some(synack_out.build()),
        },
        Step {
            what: "SNAT: the flow's next segment keeps its port",
            now: 2 * SEC,
            input: ack.build(),
            verdict: tx(&ack.build(), Reply::Forward),
            output: Some(to_backend(ack, snat4, 1024, b4, SNAT_BACKEND_PORT).build()),
        },
        Step {
            what: "SNAT: a VLAN-tagged segment keeps its tag",
            now: 2 * SEC,
            input: tagged.build(),
            verdict: tx(&tagged.build(), Reply::Forward),
            output: Some(to_backend(tagged, snat4, 1024, b4, SNAT_BACKEND_PORT).build()),
        },
        Step {
            what: "SNAT: a first fragment (ports present, MF set) is translated like any packet",
            now: 2 * SEC,
            input: Pkt { more_frags: true, ..ack }.build(),
            verdict: tx(&ack.build(), Reply::Forward),
            output: Some(Pkt { more_frags: true, ..to_backend(ack, snat4, 1024, b4, SNAT_BACKEND_PORT) }.build()),
        },
        Step {
            what: "SNAT: IPv4 UDP without a checksum keeps none; UDP has its own ports",
            now: 2 * SEC,
            input: udp.build(),
            verdict: tx(&udp_out.build(), Reply::Forward),
            output: Some(udp_out.build()),
        },
        Step {
            what: "SNAT: IPv4 UDP with a checksum gets it updated",
            now: 2 * SEC,
            input: udp_summed.build(),
            verdict: tx(&udp_summed.build(), Reply::Forward),
            output: Some(to_backend(udp_summed, snat4, 1025, b4, SNAT_BACKEND_PORT).build()),
        },
        Step {
            what: "SNAT: IPv6 SYN leaves from the IPv6 SNAT address",
            now: 2 * SEC,
            input: syn6.build(),
            verdict: tx(&syn6_out.build(), Reply::Forward),
            output: Some(syn6_out.build()),
        },
        Step {
            what: "SNAT: IPv6 reply translated back",
            now: 2 * SEC,
            input: synack6.build(),
            verdict: tx(&synack6_out.build(), Reply::SnatReply { crossed: false }),
            output: Some(synack6_out.build()),
        },
        Step {
            what: "SNAT: a packet to the SNAT port from another port of the backend",
            now: 2 * SEC,
            input: Pkt { sport: 9999, ..synack }.build(),
            verdict: Verdict::Drop(DropReason::NoSnatFlow),
            output: None,
        },
        Step {
            what: "SNAT: a packet to a SNAT port no flow holds",
            now: 2 * SEC,
            input: Pkt { dport: 1027, ..synack }.build(),
            verdict: Verdict::Drop(DropReason::NoSnatFlow),
            output: None,
        },
        Step {
            what: "SNAT: second TCP flow takes 1025",
            now: 3 * SEC,
            input: more(40001).build(),
            verdict: tx(&more(40001).build(), Reply::Forward),
            output: Some(to_backend(more(40001), snat4, 1025, b4, SNAT_BACKEND_PORT).build()),
        },
        Step {
            what: "SNAT: third takes 1026",
            now: 3 * SEC,
            input: more(40002).build(),
            verdict: tx(&more(40002).build(), Reply::Forward),
            output: Some(to_backend(more(40002), snat4, 1026, b4, SNAT_BACKEND_PORT).build()),
        },
        Step {
            what: "SNAT: fourth takes 1027, the last",
            now: 3 * SEC,
            input: more(40003).build(),
            verdict: tx(&more(40003).build(), Reply::Forward),
            output: Some(to_backend(more(40003), snat4, 1027, b4, SNAT_BACKEND_PORT).build()),
        },
        Step {
            what: "SNAT: a fifth flow finds every port held, three by embryonic flows: it takes back \
                   the oldest one's (1025, the second flow's), and that flow is evicted",
            now: 3 * SEC,
            input: more(40004).build(),
            verdict: tx(&more(40004).build(), Reply::Forward),
            output: Some(to_backend(more(40004), snat4, 1025, b4, SNAT_BACKEND_PORT).build()),
        },
        Step {
            what: "SNAT: the third flow completes its handshake",
            now: 3 * SEC,
            input: Pkt { flags: TcpFlags::ACK, ..more(40002) }.build(),
            verdict: tx(&more(40002).build(), Reply::Forward),
            output: Some(
                to_backend(Pkt { flags: TcpFlags::ACK, ..more(40002) }, snat4, 1026, b4, SNAT_BACKEND_PORT).build(),
            ),
        },
        Step {
            what: "SNAT: so does the fourth",
            now: 3 * SEC,
            input: Pkt { flags: TcpFlags::ACK, ..more(40003) }.build(),
            verdict: tx(&more(40003).build(), Reply::Forward),
            output: Some(
                to_backend(Pkt { flags: TcpFlags::ACK, ..more(40003) }, snat4, 1027, b4, SNAT_BACKEND_PORT).build(),
            ),
        },
        Step {
            what: "SNAT: and the fifth",
            now: 3 * SEC,
            input: Pkt { flags: TcpFlags::ACK, ..more(40004) }.build(),
            verdict: tx(&more(40004).build(), Reply::Forward),
            output: Some(
                to_backend(Pkt { flags: TcpFlags::ACK, ..more(40004) }, snat4, 1025, b4, SNAT_BACKEND_PORT).build(),
            ),
        },
        Step {
            what: "SNAT: the evicted second flow retries its SYN: every port is held by a flow past its \
                   handshake, so it is dropped and counted",
            now: 3 * SEC,
            input: more(40001).build(),
            verdict: Verdict::Drop(DropReason::SnatPortsExhausted),
            output: None,
        },
        Step {
            what: "SNAT: the established flow still passes while ports are exhausted",
            now: 4 * SEC,
            input: ack.build(),
            verdict: tx(&ack.build(), Reply::Forward),
            output: Some(to_backend(ack, snat4, 1024, b4, SNAT_BACKEND_PORT).build()),
        },
        Step {
            what: "SNAT: the third flow ends (RST): its port is held for the closing timeout (10 s)",
            now: 4 * SEC,
            input: Pkt { flags: TcpFlags::RST, ..more(40002) }.build(),
            verdict: tx(&more(40002).build(), Reply::Forward),
            output: Some(
                to_backend(Pkt { flags: TcpFlags::RST, ..more(40002) }, snat4, 1026, b4, SNAT_BACKEND_PORT).build(),
            ),
        },
        Step {
            what: "SNAT: and free again after it; a new flow takes it",
            now: 15 * SEC,
            input: more(40005).build(),
            verdict: tx(&more(40005).build(), Reply::Forward),
            output: Some(to_backend(more(40005), snat4, 1026, b4, SNAT_BACKEND_PORT).build()),
        },
        Step {
            what: "SNAT: an embryonic flow holds its port for 5 s only (not the 60 s of a DSR SYN): \
                   a SYN-ACK 6 s later reaches nobody",
            now: 21 * SEC,
            input: backend_reply(
                to_backend(more(40005), snat4, 1026, b4, SNAT_BACKEND_PORT),
                TcpFlags::SYN | TcpFlags::ACK,
            )
            .build(),
            verdict: Verdict::Drop(DropReason::NoSnatFlow),
            output: None,
        },
        Step {
            what: "SNAT: and the port is free for the next flow",
            now: 21 * SEC,
            input: more(40001).build(),
            verdict: tx(&more(40001).build(), Reply::Forward),
            output: Some(to_backend(more(40001), snat4, 1026, b4, SNAT_BACKEND_PORT).build()),
        },
    ];
    let scene = Scene::default();
    run(&scene.snapshot(), &mut scene.state(), steps);
}

#[test]
fn snat_without_an_address_of_the_family_is_counted() {
    let scene = Scene::default();
    let mut st = scene.bare_state();
    let syn = client_to_vip(IpAddr::V4(VIP4), Protocol::TCP, 40000, TcpFlags::SYN);
    run(
        &scene.snapshot(),
        &mut st,
        vec![Step {
            what: "SNAT service, no SNAT table",
            now: SEC,
            input: syn.build(),
            verdict: Verdict::Drop(DropReason::NoSnatAddress),
            output: None,
        }],
    );
}

/// The scene of the affinity fixtures: `backends` backends per service, `affinity` on.
fn affinity_scene(backends: u8, affinity: Option<Duration>) -> Scene {
    Scene { backends, affinity, conntrack: 4096, ..Scene::default() }
}

/// The backend MAC a new connection from `client`:`sport` is sent to.
fn chosen(snap: &Snapshot, st: &mut WorkerState, now: u64, client: Ipv4Addr, sport: u16) -> EthernetAddress {
    let p = Pkt { src: IpAddr::V4(client), sport, ..Pkt::tcp(IpAddr::V4(VIP4), DSR_PORT, TcpFlags::SYN) };
    let mut buf = p.build();
    let len = buf.len();
    assert!(matches!(process(&ctx(now, snap), st, &mut buf, len), Verdict::Tx { .. }));
    EthernetFrame::new_checked(&buf[..]).map(|e| e.dst_addr()).unwrap()
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_backend_until_the_timeout() {
    let timeout = Duration::from_secs(30);
    let scene3 = affinity_scene(3, Some(timeout));
    let snap3 = scene3.snapshot();
    let mut st = scene3.bare_state();
    // Every connection of one client lands on one backend...
    let first = chosen(&snap3, &mut st, SEC, CLIENT4, 1000);
    for sport in 1001..1100 {
        assert_eq!(chosen(&snap3, &mut st, SEC, CLIENT4, sport), first, "source port {sport}");
    }
    // ...while without affinity the same connections spread.
    let scene_plain = affinity_scene(3, None);
    let plain = scene_plain.snapshot();
    let mut st_plain = scene_plain.bare_state();
    let spread: BTreeSet<[u8; 6]> =
        (1000..1100).map(|sport| chosen(&plain, &mut st_plain, SEC, CLIENT4, sport).0).collect();
    assert_eq!(spread.len(), 3);

    // With more backends Maglev would pick another one for some clients; the affinity
    // record keeps them where they were until it times out. Find such a client.
    let snap9 = affinity_scene(9, Some(timeout)).snapshot();
    let moved = (1..=250u8)
        .map(|i| Ipv4Addr::new(198, 51, 100, i))
        .find(|c| {
            let (mut a, mut b) = (scene3.bare_state(), scene3.bare_state());
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

/// An ICMP error of `ty` and `code` from `src` to `dst` (MTU 1280 where it carries one)
/// quoting the IP packet of `quoted`, with the checksum computed over the whole message.
fn icmp_error(
    l2: (EthernetAddress, EthernetAddress),
    src: IpAddr,
    dst: IpAddr,
    ty: u8,
    code: u8,
    quoted: Pkt,
) -> Vec<u8> {
    icmp(l2, src, dst, (ty, code), [0, 0, 0x05, 0x00], &quoted.ip_packet())
}

/// An echo request from the client to `dst`, or the reply to it.
fn echo(dst: IpAddr, reply: bool) -> Vec<u8> {
    let client = client_of(dst);
    let ty = match (dst.is_ipv6(), reply) {
        (false, false) => Icmpv4Type::ECHO_REQUEST,
        (false, true) => Icmpv4Type::ECHO_REPLY,
        (true, false) => Icmpv6Type::ECHO_REQUEST,
        (true, true) => Icmpv6Type::ECHO_REPLY,
    };
    let (src, to, l2) = if reply { (dst, client, (OURS, CLIENT_MAC)) } else { (client, dst, (CLIENT_MAC, OURS)) };
    // Identifier 0x1234, sequence 1, 12 bytes of data.
    icmp(l2, src, to, (ty, 0), [0x12, 0x34, 0, 1], &[0u8; 12])
}

#[test]
fn icmp_errors_follow_their_flow_and_pings_are_answered() {
    let (vip4, vip6, snat4) = (IpAddr::V4(VIP4), IpAddr::V6(VIP6), IpAddr::V4(SNAT4));
    let (b4, r4, r6) = (backend(false, 0), IpAddr::V4(ROUTER4), IpAddr::V6(ROUTER6));
    let from_router = (ROUTER_MAC, OURS);

    // SNAT: the client's SYN creates the flow (SNAT4:1024 -> backend:8080).
    let syn = client_to_vip(vip4, Protocol::TCP, 40000, TcpFlags::SYN);
    let syn_out = to_backend(syn, snat4, 1024, b4, SNAT_BACKEND_PORT);
    // The client-facing packet that was too big: VIP:81 -> client:40000, as xlb sent it...
    let big = Pkt {
        src_mac: OURS,
        dst_mac: CLIENT_MAC,
        src: vip4,
        dst: syn.src,
        sport: SNAT_PORT,
        dport: 40000,
        flags: TcpFlags::PSH | TcpFlags::ACK,
        ..syn
    };
    // ...and as the backend sent it: backend:8080 -> SNAT4:1024.
    let big_backend = backend_reply(syn_out, TcpFlags::PSH | TcpFlags::ACK);
    let frag_needed = icmp_error(from_router, r4, vip4, 3, 4, big);
    let frag_needed_out = icmp_error((OURS, BACKEND_MAC), r4, b4, 3, 4, big_backend);

    // SNAT, other direction: the backend's "port unreachable" for a UDP flow.
    let udp = client_to_vip(vip4, Protocol::UDP, 5354, 0);
    let udp_out = to_backend(udp, snat4, 1024, b4, SNAT_BACKEND_PORT);
    let unreachable = icmp_error((BACKEND_MAC, OURS), b4, snat4, 3, 3, udp_out);
    let unreachable_out = icmp_error((OURS, CLIENT_MAC), b4, udp.src, 3, 3, Pkt { src_mac: OURS, ..udp });

    let steps = vec![
        Step {
            what: "SNAT flow set up",
            now: SEC,
            input: syn.build(),
            verdict: tx(&syn_out.build(), Reply::Forward),
            output: Some(syn_out.build()),
        },
        Step {
            what: "ICMP frag-needed quoting VIP:81 -> client: to the backend, as about its own packet",
            now: 2 * SEC,
            input: frag_needed.clone(),
            verdict: tx(&frag_needed, Reply::IcmpError),
            output: Some(frag_needed_out),
        },
        Step {
            what: "UDP SNAT flow set up",
            now: 2 * SEC,
            input: udp.build(),
            verdict: tx(&udp.build(), Reply::Forward),
            output: Some(udp_out.build()),
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
            input: icmp_error((BACKEND_MAC, OURS), b4, snat4, 3, 3, Pkt { sport: 1030, ..udp_out }),
            verdict: Verdict::Drop(DropReason::NoSnatFlow),
            output: None,
        },
        Step {
            what: "ICMP error quoting a packet the VIP did not send",
            now: 2 * SEC,
            input: icmp_error(from_router, r4, vip4, 3, 4, Pkt { src: IpAddr::V4(ROUTER4), ..big }),
            verdict: Verdict::Drop(DropReason::Malformed),
            output: None,
        },
        Step {
            what: "ICMP error quoting a VIP port with no service",
            now: 2 * SEC,
            input: icmp_error(from_router, r4, vip4, 3, 4, Pkt { sport: CLOSED_PORT, ..big }),
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
    let scene = Scene::default();
    run(&scene.snapshot(), &mut scene.state(), steps);

    // A worker that never saw the flow (its replies and errors come in on another queue)
    // finds it through the shared table's client index.
    let two = Scene { workers: 2, ..Scene::default() };
    let table = two.snat_table();
    let (mut owner, mut other) = (two.worker(&table, 0), two.worker(&table, 1));
    let snap = two.snapshot();
    run(
        &snap,
        &mut owner,
        vec![Step {
            what: "flow on worker 0",
            now: SEC,
            input: syn.build(),
            verdict: tx(&syn.build(), Reply::Forward),
            output: Some(syn_out.build()),
        }],
    );
    let frag_needed_out = icmp_error((OURS, BACKEND_MAC), r4, b4, 3, 4, big_backend);
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
    let big = Pkt { sport: DSR_PORT, ..big };
    let big6 = Pkt { src: vip6, dst: IpAddr::V6(CLIENT6), ..big };
    let frag_needed = icmp_error(from_router, r4, vip4, 3, 4, big);
    let too_big6 = icmp_error(from_router, r6, vip6, 2, 0, big6);
    let to_backend_mac = (OURS, BACKEND_MAC);
    run(
        &scene.snapshot(),
        &mut scene.bare_state(),
        vec![
            Step {
                what: "DSR: frag-needed to the backend of the quoted flow (no state needed)",
                now: SEC,
                input: frag_needed.clone(),
                verdict: tx(&frag_needed, Reply::IcmpError),
                output: Some(icmp_error(to_backend_mac, r4, vip4, 3, 4, big)),
            },
            Step {
                what: "DSR: IPv6 packet-too-big to the backend of the quoted flow",
                now: SEC,
                input: too_big6.clone(),
                verdict: tx(&too_big6, Reply::IcmpError),
                output: Some(icmp_error(to_backend_mac, r6, vip6, 2, 0, big6)),
            },
        ],
    );
}

/// Sends `f` through `st` at `now`; the verdict.
fn step(snap: &Snapshot, st: &mut WorkerState, now: u64, f: &[u8]) -> Verdict {
    let mut buf = f.to_vec();
    buf.resize(2048, 0);
    process(&ctx(now, snap), st, &mut buf, f.len())
}

#[test]
fn a_client_back_after_its_embryonic_flow_expired_keeps_the_only_port() {
    // One SNAT port. The client's SYN takes it, a retransmit 3 s later moves the flow's
    // deadline to 8 s; at 8.5 s the flow has expired and the same client sends a SYN again.
    // It must be tracked with the port: taking the port back must not evict the client's new
    // flow (named by the port's old mapping too).
    let scene = Scene { snat_ports: (1024, 1024), ..Scene::default() };
    let snap = scene.snapshot();
    let mut st = scene.state();
    let syn = client_to_vip(IpAddr::V4(VIP4), Protocol::TCP, 5000, TcpFlags::SYN).build();
    for now in [0, 3 * SEC, 8 * SEC + SEC / 2] {
        let v = step(&snap, &mut st, now, &syn);
        assert!(matches!(v, Verdict::Tx { reply: Reply::Forward, .. }), "SYN at {now} ns: {v:?}");
    }
    let now = 8 * SEC + SEC / 2;
    let live: Vec<_> = st.conntrack.iter_live(now).map(|e| (e.key.src_port, e.snat.map(|l| l.port()))).collect();
    assert_eq!(live, [(5000, Some(1024))], "the client's flow holds the port");
    let ack = client_to_vip(IpAddr::V4(VIP4), Protocol::TCP, 5000, TcpFlags::ACK).build();
    let mut buf = ack.clone();
    buf.resize(2048, 0);
    let v = process(&ctx(now + 1, &snap), &mut st, &mut buf, ack.len());
    assert!(matches!(v, Verdict::Tx { reply: Reply::Forward, .. }), "{v:?}");
    assert_eq!(u16::from_be_bytes([buf[34], buf[35]]), 1024, "the ACK leaves on the flow's port");
}

#[test]
fn a_snat_service_turned_dsr_frees_the_ports_of_its_flows() {
    use super::{maglev::TableSize, snapshot::ForwardMode};
    let scene = Scene::default();
    let snap = scene.snapshot();
    let mut st = scene.state();
    let syn = client_to_vip(IpAddr::V4(VIP4), Protocol::TCP, 5000, TcpFlags::SYN).build();
    assert!(matches!(step(&snap, &mut st, SEC, &syn), Verdict::Tx { reply: Reply::Forward, .. }));
    let port = st.conntrack.iter_live(SEC).find_map(|e| e.snat).expect("the flow holds a port").port();
    let table = st.snat.as_ref().expect("SNAT").table();
    assert!(table.lookup(0, Protocol::TCP, port, SEC).is_some());
    // The same service, now DSR.
    let services = scene
        .services()
        .into_iter()
        .map(|s| match s.mode {
            ForwardMode::Snat => {
                let mut d = super::snapshot::Service::new(s.key, ForwardMode::Dsr, s.backends.clone(), TableSize::Auto)
                    .expect("a table");
                d.stats_id = s.stats_id;
                d
            }
            ForwardMode::Dsr => s,
        })
        .collect();
    let dsr = Snapshot::new(2, snap.vips()).with_services(services);
    let ack = client_to_vip(IpAddr::V4(VIP4), Protocol::TCP, 5000, TcpFlags::ACK).build();
    assert!(matches!(step(&dsr, &mut st, 2 * SEC, &ack), Verdict::Tx { reply: Reply::Forward, .. }));
    assert!(st.conntrack.iter_live(2 * SEC).all(|e| e.snat.is_none()), "the flow holds no port");
    let table = st.snat.as_ref().expect("SNAT").table();
    assert_eq!(table.lookup(0, Protocol::TCP, port, 2 * SEC), None, "its port is free");
}

//! Table-driven pipeline fixtures: a description, an input frame, the expected verdict and
//! the exact expected output frame, for every branch the spine has. Frames come from the
//! shared [`testing`](super::testing) scene and builder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    neighbor::ALL_NODES,
    process,
    testing::{
        arp, ctx, ethernet_header, ndisc, solicit, PacketBuilder as Pkt, Scene, BACKEND_MAC, CLIENT4, CLIENT6,
        CLIENT_MAC, CLOSED_PORT, DSR_PORT, OTHER_IF_PORT, OURS, UNRESOLVED_PORT, VIP4, VIP6, WATCH4, WATCH6,
    },
    Conflict, DropReason, Reply, Verdict,
};
use crate::wire::{
    ethernet,
    icmpv6::{NdiscRepr, NeighborFlags},
    ipv4,
    ipv6::solicited_node,
    tcp::TcpFlags,
    ArpOperation, ArpRepr, EthernetAddress, EthernetFrame, Icmpv6Packet, Ipv6Packet, Result,
};

/// The same packet with the MACs a DSR hop gives it: to the backend, from us.
fn dsr(p: Pkt) -> Vec<u8> {
    Pkt { src_mac: OURS, dst_mac: BACKEND_MAC, ..p }.build()
}

fn request(spa: Ipv4Addr, tpa: Ipv4Addr) -> ArpRepr {
    ArpRepr { operation: ArpOperation::Request, sha: CLIENT_MAC, spa, tha: EthernetAddress::ZERO, tpa }
}

fn reply_to(spa: Ipv4Addr, tpa: Ipv4Addr) -> ArpRepr {
    ArpRepr { operation: ArpOperation::Reply, sha: OURS, spa, tha: CLIENT_MAC, tpa }
}

/// The client's ARP frame, broadcast.
fn arp_from_client(vlan: Option<u16>, a: ArpRepr) -> Vec<u8> {
    arp(CLIENT_MAC, EthernetAddress::BROADCAST, vlan, &a)
}

struct Case {
    what: &'static str,
    input: Vec<u8>,
    verdict: Verdict,
    output: Option<Vec<u8>>,
}

fn cases() -> Result<Vec<Case>> {
    let (vip4, vip6) = (IpAddr::V4(VIP4), IpAddr::V6(VIP6));
    let na = |flags, dst_mac, dst| {
        ndisc((OURS, dst_mac), VIP6, dst, 255, &NdiscRepr::NeighborAdvert { flags, target: VIP6, lladdr: Some(OURS) })
    };
    let mut bad_sum = solicit(CLIENT6, VIP6, 255);
    {
        let mut eth = EthernetFrame::new_checked(&mut bad_sum[..])?;
        let mut ip = Ipv6Packet::new_checked(eth.payload_mut())?;
        let mut icmp = Icmpv6Packet::new_checked(ip.payload_mut())?;
        let wrong = !icmp.checksum();
        icmp.set_checksum(wrong);
    }
    let syn = Pkt::tcp(vip4, DSR_PORT, TcpFlags::SYN);
    let tagged = Pkt { vlan: Some(7), ..Pkt::tcp(vip4, DSR_PORT, TcpFlags::ACK) };
    let udp = Pkt::udp(vip4, DSR_PORT);
    let syn6 = Pkt::tcp(vip6, DSR_PORT, TcpFlags::SYN);
    let ttl1 = Pkt { ttl: 1, ..syn };
    // Header length 6 words: a 4-byte option (NOP x3 + EOL) between header and TCP.
    let with_options = Pkt { ip_options: &[1, 1, 1, 0], ..syn };
    let mut short_v4 = Pkt::udp(vip4, CLOSED_PORT).build();
    short_v4.truncate(ethernet::HEADER_LEN + ipv4::HEADER_LEN - 1);
    let tx_arp = Verdict::Tx { len: 60, reply: Reply::Arp };
    Ok(vec![
        Case {
            what: "ARP request for an owned VIP: reply in place, to the asker",
            input: arp_from_client(None, request(CLIENT4, VIP4)),
            verdict: tx_arp,
            output: Some(arp(OURS, CLIENT_MAC, None, &reply_to(VIP4, CLIENT4))),
        },
        Case {
            what: "VLAN-tagged ARP request: the reply keeps the tag",
            input: arp_from_client(Some(42), request(CLIENT4, VIP4)),
            verdict: tx_arp,
            output: Some(arp(OURS, CLIENT_MAC, Some(42), &reply_to(VIP4, CLIENT4))),
        },
        Case {
            what: "ARP probe (sender 0.0.0.0) for an owned VIP: answered, so the prober backs off",
            input: arp_from_client(None, request(Ipv4Addr::UNSPECIFIED, VIP4)),
            verdict: tx_arp,
            output: Some(arp(OURS, CLIENT_MAC, None, &reply_to(VIP4, Ipv4Addr::UNSPECIFIED))),
        },
        Case {
            what: "ARP request for an address that is no VIP",
            input: arp_from_client(None, request(CLIENT4, Ipv4Addr::new(192, 0, 2, 7))),
            verdict: Verdict::Drop(DropReason::NotOwned),
            output: None,
        },
        Case {
            what: "ARP request for a VIP still being probed: not answered",
            input: arp_from_client(None, request(CLIENT4, WATCH4)),
            verdict: Verdict::Drop(DropReason::NotOwned),
            output: None,
        },
        Case {
            what: "another host probing for the VIP we probe: conflict",
            input: arp_from_client(None, request(Ipv4Addr::UNSPECIFIED, WATCH4)),
            verdict: Verdict::Conflict(Conflict { vip: IpAddr::V4(WATCH4), mac: CLIENT_MAC }),
            output: None,
        },
        Case {
            what: "gratuitous ARP for our VIP from another MAC: conflict",
            input: arp_from_client(None, request(VIP4, VIP4)),
            verdict: Verdict::Conflict(Conflict { vip: vip4, mac: CLIENT_MAC }),
            output: None,
        },
        Case {
            what: "ARP reply from another address: nothing to do",
            input: arp(CLIENT_MAC, OURS, None, &ArpRepr { operation: ArpOperation::Reply, ..request(CLIENT4, VIP4) }),
            verdict: Verdict::Drop(DropReason::NoAnswerNeeded),
            output: None,
        },
        Case {
            what: "neighbour solicitation for an owned VIP: solicited advertisement",
            input: solicit(CLIENT6, VIP6, 255),
            verdict: Verdict::Tx { len: 14 + 40 + 32, reply: Reply::Ndp },
            output: Some(na(NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE, CLIENT_MAC, CLIENT6)),
        },
        Case {
            what: "someone else's DAD for our VIP: advertisement to all nodes",
            input: solicit(Ipv6Addr::UNSPECIFIED, VIP6, 255),
            verdict: Verdict::Tx { len: 14 + 40 + 32, reply: Reply::Ndp },
            output: Some(na(NeighborFlags::OVERRIDE, EthernetAddress::ipv6_multicast(&ALL_NODES), ALL_NODES)),
        },
        Case {
            what: "someone else's DAD for the VIP we probe: conflict",
            input: solicit(Ipv6Addr::UNSPECIFIED, WATCH6, 255),
            verdict: Verdict::Conflict(Conflict { vip: IpAddr::V6(WATCH6), mac: CLIENT_MAC }),
            output: None,
        },
        Case {
            what: "advertisement claiming our VIP: conflict",
            input: ndisc(
                (CLIENT_MAC, EthernetAddress::ipv6_multicast(&ALL_NODES)),
                CLIENT6,
                ALL_NODES,
                255,
                &NdiscRepr::NeighborAdvert { flags: NeighborFlags::OVERRIDE, target: VIP6, lladdr: Some(CLIENT_MAC) },
            ),
            verdict: Verdict::Conflict(Conflict { vip: vip6, mac: CLIENT_MAC }),
            output: None,
        },
        Case {
            what: "solicitation with hop limit 64 (off-link forgery)",
            input: solicit(CLIENT6, VIP6, 64),
            verdict: Verdict::Drop(DropReason::NdpHopLimit),
            output: None,
        },
        Case {
            what: "solicitation with a bad checksum",
            input: bad_sum,
            verdict: Verdict::Drop(DropReason::BadChecksum),
            output: None,
        },
        Case {
            what: "UDP to a VIP port with no service",
            input: Pkt::udp(vip4, CLOSED_PORT).build(),
            verdict: Verdict::Drop(DropReason::NoService),
            output: None,
        },
        Case {
            what: "DSR: TCP SYN to VIP:80 goes to the backend's MAC, IP untouched",
            input: syn.build(),
            verdict: Verdict::Tx { len: 54, reply: Reply::Forward },
            output: Some(dsr(syn)),
        },
        Case {
            what: "DSR: VLAN-tagged TCP keeps its tag",
            input: tagged.build(),
            verdict: Verdict::Tx { len: 58, reply: Reply::Forward },
            output: Some(dsr(tagged)),
        },
        Case {
            what: "DSR: UDP to VIP:80",
            input: udp.build(),
            verdict: Verdict::Tx { len: 42, reply: Reply::Forward },
            output: Some(dsr(udp)),
        },
        Case {
            what: "DSR: IPv6 TCP to [VIP]:80",
            input: syn6.build(),
            verdict: Verdict::Tx { len: 74, reply: Reply::Forward },
            output: Some(dsr(syn6)),
        },
        Case {
            what: "TCP to a VIP port with no service",
            input: Pkt::tcp(vip4, CLOSED_PORT, TcpFlags::SYN).build(),
            verdict: Verdict::Drop(DropReason::NoService),
            output: None,
        },
        Case {
            what: "backend with no resolved next hop: no backend takes new flows",
            input: Pkt::tcp(vip4, UNRESOLVED_PORT, TcpFlags::SYN).build(),
            verdict: Verdict::Drop(DropReason::NoBackend),
            output: None,
        },
        Case {
            what: "backend reached through another interface of this box: dropped, not sent out the wrong one",
            input: Pkt::tcp(vip4, OTHER_IF_PORT, TcpFlags::SYN).build(),
            verdict: Verdict::Drop(DropReason::OtherInterface),
            output: None,
        },
        Case {
            what: "DSR: TTL 1 goes through unchanged (an L2 hop does not decrement it)",
            input: ttl1.build(),
            verdict: Verdict::Tx { len: 54, reply: Reply::Forward },
            output: Some(dsr(ttl1)),
        },
        Case {
            what: "DSR: IPv4 with options: ports read after them, bytes untouched",
            input: with_options.build(),
            verdict: Verdict::Tx { len: 58, reply: Reply::Forward },
            output: Some(dsr(with_options)),
        },
        Case {
            what: "a later IPv4 fragment to a VIP carries no ports",
            input: Pkt { frag_offset: 128, ..syn }.build(),
            verdict: Verdict::Drop(DropReason::Fragment),
            output: None,
        },
        Case {
            what: "IPv4 header cut short",
            input: short_v4,
            verdict: Verdict::Drop(DropReason::Truncated),
            output: None,
        },
        Case {
            what: "unknown EtherType",
            input: ethernet_header(0x88cc),
            verdict: Verdict::Drop(DropReason::Unsupported),
            output: None,
        },
        Case { what: "runt frame", input: vec![0xff; 13], verdict: Verdict::Drop(DropReason::Truncated), output: None },
    ])
}

#[test]
fn pipeline_fixtures() -> Result<()> {
    let scene = Scene::default();
    let snap = scene.snapshot();
    for case in cases()? {
        // The buffer is a UMEM frame: room after the frame for a longer reply.
        let mut buf = case.input.clone();
        let len = buf.len();
        buf.resize(2048, 0xee);
        let verdict = process(&ctx(0, &snap), &mut scene.bare_state(), &mut buf, len);
        assert_eq!(verdict, case.verdict, "{}", case.what);
        match (&case.output, verdict) {
            (Some(want), Verdict::Tx { len, .. }) => assert_eq!(&buf[..len], &want[..], "{}", case.what),
            (None, _) => assert_eq!(&buf[..len], &case.input[..], "{}: a dropped frame is left alone", case.what),
            (Some(_), v) => panic!("{}: expected a frame out, got {v:?}", case.what),
        }
    }
    Ok(())
}

#[test]
fn reply_that_does_not_fit_is_dropped_not_written_past_the_buffer() {
    // A solicitation without options is shorter than the advertisement that answers it.
    let group = solicited_node(&VIP6);
    let mut buf = ndisc(
        (CLIENT_MAC, EthernetAddress::ipv6_multicast(&group)),
        CLIENT6,
        group,
        255,
        &NdiscRepr::NeighborSolicit { target: VIP6, lladdr: None },
    );
    let len = buf.len();
    let scene = Scene::default();
    let verdict = process(&ctx(0, &scene.snapshot()), &mut scene.bare_state(), &mut buf, len);
    assert_eq!(verdict, Verdict::Drop(DropReason::NoRoom));
}

#[test]
fn arp_reply_bytes_match_a_hand_written_fixture() {
    // Who has 192.0.2.100? Tell 192.0.2.1 — and the exact reply xlb must send.
    let mut req: Vec<u8> = [
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x20, 0x08, 0x06][..],
        &[0, 1, 0x08, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 0x20, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 100][..],
    ]
    .concat();
    let want: Vec<u8> = [
        &[0x02, 0, 0, 0, 0, 0x20, 0x02, 0, 0, 0, 0, 0x10, 0x08, 0x06][..],
        &[0, 1, 0x08, 0, 6, 4, 0, 2, 0x02, 0, 0, 0, 0, 0x10, 192, 0, 2, 100, 0x02, 0, 0, 0, 0, 0x20, 192, 0, 2, 1][..],
    ]
    .concat();
    let len = req.len();
    let scene = Scene::default();
    let verdict = process(&ctx(0, &scene.snapshot()), &mut scene.bare_state(), &mut req, len);
    assert_eq!(verdict, Verdict::Tx { len: 42, reply: Reply::Arp });
    assert_eq!(req, want);
}

#[test]
fn a_fenced_worker_answers_no_arp_and_heartbeats_go_to_the_control_thread() {
    let mut req: Vec<u8> = [
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x20, 0x08, 0x06][..],
        &[0, 1, 0x08, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 0x20, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 100][..],
    ]
    .concat();
    let len = req.len();
    let scene = Scene::default();
    let snap = scene.snapshot();
    let mut st = scene.bare_state();
    st.fenced = true;
    assert_eq!(process(&ctx(0, &snap), &mut st, &mut req, len), Verdict::Drop(DropReason::Fenced));
    let beat = super::heartbeat::Beat { name: "b", cluster: 1, incarnation: 1, seq: 1, digest: 0, hears: 0, flags: 0 };
    let mut hb = super::heartbeat::build(CLIENT_MAC, &beat).bytes().to_vec();
    let len = hb.len();
    assert_eq!(process(&ctx(0, &snap), &mut st, &mut hb, len), Verdict::Heartbeat);
}

#[test]
fn clients_outside_the_source_ranges_are_dropped_before_tracking() {
    let (vip4, vip6) = (IpAddr::V4(VIP4), IpAddr::V6(VIP6));
    let net = |s: &str| s.parse::<ipnet::IpNet>().expect("a prefix");
    // The client's own /24 and /64 admit it; other prefixes of both families do not; an
    // IPv4 prefix never admits an IPv6 client, nor the other way round.
    let cases = [
        (vec![], true),
        (vec![net("198.51.100.0/24"), net("2001:db8:c::/64")], true),
        (vec![net("0.0.0.0/0"), net("::/0")], true),
        (vec![net("203.0.113.0/24"), net("2001:db8:d::/48")], false),
        (vec![net("198.51.100.8/29"), net("2001:db8:c::8/125")], false),
    ];
    for (sources, admitted) in cases {
        let scene = Scene { sources: sources.clone(), ..Scene::default() };
        let snap = scene.snapshot();
        let mut st = scene.bare_state();
        for input in [Pkt::tcp(vip4, DSR_PORT, TcpFlags::SYN).build(), Pkt::tcp(vip6, DSR_PORT, TcpFlags::SYN).build()]
        {
            let mut buf = input.clone();
            buf.resize(2048, 0);
            let v = process(&ctx(0, &snap), &mut st, &mut buf, input.len());
            if admitted {
                assert!(matches!(v, Verdict::Tx { reply: Reply::Forward, .. }), "{sources:?}: {v:?}");
            } else {
                assert_eq!(v, Verdict::Drop(DropReason::SourceRange), "{sources:?}");
                assert_eq!(&buf[..input.len()], &input[..], "a dropped frame is left alone");
            }
        }
        // Only an admitted flow takes a slot in the flow table.
        assert_eq!(st.conntrack.iter_live(0).count(), if admitted { 2 } else { 0 }, "{sources:?}");
    }
}

#[test]
fn a_tracked_flow_keeps_its_backend_when_a_snapshot_reorders_services_and_backends() {
    use super::{conntrack::Hint, maglev::TableSize, Snapshot};
    let scene = Scene { backends: 4, snat_ports: (1024, 65535), ..Scene::default() };
    let snap = scene.snapshot();
    let mut st = scene.state();
    let vip4 = IpAddr::V4(VIP4);
    // Flows from many client ports, DSR and SNAT: each goes to some backend.
    let send = |snap: &Snapshot, st: &mut super::WorkerState, port: u16, sport: u16, flags: u8| {
        let input = Pkt { sport, ..Pkt::tcp(vip4, port, flags) }.build();
        let mut buf = input.clone();
        buf.resize(2048, 0);
        match process(&ctx(0, snap), st, &mut buf, input.len()) {
            Verdict::Tx { reply: Reply::Forward, len } => buf[..len].to_vec(),
            v => panic!("port {port} from {sport}: {v:?}"),
        }
    };
    let flows: Vec<(u16, u16)> =
        [DSR_PORT, super::testing::SNAT_PORT].iter().flat_map(|&p| (0..16).map(move |i| (p, 20_000 + i))).collect();
    let first: Vec<Vec<u8>> = flows.iter().map(|&(p, s)| send(&snap, &mut st, p, s, TcpFlags::SYN)).collect();
    // The same services in reverse order, each with its backends in reverse order: every
    // hint the flows hold now names another service or backend.
    let mut services = scene.services();
    services.reverse();
    let services = services
        .into_iter()
        .map(|s| {
            let backends = s.backends.iter().rev().cloned().collect();
            let stats_id = s.stats_id;
            let mut r = super::snapshot::Service::new(s.key, s.mode, backends, TableSize::Auto).expect("a table");
            r.stats_id = stats_id;
            r
        })
        .collect();
    let reordered = Snapshot::new(2, snap.vips()).with_services(services);
    // Where a frame went: its MACs, IPv4 addresses and ports.
    let whither = |f: &[u8]| [&f[..12], &f[26..38]].concat();
    let backends: std::collections::HashSet<Vec<u8>> = first.iter().map(|f| f[..6].to_vec()).collect();
    assert!(backends.len() > 2, "the flows went to {} backends", backends.len());
    assert_eq!(st.conntrack.iter_live(0).count(), flows.len(), "every flow is tracked");
    for (&(p, s), before) in flows.iter().zip(&first) {
        let after = send(&reordered, &mut st, p, s, TcpFlags::ACK);
        assert_eq!(whither(&after), whither(before), "flow to port {p} from {s} changed backend, port or addresses");
    }
    // The hints now name where the service and backend are in the new snapshot.
    for e in st.conntrack.iter_live(0) {
        let (i, svc) = reordered.service_indexed(&e.key.dst, e.key.dst_port, e.key.proto).expect("its service");
        let b = svc.backend_index(e.backend_key, u32::MAX).expect("its backend");
        assert_eq!(e.hint, Hint::new(i, b), "{e:?}");
    }
}

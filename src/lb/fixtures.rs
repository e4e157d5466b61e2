//! Table-driven pipeline fixtures: a description, an input frame, the expected verdict and
//! the exact expected output frame, for every branch the spine has.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    conntrack::{Conntrack, Timeouts},
    process,
    snapshot::{Backend, ForwardMode, Service, ServiceKey},
    Conflict, Ctx, DropReason, Reply, Snapshot, Verdict, VipMode, WorkerState,
};
use crate::wire::{
    build::{self, L2},
    ethernet::EthernetRepr,
    icmpv6::{NdiscRepr, NeighborFlags},
    ipv4::{Ipv4Repr, Protocol},
    ipv6::{solicited_node, Ipv6Repr},
    ArpOperation, ArpRepr, EthernetAddress, Result,
};

const OURS: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x10]);
const PEER: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x20]);
const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const WATCH4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const WATCH6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn state() -> WorkerState {
    WorkerState::new(Conntrack::new(1024, Timeouts::default()))
}

const BACKEND_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x30]);
const UNRESOLVED_PORT: u16 = 8443;

fn services() -> Vec<Service> {
    let one = |vip: IpAddr, port: u16, proto: u8, backend: IpAddr, mac: Option<EthernetAddress>| {
        let b = Backend { mac, ..Backend::new(backend, port, 1) };
        Service::new(ServiceKey { vip, port, proto }, ForwardMode::Dsr, vec![b], 251)
    };
    let b4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 30));
    let b6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x30));
    [
        one(IpAddr::V4(VIP4), 80, Protocol::TCP, b4, Some(BACKEND_MAC)),
        one(IpAddr::V4(VIP4), 53, Protocol::UDP, b4, Some(BACKEND_MAC)),
        one(IpAddr::V6(VIP6), 80, Protocol::TCP, b6, Some(BACKEND_MAC)),
        one(IpAddr::V4(VIP4), UNRESOLVED_PORT, Protocol::TCP, b4, None),
    ]
    .into_iter()
    .filter_map(core::result::Result::ok)
    .collect()
}

fn snapshot() -> Snapshot {
    snapshot_vips().with_services(services())
}

fn snapshot_vips() -> Snapshot {
    Snapshot::new(
        1,
        [
            (IpAddr::V4(VIP4), VipMode::Answer),
            (IpAddr::V4(WATCH4), VipMode::Watch),
            (IpAddr::V6(VIP6), VipMode::Answer),
            (IpAddr::V6(WATCH6), VipMode::Watch),
        ],
    )
}

fn eth(src: EthernetAddress, dst: EthernetAddress, vlan: Option<u16>, ethertype: u16) -> Result<Vec<u8>> {
    let r = EthernetRepr { src, dst, vlan_tci: vlan, ethertype };
    let mut f = vec![0u8; r.header_len()];
    r.emit(&mut f)?;
    Ok(f)
}

fn arp(src: EthernetAddress, dst: EthernetAddress, vlan_tci: Option<u16>, a: ArpRepr) -> Result<Vec<u8>> {
    let mut f = vec![0u8; 128];
    let n = build::arp(&mut f, L2 { src, dst, vlan_tci }, &a)?;
    f.truncate(n);
    Ok(f)
}

fn ndisc(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    nd: NdiscRepr,
) -> Result<Vec<u8>> {
    let mut f = vec![0u8; 128];
    let n = build::ndisc(&mut f, L2 { src: src_mac, dst: dst_mac, vlan_tci: None }, src, dst, hop_limit, &nd)?;
    f.truncate(n);
    Ok(f)
}

/// Writes a 20-byte TCP header from port 40000 to `port` with `flags` (checksum left 0).
fn tcp_header(h: &mut [u8], port: u16, flags: u8) {
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&port.to_be_bytes());
    h[12] = 0x50;
    h[13] = flags;
}

/// A TCP segment (20-byte header, flags, no payload) client -> VIP, optionally tagged.
fn tcp4(dst: Ipv4Addr, port: u16, flags: u8, vlan_tci: Option<u16>) -> Result<Vec<u8>> {
    let mut f = vec![0u8; 128];
    let ip = Ipv4Repr { src: PEER4, dst, protocol: Protocol::TCP, payload_len: 20, ttl: 64 };
    let n = build::ipv4(&mut f, L2 { src: PEER, dst: OURS, vlan_tci }, &ip)?;
    f.truncate(n);
    tcp_header(&mut f[n - 20..], port, flags);
    Ok(f)
}

fn udp4(dst: Ipv4Addr, port: u16) -> Result<Vec<u8>> {
    let mut f = vec![0u8; 128];
    let ip = Ipv4Repr { src: PEER4, dst, protocol: Protocol::UDP, payload_len: 8, ttl: 64 };
    let n = build::ipv4(&mut f, L2 { src: PEER, dst: OURS, vlan_tci: None }, &ip)?;
    f.truncate(n);
    f[n - 8..n - 6].copy_from_slice(&5353u16.to_be_bytes());
    f[n - 6..n - 4].copy_from_slice(&port.to_be_bytes());
    f[n - 4..n - 2].copy_from_slice(&8u16.to_be_bytes());
    Ok(f)
}

fn tcp6(dst: Ipv6Addr, port: u16, flags: u8) -> Result<Vec<u8>> {
    let mut f = vec![0u8; 128];
    let ip = Ipv6Repr { src: PEER6, dst, next_header: Protocol::TCP, payload_len: 20, hop_limit: 64 };
    let n = build::ipv6(&mut f, L2 { src: PEER, dst: OURS, vlan_tci: None }, &ip)?;
    f.truncate(n);
    tcp_header(&mut f[n - 20..], port, flags);
    Ok(f)
}

/// The same frame with the MACs a DSR hop gives it: to the backend, from us.
fn dsr(mut f: Vec<u8>) -> Vec<u8> {
    f[0..6].copy_from_slice(&BACKEND_MAC.0);
    f[6..12].copy_from_slice(&OURS.0);
    f
}

fn request(spa: Ipv4Addr, tpa: Ipv4Addr) -> ArpRepr {
    ArpRepr { operation: ArpOperation::Request, sha: PEER, spa, tha: EthernetAddress::ZERO, tpa }
}

fn reply_to(spa: Ipv4Addr, tpa: Ipv4Addr) -> ArpRepr {
    ArpRepr { operation: ArpOperation::Reply, sha: OURS, spa, tha: PEER, tpa }
}

fn solicit(src: Ipv6Addr, target: Ipv6Addr, hop_limit: u8) -> Result<Vec<u8>> {
    let dst = solicited_node(&target);
    let lladdr = if src.is_unspecified() { None } else { Some(PEER) };
    ndisc(
        PEER,
        EthernetAddress::ipv6_multicast(&dst),
        src,
        dst,
        hop_limit,
        NdiscRepr::NeighborSolicit { target, lladdr },
    )
}

struct Case {
    what: &'static str,
    input: Vec<u8>,
    verdict: Verdict,
    output: Option<Vec<u8>>,
}

fn cases() -> Result<Vec<Case>> {
    let na = |flags, dst_mac, dst| {
        ndisc(OURS, dst_mac, VIP6, dst, 255, NdiscRepr::NeighborAdvert { flags, target: VIP6, lladdr: Some(OURS) })
    };
    let mut udp_port0 = vec![0u8; 128];
    let ip = Ipv4Repr { src: PEER4, dst: VIP4, protocol: Protocol::UDP, payload_len: 8, ttl: 64 };
    let n = build::ipv4(&mut udp_port0, L2 { src: PEER, dst: OURS, vlan_tci: None }, &ip)?;
    udp_port0.truncate(n);
    udp_port0[n - 4..n - 2].copy_from_slice(&8u16.to_be_bytes());
    let mut bad_sum = solicit(PEER6, VIP6, 255)?;
    bad_sum[14 + 40 + 2] ^= 0x55;
    let udp4_to = |port| udp4(VIP4, port);
    let later_fragment = || -> Result<Vec<u8>> {
        let mut f = tcp4(VIP4, 80, 0x02, None)?;
        f[14 + 6] = 0x00;
        f[14 + 7] = 0x10;
        Ok(f)
    };
    let mut ttl1 = tcp4(VIP4, 80, 0x02, None)?;
    ttl1[14 + 8] = 1;
    // Header length 6 words: a 4-byte option (NOP x3 + EOL) between header and TCP.
    let plain = tcp4(VIP4, 80, 0x02, None)?;
    let mut with_options = plain[..34].to_vec();
    with_options[14] = 0x46;
    with_options[16..18].copy_from_slice(&44u16.to_be_bytes());
    with_options.extend_from_slice(&[1, 1, 1, 0]);
    with_options.extend_from_slice(&plain[34..]);
    let mut short_v4 = udp_port0.clone();
    short_v4.truncate(14 + 19);
    let tx_arp = Verdict::Tx { len: 60, reply: Reply::Arp };
    Ok(vec![
        Case {
            what: "ARP request for an owned VIP: reply in place, to the asker",
            input: arp(PEER, EthernetAddress::BROADCAST, None, request(PEER4, VIP4))?,
            verdict: tx_arp,
            output: Some(arp(OURS, PEER, None, reply_to(VIP4, PEER4))?),
        },
        Case {
            what: "VLAN-tagged ARP request: the reply keeps the tag",
            input: arp(PEER, EthernetAddress::BROADCAST, Some(42), request(PEER4, VIP4))?,
            verdict: tx_arp,
            output: Some(arp(OURS, PEER, Some(42), reply_to(VIP4, PEER4))?),
        },
        Case {
            what: "ARP probe (sender 0.0.0.0) for an owned VIP: answered, so the prober backs off",
            input: arp(PEER, EthernetAddress::BROADCAST, None, request(Ipv4Addr::UNSPECIFIED, VIP4))?,
            verdict: tx_arp,
            output: Some(arp(OURS, PEER, None, reply_to(VIP4, Ipv4Addr::UNSPECIFIED))?),
        },
        Case {
            what: "ARP request for an address that is no VIP",
            input: arp(PEER, EthernetAddress::BROADCAST, None, request(PEER4, Ipv4Addr::new(192, 0, 2, 7)))?,
            verdict: Verdict::Drop(DropReason::NotOwned),
            output: None,
        },
        Case {
            what: "ARP request for a VIP still being probed: not answered",
            input: arp(PEER, EthernetAddress::BROADCAST, None, request(PEER4, WATCH4))?,
            verdict: Verdict::Drop(DropReason::NotOwned),
            output: None,
        },
        Case {
            what: "another host probing for the VIP we probe: conflict",
            input: arp(PEER, EthernetAddress::BROADCAST, None, request(Ipv4Addr::UNSPECIFIED, WATCH4))?,
            verdict: Verdict::Conflict(Conflict { vip: IpAddr::V4(WATCH4), mac: PEER }),
            output: None,
        },
        Case {
            what: "gratuitous ARP for our VIP from another MAC: conflict",
            input: arp(PEER, EthernetAddress::BROADCAST, None, request(VIP4, VIP4))?,
            verdict: Verdict::Conflict(Conflict { vip: IpAddr::V4(VIP4), mac: PEER }),
            output: None,
        },
        Case {
            what: "ARP reply from another address: nothing to do",
            input: arp(PEER, OURS, None, ArpRepr { operation: ArpOperation::Reply, ..request(PEER4, VIP4) })?,
            verdict: Verdict::Drop(DropReason::NoAnswerNeeded),
            output: None,
        },
        Case {
            what: "neighbour solicitation for an owned VIP: solicited advertisement",
            input: solicit(PEER6, VIP6, 255)?,
            verdict: Verdict::Tx { len: 14 + 40 + 32, reply: Reply::Ndp },
            output: Some(na(NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE, PEER, PEER6)?),
        },
        Case {
            what: "someone else's DAD for our VIP: advertisement to all nodes",
            input: solicit(Ipv6Addr::UNSPECIFIED, VIP6, 255)?,
            verdict: Verdict::Tx { len: 14 + 40 + 32, reply: Reply::Ndp },
            output: Some(na(NeighborFlags::OVERRIDE, EthernetAddress::ipv6_multicast(&ALL_NODES), ALL_NODES)?),
        },
        Case {
            what: "someone else's DAD for the VIP we probe: conflict",
            input: solicit(Ipv6Addr::UNSPECIFIED, WATCH6, 255)?,
            verdict: Verdict::Conflict(Conflict { vip: IpAddr::V6(WATCH6), mac: PEER }),
            output: None,
        },
        Case {
            what: "advertisement claiming our VIP: conflict",
            input: ndisc(
                PEER,
                EthernetAddress::ipv6_multicast(&ALL_NODES),
                PEER6,
                ALL_NODES,
                255,
                NdiscRepr::NeighborAdvert { flags: NeighborFlags::OVERRIDE, target: VIP6, lladdr: Some(PEER) },
            )?,
            verdict: Verdict::Conflict(Conflict { vip: IpAddr::V6(VIP6), mac: PEER }),
            output: None,
        },
        Case {
            what: "solicitation with hop limit 64 (off-link forgery)",
            input: solicit(PEER6, VIP6, 64)?,
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
            input: udp_port0,
            verdict: Verdict::Drop(DropReason::NoService),
            output: None,
        },
        Case {
            what: "DSR: TCP SYN to VIP:80 goes to the backend's MAC, IP untouched",
            input: tcp4(VIP4, 80, 0x02, None)?,
            verdict: Verdict::Tx { len: 54, reply: Reply::Forward },
            output: Some(dsr(tcp4(VIP4, 80, 0x02, None)?)),
        },
        Case {
            what: "DSR: VLAN-tagged TCP keeps its tag",
            input: tcp4(VIP4, 80, 0x10, Some(7))?,
            verdict: Verdict::Tx { len: 58, reply: Reply::Forward },
            output: Some(dsr(tcp4(VIP4, 80, 0x10, Some(7))?)),
        },
        Case {
            what: "DSR: UDP to VIP:53",
            input: udp4_to(53)?,
            verdict: Verdict::Tx { len: 42, reply: Reply::Forward },
            output: Some(dsr(udp4_to(53)?)),
        },
        Case {
            what: "DSR: IPv6 TCP to [VIP]:80",
            input: tcp6(VIP6, 80, 0x02)?,
            verdict: Verdict::Tx { len: 74, reply: Reply::Forward },
            output: Some(dsr(tcp6(VIP6, 80, 0x02)?)),
        },
        Case {
            what: "TCP to a VIP port with no service",
            input: tcp4(VIP4, 81, 0x02, None)?,
            verdict: Verdict::Drop(DropReason::NoService),
            output: None,
        },
        Case {
            what: "backend with no resolved next hop: no backend takes new flows",
            input: tcp4(VIP4, UNRESOLVED_PORT, 0x02, None)?,
            verdict: Verdict::Drop(DropReason::NoBackend),
            output: None,
        },
        Case {
            what: "DSR: TTL 1 goes through unchanged (an L2 hop does not decrement it)",
            input: ttl1.clone(),
            verdict: Verdict::Tx { len: 54, reply: Reply::Forward },
            output: Some(dsr(ttl1)),
        },
        Case {
            what: "DSR: IPv4 with options: ports read after them, bytes untouched",
            input: with_options.clone(),
            verdict: Verdict::Tx { len: 58, reply: Reply::Forward },
            output: Some(dsr(with_options)),
        },
        Case {
            what: "a later IPv4 fragment to a VIP carries no ports",
            input: later_fragment()?,
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
            input: eth(PEER, OURS, None, 0x88cc)?,
            verdict: Verdict::Drop(DropReason::Unsupported),
            output: None,
        },
        Case { what: "runt frame", input: vec![0xff; 13], verdict: Verdict::Drop(DropReason::Truncated), output: None },
    ])
}

#[test]
fn pipeline_fixtures() -> Result<()> {
    let snap = snapshot();
    for case in cases()? {
        // The buffer is a UMEM frame: room after the frame for a longer reply.
        let mut buf = case.input.clone();
        let len = buf.len();
        buf.resize(2048, 0xee);
        let verdict = process(&Ctx { now: 0, snap: &snap, mac: OURS }, &mut state(), &mut buf, len);
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
fn reply_that_does_not_fit_is_dropped_not_written_past_the_buffer() -> Result<()> {
    // A solicitation without options is shorter than the advertisement that answers it.
    let mut buf = ndisc(
        PEER,
        EthernetAddress::ipv6_multicast(&solicited_node(&VIP6)),
        PEER6,
        solicited_node(&VIP6),
        255,
        NdiscRepr::NeighborSolicit { target: VIP6, lladdr: None },
    )?;
    let len = buf.len();
    assert_eq!(
        process(&Ctx { now: 0, snap: &snapshot(), mac: OURS }, &mut state(), &mut buf, len),
        Verdict::Drop(DropReason::NoRoom)
    );
    Ok(())
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
    assert_eq!(
        process(&Ctx { now: 0, snap: &snapshot(), mac: OURS }, &mut state(), &mut req, len),
        Verdict::Tx { len: 42, reply: Reply::Arp }
    );
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
    let mut st = state();
    st.fenced = true;
    assert_eq!(
        process(&Ctx { now: 0, snap: &snapshot(), mac: OURS }, &mut st, &mut req, len),
        Verdict::Drop(DropReason::Fenced)
    );
    let beat = super::heartbeat::Beat { name: "b", cluster: 1, incarnation: 1, seq: 1, digest: 0, hears: 0, flags: 0 };
    let mut hb = super::heartbeat::build(PEER, &beat).bytes().to_vec();
    let len = hb.len();
    assert_eq!(process(&Ctx { now: 0, snap: &snapshot(), mac: OURS }, &mut st, &mut hb, len), Verdict::Heartbeat);
}

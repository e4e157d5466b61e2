//! The XDP program's verdicts on crafted frames, through BPF_PROG_TEST_RUN: what goes to
//! userspace and what stays with the kernel. Needs root (CAP_BPF); fails rather than skips
//! under CI=true.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: a panic is the report

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xlb::{
    io::xdp::{XdpProgram, CLASS_NAMES, VIP_FORWARD, VIP_LOCAL, VIP_OWNED, VIP_PROBING},
    wire::{
        build::{self, L2},
        icmpv6::{NdiscRepr, NeighborFlags},
        ipv4::{Ipv4Repr, Protocol},
        ipv6::{solicited_node, Ipv6Repr},
        ArpOperation, ArpRepr, EthernetAddress,
    },
};

const XDP_PASS: u32 = 2;
const MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
const OTHER: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const PROBING4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
const OTHER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
const FORWARD4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 102);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200);
const FORWARD6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x102);
/// VIPs whose traffic this node's own service proxy serves (owned, neighbour traffic only).
const LOCAL4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 103);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x103);

fn program() -> Option<XdpProgram> {
    match XdpProgram::load() {
        Ok(p) => Some(p),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: cannot load the XDP program here ({e}); run as root");
            None
        }
        Err(e) => panic!("loading the XDP program failed under CI: {e}"),
    }
}

fn frame(f: impl FnOnce(&mut [u8]) -> xlb::wire::Result<usize>) -> Vec<u8> {
    let mut buf = vec![0u8; 128];
    let n = f(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn arp(op: ArpOperation, spa: Ipv4Addr, tpa: Ipv4Addr, vlan_tci: Option<u16>) -> Vec<u8> {
    let repr = ArpRepr { operation: op, sha: OTHER, spa, tha: EthernetAddress::ZERO, tpa };
    frame(|b| build::arp(b, L2 { src: OTHER, dst: EthernetAddress::BROADCAST, vlan_tci }, &repr))
}

fn udp4(dst: Ipv4Addr) -> Vec<u8> {
    let ip = Ipv4Repr { src: CLIENT4, dst, protocol: Protocol::UDP, payload_len: 8, ttl: 64 };
    frame(|b| build::ipv4(b, L2 { src: OTHER, dst: MAC, vlan_tci: None }, &ip))
}

fn ndisc(nd: NdiscRepr, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let l2 = L2 { src: OTHER, dst: EthernetAddress::ipv6_multicast(&dst), vlan_tci: None };
    frame(|b| build::ndisc(b, l2, src, dst, 255, &nd))
}

fn udp6(dst: Ipv6Addr) -> Vec<u8> {
    let ip = Ipv6Repr { src: CLIENT6, dst, next_header: Protocol::UDP, payload_len: 8, hop_limit: 64 };
    frame(|b| build::ipv6(b, L2 { src: OTHER, dst: MAC, vlan_tci: None }, &ip))
}

#[test]
fn verdicts_for_each_kind_of_frame() {
    let Some(prog) = program() else { return };
    prog.set_vip(IpAddr::V4(VIP4), VIP_OWNED).unwrap();
    prog.set_vip(IpAddr::V4(PROBING4), VIP_PROBING).unwrap();
    prog.set_vip(IpAddr::V6(VIP6), VIP_OWNED).unwrap();
    prog.set_vip(IpAddr::V4(FORWARD4), VIP_FORWARD).unwrap();
    prog.set_vip(IpAddr::V6(FORWARD6), VIP_FORWARD).unwrap();
    prog.set_vip(IpAddr::V4(LOCAL4), VIP_OWNED | VIP_LOCAL).unwrap();
    prog.set_vip(IpAddr::V6(LOCAL6), VIP_OWNED | VIP_LOCAL).unwrap();

    let na = |target| NdiscRepr::NeighborAdvert { flags: NeighborFlags::OVERRIDE, target, lladdr: Some(OTHER) };
    let ns = |target| NdiscRepr::NeighborSolicit { target, lladdr: Some(OTHER) };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("ARP request for an owned VIP", arp(ArpOperation::Request, CLIENT4, VIP4, None), "arp_request"),
        ("ARP request for a VIP, VLAN-tagged", arp(ArpOperation::Request, CLIENT4, VIP4, Some(100)), "arp_request"),
        (
            "ARP probe for a VIP being probed",
            arp(ArpOperation::Request, Ipv4Addr::UNSPECIFIED, PROBING4, None),
            "arp_request",
        ),
        ("ARP request for another address", arp(ArpOperation::Request, CLIENT4, OTHER4, None), "pass"),
        ("ARP reply claiming a VIP", arp(ArpOperation::Reply, VIP4, CLIENT4, None), "arp_watch"),
        ("gratuitous ARP for a VIP", arp(ArpOperation::Request, VIP4, VIP4, None), "arp_request"),
        ("ARP reply from another address", arp(ArpOperation::Reply, OTHER4, CLIENT4, None), "pass"),
        ("IPv4 to an owned VIP", udp4(VIP4), "vip_v4"),
        ("IPv4 to a VIP still probing", udp4(PROBING4), "pass"),
        ("IPv4 to another address", udp4(OTHER4), "pass"),
        ("ARP request for a VIP another node announces", arp(ArpOperation::Request, CLIENT4, FORWARD4, None), "pass"),
        ("ARP reply from the node that announces it", arp(ArpOperation::Reply, FORWARD4, CLIENT4, None), "pass"),
        ("IPv4 to a VIP another node announces", udp4(FORWARD4), "vip_v4"),
        ("NS for a VIP another node announces", ndisc(ns(FORWARD6), CLIENT6, solicited_node(&FORWARD6)), "pass"),
        ("IPv6 to a VIP another node announces", udp6(FORWARD6), "vip_v6"),
        (
            "ARP request for a VIP whose traffic is the kernel's",
            arp(ArpOperation::Request, CLIENT4, LOCAL4, None),
            "arp_request",
        ),
        ("IPv4 to a VIP whose traffic is the kernel's", udp4(LOCAL4), "pass"),
        (
            "NS for a VIP whose traffic is the kernel's",
            ndisc(ns(LOCAL6), CLIENT6, solicited_node(&LOCAL6)),
            "ndp_solicit",
        ),
        ("IPv6 to a VIP whose traffic is the kernel's", udp6(LOCAL6), "pass"),
        ("NS for a VIP", ndisc(ns(VIP6), CLIENT6, solicited_node(&VIP6)), "ndp_solicit"),
        ("NS for another address", ndisc(ns(OTHER6), CLIENT6, solicited_node(&OTHER6)), "pass"),
        ("NA claiming a VIP", ndisc(na(VIP6), OTHER6, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)), "ndp_advert"),
        ("IPv6 to an owned VIP", udp6(VIP6), "vip_v6"),
        ("IPv6 to another address", udp6(OTHER6), "pass"),
        (
            "heartbeat of another xlb node",
            xlb::lb::heartbeat::build(
                OTHER,
                &xlb::lb::heartbeat::Beat {
                    name: "node-b",
                    cluster: 1,
                    incarnation: 1,
                    seq: 1,
                    digest: 0,
                    hears: 0,
                    flags: 0,
                },
            )
            .bytes()
            .to_vec(),
            "heartbeat",
        ),
        // BPF_PROG_TEST_RUN refuses frames under 14 bytes; a bare header is the shortest.
        ("Ethernet header alone, ARP type", arp(ArpOperation::Request, CLIENT4, VIP4, None)[..14].to_vec(), "pass"),
        ("IPv6 header cut short", udp6(VIP6)[..40].to_vec(), "pass"),
        ("truncated ARP for a VIP", arp(ArpOperation::Request, CLIENT4, VIP4, None)[..30].to_vec(), "pass"),
    ];
    let class = |name: &str| CLASS_NAMES.iter().position(|n| *n == name).unwrap();
    for (what, frame, want) in cases {
        let before = prog.class_counts();
        let verdict = prog.test_run(&frame).unwrap_or_else(|e| panic!("{what}: test run failed: {e}"));
        let after = prog.class_counts();
        // No socket is bound in a test run, so a frame meant for xlb falls back to the
        // kernel; the counters say which way it was classified.
        assert_eq!(verdict, XDP_PASS, "{what}");
        let moved: Vec<&str> = CLASS_NAMES
            .iter()
            .zip(before.iter().zip(after.iter()))
            .filter(|(_, (b, a))| a > b)
            .map(|(n, _)| *n)
            .collect();
        let expected: Vec<&str> = if want == "pass" { vec!["pass"] } else { vec![want, "no_socket"] };
        let mut expected_sorted = expected.clone();
        expected_sorted.sort_by_key(|n| class(n));
        assert_eq!(moved, expected_sorted, "{what}: classified as {moved:?}, expected {want}");
    }
}

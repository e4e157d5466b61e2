//! Frames the lab tests send, built with xlb's own `Repr`s, and small readers for replies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xlb::wire::{
    ethernet::EthernetRepr,
    icmpv6::NdiscRepr,
    ipv4::Protocol,
    ipv6::{solicited_node, Ipv6Repr},
    parse::{Network, Transport},
    parse_frame, ArpOperation, ArpRepr, EtherType, EthernetAddress,
};

/// An ARP request from `mac`/`spa` for `tpa`, broadcast.
pub fn arp_request(mac: EthernetAddress, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let eth = EthernetRepr { src: mac, dst: EthernetAddress::BROADCAST, vlan_tci: None, ethertype: EtherType::ARP };
    let at = eth.emit(&mut f).unwrap();
    ArpRepr { operation: ArpOperation::Request, sha: mac, spa, tha: EthernetAddress::ZERO, tpa }
        .emit(&mut f[at..])
        .unwrap();
    f
}

/// A neighbour solicitation from `mac`/`src` for `target`, to its solicited-node group.
pub fn neighbor_solicit(mac: EthernetAddress, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = solicited_node(&target);
    let ns = NdiscRepr::NeighborSolicit { target, lladdr: Some(mac) };
    let mut f = vec![0u8; 14 + 40 + ns.buffer_len()];
    let eth = EthernetRepr {
        src: mac,
        dst: EthernetAddress::ipv6_multicast(&dst),
        vlan_tci: None,
        ethertype: EtherType::IPV6,
    };
    eth.emit(&mut f).unwrap();
    let ip = Ipv6Repr {
        src,
        dst,
        next_header: Protocol::ICMPV6,
        payload_len: u16::try_from(ns.buffer_len()).unwrap(),
        hop_limit: 255,
    };
    ip.emit(&mut f[14..]).unwrap();
    ns.emit(&src, &dst, &mut f[54..]).unwrap();
    f
}

/// What a neighbour frame seen on the wire says: (what, address, MAC it is at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    ArpReply { spa: Ipv4Addr, sha: EthernetAddress, tpa: Ipv4Addr },
    ArpRequest { spa: Ipv4Addr, sha: EthernetAddress, tpa: Ipv4Addr },
    Advert { target: Ipv6Addr, lladdr: Option<EthernetAddress>, flags: u8, dst: Ipv6Addr },
    Solicit { target: Ipv6Addr, src: Ipv6Addr },
    Other,
}

/// Reads a frame as one of the neighbour messages the tests look for.
pub fn seen(frame: &[u8]) -> Seen {
    let Ok(p) = parse_frame(frame) else { return Seen::Other };
    match (p.network, p.transport) {
        (Network::Arp(a), _) if a.operation == ArpOperation::Reply => {
            Seen::ArpReply { spa: a.spa, sha: a.sha, tpa: a.tpa }
        }
        (Network::Arp(a), _) if a.operation == ArpOperation::Request => {
            Seen::ArpRequest { spa: a.spa, sha: a.sha, tpa: a.tpa }
        }
        (Network::Ipv6 { dst, .. }, Transport::Ndisc(NdiscRepr::NeighborAdvert { flags, target, lladdr })) => {
            Seen::Advert { target, lladdr, flags, dst }
        }
        (Network::Ipv6 { src, .. }, Transport::Ndisc(NdiscRepr::NeighborSolicit { target, .. })) => {
            Seen::Solicit { target, src }
        }
        _ => Seen::Other,
    }
}

/// Parses an address literal (test constants).
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

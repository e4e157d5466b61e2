//! Frames the lab tests send, built with xlb's own `Repr`s through the fixtures' builder
//! (`xlb::lb::testing`), and small readers for replies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xlb::{
    lb::testing,
    wire::{
        icmpv6::NdiscRepr,
        ipv6::solicited_node,
        parse::{Network, Transport},
        parse_frame, ArpOperation, ArpRepr, EthernetAddress,
    },
};

/// An ARP request from `mac`/`spa` for `tpa`, broadcast.
pub fn arp_request(mac: EthernetAddress, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr { operation: ArpOperation::Request, sha: mac, spa, tha: EthernetAddress::ZERO, tpa };
    testing::arp(mac, EthernetAddress::BROADCAST, None, &repr)
}

/// A neighbour solicitation from `mac`/`src` for `target`, to its solicited-node group.
pub fn neighbor_solicit(mac: EthernetAddress, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = solicited_node(&target);
    let ns = NdiscRepr::NeighborSolicit { target, lladdr: Some(mac) };
    testing::ndisc((mac, EthernetAddress::ipv6_multicast(&dst)), src, dst, 255, &ns)
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

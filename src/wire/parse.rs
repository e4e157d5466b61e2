//! The whole parse of a frame in one call: every header xlb understands, checked, summed up
//! in a small `Copy` value. The fuzz target drives this; the datapath uses the views directly.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{
    ipv4::Protocol, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame, Icmpv4Packet, Icmpv6Packet,
    Ipv4Packet, Ipv6Packet, NdiscRepr, Result, TcpPacket, UdpPacket,
};

/// The layer-3 header of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// ARP for Ethernet and IPv4.
    Arp(ArpRepr),
    /// IPv4.
    Ipv4 {
        /// Source address.
        src: Ipv4Addr,
        /// Destination address.
        dst: Ipv4Addr,
        /// Time to live.
        ttl: u8,
        /// Non-first fragment: no transport header is present.
        later_fragment: bool,
    },
    /// IPv6.
    Ipv6 {
        /// Source address.
        src: Ipv6Addr,
        /// Destination address.
        dst: Ipv6Addr,
        /// Hop limit.
        hop_limit: u8,
    },
    /// Another EtherType.
    Other(u16),
}

/// The layer-4 header of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Nothing past layer 3 (ARP, a later fragment, an unknown EtherType).
    None,
    /// TCP.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flag bits.
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMPv4.
    Icmpv4 {
        /// Type.
        msg_type: u8,
        /// Code.
        code: u8,
    },
    /// ICMPv6 other than neighbour discovery.
    Icmpv6 {
        /// Type.
        msg_type: u8,
        /// Code.
        code: u8,
    },
    /// Neighbour solicitation or advertisement.
    Ndisc(NdiscRepr),
    /// Another protocol number.
    Other(u8),
}

/// Everything xlb reads from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Source MAC.
    pub src_mac: EthernetAddress,
    /// Destination MAC.
    pub dst_mac: EthernetAddress,
    /// Innermost VLAN id.
    pub vlan: Option<u16>,
    /// Offset of the layer-3 header.
    pub l3_offset: usize,
    /// Layer 3.
    pub network: Network,
    /// Layer 4.
    pub transport: Transport,
}

/// Parses every layer of `frame`; the first header that fails its check fails the parse.
pub fn parse_frame(frame: &[u8]) -> Result<Parsed> {
    let eth = EthernetFrame::new_checked(frame)?;
    let l3 = eth.payload();
    let (network, transport) = match eth.ethertype() {
        EtherType::ARP => (Network::Arp(ArpRepr::parse(&ArpPacket::new_checked(l3)?)), Transport::None),
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3)?;
            let later_fragment = ip.frag_offset() != 0;
            let transport = if later_fragment { Transport::None } else { transport(ip.protocol(), ip.payload())? };
            let network = Network::Ipv4 { src: ip.src_addr(), dst: ip.dst_addr(), ttl: ip.ttl(), later_fragment };
            (network, transport)
        }
        EtherType::IPV6 => {
            let ip = Ipv6Packet::new_checked(l3)?;
            let network = Network::Ipv6 { src: ip.src_addr(), dst: ip.dst_addr(), hop_limit: ip.hop_limit() };
            (network, transport(ip.next_header(), ip.payload())?)
        }
        other => (Network::Other(other), Transport::None),
    };
    Ok(Parsed {
        src_mac: eth.src_addr(),
        dst_mac: eth.dst_addr(),
        vlan: eth.vlan_id(),
        l3_offset: eth.header_len(),
        network,
        transport,
    })
}

fn transport(protocol: u8, payload: &[u8]) -> Result<Transport> {
    Ok(match protocol {
        Protocol::TCP => {
            let p = TcpPacket::new_checked(payload)?;
            Transport::Tcp { src_port: p.src_port(), dst_port: p.dst_port(), flags: p.flags() }
        }
        Protocol::UDP => {
            let p = UdpPacket::new_checked(payload)?;
            Transport::Udp { src_port: p.src_port(), dst_port: p.dst_port() }
        }
        Protocol::ICMP => {
            let p = Icmpv4Packet::new_checked(payload)?;
            Transport::Icmpv4 { msg_type: p.msg_type(), code: p.msg_code() }
        }
        Protocol::ICMPV6 => {
            let p = Icmpv6Packet::new_checked(payload)?;
            if p.is_ndisc() {
                Transport::Ndisc(NdiscRepr::parse(&p)?)
            } else {
                Transport::Icmpv6 { msg_type: p.msg_type(), code: p.msg_code() }
            }
        }
        other => Transport::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Error;

    fn udp_v4_frame() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x07, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 29, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 100]);
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x00, 0x09, 0x00, 0x00, b'x']);
        f
    }

    #[test]
    fn parses_tagged_udp() -> Result<()> {
        let p = parse_frame(&udp_v4_frame())?;
        assert_eq!(p.vlan, Some(7));
        assert_eq!(p.l3_offset, 18);
        assert_eq!(
            p.network,
            Network::Ipv4 {
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 100),
                ttl: 64,
                later_fragment: false
            }
        );
        assert_eq!(p.transport, Transport::Udp { src_port: 12345, dst_port: 53 });
        Ok(())
    }

    #[test]
    fn later_fragment_has_no_transport() -> Result<()> {
        let mut f = udp_v4_frame();
        f[18 + 7] = 0x10; // offset 16 * 8
        let p = parse_frame(&f)?;
        assert_eq!(p.transport, Transport::None);
        Ok(())
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let f = udp_v4_frame();
        for len in 0..f.len() {
            assert!(matches!(parse_frame(&f[..len]), Err(Error::Truncated | Error::Malformed)), "len {len}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A fixed xorshift stream: deterministic, so a failure reproduces.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 128];
        let seeds = udp_v4_frame();
        for round in 0..20_000 {
            for b in buf.iter_mut() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *b = s.to_le_bytes()[0];
            }
            // Half the rounds start from a valid frame with a few bytes flipped.
            if round % 2 == 0 {
                buf[..seeds.len()].copy_from_slice(&seeds);
                let at = usize::from(s.to_le_bytes()[1]) % seeds.len();
                buf[at] ^= s.to_le_bytes()[2];
            }
            let len = usize::from(s.to_le_bytes()[3]) % buf.len();
            let _ = parse_frame(&buf[..len]);
        }
    }
}

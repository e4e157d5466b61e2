//! Whole frames from `Repr`s, written into a caller's buffer: what xlb sends on its own
//! (probes, announcements) and what tests and fixtures feed it. No allocation.

use std::net::Ipv6Addr;

use super::{
    ethernet::EthernetRepr,
    icmpv6::NdiscRepr,
    ipv4::{Ipv4Repr, Protocol},
    ipv6::Ipv6Repr,
    ArpRepr, Error, EtherType, EthernetAddress, Result,
};

/// Shortest Ethernet frame without its FCS; shorter frames are padded with zeroes.
pub const MIN_FRAME_LEN: usize = 60;

/// The Ethernet addressing of a frame to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2 {
    /// Source MAC.
    pub src: EthernetAddress,
    /// Destination MAC.
    pub dst: EthernetAddress,
    /// 802.1Q tag control information, if tagged.
    pub vlan_tci: Option<u16>,
}

fn pad(buf: &mut [u8], len: usize) -> Result<usize> {
    let padded = len.max(MIN_FRAME_LEN);
    buf.get_mut(len..padded).ok_or(Error::Truncated)?.fill(0);
    Ok(padded)
}

/// An ARP frame, padded to the Ethernet minimum; returns its length.
pub fn arp(buf: &mut [u8], l2: L2, arp: &ArpRepr) -> Result<usize> {
    let eth = EthernetRepr { src: l2.src, dst: l2.dst, vlan_tci: l2.vlan_tci, ethertype: EtherType::ARP };
    let at = eth.emit(buf)?;
    let n = arp.emit(buf.get_mut(at..).ok_or(Error::Truncated)?)?;
    pad(buf, at + n)
}

/// An IPv6 neighbour-discovery frame (hop limit `hop_limit`, 255 for a valid one) from
/// `src` to `dst`; returns its length.
pub fn ndisc(buf: &mut [u8], l2: L2, src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, nd: &NdiscRepr) -> Result<usize> {
    let eth = EthernetRepr { src: l2.src, dst: l2.dst, vlan_tci: l2.vlan_tci, ethertype: EtherType::IPV6 };
    let at = eth.emit(buf)?;
    let payload_len = u16::try_from(nd.buffer_len()).map_err(|_| Error::Malformed)?;
    let ip = Ipv6Repr { src, dst, next_header: Protocol::ICMPV6, payload_len, hop_limit };
    let at = at + ip.emit(buf.get_mut(at..).ok_or(Error::Truncated)?)?;
    let n = nd.emit(&src, &dst, buf.get_mut(at..).ok_or(Error::Truncated)?)?;
    pad(buf, at + n)
}

/// An IPv4 frame whose payload (`payload` bytes, left zero) follows the header; returns
/// its length.
pub fn ipv4(buf: &mut [u8], l2: L2, ip: &Ipv4Repr) -> Result<usize> {
    let eth = EthernetRepr { src: l2.src, dst: l2.dst, vlan_tci: l2.vlan_tci, ethertype: EtherType::IPV4 };
    let at = eth.emit(buf)?;
    let n = ip.emit(buf.get_mut(at..).ok_or(Error::Truncated)?)?;
    let end = at + n + usize::from(ip.payload_len);
    buf.get_mut(at + n..end).ok_or(Error::Truncated)?.fill(0);
    Ok(end)
}

/// An IPv6 frame with a zeroed payload of `ip.payload_len` bytes; returns its length.
pub fn ipv6(buf: &mut [u8], l2: L2, ip: &Ipv6Repr) -> Result<usize> {
    let eth = EthernetRepr { src: l2.src, dst: l2.dst, vlan_tci: l2.vlan_tci, ethertype: EtherType::IPV6 };
    let at = eth.emit(buf)?;
    let n = ip.emit(buf.get_mut(at..).ok_or(Error::Truncated)?)?;
    let end = at + n + usize::from(ip.payload_len);
    buf.get_mut(at + n..end).ok_or(Error::Truncated)?.fill(0);
    Ok(end)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::wire::{parse::Network, parse_frame, ArpOperation};

    #[test]
    fn arp_frame_is_padded_and_parses() -> Result<()> {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let repr = ArpRepr::gratuitous(mac, Ipv4Addr::new(192, 0, 2, 1), ArpOperation::Request);
        let mut buf = [0xffu8; 64];
        let n = arp(&mut buf, L2 { src: mac, dst: EthernetAddress::BROADCAST, vlan_tci: None }, &repr)?;
        assert_eq!(n, 60);
        assert!(buf[42..60].iter().all(|b| *b == 0));
        assert_eq!(parse_frame(&buf[..n])?.network, Network::Arp(repr));
        assert_eq!(arp(&mut buf[..50], L2 { src: mac, dst: mac, vlan_tci: None }, &repr), Err(Error::Truncated));
        Ok(())
    }
}

//! ARP for Ethernet and IPv4 (RFC 826), the only kind xlb answers. Field names follow the
//! RFC: `sha`/`spa` (sender hardware/protocol address), `tha`/`tpa` (target).

use std::net::Ipv4Addr;

use super::{read_u16, write_u16, Error, EtherType, EthernetAddress, Result};

mod field {
    use crate::wire::Field;
    pub(super) const HTYPE: usize = 0;
    pub(super) const PTYPE: usize = 2;
    pub(super) const HLEN: usize = 4;
    pub(super) const PLEN: usize = 5;
    pub(super) const OPER: usize = 6;
    pub(super) const SHA: Field = 8..14;
    pub(super) const SPA: Field = 14..18;
    pub(super) const THA: Field = 18..24;
    pub(super) const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOperation {
    /// Who has `tpa`?
    Request,
    /// `spa` is at `sha`.
    Reply,
    /// Any other operation code (RARP and friends), which xlb ignores.
    Other(u16),
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            o => ArpOperation::Other(o),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(op: ArpOperation) -> u16 {
        match op {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Other(o) => o,
        }
    }
}

/// A view over an ARP packet for Ethernet and IPv4.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer after checking its length and that it is Ethernet/IPv4 ARP
    /// (hardware type 1, protocol 0x0800, lengths 6 and 4); anything else is `Malformed`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if read_u16(b, field::HTYPE) != 1
            || read_u16(b, field::PTYPE) != EtherType::IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Malformed);
        }
        Ok(ArpPacket { buffer })
    }

    /// Operation.
    #[inline]
    pub fn operation(&self) -> ArpOperation {
        read_u16(self.buffer.as_ref(), field::OPER).into()
    }

    /// Sender hardware address.
    #[inline]
    pub fn sha(&self) -> EthernetAddress {
        let b = &self.buffer.as_ref()[field::SHA];
        EthernetAddress([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// Sender protocol address.
    #[inline]
    pub fn spa(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SPA.start)
    }

    /// Target hardware address.
    #[inline]
    pub fn tha(&self) -> EthernetAddress {
        let b = &self.buffer.as_ref()[field::THA];
        EthernetAddress([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// Target protocol address.
    #[inline]
    pub fn tpa(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::TPA.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: ArpOperation) {
        write_u16(self.buffer.as_mut(), field::OPER, op.into());
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sha(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&a.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_spa(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_tha(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&a.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_tpa(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a.octets());
    }
}

/// An ARP packet's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// Operation.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub sha: EthernetAddress,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: EthernetAddress,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl ArpRepr {
    /// Reads a checked packet.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Self {
        ArpRepr { operation: p.operation(), sha: p.sha(), spa: p.spa(), tha: p.tha(), tpa: p.tpa() }
    }

    /// Writes the packet at the start of `buf` and returns its length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        write_u16(buf, field::HTYPE, 1);
        write_u16(buf, field::PTYPE, EtherType::IPV4);
        buf[field::HLEN] = 6;
        buf[field::PLEN] = 4;
        let mut p = ArpPacket { buffer: &mut buf[..PACKET_LEN] };
        p.set_operation(self.operation);
        p.set_sha(self.sha);
        p.set_spa(self.spa);
        p.set_tha(self.tha);
        p.set_tpa(self.tpa);
        Ok(PACKET_LEN)
    }

    /// An RFC 5227 probe: who has `vip`, asked from sender address 0.0.0.0.
    #[inline]
    pub fn probe(mac: EthernetAddress, vip: Ipv4Addr) -> Self {
        ArpRepr {
            operation: ArpOperation::Request,
            sha: mac,
            spa: Ipv4Addr::UNSPECIFIED,
            tha: EthernetAddress::ZERO,
            tpa: vip,
        }
    }

    /// A gratuitous ARP for `vip` at `mac`: a request (sender = target = vip), or the reply
    /// form that some switches and hosts only learn from.
    #[inline]
    pub fn gratuitous(mac: EthernetAddress, vip: Ipv4Addr, operation: ArpOperation) -> Self {
        let tha = match operation {
            ArpOperation::Reply => EthernetAddress::BROADCAST,
            _ => EthernetAddress::ZERO,
        };
        ArpRepr { operation, sha: mac, spa: vip, tha, tpa: vip }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 10.0.0.100? Tell 10.0.0.1 (from 02:00:00:00:00:01).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, 0, 0, 0, 0, 0,
        0, 10, 0, 0, 100,
    ];

    #[test]
    fn parses_request() -> Result<()> {
        let p = ArpPacket::new_checked(&REQUEST[..])?;
        let r = ArpRepr::parse(&p);
        assert_eq!(r.operation, ArpOperation::Request);
        assert_eq!(r.sha, EthernetAddress([2, 0, 0, 0, 0, 1]));
        assert_eq!(r.spa, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(r.tha, EthernetAddress::ZERO);
        assert_eq!(r.tpa, Ipv4Addr::new(10, 0, 0, 100));
        Ok(())
    }

    #[test]
    fn emit_matches_fixture() -> Result<()> {
        let r = ArpRepr {
            operation: ArpOperation::Request,
            sha: EthernetAddress([2, 0, 0, 0, 0, 1]),
            spa: Ipv4Addr::new(10, 0, 0, 1),
            tha: EthernetAddress::ZERO,
            tpa: Ipv4Addr::new(10, 0, 0, 100),
        };
        let mut buf = [0xeeu8; 30];
        assert_eq!(r.emit(&mut buf)?, 28);
        assert_eq!(&buf[..28], &REQUEST[..]);
        Ok(())
    }

    #[test]
    fn rejects_short_and_foreign() {
        assert_eq!(ArpPacket::new_checked(&REQUEST[..27]).err(), Some(Error::Truncated));
        let mut ipx = REQUEST;
        ipx[3] = 0x37;
        assert_eq!(ArpPacket::new_checked(&ipx[..]).err(), Some(Error::Malformed));
        let mut long_hw = REQUEST;
        long_hw[4] = 8;
        assert_eq!(ArpPacket::new_checked(&long_hw[..]).err(), Some(Error::Malformed));
    }

    #[test]
    fn probe_and_gratuitous_forms() {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        let vip = Ipv4Addr::new(10, 0, 0, 100);
        let p = ArpRepr::probe(mac, vip);
        assert_eq!((p.spa, p.tpa, p.tha), (Ipv4Addr::UNSPECIFIED, vip, EthernetAddress::ZERO));
        let g = ArpRepr::gratuitous(mac, vip, ArpOperation::Reply);
        assert_eq!((g.spa, g.tpa, g.sha, g.operation), (vip, vip, mac, ArpOperation::Reply));
    }
}

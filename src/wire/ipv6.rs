//! IPv6 fixed headers (RFC 8200). Extension headers are not walked here: xlb's datapath
//! looks at the next-header field and treats anything it does not know as opaque.

use std::net::Ipv6Addr;

use super::{read_u16, write_u16, Error, Result};

mod field {
    pub(super) const VER_TC_FLOW: usize = 0;
    pub(super) const LENGTH: usize = 4;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: usize = 8;
    pub(super) const DST: usize = 24;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// A view over an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer after checking the version and that it holds the payload length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let p = Ipv6Packet { buffer };
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        if p.buffer.as_ref().len() < HEADER_LEN + usize::from(p.payload_len()) {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Version field (6 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Payload length.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), field::SRC)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), field::DST)
    }

    /// The payload, up to the payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: &Ipv6Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: &Ipv6Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 16].copy_from_slice(&a.octets());
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// An IPv6 fixed header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// Writes the header and returns its length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let b = &mut buf[..HEADER_LEN];
        b[..4].copy_from_slice(&[0x60, 0, 0, 0]);
        write_u16(b, field::LENGTH, self.payload_len);
        b[field::NXT_HDR] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC..field::SRC + 16].copy_from_slice(&self.src.octets());
        b[field::DST..field::DST + 16].copy_from_slice(&self.dst.octets());
        Ok(HEADER_LEN)
    }
}

/// The solicited-node multicast address of `addr` (RFC 4291 section 2.7.1).
pub fn solicited_node(addr: &Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> [u8; 44] {
        let mut b = [0u8; 44];
        b[0] = 0x60;
        b[5] = 4; // payload length
        b[6] = 17; // UDP
        b[7] = 64;
        b[8] = 0xfd;
        b[23] = 1; // fd00::1
        b[24] = 0xfd;
        b[39] = 0x64; // fd00::64
        b[40..44].copy_from_slice(&[1, 2, 3, 4]);
        b
    }

    #[test]
    fn parses_fixture() -> Result<()> {
        let b = fixture();
        let p = Ipv6Packet::new_checked(&b[..])?;
        assert_eq!(p.payload_len(), 4);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "fd00::1".parse::<Ipv6Addr>().map_err(|_| Error::Malformed)?);
        assert_eq!(p.dst_addr(), "fd00::64".parse::<Ipv6Addr>().map_err(|_| Error::Malformed)?);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        Ok(())
    }

    #[test]
    fn emit_matches_fixture() -> Result<()> {
        let b = fixture();
        let p = Ipv6Packet::new_checked(&b[..])?;
        let r = Ipv6Repr { src: p.src_addr(), dst: p.dst_addr(), next_header: 17, payload_len: 4, hop_limit: 64 };
        let mut out = [0u8; 40];
        r.emit(&mut out)?;
        assert_eq!(&out[..], &b[..40]);
        Ok(())
    }

    #[test]
    fn rejects_bad_headers() {
        let b = fixture();
        assert_eq!(Ipv6Packet::new_checked(&b[..39]).err(), Some(Error::Truncated));
        assert_eq!(Ipv6Packet::new_checked(&b[..43]).err(), Some(Error::Truncated));
        let mut v4 = b;
        v4[0] = 0x40;
        assert_eq!(Ipv6Packet::new_checked(&v4[..]).err(), Some(Error::Malformed));
    }

    #[test]
    fn solicited_node_address() {
        let a = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x12, 0x3456);
        assert_eq!(solicited_node(&a), Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff12, 0x3456));
    }
}

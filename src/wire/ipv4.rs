//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use super::{checksum, read_u16, write_u16, Error, Result};

mod field {
    pub(super) const VER_IHL: usize = 0;
    pub(super) const TOS: usize = 1;
    pub(super) const LENGTH: usize = 2;
    pub(super) const IDENT: usize = 4;
    pub(super) const FLG_OFF: usize = 6;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: usize = 10;
    pub(super) const SRC: usize = 12;
    pub(super) const DST: usize = 16;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// IP protocol numbers xlb knows.
pub struct Protocol;

impl Protocol {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// A view over an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer after checking the version, that the header length is at least 20 and
    /// within the total length, and that the buffer holds the total length (bytes past it,
    /// Ethernet padding, are allowed and ignored by [`payload`](Self::payload)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let p = Ipv4Packet { buffer };
        if p.version() != 4 || p.header_len() < HEADER_LEN || usize::from(p.total_len()) < p.header_len() {
            return Err(Error::Malformed);
        }
        if p.buffer.as_ref().len() < usize::from(p.total_len()) {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Version field (4 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN byte.
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Total length, header included.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & 0x4000 != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) << 3
    }

    /// Part of a fragmented datagram (first fragment included).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[field::SRC], b[field::SRC + 1], b[field::SRC + 2], b[field::SRC + 3])
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[field::DST], b[field::DST + 1], b[field::DST + 2], b[field::DST + 3])
    }

    /// Whether the header checksum is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }

    /// The payload, up to the total length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the TTL (the checksum is the caller's to update).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the header checksum.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address (the checksum is the caller's to update).
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&a.octets());
    }

    /// Sets the destination address (the checksum is the caller's to update).
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&a.octets());
    }

    /// Sets the header length in bytes (a multiple of 4, 20 to 60; the buffer must hold it),
    /// for a header with options (the checksum is the caller's to update).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = self.buffer.as_mut();
        b[field::VER_IHL] = (b[field::VER_IHL] & 0xf0) | (u8::try_from(len / 4).unwrap_or(5) & 0x0f);
    }

    /// Sets the total length (the checksum is the caller's to update).
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the more-fragments flag and the fragment offset in bytes (a multiple of 8),
    /// keeping don't-fragment (the checksum is the caller's to update).
    #[inline]
    pub fn set_frag(&mut self, more: bool, offset: u16) {
        let b = self.buffer.as_mut();
        let v = (read_u16(b, field::FLG_OFF) & 0x4000) | if more { 0x2000 } else { 0 } | ((offset >> 3) & 0x1fff);
        write_u16(b, field::FLG_OFF, v);
    }

    /// The options between the fixed header and the header length, writable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Recomputes the header checksum from scratch (for packets xlb builds).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let len = self.header_len();
        let c = checksum::checksum(&self.buffer.as_ref()[..len]);
        self.set_checksum(c);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[start..end]
    }
}

/// An IPv4 header to emit (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Payload length.
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
}

impl Ipv4Repr {
    /// Writes the header (DF set, checksum filled) and returns its length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let total = self.payload_len.checked_add(20).ok_or(Error::Malformed)?;
        let b = &mut buf[..HEADER_LEN];
        b[field::VER_IHL] = 0x45;
        b[field::TOS] = 0;
        write_u16(b, field::LENGTH, total);
        write_u16(b, field::IDENT, 0);
        write_u16(b, field::FLG_OFF, 0x4000);
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        b[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        b[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        write_u16(b, field::CHECKSUM, 0);
        let c = checksum::checksum(b);
        write_u16(b, field::CHECKSUM, c);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ICMP echo header from 10.0.0.1 to 10.0.0.100, TTL 64, with 4 bytes of payload and
    // two bytes of Ethernet padding after it.
    const PACKET: [u8; 26] = [
        0x45, 0x00, 0x00, 0x18, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0x26, 0x81, 10, 0, 0, 1, 10, 0, 0, 100, 0xde, 0xad,
        0xbe, 0xef, 0x00, 0x00,
    ];

    #[test]
    fn parses_fixture() -> Result<()> {
        let p = Ipv4Packet::new_checked(&PACKET[..])?;
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), Protocol::ICMP);
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 100));
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        Ok(())
    }

    #[test]
    fn emit_matches_fixture() -> Result<()> {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 100),
            protocol: Protocol::ICMP,
            payload_len: 4,
            ttl: 64,
        };
        let mut buf = [0u8; 20];
        r.emit(&mut buf)?;
        assert_eq!(&buf[..], &PACKET[..20]);
        Ok(())
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(Ipv4Packet::new_checked(&PACKET[..19]).err(), Some(Error::Truncated));
        let mut v6 = PACKET;
        v6[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&v6[..]).err(), Some(Error::Malformed));
        let mut short_ihl = PACKET;
        short_ihl[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&short_ihl[..]).err(), Some(Error::Malformed));
        let mut long_total = PACKET;
        long_total[3] = 0x40;
        assert_eq!(Ipv4Packet::new_checked(&long_total[..]).err(), Some(Error::Truncated));
        let mut ihl_past_total = PACKET;
        ihl_past_total[0] = 0x4f;
        assert_eq!(Ipv4Packet::new_checked(&ihl_past_total[..]).err(), Some(Error::Malformed));
    }

    #[test]
    fn fragments_are_recognised() -> Result<()> {
        let mut frag = PACKET;
        frag[6] = 0x00;
        frag[7] = 0x02; // offset 2 * 8 bytes
        let p = Ipv4Packet::new_checked(&frag[..])?;
        assert!(p.is_fragment());
        assert_eq!(p.frag_offset(), 16);
        Ok(())
    }

    #[test]
    fn builder_setters_write_options_and_fragments() -> Result<()> {
        let mut b = [0u8; 32];
        let ip = Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: 6,
            payload_len: 12,
            ttl: 64,
        };
        ip.emit(&mut b)?;
        let mut p = Ipv4Packet::new_checked(&mut b[..])?;
        p.set_header_len(24);
        p.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        p.set_frag(true, 128);
        p.set_total_len(30);
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&b[..])?;
        assert_eq!((p.header_len(), p.total_len(), p.payload().len()), (24, 30, 6));
        assert_eq!((p.dont_frag(), p.more_frags(), p.frag_offset()), (true, true, 128));
        assert!(p.verify_checksum());
        assert_eq!(&b[20..24], &[1, 1, 1, 0]);
        Ok(())
    }
}

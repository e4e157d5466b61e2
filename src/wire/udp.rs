//! UDP headers (RFC 768), and a [`UdpRepr`] for the datagrams tests and fixtures build.

use super::{checksum, read_u16, write_u16, Error, Result};

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const LENGTH: usize = 4;
    pub(super) const CHECKSUM: usize = 6;
}

/// Length of the header.
pub const HEADER_LEN: usize = 8;

/// A view over a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer whose length the caller has checked (for [`UdpRepr::emit`]).
    fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer after checking that the length field is at least 8 and within it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let p = UdpPacket { buffer };
        if usize::from(p.len()) < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if p.buffer.as_ref().len() < usize::from(p.len()) {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field: header and payload.
    #[inline]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True when the datagram carries no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) == HEADER_LEN
    }

    /// Checksum as stored (0: none, IPv4 only).
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field (header and payload).
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes the checksum from scratch over the datagram (up to the length field) and
    /// `pseudo`, the pseudo-header's running sum; a result of 0 is sent as 0xffff (0 means
    /// "no checksum").
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let len = usize::from(self.len());
        let c = match checksum::finish(checksum::sum(pseudo, &self.buffer.as_ref()[..len])) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }
}

/// A UDP header: what tests and fixtures build datagrams from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length (the length field is 8 more).
    pub payload_len: u16,
}

impl UdpRepr {
    /// Reads a checked datagram's header.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> Self {
        UdpRepr { src_port: p.src_port(), dst_port: p.dst_port(), payload_len: p.len().saturating_sub(8) }
    }

    /// Length of the header it writes.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header at the start of `buf` with no checksum (0; fill it with
    /// [`UdpPacket::fill_checksum`] once the payload is in place); returns its length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.payload_len.checked_add(8).ok_or(Error::Malformed)?;
        let mut p = UdpPacket::new_unchecked(buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len);
        p.set_checksum(0);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DGRAM: [u8; 12] = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0b, 0x00, 0x00, b'a', b'b', b'c', 0x00];

    #[test]
    fn parses_fixture() -> Result<()> {
        let p = UdpPacket::new_checked(&DGRAM[..])?;
        assert_eq!((p.src_port(), p.dst_port(), p.len(), p.checksum()), (12345, 53, 11, 0));
        assert_eq!(p.payload(), b"abc");
        Ok(())
    }

    #[test]
    fn rejects_bad_lengths() {
        assert_eq!(UdpPacket::new_checked(&DGRAM[..7]).err(), Some(Error::Truncated));
        assert_eq!(UdpPacket::new_checked(&DGRAM[..10]).err(), Some(Error::Truncated));
        let mut tiny = DGRAM;
        tiny[5] = 7;
        assert_eq!(UdpPacket::new_checked(&tiny[..]).err(), Some(Error::Malformed));
    }

    #[test]
    fn port_setters() -> Result<()> {
        let mut b = DGRAM;
        let mut p = UdpPacket::new_checked(&mut b[..])?;
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_checksum(0xabcd);
        assert_eq!(&b[..8], &[0, 1, 0, 2, 0, 11, 0xab, 0xcd]);
        Ok(())
    }

    #[test]
    fn repr_emits_what_it_parses() -> Result<()> {
        let r = UdpRepr { src_port: 12345, dst_port: 53, payload_len: 3 };
        let mut b = DGRAM;
        b[..8].fill(0xff);
        assert_eq!(r.emit(&mut b)?, 8);
        assert_eq!(b, DGRAM);
        let mut p = UdpPacket::new_checked(&mut b[..])?;
        assert_eq!(UdpRepr::parse(&p), r);
        p.fill_checksum(0);
        assert_eq!(checksum::finish(checksum::sum(0, &b[..11])), 0);
        assert_eq!(r.emit(&mut [0u8; 7]), Err(Error::Truncated));
        Ok(())
    }
}

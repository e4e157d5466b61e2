//! UDP headers (RFC 768).

use super::{read_u16, write_u16, Error, Result};

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
    /// Wraps a buffer after checking that the length field is at least 8 and within it.
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
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field: header and payload.
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True when the datagram carries no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) == HEADER_LEN
    }

    /// Checksum as stored (0: none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the checksum.
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
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
}

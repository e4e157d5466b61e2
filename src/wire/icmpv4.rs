//! ICMPv4 (RFC 792): type, code, checksum, and the echo and quoted-datagram bodies.

use super::{checksum, read_u16, write_u16, Error, Result};

/// Length of the fixed part: type, code, checksum and the 4-byte rest-of-header.
pub const HEADER_LEN: usize = 8;

/// ICMPv4 message types xlb looks at.
pub struct Icmpv4Type;

impl Icmpv4Type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (code 4: fragmentation needed).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
}

/// A view over an ICMPv4 message.
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer after checking that the fixed part fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Icmpv4Packet { buffer })
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }

    /// Echo identifier (echo messages).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 4)
    }

    /// Echo sequence number (echo messages).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 6)
    }

    /// Next-hop MTU of a fragmentation-needed message (RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 6)
    }

    /// Whether the message is an error that quotes the offending datagram.
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(self.msg_type(), Icmpv4Type::DEST_UNREACHABLE | Icmpv4Type::TIME_EXCEEDED | 4 | 5 | 12)
    }

    /// The body after the fixed part (echo data, or the quoted datagram of an error).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the checksum over the whole message is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), 2, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Echo request, id 0x1234, seq 1, payload "hi", with a valid checksum.
    fn echo() -> [u8; 10] {
        let mut b = [8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01, b'h', b'i'];
        let c = checksum::checksum(&b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn parses_echo() -> Result<()> {
        let b = echo();
        let p = Icmpv4Packet::new_checked(&b[..])?;
        assert_eq!((p.msg_type(), p.msg_code()), (Icmpv4Type::ECHO_REQUEST, 0));
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 1));
        assert_eq!(p.data(), b"hi");
        assert!(p.verify_checksum());
        assert!(!p.is_error());
        Ok(())
    }

    #[test]
    fn frag_needed_is_an_error_with_mtu() -> Result<()> {
        let b = [3u8, 4, 0, 0, 0, 0, 0x05, 0xdc];
        let p = Icmpv4Packet::new_checked(&b[..])?;
        assert!(p.is_error());
        assert_eq!(p.next_hop_mtu(), 1500);
        assert_eq!(Icmpv4Packet::new_checked(&b[..7]).err(), Some(Error::Truncated));
        Ok(())
    }
}

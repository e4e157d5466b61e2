//! TCP headers (RFC 9293): ports, sequence numbers, flags and the checksum.

use super::{read_u16, read_u32, write_u16, Error, Result};

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const SEQ: usize = 4;
    pub(super) const ACK: usize = 8;
    pub(super) const OFF: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: usize = 14;
    pub(super) const CHECKSUM: usize = 16;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// TCP flag bits.
pub struct TcpFlags;

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// A view over a TCP segment.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer after checking that the header, options included, fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let p = TcpPacket { buffer };
        if p.header_len() < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if p.buffer.as_ref().len() < p.header_len() {
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

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgement number.
    pub fn ack(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF] >> 4) * 4
    }

    /// Flag bits (see [`TcpFlags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Receive window.
    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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
    use crate::wire::checksum;
    use std::net::Ipv4Addr;

    // SYN 10.0.0.1:40000 -> 10.0.0.100:80, seq 1, window 64240, with one MSS option.
    fn fixture() -> [u8; 24] {
        let mut b = [
            0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, 0x02, 0x04, 0x05, 0xb4,
        ];
        let acc = checksum::pseudo_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 100), 6, 24);
        let c = checksum::finish(checksum::sum(acc, &b));
        b[16..18].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn parses_fixture() -> Result<()> {
        let b = fixture();
        let p = TcpPacket::new_checked(&b[..])?;
        assert_eq!((p.src_port(), p.dst_port()), (40000, 80));
        assert_eq!((p.seq(), p.ack()), (1, 0));
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), TcpFlags::SYN);
        assert_eq!(p.window(), 64240);
        assert!(p.payload().is_empty());
        let acc = checksum::pseudo_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 100), 6, 24);
        assert_eq!(checksum::finish(checksum::sum(acc, &b)), 0);
        Ok(())
    }

    #[test]
    fn rejects_bad_offsets() {
        let b = fixture();
        assert_eq!(TcpPacket::new_checked(&b[..19]).err(), Some(Error::Truncated));
        assert_eq!(TcpPacket::new_checked(&b[..22]).err(), Some(Error::Truncated));
        let mut small = b;
        small[12] = 0x40;
        assert_eq!(TcpPacket::new_checked(&small[..]).err(), Some(Error::Malformed));
    }

    #[test]
    fn port_rewrite_with_incremental_checksum() -> Result<()> {
        let mut b = fixture();
        let mut p = TcpPacket::new_checked(&mut b[..])?;
        let old = p.dst_port();
        p.set_dst_port(8080);
        let c = checksum::update_u16(p.checksum(), old, 8080);
        p.set_checksum(c);
        let acc = checksum::pseudo_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 100), 6, 24);
        assert_eq!(checksum::finish(checksum::sum(acc, &b)), 0);
        Ok(())
    }
}

//! TCP headers (RFC 9293): ports, sequence numbers, flags and the checksum; a [`TcpRepr`]
//! for the segments tests and fixtures build.

use super::{checksum, read_u16, read_u32, write_u16, Error, Result};

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const SEQ: usize = 4;
    pub(super) const ACK: usize = 8;
    pub(super) const OFF: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: usize = 14;
    pub(super) const CHECKSUM: usize = 16;
    pub(super) const URGENT: usize = 18;
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
    /// Wraps a buffer whose length the caller has checked (for [`TcpRepr::emit`]).
    fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer after checking that the header, options included, fits.
    #[inline]
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
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgement number.
    #[inline]
    pub fn ack(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF] >> 4) * 4
    }

    /// Flag bits (see [`TcpFlags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Receive window.
    #[inline]
    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ..field::SEQ + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the acknowledgement number.
    #[inline]
    pub fn set_ack(&mut self, v: u32) {
        self.buffer.as_mut()[field::ACK..field::ACK + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the header length in bytes (a multiple of 4, 20 to 60); clears the reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::OFF] = u8::try_from(len / 4).unwrap_or(5) << 4;
    }

    /// Sets the flag bits (see [`TcpFlags`]).
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the receive window.
    #[inline]
    pub fn set_window(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, v);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes the checksum from scratch over the whole buffer (header and payload: the
    /// view must end where the segment ends) and `pseudo`, the pseudo-header's running sum
    /// ([`checksum::pseudo_v4`], [`checksum::pseudo_v6`]).
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(pseudo, self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

/// A TCP header without options: what tests and fixtures build segments from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flag bits (see [`TcpFlags`]).
    pub flags: u8,
    /// Receive window.
    pub window: u16,
}

impl TcpRepr {
    /// Reads a checked segment's header (options are skipped).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &TcpPacket<T>) -> Self {
        TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq(),
            ack: p.ack(),
            flags: p.flags(),
            window: p.window(),
        }
    }

    /// Length of the header it writes.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header at the start of `buf` with a zero checksum (fill it with
    /// [`TcpPacket::fill_checksum`] once the payload is in place); returns its length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let mut p = TcpPacket::new_unchecked(buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq(self.seq);
        p.set_ack(self.ack);
        p.set_header_len(HEADER_LEN);
        p.set_flags(self.flags);
        p.set_window(self.window);
        p.set_checksum(0);
        p.set_urgent(0);
        Ok(HEADER_LEN)
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

    #[test]
    fn repr_emits_what_it_parses() -> Result<()> {
        let r = TcpRepr { src_port: 40000, dst_port: 80, seq: 1, ack: 0, flags: TcpFlags::SYN, window: 64240 };
        let mut b = [0xffu8; 20];
        assert_eq!(r.emit(&mut b)?, 20);
        assert_eq!(b, [0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
        let mut p = TcpPacket::new_checked(&mut b[..])?;
        assert_eq!(TcpRepr::parse(&p), r);
        let acc = checksum::pseudo_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 100), 6, 20);
        p.fill_checksum(acc);
        assert_eq!(checksum::finish(checksum::sum(acc, &b)), 0);
        assert_eq!(r.emit(&mut [0u8; 19]), Err(Error::Truncated));
        Ok(())
    }
}

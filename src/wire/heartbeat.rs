//! Heartbeat frames between xlb nodes: the payload after an Ethernet header of EtherType
//! [`ETHERTYPE`] (0x88B5, IEEE 802 local experimental). Big-endian:
//!
//! ```text
//!  0  magic "XLBH"        4
//!  4  version (1)         1
//!  5  flags               1
//!  6  name length N       1   1..=64
//!  7  signed              1   1: a tag follows the name
//!  8  cluster             4
//! 12  incarnation         8
//! 20  sequence            8
//! 28  members digest      8
//! 36  hears               8
//! 44  node name           N   UTF-8
//! 44+N tag                32  (signed only)
//! ```
//!
//! What the fields mean, and the tag's key and algorithm, are `lb::heartbeat`'s.

use super::{read_u32, read_u64, Error, Result};

mod field {
    use crate::wire::Field;

    pub(super) const MAGIC: Field = 0..4;
    pub(super) const VERSION: usize = 4;
    pub(super) const FLAGS: usize = 5;
    pub(super) const NAME_LEN: usize = 6;
    pub(super) const SIGNED: usize = 7;
    pub(super) const CLUSTER: usize = 8;
    pub(super) const INCARNATION: Field = 12..20;
    pub(super) const SEQ: Field = 20..28;
    pub(super) const DIGEST: Field = 28..36;
    pub(super) const HEARS: Field = 36..44;
    pub(super) const NAME: usize = 44;
}

/// The heartbeat EtherType.
pub const ETHERTYPE: u16 = 0x88b5;
/// The magic the payload starts with.
pub const MAGIC: [u8; 4] = *b"XLBH";
/// The format's version.
pub const VERSION: u8 = 1;
/// Length of the fixed part, before the name.
pub const HEADER_LEN: usize = field::NAME;
/// Longest node name carried.
pub const MAX_NAME: usize = 64;
/// Length of the tag of a signed heartbeat (HMAC-SHA256).
pub const TAG_LEN: usize = 32;

/// A view over a heartbeat payload.
#[derive(Debug, Clone)]
pub struct HeartbeatPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HeartbeatPacket<T> {
    /// Wraps a buffer without checking it: only for [`Repr::emit`], which checks the length
    /// first.
    fn new_unchecked(buffer: T) -> Self {
        HeartbeatPacket { buffer }
    }

    /// Wraps a buffer after checking that the fixed part and the name fit, and that the name
    /// length is 1 to [`MAX_NAME`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the lengths [`HeartbeatPacket::new_checked`] checks.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let n = usize::from(b[field::NAME_LEN]);
        if n == 0 || n > MAX_NAME {
            return Err(Error::Malformed);
        }
        if b.len() < HEADER_LEN + n {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The magic bytes.
    pub fn magic(&self) -> [u8; 4] {
        let mut m = [0u8; 4];
        m.copy_from_slice(&self.buffer.as_ref()[field::MAGIC]);
        m
    }

    /// Format version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// Flag bits.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Length of the name in bytes.
    pub fn name_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::NAME_LEN])
    }

    /// Whether the sender says a tag follows the name.
    pub fn signed(&self) -> bool {
        self.buffer.as_ref()[field::SIGNED] == 1
    }

    /// Hash of the cluster name.
    pub fn cluster(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::CLUSTER)
    }

    /// Sender's incarnation.
    pub fn incarnation(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::INCARNATION.start)
    }

    /// Sequence number.
    pub fn seq(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::SEQ.start)
    }

    /// Hash of the sender's member list.
    pub fn digest(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::DIGEST.start)
    }

    /// Which members the sender hears.
    pub fn hears(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::HEARS.start)
    }

    /// The name's bytes (not checked to be UTF-8).
    pub fn name(&self) -> &[u8] {
        &self.buffer.as_ref()[field::NAME..field::NAME + self.name_len()]
    }

    /// Length of what a tag covers after the Ethernet source MAC's start: the fixed part
    /// and the name.
    pub fn signed_len(&self) -> usize {
        HEADER_LEN + self.name_len()
    }

    /// The tag after the name, if the buffer holds one whole.
    pub fn tag(&self) -> Option<&[u8]> {
        let at = self.signed_len();
        self.buffer.as_ref().get(at..at + TAG_LEN)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HeartbeatPacket<T> {
    /// Sets the magic bytes.
    pub fn set_magic(&mut self, m: [u8; 4]) {
        self.buffer.as_mut()[field::MAGIC].copy_from_slice(&m);
    }

    /// Sets the version.
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }

    /// Sets the flag bits.
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the signed byte.
    pub fn set_signed(&mut self, signed: bool) {
        self.buffer.as_mut()[field::SIGNED] = u8::from(signed);
    }

    /// Sets the cluster hash.
    pub fn set_cluster(&mut self, v: u32) {
        self.buffer.as_mut()[field::CLUSTER..field::CLUSTER + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the incarnation.
    pub fn set_incarnation(&mut self, v: u64) {
        self.buffer.as_mut()[field::INCARNATION].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the sequence number.
    pub fn set_seq(&mut self, v: u64) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the members digest.
    pub fn set_digest(&mut self, v: u64) {
        self.buffer.as_mut()[field::DIGEST].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the hears bitmap.
    pub fn set_hears(&mut self, v: u64) {
        self.buffer.as_mut()[field::HEARS].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the name and its length (the buffer must hold it; at most [`MAX_NAME`] bytes).
    fn set_name(&mut self, name: &[u8]) {
        let b = self.buffer.as_mut();
        b[field::NAME_LEN] = u8::try_from(name.len()).unwrap_or(0);
        b[field::NAME..field::NAME + name.len()].copy_from_slice(name);
    }
}

/// A heartbeat's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    /// Flag bits.
    pub flags: u8,
    /// A tag follows the name (written by the signer, not by [`Repr::emit`]).
    pub signed: bool,
    /// Cluster hash.
    pub cluster: u32,
    /// Incarnation.
    pub incarnation: u64,
    /// Sequence number.
    pub seq: u64,
    /// Hash of the sender's member list.
    pub digest: u64,
    /// Which members the sender hears.
    pub hears: u64,
    /// Node name, 1 to [`MAX_NAME`] bytes.
    pub name: &'a str,
}

impl<'a> Repr<'a> {
    /// Reads a checked packet: `Malformed` for another magic or version, or a name that is
    /// not UTF-8.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &HeartbeatPacket<&'a T>) -> Result<Self> {
        if p.magic() != MAGIC || p.version() != VERSION {
            return Err(Error::Malformed);
        }
        let raw = <T as AsRef<[u8]>>::as_ref(p.buffer);
        let name = core::str::from_utf8(&raw[field::NAME..field::NAME + p.name_len()]).map_err(|_| Error::Malformed)?;
        Ok(Repr {
            flags: p.flags(),
            signed: p.signed(),
            cluster: p.cluster(),
            incarnation: p.incarnation(),
            seq: p.seq(),
            digest: p.digest(),
            hears: p.hears(),
            name,
        })
    }

    /// Length of the fixed part and the name (the tag, if any, follows).
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.name.len()
    }

    /// Writes the fixed part and the name at the start of `buf`; returns their length. A
    /// name over [`MAX_NAME`] bytes is `Malformed`; an empty one is written as it is (and
    /// refused by every receiver).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if self.name.len() > MAX_NAME {
            return Err(Error::Malformed);
        }
        let len = self.buffer_len();
        let mut p = HeartbeatPacket::new_unchecked(buf.get_mut(..len).ok_or(Error::Truncated)?);
        p.set_magic(MAGIC);
        p.set_version(VERSION);
        p.set_flags(self.flags);
        p.set_name(self.name.as_bytes());
        p.set_signed(self.signed);
        p.set_cluster(self.cluster);
        p.set_incarnation(self.incarnation);
        p.set_seq(self.seq);
        p.set_digest(self.digest);
        p.set_hears(self.hears);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPR: Repr<'static> = Repr {
        flags: 3,
        signed: false,
        cluster: 0x0102_0304,
        incarnation: 5,
        seq: 6,
        digest: 7,
        hears: 0b101,
        name: "node-a",
    };

    #[test]
    fn emit_then_parse_round_trips() -> Result<()> {
        let mut b = [0u8; 64];
        let n = REPR.emit(&mut b)?;
        assert_eq!(n, 50);
        assert_eq!(&b[..8], b"XLBH\x01\x03\x06\x00");
        assert_eq!(&b[8..12], &[1, 2, 3, 4]);
        assert_eq!(&b[44..50], b"node-a");
        let p = HeartbeatPacket::new_checked(&b[..n])?;
        assert_eq!(Repr::parse(&p)?, REPR);
        assert_eq!(p.tag(), None);
        assert_eq!(HeartbeatPacket::new_checked(&b[..]).map(|p| p.tag().map(<[u8]>::len))?, None);
        Ok(())
    }

    #[test]
    fn refuses_bad_lengths_magic_and_names() -> Result<()> {
        let mut b = [0u8; 64];
        let n = REPR.emit(&mut b)?;
        assert_eq!(HeartbeatPacket::new_checked(&b[..43]).err(), Some(Error::Truncated));
        assert_eq!(HeartbeatPacket::new_checked(&b[..n - 1]).err(), Some(Error::Truncated));
        for (at, v, want) in [(6, 0, Error::Malformed), (6, 65, Error::Malformed)] {
            let mut bad = b;
            bad[at] = v;
            assert_eq!(HeartbeatPacket::new_checked(&bad[..]).err(), Some(want));
        }
        for at in [0, 4, 44] {
            let mut bad = b;
            bad[at] = 0xff;
            assert_eq!(Repr::parse(&HeartbeatPacket::new_checked(&bad[..n])?).err(), Some(Error::Malformed));
        }
        let long = "n".repeat(MAX_NAME + 1);
        assert_eq!(Repr { name: &long, ..REPR }.emit(&mut [0u8; 128]), Err(Error::Malformed));
        assert_eq!(REPR.emit(&mut b[..49]), Err(Error::Truncated));
        Ok(())
    }
}

//! Ethernet II frames with up to two VLAN tags (802.1ad outer, 802.1Q inner).

use core::fmt;

use super::{read_u16, write_u16, Error, Result};

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);
    /// 00:00:00:00:00:00, the unknown target hardware address of ARP requests.
    pub const ZERO: EthernetAddress = EthernetAddress([0; 6]);

    /// The address in a 6-byte slice; `None` if the slice is not 6 bytes long.
    #[inline]
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(b).ok().map(EthernetAddress)
    }

    /// Group bit set (broadcast included).
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// A unicast address other than all zeroes: one a host may own.
    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && *self != Self::ZERO
    }

    /// The 33:33:xx:xx:xx:xx multicast MAC of an IPv6 multicast address (RFC 2464).
    #[inline]
    pub fn ipv6_multicast(ip: &std::net::Ipv6Addr) -> Self {
        let o = ip.octets();
        EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl core::str::FromStr for EthernetAddress {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or(Error::Malformed)?;
            if part.len() != 2 {
                return Err(Error::Malformed);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| Error::Malformed)?;
        }
        if parts.next().is_some() {
            return Err(Error::Malformed);
        }
        Ok(EthernetAddress(out))
    }
}

/// EtherType values xlb knows.
pub struct EtherType;

impl EtherType {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer).
    pub const QINQ: u16 = 0x88a8;
}

mod field {
    use crate::wire::Field;
    pub(super) const DST: Field = 0..6;
    pub(super) const SRC: Field = 6..12;
    pub(super) const TYPE: usize = 12;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;
/// Most VLAN tags a frame may carry here.
pub const MAX_VLAN_TAGS: usize = 2;

/// A view over an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
    tags: u8,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer after checking that the header and every VLAN tag fit. More than two
    /// tags is `Malformed`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let mut tags = 0u8;
        let mut at = field::TYPE;
        loop {
            let ty = read_u16(b, at);
            if ty != EtherType::VLAN && ty != EtherType::QINQ {
                break;
            }
            if usize::from(tags) == MAX_VLAN_TAGS {
                return Err(Error::Malformed);
            }
            tags += 1;
            at += VLAN_TAG_LEN;
            if b.len() < at + 2 {
                return Err(Error::Truncated);
            }
        }
        Ok(EthernetFrame { buffer, tags })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        let b = self.buffer.as_ref();
        EthernetAddress([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// Source MAC.
    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        let b = self.buffer.as_ref();
        EthernetAddress([b[6], b[7], b[8], b[9], b[10], b[11]])
    }

    /// Number of VLAN tags (0 to 2).
    #[inline]
    pub fn vlan_tags(&self) -> usize {
        usize::from(self.tags)
    }

    /// VLAN id of the innermost tag, if tagged.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        if self.tags == 0 {
            return None;
        }
        let at = field::TYPE + VLAN_TAG_LEN * (usize::from(self.tags) - 1) + 2;
        Some(read_u16(self.buffer.as_ref(), at) & 0x0fff)
    }

    /// EtherType of the payload, after any VLAN tags.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), self.header_len() - 2)
    }

    /// Length of the header, tags included.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + VLAN_TAG_LEN * usize::from(self.tags)
    }

    /// The bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    #[inline]
    pub fn set_dst_addr(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.0);
    }

    /// Sets the source MAC.
    #[inline]
    pub fn set_src_addr(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.0);
    }

    /// Sets the EtherType of the payload (after any tags).
    #[inline]
    pub fn set_ethertype(&mut self, ty: u16) {
        let at = self.header_len() - 2;
        write_u16(self.buffer.as_mut(), at, ty);
    }

    /// The bytes after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

/// An Ethernet header to emit (untagged, or with one 802.1Q tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Source MAC.
    pub src: EthernetAddress,
    /// Destination MAC.
    pub dst: EthernetAddress,
    /// 802.1Q tag control information (priority and VLAN id), if tagged.
    pub vlan_tci: Option<u16>,
    /// EtherType of the payload.
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Length of the header this emits.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + if self.vlan_tci.is_some() { VLAN_TAG_LEN } else { 0 }
    }

    /// Writes the header at the start of `buf`; `Truncated` if it does not fit.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.header_len();
        if buf.len() < len {
            return Err(Error::Truncated);
        }
        buf[field::DST].copy_from_slice(&self.dst.0);
        buf[field::SRC].copy_from_slice(&self.src.0);
        if let Some(tci) = self.vlan_tci {
            write_u16(buf, 12, EtherType::VLAN);
            write_u16(buf, 14, tci);
        }
        write_u16(buf, len - 2, self.ethertype);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] =
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0xaa, 0xbb];
    const TAGGED: [u8; 20] =
        [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x81, 0x00, 0x20, 0x64, 0x08, 0x00, 0x45, 0x00];

    #[test]
    fn parses_untagged() -> Result<()> {
        let f = EthernetFrame::new_checked(&UNTAGGED[..])?;
        assert_eq!(f.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(f.src_addr(), EthernetAddress([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
        Ok(())
    }

    #[test]
    fn parses_one_tag() -> Result<()> {
        let f = EthernetFrame::new_checked(&TAGGED[..])?;
        assert_eq!(f.vlan_tags(), 1);
        assert_eq!(f.vlan_id(), Some(100));
        assert_eq!(f.ethertype(), EtherType::IPV4);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0x45, 0x00]);
        Ok(())
    }

    #[test]
    fn rejects_short_and_over_tagged() {
        assert_eq!(EthernetFrame::new_checked(&UNTAGGED[..13]).err(), Some(Error::Truncated));
        assert_eq!(EthernetFrame::new_checked(&TAGGED[..15]).err(), Some(Error::Truncated));
        let mut three = vec![0u8; 12];
        for _ in 0..3 {
            three.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
        }
        three.extend_from_slice(&[0x08, 0x00]);
        assert_eq!(EthernetFrame::new_checked(&three[..]).err(), Some(Error::Malformed));
    }

    #[test]
    fn emit_round_trips() -> Result<()> {
        let repr = EthernetRepr {
            src: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst: EthernetAddress([2, 0, 0, 0, 0, 2]),
            vlan_tci: Some(100),
            ethertype: EtherType::IPV6,
        };
        let mut buf = [0u8; 18];
        assert_eq!(repr.emit(&mut buf), Ok(18));
        let f = EthernetFrame::new_checked(&buf[..])?;
        assert_eq!(
            (f.src_addr(), f.dst_addr(), f.vlan_id(), f.ethertype()),
            (repr.src, repr.dst, Some(100), EtherType::IPV6)
        );
        Ok(())
    }

    #[test]
    fn mac_text_round_trips() -> Result<()> {
        let mac: EthernetAddress = "02:aB:00:00:10:ff".parse()?;
        assert_eq!(mac.to_string(), "02:ab:00:00:10:ff");
        assert!("02:ab:00:00:10".parse::<EthernetAddress>().is_err());
        assert!("02:ab:00:00:10:ff:00".parse::<EthernetAddress>().is_err());
        Ok(())
    }
}

//! ICMPv6 (RFC 4443) and the two neighbour-discovery messages xlb speaks (RFC 4861):
//! neighbour solicitation and advertisement, with their link-layer address options.

use std::net::Ipv6Addr;

use super::{checksum, ipv4::Protocol, read_u16, write_u16, Error, EthernetAddress, Result};

/// Length of the fixed part: type, code, checksum and 4 bytes of message-specific data.
pub const HEADER_LEN: usize = 8;
/// Length of a neighbour solicitation or advertisement before its options.
pub const NDISC_LEN: usize = 24;
/// Length of a link-layer address option for Ethernet.
pub const LLADDR_OPT_LEN: usize = 8;

/// ICMPv6 message types xlb looks at.
pub struct Icmpv6Type;

impl Icmpv6Type {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

/// Neighbour advertisement flag bits (first byte after the checksum).
pub struct NeighborFlags;

impl NeighborFlags {
    /// Sender is a router.
    pub const ROUTER: u8 = 0x80;
    /// Sent in response to a solicitation.
    pub const SOLICITED: u8 = 0x40;
    /// Override an existing cache entry.
    pub const OVERRIDE: u8 = 0x20;
}

const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;

/// A view over an ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer after checking that the fixed part fits, and for neighbour
    /// solicitations and advertisements that the target address does too.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let p = Icmpv6Packet { buffer };
        if p.is_ndisc() && p.buffer.as_ref().len() < NDISC_LEN {
            return Err(Error::Truncated);
        }
        Ok(p)
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

    /// A neighbour solicitation or advertisement.
    #[inline]
    pub fn is_ndisc(&self) -> bool {
        matches!(self.msg_type(), Icmpv6Type::NEIGHBOR_SOLICIT | Icmpv6Type::NEIGHBOR_ADVERT)
    }

    /// Neighbour-advertisement flags (see [`NeighborFlags`]).
    #[inline]
    pub fn neighbor_flags(&self) -> u8 {
        self.buffer.as_ref()[4]
    }

    /// Target address of a neighbour solicitation or advertisement (`::` otherwise).
    #[inline]
    pub fn target_addr(&self) -> Ipv6Addr {
        if !self.is_ndisc() {
            return Ipv6Addr::UNSPECIFIED;
        }
        let mut o = [0u8; 16];
        o.copy_from_slice(&self.buffer.as_ref()[8..24]);
        Ipv6Addr::from(o)
    }

    /// Whether the checksum is right for this source and destination.
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let Ok(len) = u32::try_from(b.len()) else { return false };
        let acc = checksum::pseudo_v6(src, dst, Protocol::ICMPV6, len);
        checksum::finish(checksum::sum(acc, b)) == 0
    }

    /// The body after the fixed part.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), 2, v);
    }
}

/// A neighbour-discovery message xlb reads or builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdiscRepr {
    /// Who has `target`? (`lladdr`: the source link-layer address option.)
    NeighborSolicit {
        /// Address asked for.
        target: Ipv6Addr,
        /// The asker's MAC, absent in duplicate-address detection.
        lladdr: Option<EthernetAddress>,
    },
    /// `target` is at `lladdr` (the target link-layer address option).
    NeighborAdvert {
        /// Flags (see [`NeighborFlags`]).
        flags: u8,
        /// Address advertised.
        target: Ipv6Addr,
        /// MAC it is at.
        lladdr: Option<EthernetAddress>,
    },
}

impl NdiscRepr {
    /// Reads a neighbour solicitation or advertisement. Code must be 0, the target must
    /// not be multicast, and every option must have a non-zero length that fits
    /// (RFC 4861 section 7.1.1); otherwise `Malformed`. Hop limit and checksum are the
    /// caller's to check, with the IPv6 header in hand.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Icmpv6Packet<T>) -> Result<Self> {
        if !p.is_ndisc() || p.msg_code() != 0 || p.target_addr().is_multicast() {
            return Err(Error::Malformed);
        }
        let want = if p.msg_type() == Icmpv6Type::NEIGHBOR_SOLICIT { OPT_SOURCE_LLADDR } else { OPT_TARGET_LLADDR };
        let mut lladdr = None;
        let mut opts = &p.buffer.as_ref()[NDISC_LEN..];
        while !opts.is_empty() {
            if opts.len() < 2 {
                return Err(Error::Malformed);
            }
            let len = usize::from(opts[1]) * 8;
            if len == 0 || len > opts.len() {
                return Err(Error::Malformed);
            }
            if opts[0] == want && len == LLADDR_OPT_LEN {
                lladdr = EthernetAddress::from_bytes(&opts[2..8]);
            }
            opts = &opts[len..];
        }
        let target = p.target_addr();
        Ok(if p.msg_type() == Icmpv6Type::NEIGHBOR_SOLICIT {
            NdiscRepr::NeighborSolicit { target, lladdr }
        } else {
            NdiscRepr::NeighborAdvert { flags: p.neighbor_flags(), target, lladdr }
        })
    }

    /// Length of the message this emits.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        let lladdr = match self {
            NdiscRepr::NeighborSolicit { lladdr, .. } | NdiscRepr::NeighborAdvert { lladdr, .. } => lladdr,
        };
        NDISC_LEN + if lladdr.is_some() { LLADDR_OPT_LEN } else { 0 }
    }

    /// Writes the message, checksum included for `src` → `dst`, and returns its length.
    #[inline]
    pub fn emit(&self, src: &Ipv6Addr, dst: &Ipv6Addr, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(Error::Truncated);
        }
        let b = &mut buf[..len];
        b.fill(0);
        let (ty, flags, target, lladdr, opt) = match *self {
            NdiscRepr::NeighborSolicit { target, lladdr } => {
                (Icmpv6Type::NEIGHBOR_SOLICIT, 0, target, lladdr, OPT_SOURCE_LLADDR)
            }
            NdiscRepr::NeighborAdvert { flags, target, lladdr } => {
                (Icmpv6Type::NEIGHBOR_ADVERT, flags, target, lladdr, OPT_TARGET_LLADDR)
            }
        };
        b[0] = ty;
        b[4] = flags;
        b[8..24].copy_from_slice(&target.octets());
        if let Some(mac) = lladdr {
            b[24] = opt;
            b[25] = 1;
            b[26..32].copy_from_slice(&mac.0);
        }
        let wire_len = u32::try_from(len).map_err(|_| Error::Malformed)?;
        let acc = checksum::pseudo_v6(src, dst, Protocol::ICMPV6, wire_len);
        let c = checksum::finish(checksum::sum(acc, b));
        write_u16(b, 2, c);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const VIP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x64);
    const MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);

    // NS for fd00::64 from fd00::1 (02:00:00:00:00:01) to ff02::1:ff00:64.
    const NS: [u8; 32] =
        [135, 0, 0x7c, 0xd3, 0, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64, 1, 1, 2, 0, 0, 0, 0, 1];

    fn snm() -> Ipv6Addr {
        crate::wire::ipv6::solicited_node(&VIP)
    }

    #[test]
    fn parses_solicitation_fixture() -> Result<()> {
        let p = Icmpv6Packet::new_checked(&NS[..])?;
        assert!(p.verify_checksum(&SRC, &snm()));
        assert_eq!(NdiscRepr::parse(&p)?, NdiscRepr::NeighborSolicit { target: VIP, lladdr: Some(MAC) });
        Ok(())
    }

    #[test]
    fn emit_matches_fixture() -> Result<()> {
        let mut buf = [0u8; 40];
        let n = NdiscRepr::NeighborSolicit { target: VIP, lladdr: Some(MAC) }.emit(&SRC, &snm(), &mut buf)?;
        assert_eq!(&buf[..n], &NS[..]);
        Ok(())
    }

    #[test]
    fn advert_round_trips() -> Result<()> {
        let na = NdiscRepr::NeighborAdvert {
            flags: NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE,
            target: VIP,
            lladdr: Some(MAC),
        };
        let mut buf = [0u8; 32];
        let n = na.emit(&VIP, &SRC, &mut buf)?;
        let p = Icmpv6Packet::new_checked(&buf[..n])?;
        assert!(p.verify_checksum(&VIP, &SRC));
        assert!(!p.verify_checksum(&SRC, &SRC));
        assert_eq!(NdiscRepr::parse(&p)?, na);
        Ok(())
    }

    #[test]
    fn rejects_bad_options_and_targets() -> Result<()> {
        let mut zero_len = NS;
        zero_len[25] = 0;
        assert_eq!(NdiscRepr::parse(&Icmpv6Packet::new_checked(&zero_len[..])?).err(), Some(Error::Malformed));
        let mut long_opt = NS;
        long_opt[25] = 2;
        assert_eq!(NdiscRepr::parse(&Icmpv6Packet::new_checked(&long_opt[..])?).err(), Some(Error::Malformed));
        let mut mcast = NS;
        mcast[8] = 0xff;
        assert_eq!(NdiscRepr::parse(&Icmpv6Packet::new_checked(&mcast[..])?).err(), Some(Error::Malformed));
        assert_eq!(Icmpv6Packet::new_checked(&NS[..23]).err(), Some(Error::Truncated));
        // A DAD solicitation carries no option.
        let dad = Icmpv6Packet::new_checked(&NS[..24])?;
        assert_eq!(NdiscRepr::parse(&dad)?, NdiscRepr::NeighborSolicit { target: VIP, lladdr: None });
        Ok(())
    }
}

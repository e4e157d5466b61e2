//! Typed, zero-copy views over packet bytes: Ethernet (with up to two VLAN tags), ARP, IPv4,
//! IPv6, TCP, UDP, ICMPv4 and ICMPv6 with neighbour discovery, and xlb's own heartbeat.
//!
//! Every view follows one contract: `new_checked` validates the lengths once, after which no
//! accessor can panic, so hostile frames are safe to look at. Getters need `AsRef<[u8]>`,
//! setters `AsMut<[u8]>`. A `Repr` with `parse`/`emit` exists only where xlb builds packets
//! (ARP, NDP, test fixtures). This module never allocates, logs or reads a clock, and
//! holds no unchecked code.

pub mod arp;
pub mod build;
pub mod checksum;
pub mod ethernet;
pub mod heartbeat;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
pub mod tcp;
pub mod udp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame};
pub use icmpv4::Icmpv4Packet;
pub use icmpv6::{Icmpv6Packet, NdiscRepr};
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use parse::{parse_frame, Parsed, Transport};
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

use core::fmt;

/// Why a buffer is not a valid packet of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer is shorter than the header, or than a length field says.
    Truncated,
    /// A field holds a value the format forbids (bad version, header length, option length).
    Malformed,
    /// The checksum does not match the contents.
    Checksum,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::Malformed => "malformed packet",
            Error::Checksum => "bad checksum",
        })
    }
}

impl std::error::Error for Error {}

/// Result of parsing a view.
pub type Result<T> = core::result::Result<T, Error>;

/// Byte ranges of a header's fields, used by the views' private `field` modules.
pub(crate) type Field = core::ops::Range<usize>;

#[inline]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

#[inline]
pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

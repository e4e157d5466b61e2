//! In-place rewrites that more than one step makes: the MACs of a frame sent on, and the
//! 16-byte address form of flow keys and SNAT mappings. A leaf.

use std::net::IpAddr;

use super::stats::DropReason;
use crate::wire::EthernetAddress;

/// Sets the destination and source MAC of the frame.
#[inline]
pub(super) fn set_macs(buf: &mut [u8], dst: EthernetAddress, src: EthernetAddress) -> Result<(), DropReason> {
    let out: &mut [u8; 12] = buf.get_mut(..12).and_then(|b| b.try_into().ok()).ok_or(DropReason::Truncated)?;
    out[..6].copy_from_slice(&dst.0);
    out[6..].copy_from_slice(&src.0);
    Ok(())
}

/// An address in the 16-byte form flow keys use (IPv4 mapped).
pub(crate) fn to16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

//! ARP and NDP for VIPs: answers built in place in the request's buffer, and the frames the
//! control thread asks a worker to send (gratuitous ARP, unsolicited neighbour
//! advertisements, RFC 5227 probes and IPv6 duplicate-address detection).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use super::out::{OutFrame, OUT_FRAME_CAP};
use super::{
    ctx::Ctx,
    snapshot::VipMode,
    stats::DropReason,
    verdict::{Conflict, Reply, Verdict},
};
use crate::wire::{
    arp::ArpOperation,
    build::{self, L2},
    icmpv6::{Icmpv6Packet, NdiscRepr, NeighborFlags},
    ipv4::Protocol,
    ipv6::{self, Ipv6Repr},
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, Ipv6Packet,
};

/// IPv6 all-nodes multicast address.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// What an outbound neighbour frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// Gratuitous ARP request: sender and target are the VIP.
    GratuitousRequest,
    /// Gratuitous ARP reply, for peers that only learn from replies.
    GratuitousReply,
    /// Unsolicited neighbour advertisement to all nodes, with the override flag.
    UnsolicitedAdvert,
    /// RFC 5227 ARP probe (sender 0.0.0.0) or IPv6 DAD solicitation (source ::).
    Probe,
}

/// Builds the frame for `what` about `vip`, sent from `mac`. `None` for a combination that
/// does not exist (an ARP form for an IPv6 VIP or the reverse).
pub fn announcement(mac: EthernetAddress, vip: IpAddr, what: Announcement) -> Option<OutFrame> {
    let mut buf = [0; OUT_FRAME_CAP];
    let broadcast = L2 { src: mac, dst: EthernetAddress::BROADCAST, vlan_tci: None };
    let to = |dst: &Ipv6Addr| L2 { src: mac, dst: EthernetAddress::ipv6_multicast(dst), vlan_tci: None };
    let len = match (vip, what) {
        (IpAddr::V4(v4), Announcement::GratuitousRequest) => {
            build::arp(&mut buf, broadcast, &ArpRepr::gratuitous(mac, v4, ArpOperation::Request))
        }
        (IpAddr::V4(v4), Announcement::GratuitousReply) => {
            build::arp(&mut buf, broadcast, &ArpRepr::gratuitous(mac, v4, ArpOperation::Reply))
        }
        (IpAddr::V4(v4), Announcement::Probe) => build::arp(&mut buf, broadcast, &ArpRepr::probe(mac, v4)),
        (IpAddr::V6(v6), Announcement::UnsolicitedAdvert) => {
            let na = NdiscRepr::NeighborAdvert { flags: NeighborFlags::OVERRIDE, target: v6, lladdr: Some(mac) };
            build::ndisc(&mut buf, to(&ALL_NODES), v6, ALL_NODES, 255, &na)
        }
        (IpAddr::V6(v6), Announcement::Probe) => {
            let dst = ipv6::solicited_node(&v6);
            let ns = NdiscRepr::NeighborSolicit { target: v6, lladdr: None };
            build::ndisc(&mut buf, to(&dst), Ipv6Addr::UNSPECIFIED, dst, 255, &ns)
        }
        _ => return None,
    };
    Some(OutFrame::from_parts(buf, len.ok()?))
}

/// Answers or watches an ARP frame. `buf[..len]` holds the frame; a reply is written in
/// place, in the same length, keeping any VLAN tags.
pub(super) fn arp(cx: &Ctx<'_>, buf: &mut [u8], len: usize) -> Verdict {
    let (snap, mac) = (cx.snap, cx.mac);
    let Some(frame) = buf.get_mut(..len) else { return Verdict::Drop(DropReason::Truncated) };
    let mut eth = match EthernetFrame::new_checked(frame) {
        Ok(e) => e,
        Err(e) => return Verdict::Drop(e.into()),
    };
    let requester = eth.src_addr();
    let req = match ArpPacket::new_checked(eth.payload_mut()) {
        Ok(p) => ArpRepr::parse(&p),
        Err(e) => return Verdict::Drop(e.into()),
    };
    if req.sha == mac {
        // Our own frame, looped back by a switch: nothing to learn from it.
        return Verdict::Drop(DropReason::NoAnswerNeeded);
    }
    // Anyone else saying "spa is at sha" for one of our VIPs is a conflict, whatever the
    // operation (gratuitous request, reply, or an answer to our probe).
    if snap.vip(IpAddr::V4(req.spa)).is_some() {
        return Verdict::Conflict(Conflict { vip: IpAddr::V4(req.spa), mac: req.sha });
    }
    if req.operation != ArpOperation::Request {
        return Verdict::Drop(DropReason::NoAnswerNeeded);
    }
    match snap.vip(IpAddr::V4(req.tpa)) {
        Some(VipMode::Answer) => {}
        // RFC 5227 2.1.1: another host probing for the address we are probing for means
        // the address is in use.
        Some(VipMode::Watch) if req.spa == Ipv4Addr::UNSPECIFIED => {
            return Verdict::Conflict(Conflict { vip: IpAddr::V4(req.tpa), mac: req.sha })
        }
        _ => return Verdict::Drop(DropReason::NotOwned),
    }
    eth.set_dst_addr(requester);
    eth.set_src_addr(mac);
    let reply = ArpRepr { operation: ArpOperation::Reply, sha: mac, spa: req.tpa, tha: req.sha, tpa: req.spa };
    match reply.emit(eth.payload_mut()) {
        Ok(_) => Verdict::Tx { len, reply: Reply::Arp },
        Err(e) => Verdict::Drop(e.into()),
    }
}

/// Answers or watches an IPv6 frame carrying ICMPv6 neighbour discovery; other IPv6
/// traffic to a VIP is the load balancer's (dropped as `NoService` until services exist).
pub(super) fn ndp(cx: &Ctx<'_>, buf: &mut [u8], len: usize) -> Verdict {
    let (snap, mac) = (cx.snap, cx.mac);
    let Some(frame) = buf.get(..len) else { return Verdict::Drop(DropReason::Truncated) };
    let eth = match EthernetFrame::new_checked(frame) {
        Ok(e) => e,
        Err(e) => return Verdict::Drop(e.into()),
    };
    let l3_offset = eth.header_len();
    let asker_mac = eth.src_addr();
    let ip = match Ipv6Packet::new_checked(eth.payload()) {
        Ok(p) => p,
        Err(e) => return Verdict::Drop(e.into()),
    };
    if ip.next_header() != Protocol::ICMPV6 {
        return Verdict::Drop(DropReason::NoService);
    }
    let icmp = match Icmpv6Packet::new_checked(ip.payload()) {
        Ok(p) => p,
        Err(e) => return Verdict::Drop(e.into()),
    };
    if !icmp.is_ndisc() {
        return Verdict::Drop(DropReason::NoService);
    }
    if ip.hop_limit() != 255 {
        return Verdict::Drop(DropReason::NdpHopLimit);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if !icmp.verify_checksum(&src, &dst) {
        return Verdict::Drop(DropReason::BadChecksum);
    }
    let nd = match NdiscRepr::parse(&icmp) {
        Ok(nd) => nd,
        Err(e) => return Verdict::Drop(e.into()),
    };
    if asker_mac == mac {
        return Verdict::Drop(DropReason::NoAnswerNeeded);
    }
    let (target, asker_lladdr) = match nd {
        NdiscRepr::NeighborAdvert { target, lladdr, .. } => {
            let claimant = lladdr.unwrap_or(asker_mac);
            if snap.vip(IpAddr::V6(target)).is_some() && claimant != mac {
                return Verdict::Conflict(Conflict { vip: IpAddr::V6(target), mac: claimant });
            }
            return Verdict::Drop(DropReason::NoAnswerNeeded);
        }
        NdiscRepr::NeighborSolicit { target, lladdr } => (target, lladdr),
    };
    let dad = src.is_unspecified();
    match snap.vip(IpAddr::V6(target)) {
        Some(VipMode::Answer) => {}
        // RFC 4862 5.4.3: a DAD solicitation for the address we are probing means another
        // host wants it too.
        Some(VipMode::Watch) if dad => return Verdict::Conflict(Conflict { vip: IpAddr::V6(target), mac: asker_mac }),
        _ => return Verdict::Drop(DropReason::NotOwned),
    }
    // A solicitation from :: (someone else's DAD for our VIP) is answered to all nodes, as
    // RFC 4861 7.2.4 says, so the prober learns the address is taken.
    let (reply_dst, reply_mac, flags) = if dad {
        (ALL_NODES, EthernetAddress::ipv6_multicast(&ALL_NODES), NeighborFlags::OVERRIDE)
    } else {
        (src, asker_lladdr.unwrap_or(asker_mac), NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE)
    };
    let na = NdiscRepr::NeighborAdvert { flags, target, lladdr: Some(mac) };
    let Ok(payload_len) = u16::try_from(na.buffer_len()) else { return Verdict::Drop(DropReason::NoRoom) };
    let new_len = l3_offset + ipv6::HEADER_LEN + na.buffer_len();
    let Some(out) = buf.get_mut(..new_len) else { return Verdict::Drop(DropReason::NoRoom) };
    // The Ethernet header (tags included) stays where it is; only the MACs change.
    out[0..6].copy_from_slice(&reply_mac.0);
    out[6..12].copy_from_slice(&mac.0);
    let ip = Ipv6Repr { src: target, dst: reply_dst, next_header: Protocol::ICMPV6, payload_len, hop_limit: 255 };
    let at = l3_offset + ipv6::HEADER_LEN;
    if let Err(e) = ip.emit(&mut out[l3_offset..]) {
        return Verdict::Drop(e.into());
    }
    match na.emit(&target, &reply_dst, &mut out[at..]) {
        Ok(_) => Verdict::Tx { len: new_len, reply: Reply::Ndp },
        Err(e) => Verdict::Drop(e.into()),
    }
}

//! ICMP to a VIP or a SNAT address: echo requests are answered; errors that quote one of our
//! flows are sent where the flow's packets go, translated for SNAT.
//!
//! - An error to a VIP quotes a packet the VIP sent to a client (DSR: the backend sent it;
//!   SNAT: xlb translated it): a router on the way to the client said "fragmentation needed",
//!   "packet too big", "unreachable". The quoted flow is found from the client's side: in this
//!   worker's conntrack, else (SNAT) through the shared table's client index, else (DSR) by the
//!   same Maglev choice every worker and node makes. DSR forwards the error as it is (the
//!   backend holds the VIP); SNAT rewrites it to what the backend sent: SNAT address and port
//!   in place of client, backend in place of VIP.
//! - An error to a SNAT address quotes a packet xlb sent to a backend (a closed UDP port, a
//!   smaller MTU on the backend's side): it is translated back to the client, found in the
//!   shared reverse table like any reply.
//!
//! Checksums are updated incrementally (RFC 1624): the outer IPv4 header, the quoted IP header,
//! the quoted TCP/UDP checksum when it was quoted, and the ICMP checksum over all of those
//! changes (and, for ICMPv6, its pseudo-header).

use super::{
    conntrack::FlowKey,
    ctx::Ctx,
    rewrite::{set_macs, to16},
    select::backend_for_icmp,
    snapshot::{ForwardMode, VipMode},
    snat::Mapping,
    state::WorkerState,
    stats::DropReason,
    verdict::{Reply, Verdict},
};
use crate::wire::{
    checksum::{update_bytes, update_u16},
    icmpv4::Icmpv4Type,
    icmpv6::Icmpv6Type,
    ipv4::Protocol,
    EthernetAddress,
};

/// Where the parts of an ICMP message sit in the frame.
#[derive(Debug, Clone, Copy)]
struct Layout {
    v6: bool,
    /// Outer IP header.
    l3: usize,
    /// ICMP header.
    icmp: usize,
    /// Quoted IP header.
    inner_l3: usize,
    /// Quoted transport header.
    inner_l4: usize,
    /// End of the frame.
    end: usize,
    /// Quoted protocol.
    proto: u8,
}

fn get<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], DropReason> {
    buf.get(at..at + N).and_then(|s| s.try_into().ok()).ok_or(DropReason::Truncated)
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16, DropReason> {
    Ok(u16::from_be_bytes(get::<2>(buf, at)?))
}

/// Addresses (16-byte form) of the IP header at `at`: source, destination.
fn addrs(buf: &[u8], at: usize, v6: bool) -> Result<([u8; 16], [u8; 16]), DropReason> {
    if v6 {
        Ok((get::<16>(buf, at + 8)?, get::<16>(buf, at + 24)?))
    } else {
        let m = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets();
        Ok((m(get::<4>(buf, at + 12)?), m(get::<4>(buf, at + 16)?)))
    }
}

/// ICMP in the packet whose IP header is at `l3` and ICMP header at `icmp`.
pub(super) fn icmp(
    cx: &Ctx<'_>,
    st: &mut WorkerState,
    buf: &mut [u8],
    len: usize,
    l3: usize,
    icmp: usize,
    v6: bool,
) -> Result<Verdict, DropReason> {
    let (now, snap, mac) = (cx.now, cx.snap, cx.mac);
    let frame = buf.get(..len).ok_or(DropReason::Truncated)?;
    let ty = *frame.get(icmp).ok_or(DropReason::Truncated)?;
    let (echo, error) = if v6 {
        (ty == Icmpv6Type::ECHO_REQUEST, matches!(ty, 1..=4))
    } else {
        (ty == Icmpv4Type::ECHO_REQUEST, matches!(ty, Icmpv4Type::DEST_UNREACHABLE | Icmpv4Type::TIME_EXCEEDED | 12))
    };
    let (_, outer_dst) = addrs(frame, l3, v6)?;
    if echo {
        if snap.vip16(&outer_dst) != Some(VipMode::Answer) {
            return Err(DropReason::NotOwned);
        }
        return echo_reply(buf, len, l3, icmp, v6, mac);
    }
    if !error {
        return Err(DropReason::NoService);
    }
    // The quoted packet: an IP header (IPv4 with options, IPv6 with TCP/UDP right after the
    // fixed header) and at least the 8 bytes that hold the ports.
    let inner_l3 = icmp + 8;
    let (inner_l4, proto) = if v6 {
        (inner_l3 + 40, *frame.get(inner_l3 + 6).ok_or(DropReason::Truncated)?)
    } else {
        let vihl = *frame.get(inner_l3).ok_or(DropReason::Truncated)?;
        if vihl >> 4 != 4 || vihl & 0xf < 5 {
            return Err(DropReason::Malformed);
        }
        (inner_l3 + usize::from(vihl & 0xf) * 4, *frame.get(inner_l3 + 9).ok_or(DropReason::Truncated)?)
    };
    if proto != Protocol::TCP && proto != Protocol::UDP {
        return Err(DropReason::NoService);
    }
    if inner_l4 + 8 > len {
        return Err(DropReason::Truncated);
    }
    // The end of the IP packet (a frame may carry padding after it).
    let end = l3 + if v6 { 40 + usize::from(u16_at(frame, l3 + 4)?) } else { usize::from(u16_at(frame, l3 + 2)?) };
    let at = Layout { v6, l3, icmp, inner_l3, inner_l4, end: end.min(len), proto };
    let (inner_src, inner_dst) = addrs(frame, inner_l3, v6)?;
    let (inner_sport, inner_dport) = (u16_at(frame, inner_l4)?, u16_at(frame, inner_l4 + 2)?);
    // The quoted packet was sent by the address the error went to.
    if inner_src != outer_dst {
        return Err(DropReason::Malformed);
    }

    if let Some(snat) = &st.snat {
        if let Some(addr) = snat.table().addr_index16(&outer_dst) {
            // Quoted: SNAT:port -> backend. Back to the client as VIP:vport -> client.
            let m = snat.table().lookup(addr, proto, inner_sport, now).ok_or(DropReason::NoSnatFlow)?;
            if m.backend != inner_dst || m.backend_port != inner_dport {
                return Err(DropReason::NoSnatFlow);
            }
            rewrite(buf, &at, &m.client, (&m.client, m.client_port), (&m.vip, m.vip_port))?;
            set_macs(buf, m.client_mac, mac)?;
            return Ok(Verdict::Tx { len, reply: Reply::IcmpError });
        }
    }

    // Quoted: VIP:vport -> client:cport. The flow, seen from the client's side:
    let key = FlowKey { src: inner_dst, dst: inner_src, src_port: inner_dport, dst_port: inner_sport, proto };
    let svc = snap.service16(&outer_dst, inner_sport, proto).ok_or(DropReason::NoService)?;
    let hash = key.hash();
    let (backend, lease) = backend_for_icmp(now, svc, st, &key, hash)?;
    let next_hop = backend.mac.ok_or(DropReason::NextHopUnresolved)?;
    if svc.mode == ForwardMode::Snat {
        let snat = st.snat.as_ref().ok_or(DropReason::NoSnatAddress)?;
        let probe = Mapping {
            client: key.src,
            client_port: key.src_port,
            vip: key.dst,
            vip_port: key.dst_port,
            ..Mapping::default()
        };
        let lease = match lease {
            Some(l) => l,
            None => snat.table().find_by_client(hash, proto, &probe, now).ok_or(DropReason::NoSnatFlow)?.0,
        };
        let snat_addr = *snat.table().addr16(lease.addr).ok_or(DropReason::NoSnatAddress)?;
        let b16 = to16(backend.addr);
        rewrite(buf, &at, &b16, (&b16, backend.port), (&snat_addr, lease.port()))?;
    }
    set_macs(buf, next_hop, mac)?;
    Ok(Verdict::Tx { len, reply: Reply::IcmpError })
}

/// Writes `new` at `at` and folds the change into the checksums at `sums`.
fn set(buf: &mut [u8], at: usize, new: &[u8], sums: &[usize]) -> Result<(), DropReason> {
    let n = new.len();
    let mut old = [0u8; 32];
    let field = buf.get_mut(at..at + n).ok_or(DropReason::Truncated)?;
    old.get_mut(..n).ok_or(DropReason::Truncated)?.copy_from_slice(field);
    field.copy_from_slice(new);
    for &s in sums {
        let v = update_bytes(u16_at(buf, s)?, &old[..n], new);
        buf.get_mut(s..s + 2).ok_or(DropReason::Truncated)?.copy_from_slice(&v.to_be_bytes());
    }
    Ok(())
}

/// Updates the checksum at `sum_at` for bytes it covers that changed from `old` to `new`;
/// the checksum's own change is folded into the checksums at `outer` (those covering it).
fn adjust(buf: &mut [u8], sum_at: usize, old: &[u8], new: &[u8], outer: &[usize]) -> Result<(), DropReason> {
    let v = update_bytes(u16_at(buf, sum_at)?, old, new);
    set(buf, sum_at, &v.to_be_bytes(), outer)
}

/// Rewrites an ICMP error: outer destination to `outer_dst`; the quoted packet's source to
/// `src` and destination to `dst` (address, port). Every checksum that covers a changed byte
/// is updated, the ICMP checksum last of all since it covers the others.
fn rewrite(
    buf: &mut [u8],
    at: &Layout,
    outer_dst: &[u8; 16],
    src: (&[u8; 16], u16),
    dst: (&[u8; 16], u16),
) -> Result<(), DropReason> {
    let icmp_sum = [at.icmp + 2];
    // Outer destination: in the IPv4 header checksum, or the ICMPv6 pseudo-header.
    if at.v6 {
        set(buf, at.l3 + 24, outer_dst, &icmp_sum)?;
    } else {
        set(buf, at.l3 + 16, &outer_dst[12..], &[at.l3 + 10])?;
    }
    // The quoted transport checksum, where it was quoted (an IPv4 UDP checksum of 0 stays 0).
    let l4_sum = if at.proto == Protocol::UDP { at.inner_l4 + 6 } else { at.inner_l4 + 16 };
    let l4_sum =
        (l4_sum + 2 <= at.end && (at.v6 || at.proto != Protocol::UDP || u16_at(buf, l4_sum)? != 0)).then_some(l4_sum);
    // Quoted addresses: they count in the quoted IPv4 header checksum and the quoted
    // transport checksum (pseudo-header), and all three in the ICMP checksum.
    let (a_at, n) = if at.v6 { (at.inner_l3 + 8, 32) } else { (at.inner_l3 + 12, 8) };
    let mut new_a = [0u8; 32];
    if at.v6 {
        new_a[..16].copy_from_slice(src.0);
        new_a[16..].copy_from_slice(dst.0);
    } else {
        new_a[..4].copy_from_slice(&src.0[12..]);
        new_a[4..8].copy_from_slice(&dst.0[12..]);
    }
    let old_a: [u8; 32] = {
        let mut o = [0u8; 32];
        o[..n].copy_from_slice(buf.get(a_at..a_at + n).ok_or(DropReason::Truncated)?);
        o
    };
    set(buf, a_at, &new_a[..n], &icmp_sum)?;
    if !at.v6 {
        adjust(buf, at.inner_l3 + 10, &old_a[..n], &new_a[..n], &icmp_sum)?;
    }
    if let Some(s) = l4_sum {
        adjust(buf, s, &old_a[..n], &new_a[..n], &icmp_sum)?;
    }
    // Quoted ports.
    let old_p = get::<4>(buf, at.inner_l4)?;
    let mut new_p = [0u8; 4];
    new_p[..2].copy_from_slice(&src.1.to_be_bytes());
    new_p[2..].copy_from_slice(&dst.1.to_be_bytes());
    set(buf, at.inner_l4, &new_p, &icmp_sum)?;
    if let Some(s) = l4_sum {
        adjust(buf, s, &old_p, &new_p, &icmp_sum)?;
    }
    Ok(())
}

/// Answers an echo request to one of our addresses in place.
fn echo_reply(
    buf: &mut [u8],
    len: usize,
    l3: usize,
    icmp: usize,
    v6: bool,
    mac: EthernetAddress,
) -> Result<Verdict, DropReason> {
    let peer = EthernetAddress(get::<6>(buf, 6)?);
    set_macs(buf, peer, mac)?;
    // Swapping source and destination changes no checksum.
    let (s, d, n) = if v6 { (l3 + 8, l3 + 24, 16) } else { (l3 + 12, l3 + 16, 4) };
    let mut tmp = [0u8; 16];
    tmp[..n].copy_from_slice(buf.get(s..s + n).ok_or(DropReason::Truncated)?);
    buf.copy_within(d..d + n, s);
    buf.get_mut(d..d + n).ok_or(DropReason::Truncated)?.copy_from_slice(&tmp[..n]);
    let (reply_ty, req_ty) = if v6 {
        (Icmpv6Type::ECHO_REPLY, Icmpv6Type::ECHO_REQUEST)
    } else {
        (Icmpv4Type::ECHO_REPLY, Icmpv4Type::ECHO_REQUEST)
    };
    let code = *buf.get(icmp + 1).ok_or(DropReason::Truncated)?;
    let c = u16_at(buf, icmp + 2)?;
    let v = update_u16(c, u16::from_be_bytes([req_ty, code]), u16::from_be_bytes([reply_ty, code]));
    let [hi, lo] = v.to_be_bytes();
    buf.get_mut(icmp..icmp + 4).ok_or(DropReason::Truncated)?.copy_from_slice(&[reply_ty, code, hi, lo]);
    // A fresh TTL / hop limit, as a host answering sets it.
    if v6 {
        *buf.get_mut(l3 + 7).ok_or(DropReason::Truncated)? = 64;
    } else {
        let ttl_proto = u16_at(buf, l3 + 8)?;
        let new = u16::from_be_bytes([64, Protocol::ICMP]);
        buf.get_mut(l3 + 8).map(|b| *b = 64).ok_or(DropReason::Truncated)?;
        let c = u16_at(buf, l3 + 10)?;
        let v = update_u16(c, ttl_proto, new);
        buf.get_mut(l3 + 10..l3 + 12).ok_or(DropReason::Truncated)?.copy_from_slice(&v.to_be_bytes());
    }
    Ok(Verdict::Tx { len, reply: Reply::Echo })
}

//! Traffic to a VIP: find the service, find or choose the backend (connection tracking,
//! then Maglev), and rewrite the frame for it; and replies from SNAT backends, translated back.
//!
//! DSR only changes MACs: the IP packet goes to the backend untouched and the backend answers
//! the client directly. SNAT rewrites addresses and ports both ways (`super::snat` holds the
//! reverse mappings), with checksums updated incrementally. TTLs are left alone in both modes:
//! xlb delivers on the link it received on, like a bridge, not like a router.

use super::{
    conntrack::{next_tcp_state, Conntrack, Entry, FlowKey, FlowState, Hint},
    ctx::Ctx,
    rewrite::set_macs,
    select::choose,
    snapshot::{ForwardMode, Service},
    snat::{Hold, Lease, Mapping, SnatPorts},
    state::WorkerState,
    stats::{DropReason, ObjectCounters, UNCOUNTED},
    verdict::{Reply, Verdict},
};
use crate::wire::{
    checksum::{apply, delta},
    ipv4::Protocol,
    EthernetAddress, EthernetFrame, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

/// A counter id as the SNAT table stores it (16 bits; 0xffff for none).
fn id16(id: u32) -> u16 {
    u16::try_from(id).unwrap_or(u16::MAX)
}

/// And back.
fn id32(id: u16) -> u32 {
    if id == u16::MAX {
        UNCOUNTED
    } else {
        u32::from(id)
    }
}

/// What the forwarding step needs to know about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flow {
    pub(super) key: FlowKey,
    /// `key.hash()`, computed once per packet: where the flow lives in the flow table (the
    /// worker prefetches it a batch ahead) and its Maglev slot.
    pub(super) hash: u64,
    tcp_flags: Option<u8>,
    /// Offset of the IP header in the frame.
    l3: u16,
    /// Offset of the transport header in the frame.
    l4: u16,
    v6: bool,
}

#[inline]
fn ports(proto: u8, l4: &[u8]) -> Result<(u16, u16, Option<u8>), DropReason> {
    match proto {
        Protocol::TCP => {
            let t = TcpPacket::new_checked(l4)?;
            Ok((t.src_port(), t.dst_port(), Some(t.flags())))
        }
        Protocol::UDP => {
            let u = UdpPacket::new_checked(l4)?;
            Ok((u.src_port(), u.dst_port(), None))
        }
        _ => Err(DropReason::NoService),
    }
}

/// Offset of the layer-3 header in the frame `buf[..len]`, after any VLAN tags.
#[inline]
fn l3_offset(buf: &[u8], len: usize) -> Result<usize, DropReason> {
    let frame = buf.get(..len).ok_or(DropReason::Truncated)?;
    Ok(EthernetFrame::new_checked(frame)?.header_len())
}

/// What an IP packet to one of our addresses is.
pub(super) enum Classified {
    /// TCP or UDP: a flow of a service (or a reply to a SNAT address); the flow key's
    /// destination, port and protocol name the service.
    Flow(Flow),
    /// ICMP: IP header at `l3`, ICMP header at `l4`.
    Icmp { l3: usize, l4: usize },
}

/// The common case in one pass: an untagged Ethernet frame holding an unfragmented IPv4
/// packet without options and a TCP or UDP header. Every other frame (VLAN tags, options,
/// fragments, ICMP, IPv6, anything malformed) gets `None` and goes the general way, which
/// also counts the drops; for the frames it takes, the flow is the one [`classify`] finds
/// (a test checks the two agree). Fixed-size views, so the offsets need no checks of
/// their own.
#[inline(always)]
pub(super) fn fast_v4(buf: &[u8], len: usize) -> Option<Flow> {
    const ETH: usize = 14;
    const L4: usize = ETH + 20;
    #[allow(clippy::cast_possible_truncation)] // 14 and 34
    let (l3, l4_at) = (ETH as u16, L4 as u16);
    let frame = buf.get(..len)?;
    let h: &[u8; L4] = frame.get(..L4)?.try_into().ok()?;
    let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let flags_frag = u16::from_be_bytes([h[20], h[21]]);
    if h[12..14] != [0x08, 0x00] || h[14] != 0x45 || total < 20 || ETH + total > len || flags_frag & 0x1fff != 0 {
        return None;
    }
    let l4 = frame.get(L4..ETH + total)?;
    let proto = h[23];
    let tcp_flags = match proto {
        Protocol::TCP => {
            let t: &[u8; 20] = l4.get(..20)?.try_into().ok()?;
            let hl = usize::from(t[12] >> 4) * 4;
            if hl < 20 || hl > l4.len() {
                return None;
            }
            Some(t[13])
        }
        Protocol::UDP => {
            let u: &[u8; 8] = l4.get(..8)?.try_into().ok()?;
            let ul = usize::from(u16::from_be_bytes([u[4], u[5]]));
            if ul < 8 || ul > l4.len() {
                return None;
            }
            None
        }
        _ => return None,
    };
    let p: &[u8; 4] = l4.get(..4)?.try_into().ok()?;
    // IPv4-mapped (::ffff:a.b.c.d): eight zero bytes, then one eight-byte word.
    let mapped = |a: &[u8]| {
        let hi = u64::from_le_bytes([0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]);
        (u128::from(hi) << 64).to_le_bytes()
    };
    let key = FlowKey {
        src: mapped(&h[26..30]),
        dst: mapped(&h[30..34]),
        src_port: u16::from_be_bytes([p[0], p[1]]),
        dst_port: u16::from_be_bytes([p[2], p[3]]),
        proto,
    };
    Some(Flow { key, hash: key.hash(), tcp_flags, l3, l4: l4_at, v6: false })
}

/// Classifies an IPv4 or IPv6 (`v6`) packet to a VIP or a SNAT address.
#[inline]
pub(super) fn classify(buf: &[u8], len: usize, v6: bool) -> Result<Classified, DropReason> {
    if v6 {
        classify_v6(buf, len)
    } else {
        classify_v4(buf, len)
    }
}

/// Classifies an IPv4 packet.
#[inline]
fn classify_v4(buf: &[u8], len: usize) -> Result<Classified, DropReason> {
    let l3 = l3_offset(buf, len)?;
    let ip = Ipv4Packet::new_checked(buf.get(l3..len).ok_or(DropReason::Truncated)?)?;
    if ip.frag_offset() != 0 {
        // A later fragment carries no ports, so it cannot be matched to a flow here.
        return Err(DropReason::Fragment);
    }
    let l4 = l3 + ip.header_len();
    if ip.protocol() == Protocol::ICMP {
        return Ok(Classified::Icmp { l3, l4 });
    }
    let (src, dst) = (ip.src_addr().to_ipv6_mapped().octets(), ip.dst_addr().to_ipv6_mapped().octets());
    transport(dst, src, ip.protocol(), ip.payload(), l3, l4, false)
}

/// Classifies an IPv6 packet (neighbour discovery is handled before).
#[inline]
fn classify_v6(buf: &[u8], len: usize) -> Result<Classified, DropReason> {
    let l3 = l3_offset(buf, len)?;
    let ip = Ipv6Packet::new_checked(buf.get(l3..len).ok_or(DropReason::Truncated)?)?;
    if ip.next_header() == Protocol::ICMPV6 {
        return Ok(Classified::Icmp { l3, l4: l3 + 40 });
    }
    let (src, dst) = (ip.src_addr().octets(), ip.dst_addr().octets());
    transport(dst, src, ip.next_header(), ip.payload(), l3, l3 + 40, true)
}

/// The service key and flow of a transport payload, whichever the IP family.
#[inline]
fn transport(
    dst: [u8; 16],
    src: [u8; 16],
    proto: u8,
    l4: &[u8],
    l3_at: usize,
    l4_at: usize,
    v6: bool,
) -> Result<Classified, DropReason> {
    let (src_port, dst_port, tcp_flags) = ports(proto, l4)?;
    let key = FlowKey { src, dst, src_port, dst_port, proto };
    // Headers end within a frame of at most 64 KiB.
    let (Ok(l3_at), Ok(l4_at)) = (u16::try_from(l3_at), u16::try_from(l4_at)) else {
        return Err(DropReason::Truncated);
    };
    Ok(Classified::Flow(Flow { key, hash: key.hash(), tcp_flags, l3: l3_at, l4: l4_at, v6 }))
}

/// A TCP/UDP packet to a VIP or a SNAT address (as [`classify`] found it): forwarded to its
/// backend, or translated back to the client.
///
/// The common case, a tracked flow that keeps its backend (and, for SNAT, its port), is laid
/// out here: its flow-table entry says where its service and backend were (hints, checked),
/// so it looks nothing else up. A new flow, a new backend or a new port goes out of line to
/// [`place`].
#[inline]
pub(super) fn flow(cx: &Ctx<'_>, st: &mut WorkerState, buf: &mut [u8], len: usize, flow: &Flow) -> Verdict {
    if let Some(snat) = &st.snat {
        if let Some(addr) = snat.table().addr_index16(&flow.key.dst) {
            return reverse(cx, snat, &st.counters, addr, buf, len, flow);
        }
    }
    let (now, key) = (cx.now, &flow.key);
    let Some((e, lifetimes)) = st.conntrack.lookup_with_lifetimes(key, flow.hash, now) else {
        return new_flow(cx, st, buf, len, flow);
    };
    let hint = e.hint;
    let Some((si, svc)) = cx.snap.service_hinted(&key.dst, key.dst_port, key.proto, hint.service()) else {
        return Verdict::Drop(DropReason::NoService);
    };
    if !svc.sources.admits(&key.src) {
        return Verdict::Drop(DropReason::SourceRange);
    }
    // A tracked flow keeps its backend while that backend is in the service, whatever the
    // Maglev table says now; a SYN on a closing flow starts a new connection. A SNAT flow
    // keeps its port either way.
    let lease = e.snat;
    let mut tracked: Option<(u32, u64, FlowState)> = None;
    let new_syn = e.state == FlowState::Closing && flow.tcp_flags.is_some_and(is_new_syn);
    if !new_syn {
        if let Some(i) = svc.backend_index(e.backend_key, hint.backend()) {
            e.hint = Hint::new(si, i);
            Conntrack::touch(lifetimes, e, flow.tcp_flags, now);
            let (expires, state) = (e.expires, e.state);
            match (svc.mode, lease) {
                (ForwardMode::Dsr, _) => {
                    if let Some(l) = lease {
                        drop_lease(e, st.snat.as_ref(), l, flow.key.proto);
                    }
                    return send(cx, svc, st, i, None, buf, len, flow);
                }
                (ForwardMode::Snat, Some(l)) => {
                    let Some(snat) = st.snat.as_ref() else { return Verdict::Drop(DropReason::NoSnatAddress) };
                    let hold = Hold { now, expires, embryonic: state == FlowState::SynSent };
                    snat.touch(l, flow.key.proto, hold);
                    return send(cx, svc, st, i, Some(l), buf, len, flow);
                }
                (ForwardMode::Snat, None) => tracked = Some((i, expires, state)),
            }
        }
    }
    place(cx, (si, svc), st, buf, len, flow, tracked, lease).unwrap_or_else(Verdict::Drop)
}

/// [`flow`] for a flow the table does not hold: its service, looked up, admits it or not.
#[inline]
fn new_flow(cx: &Ctx<'_>, st: &mut WorkerState, buf: &mut [u8], len: usize, flow: &Flow) -> Verdict {
    let key = &flow.key;
    let Some((si, svc)) = cx.snap.service_indexed(&key.dst, key.dst_port, key.proto) else {
        return Verdict::Drop(DropReason::NoService);
    };
    if !svc.sources.admits(&key.src) {
        return Verdict::Drop(DropReason::SourceRange);
    }
    place(cx, (si, svc), st, buf, len, flow, None, None).unwrap_or_else(Verdict::Drop)
}

/// [`flow`] for a flow that needs a backend chosen (`tracked` is `None`: a new flow, or
/// one whose backend left; `lease`: the SNAT port it held) or a SNAT flow that holds no port
/// yet (`tracked` is `Some`). A tracked flow that keeps its backend and its port never gets
/// here, so a port held on arrival is always given a new mapping.
#[inline(never)]
#[allow(clippy::too_many_arguments)] // flow's state, handed on as it is
fn place(
    cx: &Ctx<'_>,
    (si, svc): (u32, &Service),
    st: &mut WorkerState,
    buf: &mut [u8],
    len: usize,
    flow: &Flow,
    tracked: Option<(u32, u64, FlowState)>,
    lease: Option<Lease>,
) -> Result<Verdict, DropReason> {
    let (now, hash) = (cx.now, flow.hash);
    let (idx, expires, state) = match tracked {
        Some(t) => t,
        None => {
            let pick = choose(now, svc, st, &flow.key, hash)?;
            let b = svc.backends.get(usize::try_from(pick).unwrap_or(usize::MAX)).ok_or(DropReason::NoBackend)?;
            let state = match flow.tcp_flags {
                Some(f) => next_tcp_state(FlowState::Empty, f),
                None if flow.key.proto == Protocol::UDP => FlowState::Udp,
                None => FlowState::Other,
            };
            let hint = Hint::new(si, pick);
            let entry = Entry { key: flow.key, hint, backend_key: b.key, state, snat: lease, ..Entry::default() };
            // A full table is counted there; a DSR flow is then served from Maglev alone.
            match st.track(entry, hash, now) {
                Ok(e) => (pick, e.expires, state),
                Err(_) if svc.mode == ForwardMode::Dsr => (pick, 0, state),
                // SNAT cannot translate replies of a flow it does not track.
                Err(_) => return Err(DropReason::ConntrackFull),
            }
        }
    };
    let backend = svc.backends.get(usize::try_from(idx).unwrap_or(usize::MAX)).ok_or(DropReason::NoBackend)?;
    // Checked before a SNAT port is given to the flow.
    backend.mac.ok_or(DropReason::NextHopUnresolved)?;
    if backend.via.is_some_and(|v| v != cx.mac) {
        return Err(DropReason::OtherInterface);
    }
    let held = match svc.mode {
        ForwardMode::Dsr => None,
        ForwardMode::Snat => {
            let Some(snat) = st.snat.as_mut() else { return Err(DropReason::NoSnatAddress) };
            let client_mac =
                EthernetAddress(buf.get(6..12).and_then(|m| m.try_into().ok()).ok_or(DropReason::Truncated)?);
            let mapping = Mapping {
                client: flow.key.src,
                client_port: flow.key.src_port,
                vip: flow.key.dst,
                vip_port: flow.key.dst_port,
                backend: *svc.backend_addr16(idx).ok_or(DropReason::NoBackend)?,
                backend_port: backend.port,
                client_mac,
                service_stats: id16(svc.stats_id),
                backend_stats: id16(backend.stats_id),
            };
            let embryonic = state == FlowState::SynSent;
            Some(match lease {
                Some(l) => {
                    // Same client 5-tuple, new backend or new connection: same port, new mapping.
                    snat.rewrite(l, flow.key.proto, &mapping, Hold { now, expires, embryonic });
                    l
                }
                None => {
                    // A port held by a flow: the flow's lifetime with a SNAT port from now on.
                    let expires = now.saturating_add(st.conntrack.lifetimes().of_flow(state, true));
                    let hold = Hold { now, expires, embryonic };
                    let Some((l, reclaimed)) = snat.allocate(flow.v6, flow.key.proto, hash, &mapping, hold) else {
                        st.conntrack.remove(&flow.key, hash);
                        return Err(DropReason::SnatPortsExhausted);
                    };
                    if let Some(old) = reclaimed {
                        evict_reclaimed(&mut st.conntrack, &old, l, flow.key.proto, now);
                    }
                    if let Some(e) = st.conntrack.lookup(&flow.key, hash, now) {
                        e.snat = Some(l);
                        e.expires = expires;
                    }
                    l
                }
            })
        }
    };
    Ok(send(cx, svc, st, idx, held, buf, len, flow))
}

/// A flow of a SNAT service turned DSR: it no longer needs its port (`lease`, of protocol
/// `proto`), which would otherwise free itself unseen while the entry still names it.
#[cold]
#[inline(never)]
fn drop_lease(e: &mut Entry, snat: Option<&SnatPorts>, lease: Lease, proto: u8) {
    e.snat = None;
    if let Some(snat) = snat {
        snat.release(lease, proto);
    }
}

/// Evicts the embryonic flow whose SNAT port (`lease`, of protocol `proto`) was taken back
/// for a new flow: the one its old mapping `old` names (on this worker: the port is from its
/// share), if its entry still holds the port. The same client may be back as a new flow, the
/// one being placed included, which must stay.
#[cold]
#[inline(never)]
fn evict_reclaimed(conntrack: &mut Conntrack, old: &Mapping, lease: Lease, proto: u8, now: u64) {
    let key = FlowKey { src: old.client, dst: old.vip, src_port: old.client_port, dst_port: old.vip_port, proto };
    let hash = key.hash();
    if conntrack.lookup(&key, hash, now).is_some_and(|e| e.snat == Some(lease)) {
        conntrack.evict(&key, hash);
    }
}

/// Sends the packet of `flow` to backend `idx` of `svc`: new MACs, and with a SNAT port
/// (`lease`) new addresses and ports (source: the port's SNAT address; destination: the
/// backend). Counted.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // flow's state, handed on as it is
fn send(
    cx: &Ctx<'_>,
    svc: &Service,
    st: &WorkerState,
    idx: u32,
    lease: Option<Lease>,
    buf: &mut [u8],
    len: usize,
    flow: &Flow,
) -> Verdict {
    // A verdict, not a Result: the drops are spelled out so that the common case writes
    // its verdict once, where the caller wants it.
    let Some(backend) = svc.backends.get(usize::try_from(idx).unwrap_or(usize::MAX)) else {
        return Verdict::Drop(DropReason::NoBackend);
    };
    let Some(next_hop) = backend.mac else { return Verdict::Drop(DropReason::NextHopUnresolved) };
    if backend.via.is_some_and(|v| v != cx.mac) {
        return Verdict::Drop(DropReason::OtherInterface);
    }
    if let Some(l) = lease {
        let Some(src) = st.snat.as_ref().and_then(|snat| snat.table().addr16(l.addr)) else {
            return Verdict::Drop(DropReason::NoSnatAddress);
        };
        let Some(dst) = svc.backend_addr16(idx) else { return Verdict::Drop(DropReason::NoBackend) };
        if let Err(r) = nat(buf, len, flow, src, dst, l.port(), backend.port) {
            return Verdict::Drop(r);
        }
    }
    if let Err(r) = set_macs(buf, next_hop, cx.mac) {
        return Verdict::Drop(r);
    }
    st.counters.count(svc.stats_id, backend.stats_id, len, false);
    Verdict::Tx { len, reply: Reply::Forward }
}

/// A packet to one of our SNAT addresses: a backend's reply, translated back to VIP -> client.
fn reverse(
    cx: &Ctx<'_>,
    snat: &SnatPorts,
    counters: &ObjectCounters,
    addr: u8,
    buf: &mut [u8],
    len: usize,
    flow: &Flow,
) -> Verdict {
    // A verdict, not a Result, as in `send`.
    let Some(m) = snat.table().lookup(addr, flow.key.proto, flow.key.dst_port, cx.now) else {
        return Verdict::Drop(DropReason::NoSnatFlow);
    };
    // Only the backend the port was given to may use it.
    if m.backend != flow.key.src || m.backend_port != flow.key.src_port {
        return Verdict::Drop(DropReason::NoSnatFlow);
    }
    if let Err(r) = nat(buf, len, flow, &m.vip, &m.client, m.vip_port, m.client_port) {
        return Verdict::Drop(r);
    }
    if let Err(r) = set_macs(buf, m.client_mac, cx.mac) {
        return Verdict::Drop(r);
    }
    counters.count(id32(m.service_stats), id32(m.backend_stats), len, true);
    Verdict::Tx { len, reply: Reply::SnatReply { crossed: !snat.owns(flow.key.dst_port) } }
}

/// Rewrites source and destination address and port of the packet `flow` describes, and
/// updates the IPv4 header checksum and the TCP/UDP checksum incrementally (RFC 1624): the
/// addresses' change is summed once and applied to both. An IPv4 UDP datagram without a
/// checksum (0) keeps none.
#[inline(always)]
fn nat(
    buf: &mut [u8],
    len: usize,
    flow: &Flow,
    src: &[u8; 16],
    dst: &[u8; 16],
    sport: u16,
    dport: u16,
) -> Result<(), DropReason> {
    let frame = buf.get_mut(..len).ok_or(DropReason::Truncated)?;
    let l3 = usize::from(flow.l3);
    let addrs_delta = if flow.v6 {
        let a: &mut [u8; 32] =
            frame.get_mut(l3 + 8..l3 + 40).and_then(|a| a.try_into().ok()).ok_or(DropReason::Truncated)?;
        let mut new = [0u8; 32];
        new[..16].copy_from_slice(src);
        new[16..].copy_from_slice(dst);
        let d = delta(a, &new);
        *a = new;
        d
    } else {
        let h: &mut [u8; 20] =
            frame.get_mut(l3..l3 + 20).and_then(|h| h.try_into().ok()).ok_or(DropReason::Truncated)?;
        let mut new = [0u8; 8];
        new[..4].copy_from_slice(&src[12..]);
        new[4..].copy_from_slice(&dst[12..]);
        let a: &mut [u8; 8] = (&mut h[12..20]).try_into().map_err(|_| DropReason::Truncated)?;
        let d = delta(a, &new);
        *a = new;
        let c = apply([h[10], h[11]], d);
        h[10..12].copy_from_slice(&c);
        d
    };
    let udp = flow.key.proto == Protocol::UDP;
    let l4_len = if udp { 8 } else { 18 };
    let l4_at = usize::from(flow.l4);
    let l4: &mut [u8] = frame.get_mut(l4_at..l4_at + l4_len).ok_or(DropReason::Truncated)?;
    let mut ports = [0u8; 4];
    ports[..2].copy_from_slice(&sport.to_be_bytes());
    ports[2..].copy_from_slice(&dport.to_be_bytes());
    let old: &mut [u8; 4] = (&mut l4[..4]).try_into().map_err(|_| DropReason::Truncated)?;
    let d = addrs_delta + delta(old, &ports);
    *old = ports;
    let at = if udp { 6 } else { 16 };
    let check = [l4[at], l4[at + 1]];
    if udp && !flow.v6 && check == [0, 0] {
        return Ok(());
    }
    let mut v = apply(check, d);
    if udp && v == [0, 0] {
        v = [0xff, 0xff];
    }
    l4[at..at + 2].copy_from_slice(&v);
    Ok(())
}

#[inline]
fn is_new_syn(flags: u8) -> bool {
    use crate::wire::tcp::TcpFlags;
    flags & TcpFlags::SYN != 0 && flags & TcpFlags::ACK == 0
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::lb::testing::{PacketBuilder, CLIENT4, VIP4, VIP6};
    use crate::wire::tcp::TcpFlags;

    /// What the general way makes of the frame, when it is a flow.
    fn general(buf: &[u8], len: usize) -> Option<Flow> {
        let v6 = buf.get(12..14) == Some(&[0x86, 0xdd][..]);
        match classify(buf, len, v6) {
            Ok(Classified::Flow(f)) => Some(f),
            _ => None,
        }
    }

    #[test]
    fn the_fast_path_takes_only_what_the_general_way_classifies_the_same() {
        let v4 = IpAddr::V4(VIP4);
        let tcp = PacketBuilder { src: IpAddr::V4(CLIENT4), ..PacketBuilder::tcp(v4, 80, TcpFlags::ACK) };
        let seeds = [
            tcp.build(),
            PacketBuilder { payload: b"hello", ..tcp }.build(),
            PacketBuilder::udp(v4, 53).build(),
            PacketBuilder { no_udp_sum: true, ..PacketBuilder::udp(v4, 53) }.build(),
            PacketBuilder { vlan: Some(7), ..tcp }.build(),
            PacketBuilder { ip_options: &[1, 1, 1, 1], ..tcp }.build(),
            PacketBuilder { more_frags: true, ..tcp }.build(),
            PacketBuilder { frag_offset: 8, ..tcp }.build(),
            PacketBuilder::tcp(IpAddr::V6(VIP6), 80, TcpFlags::SYN).build(),
        ];
        let (mut taken, mut checked) = (0, 0);
        for seed in &seeds {
            // The frame as built, padded, cut at every length, and with each header byte
            // set to values that matter to the checks.
            let mut cases = vec![seed.clone()];
            let mut padded = seed.clone();
            padded.resize(seed.len() + 18, 0);
            cases.push(padded);
            for at in 0..seed.len().min(60) {
                for v in [0x00, 0x01, 0x05, 0x08, 0x11, 0x14, 0x45, 0x46, 0x50, 0xff] {
                    let mut f = seed.clone();
                    f[at] = v;
                    cases.push(f);
                }
            }
            for f in cases {
                for len in 0..=f.len() {
                    checked += 1;
                    if let Some(fast) = fast_v4(&f, len) {
                        taken += 1;
                        assert_eq!(Some(fast), general(&f, len), "frame {f:02x?} cut at {len}");
                    }
                }
            }
        }
        // Both ways were exercised: the fast path took many frames and left many.
        assert!(taken > 1000 && taken < checked / 2, "taken {taken} of {checked}");
        // Untouched IPv4 TCP and UDP frames are taken, a first fragment too (its ports are
        // there, as the general way sees it); tagged, optioned, later fragments and IPv6
        // are not.
        let takes = |f: &Vec<u8>| fast_v4(f, f.len()).is_some();
        let taken: Vec<bool> = seeds.iter().map(takes).collect();
        assert_eq!(taken, [true, true, true, true, false, false, true, false, false]);
    }
}

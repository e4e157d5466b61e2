//! Traffic to a VIP: find the service, find or choose the backend (connection tracking,
//! then Maglev), and rewrite the frame for it; and replies from SNAT backends, translated back.
//!
//! DSR only changes MACs: the IP packet goes to the backend untouched and the backend answers
//! the client directly. SNAT rewrites addresses and ports both ways (`super::snat` holds the
//! reverse mappings), with checksums updated incrementally. TTLs are left alone in both modes:
//! xlb delivers on the link it received on, like a bridge, not like a router.

use super::{
    conntrack::{next_tcp_state, Conntrack, Entry, FlowKey, FlowState},
    ctx::Ctx,
    rewrite::{set_macs, to16},
    select::choose,
    snapshot::{ForwardMode, Service},
    snat::{Lease, Mapping, SnatPorts},
    state::WorkerState,
    stats::{DropReason, ObjectCounters, UNCOUNTED},
    verdict::{Reply, Verdict},
};
use crate::wire::{
    checksum::update_bytes, ipv4::Protocol, EthernetAddress, EthernetFrame, Ipv4Packet, Ipv6Packet, TcpPacket,
    UdpPacket,
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
#[derive(Debug, Clone, Copy)]
pub(super) struct Flow {
    key: FlowKey,
    tcp_flags: Option<u8>,
    /// Offset of the IP header in the frame.
    l3: usize,
    /// Offset of the transport header in the frame.
    l4: usize,
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
    Ok(Classified::Flow(Flow { key, tcp_flags, l3: l3_at, l4: l4_at, v6 }))
}

/// A TCP/UDP packet to a VIP or a SNAT address (as [`classify`] found it): forwarded to its
/// backend, or translated back to the client.
#[inline]
pub(super) fn flow(cx: &Ctx<'_>, st: &mut WorkerState, buf: &mut [u8], len: usize, flow: &Flow) -> Verdict {
    if let Some(snat) = &st.snat {
        if let Some(addr) = snat.table().addr_index16(&flow.key.dst) {
            return reverse(cx, snat, &st.counters, addr, buf, len, flow).unwrap_or_else(Verdict::Drop);
        }
    }
    let Some(service) = cx.snap.service16(&flow.key.dst, flow.key.dst_port, flow.key.proto) else {
        return Verdict::Drop(DropReason::NoService);
    };
    forward(cx, service, st, buf, len, flow).unwrap_or_else(Verdict::Drop)
}

#[inline]
fn forward(
    cx: &Ctx<'_>,
    svc: &Service,
    st: &mut WorkerState,
    buf: &mut [u8],
    len: usize,
    flow: &Flow,
) -> Result<Verdict, DropReason> {
    let (now, mac) = (cx.now, cx.mac);
    let hash = flow.key.hash();
    // A tracked flow keeps its backend while that backend is in the service, whatever the
    // Maglev table says now; a SYN on a closing flow starts a new connection. A SNAT flow
    // keeps its port either way.
    let mut lease: Option<Lease> = None;
    let mut tracked: Option<(u32, u64)> = None;
    if let Some((e, lifetimes)) = st.conntrack.lookup_with_lifetimes(&flow.key, hash, now) {
        lease = e.snat;
        let new_syn = e.state == FlowState::Closing && flow.tcp_flags.is_some_and(is_new_syn);
        if !new_syn {
            if let Some(i) = svc.backend_index(e.backend_key, e.backend) {
                e.backend = i;
                Conntrack::touch(lifetimes, e, flow.tcp_flags, now);
                tracked = Some((i, e.expires));
            }
        }
    }
    let (idx, expires, fresh) = match tracked {
        Some((i, exp)) => (i, exp, false),
        None => {
            let pick = choose(now, svc, &mut st.conntrack, &flow.key, hash)?;
            let b = svc.backends.get(usize::try_from(pick).unwrap_or(usize::MAX)).ok_or(DropReason::NoBackend)?;
            let state = match flow.tcp_flags {
                Some(f) => next_tcp_state(FlowState::Empty, f),
                None if flow.key.proto == Protocol::UDP => FlowState::Udp,
                None => FlowState::Other,
            };
            let entry = Entry {
                key: flow.key,
                hash,
                backend: pick,
                backend_key: b.key,
                state,
                snat: lease,
                ..Entry::default()
            };
            // A full table is counted there; a DSR flow is then served from Maglev alone.
            match st.conntrack.insert(entry, now) {
                Ok(e) => (pick, e.expires, true),
                Err(_) if svc.mode == ForwardMode::Dsr => (pick, 0, false),
                // SNAT cannot translate replies of a flow it does not track.
                Err(_) => return Err(DropReason::ConntrackFull),
            }
        }
    };
    let backend = svc.backends.get(usize::try_from(idx).unwrap_or(usize::MAX)).ok_or(DropReason::NoBackend)?;
    let next_hop = backend.mac.ok_or(DropReason::NextHopUnresolved)?;
    match svc.mode {
        ForwardMode::Dsr => set_macs(buf, next_hop, mac)?,
        ForwardMode::Snat => {
            let Some(snat) = st.snat.as_mut() else { return Err(DropReason::NoSnatAddress) };
            let client_mac =
                EthernetAddress(buf.get(6..12).and_then(|m| m.try_into().ok()).ok_or(DropReason::Truncated)?);
            let backend16 = to16(backend.addr);
            let mapping = Mapping {
                client: flow.key.src,
                client_port: flow.key.src_port,
                vip: flow.key.dst,
                vip_port: flow.key.dst_port,
                backend: backend16,
                backend_port: backend.port,
                client_mac,
                service_stats: id16(svc.stats_id),
                backend_stats: id16(backend.stats_id),
            };
            let held = match (lease, fresh) {
                (Some(l), false) => {
                    snat.touch(l, flow.key.proto, expires);
                    l
                }
                (Some(l), true) => {
                    // Same client 5-tuple, new backend or new connection: same port, new mapping.
                    snat.rewrite(l, flow.key.proto, &mapping, expires);
                    l
                }
                (None, _) => {
                    let Some(l) = snat.allocate(flow.v6, flow.key.proto, hash, &mapping, now, expires) else {
                        st.conntrack.remove(&flow.key, hash);
                        return Err(DropReason::SnatPortsExhausted);
                    };
                    if let Some(e) = st.conntrack.lookup(&flow.key, hash, now) {
                        e.snat = Some(l);
                    }
                    l
                }
            };
            let src = *snat.table().addr16(held.addr).ok_or(DropReason::NoSnatAddress)?;
            nat(buf, len, flow, &src, &backend16, held.port, backend.port)?;
            set_macs(buf, next_hop, mac)?;
        }
    }
    st.counters.count(svc.stats_id, backend.stats_id, len, false);
    Ok(Verdict::Tx { len, reply: Reply::Forward })
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
) -> Result<Verdict, DropReason> {
    let m = snat.table().lookup(addr, flow.key.proto, flow.key.dst_port, cx.now).ok_or(DropReason::NoSnatFlow)?;
    // Only the backend the port was given to may use it.
    if m.backend != flow.key.src || m.backend_port != flow.key.src_port {
        return Err(DropReason::NoSnatFlow);
    }
    nat(buf, len, flow, &m.vip, &m.client, m.vip_port, m.client_port)?;
    set_macs(buf, m.client_mac, cx.mac)?;
    counters.count(id32(m.service_stats), id32(m.backend_stats), len, true);
    Ok(Verdict::Tx { len, reply: Reply::SnatReply { crossed: !snat.owns(flow.key.dst_port) } })
}

/// Rewrites source and destination address and port of the packet `flow` describes, and
/// updates the IPv4 header checksum and the TCP/UDP checksum incrementally (RFC 1624). An
/// IPv4 UDP datagram without a checksum (0) keeps none.
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
    let (at, n) = if flow.v6 { (flow.l3 + 8, 32) } else { (flow.l3 + 12, 8) };
    let mut new = [0u8; 32];
    if flow.v6 {
        new[..16].copy_from_slice(src);
        new[16..].copy_from_slice(dst);
    } else {
        new[..4].copy_from_slice(&src[12..]);
        new[4..8].copy_from_slice(&dst[12..]);
    }
    let mut old = [0u8; 32];
    let addrs = frame.get_mut(at..at + n).ok_or(DropReason::Truncated)?;
    old[..n].copy_from_slice(addrs);
    addrs.copy_from_slice(&new[..n]);
    if !flow.v6 {
        let c = frame.get_mut(flow.l3 + 10..flow.l3 + 12).ok_or(DropReason::Truncated)?;
        let v = update_bytes(u16::from_be_bytes([c[0], c[1]]), &old[..n], &new[..n]);
        c.copy_from_slice(&v.to_be_bytes());
    }
    let mut new_ports = [0u8; 4];
    new_ports[..2].copy_from_slice(&sport.to_be_bytes());
    new_ports[2..].copy_from_slice(&dport.to_be_bytes());
    let p = frame.get_mut(flow.l4..flow.l4 + 4).ok_or(DropReason::Truncated)?;
    let mut old_ports = [0u8; 4];
    old_ports.copy_from_slice(p);
    p.copy_from_slice(&new_ports);
    let udp = flow.key.proto == Protocol::UDP;
    let c_at = flow.l4 + if udp { 6 } else { 16 };
    let c = frame.get_mut(c_at..c_at + 2).ok_or(DropReason::Truncated)?;
    let check = u16::from_be_bytes([c[0], c[1]]);
    if udp && !flow.v6 && check == 0 {
        return Ok(());
    }
    let mut v = update_bytes(check, &old[..n], &new[..n]);
    v = update_bytes(v, &old_ports, &new_ports);
    if udp && v == 0 {
        v = 0xffff;
    }
    c.copy_from_slice(&v.to_be_bytes());
    Ok(())
}

#[inline]
fn is_new_syn(flags: u8) -> bool {
    use crate::wire::tcp::TcpFlags;
    flags & TcpFlags::SYN != 0 && flags & TcpFlags::ACK == 0
}

//! Traffic to a VIP: find the service, find or choose the backend (connection tracking,
//! then Maglev), and rewrite the frame for it. DSR only changes MACs: the IP packet goes to
//! the backend untouched, and the backend answers the client directly.

use std::net::IpAddr;

use super::{
    conntrack::{next_tcp_state, Conntrack, Entry, FlowKey, FlowState},
    maglev::EMPTY,
    pipeline::{Reply, Verdict},
    snapshot::{ForwardMode, ServiceKey},
    DropReason, Snapshot,
};
use crate::wire::{ipv4::Protocol, EthernetAddress, EthernetFrame, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

/// A worker's own datapath state.
#[derive(Debug)]
pub struct WorkerState {
    /// Its flow table.
    pub conntrack: Conntrack,
}

/// What the forwarding step needs to know about a packet.
struct Flow {
    key: FlowKey,
    tcp_flags: Option<u8>,
}

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

fn v4_mapped(a: std::net::Ipv4Addr) -> [u8; 16] {
    a.to_ipv6_mapped().octets()
}

/// The layer-3 bytes of the frame in `buf[..len]`, after any VLAN tags.
fn l3(buf: &[u8], len: usize) -> Result<&[u8], DropReason> {
    let frame = buf.get(..len).ok_or(DropReason::Truncated)?;
    let at = EthernetFrame::new_checked(frame)?.header_len();
    frame.get(at..).ok_or(DropReason::Truncated)
}

/// The service and flow of an IPv4 packet to a VIP.
fn classify_v4(buf: &[u8], len: usize) -> Result<(ServiceKey, Flow), DropReason> {
    let ip = Ipv4Packet::new_checked(l3(buf, len)?)?;
    if ip.frag_offset() != 0 {
        // A later fragment carries no ports, so it cannot be matched to a flow here.
        return Err(DropReason::Fragment);
    }
    let dst = ip.dst_addr();
    flow(IpAddr::V4(dst), v4_mapped(ip.src_addr()), v4_mapped(dst), ip.protocol(), ip.payload())
}

/// The service and flow of an IPv6 packet to a VIP (neighbour discovery is handled before).
fn classify_v6(buf: &[u8], len: usize) -> Result<(ServiceKey, Flow), DropReason> {
    let ip = Ipv6Packet::new_checked(l3(buf, len)?)?;
    let dst = ip.dst_addr();
    flow(IpAddr::V6(dst), ip.src_addr().octets(), dst.octets(), ip.next_header(), ip.payload())
}

/// The service key and flow of a transport payload, whichever the IP family.
fn flow(vip: IpAddr, src: [u8; 16], dst: [u8; 16], proto: u8, l4: &[u8]) -> Result<(ServiceKey, Flow), DropReason> {
    let (src_port, dst_port, tcp_flags) = ports(proto, l4)?;
    let key = FlowKey { src, dst, src_port, dst_port, proto };
    Ok((ServiceKey { vip, port: dst_port, proto }, Flow { key, tcp_flags }))
}

/// IPv4 or IPv6 (`v6`) to a VIP: classify, then forward.
pub(super) fn ip(
    now: u64,
    snap: &Snapshot,
    st: &mut WorkerState,
    mac: EthernetAddress,
    buf: &mut [u8],
    len: usize,
    v6: bool,
) -> Verdict {
    let classified = if v6 { classify_v6(buf, len) } else { classify_v4(buf, len) };
    match classified {
        Ok((svc, flow)) => forward(now, snap, st, mac, buf, len, &svc, flow),
        Err(r) => Verdict::Drop(r),
    }
}

#[allow(clippy::too_many_arguments)]
fn forward(
    now: u64,
    snap: &Snapshot,
    st: &mut WorkerState,
    mac: EthernetAddress,
    buf: &mut [u8],
    len: usize,
    svc_key: &ServiceKey,
    flow: Flow,
) -> Verdict {
    let Some(svc) = snap.service(svc_key) else { return Verdict::Drop(DropReason::NoService) };
    let hash = flow.key.hash();
    let timeouts = *st.conntrack.timeouts();
    // A tracked flow keeps its backend while that backend is in the service, whatever the
    // Maglev table says now; a SYN on a closing flow starts a new connection.
    let tracked = match st.conntrack.lookup(&flow.key, hash, now) {
        Some(e) if !(e.state == FlowState::Closing && flow.tcp_flags.is_some_and(is_new_syn)) => {
            match svc.backend_index(e.backend_key, e.backend) {
                Some(i) => {
                    e.backend = i;
                    Conntrack::touch(&timeouts, e, flow.tcp_flags, now);
                    Some(i)
                }
                None => None,
            }
        }
        _ => None,
    };
    let idx = match tracked {
        Some(i) => i,
        None => {
            let pick = svc.table().lookup(hash);
            if pick == EMPTY {
                return Verdict::Drop(DropReason::NoBackend);
            }
            let Some(b) = svc.backends.get(usize::try_from(pick).unwrap_or(usize::MAX)) else {
                return Verdict::Drop(DropReason::NoBackend);
            };
            let state = match flow.tcp_flags {
                Some(f) => next_tcp_state(FlowState::Empty, f),
                None if flow.key.proto == Protocol::UDP => FlowState::Udp,
                None => FlowState::Other,
            };
            let entry = Entry { key: flow.key, hash, backend: pick, backend_key: b.key, state, ..Entry::default() };
            // A full table is counted there; the flow is then served from Maglev alone.
            let _ = st.conntrack.insert(entry, now);
            pick
        }
    };
    let Some(backend) = svc.backends.get(usize::try_from(idx).unwrap_or(usize::MAX)) else {
        return Verdict::Drop(DropReason::NoBackend);
    };
    let Some(next_hop) = backend.mac else { return Verdict::Drop(DropReason::NextHopUnresolved) };
    match svc.mode {
        ForwardMode::Dsr => {
            let Some(out) = buf.get_mut(..12) else { return Verdict::Drop(DropReason::Truncated) };
            out[0..6].copy_from_slice(&next_hop.0);
            out[6..12].copy_from_slice(&mac.0);
            Verdict::Tx { len, reply: Reply::Forward }
        }
        ForwardMode::Snat => Verdict::Drop(DropReason::Unsupported),
    }
}

#[inline]
fn is_new_syn(flags: u8) -> bool {
    use crate::wire::tcp::TcpFlags;
    flags & TcpFlags::SYN != 0 && flags & TcpFlags::ACK == 0
}

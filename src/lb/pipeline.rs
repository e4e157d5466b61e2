//! One frame in, one verdict out: classify, then answer, forward or drop. Pure: the frame
//! is rewritten in place and nothing else is touched. This is the only step that calls the
//! others (neighbour, forwarding, ICMP); they share only the leaf types.

use super::{
    ctx::Ctx,
    forward::{self, Classified},
    heartbeat, icmp, neighbor,
    state::WorkerState,
    stats::DropReason,
    verdict::{Reply, Verdict},
};
use crate::wire::{ipv4::Protocol, EtherType, EthernetFrame};

/// Withholds a neighbour answer while the worker is fenced.
#[inline]
fn fence(state: &WorkerState, v: Verdict) -> Verdict {
    match v {
        Verdict::Tx { reply: Reply::Arp | Reply::Ndp, .. } if state.fenced => Verdict::Drop(DropReason::Fenced),
        v => v,
    }
}

/// A frame read ahead of its batch: the flow of an IPv4 TCP or UDP frame (the common case,
/// read in one pass over fixed offsets) and its hash. The worker reads every frame of a
/// batch first, prefetches the flow-table slots, then processes the batch with what it
/// read, so no frame is parsed or hashed twice. Reads the frame, changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed(Option<forward::Flow>);

impl Parsed {
    /// Reads the frame in `buf[..len]`.
    #[inline]
    pub fn of(buf: &[u8], len: usize) -> Self {
        Parsed(forward::fast_v4(buf, len))
    }

    /// Where [`process_parsed`] will look for the frame's flow in the flow table (the fast
    /// path's frames only), for the worker to prefetch before it processes the batch.
    #[inline]
    pub fn home(&self, state: &WorkerState) -> Option<(*const u8, usize)> {
        self.0.as_ref().map(|f| state.conntrack.home_of(f.hash))
    }
}

/// Decides what happens to the frame in `buf[..len]`, received on the interface whose MAC
/// is `cx.mac`, at `cx.now` (the monotonic time in nanoseconds, used by connection
/// tracking). `buf` may be longer than the frame: the bytes after it are room for a longer
/// reply.
#[inline]
pub fn process(cx: &Ctx<'_>, state: &mut WorkerState, buf: &mut [u8], len: usize) -> Verdict {
    process_parsed(cx, state, buf, len, &Parsed::of(buf, len))
}

/// [`process`] for a frame already read: `parsed` is [`Parsed::of`] the frame as it is now
/// (read ahead and not changed since). Given another frame's, the verdict is wrong but
/// every offset is still checked.
#[inline]
pub fn process_parsed(cx: &Ctx<'_>, state: &mut WorkerState, buf: &mut [u8], len: usize, parsed: &Parsed) -> Verdict {
    // Most frames are IPv4 TCP or UDP: one pass over fixed offsets. The rest (and any frame
    // it does not take) goes the general way below.
    match &parsed.0 {
        Some(flow) => forward::flow(cx, state, buf, len, flow),
        None => general(cx, state, buf, len),
    }
}

/// [`process_parsed`] for the frames the fast path does not take: out of line, so that the
/// fast path's call needs no frame of its own.
#[inline(never)]
fn general(cx: &Ctx<'_>, state: &mut WorkerState, buf: &mut [u8], len: usize) -> Verdict {
    let Some(frame) = buf.get(..len) else { return Verdict::Drop(DropReason::Truncated) };
    let (ethertype, icmpv6) = match EthernetFrame::new_checked(frame) {
        // Neighbour solicitations and advertisements (ICMPv6 right after the fixed IPv6
        // header) go to the neighbour code; the rest of IPv6, other ICMPv6 included, to
        // forwarding.
        Ok(eth) => {
            let p = eth.payload();
            (eth.ethertype(), p.get(6) == Some(&Protocol::ICMPV6) && matches!(p.get(40), Some(135 | 136)))
        }
        Err(e) => return Verdict::Drop(e.into()),
    };
    match ethertype {
        // A fenced node (it has not heard a majority of its peers lately) answers nobody:
        // another node may own its VIPs by now. Claims are still watched.
        EtherType::ARP => fence(state, neighbor::arp(cx, buf, len)),
        EtherType::IPV6 if icmpv6 => fence(state, neighbor::ndp(cx, buf, len)),
        heartbeat::ETHERTYPE => Verdict::Heartbeat,
        EtherType::IPV6 => ip(cx, state, buf, len, true),
        EtherType::IPV4 => ip(cx, state, buf, len, false),
        _ => Verdict::Drop(DropReason::Unsupported),
    }
}

/// IPv4 or IPv6 (`v6`) to a VIP or a SNAT address: TCP and UDP to forwarding, ICMP to the
/// ICMP step.
#[inline]
fn ip(cx: &Ctx<'_>, state: &mut WorkerState, buf: &mut [u8], len: usize, v6: bool) -> Verdict {
    match forward::classify(buf, len, v6) {
        Ok(Classified::Flow(flow)) => forward::flow(cx, state, buf, len, &flow),
        Ok(Classified::Icmp { l3, l4 }) => icmp::icmp(cx, state, buf, len, l3, l4, v6).unwrap_or_else(Verdict::Drop),
        Err(r) => Verdict::Drop(r),
    }
}

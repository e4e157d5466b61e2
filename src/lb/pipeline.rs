//! One frame in, one verdict out: classify, then answer, forward or drop. Pure: the frame
//! is rewritten in place and nothing else is touched.

use std::net::IpAddr;

use super::{forward, heartbeat, neighbor, DropReason, Snapshot, WorkerState};
use crate::wire::{ipv4::Protocol, EtherType, EthernetAddress, EthernetFrame};

/// Another host claiming one of our VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// The VIP claimed.
    pub vip: IpAddr,
    /// The MAC that claimed it.
    pub mac: EthernetAddress,
}

/// Which kind of answer a transmitted frame is (for counting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// ARP reply.
    Arp,
    /// Neighbour advertisement.
    Ndp,
    /// Traffic forwarded to a backend.
    Forward,
    /// An ICMP error about one of our flows, sent where the flow goes (translated for SNAT).
    IcmpError,
    /// An echo reply to a ping of a VIP or SNAT address.
    Echo,
    /// A SNAT backend's reply, translated back and sent to the client.
    SnatReply {
        /// The flow's port belongs to another worker's share: the reply crossed workers.
        crossed: bool,
    },
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the first `len` bytes of the buffer back out of the interface.
    Tx {
        /// New length of the frame.
        len: usize,
        /// What kind of frame it is.
        reply: Reply,
    },
    /// Drop it, counted under this reason.
    Drop(DropReason),
    /// Drop it and report the claim to the control thread.
    Conflict(Conflict),
    /// A heartbeat of another xlb node: the worker hands it to the control thread.
    Heartbeat,
}

/// Withholds a neighbour answer while the worker is fenced.
#[inline]
fn fence(state: &WorkerState, v: Verdict) -> Verdict {
    match v {
        Verdict::Tx { reply: Reply::Arp | Reply::Ndp, .. } if state.fenced => Verdict::Drop(DropReason::Fenced),
        v => v,
    }
}

/// Decides what happens to the frame in `buf[..len]`, received on an interface whose MAC
/// is `mac`. `buf` may be longer than the frame: the bytes after it are room for a longer
/// reply. `now` is the monotonic time in nanoseconds (used by connection tracking).
#[inline]
pub fn process(
    now: u64,
    snap: &Snapshot,
    state: &mut WorkerState,
    mac: EthernetAddress,
    buf: &mut [u8],
    len: usize,
) -> Verdict {
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
        EtherType::ARP => fence(state, neighbor::arp(snap, mac, buf, len)),
        EtherType::IPV6 if icmpv6 => fence(state, neighbor::ndp(snap, mac, buf, len)),
        heartbeat::ETHERTYPE => Verdict::Heartbeat,
        EtherType::IPV6 => forward::ip(now, snap, state, mac, buf, len, true),
        EtherType::IPV4 => forward::ip(now, snap, state, mac, buf, len, false),
        _ => Verdict::Drop(DropReason::Unsupported),
    }
}

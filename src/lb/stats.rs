//! Per-worker counters, indexed by enums so that counting is an array increment, and
//! per-worker traffic counters by service and backend.
//!
//! [`DropReason`] and [`Counter`] are each written once, as a list of `Variant => "name"`
//! entries with their docs: `counted!` makes the `#[repr(u8)]` enum, its `name()`,
//! its `ALL` array and its `COUNT` from it, so adding one is adding one line (and its doc).

use std::sync::atomic::{AtomicU64, Ordering};

/// Makes a `#[repr(u8)]` enum from `Variant => "name"` entries (each with its doc), with
/// `name()` (the label in logs, JSON and metrics), `ALL` (every variant in index order) and
/// `COUNT`, all from the one list.
macro_rules! counted {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u8)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// How many there are.
            pub const COUNT: usize = [$($name::$variant),+].len();
            /// Every one, in index order.
            pub const ALL: [$name; $name::COUNT] = [$($name::$variant),+];

            /// Name used in logs, JSON and metrics labels.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }
        }
    };
}

counted! {
    /// Why the datapath dropped a frame.
    pub enum DropReason {
        /// A header was shorter than it must be, or than a length field says.
        Truncated => "truncated",
        /// A header field held a forbidden value.
        Malformed => "malformed",
        /// A checksum did not match.
        BadChecksum => "bad_checksum",
        /// An EtherType or protocol the datapath does not handle reached it.
        Unsupported => "unsupported",
        /// ARP/NDP about an address that is not an owned VIP (probing or unknown).
        NotOwned => "not_owned",
        /// An ARP or NDP message that needs no answer (a reply, a non-conflicting claim).
        NoAnswerNeeded => "no_answer_needed",
        /// A neighbour-discovery message with a hop limit other than 255 (RFC 4861).
        NdpHopLimit => "ndp_hop_limit",
        /// Traffic to a VIP on which no service listens.
        NoService => "no_service",
        /// A client outside the service's source ranges (`loadBalancerSourceRanges`).
        SourceRange => "source_range",
        /// A frame that claimed one of our VIPs for another MAC (reported as a conflict).
        Conflict => "conflict",
        /// The frame buffer cannot hold the reply.
        NoRoom => "no_room",
        /// A non-first IPv4 fragment to a VIP: it carries no ports to match a flow with.
        Fragment => "fragment",
        /// The service has no backend that can take new flows (all drained or unresolved).
        NoBackend => "no_backend",
        /// The flow's backend has no resolved next-hop MAC yet.
        NextHopUnresolved => "next_hop_unresolved",
        /// The flow's backend is reached through another of xlb's interfaces than the one
        /// the frame came in on (a frame leaves by the interface it came in on).
        OtherInterface => "other_interface",
        /// A new SNAT flow found no free port on any SNAT address of its family.
        SnatPortsExhausted => "snat_ports_exhausted",
        /// A packet to a SNAT address that matches no live translation (or came from another
        /// host than the backend the port was given to).
        NoSnatFlow => "no_snat_flow",
        /// A SNAT service's traffic with no SNAT address of its family configured.
        NoSnatAddress => "no_snat_address",
        /// A new SNAT flow could not be tracked: the worker's flow table is full of live flows.
        ConntrackFull => "conntrack_full",
        /// An ARP/NDP request for a VIP left unanswered: this node is fenced (it has not heard a
        /// majority of its peers within the takeover time).
        Fenced => "fenced",
    }
}

impl From<crate::wire::Error> for DropReason {
    fn from(e: crate::wire::Error) -> Self {
        match e {
            crate::wire::Error::Truncated => DropReason::Truncated,
            crate::wire::Error::Malformed => DropReason::Malformed,
            crate::wire::Error::Checksum => DropReason::BadChecksum,
        }
    }
}

counted! {
    /// What a worker counts besides drops.
    pub enum Counter {
        /// Frames received from the socket.
        RxFrames => "rx_frames",
        /// Frames handed to the socket for transmission (replies and announcements).
        TxFrames => "tx_frames",
        /// ARP replies sent for owned VIPs.
        ArpReplies => "arp_replies",
        /// Neighbour advertisements sent in answer to solicitations.
        NdpAdverts => "ndp_adverts",
        /// Announcement and probe frames sent on the control thread's behalf.
        ControlFrames => "control_frames",
        /// Conflicts seen (another MAC claiming a VIP of ours).
        Conflicts => "conflicts",
        /// Conflict reports not sent: over the rate limit, or the control thread's queue full.
        ConflictReportsLost => "conflict_reports_lost",
        /// Frames the control thread asked to send that found no free buffer or ring slot.
        TxNoRoom => "tx_no_room",
        /// Frames forwarded to a backend.
        Forwarded => "forwarded",
        /// ICMP errors about our flows sent on to a backend or (SNAT) back to the client.
        IcmpErrors => "icmp_errors",
        /// Echo replies to pings of a VIP or SNAT address.
        EchoReplies => "echo_replies",
        /// SNAT replies translated back and sent to the client.
        SnatReplies => "snat_replies",
        /// Of those, replies whose flow belongs to another worker (they arrived on another queue
        /// than the flow's client traffic).
        SnatRepliesCrossed => "snat_replies_crossed",
        /// Batches processed.
        Batches => "batches",
        /// Nanoseconds spent processing batches (busy time).
        BusyNanos => "busy_ns",
        /// Times the worker went to sleep in poll() after an idle spell.
        Sleeps => "sleeps",
        /// Heartbeats of other xlb nodes received and handed to the control thread.
        Heartbeats => "heartbeats",
        /// Heartbeats not taken in: malformed, unsigned or forged (with a key), failover off, or
        /// the control thread's queue full.
        HeartbeatsLost => "heartbeats_lost",
    }
}

/// A worker's own counters: plain integers, written by that worker alone.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// By [`Counter`].
    pub counters: [u64; Counter::COUNT],
    /// By [`DropReason`].
    pub drops: [u64; DropReason::COUNT],
}

impl WorkerStats {
    /// Adds one to a counter.
    #[inline]
    pub fn bump(&mut self, c: Counter) {
        self.counters[c as usize] += 1;
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(&mut self, c: Counter, n: u64) {
        self.counters[c as usize] += n;
    }

    /// Counts a drop.
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    /// A counter's value.
    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize]
    }

    /// Drops for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
}

/// An object that is not counted (no id was given to it).
pub const UNCOUNTED: u32 = u32::MAX;

/// Traffic of one service or backend: packets and bytes towards the backends, and (SNAT)
/// back to the clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets forwarded towards the backend(s).
    pub packets: u64,
    /// Bytes (whole frames) forwarded towards the backend(s).
    pub bytes: u64,
    /// SNAT replies sent back to clients.
    pub reply_packets: u64,
    /// Bytes of those replies.
    pub reply_bytes: u64,
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, o: Traffic) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.reply_packets += o.reply_packets;
        self.reply_bytes += o.reply_bytes;
    }
}

#[derive(Debug, Default)]
struct Cell([AtomicU64; 4]);

impl Cell {
    #[inline]
    fn add(&self, i: usize, n: u64) {
        // One writer per cell (its worker): a load and a store, no locked instruction.
        if let Some(a) = self.0.get(i) {
            a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }

    fn read(&self) -> Traffic {
        let v = |i: usize| self.0[i].load(Ordering::Relaxed);
        Traffic { packets: v(0), bytes: v(1), reply_packets: v(2), reply_bytes: v(3) }
    }
}

/// One worker's traffic counters per service and per backend, indexed by the ids the control
/// plane gives them (`Service::stats_id`, `Backend::stats_id`). Written by that worker only;
/// read by the control plane at any time.
#[derive(Debug)]
pub struct ObjectCounters {
    services: Box<[Cell]>,
    backends: Box<[Cell]>,
}

impl ObjectCounters {
    /// Room for this many service and backend ids.
    pub fn new(services: usize, backends: usize) -> Self {
        let cells = |n: usize| (0..n).map(|_| Cell::default()).collect();
        ObjectCounters { services: cells(services), backends: cells(backends) }
    }

    /// The bytes [`ObjectCounters::new`] allocates for this many ids.
    pub fn bytes_for(services: usize, backends: usize) -> usize {
        services.saturating_add(backends).saturating_mul(std::mem::size_of::<Cell>())
    }

    /// Counts a frame of `bytes` for a service and a backend; `reply`: a SNAT reply.
    #[inline(always)]
    pub fn count(&self, service: u32, backend: u32, bytes: usize, reply: bool) {
        let base = if reply { 2 } else { 0 };
        let bytes = bytes as u64;
        for (cells, id) in [(&self.services, service), (&self.backends, backend)] {
            if let Some(c) = cells.get(usize::try_from(id).unwrap_or(usize::MAX)) {
                c.add(base, 1);
                c.add(base + 1, bytes);
            }
        }
    }

    /// A service's traffic on this worker.
    pub fn service(&self, id: u32) -> Traffic {
        self.services.get(usize::try_from(id).unwrap_or(usize::MAX)).map(Cell::read).unwrap_or_default()
    }

    /// A backend's traffic on this worker.
    pub fn backend(&self, id: u32) -> Traffic {
        self.backends.get(usize::try_from(id).unwrap_or(usize::MAX)).map(Cell::read).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_in_index_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{}", c.name());
        }
    }

    #[test]
    fn object_counters_add_up_and_ignore_unknown_ids() {
        let c = ObjectCounters::new(2, 4);
        c.count(1, 3, 100, false);
        c.count(1, 3, 60, false);
        c.count(1, 2, 70, true);
        c.count(UNCOUNTED, 9, 1000, false);
        assert_eq!(c.service(1), Traffic { packets: 2, bytes: 160, reply_packets: 1, reply_bytes: 70 });
        assert_eq!(c.backend(3), Traffic { packets: 2, bytes: 160, ..Traffic::default() });
        assert_eq!(c.backend(2), Traffic { reply_packets: 1, reply_bytes: 70, ..Traffic::default() });
        assert_eq!(c.service(0), Traffic::default());
        assert_eq!(c.service(UNCOUNTED), Traffic::default());
    }
}

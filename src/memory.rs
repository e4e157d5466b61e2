//! The memory xlb takes, computed from the layout of what it allocates at start: what
//! `xlb run` prints and checks against the machine before it opens anything, what `xlb check`
//! prints and checks for a config, and what the Helm chart requests (its `xlb.memoryMiB`
//! template repeats this arithmetic; tests/chart.rs holds the two equal).
//!
//! Per queue (one worker each), allocated and touched when the worker starts:
//! - the flow table: [`conntrack::slots_for`] slots of one cache line;
//! - the UMEM: `--frames` x [`FRAME_SIZE`] bytes, pinned by the kernel when the socket binds;
//! - the traffic counters by service and backend ([`ObjectCounters::bytes_for`] of
//!   [`MAX_COUNTED_SERVICES`] and [`MAX_COUNTED_BACKENDS`]);
//! - the worker's own: the channel of frames from the control thread ([`CONTROL_QUEUE`]
//!   [`OutFrame`]s), and [`WORKER_OVERHEAD`] for what is not itemised (the four rings, the
//!   descriptor lists, the thread's stack and allocator pages).
//!
//! Shared by the workers: the SNAT reverse table ([`snat_bytes`]). For the process: a base of
//! [`BASE_MIB`] (code, libraries, the control thread's runtime and state).
//!
//! Each queue's figure and the SNAT table's are rounded up to whole MiB, so that the total is
//! a whole number of MiB that the chart can compute with integers. tests/memory.rs ties each
//! term to the allocations it stands for; tests/lab.rs checks the total against the resident
//! memory of a running xlb.

use std::{fmt, mem::size_of};

use crate::{
    control::services::{MAX_COUNTED_BACKENDS, MAX_COUNTED_SERVICES},
    io::worker::{CONTROL_QUEUE, FRAME_SIZE},
    lb::{conntrack, out::OutFrame, stats::ObjectCounters},
};

/// A mebibyte.
pub const MIB: usize = 1 << 20;

/// The process without its queues and tables: code and libraries as mapped, the control
/// thread's runtime, channels and state. Measured as the resident memory of `xlb run` with
/// one VIP and a flow table of 16 flows on one queue and on two, less the queues' share:
/// 21 MiB for a release build, 27 MiB for a debug build (Linux 6.18). Remeasured after the
/// Kubernetes side grew (Cilium's and MetalLB's kinds, `xlb migrate`), one queue of 262,144
/// flows: 24 MiB release, 31 MiB debug. Counted between the two, so that both stay within a
/// few percent at realistic table sizes.
pub const BASE_MIB: usize = 27;

/// What a worker takes besides its tables and its control channel: its four AF_XDP rings
/// (112 KiB at the default ring size), its descriptor lists, its thread's stack and the
/// allocator's pages for its thread. Measured at 1.7 MiB a queue for a release build and 2.1
/// MiB for a debug build (one queue against two, tables of 16 flows).
pub const WORKER_OVERHEAD: usize = 2 * MIB;

/// A SNAT reverse-translation slot (`Slot` in lb/snat.rs).
pub const SNAT_SLOT: usize = crate::lb::snat::SLOT_BYTES;

/// A SNAT client-side index word (`by_client` in lb/snat.rs), one per slot.
pub const SNAT_INDEX: usize = crate::lb::snat::INDEX_BYTES;

/// Bytes of a crossbeam bounded channel's slot for `T`: a stamp word and the message.
fn channel_slot<T>() -> usize {
    size_of::<(usize, T)>()
}

/// What the figure is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Queues served (one worker each).
    pub queues: u32,
    /// Flows each worker's table is sized for (`conntrack.capacity`, `--conntrack-capacity`).
    pub conntrack_capacity: usize,
    /// UMEM frames per queue (`--frames`).
    pub frames: u32,
    /// SNAT addresses.
    pub snat_addrs: usize,
    /// SNAT port range, both ends included.
    pub snat_ports: (u16, u16),
}

/// One queue's memory, by part, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerQueue {
    /// Slots of the flow table.
    pub conntrack_slots: usize,
    /// The flow table.
    pub conntrack: usize,
    /// The UMEM.
    pub umem: usize,
    /// Traffic counters by service and backend.
    pub counters: usize,
    /// The control channel and [`WORKER_OVERHEAD`].
    pub worker: usize,
}

impl PerQueue {
    /// A queue with a table for `capacity` flows and `frames` UMEM frames.
    pub fn new(capacity: usize, frames: u32) -> Self {
        PerQueue {
            conntrack_slots: conntrack::slots_for(capacity),
            conntrack: conntrack::bytes_for(capacity),
            umem: usize::try_from(u64::from(frames) * u64::from(FRAME_SIZE)).unwrap_or(usize::MAX),
            counters: ObjectCounters::bytes_for(MAX_COUNTED_SERVICES, MAX_COUNTED_BACKENDS),
            worker: control_queue_bytes() + WORKER_OVERHEAD,
        }
    }

    /// All of it, in bytes.
    pub fn bytes(&self) -> usize {
        self.conntrack.saturating_add(self.umem).saturating_add(self.counters).saturating_add(self.worker)
    }

    /// All of it, in MiB rounded up.
    pub fn mib(&self) -> usize {
        mib_up(self.bytes())
    }
}

/// The bytes of a worker's channel of frames from the control thread (allocated whole).
pub fn control_queue_bytes() -> usize {
    CONTROL_QUEUE * channel_slot::<OutFrame>()
}

/// The bytes of the SNAT reverse table for `addrs` addresses and ports `lo..=hi`: a slot
/// and an index word per address, protocol (TCP, UDP) and port. None without addresses.
pub fn snat_bytes(addrs: usize, (lo, hi): (u16, u16)) -> usize {
    if addrs == 0 || lo > hi {
        return 0;
    }
    let slots = addrs.saturating_mul(2).saturating_mul(usize::from(hi - lo) + 1);
    slots.saturating_mul(SNAT_SLOT + SNAT_INDEX)
}

/// `bytes` in MiB, rounded up.
pub fn mib_up(bytes: usize) -> usize {
    bytes.div_ceil(MIB)
}

/// The memory of a set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// What it was computed from.
    pub sizes: Sizes,
    /// Each queue's.
    pub per_queue: PerQueue,
    /// The SNAT table's, in bytes (shared).
    pub snat: usize,
}

impl Memory {
    /// The memory of `sizes`.
    pub fn new(sizes: Sizes) -> Self {
        Memory {
            sizes,
            per_queue: PerQueue::new(sizes.conntrack_capacity, sizes.frames),
            snat: snat_bytes(sizes.snat_addrs, sizes.snat_ports),
        }
    }

    /// Queues x each queue's MiB, plus the SNAT table's MiB, plus [`BASE_MIB`].
    pub fn total_mib(&self) -> usize {
        let queues = usize::try_from(self.sizes.queues).unwrap_or(usize::MAX);
        queues.saturating_mul(self.per_queue.mib()).saturating_add(mib_up(self.snat)).saturating_add(BASE_MIB)
    }
}

/// `2 queue(s) x 141 MiB (conntrack 2,097,152 slots 128 MiB + UMEM 8 MiB + counters 2.2 MiB
/// + worker 2.2 MiB) + SNAT 12 MiB + base 27 MiB = 321 MiB`.
impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.per_queue;
        write!(
            f,
            "{} queue(s) x {} MiB (conntrack {} slots {} + UMEM {} + counters {} + worker {}) + SNAT {} MiB + base {BASE_MIB} MiB = {} MiB",
            self.sizes.queues,
            q.mib(),
            grouped(q.conntrack_slots),
            Mib(q.conntrack),
            Mib(q.umem),
            Mib(q.counters),
            Mib(q.worker),
            mib_up(self.snat),
            self.total_mib()
        )
    }
}

/// Bytes shown in MiB: whole when they are, else with one decimal.
struct Mib(usize);

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(MIB) {
            write!(f, "{} MiB", self.0 / MIB)
        } else {
            let tenths = self.0.saturating_mul(10).div_ceil(MIB);
            write!(f, "{}.{} MiB", tenths / 10, tenths % 10)
        }
    }
}

/// `n` with thousands separated by commas: 2,097,152.
pub fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{io::worker::DEFAULT_FRAMES, lb::snat::DEFAULT_PORTS};

    fn sizes(queues: u32, capacity: usize, snat_addrs: usize) -> Sizes {
        Sizes { queues, conntrack_capacity: capacity, frames: DEFAULT_FRAMES, snat_addrs, snat_ports: DEFAULT_PORTS }
    }

    #[test]
    fn the_default_queue_is_its_table_its_umem_and_a_few_mib() {
        let q = PerQueue::new(1 << 20, DEFAULT_FRAMES);
        assert_eq!(q.conntrack_slots, 2_097_152);
        assert_eq!(q.conntrack, 128 * MIB, "64 bytes a slot");
        assert_eq!(q.umem, 8 * MIB, "4096 frames of 2 KiB");
        assert_eq!(q.counters, (4096 + 65535) * 32, "four u64 per service and per backend");
        assert_eq!(q.worker, 1024 * 176 + 2 * MIB, "1024 frames of 160 bytes with their length and stamp");
        assert_eq!(q.mib(), 141);
    }

    #[test]
    fn snat_is_a_slot_and_an_index_word_per_address_protocol_and_port() {
        assert_eq!(snat_bytes(0, DEFAULT_PORTS), 0, "no addresses, no table");
        assert_eq!(snat_bytes(1, DEFAULT_PORTS), 2 * 64_512 * 96);
        assert_eq!(snat_bytes(3, (2000, 2999)), 3 * 2 * 1000 * 96);
        assert_eq!(snat_bytes(1, (3000, 2000)), 0, "an empty range is refused elsewhere");
        assert_eq!(mib_up(snat_bytes(1, DEFAULT_PORTS)), 12);
    }

    #[test]
    fn the_total_is_whole_mib_per_queue_plus_snat_plus_base() {
        let m = Memory::new(sizes(2, 1 << 20, 1));
        assert_eq!(m.total_mib(), 2 * 141 + 12 + BASE_MIB);
        assert_eq!(
            m.to_string(),
            "2 queue(s) x 141 MiB (conntrack 2,097,152 slots 128 MiB + UMEM 8 MiB + counters 2.2 MiB + worker 2.2 MiB) \
             + SNAT 12 MiB + base 27 MiB = 321 MiB"
        );
        let small = Memory::new(sizes(1, 16, 0));
        assert_eq!(small.total_mib(), 13 + BASE_MIB, "32 slots, 8 MiB of UMEM, counters and worker");
        // The largest table on many queues does not overflow.
        assert!(Memory::new(sizes(u32::MAX, conntrack::MAX_CAPACITY, 255)).total_mib() > 1 << 40);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        for (n, s) in [(0, "0"), (999, "999"), (1000, "1,000"), (2_097_152, "2,097,152"), (67_108_864, "67,108,864")] {
            assert_eq!(grouped(n), s);
        }
    }
}

//! A worker: one AF_XDP socket on one (interface, queue), one pinned thread that polls it.
//!
//! The loop, per batch: recycle TX completions, refill the fill ring, take the current
//! snapshot, receive up to `batch` frames, run [`lb::process`](crate::lb::process) on each,
//! add the frames the control thread asked to send, transmit, publish counters. While
//! frames flow it never sleeps; after `idle_spin` without any it sleeps in poll() on the
//! socket and its waker, so an idle xlb costs next to nothing.
//!
//! Here: the configuration, the shared state, the handle, [`spawn`], the fence and the
//! requests; the socket and UMEM set-up is in `xsk.rs`, the polling loop in `run.rs`.

mod run;
mod xsk;

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use hdrhistogram::Histogram;

use self::run::Worker;
pub use self::xsk::{Xsk, XskParams};
use super::wake::Waker;
use crate::{
    lb::{
        conntrack::{Conntrack, ConntrackStats, Entry, Timeouts},
        heartbeat::{self, Heartbeat},
        neighbor::OutFrame,
        snat::SnatTable,
        stats::ObjectCounters,
        store::Store,
        Counter, DropReason, Snapshot, WorkerStats,
    },
    wire::EthernetAddress,
};

pub use crate::abi::ZeroCopy;

/// Bytes of one UMEM frame.
pub const FRAME_SIZE: u32 = 2048;

/// UMEM frames per queue unless told otherwise (`xlb run --frames`): 8 MiB of UMEM.
pub const DEFAULT_FRAMES: u32 = 4096;

/// Frames the control thread may queue for a worker to send (announcements, probes,
/// heartbeats): the channel is allocated whole when the worker starts.
pub const CONTROL_QUEUE: usize = 1024;

/// How a socket ended up bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Frames are DMA'd straight into the UMEM.
    ZeroCopy,
    /// The kernel copies each frame into the UMEM.
    Copy,
}

impl std::fmt::Display for BindMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        })
    }
}

/// Sizes and behaviour of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Interface name.
    pub ifname: String,
    /// Interface MAC.
    pub mac: EthernetAddress,
    /// Queue id.
    pub queue: u32,
    /// This worker's number among every worker of the process (all interfaces): its share
    /// of the SNAT ports and its thread's name.
    pub index: usize,
    /// Core to pin to (none: not pinned).
    pub core: Option<usize>,
    /// UMEM frames (each [`FRAME_SIZE`] bytes).
    pub frames: u32,
    /// Size of each of the four rings (power of two).
    pub ring_size: u32,
    /// Most frames taken from the RX ring at once.
    pub batch: usize,
    /// How long the worker spins without traffic before it sleeps in poll().
    pub idle_spin: Duration,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
    /// Set SO_PREFER_BUSY_POLL / SO_BUSY_POLL / SO_BUSY_POLL_BUDGET on the socket.
    pub busy_poll: bool,
    /// Flows the worker's connection table is sized for.
    pub conntrack_capacity: usize,
    /// Idle timeouts of tracked flows.
    pub timeouts: Timeouts,
    /// The SNAT reverse table shared by all workers, if SNAT addresses are configured; this
    /// worker allocates from share number `index` of its ports.
    pub snat: Option<Arc<SnatTable>>,
    /// This worker's traffic counters by service and backend.
    pub counters: Arc<ObjectCounters>,
}

/// Why a worker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A size in the configuration is not acceptable to AF_XDP.
    #[error("{what} = {value} is not valid: {why}")]
    Size {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: u32,
        /// What it must be.
        why: &'static str,
    },
    /// The UMEM could not be created.
    #[error("creating the UMEM for {ifname} queue {queue} failed: {source}")]
    Umem {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The AF_XDP socket could not be bound.
    #[error("binding an AF_XDP socket to {ifname} queue {queue} ({mode}) failed: {source}")]
    Bind {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// The mode tried.
        mode: &'static str,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The worker thread could not be started.
    #[error("starting the worker thread failed: {0}")]
    Thread(#[source] std::io::Error),
}

/// Counters a worker publishes after every batch; read by anyone, written by one worker.
#[derive(Debug, Default)]
pub struct SharedStats {
    counters: [AtomicU64; Counter::COUNT],
    drops: [AtomicU64; DropReason::COUNT],
    /// Conntrack: inserts, evictions, full, expired, live, slots.
    conntrack: [AtomicU64; 6],
}

impl SharedStats {
    pub(super) fn publish_conntrack(&self, ct: &Conntrack) {
        let s = ct.stats();
        for (a, v) in self.conntrack.iter().zip([s.inserts, s.evictions, s.full, s.expired, s.live, ct.slots() as u64])
        {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// The flow table's counters as last published, and its number of slots.
    pub fn conntrack(&self) -> (ConntrackStats, u64) {
        let v = |i: usize| self.conntrack[i].load(Ordering::Relaxed);
        (ConntrackStats { inserts: v(0), evictions: v(1), full: v(2), expired: v(3), live: v(4) }, v(5))
    }

    pub(super) fn publish(&self, s: &WorkerStats) {
        for (a, v) in self.counters.iter().zip(s.counters.iter()) {
            a.store(*v, Ordering::Relaxed);
        }
        for (a, v) in self.drops.iter().zip(s.drops.iter()) {
            a.store(*v, Ordering::Relaxed);
        }
    }

    /// A copy of the counters as last published.
    pub fn read(&self) -> WorkerStats {
        let mut s = WorkerStats::default();
        for (v, a) in s.counters.iter_mut().zip(self.counters.iter()) {
            *v = a.load(Ordering::Relaxed);
        }
        for (v, a) in s.drops.iter_mut().zip(self.drops.iter()) {
            *v = a.load(Ordering::Relaxed);
        }
        s
    }
}

/// A VIP claim seen by a worker, for the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictReport {
    /// Queue it arrived on.
    pub queue: u32,
    /// The VIP.
    pub vip: IpAddr,
    /// Who claimed it.
    pub mac: EthernetAddress,
}

/// What a worker reads and writes besides its socket.
#[derive(Debug, Clone)]
pub struct WorkerShared {
    /// The current snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Set to stop.
    pub shutdown: Arc<AtomicBool>,
    /// Where conflicts go.
    pub conflicts: Sender<ConflictReport>,
    /// Where other nodes' heartbeats go.
    pub heartbeats: Sender<Heartbeat>,
    /// Failover is on: heartbeats are taken in (off: dropped here, counted, costing the
    /// control thread nothing).
    pub failover: bool,
    /// Heartbeats must be signed with this key.
    pub heartbeat_key: Option<Arc<heartbeat::Key>>,
    /// When this node's answers to ARP/NDP must stop (self-fencing).
    pub fence: Arc<Fence>,
}

/// The self-fencing deadline, set by the control thread and read by the workers before
/// every batch: past it, VIPs' ARP/NDP requests go unanswered.
#[derive(Debug)]
pub struct Fence {
    epoch: Instant,
    until_ns: AtomicU64,
}

impl Default for Fence {
    fn default() -> Self {
        Fence { epoch: Instant::now(), until_ns: AtomicU64::new(u64::MAX) }
    }
}

impl Fence {
    /// Answers stop at `t` (unless moved again).
    pub fn set(&self, t: Instant) {
        let ns = u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        self.until_ns.store(ns, Ordering::Relaxed);
    }

    /// Never fenced (no peers to hear).
    pub fn clear(&self) {
        self.until_ns.store(u64::MAX, Ordering::Relaxed);
    }

    /// Whether answers must stop now.
    #[inline]
    pub fn fenced(&self) -> bool {
        let until = self.until_ns.load(Ordering::Relaxed);
        until != u64::MAX && u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) >= until
    }
}

/// Lowest and highest batch time the histograms hold, in nanoseconds (values outside are
/// clamped), with 2 significant digits.
pub const BATCH_NS_RANGE: (u64, u64) = (100, 100_000_000);

/// An empty batch-time histogram, as the control thread hands them to workers.
pub fn batch_histogram() -> Box<Histogram<u64>> {
    // Bounds and precision are constants that hdrhistogram accepts (low >= 1, high >= 2 low,
    // 2 significant digits): this cannot fail.
    Box::new(
        Histogram::new_with_bounds(BATCH_NS_RANGE.0, BATCH_NS_RANGE.1, 2).expect("constant histogram bounds are valid"),
    )
}

/// A request from the control thread, served by the worker between batches.
#[derive(Debug)]
pub enum WorkerRequest {
    /// Up to `max` live conntrack entries at the worker's `now`, for `xlb conntrack list`;
    /// the answer carries that `now` (entries' deadlines are on the worker's clock).
    Conntrack {
        /// Most entries.
        max: usize,
        /// Where the answer goes.
        reply: Sender<(u64, Vec<Entry>)>,
    },
    /// Swap the worker's batch-time histogram for `fresh` (empty) and send back the filled
    /// one: the worker never allocates for it.
    Histogram {
        /// An empty histogram of the same bounds.
        fresh: Box<Histogram<u64>>,
        /// Where the filled one goes.
        reply: Sender<Box<Histogram<u64>>>,
    },
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    /// The interface it serves.
    pub ifname: String,
    /// Queue it serves.
    pub queue: u32,
    /// How its socket is bound.
    pub mode: BindMode,
    /// Its counters.
    pub stats: Arc<SharedStats>,
    /// Frames for it to send.
    pub control: Sender<OutFrame>,
    /// Wakes it from poll().
    pub waker: Arc<Waker>,
    /// Requests for it (wake it after sending).
    pub requests: Sender<WorkerRequest>,
    join: JoinHandle<WorkerStats>,
}

impl WorkerHandle {
    /// Waits for the thread to finish (after `shutdown` was set and the waker notified) and
    /// returns its final counters.
    pub fn join(self) -> WorkerStats {
        self.join.join().unwrap_or_default()
    }
}

/// Starts the worker thread for a bound socket.
/// `table`: the memory of the worker's flow table (a state file's, which may hold the flows
/// a previous xlb left), or none for a table of its own on the heap.
pub fn spawn(
    cfg: WorkerConfig,
    xsk: Xsk,
    shared: WorkerShared,
    table: Option<Store<Entry>>,
) -> Result<WorkerHandle, WorkerError> {
    let stats = Arc::new(SharedStats::default());
    let waker = Arc::new(Waker::new().map_err(WorkerError::Thread)?);
    let (control_tx, control_rx) = crossbeam_channel::bounded(CONTROL_QUEUE);
    let (requests_tx, requests_rx) = crossbeam_channel::bounded(16);
    let (queue, mode, index, ifname) = (cfg.queue, xsk.mode, cfg.index, cfg.ifname.clone());
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(1);
    let worker = Worker {
        cfg,
        xsk,
        shared,
        table,
        stats: stats.clone(),
        waker: waker.clone(),
        control: control_rx,
        requests: requests_rx,
    };
    let join = std::thread::Builder::new()
        .name(format!("xlb-w{index}"))
        .spawn(move || worker.run(ready_tx))
        .map_err(WorkerError::Thread)?;
    // The worker allocates its flow table and stocks its fill ring before it says it is
    // ready; until then frames would find no buffer and be dropped by the kernel.
    if ready_rx.recv().is_err() {
        let _ = join.join();
        return Err(WorkerError::Thread(std::io::Error::other(format!(
            "worker for {ifname} queue {queue} died while starting"
        ))));
    }
    Ok(WorkerHandle { ifname, queue, mode, stats, control: control_tx, waker, requests: requests_tx, join })
}

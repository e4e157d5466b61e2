//! A worker: one AF_XDP socket on one (interface, queue), one pinned thread that polls it.
//!
//! The loop, per batch: recycle TX completions, refill the fill ring, take the current
//! snapshot, receive up to `batch` frames, run [`lb::process`](crate::lb::process) on each,
//! add the frames the control thread asked to send, transmit, publish counters. While
//! frames flow it never sleeps; after `idle_spin` without any it sleeps in poll() on the
//! socket and its waker, so an idle xlb costs next to nothing.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use hdrhistogram::Histogram;
use xsk_rs::{
    config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
};

use super::wake::Waker;
use crate::{
    lb::{
        self,
        conntrack::{Conntrack, ConntrackStats, Entry, Timeouts},
        heartbeat::{self, Heartbeat},
        neighbor::OutFrame,
        snat::SnatTable,
        stats::ObjectCounters,
        Counter, Ctx, DropReason, Reply, Snapshot, Verdict, WorkerState, WorkerStats,
    },
    wire::EthernetAddress,
};

/// Shortest time between two conflict reports from one worker (10 ms).
const CONFLICT_REPORT_GAP_NS: u64 = 10_000_000;

/// Rate limit of conflict reports: a small table of the last report time per VIP (VIPs
/// that share a slot simply both get through).
#[derive(Debug)]
struct ReportLimiter {
    slots: [(Option<IpAddr>, u64); 64],
}

impl Default for ReportLimiter {
    fn default() -> Self {
        ReportLimiter { slots: [(None, 0); 64] }
    }
}

impl ReportLimiter {
    fn allow(&mut self, vip: IpAddr, now: u64) -> bool {
        let h = match vip {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let o = a.octets();
                let (hi, lo) = o.split_at(8);
                let word = |b: &[u8]| b.iter().fold(0u64, |acc, x| acc << 8 | u64::from(*x));
                word(hi) ^ word(lo)
            }
        };
        let slot = &mut self.slots[usize::try_from(crate::lb::maglev::fmix64(h) % 64).unwrap_or(0)];
        if slot.0 == Some(vip) && now.saturating_sub(slot.1) < CONFLICT_REPORT_GAP_NS {
            return false;
        }
        *slot = (Some(vip), now);
        true
    }
}

/// Whether to ask the driver for zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ZeroCopy {
    /// Zero-copy where the driver has it, copy mode otherwise.
    Auto,
    /// Always copy mode.
    Off,
    /// Zero-copy or fail.
    Required,
}

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
    /// Core to pin to (none: not pinned).
    pub core: Option<usize>,
    /// UMEM frames (each 2048 bytes).
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
    /// worker allocates from share number `queue` of its ports.
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
    fn publish_conntrack(&self, ct: &Conntrack) {
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

    fn publish(&self, s: &WorkerStats) {
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

/// What an AF_XDP socket is bound with.
#[derive(Debug, Clone, Copy)]
pub struct XskParams<'a> {
    /// Interface name.
    pub ifname: &'a str,
    /// Queue id.
    pub queue: u32,
    /// UMEM frames (2048 bytes each; at least twice `ring_size`).
    pub frames: u32,
    /// Size of each ring (power of two).
    pub ring_size: u32,
    /// Most frames handled at once (at most an eighth of `frames`).
    pub batch: usize,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
}

/// A bound AF_XDP socket with its UMEM and rings, not yet polled by a thread.
pub struct Xsk {
    pub(super) umem: Umem,
    pub(super) descs: Vec<FrameDesc>,
    pub(super) tx: TxQueue,
    pub(super) rx: RxQueue,
    pub(super) fq: FillQueue,
    pub(super) cq: CompQueue,
    /// How it was bound.
    pub mode: BindMode,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk").field("mode", &self.mode).field("frames", &self.descs.len()).finish()
    }
}

fn queue_size(what: &'static str, v: u32) -> Result<QueueSize, WorkerError> {
    QueueSize::new(v).map_err(|_| WorkerError::Size { what, value: v, why: "must be a power of two" })
}

impl Xsk {
    /// Creates the UMEM and binds a socket to `cfg.queue` of `cfg.ifname`, without loading
    /// any XDP program (xlb attaches its own). Zero-copy is tried first unless `Off`.
    pub fn open(cfg: &WorkerConfig) -> Result<Self, WorkerError> {
        Self::open_params(&XskParams {
            ifname: &cfg.ifname,
            queue: cfg.queue,
            frames: cfg.frames,
            ring_size: cfg.ring_size,
            batch: cfg.batch,
            zero_copy: cfg.zero_copy,
        })
    }

    /// Like [`Xsk::open`], from the socket's own parameters (tools other than the worker).
    pub fn open_params(cfg: &XskParams<'_>) -> Result<Self, WorkerError> {
        let attempts: &[BindMode] = match cfg.zero_copy {
            ZeroCopy::Auto => &[BindMode::ZeroCopy, BindMode::Copy],
            ZeroCopy::Off => &[BindMode::Copy],
            ZeroCopy::Required => &[BindMode::ZeroCopy],
        };
        let mut last = None;
        for mode in attempts {
            match Self::open_mode(cfg, *mode) {
                Ok(x) => return Ok(x),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(WorkerError::Size { what: "zero-copy", value: 0, why: "no bind mode to try" }))
    }

    fn open_mode(cfg: &XskParams<'_>, mode: BindMode) -> Result<Self, WorkerError> {
        let ring = queue_size("ring size", cfg.ring_size)?;
        let frames = NonZeroU32::new(cfg.frames).ok_or(WorkerError::Size {
            what: "UMEM frames",
            value: cfg.frames,
            why: "must be at least twice the ring size",
        })?;
        if u64::from(cfg.frames) < u64::from(cfg.ring_size) * 2 {
            return Err(WorkerError::Size {
                what: "UMEM frames",
                value: cfg.frames,
                why: "must be at least twice the ring size",
            });
        }
        // Two batches are kept back for replies; the rest must leave room to receive.
        if cfg.batch == 0 || cfg.batch.saturating_mul(8) > usize::try_from(cfg.frames).unwrap_or(0) {
            return Err(WorkerError::Size {
                what: "batch",
                value: u32::try_from(cfg.batch).unwrap_or(u32::MAX),
                why: "must be between 1 and an eighth of the UMEM frames",
            });
        }
        let umem_err = |source: Box<dyn std::error::Error + Send + Sync>| WorkerError::Umem {
            ifname: cfg.ifname.to_string(),
            queue: cfg.queue,
            source,
        };
        let frame_size = FrameSize::new(2048).map_err(|e| umem_err(Box::new(e)))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| umem_err(Box::new(e)))?;
        let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| umem_err(Box::new(e)))?;
        let bind = match mode {
            BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
            BindMode::Copy => BindFlags::XDP_COPY,
        } | BindFlags::XDP_USE_NEED_WAKEUP;
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(bind)
            .build();
        let bind_err = |source: Box<dyn std::error::Error + Send + Sync>| WorkerError::Bind {
            ifname: cfg.ifname.to_string(),
            queue: cfg.queue,
            mode: match mode {
                BindMode::ZeroCopy => "zero-copy",
                BindMode::Copy => "copy",
            },
            source,
        };
        let ifname: Interface = cfg.ifname.parse().map_err(|e| bind_err(Box::new(e)))?;
        // SAFETY: the UMEM was created just above and is used by this socket alone, so the
        // shared-UMEM precondition of Socket::new does not apply.
        let (tx, rx, rings) =
            unsafe { Socket::new(sock_cfg, &umem, &ifname, cfg.queue) }.map_err(|e| bind_err(Box::new(e)))?;
        let (fq, cq) = rings.ok_or_else(|| bind_err("the kernel returned no fill/completion rings".into()))?;
        Ok(Xsk { umem, descs, tx, rx, fq, cq, mode })
    }

    /// The socket's descriptor, for the XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// One non-blocking recvfrom(): with busy polling on, this is what makes the kernel
    /// run the device's NAPI poll for this socket.
    fn busy_poll_once(&self) {
        // SAFETY: a zero-length receive with no buffer and no address on our own socket.
        let _ = unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Sets the busy-poll socket options; returns what the kernel refused, if anything.
    pub fn set_busy_poll(&self, budget: usize) -> Result<(), std::io::Error> {
        const SO_PREFER_BUSY_POLL: i32 = 69;
        const SO_BUSY_POLL_BUDGET: i32 = 70;
        let budget = i32::try_from(budget).unwrap_or(64);
        for (opt, val) in [(SO_PREFER_BUSY_POLL, 1), (libc::SO_BUSY_POLL, 20), (SO_BUSY_POLL_BUDGET, budget)] {
            // SAFETY: passes a live i32 and its size to setsockopt on our own socket.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&val as *const i32).cast(),
                    u32::try_from(std::mem::size_of::<i32>()).unwrap_or(4),
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
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
pub fn spawn(cfg: WorkerConfig, xsk: Xsk, shared: WorkerShared) -> Result<WorkerHandle, WorkerError> {
    let stats = Arc::new(SharedStats::default());
    let waker = Arc::new(Waker::new().map_err(WorkerError::Thread)?);
    let (control_tx, control_rx) = crossbeam_channel::bounded(1024);
    let (requests_tx, requests_rx) = crossbeam_channel::bounded(16);
    let (queue, mode) = (cfg.queue, xsk.mode);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(1);
    let worker = Worker {
        cfg,
        xsk,
        shared,
        stats: stats.clone(),
        waker: waker.clone(),
        control: control_rx,
        requests: requests_rx,
    };
    let join = std::thread::Builder::new()
        .name(format!("xlb-w{queue}"))
        .spawn(move || worker.run(ready_tx))
        .map_err(WorkerError::Thread)?;
    // The worker allocates its flow table and stocks its fill ring before it says it is
    // ready; until then frames would find no buffer and be dropped by the kernel.
    if ready_rx.recv().is_err() {
        let _ = join.join();
        return Err(WorkerError::Thread(std::io::Error::other(format!(
            "worker for queue {queue} died while starting"
        ))));
    }
    Ok(WorkerHandle { queue, mode, stats, control: control_tx, waker, requests: requests_tx, join })
}

struct Worker {
    cfg: WorkerConfig,
    xsk: Xsk,
    shared: WorkerShared,
    stats: Arc<SharedStats>,
    waker: Arc<Waker>,
    control: Receiver<OutFrame>,
    requests: Receiver<WorkerRequest>,
}

impl Worker {
    fn run(mut self, ready: Sender<()>) -> WorkerStats {
        if let Some(core) = self.cfg.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                tracing::warn!(queue = self.cfg.queue, core, "could not pin the worker to its core");
            }
        }
        // Allocated here, on the worker's own core, once.
        let mut state = WorkerState::new(Conntrack::new(self.cfg.conntrack_capacity, self.cfg.timeouts));
        state.snat = self.cfg.snat.as_ref().map(|t| t.worker(usize::try_from(self.cfg.queue).unwrap_or(0)));
        state.counters = self.cfg.counters.clone();
        let batch = self.cfg.batch.max(1);
        let ring = usize::try_from(self.cfg.ring_size).unwrap_or(2048);
        let mut free: Vec<FrameDesc> = std::mem::take(&mut self.xsk.descs);
        let mut rx_descs = vec![FrameDesc::default(); batch];
        let mut comp_descs = vec![FrameDesc::default(); ring];
        let mut tx_descs: Vec<FrameDesc> = Vec::with_capacity(batch * 2);
        let mut stats = WorkerStats::default();
        let mut last_traffic = Instant::now();
        // Frames handed to the TX ring and not yet completed. In copy mode one sendto()
        // sends at most 32 of them, so the ring is kicked on every pass while any remain.
        let mut in_flight: usize = 0;
        let mut limiter = ReportLimiter::default();
        let mac = self.cfg.mac;
        let clock = Instant::now();
        // Frames kept back from the fill ring so that replies and announcements always find
        // a buffer.
        let reserve = batch * 2;

        // Batch times, swapped out whole by the control thread (see WorkerRequest).
        let mut batch_times = batch_histogram();
        let mut ready = Some(ready);
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            // 1. Completed transmissions give their frames back.
            // SAFETY: the completion ring hands back frames of this socket's own UMEM that
            // we submitted for TX; comp_descs only receives their descriptors.
            let done = unsafe { self.xsk.cq.consume(&mut comp_descs) };
            free.extend_from_slice(&comp_descs[..done]);
            in_flight = in_flight.saturating_sub(done);

            // 2. Keep the fill ring stocked.
            let spare = free.len().saturating_sub(reserve);
            if spare > 0 {
                let want = u32::try_from(spare.min(ring)).unwrap_or(0);
                let room = usize::try_from(self.xsk.fq.nb_free(want)).unwrap_or(0).min(spare);
                if room > 0 {
                    let from = free.len() - room;
                    // SAFETY: these frames belong to this UMEM and are not in any ring: they
                    // came back from RX, completion, or were never submitted.
                    let n = unsafe { self.xsk.fq.produce(&free[from..]) };
                    free.truncate(free.len() - n);
                    // A zero-copy driver that ran out of buffers waits for this kick.
                    if n > 0 && self.xsk.fq.needs_wakeup() {
                        let _ = self.xsk.fq.wakeup(self.xsk.rx.fd_mut(), 0);
                    }
                }
            }

            if let Some(r) = ready.take() {
                let _ = r.send(());
            }

            // 3. Receive and decide.
            let snap = self.shared.snapshot.load();
            // SAFETY: rx_descs only receives descriptors of frames in this socket's UMEM.
            let n = unsafe { self.xsk.rx.consume(&mut rx_descs) };
            tx_descs.clear();
            // Heartbeats in this batch: they are not traffic to spin for (step 7).
            let mut beats = 0;
            let batch_start = clock.elapsed();
            if n > 0 {
                // Read once per batch, not on every idle pass (it reads the clock).
                state.fenced = self.shared.fence.fenced();
                stats.bump(Counter::Batches);
                stats.add(Counter::RxFrames, n as u64);
                let now = u64::try_from(batch_start.as_nanos()).unwrap_or(u64::MAX);
                let cx = Ctx { now, snap: &snap, mac };
                for desc in rx_descs.iter_mut().take(n) {
                    // SAFETY: the frame was just consumed from RX, so the kernel no longer
                    // writes it and we hold the only descriptor to it.
                    let mut data = unsafe { self.xsk.umem.data_mut(desc) };
                    let len = data.contents().len();
                    let verdict = {
                        // Expose the whole frame buffer: a reply may be longer than the
                        // request (a neighbour advertisement for a solicitation).
                        let mut cur = data.cursor();
                        let cap = cur.buf_len();
                        cur.set_pos(cap);
                        lb::process(&cx, &mut state, data.contents_mut(), len)
                    };
                    match verdict {
                        Verdict::Tx { len: out_len, reply } => {
                            data.cursor().set_pos(out_len);
                            if let Reply::SnatReply { crossed: true } = reply {
                                stats.bump(Counter::SnatRepliesCrossed);
                            }
                            stats.bump(match reply {
                                Reply::Arp => Counter::ArpReplies,
                                Reply::Ndp => Counter::NdpAdverts,
                                Reply::Forward => Counter::Forwarded,
                                Reply::IcmpError => Counter::IcmpErrors,
                                Reply::Echo => Counter::EchoReplies,
                                Reply::SnatReply { .. } => Counter::SnatReplies,
                            });
                            tx_descs.push(*desc);
                        }
                        Verdict::Drop(reason) => {
                            stats.drop(reason);
                            free.push(*desc);
                        }
                        Verdict::Heartbeat => {
                            beats += 1;
                            let key = self.shared.heartbeat_key.as_deref();
                            let taken = self.shared.failover.then(|| heartbeat::accept(data.contents(), key));
                            match taken.flatten() {
                                Some(h) if self.shared.heartbeats.try_send(h).is_ok() => {
                                    stats.bump(Counter::Heartbeats);
                                }
                                _ => stats.bump(Counter::HeartbeatsLost),
                            }
                            free.push(*desc);
                        }
                        Verdict::Conflict(c) => {
                            stats.drop(DropReason::Conflict);
                            stats.bump(Counter::Conflicts);
                            // At most one report per VIP per 10 ms: a flood of forged claims
                            // costs the control thread (and this worker's wake-ups of it) a
                            // bounded rate; every claim is still counted.
                            if limiter.allow(c.vip, now) {
                                let report = ConflictReport { queue: self.cfg.queue, vip: c.vip, mac: c.mac };
                                if let Err(TrySendError::Full(_)) = self.shared.conflicts.try_send(report) {
                                    stats.bump(Counter::ConflictReportsLost);
                                }
                            } else {
                                stats.bump(Counter::ConflictReportsLost);
                            }
                            free.push(*desc);
                        }
                    }
                }
            }
            drop(snap);
            if n > 0 {
                let took = u64::try_from((clock.elapsed() - batch_start).as_nanos()).unwrap_or(u64::MAX);
                stats.add(Counter::BusyNanos, took);
                batch_times.saturating_record(took.clamp(BATCH_NS_RANGE.0, BATCH_NS_RANGE.1));
            }

            // 4. Requests from the control thread: rare, answered between batches.
            if let Ok(req) = self.requests.try_recv() {
                match req {
                    WorkerRequest::Conntrack { max, reply } => {
                        let now = u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        let _ = reply.try_send((now, state.conntrack.iter_live(now).take(max).copied().collect()));
                    }
                    WorkerRequest::Histogram { mut fresh, reply } => {
                        std::mem::swap(&mut fresh, &mut batch_times);
                        let _ = reply.try_send(fresh);
                    }
                }
            }

            // 5. Frames the control thread wants out (announcements, probes): at most a
            // batch per pass, so tx_descs never grows past its capacity; the rest wait.
            for _ in 0..batch {
                let Ok(frame) = self.control.try_recv() else { break };
                let Some(mut desc) = free.pop() else {
                    stats.bump(Counter::TxNoRoom);
                    continue;
                };
                // SAFETY: a free frame of this UMEM, in no ring.
                let mut data = unsafe { self.xsk.umem.data_mut(&mut desc) };
                let mut cur = data.cursor();
                cur.set_pos(0);
                if std::io::Write::write_all(&mut cur, frame.bytes()).is_ok() {
                    stats.bump(Counter::ControlFrames);
                    tx_descs.push(desc);
                } else {
                    stats.bump(Counter::TxNoRoom);
                    free.push(desc);
                }
            }

            // 6. Transmit.
            if !tx_descs.is_empty() {
                let want = u32::try_from(tx_descs.len()).unwrap_or(u32::MAX);
                let room = usize::try_from(self.xsk.tx.nb_free(want)).unwrap_or(0).min(tx_descs.len());
                // SAFETY: every descriptor in tx_descs is a frame of this UMEM that is in no
                // ring; after produce the kernel owns them until completion.
                let sent = unsafe { self.xsk.tx.produce(&tx_descs[..room]) };
                for d in &tx_descs[sent..] {
                    stats.bump(Counter::TxNoRoom);
                    free.push(*d);
                }
                stats.add(Counter::TxFrames, sent as u64);
                in_flight += sent;
            }
            if in_flight > 0 && self.xsk.tx.needs_wakeup() {
                // Errors here are transient (ENOBUFS, EAGAIN): the next pass kicks again.
                let _ = self.xsk.tx.wakeup();
            }

            // 7. Spin while traffic flows, sleep when idle (never with frames still to
            // send). Only frames other than heartbeats count as traffic: heartbeats and the
            // control thread's frames come dozens of times a second, and each would buy a
            // whole idle spin (with four peers, ~5% of a core spent spinning for nothing).
            if n > beats {
                last_traffic = Instant::now();
            }
            let sending = !tx_descs.is_empty() || in_flight > 0 || !self.control.is_empty();
            let sleep = !sending && last_traffic.elapsed() >= self.cfg.idle_spin;
            if n > 0 || sending || sleep {
                self.stats.publish(&stats);
                self.stats.publish_conntrack(&state.conntrack);
            }
            if sleep {
                stats.bump(Counter::Sleeps);
                // Completions still due are collected on waking; a sleep never outlasts a
                // second so shutdown and late completions are seen. What woke it is read
                // on the next pass: traffic restarts the spin, a heartbeat does not.
                self.waker.sleep(self.xsk.fd(), 1000);
            } else if n == 0 && !sending {
                if self.xsk.fq.needs_wakeup() {
                    let _ = self.xsk.fq.wakeup(self.xsk.rx.fd_mut(), 0);
                } else if self.cfg.busy_poll {
                    // With SO_PREFER_BUSY_POLL the kernel polls the device only when asked.
                    self.xsk.busy_poll_once();
                }
                std::hint::spin_loop();
            }
        }
        self.stats.publish(&stats);
        stats
    }
}

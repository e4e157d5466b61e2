//! The datapath as one value: the XDP program, one AF_XDP socket and worker per queue, and
//! the IPv6 multicast groups of the owned addresses. Dropping it detaches the program and
//! stops and joins the workers, on every path out of `run` (errors included); [`Datapath::stop`]
//! does the same and returns the final counters for the report.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use crossbeam_channel::Receiver;
use xlb::{
    abi::{AttachMode, CLASS_NAMES, VIP_LOCAL},
    control::services::{MAX_COUNTED_BACKENDS, MAX_COUNTED_SERVICES},
    io::{
        netdev::{Membership, NetDev},
        state::{Found, StateDir},
        worker::{self, BindMode, ConflictReport, Fence, WorkerConfig, WorkerHandle, WorkerShared, Xsk},
        xdp::XdpProgram,
    },
    lb::{
        conntrack::{slots_for, ConntrackStats, Entry},
        heartbeat::Heartbeat,
        snat::SnatTable,
        stats::ObjectCounters,
        store::Store,
        Snapshot, WorkerStats,
    },
};

use super::start::{Start, UsageError};
use crate::RunArgs;

/// What the workers say to the control thread.
pub(super) struct FromWorkers {
    /// Another MAC claimed a VIP.
    pub(super) conflicts: Receiver<ConflictReport>,
    /// Other nodes' heartbeats.
    pub(super) heartbeats: Receiver<Heartbeat>,
}

/// Counters at the end: the XDP program's classes, and each queue's.
pub(super) struct Finals {
    pub(super) classes: [u64; CLASS_NAMES.len()],
    pub(super) queues: Vec<(u32, BindMode, WorkerStats)>,
    /// The flow tables' counters, summed over the workers.
    pub(super) conntrack: ConntrackStats,
}

/// The XDP program, sockets and workers of one interface.
pub(super) struct Datapath {
    pub(super) dev: NetDev,
    pub(super) prog: XdpProgram,
    pub(super) workers: Vec<WorkerHandle>,
    /// The mode the program runs in.
    pub(super) mode: AttachMode,
    /// Each queue's core.
    pub(super) cores: Vec<Option<usize>>,
    /// Each worker's traffic counters by service and backend.
    pub(super) counters: Vec<Arc<ObjectCounters>>,
    /// The self-fencing deadline the workers read before each batch.
    pub(super) fence: Arc<Fence>,
    /// The snapshot the workers read.
    pub(super) snapshot: Arc<ArcSwap<Snapshot>>,
    shutdown: Arc<AtomicBool>,
    memberships: HashMap<IpAddr, Membership>,
    /// Each VIP's flags as last set (before [`VIP_LOCAL`] is added).
    vip_flags: HashMap<IpAddr, u32>,
    /// VIPs whose traffic this node's own service proxy takes: [`VIP_LOCAL`] added.
    local: HashSet<IpAddr>,
    /// The state directory, held while the datapath runs (its tables are the workers').
    _state: Option<StateDir>,
}

/// Queue `q`'s flow table in the state directory: the previous xlb's, if it made one of
/// this size.
fn flow_table(state: &StateDir, q: u32, capacity: usize) -> anyhow::Result<Store<Entry>> {
    let slots = slots_for(capacity);
    let name = format!("conntrack-{q}");
    let (store, found) =
        state.table::<Entry>(&name, slots, &[slots as u64]).with_context(|| format!("state file {name}"))?;
    match found {
        Found::Fresh => tracing::info!(queue = q, slots, "state: a new flow table"),
        // The worker counts the live flows it finds (Conntrack::with_store) and logs them.
        Found::Adopted { repaired } => {
            tracing::info!(queue = q, slots, repaired, "state: the previous xlb's flow table taken over");
        }
    }
    Ok(store)
}

impl Datapath {
    /// Opens a socket per queue (0..`queues`), attaches the program, starts the workers.
    pub(super) fn open(
        dev: &NetDev,
        queues: u32,
        start: &Start,
        snat: Option<Arc<SnatTable>>,
        args: &RunArgs,
        state: Option<StateDir>,
    ) -> anyhow::Result<(Self, FromWorkers)> {
        let ncores = core_affinity::get_core_ids().map(|c| c.len()).unwrap_or(1).max(1);
        let prog = XdpProgram::load()?;
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let (conflict_tx, conflicts) = crossbeam_channel::bounded::<ConflictReport>(4096);
        let (heartbeat_tx, heartbeats) = crossbeam_channel::bounded::<Heartbeat>(4096);
        let fence = Arc::new(Fence::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let shared = WorkerShared {
            snapshot: snapshot.clone(),
            shutdown: shutdown.clone(),
            conflicts: conflict_tx,
            heartbeats: heartbeat_tx,
            failover: start.ha.is_some(),
            heartbeat_key: start.ha.as_ref().and_then(|h| h.key.clone()),
            fence: fence.clone(),
        };
        let mut dp = Datapath {
            dev: dev.clone(),
            prog,
            workers: Vec::new(),
            mode: AttachMode::Auto,
            cores: Vec::new(),
            counters: Vec::new(),
            fence,
            snapshot,
            shutdown,
            memberships: HashMap::new(),
            vip_flags: HashMap::new(),
            local: HashSet::new(),
            _state: None,
        };
        // Sockets first, then the program: from the moment it is attached, every queue has a
        // socket to redirect to.
        let mut sockets = Vec::new();
        for q in 0..queues {
            let qi = usize::try_from(q).unwrap_or(0);
            let cfg = WorkerConfig {
                ifname: dev.name.clone(),
                mac: dev.mac,
                queue: q,
                core: Some(args.cores.get(qi).copied().unwrap_or(qi % ncores)),
                frames: args.frames,
                ring_size: args.ring_size,
                batch: args.batch,
                idle_spin: Duration::from_micros(args.idle_spin_us),
                zero_copy: start.interface.zero_copy,
                busy_poll: args.busy_poll,
                conntrack_capacity: start.conntrack_capacity,
                timeouts: start.conntrack_timeouts,
                snat: snat.clone(),
                counters: Arc::new(ObjectCounters::new(MAX_COUNTED_SERVICES, MAX_COUNTED_BACKENDS)),
            };
            dp.counters.push(cfg.counters.clone());
            dp.cores.push(cfg.core);
            let xsk = match Xsk::open(&cfg) {
                Ok(x) => x,
                Err(e @ worker::WorkerError::Size { .. }) => return Err(UsageError::Size(e.to_string()).into()),
                Err(e) => return Err(e.into()),
            };
            if cfg.busy_poll {
                if let Err(e) = xsk.set_busy_poll(cfg.batch) {
                    tracing::warn!(queue = q, error = %e, "busy-poll socket options refused; polling without them");
                }
            }
            dp.prog.set_socket(q, xsk.fd())?;
            let table = match &state {
                Some(st) => Some(flow_table(st, q, start.conntrack_capacity)?),
                None => None,
            };
            sockets.push((cfg, xsk, table));
        }
        let attached = dp.prog.attach(dev.ifindex, &dev.name, start.interface.xdp_mode)?;
        if let Some(e) = &attached.native_error {
            tracing::warn!(interface = %dev.name, error = %e, "native XDP refused; running in generic mode (slower)");
        }
        dp.mode = attached.mode;
        for (cfg, xsk, table) in sockets {
            tracing::info!(
                interface = %dev.name, queue = cfg.queue, xdp = %dp.mode, socket = %xsk.mode,
                core = %cfg.core.map_or_else(|| "any".to_string(), |c| c.to_string()), busy_poll = cfg.busy_poll, "queue ready"
            );
            // On an error, dropping `dp` detaches and stops the workers started so far.
            dp.workers.push(worker::spawn(cfg, xsk, shared.clone(), table).context("starting a worker")?);
        }
        dp._state = state;
        Ok((dp, FromWorkers { conflicts, heartbeats }))
    }

    /// Sets a VIP's flags in the program's VIP map (0 removes it); [`VIP_LOCAL`] is added
    /// for the VIPs of [`Datapath::set_local`].
    pub(super) fn set_vip(&mut self, vip: IpAddr, flags: u32) -> anyhow::Result<()> {
        if flags == 0 {
            self.vip_flags.remove(&vip);
        } else {
            self.vip_flags.insert(vip, flags);
        }
        let local = if flags != 0 && self.local.contains(&vip) { VIP_LOCAL } else { 0 };
        Ok(self.prog.set_vip(vip, flags | local)?)
    }

    /// Whether `vip`'s traffic goes to the kernel (see [`Datapath::set_local`]).
    pub(super) fn is_local(&self, vip: IpAddr) -> bool {
        self.local.contains(&vip)
    }

    /// The VIPs whose traffic goes to the kernel (this node's service proxy serves them):
    /// their entries in the VIP map change at once. Returns whether the set changed.
    pub(super) fn set_local(&mut self, local: HashSet<IpAddr>) -> anyhow::Result<bool> {
        let changed: Vec<IpAddr> = local.symmetric_difference(&self.local).copied().collect();
        self.local = local;
        for &v in &changed {
            if let Some(f) = self.vip_flags.get(&v).copied() {
                self.set_vip(v, f)?;
            }
        }
        Ok(!changed.is_empty())
    }

    /// Joins the solicited-node group of every IPv6 address in `addrs` (and leaves the
    /// others), so that NICs and MLD-snooping switches pass solicitations for them.
    pub(super) fn join_groups(&mut self, addrs: &[IpAddr]) {
        self.memberships.retain(|a, _| addrs.contains(a));
        for v in addrs {
            let IpAddr::V6(v6) = v else { continue };
            if self.memberships.contains_key(v) {
                continue;
            }
            match Membership::join(self.dev.ifindex, xlb::wire::ipv6::solicited_node(v6)) {
                Ok(m) => {
                    self.memberships.insert(*v, m);
                }
                Err(e) => tracing::warn!(vip = %v, error = %e, "joining the VIP's solicited-node group failed"),
            }
        }
    }

    /// Detaches the program (frames arriving while the workers stop go to the kernel rather
    /// than to sockets nobody reads), leaves the groups, stops and joins the workers, and
    /// lets go of the state directory.
    pub(super) fn stop(&mut self) -> Finals {
        let classes = self.prog.class_counts();
        self.prog.detach();
        self.memberships.clear();
        self.shutdown.store(true, Ordering::Relaxed);
        for w in &self.workers {
            w.waker.notify();
        }
        let mut conntrack = ConntrackStats::default();
        let queues = self
            .workers
            .drain(..)
            .map(|w| {
                let (queue, mode, shared) = (w.queue, w.mode, w.stats.clone());
                let last = w.join();
                let (s, _) = shared.conntrack();
                conntrack.inserts += s.inserts;
                conntrack.evictions += s.evictions;
                conntrack.full += s.full;
                conntrack.expired += s.expired;
                conntrack.live += s.live;
                (queue, mode, last)
            })
            .collect();
        // Every writer of the tables has stopped: the next xlb may take them (a handover
        // waits for this).
        self._state = None;
        Finals { classes, queues, conntrack }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop();
        } else {
            self.prog.detach();
        }
    }
}

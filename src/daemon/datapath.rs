//! The datapath as one value: per interface, the XDP program, one AF_XDP socket and worker
//! per queue, and the IPv6 multicast groups of the owned addresses placed there. Dropping it detaches the program and
//! stops and joins the workers, on every path out of `run` (errors included); [`Datapath::stop`]
//! does the same and returns the final counters for the report.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
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

/// Counters at the end: the XDP programs' classes (summed over the interfaces), and each
/// queue's.
pub(super) struct Finals {
    pub(super) classes: [u64; CLASS_NAMES.len()],
    pub(super) queues: Vec<(String, u32, BindMode, WorkerStats)>,
    /// The flow tables' counters, summed over the workers.
    pub(super) conntrack: ConntrackStats,
}

/// The interfaces (port indexes) VIPs are placed on; a VIP not listed is on every one.
pub(super) type Placement = HashMap<IpAddr, Vec<usize>>;

/// One interface's part of the datapath: its XDP program (with its own VIP map: a VIP
/// answers and takes traffic only on the interfaces it is placed on) and the IPv6 groups
/// joined there.
pub(super) struct Port {
    pub(super) dev: NetDev,
    pub(super) prog: XdpProgram,
    /// The mode the program runs in.
    pub(super) mode: AttachMode,
    memberships: HashMap<IpAddr, Membership>,
}

/// The XDP programs, sockets and workers of every interface xlb serves.
pub(super) struct Datapath {
    /// One per interface, in the order given (the first sends the heartbeats).
    pub(super) ports: Vec<Port>,
    /// Every worker, the first interface's first; `port_of[i]` is worker `i`'s port.
    pub(super) workers: Vec<WorkerHandle>,
    port_of: Vec<usize>,
    /// Each worker's core.
    pub(super) cores: Vec<Option<usize>>,
    /// Each worker's traffic counters by service and backend.
    pub(super) counters: Vec<Arc<ObjectCounters>>,
    /// The self-fencing deadline the workers read before each batch.
    pub(super) fence: Arc<Fence>,
    /// The snapshot the workers read (one for every interface).
    pub(super) snapshot: Arc<ArcSwap<Snapshot>>,
    shutdown: Arc<AtomicBool>,
    /// Each VIP's flags as last set (before [`VIP_LOCAL`] is added).
    vip_flags: HashMap<IpAddr, u32>,
    /// VIPs whose traffic this node's own service proxy takes: [`VIP_LOCAL`] added.
    local: HashSet<IpAddr>,
    /// The interfaces (port indexes) each VIP is placed on; a VIP not listed is on every one.
    placement: Placement,
    /// The state directory, held while the datapath runs (its tables are the workers').
    _state: Option<StateDir>,
}

/// Queue `q`'s flow table in the state directory: the previous xlb's, if it made one of
/// this size. The first interface's tables keep the names they had when xlb served one.
fn flow_table(state: &StateDir, port: usize, dev: &NetDev, q: u32, capacity: usize) -> anyhow::Result<Store<Entry>> {
    let slots = slots_for(capacity);
    let name = if port == 0 { format!("conntrack-{q}") } else { format!("conntrack-{}-{q}", dev.name) };
    let (store, found) =
        state.table::<Entry>(&name, slots, &[slots as u64]).with_context(|| format!("state file {name}"))?;
    match found {
        Found::Fresh => tracing::info!(interface = %dev.name, queue = q, slots, "state: a new flow table"),
        // The worker counts the live flows it finds (Conntrack::with_store) and logs them.
        Found::Adopted { repaired } => {
            tracing::info!(interface = %dev.name, queue = q, slots, repaired, "state: the previous xlb's flow table taken over");
        }
    }
    Ok(store)
}

impl Datapath {
    /// For each interface of `ports` (with its queues 0..n), opens a socket per queue,
    /// attaches the program and starts the workers.
    pub(super) fn open(
        ports: &[(NetDev, u32)],
        start: &Start,
        snat: Option<Arc<SnatTable>>,
        args: &RunArgs,
        state: Option<StateDir>,
    ) -> anyhow::Result<(Self, FromWorkers)> {
        let ncores = core_affinity::get_core_ids().map(|c| c.len()).unwrap_or(1).max(1);
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
            ports: Vec::new(),
            workers: Vec::new(),
            port_of: Vec::new(),
            cores: Vec::new(),
            counters: Vec::new(),
            fence,
            snapshot,
            shutdown,
            vip_flags: HashMap::new(),
            local: HashSet::new(),
            placement: HashMap::new(),
            _state: None,
        };
        // `ports` are `start.interfaces`, in order, as found on this host.
        for (p, ((dev, queues), iface)) in ports.iter().zip(&start.interfaces).enumerate() {
            let (xdp_mode, zero_copy) = (iface.xdp_mode, iface.zero_copy);
            let prog = XdpProgram::load()?;
            dp.ports.push(Port { dev: dev.clone(), prog, mode: AttachMode::Auto, memberships: HashMap::new() });
            // Sockets first, then the program: from the moment it is attached, every queue
            // has a socket to redirect to.
            let mut sockets = Vec::new();
            for q in 0..*queues {
                let index = dp.cores.len();
                let cfg = WorkerConfig {
                    ifname: dev.name.clone(),
                    mac: dev.mac,
                    queue: q,
                    index,
                    core: Some(args.cores.get(index).copied().unwrap_or(index % ncores)),
                    frames: args.frames,
                    ring_size: args.ring_size,
                    batch: args.batch,
                    idle_spin: Duration::from_micros(args.idle_spin_us),
                    zero_copy,
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
                        tracing::warn!(interface = %dev.name, queue = q, error = %e, "busy-poll socket options refused; polling without them");
                    }
                }
                dp.ports[p].prog.set_socket(q, xsk.fd())?;
                let table = match &state {
                    Some(st) => Some(flow_table(st, p, dev, q, start.conntrack_capacity)?),
                    None => None,
                };
                sockets.push((cfg, xsk, table));
            }
            let port = &mut dp.ports[p];
            let attached = port.prog.attach(dev.ifindex, &dev.name, xdp_mode)?;
            if let Some(e) = &attached.native_error {
                tracing::warn!(interface = %dev.name, error = %e, "native XDP refused; running in generic mode (slower)");
            }
            port.mode = attached.mode;
            for (cfg, xsk, table) in sockets {
                tracing::info!(
                    interface = %dev.name, queue = cfg.queue, xdp = %port.mode, socket = %xsk.mode,
                    core = %cfg.core.map_or_else(|| "any".to_string(), |c| c.to_string()), busy_poll = cfg.busy_poll, "queue ready"
                );
                // On an error, dropping `dp` detaches and stops the workers started so far.
                dp.workers.push(worker::spawn(cfg, xsk, shared.clone(), table).context("starting a worker")?);
                dp.port_of.push(p);
            }
        }
        dp._state = state;
        Ok((dp, FromWorkers { conflicts, heartbeats }))
    }

    /// Whether `vip` is placed on port `p`.
    pub(super) fn placed(&self, vip: IpAddr, p: usize) -> bool {
        self.placement.get(&vip).is_none_or(|on| on.contains(&p))
    }

    /// Writes `vip`'s entry in every port's VIP map: its flags where it is placed
    /// ([`VIP_LOCAL`] added for the VIPs of [`Datapath::set_local`]), none elsewhere.
    fn write_vip(&mut self, vip: IpAddr) -> anyhow::Result<()> {
        let flags = self.vip_flags.get(&vip).copied().unwrap_or(0);
        let local = if flags != 0 && self.local.contains(&vip) { VIP_LOCAL } else { 0 };
        for p in 0..self.ports.len() {
            let f = if self.placed(vip, p) { flags | local } else { 0 };
            self.ports[p].prog.set_vip(vip, f)?;
        }
        Ok(())
    }

    /// Sets a VIP's flags in the VIP maps (0 removes it).
    pub(super) fn set_vip(&mut self, vip: IpAddr, flags: u32) -> anyhow::Result<()> {
        if flags == 0 {
            self.vip_flags.remove(&vip);
        } else {
            self.vip_flags.insert(vip, flags);
        }
        self.write_vip(vip)
    }

    /// Whether `vip`'s traffic goes to the kernel (see [`Datapath::set_local`]).
    pub(super) fn is_local(&self, vip: IpAddr) -> bool {
        self.local.contains(&vip)
    }

    /// The VIPs whose traffic goes to the kernel (see [`Datapath::set_local`]).
    pub(super) fn local_vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.local.iter().copied()
    }

    /// The VIPs whose traffic goes to the kernel (this node's service proxy serves them):
    /// their entries in the VIP map change at once. Returns whether the set changed.
    pub(super) fn set_local(&mut self, local: HashSet<IpAddr>) -> anyhow::Result<bool> {
        let changed: Vec<IpAddr> = local.symmetric_difference(&self.local).copied().collect();
        self.local = local;
        for &v in &changed {
            if self.vip_flags.contains_key(&v) {
                self.write_vip(v)?;
            }
        }
        Ok(!changed.is_empty())
    }

    /// `placement` (interface names by VIP) as port indexes, and the (VIP, name) pairs that
    /// name no interface served here.
    pub(super) fn ports_named(&self, placement: &BTreeMap<IpAddr, Vec<String>>) -> (Placement, Vec<(IpAddr, String)>) {
        let mut unknown = Vec::new();
        let ports = placement
            .iter()
            .map(|(v, names)| {
                let on = names
                    .iter()
                    .filter_map(|n| {
                        let p = self.ports.iter().position(|p| p.dev.name == *n);
                        if p.is_none() {
                            unknown.push((*v, n.clone()));
                        }
                        p
                    })
                    .collect();
                (*v, on)
            })
            .collect();
        (ports, unknown)
    }

    /// What `f` says of each interface, comma-separated (names, MACs, modes).
    pub(super) fn each_port(&self, f: impl Fn(&Port) -> String) -> String {
        self.ports.iter().map(f).collect::<Vec<_>>().join(",")
    }

    /// Places VIPs on interfaces (port indexes; a VIP not in `placement` is on every one):
    /// the VIP maps change at once. Returns whether anything moved.
    pub(super) fn set_placement(&mut self, placement: Placement) -> anyhow::Result<bool> {
        let moved: Vec<IpAddr> = placement
            .iter()
            .filter(|(v, on)| self.placement.get(v) != Some(on))
            .map(|(v, _)| *v)
            .chain(self.placement.keys().filter(|v| !placement.contains_key(v)).copied())
            .collect();
        self.placement = placement;
        for &v in &moved {
            if self.vip_flags.contains_key(&v) {
                self.write_vip(v)?;
            }
        }
        Ok(!moved.is_empty())
    }

    /// The ports `vip` is placed on.
    pub(super) fn ports_of(&self, vip: IpAddr) -> Vec<usize> {
        (0..self.ports.len()).filter(|p| self.placed(vip, *p)).collect()
    }

    /// The first worker of port `p` (it sends the control thread's frames there).
    pub(super) fn first_worker_of(&self, p: usize) -> Option<&WorkerHandle> {
        self.port_of.iter().position(|q| *q == p).and_then(|i| self.workers.get(i))
    }

    /// Joins, on each interface it is placed on, the solicited-node group of every IPv6
    /// address in `addrs` (and leaves the others), so that NICs and MLD-snooping switches
    /// pass solicitations for them.
    pub(super) fn join_groups(&mut self, addrs: &[IpAddr]) {
        for p in 0..self.ports.len() {
            let wanted: Vec<IpAddr> = addrs.iter().copied().filter(|v| self.placed(*v, p)).collect();
            let port = &mut self.ports[p];
            port.memberships.retain(|a, _| wanted.contains(a));
            for v in &wanted {
                let IpAddr::V6(v6) = v else { continue };
                if port.memberships.contains_key(v) {
                    continue;
                }
                match Membership::join(port.dev.ifindex, xlb::wire::ipv6::solicited_node(v6)) {
                    Ok(m) => {
                        port.memberships.insert(*v, m);
                    }
                    Err(e) => {
                        tracing::warn!(vip = %v, interface = %port.dev.name, error = %e, "joining the VIP's solicited-node group failed");
                    }
                }
            }
        }
    }

    /// The XDP programs' class counters, summed over the interfaces.
    pub(super) fn class_counts(&self) -> [u64; CLASS_NAMES.len()] {
        let mut out = [0; CLASS_NAMES.len()];
        for p in &self.ports {
            for (o, c) in out.iter_mut().zip(p.prog.class_counts()) {
                *o += c;
            }
        }
        out
    }

    /// Detaches the programs (frames arriving while the workers stop go to the kernel
    /// rather than to sockets nobody reads), leaves the groups, stops and joins the workers,
    /// and lets go of the state directory.
    pub(super) fn stop(&mut self) -> Finals {
        let classes = self.class_counts();
        for p in &mut self.ports {
            p.prog.detach();
            p.memberships.clear();
        }
        self.shutdown.store(true, Ordering::Relaxed);
        for w in &self.workers {
            w.waker.notify();
        }
        let mut conntrack = ConntrackStats::default();
        let queues = self
            .workers
            .drain(..)
            .map(|w| {
                let (ifname, queue, mode, shared) = (w.ifname.clone(), w.queue, w.mode, w.stats.clone());
                let last = w.join();
                let (s, _) = shared.conntrack();
                conntrack.inserts += s.inserts;
                conntrack.evictions += s.evictions;
                conntrack.full += s.full;
                conntrack.expired += s.expired;
                conntrack.live += s.live;
                (ifname, queue, mode, last)
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
            for p in &mut self.ports {
                p.prog.detach();
            }
        }
    }
}

//! `xlb run`: a folder of owners, each with its own state.
//!
//! - `start`: what to serve, from flags, a config file or the Kubernetes API, checked in
//!   full before anything opens (`UsageError`: the flag or field and the fix, exit 2).
//! - `datapath`: the XDP program, sockets and workers as one value; dropping it detaches
//!   everything, on every way out.
//! - `plane`: desired state -> snapshot (compiled services, health, drains, next hops).
//! - `node`: the owners wired together; carries out what control decides (the ownership
//!   machine's fence and owned set, the speakers' announcements, VIP map entries).
//! - `outbox`: frames on their way to queue 0's worker.
//! - `views`: admin answers, metrics input, the final report.
//!
//! This file starts them in order and runs the control loop: one thread, woken by what
//! arrives (signals, worker reports, heartbeats, health news, admin queries, Kubernetes
//! plans) or by the next deadline.

mod datapath;
mod frr;
mod node;
mod outbox;
mod plane;
mod start;
mod views;

/// Where the tables live by default (a directory per interface), so that the next xlb
/// takes over every flow: /run is tmpfs on most hosts.
pub(crate) const DEFAULT_STATE_DIR: &str = "/run/xlb/state";

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use crossbeam_channel::Receiver;
use xlb::{
    control::{
        announcer::Actions, config::InterfaceConfig, ha::Peers, health::HealthChecker, ownership::Ownership,
        services::Publisher, speaker::Speakers, Announcer,
    },
    io::{
        netdev::{NetDev, NetDevError},
        state::{addresses_word, Found, StateDir, Successor},
    },
    k8s::plan::Plan,
    lb::snat::{Slot, SnatTable},
    memory::{Memory, Sizes},
};

pub(crate) use self::start::{check, UsageError};
use self::{
    datapath::{Datapath, FromWorkers},
    node::Node,
    plane::Plane,
    start::{start_from_file, start_from_flags, start_from_kube, Source, Start},
};
use crate::{
    admin::{AdminRequest, AdminServer},
    metrics::MetricsServer,
    RunArgs,
};

/// `xlb run`.
pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut start = match &args.config {
        Some(path) => start_from_file(path, &args)?,
        None if args.kubernetes => start_from_kube(&args)?,
        None => start_from_flags(&args)?,
    };
    let mut ports: Vec<(NetDev, u32)> = Vec::new();
    for (k, interface) in start.interfaces.iter().enumerate() {
        ports.push(port_of(interface, k, &args)?);
    }
    let Some((dev, _)) = ports.first().cloned() else {
        return Err(
            UsageError::Interface("no interface to serve: give --interface or interfaces: in the file".into()).into()
        );
    };
    let queues: u32 = ports.iter().map(|(_, q)| q).sum();
    // A VIP that is the host's own address would take the host's traffic away from it.
    for (d, _) in &ports {
        let own = xlb::io::netdev::addresses(&d.name);
        if let Some(v) = start.compiled.vips.iter().chain(&start.snat_addrs).find(|v| own.contains(v)) {
            return Err(UsageError::VipIsHost(*v, d.name.clone()).into());
        }
    }
    let memory = Memory::new(Sizes {
        queues,
        conntrack_capacity: start.conntrack_capacity,
        frames: args.frames,
        snat_addrs: start.snat_addrs.len(),
        snat_ports: start.snat_ports,
    });
    let fields = if args.config.is_some() { start::FILE_FIELDS } else { start::FLAG_FIELDS };
    start::check_memory(&memory, fields, state_held(&args, &dev.name))?;
    // Kubernetes: the node side starts passive (it reads the cluster and plans, but writes
    // nothing until the datapath is up), and its first plan is awaited here: the workers
    // then serve the Services from their first packet, and a successor has everything it
    // needs before it asks the running xlb to hand over.
    let mut kube_plans = crossbeam_channel::never();
    let mut first_plan = None;
    if let (Some(opts), Source::Kube { handle, .. }) = (start.kube.take(), &mut start.source) {
        let h = xlb::k8s::source::start(args.kube.kubeconfig.clone(), opts)
            .map_err(|e| UsageError::Kube(format!("{e:#}")))?;
        kube_plans = h.plans.clone();
        first_plan = first_plan_from(&h.plans);
        *handle = Some(h);
        // BGP objects that select this node: FRR starts before the datapath, as with a file.
        start.bgp = first_plan.as_ref().and_then(|p| p.bgp.clone());
    }
    let state = state_dir(&args, &dev.name)?;
    let snat = snat_table(&start, queues, state.as_ref())?;
    // A successor (`--takeover`, the new pod of an upgrade) may ask this xlb to hand over.
    let (successor_tx, successor_rx) = crossbeam_channel::bounded::<Successor>(1);
    if let Some(st) = &state {
        st.listen_for_successor(successor_tx)
            .map_err(|e| UsageError::State(format!("the state directory's handover socket: {e}")))?;
    }

    // SIGINT/SIGTERM wake the control loop at once, which leaves (a last heartbeat, the
    // Lease deleted) and then stops the workers; SIGHUP asks for a reload.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let (hup_tx, hup_rx) = crossbeam_channel::bounded::<()>(1);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    std::thread::Builder::new().name("xlb-signals".into()).spawn(move || {
        for sig in signals.forever() {
            if sig == signal_hook::consts::SIGHUP {
                let _ = hup_tx.try_send(());
                continue;
            }
            tracing::info!(signal = sig, "signal received");
            let _ = stop_tx.try_send(());
            break;
        }
    })?;

    // BGP: FRR starts before the datapath, so that its start-up delays no VIP's traffic;
    // it advertises a VIP once the node can serve it.
    // Under Kubernetes the BGP objects come from the cluster: FRR that cannot start (a pod
    // without its capabilities, a node without FRR) must not take the node's L2 VIPs down
    // with xlb; it is tried again at the next change of the objects.
    let mut frr_failed = None;
    let frr = match &start.bgp {
        Some(cfg) if args.kubernetes => match start_frr(cfg, &dev.name, true) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "BGP: FRR did not start; no VIP is advertised until it does");
                frr_failed = Some(Instant::now());
                None
            }
        },
        Some(cfg) => Some(start_frr(cfg, &dev.name, true)?),
        None => None,
    };
    // From here on, every way out (a `?` included) drops the datapath: detached, workers
    // stopped and joined.
    let (mut dp, from_workers) = Datapath::open(&ports, &start, snat, &args, state)?;
    // The VIPs' interfaces before anything is joined or announced (the file names only
    // interfaces it serves: none is unknown).
    let (placement, _unknown) = dp.ports_named(&start.compiled.placement);
    dp.set_placement(placement)?;
    let owned: Vec<IpAddr> = start.compiled.vips.iter().chain(&start.snat_addrs).copied().collect();
    dp.join_groups(&owned);
    tracing::info!(
        interfaces = %dp.each_port(|p| p.dev.name.clone()), mac = %dev.mac, vips = ?start.compiled.vips, snat = ?start.snat_addrs, queues,
        "xlb running; stop with Ctrl-C or SIGTERM{}", if args.config.is_some() { ", reload with SIGHUP" } else { "" }
    );

    let (admin_tx, admin_rx) = crossbeam_channel::bounded::<AdminRequest>(64);
    let admin = AdminServer::start(&start.admin_socket, admin_tx.clone())?;
    let metrics_server = start.metrics.map(|a| MetricsServer::start(a, admin_tx.clone())).transpose()?;
    let health = HealthChecker::start().context("starting the health checker")?;
    health.set_targets(start.compiled.health.clone());
    if let Source::Kube { handle: Some(h), .. } = &start.source {
        h.activate();
    }

    // Route and neighbour changes wake the control loop, which then looks at every
    // backend's path again (a moved pod CIDR, a router's new MAC) without waiting for the
    // 5 s poll. One pending wake is enough: they coalesce.
    let (routes_tx, routes_rx) = crossbeam_channel::bounded::<()>(1);
    if let Err(e) = xlb::io::netlink::watch_changes(move || {
        !matches!(routes_tx.try_send(()), Err(crossbeam_channel::TrySendError::Disconnected(_)))
    }) {
        tracing::warn!(error = %e, "cannot watch the kernel's route and neighbour changes; backends' paths are polled every 5 s");
    }
    let (mut node, first) = node_of(start, dp, health, frr);
    node.frr_failed = frr_failed;
    let chans = Channels {
        routes: routes_rx,
        from_workers,
        stop: stop_rx,
        hup: hup_rx,
        admin: admin_rx,
        kube: kube_plans,
        health: node.plane.health.events.clone(),
        successor: successor_rx,
    };
    let (result, successor) = match control_loop(&mut node, first, first_plan, &chans) {
        Ok(s) => (Ok(()), s),
        Err(e) => (Err(e), None),
    };
    let mut kube = match &mut node.plane.source {
        Source::Kube { handle, .. } => handle.take(),
        _ => None,
    };
    // Leaving: the membership Lease goes and the other nodes take the VIPs first. Handing
    // over: the peers are told to hold this node's VIPs for the successor, and the Lease
    // stays for it to renew. Then queries stop, and the queues and tables are let go of.
    let t0 = Instant::now();
    match &successor {
        None => {
            tracing::info!("stopping");
            node.leave();
            if let Some(h) = kube.take() {
                h.stop(Duration::from_secs(4));
            }
        }
        Some(s) => {
            tracing::info!(successor = %s.who, "handing over to a new xlb: the VIPs, the membership and every flow stay on this node");
            node.hand_over();
        }
    }
    // Routes go before the datapath does: the routers move the flows to the other nodes
    // (every node builds the same Maglev tables) while this one still forwards.
    if let Some(f) = node.frr.as_mut() {
        f.stop(BGP_DRAIN);
    }
    drop(metrics_server);
    drop(admin);
    let finals = node.dp.stop();
    let handed_over = successor.is_some();
    if let Some(s) = successor {
        s.released();
        tracing::info!(
            took_ms = t0.elapsed().as_millis(),
            "handed over: queues, tables and the state directory let go"
        );
        if let Some(h) = kube {
            h.hand_over(Duration::from_secs(4));
        }
    }
    result?;
    node.report(&finals, args.stats_file.as_deref())?;
    if handed_over && args.kubernetes {
        // The kubelet restarts a container that exits: this one waits for its pod's end.
        tracing::info!("waiting for SIGTERM (the pod is deleted once the new one is ready)");
        let _ = chans.stop.recv();
    }
    Ok(())
}

/// Interface number `k` of the set-up and the queues xlb serves on it: every RX queue, and
/// never fewer (the NIC spreads flows over all of them).
fn port_of(interface: &InterfaceConfig, k: usize, args: &RunArgs) -> Result<(NetDev, u32), UsageError> {
    let dev = NetDev::by_name(&interface.name).map_err(|e: NetDevError| {
        let field = if args.config.is_some() { format!("interfaces[{k}].name") } else { "--interface".into() };
        UsageError::Interface(format!("{field}: {e}"))
    })?;
    let field = if args.queues.is_some() { "--queues".to_string() } else { format!("interfaces[{k}].queues") };
    let queues = match interface.queues {
        Some(q) if q == 0 || q > dev.rx_queues => {
            return Err(UsageError::Queues(format!("{field} {q}"), dev.name.clone(), dev.rx_queues));
        }
        // The NIC hashes flows over every RX queue; a queue without a worker would drop its
        // share of the VIPs' traffic without a word. Refuse rather than drop.
        Some(q) if q < dev.rx_queues => {
            let (dev, rx) = (dev.name.clone(), dev.rx_queues);
            return Err(UsageError::UnservedQueues { field, queues: q, dev, rx, last: rx - 1 });
        }
        Some(q) => q,
        None => dev.rx_queues,
    };
    Ok((dev, queues))
}

/// The first plan from the Kubernetes node side, waited for up to 10 s (none: the API
/// server is away, and xlb starts with nothing to serve until it answers).
fn first_plan_from(plans: &Receiver<Plan>) -> Option<Plan> {
    let t0 = Instant::now();
    match plans.recv_timeout(Duration::from_secs(10)) {
        Ok(p) => {
            tracing::info!(took_ms = t0.elapsed().as_millis(), services = p.specs.len(), "first plan from the API");
            Some(p)
        }
        Err(_) => {
            tracing::warn!("no plan from the API within 10 s: starting with no Services until it answers");
            None
        }
    }
}

/// The state directory of `ifname`'s xlb.
fn state_path(args: &RunArgs, ifname: &str) -> Option<PathBuf> {
    (!args.no_state).then(|| args.state_dir.clone().unwrap_or_else(|| Path::new(DEFAULT_STATE_DIR).join(ifname)))
}

/// Bytes the state directory's files take now (tmpfs pages in use), which this xlb reuses.
fn state_held(args: &RunArgs, ifname: &str) -> usize {
    let Some(dir) = state_path(args, ifname) else { return 0 };
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| usize::try_from(m.len()).unwrap_or(0)).sum()
}

/// The state directory (`--state-dir`, else /run/xlb/state/IFACE), held: the tables live
/// there, so that the next xlb takes over every flow. None with `--no-state`.
fn state_dir(args: &RunArgs, ifname: &str) -> Result<Option<StateDir>, UsageError> {
    let Some(dir) = state_path(args, ifname) else {
        tracing::info!(
            "state: none (--no-state): a restart loses every SNAT flow, and DSR flows whose backends changed"
        );
        return Ok(None);
    };
    let state = StateDir::open(&dir, Duration::from_secs(30), args.takeover)
        .map_err(|e| UsageError::State(format!("--state-dir {}: {e}", dir.display())))?;
    if !state.tmpfs {
        tracing::warn!(dir = %dir.display(), "the state directory is not on tmpfs: the flow tables will be written back to a disk; give --state-dir on tmpfs (e.g. under /run or /dev/shm)");
    }
    Ok(Some(state))
}

/// The SNAT port table shared by the workers, when the node has SNAT addresses: in the
/// state directory when there is one (with the ports the previous xlb leased).
fn snat_table(start: &Start, queues: u32, state: Option<&StateDir>) -> Result<Option<Arc<SnatTable>>, UsageError> {
    if start.snat_addrs.is_empty() {
        return Ok(None);
    }
    let workers = usize::try_from(queues).unwrap_or(1);
    let (lo, hi) = start.snat_ports;
    let bad = |e: String| UsageError::SnatPorts(format!("{lo}-{hi}"), e);
    let table = match state {
        None => SnatTable::new(start.snat_addrs.clone(), lo, hi, workers).map_err(|e| bad(e.to_string()))?,
        Some(st) => {
            let n = SnatTable::slots_len(start.snat_addrs.len(), lo, hi).map_err(|e| bad(e.to_string()))?;
            let setup = [addresses_word(&start.snat_addrs), u64::from(lo), u64::from(hi), workers as u64];
            let state_err = |e: std::io::Error| UsageError::State(format!("state file snat: {e}"));
            let (slots, found) = st.table::<Slot>("snat", n, &setup).map_err(state_err)?;
            let (index, _) = st.table::<AtomicU64>("snat-index", n.max(1), &setup).map_err(state_err)?;
            let t = SnatTable::with_store(start.snat_addrs.clone(), lo, hi, workers, slots, index)
                .map_err(|e| bad(e.to_string()))?;
            match found {
                Found::Fresh => tracing::info!("state: a new SNAT table"),
                Found::Adopted { repaired } => {
                    let held: usize = t.in_use(xlb::io::port::monotonic_ns()).iter().sum();
                    tracing::info!(held, repaired, "state: the previous xlb's SNAT table taken over");
                }
            }
            t
        }
    };
    tracing::info!(
        addrs = ?start.snat_addrs, ports = %format!("{lo}-{hi}"), per_worker = (usize::from(hi - lo) + 1) / workers,
        "SNAT ports split among the workers"
    );
    Ok(Some(Arc::new(table)))
}

/// How long a node still forwards after its routes were withdrawn, for the routers to
/// move its flows to the other nodes.
const BGP_DRAIN: Duration = Duration::from_millis(500);

/// Starts FRR for `cfg`, with the router ID given or the first interface's first IPv4
/// address, in a directory of this process's own. `wait`: until bgpd answers (else FRR's
/// thread starts it, and starts it again with a back-off if it fails).
fn start_frr(cfg: &xlb::control::bgp::BgpConfig, name: &str, wait: bool) -> anyhow::Result<frr::Frr> {
    let interface_id = xlb::io::netdev::addresses(name).into_iter().find_map(|a| match a {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    });
    let router_id = cfg
        .router_id
        .or(interface_id)
        .with_context(|| format!("bgp.routerID: {name} has no IPv4 address to take it from; give one"))?;
    // FRR drops to the frr user, which must reach its directory: /run/xlb is made
    // world-searchable where xlb makes it (an existing one is left as it is).
    let run = Path::new("/run/xlb");
    if !run.exists() {
        std::fs::create_dir_all(run).context("creating /run/xlb")?;
        std::fs::set_permissions(run, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let dir = run.join(format!("frr.{}", std::process::id()));
    let f = frr::Frr::start(cfg.clone(), router_id, interface_id, dir, wait).context("bgp: starting FRR")?;
    let peers: Vec<String> = cfg.peers.iter().map(|p| format!("{} AS{}", p.address, p.asn)).collect();
    tracing::info!(asn = cfg.asn, %router_id, peers = %peers.join(", "), "BGP: FRR runs; routed VIPs are advertised while they can be served");
    Ok(f)
}

/// The node's owners, from the start-up set-up and the running datapath, and what the L2
/// speaker does first.
fn node_of(start: Start, dp: Datapath, health: HealthChecker, frr: Option<frr::Frr>) -> (Node, Actions) {
    let now = Instant::now();
    // With failover, VIPs are taken once the peers have been heard (the first heartbeats
    // decide); SNAT addresses are this node's own from the start.
    let ownership = start.ha.as_ref().map(|h| {
        let incarnation = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let members = h.peers.clone().unwrap_or_else(|| vec![h.node.clone()]);
        tracing::info!(node = %h.node, members = ?members, interval_ms = h.timings.interval.as_millis(), dead_after = h.timings.dead_after, takeover_ms = h.timings.takeover.as_millis(), signed = h.key.is_some(), "failover: heartbeats on");
        let peers = Peers::new(&h.node, &h.cluster, h.timings, members, now, incarnation).with_key(h.key.clone());
        let vote = Ownership::vote_for(h.witness.is_some(), h.peers.as_deref());
        let mut o = Ownership::new(peers, dp.ports[0].dev.mac, h.peers.clone(), vote);
        o.set_vips(&start.compiled.segment_vips().collect::<Vec<_>>());
        o
    });
    let witness = start.ha.as_ref().and_then(|h| h.witness.clone());
    // Routed-only VIPs get no ARP/NDP: they are not announced on the segment.
    let first: Vec<IpAddr> = match &ownership {
        Some(_) => start.snat_addrs.clone(),
        None => start.compiled.segment_vips().chain(start.snat_addrs.iter().copied()).collect(),
    };
    let macs: Vec<_> = dp.ports.iter().map(|p| p.dev.mac).collect();
    let (announcer, actions) = Announcer::new(start.announce, &macs, &first, now);
    let publisher = Publisher::new(dp.snapshot.clone());
    let plane = Plane::new(start.source, start.compiled, start.ipam, publisher, health, now);
    let mut speakers = Speakers::new(announcer);
    if frr.is_some() {
        speakers.add(Box::new(xlb::control::bgp::Routes::new()));
    }
    let mut node = Node::new(dp, plane, speakers, ownership, witness, start.snat_addrs);
    node.frr = frr;
    (node, actions)
}

/// What wakes the control loop.
struct Channels {
    from_workers: FromWorkers,
    stop: Receiver<()>,
    hup: Receiver<()>,
    admin: Receiver<AdminRequest>,
    /// Plans from the Kubernetes node side (never, without --kubernetes).
    kube: Receiver<Plan>,
    health: Receiver<xlb::control::health::HealthEvent>,
    /// A route or neighbour changed in the kernel.
    routes: Receiver<()>,
    /// A successor asks this xlb to hand over.
    successor: Receiver<Successor>,
}

/// Runs until a signal (None) or a successor's request to hand over: probing, announcing,
/// conflicts, next hops, health, reloads, queries.
fn control_loop(
    node: &mut Node,
    first: Actions,
    first_plan: Option<Plan>,
    ch: &Channels,
) -> anyhow::Result<Option<Successor>> {
    let placement = node.plane.compiled.placement.clone();
    node.place(&placement)?;
    node.apply(&first)?;
    node.rebuild();
    node.refresh_neighbours();
    if let Some(p) = first_plan {
        node.apply_plan(p)?;
    }
    loop {
        let now = Instant::now();
        // Sleep until the next probe, announcement, neighbour or file check is due, or
        // something arrives: an idle xlb with resolved backends wakes about once a second.
        let mut due = node.plane.next_neigh.min(node.plane.next_file_check);
        if let Some(d) = node.speakers.next_deadline() {
            due = due.min(d);
        }
        if let Some(d) = node.plane.next_drain_end() {
            due = due.min(d);
        }
        if let Some(o) = &node.ownership {
            due = due.min(o.next_deadline(now));
        }
        node.outbox.flush(&node.dp);
        if !node.outbox.is_empty() {
            due = due.min(now + Duration::from_millis(1));
        }
        let wait = due.saturating_duration_since(now).min(Duration::from_secs(5));
        crossbeam_channel::select! {
            recv(ch.from_workers.conflicts) -> report => {
                let Ok(report) = report else { break };
                // Heartbeats read before the claim: a peer that just took the VIP is known
                // by its MAC (both are queued; the claim may be picked first).
                node.take_heartbeats(None, &ch.from_workers.heartbeats)?;
                if let Some(c) = node.conflict(&report)? {
                    if let Source::Kube { handle: Some(h), .. } = &node.plane.source {
                        h.conflict(c);
                    }
                }
            }
            recv(ch.from_workers.heartbeats) -> h => {
                let Ok(h) = h else { break };
                node.take_heartbeats(Some(h), &ch.from_workers.heartbeats)?;
            }
            recv(ch.stop) -> _ => break,
            recv(ch.successor) -> s => {
                if let Ok(s) = s {
                    return Ok(Some(s));
                }
            }
            recv(ch.hup) -> _ => {
                tracing::info!("SIGHUP: reloading the config");
                node.reload()?;
            }
            recv(ch.health) -> ev => {
                if let Ok(ev) = ev {
                    node.plane.health_changed(ev, Instant::now());
                    node.rebuild();
                }
            }
            recv(ch.admin) -> req => {
                if let Ok(req) = req {
                    let answer = node.answer(&req.query);
                    let _ = req.reply.try_send(answer);
                }
            }
            recv(ch.routes) -> _ => {
                // Bursts of changes (a link flap, our own resolution requests) are looked
                // at once, shortly after, and at most five times a second.
                let soon = (Instant::now() + Duration::from_millis(20)).max(node.plane.last_neigh + Duration::from_millis(200));
                node.plane.next_neigh = node.plane.next_neigh.min(soon);
            }
            recv(ch.kube) -> p => {
                // Only the latest plan matters.
                let Ok(mut p) = p else { break };
                while let Ok(newer) = ch.kube.try_recv() {
                    p = newer;
                }
                node.apply_plan(p)?;
            }
            default(wait) => {}
        }
        let act = node.speakers.tick(Instant::now());
        node.apply(&act)?;
        node.failover_tick()?;
        if Instant::now() >= node.plane.next_neigh {
            node.refresh_neighbours();
            node.report_sessions();
        }
        if node.plane.next_drain_end().is_some_and(|d| Instant::now() >= d) {
            node.rebuild();
        }
        if node.plane.file_changed(Instant::now()) {
            node.reload()?;
        }
    }
    Ok(None)
}

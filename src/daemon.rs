//! `xlb run`: set-up (sockets, workers, XDP program), the control loop (announcements,
//! next hops, health, config reloads, admin queries), and the final report.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use arc_swap::ArcSwap;
use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use xlb::{
    control::{
        announcer::Actions,
        announcer::Timing,
        compile::{compile, Compiled},
        config::{self, ConfigErrors, Desired, InterfaceConfig},
        ha::{HaTimings, Peers},
        health::{HealthChecker, HealthEvent},
        ipam::Ipam,
        services::{
            build_services, Publisher, ServiceSpec, SpecError, StatsIds, MAX_COUNTED_BACKENDS, MAX_COUNTED_SERVICES,
        },
        AnnounceConfig, Announcer, VipStatus,
    },
    io::{
        netdev::{NetDev, NetDevError},
        netlink,
        worker::{
            self, batch_histogram, ConflictReport, Fence, WorkerConfig, WorkerHandle, WorkerRequest, WorkerShared, Xsk,
            ZeroCopy,
        },
        xdp::{AttachMode, XdpProgram, CLASS_NAMES, VIP_FORWARD},
    },
    lb::{
        conntrack::{FlowState, Timeouts},
        heartbeat::Heartbeat,
        maglev::{MaglevError, TableCache},
        neighbor::OutFrame,
        snapshot::{ForwardMode, Service},
        snat::SnatTable,
        stats::{ObjectCounters, Traffic},
        Counter, DropReason, Snapshot, WorkerStats,
    },
    wire::EthernetAddress,
};

use xlb::k8s::plan::rank;

use crate::{
    admin::{AdminRequest, AdminServer, Query},
    metrics::{self, MetricsInput, MetricsServer},
    RunArgs,
};

/// A mistake in what the user asked for: reported without a backtrace, exit code 2.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UsageError {
    #[error("--vip {0:?} is not an IP address (expected e.g. 192.0.2.10 or 2001:db8::10)")]
    VipSyntax(String),
    #[error("--vip {0} cannot be a VIP: {1}")]
    VipKind(String, &'static str),
    #[error("--vip {0} is given twice")]
    VipTwice(IpAddr),
    #[error("{0}")]
    Interface(String),
    #[error("{0}: interface {1} has {2} RX queue(s)")]
    Queues(String, String, u32),
    #[error("{0} is an address of {1} itself; a VIP must be an address no host on the link has")]
    VipIsHost(IpAddr, String),
    #[error("{0}")]
    Size(String),
    #[error("--service: {0}")]
    Service(#[from] SpecError),
    #[error("--service {0:?}: its VIP {1} is not one of --vip; add --vip {1}")]
    ServiceVip(String, IpAddr),
    #[error("--service {0:?}: {1}")]
    ServiceTable(String, MaglevError),
    #[error("--service {0:?} uses mode=snat but no --snat-addr of its address family is given; add --snat-addr ADDR (an unused address on the link)")]
    SnatAddrMissing(String),
    #[error("--snat-addr {0} is also a --vip; give SNAT its own address")]
    SnatIsVip(IpAddr),
    #[error("--snat-addr {0:?}: {1}")]
    SnatAddr(String, String),
    #[error("--snat-ports {0:?}: {1}")]
    SnatPorts(String, String),
    #[error("--kubernetes needs the node's name: give --node-name, or set NODE_NAME (the DaemonSet sets it from spec.nodeName)")]
    NodeName,
    #[error("--lease-renew-ms {0} and --lease-valid-ms {1}: a Lease must stay valid for at least two renewals")]
    LeaseTimes(u64, u64),
    #[error("--kubernetes: {0}")]
    Kube(String),
    #[error("--takeover-ms {0} must be less than --heartbeat-interval-ms {1} x --heartbeat-dead-after {2} (at least 2): a cut-off node must stop answering before the others take over")]
    HaTimes(u64, u64, u32),
    #[error("--heartbeat-key-file / ha.keyFile: {0}")]
    HeartbeatKey(String),
    #[error("{1}: ha: this box's name {0:?} is not one of ha.peers; set ha.node, --node-name or NODE_NAME (default: the host name)")]
    HaNode(String, String),
    /// Every mistake in a config file, one per line.
    #[error("{}", .0 .0.iter().map(|e| format!("{}: {e}", .1.display())).collect::<Vec<_>>().join("\n"))]
    Config(ConfigErrors, PathBuf),
}

fn parse_vips(raw: &[String]) -> Result<Vec<IpAddr>, UsageError> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(raw.len());
    for s in raw {
        let ip: IpAddr = s.trim().parse().map_err(|_| UsageError::VipSyntax(s.clone()))?;
        let bad = match ip {
            IpAddr::V4(a) if a.is_unspecified() || a.is_broadcast() => Some("unspecified or broadcast"),
            IpAddr::V4(a) if a.is_multicast() => Some("multicast"),
            IpAddr::V4(a) if a.is_loopback() => Some("loopback"),
            IpAddr::V6(a) if a.is_unspecified() || a.is_loopback() => Some("unspecified or loopback"),
            IpAddr::V6(a) if a.is_multicast() => Some("multicast"),
            _ => None,
        };
        if let Some(why) = bad {
            return Err(UsageError::VipKind(s.clone(), why));
        }
        if out.contains(&ip) {
            return Err(UsageError::VipTwice(ip));
        }
        out.push(ip);
    }
    Ok(out)
}

/// `xlb check --config FILE`.
pub(crate) fn check(path: &Path) -> anyhow::Result<()> {
    let desired = config::load(path).map_err(|e| UsageError::Config(e, path.to_path_buf()))?;
    let compiled = compile(&desired, &mut Ipam::default()).map_err(|e| UsageError::Config(e, path.to_path_buf()))?;
    build_services(&compiled.specs, &HashMap::new(), &mut StatsIds::default(), &mut TableCache::default()).map_err(
        |e| UsageError::Config(ConfigErrors(vec![config_error("services", e.to_string())]), path.to_path_buf()),
    )?;
    println!(
        "{}: ok: {} service(s), {} VIP(s): {}",
        path.display(),
        desired.services.len(),
        compiled.vips.len(),
        compiled.assignments.iter().map(|(n, a)| format!("{n}={a}")).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}

fn config_error(path: &str, message: String) -> config::ConfigError {
    config::ConfigError { path: path.into(), message }
}

/// Where the desired state comes from.
enum Source {
    /// Flags: fixed for the process's life.
    Flags,
    /// A file: reloaded on SIGHUP and on change.
    File { path: PathBuf, desired: Box<Desired>, mtime: Option<SystemTime> },
    /// The Kubernetes API: plans from the node side, applied as they come.
    Kube {
        handle: Option<xlb::k8s::source::Handle>,
        /// Plans applied so far.
        plans: u64,
        /// Live members and every VIP's owner, as of the last plan.
        members: Vec<String>,
        owners: Vec<(IpAddr, Option<String>)>,
    },
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The set-up the daemon starts with, from a file or from flags.
struct Start {
    source: Source,
    compiled: Compiled,
    ipam: Ipam,
    interface: InterfaceConfig,
    announce: AnnounceConfig,
    snat_addrs: Vec<IpAddr>,
    snat_ports: (u16, u16),
    conntrack_capacity: usize,
    admin_socket: PathBuf,
    metrics: Option<SocketAddr>,
    /// The node side to start once the datapath runs (`--kubernetes`).
    kube: Option<xlb::k8s::source::NodeOptions>,
    /// Heartbeats and failover between xlb nodes.
    ha: Option<HaStart>,
}

/// How this node takes part in failover.
struct HaStart {
    node: String,
    cluster: String,
    timings: HaTimings,
    /// Standalone: the configured boxes (candidates are ranked from them); Kubernetes: none
    /// (candidates come with each plan).
    peers: Option<Vec<String>>,
    /// How a VIP taken over is announced (Kubernetes: the default; policies may differ).
    announce: Timing,
    /// Kubernetes: the witness Lease a two-member set votes with.
    witness: Option<Arc<xlb::k8s::witness::Witness>>,
    /// The key that signs heartbeats.
    key: Option<Arc<xlb::lb::heartbeat::Key>>,
}

/// Standalone HA: each VIP's candidates, the configured boxes ranked for it.
fn static_candidates(vips: &[IpAddr], peers: &[String]) -> BTreeMap<IpAddr, Vec<String>> {
    vips.iter().map(|v| (*v, rank(*v, peers.iter().map(String::as_str)))).collect()
}

/// This host's name, the default node name of standalone HA.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Announcing for failover: no probing (heartbeats decide who owns a VIP), rounds at 0, 50,
/// 250 ms and 1 s, then a refresh.
fn failover_announce(mut a: AnnounceConfig, t: Timing) -> AnnounceConfig {
    a.probes = 0;
    a.with_timing(t)
}

/// SNAT addresses from --snat-addr, reported under the flag's own name.
fn snat_addrs_from_flags(args: &RunArgs) -> Result<Vec<IpAddr>, UsageError> {
    parse_vips(&args.snat_addrs).map_err(|e| match e {
        UsageError::VipSyntax(s) => UsageError::SnatAddr(s, "not an IP address (e.g. 192.0.2.20)".into()),
        UsageError::VipKind(s, why) => UsageError::SnatAddr(s, format!("a SNAT address cannot be {why}")),
        UsageError::VipTwice(a) => UsageError::SnatAddr(a.to_string(), "given twice".into()),
        other => other,
    })
}

fn interface_from_flags(args: &RunArgs) -> InterfaceConfig {
    InterfaceConfig {
        name: args.interface.clone().unwrap_or_default(),
        queues: args.queues,
        xdp_mode: args.xdp_mode.unwrap_or(AttachMode::Auto),
        zero_copy: args.zero_copy.unwrap_or(ZeroCopy::Auto),
    }
}

fn announce_from_flags(args: &RunArgs) -> AnnounceConfig {
    AnnounceConfig {
        probes: args.dad_probes,
        probe_interval: Duration::from_millis(args.dad_interval_ms),
        probe_wait: Duration::from_millis(args.dad_wait_ms),
        garp_count: args.garp_count,
        garp_interval: Duration::from_millis(args.garp_interval_ms),
        garp_offsets: None,
        refresh: None,
    }
}

/// `--kubernetes`: no VIPs to start with; the node side hands them over as it learns them.
fn start_from_kube(args: &RunArgs) -> Result<Start, UsageError> {
    let mut snat_addrs = snat_addrs_from_flags(args)?;
    let snat_ports =
        config::port_range(&args.snat_ports).map_err(|e| UsageError::SnatPorts(args.snat_ports.clone(), e))?;
    let node = args.node_name.clone().ok_or(UsageError::NodeName)?;
    // Each node's own SNAT addresses, from its Node's annotation (plus any --snat-addr).
    let from_node = xlb::k8s::source::node_snat_addrs(args.kube.kubeconfig.as_deref(), &node)
        .map_err(|e| UsageError::Kube(format!("{e:#}")))?;
    for a in from_node {
        if !snat_addrs.contains(&a) {
            snat_addrs.push(a);
        }
    }
    let opts = xlb::k8s::source::NodeOptions {
        settings: xlb::k8s::controller::Settings {
            class: args.kube.class.clone(),
            unclassed: args.kube.unclassed,
            identity: node,
            namespace: args.kube.namespace.clone(),
            lease_seconds: 15,
        },
        interface: args.interface.clone().unwrap_or_default(),
        snat_families: (snat_addrs.iter().any(IpAddr::is_ipv4), snat_addrs.iter().any(IpAddr::is_ipv6)),
        allocate: !args.no_allocator,
        renew: Duration::from_millis(args.lease_renew_ms),
        valid: Duration::from_millis(args.lease_valid_ms),
        witness: (args.heartbeat_interval_ms > 0).then(xlb::k8s::witness::Witness::new),
    };
    if opts.valid < 2 * opts.renew {
        return Err(UsageError::LeaseTimes(args.lease_renew_ms, args.lease_valid_ms));
    }
    // Who announces a VIP is decided through the API and the heartbeats, so no
    // duplicate-address probing delays a takeover; gratuitous ARP goes out at once.
    let mut announce = announce_from_flags(args);
    announce.probes = 0;
    let ha = (args.heartbeat_interval_ms > 0).then(|| HaStart {
        node: opts.settings.identity.clone(),
        cluster: opts.settings.namespace.clone(),
        timings: HaTimings {
            interval: Duration::from_millis(args.heartbeat_interval_ms),
            dead_after: args.heartbeat_dead_after,
            takeover: Duration::from_millis(args.takeover_ms),
        },
        peers: None,
        announce: Timing::default(),
        witness: opts.witness.clone(),
        key: None,
    });
    let ha = match (ha, &args.heartbeat_key_file) {
        (Some(mut h), Some(path)) => {
            let key = xlb::lb::heartbeat::Key::from_file(path).map_err(UsageError::HeartbeatKey)?;
            h.key = Some(Arc::new(key));
            Some(h)
        }
        (h, _) => h,
    };
    if let Some(h) = &ha {
        if h.timings.takeover >= h.timings.dead_time() || h.timings.dead_after < 2 {
            return Err(UsageError::HaTimes(args.takeover_ms, args.heartbeat_interval_ms, args.heartbeat_dead_after));
        }
        announce = failover_announce(announce, h.announce);
    }
    Ok(Start {
        source: Source::Kube { handle: None, plans: 0, members: Vec::new(), owners: Vec::new() },
        compiled: Compiled::default(),
        ipam: Ipam::default(),
        interface: interface_from_flags(args),
        announce,
        snat_addrs,
        snat_ports,
        conntrack_capacity: args.conntrack_capacity,
        admin_socket: args.admin_socket.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_ADMIN_SOCKET)),
        metrics: args.metrics_listen,
        kube: Some(opts),
        ha,
    })
}

fn start_from_flags(args: &RunArgs) -> Result<Start, UsageError> {
    let vips = parse_vips(&args.vips)?;
    let mut specs: Vec<ServiceSpec> = Vec::new();
    for raw in &args.services {
        let spec: ServiceSpec = raw.parse()?;
        if !vips.contains(&spec.key.vip) {
            return Err(UsageError::ServiceVip(raw.clone(), spec.key.vip));
        }
        // Build it once now so that a table that cannot be built is a usage error.
        build_services(
            std::slice::from_ref(&spec),
            &HashMap::new(),
            &mut StatsIds::default(),
            &mut TableCache::default(),
        )
        .map_err(|e| UsageError::ServiceTable(raw.clone(), e))?;
        specs.push(spec);
    }
    // The same rules as for VIPs, reported under the flag's own name.
    let snat_addrs = snat_addrs_from_flags(args)?;
    if let Some(a) = snat_addrs.iter().find(|a| vips.contains(a)) {
        return Err(UsageError::SnatIsVip(*a));
    }
    for (raw, spec) in args.services.iter().zip(&specs) {
        if spec.mode == ForwardMode::Snat && !snat_addrs.iter().any(|a| a.is_ipv6() == spec.key.vip.is_ipv6()) {
            return Err(UsageError::SnatAddrMissing(raw.clone()));
        }
    }
    let snat_ports =
        config::port_range(&args.snat_ports).map_err(|e| UsageError::SnatPorts(args.snat_ports.clone(), e))?;
    Ok(Start {
        source: Source::Flags,
        compiled: Compiled { vips, specs, ..Compiled::default() },
        ipam: Ipam::default(),
        interface: interface_from_flags(args),
        announce: announce_from_flags(args),
        snat_addrs,
        snat_ports,
        conntrack_capacity: args.conntrack_capacity,
        admin_socket: args.admin_socket.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_ADMIN_SOCKET)),
        metrics: args.metrics_listen,
        kube: None,
        ha: None,
    })
}

fn start_from_file(path: &Path, args: &RunArgs) -> Result<Start, UsageError> {
    let desired = config::load(path).map_err(|e| UsageError::Config(e, path.to_path_buf()))?;
    let mut ipam = Ipam::default();
    let compiled = compile(&desired, &mut ipam).map_err(|e| UsageError::Config(e, path.to_path_buf()))?;
    let mut interface = desired.interface.clone();
    // Flags given with --config override the file's interface settings.
    interface.queues = args.queues.or(interface.queues);
    interface.xdp_mode = args.xdp_mode.unwrap_or(interface.xdp_mode);
    interface.zero_copy = args.zero_copy.unwrap_or(interface.zero_copy);
    let ha = desired.ha.as_ref().map(|h| HaStart {
        node: h.node.clone().or_else(|| args.node_name.clone()).unwrap_or_else(hostname),
        cluster: h.cluster.clone(),
        timings: h.timings,
        peers: Some(h.peers.clone()),
        announce: h.announce,
        witness: None,
        key: None,
    });
    let ha = match ha {
        Some(mut h) => {
            let file = desired.ha.as_ref().and_then(|c| c.key_file.clone()).or_else(|| args.heartbeat_key_file.clone());
            if let Some(path) = file {
                let key = xlb::lb::heartbeat::Key::from_file(&path).map_err(UsageError::HeartbeatKey)?;
                h.key = Some(Arc::new(key));
            }
            Some(h)
        }
        None => None,
    };
    if let Some(h) = &ha {
        if !h.peers.as_ref().is_some_and(|p| p.contains(&h.node)) {
            return Err(UsageError::HaNode(h.node.clone(), path.display().to_string()));
        }
    }
    let announce = match &ha {
        Some(h) => failover_announce(desired.announce, h.announce),
        None => desired.announce,
    };
    Ok(Start {
        compiled,
        ipam,
        interface,
        announce,
        snat_addrs: desired.snat_addrs.clone(),
        snat_ports: desired.snat_ports,
        conntrack_capacity: desired.conntrack_capacity,
        admin_socket: args.admin_socket.clone().unwrap_or_else(|| desired.admin_socket.clone()),
        metrics: args.metrics_listen.or(desired.metrics),
        kube: None,
        ha,
        source: Source::File { path: path.to_path_buf(), mtime: mtime(path), desired: Box::new(desired) },
    })
}

/// `xlb run`.
pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut start = match &args.config {
        Some(path) => start_from_file(path, &args)?,
        None if args.kubernetes => start_from_kube(&args)?,
        None => start_from_flags(&args)?,
    };
    let dev = NetDev::by_name(&start.interface.name).map_err(|e: NetDevError| {
        let field = if args.config.is_some() { "interfaces[0].name" } else { "--interface" };
        UsageError::Interface(format!("{field}: {e}"))
    })?;
    let queues = match start.interface.queues {
        Some(q) if q == 0 || q > dev.rx_queues => {
            let field = if args.queues.is_some() { "--queues".to_string() } else { "interfaces[0].queues".to_string() };
            return Err(UsageError::Queues(format!("{field} {q}"), dev.name.clone(), dev.rx_queues).into());
        }
        Some(q) => q,
        None => dev.rx_queues,
    };
    // A VIP that is the host's own address would take the host's traffic away from it.
    let own = xlb::io::netdev::addresses(&dev.name);
    if let Some(v) = start.compiled.vips.iter().chain(&start.snat_addrs).find(|v| own.contains(v)) {
        return Err(UsageError::VipIsHost(*v, dev.name.clone()).into());
    }
    let snat = if start.snat_addrs.is_empty() {
        None
    } else {
        let workers = usize::try_from(queues).unwrap_or(1);
        let (lo, hi) = start.snat_ports;
        let table = SnatTable::new(start.snat_addrs.clone(), lo, hi, workers)
            .map_err(|e| UsageError::SnatPorts(format!("{lo}-{hi}"), e.to_string()))?;
        tracing::info!(
            addrs = ?start.snat_addrs, ports = %format!("{lo}-{hi}"), per_worker = (usize::from(hi - lo) + 1) / workers,
            "SNAT ports split among the workers"
        );
        Some(Arc::new(table))
    };
    let ncores = core_affinity::get_core_ids().map(|c| c.len()).unwrap_or(1).max(1);

    // SIGINT/SIGTERM wake the control loop at once, which stops the workers (the flag they
    // poll) after leaving; SIGHUP asks for a reload.
    let shutdown = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let (hup_tx, hup_rx) = crossbeam_channel::bounded::<()>(1);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    // The workers keep running until the control loop has said goodbye (a last heartbeat, the
    // Lease deleted): it stops them itself.
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

    let mut prog = XdpProgram::load()?;
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let (conflict_tx, conflict_rx) = crossbeam_channel::bounded::<ConflictReport>(4096);
    let (heartbeat_tx, heartbeat_rx) = crossbeam_channel::bounded::<Heartbeat>(4096);
    let fence = Arc::new(Fence::default());
    let shared = WorkerShared {
        snapshot: snapshot.clone(),
        shutdown: shutdown.clone(),
        conflicts: conflict_tx,
        heartbeats: heartbeat_tx,
        failover: start.ha.is_some(),
        heartbeat_key: start.ha.as_ref().and_then(|h| h.key.clone()),
        fence: fence.clone(),
    };

    // Sockets first, then the program: from the moment it is attached, every queue has a
    // socket to redirect to.
    let mut workers: Vec<WorkerHandle> = Vec::new();
    let mut sockets = Vec::new();
    let mut counters = Vec::new();
    let mut cores = Vec::new();
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
            timeouts: Timeouts::default(),
            snat: snat.clone(),
            counters: Arc::new(ObjectCounters::new(MAX_COUNTED_SERVICES, MAX_COUNTED_BACKENDS)),
        };
        counters.push(cfg.counters.clone());
        cores.push(cfg.core);
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
        prog.set_socket(q, xsk.fd())?;
        sockets.push((cfg, xsk));
    }
    let attached = prog.attach(dev.ifindex, &dev.name, start.interface.xdp_mode)?;
    if let Some(e) = &attached.native_error {
        tracing::warn!(interface = %dev.name, error = %e, "native XDP refused; running in generic mode (slower)");
    }
    let mode = attached.mode;
    for (cfg, xsk) in sockets {
        tracing::info!(
            interface = %dev.name, queue = cfg.queue, xdp = %mode, socket = %xsk.mode,
            core = %cfg.core.map_or_else(|| "any".to_string(), |c| c.to_string()), busy_poll = cfg.busy_poll, "queue ready"
        );
        match worker::spawn(cfg, xsk, shared.clone()) {
            Ok(w) => workers.push(w),
            Err(e) => {
                prog.detach();
                stop_workers(workers, &shutdown);
                return Err(e.into());
            }
        }
    }
    // Every owned address's solicited-node group, so that NICs and MLD-snooping switches
    // pass solicitations for it.
    let owned: Vec<IpAddr> = start.compiled.vips.iter().chain(&start.snat_addrs).copied().collect();
    let mut memberships = HashMap::new();
    join_groups(&mut memberships, dev.ifindex, &owned);
    tracing::info!(
        interface = %dev.name, mac = %dev.mac, vips = ?start.compiled.vips, snat = ?start.snat_addrs, queues,
        "xlb running; stop with Ctrl-C or SIGTERM{}", if args.config.is_some() { ", reload with SIGHUP" } else { "" }
    );

    let (admin_tx, admin_rx) = crossbeam_channel::bounded::<AdminRequest>(64);
    let admin = match AdminServer::start(&start.admin_socket, admin_tx.clone()) {
        Ok(a) => Some(a),
        Err(e) => {
            prog.detach();
            stop_workers(workers, &shutdown);
            return Err(e);
        }
    };
    let metrics_server = match start.metrics.map(|a| MetricsServer::start(a, admin_tx.clone())).transpose() {
        Ok(m) => m,
        Err(e) => {
            prog.detach();
            stop_workers(workers, &shutdown);
            return Err(e);
        }
    };
    let health = HealthChecker::start().context("starting the health checker")?;
    health.set_targets(start.compiled.health.clone());
    let mut kube_plans = crossbeam_channel::never();
    if let (Some(opts), Source::Kube { handle, .. }) = (start.kube.take(), &mut start.source) {
        match xlb::k8s::source::start(args.kube.kubeconfig.clone(), opts) {
            Ok(h) => {
                kube_plans = h.plans.clone();
                *handle = Some(h);
            }
            Err(e) => {
                prog.detach();
                stop_workers(workers, &shutdown);
                return Err(UsageError::Kube(format!("{e:#}")).into());
            }
        }
    }

    // With failover, VIPs are taken once the peers have been heard (the first heartbeats
    // decide); SNAT addresses are this node's own from the start.
    let first_vips: Vec<IpAddr> = if start.ha.is_some() { start.snat_addrs.clone() } else { owned.clone() };
    let (announcer, first) = Announcer::new(start.announce, dev.mac, &first_vips, Instant::now());
    let compiled_vips = start.compiled.vips.clone();
    let mut plane = Plane {
        announcer,
        publisher: Publisher::new(snapshot.clone()),
        compiled: start.compiled,
        ipam: start.ipam,
        source: start.source,
        snat_addrs: start.snat_addrs,
        macs: HashMap::new(),
        services: Vec::new(),
        stats_ids: StatsIds::default(),
        counters,
        cores,
        down: HashSet::new(),
        health_detail: HashMap::new(),
        health,
        memberships,
        dev: dev.clone(),
        xdp_mode: mode.to_string(),
        next_neigh: Instant::now(),
        next_file_check: Instant::now() + Duration::from_secs(1),
        frames_dropped: 0,
        reloads: 0,
        reload_failures: 0,
        last_reload_error: None,
        started: Instant::now(),
        batch_times: HashMap::new(),
        leaving: Vec::new(),
        next_drain_end: None,
        forwarded: BTreeSet::new(),
        forward_stale: true,
        tables: TableCache::default(),
        outbox: VecDeque::new(),
        ha: start.ha.map(|h| {
            let incarnation = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            let members = h.peers.clone().unwrap_or_else(|| vec![h.node.clone()]);
            tracing::info!(node = %h.node, members = ?members, interval_ms = h.timings.interval.as_millis(), dead_after = h.timings.dead_after, takeover_ms = h.timings.takeover.as_millis(), signed = h.key.is_some(), "failover: heartbeats on");
            let candidates = match &h.peers {
                Some(p) => static_candidates(&compiled_vips, p),
                None => BTreeMap::new(),
            };
            let vote = match (&h.witness, &h.peers) {
                (Some(w), _) => Vote::Lease(w.clone()),
                (None, Some(p)) if p.len() == 2 => Vote::Alone,
                _ => Vote::Nobody,
            };
            Ha {
                peers: Peers::new(&h.node, &h.cluster, h.timings, members, Instant::now(), incarnation)
                    .with_key(h.key.clone()),
                static_peers: h.peers,
                candidates,
                vote,
                fence: fence.clone(),
                yielded: HashMap::new(),
                last_view: None,
            }
        }),
    };
    let chans = Channels {
        conflicts: conflict_rx,
        stop: stop_rx,
        hup: hup_rx,
        admin: admin_rx,
        kube: kube_plans,
        heartbeats: heartbeat_rx,
    };
    let result = control_loop(&mut plane, first, &prog, &workers, &shutdown, &chans);

    // Leave the cluster first (the membership Lease goes, the other nodes take the VIPs),
    // then detach, so that frames arriving while the workers stop go to the kernel rather
    // than to sockets nobody reads; then stop and join the workers, on errors too.
    tracing::info!("stopping");
    plane.leave(&workers);
    if let Source::Kube { handle, .. } = &mut plane.source {
        if let Some(h) = handle.take() {
            h.stop(Duration::from_secs(4));
        }
    }
    drop(metrics_server);
    drop(admin);
    let classes = prog.class_counts();
    prog.detach();
    drop(prog);
    plane.memberships.clear();
    let finals = stop_workers(workers, &shutdown);
    result?;
    report(&plane, &finals, &classes, args.stats_file.as_deref())
}

fn join_groups(memberships: &mut HashMap<IpAddr, xlb::io::netdev::Membership>, ifindex: u32, addrs: &[IpAddr]) {
    memberships.retain(|a, _| addrs.contains(a));
    for v in addrs {
        if let IpAddr::V6(v6) = v {
            if memberships.contains_key(v) {
                continue;
            }
            match xlb::io::netdev::Membership::join(ifindex, xlb::wire::ipv6::solicited_node(v6)) {
                Ok(m) => {
                    memberships.insert(*v, m);
                }
                Err(e) => tracing::warn!(vip = %v, error = %e, "joining the VIP's solicited-node group failed"),
            }
        }
    }
}

fn stop_workers(workers: Vec<WorkerHandle>, shutdown: &AtomicBool) -> Vec<(u32, worker::BindMode, WorkerStats)> {
    shutdown.store(true, Ordering::Relaxed);
    for w in &workers {
        w.waker.notify();
    }
    workers
        .into_iter()
        .map(|w| {
            let (queue, mode) = (w.queue, w.mode);
            (queue, mode, w.join())
        })
        .collect()
}

/// What failover made of another MAC's claim on a VIP.
enum HaClaim {
    /// The claimant is no peer (or failover is off): an outside host.
    NotAPeer,
    /// This node is cut off (fenced): the claimant is probably the node that took over.
    Quiet,
    /// A peer claimed it: who (`node NAME`), and what this node did.
    Settled(String, String),
}

struct Channels {
    conflicts: Receiver<ConflictReport>,
    stop: Receiver<()>,
    hup: Receiver<()>,
    admin: Receiver<AdminRequest>,
    /// Plans from the Kubernetes node side (never, without --kubernetes).
    kube: Receiver<xlb::k8s::plan::Plan>,
    /// Other nodes' heartbeats, from the workers.
    heartbeats: Receiver<Heartbeat>,
}

/// Runs until a signal: probing, announcing, conflicts, next hops, health, reloads, queries.
fn control_loop(
    plane: &mut Plane,
    first: Actions,
    prog: &XdpProgram,
    workers: &[WorkerHandle],
    shutdown: &AtomicBool,
    ch: &Channels,
) -> anyhow::Result<()> {
    plane.apply(&first, prog, workers)?;
    plane.rebuild();
    plane.refresh_neighbours()?;
    let health_events = plane.health.events.clone();
    while !shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Sleep until the next probe, announcement, neighbour or file check is due, or
        // something arrives: an idle xlb with resolved backends wakes about once a second.
        let mut due = plane.next_neigh.min(plane.next_file_check);
        if let Some(d) = plane.announcer.next_deadline() {
            due = due.min(d);
        }
        if let Some(d) = plane.next_drain_end {
            due = due.min(d);
        }
        if let Some(ha) = &plane.ha {
            due = due.min(ha.peers.next_deadline(now));
        }
        plane.flush_frames(workers);
        if !plane.outbox.is_empty() {
            due = due.min(now + Duration::from_millis(1));
        }
        let wait = due.saturating_duration_since(now).min(Duration::from_secs(5));
        crossbeam_channel::select! {
            recv(ch.conflicts) -> report => {
                let Ok(report) = report else { break };
                // Heartbeats read before the claim: a peer that just took the VIP is known
                // by its MAC (both are queued; the claim may be picked first).
                plane.take_heartbeats(None, &ch.heartbeats, prog, workers)?;
                let act = plane.announcer.conflict(report.vip, report.mac, Instant::now());
                plane.apply(&act, prog, workers)?;
                let said = match plane.ha_conflict(report.vip, report.mac, prog, workers)? {
                    HaClaim::Settled(claimant, outcome) => Some((claimant, outcome)),
                    // Cut off: the claimant is probably the node that took over; this node
                    // has stopped answering, so there is nothing to tell.
                    HaClaim::Quiet => None,
                    HaClaim::NotAPeer if !act.new_conflicts.is_empty() => Some((
                        format!("MAC {}", report.mac),
                        "this node keeps announcing it (find the host with that MAC)".to_string(),
                    )),
                    HaClaim::NotAPeer => None,
                };
                if let (Source::Kube { handle: Some(h), .. }, Some((claimant, outcome))) = (&plane.source, said) {
                    h.conflict(xlb::k8s::source::Conflict { vip: report.vip, claimant, outcome });
                }
            }
            recv(ch.heartbeats) -> h => {
                let Ok(h) = h else { break };
                plane.take_heartbeats(Some(h), &ch.heartbeats, prog, workers)?;
            }
            recv(ch.stop) -> _ => break,
            recv(ch.hup) -> _ => {
                tracing::info!("SIGHUP: reloading the config");
                plane.reload(prog, workers)?;
            }
            recv(health_events) -> ev => {
                if let Ok(ev) = ev {
                    plane.health_changed(ev);
                }
            }
            recv(ch.admin) -> req => {
                if let Ok(req) = req {
                    let answer = plane.answer(&req.query, prog, workers);
                    let _ = req.reply.try_send(answer);
                }
            }
            recv(ch.kube) -> p => {
                // Only the latest plan matters.
                let Ok(mut p) = p else { break };
                while let Ok(newer) = ch.kube.try_recv() {
                    p = newer;
                }
                plane.apply_plan(p, prog, workers)?;
            }
            default(wait) => {}
        }
        let act = plane.announcer.tick(Instant::now());
        plane.apply(&act, prog, workers)?;
        plane.ha_tick(prog, workers)?;
        if Instant::now() >= plane.next_neigh {
            plane.refresh_neighbours()?;
        }
        if plane.next_drain_end.is_some_and(|d| Instant::now() >= d) {
            plane.rebuild();
        }
        if Instant::now() >= plane.next_file_check {
            plane.next_file_check = Instant::now() + Duration::from_secs(1);
            if let Source::File { path, mtime: seen, .. } = &plane.source {
                let now_mtime = mtime(path);
                if now_mtime.is_some() && now_mtime != *seen {
                    tracing::info!(file = %path.display(), "config file changed: reloading");
                    plane.reload(prog, workers)?;
                }
            }
        }
    }
    Ok(())
}

/// How long a backend removed from the config keeps the flows it has (it takes no new ones).
const BACKEND_DRAIN: Duration = Duration::from_secs(30);

/// A backend removed from a service, draining.
struct Leaving {
    spec: String,
    addr: IpAddr,
    port: u16,
    until: Instant,
}

/// Health of one backend of one service, as the checker last said.
struct HealthState {
    up: bool,
    detail: String,
    since: Instant,
}

/// The control plane's state: VIP announcements, the compiled config, backends' next hops
/// and health, and the snapshots built from them.
struct Plane {
    announcer: Announcer,
    publisher: Publisher,
    compiled: Compiled,
    ipam: Ipam,
    source: Source,
    snat_addrs: Vec<IpAddr>,
    macs: HashMap<IpAddr, EthernetAddress>,
    services: Vec<Service>,
    stats_ids: StatsIds,
    /// Each worker's traffic counters by service and backend.
    counters: Vec<Arc<ObjectCounters>>,
    cores: Vec<Option<usize>>,
    /// (service, backend) pairs failing their health checks.
    down: HashSet<(String, IpAddr)>,
    health_detail: HashMap<(String, IpAddr), HealthState>,
    health: HealthChecker,
    memberships: HashMap<IpAddr, xlb::io::netdev::Membership>,
    dev: NetDev,
    xdp_mode: String,
    next_neigh: Instant,
    next_file_check: Instant,
    frames_dropped: u64,
    reloads: u64,
    reload_failures: u64,
    last_reload_error: Option<String>,
    started: Instant,
    /// Per queue: batch times so far (merged from the workers' histograms).
    batch_times: HashMap<u32, Histogram<u64>>,
    /// Backends removed from the config, draining.
    leaving: Vec<Leaving>,
    /// When the next drain ends (a rebuild is due then).
    next_drain_end: Option<Instant>,
    /// Failover between xlb nodes (none: this node owns every VIP it serves).
    ha: Option<Ha>,
    /// VIPs in the XDP map as forward-only (served here, announced by another node).
    forwarded: BTreeSet<IpAddr>,
    /// The services changed since `forwarded` was computed.
    forward_stale: bool,
    /// Maglev tables of the last build, reused for unchanged backends.
    tables: TableCache,
    /// Frames waiting for room in queue 0's worker queue.
    outbox: VecDeque<OutFrame>,
}

/// Frames at most in queue 0's worker queue at a time (see `Plane::flush_frames`).
const IN_FLIGHT_FRAMES: usize = 256;
/// Frames at most waiting to be sent; past it, announcements are dropped (counted).
const OUTBOX_CAP: usize = 65_536;

/// Failover state: peers heard, each VIP's ranked candidates, the fence.
struct Ha {
    peers: Peers,
    /// Standalone: the configured boxes.
    static_peers: Option<Vec<String>>,
    /// VIP -> nodes that may own it, best first.
    candidates: BTreeMap<IpAddr, Vec<String>>,
    /// Where a two-member set's third vote comes from.
    vote: Vote,
    fence: Arc<Fence>,
    /// VIPs left to a better-ranked node after a conflict, until then.
    yielded: HashMap<IpAddr, Instant>,
    /// What owners were last computed from (quorum, who may own VIPs, yields in force).
    last_view: Option<(bool, Vec<String>, usize)>,
}

/// Where the third vote of a two-member set comes from.
enum Vote {
    /// Kubernetes: the `xlb-witness` Lease, which one node at most holds.
    Lease(Arc<xlb::k8s::witness::Witness>),
    /// Standalone, two boxes: there is no third party to ask; the box left alone takes over
    /// (a cut between the two is settled by rank when they hear each other's claims).
    Alone,
    /// More than two members: no witness.
    Nobody,
}

impl Ha {
    /// Until when this node has the third vote (see [`Peers::quorum`]).
    fn witness(&self, now: Instant) -> Option<Instant> {
        match &self.vote {
            Vote::Lease(w) => w.held_until(),
            // Renewed on every tick: a stalled control thread loses it.
            Vote::Alone => Some(now + self.peers.timings().takeover),
            Vote::Nobody => None,
        }
    }
}

/// The service a spec belongs to: `web` of `web/tcp:80`, `ns/web` of `ns/web/tcp:80`.
fn service_of_spec(spec: &str) -> &str {
    spec.rsplit_once('/').map_or(spec, |(svc, _)| svc)
}

/// `proto:vip:port`.
fn service_key_name(s: &Service) -> String {
    let proto = if s.key.proto == 6 { "tcp" } else { "udp" };
    format!("{proto}:{}", SocketAddr::new(s.key.vip, s.key.port))
}

impl Plane {
    /// One object's traffic summed over the workers.
    fn traffic(&self, read: impl Fn(&ObjectCounters) -> Traffic) -> Traffic {
        let mut t = Traffic::default();
        for c in &self.counters {
            t += read(c);
        }
        t
    }

    /// A backend's traffic in a service, whether or not it is in the snapshot now.
    fn backend_traffic(&self, spec: &ServiceSpec, addr: IpAddr, port: u16) -> Traffic {
        self.stats_ids.backend_id(spec.key, addr, port).map_or(Traffic::default(), |id| self.traffic(|c| c.backend(id)))
    }

    /// The spec name of a datapath service (its index in `services` matches `compiled.specs`).
    fn name_of(&self, i: usize) -> String {
        self.compiled.specs.get(i).map_or_else(|| "?".into(), |s| s.name.clone())
    }

    /// The config-level service a spec belongs to (`web` of `web/tcp:80`).
    fn owner_of(&self, i: usize) -> String {
        let n = self.name_of(i);
        service_of_spec(&n).to_string()
    }

    fn publish(&mut self) {
        let generation = self.publisher.publish(self.announcer.vip_modes(), self.services.clone());
        tracing::debug!(generation, "snapshot published");
    }

    /// Rebuilds the datapath services from the compiled specs, health and MACs, and
    /// publishes them.
    fn rebuild(&mut self) {
        let now = Instant::now();
        self.leaving.retain(|l| l.until > now);
        self.next_drain_end = self.leaving.iter().map(|l| l.until).min();
        // Health: the compiled specs hold every backend; down ones leave the table here.
        // Backends removed from the config stay, with weight 0, until their drain ends: no
        // new flows, and the flows they have keep going.
        let specs: Vec<ServiceSpec> = self
            .compiled
            .specs
            .iter()
            .map(|s| {
                let owner = service_of_spec(&s.name).to_string();
                let mut s = s.clone();
                for l in self.leaving.iter().filter(|l| l.spec == s.name) {
                    s.backends.push((l.addr, l.port, 0));
                }
                s.backends.retain(|(a, _, _)| !self.down.contains(&(owner.clone(), *a)));
                s
            })
            .collect();
        match build_services(&specs, &self.macs, &mut self.stats_ids, &mut self.tables) {
            Ok(s) => {
                self.services = s;
                self.publish();
            }
            Err(e) => tracing::error!(error = %e, "building the services failed; keeping the previous ones"),
        }
    }

    fn health_changed(&mut self, ev: HealthEvent) {
        let key = (ev.target.service.clone(), ev.target.addr);
        let port = ev.target.port;
        if ev.up {
            tracing::info!(service = %key.0, backend = %SocketAddr::new(key.1, port), "backend is up again");
            self.down.remove(&key);
        } else {
            tracing::warn!(service = %key.0, backend = %SocketAddr::new(key.1, port), reason = %ev.detail, "backend is down; it gets no new flows");
            self.down.insert(key.clone());
        }
        self.health_detail.insert(key, HealthState { up: ev.up, detail: ev.detail, since: Instant::now() });
        self.rebuild();
    }

    /// Re-reads the config file; applies it if it is valid, else says why and keeps the
    /// running config.
    fn reload(&mut self, prog: &XdpProgram, workers: &[WorkerHandle]) -> anyhow::Result<()> {
        let Source::File { path, mtime: seen, .. } = &mut self.source else {
            tracing::warn!("nothing to reload: xlb runs from flags, not from a config file");
            return Ok(());
        };
        *seen = mtime(path);
        let path = path.clone();
        let mut ipam = self.ipam.clone();
        let loaded = config::load(&path).and_then(|new| compile(&new, &mut ipam).map(|c| (new, c)));
        let (new, compiled) = match loaded {
            Ok(x) => x,
            Err(e) => {
                self.reload_failures += 1;
                self.last_reload_error = Some(e.to_string());
                for err in &e.0 {
                    tracing::error!(file = %path.display(), "config reload refused, the running config stays: {err}");
                }
                return Ok(());
            }
        };
        let Source::File { desired: old, .. } = &mut self.source else { return Ok(()) };
        // What needs a restart is kept as it was, and said.
        let restart_only = [
            ("interfaces", old.interface != new.interface),
            ("snat", old.snat_addrs != new.snat_addrs || old.snat_ports != new.snat_ports),
            ("conntrack", old.conntrack_capacity != new.conntrack_capacity),
            ("admin", old.admin_socket != new.admin_socket),
            ("metrics", old.metrics != new.metrics),
            ("announce", old.announce != new.announce),
            ("ha", old.ha != new.ha),
        ];
        for (field, changed) in restart_only {
            if changed {
                tracing::warn!(field, "this part of the config changed and takes effect at the next restart");
            }
        }
        **old = new;
        self.ipam = ipam;
        self.apply_compiled(compiled, prog, workers)?;
        self.reloads += 1;
        self.last_reload_error = None;
        tracing::info!(generation = self.publisher.generation(), reloads = self.reloads, "config reloaded");
        Ok(())
    }

    /// The VIPs this node announces at `now`: all it serves without failover; with it, those
    /// whose first live candidate is this node, and only while it has quorum (without
    /// quorum nothing is taken over and nothing given up: the fence stops the answers).
    fn announced(&self, now: Instant) -> Vec<IpAddr> {
        let Some(ha) = &self.ha else { return self.compiled.vips.clone() };
        let current: Vec<IpAddr> =
            self.announcer.vips().iter().map(|(v, _)| *v).filter(|v| !self.snat_addrs.contains(v)).collect();
        if !ha.peers.quorum(now, ha.witness(now)) {
            return current.into_iter().filter(|v| ha.candidates.contains_key(v)).collect();
        }
        ha.candidates
            .iter()
            .filter(|(v, c)| {
                ha.peers.owner(c, now, true) == Some(ha.peers.me()) && ha.yielded.get(*v).is_none_or(|t| *t <= now)
            })
            .map(|(v, _)| *v)
            .collect()
    }

    /// Every address this node announces at `now`: its VIPs and its SNAT addresses.
    fn wanted(&self, now: Instant) -> Vec<IpAddr> {
        self.announced(now).into_iter().chain(self.snat_addrs.iter().copied()).collect()
    }

    /// Re-decides which VIPs this node announces (after a heartbeat, an expiry, a conflict).
    fn refresh_ownership(&mut self, prog: &XdpProgram, workers: &[WorkerHandle]) -> anyhow::Result<()> {
        let now = Instant::now();
        let want = self.wanted(now);
        let have: HashSet<IpAddr> = self.announcer.vips().iter().map(|(v, _)| *v).collect();
        if want.len() == have.len() && want.iter().all(|v| have.contains(v)) {
            return Ok(());
        }
        for v in want.iter().filter(|v| !have.contains(v)) {
            tracing::info!(vip = %v, "taking the VIP over (its owner's heartbeats stopped, or this node ranks first)");
        }
        join_groups(&mut self.memberships, self.dev.ifindex, &want);
        let act = self.announcer.set_vips(&want, now);
        for v in &act.withdrawn {
            tracing::info!(vip = %v, "VIP handed to a better-ranked live node");
        }
        self.apply(&act, prog, workers)
    }

    /// Failover housekeeping: the heartbeat, the fence, peers that died.
    fn ha_tick(&mut self, prog: &XdpProgram, workers: &[WorkerHandle]) -> anyhow::Result<()> {
        let now = Instant::now();
        let mac = self.dev.mac;
        let Some(ha) = &mut self.ha else { return Ok(()) };
        if let Vote::Lease(w) = &ha.vote {
            w.want(ha.peers.wants_witness(now));
        }
        let witness = ha.witness(now);
        let quorum = ha.peers.quorum(now, witness) && !ha.fence.fenced();
        if let Some(f) = ha.peers.beat(mac, now, false, quorum) {
            self.send_frames(&[f], workers, true);
        }
        let Some(ha) = &mut self.ha else { return Ok(()) };
        let was = ha.fence.fenced();
        match ha.peers.fence_deadline(now, witness) {
            Some(t) => ha.fence.set(t),
            None => ha.fence.clear(),
        }
        let is = ha.fence.fenced();
        if was != is {
            if is {
                tracing::warn!(alive = ?ha.peers.alive_members(now), "no quorum: this node stops answering for its VIPs (fenced)");
            } else {
                tracing::info!("quorum again: answering for its VIPs");
            }
        }
        // Owners change with time only when who may own VIPs does (a peer's expiry, the
        // start-up grace, quorum) or a yield ends: only then is every VIP looked at again.
        let q = ha.peers.quorum(now, witness);
        let view = (
            q,
            ha.peers.owners_view(now, q).into_iter().map(str::to_string).collect::<Vec<_>>(),
            ha.yielded.values().filter(|t| **t > now).count(),
        );
        if ha.last_view.as_ref() != Some(&view) {
            ha.last_view = Some(view);
            self.refresh_ownership(prog, workers)?;
        }
        if was && !is {
            // Announcements were withheld while fenced: make up for them now.
            let owned: Vec<IpAddr> = self.announcer.vips().iter().map(|(v, _)| *v).collect();
            let mut all = Actions::default();
            for v in owned {
                let act = self.announcer.reannounce(v, now);
                all.frames.extend(act.frames);
                all.map_updates.extend(act.map_updates);
                all.transitions.extend(act.transitions);
                all.vips_changed |= act.vips_changed;
            }
            self.apply(&all, prog, workers)?;
        }
        Ok(())
    }

    /// Reads `first` and every heartbeat queued in `rx`. If that changed who is alive or may
    /// own VIPs, the failover state is brought up to date at once: this node's own heartbeat
    /// first when what it says changed (quorum), then the fence, then the owners.
    fn take_heartbeats(
        &mut self,
        first: Option<Heartbeat>,
        rx: &Receiver<Heartbeat>,
        prog: &XdpProgram,
        workers: &[WorkerHandle],
    ) -> anyhow::Result<()> {
        let Some(ha) = &mut self.ha else { return Ok(()) };
        let now = Instant::now();
        let mut changed = false;
        for h in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            changed |= ha.peers.heard(&h, now);
        }
        if changed {
            self.ha_tick(prog, workers)?;
        }
        Ok(())
    }

    /// Another MAC claims a VIP this node announces: the better-ranked node keeps it.
    /// Says whether the claimant is a peer and what this node did about it.
    fn ha_conflict(
        &mut self,
        vip: IpAddr,
        mac: EthernetAddress,
        prog: &XdpProgram,
        workers: &[WorkerHandle],
    ) -> anyhow::Result<HaClaim> {
        let now = Instant::now();
        let Some(ha) = &mut self.ha else { return Ok(HaClaim::NotAPeer) };
        if ha.fence.fenced() || !ha.peers.quorum(now, ha.witness(now)) {
            return Ok(HaClaim::Quiet);
        }
        let Some(other) = ha.peers.node_of(mac).map(str::to_string) else {
            tracing::info!(%vip, claimant = %mac, alive = ?ha.peers.alive_members(now), "the claimant is no peer this node hears");
            return Ok(HaClaim::NotAPeer);
        };
        let Some(cands) = ha.candidates.get(&vip) else { return Ok(HaClaim::NotAPeer) };
        let pos = |n: &str| cands.iter().position(|c| c == n).unwrap_or(usize::MAX);
        let node = format!("node {other}");
        if ha.peers.alive(&other, now) && pos(&other) < pos(ha.peers.me()) {
            tracing::warn!(%vip, node = %other, "conflict: a better-ranked node announces this VIP; withdrawing");
            ha.yielded.insert(vip, now + ha.peers.timings().dead_time());
            self.refresh_ownership(prog, workers)?;
            Ok(HaClaim::Settled(node, format!("{other} ranks first: this node withdrew")))
        } else {
            tracing::warn!(%vip, node = %other, "conflict: this node ranks first for the VIP; announcing it again");
            let act = self.announcer.reannounce(vip, now);
            self.apply(&act, prog, workers)?;
            Ok(HaClaim::Settled(node, "this node ranks first: it announced the VIP again".to_string()))
        }
    }

    /// Leaving: a last heartbeat that hands this node's VIPs over at once.
    fn leave(&mut self, workers: &[WorkerHandle]) {
        let mac = self.dev.mac;
        let Some(ha) = &mut self.ha else { return };
        // Stop answering first: the peers take the VIPs as soon as they read the beat.
        ha.fence.set(Instant::now());
        // Announcements still waiting no longer matter.
        self.outbox.clear();
        let Some(ha) = &mut self.ha else { return };
        if let Some(f) = ha.peers.beat(mac, Instant::now(), true, false) {
            self.send_frames(&[f], workers, true);
            // Let queue 0's worker put it on the wire before it is stopped.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Applies a plan from the Kubernetes node side: its services, and the VIPs this node
    /// announces.
    fn apply_plan(
        &mut self,
        plan: xlb::k8s::plan::Plan,
        prog: &XdpProgram,
        workers: &[WorkerHandle],
    ) -> anyhow::Result<()> {
        if let Some(ha) = &mut self.ha {
            if ha.peers.set_members(plan.members.clone(), Instant::now()) {
                tracing::info!(members = ?plan.members, "failover: the members changed");
            }
            ha.candidates = plan.owners.iter().map(|(v, o)| (*v, o.candidates.clone())).collect();
        }
        self.announcer.set_timings(plan.owners.iter().filter_map(|(v, o)| Some((*v, o.timing?))).collect());
        if let Source::Kube { plans, members, owners, .. } = &mut self.source {
            *plans += 1;
            *members = plan.members;
            *owners = plan.owners.iter().map(|(v, o)| (*v, o.owner.clone())).collect();
        }
        let compiled = Compiled { vips: plan.vips, specs: plan.specs, assignments: Vec::new(), health: Vec::new() };
        self.apply_compiled(compiled, prog, workers)?;
        tracing::debug!(generation = self.publisher.generation(), vips = ?self.compiled.vips, "plan from Kubernetes applied");
        Ok(())
    }

    /// Makes `compiled` what runs: backends that leave a service that stays drain, VIPs
    /// come and go, health checks follow.
    fn apply_compiled(
        &mut self,
        compiled: Compiled,
        prog: &XdpProgram,
        workers: &[WorkerHandle],
    ) -> anyhow::Result<()> {
        // Backends that left a service that stays are drained, not cut.
        let until = Instant::now() + BACKEND_DRAIN;
        let by_name: HashMap<&str, &ServiceSpec> = compiled.specs.iter().map(|s| (s.name.as_str(), s)).collect();
        for old in &self.compiled.specs {
            let Some(new) = by_name.get(old.name.as_str()) else { continue };
            for (addr, port, _) in &old.backends {
                let gone = !new.backends.iter().any(|(a, p, _)| a == addr && p == port);
                let already = self.leaving.iter().any(|l| l.spec == old.name && l.addr == *addr && l.port == *port);
                if gone && !already {
                    tracing::info!(service = %old.name, backend = %SocketAddr::new(*addr, *port), drain_s = BACKEND_DRAIN.as_secs(), "backend removed: draining (no new flows, existing ones go on)");
                    self.leaving.push(Leaving { spec: old.name.clone(), addr: *addr, port: *port, until });
                }
            }
        }
        // A backend that comes back is no longer leaving.
        self.leaving.retain(|l| {
            !by_name
                .get(l.spec.as_str())
                .is_some_and(|n| n.backends.iter().any(|(a, p, _)| *a == l.addr && *p == l.port))
        });
        drop(by_name);
        // The compiled specs keep every backend; health applies at rebuild.
        self.compiled = compiled;
        self.forward_stale = true;
        if let Some(ha) = &mut self.ha {
            if let Some(peers) = &ha.static_peers {
                ha.candidates = static_candidates(&self.compiled.vips, peers);
            }
        }
        let owned = self.wanted(Instant::now());
        join_groups(&mut self.memberships, self.dev.ifindex, &owned);
        let act = self.announcer.set_vips(&owned, Instant::now());
        for v in &act.withdrawn {
            tracing::info!(vip = %v, "VIP withdrawn");
        }
        // Health checks for gone backends stop; their state is forgotten.
        let targets: HashSet<(String, IpAddr)> =
            self.compiled.health.iter().map(|t| (t.service.clone(), t.addr)).collect();
        self.down.retain(|k| targets.contains(k));
        self.health_detail.retain(|k, _| targets.contains(k));
        self.health.set_targets(self.compiled.health.clone());
        self.apply(&act, prog, workers)?;
        self.rebuild();
        self.next_neigh = Instant::now();
        Ok(())
    }

    /// Reads the kernel's neighbour table for the backends, asks it to resolve those it
    /// does not know, and republishes when a MAC appears or changes.
    fn refresh_neighbours(&mut self) -> anyhow::Result<()> {
        let wanted: Vec<IpAddr> = {
            let mut w: Vec<IpAddr> = self.compiled.specs.iter().flat_map(|s| s.backends.iter().map(|b| b.0)).collect();
            w.sort();
            w.dedup();
            w
        };
        if wanted.is_empty() {
            self.next_neigh = Instant::now() + Duration::from_secs(3600);
            return Ok(());
        }
        let table = match netlink::neighbours(self.dev.ifindex) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading the neighbour table failed; retrying");
                self.next_neigh = Instant::now() + Duration::from_secs(1);
                return Ok(());
            }
        };
        let mut changed = false;
        let mut unresolved = 0;
        for addr in &wanted {
            let found = table.iter().find(|n| n.addr == *addr && n.usable()).and_then(|n| n.mac);
            match (found, self.macs.get(addr).copied()) {
                (Some(mac), old) if old != Some(mac) => {
                    tracing::info!(backend = %addr, %mac, "backend next hop resolved");
                    self.macs.insert(*addr, mac);
                    changed = true;
                }
                (Some(_), _) => {}
                (None, old) => {
                    unresolved += 1;
                    if old.is_some() {
                        tracing::warn!(backend = %addr, "backend next hop lost; no new flows go to it");
                        self.macs.remove(addr);
                        changed = true;
                    }
                    if let Err(e) = netlink::solicit(self.dev.ifindex, *addr) {
                        tracing::warn!(backend = %addr, error = %e, "asking the kernel to resolve a backend failed");
                    }
                }
            }
        }
        if changed {
            self.rebuild();
        }
        // Unresolved backends are asked for again soon; resolved ones are re-read to follow
        // MAC changes.
        let next = if unresolved > 0 { Duration::from_millis(200) } else { Duration::from_secs(5) };
        self.next_neigh = Instant::now() + next;
        Ok(())
    }

    /// VIPs this node serves while another node announces them: their packets that still
    /// reach this node (a client that has not yet learnt the new MAC after a move) are
    /// forwarded like the owner's, from the same Maglev tables, instead of going to the kernel.
    fn forward_only(&self) -> BTreeSet<IpAddr> {
        let announced: HashSet<IpAddr> = self.announcer.vips().iter().map(|(v, _)| *v).collect();
        self.compiled.specs.iter().map(|s| s.key.vip).filter(|v| !announced.contains(v)).collect()
    }

    fn apply(&mut self, act: &Actions, prog: &XdpProgram, workers: &[WorkerHandle]) -> anyhow::Result<()> {
        // The forward-only set changes only with the VIP map or the services.
        if !act.map_updates.is_empty() || self.forward_stale {
            self.forward_stale = false;
            let forward = self.forward_only();
            for (vip, flags) in &act.map_updates {
                // A VIP given up but still served stays in the map, forward-only.
                let flags = if *flags == 0 && forward.contains(vip) { VIP_FORWARD } else { *flags };
                prog.set_vip(*vip, flags)?;
            }
            for v in forward.difference(&self.forwarded) {
                prog.set_vip(*v, VIP_FORWARD)?;
            }
            let announced: HashSet<IpAddr> = self.announcer.vips().iter().map(|(v, _)| *v).collect();
            for v in self.forwarded.difference(&forward) {
                if !announced.contains(v) {
                    prog.set_vip(*v, 0)?;
                }
            }
            self.forwarded = forward;
        }
        if act.vips_changed {
            self.publish();
        }
        log_actions(act);
        // A fenced node sends no announcements either: another node may own its VIPs.
        if self.ha.as_ref().is_some_and(|h| h.fence.fenced()) {
            if !act.frames.is_empty() {
                tracing::debug!(frames = act.frames.len(), "fenced: announcements withheld");
            }
        } else {
            self.send_frames(&act.frames, workers, false);
        }
        Ok(())
    }

    /// Sends frames through queue 0's worker (one copy per interface is enough), after
    /// those already waiting; `urgent` (heartbeats): before them.
    fn send_frames(&mut self, frames: &[OutFrame], workers: &[WorkerHandle], urgent: bool) {
        for f in frames {
            if self.outbox.len() >= OUTBOX_CAP {
                self.frames_dropped += 1;
                if self.frames_dropped == 1 {
                    tracing::warn!("too many announcements waiting to be sent; frames dropped (counted)");
                }
            } else if urgent {
                self.outbox.push_front(*f);
            } else {
                self.outbox.push_back(*f);
            }
        }
        self.flush_frames(workers);
    }

    /// Hands waiting frames to queue 0's worker, keeping at most `IN_FLIGHT_FRAMES` in its
    /// queue: a burst (a refresh of a thousand VIPs) goes out over a few passes of the worker
    /// instead of overflowing the queue, and a heartbeat never waits behind more than that.
    fn flush_frames(&mut self, workers: &[WorkerHandle]) {
        let Some(w) = workers.first() else { return };
        let mut sent = false;
        while w.control.len() < IN_FLIGHT_FRAMES {
            let Some(f) = self.outbox.pop_front() else { break };
            if let Err(e) = w.control.try_send(f) {
                self.outbox.push_front(e.into_inner());
                break;
            }
            sent = true;
        }
        if sent {
            w.waker.notify();
        }
    }

    /// Finds a datapath service by NAME (all its ports), NAME/PROTO:PORT, or VIP:PORT.
    fn find_services(&self, what: &str) -> Vec<usize> {
        (0..self.services.len())
            .filter(|i| {
                let s = &self.services[*i];
                let spec = self.name_of(*i);
                spec == what
                    || self.owner_of(*i) == what
                    || SocketAddr::new(s.key.vip, s.key.port).to_string() == what
                    || service_key_name(s) == what
            })
            .collect()
    }

    fn health_of(&self, i: usize, addr: IpAddr) -> (&'static str, Option<String>) {
        let owner = self.owner_of(i);
        match self.health_detail.get(&(owner.clone(), addr)) {
            Some(h) if !h.up => ("down", Some(format!("{} ({}s ago)", h.detail, h.since.elapsed().as_secs()))),
            Some(_) => ("up", None),
            None if self.compiled.health.iter().any(|t| t.service == owner) => ("up", None),
            None => ("unchecked", None),
        }
    }

    /// Answers an admin query.
    fn answer(&mut self, q: &Query, _prog: &XdpProgram, workers: &[WorkerHandle]) -> Value {
        match q {
            Query::Status => {
                let ws: Vec<Value> = workers
                    .iter()
                    .zip(&self.cores)
                    .map(|(w, core)| {
                        let s = w.stats.read();
                        let (ct, _) = w.stats.conntrack();
                        json!({
                            "queue": w.queue, "socket": w.mode.to_string(), "core": core,
                            "rx_frames": s.get(Counter::RxFrames), "tx_frames": s.get(Counter::TxFrames),
                            "drops": s.drops.iter().sum::<u64>(), "flows": ct.live,
                        })
                    })
                    .collect();
                let vips: Vec<Value> = self
                    .announcer
                    .vips()
                    .iter()
                    .map(|(v, s)| json!({"vip": v.to_string(), "state": s.name()}))
                    .collect();
                json!({
                    "interface": self.dev.name, "mac": self.dev.mac.to_string(), "xdp_mode": self.xdp_mode,
                    "generation": self.publisher.generation(), "reloads": self.reloads,
                    "reload_failures": self.reload_failures, "last_reload_error": self.last_reload_error,
                    "uptime_s": self.started.elapsed().as_secs(),
                    "config": match &self.source { Source::File { path, .. } => Some(path.display().to_string()), Source::Flags | Source::Kube { .. } => None },
                    "failover": self.ha.as_ref().map(|ha| {
                        let now = Instant::now();
                        json!({
                            "node": ha.peers.me(),
                            "alive": ha.peers.alive_members(now),
                            "quorum": ha.peers.quorum(now, ha.witness(now)),
                            "witness": ha.witness(now).is_some_and(|t| t > now),
                            "fenced": ha.fence.fenced(),
                            "heartbeats_ignored": ha.peers.ignored,
                        })
                    }),
                    "kubernetes": match &self.source {
                        Source::Kube { plans, members, owners, .. } => json!({
                            "plans": plans,
                            "members": members,
                            "announced_by": owners.iter().map(|(v, o)| (v.to_string(), json!(o))).collect::<serde_json::Map<_, _>>(),
                        }),
                        _ => Value::Null,
                    },
                    "workers": ws, "vips": vips,
                })
            }
            Query::Services => {
                let list: Vec<Value> = self
                    .services
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let t = self.traffic(|c| c.service(s.stats_id));
                        let spec = self.compiled.specs.get(i);
                        json!({
                            "name": self.name_of(i), "vip": s.key.vip.to_string(), "port": s.key.port,
                            "protocol": config::proto_name(s.key.proto), "mode": format!("{:?}", s.mode).to_lowercase(),
                            "backends": spec.map_or(0, |sp| sp.backends.len()), "up": s.backends.iter().filter(|b| b.takes_new_flows()).count(),
                            "affinity_s": s.affinity.map(|a| a / 1_000_000_000),
                            "packets": t.packets, "bytes": t.bytes, "reply_packets": t.reply_packets, "reply_bytes": t.reply_bytes,
                        })
                    })
                    .collect();
                json!({ "services": list })
            }
            Query::Backends => {
                let mut list = Vec::new();
                for (i, spec) in self.compiled.specs.iter().enumerate() {
                    let svc = self.services.get(i);
                    let size = svc.map_or(0, |s| s.table().size());
                    for (addr, port, weight) in &spec.backends {
                        let b = svc.and_then(|s| {
                            s.backends.iter().position(|b| b.addr == *addr && b.port == *port).map(|j| (s, j))
                        });
                        let slots = b.map_or(0, |(s, j)| s.table().slots_of(u32::try_from(j).unwrap_or(u32::MAX)));
                        // Counted under an id that outlives health changes and reloads.
                        let t = self.backend_traffic(spec, *addr, *port);
                        let (health, why) = self.health_of(i, *addr);
                        list.push(json!({
                            "service": spec.name, "backend": SocketAddr::new(*addr, *port).to_string(),
                            "health": health, "health_detail": why, "weight": weight,
                            "share": format!("{:.1}%", 100.0 * slots as f64 / size.max(1) as f64),
                            "slots": slots, "mac": self.macs.get(addr).map(ToString::to_string),
                            "packets": t.packets, "bytes": t.bytes,
                        }));
                    }
                }
                for l in &self.leaving {
                    list.push(json!({
                        "service": l.spec, "backend": SocketAddr::new(l.addr, l.port).to_string(),
                        "health": "draining", "health_detail": format!("removed from the config; drained for {} s more", l.until.saturating_duration_since(Instant::now()).as_secs()),
                        "weight": 0, "share": "0.0%", "slots": 0, "mac": self.macs.get(&l.addr).map(ToString::to_string),
                        "packets": Value::Null, "bytes": Value::Null,
                    }));
                }
                json!({ "backends": list })
            }
            Query::Pools => {
                let list: Vec<Value> = self
                    .ipam
                    .usage()
                    .into_iter()
                    .map(|u| {
                        let state = match (&u.conflict, u.disabled) {
                            (Some(c), _) => format!("conflicts with {c}"),
                            (None, true) => "disabled".into(),
                            (None, false) => "active".into(),
                        };
                        json!({"name": u.name, "size": u.size.to_string(), "used": u.used.to_string(), "free": (u.size - u.used.min(u.size)).to_string(), "state": state})
                    })
                    .collect();
                let assigned: Vec<Value> =
                    self.ipam.assignments().map(|(a, h)| json!({"address": a.to_string(), "holder": h})).collect();
                json!({ "pools": list, "assignments": assigned })
            }
            Query::Conntrack { service, client, backend, limit } => {
                self.conntrack(workers, service.as_deref(), *client, *backend, *limit)
            }
            Query::Maglev { service } => {
                let found = self.find_services(service);
                let Some(&i) = found.first() else {
                    return json!({"error": format!("no service {service:?} (see xlb service list)")});
                };
                let s = &self.services[i];
                let t = s.table();
                let backends: Vec<Value> = s
                    .backends
                    .iter()
                    .zip(0u32..)
                    .map(|(b, j)| {
                        let n = t.slots_of(j);
                        json!({"backend": SocketAddr::new(b.addr, b.port).to_string(), "weight": b.weight, "slots": n, "share": format!("{:.2}%", 100.0 * n as f64 / t.size().max(1) as f64)})
                    })
                    .collect();
                let first: Vec<String> =
                    (0..t.size().min(32)).map(|k| t.slot(k).map_or("-".into(), |b| b.to_string())).collect();
                json!({"service": self.name_of(i), "size": t.size(), "backends": backends, "first_slots": first.join(" ")})
            }
            Query::Metrics => Value::String(metrics::render(&self.metrics_input(_prog, workers))),
        }
    }

    fn conntrack(
        &self,
        workers: &[WorkerHandle],
        service: Option<&str>,
        client: Option<IpAddr>,
        backend: Option<IpAddr>,
        limit: usize,
    ) -> Value {
        let wanted: Option<Vec<usize>> = service.map(|s| self.find_services(s));
        let mut flows = Vec::new();
        for w in workers {
            let (tx, rx) = crossbeam_channel::bounded(1);
            // Ask for more than shown: filters apply here.
            if w.requests
                .try_send(WorkerRequest::Conntrack { max: limit.saturating_mul(8).max(limit), reply: tx })
                .is_err()
            {
                continue;
            }
            w.waker.notify();
            let Ok((worker_now, entries)) = rx.recv_timeout(Duration::from_secs(1)) else { continue };
            let mut shown = 0;
            for e in entries {
                if shown >= limit {
                    break;
                }
                if e.state == FlowState::Affinity {
                    continue;
                }
                let from = ip16(&e.key.src);
                let vip = ip16(&e.key.dst);
                let svc_i = self
                    .services
                    .iter()
                    .position(|s| s.key.vip == vip && s.key.port == e.key.dst_port && s.key.proto == e.key.proto);
                if let Some(ws) = &wanted {
                    if !svc_i.is_some_and(|i| ws.contains(&i)) {
                        continue;
                    }
                }
                if client.is_some_and(|c| c != from) {
                    continue;
                }
                let be = svc_i.and_then(|i| self.services[i].backend_index(e.backend_key, e.backend).map(|j| (i, j)));
                let be_addr =
                    be.and_then(|(i, j)| self.services[i].backends.get(usize::try_from(j).unwrap_or(usize::MAX)));
                if let Some(b) = backend {
                    if be_addr.is_none_or(|x| x.addr != b) {
                        continue;
                    }
                }
                shown += 1;
                flows.push(json!({
                    "worker": w.queue,
                    "protocol": config::proto_name(e.key.proto),
                    "client": SocketAddr::new(from, e.key.src_port).to_string(),
                    "vip": SocketAddr::new(vip, e.key.dst_port).to_string(),
                    "backend": be_addr.map(|b| SocketAddr::new(b.addr, b.port).to_string()),
                    "state": format!("{:?}", e.state).to_lowercase(),
                    "snat": e.snat.map(|l| format!("{}:{}", self.snat_addrs.get(usize::from(l.addr)).map_or("?".into(), ToString::to_string), l.port)),
                    "expires_in_s": e.expires.saturating_sub(worker_now) / 1_000_000_000,
                }));
            }
        }
        json!({ "flows": flows })
    }

    fn metrics_input(&mut self, prog: &XdpProgram, workers: &[WorkerHandle]) -> MetricsInput {
        // Swap each worker's batch histogram for an empty one and merge what it held.
        for w in workers {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if w.requests.try_send(WorkerRequest::Histogram { fresh: batch_histogram(), reply: tx }).is_ok() {
                w.waker.notify();
                if let Ok(h) = rx.recv_timeout(Duration::from_millis(500)) {
                    let total = self.batch_times.entry(w.queue).or_insert_with(|| *batch_histogram());
                    let _ = total.add(&*h);
                }
            }
        }
        let mut m = MetricsInput {
            workers: workers.iter().map(|w| (w.queue, w.stats.read())).collect(),
            conntrack: workers
                .iter()
                .map(|w| {
                    let (s, n) = w.stats.conntrack();
                    (w.queue, s, n)
                })
                .collect(),
            batch_times: self.batch_times.iter().map(|(q, h)| (*q, h.clone())).collect(),
            generation: self.publisher.generation(),
            reloads: self.reloads,
            reload_failures: self.reload_failures,
            xdp_classes: CLASS_NAMES.iter().copied().zip(prog.class_counts()).collect(),
            vips: self.announcer.vips().iter().map(|(v, s)| (v.to_string(), s.name())).collect(),
            ..MetricsInput::default()
        };
        for (i, s) in self.services.iter().enumerate() {
            let t = self.traffic(|c| c.service(s.stats_id));
            let mode = if s.mode == ForwardMode::Snat { "snat" } else { "dsr" };
            m.services.push((
                self.name_of(i),
                s.key.vip.to_string(),
                s.key.port,
                config::proto_name(s.key.proto),
                mode,
                t,
            ));
        }
        for (i, spec) in self.compiled.specs.iter().enumerate() {
            for (addr, port, weight) in &spec.backends {
                let t = self.backend_traffic(spec, *addr, *port);
                let up = self.health_of(i, *addr).0 != "down";
                m.backends.push((spec.name.clone(), SocketAddr::new(*addr, *port).to_string(), up, *weight, t));
            }
        }
        m
    }
}

fn ip16(a: &[u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*a);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

fn log_actions(act: &Actions) {
    for (vip, old, new) in &act.transitions {
        match new {
            VipStatus::Conflict { mac, retry, attempts } => {
                let retry_in_s = retry.saturating_duration_since(Instant::now()).as_secs();
                tracing::warn!(%vip, holder = %mac, attempts, retry_in_s, "VIP is already in use on this link; not announcing it")
            }
            _ => tracing::info!(%vip, from = old.name(), to = new.name(), "VIP state"),
        }
    }
    for (vip, mac, status) in &act.new_conflicts {
        if !matches!(status, VipStatus::Probing { .. }) {
            tracing::warn!(%vip, claimant = %mac, state = status.name(), "another host claims a VIP we announce");
        }
    }
}

fn report(
    plane: &Plane,
    finals: &[(u32, worker::BindMode, WorkerStats)],
    classes: &[u64; CLASS_NAMES.len()],
    stats_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut total = WorkerStats::default();
    for (_, _, s) in finals {
        for (t, v) in total.counters.iter_mut().zip(s.counters.iter()) {
            *t += v;
        }
        for (t, v) in total.drops.iter_mut().zip(s.drops.iter()) {
            *t += v;
        }
    }
    let counters: serde_json::Map<String, Value> =
        Counter::ALL.iter().map(|c| (c.name().to_string(), json!(total.get(*c)))).collect();
    let drops: serde_json::Map<String, Value> =
        DropReason::ALL.iter().map(|r| (r.name().to_string(), json!(total.dropped(*r)))).collect();
    let xdp: serde_json::Map<String, Value> =
        CLASS_NAMES.iter().zip(classes.iter()).map(|(n, v)| (n.to_string(), json!(v))).collect();
    let announcer = &plane.announcer;
    let vips: Vec<Value> = announcer
        .vips()
        .iter()
        .map(|(v, s)| {
            let holder = match s {
                VipStatus::Conflict { mac, .. } => Some(mac.to_string()),
                _ => None,
            };
            json!({"vip": v.to_string(), "state": s.name(), "conflict_with": holder})
        })
        .collect();
    let claims: Vec<Value> = announcer
        .claims()
        .iter()
        .map(|((vip, mac), n)| json!({"vip": vip.to_string(), "mac": mac.to_string(), "frames": n}))
        .collect();
    let doc = json!({
        "interface": plane.dev.name,
        "mac": plane.dev.mac.to_string(),
        "queues": finals
            .iter()
            .map(|(q, m, s)| json!({
                "queue": q,
                "socket": m.to_string(),
                "rx_frames": s.get(Counter::RxFrames),
                "tx_frames": s.get(Counter::TxFrames),
            }))
            .collect::<Vec<_>>(),
        "snapshot_generation": plane.publisher.generation(),
        "reloads": plane.reloads,
        "reload_failures": plane.reload_failures,
        "services": plane
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = plane.traffic(|c| c.service(s.stats_id));
                json!({
                    "service": service_key_name(s),
                    "name": plane.name_of(i),
                    "mode": format!("{:?}", s.mode).to_lowercase(),
                    "packets": t.packets, "bytes": t.bytes,
                    "reply_packets": t.reply_packets, "reply_bytes": t.reply_bytes,
                })
            })
            .collect::<Vec<_>>(),
        "backends": plane
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(move |b| {
                let t = plane.traffic(|c| c.backend(b.stats_id));
                json!({
                    "service": service_key_name(s),
                    "backend": SocketAddr::new(b.addr, b.port).to_string(),
                    "mac": b.mac.map(|m| m.to_string()),
                    "weight": b.weight,
                    "packets": t.packets, "bytes": t.bytes,
                    "reply_packets": t.reply_packets, "reply_bytes": t.reply_bytes,
                })
            }))
            .collect::<Vec<_>>(),
        "counters": counters,
        "drops": drops,
        "xdp_classes": xdp,
        "vips": vips,
        "conflicts": claims,
        "conflict_claimants_not_listed": announcer.claims_overflow(),
        "announcements_dropped": plane.frames_dropped,
    });
    let dropped: u64 = total.drops.iter().sum();
    tracing::info!(
        rx = total.get(Counter::RxFrames),
        tx = total.get(Counter::TxFrames),
        forwarded = total.get(Counter::Forwarded),
        arp_replies = total.get(Counter::ArpReplies),
        ndp_adverts = total.get(Counter::NdpAdverts),
        announcements = total.get(Counter::ControlFrames),
        conflicts = total.get(Counter::Conflicts),
        dropped,
        "final counters"
    );
    if let Some(path) = stats_file {
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text).with_context(|| format!("writing --stats-file {}", path.display()))?;
    }
    Ok(())
}

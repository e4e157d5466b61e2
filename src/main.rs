//! The `xlb` command: argument parsing, logging, threads and signals. No packet code.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};
use serde_json::json;
use xlb::{
    control::{
        announcer::Actions,
        services::{
            build_services, Publisher, ServiceSpec, SpecError, StatsIds, MAX_COUNTED_BACKENDS, MAX_COUNTED_SERVICES,
        },
        AnnounceConfig, Announcer, VipStatus,
    },
    io::{
        netdev::{NetDev, NetDevError},
        netlink,
        worker::{self, ConflictReport, WorkerConfig, WorkerHandle, WorkerShared, Xsk, ZeroCopy},
        xdp::{AttachMode, XdpProgram, CLASS_NAMES},
    },
    lb::{
        conntrack::Timeouts,
        maglev::MaglevError,
        snapshot::ForwardMode,
        snat::SnatTable,
        stats::{ObjectCounters, Traffic},
        Counter, DropReason, Snapshot, WorkerStats,
    },
    wire::EthernetAddress,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// xlb: an L4 load balancer on AF_XDP for bare-metal Kubernetes ingress nodes.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach to an interface and answer ARP/NDP for the given VIPs.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Interface to serve (its MAC answers for the VIPs).
    #[arg(long, short = 'i', value_name = "IF")]
    interface: String,
    /// A VIP to own (IPv4 or IPv6); repeat for more.
    #[arg(long = "vip", value_name = "ADDR", required = true)]
    vips: Vec<String>,
    /// Queues to serve, from 0 (default: every RX queue of the interface).
    #[arg(long)]
    queues: Option<u32>,
    /// Cores to pin workers to, in queue order, comma-separated (default: queue i on core
    /// i mod the number of cores).
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    cores: Vec<usize>,
    /// UMEM frames per queue (2048 bytes each; at least twice --ring-size).
    #[arg(long, default_value_t = 4096)]
    frames: u32,
    /// Size of each AF_XDP ring (power of two).
    #[arg(long, default_value_t = 2048)]
    ring_size: u32,
    /// Most frames a worker takes from its RX ring at once.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Microseconds a worker keeps spinning after the last frame before it sleeps in poll().
    #[arg(long, default_value_t = 500)]
    idle_spin_us: u64,
    /// Where the XDP program runs: native (in the driver), generic (skb path, any
    /// interface), or auto (native, falling back to generic with a warning).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    xdp_mode: AttachMode,
    /// Zero-copy policy for the AF_XDP sockets.
    #[arg(long, value_enum, default_value_t = ZeroCopy::Auto)]
    zero_copy: ZeroCopy,
    /// Set the busy-poll socket options (SO_PREFER_BUSY_POLL, SO_BUSY_POLL, budget = --batch).
    #[arg(long)]
    busy_poll: bool,
    /// Duplicate-address probes before a VIP is announced (0 disables detection).
    #[arg(long, default_value_t = 3)]
    dad_probes: u32,
    /// Milliseconds between probes.
    #[arg(long, default_value_t = 100)]
    dad_interval_ms: u64,
    /// Milliseconds to wait for an answer after the last probe.
    #[arg(long, default_value_t = 200)]
    dad_wait_ms: u64,
    /// Gratuitous ARP / unsolicited NA rounds sent when a VIP becomes owned.
    #[arg(long, default_value_t = 3)]
    garp_count: u32,
    /// Milliseconds between those rounds.
    #[arg(long, default_value_t = 250)]
    garp_interval_ms: u64,
    /// A service: PROTO:VIP:PORT=BACKEND:PORT[*WEIGHT],...[;mode=dsr|snat][;affinity=SECONDS]
    /// [;table=PRIME] (IPv6 in brackets); repeat for more. The VIP must be one of --vip.
    /// mode: direct server return (default) or source NAT (needs --snat-addr); affinity:
    /// a client's new connections go to its previous backend for that long (ClientIP).
    #[arg(long = "service", value_name = "SPEC")]
    services: Vec<String>,
    /// A source address for SNAT services (`;mode=snat`): backends see connections from it
    /// and reply to it. xlb owns it like a VIP (probes, announces, answers ARP/NDP); one per
    /// address family at least for the SNAT services of that family; repeat for more ports.
    #[arg(long = "snat-addr", value_name = "ADDR")]
    snat_addrs: Vec<String>,
    /// Ports of each SNAT address that xlb allocates, split evenly among the workers.
    #[arg(long, value_name = "LOW-HIGH", default_value = "1024-65535")]
    snat_ports: String,
    /// Flows each worker's connection table is sized for (about 96 bytes each).
    #[arg(long, default_value_t = 1 << 20)]
    conntrack_capacity: usize,
    /// Write the final counters here as JSON when xlb stops.
    #[arg(long, value_name = "PATH")]
    stats_file: Option<PathBuf>,
}

/// A mistake in what the user asked for: reported in one line, exit code 2.
#[derive(Debug, thiserror::Error)]
enum UsageError {
    #[error("--vip {0:?} is not an IP address (expected e.g. 192.0.2.10 or 2001:db8::10)")]
    VipSyntax(String),
    #[error("--vip {0} cannot be a VIP: {1}")]
    VipKind(String, &'static str),
    #[error("--vip {0} is given twice")]
    VipTwice(IpAddr),
    #[error("--interface: {0}")]
    Interface(#[from] NetDevError),
    #[error("--queues {0}: interface {1} has {2} RX queue(s)")]
    Queues(u32, String, u32),
    #[error("--vip {0} is an address of {1} itself; a VIP must be an address no host on the link has")]
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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // clap's own message on one line: what was wrong and with which argument,
            // without the usage block that follows it.
            let text = e.render().to_string();
            let what: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .filter(|l| !l.starts_with("tip:"))
                .collect();
            let line = what.join(" ");
            eprintln!("xlb: {} (see xlb --help)", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format);
    match cli.command {
        Command::Run(args) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                if let Some(u) = e.downcast_ref::<UsageError>() {
                    eprintln!("xlb: {u}");
                    return ExitCode::from(2);
                }
                eprintln!("xlb: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal; files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn parse_port_range(raw: &str) -> Result<(u16, u16), UsageError> {
    let bad = |why: &str| UsageError::SnatPorts(raw.to_string(), why.to_string());
    let (lo, hi) = raw.split_once('-').ok_or_else(|| bad("expected LOW-HIGH, e.g. 1024-65535"))?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad("LOW is not a port number"))?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad("HIGH is not a port number"))?;
    if lo == 0 || lo > hi {
        return Err(bad("expected 1 <= LOW <= HIGH"));
    }
    Ok((lo, hi))
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

fn run(args: RunArgs) -> anyhow::Result<()> {
    let vips = parse_vips(&args.vips)?;
    let mut specs: Vec<ServiceSpec> = Vec::new();
    for raw in &args.services {
        let spec: ServiceSpec = raw.parse().map_err(UsageError::from)?;
        if !vips.contains(&spec.key.vip) {
            return Err(UsageError::ServiceVip(raw.clone(), spec.key.vip).into());
        }
        // Build it once now so that a table that cannot be built is a usage error.
        build_services(std::slice::from_ref(&spec), &HashMap::new(), &mut StatsIds::default())
            .map_err(|e| UsageError::ServiceTable(raw.clone(), e))?;
        specs.push(spec);
    }
    // The same rules as for VIPs, reported under the flag's own name.
    let snat_addrs = parse_vips(&args.snat_addrs).map_err(|e| match e {
        UsageError::VipSyntax(s) => UsageError::SnatAddr(s, "not an IP address (e.g. 192.0.2.20)".into()),
        UsageError::VipKind(s, why) => UsageError::SnatAddr(s, format!("a SNAT address cannot be {why}")),
        UsageError::VipTwice(a) => UsageError::SnatAddr(a.to_string(), "given twice".into()),
        other => other,
    })?;
    if let Some(a) = snat_addrs.iter().find(|a| vips.contains(a)) {
        return Err(UsageError::SnatIsVip(*a).into());
    }
    for (raw, spec) in args.services.iter().zip(&specs) {
        if spec.mode == ForwardMode::Snat && !snat_addrs.iter().any(|a| a.is_ipv6() == spec.key.vip.is_ipv6()) {
            return Err(UsageError::SnatAddrMissing(raw.clone()).into());
        }
    }
    let (snat_lo, snat_hi) = parse_port_range(&args.snat_ports)?;
    let dev = NetDev::by_name(&args.interface).map_err(UsageError::from)?;
    let queues = match args.queues {
        Some(q) if q == 0 || q > dev.rx_queues => {
            return Err(UsageError::Queues(q, dev.name.clone(), dev.rx_queues).into())
        }
        Some(q) => q,
        None => dev.rx_queues,
    };
    // A VIP that is the host's own address would take the host's traffic away from it.
    let own = xlb::io::netdev::addresses(&dev.name);
    if let Some(v) = vips.iter().chain(&snat_addrs).find(|v| own.contains(v)) {
        return Err(UsageError::VipIsHost(*v, dev.name.clone()).into());
    }
    let snat = if snat_addrs.is_empty() {
        None
    } else {
        let workers = usize::try_from(queues).unwrap_or(1);
        let table = SnatTable::new(snat_addrs.clone(), snat_lo, snat_hi, workers)
            .map_err(|e| UsageError::SnatPorts(args.snat_ports.clone(), e.to_string()))?;
        tracing::info!(
            addrs = ?snat_addrs, ports = %args.snat_ports, per_worker = (usize::from(snat_hi - snat_lo) + 1) / workers,
            "SNAT ports split among the workers"
        );
        Some(Arc::new(table))
    };
    // Everything xlb answers ARP/NDP for: the VIPs and the SNAT addresses.
    let owned: Vec<IpAddr> = vips.iter().chain(&snat_addrs).copied().collect();
    let ncores = core_affinity::get_core_ids().map(|c| c.len()).unwrap_or(1).max(1);

    // SIGINT/SIGTERM set the flag the workers poll and wake the control loop at once.
    let shutdown = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .context("installing signal handlers")?;
    {
        let shutdown = shutdown.clone();
        std::thread::Builder::new().name("xlb-signals".into()).spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "signal received");
                shutdown.store(true, Ordering::Relaxed);
                let _ = stop_tx.try_send(());
            }
        })?;
    }

    let mut prog = XdpProgram::load()?;
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let (conflict_tx, conflict_rx) = crossbeam_channel::bounded::<ConflictReport>(4096);
    let shared = WorkerShared { snapshot: snapshot.clone(), shutdown: shutdown.clone(), conflicts: conflict_tx };

    // Sockets first, then the program: from the moment it is attached, every queue has a
    // socket to redirect to.
    let mut workers: Vec<WorkerHandle> = Vec::new();
    let mut sockets = Vec::new();
    let mut counters = Vec::new();
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
            zero_copy: args.zero_copy,
            busy_poll: args.busy_poll,
            conntrack_capacity: args.conntrack_capacity,
            timeouts: Timeouts::default(),
            snat: snat.clone(),
            counters: Arc::new(ObjectCounters::new(MAX_COUNTED_SERVICES, MAX_COUNTED_BACKENDS)),
        };
        counters.push(cfg.counters.clone());
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
    let attached = prog.attach(dev.ifindex, &dev.name, args.xdp_mode)?;
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
    // Each v6 VIP's solicited-node group, so that NICs and MLD-snooping switches pass
    // solicitations for it.
    let mut memberships = Vec::new();
    for v in &owned {
        if let IpAddr::V6(v6) = v {
            match xlb::io::netdev::Membership::join(dev.ifindex, xlb::wire::ipv6::solicited_node(v6)) {
                Ok(m) => memberships.push(m),
                Err(e) => tracing::warn!(vip = %v, error = %e, "joining the VIP's solicited-node group failed"),
            }
        }
    }
    tracing::info!(interface = %dev.name, mac = %dev.mac, vips = ?vips, snat = ?snat_addrs, queues, "xlb running; stop with Ctrl-C or SIGTERM");

    // The control loop: probing, announcing, conflicts. Runs on this thread until a signal.
    let cfg = AnnounceConfig {
        probes: args.dad_probes,
        probe_interval: Duration::from_millis(args.dad_interval_ms),
        probe_wait: Duration::from_millis(args.dad_wait_ms),
        garp_count: args.garp_count,
        garp_interval: Duration::from_millis(args.garp_interval_ms),
    };
    let (announcer, first) = Announcer::new(cfg, dev.mac, &owned, Instant::now());
    let mut plane = Plane {
        announcer,
        publisher: Publisher::new(snapshot.clone()),
        specs,
        macs: HashMap::new(),
        services: Vec::new(),
        stats_ids: StatsIds::default(),
        counters,
        ifindex: dev.ifindex,
        next_neigh: Instant::now(),
        frames_dropped: 0,
    };
    let result = control_loop(&mut plane, first, &prog, &workers, &shutdown, &conflict_rx, &stop_rx);

    // Detach first, so that frames arriving while the workers stop go to the kernel rather
    // than to sockets nobody reads; then stop and join the workers, on errors too.
    tracing::info!("stopping");
    let classes = prog.class_counts();
    prog.detach();
    drop(prog);
    drop(memberships);
    let finals = stop_workers(workers, &shutdown);
    result?;
    report(&dev, &plane, &finals, &classes, args.stats_file.as_deref())
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

/// Runs until a signal: probing, announcing, conflicts and next hops.
fn control_loop(
    plane: &mut Plane,
    first: Actions,
    prog: &XdpProgram,
    workers: &[WorkerHandle],
    shutdown: &AtomicBool,
    conflict_rx: &crossbeam_channel::Receiver<ConflictReport>,
    stop_rx: &crossbeam_channel::Receiver<()>,
) -> anyhow::Result<()> {
    plane.apply(&first, prog, workers)?;
    plane.refresh_neighbours()?;
    while !shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Sleep until the next probe, announcement or neighbour check is due, a conflict
        // arrives, or a signal: an idle xlb with resolved backends wakes every 5 s here.
        let due = plane.announcer.next_deadline().map_or(plane.next_neigh, |d| d.min(plane.next_neigh));
        let wait = due.saturating_duration_since(now).min(Duration::from_secs(5));
        crossbeam_channel::select! {
            recv(conflict_rx) -> report => {
                let Ok(report) = report else { break };
                let act = plane.announcer.conflict(report.vip, report.mac, Instant::now());
                plane.apply(&act, prog, workers)?;
            }
            recv(stop_rx) -> _ => break,
            default(wait) => {}
        }
        let act = plane.announcer.tick(Instant::now());
        plane.apply(&act, prog, workers)?;
        if Instant::now() >= plane.next_neigh {
            plane.refresh_neighbours()?;
        }
    }
    Ok(())
}

/// The control plane's state: VIP announcements, services and their backends' next hops,
/// and the snapshots built from them.
struct Plane {
    announcer: Announcer,
    publisher: Publisher,
    specs: Vec<ServiceSpec>,
    macs: HashMap<IpAddr, EthernetAddress>,
    services: Vec<xlb::lb::snapshot::Service>,
    stats_ids: StatsIds,
    /// Each worker's traffic counters by service and backend.
    counters: Vec<Arc<ObjectCounters>>,
    ifindex: u32,
    next_neigh: Instant,
    frames_dropped: u64,
}

/// `proto:vip:port`, as the user wrote it.
fn service_name(s: &xlb::lb::snapshot::Service) -> String {
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

    fn publish(&mut self) {
        let generation = self.publisher.publish(self.announcer.vip_modes(), self.services.clone());
        tracing::debug!(generation, "snapshot published");
    }

    /// Reads the kernel's neighbour table for the backends, asks it to resolve those it
    /// does not know, and republishes when a MAC appears or changes.
    fn refresh_neighbours(&mut self) -> anyhow::Result<()> {
        let wanted: Vec<IpAddr> = {
            let mut w: Vec<IpAddr> = self.specs.iter().flat_map(|s| s.backends.iter().map(|b| b.0)).collect();
            w.sort();
            w.dedup();
            w
        };
        if wanted.is_empty() {
            self.next_neigh = Instant::now() + Duration::from_secs(3600);
            return Ok(());
        }
        let table = match netlink::neighbours(self.ifindex) {
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
                    if let Err(e) = netlink::solicit(self.ifindex, *addr) {
                        tracing::warn!(backend = %addr, error = %e, "asking the kernel to resolve a backend failed");
                    }
                }
            }
        }
        if changed {
            self.services = build_services(&self.specs, &self.macs, &mut self.stats_ids)?;
            self.publish();
        }
        // Unresolved backends are asked for again soon; resolved ones are re-read to follow
        // MAC changes.
        let next = if unresolved > 0 { Duration::from_millis(200) } else { Duration::from_secs(5) };
        self.next_neigh = Instant::now() + next;
        Ok(())
    }

    fn apply(&mut self, act: &Actions, prog: &XdpProgram, workers: &[WorkerHandle]) -> anyhow::Result<()> {
        for (vip, flags) in &act.map_updates {
            prog.set_vip(*vip, *flags)?;
        }
        if act.vips_changed {
            self.publish();
        }
        log_actions(act);
        // Announcements leave through queue 0's worker: one copy per interface is enough.
        if let Some(w) = workers.first() {
            for f in &act.frames {
                if w.control.try_send(*f).is_err() {
                    self.frames_dropped += 1;
                    if self.frames_dropped == 1 {
                        tracing::warn!("the worker's queue of announcements is full; frames dropped (counted)");
                    }
                }
            }
            if !act.frames.is_empty() {
                w.waker.notify();
            }
        }
        Ok(())
    }
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
    dev: &NetDev,
    plane: &Plane,
    finals: &[(u32, worker::BindMode, WorkerStats)],
    classes: &[u64; 8],
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
    let counters: serde_json::Map<String, serde_json::Value> =
        Counter::ALL.iter().map(|c| (c.name().to_string(), json!(total.get(*c)))).collect();
    let drops: serde_json::Map<String, serde_json::Value> =
        DropReason::ALL.iter().map(|r| (r.name().to_string(), json!(total.dropped(*r)))).collect();
    let xdp: serde_json::Map<String, serde_json::Value> =
        CLASS_NAMES.iter().zip(classes.iter()).map(|(n, v)| (n.to_string(), json!(v))).collect();
    let announcer = &plane.announcer;
    let vips: Vec<serde_json::Value> = announcer
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
    let claims: Vec<serde_json::Value> = announcer
        .claims()
        .iter()
        .map(|((vip, mac), n)| json!({"vip": vip.to_string(), "mac": mac.to_string(), "frames": n}))
        .collect();
    let doc = json!({
        "interface": dev.name,
        "mac": dev.mac.to_string(),
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
        "services": plane
            .services
            .iter()
            .map(|s| {
                let t = plane.traffic(|c| c.service(s.stats_id));
                json!({
                    "service": service_name(s),
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
                    "service": service_name(s),
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

//! Start-up: what `xlb run` serves, from flags, a config file or the Kubernetes API, checked
//! in full before anything is opened. Every mistake is a [`UsageError`] naming the flag or
//! the field and the fix (exit code 2).

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use xlb::{
    abi::{AttachMode, ZeroCopy},
    control::{
        announcer::Timing,
        compile::Compiled,
        config::{self, ConfigErrors, Desired, InterfaceConfig},
        ha::HaTimings,
        ipam::Ipam,
        nexthop::NextHops,
        services::{build_services, ServiceSpec, SpecError, StatsIds},
        AnnounceConfig,
    },
    io::{netdev::rx_queues, worker::DEFAULT_FRAMES},
    k8s::manifests,
    lb::{
        conntrack::{Entry, Timeouts, MAX_CAPACITY},
        maglev::{MaglevError, TableCache},
        snapshot::ForwardMode,
    },
    memory::{Memory, Sizes, MIB, SNAT_INDEX, SNAT_SLOT},
};

use crate::RunArgs;

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
    #[error(
        "{field} {queues}: interface {dev} has {rx} RX queues and spreads flows over all of them, so the VIPs' \
         traffic on queues {queues}..{last} would be dropped (no worker reads them); leave {field} out to serve \
         every queue, or first give the NIC {queues} queue(s): ethtool -L {dev} combined {queues}"
    )]
    UnservedQueues {
        /// The flag or field.
        field: String,
        /// Queues asked for.
        queues: u32,
        /// The interface.
        dev: String,
        /// Its RX queues.
        rx: u32,
        /// Its last queue.
        last: u32,
    },
    #[error("{0} is an address of {1} itself; a VIP must be an address no host on the link has")]
    VipIsHost(IpAddr, String),
    #[error("{0}")]
    Size(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    State(String),
    #[error("{capacity_field} {capacity}: {memory}, more than the {room_mib} MiB {limit}; lower {capacity_field} (each flow slot is {slot} bytes, on every queue){snat_fix} or serve fewer queues")]
    Memory {
        /// The flag or field of the flow table's capacity.
        capacity_field: &'static str,
        capacity: usize,
        /// The memory of the set-up, as printed at start.
        memory: Box<Memory>,
        /// What this process may still take.
        room_mib: usize,
        /// What limits it.
        limit: &'static str,
        slot: usize,
        /// How to make the SNAT table smaller, when there is one.
        snat_fix: String,
    },
    #[error("--service: {0}")]
    Service(#[from] SpecError),
    #[error("--service {0:?}: backend {1} {2}")]
    ServiceBackend(String, IpAddr, String),
    #[error("--service {0:?}: its VIP {1} is not one of --vip; add --vip {1}")]
    ServiceVip(String, IpAddr),
    #[error("--service {0:?}: {1}")]
    ServiceTable(String, MaglevError),
    #[error("--service {0:?}: {1:?} already has that VIP, port and protocol; give each only once")]
    ServiceTwice(String, String),
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

/// Why `ip` cannot be a host's address on the link (a VIP, a SNAT address, a backend).
fn unusable(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) if a.is_unspecified() || a.is_broadcast() => Some("unspecified or broadcast"),
        IpAddr::V4(a) if a.is_multicast() => Some("multicast"),
        IpAddr::V4(a) if a.is_loopback() => Some("loopback"),
        IpAddr::V6(a) if a.is_unspecified() || a.is_loopback() => Some("unspecified or loopback"),
        IpAddr::V6(a) if a.is_multicast() => Some("multicast"),
        _ => None,
    }
}

fn parse_vips(raw: &[String]) -> Result<Vec<IpAddr>, UsageError> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(raw.len());
    for s in raw {
        let ip: IpAddr = s.trim().parse().map_err(|_| UsageError::VipSyntax(s.clone()))?;
        if let Some(why) = unusable(ip) {
            return Err(UsageError::VipKind(s.clone(), why));
        }
        if out.contains(&ip) {
            return Err(UsageError::VipTwice(ip));
        }
        out.push(ip);
    }
    Ok(out)
}

/// `xlb check --config FILE`. The fuzz target fuzz/fuzz_targets/config.rs runs the same steps
/// on any bytes: keep the two alike.
pub(crate) fn check(path: &Path) -> anyhow::Result<()> {
    let (desired, compiled, notes) =
        manifests::load(path, &mut Ipam::default()).map_err(|e| UsageError::Config(e, path.to_path_buf()))?;
    build_services(&compiled.specs, &NextHops::default(), &mut StatsIds::default(), &mut TableCache::default())
        .map_err(|e| {
            UsageError::Config(ConfigErrors(vec![config_error("services", e.to_string())]), path.to_path_buf())
        })?;
    let (queues, counted) = queues_to_count(&desired.interfaces);
    let memory = Memory::new(Sizes {
        queues,
        conntrack_capacity: desired.conntrack_capacity,
        frames: DEFAULT_FRAMES,
        snat_addrs: desired.snat_addrs.len(),
        snat_ports: desired.snat_ports,
    });
    fits(&memory, FILE_FIELDS, 0)?;
    println!(
        "{}: ok: {} service(s), {} VIP(s): {}",
        path.display(),
        desired.services.len(),
        compiled.vips.len(),
        compiled.assignments.iter().map(|(n, a)| format!("{n}={a}")).collect::<Vec<_>>().join(" ")
    );
    println!("memory: {memory} ({counted})");
    for (vip, on) in compiled.placement.iter().filter(|(_, on)| !on.is_empty()) {
        println!("{vip}: announced on {}", on.join(", "));
    }
    if let Some(bgp) = &desired.bgp {
        for (vip, adverts) in &compiled.announced.routes {
            let peers: Vec<String> = bgp
                .peers
                .iter()
                .filter(|p| p.address.is_ipv6() == vip.is_ipv6())
                .map(|p| format!("{} (AS{})", p.address, p.asn))
                .collect();
            if peers.is_empty() {
                println!("note: bgp: {vip} has no peer of its family: it is not advertised");
                continue;
            }
            let l2 = if compiled.announced.routed_only.contains(vip) { "no ARP/NDP" } else { "also on the segment" };
            let which: Vec<String> = adverts.iter().map(|k| format!("bgp.advertisements[{k}]")).collect();
            println!("{vip}: advertised by BGP to {} ({}; {l2})", peers.join(", "), which.join(", "));
            // A flow that ECMP moves to another node finds no translation there.
            let snat: Vec<&str> = compiled
                .specs
                .iter()
                .filter(|s| s.key.vip == *vip && s.mode == xlb::lb::snapshot::ForwardMode::Snat)
                .map(|s| s.name.as_str())
                .collect();
            if !snat.is_empty() {
                println!(
                    "note: bgp: {vip} is routed and has SNAT services ({}): with ECMP over several nodes, a flow moved to another node is broken there; keep SNAT services on L2 or on one node",
                    snat.join(", ")
                );
            }
        }
        if compiled.announced.routes.is_empty() {
            println!("note: bgp: no advertisement selects any VIP; nothing will be advertised");
        }
    }
    for n in &notes {
        println!("note: {n}");
    }
    Ok(())
}

/// The queues `xlb check` counts (over every interface), and why: the config's, else every
/// RX queue of the interface when it is on this machine, else one.
fn queues_to_count(interfaces: &[InterfaceConfig]) -> (u32, String) {
    let mut total = 0;
    let mut why = Vec::new();
    for (k, i) in interfaces.iter().enumerate() {
        if let Some(q) = i.queues {
            total += q;
            why.push(format!("interfaces[{k}].queues"));
            continue;
        }
        match rx_queues(&i.name) {
            Some(rx) => {
                total += rx;
                why.push(format!("every RX queue of {} here", i.name));
            }
            None => {
                total += 1;
                why.push(format!(
                    "1 queue counted: {} is not on this machine; set interfaces[{k}].queues to count its RX queues",
                    i.name
                ));
            }
        }
    }
    (total, why.join("; "))
}

pub(super) fn config_error(path: &str, message: String) -> config::ConfigError {
    config::ConfigError { path: path.into(), message }
}

/// Where the desired state comes from.
pub(super) enum Source {
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

pub(super) fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The set-up the daemon starts with, from a file or from flags.
pub(super) struct Start {
    pub(super) source: Source,
    pub(super) compiled: Compiled,
    pub(super) ipam: Ipam,
    /// The interfaces served, at least one (the first sends the heartbeats).
    pub(super) interfaces: Vec<InterfaceConfig>,
    pub(super) announce: AnnounceConfig,
    pub(super) snat_addrs: Vec<IpAddr>,
    pub(super) snat_ports: (u16, u16),
    pub(super) conntrack_capacity: usize,
    pub(super) conntrack_timeouts: Timeouts,
    pub(super) admin_socket: PathBuf,
    pub(super) metrics: Option<SocketAddr>,
    /// The node side to start once the datapath runs (`--kubernetes`).
    pub(super) kube: Option<xlb::k8s::source::NodeOptions>,
    /// Heartbeats and failover between xlb nodes.
    pub(super) ha: Option<HaStart>,
    /// BGP through FRR (none: L2 only).
    pub(super) bgp: Option<xlb::control::bgp::BgpConfig>,
}

/// How this node takes part in failover.
pub(super) struct HaStart {
    pub(super) node: String,
    pub(super) cluster: String,
    pub(super) timings: HaTimings,
    /// Standalone: the configured boxes (candidates are ranked from them); Kubernetes: none
    /// (candidates come with each plan).
    pub(super) peers: Option<Vec<String>>,
    /// How a VIP taken over is announced (Kubernetes: the default; policies may differ).
    pub(super) announce: Timing,
    /// Kubernetes: the witness Lease a two-member set votes with.
    pub(super) witness: Option<Arc<xlb::k8s::witness::Witness>>,
    /// The key that signs heartbeats.
    pub(super) key: Option<Arc<xlb::lb::heartbeat::Key>>,
}

/// `--conntrack-capacity`, checked as the config's `conntrack.capacity` is.
fn capacity_from_flags(args: &RunArgs) -> Result<usize, UsageError> {
    let c = args.conntrack_capacity;
    if c == 0 || c > MAX_CAPACITY {
        return Err(UsageError::Size(format!(
            "--conntrack-capacity {c}: give 1 to {MAX_CAPACITY} flows per worker (default 1048576)"
        )));
    }
    Ok(c)
}

/// `--conntrack-timeout NAME=SECONDS`, each checked as the config's `conntrack.timeouts`.
fn timeouts_from_flags(args: &RunArgs) -> Result<Timeouts, UsageError> {
    let mut t = Timeouts::default();
    for raw in &args.conntrack_timeouts {
        let set = match raw.split_once('=') {
            Some((name, secs)) => match secs.trim().parse::<u64>() {
                Ok(secs) => t.set_secs(name.trim(), secs),
                Err(_) => Err(format!("{secs:?} is not a whole number of seconds")),
            },
            None => Err("expected NAME=SECONDS, e.g. tcpSynSnat=5".to_string()),
        };
        set.map_err(|e| UsageError::Timeout(format!("--conntrack-timeout {raw}: {e}")))?;
    }
    Ok(t)
}

/// The flags or config fields a memory refusal names.
#[derive(Debug, Clone, Copy)]
pub(super) struct MemoryFields {
    /// The flow table's capacity.
    pub(super) capacity: &'static str,
    /// The SNAT port range.
    pub(super) snat_ports: &'static str,
}

/// The config file's fields.
pub(super) const FILE_FIELDS: MemoryFields = MemoryFields { capacity: "conntrack.capacity", snat_ports: "snat.ports" };

/// The flags of `xlb run`.
pub(super) const FLAG_FIELDS: MemoryFields =
    MemoryFields { capacity: "--conntrack-capacity", snat_ports: "--snat-ports" };

/// Logs what the set-up takes (`memory: ...`) and refuses it when it does not fit the memory
/// this process may take now: the tables are allocated and touched at start, and too large
/// a set-up would be killed, or kill others. `held`: bytes the state directory's files
/// already take (the previous xlb's tables, taken over in place or replaced), which count
/// as used memory now and are not taken again.
pub(super) fn check_memory(memory: &Memory, fields: MemoryFields, held: usize) -> Result<(), UsageError> {
    tracing::info!(total_mib = memory.total_mib(), held_by_state_mib = held / MIB, "memory: {memory}");
    fits(memory, fields, held)
}

/// Refuses `memory` when it is more than [`room`] and `held`.
fn fits(memory: &Memory, fields: MemoryFields, held: usize) -> Result<(), UsageError> {
    let Some((room, limit)) = room() else { return Ok(()) };
    refuse_over(memory, fields, room.saturating_add(held), limit)
}

fn refuse_over(memory: &Memory, fields: MemoryFields, room: usize, limit: &'static str) -> Result<(), UsageError> {
    if memory.total_mib() <= room / MIB {
        return Ok(());
    }
    let snat_fix = if memory.snat > 0 {
        format!(
            ", narrow {} ({} bytes per port of each SNAT address),",
            fields.snat_ports,
            2 * (SNAT_SLOT + SNAT_INDEX)
        )
    } else {
        ",".into()
    };
    Err(UsageError::Memory {
        capacity_field: fields.capacity,
        capacity: memory.sizes.conntrack_capacity,
        memory: Box::new(*memory),
        room_mib: room / MIB,
        limit,
        slot: std::mem::size_of::<Entry>(),
        snat_fix,
    })
}

/// What this process may still take, in bytes, and what says so: the machine's
/// `MemAvailable`, or the room left under the memory limit of its cgroup or of a parent (a
/// container's memory limit), whichever is less.
fn room() -> Option<(usize, &'static str)> {
    let machine = mem_available().map(|m| (m, "this machine has available (MemAvailable)"));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|text| {
        // "0::PATH" (cgroup v2), "N:memory:PATH" (v1); a hybrid system lists both.
        text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            if controllers.is_empty() {
                cgroup_room(Path::new("/sys/fs/cgroup"), path, CGROUP_V2)
            } else if controllers.split(',').any(|c| c == "memory") {
                cgroup_room(Path::new("/sys/fs/cgroup/memory"), path, CGROUP_V1)
            } else {
                None
            }
        })
    });
    let cgroup = cgroup.map(|c| (c, "left under its cgroup's memory limit (the container's limit)"));
    [machine, cgroup].into_iter().flatten().min_by_key(|(r, _)| *r)
}

/// A cgroup's memory limit and usage files: v2, v1.
const CGROUP_V2: (&str, &str) = ("memory.max", "memory.current");
const CGROUP_V1: (&str, &str) = ("memory.limit_in_bytes", "memory.usage_in_bytes");

/// The least room (limit less usage, read from `files`) of cgroup `path` under `root` and of
/// its parents; none where no level has a limit.
fn cgroup_room(root: &Path, path: &str, (limit, usage): (&str, &str)) -> Option<usize> {
    let mut dir = root.join(path.trim_start_matches('/'));
    let mut least: Option<usize> = None;
    loop {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok().and_then(|s| s.trim().parse::<usize>().ok());
        if let (Some(max), Some(current)) = (read(limit), read(usage)) {
            let here = max.saturating_sub(current);
            least = Some(least.map_or(here, |l| l.min(here)));
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return least;
        }
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn mem_available() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
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

/// `--interface eno1,eno2`: the interfaces, each with the queue and XDP flags.
fn interfaces_from_flags(args: &RunArgs) -> Result<Vec<InterfaceConfig>, UsageError> {
    let raw = args.interface.clone().unwrap_or_default();
    let mut out: Vec<InterfaceConfig> = Vec::new();
    for name in raw.split(',').map(str::trim) {
        if name.is_empty() || out.iter().any(|i| i.name == name) {
            return Err(UsageError::Interface(format!(
                "--interface {raw:?}: give interface names separated by commas, each once (e.g. eno1,eno2)"
            )));
        }
        out.push(InterfaceConfig {
            name: name.to_string(),
            queues: args.queues,
            xdp_mode: args.xdp_mode.unwrap_or(AttachMode::Auto),
            zero_copy: args.zero_copy.unwrap_or(ZeroCopy::Auto),
        });
    }
    Ok(out)
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
pub(super) fn start_from_kube(args: &RunArgs) -> Result<Start, UsageError> {
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
        settings: xlb::k8s::service::Settings {
            class: args.kube.class.clone(),
            unclassed: args.kube.unclassed,
            identity: node,
            namespace: args.kube.namespace.clone(),
            lease_seconds: 15,
        },
        interface: interfaces_from_flags(args)?.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(","),
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
        interfaces: interfaces_from_flags(args)?,
        announce,
        snat_addrs,
        snat_ports,
        conntrack_capacity: capacity_from_flags(args)?,
        conntrack_timeouts: timeouts_from_flags(args)?,
        admin_socket: args.admin_socket.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_ADMIN_SOCKET)),
        metrics: args.metrics_listen,
        kube: Some(opts),
        ha,
        bgp: None,
    })
}

pub(super) fn start_from_flags(args: &RunArgs) -> Result<Start, UsageError> {
    let vips = parse_vips(&args.vips)?;
    let mut specs: Vec<ServiceSpec> = Vec::new();
    for raw in &args.services {
        let spec: ServiceSpec = raw.parse()?;
        if !vips.contains(&spec.key.vip) {
            return Err(UsageError::ServiceVip(raw.clone(), spec.key.vip));
        }
        if let Some((_, first)) = specs.iter().zip(&args.services).find(|(s, _)| s.key == spec.key) {
            return Err(UsageError::ServiceTwice(raw.clone(), first.clone()));
        }
        // Build it once now so that a table that cannot be built is a usage error.
        build_services(
            std::slice::from_ref(&spec),
            &NextHops::default(),
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
        for (b, _, _) in &spec.backends {
            let why = if vips.contains(b) {
                Some("is a --vip: its traffic would loop back to xlb; give the address of a host that serves it".into())
            } else if snat_addrs.contains(b) {
                Some("is a --snat-addr, which xlb answers for itself; give the address of a host that serves it".into())
            } else {
                unusable(*b).map(|why| format!("is {why}, not the address of a host that can serve it"))
            };
            if let Some(why) = why {
                return Err(UsageError::ServiceBackend(raw.clone(), *b, why));
            }
        }
    }
    let snat_ports =
        config::port_range(&args.snat_ports).map_err(|e| UsageError::SnatPorts(args.snat_ports.clone(), e))?;
    Ok(Start {
        source: Source::Flags,
        compiled: Compiled { vips, specs, ..Compiled::default() },
        ipam: Ipam::default(),
        interfaces: interfaces_from_flags(args)?,
        announce: announce_from_flags(args),
        snat_addrs,
        snat_ports,
        conntrack_capacity: capacity_from_flags(args)?,
        conntrack_timeouts: timeouts_from_flags(args)?,
        admin_socket: args.admin_socket.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_ADMIN_SOCKET)),
        metrics: args.metrics_listen,
        kube: None,
        ha: None,
        bgp: None,
    })
}

pub(super) fn start_from_file(path: &Path, args: &RunArgs) -> Result<Start, UsageError> {
    let mut ipam = Ipam::default();
    let (desired, compiled, notes) =
        manifests::load(path, &mut ipam).map_err(|e| UsageError::Config(e, path.to_path_buf()))?;
    for n in &notes {
        tracing::warn!(file = %path.display(), "{n}");
    }
    let mut interfaces = desired.interfaces.clone();
    // Flags given with --config override the file's interface settings.
    for interface in &mut interfaces {
        interface.queues = args.queues.or(interface.queues);
        interface.xdp_mode = args.xdp_mode.unwrap_or(interface.xdp_mode);
        interface.zero_copy = args.zero_copy.unwrap_or(interface.zero_copy);
    }
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
        interfaces,
        announce,
        snat_addrs: desired.snat_addrs.clone(),
        snat_ports: desired.snat_ports,
        conntrack_capacity: desired.conntrack_capacity,
        conntrack_timeouts: desired.conntrack_timeouts,
        admin_socket: args.admin_socket.clone().unwrap_or_else(|| desired.admin_socket.clone()),
        metrics: args.metrics_listen.or(desired.metrics),
        kube: None,
        ha,
        bgp: desired.bgp.clone(),
        source: Source::File { path: path.to_path_buf(), mtime: mtime(path), desired: Box::new(desired) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ups_that_do_not_fit_are_refused_naming_the_field_and_the_fix() {
        let sizes = |queues, capacity, snat_addrs| Sizes {
            queues,
            conntrack_capacity: capacity,
            frames: DEFAULT_FRAMES,
            snat_addrs,
            snat_ports: (1024, 65535),
        };
        let limit = "this machine has available (MemAvailable)";
        // 1,000 queues of the largest table: about 8 TiB, on no machine here.
        let e = check_memory(&Memory::new(sizes(1000, MAX_CAPACITY, 0)), FILE_FIELDS, 0).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("conntrack.capacity 67108864: 1000 queue(s) x 8205 MiB (conntrack 134,217,728 slots"),
            "{text}"
        );
        assert!(text.contains("more than the"), "{text}");
        assert!(
            text.ends_with(
                "lower conntrack.capacity (each flow slot is 64 bytes, on every queue), or serve fewer queues"
            ),
            "{text}"
        );
        // Two default queues and one SNAT address: 321 MiB.
        let m = Memory::new(sizes(2, 1 << 20, 1));
        refuse_over(&m, FLAG_FIELDS, 321 * MIB, limit).unwrap();
        let text = refuse_over(&m, FLAG_FIELDS, 320 * MIB + MIB / 2, limit).unwrap_err().to_string();
        assert_eq!(
            text,
            "--conntrack-capacity 1048576: 2 queue(s) x 141 MiB (conntrack 2,097,152 slots 128 MiB + UMEM 8 MiB + \
             counters 2.2 MiB + worker 2.2 MiB) + SNAT 12 MiB + base 27 MiB = 321 MiB, more than the 320 MiB this \
             machine has available (MemAvailable); lower --conntrack-capacity (each flow slot is 64 bytes, on every \
             queue), narrow --snat-ports (192 bytes per port of each SNAT address), or serve fewer queues"
        );
        // The default on one queue fits.
        check_memory(&Memory::new(sizes(1, 1 << 20, 0)), FLAG_FIELDS, 0).unwrap();
    }

    #[test]
    fn the_tightest_cgroup_limit_up_the_tree_counts() {
        let root = std::env::temp_dir().join(format!("xlb-cgroup-test-{}", std::process::id()));
        let pod = root.join("kubepods/pod1");
        let container = pod.join("c1");
        std::fs::create_dir_all(&container).unwrap();
        let write = |dir: &Path, max: &str, current: &str| {
            std::fs::write(dir.join("memory.max"), max).unwrap();
            std::fs::write(dir.join("memory.current"), current).unwrap();
        };
        assert_eq!(cgroup_room(&root, "/kubepods/pod1/c1", CGROUP_V2), None, "no limit anywhere");
        write(&container, "max\n", "1000\n");
        assert_eq!(cgroup_room(&root, "/kubepods/pod1/c1", CGROUP_V2), None, "max is no limit");
        write(&pod, "5000\n", "1000\n");
        assert_eq!(cgroup_room(&root, "/kubepods/pod1/c1", CGROUP_V2), Some(4000), "the pod's limit");
        write(&container, "3000\n", "1000\n");
        assert_eq!(cgroup_room(&root, "/kubepods/pod1/c1", CGROUP_V2), Some(2000), "the container's, tighter");
        assert_eq!(cgroup_room(&root, "/", CGROUP_V2), None, "the root has no limit");
        // cgroup v1's files; a container that sees its own cgroup as the root (no cgroup
        // namespace) finds its limit there, walking up from a path that is not.
        std::fs::write(root.join("memory.limit_in_bytes"), "8000\n").unwrap();
        std::fs::write(root.join("memory.usage_in_bytes"), "500\n").unwrap();
        assert_eq!(cgroup_room(&root, "/kubepods/pod1/c1", CGROUP_V1), Some(7500));
        assert_eq!(cgroup_room(&root, "/elsewhere/c9", CGROUP_V1), Some(7500));
        std::fs::remove_dir_all(&root).unwrap();
    }
}

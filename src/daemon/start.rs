//! Start-up: what `xlb run` serves, from flags, a config file or the Kubernetes API, checked
//! in full before anything is opened. Every mistake is a [`UsageError`] naming the flag or
//! the field and the fix (exit code 2).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use xlb::{
    abi::{AttachMode, ZeroCopy},
    control::{
        announcer::Timing,
        compile::{compile, Compiled},
        config::{self, ConfigErrors, Desired, InterfaceConfig},
        ha::HaTimings,
        ipam::Ipam,
        services::{build_services, ServiceSpec, SpecError, StatsIds},
        AnnounceConfig,
    },
    lb::{
        conntrack::{bytes_for, slots_for, MAX_CAPACITY},
        maglev::{MaglevError, TableCache},
        snapshot::ForwardMode,
    },
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
    #[error("{field} {capacity}: {queues} queue(s) x {per_queue_mib} MiB of flow table = {total_mib} MiB, more than the {available_mib} MiB this machine has available; lower it (each flow slot is {slot} bytes) or serve fewer queues")]
    Memory {
        field: &'static str,
        capacity: usize,
        queues: u32,
        per_queue_mib: usize,
        total_mib: usize,
        available_mib: usize,
        slot: usize,
    },
    #[error("--service: {0}")]
    Service(#[from] SpecError),
    #[error("--service {0:?}: backend {1} {2}")]
    ServiceBackend(String, IpAddr, String),
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
    pub(super) interface: InterfaceConfig,
    pub(super) announce: AnnounceConfig,
    pub(super) snat_addrs: Vec<IpAddr>,
    pub(super) snat_ports: (u16, u16),
    pub(super) conntrack_capacity: usize,
    pub(super) admin_socket: PathBuf,
    pub(super) metrics: Option<SocketAddr>,
    /// The node side to start once the datapath runs (`--kubernetes`).
    pub(super) kube: Option<xlb::k8s::source::NodeOptions>,
    /// Heartbeats and failover between xlb nodes.
    pub(super) ha: Option<HaStart>,
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

/// Refuses flow tables that do not fit the memory this machine has available now (they
/// are allocated and touched at start: too large a table would be killed, or kill others).
pub(super) fn check_memory(field: &'static str, capacity: usize, queues: u32) -> Result<(), UsageError> {
    let per_queue = bytes_for(capacity);
    let total = per_queue.saturating_mul(usize::try_from(queues).unwrap_or(usize::MAX));
    tracing::info!(
        slots = slots_for(capacity),
        per_queue_mib = per_queue >> 20,
        queues,
        total_mib = total >> 20,
        "conntrack: flow tables allocated at start"
    );
    let Some(available) = mem_available() else { return Ok(()) };
    if total > available {
        return Err(UsageError::Memory {
            field,
            capacity,
            queues,
            per_queue_mib: per_queue >> 20,
            total_mib: total >> 20,
            available_mib: available >> 20,
            slot: per_queue / slots_for(capacity),
        });
    }
    Ok(())
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
        conntrack_capacity: capacity_from_flags(args)?,
        admin_socket: args.admin_socket.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_ADMIN_SOCKET)),
        metrics: args.metrics_listen,
        kube: Some(opts),
        ha,
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
        interface: interface_from_flags(args),
        announce: announce_from_flags(args),
        snat_addrs,
        snat_ports,
        conntrack_capacity: capacity_from_flags(args)?,
        admin_socket: args.admin_socket.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_ADMIN_SOCKET)),
        metrics: args.metrics_listen,
        kube: None,
        ha: None,
    })
}

pub(super) fn start_from_file(path: &Path, args: &RunArgs) -> Result<Start, UsageError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_tables_that_do_not_fit_the_machine_are_refused() {
        // 1,000 queues of the largest table: about 8 TiB, on no machine here.
        let e = check_memory("conntrack.capacity", MAX_CAPACITY, 1000).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("conntrack.capacity 67108864: 1000 queue(s) x 8192 MiB"), "{text}");
        assert!(text.contains("more than the") && text.contains("lower it"), "{text}");
        // The default on one queue fits.
        check_memory("--conntrack-capacity", 1 << 20, 1).unwrap();
    }
}

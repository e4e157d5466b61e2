//! The standalone source: one YAML file (`xlb run --config xlb.yaml`) read into the desired
//! state, validated in full before anything is applied. Every mistake is reported with the
//! path of the field (`services[1].backends[0].weight`) and what would fix it; the file is
//! refused as a whole if any is found.
//!
//! This module knows YAML and the file's shape; what the rest of the control plane sees is
//! [`Desired`], the same whatever the source.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::{
    ipam::{Block, Pool, Request},
    AnnounceConfig,
};
use crate::{
    io::{worker::ZeroCopy, xdp::AttachMode},
    lb::{maglev::DEFAULT_TABLE_SIZE, snapshot::ForwardMode},
    wire::ipv4::Protocol,
};

/// One mistake in a config file: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `services[1].backends[0].weight` (empty: the file itself).
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All the mistakes found in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

// ---- The file's shape ----------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    interfaces: Vec<InterfaceFile>,
    #[serde(default)]
    pools: Vec<PoolFile>,
    #[serde(default)]
    snat: Option<SnatFile>,
    #[serde(default)]
    services: Vec<ServiceFile>,
    #[serde(default)]
    announce: AnnounceFile,
    #[serde(default)]
    conntrack: ConntrackFile,
    #[serde(default)]
    admin: AdminFile,
    #[serde(default)]
    metrics: Option<MetricsFile>,
    #[serde(default)]
    ha: Option<HaFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HaFile {
    node: Option<String>,
    peers: Vec<String>,
    cluster: Option<String>,
    heartbeat_interval_ms: Option<u64>,
    dead_after: Option<u32>,
    takeover_ms: Option<u64>,
    gratuitous_arp_ms: Option<Vec<u64>>,
    refresh_seconds: Option<u64>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InterfaceFile {
    name: String,
    queues: Option<u32>,
    #[serde(default)]
    xdp_mode: Option<String>,
    #[serde(default)]
    zero_copy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PoolFile {
    name: String,
    blocks: Vec<BlockFile>,
    #[serde(default, rename = "allowFirstLastIPs")]
    allow_first_last_ips: bool,
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockFile {
    cidr: Option<String>,
    start: Option<String>,
    stop: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnatFile {
    addresses: Vec<String>,
    #[serde(default)]
    ports: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceFile {
    name: String,
    vip: Option<String>,
    pool: Option<String>,
    ip_family: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    ports: Vec<PortFile>,
    #[serde(default)]
    backends: Vec<BackendFile>,
    maglev_table_size: Option<u32>,
    session_affinity: Option<String>,
    session_affinity_timeout_seconds: Option<u64>,
    health_check: Option<HealthFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PortFile {
    port: u32,
    #[serde(default)]
    protocol: Option<String>,
    target_port: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFile {
    address: String,
    #[serde(default)]
    weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HealthFile {
    #[serde(rename = "type")]
    kind: String,
    port: Option<u32>,
    path: Option<String>,
    expect_status: Option<u16>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    rise: Option<u32>,
    fall: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AnnounceFile {
    dad_probes: Option<u32>,
    dad_interval_ms: Option<u64>,
    dad_wait_ms: Option<u64>,
    garp_count: Option<u32>,
    garp_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConntrackFile {
    capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    socket: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    listen: String,
}

// ---- The desired state ---------------------------------------------------------------------

/// The interface xlb serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Name.
    pub name: String,
    /// Queues to serve (none: all).
    pub queues: Option<u32>,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
    /// AF_XDP zero-copy policy.
    pub zero_copy: ZeroCopy,
}

/// How a backend's health is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP GET of `path` answers `status`.
    Http {
        /// Request path.
        path: String,
        /// Expected status code.
        status: u16,
    },
}

/// A service's health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthConfig {
    /// What is checked.
    pub kind: CheckKind,
    /// Port checked (none: each port's target port, the first one).
    pub port: Option<u16>,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Successes in a row that bring a backend up.
    pub rise: u32,
    /// Failures in a row that take it down.
    pub fall: u32,
}

/// A port of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortConfig {
    /// IP protocol (TCP or UDP).
    pub proto: u8,
    /// Port on the VIP.
    pub port: u16,
    /// Port on the backends.
    pub target_port: u16,
}

/// A service as configured (its VIP not yet allocated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Unique name.
    pub name: String,
    /// What address it asks for.
    pub request: Request,
    /// Forwarding mode.
    pub mode: ForwardMode,
    /// Ports.
    pub ports: Vec<PortConfig>,
    /// Backends: address and weight.
    pub backends: Vec<(IpAddr, u32)>,
    /// Maglev table size.
    pub table_size: u32,
    /// Session affinity by client address, and for how long.
    pub affinity: Option<Duration>,
    /// Health check.
    pub health: Option<HealthConfig>,
}

/// Everything the file asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The interface.
    pub interface: InterfaceConfig,
    /// Address pools.
    pub pools: Vec<Pool>,
    /// SNAT source addresses.
    pub snat_addrs: Vec<IpAddr>,
    /// SNAT port range.
    pub snat_ports: (u16, u16),
    /// Services.
    pub services: Vec<ServiceConfig>,
    /// Probing and announcing.
    pub announce: AnnounceConfig,
    /// Flows per worker.
    pub conntrack_capacity: usize,
    /// Admin API socket.
    pub admin_socket: PathBuf,
    /// Where `/metrics` is served (none: not served).
    pub metrics: Option<SocketAddr>,
    /// Failover between xlb boxes (none: this box alone owns every VIP).
    pub ha: Option<HaConfig>,
}

/// Standalone HA: the boxes that share the VIPs, and the heartbeat timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// This box's name (`ha.node`, else `--node-name` / NODE_NAME, else the host name).
    pub node: Option<String>,
    /// Every box's name, this one's included.
    pub peers: Vec<String>,
    /// Cluster name (boxes of another cluster on the same LAN are ignored).
    pub cluster: String,
    /// Heartbeat timings.
    pub timings: super::ha::HaTimings,
    /// How a VIP taken over is announced (rounds, refresh).
    pub announce: super::announcer::Timing,
    /// The file of the shared key that signs heartbeats (none: unsigned).
    pub key_file: Option<PathBuf>,
}

/// Where the admin socket is unless the file says otherwise.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/xlb/xlb.sock";

/// Most weight a backend may have.
pub const MAX_WEIGHT: u32 = 1000;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Desired, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![err("", format!("cannot read {}: {e}", path.display()))]))?;
    parse(&text)
}

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<Desired, ConfigErrors> {
    let file: File = serde_saphyr::from_str(text).map_err(|e| ConfigErrors(vec![yaml_error(&e.to_string())]))?;
    validate(file)
}

/// serde-saphyr's message, on one line: the location and what is wrong.
fn yaml_error(text: &str) -> ConfigError {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    err("", format!("not a valid config: {}", lines.join(" ")))
}

fn parse_addr(path: &str, s: &str, errors: &mut Vec<ConfigError>) -> Option<IpAddr> {
    match s.trim().parse::<IpAddr>() {
        Ok(a) if a.is_unspecified() || a.is_multicast() || a.is_loopback() => {
            errors.push(err(path, format!("{s} is not a unicast address a host can use")));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(err(path, format!("{s:?} is not an IP address (e.g. 192.0.2.10 or 2001:db8::10)")));
            None
        }
    }
}

fn port(path: &str, p: u32, errors: &mut Vec<ConfigError>) -> u16 {
    match u16::try_from(p) {
        Ok(p) if p > 0 => p,
        _ => {
            errors.push(err(path, format!("{p} is not a port (1-65535)")));
            1
        }
    }
}

/// Parses `LOW-HIGH` ports.
pub fn port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').ok_or("expected LOW-HIGH, e.g. 1024-65535")?;
    let lo: u16 = lo.trim().parse().map_err(|_| "LOW is not a port number")?;
    let hi: u16 = hi.trim().parse().map_err(|_| "HIGH is not a port number")?;
    if lo == 0 || lo > hi {
        return Err("expected 1 <= LOW <= HIGH".into());
    }
    Ok((lo, hi))
}

fn validate(f: File) -> Result<Desired, ConfigErrors> {
    let mut errors = Vec::new();
    let interface = match f.interfaces.as_slice() {
        [i] => {
            if i.name.trim().is_empty() {
                errors.push(err("interfaces[0].name", "empty; give the interface to serve, e.g. eth0"));
            }
            let xdp_mode = match i.xdp_mode.as_deref().unwrap_or("auto") {
                "auto" => AttachMode::Auto,
                "native" => AttachMode::Native,
                "generic" => AttachMode::Generic,
                other => {
                    errors.push(err("interfaces[0].xdpMode", format!("{other:?} is not auto, native or generic")));
                    AttachMode::Auto
                }
            };
            let zero_copy = match i.zero_copy.as_deref().unwrap_or("auto") {
                "auto" => ZeroCopy::Auto,
                "off" => ZeroCopy::Off,
                "required" => ZeroCopy::Required,
                other => {
                    errors.push(err("interfaces[0].zeroCopy", format!("{other:?} is not auto, off or required")));
                    ZeroCopy::Auto
                }
            };
            if i.queues == Some(0) {
                errors.push(err("interfaces[0].queues", "0 queues; leave it out to serve every queue"));
            }
            InterfaceConfig { name: i.name.trim().to_string(), queues: i.queues, xdp_mode, zero_copy }
        }
        [] => {
            errors.push(err("interfaces", "no interface; add one: interfaces: [{name: eth0}]"));
            InterfaceConfig { name: String::new(), queues: None, xdp_mode: AttachMode::Auto, zero_copy: ZeroCopy::Auto }
        }
        more => {
            errors.push(err(
                "interfaces",
                format!("{} interfaces given; this version serves exactly one (run one xlb per interface)", more.len()),
            ));
            InterfaceConfig { name: String::new(), queues: None, xdp_mode: AttachMode::Auto, zero_copy: ZeroCopy::Auto }
        }
    };

    let mut pools = Vec::new();
    let mut pool_names = HashSet::new();
    for (i, p) in f.pools.iter().enumerate() {
        let at = format!("pools[{i}]");
        if p.name.trim().is_empty() {
            errors.push(err(format!("{at}.name"), "empty; every pool needs a name"));
        } else if !pool_names.insert(p.name.clone()) {
            errors.push(err(format!("{at}.name"), format!("duplicate pool name {:?}", p.name)));
        }
        if p.blocks.is_empty() {
            errors.push(err(format!("{at}.blocks"), "no blocks; add - cidr: 192.0.2.0/28 or - start/stop"));
        }
        let mut blocks = Vec::new();
        for (j, b) in p.blocks.iter().enumerate() {
            let bat = format!("{at}.blocks[{j}]");
            match (&b.cidr, &b.start, &b.stop) {
                (Some(c), None, None) => match c.trim().parse::<ipnet::IpNet>() {
                    Ok(net) => blocks.push(Block::cidr(net)),
                    Err(_) => {
                        errors.push(err(format!("{bat}.cidr"), format!("{c:?} is not a CIDR (e.g. 192.0.2.0/28)")))
                    }
                },
                (None, Some(s), Some(e)) => {
                    let start = parse_addr(&format!("{bat}.start"), s, &mut errors);
                    let stop = parse_addr(&format!("{bat}.stop"), e, &mut errors);
                    if let (Some(start), Some(stop)) = (start, stop) {
                        if start.is_ipv6() != stop.is_ipv6() {
                            errors.push(err(&bat, "start and stop are of different address families"));
                        } else if stop < start {
                            errors.push(err(&bat, format!("stop {stop} comes before start {start}")));
                        } else {
                            blocks.push(Block { start, stop, cidr: false });
                        }
                    }
                }
                _ => errors.push(err(&bat, "give either cidr, or start and stop")),
            }
        }
        pools.push(Pool {
            name: p.name.clone(),
            blocks,
            allow_first_last: p.allow_first_last_ips,
            disabled: p.disabled,
        });
    }

    let mut snat_addrs = Vec::new();
    let mut snat_ports = crate::lb::snat::DEFAULT_PORTS;
    if let Some(s) = &f.snat {
        for (i, a) in s.addresses.iter().enumerate() {
            if let Some(a) = parse_addr(&format!("snat.addresses[{i}]"), a, &mut errors) {
                if snat_addrs.contains(&a) {
                    errors.push(err(format!("snat.addresses[{i}]"), format!("{a} is listed twice")));
                }
                snat_addrs.push(a);
            }
        }
        if let Some(p) = &s.ports {
            match port_range(p) {
                Ok(r) => snat_ports = r,
                Err(e) => errors.push(err("snat.ports", format!("{p:?}: {e}"))),
            }
        }
    }

    let mut services = Vec::new();
    let mut names = HashSet::new();
    for (i, s) in f.services.iter().enumerate() {
        let at = format!("services[{i}]");
        if let Some(svc) = validate_service(&at, s, &pool_names, &snat_addrs, &mut errors) {
            if !names.insert(svc.name.clone()) {
                errors.push(err(format!("{at}.name"), format!("duplicate service name {:?}", svc.name)));
            }
            services.push(svc);
        }
    }
    // A VIP used by several services (shared) must not have one port twice.
    let mut taken: HashMap<(IpAddr, u8, u16), &str> = HashMap::new();
    for (i, s) in services.iter().enumerate() {
        if let Request::Address(vip) = s.request {
            if snat_addrs.contains(&vip) {
                errors.push(err(
                    format!("services[{i}].vip"),
                    format!("{vip} is also a SNAT address; give SNAT its own"),
                ));
            }
            for (j, p) in s.ports.iter().enumerate() {
                if let Some(other) = taken.insert((vip, p.proto, p.port), &s.name) {
                    errors.push(err(
                        format!("services[{i}].ports[{j}]"),
                        format!(
                            "{} port {} on {vip} is already used by service {other:?}",
                            proto_name(p.proto),
                            p.port
                        ),
                    ));
                }
            }
        }
    }

    let a = &f.announce;
    let announce = AnnounceConfig {
        probes: a.dad_probes.unwrap_or(3),
        probe_interval: Duration::from_millis(a.dad_interval_ms.unwrap_or(100)),
        probe_wait: Duration::from_millis(a.dad_wait_ms.unwrap_or(200)),
        garp_count: a.garp_count.unwrap_or(3),
        garp_interval: Duration::from_millis(a.garp_interval_ms.unwrap_or(250)),
        garp_offsets: None,
        refresh: None,
    };
    let ha = f.ha.as_ref().map(|h| {
        let d = super::ha::HaTimings::default();
        let mut peers = h.peers.clone();
        peers.sort();
        if peers.windows(2).any(|w| w[0] == w[1]) {
            errors.push(err("ha.peers", "a name is given twice; each box once"));
        }
        if peers.is_empty() || peers.iter().any(|p| p.trim().is_empty() || p.len() > crate::lb::heartbeat::MAX_NAME) {
            errors.push(err("ha.peers", format!("give every box's name (1-{} bytes), this one's included", crate::lb::heartbeat::MAX_NAME)));
        }
        if let Some(n) = &h.node {
            if !peers.contains(n) {
                errors.push(err("ha.node", format!("{n:?} is not one of ha.peers")));
            }
        }
        let interval = h.heartbeat_interval_ms.unwrap_or(50);
        if !(10..=10_000).contains(&interval) {
            errors.push(err("ha.heartbeatIntervalMs", format!("{interval} is outside 10-10000 ms (default 50)")));
        }
        let dead_after = h.dead_after.unwrap_or(d.dead_after);
        if !(2..=100).contains(&dead_after) {
            errors.push(err("ha.deadAfter", format!("{dead_after} is outside 2-100 missed heartbeats (default 5)")));
        }
        let takeover = Duration::from_millis(h.takeover_ms.unwrap_or(150));
        let timings = super::ha::HaTimings { interval: Duration::from_millis(interval), dead_after, takeover };
        if takeover >= timings.dead_time() {
            errors.push(err(
                "ha.takeoverMs",
                format!(
                    "{} ms must be less than heartbeatIntervalMs x deadAfter ({} ms): a cut-off node must stop answering before the others take over",
                    takeover.as_millis(),
                    timings.dead_time().as_millis()
                ),
            ));
        }
        let announce =
            super::announcer::Timing::parse(h.gratuitous_arp_ms.as_deref(), h.refresh_seconds).unwrap_or_else(|(field, msg)| {
                errors.push(err(format!("ha.{field}"), msg));
                super::announcer::Timing::default()
            });
        if let Some(path) = &h.key_file {
            if let Err(e) = crate::lb::heartbeat::Key::from_file(path) {
                errors.push(err("ha.keyFile", e));
            }
        }
        HaConfig {
            key_file: h.key_file.clone(),
            node: h.node.clone(),
            peers,
            cluster: h.cluster.clone().unwrap_or_else(|| "default".into()),
            timings,
            announce,
        }
    });
    let conntrack_capacity = f.conntrack.capacity.unwrap_or(1 << 20);
    if conntrack_capacity == 0 {
        errors.push(err("conntrack.capacity", "0 flows; leave it out for the default (1048576)"));
    }
    let metrics = f.metrics.as_ref().and_then(|m| match m.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(err("metrics.listen", format!("{:?} is not ADDRESS:PORT (e.g. 127.0.0.1:9180)", m.listen)));
            None
        }
    });
    if errors.is_empty() {
        Ok(Desired {
            interface,
            pools,
            snat_addrs,
            snat_ports,
            services,
            announce,
            conntrack_capacity,
            admin_socket: f.admin.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET)),
            metrics,
            ha,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `tcp` or `udp`.
pub fn proto_name(p: u8) -> &'static str {
    if p == Protocol::UDP {
        "udp"
    } else {
        "tcp"
    }
}

fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d: &u32| d.saturating_mul(*d) <= n).all(|d| !n.is_multiple_of(d))
}

fn validate_service(
    at: &str,
    s: &ServiceFile,
    pools: &HashSet<String>,
    snat_addrs: &[IpAddr],
    errors: &mut Vec<ConfigError>,
) -> Option<ServiceConfig> {
    let before = errors.len();
    let name = s.name.trim().to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        errors.push(err(format!("{at}.name"), format!("{:?}: use letters, digits, '-', '_' or '.'", s.name)));
    }
    // The family: as given, else that of the backends.
    let backends_v6 =
        s.backends.first().and_then(|b| b.address.trim().parse::<IpAddr>().ok()).is_some_and(|a| a.is_ipv6());
    let family_v6 = match s.ip_family.as_deref() {
        None => backends_v6,
        Some("IPv4") => false,
        Some("IPv6") => true,
        Some(other) => {
            errors.push(err(format!("{at}.ipFamily"), format!("{other:?} is not IPv4 or IPv6")));
            false
        }
    };
    let request = match (&s.vip, &s.pool) {
        (Some(_), Some(_)) => {
            errors.push(err(at, "give vip or pool, not both"));
            None
        }
        (Some(v), None) => parse_addr(&format!("{at}.vip"), v, errors).map(Request::Address),
        (None, Some(p)) => {
            if !pools.contains(p) {
                errors.push(err(format!("{at}.pool"), format!("no pool named {p:?}")));
            }
            Some(Request::Pool { name: p.clone(), v6: family_v6 })
        }
        (None, None) => Some(Request::Any { v6: family_v6 }),
    };
    let vip_v6 = match &request {
        Some(Request::Address(a)) => Some(a.is_ipv6()),
        Some(Request::Any { v6 } | Request::Pool { v6, .. }) => Some(*v6),
        None => None,
    };
    let mode = match s.mode.as_deref().unwrap_or("dsr") {
        "dsr" => ForwardMode::Dsr,
        "snat" => ForwardMode::Snat,
        other => {
            errors.push(err(format!("{at}.mode"), format!("{other:?} is not dsr or snat")));
            ForwardMode::Dsr
        }
    };
    if s.ports.is_empty() {
        errors.push(err(format!("{at}.ports"), "no ports; add - port: 80"));
    }
    let mut ports: Vec<PortConfig> = Vec::new();
    for (j, p) in s.ports.iter().enumerate() {
        let pat = format!("{at}.ports[{j}]");
        let proto = match p.protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("tcp") => Protocol::TCP,
            Some("udp") => Protocol::UDP,
            Some(other) => {
                errors.push(err(format!("{pat}.protocol"), format!("{other:?} is not TCP or UDP")));
                Protocol::TCP
            }
        };
        let port_n = port(&format!("{pat}.port"), p.port, errors);
        let target = p.target_port.map_or(port_n, |t| port(&format!("{pat}.targetPort"), t, errors));
        if ports.iter().any(|q| q.proto == proto && q.port == port_n) {
            errors.push(err(&pat, format!("{} port {port_n} is listed twice", proto_name(proto))));
        }
        ports.push(PortConfig { proto, port: port_n, target_port: target });
    }
    let mut backends: Vec<(IpAddr, u32)> = Vec::new();
    for (j, b) in s.backends.iter().enumerate() {
        let bat = format!("{at}.backends[{j}]");
        let Some(a) = parse_addr(&format!("{bat}.address"), &b.address, errors) else { continue };
        let w = b.weight.unwrap_or(1);
        if w > MAX_WEIGHT {
            errors.push(err(
                format!("{bat}.weight"),
                format!("{w} is out of range (0-{MAX_WEIGHT}; 0 drains the backend)"),
            ));
        }
        if vip_v6.is_some_and(|v6| v6 != a.is_ipv6()) {
            errors.push(err(format!("{bat}.address"), format!("{a} is not of the service's address family")));
        }
        if backends.iter().any(|(x, _)| *x == a) {
            errors.push(err(format!("{bat}.address"), format!("{a} is listed twice")));
        }
        backends.push((a, w));
    }
    if mode == ForwardMode::Snat {
        if let Some(v6) = vip_v6 {
            if !snat_addrs.iter().any(|a| a.is_ipv6() == v6) {
                errors.push(err(
                    format!("{at}.mode"),
                    format!("snat needs an {} address in snat.addresses", if v6 { "IPv6" } else { "IPv4" }),
                ));
            }
        }
    }
    let table_size = s.maglev_table_size.unwrap_or(DEFAULT_TABLE_SIZE);
    if !is_prime(table_size) {
        errors.push(err(
            format!("{at}.maglevTableSize"),
            format!("{table_size} is not a prime (e.g. 65537, 251, 131071)"),
        ));
    }
    let affinity = match s.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => {
            let t = s.session_affinity_timeout_seconds.unwrap_or(10_800);
            if t == 0 || t > 86_400 {
                errors
                    .push(err(format!("{at}.sessionAffinityTimeoutSeconds"), format!("{t} is out of range (1-86400)")));
            }
            Some(Duration::from_secs(t))
        }
        Some(other) => {
            errors.push(err(format!("{at}.sessionAffinity"), format!("{other:?} is not ClientIP or None")));
            None
        }
    };
    let health = s.health_check.as_ref().map(|h| validate_health(&format!("{at}.healthCheck"), h, errors));
    (errors.len() == before).then(|| ServiceConfig {
        name,
        request: request.unwrap_or(Request::Any { v6: false }),
        mode,
        ports,
        backends,
        table_size,
        affinity,
        health: health.flatten(),
    })
}

fn validate_health(at: &str, h: &HealthFile, errors: &mut Vec<ConfigError>) -> Option<HealthConfig> {
    let kind = match h.kind.as_str() {
        "tcp" => CheckKind::Tcp,
        "http" => {
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                errors.push(err(format!("{at}.path"), format!("{path:?} is not an absolute URL path like /healthz")));
            }
            let status = h.expect_status.unwrap_or(200);
            if !(100..=599).contains(&status) {
                errors.push(err(format!("{at}.expectStatus"), format!("{status} is not an HTTP status (100-599)")));
            }
            CheckKind::Http { path, status }
        }
        other => {
            errors.push(err(format!("{at}.type"), format!("{other:?} is not tcp or http")));
            return None;
        }
    };
    let interval = h.interval_ms.unwrap_or(1000);
    let timeout = h.timeout_ms.unwrap_or(interval.min(1000) / 2);
    if !(50..=3_600_000).contains(&interval) {
        errors.push(err(format!("{at}.intervalMs"), format!("{interval} is out of range (50-3600000)")));
    }
    if timeout == 0 || timeout > interval {
        errors.push(err(
            format!("{at}.timeoutMs"),
            format!("{timeout} must be at least 1 and at most intervalMs ({interval})"),
        ));
    }
    let (rise, fall) = (h.rise.unwrap_or(2), h.fall.unwrap_or(3));
    for (name, v) in [("rise", rise), ("fall", fall)] {
        if !(1..=100).contains(&v) {
            errors.push(err(format!("{at}.{name}"), format!("{v} is out of range (1-100)")));
        }
    }
    let port = h.port.map(|p| port(&format!("{at}.port"), p, errors));
    Some(HealthConfig {
        kind,
        port,
        interval: Duration::from_millis(interval),
        timeout: Duration::from_millis(timeout),
        rise,
        fall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
interfaces:
  - name: eth0
    queues: 2
pools:
  - name: public
    blocks:
      - cidr: 192.0.2.0/28
      - start: 198.51.100.10
        stop: 198.51.100.20
snat:
  addresses: [192.0.2.200]
  ports: 2000-3000
services:
  - name: web
    vip: 192.0.2.5
    ports:
      - port: 80
        targetPort: 8080
      - port: 53
        protocol: UDP
    backends:
      - address: 10.0.0.11
      - address: 10.0.0.12
        weight: 3
    sessionAffinity: ClientIP
    healthCheck:
      type: http
      path: /healthz
      intervalMs: 500
      rise: 2
      fall: 2
  - name: api
    pool: public
    mode: snat
    ports: [{port: 443}]
    backends: [{address: 10.0.0.21}]
metrics:
  listen: 127.0.0.1:9180
"#;

    #[test]
    fn a_good_file_becomes_the_desired_state() {
        let d = parse(GOOD).unwrap();
        assert_eq!(d.interface.name, "eth0");
        assert_eq!(d.interface.queues, Some(2));
        assert_eq!(d.pools[0].blocks.len(), 2);
        assert_eq!(d.snat_ports, (2000, 3000));
        let web = &d.services[0];
        assert_eq!(web.request, Request::Address("192.0.2.5".parse().unwrap()));
        assert_eq!(web.ports[0], PortConfig { proto: 6, port: 80, target_port: 8080 });
        assert_eq!(web.ports[1], PortConfig { proto: 17, port: 53, target_port: 53 });
        assert_eq!(web.backends[1].1, 3);
        assert_eq!(web.affinity, Some(Duration::from_secs(10_800)));
        let h = web.health.as_ref().unwrap();
        assert_eq!(h.kind, CheckKind::Http { path: "/healthz".into(), status: 200 });
        assert_eq!((h.interval, h.rise, h.fall), (Duration::from_millis(500), 2, 2));
        assert_eq!(d.services[1].request, Request::Pool { name: "public".into(), v6: false });
        assert_eq!(d.services[1].mode, ForwardMode::Snat);
        assert_eq!(d.metrics, Some("127.0.0.1:9180".parse().unwrap()));
        assert_eq!(d.admin_socket, PathBuf::from(DEFAULT_ADMIN_SOCKET));
    }

    /// Each broken file yields exactly the message naming its field.
    #[test]
    fn each_mistake_names_its_field_and_the_fix() {
        let cases: &[(&str, &str, &str)] = &[
            ("bad CIDR", "      - cidr: 192.0.2.0/28", "      - cidr: 192.0.2.0/33"),
            ("bad address", "    vip: 192.0.2.5", "    vip: 192.0.2.300"),
            ("duplicate service", "  - name: api", "  - name: web"),
            ("weight", "        weight: 3", "        weight: 5000"),
            ("port", "      - port: 80\n", "      - port: 70000\n"),
            ("protocol", "        protocol: UDP", "        protocol: SCTP"),
            ("mode", "    mode: snat", "    mode: nat"),
            ("unknown pool", "    pool: public", "    pool: private"),
            ("vip and pool", "    vip: 192.0.2.5", "    vip: 192.0.2.5\n    pool: public"),
            ("health type", "      type: http", "      type: icmp"),
            ("health timeout", "      intervalMs: 500", "      intervalMs: 500\n      timeoutMs: 900"),
            (
                "table size",
                "    backends: [{address: 10.0.0.21}]",
                "    backends: [{address: 10.0.0.21}]\n    maglevTableSize: 65536",
            ),
            ("backend family", "      - address: 10.0.0.11", "      - address: 2001:db8::11"),
            ("snat ports", "  ports: 2000-3000", "  ports: 3000-2000"),
            ("metrics", "  listen: 127.0.0.1:9180", "  listen: localhost"),
            ("affinity", "    sessionAffinity: ClientIP", "    sessionAffinity: Cookie"),
            ("unknown field", "    queues: 2", "    queues: 2\n    speed: 100"),
        ];
        let want: &[&str] = &[
            "pools[0].blocks[0].cidr: \"192.0.2.0/33\" is not a CIDR",
            "services[0].vip: \"192.0.2.300\" is not an IP address",
            "services[1].name: duplicate service name \"web\"",
            "services[0].backends[1].weight: 5000 is out of range (0-1000",
            "services[0].ports[0].port: 70000 is not a port",
            "services[0].ports[1].protocol: \"sctp\" is not TCP or UDP",
            "services[1].mode: \"nat\" is not dsr or snat",
            "services[1].pool: no pool named \"private\"",
            "services[0]: give vip or pool, not both",
            "services[0].healthCheck.type: \"icmp\" is not tcp or http",
            "services[0].healthCheck.timeoutMs: 900 must be at least 1 and at most intervalMs (500)",
            "services[1].maglevTableSize: 65536 is not a prime",
            "services[0].backends[0].address: 2001:db8::11 is not of the service's address family",
            "snat.ports: \"3000-2000\": expected 1 <= LOW <= HIGH",
            "metrics.listen: \"localhost\" is not ADDRESS:PORT",
            "services[0].sessionAffinity: \"Cookie\" is not ClientIP or None",
            "speed",
        ];
        for ((what, from, to), want) in cases.iter().zip(want) {
            assert!(GOOD.contains(from), "{what}: fixture line {from:?} not found");
            let text = GOOD.replacen(from, to, 1);
            let e = parse(&text).expect_err(what);
            let shown = e.to_string();
            assert!(shown.contains(want), "{what}: {shown:?} does not contain {want:?}");
            assert!(!shown.contains('\n'), "{what}: not one line: {shown:?}");
        }
    }

    #[test]
    fn shared_vips_must_not_share_a_port() {
        let text =
            GOOD.replacen("    pool: public\n", "    vip: 192.0.2.5\n", 1).replacen("[{port: 443}]", "[{port: 80}]", 1);
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("services[1].ports[0]: tcp port 80 on 192.0.2.5 is already used by service \"web\""), "{e}");
        // Another port on the same VIP is fine.
        let ok = GOOD.replacen("    pool: public\n", "    vip: 192.0.2.5\n", 1);
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn several_mistakes_are_all_reported() {
        let text = GOOD.replacen("weight: 3", "weight: 5000", 1).replacen("mode: snat", "mode: nat", 1);
        assert_eq!(parse(&text).unwrap_err().0.len(), 2);
    }
}

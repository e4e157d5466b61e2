//! Validation: the file's shape ([`super::file`]) becomes the desired state, every mistake
//! reported with its field path and the fix. The whole file is checked before anything is
//! refused, so a user sees every mistake at once.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use super::{
    err,
    file::{File, HealthFile, ServiceFile},
    CheckKind, ConfigError, ConfigErrors, Desired, HaConfig, HealthConfig, InterfaceConfig, PortConfig, ServiceConfig,
    DEFAULT_ADMIN_SOCKET, MAX_WEIGHT,
};
use super::{port_range, proto_name};
use crate::{
    abi::{AttachMode, ZeroCopy},
    control::{
        ipam::{Block, Pool, Request},
        AnnounceConfig,
    },
    lb::{
        conntrack::{bytes_for, Timeouts, MAX_CAPACITY},
        maglev::{MaglevError, TableSize, MAX_TABLE_SIZE},
        snapshot::ForwardMode,
    },
    wire::ipv4::Protocol,
};

pub(super) fn parse_addr(path: &str, s: &str, errors: &mut Vec<ConfigError>) -> Option<IpAddr> {
    match s.trim().parse::<IpAddr>() {
        Ok(a) if a.is_unspecified() || a.is_multicast() || a.is_loopback() || is_broadcast(a) => {
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

fn is_broadcast(a: IpAddr) -> bool {
    matches!(a, IpAddr::V4(v) if v.is_broadcast())
}

pub(super) fn port(path: &str, p: u32, errors: &mut Vec<ConfigError>) -> u16 {
    match u16::try_from(p) {
        Ok(p) if p > 0 => p,
        _ => {
            errors.push(err(path, format!("{p} is not a port (1-65535)")));
            1
        }
    }
}

/// `f` with `foreign_pools`: the names of the pools the file's Kubernetes objects define
/// (`pool:` may name them; `pools` may not reuse them).
pub(super) fn validate(f: File, foreign_pools: &[String]) -> Result<Desired, ConfigErrors> {
    let mut errors = Vec::new();
    let mut interfaces: Vec<InterfaceConfig> = Vec::new();
    if f.interfaces.is_empty() {
        errors.push(err("interfaces", "no interface; add one: interfaces: [{name: eth0}]"));
    }
    for (k, i) in f.interfaces.iter().enumerate() {
        let at = format!("interfaces[{k}]");
        let name = i.name.trim().to_string();
        if name.is_empty() {
            errors.push(err(format!("{at}.name"), "empty; give the interface to serve, e.g. eth0"));
        } else if interfaces.iter().any(|x| x.name == name) {
            errors.push(err(format!("{at}.name"), format!("{name:?} is listed twice")));
        }
        let xdp_mode = match i.xdp_mode.as_deref().unwrap_or("auto") {
            "auto" => AttachMode::Auto,
            "native" => AttachMode::Native,
            "generic" => AttachMode::Generic,
            other => {
                errors.push(err(format!("{at}.xdpMode"), format!("{other:?} is not auto, native or generic")));
                AttachMode::Auto
            }
        };
        let zero_copy = match i.zero_copy.as_deref().unwrap_or("auto") {
            "auto" => ZeroCopy::Auto,
            "off" => ZeroCopy::Off,
            "required" => ZeroCopy::Required,
            other => {
                errors.push(err(format!("{at}.zeroCopy"), format!("{other:?} is not auto, off or required")));
                ZeroCopy::Auto
            }
        };
        if i.queues == Some(0) {
            errors.push(err(format!("{at}.queues"), "0 queues; leave it out to serve every queue"));
        }
        interfaces.push(InterfaceConfig { name, queues: i.queues, xdp_mode, zero_copy });
    }
    let interface_names: Vec<String> = interfaces.iter().map(|i| i.name.clone()).collect();

    let mut pools = Vec::new();
    let mut pool_names = HashSet::new();
    let all_pools: HashSet<String> =
        f.pools.iter().map(|p| p.name.clone()).chain(foreign_pools.iter().cloned()).collect();
    for (i, p) in f.pools.iter().enumerate() {
        let at = format!("pools[{i}]");
        if p.name.trim().is_empty() {
            errors.push(err(format!("{at}.name"), "empty; every pool needs a name"));
        } else if !pool_names.insert(p.name.clone()) {
            errors.push(err(format!("{at}.name"), format!("duplicate pool name {:?}", p.name)));
        } else if foreign_pools.contains(&p.name) {
            errors.push(err(
                format!("{at}.name"),
                format!("{:?} is also the name of a pool object in the file; give each pool its own name", p.name),
            ));
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
            ..Pool::default()
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
        if let Some(svc) = validate_service(&at, s, &all_pools, &snat_addrs, &interface_names, &mut errors) {
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
        let d = crate::control::ha::HaTimings::default();
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
        let timings = crate::control::ha::HaTimings { interval: Duration::from_millis(interval), dead_after, takeover };
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
            crate::control::announcer::Timing::parse(h.gratuitous_arp_ms.as_deref(), h.refresh_seconds).unwrap_or_else(|(field, msg)| {
                errors.push(err(format!("ha.{field}"), msg));
                crate::control::announcer::Timing::default()
            });
        // A fuzzed file (`--cfg fuzzing`: scripts/fuzz.sh) names paths at random; it must not
        // make the fuzzer read them (a device that never ends, a FIFO that never answers).
        #[cfg(not(fuzzing))]
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
    } else if conntrack_capacity > MAX_CAPACITY {
        errors.push(err(
            "conntrack.capacity",
            format!(
                "{conntrack_capacity} flows is over the {MAX_CAPACITY} a worker's table may hold ({} MiB of memory per queue at the most)",
                bytes_for(MAX_CAPACITY) >> 20
            ),
        ));
    }
    let mut conntrack_timeouts = Timeouts::default();
    for (name, secs) in &f.conntrack.timeouts {
        if let Err(e) = conntrack_timeouts.set_secs(name, *secs) {
            errors.push(err(format!("conntrack.timeouts.{name}"), e));
        }
    }
    let service_names: HashSet<String> = services.iter().map(|s| s.name.clone()).collect();
    let bgp = f.bgp.as_ref().and_then(|b| super::bgp::validate_bgp(b, &all_pools, &service_names, &mut errors));
    let metrics = f.metrics.as_ref().and_then(|m| match m.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(err("metrics.listen", format!("{:?} is not ADDRESS:PORT (e.g. 127.0.0.1:9180)", m.listen)));
            None
        }
    });
    if errors.is_empty() {
        Ok(Desired {
            interfaces,
            node_labels: f.node_labels,
            pools,
            snat_addrs,
            snat_ports,
            services,
            announce,
            conntrack_capacity,
            conntrack_timeouts,
            admin_socket: f.admin.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET)),
            metrics,
            ha,
            bgp,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn validate_service(
    at: &str,
    s: &ServiceFile,
    pools: &HashSet<String>,
    snat_addrs: &[IpAddr],
    interfaces: &[String],
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
        Some(Request::Address(a) | Request::Keep(a)) => Some(a.is_ipv6()),
        Some(Request::Any { v6 } | Request::Pool { v6, .. } | Request::AnyOf { v6, .. }) => Some(*v6),
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
        if snat_addrs.contains(&a) {
            errors.push(err(
                format!("{bat}.address"),
                format!("{a} is one of snat.addresses, which xlb answers for itself; give the address of a host that serves the service"),
            ));
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
    let table_size = s.maglev_table_size.map_or(TableSize::Auto, TableSize::Fixed);
    let fix = "or leave maglevTableSize out to size the table to the backends (over 100 slots each)";
    match table_size.check(backends.len()) {
        Ok(_) => {}
        Err(MaglevError::BadSize(m)) => errors.push(err(
            format!("{at}.maglevTableSize"),
            format!("{m} is not a prime between 3 and {MAX_TABLE_SIZE}: give one (e.g. 1021, 16381, 65537), {fix}"),
        )),
        Err(MaglevError::TooManyBackends { backends: n, size }) => errors.push(err(
            format!("{at}.maglevTableSize"),
            format!(
                "{size} slots cannot hold {n} backends: give a prime over 100 x {n} (e.g. {}), {fix}",
                TableSize::Auto.slots_for(n)
            ),
        )),
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
    let source_ranges = source_ranges(at, &s.source_ranges, errors);
    let health = s.health_check.as_ref().map(|h| validate_health(&format!("{at}.healthCheck"), h, errors));
    let mut on: Vec<String> = Vec::new();
    for (j, i) in s.interfaces.iter().enumerate() {
        let i = i.trim().to_string();
        if !interfaces.contains(&i) {
            errors.push(err(
                format!("{at}.interfaces[{j}]"),
                format!(
                    "{i:?} is not in interfaces ({}); name one of them, or leave the list out for all",
                    interfaces.join(", ")
                ),
            ));
        } else if !on.contains(&i) {
            on.push(i);
        }
    }
    (errors.len() == before).then(|| ServiceConfig {
        name,
        interfaces: on,
        labels: s.labels.clone(),
        request: request.unwrap_or(Request::Any { v6: false }),
        mode,
        ports,
        backends,
        table_size,
        affinity,
        source_ranges,
        health: health.flatten(),
    })
}

/// A service's `sourceRanges`: prefixes of either family (a bare address is its own /32 or
/// /128). Host bits set are refused: `10.0.0.1/8` is more likely a typo than a wish.
fn source_ranges(at: &str, list: &[String], errors: &mut Vec<ConfigError>) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (j, text) in list.iter().enumerate() {
        let path = format!("{at}.sourceRanges[{j}]");
        let t = text.trim();
        let net = t.parse::<ipnet::IpNet>().or_else(|_| t.parse::<IpAddr>().map(ipnet::IpNet::from));
        match net {
            Ok(n) if n.network() != n.addr() => {
                errors.push(err(path, format!("{t:?} has host bits set; write the network, {}", n.trunc())))
            }
            Ok(n) => out.push(n),
            Err(_) => {
                errors.push(err(path, format!("{t:?} is not a prefix; write one like 203.0.113.0/24 or 2001:db8::/48")))
            }
        }
    }
    out
}

fn validate_health(at: &str, h: &HealthFile, errors: &mut Vec<ConfigError>) -> Option<HealthConfig> {
    let kind = match h.kind.as_str() {
        "tcp" => CheckKind::Tcp,
        "http" => {
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            // Judged by the parser of the HTTP client that sends it.
            if !path.starts_with('/') || path.parse::<hyper::Uri>().is_err() {
                errors.push(err(
                    format!("{at}.path"),
                    format!(
                        "{path:?} is not an absolute URL path like /healthz (percent-encode spaces, control \
                         characters, <, > and `)"
                    ),
                ));
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

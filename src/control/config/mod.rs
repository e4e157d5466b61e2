//! The standalone source: one YAML file (`xlb run --config xlb.yaml`) read into the desired
//! state, validated in full before anything is applied. Every mistake is reported with the
//! path of the field (`services[1].backends[0].weight`) and what would fix it; the file is
//! refused as a whole if any is found.
//!
//! This module knows YAML and the file's shape; what the rest of the control plane sees is
//! [`Desired`], the same whatever the source.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

pub(crate) mod bgp;
pub(crate) mod file;
mod validate;

use self::{file::File, validate::validate};
use super::{
    ipam::{Pool, Request},
    AnnounceConfig,
};
use crate::{
    abi::{AttachMode, ZeroCopy},
    lb::{maglev::TableSize, snapshot::ForwardMode},
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

pub(super) fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
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
    /// Maglev table size: sized to the backends (`maglevTableSize` left out), or a prime.
    pub table_size: TableSize,
    /// Session affinity by client address, and for how long.
    pub affinity: Option<Duration>,
    /// The client prefixes it admits (`sourceRanges`; empty: all).
    pub source_ranges: Vec<ipnet::IpNet>,
    /// Health check.
    pub health: Option<HealthConfig>,
    /// The interfaces its VIP is announced and served on (empty: every one).
    pub interfaces: Vec<String>,
    /// Its labels, for the selectors of pools and announcement policies given as
    /// Kubernetes objects.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Everything the file asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The interfaces served (at least one; the first sends the heartbeats).
    pub interfaces: Vec<InterfaceConfig>,
    /// This box's labels, for announcement policies' node selectors (`nodeLabels`).
    pub node_labels: std::collections::BTreeMap<String, String>,
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
    /// How long idle flows are kept, by state.
    pub conntrack_timeouts: crate::lb::conntrack::Timeouts,
    /// Admin API socket.
    pub admin_socket: PathBuf,
    /// Where `/metrics` is served (none: not served).
    pub metrics: Option<SocketAddr>,
    /// Failover between xlb boxes (none: this box alone owns every VIP).
    pub ha: Option<HaConfig>,
    /// BGP peers and what is advertised to them (none: L2 only).
    pub bgp: Option<super::bgp::BgpConfig>,
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

/// The kinds of pool a document of a config file may hold (`pool:` may name them).
pub const POOL_KINDS: &[&str] = &["LoadBalancerIPPool", "CiliumLoadBalancerIPPool", "IPAddressPool"];

/// A Kubernetes object among the documents of a config file (one with `apiVersion` and
/// `kind`): the pools and announcement policies of xlb, Cilium and MetalLB, as users keep
/// them in Git. This module only finds them; `k8s::manifests` reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Which document of the file (from 1).
    pub doc: usize,
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// The whole object.
    pub object: serde_json::Value,
}

impl Manifest {
    /// Where it is, for messages: `document 2 (CiliumLoadBalancerIPPool ip-pool-eno1)`.
    pub fn at(&self) -> String {
        format!("document {} ({} {})", self.doc, self.kind, self.name)
    }
}

/// Reads and validates a config file: xlb's settings, and the Kubernetes objects beside them.
pub fn load(path: &Path) -> Result<(Desired, Vec<Manifest>), ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![err("", format!("cannot read {}: {e}", path.display()))]))?;
    parse_all(&text)
}

/// Parses and validates config text (the Kubernetes objects among its documents are left
/// out: see [`parse_all`]).
pub fn parse(text: &str) -> Result<Desired, ConfigErrors> {
    parse_all(text).map(|(d, _)| d)
}

/// The documents of `text` (split at `---` lines, what follows the marker on its line
/// kept), each with its number among them (from 1); those with nothing but comments and
/// blank lines left out. Each keeps its place in the file (blank lines before it), so that
/// the parser's line numbers are the file's.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        let rest = t.strip_prefix("---").filter(|r| r.is_empty() || r.starts_with([' ', '\t']));
        if let Some(rest) = rest {
            out.push(std::mem::take(&mut cur));
            // The marker's line, and those before it, as blank lines.
            cur = "\n".repeat(i);
            cur.push_str(rest.trim_start());
            cur.push('\n');
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    out.push(cur);
    out.into_iter()
        .filter(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .enumerate()
        .map(|(i, d)| (i + 1, d))
        .collect()
}

/// Parses and validates config text of one or more YAML documents: exactly one of xlb's
/// settings, and any number of Kubernetes objects (returned as they are, for the reader
/// of pools and announcement policies).
pub fn parse_all(text: &str) -> Result<(Desired, Vec<Manifest>), ConfigErrors> {
    let docs = documents(text);
    let several = docs.len() > 1;
    let mut mine: Option<(usize, File)> = None;
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for (n, doc) in &docs {
        let n = *n;
        let at = |e: ConfigError| match several {
            true => err("", format!("document {n}: {e}")),
            false => e,
        };
        let value: Option<serde_json::Value> = serde_saphyr::from_str(doc).ok();
        let kind = value.as_ref().and_then(|v| v.get("kind")?.as_str().map(str::to_string));
        if let (Some(kind), Some(object)) = (kind, value) {
            let text = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_str).unwrap_or("").to_string();
            let name = text(object.pointer("/metadata/name"));
            manifests.push(Manifest { doc: n, api_version: text(object.get("apiVersion")), kind, name, object });
            continue;
        }
        match serde_saphyr::from_str::<File>(doc) {
            Ok(f) if mine.is_none() => mine = Some((n, f)),
            Ok(_) => errors.push(at(err("", "a second document of xlb's settings; keep one, and Kubernetes objects (with apiVersion and kind) beside it"))),
            Err(e) => errors.push(at(yaml_error(&e.to_string()))),
        }
    }
    let mut pool_names: Vec<String> = Vec::new();
    for m in manifests.iter().filter(|m| POOL_KINDS.contains(&m.kind.as_str())) {
        if m.name.is_empty() {
            errors.push(err("", format!("{}: metadata.name is empty; every pool needs a name", m.at())));
        } else if pool_names.contains(&m.name) {
            errors.push(err(
                "",
                format!("{}: a pool named {:?} comes earlier in the file; give each pool its own name", m.at(), m.name),
            ));
        } else {
            pool_names.push(m.name.clone());
        }
    }
    let Some((_, file)) = mine else {
        if errors.is_empty() {
            errors.push(err("", "no document of xlb's settings: add one with at least interfaces: [{name: eth0}] (Kubernetes objects may follow it, after ---)"));
        }
        return Err(ConfigErrors(errors));
    };
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    validate(file, &pool_names).map(|d| (d, manifests))
}

/// serde-saphyr's message, on one line: the location and what is wrong.
fn yaml_error(text: &str) -> ConfigError {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    err("", format!("not a valid config: {}", lines.join(" ")))
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

/// `tcp` or `udp`.
pub fn proto_name(p: u8) -> &'static str {
    if p == Protocol::UDP {
        "udp"
    } else {
        "tcp"
    }
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
    sourceRanges: [198.51.100.0/24, 2001:db8:c::/64, 203.0.113.9]
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
conntrack:
  timeouts: {tcpSynSnat: 3, udp: 30}
metrics:
  listen: 127.0.0.1:9180
"#;

    #[test]
    fn a_good_file_becomes_the_desired_state() {
        let d = parse(GOOD).unwrap();
        assert_eq!(d.interfaces[0].name, "eth0");
        assert_eq!(d.interfaces[0].queues, Some(2));
        assert_eq!(d.pools[0].blocks.len(), 2);
        assert_eq!(d.snat_ports, (2000, 3000));
        let web = &d.services[0];
        assert_eq!(web.request, Request::Address("192.0.2.5".parse().unwrap()));
        assert_eq!(web.ports[0], PortConfig { proto: 6, port: 80, target_port: 8080 });
        assert_eq!(web.ports[1], PortConfig { proto: 17, port: 53, target_port: 53 });
        assert_eq!(web.backends[1].1, 3);
        assert_eq!(web.affinity, Some(Duration::from_secs(10_800)));
        let nets: Vec<String> = web.source_ranges.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["198.51.100.0/24", "2001:db8:c::/64", "203.0.113.9/32"], "a bare address is its own prefix");
        assert!(d.services[1].source_ranges.is_empty(), "none given: every client");
        let h = web.health.as_ref().unwrap();
        assert_eq!(h.kind, CheckKind::Http { path: "/healthz".into(), status: 200 });
        assert_eq!((h.interval, h.rise, h.fall), (Duration::from_millis(500), 2, 2));
        assert_eq!(d.services[1].request, Request::Pool { name: "public".into(), v6: false });
        assert_eq!(d.services[1].mode, ForwardMode::Snat);
        assert_eq!(d.services[1].table_size, TableSize::Auto, "no maglevTableSize: sized to the backends");
        assert_eq!(d.metrics, Some("127.0.0.1:9180".parse().unwrap()));
        let t = crate::lb::conntrack::Timeouts::default();
        assert_eq!(
            d.conntrack_timeouts,
            crate::lb::conntrack::Timeouts {
                syn_snat: std::time::Duration::from_secs(3),
                udp: std::time::Duration::from_secs(30),
                ..t
            }
        );
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
            ("health path", "      path: /healthz", "      path: /a<b>"),
            (
                "table size",
                "    backends: [{address: 10.0.0.21}]",
                "    backends: [{address: 10.0.0.21}]\n    maglevTableSize: 65536",
            ),
            ("table size range", "    backends: [{address: 10.0.0.21}]", "    backends: [{address: 10.0.0.21}]\n    maglevTableSize: 2"),
            (
                "table size too small",
                "    backends: [{address: 10.0.0.21}]",
                "    backends: [{address: 10.0.0.21}, {address: 10.0.0.22}, {address: 10.0.0.23}, {address: 10.0.0.24}]\n    maglevTableSize: 3",
            ),
            ("backend family", "      - address: 10.0.0.11", "      - address: 2001:db8::11"),
            ("snat ports", "  ports: 2000-3000", "  ports: 3000-2000"),
            ("metrics", "  listen: 127.0.0.1:9180", "  listen: localhost"),
            ("timeout name", "{tcpSynSnat: 3, udp: 30}", "{tcpSynSnat: 3, udpStream: 30}"),
            ("timeout range", "{tcpSynSnat: 3, udp: 30}", "{tcpSynSnat: 0, udp: 30}"),
            ("affinity", "    sessionAffinity: ClientIP", "    sessionAffinity: Cookie"),
            ("source range host bits", "198.51.100.0/24,", "198.51.100.7/24,"),
            ("source range", "198.51.100.0/24,", "198.51.100.0/33,"),
            ("unknown field", "    queues: 2", "    queues: 2\n    speed: 100"),
            ("interface twice", "    queues: 2", "    queues: 2\n  - name: eth0"),
            ("service interface", "    mode: snat", "    mode: snat\n    interfaces: [eth1]"),
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
            "services[0].healthCheck.path: \"/a<b>\" is not an absolute URL path like /healthz (percent-encode spaces, control characters, <, > and `)",
            "services[1].maglevTableSize: 65536 is not a prime between 3 and 16777213: give one (e.g. 1021, 16381, 65537), or leave maglevTableSize out to size the table to the backends",
            "services[1].maglevTableSize: 2 is not a prime between 3 and 16777213",
            "services[1].maglevTableSize: 3 slots cannot hold 4 backends: give a prime over 100 x 4 (e.g. 1021), or leave maglevTableSize out",
            "services[0].backends[0].address: 2001:db8::11 is not of the service's address family",
            "snat.ports: \"3000-2000\": expected 1 <= LOW <= HIGH",
            "metrics.listen: \"localhost\" is not ADDRESS:PORT",
            "conntrack.timeouts.udpStream: \"udpStream\" is not a timeout: give one of tcpSyn, tcpSynSnat, tcpEstablished, tcpClosing, udp, other",
            "conntrack.timeouts.tcpSynSnat: 0 s is out of range: give 1 to 2592000 seconds",
            "services[0].sessionAffinity: \"Cookie\" is not ClientIP or None",
            "services[0].sourceRanges[0]: \"198.51.100.7/24\" has host bits set; write the network, 198.51.100.0/24",
            "services[0].sourceRanges[0]: \"198.51.100.0/33\" is not a prefix; write one like 203.0.113.0/24 or 2001:db8::/48",
            "speed",
            "interfaces[1].name: \"eth0\" is listed twice",
            "services[1].interfaces[0]: \"eth1\" is not in interfaces (eth0); name one of them, or leave the list out for all",
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

    /// Two interfaces, each service's VIP on the interfaces it names (none: on both).
    #[test]
    fn services_choose_their_interfaces() {
        let text = GOOD
            .replacen("    queues: 2\n", "    queues: 2\n  - name: eth1\n    xdpMode: generic\n", 1)
            .replacen("    mode: snat\n", "    mode: snat\n    interfaces: [eth1, eth1]\n", 1);
        let d = parse(&text).unwrap();
        let names: Vec<&str> = d.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        assert_eq!(d.interfaces[1].xdp_mode, AttachMode::Generic);
        assert!(d.services[0].interfaces.is_empty());
        assert_eq!(d.services[1].interfaces, ["eth1"], "named twice, kept once");
        let c = crate::control::compile::compile(&d, &mut crate::control::ipam::Ipam::default()).unwrap();
        let api = c.assignments.iter().find(|(n, _)| n == "api").unwrap().1;
        assert_eq!(c.placement.get(&api), Some(&vec!["eth1".to_string()]));
        assert!(!c.placement.contains_key(&"192.0.2.5".parse().unwrap()), "web: on every interface");
        // A service that names eth1 on web's VIP leaves it on every interface (web names none).
        let shared = text.replacen(
            "conntrack:",
            "  - name: web2\n    vip: 192.0.2.5\n    interfaces: [eth1]\n    ports: [{port: 444}]\n    backends: [{address: 10.0.0.22}]\nconntrack:",
            1,
        );
        let c = crate::control::compile::compile(&parse(&shared).unwrap(), &mut crate::control::ipam::Ipam::default())
            .unwrap();
        assert!(!c.placement.contains_key(&"192.0.2.5".parse().unwrap()), "{:?}", c.placement);
    }

    /// Documents split at `---` keep their lines: the parser's line numbers are the file's,
    /// a leading marker included; what follows a marker on its line is kept.
    #[test]
    fn documents_keep_their_place_in_the_file() {
        let docs = documents("# a comment\n---\na: 1\n--- {b: 2}\n---\n# only a comment\n---\nc: 3\n");
        let got: Vec<(usize, usize, &str)> =
            docs.iter().map(|(n, d)| (*n, d.lines().take_while(|l| l.is_empty()).count(), d.trim())).collect();
        assert_eq!(got, [(1, 2, "a: 1"), (2, 3, "{b: 2}"), (3, 7, "c: 3")]);
        // A mistake on line 3 of a file that starts with --- is said to be on line 3.
        let e = parse("---\ninterfaces: [{name: eth0}]\nservices: 7\n").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn several_mistakes_are_all_reported() {
        let text = GOOD.replacen("weight: 3", "weight: 5000", 1).replacen("mode: snat", "mode: nat", 1);
        assert_eq!(parse(&text).unwrap_err().0.len(), 2);
    }
}

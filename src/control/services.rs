//! Services as the user gives them (`--service tcp:VIP:PORT=BACKEND:PORT*WEIGHT,...`), the
//! datapath services built from them with their backends' next hops, and the snapshots that
//! combine those with the announcer's VIP modes.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;

use super::nexthop::NextHops;
use crate::{
    lb::{
        maglev::{MaglevError, TableCache, TableSize},
        snapshot::{Backend, ForwardMode, Service, ServiceKey, SourceRanges},
        stats::UNCOUNTED,
        Snapshot, VipMode,
    },
    wire::ipv4::Protocol,
};

/// A mistake in a service definition, naming the part that is wrong and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No `=` between the frontend and the backends.
    #[error("service {0:?}: expected PROTO:VIP:PORT=BACKEND:PORT[*WEIGHT],... (e.g. tcp:192.0.2.10:80=10.0.0.5:8080)")]
    Shape(String),
    /// Protocol other than tcp or udp.
    #[error("service {0:?}: protocol {1:?} is not tcp or udp")]
    Protocol(String, String),
    /// The VIP:PORT part does not parse.
    #[error("service {0:?}: {1:?} is not VIP:PORT (IPv6 in brackets: [2001:db8::10]:80)")]
    Frontend(String, String),
    /// A backend does not parse.
    #[error("service {0:?}: backend {1:?} is not ADDR:PORT[*WEIGHT] (IPv6 in brackets)")]
    Backend(String, String),
    /// Port 0.
    #[error("service {0:?}: port 0 is not a port")]
    PortZero(String),
    /// A backend of the other address family than the VIP (DSR cannot cross families).
    #[error("service {0:?}: backend {1} is not of the VIP's address family")]
    Family(String, IpAddr),
    /// No backends.
    #[error("service {0:?}: no backends")]
    NoBackends(String),
    /// The same backend twice.
    #[error("service {0:?}: backend {1} is listed twice")]
    Duplicate(String, SocketAddr),
    /// An option after `;` that is not `mode=`, `affinity=` or `table=`, or a bad value.
    #[error("service {0:?}: option {1:?}: {2}")]
    Option(String, String, &'static str),
}

/// A service as the user defined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Name shown to people: `SERVICE/PROTO:PORT` from a config file, `PROTO:VIP:PORT` from
    /// the command line.
    pub name: String,
    /// Protocol, VIP, port.
    pub key: ServiceKey,
    /// Backends: address, port, weight.
    pub backends: Vec<(IpAddr, u16, u32)>,
    /// Forwarding mode.
    pub mode: ForwardMode,
    /// Maglev table size: sized to the backends, or a configured prime.
    pub table_size: TableSize,
    /// Session affinity by client address, and for how long.
    pub affinity: Option<Duration>,
    /// The client prefixes it admits (empty: all).
    pub source_ranges: Vec<ipnet::IpNet>,
}

impl FromStr for ServiceSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let text = s.trim();
        let err_shape = || SpecError::Shape(text.to_string());
        let mut parts = text.split(';');
        let main = parts.next().unwrap_or_default();
        let (front, back) = main.split_once('=').ok_or_else(err_shape)?;
        let (proto, vip_port) = front.split_once(':').ok_or_else(err_shape)?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::TCP,
            "udp" => Protocol::UDP,
            other => return Err(SpecError::Protocol(text.to_string(), other.to_string())),
        };
        let front: SocketAddr =
            vip_port.parse().map_err(|_| SpecError::Frontend(text.to_string(), vip_port.to_string()))?;
        if front.port() == 0 {
            return Err(SpecError::PortZero(text.to_string()));
        }
        let mut backends = Vec::new();
        for part in back.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (addr, weight) = match part.split_once('*') {
                Some((a, w)) => {
                    (a, w.parse::<u32>().map_err(|_| SpecError::Backend(text.to_string(), part.to_string()))?)
                }
                None => (part, 1),
            };
            let sa: SocketAddr = addr.parse().map_err(|_| SpecError::Backend(text.to_string(), part.to_string()))?;
            if sa.port() == 0 {
                return Err(SpecError::PortZero(text.to_string()));
            }
            if sa.is_ipv4() != front.is_ipv4() {
                return Err(SpecError::Family(text.to_string(), sa.ip()));
            }
            if backends.iter().any(|(a, p, _)| *a == sa.ip() && *p == sa.port()) {
                return Err(SpecError::Duplicate(text.to_string(), sa));
            }
            backends.push((sa.ip(), sa.port(), weight));
        }
        if backends.is_empty() {
            return Err(SpecError::NoBackends(text.to_string()));
        }
        let mut spec = ServiceSpec {
            name: format!("{}:{front}", if proto == Protocol::UDP { "udp" } else { "tcp" }),
            key: ServiceKey { vip: front.ip(), port: front.port(), proto },
            backends,
            mode: ForwardMode::Dsr,
            table_size: TableSize::Auto,
            affinity: None,
            source_ranges: Vec::new(),
        };
        for opt in parts.map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |why| SpecError::Option(text.to_string(), opt.to_string(), why);
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| bad("expected KEY=VALUE: mode=dsr|snat, affinity=SECONDS, table=PRIME|auto"))?;
            match k.trim() {
                "mode" => {
                    spec.mode = match v.trim() {
                        "dsr" => ForwardMode::Dsr,
                        "snat" => ForwardMode::Snat,
                        _ => return Err(bad("mode is dsr or snat")),
                    }
                }
                "affinity" => {
                    let secs: u64 = v
                        .trim()
                        .parse()
                        .map_err(|_| bad("affinity is a timeout in seconds (Kubernetes' default: 10800)"))?;
                    if secs == 0 || secs > 86_400 {
                        return Err(bad("affinity timeout must be 1 to 86400 seconds"));
                    }
                    spec.affinity = Some(Duration::from_secs(secs));
                }
                "table" => {
                    spec.table_size = match v.trim() {
                        "auto" => TableSize::Auto,
                        p => TableSize::Fixed(p.parse().map_err(|_| {
                            bad("table is a prime Maglev table size (e.g. 16381), or auto (sized to the backends, the default)")
                        })?),
                    }
                }
                _ => return Err(bad("known options: mode=dsr|snat, affinity=SECONDS, table=PRIME|auto")),
            }
        }
        Ok(spec)
    }
}

/// Most services with their own traffic counters.
pub const MAX_COUNTED_SERVICES: usize = 4096;
/// Most (service, backend) pairs with their own traffic counters (ids fit the SNAT table's 16
/// bits, 0xffff meaning none).
pub const MAX_COUNTED_BACKENDS: usize = 65535;

/// Stable ids of the workers' traffic counters: a service or backend keeps its id across
/// snapshots, so its counters carry on while the snapshot changes under it.
#[derive(Debug, Default)]
pub struct StatsIds {
    services: HashMap<ServiceKey, u32>,
    backends: HashMap<(ServiceKey, IpAddr, u16), u32>,
}

impl StatsIds {
    fn id<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: K, max: usize) -> u32 {
        let next = map.len();
        match map.get(&key) {
            Some(id) => *id,
            None if next < max => {
                let id = u32::try_from(next).unwrap_or(UNCOUNTED);
                map.insert(key, id);
                id
            }
            None => UNCOUNTED,
        }
    }

    /// The id of a service's counters.
    pub fn service(&mut self, key: ServiceKey) -> u32 {
        Self::id(&mut self.services, key, MAX_COUNTED_SERVICES)
    }

    /// The id a backend's counters already have, if any (does not assign one).
    pub fn backend_id(&self, key: ServiceKey, addr: IpAddr, port: u16) -> Option<u32> {
        self.backends.get(&(key, addr, port)).copied()
    }

    /// The id of a backend's counters within a service.
    pub fn backend(&mut self, key: ServiceKey, addr: IpAddr, port: u16) -> u32 {
        Self::id(&mut self.backends, (key, addr, port), MAX_COUNTED_BACKENDS)
    }
}

/// Builds the datapath's services from the specs and the next hops known so far.
pub fn build_services(
    specs: &[ServiceSpec],
    hops: &NextHops,
    ids: &mut StatsIds,
    tables: &mut TableCache,
) -> Result<Vec<Service>, MaglevError> {
    let built = specs
        .iter()
        .map(|spec| {
            let backends = spec
                .backends
                .iter()
                .map(|(addr, port, weight)| Backend {
                    mac: hops.mac_for_service(spec.key.vip, *addr, spec.mode),
                    via: hops.via.get(addr).map(|v| v.mac),
                    stats_id: ids.backend(spec.key, *addr, *port),
                    ..Backend::new(*addr, *port, *weight)
                })
                .collect();
            let mut svc = Service::with_tables(spec.key, spec.mode, backends, spec.table_size, tables)?
                .with_affinity(spec.affinity)
                .with_sources(SourceRanges::new(&spec.source_ranges));
            svc.stats_id = ids.service(spec.key);
            Ok(svc)
        })
        .collect::<Result<Vec<Service>, MaglevError>>()?;
    tables.finish();
    Ok(built)
}

/// Publishes snapshots: numbers them and swaps them in for the workers.
#[derive(Debug)]
pub struct Publisher {
    generation: u64,
    swap: Arc<ArcSwap<Snapshot>>,
    previous: Option<Arc<Snapshot>>,
}

impl Publisher {
    /// A publisher over the workers' shared snapshot.
    pub fn new(swap: Arc<ArcSwap<Snapshot>>) -> Self {
        Publisher { generation: 0, swap, previous: None }
    }

    /// Publishes a new snapshot; returns its generation.
    pub fn publish(&mut self, vips: impl IntoIterator<Item = (IpAddr, VipMode)>, services: Vec<Service>) -> u64 {
        self.generation += 1;
        let snap = Snapshot::new(self.generation, vips).with_services(services);
        // The snapshot replaced now is kept until the next publication, so the worker that
        // still reads it for a batch in flight never holds its last reference: snapshots
        // are freed here, off the hot path.
        self.previous = Some(self.swap.swap(Arc::new(snap)));
        self.generation
    }

    /// Generation of the last snapshot published.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6_services() -> Result<(), SpecError> {
        let s: ServiceSpec = "tcp:192.0.2.10:80=10.0.0.5:8080,10.0.0.6:8080*3".parse()?;
        assert_eq!(s.key, ServiceKey { vip: "192.0.2.10".parse().unwrap_or(IpAddr::from([0; 4])), port: 80, proto: 6 });
        assert_eq!(s.backends.len(), 2);
        assert_eq!(s.backends[1].2, 3);
        let s: ServiceSpec = "UDP:[2001:db8::10]:53=[2001:db8::5]:53".parse()?;
        assert_eq!((s.key.proto, s.key.port), (17, 53));
        Ok(())
    }

    #[test]
    fn errors_name_the_bad_part() {
        let e = |s: &str| s.parse::<ServiceSpec>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e("tcp:192.0.2.10:80").contains("PROTO:VIP:PORT="));
        assert!(e("sctp:192.0.2.10:80=10.0.0.5:1").contains("\"sctp\""));
        assert!(e("tcp:192.0.2.300:80=10.0.0.5:1").contains("\"192.0.2.300:80\""));
        assert!(e("tcp:192.0.2.10:80=10.0.0.5").contains("\"10.0.0.5\""));
        assert!(e("tcp:192.0.2.10:80=10.0.0.5:1*x").contains("\"10.0.0.5:1*x\""));
        assert!(e("tcp:192.0.2.10:80=[2001:db8::1]:1").contains("address family"));
        assert!(e("tcp:192.0.2.10:80=10.0.0.5:1,10.0.0.5:1").contains("twice"));
        assert!(e("tcp:192.0.2.10:0=10.0.0.5:1").contains("port 0"));
        assert!(e("tcp:192.0.2.10:80=").contains("no backends"));
        assert!(e("tcp:192.0.2.10:80=10.0.0.5:1;mode=nat").contains("dsr or snat"));
        assert!(e("tcp:192.0.2.10:80=10.0.0.5:1;affinity=0").contains("1 to 86400"));
        assert!(e("tcp:192.0.2.10:80=10.0.0.5:1;weight=3").contains("known options"));
        assert!(e("tcp:192.0.2.10:80=10.0.0.5:1;snat").contains("KEY=VALUE"));
    }

    #[test]
    fn counter_ids_are_stable_across_builds_and_bounded() -> Result<(), SpecError> {
        let a: ServiceSpec = "tcp:192.0.2.10:80=10.0.0.5:80,10.0.0.6:80".parse()?;
        let b: ServiceSpec = "udp:192.0.2.10:80=10.0.0.6:80".parse()?;
        let mut ids = StatsIds::default();
        let ids_of = |svcs: Vec<Service>| -> Vec<(u32, Vec<u32>)> {
            svcs.iter().map(|s| (s.stats_id, s.backends.iter().map(|b| b.stats_id).collect())).collect()
        };
        let first = ids_of(
            build_services(&[a.clone(), b.clone()], &NextHops::default(), &mut ids, &mut TableCache::default())
                .unwrap_or_default(),
        );
        assert_eq!(first, vec![(0, vec![0, 1]), (1, vec![2])]);
        // Order changed and a service gone: the ids stay with their objects.
        let again = ids_of(
            build_services(&[b], &NextHops::default(), &mut ids, &mut TableCache::default()).unwrap_or_default(),
        );
        assert_eq!(again, vec![(1, vec![2])]);
        let mut small: HashMap<u8, u32> = HashMap::new();
        assert_eq!((0..3).map(|k| StatsIds::id(&mut small, k, 2)).collect::<Vec<_>>(), vec![0, 1, UNCOUNTED]);
        Ok(())
    }

    #[test]
    fn options_set_mode_affinity_and_table() -> Result<(), SpecError> {
        let s: ServiceSpec = "tcp:192.0.2.10:80=10.0.0.5:8080; mode=snat; affinity=600; table=251".parse()?;
        assert_eq!(s.mode, ForwardMode::Snat);
        assert_eq!(s.affinity, Some(Duration::from_secs(600)));
        assert_eq!(s.table_size, TableSize::Fixed(251));
        let s: ServiceSpec = "tcp:192.0.2.10:80=10.0.0.5:8080".parse()?;
        assert_eq!(s.table_size, TableSize::Auto, "sized to the backends unless told");
        let s: ServiceSpec = "tcp:192.0.2.10:80=10.0.0.5:8080;table=auto".parse()?;
        assert_eq!(s.table_size, TableSize::Auto);
        Ok(())
    }
}

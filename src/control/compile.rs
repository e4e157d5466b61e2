//! From the desired state to what the datapath serves: VIPs allocated by IPAM, one
//! datapath service per (service, port), and the health checks to run.
//! Pure: the same inputs give the same output, and nothing is changed unless all of it
//! compiles (the caller keeps the IPAM it passed in on error).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
};

use super::{
    bgp::BgpConfig,
    config::{proto_name, ConfigError, ConfigErrors, Desired, HealthConfig},
    ipam::{Ipam, Request},
    services::ServiceSpec,
    speaker::Announced,
};
use crate::lb::snapshot::ServiceKey;

/// A backend to health-check: which service, which address and port, how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthTarget {
    /// Service name.
    pub service: String,
    /// Backend address.
    pub addr: IpAddr,
    /// Port checked.
    pub port: u16,
    /// How.
    pub check: HealthConfig,
}

/// What a desired state compiles to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Every VIP, in the order services name them (no duplicates).
    pub vips: Vec<IpAddr>,
    /// Datapath services, one per (service, port).
    pub specs: Vec<ServiceSpec>,
    /// Service name -> its VIP.
    pub assignments: Vec<(String, IpAddr)>,
    /// Backends with a health check.
    pub health: Vec<HealthTarget>,
    /// The interfaces (by name) each VIP is announced and served on; a VIP not listed is on
    /// every interface xlb serves.
    pub placement: BTreeMap<IpAddr, Vec<String>>,
    /// Which VIPs BGP advertises, and which of them get no ARP/NDP (empty without `bgp:`).
    pub announced: Announced,
}

impl Compiled {
    /// The VIPs announced on the segment (ARP/NDP, failover ownership): all but the
    /// routed-only ones.
    pub fn segment_vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.vips.iter().copied().filter(|v| !self.announced.routed_only.contains(v))
    }
}

/// Adds to `on` the interface names of `more` it does not hold yet, in their order: the
/// union of a VIP's interfaces over its services or policies.
pub fn add_interfaces<S: AsRef<str>>(on: &mut Vec<String>, more: impl IntoIterator<Item = S>) {
    for i in more {
        let i = i.as_ref();
        if !on.iter().any(|x| x == i) {
            on.push(i.to_string());
        }
    }
}

/// The IPAM holder of an explicitly requested VIP: the address itself, so that services
/// sharing it (on different ports) share one assignment.
fn holder_of(name: &str, req: &Request) -> String {
    match req {
        Request::Address(a) => format!("vip {a}"),
        _ => format!("service {name}"),
    }
}

/// Compiles `desired` with `ipam` (updated in place; on error the caller drops its copy).
/// Every configured backend is in the specs: health is applied where snapshots are built.
pub fn compile(desired: &Desired, ipam: &mut Ipam) -> Result<Compiled, ConfigErrors> {
    let mut errors = Vec::new();
    ipam.set_pools(desired.pools.clone());
    let mut vip_of: HashMap<&str, IpAddr> = HashMap::new();
    // Explicit addresses first, so that no automatic allocation takes one a service names.
    let explicit_first = desired
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.request, Request::Address(_)))
        .chain(desired.services.iter().enumerate().filter(|(_, s)| !matches!(s.request, Request::Address(_))));
    for (i, s) in explicit_first {
        // Without pools there is nothing to manage: every service names its VIP.
        if desired.pools.is_empty() {
            match s.request {
                Request::Address(a) => {
                    vip_of.insert(&s.name, a);
                }
                _ => errors.push(ConfigError {
                    path: format!("services[{i}]"),
                    message: "no pools are configured: give the service a vip, or add a pool".into(),
                }),
            }
            continue;
        }
        let holder = holder_of(&s.name, &s.request);
        match ipam.request(&holder, &s.request) {
            Ok(a) => {
                vip_of.insert(&s.name, a);
            }
            Err(e) => {
                let field = match s.request {
                    Request::Address(_) | Request::Keep(_) => "vip",
                    Request::Pool { .. } => "pool",
                    Request::Any { .. } | Request::AnyOf { .. } => "ipFamily",
                };
                errors.push(ConfigError { path: format!("services[{i}].{field}"), message: e.to_string() });
            }
        }
    }
    // Whatever is no longer asked for goes back to its pool.
    let wanted: HashSet<String> = desired.services.iter().map(|s| holder_of(&s.name, &s.request)).collect();
    let holders: Vec<String> = ipam.holders().map(str::to_string).collect();
    for h in holders {
        if !wanted.contains(&h) {
            ipam.release(&h);
        } else {
            let keep: Vec<IpAddr> = desired
                .services
                .iter()
                .filter(|s| holder_of(&s.name, &s.request) == h)
                .filter_map(|s| vip_of.get(s.name.as_str()).copied())
                .collect();
            ipam.retain(&h, &keep);
        }
    }

    // A backend that is a VIP of this box would send the traffic back to xlb, forever.
    let by_vip: HashMap<IpAddr, &str> = vip_of.iter().map(|(n, v)| (*v, *n)).collect();
    for (i, s) in desired.services.iter().enumerate() {
        for (j, (b, _)) in s.backends.iter().enumerate() {
            if let Some(owner) = by_vip.get(b) {
                errors.push(ConfigError {
                    path: format!("services[{i}].backends[{j}].address"),
                    message: format!(
                        "{b} is the VIP of service {owner:?}: its traffic would loop back to xlb; give the address of a host that serves it"
                    ),
                });
            }
        }
    }
    let mut out = Compiled::default();
    let mut taken: HashMap<ServiceKey, &str> = HashMap::new();
    for (i, s) in desired.services.iter().enumerate() {
        let Some(&vip) = vip_of.get(s.name.as_str()) else { continue };
        // An allocated VIP's family must match the backends'.
        if let Some((j, (b, _))) = s.backends.iter().enumerate().find(|(_, (b, _))| b.is_ipv6() != vip.is_ipv6()) {
            errors.push(ConfigError {
                path: format!("services[{i}].backends[{j}].address"),
                message: format!("{b} is not of the family of the service's VIP {vip}"),
            });
            continue;
        }
        // A VIP is on the interfaces its services name; on every one if one of them names
        // none (an earlier one did when the VIP is known but not placed).
        let everywhere = s.interfaces.is_empty() || (out.vips.contains(&vip) && !out.placement.contains_key(&vip));
        if everywhere {
            out.placement.remove(&vip);
        } else {
            add_interfaces(out.placement.entry(vip).or_default(), &s.interfaces);
        }
        if !out.vips.contains(&vip) {
            out.vips.push(vip);
        }
        out.assignments.push((s.name.clone(), vip));
        for (j, p) in s.ports.iter().enumerate() {
            let key = ServiceKey { vip, port: p.port, proto: p.proto };
            if let Some(other) = taken.insert(key, &s.name) {
                errors.push(ConfigError {
                    path: format!("services[{i}].ports[{j}]"),
                    message: format!(
                        "{} port {} on {vip} is already used by service {other:?}",
                        proto_name(p.proto),
                        p.port
                    ),
                });
                continue;
            }
            let backends = s.backends.iter().map(|(a, w)| (*a, p.target_port, *w)).collect();
            out.specs.push(ServiceSpec {
                name: format!("{}/{}:{}", s.name, proto_name(p.proto), p.port),
                key,
                backends,
                mode: s.mode,
                table_size: s.table_size,
                affinity: s.affinity,
                source_ranges: s.source_ranges.clone(),
            });
        }
        if let Some(h) = &s.health {
            let port = h.port.or_else(|| s.ports.first().map(|p| p.target_port)).unwrap_or(80);
            for (a, _) in &s.backends {
                out.health.push(HealthTarget { service: s.name.clone(), addr: *a, port, check: h.clone() });
            }
        }
    }
    if let Some(bgp) = &desired.bgp {
        out.announced = routed(bgp, desired, &out.assignments);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The VIPs `bgp`'s advertisements select (by their services' names and the pools the VIPs
/// are drawn from or lie in), and those of them no advertisement also puts on the segment.
fn routed(bgp: &BgpConfig, desired: &Desired, assignments: &[(String, IpAddr)]) -> Announced {
    let mut how = Announced::default();
    let mut l2: BTreeSet<IpAddr> = BTreeSet::new();
    let drawn_from: HashMap<&str, &str> = desired
        .services
        .iter()
        .filter_map(|s| match &s.request {
            Request::Pool { name, .. } => Some((s.name.as_str(), name.as_str())),
            _ => None,
        })
        .collect();
    for (name, vip) in assignments {
        let pool = drawn_from.get(name.as_str()).copied();
        let pool = pool.or_else(|| desired.pools.iter().find(|p| p.covers(*vip)).map(|p| p.name.as_str()));
        let mut selected = false;
        for a in bgp.advertisements.iter().filter(|a| a.selects(name, pool)) {
            selected = true;
            crate::control::bgp::add_advert(how.routes.entry(*vip).or_default(), a.id);
            if a.l2 {
                l2.insert(*vip);
            }
        }
        // A VIP shared by services: on the segment if any of them is not routed only.
        if !selected {
            l2.insert(*vip);
        }
    }
    how.routed_only = how.routes.keys().filter(|v| !l2.contains(v)).copied().collect();
    how
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::parse;

    const BASE: &str = r#"
interfaces: [{name: eth0}]
pools:
  - name: public
    blocks: [{cidr: 192.0.2.0/29}]
services:
  - name: web
    pool: public
    ports: [{port: 80, targetPort: 8080}, {port: 443}]
    backends: [{address: 10.0.0.1}, {address: 10.0.0.2, weight: 0}]
    healthCheck: {type: tcp}
  - name: dns
    vip: 192.0.2.1
    ports: [{port: 53, protocol: UDP}]
    backends: [{address: 10.0.0.3}]
  - name: dns-tcp
    vip: 192.0.2.1
    ports: [{port: 53}]
    backends: [{address: 10.0.0.3}]
"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn services_get_vips_ports_and_backends() {
        let d = parse(BASE).unwrap();
        let mut ipam = Ipam::default();
        let c = compile(&d, &mut ipam).unwrap();
        // The explicit address is kept for dns; web gets the next free one; dns-tcp shares.
        assert_eq!(
            c.assignments,
            vec![("web".into(), ip("192.0.2.2")), ("dns".into(), ip("192.0.2.1")), ("dns-tcp".into(), ip("192.0.2.1"))]
        );
        assert_eq!(c.vips, vec![ip("192.0.2.2"), ip("192.0.2.1")]);
        let names: Vec<&str> = c.specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web/tcp:80", "web/tcp:443", "dns/udp:53", "dns-tcp/tcp:53"]);
        assert_eq!(c.specs[0].backends, vec![(ip("10.0.0.1"), 8080, 1), (ip("10.0.0.2"), 8080, 0)]);
        assert_eq!(c.health.len(), 2);
        assert_eq!(c.health[0].port, 8080);

        // Compiling again keeps every address.
        let c2 = compile(&d, &mut ipam).unwrap();
        assert_eq!(c2, c);
    }

    #[test]
    fn vip_outside_every_pool_and_taken_addresses_are_refused() {
        let outside = BASE.replacen(
            "vip: 192.0.2.1\n    ports: [{port: 53, protocol: UDP}]",
            "vip: 198.51.100.9\n    ports: [{port: 53, protocol: UDP}]",
            1,
        );
        let e = compile(&parse(&outside).unwrap(), &mut Ipam::default()).unwrap_err().to_string();
        assert!(e.contains("services[1].vip: 198.51.100.9 is in no pool"), "{e}");
        // web first takes .1 by pool; then an explicit .1 on a later reload is refused.
        let mut ipam = Ipam::default();
        let only_web = BASE.split("  - name: dns\n").next().unwrap().to_string();
        let c = compile(&parse(&only_web).unwrap(), &mut ipam).unwrap();
        assert_eq!(c.assignments[0].1, ip("192.0.2.1"));
        let e = compile(&parse(BASE).unwrap(), &mut ipam.clone()).unwrap_err().to_string();
        assert!(e.contains("services[1].vip: 192.0.2.1 is already assigned to service web"), "{e}");
    }

    #[test]
    fn without_pools_services_name_their_vips() {
        let no_pools = BASE.replacen("pools:\n  - name: public\n    blocks: [{cidr: 192.0.2.0/29}]\n", "", 1);
        let any = no_pools.replacen("    pool: public\n", "", 1);
        let e = compile(&parse(&any).unwrap(), &mut Ipam::default()).unwrap_err().to_string();
        assert!(e.contains("services[0]: no pools are configured"), "{e}");
        let fixed = no_pools.replacen("    pool: public\n", "    vip: 198.51.100.7\n", 1);
        let c = compile(&parse(&fixed).unwrap(), &mut Ipam::default()).unwrap();
        assert_eq!(c.assignments[0], ("web".to_string(), ip("198.51.100.7")));
    }

    #[test]
    fn removed_services_give_their_addresses_back() {
        let mut ipam = Ipam::default();
        compile(&parse(BASE).unwrap(), &mut ipam).unwrap();
        assert_eq!(ipam.assignments().count(), 2);
        let only_dns = BASE.replacen("  - name: web\n    pool: public\n    ports: [{port: 80, targetPort: 8080}, {port: 443}]\n    backends: [{address: 10.0.0.1}, {address: 10.0.0.2, weight: 0}]\n    healthCheck: {type: tcp}\n", "", 1);
        compile(&parse(&only_dns).unwrap(), &mut ipam).unwrap();
        assert_eq!(ipam.assignments().map(|(a, _)| a).collect::<Vec<_>>(), vec![ip("192.0.2.1")]);
    }
}

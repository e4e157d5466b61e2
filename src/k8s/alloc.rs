//! LoadBalancer IPAM for Kubernetes, pure: from Services and pools (as read from the API) to
//! the addresses each Service gets, or why it gets none. The allocator (one writer in the
//! cluster, see `controller`) runs this on every change and writes the outcome to the
//! Services' status; every other part of xlb reads addresses from that status.
//!
//! Rules on top of the shared IPAM (`control::ipam`):
//! - Addresses already in a Service's status are claimed first (oldest Service first), so a
//!   restarted allocator, or a new one, adopts what is there and changes nothing.
//! - Requested addresses come from `lbipam.cilium.io/ips`, `metallb.io/loadBalancerIPs`,
//!   `metallb.universe.tf/loadBalancerIPs` or `spec.loadBalancerIP`, in that order.
//! - A pool serves a Service only if its `serviceSelector` matches the Service's labels.
//! - Services with the same sharing key (`lbipam.cilium.io/sharing-key`,
//!   `metallb.universe.tf/allow-shared-ip`) share one address per family, as long as no port
//!   (protocol and number) is used by two of them; the one that would clash gets nothing.
//! - One address per family in `spec.ipFamilies` (IPv4 when empty).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::control::ipam::{Ipam, Pool, Request};

/// Annotations that request addresses, in the order they are read.
pub const IP_ANNOTATIONS: [&str; 3] =
    ["lbipam.cilium.io/ips", "metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"];
/// Annotations that name a sharing key.
pub const SHARING_ANNOTATIONS: [&str; 2] = ["lbipam.cilium.io/sharing-key", "metallb.universe.tf/allow-shared-ip"];

/// Whether `labels` match `sel` (none matches everything). Unknown operators match nothing.
pub fn selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else { return true };
    if let Some(m) = &sel.match_labels {
        if m.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or(&[]);
        let have = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A pool as the allocator sees it.
#[derive(Debug, Clone)]
pub struct PoolView {
    /// The pool (name, blocks, flags).
    pub pool: Pool,
    /// Which Services it serves.
    pub selector: Option<LabelSelector>,
}

/// A Service as the allocator sees it.
#[derive(Debug, Clone, Default)]
pub struct SvcView {
    /// `namespace/name`.
    pub key: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Addresses it asks for (from annotations or `spec.loadBalancerIP`).
    pub requested: Vec<IpAddr>,
    /// A request that does not parse, said as the reason it gets nothing.
    pub bad_request: Option<String>,
    /// Families wanted, in order (`true`: IPv6).
    pub families: Vec<bool>,
    /// Sharing key.
    pub sharing: Option<String>,
    /// (protocol, port) of each of its ports.
    pub ports: Vec<(u8, u16)>,
    /// Addresses in its status now.
    pub current: Vec<IpAddr>,
    /// Creation time (RFC 3339; older first when adopting).
    pub created: String,
}

impl SvcView {
    fn holder(&self) -> String {
        match &self.sharing {
            Some(k) => format!("share {k}"),
            None => format!("service {}", self.key),
        }
    }
}

/// What a Service gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `namespace/name`.
    pub key: String,
    /// Its addresses (one per family, in the order of `families`), or why none.
    pub result: Result<Vec<IpAddr>, String>,
}

/// Ports in use on each address: ((protocol, port), the Service using it).
type PortsOn = HashMap<IpAddr, Vec<((u8, u16), String)>>;

fn family(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// Allocates for every Service; `ipam` keeps the assignments between calls (a new allocator
/// starts from an empty one and adopts the statuses).
pub fn plan(ipam: &mut Ipam, pools: &[PoolView], services: &[SvcView]) -> Vec<Outcome> {
    ipam.set_pools(pools.iter().map(|p| p.pool.clone()).collect());
    // Services that are gone give their addresses back before anyone asks.
    let present: HashSet<String> = services.iter().map(SvcView::holder).collect();
    let gone: Vec<String> = ipam.holders().filter(|h| !present.contains(*h)).map(str::to_string).collect();
    for h in gone {
        ipam.release(&h);
    }
    let mut order: Vec<&SvcView> = services.iter().collect();
    // Those holding addresses first (adoption), then those asking for specific ones, then
    // the rest; older first within each.
    order.sort_by(|a, b| {
        (a.current.is_empty(), a.requested.is_empty(), &a.created, &a.key).cmp(&(
            b.current.is_empty(),
            b.requested.is_empty(),
            &b.created,
            &b.key,
        ))
    });
    // Ports in use per shared address, to refuse clashes.
    let mut ports_on: PortsOn = HashMap::new();
    let mut out = Vec::new();
    let mut kept: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for s in order {
        let result = allocate(ipam, pools, s, &mut ports_on);
        if let Ok(addrs) = &result {
            kept.entry(s.holder()).or_default().extend(addrs.iter().copied());
        }
        out.push(Outcome { key: s.key.clone(), result });
    }
    // What nobody asks for any more goes back to its pool.
    let holders: Vec<String> = ipam.holders().map(str::to_string).collect();
    for h in holders {
        match kept.get(&h) {
            Some(keep) => ipam.retain(&h, keep),
            None => ipam.release(&h),
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn allocate(ipam: &mut Ipam, pools: &[PoolView], s: &SvcView, ports_on: &mut PortsOn) -> Result<Vec<IpAddr>, String> {
    if let Some(bad) = &s.bad_request {
        return Err(bad.clone());
    }
    let holder = s.holder();
    let serving: Vec<&PoolView> = pools.iter().filter(|p| selects(p.selector.as_ref(), &s.labels)).collect();
    let families = if s.families.is_empty() { vec![false] } else { s.families.clone() };
    let mut got = Vec::new();
    for v6 in families {
        // A requested address of this family, else the one it holds, else any free one.
        let wanted = s.requested.iter().find(|a| a.is_ipv6() == v6).copied();
        let current = s.current.iter().find(|a| a.is_ipv6() == v6).copied();
        let addr = match wanted.or(if s.requested.is_empty() { current } else { None }) {
            Some(a) => {
                let Some(p) = pools.iter().find(|p| p.pool.contains(a)) else {
                    return Err(format!(
                        "{a} is in no LoadBalancerIPPool; add a pool that contains it, or request another address"
                    ));
                };
                if !selects(p.selector.as_ref(), &s.labels) {
                    return Err(format!(
                        "{a} is in pool {}, whose serviceSelector does not select this Service",
                        p.pool.name
                    ));
                }
                ipam.request(&holder, &Request::Address(a)).map_err(|e| e.to_string())?
            }
            None if !s.requested.is_empty() => {
                return Err(format!(
                    "the requested addresses include no {} address, which spec.ipFamilies asks for",
                    family(v6)
                ))
            }
            None => {
                let mut last = format!("no LoadBalancerIPPool with {} addresses selects this Service", family(v6));
                let mut found = None;
                for p in serving.iter().filter(|p| p.pool.blocks.iter().any(|b| b.start.is_ipv6() == v6)) {
                    match ipam.request(&holder, &Request::Pool { name: p.pool.name.clone(), v6 }) {
                        Ok(a) => {
                            found = Some(a);
                            break;
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                found.ok_or(last)?
            }
        };
        got.push(addr);
    }
    // Sharing: no port twice on one address.
    for a in &got {
        let used = ports_on.entry(*a).or_default();
        if let Some((p, other)) = used.iter().find(|(p, other)| s.ports.contains(p) && *other != s.key) {
            let proto = crate::control::config::proto_name(p.0);
            return Err(format!("{proto} port {} on {a} is already used by {other}, which shares it", p.1));
        }
    }
    for a in &got {
        ports_on.entry(*a).or_default().extend(s.ports.iter().map(|p| (*p, s.key.clone())));
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ipam::Block;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn pool(name: &str, cidr: &str) -> PoolView {
        let net: ipnet::IpNet = cidr.parse().unwrap_or_else(|_| "0.0.0.0/32".parse().unwrap_or_default());
        PoolView {
            pool: Pool { name: name.into(), blocks: vec![Block::cidr(net)], allow_first_last: false, disabled: false },
            selector: None,
        }
    }

    fn svc(key: &str, ports: &[u16]) -> SvcView {
        SvcView {
            key: key.into(),
            ports: ports.iter().map(|p| (6, *p)).collect(),
            created: "2026-01-01T00:00:00Z".into(),
            ..SvcView::default()
        }
    }

    #[test]
    fn requests_sharing_and_release() {
        let pools = [pool("a", "192.0.2.0/29")];
        let mut ipam = Ipam::default();
        let mut a = svc("ns/a", &[80]);
        a.requested = vec![ip("192.0.2.3")];
        let mut b = svc("ns/b", &[80]);
        b.requested = vec![ip("192.0.2.3")];
        let c = svc("ns/c", &[80]);
        let out = plan(&mut ipam, &pools, &[a.clone(), b.clone(), c.clone()]);
        assert_eq!(out[0].result, Ok(vec![ip("192.0.2.3")]));
        assert!(out[1].result.as_ref().is_err_and(|e| e.contains("already assigned")), "{out:?}");
        assert_eq!(out[2].result, Ok(vec![ip("192.0.2.1")]));
        // A sharing key with distinct ports shares; a clashing port does not.
        let (mut d, mut e, mut f) = (svc("ns/d", &[53]), svc("ns/e", &[443]), svc("ns/f", &[53]));
        for s in [&mut d, &mut e, &mut f] {
            s.sharing = Some("k".into());
        }
        let out = plan(&mut ipam, &pools, &[a.clone(), c.clone(), d, e, f.clone()]);
        let by: HashMap<_, _> = out.iter().map(|o| (o.key.as_str(), o.result.clone())).collect();
        assert_eq!(by["ns/d"], by["ns/e"]);
        assert!(by["ns/f"].as_ref().is_err_and(|e| e.contains("tcp port 53")), "{by:?}");
        // Deleting a frees its address for b.
        let out = plan(&mut ipam, &pools, &[b, c]);
        assert_eq!(out[0].result, Ok(vec![ip("192.0.2.3")]));
    }

    #[test]
    fn adopts_status_and_honours_selectors_and_families() {
        let mut p6 = pool("six", "2001:db8::/124");
        p6.selector = Some(LabelSelector {
            match_labels: Some([("team".to_string(), "x".to_string())].into()),
            ..LabelSelector::default()
        });
        let pools = [pool("a", "192.0.2.0/29"), p6];
        // A fresh allocator: the Service holding .5 keeps it, the new one gets the lowest.
        let mut held = svc("ns/held", &[80]);
        held.current = vec![ip("192.0.2.5")];
        held.created = "2026-06-01T00:00:00Z".into();
        let out = plan(&mut Ipam::default(), &pools, &[svc("ns/new", &[80]), held]);
        assert_eq!(out[0].result, Ok(vec![ip("192.0.2.5")]));
        assert_eq!(out[1].result, Ok(vec![ip("192.0.2.1")]));
        // Dual stack needs a pool of each family that selects the Service.
        let mut ds = svc("ns/ds", &[80]);
        ds.families = vec![false, true];
        let out = plan(&mut Ipam::default(), &pools, std::slice::from_ref(&ds));
        assert!(out[0].result.as_ref().is_err_and(|e| e.contains("IPv6")), "{out:?}");
        ds.labels.insert("team".into(), "x".into());
        let out = plan(&mut Ipam::default(), &pools, &[ds]);
        assert_eq!(out[0].result, Ok(vec![ip("192.0.2.1"), ip("2001:db8::1")]));
    }
}

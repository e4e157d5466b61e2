//! Pool objects of every kind xlb serves, as the allocator takes them: xlb's
//! `LoadBalancerIPPool`, Cilium's `CiliumLoadBalancerIPPool` (read as xlb's, same fields) and
//! MetalLB's `IPAddressPool` (with MetalLB's rules: network and broadcast addresses given,
//! `avoidBuggyIPs`, `autoAssign`, `serviceAllocation`).

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    api::{ApiResource, DynamicObject},
    ResourceExt as _,
};

use super::{
    alloc::{selects, Allocation, PoolView},
    crds::{LoadBalancerIPPool, LoadBalancerIPPoolSpec, LoadBalancerIPPoolStatus, YesNo},
    foreign::{read_as, spec_of, IpAddressPoolSpec, CILIUM_POOL, METALLB_POOL},
};
use crate::control::ipam::{Block, Pool};

/// Which kind a pool object is, with the API resource of a foreign one.
#[derive(Debug, Clone)]
pub enum Origin {
    /// xlb's `LoadBalancerIPPool`.
    Xlb,
    /// Cilium's `CiliumLoadBalancerIPPool` (the version the cluster prefers).
    Cilium(ApiResource),
    /// MetalLB's `IPAddressPool`.
    MetalLb(ApiResource),
}

/// A pool's spec, in its project's terms.
#[derive(Debug, Clone)]
pub enum Spec {
    /// xlb's and Cilium's.
    Blocks(LoadBalancerIPPoolSpec),
    /// MetalLB's.
    MetalLb(IpAddressPoolSpec),
}

/// A pool object of any kind.
#[derive(Debug, Clone)]
pub struct PoolObj {
    /// Its metadata.
    pub meta: ObjectMeta,
    /// Its spec, or why it could not be read.
    pub spec: Result<Spec, String>,
    /// Its status as read (xlb's and Cilium's; MetalLB's is not read).
    pub status: LoadBalancerIPPoolStatus,
    /// Its kind.
    pub origin: Origin,
}

impl PoolObj {
    /// One of xlb's pools.
    pub fn xlb(p: &LoadBalancerIPPool) -> Self {
        PoolObj {
            meta: p.metadata.clone(),
            spec: Ok(Spec::Blocks(p.spec.clone())),
            status: p.status.clone().unwrap_or_default(),
            origin: Origin::Xlb,
        }
    }

    /// One of Cilium's pools.
    pub fn cilium(obj: &DynamicObject, ar: &ApiResource) -> Self {
        let read = read_as::<LoadBalancerIPPool>(obj);
        PoolObj {
            meta: obj.metadata.clone(),
            status: read.as_ref().ok().and_then(|p| p.status.clone()).unwrap_or_default(),
            spec: read.map(|p| Spec::Blocks(p.spec)).map_err(|e| format!("the object does not read as a pool: {e}")),
            origin: Origin::Cilium(ar.clone()),
        }
    }

    /// One of MetalLB's pools.
    pub fn metallb(obj: &DynamicObject, ar: &ApiResource) -> Self {
        PoolObj {
            meta: obj.metadata.clone(),
            spec: spec_of::<IpAddressPoolSpec>(obj).map(Spec::MetalLb),
            status: LoadBalancerIPPoolStatus::default(),
            origin: Origin::MetalLb(ar.clone()),
        }
    }

    /// Its object's name.
    pub fn name(&self) -> String {
        self.meta.name.clone().unwrap_or_default()
    }

    /// Its name in IPAM and in messages: foreign ones are named with their kind, so that
    /// pools of one name and several kinds stay several pools.
    pub fn ipam_name(&self) -> String {
        match self.origin {
            Origin::Xlb => self.name(),
            Origin::Cilium(_) => format!("{}/{}", CILIUM_POOL.kind, self.name()),
            Origin::MetalLb(_) => {
                let ns = self.meta.namespace.clone().unwrap_or_default();
                format!("{}/{ns}/{}", METALLB_POOL.kind, self.name())
            }
        }
    }

    /// The pool as the allocator takes it, or why it cannot (`namespaces`: to resolve
    /// MetalLB's namespace selectors).
    pub fn view(&self, namespaces: &[Arc<Namespace>]) -> Result<PoolView, String> {
        let view = match self.spec.as_ref().map_err(Clone::clone)? {
            Spec::Blocks(spec) => pool_view(self.ipam_name(), spec)?,
            Spec::MetalLb(spec) => metallb_view(self.ipam_name(), spec, namespaces)?,
        };
        Ok(PoolView { name: self.name(), ..view })
    }
}

/// A pool as IPAM takes it (named `name` there), or why its blocks are invalid.
pub fn pool_view(name: String, spec: &LoadBalancerIPPoolSpec) -> Result<PoolView, String> {
    let mut blocks = Vec::new();
    let listed = spec.blocks.iter().enumerate().map(|(i, b)| ("blocks", i, b));
    for (field, i, b) in listed.chain(spec.cidrs.iter().enumerate().map(|(i, b)| ("cidrs", i, b))) {
        let ip = |what: &str, a: &str| {
            a.parse::<IpAddr>().map_err(|_| format!("{field}[{i}].{what}: {a:?} is not an IP address"))
        };
        let block = match (&b.cidr, &b.start, &b.stop) {
            (Some(c), None, None) => Block::cidr(
                c.parse().map_err(|_| format!("{field}[{i}].cidr: {c:?} is not a CIDR (e.g. 192.0.2.0/28)"))?,
            ),
            // A start alone is one address, as in Cilium.
            (None, Some(a), None) => {
                let start = ip("start", a)?;
                Block { start, stop: start, cidr: false }
            }
            (None, Some(a), Some(z)) => {
                let (start, stop) = (ip("start", a)?, ip("stop", z)?);
                if start.is_ipv6() != stop.is_ipv6() || stop < start {
                    return Err(format!("{field}[{i}]: stop {stop} must be of start's family and not before {start}"));
                }
                Block { start, stop, cidr: false }
            }
            _ => return Err(format!("{field}[{i}]: give either cidr, or start (and stop for a range)")),
        };
        blocks.push(block);
    }
    if blocks.is_empty() {
        return Err("the pool has no addresses: give blocks (each a cidr, or a start and a stop)".into());
    }
    Ok(PoolView {
        pool: Pool {
            name,
            blocks,
            allow_first_last: spec.allow_first_last_ips != Some(YesNo::No),
            disabled: spec.disabled,
            ..Pool::default()
        },
        selector: spec.service_selector.clone(),
        ..PoolView::default()
    })
}

/// A MetalLB pool as IPAM takes it (named `name` there), or why it is invalid. As MetalLB's
/// config parsing (internal/config/config.go at metallb/metallb 7938d3f): each address is a
/// CIDR (a bare address is not one) or `a-b`; none at all is an error.
pub fn metallb_view(name: String, spec: &IpAddressPoolSpec, namespaces: &[Arc<Namespace>]) -> Result<PoolView, String> {
    let mut blocks = Vec::new();
    for (i, raw) in spec.addresses.iter().enumerate() {
        let block = match raw.split_once('-') {
            Some((a, z)) => {
                let parse = |x: &str| {
                    x.trim().parse::<IpAddr>().map_err(|_| format!("addresses[{i}]: {x:?} is not an IP address"))
                };
                let (start, stop) = (parse(a)?, parse(z)?);
                if start.is_ipv6() != stop.is_ipv6() || stop < start {
                    return Err(format!("addresses[{i}]: {stop} must be of {start}'s family and not before it"));
                }
                Block { start, stop, cidr: false }
            }
            None => Block::cidr(raw.trim().parse::<ipnet::IpNet>().map_err(|_| {
                format!(
                    "addresses[{i}]: {raw:?} is neither a CIDR nor a range a-b (one address: give it as /32 or /128)"
                )
            })?),
        };
        blocks.push(block);
    }
    if blocks.is_empty() {
        return Err("the pool has no addresses: give addresses (CIDRs or ranges a-b)".into());
    }
    let allocation = spec.service_allocation.as_ref().map(|a| {
        let mut names = a.namespaces.clone();
        let none = BTreeMap::new();
        for ns in namespaces {
            let labels = ns.metadata.labels.as_ref().unwrap_or(&none);
            if a.namespace_selectors.iter().any(|sel| selects(Some(sel), labels)) {
                names.push(ns.name_any());
            }
        }
        // Selectors that select no namespace leave a pool MetalLB indexes nowhere: it serves
        // no Service by itself. An empty list here would mean "any", so name none instead.
        if names.is_empty() && !a.namespace_selectors.is_empty() {
            names.push(String::new());
        }
        Allocation { priority: a.priority, namespaces: names, selectors: a.service_selectors.clone() }
    });
    Ok(PoolView {
        pool: Pool { name, blocks, allow_first_last: true, avoid_buggy: spec.avoid_buggy_ips, ..Pool::default() },
        manual: spec.auto_assign == Some(false),
        allocation,
        ..PoolView::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> LoadBalancerIPPoolSpec {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0; 4]))
    }

    /// Cilium `ipRangeFromBlock` / `handleNewPool`: start alone is one address; v2alpha1's
    /// `cidrs` are more blocks; allowFirstLastIPs reserves only when "No".
    #[test]
    fn pools_read_blocks_as_cilium_does() {
        let v = pool_view(
            "p".into(),
            &spec(json!({"blocks": [{"start": "192.0.2.7"}], "cidrs": [{"cidr": "10.0.0.0/30"}]})),
        );
        let p = v.unwrap_or_else(|e| panic!("{e}")).pool;
        assert_eq!(p.size(), 1 + 4);
        assert!(p.contains(ip("192.0.2.7")));
        assert!(p.allow_first_last);
        let no = pool_view("p".into(), &spec(json!({"blocks": [{"cidr": "10.0.0.0/30"}], "allowFirstLastIPs": "No"})));
        assert_eq!(no.map(|v| v.pool.size()), Ok(2));
        let empty = pool_view("p".into(), &spec(json!({"blocks": []})));
        assert!(empty.is_err_and(|e| e.contains("give blocks")));
        let bad = pool_view("p".into(), &spec(json!({"blocks": [{"stop": "192.0.2.7"}]})));
        assert!(bad.is_err_and(|e| e.contains("blocks[0]")));
    }

    /// MetalLB's config parsing (internal/config/config.go) and allocator
    /// (`isPoolCompatibleWithService`, `sortPools`) at metallb/metallb 7938d3f.
    #[test]
    fn metallb_pools_read_as_metallb_does() {
        let ns = |name: &str, team: &str| {
            Arc::new(Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    labels: Some([("team".to_string(), team.to_string())].into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            })
        };
        let spaces = [ns("shop", "a"), ns("blog", "b")];
        let m = |v: serde_json::Value| {
            let spec: IpAddressPoolSpec = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
            metallb_view("m".into(), &spec, &spaces)
        };
        // Seed 004's pool: a range, avoidBuggyIPs; network and broadcast of a CIDR are given.
        let v = m(json!({"addresses": ["192.168.1.100-192.168.1.200", "10.0.0.0/30"], "autoAssign": true, "avoidBuggyIPs": true}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.pool.size(), 101 + 3, "10.0.0.0 ends in .0");
        assert!(!v.pool.contains(ip("10.0.0.0")) && !v.manual && v.allocation.is_none());
        assert!(m(json!({"addresses": ["10.0.0.1"]})).is_err_and(|e| e.contains("/32")));
        assert!(m(json!({"addresses": []})).is_err_and(|e| e.contains("no addresses")));
        assert!(m(json!({"addresses": ["10.0.0.9-10.0.0.1"]})).is_err_and(|e| e.contains("addresses[0]")));
        let manual = m(json!({"addresses": ["10.0.0.0/30"], "autoAssign": false})).unwrap_or_else(|e| panic!("{e}"));
        assert!(manual.manual && manual.pool.contains(ip("10.0.0.0")) && manual.pool.contains(ip("10.0.0.3")));
        // serviceAllocation: namespace selectors resolved to names.
        let pinned =
            m(json!({"addresses": ["10.0.0.0/30"], "serviceAllocation": {"priority": 5, "namespaces": ["ops"],
                              "namespaceSelectors": [{"matchLabels": {"team": "a"}}]}}))
            .unwrap_or_else(|e| panic!("{e}"));
        let a = pinned.allocation.unwrap_or_default();
        assert_eq!((a.priority, a.namespaces), (Some(5), vec!["ops".to_string(), "shop".to_string()]));
        let nobody = m(json!({"addresses": ["10.0.0.0/30"], "serviceAllocation": {"namespaceSelectors": [{"matchLabels": {"team": "z"}}]}}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nobody.allocation.map(|a| a.namespaces), Some(vec![String::new()]));
    }
}

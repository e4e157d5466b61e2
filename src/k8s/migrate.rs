//! `xlb migrate`: Cilium's and MetalLB's pool and announcement objects written as xlb's own
//! kinds, with what xlb's kinds cannot say listed beside each object. xlb serves the foreign
//! kinds as they are; this is for those who would rather keep `xlb.dev` objects in Git. Pure:
//! objects in, YAML out (the CLI reads them from files or from the cluster).

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::DynamicObject;

use super::{
    alloc::NAMESPACE_LABEL,
    cilium_bgp::CILIUM_BGP_POLICY,
    crds::{IpBlock, L2AnnouncementPolicy, LoadBalancerIPPool, LoadBalancerIPPoolSpec, YesNo},
    foreign::{
        read_as, spec_of, IpAddressPoolSpec, L2AdvertisementSpec, CILIUM_L2, CILIUM_POOL, METALLB_L2, METALLB_POOL,
        UNSERVED,
    },
    pools::metallb_view,
};

/// One object read, and what it becomes.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    /// `Kind namespace/name` of the object read.
    pub from: String,
    /// The xlb objects it becomes (none: it cannot be written as one).
    pub objects: Vec<serde_json::Value>,
    /// What of it xlb's kinds cannot say.
    pub lost: Vec<String>,
}

/// At most this many blocks stand for a pool with `avoidBuggyIPs` (each /24 splits in one).
const MAX_SPLIT_BLOCKS: usize = 256;

fn kind_of(obj: &DynamicObject) -> &str {
    obj.types.as_ref().map_or("", |t| t.kind.as_str())
}

/// `obj` as xlb's kinds.
pub fn convert(obj: &DynamicObject) -> Converted {
    let kind = kind_of(obj);
    let name = obj.metadata.name.clone().unwrap_or_default();
    let ns = obj.metadata.namespace.clone().map(|n| format!("{n}/")).unwrap_or_default();
    let mut out = Converted { from: format!("{kind} {ns}{name}"), ..Converted::default() };
    let result = match kind {
        k if k == CILIUM_POOL.kind => cilium_pool(obj, &mut out),
        k if k == CILIUM_L2.kind => cilium_l2(obj, &mut out),
        k if k == METALLB_POOL.kind => metallb_pool(obj, &mut out),
        k if k == METALLB_L2.kind => metallb_l2(obj, &mut out),
        k if k == CILIUM_BGP_POLICY.kind => cilium_bgp_policy(obj, &mut out),
        k => {
            let why = match UNSERVED.iter().find(|(_, u, _)| *u == k) {
                Some((_, _, hint)) => format!("{k} has no xlb equivalent yet: {hint}"),
                None => format!("{k} is not a pool or announcement kind of Cilium or MetalLB; left out"),
            };
            Err(why)
        }
    };
    if let Err(e) = result {
        out.objects.clear();
        out.lost.push(e);
    }
    out
}

fn json<K: serde::Serialize>(k: &K) -> Result<serde_json::Value, String> {
    serde_json::to_value(k).map_err(|e| e.to_string())
}

fn cilium_pool(obj: &DynamicObject, out: &mut Converted) -> Result<(), String> {
    let p: LoadBalancerIPPool = read_as(obj)?;
    let mut spec = p.spec;
    // Cilium's v2alpha1 `cidrs` come first, as Cilium merges them.
    let mut blocks = std::mem::take(&mut spec.cidrs);
    blocks.append(&mut spec.blocks);
    spec.blocks = blocks;
    out.objects.push(json(&LoadBalancerIPPool::new(&p.metadata.name.unwrap_or_default(), spec))?);
    Ok(())
}

fn cilium_l2(obj: &DynamicObject, out: &mut Converted) -> Result<(), String> {
    let p: L2AnnouncementPolicy = read_as(obj)?;
    let mut spec = p.spec;
    // xlb matches the whole interface name; Cilium matches anywhere in it.
    spec.interfaces = spec.interfaces.iter().map(|re| format!(".*(?:{re}).*")).collect();
    out.objects.push(json(&L2AnnouncementPolicy::new(&p.metadata.name.unwrap_or_default(), spec))?);
    Ok(())
}

/// A peering policy as xlb's BGPPeers (one per neighbour) and BGPAdvertisements (one per
/// virtual router with a service selector).
fn cilium_bgp_policy(obj: &DynamicObject, out: &mut Converted) -> Result<(), String> {
    let read = super::cilium_bgp::read(&[std::sync::Arc::new(obj.clone())]);
    for p in &read.peers {
        out.objects.push(json(p)?);
    }
    for a in &read.advertisements {
        out.objects.push(json(a)?);
    }
    out.lost.extend(read.problems);
    Ok(())
}

fn metallb_pool(obj: &DynamicObject, out: &mut Converted) -> Result<(), String> {
    let spec: IpAddressPoolSpec = spec_of(obj)?;
    let view = metallb_view(String::new(), &spec, &[])?;
    let mut blocks: Vec<(IpAddr, IpAddr, bool)> = view.pool.blocks.iter().map(|b| (b.start, b.stop, b.cidr)).collect();
    if spec.avoid_buggy_ips {
        let split = split_buggy(&blocks);
        if split.len() <= MAX_SPLIT_BLOCKS {
            blocks = split;
        } else {
            out.lost.push(format!(
                "avoidBuggyIPs: its IPv4 addresses ending in .0 or .255 would take {} blocks to leave out; they are not left out",
                split.len()
            ));
        }
    }
    let blocks = blocks
        .into_iter()
        .map(|(start, stop, cidr)| match (cidr, ipnet::IpNet::new(start, prefix(start, stop))) {
            (true, Ok(net)) => IpBlock { cidr: Some(net.to_string()), ..IpBlock::default() },
            _ => IpBlock { start: Some(start.to_string()), stop: Some(stop.to_string()), ..IpBlock::default() },
        })
        .collect();
    if spec.auto_assign == Some(false) {
        out.lost.push(
            "autoAssign: false: xlb's pools give addresses to every Service they select; give the pool a serviceSelector that only the intended Services match".into(),
        );
    }
    let mut selector = None;
    if let Some(a) = &spec.service_allocation {
        if a.priority.is_some() {
            out.lost.push("serviceAllocation.priority: xlb tries pools in the order they were created".into());
        }
        if !a.namespace_selectors.is_empty() {
            out.lost.push(
                "serviceAllocation.namespaceSelectors: xlb's serviceSelector sees a Service's namespace by name only (io.kubernetes.service.namespace); list the namespaces".into(),
            );
        }
        let mut sel = match a.service_selectors.as_slice() {
            [] => LabelSelector::default(),
            [one] => one.clone(),
            _ => {
                out.lost.push(
                    "serviceAllocation.serviceSelectors: xlb's serviceSelector is one selector, not any of several; the first is kept".into(),
                );
                a.service_selectors[0].clone()
            }
        };
        if !a.namespaces.is_empty() {
            sel.match_expressions.get_or_insert_with(Vec::new).push(LabelSelectorRequirement {
                key: NAMESPACE_LABEL.into(),
                operator: "In".into(),
                values: Some(a.namespaces.clone()),
            });
        }
        selector = (sel != LabelSelector::default()).then_some(sel);
    }
    let name = obj.metadata.name.clone().unwrap_or_default();
    let xlb = LoadBalancerIPPoolSpec {
        blocks,
        service_selector: selector,
        allow_first_last_ips: Some(YesNo::Yes),
        ..LoadBalancerIPPoolSpec::default()
    };
    out.objects.push(json(&LoadBalancerIPPool::new(&name, xlb))?);
    Ok(())
}

/// The prefix length of a CIDR block `start..=stop`.
fn prefix(start: IpAddr, stop: IpAddr) -> u8 {
    let bits = |a: IpAddr| match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    let width: u32 = if start.is_ipv6() { 128 } else { 32 };
    let host_bits = 128 - (bits(stop) - bits(start)).leading_zeros();
    u8::try_from(width.saturating_sub(host_bits)).unwrap_or(0)
}

/// `blocks` without the IPv4 addresses ending in .0 or .255, as ranges.
fn split_buggy(blocks: &[(IpAddr, IpAddr, bool)]) -> Vec<(IpAddr, IpAddr, bool)> {
    let mut out = Vec::new();
    for &(start, stop, cidr) in blocks {
        let (IpAddr::V4(a), IpAddr::V4(z)) = (start, stop) else {
            out.push((start, stop, cidr));
            continue;
        };
        let (mut lo, hi) = (u32::from(a), u32::from(z));
        loop {
            // Skip a .0 or .255 at the start, then run to the next one or the end.
            while lo <= hi && matches!(lo % 256, 0 | 255) {
                match lo.checked_add(1) {
                    Some(n) => lo = n,
                    None => break,
                }
            }
            if lo > hi || matches!(lo % 256, 0 | 255) {
                break;
            }
            let end = hi.min(lo | 0xff).min((lo & !0xff) | 0xfe);
            out.push((IpAddr::V4(lo.into()), IpAddr::V4(end.into()), false));
            if out.len() > MAX_SPLIT_BLOCKS || end == hi {
                break;
            }
            lo = end + 1;
        }
    }
    out
}

fn metallb_l2(obj: &DynamicObject, out: &mut Converted) -> Result<(), String> {
    let spec: L2AdvertisementSpec = spec_of(obj)?;
    if !spec.ip_address_pools.is_empty() || !spec.ip_address_pool_selectors.is_empty() {
        out.lost.push(format!(
            "ipAddressPools {:?} / ipAddressPoolSelectors: xlb's policies choose Services, not pools; give the policy a serviceSelector that matches the Services of those pools",
            spec.ip_address_pools
        ));
    }
    if !spec.preferred_node_selectors.is_empty() {
        out.lost.push("preferredNodeSelectors: xlb ranks the nodes itself (rendezvous hash)".into());
    }
    let policies = spec.policies();
    if policies.len() > 1 {
        out.lost.push("several nodeSelectors or serviceSelectors (any of them): written as one policy each".into());
    }
    let name = obj.metadata.name.clone().unwrap_or_default();
    for (n, p) in policies.iter().enumerate() {
        let policy_name = if policies.len() > 1 { format!("{name}-{n}") } else { name.clone() };
        out.objects.push(json(&L2AnnouncementPolicy::new(&policy_name, p.clone()))?);
    }
    Ok(())
}

/// The converted objects as one YAML stream, each preceded by where it came from and what
/// it could not say.
pub fn render(all: &[Converted]) -> Result<String, String> {
    let mut s = String::from(
        "# xlb migrate: Cilium's and MetalLB's objects as xlb's kinds (xlb also serves the originals as they are).\n",
    );
    for c in all {
        s.push_str(&format!("\n# from {}\n", c.from));
        for l in &c.lost {
            s.push_str(&format!("# not expressible: {l}\n"));
        }
        for o in &c.objects {
            s.push_str("---\n");
            s.push_str(&serde_saphyr::to_string(o).map_err(|e| e.to_string())?);
            if !s.ends_with('\n') {
                s.push('\n');
            }
        }
    }
    Ok(s)
}

/// Objects read from YAML text (several documents); those that are not Kubernetes objects
/// are said as errors with their position.
pub fn read_yaml(text: &str) -> Result<Vec<DynamicObject>, String> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    docs.into_iter()
        .filter(|d| !d.is_null())
        .enumerate()
        .map(|(i, d)| {
            let o: DynamicObject =
                serde_json::from_value(d).map_err(|e| format!("document {}: not a Kubernetes object: {e}", i + 1))?;
            match &o.types {
                Some(_) => Ok(o),
                None => Err(format!("document {}: not a Kubernetes object: give apiVersion and kind", i + 1)),
            }
        })
        .collect()
}

/// The kinds `migrate` reads from the cluster: (group, kind).
pub fn kinds() -> Vec<(&'static str, &'static str)> {
    let mut k: Vec<(&str, &str)> = [CILIUM_POOL, CILIUM_L2, METALLB_POOL, METALLB_L2, CILIUM_BGP_POLICY]
        .iter()
        .map(|k| (k.group, k.kind))
        .collect();
    k.extend(UNSERVED.iter().map(|(g, kind, _)| (*g, *kind)));
    k
}

/// Reads the objects of `kinds()` from the cluster (kinds it lacks are skipped).
pub async fn read_cluster(client: &kube::Client) -> Result<Vec<DynamicObject>, kube::Error> {
    let mut out = Vec::new();
    let kinds = kinds();
    let mut groups: Vec<&str> = kinds.iter().map(|(g, _)| *g).collect();
    // Each group once: its kinds are all listed below.
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        let g = match kube::discovery::group(client, group).await {
            Ok(g) => g,
            Err(e) if super::foreign::not_served(&e) => continue,
            Err(e) => return Err(e),
        };
        for (_, kind) in kinds.iter().filter(|(gr, _)| *gr == group) {
            let Some(ar) = super::foreign::find_kind(&g, kind) else { continue };
            let api: kube::Api<DynamicObject> = kube::Api::all_with(client.clone(), &ar);
            for mut o in api.list(&Default::default()).await?.items {
                o.types = Some(kube::api::TypeMeta { api_version: ar.api_version.clone(), kind: ar.kind.clone() });
                out.push(o);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use kube::Resource as _;

    use super::*;

    fn read(path: &str) -> Vec<DynamicObject> {
        let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_default();
        read_yaml(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_seeds_objects_become_xlb_objects() {
        let mut objs = read("tests/fixtures/seeds/001-pitower-cilium.yaml");
        objs.extend(read("tests/fixtures/seeds/004-metallb.yaml"));
        let out: Vec<Converted> = objs.iter().map(convert).collect();
        // Cilium's: exact, interfaces kept unanchored.
        assert_eq!(out[0].from, "CiliumL2AnnouncementPolicy policy");
        assert!(out[0].lost.is_empty());
        assert_eq!(out[0].objects[0]["kind"], "L2AnnouncementPolicy");
        assert_eq!(out[1].objects[0]["spec"]["blocks"][0]["start"], "192.168.0.220");
        // MetalLB's pool: avoidBuggyIPs over .100-.200 loses nothing; one range stays.
        assert_eq!(out[2].from, "IPAddressPool metallb-system/production-pool");
        assert!(out[2].lost.is_empty(), "{:?}", out[2].lost);
        assert_eq!(out[2].objects[0]["spec"]["blocks"][0]["stop"], "192.168.1.200");
        // The advertisement's pool binding cannot be said.
        assert!(out[3].lost.iter().any(|l| l.contains("production-pool")));
        assert_eq!(out[3].objects[0]["spec"]["interfaces"][0], "eth0");
        // The BFD profile has no equivalent yet.
        assert!(out[4].objects.is_empty() && out[4].lost[0].contains("BFDProfile"));
        // The output reads back as xlb's kinds.
        let yaml = render(&out).unwrap_or_else(|e| panic!("{e}"));
        let back = read_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.len(), 4);
        let xlb = LoadBalancerIPPool::api_version(&());
        assert!(back.iter().all(|o| o.types.as_ref().is_some_and(|t| t.api_version == xlb)));
    }

    #[test]
    fn metallb_pools_keep_their_meaning_where_they_can() {
        let pool = |spec: serde_json::Value| {
            let o: DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "p", "namespace": "metallb-system"}, "spec": spec
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            convert(&o)
        };
        let c = pool(serde_json::json!({"addresses": ["10.0.0.0/23", "2001:db8::/120"], "avoidBuggyIPs": true,
            "serviceAllocation": {"priority": 1, "namespaces": ["shop"], "serviceSelectors": [{"matchLabels": {"a": "b"}}]}}));
        let blocks = &c.objects[0]["spec"]["blocks"];
        assert_eq!(blocks[0]["start"], "10.0.0.1");
        assert_eq!(blocks[0]["stop"], "10.0.0.254");
        assert_eq!(blocks[1]["start"], "10.0.1.1");
        assert_eq!(blocks[2]["cidr"], "2001:db8::/120");
        let sel = &c.objects[0]["spec"]["serviceSelector"];
        assert_eq!(sel["matchLabels"]["a"], "b");
        assert_eq!(sel["matchExpressions"][0]["key"], NAMESPACE_LABEL);
        assert!(c.lost.iter().any(|l| l.contains("priority")));
        let big = pool(serde_json::json!({"addresses": ["10.0.0.0/8"], "avoidBuggyIPs": true, "autoAssign": false}));
        assert_eq!(big.objects[0]["spec"]["blocks"][0]["cidr"], "10.0.0.0/8");
        assert!(
            big.lost.iter().any(|l| l.contains("avoidBuggyIPs")) && big.lost.iter().any(|l| l.contains("autoAssign"))
        );
        let bad = pool(serde_json::json!({"addresses": ["10.0.0.1"]}));
        assert!(bad.objects.is_empty() && bad.lost[0].contains("/32"));
    }
}

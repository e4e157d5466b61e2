//! Standalone (`xlb run --config`): the Kubernetes objects among the config file's documents,
//! read with their own projects' meaning, as the cluster side reads them. A user who keeps
//! Cilium's or MetalLB's pools and announcement policies in Git points xlb at them unchanged.
//!
//! - Pools (`LoadBalancerIPPool`, `CiliumLoadBalancerIPPool`, MetalLB's `IPAddressPool`)
//!   become pools of the file, by their object's name (`pool:` names them), with their
//!   project's rules (`k8s::pools`: Cilium's unset `allowFirstLastIPs`, a lone `start`,
//!   MetalLB's ranges and `avoidBuggyIPs`).
//! - Their selectors decide which services draw from them: a service that names neither a
//!   `vip` nor a `pool` gets an address from the pools that select it (its `labels`, and
//!   the pseudo-label `io.kubernetes.service.name`), MetalLB's pinned pools first by
//!   priority; a pool with `autoAssign: false` only when named. A service naming a pool its
//!   selector does not select is refused, as the cluster side refuses it.
//! - Announcement policies (`L2AnnouncementPolicy`, `CiliumL2AnnouncementPolicy`, MetalLB's
//!   `L2Advertisement`) decide where each VIP is announced: on the interfaces of this box
//!   the policies that select its service (and this box, by `nodeLabels`) name. A VIP no
//!   policy selects is served but not announced, and said. Without policies in the file,
//!   every VIP is announced, as before.
//! - The BGP kinds are not served yet: a warning each. Any other kind is a mistake in the
//!   file, refused with what xlb reads.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use kube::api::DynamicObject;
use serde::de::DeserializeOwned;

use super::{
    alloc::{labels_with_pseudo, PoolView, SvcView},
    crds::{L2AnnouncementPolicy, L2AnnouncementPolicySpec, LoadBalancerIPPoolSpec, ReadFrom},
    foreign::{advertisements, IpAddressPoolSpec, CILIUM_L2, UNSERVED},
    plan::{Member, Policies},
    pools::{metallb_view, pool_view},
};
use crate::control::{
    compile::{add_interfaces, compile, Compiled},
    config::{ConfigError, ConfigErrors, Desired, Manifest},
    ipam::{Ipam, Request},
};

/// What the file's Kubernetes objects add to xlb's settings.
#[derive(Debug, Default)]
pub struct Foreign {
    /// The pools they define, with their selectors.
    pools: Vec<PoolView>,
    /// The announcement policies (MetalLB's as xlb's); none: every VIP is announced.
    policies: Vec<L2AnnouncementPolicy>,
    /// What is read but not served, or not all of it: one line each, to log.
    pub warnings: Vec<String>,
}

fn err(message: String) -> ConfigError {
    ConfigError { path: String::new(), message }
}

/// The API group of `apiVersion` (`cilium.io/v2` -> `cilium.io`; `v1` -> ``).
fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// The kinds read here, for messages.
const READ: &str = "LoadBalancerIPPool and L2AnnouncementPolicy (xlb.dev), CiliumLoadBalancerIPPool and \
                    CiliumL2AnnouncementPolicy (cilium.io), IPAddressPool and L2Advertisement (metallb.io)";

/// The labels a policy or pool selector sees on service `name`.
fn labels_of(name: &str, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels_with_pseudo(labels, "", name)
}

/// Reads `manifests` into `desired`: their pools join its pools, and the services that name
/// neither a VIP nor a pool draw from the pools that select them. Every mistake is
/// returned, each naming its document.
pub fn read(manifests: &[Manifest], desired: &mut Desired) -> Result<Foreign, ConfigErrors> {
    let mut out = Foreign::default();
    let mut errors = Vec::new();
    let mut metallb_ads = Vec::new();
    let mut metallb_pools = Vec::new();
    for m in manifests {
        let at = m.at();
        let spec = |m: &Manifest| m.object.get("spec").cloned().unwrap_or_default();
        fn typed<T: DeserializeOwned>(v: serde_json::Value, at: &str) -> Result<T, ConfigError> {
            serde_json::from_value(v).map_err(|e| err(format!("{at}: spec: {e}")))
        }
        match (group(&m.api_version), m.kind.as_str()) {
            ("xlb.dev" | "cilium.io", "LoadBalancerIPPool" | "CiliumLoadBalancerIPPool") => {
                match typed::<LoadBalancerIPPoolSpec>(spec(m), &at).and_then(|s| {
                    pool_view(m.name.clone(), &s)
                        .map(|v| PoolView { name: m.name.clone(), ..v })
                        .map_err(|e| err(format!("{at}: spec.{e}")))
                }) {
                    Ok(v) => out.pools.push(v),
                    Err(e) => errors.push(e),
                }
            }
            ("metallb.io", "IPAddressPool") => {
                let read = typed::<IpAddressPoolSpec>(spec(m), &at).and_then(|s| {
                    if s.service_allocation.as_ref().is_some_and(|a| !a.namespace_selectors.is_empty()) {
                        out.warnings.push(format!(
                            "{at}: serviceAllocation.namespaceSelectors select nothing standalone (services have no namespace)"
                        ));
                    }
                    metallb_view(m.name.clone(), &s, &[])
                        .map(|v| PoolView { name: m.name.clone(), ..v })
                        .map_err(|e| err(format!("{at}: spec.{e}")))
                });
                match read.and_then(|v| dynamic(m).map(|o| (v, o))) {
                    Ok((v, o)) => {
                        out.pools.push(v);
                        metallb_pools.push(o);
                    }
                    Err(e) => errors.push(e),
                }
            }
            ("xlb.dev" | "cilium.io", "L2AnnouncementPolicy" | "CiliumL2AnnouncementPolicy") => {
                let read = typed::<L2AnnouncementPolicySpec>(spec(m), &at).and_then(|s| {
                    match s.interfaces.iter().enumerate().find(|(_, re)| regex::Regex::new(re).is_err()) {
                        Some((i, re)) => Err(err(format!("{at}: spec.interfaces[{i}]: {re:?} is not a regular expression"))),
                        None => Ok(s),
                    }
                });
                match read {
                    Ok(mut s) => {
                        if m.kind == CILIUM_L2.kind {
                            s.read_from = Some(ReadFrom { kind: CILIUM_L2.kind, unanchored: true, addresses: None });
                        }
                        out.policies.push(L2AnnouncementPolicy::new(&m.name, s));
                    }
                    Err(e) => errors.push(e),
                }
            }
            ("metallb.io", "L2Advertisement") => {
                match typed::<super::foreign::L2AdvertisementSpec>(spec(m), &at).and_then(|_| dynamic(m)) {
                    Ok(o) => metallb_ads.push(o),
                    Err(e) => errors.push(e),
                }
            }
            ("cilium.io", "CiliumBGPPeeringPolicy") => out.warnings.push(format!(
                "{at}: not read in a file: a standalone xlb's peers and advertisements are in bgp: (the same field names; `xlb migrate` converts the policy)"
            )),
            (g, k) => match UNSERVED.iter().find(|(ug, uk, _)| *ug == g && *uk == k) {
                Some((_, _, why)) => out.warnings.push(format!("{at}: not served: {why}")),
                None if k == "Service" => errors.push(err(format!(
                    "{at}: a standalone xlb's services are in services:, with their backends; the file holds pools and announcement policies ({READ})"
                ))),
                None => errors.push(err(format!("{at}: xlb reads {READ} here, not {} {k}", m.api_version))),
            },
        }
    }
    out.policies.extend(advertisements(&metallb_ads, &metallb_pools));
    // The pools join the file's own, by their objects' names.
    let own: Vec<String> = desired.pools.iter().map(|p| p.name.clone()).collect();
    desired.pools.extend(out.pools.iter().map(|v| v.pool.clone()));
    // Which pools each service draws from.
    let mut ranked: Vec<&PoolView> = out.pools.iter().collect();
    ranked.sort_by_key(|v| v.rank());
    for (i, s) in desired.services.iter_mut().enumerate() {
        let view = SvcView { labels: labels_of(&s.name, &s.labels), key: s.name.clone(), ..SvcView::default() };
        match &s.request {
            Request::Any { v6 } if !out.pools.is_empty() => {
                let mut pools = own.clone();
                pools.extend(ranked.iter().filter(|p| !p.manual && p.serves(&view)).map(|p| p.name.clone()));
                if pools.is_empty() {
                    errors.push(ConfigError {
                        path: format!("services[{i}]"),
                        message: "no pool selects it: give it labels a pool's serviceSelector (or serviceAllocation) selects, or name a pool".into(),
                    });
                }
                s.request = Request::AnyOf { pools, v6: *v6 };
            }
            Request::Pool { name, .. } => {
                if let Some(p) = out.pools.iter().find(|p| p.name == *name && !p.serves(&view)) {
                    errors.push(ConfigError {
                        path: format!("services[{i}].pool"),
                        message: format!(
                            "pool {}'s serviceSelector (or serviceAllocation) does not select this service; give it labels that match, or name another pool",
                            p.name
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A manifest as the cluster side's readers take it.
fn dynamic(m: &Manifest) -> Result<Arc<DynamicObject>, ConfigError> {
    let o: DynamicObject =
        serde_json::from_value(m.object.clone()).map_err(|e| err(format!("{}: metadata: {e}", m.at())))?;
    Ok(Arc::new(o))
}

/// A config file read in full and compiled with `ipam`: xlb's settings, with what the
/// Kubernetes objects among its documents add, and the lines to say about them (kinds not
/// served, VIPs no policy announces). What `xlb check`, `xlb run` and a reload all do.
pub fn load(path: &std::path::Path, ipam: &mut Ipam) -> Result<(Desired, Compiled, Vec<String>), ConfigErrors> {
    let (desired, manifests) = crate::control::config::load(path)?;
    finish(desired, &manifests, ipam)
}

/// [`load`] of config text.
pub fn load_text(text: &str, ipam: &mut Ipam) -> Result<(Desired, Compiled, Vec<String>), ConfigErrors> {
    let (desired, manifests) = crate::control::config::parse_all(text)?;
    finish(desired, &manifests, ipam)
}

fn finish(
    mut desired: Desired,
    manifests: &[Manifest],
    ipam: &mut Ipam,
) -> Result<(Desired, Compiled, Vec<String>), ConfigErrors> {
    let mut foreign = read(manifests, &mut desired)?;
    let mut compiled = compile(&desired, ipam)?;
    let mut notes = std::mem::take(&mut foreign.warnings);
    notes.extend(foreign.apply(&desired, &mut compiled));
    Ok((desired, compiled, notes))
}

impl Foreign {
    /// Where each VIP of `compiled` is announced, from the policies: on the interfaces of
    /// this box those that select its services name (and only those of them the services
    /// list in `interfaces`, if any). A VIP no policy selects stays served but is no longer
    /// announced. Returns a line for each such VIP. Without policies, nothing changes.
    pub fn apply(&self, desired: &Desired, compiled: &mut Compiled) -> Vec<String> {
        if self.policies.is_empty() {
            return Vec::new();
        }
        let names: Vec<&str> = desired.interfaces.iter().map(|i| i.name.as_str()).collect();
        let me = Member { node: String::new(), interface: names.join(",") };
        let policies = Policies::new(&self.policies);
        let mut on: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for (name, vip) in &compiled.assignments {
            let Some(s) = desired.services.iter().find(|s| s.name == *name) else { continue };
            let mut these = policies.announced_on(&labels_of(name, &s.labels), *vip, &me, &desired.node_labels);
            if !s.interfaces.is_empty() {
                these.retain(|i| s.interfaces.contains(i));
            }
            add_interfaces(on.entry(*vip).or_default(), these);
        }
        let mut said = Vec::new();
        for (vip, ifaces) in on {
            if ifaces.is_empty() {
                // On no interface: not announced, and its traffic is not taken anywhere.
                compiled.vips.retain(|v| *v != vip);
                compiled.placement.insert(vip, Vec::new());
                let who: Vec<&str> =
                    compiled.assignments.iter().filter(|(_, v)| *v == vip).map(|(n, _)| n.as_str()).collect();
                said.push(format!(
                    "{vip} ({}) is served but not announced: no announcement policy in the file selects it on this box (serviceSelector and the services' labels, nodeSelector and nodeLabels, interfaces)",
                    who.join(", ")
                ));
            } else {
                compiled.placement.insert(vip, ifaces);
            }
        }
        said
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xlb's settings for seed 002's box: two interfaces, services labelled as the seed's.
    const BOX: &str = "interfaces: [{name: eno1}, {name: eno2}]
nodeLabels: {node.kubernetes.io/control-plane: \"\"}
services:
  - name: my-service
    labels: {network.example.com/interface: eno1}
    ports: [{port: 80, targetPort: 8080}]
    backends: [{address: 192.168.3.11}]
  - name: api-external
    labels: {network.example.com/interface: eno2}
    ports: [{port: 443}]
    backends: [{address: 192.168.4.11}]
";

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/seeds/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn load(text: &str) -> Result<(Desired, Compiled, Vec<String>), ConfigErrors> {
        load_text(text, &mut Ipam::default())
    }

    fn vip(c: &Compiled, name: &str) -> IpAddr {
        c.assignments.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Seed 002's Terraform-made pools and policies, unchanged beside xlb's settings: each
    /// service draws from the pool its label selects, and its VIP is announced on the
    /// interface that pool's policy names (eno2 only on a control-plane node).
    #[test]
    fn seed_002_manifests_beside_xlbs_settings() {
        let text = format!("{BOX}---\n{}", fixture("002-multi-interface.yaml"));
        let (d, c, notes) = load(&text).unwrap();
        assert_eq!(d.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["ip-pool-eno1", "ip-pool-eno2"]);
        let (internal, public) = (vip(&c, "my-service"), vip(&c, "api-external"));
        assert_eq!(internal, "192.168.3.150".parse::<IpAddr>().unwrap(), "Cilium's allowFirstLastIPs unset: the first");
        assert_eq!(public, "192.168.4.150".parse::<IpAddr>().unwrap());
        assert_eq!(c.placement[&internal], ["eno1"]);
        assert_eq!(c.placement[&public], ["eno2"]);
        assert_eq!(c.vips, [internal, public]);
        assert!(notes.is_empty(), "{notes:?}");
        // Not a control-plane box: the public VIP is served but not announced, and said.
        let (_, c, notes) = load(&text.replace("nodeLabels: {node.kubernetes.io/control-plane: \"\"}\n", "")).unwrap();
        assert_eq!(c.vips, [internal]);
        assert_eq!(c.specs.len(), 2, "both still served");
        assert!(
            notes.len() == 1 && notes[0].starts_with("192.168.4.150 (api-external) is served but not announced"),
            "{notes:?}"
        );
        // A service whose labels no pool selects is refused, naming it; so is one that names
        // a pool whose selector does not select it.
        let e = load(&text.replace("labels: {network.example.com/interface: eno2}", "labels: {}")).unwrap_err();
        assert!(e.to_string().contains("services[1]: no pool selects it"), "{e}");
        let named = text.replace("    labels: {network.example.com/interface: eno2}\n", "    pool: ip-pool-eno2\n");
        let e = load(&named).unwrap_err();
        assert!(e.to_string().contains("services[1].pool: pool ip-pool-eno2's serviceSelector"), "{e}");
    }

    /// Seed 004's MetalLB objects: the pool with avoidBuggyIPs, the advertisement on eth0
    /// for nodes labelled as load balancers, and the BFD profile (not served: a warning).
    #[test]
    fn seed_004_metallb_objects_beside_xlbs_settings() {
        let text = format!(
            "interfaces: [{{name: eth0}}]
nodeLabels: {{node-role.kubernetes.io/loadbalancer: \"true\"}}
services:
  - name: web
    ports: [{{port: 80}}]
    backends: [{{address: 192.168.1.11}}]
---
{}",
            fixture("004-metallb.yaml")
        );
        let (_, c, notes) = load(&text).unwrap();
        assert_eq!(vip(&c, "web"), "192.168.1.100".parse::<IpAddr>().unwrap());
        assert_eq!(c.placement[&vip(&c, "web")], ["eth0"]);
        assert!(notes.iter().any(|n| n.contains("BFDProfile production-bfd") && n.contains("not served")), "{notes:?}");
        // Without the node's label, the advertisement does not select this box.
        let (_, c, _) =
            load(&text.replace("nodeLabels: {node-role.kubernetes.io/loadbalancer: \"true\"}\n", "")).unwrap();
        assert!(c.vips.is_empty());
    }

    #[test]
    fn other_kinds_and_broken_objects_are_refused_naming_their_document() {
        let base = "interfaces: [{name: eth0}]\n---\n";
        let cases = [
            ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n", "document 2 (Service web): a standalone xlb's services are in services:"),
            ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n", "document 2 (Deployment d): xlb reads"),
            (
                "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p}\nspec: {blocks: [{cidr: 10.0.0.0/33}]}\n",
                "document 2 (CiliumLoadBalancerIPPool p): spec.blocks[0].cidr",
            ),
            (
                "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: m}\nspec: {addresses: [10.0.0.9-10.0.0.1]}\n",
                "document 2 (IPAddressPool m): spec.addresses[0]",
            ),
        ];
        for (doc, want) in cases {
            let e = load(&format!("{base}{doc}")).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} does not contain {want:?}");
        }
        // Two pools of one name, and a file with objects but no settings of xlb's.
        let p = "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p}\nspec: {blocks: [{cidr: 10.0.0.0/30}]}\n";
        let e = load(&format!("{base}{p}---\n{p}")).unwrap_err().to_string();
        assert!(e.contains("document 3 (CiliumLoadBalancerIPPool p): a pool named \"p\" comes earlier"), "{e}");
        let e = load(p).unwrap_err().to_string();
        assert!(e.contains("no document of xlb's settings"), "{e}");
    }
}

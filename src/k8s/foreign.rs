//! Kinds of other projects that xlb serves as if they were its own, so that a cluster moving
//! from Cilium keeps its manifests: `CiliumLoadBalancerIPPool` (read as xlb's
//! `LoadBalancerIPPool`) and `CiliumL2AnnouncementPolicy` (read as `L2AnnouncementPolicy`).
//! Their field names are xlb's, so each object is read into xlb's own type.
//!
//! The kinds xlb does not serve yet (`UNSERVED`: MetalLB's, and the BGP kinds of both) are
//! never ignored silently: each object of them gets a Warning Event saying so.
//!
//! A kind is watched only once the cluster serves it: it is looked up through discovery (at
//! its preferred version) at start and then every 30 s until found, so that a cluster without
//! Cilium's definitions costs one discovery request per half minute and no failing watch.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{
    api::{ApiResource, DynamicObject},
    runtime::{
        events::{Event, EventType},
        reflector::Store,
    },
    Api, Client, Resource,
};
use serde::{de::DeserializeOwned, Deserialize};

use super::stats::Stats;

/// A kind of another project that xlb serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group.
    pub group: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Name of its watch in logs and metrics.
    pub what: &'static str,
}

/// Cilium's pools, read as `LoadBalancerIPPool`.
pub const CILIUM_POOL: Kind =
    Kind { group: "cilium.io", kind: "CiliumLoadBalancerIPPool", what: "ciliumloadbalancerippools" };
/// Cilium's L2 announcement policies, read as `L2AnnouncementPolicy`.
pub const CILIUM_L2: Kind =
    Kind { group: "cilium.io", kind: "CiliumL2AnnouncementPolicy", what: "ciliuml2announcementpolicies" };

/// MetalLB's pools, read as `IpAddressPoolSpec`.
pub const METALLB_POOL: Kind = Kind { group: "metallb.io", kind: "IPAddressPool", what: "ipaddresspools" };

/// The spec of MetalLB's `IPAddressPool` (metallb.io/v1beta1), as far as xlb reads it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressPoolSpec {
    /// CIDRs, or ranges `a-b`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Unset: true. False: only for Services that name the pool or ask for its addresses.
    #[serde(default)]
    pub auto_assign: Option<bool>,
    /// Skip every IPv4 address ending in .0 or .255.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Which Services the pool is for, and its priority.
    #[serde(default)]
    pub service_allocation: Option<ServiceAllocation>,
}

/// MetalLB's `serviceAllocation`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower first; unset after every pool that has one.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Namespaces whose Services it serves.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// ... and those whose labels one of these selects.
    #[serde(default)]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services one of these selects.
    #[serde(default)]
    pub service_selectors: Vec<LabelSelector>,
}

/// The `spec` of `obj`, read as `T`.
pub fn spec_of<T: DeserializeOwned>(obj: &DynamicObject) -> Result<T, String> {
    serde_json::from_value(obj.data.get("spec").cloned().unwrap_or_default()).map_err(|e| format!("spec: {e}"))
}

/// How often a kind the cluster does not serve is looked up again.
const LOOK_AGAIN: Duration = Duration::from_secs(30);

/// One kind, watched once the cluster serves it.
pub struct Watched {
    kind: Kind,
    found: Option<(ApiResource, Store<DynamicObject>)>,
    looked: Option<Instant>,
    /// Objects that did not read last time (warned about once).
    unread: BTreeSet<String>,
}

impl Watched {
    /// Not looked up yet.
    pub fn new(kind: Kind) -> Self {
        Watched { kind, found: None, looked: None, unread: BTreeSet::new() }
    }

    /// Looks the kind up if it has not been found (at most every 30 s) and starts its watch
    /// when it is; `notify` wakes on every change of its objects.
    pub async fn poll(&mut self, client: &Client, notify: &Arc<tokio::sync::Notify>, stats: &Arc<Stats>) {
        if self.found.is_some() || self.looked.is_some_and(|t| t.elapsed() < LOOK_AGAIN) {
            return;
        }
        self.looked = Some(Instant::now());
        let found = match kube::discovery::group(client, self.kind.group).await {
            Ok(g) => g.recommended_kind(self.kind.kind).map(|(ar, _)| ar),
            Err(kube::Error::Api(e)) if e.code == 404 => None,
            Err(e) => {
                tracing::debug!(kind = self.kind.kind, error = %e, "looking the kind up failed; trying again in 30 s");
                None
            }
        };
        let Some(ar) = found else { return };
        tracing::info!(kind = self.kind.kind, version = %ar.version, "the cluster serves this kind: xlb reads its objects");
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let store = super::reflect_with(api, ar.clone(), notify.clone(), self.kind.what, stats.clone());
        self.found = Some((ar, store));
    }

    /// Its objects (none while the cluster does not serve it).
    pub fn objects(&self) -> Vec<Arc<DynamicObject>> {
        self.found.as_ref().map(|(_, s)| s.state()).unwrap_or_default()
    }

    /// Its store, once found.
    pub fn store(&self) -> Option<Store<DynamicObject>> {
        self.found.as_ref().map(|(_, s)| s.clone())
    }

    /// Its objects read as xlb's kind `K`. One that does not read is left out, with a
    /// warning the first time (its definition's schema keeps such objects rare).
    pub fn read_all<K>(&mut self) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let mut out = Vec::new();
        let mut bad = BTreeSet::new();
        for o in self.objects() {
            let name = o.metadata.name.clone().unwrap_or_default();
            match read_as::<K>(&o) {
                Ok(k) => out.push(k),
                Err(e) => {
                    if !self.unread.contains(&name) {
                        tracing::warn!(kind = self.kind.kind, name = %name, error = %e, "the object does not read as xlb's {}; left out until it is fixed", K::kind(&()));
                    }
                    bad.insert(name);
                }
            }
        }
        self.unread = bad;
        out
    }

    /// Its API resource, once found.
    pub fn resource(&self) -> Option<&ApiResource> {
        self.found.as_ref().map(|(ar, _)| ar)
    }

    /// Waits until its store has listed once (at once if it is not watched).
    pub async fn wait_until_ready(&self) {
        if let Some((_, s)) = &self.found {
            let _ = s.wait_until_ready().await;
        }
    }
}

/// Kinds of other projects that xlb does not serve yet, with what to do instead. Objects of
/// them are never ignored silently: `tell_unserved` says so on each (a Warning Event and a
/// log line).
pub const UNSERVED: [(&str, &str, &str); 10] = [
    ("cilium.io", "CiliumBGPPeeringPolicy", BGP_HINT),
    ("cilium.io", "CiliumBGPClusterConfig", BGP_HINT),
    ("cilium.io", "CiliumBGPPeerConfig", BGP_HINT),
    ("cilium.io", "CiliumBGPAdvertisement", BGP_HINT),
    ("cilium.io", "CiliumBGPNodeConfigOverride", BGP_HINT),
    ("metallb.io", "L2Advertisement", "write an L2AnnouncementPolicy (xlb.dev) or a CiliumL2AnnouncementPolicy"),
    ("metallb.io", "BGPPeer", BGP_HINT),
    ("metallb.io", "BGPAdvertisement", BGP_HINT),
    ("metallb.io", "BFDProfile", BGP_HINT),
    ("metallb.io", "Community", BGP_HINT),
];

const BGP_HINT: &str = "xlb announces addresses by ARP and NDP (L2AnnouncementPolicy) and does not speak BGP yet";

/// Says, once per object (`told`: their uids), that xlb does not serve the objects of the
/// `UNSERVED` kinds the cluster has: a Warning Event `NotServed` on each, and a log line.
/// Kinds the cluster lacks, or that xlb may not list, cost one discovery request per group.
pub async fn tell_unserved(client: &Client, recorder: &super::events::Recorder, told: &mut BTreeSet<String>) {
    let mut groups: Vec<&str> = UNSERVED.iter().map(|(g, _, _)| *g).collect();
    groups.dedup();
    for group in groups {
        let Ok(g) = kube::discovery::group(client, group).await else { continue };
        for (_, kind, hint) in UNSERVED.iter().filter(|(g, _, _)| *g == group) {
            let Some((ar, _)) = g.recommended_kind(kind) else { continue };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let list = match api.list(&Default::default()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(kind, error = %e, "listing the kind failed; its objects are not looked at");
                    continue;
                }
            };
            for o in list.items {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                if !told.insert(uid) {
                    continue;
                }
                let name = format!(
                    "{}/{}",
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap_or_default()
                );
                let note = format!("xlb does not serve {kind} yet: this object has no effect on xlb; {hint}");
                tracing::warn!(kind, object = %name.trim_start_matches('/'), "{note}");
                let ev = Event {
                    type_: EventType::Warning,
                    reason: "NotServed".into(),
                    note: Some(note),
                    action: "Read".into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&ev, &o.object_ref(&ar)).await {
                    tracing::debug!(kind, error = %e, "publishing the Event failed");
                }
            }
        }
    }
}

/// `obj` read as xlb's kind `K` (same fields), or what in it does not fit.
pub fn read_as<K>(obj: &DynamicObject) -> Result<K, String>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let mut v = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    v["apiVersion"] = K::api_version(&()).into();
    v["kind"] = K::kind(&()).into();
    serde_json::from_value(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::crds::{L2AnnouncementPolicy, LoadBalancerIPPool, YesNo};

    fn dynamic(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn cilium_objects_read_as_xlb_kinds() {
        let pool = dynamic(serde_json::json!({
            "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "pool"},
            "spec": {"allowFirstLastIPs": "Yes", "blocks": [{"start": "192.168.0.220", "stop": "192.168.0.239"}],
                     "cidrs": [{"cidr": "10.0.10.0/24"}]},
            "status": {"conditions": [{"type": "cilium.io/PoolConflict", "status": "False", "reason": "x",
                                       "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }));
        let p: LoadBalancerIPPool = read_as(&pool).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.spec.allow_first_last_ips, Some(YesNo::Yes));
        assert_eq!((p.spec.blocks.len(), p.spec.cidrs.len()), (1, 1));
        assert_eq!(p.status.map(|s| s.conditions.len()), Some(1));
        let l2 = dynamic(serde_json::json!({
            "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
            "metadata": {"name": "policy"},
            "spec": {"loadBalancerIPs": true, "interfaces": ["^eth[0-9]+"],
                     "nodeSelector": {"matchLabels": {"kubernetes.io/os": "linux"}}}
        }));
        let l: L2AnnouncementPolicy = read_as(&l2).unwrap_or_else(|e| panic!("{e}"));
        assert!(l.spec.load_balancer_ips && !l.spec.external_ips);
        assert_eq!(l.spec.interfaces, ["^eth[0-9]+"]);
        // A field of the wrong type is said, not ignored.
        let bad = dynamic(serde_json::json!({
            "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "bad"}, "spec": {"blocks": "10.0.0.0/24"}
        }));
        assert!(read_as::<LoadBalancerIPPool>(&bad).is_err_and(|e| e.contains("blocks") || e.contains("sequence")));
    }
}

//! Kinds of other projects that xlb serves as if they were its own, so that a cluster moving
//! from Cilium or MetalLB keeps its manifests: `CiliumLoadBalancerIPPool` and
//! `CiliumL2AnnouncementPolicy` (read into xlb's own types: their field names are xlb's),
//! MetalLB's `IPAddressPool` and `L2Advertisement` (read with MetalLB's meaning, the
//! advertisements as xlb policies).
//!
//! Cilium's `CiliumBGPPeeringPolicy` is read as xlb's BGP objects (`cilium_bgp`). The kinds
//! xlb does not serve yet (`UNSERVED`: Cilium's newer BGP kinds and MetalLB's, for which xlb
//! has kinds of its own) are never ignored silently: each object of them gets a Warning
//! Event saying so.
//!
//! A kind is watched only once the cluster serves it: it is looked up through discovery (at
//! any version that has it) every 2 s until the cluster has answered, then every 30 s until
//! found, so that a cluster without Cilium's definitions costs one discovery request per
//! half minute and no failing watch.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
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
use kube::{CustomResource, CustomResourceExt as _};
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{
    alloc::selects,
    crds::{L2AnnouncementPolicy, L2AnnouncementPolicySpec, ReadFrom},
    stats::Stats,
};

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

/// The spec of MetalLB's `IPAddressPool` (metallb.io/v1beta1), with MetalLB's field names;
/// `xlb crds --metallb` defines the kind from it for clusters without MetalLB.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    root = "MetalLbPool",
    plural = "ipaddresspools",
    namespaced,
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Avoid Buggy IPs","type":"boolean","jsonPath":".spec.avoidBuggyIPs"}"#,
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressPoolSpec {
    /// CIDRs, or ranges `a-b`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Unset: true. False: only for Services that name the pool or ask for its addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    /// Skip every IPv4 address ending in .0 or .255.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Which Services the pool is for, and its priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// MetalLB's `serviceAllocation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower first; unset after every pool that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// MetalLB's L2 advertisements, read as `L2AnnouncementPolicy`s (`advertisements`).
pub const METALLB_L2: Kind = Kind { group: "metallb.io", kind: "L2Advertisement", what: "l2advertisements" };

/// The spec of MetalLB's `L2Advertisement` (metallb.io/v1beta1), with MetalLB's field names;
/// `xlb crds --metallb` defines the kind from it for clusters without MetalLB.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    root = "MetalLbL2Advertisement",
    plural = "l2advertisements",
    namespaced,
    printcolumn = r#"{"name":"IPAddressPools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools by name (with `ip_address_pool_selectors`; both empty: every pool).
    #[serde(default)]
    pub ip_address_pools: Vec<String>,
    /// Pools by their labels.
    #[serde(default)]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes one of these selects (none: every node).
    #[serde(default)]
    pub node_selectors: Vec<LabelSelector>,
    /// Interface names (none: every interface).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Services one of these selects (none: every one).
    #[serde(default)]
    pub service_selectors: Vec<LabelSelector>,
    /// Nodes to prefer, by weight (not read by xlb: its own ranking chooses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// One of MetalLB's `preferredNodeSelectors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PreferredNodeSelector {
    /// 1 to 100.
    pub weight: i32,
    /// The nodes it prefers.
    pub preference: LabelSelector,
}

/// The definitions of the MetalLB kinds xlb serves, as `xlb crds --metallb` prints them, for a
/// cluster that keeps those objects after MetalLB is gone: derived from the spec types above
/// (MetalLB's field names). Never apply them where MetalLB's own are installed.
pub fn metallb_crds_yaml() -> Result<String, serde_json::Error> {
    super::crds::yaml(&[MetalLbPool::crd(), MetalLbL2Advertisement::crd()])
}

/// MetalLB's L2 advertisements as xlb policies, with MetalLB's meaning
/// (internal/config/config.go `setL2AdvertisementsToPools`, `l2AdvertisementFromCR` at
/// metallb/metallb 7938d3f): an advertisement covers the addresses of the pools it names or
/// selects (every pool when it does neither), on the nodes any of its node selectors
/// selects, for the Services any of its Service selectors selects, on the interfaces it
/// names (exactly). Lists of selectors mean "any of": one policy per pair.
pub fn advertisements(ads: &[Arc<DynamicObject>], pools: &[Arc<DynamicObject>]) -> Vec<L2AnnouncementPolicy> {
    // Each pool's address ranges, read once for every advertisement.
    let ranges: Vec<(&DynamicObject, Vec<(IpAddr, IpAddr)>)> = pools
        .iter()
        .filter_map(|p| {
            let spec = spec_of::<IpAddressPoolSpec>(p).ok()?;
            let view = super::pools::metallb_view(String::new(), &spec, &[]).ok()?;
            Some((&**p, view.pool.blocks.iter().map(|b| (b.start, b.stop)).collect()))
        })
        .collect();
    let none = BTreeMap::new();
    let mut out = Vec::new();
    for ad in ads {
        let Ok(spec) = spec_of::<L2AdvertisementSpec>(ad) else { continue };
        let namespace = ad.metadata.namespace.clone();
        let addresses = (!spec.ip_address_pools.is_empty() || !spec.ip_address_pool_selectors.is_empty()).then(|| {
            ranges
                .iter()
                .filter(|(p, _)| p.metadata.namespace == namespace)
                .filter(|(p, _)| {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let labels = p.metadata.labels.as_ref().unwrap_or(&none);
                    spec.ip_address_pools.contains(&name)
                        || spec.ip_address_pool_selectors.iter().any(|sel| selects(Some(sel), labels))
                })
                .flat_map(|(_, r)| r.iter().copied())
                .collect()
        });
        for mut policy in spec.policies() {
            policy.read_from =
                Some(ReadFrom { kind: METALLB_L2.kind, unanchored: false, addresses: addresses.clone() });
            let mut p = L2AnnouncementPolicy::new(&ad.metadata.name.clone().unwrap_or_default(), policy);
            p.metadata.namespace.clone_from(&namespace);
            out.push(p);
        }
    }
    out
}

impl L2AdvertisementSpec {
    /// The xlb policies it stands for, less its pool binding: one per pair of its node and
    /// Service selectors (each list means "any of"; empty: any), on the interfaces it names
    /// (matched whole), for load-balancer addresses.
    pub fn policies(&self) -> Vec<L2AnnouncementPolicySpec> {
        let any = |v: &[LabelSelector]| -> Vec<Option<LabelSelector>> {
            if v.is_empty() {
                vec![None]
            } else {
                v.iter().cloned().map(Some).collect()
            }
        };
        let mut out = Vec::new();
        for node_selector in any(&self.node_selectors) {
            for service_selector in any(&self.service_selectors) {
                out.push(L2AnnouncementPolicySpec {
                    service_selector,
                    node_selector: node_selector.clone(),
                    interfaces: self.interfaces.iter().map(|i| regex::escape(i)).collect(),
                    load_balancer_ips: true,
                    ..L2AnnouncementPolicySpec::default()
                });
            }
        }
        out
    }
}

/// The `spec` of `obj`, read as `T`.
pub fn spec_of<T: DeserializeOwned>(obj: &DynamicObject) -> Result<T, String> {
    serde_json::from_value(obj.data.get("spec").cloned().unwrap_or_default()).map_err(|e| format!("spec: {e}"))
}

/// Whether a discovery error says the cluster does not serve the group (rather than that
/// it could not be asked).
pub fn not_served(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
        || matches!(e, kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_)))
}

/// A kind of a group at the group's preferred version, else at the first version that has
/// it: kinds of one group live at different versions (Cilium's pools at `v2`, its L2
/// announcement policies still at `v2alpha1`), and the group's preferred version is one.
pub fn find_kind(g: &kube::discovery::ApiGroup, kind: &str) -> Option<ApiResource> {
    g.recommended_kind(kind).map(|(ar, _)| ar).or_else(|| {
        g.versions()
            .find_map(|v| g.versioned_resources(v).into_iter().find(|(ar, _)| ar.kind == kind).map(|(ar, _)| ar))
    })
}

/// How often a kind the cluster does not serve is looked up again.
pub const LOOK_AGAIN: Duration = Duration::from_secs(30);
/// How soon a kind is looked up again while the cluster has not answered whether it serves it.
pub const LOOK_SOON: Duration = Duration::from_secs(2);

/// One kind, watched once the cluster serves it.
pub struct Watched {
    kind: Kind,
    found: Option<(ApiResource, Store<DynamicObject>)>,
    looked: Option<Instant>,
    /// Whether the last lookup had an answer (found, or not served): until then, plans made
    /// without its objects could move addresses or withdraw announcements.
    settled: bool,
    /// Objects that did not read last time (warned about once).
    unread: BTreeSet<String>,
}

impl Watched {
    /// Not looked up yet.
    pub fn new(kind: Kind) -> Self {
        Watched { kind, found: None, looked: None, settled: false, unread: BTreeSet::new() }
    }

    /// Looks the kind up if it has not been found (at most every 30 s) and starts its watch
    /// when it is; `notify` wakes on every change of its objects.
    pub async fn poll(&mut self, client: &Client, notify: &Arc<tokio::sync::Notify>, stats: &Arc<Stats>) {
        // Not served: looked up again every 30 s; no answer: every 2 s.
        let again = if self.settled { LOOK_AGAIN } else { LOOK_SOON };
        if self.found.is_some() || self.looked.is_some_and(|t| t.elapsed() < again) {
            return;
        }
        self.looked = Some(Instant::now());
        let found = match kube::discovery::group(client, self.kind.group).await {
            Ok(g) => {
                self.settled = true;
                find_kind(&g, self.kind.kind)
            }
            Err(e) if not_served(&e) => {
                self.settled = true;
                None
            }
            Err(e) => {
                tracing::warn!(kind = self.kind.kind, error = %e, "looking the kind up failed; trying again in 2 s (addresses and announcements wait)");
                None
            }
        };
        let Some(ar) = found else { return };
        tracing::info!(kind = self.kind.kind, version = %ar.version, "the cluster serves this kind: xlb reads its objects");
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let store = super::reflect_with(api, ar.clone(), notify.clone(), self.kind.what, stats.clone());
        self.found = Some((ar, store));
    }

    /// Whether the cluster has answered whether it serves the kind.
    pub fn settled(&self) -> bool {
        self.settled
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
pub const UNSERVED: [(&str, &str, &str); 8] = [
    ("cilium.io", "CiliumBGPClusterConfig", BGP_HINT),
    ("cilium.io", "CiliumBGPPeerConfig", BGP_HINT),
    ("cilium.io", "CiliumBGPAdvertisement", BGP_HINT),
    ("cilium.io", "CiliumBGPNodeConfigOverride", BGP_HINT),
    ("metallb.io", "BGPPeer", BGP_HINT),
    ("metallb.io", "BGPAdvertisement", BGP_HINT),
    ("metallb.io", "BFDProfile", BGP_HINT),
    ("metallb.io", "Community", BGP_HINT),
];

const BGP_HINT: &str = "xlb reads BGP from its own kinds (xlb.dev BGPPeer, BFDProfile, BGPAdvertisement, BGPNodeOverride; the same field names): write the peers and advertisements there";

/// Says, once per object (`told`: their uids), that xlb does not serve the objects of the
/// `UNSERVED` kinds the cluster has: a Warning Event `NotServed` on each, and a log line.
/// Kinds the cluster lacks, or that xlb may not list, cost one discovery request per group.
pub async fn tell_unserved(client: &Client, recorder: &super::events::Recorder, told: &mut BTreeSet<String>) {
    let mut groups: Vec<&str> = UNSERVED.iter().map(|(g, _, _)| *g).collect();
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        let Ok(g) = kube::discovery::group(client, group).await else { continue };
        for (_, kind, hint) in UNSERVED.iter().filter(|(g, _, _)| *g == group) {
            let Some(ar) = find_kind(&g, kind) else { continue };
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

    /// Seed 004's advertisement: its pool's range, on nodes its selector selects, on eth0.
    #[test]
    fn metallb_advertisements_read_as_policies() {
        let pool = |name: &str, addresses: serde_json::Value, labels: serde_json::Value| {
            Arc::new(dynamic(serde_json::json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": name, "namespace": "metallb-system", "labels": labels},
                "spec": {"addresses": addresses}
            })))
        };
        let pools = [
            pool("production-pool", serde_json::json!(["192.168.1.100-192.168.1.200"]), serde_json::json!({})),
            pool("other", serde_json::json!(["10.0.0.0/24"]), serde_json::json!({"tier": "edge"})),
        ];
        let ad = |spec: serde_json::Value| {
            Arc::new(dynamic(serde_json::json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": "l2-advertisement", "namespace": "metallb-system"}, "spec": spec
            })))
        };
        let seed = ad(serde_json::json!({"ipAddressPools": ["production-pool"], "interfaces": ["eth0"],
            "nodeSelectors": [{"matchLabels": {"node-role.kubernetes.io/loadbalancer": "true"}}]}));
        let p = advertisements(&[seed], &pools);
        assert_eq!(p.len(), 1);
        let spec = &p[0].spec;
        assert!(spec.load_balancer_ips && !spec.external_ips && spec.node_selector.is_some());
        assert_eq!(spec.interfaces, ["eth0"]);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap_or(std::net::IpAddr::from([0; 4]));
        let want = vec![(ip("192.168.1.100"), ip("192.168.1.200"))];
        assert_eq!(spec.read_from.as_ref().and_then(|r| r.addresses.clone()), Some(want));
        // Selected pools join named ones; several node selectors are several policies; no
        // pool named or selected means every pool.
        let two = ad(serde_json::json!({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "edge"}}],
            "nodeSelectors": [{"matchLabels": {"a": "1"}}, {"matchLabels": {"b": "1"}}]}));
        let p = advertisements(&[two], &pools);
        assert_eq!(p.len(), 2);
        let edge = vec![(ip("10.0.0.0"), ip("10.0.0.255"))];
        assert_eq!(p[0].spec.read_from.as_ref().and_then(|r| r.addresses.clone()), Some(edge));
        let all = advertisements(&[ad(serde_json::json!({}))], &pools);
        assert_eq!(all[0].spec.read_from.as_ref().map(|r| r.addresses.is_none()), Some(true));
    }
}

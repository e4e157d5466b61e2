//! The custom resources of group `xlb.dev`, version `v1alpha1`, and the definitions of the
//! Cilium kinds xlb serves as well (`CiliumLoadBalancerIPPool`, `CiliumL2AnnouncementPolicy`).
//! xlb's kinds take Cilium's field names and defaults, so one spec type reads both; what
//! xlb adds (`announce`, pool `counts`) is marked as such. `xlb crds` prints xlb's
//! definitions and `xlb crds --cilium` the Cilium ones, for clusters from which Cilium is
//! gone (both derived from these types with schemars).

use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
        CustomResourceDefinitionVersion,
    },
    apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector},
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A block of addresses: a CIDR, or a `start`-`stop` range (both ends included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpBlock {
    /// A CIDR, e.g. `192.0.2.0/28` or `2001:db8::/120`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// First address of a range (with `stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Last address of a range (with `start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
}

/// Whether the first and last address of a CIDR block may be handed out (Cilium's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum YesNo {
    /// Hand them out.
    Yes,
    /// Skip them.
    No,
}

/// A pool of addresses that LoadBalancer Services get their addresses from.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "xlb.dev",
    version = "v1alpha1",
    kind = "LoadBalancerIPPool",
    plural = "loadbalancerippools",
    shortname = "lbpool",
    status = "LoadBalancerIPPoolStatus",
    printcolumn = r#"{"name":"Disabled","type":"boolean","jsonPath":".spec.disabled"}"#,
    printcolumn = r#"{"name":"Total","type":"string","jsonPath":".status.counts.total"}"#,
    printcolumn = r#"{"name":"Used","type":"string","jsonPath":".status.counts.used"}"#,
    printcolumn = r#"{"name":"Free","type":"string","jsonPath":".status.counts.free"}"#,
    printcolumn = r#"{"name":"Conflicting","type":"string","jsonPath":".status.conditions[?(@.type==\"xlb.dev/PoolConflict\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerIPPoolSpec {
    /// The pool's addresses.
    #[serde(default)]
    pub blocks: Vec<IpBlock>,
    /// The older name of `blocks` (Cilium's v2alpha1 `cidrs`); read as more blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<IpBlock>,
    /// Only Services matching this selector take addresses from the pool (none: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Whether the first and last address of each CIDR block may be handed out. Unset: yes,
    /// as in Cilium's code since 1.16 (its API comment says otherwise). Blocks of one or two
    /// addresses always hand out both.
    #[serde(default, rename = "allowFirstLastIPs", skip_serializing_if = "Option::is_none")]
    pub allow_first_last_ips: Option<YesNo>,
    /// A disabled pool keeps the addresses it gave and gives no new ones.
    #[serde(default)]
    pub disabled: bool,
}

/// Counts of a pool's addresses (strings: an IPv6 pool may hold more than 2^63).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PoolCounts {
    /// Addresses the pool may hand out.
    pub total: String,
    /// Assigned.
    pub used: String,
    /// Still free.
    pub free: String,
}

/// What xlb reports about a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoadBalancerIPPoolStatus {
    /// `xlb.dev/PoolConflict` (overlaps another pool, allocates nothing) and
    /// `xlb.dev/InvalidBlocks` (a block that does not parse).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<PoolCounts>,
}

/// Which nodes announce which Services' addresses, on which interfaces.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "xlb.dev",
    version = "v1alpha1",
    kind = "L2AnnouncementPolicy",
    plural = "l2announcementpolicies",
    shortname = "l2policy"
)]
#[serde(rename_all = "camelCase")]
pub struct L2AnnouncementPolicySpec {
    /// Services whose addresses this policy announces (none: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Nodes that may announce them (none: every node running xlb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Regular expressions for the interfaces to announce on (none: the interface xlb serves).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Announce the addresses in `status.loadBalancer.ingress`.
    #[serde(default, rename = "loadBalancerIPs")]
    pub load_balancer_ips: bool,
    /// Announce the addresses in `spec.externalIPs`.
    #[serde(default, rename = "externalIPs")]
    pub external_ips: bool,
    /// xlb: how a node that takes one of these addresses over announces it (none: the
    /// defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<AnnounceTimings>,
    /// In memory only: set on a policy read from another project's kind, where its meaning
    /// differs from xlb's.
    #[serde(skip)]
    #[schemars(skip)]
    pub read_from: Option<ReadFrom>,
}

/// What differs in a policy read from another project's kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadFrom {
    /// The kind, for messages.
    pub kind: &'static str,
    /// Interface patterns match anywhere in the name (Cilium), not the whole name (xlb).
    pub unanchored: bool,
    /// Only addresses in these ranges (MetalLB's `ipAddressPools`); none: any.
    pub addresses: Option<Vec<(std::net::IpAddr, std::net::IpAddr)>>,
}

/// When gratuitous ARP / unsolicited NA go out for an address a node takes over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnnounceTimings {
    /// Four rounds, at these offsets in milliseconds from the takeover, ascending, each at
    /// most 60000 (default [0, 50, 250, 1000]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gratuitous_arp_ms: Option<Vec<u64>>,
    /// Then one round every this many seconds while the node owns it, at most 3600; 0:
    /// none (default 30, below common switch FDB ageing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_seconds: Option<u64>,
}

/// The definitions of xlb's resources as one YAML stream, as `xlb crds` prints them.
pub fn crds_yaml() -> Result<String, serde_json::Error> {
    use super::bgp::{BfdProfile, BgpAdvertisement, BgpNodeOverride, BgpPeer};
    yaml(&[
        LoadBalancerIPPool::crd(),
        L2AnnouncementPolicy::crd(),
        BgpPeer::crd(),
        BfdProfile::crd(),
        BgpAdvertisement::crd(),
        BgpNodeOverride::crd(),
    ])
}

/// The definitions of the Cilium kinds xlb serves, as `xlb crds --cilium` prints them: for a
/// cluster whose Manifests keep Cilium's objects after Cilium itself is gone. Written from
/// Cilium's published names (group, kinds, plurals, short names, versions, printer columns,
/// condition types); the schemas are xlb's own types less what xlb adds, so an object
/// accepted here is one Cilium's definitions accept too.
pub fn cilium_crds_yaml() -> Result<String, serde_json::Error> {
    let pool_columns = [
        ("Disabled", "boolean", ".spec.disabled"),
        ("Conflicting", "string", ".status.conditions[?(@.type==\"cilium.io/PoolConflict\")].status"),
        ("IPs Available", "string", ".status.conditions[?(@.type==\"cilium.io/IPsAvailable\")].message"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ];
    let pool = rename(
        LoadBalancerIPPool::crd(),
        ("CiliumLoadBalancerIPPool", "ciliumloadbalancerippools"),
        &["ippools", "ippool", "lbippool", "lbippools"],
        &[("v2alpha1", &[]), ("v2", &[("spec", "cidrs")])],
        &pool_columns,
        &[("status", "counts")],
    );
    let l2 = rename(
        L2AnnouncementPolicy::crd(),
        ("CiliumL2AnnouncementPolicy", "ciliuml2announcementpolicies"),
        &["l2announcement"],
        &[("v2alpha1", &[])],
        &[("Age", "date", ".metadata.creationTimestamp")],
        &[("spec", "announce")],
    );
    yaml(&[pool, l2])
}

/// Definitions as one YAML stream.
pub(crate) fn yaml(crds: &[CustomResourceDefinition]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(crd).map_err(serde::ser::Error::custom)?);
    }
    Ok(out)
}

/// Fields of a schema: (`spec` or `status`, field).
type Fields<'a> = &'a [(&'a str, &'a str)];

/// `crd` moved to group `cilium.io` as `kind` (with its plural), served at `versions` (the
/// last one stored; each without its own fields), with these printer columns and without the
/// xlb-only `drop` fields.
fn rename(
    mut crd: CustomResourceDefinition,
    (kind, plural): (&str, &str),
    short: &[&str],
    versions: &[(&str, Fields<'_>)],
    columns: &[(&str, &str, &str)],
    drop: Fields<'_>,
) -> CustomResourceDefinition {
    crd.metadata.name = Some(format!("{plural}.cilium.io"));
    let spec = &mut crd.spec;
    spec.group = "cilium.io".into();
    spec.names = CustomResourceDefinitionNames {
        kind: kind.into(),
        list_kind: Some(format!("{kind}List")),
        plural: plural.into(),
        singular: Some(kind.to_lowercase()),
        short_names: Some(short.iter().map(|s| (*s).to_string()).collect()),
        categories: Some(vec!["cilium".into()]),
    };
    let Some(mut template) = spec.versions.pop() else { return crd };
    template.additional_printer_columns = Some(
        columns
            .iter()
            .map(|(name, type_, path)| CustomResourceColumnDefinition {
                name: (*name).into(),
                type_: (*type_).into(),
                json_path: (*path).into(),
                ..CustomResourceColumnDefinition::default()
            })
            .collect(),
    );
    without(&mut template, drop);
    spec.versions = versions
        .iter()
        .enumerate()
        .map(|(i, (name, fields))| {
            let mut v = CustomResourceDefinitionVersion {
                name: (*name).into(),
                served: true,
                storage: i + 1 == versions.len(),
                ..template.clone()
            };
            without(&mut v, fields);
            v
        })
        .collect();
    crd
}

fn without(v: &mut CustomResourceDefinitionVersion, fields: Fields<'_>) {
    let props = v.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()).and_then(|s| s.properties.as_mut());
    if let Some(props) = props {
        for (part, field) in fields {
            if let Some(p) = props.get_mut(*part).and_then(|p| p.properties.as_mut()) {
                p.remove(*field);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_name_cilium_fields_and_have_schemas() -> Result<(), serde_json::Error> {
        let y = crds_yaml()?;
        for field in [
            "blocks",
            "serviceSelector",
            "allowFirstLastIPs",
            "disabled",
            "nodeSelector",
            "interfaces",
            "loadBalancerIPs",
            "externalIPs",
        ] {
            assert!(y.contains(field), "{field} missing from the CRDs");
        }
        let pool = LoadBalancerIPPool::crd();
        assert_eq!(pool.spec.group, "xlb.dev");
        assert_eq!(pool.spec.scope, "Cluster");
        let v = &pool.spec.versions[0];
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "status subresource");
        let schema = serde_json::to_value(&v.schema)?;
        assert!(schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["cidrs"].is_object());
        // A pool written as in Cilium's docs parses.
        let p: LoadBalancerIPPoolSpec = serde_json::from_value(serde_json::json!({
            "blocks": [{"cidr": "192.0.2.0/28"}, {"start": "192.0.2.100", "stop": "192.0.2.110"}],
            "allowFirstLastIPs": "Yes",
            "serviceSelector": {"matchLabels": {"team": "a"}}
        }))?;
        assert_eq!(p.allow_first_last_ips, Some(YesNo::Yes));
        assert_eq!(p.blocks.len(), 2);
        Ok(())
    }
}

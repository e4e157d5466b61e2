//! The custom resources of group `xlb.dev`, version `v1alpha1`. Field names follow Cilium's
//! `CiliumLoadBalancerIPPool` and `CiliumL2AnnouncementPolicy`, so that moving from Cilium is
//! a rename of `apiVersion` and `kind`. `xlb crds` prints their definitions (derived from
//! these types with schemars).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum YesNo {
    /// Hand them out.
    Yes,
    /// Skip them (the default).
    #[default]
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
    pub blocks: Vec<IpBlock>,
    /// Only Services matching this selector take addresses from the pool (none: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Whether the first and last address of each CIDR block may be handed out.
    #[serde(default, rename = "allowFirstLastIPs")]
    pub allow_first_last_ips: YesNo,
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

/// The definitions of both resources as one YAML stream, as `xlb crds` prints them.
pub fn crds_yaml() -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for crd in [LoadBalancerIPPool::crd(), L2AnnouncementPolicy::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).map_err(serde::ser::Error::custom)?);
    }
    Ok(out)
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
        assert_eq!(schema["openAPIV3Schema"]["properties"]["spec"]["required"], serde_json::json!(["blocks"]));
        // A pool written as in Cilium's docs parses.
        let p: LoadBalancerIPPoolSpec = serde_json::from_value(serde_json::json!({
            "blocks": [{"cidr": "192.0.2.0/28"}, {"start": "192.0.2.100", "stop": "192.0.2.110"}],
            "allowFirstLastIPs": "Yes",
            "serviceSelector": {"matchLabels": {"team": "a"}}
        }))?;
        assert_eq!(p.allow_first_last_ips, YesNo::Yes);
        assert_eq!(p.blocks.len(), 2);
        Ok(())
    }
}

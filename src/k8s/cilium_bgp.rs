//! Cilium's `CiliumBGPPeeringPolicy` (cilium.io/v2alpha1, Cilium's first BGP control plane),
//! read as xlb's BGP objects with Cilium's meaning, so that a cluster moving from Cilium keeps
//! its policy unchanged (seed 003: one virtual router, a neighbour, a service selector):
//!
//! - each neighbour of each virtual router is a `BGPPeer` of the policy's nodes
//!   (`nodeSelector`; none: every node), with the router's `localASN`; `peerAddress` is
//!   written as a CIDR there (`10.0.0.1/32`); `authSecretRef` names a Secret, read from
//!   xlb's namespace (Cilium reads its `bgp-secrets-namespace`);
//! - each virtual router's `serviceSelector` is a `BGPAdvertisement` from those nodes. As
//!   in Cilium, a virtual router without one advertises no Service.
//!
//! What xlb does not do is said (a log line, an Event on the policy) with the policy's
//! field, never dropped silently: pod CIDRs (`exportPodCIDR`, `podIPPoolSelector`),
//! per-neighbour path attributes (`advertisedPathAttributes`), and `serviceAdvertisements`
//! other than `LoadBalancerIP` and `ExternalIP`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DynamicObject, ObjectMeta};
use serde::Deserialize;

use super::{
    bgp::{BgpAdvertisement, BgpAdvertisementSpec, BgpPeer, BgpPeerSpec, PasswordSecret},
    foreign::{spec_of, Kind},
};

/// Cilium's BGP peering policies.
pub const CILIUM_BGP_POLICY: Kind =
    Kind { group: "cilium.io", kind: "CiliumBGPPeeringPolicy", what: "ciliumbgppeeringpolicies" };

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicySpec {
    #[serde(default)]
    node_selector: Option<LabelSelector>,
    #[serde(default)]
    virtual_routers: Vec<VirtualRouter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VirtualRouter {
    #[serde(rename = "localASN")]
    local_asn: u32,
    #[serde(default, rename = "exportPodCIDR")]
    export_pod_cidr: bool,
    #[serde(default, rename = "podIPPoolSelector")]
    pod_ip_pool_selector: Option<serde_json::Value>,
    #[serde(default)]
    service_selector: Option<LabelSelector>,
    #[serde(default)]
    service_advertisements: Vec<String>,
    #[serde(default)]
    neighbors: Vec<Neighbor>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Neighbor {
    peer_address: String,
    #[serde(default)]
    peer_port: Option<u32>,
    #[serde(rename = "peerASN")]
    peer_asn: u32,
    #[serde(default)]
    auth_secret_ref: Option<String>,
    #[serde(default, rename = "eBGPMultihopTTL")]
    ebgp_multihop_ttl: Option<u32>,
    #[serde(default)]
    connect_retry_time_seconds: Option<u32>,
    #[serde(default)]
    hold_time_seconds: Option<u32>,
    #[serde(default)]
    keep_alive_time_seconds: Option<u32>,
    #[serde(default)]
    graceful_restart: Option<GracefulRestart>,
    #[serde(default)]
    advertised_path_attributes: Vec<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct GracefulRestart {
    #[serde(default)]
    enabled: bool,
}

/// What the policies say, as xlb's objects, and what in them xlb does not do.
#[derive(Debug, Default)]
pub struct Read {
    /// One per neighbour.
    pub peers: Vec<BgpPeer>,
    /// One per virtual router with a service selector.
    pub advertisements: Vec<BgpAdvertisement>,
    /// One line each, naming the policy and its field.
    pub problems: Vec<String>,
}

/// `policies` read as xlb's BGP objects.
pub fn read(policies: &[std::sync::Arc<DynamicObject>]) -> Read {
    let mut out = Read::default();
    for p in policies {
        let name = p.metadata.name.clone().unwrap_or_default();
        let spec: PolicySpec = match spec_of(p) {
            Ok(s) => s,
            Err(e) => {
                out.problems.push(format!("CiliumBGPPeeringPolicy {name}: {e}; the policy is left out"));
                continue;
            }
        };
        for (i, vr) in spec.virtual_routers.iter().enumerate() {
            let at = format!("CiliumBGPPeeringPolicy {name} spec.virtualRouters[{i}]");
            let mut unsupported = |field: &str, what: &str| {
                out.problems
                    .push(format!("{at}.{field}: {what}; xlb advertises Service addresses only, and leaves it out"));
            };
            if vr.export_pod_cidr {
                unsupported("exportPodCIDR", "pod CIDRs are not advertised");
            }
            if vr.pod_ip_pool_selector.is_some() {
                unsupported("podIPPoolSelector", "pod IP pools are not advertised");
            }
            for (k, a) in vr.service_advertisements.iter().enumerate() {
                if a != "LoadBalancerIP" && a != "ExternalIP" {
                    unsupported(&format!("serviceAdvertisements[{k}]"), &format!("{a:?} is not advertised"));
                }
            }
            for (j, n) in vr.neighbors.iter().enumerate() {
                let at = format!("{at}.neighbors[{j}]");
                if !n.advertised_path_attributes.is_empty() {
                    out.problems.push(format!(
                        "{at}.advertisedPathAttributes: not read yet; the routes carry no community or local preference"
                    ));
                }
                // Cilium writes the address as a host prefix.
                let address = n.peer_address.split('/').next().unwrap_or_default().to_string();
                out.peers.push(BgpPeer {
                    metadata: ObjectMeta { name: Some(format!("{name}-{i}-{j}")), ..ObjectMeta::default() },
                    spec: BgpPeerSpec {
                        local_asn: vr.local_asn,
                        peer_address: address,
                        peer_asn: n.peer_asn,
                        peer_port: n.peer_port,
                        hold_time_seconds: n.hold_time_seconds,
                        keep_alive_time_seconds: n.keep_alive_time_seconds,
                        connect_retry_time_seconds: n.connect_retry_time_seconds,
                        ebgp_multihop_ttl: n.ebgp_multihop_ttl.filter(|t| *t > 1),
                        source_address: None,
                        bfd_profile: None,
                        password_secret_ref: n
                            .auth_secret_ref
                            .as_ref()
                            .map(|s| PasswordSecret { name: s.clone(), key: None }),
                        graceful_restart: n.graceful_restart.as_ref().is_some_and(|g| g.enabled),
                        node_selector: spec.node_selector.clone(),
                        origin: Some(at),
                    },
                    status: None,
                });
            }
            // No selector: Cilium advertises no Service of this virtual router.
            let Some(services) = &vr.service_selector else { continue };
            out.advertisements.push(BgpAdvertisement {
                metadata: ObjectMeta { name: Some(format!("{name}-{i}")), ..ObjectMeta::default() },
                spec: BgpAdvertisementSpec {
                    pools: Vec::new(),
                    service_selector: Some(services.clone()),
                    node_selector: spec.node_selector.clone(),
                    communities: Vec::new(),
                    local_pref: None,
                    peers: Vec::new(),
                    aggregation_length: None,
                    aggregation_length_v6: None,
                    origin: Some(format!("CiliumBGPPeeringPolicy {name} spec.virtualRouters[{i}]")),
                },
            });
        }
    }
    out.problems.sort();
    out
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use super::*;
    use crate::k8s::bgp::{for_node, Objects};

    fn policy(text: &str) -> Arc<DynamicObject> {
        Arc::new(serde_saphyr::from_str(text).unwrap())
    }

    /// Seed 003's policy, as written there.
    const SEED_003: &str = "apiVersion: cilium.io/v2alpha1\nkind: CiliumBGPPeeringPolicy\nmetadata:\n  name: vyos-peering\nspec:\n  nodeSelector:\n    matchLabels:\n      bgp: enabled\n  virtualRouters:\n    - localASN: 64513\n      exportPodCIDR: false\n      neighbors:\n        - peerAddress: 10.10.30.1/32\n          peerASN: 64512\n      serviceSelector:\n        matchExpressions:\n          - key: app\n            operator: Exists\n";

    #[test]
    fn seed_003s_policy_peers_the_labelled_nodes_with_vyos_and_advertises_the_selected_services() {
        let read = read(&[policy(SEED_003)]);
        assert!(read.problems.is_empty(), "{:?}", read.problems);
        let peers: Vec<Arc<BgpPeer>> = read.peers.into_iter().map(Arc::new).collect();
        let ads: Vec<Arc<BgpAdvertisement>> = read.advertisements.into_iter().map(Arc::new).collect();
        let objs = Objects { peers: &peers, advertisements: &ads, ..Objects::default() };
        let on: BTreeMap<String, String> = [("bgp".to_string(), "enabled".to_string())].into();
        let node = for_node("worker-1", &on, objs, "xlb-system");
        let cfg = node.config.clone().unwrap();
        assert_eq!((cfg.asn, cfg.peers.len()), (64513, 1));
        let p = &cfg.peers[0];
        assert_eq!(
            (p.address.to_string(), p.asn, p.hold_time, p.keepalive, p.connect_retry),
            ("10.10.30.1".into(), 64512, 90, 30, 120)
        );
        let app: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        assert_eq!(node.routes_of(&app, Some("any-pool")), [cfg.advertisements[0].id]);
        assert!(node.routes_of(&BTreeMap::new(), None).is_empty(), "a Service without the app label");
        // A node without the label does not peer.
        assert!(for_node("worker-2", &BTreeMap::new(), objs, "xlb-system").config.is_none());
    }

    #[test]
    fn what_xlb_does_not_do_is_said_on_the_policy_and_no_selector_advertises_nothing() {
        let text = "apiVersion: cilium.io/v2alpha1\nkind: CiliumBGPPeeringPolicy\nmetadata: {name: p}\nspec:\n  virtualRouters:\n    - localASN: 64513\n      exportPodCIDR: true\n      serviceAdvertisements: [LoadBalancerIP, ClusterIP]\n      neighbors:\n        - {peerAddress: 10.0.0.1/32, peerASN: 64512, holdTimeSeconds: 2, advertisedPathAttributes: [{selectorType: PodCIDR}]}\n";
        let read = read(&[policy(text)]);
        let all = read.problems.join("\n");
        for needle in [
            "CiliumBGPPeeringPolicy p spec.virtualRouters[0].exportPodCIDR: pod CIDRs are not advertised",
            "CiliumBGPPeeringPolicy p spec.virtualRouters[0].serviceAdvertisements[1]: \"ClusterIP\" is not advertised",
            "CiliumBGPPeeringPolicy p spec.virtualRouters[0].neighbors[0].advertisedPathAttributes: not read yet",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
        assert!(read.advertisements.is_empty(), "no serviceSelector: no Service advertised, as in Cilium");
        for p in &read.problems {
            assert_eq!(crate::k8s::bgp::subject(p), Some(("cilium.io/v2alpha1", "CiliumBGPPeeringPolicy", "p")), "{p}");
        }
        // A bad field is said with the policy's path.
        let peers: Vec<Arc<BgpPeer>> = read.peers.into_iter().map(Arc::new).collect();
        let node = for_node("n", &BTreeMap::new(), Objects { peers: &peers, ..Objects::default() }, "xlb-system");
        assert_eq!(
            node.problems,
            ["CiliumBGPPeeringPolicy p spec.virtualRouters[0].neighbors[0].holdTimeSeconds: 2 is outside 3-65535 (default 90)"]
        );
    }
}

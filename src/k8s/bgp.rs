//! BGP in a cluster: xlb's kinds `BGPPeer`, `BFDProfile`, `BGPAdvertisement` and
//! `BGPNodeOverride` (group `xlb.dev`, cluster-scoped), and the speaker configuration one
//! node makes of them ([`for_node`]). The fields are those of the standalone `bgp:` section,
//! with the names MetalLB and Cilium give them, and are checked by the same code
//! (`control::config::bgp`), so an object is refused for what a file would be refused for,
//! and the message names the object and its field.
//!
//! What a node does with them: it peers with every `BGPPeer` whose `nodeSelector` selects
//! it, and advertises each VIP it serves that a `BGPAdvertisement` selecting it selects
//! (see `plan`). A peer that does not check out is left out and said (log and Event); the
//! others go on.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{LabelSelector, Time},
};
use kube::{CustomResource, ResourceExt as _};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::alloc::selects;
use crate::control::{
    bgp::{Advertisement, BgpConfig},
    config::{
        bgp::{check_aggregation, check_bfd_profile, check_communities, check_password, check_peer},
        file::{BfdProfileFile, BgpPeerFile},
        ConfigError,
    },
};

/// A router the nodes peer with (fields of the standalone `bgp.peers[]`, plus `localASN`,
/// `nodeSelector` and the password's Secret).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "xlb.dev",
    version = "v1alpha1",
    kind = "BGPPeer",
    root = "BgpPeer",
    plural = "bgppeers",
    shortname = "bgppeer",
    status = "BgpPeerStatus",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"Peer ASN","type":"integer","jsonPath":".spec.peerASN"}"#,
    printcolumn = r#"{"name":"Local ASN","type":"integer","jsonPath":".spec.localASN"}"#,
    printcolumn = r#"{"name":"BFD","type":"string","jsonPath":".spec.bfdProfile"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerSpec {
    /// The nodes' AS number in this session (Cilium's `localASN`, MetalLB's `myASN`). All
    /// the peers of one node must agree (or a `BGPNodeOverride` sets it for the node).
    #[serde(rename = "localASN")]
    pub local_asn: u32,
    /// The router's address.
    pub peer_address: String,
    /// The router's AS number.
    #[serde(rename = "peerASN")]
    pub peer_asn: u32,
    /// The router's port (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u32>,
    /// Seconds without a message before the session is dropped (3-65535, default 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time_seconds: Option<u32>,
    /// Seconds between keepalives (default 30; less than the hold time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_time_seconds: Option<u32>,
    /// Seconds between connection attempts (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_retry_time_seconds: Option<u32>,
    /// Hops to a router that is not on a connected network (1-255; none: directly connected).
    #[serde(default, rename = "eBGPMultihopTTL", skip_serializing_if = "Option::is_none")]
    pub ebgp_multihop_ttl: Option<u32>,
    /// The address sessions are opened from (a `BGPNodeOverride` may set one per node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// The `BFDProfile` that watches the session (none: no BFD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,
    /// The TCP-MD5 password: a key of a Secret in xlb's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<PasswordSecret>,
    /// Graceful restart (default off: a node that stops is left at once, not waited for).
    #[serde(default)]
    pub graceful_restart: bool,
    /// The nodes that peer with this router (none: every node running xlb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// In memory only: the object of another project's kind it was read from, for messages
    /// (e.g. `CiliumBGPPeeringPolicy vyos spec.virtualRouters[0].neighbors[0]`).
    #[serde(skip)]
    #[schemars(skip)]
    pub origin: Option<String>,
}

/// Where a peer's password is: key `key` of Secret `name` in xlb's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PasswordSecret {
    /// The Secret's name.
    pub name: String,
    /// The key that holds the password (default `password`, as MetalLB and Cilium read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The sessions of a peer, one entry per node that peers with it, each written by its node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BgpPeerStatus {
    /// By node.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub nodes: Vec<PeerSession>,
}

/// One node's session with a peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerSession {
    /// The node.
    pub node: String,
    /// BGP state as FRR names it (`Established`, `Active`, `Connect`, ...).
    pub session: String,
    /// BFD state (`up`, `down`, `init`), if the peer has a BFD profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
    /// Routes this node advertises to the peer.
    pub advertised: u32,
    /// When the session state last changed, as this node saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// BFD timers for the peers that name the profile (MetalLB's `BFDProfile` fields).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "xlb.dev",
    version = "v1alpha1",
    kind = "BFDProfile",
    root = "BfdProfile",
    plural = "bfdprofiles",
    shortname = "bfdprofile",
    printcolumn = r#"{"name":"Receive","type":"integer","jsonPath":".spec.receiveInterval"}"#,
    printcolumn = r#"{"name":"Transmit","type":"integer","jsonPath":".spec.transmitInterval"}"#,
    printcolumn = r#"{"name":"Multiplier","type":"integer","jsonPath":".spec.detectMultiplier"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BfdProfileSpec {
    /// Slowest rate this node wants to receive at, in ms (10-60000, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_interval: Option<u32>,
    /// Rate this node sends at, in ms (10-60000, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval: Option<u32>,
    /// Packets missed before the session is down (2-255, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_multiplier: Option<u32>,
    /// Wait for the peer to start.
    #[serde(default)]
    pub passive_mode: bool,
    /// Lowest TTL accepted from a multihop peer (1-254, default 254).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ttl: Option<u32>,
}

/// Which VIPs the nodes advertise, from which nodes, and with what.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "xlb.dev",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    root = "BgpAdvertisement",
    plural = "bgpadvertisements",
    shortname = "bgpadv"
)]
#[serde(rename_all = "camelCase")]
pub struct BgpAdvertisementSpec {
    /// The `LoadBalancerIPPool`s (or Cilium pools) whose addresses it selects (none: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// The Services whose addresses it selects (none: any). With `pools`, both must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// The nodes that advertise them (none: every node that peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Communities set on the routes: `65000:100`, `large:64512:1:2`, or a well-known
    /// name (`no-export`, `no-advertise`, `local-as`, `no-peer`, `blackhole`,
    /// `graceful-shutdown`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// LOCAL_PREF set on the routes (iBGP peers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// The `BGPPeer`s (by name) the routes go to (none: every peer of the node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// The prefix length IPv4 addresses are advertised with (1-32, default 32: each address
    /// alone; shorter: the prefix that holds it, while any address in it is served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length: Option<u32>,
    /// The same for IPv6 (1-128, default 128).
    #[serde(default, rename = "aggregationLengthV6", skip_serializing_if = "Option::is_none")]
    pub aggregation_length_v6: Option<u32>,
    /// In memory only: the object of another project's kind it was read from, for messages.
    #[serde(skip)]
    #[schemars(skip)]
    pub origin: Option<String>,
}

/// Settings of one node (the object is named after it), over what its peers say (Cilium's
/// `CiliumBGPNodeConfigOverride`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "xlb.dev",
    version = "v1alpha1",
    kind = "BGPNodeOverride",
    root = "BgpNodeOverride",
    plural = "bgpnodeoverrides",
    shortname = "bgpnode"
)]
#[serde(rename_all = "camelCase")]
pub struct BgpNodeOverrideSpec {
    /// The node's router ID (default: the first IPv4 address of the interface xlb serves).
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// The node's AS number, over its peers' `localASN`.
    #[serde(default, rename = "localASN", skip_serializing_if = "Option::is_none")]
    pub local_asn: Option<u32>,
    /// Addresses sessions are opened from, at most one per family: each peer of that family
    /// uses it, over its own `sourceAddress`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_addresses: Vec<String>,
}

/// The BGP objects of the cluster, as one node reads them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Objects<'a> {
    /// Every `BGPPeer`.
    pub peers: &'a [Arc<BgpPeer>],
    /// Every `BFDProfile`.
    pub profiles: &'a [Arc<BfdProfile>],
    /// Every `BGPAdvertisement`.
    pub advertisements: &'a [Arc<BgpAdvertisement>],
    /// Every `BGPNodeOverride`.
    pub overrides: &'a [Arc<BgpNodeOverride>],
    /// The Secrets of xlb's namespace (peers' passwords).
    pub secrets: &'a [Arc<Secret>],
}

/// What an advertisement selects.
#[derive(Debug, Clone, PartialEq)]
struct Selector {
    pools: Vec<String>,
    services: Option<LabelSelector>,
}

impl Selector {
    fn of(spec: &BgpAdvertisementSpec) -> Self {
        Selector { pools: spec.pools.clone(), services: spec.service_selector.clone() }
    }

    fn selects(&self, service_labels: &BTreeMap<String, String>, pool: Option<&str>) -> bool {
        (self.pools.is_empty() || pool.is_some_and(|p| self.pools.iter().any(|x| x == p)))
            && selects(self.services.as_ref(), service_labels)
    }
}

/// What one node does with BGP.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeBgp {
    /// Its speaker's configuration (none: no `BGPPeer` selects it).
    pub config: Option<BgpConfig>,
    /// What each of `config.advertisements` selects.
    selectors: Vec<Selector>,
    /// What every advertisement in the cluster selects, whichever nodes it is for.
    anywhere: Vec<Selector>,
    /// What is wrong with the objects, one line each, naming the object and its field.
    pub problems: Vec<String>,
}

impl NodeBgp {
    /// The advertisements of this node (their ids, see [`Advertisement::id`]) that select
    /// the VIP of a Service with `service_labels` drawn from `pool`.
    pub fn routes_of(&self, service_labels: &BTreeMap<String, String>, pool: Option<&str>) -> Vec<usize> {
        let Some(cfg) = &self.config else { return Vec::new() };
        let mut ids: Vec<usize> = self
            .selectors
            .iter()
            .zip(&cfg.advertisements)
            .filter(|(s, _)| s.selects(service_labels, pool))
            .map(|(_, a)| a.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Whether some advertisement, for any node, selects such a VIP.
    pub fn routed_anywhere(&self, service_labels: &BTreeMap<String, String>, pool: Option<&str>) -> bool {
        self.anywhere.iter().any(|s| s.selects(service_labels, pool))
    }
}

/// Where field `path` (`spec.x`) of object `kind name` is, for messages: in the object, or
/// in the object of another project's kind it was read from (`origin`).
fn place(kind: &str, name: &str, origin: Option<&String>, path: &str) -> String {
    match origin {
        Some(o) => format!("{o}.{}", path.strip_prefix("spec.").unwrap_or(path)),
        None => format!("{kind} {name}: {path}"),
    }
}

/// `errors`, each line naming the object and field it is about (see [`place`]).
fn said(kind: &str, name: &str, origin: Option<&String>, errors: Vec<ConfigError>, out: &mut Vec<String>) {
    out.extend(errors.into_iter().map(|e| format!("{}: {}", place(kind, name, origin, &e.path), e.message)));
}

/// The password of `r`, from the Secrets of xlb's namespace (`namespace`).
fn password(
    r: &PasswordSecret,
    secrets: &[Arc<Secret>],
    namespace: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let at = "spec.passwordSecretRef";
    let key = r.key.as_deref().unwrap_or("password");
    let Some(secret) = secrets.iter().find(|s| s.name_any() == r.name) else {
        errors.push(ConfigError {
            path: at.into(),
            message: format!(
                "there is no Secret {namespace}/{} (the password's Secret must be in xlb's namespace)",
                r.name
            ),
        });
        return None;
    };
    let from = format!("Secret {namespace}/{} key {key}", r.name);
    let value = secret.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).into_owned());
    let value = value.or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned());
    match value {
        Some(v) => check_password(at, &from, &v, errors),
        None => {
            errors.push(ConfigError { path: at.into(), message: format!("{from}: the Secret has no such key") });
            None
        }
    }
}

/// The speaker configuration of node `me` (labels `labels`), from `objs`; `namespace`:
/// xlb's, where the passwords' Secrets are.
pub fn for_node(me: &str, labels: &BTreeMap<String, String>, objs: Objects<'_>, namespace: &str) -> NodeBgp {
    let mut out = NodeBgp::default();
    let over = objs.overrides.iter().find(|o| o.name_any() == me).map(|o| &o.spec);
    // The profiles, each checked alone.
    let mut bfd_profiles = Vec::new();
    let mut profiles_by_name: Vec<&Arc<BfdProfile>> = objs.profiles.iter().collect();
    profiles_by_name.sort_by_key(|p| p.name_any());
    for p in profiles_by_name {
        let mut errors = Vec::new();
        let s = &p.spec;
        let file = BfdProfileFile {
            name: p.name_any(),
            receive_interval: s.receive_interval,
            transmit_interval: s.transmit_interval,
            detect_multiplier: s.detect_multiplier,
            passive_mode: s.passive_mode,
            minimum_ttl: s.minimum_ttl,
        };
        let checked = check_bfd_profile("spec", &file, &mut errors);
        if errors.is_empty() {
            bfd_profiles.push(checked);
        } else {
            said("BFDProfile", &p.name_any(), None, errors, &mut out.problems);
        }
    }
    let names: HashSet<&str> = bfd_profiles.iter().map(|p| p.name.as_str()).collect();
    // The peers that select this node, by name.
    let mut mine: Vec<&Arc<BgpPeer>> =
        objs.peers.iter().filter(|p| selects(p.spec.node_selector.as_ref(), labels)).collect();
    mine.sort_by_key(|p| p.name_any());
    let mut asn: Option<(u32, String)> = over.and_then(|o| o.local_asn).map(|a| (a, format!("BGPNodeOverride {me}")));
    let sources = over.map(|o| source_addresses(me, &o.source_addresses, &mut out.problems)).unwrap_or_default();
    let mut peers = Vec::new();
    // This node's peers by object name (what advertisements' `peers` name).
    let mut by_name: BTreeMap<String, IpAddr> = BTreeMap::new();
    for p in mine {
        let name = p.name_any();
        let s = &p.spec;
        let mut errors = Vec::new();
        let pw = s.password_secret_ref.as_ref().and_then(|r| password(r, objs.secrets, namespace, &mut errors));
        let file = BgpPeerFile {
            peer_address: s.peer_address.clone(),
            peer_asn: s.peer_asn,
            peer_port: s.peer_port,
            hold_time_seconds: s.hold_time_seconds,
            keep_alive_time_seconds: s.keep_alive_time_seconds,
            connect_retry_time_seconds: s.connect_retry_time_seconds,
            ebgp_multihop_ttl: s.ebgp_multihop_ttl,
            source_address: s.source_address.clone(),
            bfd_profile: s.bfd_profile.clone(),
            password_file: None,
            graceful_restart: s.graceful_restart,
        };
        let checked = check_peer("spec", &file, pw, &names, &mut errors);
        if s.local_asn == 0 {
            errors.push(ConfigError {
                path: "spec.localASN".into(),
                message: "0 is not an AS number (1-4294967295)".into(),
            });
        }
        let who = s.origin.clone().unwrap_or_else(|| format!("BGPPeer {name}"));
        let field = |f: &str| place("BGPPeer", &name, s.origin.as_ref(), f);
        let (Some(mut peer), true) = (checked, errors.is_empty()) else {
            said("BGPPeer", &name, s.origin.as_ref(), errors, &mut out.problems);
            continue;
        };
        match &asn {
            None => asn = Some((s.local_asn, who.clone())),
            Some((a, _)) if over.is_some_and(|o| o.local_asn.is_some()) || *a == s.local_asn => {}
            Some((a, first)) => {
                out.problems.push(format!(
                    "{}: {} differs from {first}'s {a}, and node {me} has one AS number; this peer is left out there (give both the same, keep them apart with nodeSelector, or set the node's in a BGPNodeOverride)",
                    field("spec.localASN"),
                    s.local_asn
                ));
                continue;
            }
        }
        if peers.iter().any(|q: &crate::control::bgp::Peer| q.address == peer.address) {
            out.problems.push(format!(
                "{}: {} is also another peer's that selects node {me}; this one is left out there",
                field("spec.peerAddress"),
                peer.address
            ));
            continue;
        }
        if let Some(a) = sources.iter().find(|a| a.is_ipv4() == peer.address.is_ipv4()) {
            peer.source = Some(*a);
        }
        by_name.insert(name, peer.address);
        peers.push(peer);
    }
    // The advertisements, each checked alone; this node's are those that select it.
    let mut ads: Vec<&Arc<BgpAdvertisement>> = objs.advertisements.iter().collect();
    ads.sort_by_key(|a| a.name_any());
    let mut advertisements = Vec::new();
    for a in ads {
        let mut errors = Vec::new();
        let communities = check_communities("spec", &a.spec.communities, &mut errors);
        let (aggregation_v4, aggregation_v6) =
            check_aggregation("spec", a.spec.aggregation_length, a.spec.aggregation_length_v6, &mut errors);
        for (j, name) in a.spec.peers.iter().enumerate() {
            if !objs.peers.iter().any(|p| p.name_any() == *name) {
                errors.push(ConfigError {
                    path: format!("spec.peers[{j}]"),
                    message: format!("there is no BGPPeer {name:?}"),
                });
            }
        }
        if !errors.is_empty() {
            said("BGPAdvertisement", &a.name_any(), a.spec.origin.as_ref(), errors, &mut out.problems);
            continue;
        }
        out.anywhere.push(Selector::of(&a.spec));
        // To some peers only: those of them this node has (none: the advertisement is not
        // this node's).
        let to: Vec<IpAddr> = a.spec.peers.iter().filter_map(|n| by_name.get(n).copied()).collect();
        if !a.spec.peers.is_empty() && to.is_empty() {
            continue;
        }
        if selects(a.spec.node_selector.as_ref(), labels) {
            out.selectors.push(Selector::of(&a.spec));
            advertisements.push(Advertisement {
                id: advert_id(&a.name_any(), &advertisements),
                pools: Vec::new(),
                services: Vec::new(),
                communities,
                local_pref: a.spec.local_pref,
                l2: false,
                peers: to,
                aggregation_v4,
                aggregation_v6,
            });
        }
    }
    let router_id = over.and_then(|o| o.router_id.as_deref()).and_then(|r| match r.trim().parse::<Ipv4Addr>() {
        Ok(a) => Some(a),
        Err(_) => {
            out.problems.push(format!(
                "BGPNodeOverride {me}: spec.routerID: {r:?} is not an IPv4 address (a router ID is written as one); the interface's address is used"
            ));
            None
        }
    });
    out.problems.sort();
    let Some((asn, _)) = asn.filter(|_| !peers.is_empty()) else { return out };
    out.config = Some(BgpConfig { asn, router_id, listen: false, peers, bfd_profiles, advertisements });
    out
}

/// A number for the advertisement named `name` that none of `taken` has: from its name
/// (FNV-1a), so that it stays when other advertisements come and go; the next free one on a
/// clash.
fn advert_id(name: &str, taken: &[Advertisement]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let mut id = h as usize;
    while taken.iter().any(|a| a.id == id) {
        id = (id + 1) & 0xffff_ffff;
    }
    id
}

/// The object a problem line of [`NodeBgp::problems`] is about: its API version, kind and
/// name (every line starts with the kind and the name).
pub fn subject(line: &str) -> Option<(&'static str, &'static str, &str)> {
    let mut words = line.split_whitespace();
    let (kind, name) = (words.next()?, words.next()?.trim_end_matches(':'));
    let (version, kind) = match kind {
        "BGPPeer" => ("xlb.dev/v1alpha1", "BGPPeer"),
        "BFDProfile" => ("xlb.dev/v1alpha1", "BFDProfile"),
        "BGPAdvertisement" => ("xlb.dev/v1alpha1", "BGPAdvertisement"),
        "BGPNodeOverride" => ("xlb.dev/v1alpha1", "BGPNodeOverride"),
        "CiliumBGPPeeringPolicy" => ("cilium.io/v2alpha1", "CiliumBGPPeeringPolicy"),
        _ => return None,
    };
    Some((version, kind, name))
}

/// A node's source addresses, at most one per family.
fn source_addresses(me: &str, list: &[String], problems: &mut Vec<String>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match s.trim().parse::<IpAddr>() {
            Ok(a) if out.iter().any(|b| b.is_ipv4() == a.is_ipv4()) => problems.push(format!(
                "BGPNodeOverride {me}: spec.sourceAddresses[{i}]: {a} is a second address of its family; give one per family"
            )),
            Ok(a) => out.push(a),
            Err(_) => problems.push(format!(
                "BGPNodeOverride {me}: spec.sourceAddresses[{i}]: {s:?} is not an IP address"
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: serde_json::Value) -> Arc<K> {
        Arc::new(
            serde_json::from_value(
                json!({"apiVersion": "xlb.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}),
            )
            .unwrap(),
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn a_node_peers_with_the_routers_that_select_it_and_advertises_what_its_advertisements_select() {
        let peers = [
            obj::<BgpPeer>(
                "BGPPeer",
                "tor-a",
                json!({"localASN": 64512, "peerAddress": "10.0.0.1", "peerASN": 64500, "bfdProfile": "fast", "nodeSelector": {"matchLabels": {"rack": "a"}}}),
            ),
            obj::<BgpPeer>(
                "BGPPeer",
                "tor-b",
                json!({"localASN": 64512, "peerAddress": "10.0.1.1", "peerASN": 64500, "nodeSelector": {"matchLabels": {"rack": "b"}}}),
            ),
            obj::<BgpPeer>(
                "BGPPeer",
                "core",
                json!({"localASN": 64512, "peerAddress": "fd00::1", "peerASN": 64501, "holdTimeSeconds": 9, "keepAliveTimeSeconds": 3, "passwordSecretRef": {"name": "bgp"}}),
            ),
        ];
        let profiles =
            [obj::<BfdProfile>("BFDProfile", "fast", json!({"receiveInterval": 100, "transmitInterval": 100}))];
        let ads = [
            obj::<BgpAdvertisement>(
                "BGPAdvertisement",
                "public",
                json!({"pools": ["public"], "communities": ["65000:1"]}),
            ),
            obj::<BgpAdvertisement>(
                "BGPAdvertisement",
                "team-a",
                json!({"serviceSelector": {"matchLabels": {"team": "a"}}, "nodeSelector": {"matchLabels": {"rack": "b"}}}),
            ),
        ];
        let secrets = [Arc::new(
            serde_json::from_value::<Secret>(
                json!({"metadata": {"name": "bgp"}, "stringData": {"password": "s3cret"}}),
            )
            .unwrap(),
        )];
        let objs =
            Objects { peers: &peers, profiles: &profiles, advertisements: &ads, overrides: &[], secrets: &secrets };
        let a = for_node("node-1", &labels(&[("rack", "a")]), objs, "xlb-system");
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        let cfg = a.config.clone().unwrap();
        assert_eq!(cfg.asn, 64512);
        let addrs: Vec<String> = cfg.peers.iter().map(|p| p.address.to_string()).collect();
        assert_eq!(addrs, ["fd00::1", "10.0.0.1"], "core (every node) and tor-a (rack a), by name");
        assert_eq!(cfg.peers[0].password.as_deref(), Some("s3cret"));
        assert_eq!((cfg.peers[0].hold_time, cfg.peers[0].keepalive), (9, 3));
        assert_eq!(cfg.peers[1].bfd_profile.as_deref(), Some("fast"));
        assert_eq!(cfg.bfd_profiles[0].receive_ms, 100);
        // Node 1 has the public advertisement only: team-a is for rack b.
        assert_eq!(cfg.advertisements.len(), 1);
        let svc = labels(&[("team", "a")]);
        // Routes name advertisements by ids from their names (stable as others come and go).
        let (public, team_a) = (advert_id("public", &[]), advert_id("team-a", &[]));
        assert_eq!(cfg.advertisements[0].id, public);
        assert_eq!(a.routes_of(&svc, Some("public")), [public]);
        assert!(a.routes_of(&svc, Some("private")).is_empty());
        assert!(a.routed_anywhere(&svc, Some("private")), "rack b routes team a's VIPs from any pool");
        assert!(!a.routed_anywhere(&labels(&[]), Some("private")));
        let b = for_node("node-2", &labels(&[("rack", "b")]), objs, "xlb-system");
        assert_eq!(b.routes_of(&svc, Some("private")), [team_a]);
        let mut both = vec![public, team_a];
        both.sort_unstable();
        assert_eq!(b.routes_of(&svc, Some("public")), both);
        // A node no peer selects has no speaker, whatever the advertisements.
        let none = Objects { peers: &peers[..2], ..objs };
        let c = for_node("node-3", &labels(&[("rack", "c")]), none, "xlb-system");
        assert!(c.config.is_none() && c.routes_of(&svc, Some("public")).is_empty());
        // An advertisement to tor-b only: node 2 sends it there, node 1 (no tor-b) has none.
        let ads = [obj::<BgpAdvertisement>("BGPAdvertisement", "b-only", json!({"peers": ["tor-b"]}))];
        let objs = Objects { advertisements: &ads, ..objs };
        let b = for_node("node-2", &labels(&[("rack", "b")]), objs, "xlb-system");
        assert_eq!(b.config.unwrap().advertisements[0].peers, ["10.0.1.1".parse::<IpAddr>().unwrap()]);
        let a = for_node("node-1", &labels(&[("rack", "a")]), objs, "xlb-system");
        assert!(a.routes_of(&svc, None).is_empty() && a.config.as_ref().unwrap().advertisements.is_empty());
        assert!(a.routed_anywhere(&svc, None), "another node routes them");
    }

    #[test]
    fn each_mistake_names_its_object_and_field_and_leaves_the_others_working() {
        let peers = [
            obj::<BgpPeer>("BGPPeer", "a", json!({"localASN": 64512, "peerAddress": "10.0.0.1", "peerASN": 64500})),
            obj::<BgpPeer>("BGPPeer", "b", json!({"localASN": 64513, "peerAddress": "10.0.0.2", "peerASN": 64500})),
            obj::<BgpPeer>("BGPPeer", "c", json!({"localASN": 64512, "peerAddress": "10.0.0.1", "peerASN": 64500})),
            obj::<BgpPeer>(
                "BGPPeer",
                "d",
                json!({"localASN": 64512, "peerAddress": "10.0.0.4", "peerASN": 64500, "bfdProfile": "slow", "keepAliveTimeSeconds": 100}),
            ),
            obj::<BgpPeer>(
                "BGPPeer",
                "e",
                json!({"localASN": 64512, "peerAddress": "10.0.0.5", "peerASN": 64500, "passwordSecretRef": {"name": "gone"}}),
            ),
            obj::<BgpPeer>(
                "BGPPeer",
                "f",
                json!({"localASN": 64512, "peerAddress": "10.0.0.6", "peerASN": 64500, "passwordSecretRef": {"name": "bgp", "key": "tor"}}),
            ),
        ];
        let profiles = [obj::<BfdProfile>("BFDProfile", "slow", json!({"detectMultiplier": 1}))];
        let ads = [obj::<BgpAdvertisement>(
            "BGPAdvertisement",
            "x",
            json!({"communities": ["65000:70000"], "peers": ["nope"]}),
        )];
        let overrides = [obj::<BgpNodeOverride>(
            "BGPNodeOverride",
            "n",
            json!({"routerID": "fd00::1", "sourceAddresses": ["10.0.0.9", "10.0.0.10"]}),
        )];
        let secrets = [Arc::new(
            serde_json::from_value::<Secret>(json!({"metadata": {"name": "bgp"}, "stringData": {"tor": "has spaces"}}))
                .unwrap(),
        )];
        let objs = Objects {
            peers: &peers,
            profiles: &profiles,
            advertisements: &ads,
            overrides: &overrides,
            secrets: &secrets,
        };
        let n = for_node("n", &labels(&[]), objs, "xlb-system");
        let all = n.problems.join("\n");
        for needle in [
            "BFDProfile slow: spec.detectMultiplier: 1 is outside 2-255",
            "BGPPeer b: spec.localASN: 64513 differs from BGPPeer a's 64512",
            "BGPPeer c: spec.peerAddress: 10.0.0.1 is also another peer's",
            "BGPPeer d: spec.bfdProfile: no BFD profile named \"slow\"",
            "BGPPeer d: spec.keepAliveTimeSeconds: 100 s must be less than holdTimeSeconds (90 s)",
            "BGPPeer e: spec.passwordSecretRef: there is no Secret xlb-system/gone",
            "BGPPeer f: spec.passwordSecretRef: Secret xlb-system/bgp key tor must hold the password alone",
            "BGPAdvertisement x: spec.communities[0]: \"65000:70000\" is not ASN:VALUE",
            "BGPAdvertisement x: spec.peers[0]: there is no BGPPeer \"nope\"",
            "BGPNodeOverride n: spec.routerID: \"fd00::1\" is not an IPv4 address",
            "BGPNodeOverride n: spec.sourceAddresses[1]: 10.0.0.10 is a second address of its family",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
        // Each line names its object, for the Event on it.
        for p in &n.problems {
            let (_, kind, name) = subject(p).unwrap_or_else(|| panic!("no object in {p:?}"));
            assert!(p.starts_with(&format!("{kind} {name}")), "{p}");
        }
        let cfg = n.config.unwrap();
        assert_eq!(cfg.peers.len(), 1, "only a works");
        assert_eq!(cfg.peers[0].source, Some("10.0.0.9".parse().unwrap()), "the node's source address");
        assert!(cfg.advertisements.is_empty() && cfg.router_id.is_none());
        // The node's AS number wins over its peers'.
        let over = [obj::<BgpNodeOverride>("BGPNodeOverride", "n", json!({"localASN": 65000, "routerID": "10.9.9.9"}))];
        let n = for_node("n", &labels(&[]), Objects { overrides: &over, ..objs }, "xlb-system");
        let cfg = n.config.unwrap();
        assert_eq!((cfg.asn, cfg.router_id), (65000, Some(Ipv4Addr::new(10, 9, 9, 9))));
        assert_eq!(cfg.peers.len(), 2, "a and b, whatever their localASN");
    }
}

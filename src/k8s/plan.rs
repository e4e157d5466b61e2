//! What one node serves and announces, computed from the cluster's objects. Pure: every
//! node runs it on the same objects and the same live members, and so agrees on which node
//! owns each VIP without talking to the others.
//!
//! - Datapath services: one per (Service, VIP, port), for every served Service with an
//!   address, whether this node owns the VIP or not (a takeover then only flips the VIP map).
//!   The path to the pods ([`Path`], annotation `xlb.dev/backends`):
//!   - `nodes` (the default): the backends are the cluster's worker nodes and the packet keeps
//!     its destination (DSR), so the node's service proxy (kube-proxy, or an eBPF
//!     replacement), which serves the Service's load-balancer address, maps it to a pod. This
//!     works on any CNI, routed or tunnelled, because xlb needs to reach only the nodes. Nodes
//!     that run xlb, nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers`
//!     and nodes not Ready are not backends; with `externalTrafficPolicy: Local`, only nodes
//!     with a ready endpoint are. With `xlb.dev/mode: snat`, the NodePort instead.
//!   - `endpoints`: the EndpointSlices' addresses, straight to the pods (ready endpoints weight
//!     1; serving but terminating ones weight 0, so they keep their flows and take no new
//!     ones; if every endpoint is terminating, those are used), in SNAT by default; DSR
//!     (`xlb.dev/mode: dsr`) where the pods sit on xlb's segment and hold the VIP.
//! - Owner of a VIP: among the live members that an L2AnnouncementPolicy selecting the
//!   Service selects (node labels, interface regexes) and, for `externalTrafficPolicy:
//!   Local`, that have a ready local endpoint, the one with the highest rendezvous hash of
//!   (node, VIP). A node that leaves moves only its own VIPs.
//! - Routes: with BGP (see `bgp`), every member that could serve a VIP and has a
//!   `BGPAdvertisement` selecting it advertises it (ECMP), whoever owns it on the segment; a
//!   VIP that no L2AnnouncementPolicy selects is routed only (no ARP/NDP from any node). A
//!   node labelled `node.kubernetes.io/exclude-from-external-load-balancers` or not Ready
//!   advertises nothing.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::{core::v1::Node, core::v1::Service, discovery::v1::EndpointSlice};
use kube::ResourceExt as _;

use super::{
    alloc::{labels_with_pseudo, selects},
    bgp::NodeBgp,
    crds::L2AnnouncementPolicy,
    service::{key, served, Settings},
};
use crate::{
    control::{
        announcer::Timing, bgp::BgpConfig, compile::add_interfaces, rendezvous::rank, services::ServiceSpec,
        speaker::Announced,
    },
    lb::{
        maglev::TableSize,
        snapshot::{ForwardMode, ServiceKey},
    },
    wire::ipv4::Protocol,
};

/// Annotation choosing the forwarding mode: `dsr` or `snat` (the default depends on the path).
pub const MODE_ANNOTATION: &str = "xlb.dev/mode";
/// Annotation choosing the path to the pods: `nodes` (default) or `endpoints`.
pub const BACKENDS_ANNOTATION: &str = "xlb.dev/backends";
/// The well-known label that keeps a node out of every load balancer's backends.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// How a Service's packets reach its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Through the worker nodes' service proxy (the default: works on every cluster network).
    Nodes,
    /// Straight to the EndpointSlices' addresses (pods xlb can reach itself).
    Endpoints,
}

impl Path {
    /// The forwarding mode when the Service does not choose one: the nodes' proxy serves the
    /// VIP itself, so DSR; pods do not hold the VIP, so SNAT.
    fn default_mode(self) -> ForwardMode {
        match self {
            Path::Nodes => ForwardMode::Dsr,
            Path::Endpoints => ForwardMode::Snat,
        }
    }
}

/// A live member: a node whose membership Lease is valid, and the interfaces it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node name.
    pub node: String,
    /// The interfaces xlb serves there, comma-separated (as the Lease's annotation says).
    pub interface: String,
}

impl Member {
    /// Each interface it serves.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.interface.split(',').map(str::trim).filter(|i| !i.is_empty())
    }
}

/// The objects the plan is made from.
#[derive(Debug)]
pub struct Cluster<'a> {
    /// Every Service (filtered here).
    pub services: &'a [Arc<Service>],
    /// Every EndpointSlice.
    pub slices: &'a [Arc<EndpointSlice>],
    /// Every Node.
    pub nodes: &'a [Arc<Node>],
    /// Every L2AnnouncementPolicy.
    pub policies: &'a [Arc<L2AnnouncementPolicy>],
    /// Live members, by node name.
    pub members: &'a BTreeMap<String, Member>,
    /// The pools' names and address ranges (which pool a VIP is from).
    pub pools: &'a [(String, Vec<(IpAddr, IpAddr)>)],
    /// This node's BGP speaker and advertisements.
    pub bgp: &'a NodeBgp,
}

/// A VIP and who announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// The Services (`namespace/name`) that use it.
    pub services: Vec<String>,
    /// The announcing node, if any node is eligible.
    pub owner: Option<String>,
    /// Every eligible node, best rendezvous score first (the owner first): with heartbeats,
    /// the first of them that is alive owns the VIP.
    pub candidates: Vec<String>,
    /// Announcement timings of its own, from the first (by name) L2AnnouncementPolicy
    /// that selects its Service and sets `announce`.
    pub timing: Option<Timing>,
}

/// What this node does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Datapath services (all served Services with an address and backends).
    pub specs: Vec<ServiceSpec>,
    /// VIPs this node announces.
    pub vips: Vec<IpAddr>,
    /// Every VIP and its owner.
    pub owners: BTreeMap<IpAddr, Owned>,
    /// Things the user should fix, by Service (`namespace/name`): said in the log.
    pub problems: BTreeMap<String, Vec<String>>,
    /// Of those, the ones that leave a Service's traffic without a backend: also said on
    /// the Service (condition `xlb.dev/BackendsReachable`, see `reach`).
    pub backend_problems: BTreeMap<String, Vec<String>>,
    /// The live members the owners were chosen among.
    pub members: Vec<String>,
    /// Of `vips`, those whose traffic this node's own service proxy takes (every node runs
    /// xlb): xlb answers ARP/NDP for them and hands their packets to the kernel.
    pub local_vips: Vec<IpAddr>,
    /// On a node serving several interfaces: for each VIP it serves, the interfaces the
    /// policies that let it announce the VIP select (the VIP is announced and served there
    /// only; none: on no interface). Empty on a node with one interface.
    pub placement: BTreeMap<IpAddr, Vec<String>>,
    /// This node's BGP speaker (none: it peers with nobody).
    pub bgp: Option<BgpConfig>,
    /// The VIPs this node advertises by BGP while it can serve them, and those that no node
    /// announces on the segment.
    pub announced: Announced,
    /// What is wrong with the BGP objects, one line each.
    pub bgp_problems: Vec<String>,
}

/// One endpoint as the plan uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    addr: IpAddr,
    node: Option<String>,
    ready: bool,
    serving: bool,
    /// Target port per (port name, protocol).
    ports: BTreeMap<(String, u8), u16>,
}

/// The protocol number of a Service port's protocol (TCP when unset), if xlb serves it.
pub(crate) fn proto_of(p: Option<&str>) -> Option<u8> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::TCP),
        "UDP" => Some(Protocol::UDP),
        _ => None,
    }
}

/// The endpoints of a Service, from its slices (deduplicated by address).
/// EndpointSlices by the `namespace/name` of their Service (once per plan: looking them up
/// per Service would cost Services x slices).
fn slices_by_service(slices: &[Arc<EndpointSlice>]) -> HashMap<String, Vec<&EndpointSlice>> {
    let mut out: HashMap<String, Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        if let Some(name) = s.labels().get("kubernetes.io/service-name") {
            out.entry(format!("{}/{name}", s.namespace().unwrap_or_default())).or_default().push(s);
        }
    }
    out
}

fn endpoints(slices: &[&EndpointSlice]) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for s in slices {
        if !matches!(s.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let ports: BTreeMap<(String, u8), u16> = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let proto = proto_of(p.protocol.as_deref())?;
                let port = u16::try_from(p.port?).ok()?;
                Some(((p.name.clone().unwrap_or_default(), proto), port))
            })
            .collect();
        for e in &s.endpoints {
            let Some(addr) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            if out.iter().any(|x| x.addr == addr) {
                continue;
            }
            let c = e.conditions.clone().unwrap_or_default();
            // The API's rules: unknown readiness counts as ready, unknown serving as ready.
            let ready = c.ready.unwrap_or(true);
            let serving = c.serving.unwrap_or(ready);
            let terminating = c.terminating.unwrap_or(false);
            out.push(Endpoint {
                addr,
                node: e.node_name.clone(),
                ready: ready && !terminating,
                serving,
                ports: ports.clone(),
            });
        }
    }
    out
}

fn node_addresses(node: &Node) -> Vec<IpAddr> {
    let addrs = node.status.iter().flat_map(|s| s.addresses.iter().flatten());
    let internal: Vec<IpAddr> =
        addrs.clone().filter(|a| a.type_ == "InternalIP").filter_map(|a| a.address.parse().ok()).collect();
    if internal.is_empty() {
        addrs.filter(|a| a.type_ == "ExternalIP").filter_map(|a| a.address.parse().ok()).collect()
    } else {
        internal
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "Ready")
        .is_none_or(|c| c.status == "True")
}

/// The annotation older Services limit their clients with (the spec field wins when set).
pub const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// The client prefixes a Service admits: `spec.loadBalancerSourceRanges`, or else the
/// annotation's comma-separated list, as kube-proxy reads them (host bits ignored). `None`
/// when one does not parse: the Service is then not served, because serving it would open
/// to every client what its owner meant to close.
fn source_ranges(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    ann: &BTreeMap<String, String>,
    problem: &mut impl FnMut(String),
) -> Option<Vec<ipnet::IpNet>> {
    let (field, list): (&str, Vec<&str>) = match spec.load_balancer_source_ranges.as_deref() {
        Some(l) if !l.is_empty() => ("spec.loadBalancerSourceRanges", l.iter().map(String::as_str).collect()),
        _ => match ann.get(SOURCE_RANGES_ANNOTATION) {
            Some(a) => (SOURCE_RANGES_ANNOTATION, a.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()),
            None => return Some(Vec::new()),
        },
    };
    let mut out = Vec::new();
    for t in list {
        match t.parse::<ipnet::IpNet>() {
            Ok(n) => out.push(n.trunc()),
            Err(_) => {
                problem(format!(
                    "{field}: {t:?} is not a CIDR (like 203.0.113.0/24); not served until it is fixed, so that it is never open to everyone"
                ));
                return None;
            }
        }
    }
    Some(out)
}

/// A node that can take a Service's traffic on the nodes path.
struct Worker {
    name: String,
    addrs: Vec<IpAddr>,
}

/// Whether a node's service proxy may take load-balancer traffic: Ready, and not labelled
/// [`EXCLUDE_LABEL`].
fn takes_lb_traffic(n: &Node) -> bool {
    node_ready(n) && !n.labels().contains_key(EXCLUDE_LABEL)
}

/// The nodes a Service's traffic may go through: those that take load-balancer traffic and
/// do not run xlb. An xlb node is never a backend: its own XDP program would take the packet
/// for the VIP again instead of handing it to its service proxy.
fn workers(me: &str, c: &Cluster<'_>) -> Vec<Worker> {
    c.nodes
        .iter()
        .filter(|n| takes_lb_traffic(n))
        .map(|n| (n.name_any(), n))
        .filter(|(name, _)| name != me && !c.members.contains_key(name))
        .map(|(name, n)| Worker { name, addrs: node_addresses(n) })
        .filter(|w| !w.addrs.is_empty())
        .collect()
}

/// Why a Service on the nodes path has no backend for `vip`, and what to do about it.
fn no_node_backend(workers: &[Worker], nodes: usize, local: bool, vip: IpAddr) -> String {
    let family = if vip.is_ipv4() { "IPv4" } else { "IPv6" };
    let why = if nodes == 0 {
        "no Node objects exist".to_string()
    } else if workers.is_empty() {
        format!(
            "none of the {nodes} nodes can take it (not Ready, labelled {EXCLUDE_LABEL}, or running xlb, whose nodes are never backends)"
        )
    } else if local {
        "externalTrafficPolicy is Local and no worker node has a ready endpoint of it".to_string()
    } else {
        format!("no worker node has an {family} address (InternalIP or ExternalIP)")
    };
    format!(
        "{vip}: no backend on the nodes path: {why}; run the pods on nodes without xlb, or set {BACKENDS_ANNOTATION}: endpoints to reach the pods directly"
    )
}

/// A policy with its interface patterns compiled (once per plan, not per check).
struct Policy<'a> {
    name: String,
    spec: &'a super::crds::L2AnnouncementPolicySpec,
    /// Its `announce` timings, or what is wrong with them.
    timing: Option<Result<Timing, String>>,
    /// xlb's kind anchors them (`eth0` does not match `veth0`); Cilium's kind does not, as
    /// Cilium's l2announcer does not. A pattern that does not compile matches nothing.
    interfaces: Vec<Option<regex::Regex>>,
}

impl<'a> Policy<'a> {
    fn new(p: &'a L2AnnouncementPolicy) -> Self {
        let timing = p.spec.announce.as_ref().map(|a| {
            Timing::parse(a.gratuitous_arp_ms.as_deref(), a.refresh_seconds).map_err(|(field, msg)| {
                let kind = p.spec.read_from.as_ref().map_or("L2AnnouncementPolicy", |r| r.kind);
                format!("{kind} {}: announce.{field}: {msg}; the defaults are used", p.name_any())
            })
        });
        Policy {
            name: p.name_any(),
            spec: &p.spec,
            timing,
            interfaces: p
                .spec
                .interfaces
                .iter()
                .map(|re| match p.spec.read_from.as_ref().is_some_and(|r| r.unanchored) {
                    true => regex::Regex::new(re).ok(),
                    false => regex::Regex::new(&format!("^(?:{re})$")).ok(),
                })
                .collect(),
        }
    }

    /// Whether it announces VIPs of `svc` (`external`: from spec.externalIPs) at all.
    /// (`labels`: the Service's, with the pseudo-labels of `labels_with_pseudo`.)
    fn covers(&self, labels: &BTreeMap<String, String>, vip: IpAddr, external: bool) -> bool {
        let p = self.spec;
        let kind = if external { p.external_ips } else { p.load_balancer_ips };
        let only = p.read_from.as_ref().and_then(|r| r.addresses.as_ref());
        kind && selects(p.service_selector.as_ref(), labels)
            && only.is_none_or(|ranges| {
                ranges.iter().any(|(lo, hi)| lo.is_ipv6() == vip.is_ipv6() && *lo <= vip && vip <= *hi)
            })
    }

    /// Whether it lets `member` announce a VIP of `svc` (`external`: from spec.externalIPs).
    fn allows(
        &self,
        labels: &BTreeMap<String, String>,
        (vip, external): (IpAddr, bool),
        member: &Member,
        node_labels: &BTreeMap<String, String>,
    ) -> bool {
        let p = self.spec;
        self.covers(labels, vip, external)
            && selects(p.node_selector.as_ref(), node_labels)
            && self.interfaces_of(member).next().is_some()
    }

    /// The interfaces of `member` it names (all of them when it names none).
    fn interfaces_of<'m>(&'m self, member: &'m Member) -> impl Iterator<Item = &'m str> + 'm {
        member
            .interfaces()
            .filter(|i| self.spec.interfaces.is_empty() || self.interfaces.iter().flatten().any(|r| r.is_match(i)))
    }
}

/// The interfaces of `member` on which `policies` let it announce `vip` of a Service with
/// `labels` (with the pseudo-labels; `external`: from spec.externalIPs).
fn placed_on(
    policies: &[Policy<'_>],
    labels: &BTreeMap<String, String>,
    vip: (IpAddr, bool),
    member: &Member,
    node_labels: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut on: Vec<String> = Vec::new();
    for p in policies.iter().filter(|p| p.allows(labels, vip, member, node_labels)) {
        add_interfaces(&mut on, p.interfaces_of(member));
    }
    on
}

/// Standalone: announcement policies with their interface patterns compiled once.
pub struct Policies<'a>(Vec<Policy<'a>>);

impl<'a> Policies<'a> {
    /// `policies`, compiled.
    pub fn new(policies: &'a [L2AnnouncementPolicy]) -> Self {
        Policies(policies.iter().map(Policy::new).collect())
    }

    /// The interfaces of `member` (this box) on which they let it announce `vip` of a
    /// service with `labels` (with the pseudo-labels).
    pub fn announced_on(
        &self,
        labels: &BTreeMap<String, String>,
        vip: IpAddr,
        member: &Member,
        node_labels: &BTreeMap<String, String>,
    ) -> Vec<String> {
        placed_on(&self.0, labels, (vip, false), member, node_labels)
    }
}

/// The plan of node `me`. `snat_families`: whether a SNAT address exists for (IPv4, IPv6).
pub fn plan(me: &str, c: &Cluster<'_>, settings: &Settings, snat_families: (bool, bool)) -> Plan {
    let mut out = Plan { members: c.members.keys().cloned().collect(), ..Plan::default() };
    let no_labels = BTreeMap::new();
    let node_labels: BTreeMap<String, &BTreeMap<String, String>> =
        c.nodes.iter().map(|n| (n.name_any(), n.labels())).collect();
    let labels_of = |n: &str| node_labels.get(n).copied().unwrap_or(&no_labels);
    let mut policies: Vec<Policy<'_>> = c.policies.iter().map(|p| Policy::new(p)).collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    let by_service = slices_by_service(c.slices);
    let workers = workers(me, c);
    // Nodes whose own service proxy may take a VIP's traffic (see `own` below).
    let proxies: BTreeSet<String> = c.nodes.iter().filter(|n| takes_lb_traffic(n)).map(|n| n.name_any()).collect();
    let mut own_vips: BTreeMap<IpAddr, bool> = BTreeMap::new();
    let mut announced: HashSet<IpAddr> = HashSet::new();
    let mut own_routed: BTreeSet<IpAddr> = BTreeSet::new();
    // This node advertises routes while it is a live member that takes load-balancer
    // traffic (Ready, not excluded by label).
    let routing = c.bgp.config.is_some()
        && c.members.contains_key(me)
        && c.nodes.iter().any(|n| n.name_any() == me && takes_lb_traffic(n));
    let mut services: Vec<&Arc<Service>> = c.services.iter().filter(|s| served(s, settings)).collect();
    services.sort_by_key(|s| key(s));
    for svc in services {
        let k = key(svc);
        let spec = svc.spec.clone().unwrap_or_default();
        let ann = svc.annotations();
        let mut problem = |msg: String| out.problems.entry(k.clone()).or_default().push(msg);
        let mut vips: Vec<(IpAddr, bool)> = svc
            .status
            .iter()
            .filter_map(|s| s.load_balancer.as_ref())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .map(|a| (a, false))
            .collect();
        vips.extend(spec.external_ips.iter().flatten().filter_map(|a| a.parse().ok()).map(|a| (a, true)));
        if vips.is_empty() {
            continue;
        }
        let path = match ann.get(BACKENDS_ANNOTATION).map(String::as_str) {
            None | Some("nodes") => Path::Nodes,
            Some("endpoints") => Path::Endpoints,
            Some(other) => {
                problem(format!("annotation {BACKENDS_ANNOTATION}: {other:?} is not nodes or endpoints; using nodes"));
                Path::Nodes
            }
        };
        let mode = match ann.get(MODE_ANNOTATION).map(String::as_str) {
            None => path.default_mode(),
            Some("dsr") => ForwardMode::Dsr,
            Some("snat") => ForwardMode::Snat,
            Some(other) => {
                let d = path.default_mode();
                problem(format!("annotation {MODE_ANNOTATION}: {other:?} is not dsr or snat; using {}", d.name()));
                d
            }
        };
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let secs = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10_800);
            Duration::from_secs(u64::try_from(secs.clamp(1, 86_400)).unwrap_or(10_800))
        });
        let Some(sources) = source_ranges(&spec, ann, &mut problem) else { continue };
        let eps = endpoints(by_service.get(&k).map_or(&[][..], Vec::as_slice));
        let svc_labels = labels_with_pseudo(svc.labels(), &svc.namespace().unwrap_or_default(), &svc.name_any());
        // Nodes with a ready endpoint of this Service (externalTrafficPolicy Local).
        let local_nodes: BTreeSet<&str> = eps.iter().filter(|e| e.ready).filter_map(|e| e.node.as_deref()).collect();
        // Every node that could take it runs xlb (a small cluster with xlb everywhere, as
        // Cilium's L2 announcements run): the node that announces the VIP hands its packets
        // to its own service proxy, as MetalLB's and Cilium's L2 modes do.
        let own = path == Path::Nodes && mode == ForwardMode::Dsr && workers.is_empty() && !c.nodes.is_empty();
        // Straight to the pods with Local: only a node with a pod of its own keeps the
        // client's address. Through the nodes, the worker nodes do that.
        let may_serve = |node: &str| match (path, own) {
            (Path::Endpoints, _) => !local || local_nodes.contains(node),
            (Path::Nodes, false) => true,
            (Path::Nodes, true) => proxies.contains(node) && (!local || local_nodes.contains(node)),
        };
        for (vip, external) in &vips {
            let eligible: Vec<&str> = c
                .members
                .values()
                .filter(|m| may_serve(&m.node))
                .filter(|m| policies.iter().any(|p| p.allows(&svc_labels, (*vip, *external), m, labels_of(&m.node))))
                .map(|m| m.node.as_str())
                .collect();
            // BGP: every member that may serve it advertises it, if an advertisement of its
            // own selects it.
            let pool =
                c.pools.iter().find(|(_, r)| r.iter().any(|(a, b)| a <= vip && vip <= b)).map(|(n, _)| n.as_str());
            let adverts = c.bgp.routes_of(&svc_labels, pool);
            if !adverts.is_empty() && routing && may_serve(me) {
                let on = out.announced.routes.entry(*vip).or_default();
                for a in &adverts {
                    crate::control::bgp::add_advert(on, *a);
                }
                // Every node runs xlb: this one's own service proxy takes what it routes.
                if own {
                    own_routed.insert(*vip);
                }
            }
            let routed = !adverts.is_empty() || c.bgp.routed_anywhere(&svc_labels, pool);
            let candidates = rank(*vip, eligible.iter().copied());
            let who = candidates.first().cloned();
            if who.is_none() && !routed {
                let why = if c.policies.is_empty() {
                    "no L2AnnouncementPolicy exists: create one that selects this Service and the ingress nodes"
                } else if path == Path::Endpoints && local && local_nodes.is_empty() {
                    "externalTrafficPolicy is Local and no xlb node has a ready endpoint of it"
                } else if own {
                    "every node runs xlb, so the node that announces it must hand it to its own service proxy, and no live xlb node can (Ready, not labelled node.kubernetes.io/exclude-from-external-load-balancers, with Local a ready endpoint of its own)"
                } else {
                    "no live xlb node is selected for it by an L2AnnouncementPolicy (serviceSelector, nodeSelector, interfaces, loadBalancerIPs/externalIPs)"
                };
                problem(format!("{vip} is not announced: {why}"));
            }
            let timing = match policies
                .iter()
                .filter(|p| p.covers(&svc_labels, *vip, *external))
                .find_map(|p| p.timing.as_ref())
            {
                Some(Ok(t)) => Some(*t),
                Some(Err(msg)) => {
                    problem(msg.clone());
                    None
                }
                None => None,
            };
            // A VIP shared by Services has one owner: the first Service's that has one (all
            // nodes agree: they see the Services in one order).
            // (No owner: no candidates, as `who` is the first of them.)
            let entry = out.owners.entry(*vip).or_insert_with(|| Owned {
                services: Vec::new(),
                owner: None,
                candidates: Vec::new(),
                timing,
            });
            if entry.candidates.is_empty() {
                entry.owner.clone_from(&who);
                entry.candidates = candidates;
            }
            entry.services.push(k.clone());
            // Several interfaces here: the VIP goes on those the policies that let this
            // node announce it select, for every Service that uses it.
            if let Some(m) = c.members.get(me).filter(|m| m.interfaces().nth(1).is_some()) {
                let on = placed_on(&policies, &svc_labels, (*vip, *external), m, labels_of(me));
                add_interfaces(out.placement.entry(*vip).or_default(), on);
            }
            if entry.owner.as_deref() == Some(me) && announced.insert(*vip) {
                out.vips.push(*vip);
            }
            // Through this node's own proxy: nothing for xlb's datapath, the VIP's packets
            // go to the kernel. Every Service of a VIP must agree (the XDP program passes or
            // takes a VIP's traffic as a whole).
            match (own, own_vips.insert(*vip, own)) {
                (_, None) => {}
                (now, Some(before)) if now == before => {}
                _ => {
                    problem(format!(
                        "{vip} is shared with a Service on another path; all Services of an address must take the same path ({BACKENDS_ANNOTATION}, {MODE_ANNOTATION})"
                    ));
                    own_vips.insert(*vip, false);
                }
            }
            if own {
                continue;
            }
            if mode == ForwardMode::Snat && !(if vip.is_ipv4() { snat_families.0 } else { snat_families.1 }) {
                problem(format!("{vip}: mode snat needs a SNAT address of its family (--snat-addr); not served"));
                continue;
            }
            for p in spec.ports.iter().flatten() {
                let Some(proto) = proto_of(p.protocol.as_deref()) else { continue };
                let Ok(port) = u16::try_from(p.port) else { continue };
                let pname = p.name.clone().unwrap_or_default();
                let mut backends: Vec<(IpAddr, u16, u32)> = Vec::new();
                if path == Path::Nodes {
                    let node_port = p.node_port.and_then(|n| u16::try_from(n).ok());
                    let target = if mode == ForwardMode::Dsr { Some(port) } else { node_port };
                    let Some(target) = target else {
                        problem(format!("port {port}: backends are nodes in snat mode but it has no nodePort"));
                        continue;
                    };
                    for n in &workers {
                        if local && !local_nodes.contains(n.name.as_str()) {
                            continue;
                        }
                        for a in n.addrs.iter().filter(|a| a.is_ipv4() == vip.is_ipv4()) {
                            if !backends.iter().any(|b| b.0 == *a) {
                                backends.push((*a, target, 1));
                            }
                        }
                    }
                    if backends.is_empty() {
                        let why = no_node_backend(&workers, c.nodes.len(), local, *vip);
                        out.backend_problems.entry(k.clone()).or_default().push(why.clone());
                        problem(why);
                    }
                } else {
                    for e in eps.iter().filter(|e| e.serving && e.addr.is_ipv4() == vip.is_ipv4()) {
                        if local && e.node.as_deref() != Some(me) {
                            continue;
                        }
                        let Some(target) = e.ports.get(&(pname.clone(), proto)).copied() else { continue };
                        if mode == ForwardMode::Dsr && target != port {
                            problem(format!(
                                "port {port}: dsr delivers packets to the port they were sent to, but the endpoints listen on {target}; use {MODE_ANNOTATION}: snat, or make targetPort equal to port"
                            ));
                        }
                        backends.push((e.addr, target, u32::from(e.ready)));
                    }
                    // Every endpoint terminating: use them rather than drop the traffic.
                    if backends.iter().all(|b| b.2 == 0) {
                        for b in &mut backends {
                            b.2 = 1;
                        }
                    }
                }
                if backends.is_empty() {
                    continue;
                }
                backends.sort_unstable();
                let proto_name = if proto == Protocol::UDP { "udp" } else { "tcp" };
                let name = if vips.len() > 1 {
                    format!("{k}/{proto_name}:{vip}:{port}")
                } else {
                    format!("{k}/{proto_name}:{port}")
                };
                out.specs.push(ServiceSpec {
                    name,
                    key: ServiceKey { vip: *vip, port, proto },
                    backends,
                    mode,
                    table_size: TableSize::Auto,
                    affinity,
                    source_ranges: sources.clone(),
                });
            }
        }
    }
    for list in out.problems.values_mut().chain(out.backend_problems.values_mut()) {
        list.dedup();
    }
    out.local_vips = out.vips.iter().copied().filter(|v| own_vips.get(v) == Some(&true)).collect();
    for v in own_routed.into_iter().filter(|v| own_vips.get(v) == Some(&true)) {
        if !out.local_vips.contains(&v) {
            out.local_vips.push(v);
        }
    }
    // Routed VIPs that no node announces on the segment get no ARP/NDP answer from any.
    out.announced.routed_only =
        out.announced.routes.keys().filter(|v| out.owners.get(v).is_none_or(|o| o.owner.is_none())).copied().collect();
    out.bgp.clone_from(&c.bgp.config);
    out.bgp_problems.clone_from(&c.bgp.problems);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::k8s::crds::ReadFrom;

    fn settings() -> Settings {
        Settings {
            class: super::super::service::DEFAULT_CLASS.into(),
            unclassed: false,
            identity: "a".into(),
            namespace: "xlb-system".into(),
            lease_seconds: 15,
        }
    }

    fn svc(name: &str, ip: &str, extra: serde_json::Value) -> Arc<Service> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "xlb.dev/xlb",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}
        });
        merge(&mut v, extra);
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn slice(svc: &str, eps: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("{svc}-x"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": eps
            }))
            .unwrap(),
        )
    }

    fn node(name: &str, ip: &str, labels: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap(),
        )
    }

    fn policy(spec: serde_json::Value) -> Arc<L2AnnouncementPolicy> {
        Arc::new(
            serde_json::from_value(json!({"apiVersion": "xlb.dev/v1alpha1", "kind": "L2AnnouncementPolicy",
                                          "metadata": {"name": "p"}, "spec": spec}))
            .unwrap(),
        )
    }

    fn members(names: &[(&str, &str)]) -> BTreeMap<String, Member> {
        names.iter().map(|(n, i)| (n.to_string(), Member { node: n.to_string(), interface: i.to_string() })).collect()
    }

    fn plan_of(
        me: &str,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        nodes: &[Arc<Node>],
        policies: &[Arc<L2AnnouncementPolicy>],
        m: &BTreeMap<String, Member>,
    ) -> Plan {
        let bgp = NodeBgp::default();
        plan(
            me,
            &Cluster { services, slices, nodes, policies, members: m, pools: &[], bgp: &bgp },
            &settings(),
            (true, false),
        )
    }

    #[test]
    fn every_node_agrees_on_one_owner_and_only_the_lost_nodes_vips_move() {
        let services: Vec<_> =
            (0..50).map(|i| svc(&format!("s{i}"), &format!("192.0.2.{}", i + 1), json!({}))).collect();
        let pol = [policy(json!({"loadBalancerIPs": true}))];
        let three = members(&[("a", "eth0"), ("b", "eth0"), ("c", "eth0")]);
        let plans: Vec<Plan> =
            ["a", "b", "c"].iter().map(|me| plan_of(me, &services, &[], &[], &pol, &three)).collect();
        for p in &plans[1..] {
            assert_eq!(p.owners, plans[0].owners, "nodes disagree");
        }
        let mut all: Vec<IpAddr> = plans.iter().flat_map(|p| p.vips.clone()).collect();
        assert_eq!(all.len(), 50, "each VIP announced by exactly one node");
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 50);
        for p in &plans {
            assert!(p.vips.len() >= 8, "spread: {} of 50 on one node", p.vips.len());
        }
        // c leaves: a and b keep theirs and take only c's.
        let two = members(&[("a", "eth0"), ("b", "eth0")]);
        let after = plan_of("a", &services, &[], &[], &pol, &two);
        for (vip, o) in &plans[0].owners {
            let now = &after.owners[vip].owner;
            if o.owner.as_deref() == Some("c") {
                assert!(now.is_some() && now.as_deref() != Some("c"));
            } else {
                assert_eq!(now, &o.owner, "{vip} moved though its owner stayed");
            }
        }
    }

    #[test]
    fn backends_from_slices_with_terminating_ones_draining() {
        let s = [svc("web", "192.0.2.1", json!({"metadata": {"annotations": {"xlb.dev/backends": "endpoints"}}}))];
        let sl = [slice(
            "web",
            json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": false, "terminating": false}}
            ]),
        )];
        let p = plan_of("a", &s, &sl, &[], &[policy(json!({"loadBalancerIPs": true}))], &members(&[("a", "eth0")]));
        assert_eq!(p.specs.len(), 1);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(p.specs[0].backends, vec![(ip("10.0.0.1"), 8080, 1), (ip("10.0.0.2"), 8080, 0)]);
        assert_eq!(p.specs[0].name, "default/web/tcp:80");
        assert_eq!(p.vips, vec![ip("192.0.2.1")]);
        assert_eq!(p.specs[0].mode, ForwardMode::Snat, "straight to pods: SNAT unless told otherwise");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        // DSR with targetPort 8080 != 80 is reported.
        let dsr = [svc(
            "web",
            "192.0.2.1",
            json!({"metadata": {"annotations": {"xlb.dev/backends": "endpoints", "xlb.dev/mode": "dsr"}}}),
        )];
        let p = plan_of("a", &dsr, &sl, &[], &[policy(json!({"loadBalancerIPs": true}))], &members(&[("a", "eth0")]));
        assert!(p.problems["default/web"].iter().any(|m| m.contains("dsr delivers")), "{:?}", p.problems);
        // All terminating: they are used.
        let sl = [slice(
            "web",
            json!([{"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}}]),
        )];
        let p = plan_of("a", &s, &sl, &[], &[policy(json!({"loadBalancerIPs": true}))], &members(&[("a", "eth0")]));
        assert_eq!(p.specs[0].backends, vec![(ip("10.0.0.2"), 8080, 1)]);
    }

    #[test]
    fn policy_selects_nodes_interfaces_and_services() {
        let s = [svc("web", "192.0.2.1", json!({}))];
        let nodes = [node("a", "10.1.0.1", json!({"ingress": "yes"})), node("b", "10.1.0.2", json!({}))];
        let m = members(&[("a", "veth0"), ("b", "eth0")]);
        // Only b has a matching interface (anchored regex), only a the node label: nobody.
        let pol = [policy(
            json!({"loadBalancerIPs": true, "interfaces": ["eth[0-9]+"], "nodeSelector": {"matchLabels": {"ingress": "yes"}}}),
        )];
        let p = plan_of("a", &s, &[], &nodes, &pol, &m);
        assert_eq!(p.owners.values().next().unwrap().owner, None);
        assert!(p.problems["default/web"][0].contains("not announced"));
        // Without the node selector: b.
        let pol = [policy(json!({"loadBalancerIPs": true, "interfaces": ["eth[0-9]+"]}))];
        assert_eq!(plan_of("a", &s, &[], &nodes, &pol, &m).owners.values().next().unwrap().owner.as_deref(), Some("b"));
        // A policy for other services, or without loadBalancerIPs, announces nothing.
        let pol = [policy(json!({"loadBalancerIPs": true, "serviceSelector": {"matchLabels": {"app": "other"}}}))];
        assert_eq!(plan_of("a", &s, &[], &nodes, &pol, &m).owners.values().next().unwrap().owner, None);
        let pol = [policy(json!({}))];
        assert_eq!(plan_of("a", &s, &[], &nodes, &pol, &m).owners.values().next().unwrap().owner, None);
        // No policy at all: said plainly.
        let p = plan_of("a", &s, &[], &nodes, &[], &m);
        assert!(p.problems["default/web"][0].contains("no L2AnnouncementPolicy exists"));
        // Pool and policy selectors see the pseudo-labels.
        let pol = [policy(
            json!({"loadBalancerIPs": true, "serviceSelector": {"matchLabels": {"io.kubernetes.service.name": "web"}}}),
        )];
        assert!(plan_of("a", &s, &[], &nodes, &pol, &m).owners.values().next().unwrap().owner.is_some());
    }

    /// `../shared/seeds/002`: two interfaces on every node, one Cilium pool and one policy
    /// per interface (`eno1` internal for every node, `eno2` public for control-plane nodes
    /// only), Services picking theirs by a label. Each VIP goes on its policy's interface
    /// only, and the public one only on a control-plane node.
    #[test]
    fn each_vip_goes_on_the_interfaces_its_policies_select() {
        let on = |i: &str| json!({"metadata": {"labels": {"network.example.com/interface": i}}});
        let s = [svc("internal", "192.168.3.150", on("eno1")), svc("public", "192.168.4.150", on("eno2"))];
        let nodes =
            [node("a", "10.1.0.1", json!({"node.kubernetes.io/control-plane": ""})), node("b", "10.1.0.2", json!({}))];
        let cilium = |iface: &str, nodes: serde_json::Value| {
            let mut p = (*policy(json!({
                "serviceSelector": {"matchLabels": {"network.example.com/interface": iface}},
                "nodeSelector": {"matchLabels": nodes},
                "interfaces": [iface], "externalIPs": true, "loadBalancerIPs": true
            })))
            .clone();
            p.spec.read_from = Some(ReadFrom { kind: "CiliumL2AnnouncementPolicy", unanchored: true, addresses: None });
            Arc::new(p)
        };
        let pol = [cilium("eno1", json!({})), cilium("eno2", json!({"node.kubernetes.io/control-plane": ""}))];
        let m = members(&[("a", "eno1,eno2"), ("b", "eno1,eno2")]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (internal, public) = (ip("192.168.3.150"), ip("192.168.4.150"));
        let pa = plan_of("a", &s, &[], &nodes, &pol, &m);
        assert_eq!(pa.owners[&public].candidates, ["a"], "eno2 only on control-plane nodes");
        assert_eq!(pa.placement[&internal], ["eno1"]);
        assert_eq!(pa.placement[&public], ["eno2"]);
        let pb = plan_of("b", &s, &[], &nodes, &pol, &m);
        assert_eq!(pb.placement[&internal], ["eno1"]);
        assert!(pb.placement[&public].is_empty(), "b may not announce it on any interface");
        // A policy that names no interface puts its VIPs on every interface of the node;
        // a node with one interface gets no placement (its VIPs are where they always were).
        let any = [policy(json!({"loadBalancerIPs": true}))];
        assert_eq!(plan_of("a", &s, &[], &nodes, &any, &m).placement[&internal], ["eno1", "eno2"]);
        let one = members(&[("a", "eno1"), ("b", "eno1,eno2")]);
        assert!(plan_of("a", &s, &[], &nodes, &pol, &one).placement.is_empty());
    }

    /// Cilium's l2announcer matches interface patterns unanchored (Go `MatchString`): a
    /// CiliumL2AnnouncementPolicy keeps that meaning, xlb's kind anchors.
    #[test]
    fn a_cilium_policy_matches_interfaces_as_cilium_does() {
        let s = [svc("web", "192.0.2.1", json!({}))];
        let nodes = [node("a", "10.1.0.1", json!({}))];
        let m = members(&[("a", "eth0.100")]);
        let spec = json!({"loadBalancerIPs": true, "interfaces": ["^eth[0-9]+"]});
        let xlb = [policy(spec.clone())];
        assert_eq!(plan_of("a", &s, &[], &nodes, &xlb, &m).owners.values().next().unwrap().owner, None);
        let mut cilium = (*policy(spec)).clone();
        cilium.spec.read_from =
            Some(ReadFrom { kind: "CiliumL2AnnouncementPolicy", unanchored: true, addresses: None });
        let owner =
            plan_of("a", &s, &[], &nodes, &[Arc::new(cilium)], &m).owners.values().next().unwrap().owner.clone();
        assert_eq!(owner.as_deref(), Some("a"));
        // A MetalLB advertisement covers only its pools' addresses.
        let mut ad = (*policy(json!({"loadBalancerIPs": true}))).clone();
        let only = |lo: &str, hi: &str| Some(vec![(lo.parse().unwrap(), hi.parse().unwrap())]);
        let kind = "L2Advertisement";
        ad.spec.read_from = Some(ReadFrom { kind, unanchored: false, addresses: only("192.0.2.0", "192.0.2.9") });
        let owner = |ad: &L2AnnouncementPolicy| {
            plan_of("a", &s, &[], &nodes, &[Arc::new(ad.clone())], &m).owners.values().next().unwrap().owner.clone()
        };
        assert_eq!(owner(&ad).as_deref(), Some("a"));
        ad.spec.read_from = Some(ReadFrom { kind, unanchored: false, addresses: only("192.0.2.2", "192.0.2.9") });
        assert_eq!(owner(&ad), None);
    }

    /// Found in review: a shared address is announced when only its second Service is
    /// selected by a policy.
    #[test]
    fn a_shared_address_is_announced_for_any_of_its_services() {
        let s = [
            svc("a", "192.0.2.1", json!({})),
            svc(
                "b",
                "192.0.2.1",
                json!({"spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}}),
            ),
        ];
        let pol = [policy(
            json!({"loadBalancerIPs": true, "serviceSelector": {"matchLabels": {"io.kubernetes.service.name": "b"}}}),
        )];
        let p = plan_of("a", &s, &[], &[], &pol, &members(&[("a", "eth0")]));
        assert_eq!(p.owners[&"192.0.2.1".parse::<IpAddr>().unwrap()].owner.as_deref(), Some("a"));
    }

    #[test]
    fn a_policy_sets_the_announcement_timings_of_its_vips() {
        let s = [svc("web", "192.0.2.1", json!({}))];
        let m = members(&[("a", "eth0")]);
        let timing =
            |spec| plan_of("a", &s, &[], &[], &[policy(spec)], &m).owners[&"192.0.2.1".parse().unwrap()].timing;
        assert_eq!(timing(json!({"loadBalancerIPs": true})), None, "no announce: the node's defaults");
        let t = timing(
            json!({"loadBalancerIPs": true, "announce": {"gratuitousArpMs": [0, 20, 100, 500], "refreshSeconds": 10}}),
        )
        .unwrap();
        assert_eq!(t.garp_offsets[3], Duration::from_millis(500));
        assert_eq!(t.refresh, Some(Duration::from_secs(10)));
        // Wrong values: said, naming the policy and the field; the defaults are used.
        let bad = policy(json!({"loadBalancerIPs": true, "announce": {"gratuitousArpMs": [100, 0]}}));
        let p = plan_of("a", &s, &[], &[], &[bad], &m);
        assert_eq!(p.owners.values().next().unwrap().timing, None);
        assert!(p.problems["default/web"]
            .iter()
            .any(|e| e.contains("L2AnnouncementPolicy p: announce.gratuitousArpMs")));
    }

    #[test]
    fn local_traffic_policy_uses_only_nodes_with_local_endpoints() {
        let s = [svc(
            "web",
            "192.0.2.1",
            json!({"metadata": {"annotations": {"xlb.dev/backends": "endpoints", "xlb.dev/mode": "dsr"}},
                   "spec": {"externalTrafficPolicy": "Local", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}}),
        )];
        let sl = [slice(
            "web",
            json!([
                {"addresses": ["10.0.0.1"], "nodeName": "b", "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "nodeName": "c", "conditions": {"ready": true}}
            ]),
        )];
        let m = members(&[("a", "eth0"), ("b", "eth0"), ("c", "eth0")]);
        let pol = [policy(json!({"loadBalancerIPs": true}))];
        let pb = plan_of("b", &s, &sl, &[], &pol, &m);
        let owner = pb.owners.values().next().unwrap().owner.clone().unwrap();
        assert!(owner == "b" || owner == "c", "a has no local endpoint but owns it");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(pb.specs[0].backends, vec![(ip("10.0.0.1"), 8080, 1)], "only b's own endpoint");
        assert!(pb.problems.is_empty(), "{:?}", pb.problems);
    }

    #[test]
    fn by_default_traffic_goes_through_the_worker_nodes_never_through_xlb_nodes() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let unready = Arc::new({
            let mut n = (*node("w4", "10.1.0.14", json!({}))).clone();
            n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
            n
        });
        let nodes = [
            node("a", "10.1.0.1", json!({})),
            node("b", "10.1.0.2", json!({})),
            node("w1", "10.1.0.11", json!({})),
            node("w2", "10.1.0.12", json!({})),
            node("w3", "10.1.0.13", json!({EXCLUDE_LABEL: ""})),
            unready,
        ];
        let m = members(&[("a", "eth0"), ("b", "eth0")]);
        let pol = [policy(json!({"loadBalancerIPs": true}))];
        // Cluster: every worker that can take it, in DSR with the port kept; not the xlb
        // nodes (a, b), the excluded one (w3) nor the one not Ready (w4).
        let s = [svc("web", "192.0.2.1", json!({}))];
        let p = plan_of("a", &s, &[], &nodes, &pol, &m);
        assert_eq!(p.specs[0].backends, vec![(ip("10.1.0.11"), 80, 1), (ip("10.1.0.12"), 80, 1)]);
        assert_eq!(p.specs[0].mode, ForwardMode::Dsr);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        // Local: only the workers with a ready endpoint; any xlb node may own the VIP (the
        // workers keep the client's address), whether it has an endpoint or not.
        let s = [svc("web", "192.0.2.1", json!({"spec": {"externalTrafficPolicy": "Local"}}))];
        let sl = [slice(
            "web",
            json!([
                {"addresses": ["10.244.2.7"], "nodeName": "w2", "conditions": {"ready": true}},
                {"addresses": ["10.244.1.7"], "nodeName": "w1", "conditions": {"ready": false}}
            ]),
        )];
        let p = plan_of("a", &s, &sl, &nodes, &pol, &m);
        assert_eq!(p.specs[0].backends, vec![(ip("10.1.0.12"), 80, 1)]);
        assert!(p.owners[&ip("192.0.2.1")].owner.is_some());
        // No worker at all, in SNAT (so not through the xlb nodes' own proxies): said, with
        // the way out.
        let snat = [svc("web", "192.0.2.1", json!({"metadata": {"annotations": {"xlb.dev/mode": "snat"}}}))];
        let p = plan_of("a", &snat, &sl, &nodes[..2], &pol, &m);
        assert!(p.specs.is_empty());
        let why = &p.backend_problems["default/web"][0];
        assert!(
            why.contains("none of the 2 nodes can take it") && why.contains("xlb.dev/backends: endpoints"),
            "{why}"
        );
        // With SNAT: the NodePort.
        let s = [svc("web", "192.0.2.1", json!({"metadata": {"annotations": {"xlb.dev/mode": "snat"}}}))];
        let p = plan_of("a", &s, &[], &nodes, &pol, &m);
        assert_eq!(p.specs[0].backends, vec![(ip("10.1.0.11"), 30080, 1), (ip("10.1.0.12"), 30080, 1)]);
        assert_eq!(p.specs[0].mode, ForwardMode::Snat);
    }

    #[test]
    fn unserved_services_and_bad_annotations() {
        let s = [
            svc("other", "192.0.2.2", json!({"spec": {"loadBalancerClass": "someone.else/lb"}})),
            svc("v6", "2001:db8::1", json!({"metadata": {"annotations": {"xlb.dev/mode": "snat"}}})),
            svc(
                "odd",
                "192.0.2.3",
                json!({"metadata": {"annotations": {"xlb.dev/backends": "pods", "xlb.dev/mode": "nat"}}}),
            ),
        ];
        let nodes = [node("w1", "10.1.0.11", json!({}))];
        let p = plan_of("a", &s, &[], &nodes, &[policy(json!({"loadBalancerIPs": true}))], &members(&[("a", "eth0")]));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!p.owners.contains_key(&ip("192.0.2.2")), "another class's Service");
        assert!(p.problems["default/v6"].iter().any(|m| m.contains("needs a SNAT address")));
        let odd = &p.problems["default/odd"];
        assert!(odd.iter().any(|m| m.contains("\"pods\" is not nodes or endpoints; using nodes")), "{odd:?}");
        assert!(odd.iter().any(|m| m.contains("\"nat\" is not dsr or snat; using dsr")), "{odd:?}");
        assert_eq!(p.specs.len(), 1);
        assert_eq!(p.specs[0].backends, vec![(ip("10.1.0.11"), 80, 1)]);
    }

    #[test]
    fn source_ranges_from_the_spec_or_the_annotation_and_never_open_by_mistake() {
        let nodes = [node("w1", "10.1.0.11", json!({}))];
        let pol = [policy(json!({"loadBalancerIPs": true}))];
        let m = members(&[("a", "eth0")]);
        let ranges = |extra| {
            let p = plan_of("a", &[svc("web", "192.0.2.1", extra)], &[], &nodes, &pol, &m);
            (p.specs.first().map(|s| s.source_ranges.iter().map(ToString::to_string).collect::<Vec<_>>()), p.problems)
        };
        assert_eq!(ranges(json!({})).0, Some(vec![]));
        let spec = json!({"spec": {"loadBalancerSourceRanges": ["203.0.113.0/24", "2001:db8::1/48"]},
                          "metadata": {"annotations": {SOURCE_RANGES_ANNOTATION: "10.0.0.0/8"}}});
        assert_eq!(ranges(spec).0, Some(vec!["203.0.113.0/24".into(), "2001:db8::/48".into()]), "the spec wins");
        let ann = json!({"metadata": {"annotations": {SOURCE_RANGES_ANNOTATION: "10.0.0.0/8, 192.168.1.0/24"}}});
        assert_eq!(ranges(ann).0, Some(vec!["10.0.0.0/8".into(), "192.168.1.0/24".into()]));
        let (served, problems) = ranges(json!({"spec": {"loadBalancerSourceRanges": ["203.0.113.0/24", "office"]}}));
        assert_eq!(served, None, "a range that does not parse: not served at all");
        assert!(problems["default/web"][0].contains("\"office\" is not a CIDR"), "{problems:?}");
    }

    #[test]
    fn with_xlb_on_every_node_the_announcing_node_hands_traffic_to_its_own_proxy() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let nodes = [node("a", "10.1.0.1", json!({})), node("b", "10.1.0.2", json!({}))];
        let m = members(&[("a", "eth0"), ("b", "eth0")]);
        let pol = [policy(json!({"loadBalancerIPs": true}))];
        let s = [svc("web", "192.0.2.1", json!({}))];
        let plans: Vec<Plan> = ["a", "b"].iter().map(|me| plan_of(me, &s, &[], &nodes, &pol, &m)).collect();
        let owner = plans[0].owners[&ip("192.0.2.1")].owner.clone().unwrap();
        for (me, p) in ["a", "b"].iter().zip(&plans) {
            assert!(p.specs.is_empty(), "nothing for xlb's datapath: {:?}", p.specs);
            assert!(p.problems.is_empty(), "{:?}", p.problems);
            let mine = owner == *me;
            assert_eq!(p.local_vips, if mine { vec![ip("192.0.2.1")] } else { vec![] }, "{me}");
        }
        // Local: only a node with a ready endpoint may announce it.
        let local = [svc("web", "192.0.2.1", json!({"spec": {"externalTrafficPolicy": "Local"}}))];
        let sl = [slice("web", json!([{"addresses": ["10.244.2.7"], "nodeName": "b", "conditions": {"ready": true}}]))];
        let p = plan_of("a", &local, &sl, &nodes, &pol, &m);
        assert_eq!(p.owners[&ip("192.0.2.1")].owner.as_deref(), Some("b"));
        assert!(p.local_vips.is_empty());
        // An excluded node never announces it; with none left, said.
        let excluded =
            [node("a", "10.1.0.1", json!({EXCLUDE_LABEL: ""})), node("b", "10.1.0.2", json!({EXCLUDE_LABEL: ""}))];
        let p = plan_of("a", &s, &[], &excluded, &pol, &m);
        assert_eq!(p.owners[&ip("192.0.2.1")].owner, None);
        assert!(p.problems["default/web"][0].contains("own service proxy"), "{:?}", p.problems);
        // A worker without xlb appears: traffic goes to it instead, through xlb's datapath.
        let three = [nodes[0].clone(), nodes[1].clone(), node("w", "10.1.0.9", json!({}))];
        let p = plan_of("a", &s, &[], &three, &pol, &m);
        assert!(p.local_vips.is_empty());
        assert_eq!(p.specs[0].backends, vec![(ip("10.1.0.9"), 80, 1)]);
    }

    #[test]
    fn every_member_that_may_serve_a_vip_routes_it_and_a_vip_no_policy_selects_is_routed_only() {
        use crate::k8s::bgp::{for_node, BgpAdvertisement, BgpPeer, Objects};
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let peers: [Arc<BgpPeer>; 1] = [Arc::new(
            serde_json::from_value(
                json!({"apiVersion": "xlb.dev/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "r"},
                "spec": {"localASN": 64512, "peerAddress": "10.1.0.254", "peerASN": 64500}}),
            )
            .unwrap(),
        )];
        let ads: [Arc<BgpAdvertisement>; 1] = [Arc::new(
            serde_json::from_value(json!({"apiVersion": "xlb.dev/v1alpha1", "kind": "BGPAdvertisement", "metadata": {"name": "all"}, "spec": {}}))
                .unwrap(),
        )];
        let objs = Objects { peers: &peers, advertisements: &ads, ..Objects::default() };
        let m = members(&[("a", "eth0"), ("b", "eth0")]);
        let s = [svc("web", "192.0.2.1", json!({}))];
        let plan_with = |me: &str, nodes: &[Arc<Node>]| {
            let bgp = for_node(me, &BTreeMap::new(), objs, "xlb-system");
            let c = Cluster { services: &s, slices: &[], nodes, policies: &[], members: &m, pools: &[], bgp: &bgp };
            plan(me, &c, &settings(), (true, false))
        };
        // Through a worker node: both xlb nodes route it; no policy, so on no segment, and
        // no "not announced" problem.
        let nodes =
            [node("a", "10.1.0.1", json!({})), node("b", "10.1.0.2", json!({})), node("w", "10.1.0.9", json!({}))];
        for me in ["a", "b"] {
            let p = plan_with(me, &nodes);
            let id = p.bgp.as_ref().unwrap().advertisements[0].id;
            assert_eq!(p.announced.routes[&ip("192.0.2.1")], [id], "{me}");
            assert!(p.announced.routed_only.contains(&ip("192.0.2.1")), "{me}");
            assert!(p.problems.is_empty() && !p.specs.is_empty(), "{me}: {:?}", p.problems);
            assert!(p.bgp.is_some(), "{me}");
        }
        // A node labelled out of load balancing routes nothing.
        let out = [node("a", "10.1.0.1", json!({EXCLUDE_LABEL: ""})), nodes[1].clone(), nodes[2].clone()];
        assert!(plan_with("a", &out).announced.routes.is_empty());
        // xlb on every node: each routes it and hands it to its own service proxy.
        let everywhere = [nodes[0].clone(), nodes[1].clone()];
        for me in ["a", "b"] {
            let p = plan_with(me, &everywhere);
            assert!(p.announced.routes.contains_key(&ip("192.0.2.1")), "{me}");
            assert_eq!(p.local_vips, [ip("192.0.2.1")], "{me}");
        }
    }
}

//! LoadBalancer IPAM for Kubernetes, pure: from Services and pools (as read from the API) to
//! the addresses each Service gets, and what it asked for and did not get. The allocator (one
//! writer in the cluster, see `controller`) runs this on every change and writes the outcome
//! to the Services' status; every other part of xlb reads addresses from that status.
//!
//! The rules are Cilium's LB-IPAM where Cilium has one (operator/pkg/lbipam/lbipam.go at
//! cilium/cilium a1ef884, cited by function below), so that a cluster moving from Cilium gets
//! the answers it had, with the same condition reasons (`Reason`):
//! - Addresses already in a Service's status are kept first (oldest Service first), so a
//!   restarted allocator, or a new one, adopts what is there and changes nothing. Unlike
//!   Cilium (`stripOrImportIngresses` skips disabled ranges), this holds for an address of a
//!   disabled or conflicting pool too: a restart moves no address.
//! - An address in the status that has left every pool is replaced by a new one, without a
//!   Warning in between.
//! - Requested addresses come from `lbipam.cilium.io/ips` (or its alias
//!   `io.cilium/lb-ipam-ips`) and `spec.loadBalancerIP`, each on its own: those that can be
//!   had are given, and the condition says why the others are not (`satisfySpecificIPRequests`).
//!   Those of `metallb.io/loadBalancerIPs` (or `metallb.universe.tf/`) follow MetalLB: one
//!   per family, all or nothing.
//! - A pool serves a Service only if its `serviceSelector` matches the Service's labels plus
//!   the pseudo-labels `io.kubernetes.service.namespace` and `io.kubernetes.service.name`,
//!   which the Service's own labels cannot override (Cilium's `svcLabels`).
//! - Without a request, one address per family in `spec.ipFamilies` (IPv4 when empty); a
//!   family no pool can serve leaves the others given and the Service unsatisfied
//!   (`satisfyGenericIPRequests`: PreferDualStack and RequireDualStack alike).
//! - Services with the same sharing key (`lbipam.cilium.io/sharing-key`,
//!   `metallb.io/allow-shared-ip`, `metallb.universe.tf/allow-shared-ip`) share an address
//!   when compatible (Cilium's `isCompatible`): same namespace or both opting in with
//!   `lbipam.cilium.io/sharing-cross-namespace` (MetalLB keys cross namespaces freely), no
//!   port used twice (protocol and number), the same `externalTrafficPolicy`, and for
//!   `Local` the same non-empty pod selector. One that is not compatible with any address of
//!   its key gets an address of its own (`satisfyGenericRequest`); one that requested a
//!   shared address waits, saying why.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
    net::IpAddr,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::control::ipam::{Ipam, IpamError, Pool, Request};

/// Annotations that request addresses each on its own (Cilium's), in the order read.
pub const CILIUM_IP_ANNOTATIONS: [&str; 2] = ["lbipam.cilium.io/ips", "io.cilium/lb-ipam-ips"];
/// Annotations that request one address per family, all or nothing (MetalLB's).
pub const METALLB_IP_ANNOTATIONS: [&str; 2] = ["metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"];
/// MetalLB's annotations naming the pool a Service's address comes from.
pub const METALLB_POOL_ANNOTATIONS: [&str; 2] = ["metallb.io/address-pool", "metallb.universe.tf/address-pool"];
/// Cilium's sharing key annotations (same namespace, unless both sides opt in).
pub const CILIUM_SHARING: [&str; 2] = ["lbipam.cilium.io/sharing-key", "io.cilium/lb-ipam-sharing-key"];
/// Cilium's cross-namespace opt-in: namespaces, comma-separated, or `*`.
pub const CILIUM_CROSS_NAMESPACE: [&str; 2] =
    ["lbipam.cilium.io/sharing-cross-namespace", "io.cilium/lb-ipam-sharing-cross-namespace"];
/// MetalLB's sharing key annotations (any namespace).
pub const METALLB_SHARING: [&str; 2] = ["metallb.io/allow-shared-ip", "metallb.universe.tf/allow-shared-ip"];
/// Pseudo-labels a pool's `serviceSelector` may select on.
pub const NAMESPACE_LABEL: &str = "io.kubernetes.service.namespace";
/// See `NAMESPACE_LABEL`.
pub const NAME_LABEL: &str = "io.kubernetes.service.name";

/// Whether `labels` match `sel` (none matches everything). Unknown operators match nothing.
pub fn selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else { return true };
    if let Some(m) = &sel.match_labels {
        if m.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or(&[]);
        let have = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A Service's labels as selectors see them: its own, plus the pseudo-labels (set last, so
/// that no Service can pose as another).
pub fn labels_with_pseudo(labels: &BTreeMap<String, String>, namespace: &str, name: &str) -> BTreeMap<String, String> {
    let mut l = labels.clone();
    l.insert(NAMESPACE_LABEL.into(), namespace.into());
    l.insert(NAME_LABEL.into(), name.into());
    l
}

/// A pool as the allocator sees it.
#[derive(Debug, Clone, Default)]
pub struct PoolView {
    /// The pool (its name in IPAM, blocks, flags).
    pub pool: Pool,
    /// Its object's name, which `metallb.io/address-pool` names.
    pub name: String,
    /// Which Services it serves.
    pub selector: Option<LabelSelector>,
    /// MetalLB's `autoAssign: false`: only Services that name it or ask for one of its
    /// addresses get one.
    pub manual: bool,
    /// MetalLB's `serviceAllocation`: the Services it is for, and its priority.
    pub allocation: Option<Allocation>,
}

/// MetalLB's `serviceAllocation`, its namespace selectors resolved to names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allocation {
    /// Tried before pools without one, lower first, unset last.
    pub priority: Option<i32>,
    /// Only Services in these namespaces (none: any).
    pub namespaces: Vec<String>,
    /// Only Services one of these selects (none: any).
    pub selectors: Vec<LabelSelector>,
}

impl PoolView {
    /// Whether the pool serves `s` (selectors, and MetalLB's namespaces).
    pub fn serves(&self, s: &SvcView) -> bool {
        selects(self.selector.as_ref(), &s.labels)
            && self.allocation.as_ref().is_none_or(|a| {
                (a.namespaces.is_empty() || a.namespaces.contains(&s.namespace))
                    && (a.selectors.is_empty() || a.selectors.iter().any(|sel| selects(Some(sel), &s.labels)))
            })
    }

    /// Its place when pools are tried in turn: MetalLB's pinned pools (those with a
    /// `serviceAllocation`) first, by priority (lower first, unset last); then the others in
    /// the order given (stable).
    pub fn rank(&self) -> (bool, i64) {
        match &self.allocation {
            Some(a) => (false, a.priority.filter(|p| *p > 0).map_or(i64::MAX, i64::from)),
            None => (true, 0),
        }
    }
}

/// How a Service's requested addresses are honoured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RequestRule {
    /// Each on its own (Cilium's annotation, `spec.loadBalancerIP`).
    #[default]
    EachOnItsOwn,
    /// One per family, all or nothing (MetalLB's annotation).
    AllOrNothing,
}

/// A sharing key and who may share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharing {
    /// The key.
    pub key: String,
    /// Namespaces whose Services may share with this one besides its own (`*`: any); for
    /// MetalLB's key, `["*"]`.
    pub cross: Vec<String>,
}

/// A Service as the allocator sees it.
#[derive(Debug, Clone, Default)]
pub struct SvcView {
    /// `namespace/name`.
    pub key: String,
    /// Its namespace.
    pub namespace: String,
    /// Its labels, with the pseudo-labels (`labels_with_pseudo`).
    pub labels: BTreeMap<String, String>,
    /// Addresses it asks for (from annotations or `spec.loadBalancerIP`).
    pub requested: Vec<IpAddr>,
    /// How they are honoured.
    pub rule: RequestRule,
    /// A request that does not parse, said as the reason it gets nothing.
    pub bad_request: Option<String>,
    /// Families wanted, in order (`true`: IPv6).
    pub families: Vec<bool>,
    /// Sharing key.
    pub sharing: Option<Sharing>,
    /// (protocol, port) of each of its ports.
    pub ports: Vec<(u8, u16)>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// Its pod selector (`spec.selector`).
    pub selector: BTreeMap<String, String>,
    /// The pool it names (`metallb.io/address-pool`): addresses only from that one.
    pub pool: Option<String>,
    /// Addresses in its status now.
    pub current: Vec<IpAddr>,
    /// Creation time (RFC 3339; older first when adopting).
    pub created: String,
}

impl SvcView {
    /// The families it wants an address of when it requests none (`true`: IPv6): those of
    /// `spec.ipFamilies`, IPv4 when empty.
    fn wanted_families(&self) -> Vec<bool> {
        if self.families.is_empty() {
            vec![false]
        } else {
            self.families.clone()
        }
    }

    /// Why `self` and `other` (same key) may not share an address, if they may not.
    fn incompatible(&self, other: &SvcView) -> Option<String> {
        let (Some(a), Some(b)) = (&self.sharing, &other.sharing) else {
            return Some("it has no sharing key".into());
        };
        if a.key != b.key {
            return Some(format!("{} has another sharing key", other.key));
        }
        let lets = |s: &Sharing, ns: &str| s.cross.iter().any(|c| c == "*" || c == ns);
        if self.namespace != other.namespace && !(lets(a, &other.namespace) && lets(b, &self.namespace)) {
            return Some(format!(
                "{} is in another namespace, and sharing across namespaces needs both Services to name the other's namespace (or *) in {}",
                other.key, CILIUM_CROSS_NAMESPACE[0]
            ));
        }
        if let Some(p) = self.ports.iter().find(|p| other.ports.contains(p)) {
            let proto = crate::control::config::proto_name(p.0);
            return Some(format!("{} uses {proto} port {} too", other.key, p.1));
        }
        if self.local != other.local {
            return Some(format!("{} has another externalTrafficPolicy", other.key));
        }
        if self.local && (self.selector.is_empty() || self.selector != other.selector) {
            return Some(format!(
                "externalTrafficPolicy is Local and {} selects other pods (or none): one address would have to go to two sets of nodes",
                other.key
            ));
        }
        None
    }
}

/// Why a Service lacks an address it asks for: Cilium's reasons
/// (`cilium.io/IPAMRequestSatisfied`), which xlb's condition carries too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No usable pool holds the address, or none of the family selects the Service.
    NoPool,
    /// The pools that would serve it are full.
    OutOfIps,
    /// The address is in a pool that does not select the Service.
    PoolSelectorMismatch,
    /// The address is another Service's, or reserved.
    AlreadyAllocated,
    /// The address is shared by Services this one may not share with.
    IncompatibleService,
    /// The request does not parse, or asks for what cannot be given.
    InvalidRequest,
}

impl Reason {
    /// Cilium's spelling.
    pub fn cilium(self) -> &'static str {
        match self {
            Reason::NoPool => "no_pool",
            Reason::OutOfIps => "out_of_ips",
            Reason::PoolSelectorMismatch => "pool_selector_mismatch",
            Reason::AlreadyAllocated => "already_allocated",
            Reason::IncompatibleService => "already_allocated_incompatible_service",
            Reason::InvalidRequest => "invalid_request",
        }
    }
}

/// What a Service asked for and did not get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Why, as a reason.
    pub reason: Reason,
    /// Why, for a person: what is wrong and what to do.
    pub message: String,
}

impl Problem {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Problem { reason, message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a Service gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `namespace/name`.
    pub key: String,
    /// The addresses it gets (possibly some of what it asks for).
    pub addrs: Vec<IpAddr>,
    /// What it asks for and does not get (none: satisfied).
    pub problem: Option<Problem>,
}

fn family(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn problem_of(e: &IpamError) -> Problem {
    let reason = match e {
        IpamError::InUse { .. } | IpamError::FirstLast(_) => Reason::AlreadyAllocated,
        IpamError::Exhausted(_) | IpamError::NoneFree(_) => Reason::OutOfIps,
        IpamError::NotInPool(_)
        | IpamError::Avoided(_)
        | IpamError::Disabled(_)
        | IpamError::Conflicting(..)
        | IpamError::NoPool(_) => Reason::NoPool,
    };
    Problem::new(reason, e.to_string())
}

/// Who holds addresses: a Service alone, or the Services sharing an address under one key.
/// A key may have several groups (`#0`, `#1`, ...) when its Services cannot all share.
struct Groups<'a> {
    /// Holder -> the members seen so far this round.
    members: HashMap<String, Vec<&'a SvcView>>,
    /// Key -> its groups (those IPAM knows and those joined this round).
    by_key: HashMap<String, BTreeSet<String>>,
}

impl<'a> Groups<'a> {
    fn new(ipam: &Ipam) -> Self {
        let mut by_key: HashMap<String, BTreeSet<String>> = HashMap::new();
        for h in ipam.holders() {
            if let Some(k) = Self::key_of(h) {
                by_key.entry(k.to_string()).or_default().insert(h.to_string());
            }
        }
        Groups { members: HashMap::new(), by_key }
    }

    fn solo(s: &SvcView) -> String {
        format!("service {}", s.key)
    }

    /// The key of a group's holder name.
    fn key_of(holder: &str) -> Option<&str> {
        holder.strip_prefix("share ").and_then(|h| h.rsplit_once(" #")).map(|(k, _)| k)
    }

    /// The groups of a key, and the name of a new one.
    fn of_key(&self, key: &str) -> (Vec<String>, String) {
        let have: Vec<String> = self.by_key.get(key).into_iter().flatten().cloned().collect();
        let new = (0..).map(|n| format!("share {key} #{n}")).find(|h| !have.contains(h)).unwrap_or_default();
        (have, new)
    }

    /// Why `s` may not join `holder`, if it may not.
    fn refuses(&self, holder: &str, s: &SvcView) -> Option<String> {
        self.members.get(holder).into_iter().flatten().find_map(|m| s.incompatible(m))
    }

    /// Of a key's groups `have`, one without an address of family `v6` yet that takes `s`,
    /// else `new`.
    fn room(&self, ipam: &Ipam, s: &SvcView, v6: bool, have: Vec<String>, new: String) -> String {
        have.into_iter()
            .find(|g| ipam.held_by(g).iter().all(|a| a.is_ipv6() != v6) && self.refuses(g, s).is_none())
            .unwrap_or(new)
    }

    /// Makes `s` a member of `holder`'s group (once).
    fn join(&mut self, holder: &str, s: &'a SvcView) {
        let members = self.members.entry(holder.to_string()).or_default();
        if members.iter().any(|x| x.key == s.key) {
            return;
        }
        members.push(s);
        if let Some(k) = Self::key_of(holder) {
            self.by_key.entry(k.to_string()).or_default().insert(holder.to_string());
        }
    }
}

/// Allocates for every Service; `ipam` keeps the assignments between calls (a new allocator
/// starts from an empty one and adopts the statuses).
pub fn plan(ipam: &mut Ipam, pools: &[PoolView], services: &[SvcView]) -> Vec<Outcome> {
    ipam.set_pools(pools.iter().map(|p| p.pool.clone()).collect());
    let mut order: Vec<&SvcView> = services.iter().collect();
    // Those holding addresses first (adoption), then those asking for specific ones, then
    // the rest; older first within each.
    order.sort_by(|a, b| {
        (a.current.is_empty(), a.requested.is_empty(), &a.created, &a.key).cmp(&(
            b.current.is_empty(),
            b.requested.is_empty(),
            &b.created,
            &b.key,
        ))
    });
    // Holders no Service of this round can be (deleted Services, keys nobody uses, a
    // Service that took a key) give their addresses back before anyone asks.
    let keys: HashSet<&str> = services.iter().filter_map(|s| s.sharing.as_ref().map(|k| k.key.as_str())).collect();
    let solos: HashSet<String> = services.iter().filter(|s| s.sharing.is_none()).map(Groups::solo).collect();
    let gone: Vec<String> = ipam
        .holders()
        .filter(|h| !solos.contains(*h) && !Groups::key_of(h).is_some_and(|k| keys.contains(k)))
        .map(str::to_string)
        .collect();
    for h in gone {
        ipam.release(&h);
    }
    let mut groups = Groups::new(ipam);
    let mut kept: HashMap<String, Vec<IpAddr>> = HashMap::new();
    // First every Service keeps what it holds and may still hold (Cilium's
    // `revalidateAllServices` does the same), so that no request or new allocation takes an
    // address from a Service that keeps it; then requests and new addresses.
    let held: Vec<Vec<(String, IpAddr)>> = order.iter().map(|s| keep(ipam, pools, s, &mut groups)).collect();
    let mut out = Vec::new();
    for (s, held) in order.into_iter().zip(held) {
        let (addrs, problem) = allocate(ipam, pools, s, held, &mut groups, &mut kept);
        out.push(Outcome { key: s.key.clone(), addrs, problem });
    }
    // What nobody asks for any more goes back to its pool.
    let holders: Vec<String> = ipam.holders().map(str::to_string).collect();
    for h in holders {
        match kept.get(&h) {
            Some(keep) => ipam.retain(&h, keep),
            None => ipam.release(&h),
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The addresses `s` holds (its status) and may go on holding: still asked for (requested,
/// or of a family it wants), in a pool that serves it (the one it names, if it names one),
/// and not shared with a Service it may not share with. Each is kept, and `s` joins its
/// holder.
fn keep<'a>(ipam: &mut Ipam, pools: &[PoolView], s: &'a SvcView, groups: &mut Groups<'a>) -> Vec<(String, IpAddr)> {
    if s.bad_request.is_some() {
        return Vec::new();
    }
    let families = s.wanted_families();
    let mut out: Vec<(String, IpAddr)> = Vec::new();
    for a in &s.current {
        let wanted = if s.requested.is_empty() {
            families.contains(&a.is_ipv6()) && out.iter().all(|(_, x)| x.is_ipv6() != a.is_ipv6())
        } else {
            s.requested.contains(a)
        };
        if !wanted || !serves(pools, *a, s) {
            continue;
        }
        if let Ok(h) = holder_for(ipam, s, *a, groups) {
            if ipam.request(&h, &Request::Keep(*a)).is_ok() {
                groups.join(&h, s);
                out.push((h, *a));
            }
        }
    }
    out
}

/// One Service's addresses and what it did not get: those it holds (`held`, from
/// `keep`), then what it asks for and has not got.
fn allocate<'a>(
    ipam: &mut Ipam,
    pools: &[PoolView],
    s: &'a SvcView,
    held: Vec<(String, IpAddr)>,
    groups: &mut Groups<'a>,
    kept: &mut HashMap<String, Vec<IpAddr>>,
) -> (Vec<IpAddr>, Option<Problem>) {
    if let Some(bad) = &s.bad_request {
        return (Vec::new(), Some(Problem::new(Reason::InvalidRequest, bad.clone())));
    }
    let mut got: Vec<(String, IpAddr)> = held;
    let mut problem = None;
    if !s.requested.is_empty() {
        if s.rule == RequestRule::AllOrNothing {
            if let Some(v6) =
                [false, true].into_iter().find(|v6| s.requested.iter().filter(|a| a.is_ipv6() == *v6).count() > 1)
            {
                let p = Problem::new(
                    Reason::InvalidRequest,
                    format!(
                        "{} asks for two {} addresses; give at most one per family",
                        METALLB_IP_ANNOTATIONS[0],
                        family(v6)
                    ),
                );
                return (Vec::new(), Some(p));
            }
        }
        let mut fresh = Vec::new();
        let open: Vec<IpAddr> = s.requested.iter().copied().filter(|a| got.iter().all(|(_, x)| x != a)).collect();
        for a in &open {
            let free = ipam.holder(*a).is_none();
            match specific(ipam, pools, s, *a, groups) {
                Ok((h, a)) => {
                    if free {
                        fresh.push((h.clone(), a));
                    }
                    got.push((h, a));
                }
                Err(p) => problem = Some(p),
            }
        }
        if s.rule == RequestRule::AllOrNothing && problem.is_some() {
            // Nothing is given; what this call took goes back.
            for (h, a) in fresh {
                ipam.free(&h, a);
            }
            got.clear();
        }
    } else {
        let families = s.wanted_families();
        let open: Vec<bool> = families.into_iter().filter(|v6| got.iter().all(|(_, x)| x.is_ipv6() != *v6)).collect();
        for v6 in open {
            match generic(ipam, pools, s, v6, groups) {
                Ok(g) => got.push(g),
                Err(p) => problem = Some(p),
            }
        }
    }
    let mut addrs = Vec::new();
    for (h, a) in got {
        groups.join(&h, s);
        let k = kept.entry(h).or_default();
        if !k.contains(&a) {
            k.push(a);
        }
        addrs.push(a);
    }
    if problem.is_some() && !addrs.is_empty() {
        problem = problem.map(|p| {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            Problem::new(p.reason, format!("{} (given: {})", p.message, list.join(", ")))
        });
    }
    (addrs, problem)
}

/// The holder `s` would hold `a` under, if it may: its own, or a group of its key that has
/// `a` and takes it, or a new group of its key.
fn holder_for(ipam: &Ipam, s: &SvcView, a: IpAddr, groups: &Groups<'_>) -> Result<String, Problem> {
    let Some(sh) = &s.sharing else { return Ok(Groups::solo(s)) };
    let (have, new) = groups.of_key(&sh.key);
    match ipam.holder(a) {
        Some(h) if have.iter().any(|g| g == h) => match groups.refuses(h, s) {
            None => Ok(h.to_string()),
            Some(why) => Err(Problem::new(
                Reason::IncompatibleService,
                format!("{a} is shared by Services this one may not share with: {why}"),
            )),
        },
        // Someone else's (refused by IPAM with its holder named), or free.
        _ => Ok(groups.room(ipam, s, a.is_ipv6(), have, new)),
    }
}

/// A requested address.
fn specific<'a>(
    ipam: &mut Ipam,
    pools: &[PoolView],
    s: &'a SvcView,
    a: IpAddr,
    groups: &Groups<'a>,
) -> Result<(String, IpAddr), Problem> {
    let h = holder_for(ipam, s, a, groups)?;
    if let Some(name) = &s.pool {
        if !pools.iter().any(|p| &p.name == name && p.pool.covers(a)) {
            return Err(Problem::new(
                Reason::NoPool,
                format!("{a} is not in pool {name}, which the annotation {} names", METALLB_POOL_ANNOTATIONS[0]),
            ));
        }
    }
    // The pool IPAM would give it from (of overlapping pools, the one that is not
    // conflicting), else the first that covers it, for the reason.
    let usable = ipam.usable_pool(a).ok();
    let Some(p) =
        pools.iter().find(|p| Some(p.pool.name.as_str()) == usable).or_else(|| pools.iter().find(|p| p.pool.covers(a)))
    else {
        return Err(Problem::new(
            Reason::NoPool,
            format!("{a} is in no pool; add a pool that contains it, or request another address"),
        ));
    };
    if !p.serves(s) {
        return Err(Problem::new(
            Reason::PoolSelectorMismatch,
            format!(
                "{a} is in pool {}, whose serviceSelector (or serviceAllocation) does not select this Service",
                p.pool.name
            ),
        ));
    }
    match ipam.request(&h, &Request::Address(a)) {
        Ok(a) => Ok((h, a)),
        Err(IpamError::FirstLast(a)) => Err(Problem::new(
            Reason::AlreadyAllocated,
            format!(
                "{a} is the first or last address of a CIDR block of pool {}, which reserves them (allowFirstLastIPs: \"No\"); request another address",
                p.pool.name
            ),
        )),
        Err(e) => Err(problem_of(&e)),
    }
}

/// An address of family `v6`: one its key's group shares, else a free one from the first
/// pool that selects it and has room.
fn generic<'a>(
    ipam: &mut Ipam,
    pools: &[PoolView],
    s: &'a SvcView,
    v6: bool,
    groups: &Groups<'a>,
) -> Result<(String, IpAddr), Problem> {
    // (What it holds and may keep was kept by `keep`; one that left every pool is replaced
    // here, quietly.)
    let mut serving: Vec<&PoolView> = pools
        .iter()
        .filter(|p| match &s.pool {
            Some(name) => &p.name == name,
            None => !p.manual,
        })
        .filter(|p| p.serves(s) && p.pool.blocks.iter().any(|b| b.start.is_ipv6() == v6))
        .collect();
    serving.sort_by_key(|p| p.rank());
    if let Some(name) = &s.pool {
        if serving.is_empty() {
            let why = if pools.iter().any(|p| &p.name == name) {
                format!(
                    "pool {name} has no {} addresses, or does not serve this Service (selectors, serviceAllocation)",
                    family(v6)
                )
            } else {
                format!("no pool is named {name}")
            };
            return Err(Problem::new(
                Reason::NoPool,
                format!("{why}; the annotation {} names it", METALLB_POOL_ANNOTATIONS[0]),
            ));
        }
    }
    // A compatible group of its key that has an address of this family in a pool serving it.
    if let Some(sh) = &s.sharing {
        let (have, new) = groups.of_key(&sh.key);
        for g in have.iter() {
            let shared = ipam.held_by(g).iter().copied().find(|a| a.is_ipv6() == v6);
            if let Some(a) = shared {
                if groups.refuses(g, s).is_none() && serving.iter().any(|p| p.pool.contains(a)) {
                    return Ok((g.clone(), a));
                }
            }
        }
        let h = groups.room(ipam, s, v6, have, new);
        return from_pools(ipam, &serving, &h, v6);
    }
    from_pools(ipam, &serving, &Groups::solo(s), v6)
}

/// Whether a pool that selects `s` (the one it names, if it names one) covers `a`, usable or
/// not.
fn serves(pools: &[PoolView], a: IpAddr, s: &SvcView) -> bool {
    pools.iter().any(|p| p.pool.covers(a) && p.serves(s) && s.pool.as_ref().is_none_or(|n| *n == p.name))
}

fn from_pools(ipam: &mut Ipam, serving: &[&PoolView], h: &str, v6: bool) -> Result<(String, IpAddr), Problem> {
    let mut last = Problem::new(
        Reason::NoPool,
        format!("no usable pool with {} addresses selects this Service; add one, or label the Service to match a pool's serviceSelector", family(v6)),
    );
    for p in serving {
        match ipam.request(h, &Request::Pool { name: p.pool.name.clone(), v6 }) {
            Ok(a) => return Ok((h.to_string(), a)),
            Err(e @ (IpamError::Exhausted(_) | IpamError::NoneFree(_))) => last = problem_of(&e),
            Err(e) if last.reason == Reason::NoPool => last = problem_of(&e),
            Err(_) => {}
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    //! Expectations from Cilium's operator/pkg/lbipam (cilium/cilium a1ef884) and MetalLB's
    //! internal/allocator (metallb/metallb 7938d3f), cited per test.
    use super::*;
    use crate::control::ipam::Block;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| ip(s)).collect()
    }

    fn pool(name: &str, cidr: &str) -> PoolView {
        let net: ipnet::IpNet = cidr.parse().unwrap_or_else(|_| "0.0.0.0/32".parse().unwrap_or_default());
        PoolView {
            pool: Pool { name: name.into(), blocks: vec![Block::cidr(net)], allow_first_last: true, ..Pool::default() },
            name: name.into(),
            ..PoolView::default()
        }
    }

    fn svc(key: &str, ports: &[u16]) -> SvcView {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        SvcView {
            key: key.into(),
            namespace: ns.into(),
            labels: labels_with_pseudo(&BTreeMap::new(), ns, name),
            ports: ports.iter().map(|p| (6, *p)).collect(),
            created: "2026-01-01T00:00:00Z".into(),
            ..SvcView::default()
        }
    }

    fn keyed(key: &str, ports: &[u16], k: &str) -> SvcView {
        SvcView { sharing: Some(Sharing { key: k.into(), cross: Vec::new() }), ..svc(key, ports) }
    }

    fn by_key(out: &[Outcome]) -> HashMap<&str, &Outcome> {
        out.iter().map(|o| (o.key.as_str(), o)).collect()
    }

    fn reason(o: &Outcome) -> Option<Reason> {
        o.problem.as_ref().map(|p| p.reason)
    }

    /// Cilium `handleNewPool`: first and last of a CIDR are reserved only when
    /// allowFirstLastIPs is "No"; `satisfySpecificIPRequests` refuses a reserved address as
    /// already_allocated (test TestRequestReservedFirstLastIPWithSharingKey).
    #[test]
    fn first_and_last_addresses_are_given_unless_the_pool_reserves_them() {
        let open = [pool("a", "192.0.2.0/30")];
        let out = plan(&mut Ipam::default(), &open, &[svc("ns/a", &[80])]);
        assert_eq!(out[0].addrs, ips(&["192.0.2.0"]));
        let mut reserving = pool("a", "192.0.2.0/30");
        reserving.pool.allow_first_last = false;
        let mut asks = keyed("ns/b", &[80], "k");
        asks.requested = ips(&["192.0.2.3"]);
        let out = plan(&mut Ipam::default(), &[reserving], &[svc("ns/a", &[80]), asks]);
        let by = by_key(&out);
        assert_eq!(by["ns/a"].addrs, ips(&["192.0.2.1"]));
        assert_eq!(reason(by["ns/b"]), Some(Reason::AlreadyAllocated), "{out:?}");
        assert!(by["ns/b"].problem.as_ref().is_some_and(|p| p.message.contains("allowFirstLastIPs")));
    }

    #[test]
    fn requests_are_each_on_their_own_or_all_or_nothing_as_their_annotation_says() {
        let pools = [pool("a", "192.0.2.0/29"), pool("six", "2001:db8::/126")];
        // Cilium `satisfySpecificIPRequests`: each address on its own; the condition says
        // what is missing (the last failure).
        let mut c = svc("ns/c", &[80]);
        c.requested = ips(&["192.0.2.3", "198.51.100.1"]);
        // MetalLB `Allocator.Assign`: nothing unless every address can be had.
        let mut m = SvcView { rule: RequestRule::AllOrNothing, ..svc("ns/m", &[80]) };
        m.requested = ips(&["192.0.2.4", "2001:db8:ff::1"]);
        let mut two = SvcView { rule: RequestRule::AllOrNothing, ..svc("ns/two", &[80]) };
        two.requested = ips(&["192.0.2.5", "192.0.2.6"]);
        let mut dual = SvcView { rule: RequestRule::AllOrNothing, ..svc("ns/dual", &[80]) };
        dual.requested = ips(&["192.0.2.7", "2001:db8::2"]);
        let mut ipam = Ipam::default();
        let out = plan(&mut ipam, &pools, &[c, m, two, dual]);
        let by = by_key(&out);
        assert_eq!(by["ns/c"].addrs, ips(&["192.0.2.3"]));
        assert_eq!(reason(by["ns/c"]), Some(Reason::NoPool));
        assert!(by["ns/c"].problem.as_ref().is_some_and(|p| p.message.contains("given: 192.0.2.3")));
        assert_eq!((by["ns/m"].addrs.len(), reason(by["ns/m"])), (0, Some(Reason::NoPool)));
        assert_eq!(reason(by["ns/two"]), Some(Reason::InvalidRequest));
        assert_eq!((by["ns/dual"].addrs.clone(), reason(by["ns/dual"])), (ips(&["192.0.2.7", "2001:db8::2"]), None));
        // What m could have had went back: .4 is free for another.
        assert_eq!(ipam.holder(ip("192.0.2.4")), None);
    }

    /// Cilium `serviceIPFamilyRequest` + `satisfyGenericIPRequests`: each family on its own;
    /// a family no pool serves leaves the other given and the Service unsatisfied.
    #[test]
    fn a_family_no_pool_serves_leaves_the_others_given() {
        let mut ds = svc("ns/ds", &[80]);
        ds.families = vec![false, true];
        let out = plan(&mut Ipam::default(), &[pool("a", "192.0.2.0/29")], &[ds]);
        assert_eq!(out[0].addrs, ips(&["192.0.2.0"]));
        assert_eq!(reason(&out[0]), Some(Reason::NoPool));
    }

    /// Cilium `svcLabels`: the pseudo-labels are set after the Service's own labels.
    #[test]
    fn pool_selectors_see_pseudo_labels_that_no_service_can_fake() {
        let mut team = pool("team", "192.0.2.0/29");
        team.selector = Some(LabelSelector {
            match_labels: Some([(NAMESPACE_LABEL.to_string(), "team-a".to_string())].into()),
            ..LabelSelector::default()
        });
        let mut faker = svc("other/web", &[80]);
        faker.labels =
            labels_with_pseudo(&[(NAMESPACE_LABEL.to_string(), "team-a".to_string())].into(), "other", "web");
        let mut asks = svc("other/asks", &[80]);
        asks.requested = ips(&["192.0.2.4"]);
        let out = plan(&mut Ipam::default(), &[team], &[svc("team-a/web", &[80]), faker, asks]);
        let by = by_key(&out);
        assert_eq!(by["team-a/web"].addrs, ips(&["192.0.2.0"]));
        assert_eq!(reason(by["other/web"]), Some(Reason::NoPool));
        assert_eq!(reason(by["other/asks"]), Some(Reason::PoolSelectorMismatch));
    }

    /// Cilium `isCompatible` (service_store.go) and `satisfyGenericRequest`; MetalLB
    /// `sharingOK` for the protocol-aware port check.
    #[test]
    fn sharing_needs_a_compatible_service_and_a_clash_gets_its_own_address() {
        let pools = [pool("a", "192.0.2.0/28")];
        let dns_tcp = keyed("ns/dns-tcp", &[53], "k");
        let mut dns_udp = keyed("ns/dns-udp", &[], "k");
        dns_udp.ports = vec![(17, 53)];
        // Same port and protocol: another address of the key, at once.
        let clash = keyed("ns/clash", &[53], "k");
        // Another namespace opting in alone does not share; both opting in does.
        let mut one_sided = keyed("other/one", &[443], "k");
        one_sided.sharing = Some(Sharing { key: "k".into(), cross: vec!["ns".into()] });
        let mut local = keyed("ns/local", &[8080], "k");
        local.local = true;
        local.selector = [("app".to_string(), "x".to_string())].into();
        let mut ipam = Ipam::default();
        let mut all = vec![dns_tcp, dns_udp, clash, one_sided, local];
        let out = plan(&mut ipam, &pools, &all);
        // Next round: the statuses say what each holds, and one asks for the shared address.
        for (s, o) in all.iter_mut().zip(&out) {
            s.current = o.addrs.clone();
        }
        let mut asks = keyed("ns/asks", &[53], "k");
        let shared = by_key(&out)["ns/dns-tcp"].addrs.clone();
        asks.requested = shared.clone();
        all.push(asks);
        let out = plan(&mut ipam, &pools, &all);
        let by = by_key(&out);
        assert_eq!(by["ns/dns-tcp"].addrs, shared);
        assert_eq!(by["ns/dns-udp"].addrs, shared, "UDP 53 shares with TCP 53");
        assert!(by["ns/clash"].addrs.len() == 1 && by["ns/clash"].addrs != shared, "{out:?}");
        assert!(by["ns/clash"].problem.is_none());
        assert!(by["other/one"].addrs.len() == 1 && by["other/one"].addrs != shared);
        assert!(by["ns/local"].addrs.len() == 1 && by["ns/local"].addrs != shared, "Local does not share with Cluster");
        assert_eq!(reason(by["ns/asks"]), Some(Reason::IncompatibleService), "{out:?}");
        assert!(out.iter().all(|o| o.key == "ns/asks" || o.problem.is_none()), "{out:?}");
        // Both sides opting in share.
        let mut a = keyed("ns/a", &[80], "x");
        a.sharing = Some(Sharing { key: "x".into(), cross: vec!["other".into()] });
        let mut b = keyed("other/b", &[443], "x");
        b.sharing = Some(Sharing { key: "x".into(), cross: vec!["*".into()] });
        let out = plan(&mut Ipam::default(), &pools, &[a, b]);
        assert_eq!(out[0].addrs, out[1].addrs);
        // Local Services share only with one selector.
        let mut l1 = keyed("ns/l1", &[80], "l");
        let mut l2 = keyed("ns/l2", &[443], "l");
        for s in [&mut l1, &mut l2] {
            s.local = true;
            s.selector = [("app".to_string(), "x".to_string())].into();
        }
        let mut l3 = l2.clone();
        l3.key = "ns/l3".into();
        l3.ports = vec![(6, 22)];
        l3.selector = [("app".to_string(), "y".to_string())].into();
        let out = plan(&mut Ipam::default(), &pools, &[l1, l2, l3]);
        assert_eq!(out[0].addrs, out[1].addrs);
        assert_ne!(out[0].addrs, out[2].addrs);
    }

    #[test]
    fn statuses_are_adopted_even_from_disabled_or_conflicting_pools_and_deletions_free() {
        // An older pool edited to overlap a newer one: the newer one is the conflicting one
        // (Cilium `settleConflicts`), and after a restart (a new IPAM) its Service keeps its
        // address, as does one in a disabled pool (Cilium drops both on restart).
        let older = pool("older", "192.0.2.0/28");
        let newer = pool("newer", "192.0.2.8/29");
        let mut off = pool("off", "198.51.100.0/29");
        off.pool.disabled = true;
        let mut held = svc("ns/held", &[80]);
        held.current = ips(&["192.0.2.9"]);
        let mut drained = svc("ns/drained", &[80]);
        drained.current = ips(&["198.51.100.3"]);
        let pools = [older, newer, off];
        let mut ipam = Ipam::default();
        let out = plan(&mut ipam, &pools, &[held.clone(), drained, svc("ns/new", &[80])]);
        let by = by_key(&out);
        assert_eq!((by["ns/held"].addrs.clone(), reason(by["ns/held"])), (ips(&["192.0.2.9"]), None));
        assert_eq!(by["ns/drained"].addrs, ips(&["198.51.100.3"]));
        assert_eq!(by["ns/new"].addrs, ips(&["192.0.2.0"]));
        assert_eq!(ipam.usage()[1].conflict.as_deref(), Some("pool older"));
        // A request for a held address is refused, naming the holder.
        let mut asks = svc("ns/asks", &[80]);
        asks.requested = ips(&["192.0.2.9"]);
        let out = plan(&mut ipam, &pools, &[held.clone(), asks.clone()]);
        assert_eq!(reason(by_key(&out)["ns/asks"]), Some(Reason::AlreadyAllocated));
        // Deleting the holder frees the address for the asker in the same round.
        let out = plan(&mut ipam, &pools, &[asks]);
        assert_eq!((out[0].addrs.clone(), reason(&out[0])), (ips(&["192.0.2.9"]), None));
    }

    proptest::proptest! {
        /// Over rounds of Services coming and going (statuses fed back as the API would),
        /// no address is ever given to two Services that may not share it, and a Service
        /// that stays keeps its address.
        #[test]
        fn sharing_is_safe_and_addresses_stay_put(
            specs in proptest::collection::vec((0u8..3, proptest::sample::subsequence(vec![53u16, 80, 443], 1..=2)), 8),
            rounds in proptest::collection::vec(proptest::collection::vec(proptest::bool::ANY, 8), 1..12),
        ) {
            let pools = [pool("a", "192.0.2.0/28")];
            let all: Vec<SvcView> = specs.iter().enumerate().map(|(i, (k, ports))| {
                let mut s = svc(&format!("ns/s{i}"), ports);
                s.created = format!("2026-01-01T00:00:{i:02}Z");
                s.sharing = (*k > 0).then(|| Sharing { key: format!("k{k}"), cross: Vec::new() });
                s
            }).collect();
            let mut ipam = Ipam::default();
            let mut status: HashMap<String, Vec<IpAddr>> = HashMap::new();
            for present in rounds {
                let round: Vec<SvcView> = all.iter().zip(&present).filter(|(_, p)| **p).map(|(s, _)| {
                    SvcView { current: status.get(&s.key).cloned().unwrap_or_default(), ..s.clone() }
                }).collect();
                let out = plan(&mut ipam, &pools, &round);
                for o in &out {
                    let before = status.get(&o.key).filter(|b| !b.is_empty());
                    if let Some(b) = before {
                        proptest::prop_assert_eq!(b, &o.addrs, "{} moved", o.key);
                    }
                }
                for (i, x) in out.iter().enumerate() {
                    for y in &out[i + 1..] {
                        if x.addrs.iter().any(|a| y.addrs.contains(a)) {
                            let (sx, sy) = (round.iter().find(|s| s.key == x.key), round.iter().find(|s| s.key == y.key));
                            let why = sx.zip(sy).map(|(sx, sy)| sx.incompatible(sy));
                            proptest::prop_assert_eq!(why, Some(None), "{} and {} share {:?}", x.key, y.key, x.addrs);
                        }
                    }
                }
                status = out.into_iter().map(|o| (o.key, o.addrs)).collect();
            }
        }

        /// The same with requests (some for addresses others hold) and a second pool that
        /// comes and goes: a Service keeps its addresses while their pool is there.
        #[test]
        fn requests_and_pools_that_go_move_nothing_else(
            specs in proptest::collection::vec((0u8..3, proptest::sample::subsequence(vec![53u16, 80, 443], 1..=2), proptest::option::of(0u8..6)), 8),
            rounds in proptest::collection::vec((proptest::collection::vec(proptest::bool::ANY, 8), proptest::bool::ANY), 1..12),
        ) {
            let all: Vec<SvcView> = specs.iter().enumerate().map(|(i, (k, ports, want))| {
                let mut s = svc(&format!("ns/s{i}"), ports);
                s.created = format!("2026-01-01T00:00:{i:02}Z");
                s.sharing = (*k > 0).then(|| Sharing { key: format!("k{k}"), cross: Vec::new() });
                // Requests land in either pool: 192.0.2.0-2 or 198.51.100.0-2.
                s.requested = want.iter().map(|w| if *w < 3 { ip(&format!("192.0.2.{w}")) } else { ip(&format!("198.51.100.{}", w - 3)) }).collect();
                s
            }).collect();
            let mut ipam = Ipam::default();
            let mut status: HashMap<String, Vec<IpAddr>> = HashMap::new();
            for (present, with_b) in rounds {
                let mut pools = vec![pool("a", "192.0.2.0/29")];
                if with_b {
                    pools.push(pool("b", "198.51.100.0/29"));
                }
                let round: Vec<SvcView> = all.iter().zip(&present).filter(|(_, p)| **p).map(|(s, _)| {
                    SvcView { current: status.get(&s.key).cloned().unwrap_or_default(), ..s.clone() }
                }).collect();
                let out = plan(&mut ipam, &pools, &round);
                for o in &out {
                    let before = status.get(&o.key).filter(|b| !b.is_empty());
                    if let Some(b) = before.filter(|b| b.iter().all(|a| pools.iter().any(|p| p.pool.covers(*a)))) {
                        proptest::prop_assert_eq!(b, &o.addrs, "{} moved", o.key);
                    }
                }
                for (i, x) in out.iter().enumerate() {
                    for y in &out[i + 1..] {
                        if x.addrs.iter().any(|a| y.addrs.contains(a)) {
                            let (sx, sy) = (round.iter().find(|s| s.key == x.key), round.iter().find(|s| s.key == y.key));
                            let why = sx.zip(sy).map(|(sx, sy)| sx.incompatible(sy));
                            proptest::prop_assert_eq!(why, Some(None), "{} and {} share {:?}", x.key, y.key, x.addrs);
                        }
                    }
                }
                status = out.into_iter().map(|o| (o.key, o.addrs)).collect();
            }
        }
    }

    /// MetalLB `Allocator.Allocate`, `pinnedPoolsForService`, `sortPools`,
    /// `isPoolCompatibleWithService` (internal/allocator/allocator.go at 7938d3f).
    #[test]
    fn metallb_pools_are_tried_as_metallb_tries_them() {
        let alloc = |prio: Option<i32>, ns: &[&str]| {
            Some(Allocation {
                priority: prio,
                namespaces: ns.iter().map(|n| n.to_string()).collect(),
                selectors: Vec::new(),
            })
        };
        let general = pool("general", "192.0.2.0/30");
        let manual = PoolView { manual: true, ..pool("manual", "192.0.2.4/30") };
        let low = PoolView { allocation: alloc(Some(10), &["shop"]), ..pool("low", "192.0.2.8/30") };
        let high = PoolView { allocation: alloc(Some(5), &["shop"]), ..pool("high", "192.0.2.12/30") };
        let unset = PoolView { allocation: alloc(None, &["shop"]), ..pool("unset", "192.0.2.16/30") };
        let other = PoolView { allocation: alloc(Some(1), &["blog"]), ..pool("other", "192.0.2.20/30") };
        let pools = [general, manual, low, unset, high, other];
        let named = SvcView { pool: Some("manual".into()), ..svc("shop/named", &[80]) };
        let missing = SvcView { pool: Some("nope".into()), ..svc("shop/missing", &[80]) };
        let out = plan(&mut Ipam::default(), &pools, &[svc("shop/a", &[80]), svc("web/b", &[80]), named, missing]);
        let by = by_key(&out);
        // Pinned pools by priority (5 before 10 and unset), never another namespace's.
        assert_eq!(by["shop/a"].addrs, ips(&["192.0.2.12"]));
        // Only general pools for a Service no pinned pool serves; never autoAssign: false.
        assert_eq!(by["web/b"].addrs, ips(&["192.0.2.0"]));
        assert_eq!(by["shop/named"].addrs, ips(&["192.0.2.4"]));
        assert!(by["shop/missing"].problem.as_ref().is_some_and(|p| p.message.contains("no pool is named nope")));
        // A requested address of an autoAssign: false pool is given.
        let mut asks = svc("web/asks", &[80]);
        asks.requested = ips(&["192.0.2.5"]);
        let out = plan(&mut Ipam::default(), &pools, &[asks]);
        assert_eq!((out[0].addrs.clone(), reason(&out[0])), (ips(&["192.0.2.5"]), None));
        // ... but not one of a pool pinned to another namespace.
        let mut asks = svc("web/asks", &[80]);
        asks.requested = ips(&["192.0.2.21"]);
        let out = plan(&mut Ipam::default(), &pools, &[asks]);
        assert_eq!(reason(&out[0]), Some(Reason::PoolSelectorMismatch));
    }

    /// Found in review: a Service that is processed first (older) must not take an address
    /// from one that keeps it, by request, by a deleted pool, or while one gains a key.
    #[test]
    fn what_a_service_keeps_no_other_takes_first() {
        let pools = [pool("a", "192.0.2.0/28")];
        let mut ipam = Ipam::default();
        let mut a = keyed("ns/a", &[80], "k");
        a.created = "2026-01-02T00:00:00Z".into();
        a.current = plan(&mut ipam, &pools, std::slice::from_ref(&a))[0].addrs.clone();
        let shared = a.current.clone();
        let mut c = keyed("ns/c", &[80], "k");
        c.created = "2026-01-01T00:00:00Z".into();
        c.current = by_key(&plan(&mut ipam, &pools, &[a.clone(), c.clone()]))["ns/c"].addrs.clone();
        c.requested = shared.clone();
        let out = plan(&mut ipam, &pools, &[a.clone(), c]);
        assert_eq!(by_key(&out)["ns/a"].addrs, shared, "a moved");
        assert_eq!(reason(by_key(&out)["ns/c"]), Some(Reason::IncompatibleService));
        // x gains a key while an older Service's address has left every pool: x keeps its own.
        let mut ipam = Ipam::default();
        let mut x = svc("ns/x", &[80]);
        x.current = plan(&mut ipam, &pools, std::slice::from_ref(&x))[0].addrs.clone();
        let mut old = svc("ns/old", &[80]);
        old.created = "2025-01-01T00:00:00Z".into();
        old.current = ips(&["198.51.100.1"]);
        x.sharing = Some(Sharing { key: "k".into(), cross: Vec::new() });
        let before = x.current.clone();
        let out = plan(&mut ipam, &pools, &[old, x]);
        assert_eq!(by_key(&out)["ns/x"].addrs, before, "x moved");
    }

    /// Found in review: of two overlapping pools, the selector that counts is the one of the
    /// pool the address would come from.
    #[test]
    fn a_requested_address_is_checked_against_the_pool_it_comes_from() {
        let mut everyone = pool("everyone", "192.0.2.0/28");
        everyone
            .pool
            .blocks
            .push(Block::cidr("192.0.2.0/29".parse().unwrap_or_else(|_| "0.0.0.0/32".parse().unwrap_or_default())));
        let mut team = pool("team", "192.0.2.0/28");
        team.selector = Some(LabelSelector {
            match_labels: Some([("team".to_string(), "x".to_string())].into()),
            ..LabelSelector::default()
        });
        let mut asks = svc("ns/asks", &[80]);
        asks.requested = ips(&["192.0.2.3"]);
        let out = plan(&mut Ipam::default(), &[everyone, team], &[asks]);
        assert_eq!(reason(&out[0]), Some(Reason::PoolSelectorMismatch), "{out:?}");
    }

    /// MetalLB `AllocateFromPool`: a Service that names a pool gets its address there, even
    /// one it held elsewhere, and a request outside that pool is refused.
    #[test]
    fn the_named_pool_is_the_only_one() {
        let pools = [pool("a", "192.0.2.0/29"), pool("b", "198.51.100.0/29")];
        let mut s = SvcView { pool: Some("b".into()), ..svc("ns/s", &[80]) };
        s.current = ips(&["192.0.2.0"]);
        let out = plan(&mut Ipam::default(), &pools, std::slice::from_ref(&s));
        assert_eq!(out[0].addrs, ips(&["198.51.100.0"]));
        s.requested = ips(&["192.0.2.4"]);
        let out = plan(&mut Ipam::default(), &pools, &[s]);
        assert_eq!(reason(&out[0]), Some(Reason::NoPool));
    }

    #[test]
    fn an_address_that_left_every_pool_is_replaced_at_once() {
        let mut held = svc("ns/held", &[80]);
        held.current = ips(&["198.51.100.7"]);
        let out = plan(&mut Ipam::default(), &[pool("a", "192.0.2.0/29")], &[held]);
        assert_eq!((out[0].addrs.clone(), reason(&out[0])), (ips(&["192.0.2.0"]), None));
    }
}

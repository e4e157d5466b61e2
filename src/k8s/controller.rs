//! The allocator: watches LoadBalancer Services and pools, and, while it holds the cluster's
//! allocator Lease (one writer at a time), writes each Service's addresses to
//! `status.loadBalancer.ingress` with a condition and an Event, and each pool's counts and
//! conflicts to its status. Writes happen only when something differs from what is there,
//! so an idle cluster costs no API writes beyond the Lease renewals.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::{
    api::core::v1::{Namespace, Service},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    api::{DynamicObject, Patch, PatchParams},
    runtime::events::{Event, EventType},
    Api, Client, Resource as _, ResourceExt as _,
};
use serde_json::json;

use super::{
    alloc::{
        labels_with_pseudo, plan, Outcome, PoolView, RequestRule, Sharing, SvcView, CILIUM_CROSS_NAMESPACE,
        CILIUM_IP_ANNOTATIONS, CILIUM_SHARING, METALLB_IP_ANNOTATIONS, METALLB_POOL_ANNOTATIONS, METALLB_SHARING,
    },
    crds::{LoadBalancerIPPool, PoolCounts},
    events::Recorder,
    foreign::{tell_unserved, Watched, CILIUM_POOL, LOOK_AGAIN, LOOK_SOON, METALLB_POOL},
    plan::proto_of,
    pools::{Origin, PoolObj},
    reflect,
    service::{key, served, Settings},
    stats::Stats,
};
use crate::control::ipam::Ipam;

/// The Service condition the allocator writes.
pub const CONDITION: &str = "xlb.dev/IPAllocated";
/// Cilium's Service condition, written beside xlb's while the cluster serves Cilium's pools.
pub const CILIUM_CONDITION: &str = "cilium.io/IPAMRequestSatisfied";

/// Whether a Service left xlb: no longer of type LoadBalancer, or moved to another class.
/// A Service without a class while xlb does not serve those is not one: xlb was restarted
/// without `--unclassed`, perhaps to hand them back to Cilium or MetalLB, and their status
/// is theirs.
fn left(svc: &Service, settings: &Settings) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() != Some("LoadBalancer")
        || spec.load_balancer_class.as_deref().is_some_and(|c| c != settings.class)
}

fn has_condition(svc: &Service, type_: &str) -> bool {
    svc.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| c.type_ == type_)
}
/// The pool condition for overlaps.
pub const POOL_CONFLICT: &str = "xlb.dev/PoolConflict";
/// The pool condition for blocks that do not parse.
pub const POOL_INVALID: &str = "xlb.dev/InvalidBlocks";
/// Cilium's pool conditions: overlaps, and counts of addresses (in the message).
pub const POOL_CILIUM_CONFLICT: &str = "cilium.io/PoolConflict";
/// See `POOL_CILIUM_CONFLICT`.
pub const POOL_IPS_TOTAL: &str = "cilium.io/IPsTotal";
/// See `POOL_CILIUM_CONFLICT`.
pub const POOL_IPS_AVAILABLE: &str = "cilium.io/IPsAvailable";
/// See `POOL_CILIUM_CONFLICT`.
pub const POOL_IPS_USED: &str = "cilium.io/IPsUsed";

fn parse_ips(raw: &str) -> Result<Vec<IpAddr>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<IpAddr>().map_err(|_| format!("{x:?} is not an IP address")))
        .collect()
}

/// The first of `keys` present in `ann`, with its value.
fn annotation<'a>(ann: &'a BTreeMap<String, String>, keys: &[&'a str]) -> Option<(&'a str, &'a String)> {
    keys.iter().find_map(|k| ann.get(*k).map(|v| (*k, v)))
}

/// The allocator's view of a Service.
pub fn svc_view(svc: &Service) -> SvcView {
    let ann = svc.annotations();
    let spec = svc.spec.clone().unwrap_or_default();
    let namespace = svc.namespace().unwrap_or_default();
    let sharing = match annotation(ann, &CILIUM_SHARING) {
        Some((_, key)) => Some(Sharing {
            key: key.clone(),
            cross: annotation(ann, &CILIUM_CROSS_NAMESPACE)
                .map(|(_, v)| v.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect())
                .unwrap_or_default(),
        }),
        None => annotation(ann, &METALLB_SHARING).map(|(_, key)| Sharing { key: key.clone(), cross: vec!["*".into()] }),
    }
    .filter(|s| !s.key.is_empty());
    let mut view = SvcView {
        key: key(svc),
        labels: labels_with_pseudo(svc.labels(), &namespace, &svc.name_any()),
        namespace,
        sharing,
        families: spec.ip_families.iter().flatten().map(|f| f == "IPv6").collect(),
        ports: spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((proto_of(p.protocol.as_deref())?, u16::try_from(p.port).ok()?)))
            .collect(),
        pool: annotation(ann, &METALLB_POOL_ANNOTATIONS).map(|(_, p)| p.trim().to_string()).filter(|p| !p.is_empty()),
        local: spec.external_traffic_policy.as_deref() == Some("Local"),
        selector: spec.selector.clone().unwrap_or_default(),
        current: svc
            .status
            .iter()
            .filter_map(|s| s.load_balancer.as_ref())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
            .collect(),
        created: svc.creation_timestamp().map(|t| t.0.to_string()).unwrap_or_default(),
        ..SvcView::default()
    };
    // Cilium's annotation and spec.loadBalancerIP together, each on its own; else MetalLB's,
    // one per family, all or nothing.
    let mut requested = Vec::new();
    if let Some(raw) = &spec.load_balancer_ip {
        requested.push(("spec.loadBalancerIP".to_string(), raw.clone(), RequestRule::EachOnItsOwn));
    }
    if let Some((k, raw)) = annotation(ann, &CILIUM_IP_ANNOTATIONS) {
        requested.push((format!("annotation {k}"), raw.clone(), RequestRule::EachOnItsOwn));
    } else if let Some((k, raw)) = annotation(ann, &METALLB_IP_ANNOTATIONS) {
        requested.push((format!("annotation {k}"), raw.clone(), RequestRule::AllOrNothing));
    }
    for (field, raw, rule) in requested {
        match parse_ips(&raw) {
            Ok(ips) => {
                for a in ips {
                    if !view.requested.contains(&a) {
                        view.requested.push(a);
                    }
                }
                view.rule = rule;
            }
            Err(e) => view.bad_request = Some(format!("{field}: {e}; give addresses separated by commas")),
        }
    }
    view
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    old: Option<&Condition>,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since =
        old.filter(|c| c.status == status).map_or_else(|| Time(Timestamp::now()), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// The allocator's state between rounds.
struct Allocator {
    client: Client,
    settings: Settings,
    ipam: Ipam,
    recorder: Recorder,
    writes: u64,
    stats: Arc<Stats>,
    /// Foreign pools whose problems were logged (said once).
    told_invalid: std::collections::BTreeSet<String>,
    /// Each pool's last view that read, used while an edit of it does not.
    last_good: HashMap<String, PoolView>,
}

impl Allocator {
    /// One allocation round; `cilium`: the cluster serves Cilium's pool kind, so Services
    /// get Cilium's condition as well as xlb's.
    async fn round(
        &mut self,
        services: &[Arc<Service>],
        pools: &[PoolObj],
        namespaces: &[Arc<Namespace>],
        cilium: bool,
    ) {
        let mut views = Vec::new();
        let mut bad_pools = BTreeMap::new();
        let mut sorted: Vec<&PoolObj> = pools.iter().collect();
        // Older pools first: of two overlapping pools, the newer one allocates nothing.
        sorted.sort_by_key(|p| (p.meta.creation_timestamp.clone().map(|t| t.0), p.ipam_name()));
        for p in &sorted {
            match p.view(namespaces) {
                Ok(v) => {
                    self.last_good.insert(p.ipam_name(), v.clone());
                    views.push(v);
                }
                Err(e) => {
                    // An edit that does not read leaves the pool as it was (as Cilium keeps
                    // a pool's ranges and MetalLB its last configuration), said in its status.
                    if let Some(v) = self.last_good.get(&p.ipam_name()) {
                        views.push(v.clone());
                    }
                    bad_pools.insert(p.ipam_name(), e);
                }
            }
        }
        let names: std::collections::BTreeSet<String> = pools.iter().map(PoolObj::ipam_name).collect();
        self.last_good.retain(|n, _| names.contains(n));
        let svcs: Vec<(SvcView, &Arc<Service>)> =
            services.iter().filter(|s| served(s, &self.settings)).map(|s| (svc_view(s), s)).collect();
        let svc_views: Vec<SvcView> = svcs.iter().map(|(v, _)| v.clone()).collect();
        let by_key: HashMap<&str, (&SvcView, &Arc<Service>)> =
            svcs.iter().map(|(v, s)| (v.key.as_str(), (v, *s))).collect();
        let outcomes = plan(&mut self.ipam, &views, &svc_views);
        // Up to 16 Services written at once: a burst of new Services (or a new pool for
        // many waiting ones) is not serialised behind one round trip each.
        let results = {
            let this = &*self;
            let mut pending = futures::stream::FuturesUnordered::new();
            let mut results: Vec<(String, anyhow::Result<bool>)> = Vec::new();
            // Services no longer served (another type or class) lose xlb's conditions, and
            // the addresses xlb's pools gave them.
            let leaving = services.iter().filter(|s| left(s, &self.settings) && has_condition(s, CONDITION));
            let jobs = outcomes
                .iter()
                .filter_map(|o| {
                    by_key
                        .get(o.key.as_str())
                        .map(|(view, svc)| (Arc::clone(svc), Some((view.current.clone(), o.clone()))))
                })
                .chain(leaving.map(|s| (Arc::clone(s), None)));
            for (svc, job) in jobs {
                if pending.len() >= 16 {
                    results.extend(pending.next().await);
                }
                let views = &views;
                pending.push(async move {
                    let r = match &job {
                        Some((current, o)) => this.write_service(&svc, current, o, cilium).await,
                        None => this.forget_service(&svc, views).await,
                    };
                    (key(&svc), r)
                });
            }
            while let Some(r) = pending.next().await {
                results.push(r);
            }
            results
        };
        let writes_before = self.writes;
        for (key, r) in results {
            match r {
                Ok(wrote) => self.writes += u64::from(wrote),
                Err(e) => {
                    tracing::warn!(service = %key, error = %e, "writing the Service status failed; retrying next round");
                    self.stats.failed_any("status_write", &e);
                }
            }
        }
        let allocated = outcomes.iter().filter(|o| o.problem.is_none()).count() as u64;
        let pending = outcomes.len() as u64 - allocated;
        let usage = self.ipam.usage();
        for p in pools {
            let name = p.ipam_name();
            let u = usage.iter().find(|u| u.name == name);
            if let Err(e) = self.write_pool(p, u, bad_pools.get(&name)).await {
                tracing::warn!(pool = %name, error = %e, "writing the pool status failed; retrying next round");
                self.stats.failed_any("pool_status_write", &e);
            }
        }
        self.stats.round(allocated, pending, self.writes - writes_before);
    }

    /// Writes a Service's status, conditions and Event if they differ; whether it wrote.
    async fn write_service(
        &self,
        svc: &Service,
        old_ips: &[IpAddr],
        o: &Outcome,
        cilium: bool,
    ) -> anyhow::Result<bool> {
        let status = svc.status.clone().unwrap_or_default();
        let old = |t: &str| status.conditions.iter().flatten().find(|c| c.type_ == t);
        let list: Vec<String> = o.addrs.iter().map(ToString::to_string).collect();
        let gen = svc.metadata.generation;
        let mut conds = vec![match &o.problem {
            None => {
                condition(CONDITION, true, "Allocated", &format!("allocated {}", list.join(", ")), old(CONDITION), None)
            }
            Some(p) if o.addrs.is_empty() => {
                condition(CONDITION, false, "AllocationFailed", &p.message, old(CONDITION), None)
            }
            Some(p) => condition(CONDITION, false, "PartlyAllocated", &p.message, old(CONDITION), None),
        }];
        if cilium {
            let (ok, reason, msg) = match &o.problem {
                None => (true, "satisfied", ""),
                Some(p) => (false, p.reason.cilium(), p.message.as_str()),
            };
            conds.push(condition(CILIUM_CONDITION, ok, reason, msg, old(CILIUM_CONDITION), gen));
        }
        let same = |c: &Condition| {
            old(&c.type_).is_some_and(|o| o.status == c.status && o.reason == c.reason && o.message == c.message)
        };
        if old_ips == o.addrs.as_slice() && conds.iter().all(same) {
            return Ok(false);
        }
        let mut conditions: Vec<Condition> =
            status.conditions.iter().flatten().filter(|c| conds.iter().all(|n| n.type_ != c.type_)).cloned().collect();
        conditions.extend(conds.iter().cloned());
        let ingress: Vec<serde_json::Value> =
            o.addrs.iter().map(|a| json!({"ip": a.to_string(), "ipMode": "VIP"})).collect();
        let patch = json!({
            "metadata": {"resourceVersion": svc.resource_version()},
            "status": {"loadBalancer": {"ingress": ingress}, "conditions": conditions},
        });
        let api: Api<Service> = Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default());
        api.patch_status(&svc.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let key = key(svc);
        let note = conds[0].message.clone();
        let (type_, reason) = match &o.problem {
            None => (EventType::Normal, "IPAllocated"),
            Some(_) => (EventType::Warning, "IPAllocationFailed"),
        };
        match &o.problem {
            None => tracing::info!(service = %key, "{note}"),
            Some(p) => {
                tracing::warn!(service = %key, reason = %p, "the Service does not have every address it asks for")
            }
        }
        self.event(svc, type_, reason, note).await;
        Ok(true)
    }

    /// A Service that left xlb (see `left`): xlb's condition goes; if it is no longer a
    /// LoadBalancer at all, so do Cilium's condition and the addresses of the pools xlb
    /// serves. One moved to another class keeps its status for that class's controller.
    async fn forget_service(&self, svc: &Service, pools: &[PoolView]) -> anyhow::Result<bool> {
        let status = svc.status.clone().unwrap_or_default();
        let not_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer");
        let ours: &[&str] = if not_lb { &[CONDITION, CILIUM_CONDITION] } else { &[CONDITION] };
        let conditions: Vec<&Condition> =
            status.conditions.iter().flatten().filter(|c| !ours.contains(&c.type_.as_str())).collect();
        let ingress = status.load_balancer.and_then(|lb| lb.ingress).unwrap_or_default();
        let (gone, kept): (Vec<_>, Vec<_>) = ingress.into_iter().partition(|i| {
            not_lb
                && i.ip
                    .as_deref()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .is_some_and(|a| pools.iter().any(|p| p.pool.covers(a)))
        });
        let patch = json!({
            "metadata": {"resourceVersion": svc.resource_version()},
            "status": {"loadBalancer": {"ingress": kept}, "conditions": conditions},
        });
        let api: Api<Service> = Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default());
        api.patch_status(&svc.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let gone: Vec<String> = gone.into_iter().filter_map(|i| i.ip).collect();
        let note = if gone.is_empty() {
            "no longer a LoadBalancer Service that xlb serves (type or loadBalancerClass changed)".to_string()
        } else {
            format!(
                "no longer a LoadBalancer Service that xlb serves (type or loadBalancerClass changed): {} went back to the pools",
                gone.join(", ")
            )
        };
        tracing::info!(service = %key(svc), "{note}");
        self.event(svc, EventType::Normal, "IPReleased", note).await;
        Ok(true)
    }

    async fn event(&self, svc: &Service, type_: EventType, reason: &str, note: String) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: "Allocate".into(), secondary: None };
        if let Err(e) = self.recorder.publish(&ev, &svc.object_ref(&())).await {
            tracing::warn!(service = %key(svc), error = %e, "publishing the Event failed");
            self.stats.failed("event", &super::stats::Error::Kube(e));
        }
    }

    async fn write_pool(
        &mut self,
        p: &PoolObj,
        usage: Option<&crate::control::ipam::PoolUsage>,
        invalid: Option<&String>,
    ) -> anyhow::Result<()> {
        let old = |t: &str| p.status.conditions.iter().find(|c| c.type_ == t).cloned();
        let gen = p.meta.generation;
        let conflict = usage.and_then(|u| u.conflict.clone());
        if matches!(p.origin, Origin::MetalLb(_)) {
            // MetalLB's status is MetalLB's own; xlb says what it thinks in its logs.
            if let (Some(e), true) = (invalid, self.told_invalid.insert(p.ipam_name())) {
                tracing::warn!(pool = %p.ipam_name(), "the pool is not used: {e}");
            }
            return Ok(());
        }
        let (conditions, counts) = if matches!(p.origin, Origin::Cilium(_)) {
            // Cilium's condition types, so that its printer columns and its users' checks
            // read what they always read.
            // Cilium `markPoolConflicting` / `unmarkPool` / `updatePoolCounts`. A pool that
            // does not read is also marked (Cilium only logs it).
            let c1 = match (&conflict, invalid) {
                (Some(other), _) => (true, "cidr_overlap", format!("Pool conflicts since it overlaps {other}; it allocates nothing new until the overlap is removed")),
                (None, Some(e)) => (true, "invalid_block", format!("invalid block: {e}")),
                (None, None) => (false, "resolved", String::new()),
            };
            let conflict = condition(POOL_CILIUM_CONFLICT, c1.0, c1.1, &c1.2, old(POOL_CILIUM_CONFLICT).as_ref(), gen);
            let mut conds = vec![conflict];
            if let Some(u) = usage {
                for (type_, n) in [
                    (POOL_IPS_TOTAL, u.size),
                    (POOL_IPS_AVAILABLE, u.size.saturating_sub(u.used)),
                    (POOL_IPS_USED, u.used),
                ] {
                    let mut c = condition(type_, true, "noreason", &n.to_string(), old(type_).as_ref(), gen);
                    c.status = "Unknown".into();
                    conds.push(c);
                }
            }
            (conds, None)
        } else {
            let c1 = match &conflict {
                Some(other) => condition(
                    POOL_CONFLICT,
                    true,
                    "Overlaps",
                    &format!("overlaps {other}; this pool allocates nothing new until the overlap is removed"),
                    old(POOL_CONFLICT).as_ref(),
                    gen,
                ),
                None => condition(
                    POOL_CONFLICT,
                    false,
                    "NoOverlap",
                    "no other pool overlaps this one",
                    old(POOL_CONFLICT).as_ref(),
                    gen,
                ),
            };
            let c2 = match invalid {
                Some(e) => condition(POOL_INVALID, true, "InvalidBlock", e, old(POOL_INVALID).as_ref(), gen),
                None => condition(POOL_INVALID, false, "Valid", "every block parses", old(POOL_INVALID).as_ref(), gen),
            };
            let counts = usage.map(|u| PoolCounts {
                total: u.size.to_string(),
                used: u.used.to_string(),
                free: u.size.saturating_sub(u.used).to_string(),
            });
            (vec![c1, c2], counts)
        };
        let same = |c: &Condition| {
            old(&c.type_).is_some_and(|o| {
                o.status == c.status && o.message == c.message && o.observed_generation == c.observed_generation
            })
        };
        if conditions.iter().all(same) && p.status.counts == counts {
            return Ok(());
        }
        let name = p.name();
        let patch = match &counts {
            Some(c) => json!({"status": {"conditions": conditions, "counts": c}}),
            None => json!({"status": {"conditions": conditions}}),
        };
        match &p.origin {
            Origin::Cilium(ar) | Origin::MetalLb(ar) => {
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), ar);
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            Origin::Xlb => {
                let api: Api<LoadBalancerIPPool> = Api::all(self.client.clone());
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
        }
        self.writes += 1;
        Ok(())
    }
}

/// Runs the allocator until `stop` fires: watches, takes the Lease when it is free, and
/// allocates while it holds it. Releases the Lease on the way out.
pub async fn run_allocator(
    client: Client,
    settings: Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    let notify = Arc::new(tokio::sync::Notify::new());
    let svc_store = reflect(Api::<Service>::all(client.clone()), notify.clone(), "services", stats.clone());
    let pool_store = reflect(Api::<LoadBalancerIPPool>::all(client.clone()), notify.clone(), "pools", stats.clone());
    let ns_store = reflect(Api::<Namespace>::all(client.clone()), notify.clone(), "namespaces", stats.clone());
    let mut cilium_pools = Watched::new(CILIUM_POOL);
    cilium_pools.poll(&client, &notify, &stats).await;
    let mut metallb_pools = Watched::new(METALLB_POOL);
    metallb_pools.poll(&client, &notify, &stats).await;
    let lease = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "xlb-allocator")
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.lease_seconds)
        .with_grace(settings.lease_seconds.div_ceil(3).max(1))
        .build()
        .await
        .context("setting up the allocator Lease (namespace and RBAC for leases?)")?;
    let (mut leader, lease_task) = lease.watch().await;
    let mut alloc = Allocator {
        client: client.clone(),
        recorder: Recorder::new(client, "xlb", &settings.identity),
        settings,
        ipam: Ipam::default(),
        writes: 0,
        stats,
        told_invalid: Default::default(),
        last_good: HashMap::new(),
    };
    tokio::select! {
        _ = async {
            svc_store.wait_until_ready().await.ok();
            pool_store.wait_until_ready().await.ok();
            ns_store.wait_until_ready().await.ok();
            cilium_pools.wait_until_ready().await;
            metallb_pools.wait_until_ready().await;
        } => {}
        _ = stop.changed() => return Ok(()),
    }
    let mut was_leader = false;
    // Objects of kinds xlb does not serve, said once each (checked every 5 minutes).
    let (mut told, mut told_at) = (std::collections::BTreeSet::new(), None);
    loop {
        let is_leader = *leader.borrow();
        if is_leader != was_leader {
            tracing::info!(identity = %alloc.settings.identity, leader = is_leader, "allocator Lease {}", if is_leader { "taken: this instance writes addresses" } else { "not held: another instance writes addresses" });
            // A new leader starts from what the statuses say.
            alloc.ipam = Ipam::default();
            alloc.stats.set_leader(is_leader);
            was_leader = is_leader;
        }
        if is_leader && told_at.is_none_or(|t: tokio::time::Instant| t.elapsed() >= Duration::from_secs(300)) {
            told_at = Some(tokio::time::Instant::now());
            tell_unserved(&alloc.client, &alloc.recorder, &mut told).await;
        }
        // Until the cluster has said whether it has Cilium's and MetalLB's pools, a round
        // would take their Services' addresses for addresses of no pool.
        let settled = cilium_pools.settled() && metallb_pools.settled();
        if is_leader && settled {
            // Let a burst of changes settle into one round.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut pools: Vec<PoolObj> = pool_store.state().iter().map(|p| PoolObj::xlb(p)).collect();
            if let Some(ar) = cilium_pools.resource() {
                pools.extend(cilium_pools.objects().iter().map(|o| PoolObj::cilium(o, ar)));
            }
            if let Some(ar) = metallb_pools.resource() {
                pools.extend(metallb_pools.objects().iter().map(|o| PoolObj::metallb(o, ar)));
            }
            let cilium = cilium_pools.resource().is_some();
            alloc.round(&svc_store.state(), &pools, &ns_store.state(), cilium).await;
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = leader.changed() => {}
            _ = tokio::time::sleep(if settled { LOOK_AGAIN } else { LOOK_SOON }) => {}
            _ = stop.changed() => break,
        }
        cilium_pools.poll(&alloc.client, &notify, &alloc.stats).await;
        metallb_pools.poll(&alloc.client, &notify, &alloc.stats).await;
    }
    tracing::info!(writes = alloc.writes, "allocator stopping; releasing its Lease");
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the allocator Lease failed"),
        _ => tracing::warn!("releasing the allocator Lease took too long"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::alloc::NAMESPACE_LABEL;

    fn service(v: serde_json::Value) -> Service {
        let mut base = json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"type": "LoadBalancer"}});
        for (k, x) in v.as_object().into_iter().flatten() {
            for (k2, y) in x.as_object().into_iter().flatten() {
                base[k][k2] = y.clone();
            }
        }
        serde_json::from_value(base).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn services_read_every_projects_annotations() {
        // Cilium's annotation and spec.loadBalancerIP together, each on its own.
        let s = svc_view(&service(json!({
            "metadata": {"annotations": {"lbipam.cilium.io/ips": "192.0.2.1, 192.0.2.2",
                                         "lbipam.cilium.io/sharing-key": "k",
                                         "lbipam.cilium.io/sharing-cross-namespace": "a, b"},
                         "labels": {"io.kubernetes.service.namespace": "fake"}},
            "spec": {"loadBalancerIP": "192.0.2.2", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                     "ports": [{"port": 53, "protocol": "UDP"}, {"port": 80}]}
        })));
        assert_eq!(s.requested.len(), 2);
        assert_eq!(s.rule, RequestRule::EachOnItsOwn);
        assert_eq!(s.sharing, Some(Sharing { key: "k".into(), cross: vec!["a".into(), "b".into()] }));
        assert_eq!(s.labels.get(NAMESPACE_LABEL).map(String::as_str), Some("shop"));
        assert!(s.local && s.selector.contains_key("app"));
        assert_eq!(s.ports, [(17, 53), (6, 80)]);
        // MetalLB's: all or nothing, and a key that crosses namespaces; an empty key shares nothing.
        let m = svc_view(&service(json!({
            "metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.0.2.1,2001:db8::1",
                                         "metallb.io/allow-shared-ip": "k"}}
        })));
        assert_eq!((m.requested.len(), m.rule), (2, RequestRule::AllOrNothing));
        assert_eq!(m.sharing.map(|s| s.cross), Some(vec!["*".to_string()]));
        let named = svc_view(&service(json!({"metadata": {"annotations": {"metallb.universe.tf/address-pool": "p"}}})));
        assert_eq!(named.pool.as_deref(), Some("p"));
        let none =
            svc_view(&service(json!({"metadata": {"annotations": {"metallb.universe.tf/allow-shared-ip": ""}}})));
        assert_eq!(none.sharing, None);
        let bad = svc_view(&service(json!({"metadata": {"annotations": {"lbipam.cilium.io/ips": "192.0.2.300"}}})));
        assert!(bad.bad_request.is_some_and(|e| e.contains("lbipam.cilium.io/ips")));
    }
}

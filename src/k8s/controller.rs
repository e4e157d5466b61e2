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
    api::core::v1::Service,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
    Api, Client, Resource as _, ResourceExt as _,
};
use serde_json::json;

use super::{
    alloc::{plan, PoolView, SvcView, IP_ANNOTATIONS, SHARING_ANNOTATIONS},
    crds::{LoadBalancerIPPool, PoolCounts, YesNo},
    events::Recorder,
    reflect,
    service::{key, served, Settings},
    stats::Stats,
};
use crate::control::ipam::{Block, Ipam, Pool};

/// The Service condition the allocator writes.
pub const CONDITION: &str = "xlb.dev/IPAllocated";
/// The pool condition for overlaps.
pub const POOL_CONFLICT: &str = "xlb.dev/PoolConflict";
/// The pool condition for blocks that do not parse.
pub const POOL_INVALID: &str = "xlb.dev/InvalidBlocks";

fn parse_ips(raw: &str) -> Result<Vec<IpAddr>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<IpAddr>().map_err(|_| format!("{x:?} is not an IP address")))
        .collect()
}

/// The allocator's view of a Service.
pub fn svc_view(svc: &Service) -> SvcView {
    let ann = svc.annotations();
    let spec = svc.spec.clone().unwrap_or_default();
    let mut view = SvcView {
        key: key(svc),
        labels: svc.labels().clone(),
        sharing: SHARING_ANNOTATIONS.iter().find_map(|k| ann.get(*k)).cloned(),
        families: spec.ip_families.iter().flatten().map(|f| f == "IPv6").collect(),
        ports: spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => u16::try_from(p.port).ok().map(|n| (6, n)),
                "UDP" => u16::try_from(p.port).ok().map(|n| (17, n)),
                _ => None,
            })
            .collect(),
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
    let requested = IP_ANNOTATIONS
        .iter()
        .find_map(|k| ann.get(*k).map(|v| (format!("annotation {k}"), v.clone())))
        .or_else(|| spec.load_balancer_ip.clone().map(|v| ("spec.loadBalancerIP".to_string(), v)));
    if let Some((field, raw)) = requested {
        match parse_ips(&raw) {
            Ok(ips) => view.requested = ips,
            Err(e) => view.bad_request = Some(format!("{field}: {e}; give addresses separated by commas")),
        }
    }
    view
}

/// A pool as IPAM takes it, or why its blocks are invalid.
pub fn pool_view(p: &LoadBalancerIPPool) -> Result<PoolView, String> {
    let mut blocks = Vec::new();
    for (i, b) in p.spec.blocks.iter().enumerate() {
        let block = match (&b.cidr, &b.start, &b.stop) {
            (Some(c), None, None) => Block::cidr(
                c.parse().map_err(|_| format!("blocks[{i}].cidr: {c:?} is not a CIDR (e.g. 192.0.2.0/28)"))?,
            ),
            (None, Some(a), Some(z)) => {
                let start: IpAddr = a.parse().map_err(|_| format!("blocks[{i}].start: {a:?} is not an IP address"))?;
                let stop: IpAddr = z.parse().map_err(|_| format!("blocks[{i}].stop: {z:?} is not an IP address"))?;
                if start.is_ipv6() != stop.is_ipv6() || stop < start {
                    return Err(format!("blocks[{i}]: stop {stop} must be of start's family and not before {start}"));
                }
                Block { start, stop, cidr: false }
            }
            _ => return Err(format!("blocks[{i}]: give either cidr, or start and stop")),
        };
        blocks.push(block);
    }
    Ok(PoolView {
        pool: Pool {
            name: p.name_any(),
            blocks,
            allow_first_last: p.spec.allow_first_last_ips == YesNo::Yes,
            disabled: p.spec.disabled,
        },
        selector: p.spec.service_selector.clone(),
    })
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
}

impl Allocator {
    async fn round(&mut self, services: &[Arc<Service>], pools: &[Arc<LoadBalancerIPPool>]) {
        let mut views = Vec::new();
        let mut bad_pools = BTreeMap::new();
        let mut sorted: Vec<&Arc<LoadBalancerIPPool>> = pools.iter().collect();
        // Older pools first: of two overlapping pools, the newer one allocates nothing.
        sorted.sort_by_key(|p| (p.creation_timestamp().map(|t| t.0), p.name_any()));
        for p in &sorted {
            match pool_view(p) {
                Ok(v) => views.push(v),
                Err(e) => {
                    bad_pools.insert(p.name_any(), e);
                }
            }
        }
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
            for o in &outcomes {
                let Some((view, svc)) = by_key.get(o.key.as_str()) else { continue };
                if pending.len() >= 16 {
                    results.extend(pending.next().await);
                }
                let (svc, current, result) = (Arc::clone(svc), view.current.clone(), o.result.clone());
                let key = o.key.clone();
                pending.push(async move {
                    let r = this.write_service(&svc, &current, &result).await;
                    (key, r)
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
        let allocated = outcomes.iter().filter(|o| o.result.is_ok()).count() as u64;
        let pending = outcomes.len() as u64 - allocated;
        let usage = self.ipam.usage();
        for p in pools {
            let name = p.name_any();
            let u = usage.iter().find(|u| u.name == name);
            if let Err(e) = self.write_pool(p, u, bad_pools.get(&name)).await {
                tracing::warn!(pool = %name, error = %e, "writing the pool status failed; retrying next round");
                self.stats.failed_any("pool_status_write", &e);
            }
        }
        self.stats.round(allocated, pending, self.writes - writes_before);
    }

    /// Writes a Service's status, condition and Event if they differ; whether it wrote.
    async fn write_service(
        &self,
        svc: &Service,
        old_ips: &[IpAddr],
        result: &Result<Vec<IpAddr>, String>,
    ) -> anyhow::Result<bool> {
        let status = svc.status.clone().unwrap_or_default();
        let old_cond = status.conditions.iter().flatten().find(|c| c.type_ == CONDITION);
        let (ips, cond) = match result {
            Ok(ips) => {
                let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
                let msg = format!("allocated {}", list.join(", "));
                (ips.clone(), condition(CONDITION, true, "Allocated", &msg, old_cond, None))
            }
            Err(e) => (Vec::new(), condition(CONDITION, false, "AllocationFailed", e, old_cond, None)),
        };
        let same_cond =
            old_cond.is_some_and(|c| c.status == cond.status && c.reason == cond.reason && c.message == cond.message);
        if old_ips == ips.as_slice() && same_cond {
            return Ok(false);
        }
        let mut conditions: Vec<Condition> =
            status.conditions.iter().flatten().filter(|c| c.type_ != CONDITION).cloned().collect();
        conditions.push(cond.clone());
        let ingress: Vec<serde_json::Value> =
            ips.iter().map(|a| json!({"ip": a.to_string(), "ipMode": "VIP"})).collect();
        let patch = json!({
            "metadata": {"resourceVersion": svc.resource_version()},
            "status": {"loadBalancer": {"ingress": ingress}, "conditions": conditions},
        });
        let api: Api<Service> = Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default());
        api.patch_status(&svc.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let key = key(svc);
        let (type_, reason, note) = match result {
            Ok(_) => (EventType::Normal, "IPAllocated", cond.message.clone()),
            Err(e) => (EventType::Warning, "IPAllocationFailed", e.clone()),
        };
        match result {
            Ok(_) => tracing::info!(service = %key, "{note}"),
            Err(e) => tracing::warn!(service = %key, reason = %e, "no address for the Service"),
        }
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: "Allocate".into(), secondary: None };
        if let Err(e) = self.recorder.publish(&ev, &svc.object_ref(&())).await {
            tracing::warn!(service = %key, error = %e, "publishing the Event failed");
            self.stats.failed("event", &super::stats::Error::Kube(e));
        }
        Ok(true)
    }

    async fn write_pool(
        &mut self,
        p: &LoadBalancerIPPool,
        usage: Option<&crate::control::ipam::PoolUsage>,
        invalid: Option<&String>,
    ) -> anyhow::Result<()> {
        let status = p.status.clone().unwrap_or_default();
        let old = |t: &str| status.conditions.iter().find(|c| c.type_ == t).cloned();
        let conflict = usage.and_then(|u| u.conflict.clone());
        let gen = p.metadata.generation;
        let c1 = match &conflict {
            Some(other) => condition(
                POOL_CONFLICT,
                true,
                "Overlaps",
                &format!(
                    "overlaps pool {other}, which is older; this pool allocates nothing until the overlap is removed"
                ),
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
        let same = |c: &Condition| {
            old(&c.type_).is_some_and(|o| {
                o.status == c.status && o.message == c.message && o.observed_generation == c.observed_generation
            })
        };
        if same(&c1) && same(&c2) && status.counts == counts {
            return Ok(());
        }
        let patch = json!({"status": {"conditions": [c1, c2], "counts": counts}});
        let api: Api<LoadBalancerIPPool> = Api::all(self.client.clone());
        api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
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
    };
    tokio::select! {
        _ = async { svc_store.wait_until_ready().await.ok(); pool_store.wait_until_ready().await.ok(); } => {}
        _ = stop.changed() => return Ok(()),
    }
    let mut was_leader = false;
    loop {
        let is_leader = *leader.borrow();
        if is_leader != was_leader {
            tracing::info!(identity = %alloc.settings.identity, leader = is_leader, "allocator Lease {}", if is_leader { "taken: this instance writes addresses" } else { "not held: another instance writes addresses" });
            // A new leader starts from what the statuses say.
            alloc.ipam = Ipam::default();
            alloc.stats.set_leader(is_leader);
            was_leader = is_leader;
        }
        if is_leader {
            // Let a burst of changes settle into one round.
            tokio::time::sleep(Duration::from_millis(50)).await;
            alloc.round(&svc_store.state(), &pool_store.state()).await;
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = leader.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.changed() => break,
        }
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

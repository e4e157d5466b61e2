//! `xlb run --kubernetes`: the node side. On its own thread (a small tokio runtime), it
//! watches Services, EndpointSlices, Nodes, L2AnnouncementPolicies and the members'
//! Leases, keeps this node's membership Lease renewed, and hands the daemon a new
//! [`Plan`] whenever what this node serves or announces changes. The allocator runs in the
//! same runtime (one writer cluster-wide, by its own Lease).
//!
//! API writes per node: one Lease renewal per renew interval, whatever the number of
//! Services, plus an Event when this node takes a VIP.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Node, Secret, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        events::{Event, EventType},
        watcher, WatchStreamExt as _,
    },
    Api, Client, Resource as _, ResourceExt as _,
};
use serde_json::json;

use super::{
    bgp::{BfdProfile, BgpAdvertisement, BgpNodeOverride, BgpPeer, NodeBgp, Objects},
    controller::run_allocator,
    crds::{L2AnnouncementPolicy, LoadBalancerIPPool, ReadFrom},
    events::Recorder,
    foreign::{advertisements, Kind, Watched, CILIUM_L2, CILIUM_POOL, METALLB_L2, METALLB_POOL},
    member::Membership,
    plan::{plan, Cluster, Plan},
    reflect,
    service::Settings,
    sessions::SessionState,
    stats::{Error, Stats},
    CappedBackoff,
};

/// Label on the membership Leases.
pub const MEMBER_LABEL: &str = "xlb.dev/member";
/// Annotation on a membership Lease: the interface xlb serves on that node.
pub const INTERFACE_ANNOTATION: &str = "xlb.dev/interface";

/// How this node takes part.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Class, namespace, and this node's name (`identity`).
    pub settings: Settings,
    /// The interface xlb serves here.
    pub interface: String,
    /// Whether SNAT addresses exist for (IPv4, IPv6).
    pub snat_families: (bool, bool),
    /// Also run the allocator (it writes only while it holds its Lease).
    pub allocate: bool,
    /// How often this node's Lease is renewed.
    pub renew: Duration,
    /// How long a Lease is valid after its last change.
    pub valid: Duration,
    /// The third vote of a two-member set (with failover on).
    pub witness: Option<Arc<super::witness::Witness>>,
}

/// The name of `node`'s membership Lease.
pub fn lease_name(node: &str) -> String {
    format!("xlb-node-{node}")
}

/// A client from `kubeconfig`, else $KUBECONFIG / ~/.kube/config / the pod's account.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}: cannot read it", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes API found: give --kubeconfig, set KUBECONFIG, or run in a pod")?,
    };
    Ok(Client::try_from(config)?)
}

/// Annotation on a Node: this node's SNAT source addresses, comma-separated. Each node needs
/// its own (they are announced by the node that uses them), so they cannot be a flag shared
/// by every pod of the DaemonSet.
pub const SNAT_ANNOTATION: &str = "xlb.dev/snat-addresses";

/// Reads `node`'s SNAT addresses from its annotation (one GET, at start: the SNAT tables are
/// sized then). Fails when the Node does not exist or the annotation does not parse.
pub fn node_snat_addrs(kubeconfig: Option<&Path>, node: &str) -> anyhow::Result<Vec<IpAddr>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = client(kubeconfig).await?;
        let nodes = Api::<Node>::all(client);
        let found = tokio::time::timeout(Duration::from_secs(15), nodes.get_opt(node))
            .await
            .map_err(|_| anyhow::anyhow!("reading Node {node} from the API server timed out after 15 s"))?
            .with_context(|| format!("reading Node {node} from the API server"))?;
        let Some(n) = found else {
            anyhow::bail!("there is no Node {node:?}: --node-name (NODE_NAME) must be this Kubernetes node's name");
        };
        let Some(raw) = n.annotations().get(SNAT_ANNOTATION) else { return Ok(Vec::new()) };
        raw.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse::<IpAddr>().map_err(|_| {
                    anyhow::anyhow!("Node {node}: annotation {SNAT_ANNOTATION}: {a:?} is not an IP address (give addresses separated by commas)")
                })
            })
            .collect()
    })
}

/// Another host claimed a VIP this node announces: published as an Event on its Services.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The VIP.
    pub vip: IpAddr,
    /// Who else claims it: a member's name, or a MAC address.
    pub claimant: String,
    /// What this node does about it.
    pub outcome: String,
}

/// One Event per VIP and claimant at most this often (a flapping claimant would flood the
/// API).
const CONFLICT_EVENT_EVERY: Duration = Duration::from_secs(30);

/// Backend path problems by Service (`namespace/name`), one line each.
pub type PathProblems = BTreeMap<String, Vec<String>>;

/// The running node side.
pub struct Handle {
    /// New plans, latest last.
    pub plans: crossbeam_channel::Receiver<Plan>,
    conflicts: tokio::sync::mpsc::UnboundedSender<Conflict>,
    paths: tokio::sync::watch::Sender<PathProblems>,
    sessions: tokio::sync::watch::Sender<Vec<SessionState>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Set before `stop` when handing over: the membership Lease stays.
    stay: Arc<AtomicBool>,
    /// Whether this node writes: its Lease, addresses, Events, conditions, the witness.
    active: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Failed API calls, plans, the allocator's state.
    pub stats: Arc<Stats>,
}

impl Handle {
    /// Reports a conflict (an Event on the VIP's Services, at most one per VIP and claimant
    /// per 30 s).
    pub fn conflict(&self, c: Conflict) {
        let _ = self.conflicts.send(c);
    }

    /// Reports what keeps backends from new flows on this node's interface, by Service
    /// (`namespace/name`): said on the Services this node announces (see [`super::reach`]).
    pub fn path_problems(&self, p: PathProblems) {
        self.paths.send_if_modified(|old| {
            let changed = *old != p;
            *old = p;
            changed
        });
    }

    /// Reports this node's BGP sessions (said in the `BGPPeer`s' status, and by Events when
    /// one comes up or goes down).
    pub fn bgp_sessions(&self, report: Vec<SessionState>) {
        self.sessions.send_if_modified(|old| {
            let changed = *old != report;
            *old = report;
            changed
        });
    }

    /// Starts writing (see [`start`]): the datapath is up, this node can serve what it is
    /// given.
    pub fn activate(&self) {
        self.active.send_replace(true);
    }

    /// Hands over to a new xlb on this node: stops like [`Handle::stop`], but the membership
    /// Lease stays (the successor renews it), so the other nodes keep this node's VIPs here.
    pub fn hand_over(self, timeout: Duration) {
        self.stay.store(true, Ordering::Relaxed);
        self.stop(timeout);
    }

    /// Leaves the cluster: the membership Lease is deleted first (the other nodes take this
    /// node's VIPs at once) and the allocator Lease released; waits up to `timeout`.
    pub fn stop(mut self, timeout: Duration) {
        self.stop.send(true).ok();
        let Some(t) = self.thread.take() else { return };
        let end = Instant::now() + timeout;
        while !t.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            tracing::warn!("the Kubernetes side did not stop in time; its Lease expires on its own");
        }
    }
}

/// Starts the node side on its own thread. Fails at once when no API configuration is found.
///
/// It starts passive: it reads the cluster and sends plans, but writes nothing (no Lease
/// renewal, allocation, Event, condition or witness) until [`Handle::activate`]. An xlb
/// thus has its first plan before it opens its datapath, and a successor has it before it
/// asks the running xlb to hand over, while that one still renews the node's Lease.
pub fn start(kubeconfig: Option<PathBuf>, opts: NodeOptions) -> anyhow::Result<Handle> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let (tx, plans) = crossbeam_channel::unbounded();
    let (conflicts, conflicts_rx) = tokio::sync::mpsc::unbounded_channel();
    let (paths, paths_rx) = tokio::sync::watch::channel(PathProblems::new());
    let (sessions, sessions_rx) = tokio::sync::watch::channel(Vec::new());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let stats = Arc::new(Stats::default());
    let counted = stats.clone();
    let stay = Arc::new(AtomicBool::new(false));
    let staying = stay.clone();
    let (active, active_rx) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new().name("xlb-kube".into()).spawn(move || {
        let stats = counted;
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e.into()));
                return;
            }
        };
        rt.block_on(async move {
            let client = match client(kubeconfig.as_deref()).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let alloc = opts.allocate.then(|| {
                let run = run_allocator(client.clone(), opts.settings.clone(), stop_rx.clone(), stats.clone());
                tokio::spawn(once_active(active_rx.clone(), stop_rx.clone(), run))
            });
            let told = super::sessions::run(
                client.clone(),
                opts.settings.identity.clone(),
                sessions_rx,
                super::sessions::Gates { stop: stop_rx.clone(), stay: staying.clone() },
                stats.clone(),
            );
            let told = tokio::spawn(once_active(active_rx.clone(), stop_rx.clone(), told));
            let gates = Gates { stop: stop_rx, stay: staying, active: active_rx };
            if let Err(e) = run_node(client, opts, tx, conflicts_rx, paths_rx, gates, stats).await {
                tracing::error!(error = %format!("{e:#}"), "the Kubernetes side stopped");
            }
            // This node's BGP status entries go with it (bounded inside).
            let _ = tokio::time::timeout(Duration::from_secs(3), told).await;
            if let Some(a) = alloc {
                match tokio::time::timeout(Duration::from_secs(5), a).await {
                    Ok(Ok(Some(Err(e)))) => tracing::error!(error = %format!("{e:#}"), "the allocator stopped"),
                    Err(_) => tracing::warn!("the allocator did not stop within 5 s"),
                    _ => {}
                }
            }
        });
    })?;
    ready_rx.recv().context("the Kubernetes thread ended before it started")??;
    Ok(Handle { plans, conflicts, paths, sessions, stop, stay, active, thread: Some(thread), stats })
}

/// What starts and ends the node side's work.
struct Gates {
    stop: tokio::sync::watch::Receiver<bool>,
    /// Set before `stop` when handing over: the membership Lease stays.
    stay: Arc<AtomicBool>,
    /// Writes are allowed (see [`start`]).
    active: tokio::sync::watch::Receiver<bool>,
}

/// Runs `work` once the node side is active; None if it stopped before.
async fn once_active<T>(
    mut active: tokio::sync::watch::Receiver<bool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        r = active.wait_for(|a| *a) => {
            r.ok()?;
        }
        _ = stop.wait_for(|s| *s) => return None,
    }
    Some(work.await)
}

/// Renews (creates, the first time) this node's membership Lease.
async fn renew(api: &Api<Lease>, node: &str, interface: &str, valid: Duration) -> Result<(), kube::Error> {
    let name = lease_name(node);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "labels": {MEMBER_LABEL: "node"}, "annotations": {INTERFACE_ANNOTATION: interface}},
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": valid.as_secs().max(1),
            "renewTime": MicroTime(Timestamp::now()),
        },
    });
    api.patch(&name, &PatchParams::apply("xlb").force(), &Patch::Apply(&lease)).await?;
    Ok(())
}

/// Publishes `ev` on each of the Services `names` (`namespace/name`); a slow or failing API
/// is logged, never waited on for more than 2 s per Event.
async fn publish(recorder: &Recorder, ev: &Event, names: &[String], svcs: &[Arc<Service>], stats: &Stats) {
    for key in names {
        let Some(svc) = svcs.iter().find(|s| super::service::key(s) == *key) else { continue };
        recorder.publish_within(ev, &svc.object_ref(&()), stats).await;
    }
}

/// Keeps the `xlb.dev/BackendsReachable` condition of the Services in `want` (see
/// [`super::reach`]) as it should be: when `want` changes, and every second besides (a
/// write lost to a race, or the Service changed by someone else), until `stop`.
async fn report_reachability(
    client: Client,
    me: String,
    services: kube::runtime::reflector::Store<Service>,
    mut want: tokio::sync::watch::Receiver<BTreeMap<String, Option<String>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let mut reporter = super::reach::Reporter::new(client.clone(), &me);
    let recorder = Recorder::new(client, "xlb", &me);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = want.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let w = want.borrow_and_update().clone();
        let svcs = services.state();
        for (k, ev) in reporter.reconcile(&w, &svcs, &stats).await {
            publish(&recorder, &ev, &[k], &svcs, &stats).await;
        }
    }
}

/// The members' Leases as this node has read them.
struct LeaseView {
    membership: Membership,
    /// Members listed again since the watch restarted.
    relisted: Vec<String>,
    /// The first list is in.
    ready: bool,
    /// The watch works (not failing, not relisting).
    watch_ok: bool,
}

impl LeaseView {
    fn on_event(
        &mut self,
        ev: Option<Result<watcher::Event<Lease>, watcher::Error>>,
        stats: &Stats,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        let seen = |l: &Lease| {
            let node = l.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default();
            let iface = l.annotations().get(INTERFACE_ANNOTATION).cloned().unwrap_or_default();
            (node, l.resource_version().unwrap_or_default(), iface)
        };
        self.watch_ok = !matches!(ev, Some(Err(_)) | Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))));
        match ev {
            Some(Ok(watcher::Event::Apply(l))) => {
                let (n, v, i) = seen(&l);
                self.membership.observe(&n, &v, &i, now);
            }
            Some(Ok(watcher::Event::InitApply(l))) => {
                let (n, v, i) = seen(&l);
                self.membership.observe(&n, &v, &i, now);
                self.relisted.push(n);
            }
            Some(Ok(watcher::Event::Delete(l))) => {
                let (n, _, _) = seen(&l);
                tracing::info!(node = %n, "member left (Lease deleted)");
                self.membership.remove(&n);
            }
            Some(Ok(watcher::Event::Init)) => self.relisted.clear(),
            Some(Ok(watcher::Event::InitDone)) => {
                self.membership.retain(&self.relisted);
                self.ready = true;
            }
            Some(Err(e)) => {
                tracing::debug!(watch = "leases", error = %e, "watch failed; retrying");
                stats.watch_failed("leases");
            }
            None => anyhow::bail!("the Lease watch ended"),
        }
        Ok(())
    }
}

async fn run_node(
    client: Client,
    opts: NodeOptions,
    tx: crossbeam_channel::Sender<Plan>,
    mut conflicts: tokio::sync::mpsc::UnboundedReceiver<Conflict>,
    mut paths: tokio::sync::watch::Receiver<PathProblems>,
    gates: Gates,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    let Gates { mut stop, stay, mut active } = gates;
    let mut conflict_events: BTreeMap<(IpAddr, String), Instant> = BTreeMap::new();
    let me = opts.settings.identity.clone();
    let notify = Arc::new(tokio::sync::Notify::new());
    let services = reflect(Api::<Service>::all(client.clone()), notify.clone(), "services", stats.clone());
    let slices = reflect(Api::<EndpointSlice>::all(client.clone()), notify.clone(), "endpointslices", stats.clone());
    let nodes = reflect(Api::<Node>::all(client.clone()), notify.clone(), "nodes", stats.clone());
    let policies = reflect(
        Api::<L2AnnouncementPolicy>::all(client.clone()),
        notify.clone(),
        "l2announcementpolicies",
        stats.clone(),
    );
    let mut cilium_l2 = Watched::new(CILIUM_L2);
    cilium_l2.poll(&client, &notify, &stats).await;
    let mut metallb_l2 = Watched::new(METALLB_L2);
    metallb_l2.poll(&client, &notify, &stats).await;
    let mut metallb_pools = Watched::new(METALLB_POOL);
    metallb_pools.poll(&client, &notify, &stats).await;
    // BGP: xlb's kinds, read once the cluster serves them (definitions older than xlb's
    // binary must not keep it from planning), the pools' names, and the passwords' Secrets.
    let mut bgp_kinds = BgpKinds::new();
    bgp_kinds.poll(&client, &notify, &stats).await;
    let xlb_pools =
        reflect(Api::<LoadBalancerIPPool>::all(client.clone()), notify.clone(), "loadbalancerippools", stats.clone());
    let mut cilium_pools = Watched::new(CILIUM_POOL);
    cilium_pools.poll(&client, &notify, &stats).await;
    let secrets = reflect(
        Api::<Secret>::namespaced(client.clone(), &opts.settings.namespace),
        notify.clone(),
        "secrets",
        stats.clone(),
    );
    let stores_ready = Arc::new(AtomicBool::new(false));
    {
        let (s, e, n, p) = (services.clone(), slices.clone(), nodes.clone(), policies.clone());
        let mut others = vec![cilium_l2.store(), metallb_l2.store(), metallb_pools.store(), cilium_pools.store()];
        others.extend(bgp_kinds.stores());
        let (ready, notify) = (stores_ready.clone(), notify.clone());
        let (pools, keys) = (xlb_pools.clone(), secrets.clone());
        tokio::spawn(async move {
            let _ = pools.wait_until_ready().await;
            // The passwords' Secrets: waited for, but not forever (RBAC older than this xlb
            // may not let it read them, and that must not keep the node from planning).
            if tokio::time::timeout(Duration::from_secs(10), keys.wait_until_ready()).await.is_err() {
                tracing::warn!("the Secrets of xlb's namespace could not be listed within 10 s; BGPPeers with a password wait for them");
            }
            let _ = s.wait_until_ready().await;
            let _ = e.wait_until_ready().await;
            let _ = n.wait_until_ready().await;
            let _ = p.wait_until_ready().await;
            for c in others.into_iter().flatten() {
                let _ = c.wait_until_ready().await;
            }
            ready.store(true, Ordering::Relaxed);
            notify.notify_one();
        });
    }
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &opts.settings.namespace);
    if let Some(w) = &opts.witness {
        let run = super::witness::run(lease_api.clone(), me.clone(), w.clone(), stop.clone());
        tokio::spawn(once_active(active.clone(), stop.clone(), run));
    }
    // Membership depends on this watch: after an outage it retries every 2 s at most.
    let mut lease_events =
        watcher(lease_api.clone(), watcher::Config::default().labels(&format!("{MEMBER_LABEL}=node")))
            .backoff(CappedBackoff::new(Duration::from_secs(2)))
            .boxed();
    let mut leases =
        LeaseView { membership: Membership::new(opts.valid), relisted: Vec::new(), ready: false, watch_ok: true };
    let mut renew_ok = true;
    let mut renew_tick = tokio::time::interval(opts.renew);
    renew_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let recorder = Recorder::new(client.clone(), "xlb", &me);
    // The conditions are written by a task of their own: a slow API must not hold up the
    // Lease renewals and membership this loop keeps.
    let (reach_tx, reach_rx) = tokio::sync::watch::channel(BTreeMap::new());
    let report =
        report_reachability(client.clone(), me.clone(), services.clone(), reach_rx, stop.clone(), stats.clone());
    tokio::spawn(once_active(active.clone(), stop.clone(), report));
    let mut last: Option<Plan> = None;
    // The BGP problems said by an Event.
    let mut evented: Vec<String> = Vec::new();
    tracing::info!(node = %me, lease = %lease_name(&me), namespace = %opts.settings.namespace, "joining the xlb members");
    loop {
        let now = Instant::now();
        let wake = leases
            .membership
            .next_expiry(now)
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        tokio::select! {
            _ = stop.changed() => break,
            Ok(()) = active.changed() => {
                // Active: the Lease is renewed at once.
                renew_tick.reset_immediately();
                continue;
            }
            _ = renew_tick.tick(), if *active.borrow() => {
                let r = tokio::time::timeout(opts.renew.max(Duration::from_secs(1)), renew(&lease_api, &me, &opts.interface, opts.valid)).await;
                renew_ok = match r {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        if renew_ok {
                            tracing::warn!(error = %e, "renewing the membership Lease failed");
                        }
                        stats.failed("lease_renew", &Error::Kube(e));
                        false
                    }
                    Err(_) => {
                        if renew_ok {
                            tracing::warn!("renewing the membership Lease timed out");
                        }
                        stats.failed("lease_renew", &Error::Timeout(opts.renew.max(Duration::from_secs(1))));
                        false
                    }
                };
            }
            ev = lease_events.next() => {
                leases.on_event(ev, &stats)?;
                // Take in every Lease change already waiting: a busy thread must not judge
                // members by changes it has not read yet.
                while let Some(ev) = lease_events.next().now_or_never() {
                    leases.on_event(ev, &stats)?;
                }
            }
            Some(c) = conflicts.recv() => {
                let now = Instant::now();
                let k = (c.vip, c.claimant.clone());
                if conflict_events.get(&k).is_some_and(|t| now.saturating_duration_since(*t) < CONFLICT_EVENT_EVERY) {
                    continue;
                }
                if conflict_events.len() >= 1024 {
                    conflict_events.retain(|_, t| now.saturating_duration_since(*t) < CONFLICT_EVENT_EVERY);
                }
                conflict_events.insert(k, now);
                let names = last.as_ref().and_then(|p| p.owners.get(&c.vip)).map(|o| o.services.clone()).unwrap_or_default();
                let ev = Event {
                    type_: EventType::Warning,
                    reason: "AddressConflict".into(),
                    note: Some(format!("{} is also claimed by {} (seen by node {me}); {}", c.vip, c.claimant, c.outcome)),
                    action: "Announce".into(),
                    secondary: None,
                };
                publish(&recorder, &ev, &names, &services.state(), &stats).await;
                continue;
            }
            Ok(()) = paths.changed() => {}
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        // Liveness is judged only while this node both renews its Lease and watches the
        // others': otherwise nobody's Lease can be seen to change, and expiring them would
        // withdraw every VIP because of the API, not because of the nodes (fail static).
        match (renew_ok && leases.watch_ok, leases.membership.frozen()) {
            (false, false) => {
                tracing::warn!(
                    "the API server is out of reach: keeping the last known members and VIPs until it answers"
                );
                leases.membership.api_down(Instant::now());
            }
            (true, true) => {
                tracing::info!("the API server answers again: members judged from now on");
                leases.membership.api_up(Instant::now());
            }
            _ => {}
        }
        cilium_l2.poll(&client, &notify, &stats).await;
        metallb_l2.poll(&client, &notify, &stats).await;
        metallb_pools.poll(&client, &notify, &stats).await;
        cilium_pools.poll(&client, &notify, &stats).await;
        bgp_kinds.poll(&client, &notify, &stats).await;
        // Until the cluster has said whether it has Cilium's and MetalLB's policies, a plan
        // would withdraw the announcements they make (and the routes, without the BGP kinds).
        let foreign = cilium_l2.settled()
            && metallb_l2.settled()
            && metallb_pools.settled()
            && cilium_pools.settled()
            && bgp_kinds.settled();
        if !leases.ready || !stores_ready.load(Ordering::Relaxed) || !foreign {
            continue;
        }
        let members = leases.membership.live(Instant::now());
        let (svcs, sls, ns, mut ps) = (services.state(), slices.state(), nodes.state(), policies.state());
        ps.extend(cilium_l2.read_all::<L2AnnouncementPolicy>().into_iter().map(|mut p| {
            p.spec.read_from = Some(ReadFrom { kind: CILIUM_L2.kind, unanchored: true, addresses: None });
            Arc::new(p)
        }));
        ps.extend(advertisements(&metallb_l2.objects(), &metallb_pools.objects()).into_iter().map(Arc::new));
        let pools = pool_ranges(&xlb_pools.state(), cilium_pools.read_all(), &metallb_pools.objects());
        let my_labels = ns.iter().find(|n| n.name_any() == me).map(|n| n.labels().clone()).unwrap_or_default();
        let bgp = bgp_kinds.for_node(&me, &my_labels, &secrets.state(), &opts.settings.namespace);
        let cluster = Cluster {
            services: &svcs,
            slices: &sls,
            nodes: &ns,
            policies: &ps,
            members: &members,
            pools: &pools,
            bgp: &bgp,
        };
        let new = plan(&me, &cluster, &opts.settings, opts.snat_families);
        if last.as_ref() != Some(&new) {
            let no_problems = BTreeMap::new();
            let last_problems = last.as_ref().map_or(&no_problems, |p| &p.problems);
            for (svc, list) in &new.problems {
                if last_problems.get(svc) != Some(list) {
                    for p in list {
                        tracing::warn!(service = %svc, "{p}");
                    }
                }
            }
            let said_bgp = last.as_ref().map(|p| p.bgp_problems.as_slice()).unwrap_or_default();
            for p in new.bgp_problems.iter().filter(|p| !said_bgp.contains(p)) {
                tracing::warn!("bgp: {p}");
            }
            // The plan first: Events are only news, and a slow API must not hold a takeover up.
            if tx.send(new.clone()).is_err() {
                break;
            }
            stats.planned();
            let before: BTreeSet<IpAddr> = last.as_ref().map(|p| p.vips.iter().copied().collect()).unwrap_or_default();
            for vip in new.vips.iter().filter(|v| !before.contains(v)) {
                let names = new.owners.get(vip).map(|o| o.services.clone()).unwrap_or_default();
                tracing::info!(vip = %vip, services = ?names, members = members.len(), "this node announces the VIP");
                let ev = Event {
                    type_: EventType::Normal,
                    reason: "IPAnnounced".into(),
                    note: Some(format!(
                        "{vip} announced by node {me} on {}",
                        new.placement.get(vip).map_or(opts.interface.clone(), |on| on.join(","))
                    )),
                    action: "Announce".into(),
                    secondary: None,
                };
                // A passive xlb (a successor) announces nothing yet: the running one does.
                if *active.borrow() {
                    publish(&recorder, &ev, &names, &svcs, &stats).await;
                }
            }
            for vip in before.iter().filter(|v| !new.vips.contains(v)) {
                let to = new.owners.get(vip).and_then(|o| o.owner.clone()).unwrap_or_else(|| "nobody".into());
                tracing::info!(vip = %vip, to = %to, "the VIP moves to another node");
            }
            last = Some(new);
        }
        // The Services this node announces say whether their backends can be reached.
        let Some(current) = &last else { continue };
        // A BGP object that does not check out is said on it too, once this node writes
        // (each node says what it found; a problem gone and back is said again).
        if *active.borrow() && evented != current.bgp_problems {
            for p in current.bgp_problems.iter().filter(|p| !evented.contains(p)) {
                let uid = super::bgp::subject(p).and_then(|(_, kind, name)| bgp_kinds.uid(kind, name));
                bgp_problem_event(&recorder, &me, p, uid, &stats).await;
            }
            evented.clone_from(&current.bgp_problems);
        }
        let want = super::reach::desired(current, &paths.borrow_and_update());
        reach_tx.send_if_modified(|old| {
            let changed = *old != want;
            if changed {
                *old = want;
            }
            changed
        });
    }
    let name = lease_name(&me);
    if stay.load(Ordering::Relaxed) {
        tracing::info!(lease = %name, "handed over: the membership Lease stays, renewed by the new xlb");
        return Ok(());
    }
    // A node side that never became active never wrote the Lease: it may be the running
    // xlb's (a successor that failed to start).
    if !*active.borrow() {
        return Ok(());
    }
    // Graceful leave: the Lease goes first, so the others take over without waiting for it
    // to expire.
    match tokio::time::timeout(Duration::from_secs(3), lease_api.delete(&name, &DeleteParams::default())).await {
        Ok(Ok(_)) => tracing::info!(lease = %name, "membership Lease deleted: the other nodes take this node's VIPs"),
        Ok(Err(e)) => {
            tracing::warn!(lease = %name, error = %e, "deleting the membership Lease failed; it expires on its own");
            stats.failed("lease_delete", &Error::Kube(e));
        }
        Err(_) => tracing::warn!(lease = %name, "deleting the membership Lease timed out; it expires on its own"),
    }
    Ok(())
}

/// xlb's BGP kinds, each watched once the cluster serves it.
struct BgpKinds {
    peers: Watched,
    profiles: Watched,
    advertisements: Watched,
    overrides: Watched,
    /// Cilium's `CiliumBGPPeeringPolicy`, read as peers and advertisements.
    cilium: Watched,
}

impl BgpKinds {
    fn new() -> Self {
        let kind = |kind, what| Watched::new(Kind { group: "xlb.dev", kind, what });
        BgpKinds {
            peers: kind("BGPPeer", "bgppeers"),
            profiles: kind("BFDProfile", "bfdprofiles"),
            advertisements: kind("BGPAdvertisement", "bgpadvertisements"),
            overrides: kind("BGPNodeOverride", "bgpnodeoverrides"),
            cilium: Watched::new(super::cilium_bgp::CILIUM_BGP_POLICY),
        }
    }

    fn all(&mut self) -> [&mut Watched; 5] {
        [&mut self.peers, &mut self.profiles, &mut self.advertisements, &mut self.overrides, &mut self.cilium]
    }

    async fn poll(&mut self, client: &Client, notify: &Arc<tokio::sync::Notify>, stats: &Arc<Stats>) {
        for w in self.all() {
            w.poll(client, notify, stats).await;
        }
    }

    /// The uid of the object of `kind` named `name`.
    fn uid(&self, kind: &str, name: &str) -> Option<String> {
        let w = match kind {
            "BGPPeer" => &self.peers,
            "BFDProfile" => &self.profiles,
            "BGPAdvertisement" => &self.advertisements,
            "BGPNodeOverride" => &self.overrides,
            "CiliumBGPPeeringPolicy" => &self.cilium,
            _ => return None,
        };
        w.objects().iter().find(|o| o.metadata.name.as_deref() == Some(name)).and_then(|o| o.metadata.uid.clone())
    }

    fn settled(&mut self) -> bool {
        self.all().iter().all(|w| w.settled())
    }

    fn stores(&mut self) -> Vec<Option<kube::runtime::reflector::Store<kube::api::DynamicObject>>> {
        self.all().iter().map(|w| w.store()).collect()
    }

    /// What node `me` (with `labels`) does with BGP; `secrets`: those of `namespace`.
    fn for_node(
        &mut self,
        me: &str,
        labels: &BTreeMap<String, String>,
        secrets: &[Arc<Secret>],
        namespace: &str,
    ) -> NodeBgp {
        fn arcs<K>(v: Vec<K>) -> Vec<Arc<K>> {
            v.into_iter().map(Arc::new).collect()
        }
        let cilium = super::cilium_bgp::read(&self.cilium.objects());
        let mut peers = arcs(self.peers.read_all::<BgpPeer>());
        peers.extend(arcs(cilium.peers));
        let profiles = arcs(self.profiles.read_all::<BfdProfile>());
        let mut advertisements = arcs(self.advertisements.read_all::<BgpAdvertisement>());
        advertisements.extend(arcs(cilium.advertisements));
        let overrides = arcs(self.overrides.read_all::<BgpNodeOverride>());
        let objs = Objects {
            peers: &peers,
            profiles: &profiles,
            advertisements: &advertisements,
            overrides: &overrides,
            secrets,
        };
        let mut out = super::bgp::for_node(me, labels, objs, namespace);
        out.problems.extend(cilium.problems);
        out
    }
}

/// Every pool's name and address ranges, of xlb's, Cilium's and MetalLB's kinds (one that
/// does not parse is left out: the allocator says why).
fn pool_ranges(
    xlb: &[Arc<LoadBalancerIPPool>],
    cilium: Vec<LoadBalancerIPPool>,
    metallb: &[Arc<kube::api::DynamicObject>],
) -> Vec<(String, Vec<(IpAddr, IpAddr)>)> {
    let ranges = |v: super::alloc::PoolView| v.pool.blocks.iter().map(|b| (b.start, b.stop)).collect::<Vec<_>>();
    let mut out: Vec<(String, Vec<(IpAddr, IpAddr)>)> = xlb
        .iter()
        .map(|p| (**p).clone())
        .chain(cilium)
        .filter_map(|p| Some((p.name_any(), ranges(super::pools::pool_view(p.name_any(), &p.spec).ok()?))))
        .collect();
    for p in metallb {
        let Ok(spec) = super::foreign::spec_of::<super::foreign::IpAddressPoolSpec>(p) else { continue };
        let Ok(view) = super::pools::metallb_view(String::new(), &spec, &[]) else { continue };
        out.push((p.metadata.name.clone().unwrap_or_default(), ranges(view)));
    }
    out
}

/// A Warning Event `InvalidSpec` on the BGP object `line` (a problem of `NodeBgp`) is about
/// (`uid`: its uid, which `kubectl describe` finds its Events by).
async fn bgp_problem_event(recorder: &Recorder, me: &str, line: &str, uid: Option<String>, stats: &Stats) {
    let Some((version, kind, name)) = super::bgp::subject(line) else { return };
    let regarding = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(version.into()),
        kind: Some(kind.into()),
        name: Some(name.into()),
        uid,
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: "InvalidSpec".into(),
        note: Some(format!("node {me}: {line}")),
        action: "Read".into(),
        secondary: None,
    };
    recorder.publish_within(&ev, &regarding, stats).await;
}

//! The running node: the owners wired together. It carries out what control decides: the
//! plane's snapshots, the ownership machine's fence and owned set, the speakers'
//! announcements (through the outbox, withheld while fenced), and the VIP map entries
//! (owned VIPs as the L2 speaker says; served VIPs another node announces as forward-only).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use xlb::{
    abi::{VIP_FORWARD, VIP_PROBING},
    control::{
        announcer::{Actions, Say},
        backends::service_of_spec,
        bgp::{BgpConfig, Routes},
        compile::Compiled,
        nexthop::Path,
        ownership::{Claim, OwnedChange, Ownership},
        speaker::{owned_set, OwnedAddr, Speakers},
        VipStatus,
    },
    io::worker::ConflictReport,
    k8s::{
        plan::Plan,
        sessions::SessionState,
        source::{Conflict, PathProblems},
        witness::Witness,
    },
    lb::{heartbeat::Heartbeat, neighbor::OutFrame},
};

use super::{datapath::Datapath, outbox::Outbox, plane::Plane, start::Source};

/// How long after a failed start FRR is tried again (Kubernetes).
const FRR_RETRY: Duration = Duration::from_secs(30);

/// Everything the control thread owns while xlb runs.
pub(super) struct Node {
    pub(super) dp: Datapath,
    pub(super) plane: Plane,
    pub(super) speakers: Speakers,
    /// Failover between xlb nodes (none: this node owns every VIP it serves).
    pub(super) ownership: Option<Ownership>,
    /// Kubernetes: the witness Lease a two-member set votes with.
    pub(super) witness: Option<Arc<Witness>>,
    pub(super) outbox: Outbox,
    pub(super) snat_addrs: Vec<IpAddr>,
    /// VIPs in the XDP map as forward-only (served here, announced by another node).
    forwarded: BTreeSet<IpAddr>,
    /// The services changed since `forwarded` was computed.
    forward_stale: bool,
    pub(super) started: Instant,
    /// (VIP, backend, why) of the backends kept from one VIP's flows, as last logged.
    said_paths: BTreeSet<(IpAddr, IpAddr, String)>,
    /// Per queue: batch times so far (merged from the workers' histograms).
    pub(super) batch_times: HashMap<crate::metrics::QueueId, Histogram<u64>>,
    /// The routing daemon that advertises the routed VIPs (none: no `bgp:`).
    pub(super) frr: Option<super::frr::Frr>,
    /// When FRR last failed to start (Kubernetes, where BGP objects may come at any time).
    pub(super) frr_failed: Option<Instant>,
}

impl Node {
    pub(super) fn new(
        dp: Datapath,
        plane: Plane,
        speakers: Speakers,
        ownership: Option<Ownership>,
        witness: Option<Arc<Witness>>,
        snat_addrs: Vec<IpAddr>,
    ) -> Self {
        Node {
            dp,
            plane,
            speakers,
            ownership,
            witness,
            outbox: Outbox::default(),
            snat_addrs,
            forwarded: BTreeSet::new(),
            forward_stale: true,
            started: Instant::now(),
            said_paths: BTreeSet::new(),
            batch_times: HashMap::new(),
            frr: None,
            frr_failed: None,
        }
    }

    /// The ownership machine, told the witness Lease's hold as it stands now.
    fn ownership_now(&mut self) -> Option<&mut Ownership> {
        let o = self.ownership.as_mut()?;
        if let Some(w) = &self.witness {
            o.set_witness_hold(w.held_until());
        }
        Some(o)
    }

    /// Whether announcements are withheld at `now` (the fence fell).
    fn fenced(&self, now: Instant) -> bool {
        self.ownership.as_ref().is_some_and(|o| o.fenced(now))
    }

    /// Rebuilds and publishes the snapshot. A routed VIP whose readiness changed with it
    /// (its last backend went down, or one came up) is withdrawn or advertised.
    pub(super) fn rebuild(&mut self) {
        self.plane.rebuild(self.speakers.l2.vip_modes(), Instant::now());
        if self.frr.is_some() {
            if let Err(e) = self.announce_owned("VIP withdrawn") {
                tracing::error!(error = %format!("{e:#}"), "announcing after a rebuild");
            }
        }
    }

    /// The owned set at `now`: every served VIP without failover, the ownership machine's
    /// with it, and every routed VIP (each node that serves one advertises it: ECMP); and
    /// the SNAT addresses.
    pub(super) fn owned(&self) -> Vec<OwnedAddr> {
        let compiled = &self.plane.compiled;
        let mut vips: Vec<IpAddr> = match &self.ownership {
            None => compiled.vips.clone(),
            Some(o) => o.owned().iter().copied().collect(),
        };
        let l2_owned = vips.len();
        if !compiled.announced.routes.is_empty() {
            let have: HashSet<IpAddr> = vips.iter().copied().collect();
            // Served: a service of this node has it (Kubernetes: whoever owns it on the
            // segment), or this node's own service proxy takes its traffic.
            let served: HashSet<IpAddr> = self.plane.served_vips().chain(self.dp.local_vips()).collect();
            vips.extend(compiled.announced.routes.keys().filter(|v| !have.contains(v) && served.contains(v)));
        }
        // A VIP whose traffic this node's own service proxy takes is ready without a service.
        let ready = |v| self.dp.is_local(v) || self.plane.vip_ready(v);
        let mut owned = owned_set(&vips, &self.snat_addrs, true, ready, &compiled.announced);
        // Routed VIPs that another node owns on the segment: routes only, no ARP here.
        for o in owned.iter_mut().take(vips.len()).skip(l2_owned) {
            o.l2 = false;
        }
        owned
    }

    /// Hands the owned set to the speakers and carries out what they say; `why`: the log
    /// line for each address given up.
    pub(super) fn announce_owned(&mut self, why: &str) -> anyhow::Result<()> {
        let now = Instant::now();
        let owned = self.owned();
        let addrs: Vec<IpAddr> = owned.iter().map(|o| o.addr).collect();
        self.dp.join_groups(&addrs);
        let act = self.speakers.set_owned(&owned, now);
        for v in &act.withdrawn {
            tracing::info!(vip = %v, "{why}");
        }
        self.apply(&act)
    }

    /// An owned-set change from the ownership machine.
    fn owned_changed(&mut self, change: Option<OwnedChange>) -> anyhow::Result<()> {
        let Some(change) = change else { return Ok(()) };
        for v in &change.taken {
            tracing::info!(vip = %v, "taking the VIP over (its owner's heartbeats stopped, or this node ranks first)");
        }
        self.announce_owned("VIP handed to a better-ranked live node")
    }

    /// VIPs this node serves while another node announces them: their packets that still
    /// reach this node (a client that has not yet learnt the new MAC after a move) are
    /// forwarded like the owner's, from the same Maglev tables, instead of going to the kernel.
    fn forward_only(&self, announced: &HashSet<IpAddr>) -> BTreeSet<IpAddr> {
        self.plane.served_vips().filter(|v| !announced.contains(v)).collect()
    }

    /// Carries out a speaker's actions: VIP map entries, a new snapshot, logs, frames.
    pub(super) fn apply(&mut self, act: &Actions) -> anyhow::Result<()> {
        // The forward-only set changes only with the VIP map or the services.
        if !act.map_updates.is_empty() || self.forward_stale {
            self.forward_stale = false;
            let announced: HashSet<IpAddr> = self.speakers.l2.vips().iter().map(|(v, _)| *v).collect();
            let forward = self.forward_only(&announced);
            // What this node serves: the services' VIPs and its SNAT addresses (their
            // replies carry the SNAT flows).
            let served: HashSet<IpAddr> = self.plane.served_vips().chain(self.snat_addrs.iter().copied()).collect();
            for (vip, flags) in &act.map_updates {
                // A VIP given up but still served stays in the map, forward-only. A served
                // address being probed (at start, after a conflict) is forwarded meanwhile:
                // its traffic reaches this MAC only from hosts that learnt it from this node,
                // which is what a restart looks like, and it is not dropped for the probes'
                // duration.
                let flags = match *flags {
                    0 if forward.contains(vip) => VIP_FORWARD,
                    f if f & VIP_PROBING != 0 && served.contains(vip) => f | VIP_FORWARD,
                    f => f,
                };
                self.dp.set_vip(*vip, flags)?;
            }
            for v in forward.difference(&self.forwarded) {
                self.dp.set_vip(*v, VIP_FORWARD)?;
            }
            for v in self.forwarded.difference(&forward) {
                if !announced.contains(v) {
                    self.dp.set_vip(*v, 0)?;
                }
            }
            self.forwarded = forward;
        }
        if act.vips_changed {
            self.plane.publish(self.speakers.l2.vip_modes());
        }
        if let Some(f) = &self.frr {
            f.routes(&act.routes);
        }
        log_actions(act);
        // A fenced node sends no announcements either: another node may own its VIPs.
        if self.fenced(Instant::now()) {
            if !act.say.is_empty() {
                tracing::debug!(announcements = act.say.len(), "fenced: announcements withheld");
            }
        } else {
            self.send_announcements(&act.say);
        }
        Ok(())
    }

    /// Sends each announcement on every interface its address is placed on, from that
    /// interface's MAC.
    fn send_announcements(&mut self, say: &[Say]) {
        if say.is_empty() {
            return;
        }
        for p in 0..self.dp.ports.len() {
            let mac = self.dp.ports[p].dev.mac;
            let frames: Vec<OutFrame> =
                say.iter().filter(|s| self.dp.placed(s.vip, p)).filter_map(|s| s.frame(mac)).collect();
            if !frames.is_empty() {
                self.outbox.send(p, &frames, &self.dp, false);
            }
        }
    }

    /// Makes `compiled` what runs: backends that leave a service that stays drain, VIPs
    /// come and go, health checks follow.
    pub(super) fn apply_compiled(&mut self, compiled: Compiled) -> anyhow::Result<()> {
        let now = Instant::now();
        self.place(&compiled.placement)?;
        self.plane.set_compiled(compiled, now);
        self.forward_stale = true;
        // Routed-only VIPs are not owned on the segment: every node that serves one routes it.
        let vips: Vec<IpAddr> = self.plane.compiled.segment_vips().collect();
        if let Some(o) = self.ownership_now() {
            o.set_vips(&vips);
            o.refresh(now);
        }
        self.announce_owned("VIP withdrawn")?;
        self.rebuild();
        self.report_paths();
        Ok(())
    }

    /// Puts each VIP on the interfaces `placement` names (the others on every interface);
    /// a VIP that reaches an interface it was not on is announced again, there too.
    pub(super) fn place(&mut self, placement: &BTreeMap<IpAddr, Vec<String>>) -> anyhow::Result<()> {
        let (ports, unknown) = self.dp.ports_named(placement);
        for (vip, interface) in unknown {
            tracing::warn!(%vip, %interface, "the VIP is placed on an interface xlb does not serve (interfaces take effect at the next start)");
        }
        self.plane.hops.placed = placement.iter().map(|(v, n)| (*v, n.clone())).collect();
        let before: HashMap<IpAddr, Vec<usize>> = placement.keys().map(|v| (*v, self.dp.ports_of(*v))).collect();
        if !self.dp.set_placement(ports)? {
            return Ok(());
        }
        let on: Vec<String> = placement.iter().map(|(v, n)| format!("{v} on {}", n.join(","))).collect();
        tracing::info!(placement = %on.join("; "), "VIPs placed on interfaces (the others: on every interface)");
        // Backends' paths are judged again against where the VIPs now are.
        let now = Instant::now();
        self.plane.next_neigh = now;
        let grew: Vec<IpAddr> = before
            .iter()
            .filter(|(v, old)| self.dp.ports_of(**v).iter().any(|p| !old.contains(p)))
            .map(|(v, _)| *v)
            .collect();
        for v in grew {
            let act = self.speakers.l2.reannounce(v, now);
            self.apply(&act)?;
        }
        Ok(())
    }

    /// Re-reads the config file and applies it if it is valid.
    pub(super) fn reload(&mut self) -> anyhow::Result<()> {
        let bgp_of = |plane: &super::plane::Plane| match &plane.source {
            Source::File { desired, .. } => desired.bgp.clone(),
            _ => None,
        };
        let before = bgp_of(&self.plane);
        let Some(mut compiled) = self.plane.reload_file() else { return Ok(()) };
        // A changed bgp: goes to FRR before the routes that may follow from it.
        match (before, bgp_of(&self.plane), &mut self.frr) {
            // Changed, or back after a reload that removed it (FRR kept running).
            (old, Some(new), Some(f)) if old.as_ref() != Some(&new) => f.reconfigure(new),
            (_, Some(_), None) => {
                tracing::warn!(
                    field = "bgp",
                    "bgp: was added: FRR starts at the next restart; until then every VIP stays on L2"
                );
            }
            // Removed: every route is withdrawn (nothing is routed any more), and every VIP
            // is announced on the segment; FRR keeps its sessions, idle, until the next restart.
            _ => {}
        }
        if self.frr.is_none() {
            compiled.announced = Default::default();
        }
        self.apply_compiled(compiled)?;
        self.plane.reloads += 1;
        self.plane.last_reload_error = None;
        tracing::info!(generation = self.plane.publisher.generation(), reloads = self.plane.reloads, "config reloaded");
        Ok(())
    }

    /// Applies a plan from the Kubernetes node side: its services, and the VIPs this node
    /// announces.
    pub(super) fn apply_plan(&mut self, plan: Plan) -> anyhow::Result<()> {
        if let Some(o) = &mut self.ownership {
            // A list without this node (a plan read before its Lease is first renewed: the
            // node side starts passive) is not taken: with it, the node would agree with
            // its peers' list, or ask for the witness, before they know it. It stays alone
            // and owns nothing (it is no candidate) until the API lists it.
            let listed = plan.members.iter().any(|m| m == o.me());
            if listed && o.set_members(plan.members.clone(), Instant::now()) {
                tracing::info!(members = ?plan.members, "failover: the members changed");
            }
            o.set_candidates(plan.owners.iter().map(|(v, o)| (*v, o.candidates.clone())).collect());
        }
        self.speakers.l2.set_timings(plan.owners.iter().filter_map(|(v, o)| Some((*v, o.timing?))).collect());
        if let Source::Kube { plans, members, owners, .. } = &mut self.plane.source {
            *plans += 1;
            *members = plan.members;
            *owners = plan.owners.iter().map(|(v, o)| (*v, o.owner.clone())).collect();
        }
        if self.dp.set_local(plan.local_vips.iter().copied().collect())? {
            tracing::info!(vips = ?plan.local_vips, "VIPs whose traffic this node's own service proxy takes (every node runs xlb)");
        }
        self.set_bgp(plan.bgp.as_ref());
        let compiled = Compiled {
            vips: plan.vips,
            specs: plan.specs,
            placement: plan.placement,
            assignments: Vec::new(),
            health: Vec::new(),
            announced: if self.frr.is_some() { plan.announced } else { Default::default() },
        };
        self.apply_compiled(compiled)?;
        tracing::debug!(generation = self.plane.publisher.generation(), vips = ?self.plane.compiled.vips, "plan from Kubernetes applied");
        self.report_paths();
        Ok(())
    }

    /// Kubernetes: makes FRR run `want` (what this node's BGP objects say). FRR starts the
    /// first time, takes changes without a restart after, and is left without peers when no
    /// BGPPeer selects this node any more. A start that failed is tried again at the next
    /// change of the objects, 30 s later at the soonest.
    fn set_bgp(&mut self, want: Option<&BgpConfig>) {
        match (want, &mut self.frr) {
            (Some(cfg), Some(f)) if f.config != *cfg => f.reconfigure(cfg.clone()),
            (Some(cfg), None) if self.frr_failed.is_none_or(|t| t.elapsed() >= FRR_RETRY) => {
                // FRR's own thread starts it (and again, with a back-off, if it fails): the
                // control loop must not wait, its heartbeats would stop.
                match super::start_frr(cfg, &self.dp.ports[0].dev.name, false) {
                    Ok(f) => {
                        self.frr = Some(f);
                        self.frr_failed = None;
                        self.speakers.add(Box::new(Routes::new()));
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "BGP: FRR did not start; this node advertises no VIP until it does (those also on L2 stay there)");
                        self.frr_failed = Some(Instant::now());
                    }
                }
            }
            (None, Some(f)) if !f.config.peers.is_empty() => {
                tracing::info!("BGP: no BGPPeer selects this node any more: its sessions close");
                let idle = BgpConfig { peers: Vec::new(), advertisements: Vec::new(), ..f.config.clone() };
                f.reconfigure(idle);
            }
            _ => {}
        }
    }

    /// Kubernetes: hands this node's BGP sessions, as FRR last reported them, to the node
    /// side, which says them in the cluster (only changes cost anything).
    pub(super) fn report_sessions(&self) {
        let (Some(f), Source::Kube { handle: Some(h), .. }) = (&self.frr, &self.plane.source) else { return };
        let sessions = f.sessions.lock().map(|s| s.clone()).unwrap_or_default();
        h.bgp_sessions(
            sessions
                .into_iter()
                .map(|s| SessionState { peer: s.peer, session: s.state, bfd: s.bfd, advertised: s.sent })
                .collect(),
        );
    }

    /// Tells the Kubernetes side which backends their paths keep from new flows, by Service,
    /// so that the Services this node announces say it. A backend kept from one service's
    /// flows only (reached through an interface its VIP is not on) is also logged, once.
    fn report_paths(&mut self) {
        let mut out = PathProblems::new();
        let mut only_here = BTreeSet::new();
        for spec in &self.plane.compiled.specs {
            for (addr, _, _) in &spec.backends {
                let why = match self.plane.hops.problem(*addr, spec.mode) {
                    Some(why) => why,
                    None => {
                        let Some(why) = self.plane.hops.placement_problem(spec.key.vip, *addr) else { continue };
                        only_here.insert((spec.key.vip, *addr, why.clone()));
                        why
                    }
                };
                let fix = if matches!(self.plane.hops.paths.get(addr), Some(Path::Unreachable(_))) {
                    "; reach the pods through the nodes (leave xlb.dev/backends out), or route their network to this node"
                } else {
                    ""
                };
                let list = out.entry(service_of_spec(&spec.name).to_string()).or_default();
                let line = format!("backend {addr}: {why}{fix}");
                if !list.contains(&line) {
                    list.push(line);
                }
            }
        }
        for (vip, addr, why) in only_here.difference(&self.said_paths) {
            tracing::warn!(%vip, backend = %addr, "backend gets no new flows of this VIP: {why}");
        }
        self.said_paths = only_here;
        if let Source::Kube { handle: Some(h), .. } = &self.plane.source {
            h.path_problems(out);
        }
    }

    /// Reads the neighbour table; rebuilds when a backend's MAC appeared or changed.
    pub(super) fn refresh_neighbours(&mut self) {
        if self.plane.refresh_neighbours(&self.dp, Instant::now()) {
            self.rebuild();
            self.report_paths();
        }
    }

    /// Failover housekeeping: the heartbeat, the fence, owners.
    pub(super) fn failover_tick(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let Some(o) = self.ownership_now() else { return Ok(()) };
        let t = o.tick(now);
        if let (Some(w), Some(want)) = (&self.witness, t.want_witness) {
            w.want(want);
        }
        if let Some(f) = t.beat {
            self.outbox.send(0, &[f], &self.dp, true);
        }
        match t.fence {
            Some(at) => self.dp.fence.set(at),
            None => self.dp.fence.clear(),
        }
        match t.fenced {
            Some(true) => {
                let alive = self.ownership.as_ref().map(|o| o.alive_members(now).join(", ")).unwrap_or_default();
                tracing::warn!(alive = %alive, "no quorum: this node stops answering for its VIPs (fenced)");
            }
            Some(false) => tracing::info!("quorum again: answering for its VIPs"),
            None => {}
        }
        self.owned_changed(t.owned)?;
        if t.reannounce_all {
            let act = self.speakers.reannounce_all(now);
            self.apply(&act)?;
        }
        Ok(())
    }

    /// Reads `first` and every heartbeat queued in `rx`. If that changed who is alive or may
    /// own VIPs, the failover state is brought up to date at once: this node's own heartbeat
    /// first when what it says changed (quorum), then the fence, then the owners.
    pub(super) fn take_heartbeats(&mut self, first: Option<Heartbeat>, rx: &Receiver<Heartbeat>) -> anyhow::Result<()> {
        let Some(o) = &mut self.ownership else { return Ok(()) };
        let now = Instant::now();
        let mut changed = false;
        for h in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            if h.handing_over() {
                let hold_s = xlb::lb::heartbeat::HANDOVER_HOLD.as_secs();
                tracing::info!(
                    node = h.name(),
                    hold_s,
                    "a peer hands over to a new xlb on its node: it keeps its VIPs"
                );
            }
            changed |= o.heard(&h, now);
        }
        if changed {
            self.failover_tick()?;
        }
        Ok(())
    }

    /// Another MAC claims a VIP this node announces: the L2 speaker records it; with
    /// failover, the better-ranked node keeps it. Returns what to tell the Kubernetes API,
    /// if anything.
    pub(super) fn conflict(&mut self, report: &ConflictReport) -> anyhow::Result<Option<Conflict>> {
        // Another interface of this box on the same segment is no claimant.
        if self.dp.ports.iter().any(|p| p.dev.mac == report.mac) {
            return Ok(None);
        }
        let now = Instant::now();
        let act = self.speakers.l2.conflict(report.vip, report.mac, now);
        self.apply(&act)?;
        let (vip, mac) = (report.vip, report.mac);
        let claim = self.ownership_now().map_or(Claim::NotAPeer, |o| o.conflict(vip, mac, now));
        let said = match claim {
            Claim::Yielded { node } => {
                tracing::warn!(%vip, node = %node, "conflict: a better-ranked node announces this VIP; withdrawing");
                let change = self.ownership.as_mut().and_then(|o| o.refresh(now));
                self.owned_changed(change)?;
                Some((format!("node {node}"), format!("{node} ranks first: this node withdrew")))
            }
            Claim::Kept { node } => {
                tracing::warn!(%vip, node = %node, "conflict: this node ranks first for the VIP; announcing it again");
                let act = self.speakers.l2.reannounce(vip, now);
                self.apply(&act)?;
                Some((format!("node {node}"), "this node ranks first: it announced the VIP again".to_string()))
            }
            // Cut off: the claimant is probably the node that took over; this node has
            // stopped answering, so there is nothing to tell.
            Claim::Quiet => None,
            Claim::NotAPeer => {
                if let Some(o) = &self.ownership {
                    tracing::info!(%vip, claimant = %mac, alive = ?o.alive_members(now), "the claimant is no peer this node hears");
                }
                (!act.new_conflicts.is_empty()).then(|| {
                    (format!("MAC {mac}"), "this node keeps announcing it (find the host with that MAC)".to_string())
                })
            }
        };
        Ok(said.map(|(claimant, outcome)| Conflict { vip, claimant, outcome }))
    }

    /// Leaving: a last heartbeat that hands this node's VIPs over at once.
    pub(super) fn leave(&mut self) {
        let now = Instant::now();
        let Some(o) = &mut self.ownership else { return };
        // Stop answering first: the peers take the VIPs as soon as they read the beat.
        let beat = o.leave(now);
        self.dp.fence.set(now);
        self.last_beat(beat);
    }

    /// Handing over to a new xlb on this node: a last heartbeat that has the peers hold this
    /// node's VIPs for it (they stay here).
    pub(super) fn hand_over(&mut self) {
        let Some(o) = &mut self.ownership else { return };
        let beat = o.hand_over(Instant::now());
        self.last_beat(Some(beat));
    }

    /// Sends this process's last heartbeat, before the workers stop.
    fn last_beat(&mut self, beat: Option<OutFrame>) {
        // Announcements still waiting no longer matter.
        self.outbox.clear();
        if let Some(f) = beat {
            self.outbox.send(0, &[f], &self.dp, true);
            // Let queue 0's worker put it on the wire before it is stopped.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn log_actions(act: &Actions) {
    for (vip, old, new) in &act.transitions {
        match new {
            VipStatus::Conflict { mac, retry, attempts } => {
                let retry_in_s = retry.saturating_duration_since(Instant::now()).as_secs();
                tracing::warn!(%vip, holder = %mac, attempts, retry_in_s, "VIP is already in use on this link; not announcing it")
            }
            _ => tracing::info!(%vip, from = old.name(), to = new.name(), "VIP state"),
        }
    }
    for (vip, mac, status) in &act.new_conflicts {
        if !matches!(status, VipStatus::Probing { .. }) {
            tracing::warn!(%vip, claimant = %mac, state = status.name(), "another host claims a VIP we announce");
        }
    }
}

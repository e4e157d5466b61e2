//! What the running node shows: admin answers ([`crate::admin::answers`]), the input of a
//! metrics scrape, and the final report (`--stats-file`). Reads only; the one thing it
//! changes is the merged batch-time histograms a scrape takes from the workers.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{json, Value};
use xlb::{
    abi::CLASS_NAMES,
    control::{backends::Health, config, nexthop::Path, services::ServiceSpec, VipStatus},
    io::worker::{batch_histogram, WorkerHandle, WorkerRequest},
    lb::{
        conntrack::FlowState,
        maglev::TableSize,
        snapshot::Service,
        stats::{ObjectCounters, Traffic},
        Counter, DropReason, WorkerStats,
    },
};

use super::{datapath::Finals, node::Node, start::Source};
use crate::{
    admin::{answers, refusal, Query},
    metrics::{self, BackendSeries, MetricsInput, QueueId, ServiceSeries},
};

/// `proto:vip:port`.
fn service_key_name(s: &Service) -> String {
    format!("{}:{}", config::proto_name(s.key.proto), SocketAddr::new(s.key.vip, s.key.port))
}

/// A path as the backend table shows it: `on-link`, `via GATEWAY`, `unreachable` (the
/// reason is in the JSON's `path_problem`).
fn path_word(p: &Path) -> String {
    match p {
        Path::Unreachable(_) => "unreachable".into(),
        p => p.to_string(),
    }
}

fn queue_id(w: &WorkerHandle) -> QueueId {
    QueueId { interface: w.ifname.clone(), queue: w.queue }
}

fn ip16(a: &[u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*a);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

fn to_value<T: serde::Serialize>(answer: &T) -> Value {
    serde_json::to_value(answer).unwrap_or_else(|e| refusal(format!("encoding the answer: {e}")))
}

impl Node {
    /// One object's traffic summed over the workers.
    fn traffic(&self, read: impl Fn(&ObjectCounters) -> Traffic) -> Traffic {
        let mut t = Traffic::default();
        for c in &self.dp.counters {
            t += read(c);
        }
        t
    }

    /// A backend's traffic in a service, whether or not it is in the snapshot now.
    fn backend_traffic(&self, spec: &ServiceSpec, addr: IpAddr, port: u16) -> Traffic {
        self.plane
            .stats_ids
            .backend_id(spec.key, addr, port)
            .map_or(Traffic::default(), |id| self.traffic(|c| c.backend(id)))
    }

    /// Finds a datapath service by NAME (all its ports), NAME/PROTO:PORT, or VIP:PORT.
    fn find_services(&self, what: &str) -> Vec<usize> {
        (0..self.plane.services.len())
            .filter(|i| {
                let s = &self.plane.services[*i];
                self.plane.name_of(*i) == what
                    || self.plane.owner_of(*i) == what
                    || SocketAddr::new(s.key.vip, s.key.port).to_string() == what
                    || service_key_name(s) == what
            })
            .collect()
    }

    fn health_of(&self, i: usize, addr: IpAddr) -> Health {
        let owner = self.plane.owner_of(i);
        let checked = self.plane.compiled.health.iter().any(|t| t.service == owner);
        self.plane.backends.health_of(&owner, addr, checked, Instant::now())
    }

    /// Answers an admin query.
    pub(super) fn answer(&mut self, q: &Query) -> Value {
        match q {
            Query::Status => to_value(&self.status()),
            Query::Services => to_value(&self.services()),
            Query::Backends => to_value(&self.backends()),
            Query::Pools => to_value(&self.pools()),
            Query::BgpPeers => to_value(&self.bgp_peers()),
            Query::BgpRoutes => to_value(&self.bgp_routes()),
            Query::Conntrack { service, client, backend, limit } => {
                to_value(&self.conntrack(service.as_deref(), *client, *backend, *limit))
            }
            Query::Maglev { service } => match self.maglev(service) {
                Some(m) => to_value(&m),
                None => refusal(format!("no service {service:?} (see xlb service list)")),
            },
            Query::Metrics => Value::String(metrics::render(&self.metrics_input())),
        }
    }

    fn status(&self) -> answers::Status {
        let now = Instant::now();
        let workers = self
            .dp
            .workers
            .iter()
            .zip(&self.dp.cores)
            .map(|(w, core)| {
                let s = w.stats.read();
                let (ct, _) = w.stats.conntrack();
                answers::Worker {
                    interface: w.ifname.clone(),
                    queue: w.queue,
                    socket: w.mode.to_string(),
                    core: *core,
                    rx_frames: s.get(Counter::RxFrames),
                    tx_frames: s.get(Counter::TxFrames),
                    drops: s.drops.iter().sum(),
                    flows: ct.live,
                }
            })
            .collect();
        let plane = &self.plane;
        answers::Status {
            interface: self.dp.each_port(|p| p.dev.name.clone()),
            mac: self.dp.each_port(|p| p.dev.mac.to_string()),
            xdp_mode: self.dp.each_port(|p| p.mode.to_string()),
            generation: plane.publisher.generation(),
            reloads: plane.reloads,
            reload_failures: plane.reload_failures,
            last_reload_error: plane.last_reload_error.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            config: match &plane.source {
                Source::File { path, .. } => Some(path.display().to_string()),
                Source::Flags | Source::Kube { .. } => None,
            },
            failover: self.ownership.as_ref().map(|o| answers::Failover {
                node: o.me().to_string(),
                alive: o.alive_members(now).into_iter().map(str::to_string).collect(),
                quorum: o.quorum(now),
                witness: o.holds_witness(now),
                fenced: o.fenced(now),
                heartbeats_ignored: o.ignored(),
            }),
            kubernetes: match &plane.source {
                Source::Kube { plans, members, owners, .. } => Some(answers::Kubernetes {
                    plans: *plans,
                    members: members.clone(),
                    announced_by: owners.iter().map(|(v, o)| (v.to_string(), o.clone())).collect(),
                }),
                _ => None,
            },
            workers,
            vips: self
                .speakers
                .l2
                .vips()
                .iter()
                .map(|(v, s)| answers::Vip {
                    vip: v.to_string(),
                    state: s.name().to_string(),
                    interfaces: self
                        .dp
                        .ports_of(*v)
                        .iter()
                        .map(|p| self.dp.ports[*p].dev.name.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                })
                .collect(),
        }
    }

    fn services(&self) -> answers::Services {
        let services = self
            .plane
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = self.traffic(|c| c.service(s.stats_id));
                answers::Service {
                    name: self.plane.name_of(i),
                    vip: s.key.vip.to_string(),
                    port: s.key.port,
                    protocol: config::proto_name(s.key.proto).to_string(),
                    mode: s.mode.name().to_string(),
                    backends: self.plane.compiled.specs.get(i).map_or(0, |sp| sp.backends.len()),
                    up: s.backends.iter().filter(|b| b.takes_new_flows()).count(),
                    affinity_s: s.affinity.map(|a| a / 1_000_000_000),
                    packets: t.packets,
                    bytes: t.bytes,
                    reply_packets: t.reply_packets,
                    reply_bytes: t.reply_bytes,
                }
            })
            .collect();
        answers::Services { services }
    }

    fn backends(&self) -> answers::Backends {
        let plane = &self.plane;
        let mut list = Vec::new();
        for (i, spec) in plane.compiled.specs.iter().enumerate() {
            let svc = plane.services.get(i);
            let size = svc.map_or(0, |s| s.table().size());
            for (addr, port, weight) in &spec.backends {
                let b = svc
                    .and_then(|s| s.backends.iter().position(|b| b.addr == *addr && b.port == *port).map(|j| (s, j)));
                let slots = b.map_or(0, |(s, j)| s.table().slots_of(u32::try_from(j).unwrap_or(u32::MAX)));
                // Counted under an id that outlives health changes and reloads.
                let t = self.backend_traffic(spec, *addr, *port);
                let health = self.health_of(i, *addr);
                list.push(answers::Backend {
                    service: spec.name.clone(),
                    backend: SocketAddr::new(*addr, *port).to_string(),
                    health: health.name().to_string(),
                    health_detail: match health {
                        Health::Down(why) => Some(why),
                        Health::Up | Health::Unchecked => None,
                    },
                    weight: *weight,
                    share: format!("{:.1}%", 100.0 * slots as f64 / size.max(1) as f64),
                    slots,
                    path: plane.hops.paths.get(addr).map(path_word),
                    path_problem: plane.hops.problem(*addr, spec.mode),
                    mac: plane.hops.mac_for(*addr, spec.mode).map(|m| m.to_string()),
                    packets: Some(t.packets),
                    bytes: Some(t.bytes),
                });
            }
        }
        let now = Instant::now();
        for l in plane.backends.leaving() {
            list.push(answers::Backend {
                service: l.spec.clone(),
                backend: SocketAddr::new(l.addr, l.port).to_string(),
                health: "draining".into(),
                health_detail: Some(format!(
                    "removed from the config; drained for {} s more",
                    l.until.saturating_duration_since(now).as_secs()
                )),
                weight: 0,
                share: "0.0%".into(),
                slots: 0,
                path: plane.hops.paths.get(&l.addr).map(path_word),
                path_problem: None,
                mac: plane.hops.macs.get(&l.addr).map(ToString::to_string),
                packets: None,
                bytes: None,
            });
        }
        answers::Backends { backends: list }
    }

    fn bgp_peers(&self) -> answers::BgpPeers {
        let Some(frr) = &self.frr else { return answers::BgpPeers { configured: false, peers: Vec::new() } };
        let sessions = frr.sessions.lock().map(|s| s.clone()).unwrap_or_default();
        let peers = frr
            .config
            .peers
            .iter()
            .map(|p| {
                let s = sessions.iter().find(|s| s.peer == p.address);
                answers::BgpPeer {
                    peer: p.address.to_string(),
                    asn: p.asn,
                    state: s.map_or_else(|| "unknown".into(), |s| s.state.clone()),
                    bfd: s.and_then(|s| s.bfd.clone()),
                    routes_sent: s.map(|s| s.sent),
                    since: s.map(|s| s.since),
                }
            })
            .collect();
        answers::BgpPeers { configured: true, peers }
    }

    fn bgp_routes(&self) -> answers::BgpRoutes {
        let routes = self
            .owned()
            .into_iter()
            .filter(|o| o.routed.is_some())
            .map(|o| {
                let why = match (self.frr.is_some(), o.ready.backends) {
                    (false, _) => "BGP is not running (bgp: was added after the start)",
                    (_, false) => "no backend takes new flows",
                    _ => "served here",
                };
                answers::BgpRoute {
                    prefix: xlb::control::bgp::host_route(o.addr),
                    advertised: self.frr.is_some() && o.ready.ready(),
                    l2: o.l2,
                    why: why.into(),
                }
            })
            .collect();
        answers::BgpRoutes { routes }
    }

    fn pools(&self) -> answers::Pools {
        let pools = self
            .plane
            .ipam
            .usage()
            .into_iter()
            .map(|u| answers::Pool {
                state: match (&u.conflict, u.disabled) {
                    (Some(c), _) => format!("overlaps {c}"),
                    (None, true) => "disabled".into(),
                    (None, false) => "active".into(),
                },
                name: u.name,
                size: u.size.to_string(),
                used: u.used.to_string(),
                free: (u.size - u.used.min(u.size)).to_string(),
            })
            .collect();
        let assignments = self
            .plane
            .ipam
            .assignments()
            .map(|(a, h)| answers::Assignment { address: a.to_string(), holder: h.to_string() })
            .collect();
        answers::Pools { pools, assignments }
    }

    fn maglev(&self, service: &str) -> Option<answers::Maglev> {
        let i = *self.find_services(service).first()?;
        let s = &self.plane.services[i];
        let t = s.table();
        let backends = s
            .backends
            .iter()
            .zip(0u32..)
            .map(|(b, j)| {
                let n = t.slots_of(j);
                answers::MaglevBackend {
                    backend: SocketAddr::new(b.addr, b.port).to_string(),
                    weight: b.weight,
                    slots: n,
                    share: format!("{:.2}%", 100.0 * n as f64 / t.size().max(1) as f64),
                }
            })
            .collect();
        let first: Vec<String> =
            (0..t.size().min(32)).map(|k| t.slot(k).map_or("-".into(), |b| b.to_string())).collect();
        let sizing = match self.plane.compiled.specs.get(i).map(|spec| spec.table_size) {
            Some(TableSize::Fixed(_)) => "configured",
            _ => "auto",
        };
        Some(answers::Maglev {
            service: self.plane.name_of(i),
            size: t.size(),
            sizing: sizing.into(),
            slot_bytes: t.slot_bytes(),
            backends,
            first_slots: first.join(" "),
        })
    }

    fn conntrack(
        &self,
        service: Option<&str>,
        client: Option<IpAddr>,
        backend: Option<IpAddr>,
        limit: usize,
    ) -> answers::Conntrack {
        let wanted: Option<Vec<usize>> = service.map(|s| self.find_services(s));
        let services = &self.plane.services;
        let mut flows = Vec::new();
        for w in &self.dp.workers {
            let (tx, rx) = crossbeam_channel::bounded(1);
            // Ask for more than shown: filters apply here.
            if w.requests
                .try_send(WorkerRequest::Conntrack { max: limit.saturating_mul(8).max(limit), reply: tx })
                .is_err()
            {
                continue;
            }
            w.waker.notify();
            let Ok((worker_now, entries)) = rx.recv_timeout(Duration::from_secs(1)) else { continue };
            let mut shown = 0;
            for e in entries {
                if shown >= limit {
                    break;
                }
                if e.state == FlowState::Affinity {
                    continue;
                }
                let from = ip16(&e.key.src);
                let vip = ip16(&e.key.dst);
                let svc_i = services
                    .iter()
                    .position(|s| s.key.vip == vip && s.key.port == e.key.dst_port && s.key.proto == e.key.proto);
                if let Some(ws) = &wanted {
                    if !svc_i.is_some_and(|i| ws.contains(&i)) {
                        continue;
                    }
                }
                if client.is_some_and(|c| c != from) {
                    continue;
                }
                let be = svc_i.and_then(|i| services[i].backend_index(e.backend_key, e.hint.backend()).map(|j| (i, j)));
                let be_addr = be.and_then(|(i, j)| services[i].backends.get(usize::try_from(j).unwrap_or(usize::MAX)));
                if let Some(b) = backend {
                    if be_addr.is_none_or(|x| x.addr != b) {
                        continue;
                    }
                }
                shown += 1;
                flows.push(answers::Flow {
                    worker: w.queue,
                    protocol: config::proto_name(e.key.proto).to_string(),
                    client: SocketAddr::new(from, e.key.src_port).to_string(),
                    vip: SocketAddr::new(vip, e.key.dst_port).to_string(),
                    backend: be_addr.map(|b| SocketAddr::new(b.addr, b.port).to_string()),
                    state: format!("{:?}", e.state).to_lowercase(),
                    snat: e.snat.map(|l| {
                        let addr = self.snat_addrs.get(usize::from(l.addr)).map_or("?".into(), ToString::to_string);
                        format!("{addr}:{}", l.port())
                    }),
                    expires_in_s: e.expires.saturating_sub(worker_now) / 1_000_000_000,
                });
            }
        }
        answers::Conntrack { flows }
    }

    /// What a scrape shows.
    fn metrics_input(&mut self) -> MetricsInput {
        // Swap each worker's batch histogram for an empty one and merge what it held.
        for w in &self.dp.workers {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if w.requests.try_send(WorkerRequest::Histogram { fresh: batch_histogram(), reply: tx }).is_ok() {
                w.waker.notify();
                if let Ok(h) = rx.recv_timeout(Duration::from_millis(500)) {
                    let id = QueueId { interface: w.ifname.clone(), queue: w.queue };
                    let total = self.batch_times.entry(id).or_insert_with(|| *batch_histogram());
                    let _ = total.add(&*h);
                }
            }
        }
        let workers = &self.dp.workers;
        let now = Instant::now();
        let mut m = MetricsInput {
            workers: workers.iter().map(|w| (queue_id(w), w.stats.read())).collect(),
            conntrack: workers
                .iter()
                .map(|w| {
                    let (s, n) = w.stats.conntrack();
                    (queue_id(w), s, n)
                })
                .collect(),
            batch_times: self.batch_times.iter().map(|(q, h)| (q.clone(), h.clone())).collect(),
            generation: self.plane.publisher.generation(),
            reloads: self.plane.reloads,
            reload_failures: self.plane.reload_failures,
            backend_paths: ["on_link", "gateway", "unreachable"]
                .into_iter()
                .map(|p| (p, self.plane.hops.paths.values().filter(|x| x.name() == p).count() as u64))
                .collect(),
            backends_unreachable: self.plane.unreachable_events,
            xdp_classes: CLASS_NAMES.iter().copied().zip(self.dp.class_counts()).collect(),
            vips: self.speakers.l2.vips().iter().map(|(v, s)| (v.to_string(), s.name())).collect(),
            failover: self.ownership.as_ref().map(|o| metrics::FailoverState {
                quorum: o.quorum(now),
                fenced: o.fenced(now),
                alive: o.alive_members(now).len(),
                heartbeats_ignored: o.ignored(),
            }),
            kubernetes: match &self.plane.source {
                Source::Kube { handle: Some(h), .. } => Some(h.stats.read()),
                _ => None,
            },
            bgp: self
                .bgp_peers()
                .peers
                .into_iter()
                .map(|p| metrics::BgpSeries {
                    up: p.state == "Established",
                    bfd_up: p.bfd.map(|b| b == "up"),
                    routes: p.routes_sent.unwrap_or(0),
                    since: p.since,
                    peer: p.peer,
                })
                .collect(),
            ..MetricsInput::default()
        };
        for (i, s) in self.plane.services.iter().enumerate() {
            m.services.push(ServiceSeries {
                name: self.plane.name_of(i),
                vip: s.key.vip.to_string(),
                port: s.key.port,
                protocol: config::proto_name(s.key.proto),
                mode: s.mode.name(),
                traffic: self.traffic(|c| c.service(s.stats_id)),
            });
        }
        for (i, spec) in self.plane.compiled.specs.iter().enumerate() {
            for (addr, port, weight) in &spec.backends {
                m.backends.push(BackendSeries {
                    service: spec.name.clone(),
                    backend: SocketAddr::new(*addr, *port).to_string(),
                    up: !self.is_down(i, *addr),
                    weight: *weight,
                    traffic: self.backend_traffic(spec, *addr, *port),
                });
            }
        }
        m
    }

    fn is_down(&self, i: usize, addr: IpAddr) -> bool {
        matches!(self.health_of(i, addr), Health::Down(_))
    }

    /// The final counters: logged, and written to `stats_file` as JSON.
    pub(super) fn report(&self, finals: &Finals, stats_file: Option<&std::path::Path>) -> anyhow::Result<()> {
        let mut total = WorkerStats::default();
        for (_, _, _, s) in &finals.queues {
            for (t, v) in total.counters.iter_mut().zip(s.counters.iter()) {
                *t += v;
            }
            for (t, v) in total.drops.iter_mut().zip(s.drops.iter()) {
                *t += v;
            }
        }
        let counters: serde_json::Map<String, Value> =
            Counter::ALL.iter().map(|c| (c.name().to_string(), json!(total.get(*c)))).collect();
        let drops: serde_json::Map<String, Value> =
            DropReason::ALL.iter().map(|r| (r.name().to_string(), json!(total.dropped(*r)))).collect();
        let xdp: serde_json::Map<String, Value> =
            CLASS_NAMES.iter().zip(finals.classes.iter()).map(|(n, v)| (n.to_string(), json!(v))).collect();
        let flows = &finals.conntrack;
        let l2 = &self.speakers.l2;
        let vips: Vec<Value> = l2
            .vips()
            .iter()
            .map(|(v, s)| {
                let holder = match s {
                    VipStatus::Conflict { mac, .. } => Some(mac.to_string()),
                    _ => None,
                };
                json!({"vip": v.to_string(), "state": s.name(), "conflict_with": holder})
            })
            .collect();
        let claims: Vec<Value> = l2
            .claims()
            .iter()
            .map(|((vip, mac), n)| json!({"vip": vip.to_string(), "mac": mac.to_string(), "frames": n}))
            .collect();
        let plane = &self.plane;
        let doc = json!({
            "interface": self.dp.each_port(|p| p.dev.name.clone()),
            "mac": self.dp.each_port(|p| p.dev.mac.to_string()),
            "queues": finals
                .queues
                .iter()
                .map(|(i, q, m, s)| json!({
                    "interface": i,
                    "queue": q,
                    "socket": m.to_string(),
                    "rx_frames": s.get(Counter::RxFrames),
                    "tx_frames": s.get(Counter::TxFrames),
                }))
                .collect::<Vec<_>>(),
            "snapshot_generation": plane.publisher.generation(),
            "reloads": plane.reloads,
            "reload_failures": plane.reload_failures,
            "services": plane
                .services
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let t = self.traffic(|c| c.service(s.stats_id));
                    json!({
                        "service": service_key_name(s),
                        "name": plane.name_of(i),
                        "mode": s.mode.name(),
                        "packets": t.packets, "bytes": t.bytes,
                        "reply_packets": t.reply_packets, "reply_bytes": t.reply_bytes,
                    })
                })
                .collect::<Vec<_>>(),
            "backends": plane
                .services
                .iter()
                .flat_map(|s| s.backends.iter().map(move |b| {
                    let t = self.traffic(|c| c.backend(b.stats_id));
                    json!({
                        "service": service_key_name(s),
                        "backend": SocketAddr::new(b.addr, b.port).to_string(),
                        "mac": b.mac.map(|m| m.to_string()),
                        "weight": b.weight,
                        "packets": t.packets, "bytes": t.bytes,
                        "reply_packets": t.reply_packets, "reply_bytes": t.reply_bytes,
                    })
                }))
                .collect::<Vec<_>>(),
            "counters": counters,
            "drops": drops,
            "xdp_classes": xdp,
            "conntrack": {
                "inserts": flows.inserts, "evictions": flows.evictions, "full": flows.full,
                "expired": flows.expired, "live": flows.live,
            },
            "vips": vips,
            "conflicts": claims,
            "conflict_claimants_not_listed": l2.claims_overflow(),
            "announcements_dropped": self.outbox.dropped,
        });
        let dropped: u64 = total.drops.iter().sum();
        tracing::info!(
            rx = total.get(Counter::RxFrames),
            tx = total.get(Counter::TxFrames),
            forwarded = total.get(Counter::Forwarded),
            arp_replies = total.get(Counter::ArpReplies),
            ndp_adverts = total.get(Counter::NdpAdverts),
            announcements = total.get(Counter::ControlFrames),
            conflicts = total.get(Counter::Conflicts),
            dropped,
            "final counters"
        );
        if let Some(path) = stats_file {
            let text = serde_json::to_string_pretty(&doc)?;
            std::fs::write(path, text).with_context(|| format!("writing --stats-file {}", path.display()))?;
        }
        Ok(())
    }
}

//! Prometheus `/metrics`: the rendering of the numbers the control loop gathers at each
//! scrape, with prometheus-client (OpenMetrics text), and the HTTP listener that asks for
//! them (`server`). Counters are read from the workers' own counters at scrape time;
//! nothing is counted twice.

use hdrhistogram::Histogram;
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};
use xlb::{
    k8s::stats::KubeStats,
    lb::{conntrack::ConntrackStats, stats::Traffic, Counter, DropReason, WorkerStats},
};

mod server;

pub(crate) use server::MetricsServer;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A worker: the interface and the queue it serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct QueueId {
    pub(crate) interface: String,
    pub(crate) queue: u32,
}

impl QueueId {
    /// Its labels, then `more`.
    fn labels(&self, more: &[(&str, &str)]) -> Labels {
        let q = self.queue.to_string();
        let mut out = labels(&[("interface", &self.interface), ("queue", &q)]);
        out.extend(labels(more));
        out
    }
}

/// A value: whole numbers stay whole in the exposition.
#[derive(Debug, Clone, Copy)]
enum Num {
    U(u64),
    F(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Self {
        Num::U(v)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num::F(v)
    }
}

/// A family of counters or gauges with fixed values, one per label set.
#[derive(Debug)]
struct Values {
    kind: MetricType,
    series: Vec<(Labels, Num)>,
}

impl EncodeMetric for Values {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (l, v) in &self.series {
            let mut e = encoder.encode_family(l)?;
            match (self.kind, v) {
                (MetricType::Counter, Num::U(v)) => e.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                (MetricType::Counter, Num::F(v)) => e.encode_counter::<NoLabelSet, _, f64>(v, None)?,
                (_, Num::U(v)) => e.encode_gauge(v)?,
                (_, Num::F(v)) => e.encode_gauge(v)?,
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// One histogram: labels, sum, count, and (upper bound, count) per bucket.
type Hist = (Labels, f64, u64, Vec<(f64, u64)>);

/// Histograms with fixed buckets, one per label set.
#[derive(Debug)]
struct Histograms(Vec<Hist>);

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (l, sum, count, buckets) in &self.0 {
            encoder.encode_family(l)?.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Upper bounds of the batch-time histogram's buckets, in nanoseconds.
const BATCH_BUCKETS_NS: [u64; 12] =
    [1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000, 10_000_000];

/// An hdrhistogram of nanoseconds as Prometheus buckets (seconds).
fn buckets(h: &Histogram<u64>) -> (f64, u64, Vec<(f64, u64)>) {
    let mut out = Vec::with_capacity(BATCH_BUCKETS_NS.len() + 1);
    let mut below = 0u64;
    for b in BATCH_BUCKETS_NS {
        let upto = h.count_between(0, b);
        out.push((b as f64 / 1e9, upto - below));
        below = upto;
    }
    out.push((f64::INFINITY, h.len() - below));
    let sum = h.iter_recorded().map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64).sum::<f64>() / 1e9;
    (sum, h.len(), out)
}

/// What one scrape shows, gathered by the control loop.
#[derive(Debug, Default)]
pub(crate) struct MetricsInput {
    /// Per worker: queue, counters.
    pub(crate) workers: Vec<(QueueId, WorkerStats)>,
    /// Per worker: queue, conntrack counters, slots.
    pub(crate) conntrack: Vec<(QueueId, ConntrackStats, u64)>,
    /// Per worker: queue, batch times so far.
    pub(crate) batch_times: Vec<(QueueId, Histogram<u64>)>,
    /// Per datapath service.
    pub(crate) services: Vec<ServiceSeries>,
    /// Per backend of each service.
    pub(crate) backends: Vec<BackendSeries>,
    /// VIP and its announcement state.
    pub(crate) vips: Vec<(String, &'static str)>,
    /// Snapshot generation, reloads done, reloads refused.
    pub(crate) generation: u64,
    pub(crate) reloads: u64,
    pub(crate) reload_failures: u64,
    /// Backends by path (`on_link`, `gateway`, `unreachable`, `unknown`: not looked up yet).
    pub(crate) backend_paths: Vec<(&'static str, u64)>,
    /// How many times a backend's path became unreachable.
    pub(crate) backends_unreachable: u64,
    /// XDP program classes.
    pub(crate) xdp_classes: Vec<(&'static str, u64)>,
    /// Failover between xlb nodes (none: off).
    pub(crate) failover: Option<FailoverState>,
    /// The Kubernetes side (none: not `--kubernetes`).
    pub(crate) kubernetes: Option<KubeStats>,
    /// BGP sessions, as FRR last reported them (empty: no `bgp:`).
    pub(crate) bgp: Vec<BgpSeries>,
}

/// One BGP session.
#[derive(Debug, Clone)]
pub(crate) struct BgpSeries {
    pub(crate) peer: String,
    /// BGP is Established.
    pub(crate) up: bool,
    /// BFD is up (none: no BFD on the session).
    pub(crate) bfd_up: Option<bool>,
    /// Routes sent to the peer.
    pub(crate) routes: u64,
    /// When the session's BGP or BFD state last changed (seconds since the epoch).
    pub(crate) since: Option<u64>,
}

/// One datapath service's labels and traffic.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSeries {
    /// `web/tcp:80`.
    pub(crate) name: String,
    pub(crate) vip: String,
    pub(crate) port: u16,
    pub(crate) protocol: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) traffic: Traffic,
}

/// One backend of one service.
#[derive(Debug, Clone)]
pub(crate) struct BackendSeries {
    /// The service's spec name.
    pub(crate) service: String,
    /// `addr:port`.
    pub(crate) backend: String,
    /// Passing its health checks (or unchecked).
    pub(crate) up: bool,
    pub(crate) weight: u32,
    pub(crate) traffic: Traffic,
}

/// This node's failover state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailoverState {
    pub(crate) quorum: bool,
    pub(crate) fenced: bool,
    /// Members alive, this node included.
    pub(crate) alive: usize,
    pub(crate) heartbeats_ignored: u64,
}

/// The OpenMetrics text of one scrape.
pub(crate) fn render(m: &MetricsInput) -> String {
    let mut reg = Registry::with_prefix("xlb");
    let per_worker = |c: Counter| Values {
        kind: MetricType::Counter,
        series: m.workers.iter().map(|(q, s)| (q.labels(&[]), s.get(c).into())).collect(),
    };
    for (name, c, help) in [
        ("rx_frames", Counter::RxFrames, "Frames received from the AF_XDP socket"),
        ("tx_frames", Counter::TxFrames, "Frames handed to the AF_XDP socket for transmission"),
        ("forwarded_packets", Counter::Forwarded, "Packets forwarded to a backend"),
        ("snat_reply_packets", Counter::SnatReplies, "SNAT replies translated back to clients"),
        ("arp_replies", Counter::ArpReplies, "ARP replies sent for owned VIPs"),
        ("ndp_adverts", Counter::NdpAdverts, "Neighbour advertisements sent for owned VIPs"),
        ("announcements", Counter::ControlFrames, "Gratuitous ARP, unsolicited NA and probe frames sent"),
        ("icmp_errors", Counter::IcmpErrors, "ICMP errors sent on to the backend or client of their flow"),
        ("echo_replies", Counter::EchoReplies, "Echo replies to pings of VIPs and SNAT addresses"),
        ("conflicts", Counter::Conflicts, "Frames in which another MAC claimed one of our VIPs"),
        ("batches", Counter::Batches, "Receive batches processed"),
    ] {
        reg.register(name, help, per_worker(c));
    }
    reg.register_with_unit(
        "worker_busy",
        "Time workers spent processing batches (its rate is the busy ratio)",
        Unit::Seconds,
        Values {
            kind: MetricType::Counter,
            series: m
                .workers
                .iter()
                .map(|(q, s)| (q.labels(&[]), (s.get(Counter::BusyNanos) as f64 / 1e9).into()))
                .collect(),
        },
    );
    let mut drops = Vec::new();
    for (q, s) in &m.workers {
        for r in DropReason::ALL {
            drops.push((q.labels(&[("reason", r.name())]), s.dropped(r).into()));
        }
    }
    reg.register("dropped_packets", "Frames dropped, by reason", Values { kind: MetricType::Counter, series: drops });

    let ct = |f: &dyn Fn(&ConntrackStats, u64) -> u64, kind| Values {
        kind,
        series: m.conntrack.iter().map(|(q, s, slots)| (q.labels(&[]), f(s, *slots).into())).collect(),
    };
    reg.register("conntrack_entries", "Flows tracked now", ct(&|s, _| s.live, MetricType::Gauge));
    reg.register("conntrack_slots", "Slots of the flow table", ct(&|_, n| n, MetricType::Gauge));
    reg.register("conntrack_inserts", "Flows inserted", ct(&|s, _| s.inserts, MetricType::Counter));
    reg.register(
        "conntrack_evictions",
        "Embryonic flows evicted to make room",
        ct(&|s, _| s.evictions, MetricType::Counter),
    );
    reg.register(
        "conntrack_full",
        "New flows that found no room (served statelessly)",
        ct(&|s, _| s.full, MetricType::Counter),
    );

    let svc = |f: &dyn Fn(&Traffic) -> u64| Values {
        kind: MetricType::Counter,
        series: m
            .services
            .iter()
            .map(|s| {
                (
                    labels(&[
                        ("service", &s.name),
                        ("vip", &s.vip),
                        ("port", &s.port.to_string()),
                        ("protocol", s.protocol),
                        ("mode", s.mode),
                    ]),
                    f(&s.traffic).into(),
                )
            })
            .collect(),
    };
    reg.register("service_packets", "Packets forwarded to the service's backends", svc(&|t| t.packets));
    reg.register_with_unit("service", "Bytes forwarded to the service's backends", Unit::Bytes, svc(&|t| t.bytes));
    reg.register("service_reply_packets", "SNAT replies of the service sent to clients", svc(&|t| t.reply_packets));
    let be = |f: &dyn Fn(&Traffic) -> u64| Values {
        kind: MetricType::Counter,
        series: m
            .backends
            .iter()
            .map(|b| (labels(&[("service", &b.service), ("backend", &b.backend)]), f(&b.traffic).into()))
            .collect(),
    };
    reg.register("backend_packets", "Packets forwarded to the backend", be(&|t| t.packets));
    reg.register_with_unit("backend", "Bytes forwarded to the backend", Unit::Bytes, be(&|t| t.bytes));
    reg.register(
        "backend_up",
        "1 while the backend passes its health checks (or has none)",
        Values {
            kind: MetricType::Gauge,
            series: m
                .backends
                .iter()
                .map(|b| (labels(&[("service", &b.service), ("backend", &b.backend)]), u64::from(b.up).into()))
                .collect(),
        },
    );
    reg.register(
        "backend_weight",
        "Configured Maglev weight (0: drained)",
        Values {
            kind: MetricType::Gauge,
            series: m
                .backends
                .iter()
                .map(|b| (labels(&[("service", &b.service), ("backend", &b.backend)]), u64::from(b.weight).into()))
                .collect(),
        },
    );
    reg.register(
        "vip_owned",
        "1 while the VIP is announced and answered by this node",
        Values {
            kind: MetricType::Gauge,
            series: m
                .vips
                .iter()
                .map(|(v, state)| {
                    (
                        labels(&[("vip", v), ("state", state)]),
                        u64::from(matches!(*state, "owned" | "announcing")).into(),
                    )
                })
                .collect(),
        },
    );
    reg.register(
        "xdp_packets",
        "Packets seen by the XDP program, by class",
        Values {
            kind: MetricType::Counter,
            series: m.xdp_classes.iter().map(|(c, v)| (labels(&[("class", c)]), (*v).into())).collect(),
        },
    );
    reg.register(
        "backend_paths",
        "Backends by how they are reached: on_link, gateway (a router on the segment), unreachable",
        Values {
            kind: MetricType::Gauge,
            series: m.backend_paths.iter().map(|(p, n)| (labels(&[("path", p)]), (*n).into())).collect(),
        },
    );
    reg.register(
        "backend_unreachable",
        "Times a backend's path became unreachable (no route through xlb's interface)",
        ConstCounter::new(m.backends_unreachable),
    );
    reg.register("snapshot_generation", "Generation of the snapshot the workers read", ConstGauge::new(m.generation));
    reg.register("config_reloads", "Config reloads applied", ConstCounter::new(m.reloads));
    reg.register(
        "config_reload_failures",
        "Config reloads refused (the running config stayed)",
        ConstCounter::new(m.reload_failures),
    );
    reg.register_with_unit(
        "batch_duration",
        "Time to process one receive batch, per worker",
        Unit::Seconds,
        Histograms(
            m.batch_times
                .iter()
                .map(|(q, h)| {
                    let (sum, count, b) = buckets(h);
                    (q.labels(&[]), sum, count, b)
                })
                .collect(),
        ),
    );
    if let Some(f) = &m.failover {
        register_failover(&mut reg, f);
    }
    if let Some(k) = &m.kubernetes {
        register_kubernetes(&mut reg, k);
    }
    if !m.bgp.is_empty() {
        let per_peer = |f: &dyn Fn(&BgpSeries) -> Option<u64>| Values {
            kind: MetricType::Gauge,
            series: m.bgp.iter().filter_map(|b| Some((labels(&[("peer", &b.peer)]), f(b)?.into()))).collect(),
        };
        reg.register(
            "bgp_session_up",
            "1 while the BGP session with the peer is established",
            per_peer(&|b| Some(u64::from(b.up))),
        );
        reg.register(
            "bfd_session_up",
            "1 while BFD sees the peer up (sessions with a BFD profile)",
            per_peer(&|b| b.bfd_up.map(u64::from)),
        );
        reg.register(
            "bgp_advertised_routes",
            "Routes of this node's VIPs sent to the peer",
            per_peer(&|b| Some(b.routes)),
        );
        reg.register(
            "bgp_session_changed_timestamp_seconds",
            "When the session's BGP or BFD state last changed (Unix time, as xlb saw it)",
            per_peer(&|b| b.since),
        );
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        return "# encoding the metrics failed\n".into();
    }
    out
}

fn gauge(v: u64) -> ConstGauge<u64> {
    ConstGauge::new(v)
}

fn register_failover(reg: &mut Registry, f: &FailoverState) {
    reg.register("failover_quorum", "1 while this node hears a majority of its peers", gauge(u64::from(f.quorum)));
    reg.register(
        "failover_fenced",
        "1 while this node has fenced itself (answers for no VIP: no quorum)",
        gauge(u64::from(f.fenced)),
    );
    reg.register("failover_alive_members", "Members heard alive, this node included", gauge(f.alive as u64));
    reg.register(
        "failover_heartbeats_ignored",
        "Heartbeats ignored (unknown nodes, other clusters, replays)",
        ConstCounter::new(f.heartbeats_ignored),
    );
}

fn register_kubernetes(reg: &mut Registry, k: &KubeStats) {
    reg.register("kubernetes_plans", "Plans computed from the Kubernetes API", ConstCounter::new(k.plans));
    reg.register(
        "kubernetes_errors",
        "Failed calls to the Kubernetes API, by operation and kind",
        Values {
            kind: MetricType::Counter,
            series: k
                .errors
                .iter()
                .map(|((op, kind), n)| (labels(&[("operation", op), ("kind", kind)]), (*n).into()))
                .collect(),
        },
    );
    reg.register(
        "allocator_leader",
        "1 while this node holds the allocator Lease and writes Service status",
        gauge(u64::from(k.allocator_leader)),
    );
    reg.register("allocator_rounds", "Allocation rounds run", ConstCounter::new(k.allocator_rounds));
    reg.register("allocator_writes", "Service and pool status writes", ConstCounter::new(k.allocator_writes));
    reg.register(
        "allocator_services",
        "Served LoadBalancer Services after the last round, by outcome",
        Values {
            kind: MetricType::Gauge,
            series: [("allocated", k.services_allocated), ("pending", k.services_pending)]
                .iter()
                .map(|(o, n)| (labels(&[("outcome", o)]), (*n).into()))
                .collect(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_histograms_add_up() {
        let mut h = Histogram::<u64>::new_with_bounds(100, 100_000_000, 2).unwrap();
        for v in [2_000u64, 3_000, 40_000, 7_000_000] {
            h.record(v).unwrap();
        }
        let mut ws = WorkerStats::default();
        ws.add(Counter::Forwarded, 42);
        ws.drop(DropReason::Truncated);
        let m = MetricsInput {
            workers: vec![(QueueId { interface: "eth0".into(), queue: 0 }, ws)],
            batch_times: vec![(QueueId { interface: "eth0".into(), queue: 0 }, h)],
            backends: vec![BackendSeries {
                service: "web".into(),
                backend: "10.0.0.1:80".into(),
                up: true,
                weight: 1,
                traffic: Traffic { packets: 5, bytes: 300, ..Traffic::default() },
            }],
            generation: 7,
            bgp: vec![
                BgpSeries {
                    peer: "10.0.0.1".into(),
                    up: true,
                    bfd_up: Some(false),
                    routes: 2,
                    since: Some(1_764_000_000),
                },
                BgpSeries { peer: "fd00::1".into(), up: false, bfd_up: None, routes: 0, since: None },
            ],
            failover: Some(FailoverState { quorum: true, fenced: false, alive: 3, heartbeats_ignored: 2 }),
            kubernetes: Some(KubeStats {
                errors: [(("lease_renew", "timeout"), 2)].into(),
                allocator_leader: true,
                services_allocated: 5,
                ..KubeStats::default()
            }),
            ..MetricsInput::default()
        };
        let text = render(&m);
        assert!(text.contains("xlb_forwarded_packets_total{interface=\"eth0\",queue=\"0\"} 42"), "{text}");
        assert!(
            text.contains("xlb_bgp_session_up{peer=\"10.0.0.1\"} 1\nxlb_bgp_session_up{peer=\"fd00::1\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("xlb_bfd_session_up{peer=\"10.0.0.1\"} 0\n#"),
            "no BFD series for a session without BFD: {text}"
        );
        assert!(text.contains("xlb_bgp_advertised_routes{peer=\"10.0.0.1\"} 2"), "{text}");
        assert!(
            text.contains("xlb_bgp_session_changed_timestamp_seconds{peer=\"10.0.0.1\"} 1764000000\n#"),
            "one series, for the session whose change was seen: {text}"
        );
        assert!(
            text.contains("xlb_dropped_packets_total{interface=\"eth0\",queue=\"0\",reason=\"truncated\"} 1"),
            "{text}"
        );
        assert!(text.contains("xlb_backend_bytes_total{service=\"web\",backend=\"10.0.0.1:80\"} 300"), "{text}");
        assert!(text.contains("xlb_backend_up{service=\"web\",backend=\"10.0.0.1:80\"} 1"), "{text}");
        assert!(text.contains("xlb_snapshot_generation 7"), "{text}");
        assert!(text.contains("xlb_failover_quorum 1"), "{text}");
        assert!(text.contains("xlb_failover_fenced 0"), "{text}");
        assert!(text.contains("xlb_failover_alive_members 3"), "{text}");
        assert!(text.contains("xlb_failover_heartbeats_ignored_total 2"), "{text}");
        assert!(text.contains("xlb_kubernetes_errors_total{operation=\"lease_renew\",kind=\"timeout\"} 2"), "{text}");
        assert!(text.contains("xlb_allocator_leader 1"), "{text}");
        assert!(text.contains("xlb_allocator_services{outcome=\"allocated\"} 5"), "{text}");
        let plain = render(&MetricsInput::default());
        assert!(!plain.contains("xlb_failover") && !plain.contains("xlb_allocator"), "off, no series");
        assert!(text.contains("xlb_batch_duration_seconds_count{interface=\"eth0\",queue=\"0\"} 4"), "{text}");
        assert!(
            text.contains("xlb_batch_duration_seconds_bucket{le=\"+Inf\",interface=\"eth0\",queue=\"0\"} 4")
                || text.contains("xlb_batch_duration_seconds_bucket{interface=\"eth0\",queue=\"0\",le=\"+Inf\"} 4"),
            "{text}"
        );
        // 2 us and 3 us fall under 5 us; 40 us under 50 us; 7 ms only under 10 ms.
        assert!(
            text.contains("xlb_batch_duration_seconds_bucket{le=\"0.000005\",interface=\"eth0\",queue=\"0\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("xlb_batch_duration_seconds_bucket{le=\"0.00005\",interface=\"eth0\",queue=\"0\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("xlb_batch_duration_seconds_bucket{le=\"0.01\",interface=\"eth0\",queue=\"0\"} 4"),
            "{text}"
        );
        assert!(!text.contains(".."), "help texts end in one period: {text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

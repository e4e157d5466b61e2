//! The answers of the admin API, one type per query: the daemon fills them, the socket
//! carries them as JSON, and the CLI reads them back to print tables. One definition, so
//! the two sides cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `xlb status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Status {
    /// The interfaces served, comma-separated (their MACs and XDP modes likewise).
    pub(crate) interface: String,
    pub(crate) mac: String,
    pub(crate) xdp_mode: String,
    pub(crate) generation: u64,
    pub(crate) reloads: u64,
    pub(crate) reload_failures: u64,
    pub(crate) last_reload_error: Option<String>,
    pub(crate) uptime_s: u64,
    /// The config file, when xlb runs from one.
    pub(crate) config: Option<String>,
    pub(crate) failover: Option<Failover>,
    pub(crate) kubernetes: Option<Kubernetes>,
    pub(crate) workers: Vec<Worker>,
    pub(crate) vips: Vec<Vip>,
}

/// Failover between xlb nodes, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Failover {
    pub(crate) node: String,
    pub(crate) alive: Vec<String>,
    pub(crate) quorum: bool,
    /// Holds the witness (two-member sets).
    pub(crate) witness: bool,
    pub(crate) fenced: bool,
    pub(crate) heartbeats_ignored: u64,
}

/// The Kubernetes node side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Kubernetes {
    pub(crate) plans: u64,
    pub(crate) members: Vec<String>,
    /// VIP -> the node that announces it (none: nobody).
    pub(crate) announced_by: BTreeMap<String, Option<String>>,
}

/// One worker (queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Worker {
    /// The interface it serves.
    #[serde(default)]
    pub(crate) interface: String,
    pub(crate) queue: u32,
    pub(crate) socket: String,
    pub(crate) core: Option<usize>,
    pub(crate) rx_frames: u64,
    pub(crate) tx_frames: u64,
    pub(crate) drops: u64,
    pub(crate) flows: u64,
}

/// One VIP and its announcement state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Vip {
    pub(crate) vip: String,
    pub(crate) state: String,
    /// The interfaces it is announced on, comma-separated.
    #[serde(default)]
    pub(crate) interfaces: String,
}

/// `xlb service list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Services {
    pub(crate) services: Vec<Service>,
}

/// One datapath service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) vip: String,
    pub(crate) port: u16,
    pub(crate) protocol: String,
    pub(crate) mode: String,
    /// Backends configured.
    pub(crate) backends: usize,
    /// Backends taking new flows.
    pub(crate) up: usize,
    pub(crate) affinity_s: Option<u64>,
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
    pub(crate) reply_packets: u64,
    pub(crate) reply_bytes: u64,
}

/// `xlb backend list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Backends {
    pub(crate) backends: Vec<Backend>,
}

/// One backend of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Backend {
    pub(crate) service: String,
    pub(crate) backend: String,
    /// `up`, `down`, `unchecked` or `draining`.
    pub(crate) health: String,
    pub(crate) health_detail: Option<String>,
    pub(crate) weight: u32,
    /// Share of the Maglev table, `12.5%`.
    pub(crate) share: String,
    pub(crate) slots: usize,
    /// How it is reached: `on-link`, `via GATEWAY` or `unreachable` (none: not looked up yet).
    pub(crate) path: Option<String>,
    /// Why its path keeps new flows from it, and the fix.
    pub(crate) path_problem: Option<String>,
    /// Its next hop's MAC.
    pub(crate) mac: Option<String>,
    /// Traffic (none for a draining backend).
    pub(crate) packets: Option<u64>,
    pub(crate) bytes: Option<u64>,
}

/// `xlb bgp peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BgpPeers {
    /// Whether `bgp:` is configured at all.
    pub(crate) configured: bool,
    pub(crate) peers: Vec<BgpPeer>,
}

/// One BGP session, as FRR last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BgpPeer {
    pub(crate) peer: String,
    pub(crate) asn: u32,
    /// BGP's state (`Established`, `Active`, ...; `unknown` before FRR is first read).
    pub(crate) state: String,
    /// BFD's state, where a profile watches the session.
    pub(crate) bfd: Option<String>,
    /// Routes this node sends the peer.
    pub(crate) routes_sent: Option<u64>,
    /// When BGP's or BFD's state last changed (seconds since the epoch).
    #[serde(default)]
    pub(crate) since: Option<u64>,
}

/// `xlb bgp routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BgpRoutes {
    pub(crate) routes: Vec<BgpRoute>,
}

/// A routed VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BgpRoute {
    pub(crate) prefix: String,
    /// Advertised to the peers now.
    pub(crate) advertised: bool,
    /// Also announced by ARP/NDP on the segment.
    pub(crate) l2: bool,
    /// Why it is or is not advertised.
    pub(crate) why: String,
}

/// `xlb pool list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pools {
    pub(crate) pools: Vec<Pool>,
    pub(crate) assignments: Vec<Assignment>,
}

/// One pool's use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pool {
    pub(crate) name: String,
    /// Sizes as strings: an IPv6 pool's may exceed any JSON number.
    pub(crate) size: String,
    pub(crate) used: String,
    pub(crate) free: String,
    pub(crate) state: String,
}

/// An address given from a pool, and to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Assignment {
    pub(crate) address: String,
    pub(crate) holder: String,
}

/// `xlb conntrack list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Conntrack {
    pub(crate) flows: Vec<Flow>,
}

/// One tracked flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Flow {
    pub(crate) worker: u32,
    pub(crate) protocol: String,
    pub(crate) client: String,
    pub(crate) vip: String,
    pub(crate) backend: Option<String>,
    pub(crate) state: String,
    pub(crate) snat: Option<String>,
    pub(crate) expires_in_s: u64,
}

/// `xlb maglev show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Maglev {
    pub(crate) service: String,
    pub(crate) size: usize,
    /// How the size was chosen: `auto` (sized to the backends) or `configured`.
    pub(crate) sizing: String,
    /// Bytes per slot: 1, 2 or 4 (the narrowest that holds the backends' indexes).
    pub(crate) slot_bytes: usize,
    pub(crate) backends: Vec<MaglevBackend>,
    /// The first 32 slots' backend indexes (`-` for empty).
    pub(crate) first_slots: String,
}

/// One backend's part of a Maglev table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MaglevBackend {
    pub(crate) backend: String,
    pub(crate) weight: u32,
    pub(crate) slots: usize,
    pub(crate) share: String,
}

/// A query that could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Refusal {
    pub(crate) error: String,
}

//! The control side: what the user asked for becomes snapshots, owned addresses and
//! announcements. Its decisions are `now`-taking machines and pure functions with unit
//! tests; the daemon (`src/daemon/`) carries them out. It never touches frames on the wire
//! (it builds the few it wants sent), and imports neither `io` nor `k8s`.
//!
//! - Desired state: `config` (the YAML), `compile` (desired state -> service specs, with
//!   `ipam`), `services` (specs -> datapath services, publication), `backends` (drains and
//!   health merged into the specs), `health` (active checks), `nexthop` (the path to each
//!   backend and its next hop's MAC).
//! - Who owns what: `rendezvous` (ranking nodes for a VIP), `ha` (heartbeats, liveness,
//!   quorum), `ownership` (the owned set, the fence, claims between nodes).
//! - Telling the network: `speaker` (the seam: the owned set in, announcements out) and
//!   `announcer` (the L2 speaker: probes, ARP/NDP, gratuitous ARP), `bgp` (the BGP
//!   speaker, and the FRR configuration and commands it is carried out with).

pub mod announcer;
pub mod backends;
pub mod bgp;
pub mod compile;
pub mod config;
pub mod ha;
pub mod health;
pub mod ipam;
pub mod nexthop;
pub mod ownership;
pub mod rendezvous;
pub mod services;
pub mod speaker;

pub use announcer::{AnnounceConfig, Announcer, VipStatus};

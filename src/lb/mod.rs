//! The I/O-free datapath: what happens to a frame, decided from (now, snapshot, worker
//! state, frame) alone, so every decision is testable on a `Vec<u8>` with no NIC.
//!
//! Nothing here allocates, locks, logs, formats or makes a system call per packet; drops
//! are counted by [`DropReason`]. This module never touches sockets or threads (`io` does)
//! and never builds snapshots (`control` does).
//!
//! Layout: leaf files hold what the steps share ([`ctx`], [`verdict`], [`state`], [`out`],
//! `rewrite`, `select`, [`stats`], [`store`], and the tables: [`snapshot`], [`conntrack`], [`maglev`],
//! [`snat`]); the steps ([`neighbor`], `forward`, `icmp`, [`heartbeat`]) depend on leaves
//! and `wire` only; [`pipeline`] alone calls the steps. `testing` (hidden from the docs) is
//! the scene and frame builder that the fixtures, `tests/no_alloc.rs`, the fuzz targets
//! and the benches share.

pub mod conntrack;
pub mod ctx;
mod forward;
pub mod heartbeat;
mod icmp;
mod index;
pub mod maglev;
pub mod neighbor;
pub mod out;
pub mod pipeline;
pub(crate) mod rewrite;
mod select;
pub mod snapshot;
pub mod snat;
pub mod state;
pub mod stats;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod verdict;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod snat_fixtures;

pub use ctx::Ctx;
pub use pipeline::{process, process_parsed, Parsed};
pub use snapshot::{Snapshot, VipMode};
pub use state::WorkerState;
pub use stats::{Counter, DropReason, WorkerStats};
pub use verdict::{Conflict, Reply, Verdict};

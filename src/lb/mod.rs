//! The I/O-free datapath: what happens to a frame, decided from (now, snapshot, worker
//! state, frame) alone, so every decision is testable on a `Vec<u8>` with no NIC.
//!
//! Nothing here allocates, locks, logs, formats or makes a system call per packet; drops
//! are counted by [`DropReason`]. This module never touches sockets or threads (`io` does)
//! and never builds snapshots (`control` does).

pub mod conntrack;
pub mod forward;
pub mod heartbeat;
mod icmp;
pub mod maglev;
pub mod neighbor;
pub mod pipeline;
pub mod snapshot;
pub mod snat;
pub mod stats;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod snat_fixtures;

pub use forward::WorkerState;
pub use pipeline::{process, Conflict, Verdict};
pub use snapshot::{Snapshot, VipMode};
pub use stats::{Counter, DropReason, WorkerStats};

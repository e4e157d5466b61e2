//! The context of one call into the datapath: the time, the snapshot and the interface's
//! MAC, borrowed, built once per batch. A leaf: every step takes it, none defines it.

use super::snapshot::Snapshot;
use crate::wire::EthernetAddress;

/// What a call of [`process`](super::process) knows besides the worker's state and the
/// frame. Small and `Copy`; passed by reference, so adding a field changes no signature.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// Monotonic time in nanoseconds (used by connection tracking).
    pub now: u64,
    /// The snapshot the batch runs on.
    pub snap: &'a Snapshot,
    /// MAC of the interface the frame came in on: answers and forwarded frames leave from it.
    pub mac: EthernetAddress,
}

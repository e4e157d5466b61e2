//! A worker's own datapath state: its flow table, its share of the SNAT ports, its traffic
//! counters and whether it is fenced. A leaf: the steps read and write it, none defines it.

use std::sync::Arc;

use super::{
    conntrack::{Conntrack, Entry, InsertError},
    snat::SnatPorts,
    stats::ObjectCounters,
};

/// A worker's own datapath state.
#[derive(Debug)]
pub struct WorkerState {
    /// Its flow table.
    pub conntrack: Conntrack,
    /// Its share of the SNAT ports and the shared reverse table (none: no SNAT address).
    pub snat: Option<SnatPorts>,
    /// Its traffic counters by service and backend (read by the control plane).
    pub counters: Arc<ObjectCounters>,
    /// Fenced: ARP/NDP for VIPs goes unanswered (set by the worker before each batch from
    /// the control thread's quorum deadline).
    pub fenced: bool,
}

impl WorkerState {
    /// State with this flow table, no SNAT, and counters for 256 services and 1024 backends.
    pub fn new(conntrack: Conntrack) -> Self {
        WorkerState { conntrack, snat: None, counters: Arc::new(ObjectCounters::new(256, 1024)), fenced: false }
    }

    /// Tracks a new flow (or record) in the flow table; when that evicts a flow holding a
    /// SNAT port, the port is freed at once rather than at the evicted flow's deadline.
    #[inline]
    pub fn track(&mut self, entry: Entry, hash: u64, now: u64) -> Result<&mut Entry, InsertError> {
        let (e, evicted) = self.conntrack.insert_evicting(entry, hash, now)?;
        if let (Some((lease, proto)), Some(snat)) = (evicted, &self.snat) {
            snat.release(lease, proto);
        }
        Ok(e)
    }
}

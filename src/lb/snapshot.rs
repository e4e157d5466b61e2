//! The immutable state a worker reads: which VIPs are ours and how to treat them. Built by
//! `control`, published as an `Arc`, swapped by workers between batches.

use std::{collections::HashMap, net::IpAddr};

/// How the datapath treats a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipMode {
    /// Owned: answer ARP/NDP for it with the interface MAC, report other claimants.
    Answer,
    /// Not (yet) owned, watched for conflicts: probing before announcing, or held back
    /// after a conflict. Claims by others are reported; nothing is answered.
    Watch,
}

/// One published state of the datapath.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases by one with every publication.
    pub generation: u64,
    vips: HashMap<IpAddr, VipMode>,
}

impl Snapshot {
    /// A snapshot with these VIPs.
    pub fn new(generation: u64, vips: impl IntoIterator<Item = (IpAddr, VipMode)>) -> Self {
        Snapshot { generation, vips: vips.into_iter().collect() }
    }

    /// How to treat `addr`, if it is a VIP of ours.
    #[inline]
    pub fn vip(&self, addr: IpAddr) -> Option<VipMode> {
        self.vips.get(&addr).copied()
    }

    /// Every VIP and its mode.
    pub fn vips(&self) -> impl Iterator<Item = (IpAddr, VipMode)> + '_ {
        self.vips.iter().map(|(a, m)| (*a, *m))
    }
}

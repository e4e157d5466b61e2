//! The immutable state a worker reads: which VIPs are ours, the services on them, their
//! backends and Maglev tables. Built by `control` off the hot path, published as an `Arc`,
//! swapped by workers between batches.

use std::{collections::HashMap, net::IpAddr};

use super::rewrite::to16;
use super::{
    index::{FlatIndex, Key},
    maglev::{hash64, BackendId, MaglevError, MaglevTable, TableCache, TableSize},
    stats::UNCOUNTED,
};
use crate::wire::EthernetAddress;

/// How the datapath treats a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipMode {
    /// Owned: answer ARP/NDP for it with the interface MAC, report other claimants.
    Answer,
    /// Not (yet) owned, watched for conflicts: probing before announcing, or held back
    /// after a conflict. Claims by others are reported; nothing is answered.
    Watch,
}

/// How a service's traffic reaches its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ForwardMode {
    /// Direct server return: only the destination MAC changes; backends hold the VIP on a
    /// loopback and answer the client themselves.
    #[default]
    Dsr,
    /// Source NAT (full NAT): xlb rewrites the destination to the backend and the source to
    /// one of its SNAT addresses and ports, and translates the replies back.
    Snat,
}

impl ForwardMode {
    /// Its name in configuration and annotations: `dsr` or `snat`.
    pub fn name(self) -> &'static str {
        match self {
            ForwardMode::Dsr => "dsr",
            ForwardMode::Snat => "snat",
        }
    }
}

/// The client addresses a service admits (Kubernetes `loadBalancerSourceRanges`, the
/// config's `sourceRanges`), as (network, mask) pairs over the 16-byte addresses the
/// datapath keys on (IPv4 mapped into IPv6). Empty admits every client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRanges(Vec<(u128, u128)>);

impl SourceRanges {
    /// From prefixes of either family.
    pub fn new(nets: &[ipnet::IpNet]) -> Self {
        let mut out: Vec<(u128, u128)> = nets
            .iter()
            .map(|n| {
                let (addr, len) = match n {
                    ipnet::IpNet::V4(n) => (n.network().to_ipv6_mapped(), 96 + n.prefix_len()),
                    ipnet::IpNet::V6(n) => (n.network(), n.prefix_len()),
                };
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                (u128::from(addr) & mask, mask)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        SourceRanges(out)
    }

    /// Whether it admits the client `src` (16-byte form).
    #[inline]
    pub fn admits(&self, src: &[u8; 16]) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let a = u128::from_be_bytes(*src);
        self.0.iter().any(|&(net, mask)| a & mask == net)
    }
}

/// A backend as the datapath sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Address.
    pub addr: IpAddr,
    /// Port (DSR keeps the service port; SNAT rewrites to this one).
    pub port: u16,
    /// Maglev weight (0: drained, keeps its flows, gets no new ones).
    pub weight: u32,
    /// Next-hop MAC, once resolved.
    pub mac: Option<EthernetAddress>,
    /// Where xlb serves several interfaces: the MAC of the one the backend is reached
    /// through. A frame that came in on another has no way to it (it would leave by the
    /// wrong interface) and is dropped, counted (`other_interface`). None: any.
    pub via: Option<EthernetAddress>,
    /// Identity hash: what tracked flows are pinned to.
    pub key: u64,
    /// Index of its traffic counters (`stats::UNCOUNTED`: none).
    pub stats_id: u32,
}

impl Backend {
    /// A backend at `addr:port` with `weight`, next hop not yet resolved.
    pub fn new(addr: IpAddr, port: u16, weight: u32) -> Self {
        let key = hash64(0, &BackendId::new(addr, port).0);
        Backend { addr, port, weight, mac: None, via: None, key, stats_id: UNCOUNTED }
    }

    /// Whether new flows may be given to it: weighted and with a resolved next hop.
    #[inline]
    pub fn takes_new_flows(&self) -> bool {
        self.weight > 0 && self.mac.is_some()
    }
}

/// Which traffic a service takes: protocol, VIP and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// VIP.
    pub vip: IpAddr,
    /// Port.
    pub port: u16,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
}

/// A service: its backends and the Maglev table over them.
#[derive(Debug, Clone)]
pub struct Service {
    /// What it matches.
    pub key: ServiceKey,
    /// How it forwards.
    pub mode: ForwardMode,
    /// Backends, in the order given (table entries index this list).
    pub backends: Vec<Backend>,
    /// Session affinity by client address (Kubernetes `ClientIP`): how long, in nanoseconds,
    /// a client's new connections keep going to the backend its last one went to.
    pub affinity: Option<u64>,
    /// The clients it admits; others are dropped before connection tracking.
    pub sources: SourceRanges,
    /// Index of its traffic counters (`stats::UNCOUNTED`: none).
    pub stats_id: u32,
    table: MaglevTable,
    by_key: HashMap<u64, u32>,
    /// Its key as the snapshot's index holds it, to check a tracked flow's hint against.
    index_key: Key,
    /// Each backend's address in the 16-byte form (IPv4 mapped) that SNAT writes, by index.
    addrs16: Box<[[u8; 16]]>,
}

impl Service {
    /// Builds a service and its table of `table_size` ([`TableSize::Auto`]: sized to the
    /// backends, all of them counted). Backends with no resolved next hop get no new flows
    /// (weight 0 in the table) until they resolve.
    pub fn new(
        key: ServiceKey,
        mode: ForwardMode,
        backends: Vec<Backend>,
        table_size: TableSize,
    ) -> Result<Self, MaglevError> {
        Self::with_tables(key, mode, backends, table_size, &mut TableCache::default())
    }

    /// Like [`Service::new`], taking its table from `tables` when one with the same backends
    /// was built before.
    pub fn with_tables(
        key: ServiceKey,
        mode: ForwardMode,
        backends: Vec<Backend>,
        table_size: TableSize,
        tables: &mut TableCache,
    ) -> Result<Self, MaglevError> {
        let weights: Vec<(BackendId, u32)> = backends
            .iter()
            .map(|b| (BackendId::new(b.addr, b.port), if b.takes_new_flows() { b.weight } else { 0 }))
            .collect();
        let table = tables.get(&weights, table_size)?;
        let by_key = backends.iter().zip(0u32..).map(|(b, i)| (b.key, i)).collect();
        let index_key = Key::service(&to16(key.vip), key.port, key.proto);
        let addrs16 = backends.iter().map(|b| to16(b.addr)).collect();
        Ok(Service {
            index_key,
            addrs16,
            key,
            mode,
            backends,
            affinity: None,
            sources: SourceRanges::default(),
            stats_id: UNCOUNTED,
            table,
            by_key,
        })
    }

    /// Admitting only the clients in `sources` (empty: all).
    pub fn with_sources(mut self, sources: SourceRanges) -> Self {
        self.sources = sources;
        self
    }

    /// With session affinity by client address for `timeout`.
    pub fn with_affinity(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.affinity = timeout.map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        self
    }

    /// With a table sized to its backends.
    pub fn with_default_table(key: ServiceKey, mode: ForwardMode, backends: Vec<Backend>) -> Result<Self, MaglevError> {
        Self::new(key, mode, backends, TableSize::Auto)
    }

    /// The Maglev table.
    pub fn table(&self) -> &MaglevTable {
        &self.table
    }

    /// Backend `i`'s address in the 16-byte form (IPv4 mapped).
    #[inline]
    pub fn backend_addr16(&self, i: u32) -> Option<&[u8; 16]> {
        self.addrs16.get(usize::try_from(i).ok()?)
    }

    /// The index of the backend with identity hash `key`, trying `hint` first.
    #[inline]
    pub fn backend_index(&self, key: u64, hint: u32) -> Option<u32> {
        match self.backends.get(usize::try_from(hint).unwrap_or(usize::MAX)) {
            Some(b) if b.key == key => Some(hint),
            _ => self.by_key.get(&key).copied(),
        }
    }
}

/// One published state of the datapath.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases by one with every publication.
    pub generation: u64,
    vips: HashMap<IpAddr, VipMode>,
    services: Vec<Service>,
    /// The packet path's lookups: VIP (tag 0) to its mode, and service key to its index.
    vip_index: FlatIndex,
    service_index: FlatIndex,
}

fn mode_code(m: VipMode) -> u32 {
    match m {
        VipMode::Answer => 0,
        VipMode::Watch => 1,
    }
}

impl Snapshot {
    /// A snapshot with these VIPs and no services.
    pub fn new(generation: u64, vips: impl IntoIterator<Item = (IpAddr, VipMode)>) -> Self {
        let vips: HashMap<IpAddr, VipMode> = vips.into_iter().collect();
        let vip_index = FlatIndex::build(vips.iter().map(|(a, m)| (Key::new(&to16(*a), 0), mode_code(*m))));
        Snapshot { generation, vips, vip_index, ..Snapshot::default() }
    }

    /// Adds the services (of two with the same key, the later one is kept).
    pub fn with_services(mut self, mut services: Vec<Service>) -> Self {
        // One service per key, so that a tracked flow's hint names the one the index does.
        let mut seen = std::collections::HashSet::new();
        services.reverse();
        services.retain(|s| seen.insert(s.index_key));
        services.reverse();
        self.service_index = FlatIndex::build(services.iter().zip(0u32..).map(|(s, i)| (s.index_key, i)));
        self.services = services;
        self
    }

    /// How to treat `addr`, if it is a VIP of ours.
    #[inline]
    pub fn vip(&self, addr: IpAddr) -> Option<VipMode> {
        self.vip16(&to16(addr))
    }

    /// How to treat the address `addr` (16-byte form: IPv4 mapped), if it is a VIP of ours.
    #[inline]
    pub fn vip16(&self, addr: &[u8; 16]) -> Option<VipMode> {
        match self.vip_index.get(&Key::new(addr, 0))? {
            0 => Some(VipMode::Answer),
            _ => Some(VipMode::Watch),
        }
    }

    /// Every VIP and its mode.
    pub fn vips(&self) -> impl Iterator<Item = (IpAddr, VipMode)> + '_ {
        self.vips.iter().map(|(a, m)| (*a, *m))
    }

    /// The service for this traffic, if any.
    #[inline]
    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.service16(&to16(key.vip), key.port, key.proto)
    }

    /// The service on `vip` (16-byte form), `port` and `proto`, if any.
    #[inline]
    pub fn service16(&self, vip: &[u8; 16], port: u16, proto: u8) -> Option<&Service> {
        self.service_indexed(vip, port, proto).map(|(_, s)| s)
    }

    /// The same, with the service's index.
    #[inline]
    pub fn service_indexed(&self, vip: &[u8; 16], port: u16, proto: u8) -> Option<(u32, &Service)> {
        self.service_of(&Key::service(vip, port, proto))
    }

    /// The service on `vip` (16-byte form), `port` and `proto`, and its index: the one at
    /// index `hint` when that is it (a tracked flow remembers where its service was, see
    /// `conntrack::Hint`), which saves the lookup; else looked up.
    #[inline]
    pub fn service_hinted(&self, vip: &[u8; 16], port: u16, proto: u8, hint: u32) -> Option<(u32, &Service)> {
        let key = Key::service(vip, port, proto);
        match self.services.get(usize::try_from(hint).unwrap_or(usize::MAX)) {
            Some(s) if s.index_key == key => Some((hint, s)),
            _ => self.service_of(&key),
        }
    }

    #[inline]
    fn service_of(&self, key: &Key) -> Option<(u32, &Service)> {
        let i = self.service_index.get(key)?;
        Some((i, self.services.get(usize::try_from(i).ok()?)?))
    }

    /// Every service.
    pub fn services(&self) -> &[Service] {
        &self.services
    }
}

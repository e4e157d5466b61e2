//! Source-NAT port state shared by all workers.
//!
//! A SNAT flow is translated client:cport -> VIP:vport  ==>  S:sport -> backend:bport, where S
//! is one of our SNAT addresses and sport a port we allocate. The forward direction of a flow
//! always reaches the same worker (RSS hashes its 5-tuple), but the backend's replies hash
//! differently and may reach any worker. So:
//!
//! - The port range is split into one contiguous share per worker; only that worker allocates
//!   and writes the ports of its share (one writer per slot).
//! - The reverse mapping lives in one table, allocated at start-up, indexed directly by
//!   (SNAT address, protocol, port). Any worker reads any slot. Each slot is a sequence lock
//!   made of atomics: the writer makes the sequence odd, writes, makes it even again; a reader
//!   that sees an odd or changed sequence treats the slot as absent for that packet. No lock,
//!   no allocation, no syscall on either side.
//! - A port is in use while its slot's deadline is in the future. The deadline follows the
//!   owning flow's conntrack deadline: the same while the flow is embryonic, up to a second
//!   past it once the handshake is done ([`TOUCH_SLACK`]). So a port frees itself at most a
//!   second after its flow expires, and can never be handed out while its flow lives.
//!
//! A flow whose TCP handshake is not done (the client has not acknowledged) holds its port
//! as *embryonic*: for a short lifetime (`Timeouts::syn_snat`), and only until a new flow
//! needs the port. When a worker finds no free port within `MAX_SCAN` slots of its cursor,
//! it takes back the embryonic port with the nearest deadline among them (the caller evicts
//! its flow), so a spoofed SYN flood cannot starve real clients of ports. With no embryonic
//! port either, for any SNAT address of the family, the new flow is dropped and counted
//! (`snat_ports_exhausted`); established flows are untouched.

use std::{
    net::IpAddr,
    num::NonZeroU16,
    sync::{
        atomic::{fence, AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use super::store::Store;
use crate::wire::{ipv4::Protocol, EthernetAddress};

/// Most slots a worker inspects for one allocation before it declares the ports exhausted.
pub const MAX_SCAN: usize = 512;

/// Default SNAT port range.
pub const DEFAULT_PORTS: (u16, u16) = (1024, 65535);

/// What a reply from a backend is translated back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mapping {
    /// Client address (IPv4-mapped for IPv4).
    pub client: [u8; 16],
    /// Client port.
    pub client_port: u16,
    /// VIP (IPv4-mapped for IPv4).
    pub vip: [u8; 16],
    /// Service port.
    pub vip_port: u16,
    /// Backend address (IPv4-mapped for IPv4): replies must come from it.
    pub backend: [u8; 16],
    /// Backend port: replies must come from it.
    pub backend_port: u16,
    /// MAC the client's traffic came from (the client or its router): replies go back to it.
    pub client_mac: EthernetAddress,
    /// The service's traffic counters' id (0xffff: none).
    pub service_stats: u16,
    /// The backend's traffic counters' id (0xffff: none).
    pub backend_stats: u16,
}

/// One reverse-translation slot: a sequence word, a deadline, whether its flow is
/// embryonic, and the mapping in 8 words. Only the owning worker reads `embryonic`. Every
/// bit pattern is a valid slot (atomics and a bool written only as 0 or 1), and all zeros
/// is a free one: what a fresh state file holds.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Slot {
    seq: AtomicU64,
    expires: AtomicU64,
    embryonic: AtomicBool,
    words: [AtomicU64; 8],
}

/// Bytes of one reverse-translation slot (what the table takes per address, protocol and
/// port, with [`INDEX_BYTES`]).
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// Where in a slot its one byte that is not part of a word is (the embryonic flag: 0 or 1).
pub const SLOT_FLAG_AT: usize = std::mem::offset_of!(Slot, embryonic);

/// Bytes of one client-side index word (one per slot).
pub const INDEX_BYTES: usize = std::mem::size_of::<AtomicU64>();

/// How far past its flow's deadline [`SnatPorts::touch`] lets the deadline of a port whose
/// handshake is done run (nanoseconds): one second.
pub const TOUCH_SLACK: u64 = 1_000_000_000;

/// How long a port is held, from the owning flow's conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The time now.
    pub now: u64,
    /// The flow's deadline: the port frees itself then, or up to [`TOUCH_SLACK`] later (see
    /// [`SnatPorts::touch`]).
    pub expires: u64,
    /// The flow is embryonic: its port may be taken back for a new flow.
    pub embryonic: bool,
}

fn split16(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

fn join16(hi: u64, lo: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&hi.to_be_bytes());
    a[8..].copy_from_slice(&lo.to_be_bytes());
    a
}

impl Mapping {
    fn pack(&self) -> [u64; 8] {
        let (c0, c1) = split16(&self.client);
        let (v0, v1) = split16(&self.vip);
        let (b0, b1) = split16(&self.backend);
        let ports = u64::from(self.service_stats) << 48
            | u64::from(self.client_port) << 32
            | u64::from(self.vip_port) << 16
            | u64::from(self.backend_port);
        let mut mac = [0u8; 8];
        mac[..2].copy_from_slice(&self.backend_stats.to_be_bytes());
        mac[2..].copy_from_slice(&self.client_mac.0);
        [c0, c1, v0, v1, b0, b1, ports, u64::from_be_bytes(mac)]
    }

    fn unpack(w: &[u64; 8]) -> Self {
        let p = w[6].to_be_bytes();
        let m = w[7].to_be_bytes();
        Mapping {
            client: join16(w[0], w[1]),
            vip: join16(w[2], w[3]),
            backend: join16(w[4], w[5]),
            client_port: u16::from_be_bytes([p[2], p[3]]),
            vip_port: u16::from_be_bytes([p[4], p[5]]),
            backend_port: u16::from_be_bytes([p[6], p[7]]),
            client_mac: EthernetAddress([m[2], m[3], m[4], m[5], m[6], m[7]]),
            service_stats: u16::from_be_bytes([p[0], p[1]]),
            backend_stats: u16::from_be_bytes([m[0], m[1]]),
        }
    }
}

/// A mistake in the SNAT set-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnatError {
    /// The port range is empty or reversed.
    #[error("SNAT port range {0}-{1} is empty (expected LOW-HIGH with LOW <= HIGH, e.g. 1024-65535)")]
    Range(u16, u16),
    /// Fewer ports than workers.
    #[error("SNAT port range {0}-{1} has fewer ports than the {2} workers sharing it")]
    TooFewPorts(u16, u16, usize),
    /// More addresses than the table indexes.
    #[error("at most 255 SNAT addresses are supported, {0} given")]
    TooManyAddresses(usize),
    /// Memory of the wrong size for the table.
    #[error("a SNAT table store of {0} slots where {1} are needed")]
    Store(usize, usize),
}

/// The reverse-translation table: every SNAT address, both protocols, every port of the range.
#[derive(Debug)]
pub struct SnatTable {
    addrs: Vec<IpAddr>,
    /// The same, in the 16-byte form flow keys use (what the packet path compares).
    addrs16: Vec<[u8; 16]>,
    /// One bit per SNAT address, at its last byte modulo 64: most packets, those to a VIP,
    /// miss it and skip the scan of `addrs16`.
    filter: u64,
    lo: u16,
    ports: usize,
    workers: usize,
    slots: Store<Slot>,
    /// Client-side index, for the rare packet that names a flow by its client side on a
    /// worker that does not track it (an ICMP error quoting VIP -> client): by flow hash, the
    /// last (address, protocol, port) given to a flow with that hash. Lossy by design: a
    /// collision overwrites, and every hit is verified against the slot's mapping.
    by_client: Store<AtomicU64>,
}

/// Packs an index entry: valid bit, 31 bits of the flow hash, address, protocol, port.
fn index_word(hash: u64, addr: u8, pi: usize, port: u16) -> u64 {
    1 << 63 | (hash >> 33) << 32 | u64::from(addr) << 24 | (pi as u64 & 1) << 16 | u64::from(port)
}

fn proto_index(proto: u8) -> Option<usize> {
    match proto {
        Protocol::TCP => Some(0),
        Protocol::UDP => Some(1),
        _ => None,
    }
}

impl SnatTable {
    /// A table for `addrs`, ports `lo..=hi`, shared by `workers` workers.
    pub fn new(addrs: Vec<IpAddr>, lo: u16, hi: u16, workers: usize) -> Result<Self, SnatError> {
        let n = Self::slots_len(addrs.len(), lo, hi)?;
        let slots: Box<[Slot]> = (0..n).map(|_| Slot::default()).collect();
        let by_client: Box<[AtomicU64]> = (0..n.max(1)).map(|_| AtomicU64::new(0)).collect();
        // Touched now, like the flow tables: the allocator may hand out fresh zeroed pages
        // that would otherwise become resident only as ports are leased, and the memory
        // xlb prints and checks at start is what the table takes.
        for s in &slots {
            s.seq.store(0, Ordering::Relaxed);
        }
        for w in &by_client {
            w.store(0, Ordering::Relaxed);
        }
        Self::with_store(addrs, lo, hi, workers, Store::Heap(slots), Store::Heap(by_client))
    }

    /// Slots (and index words, at least one) a table for `addrs` addresses and ports
    /// `lo..=hi` takes; the range checked.
    pub fn slots_len(addrs: usize, lo: u16, hi: u16) -> Result<usize, SnatError> {
        if lo > hi || lo == 0 {
            return Err(SnatError::Range(lo, hi));
        }
        if addrs > 255 {
            return Err(SnatError::TooManyAddresses(addrs));
        }
        Ok(addrs * 2 * (usize::from(hi - lo) + 1))
    }

    /// A table in these stores, which may hold the ports a previous xlb of the same set-up
    /// leased (a state file): they stay leased to their flows. A slot left half-written
    /// (its writer killed under the sequence lock) is freed. The stores must have
    /// [`SnatTable::slots_len`] slots (the index at least one word).
    pub fn with_store(
        addrs: Vec<IpAddr>,
        lo: u16,
        hi: u16,
        workers: usize,
        slots: Store<Slot>,
        by_client: Store<AtomicU64>,
    ) -> Result<Self, SnatError> {
        let n = Self::slots_len(addrs.len(), lo, hi)?;
        let ports = usize::from(hi - lo) + 1;
        let workers = workers.max(1);
        if ports < workers {
            return Err(SnatError::TooFewPorts(lo, hi, workers));
        }
        if slots.len() != n || by_client.len() != n.max(1) {
            return Err(SnatError::Store(slots.len(), n));
        }
        for s in slots.iter() {
            let seq = s.seq.load(Ordering::Relaxed);
            if seq & 1 == 1 {
                s.expires.store(0, Ordering::Relaxed);
                s.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
            }
        }
        let addrs16: Vec<[u8; 16]> = addrs.iter().map(|a| super::rewrite::to16(*a)).collect();
        let filter = addrs16.iter().fold(0, |f, a| f | filter_bit(a));
        Ok(SnatTable { addrs, addrs16, filter, lo, ports, workers, slots, by_client })
    }

    #[inline]
    fn index_at(&self, hash: u64) -> Option<&AtomicU64> {
        let n = self.by_client.len() as u64;
        self.by_client.get(usize::try_from(hash % n).ok()?)
    }

    /// The live translation of the flow with client-side hash `hash`, if the index still
    /// points at it and its mapping matches `client`:`client_port` -> `vip`:`vip_port`.
    pub fn find_by_client(&self, hash: u64, proto: u8, m: &Mapping, now: u64) -> Option<(Lease, Mapping)> {
        let pi = proto_index(proto)?;
        let w = self.index_at(hash)?.load(Ordering::Relaxed);
        let addr = u8::try_from(w >> 24 & 0xff).ok()?;
        let port = u16::try_from(w & 0xffff).ok()?;
        if w >> 63 == 0 || w != index_word(hash, addr, pi, port) {
            return None;
        }
        let found = self.lookup(addr, proto, port, now)?;
        let same = found.client == m.client
            && found.client_port == m.client_port
            && found.vip == m.vip
            && found.vip_port == m.vip_port;
        if same {
            Some((Lease::new(addr, port)?, found))
        } else {
            None
        }
    }

    /// The SNAT addresses, in index order.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// The index of `addr` if it is one of our SNAT addresses.
    #[inline]
    pub fn addr_index(&self, addr: IpAddr) -> Option<u8> {
        self.addr_index16(&super::rewrite::to16(addr))
    }

    /// The index of the address `addr` (16-byte form) if it is one of our SNAT addresses.
    #[inline]
    pub fn addr_index16(&self, addr: &[u8; 16]) -> Option<u8> {
        if self.filter & filter_bit(addr) == 0 {
            return None;
        }
        let i = self.addrs16.iter().position(|a| a == addr)?;
        u8::try_from(i).ok()
    }

    /// The SNAT address of index `i`, in 16-byte form.
    #[inline]
    pub fn addr16(&self, i: u8) -> Option<&[u8; 16]> {
        self.addrs16.get(usize::from(i))
    }

    #[inline]
    fn slot(&self, addr: u8, proto: u8, port: u16) -> Option<&Slot> {
        let p = usize::from(port.checked_sub(self.lo)?);
        if p >= self.ports {
            return None;
        }
        let i = (usize::from(addr) * 2 + proto_index(proto)?) * self.ports + p;
        self.slots.get(i)
    }

    /// The mapping of a reply to `addr`:`port`, if a live flow holds that port at `now`.
    #[inline]
    pub fn lookup(&self, addr: u8, proto: u8, port: u16, now: u64) -> Option<Mapping> {
        let slot = self.slot(addr, proto, port)?;
        let seq = slot.seq.load(Ordering::Acquire);
        if seq & 1 == 1 {
            return None;
        }
        let expires = slot.expires.load(Ordering::Relaxed);
        let mut w = [0u64; 8];
        for (d, s) in w.iter_mut().zip(slot.words.iter()) {
            *d = s.load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) != seq || expires <= now {
            return None;
        }
        Some(Mapping::unpack(&w))
    }

    /// Ports in use at `now` per address index (for status and stats; walks the table).
    pub fn in_use(&self, now: u64) -> Vec<usize> {
        self.slots
            .chunks(2 * self.ports)
            .map(|c| c.iter().filter(|s| s.expires.load(Ordering::Relaxed) > now).count())
            .collect()
    }

    /// The share of ports worker `index` allocates from.
    pub fn worker(self: &Arc<Self>, index: usize) -> SnatPorts {
        let share = self.ports / self.workers;
        let index = index % self.workers;
        let start = index * share;
        // The last worker also takes the remainder.
        let len = if index + 1 == self.workers { self.ports - start } else { share };
        SnatPorts { table: self.clone(), start, len, cursors: vec![0; self.addrs.len() * 2] }
    }
}

/// One worker's allocator over its share of the ports.
#[derive(Debug)]
pub struct SnatPorts {
    table: Arc<SnatTable>,
    start: usize,
    len: usize,
    cursors: Vec<usize>,
}

/// Where a SNAT flow's replies are addressed. Ports are never 0 (the range starts at 1 or
/// above), which lets `Option<Lease>` take no more room than a `Lease`: it keeps a flow-table
/// entry within one cache line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// SNAT address index.
    pub addr: u8,
    port: NonZeroU16,
}

impl Lease {
    /// Port `port` of address `addr` (none for port 0, which is never leased).
    #[inline]
    pub fn new(addr: u8, port: u16) -> Option<Self> {
        Some(Lease { addr, port: NonZeroU16::new(port)? })
    }

    /// The port.
    #[inline]
    pub fn port(&self) -> u16 {
        self.port.get()
    }
}

impl SnatPorts {
    /// The shared table.
    pub fn table(&self) -> &SnatTable {
        &self.table
    }

    /// Allocates a port on a SNAT address of `v6`'s family for a new flow, starting with the
    /// address that `hash` picks; writes the mapping, held as `hold` says. When every port
    /// scanned is in use, takes back the embryonic one with the nearest deadline: its old
    /// mapping comes back with the lease, and the caller evicts that flow. `None`: every
    /// address's share is in use by flows past their handshake (within the scan bound).
    pub fn allocate(
        &mut self,
        v6: bool,
        proto: u8,
        hash: u64,
        mapping: &Mapping,
        hold: Hold,
    ) -> Option<(Lease, Option<Mapping>)> {
        let pi = proto_index(proto)?;
        let n = self.table.addrs.len();
        if n == 0 || self.len == 0 {
            return None;
        }
        // The embryonic port with the nearest deadline seen so far: (address, offset, deadline).
        let mut victim: Option<(usize, usize, u64)> = None;
        let first = usize::try_from(hash % n as u64).unwrap_or(0);
        for k in 0..n {
            let a = (first + k) % n;
            if self.table.addrs[a].is_ipv6() != v6 {
                continue;
            }
            let ci = a * 2 + pi;
            for _ in 0..self.len.min(MAX_SCAN) {
                let off = self.cursors[ci];
                self.cursors[ci] = if off + 1 == self.len { 0 } else { off + 1 };
                let Some(slot) = self.share_slot(a, pi, off) else { break };
                let expires = slot.expires.load(Ordering::Relaxed);
                if expires > hold.now {
                    if slot.embryonic.load(Ordering::Relaxed) && victim.is_none_or(|(_, _, e)| expires < e) {
                        victim = Some((a, off, expires));
                    }
                    continue;
                }
                return Some((self.take(a, pi, off, hash, mapping, hold)?, None));
            }
        }
        let (a, off, _) = victim?;
        let slot = self.share_slot(a, pi, off)?;
        // This worker wrote the slot: no other writer, so the words are read whole.
        let mut w = [0u64; 8];
        for (d, s) in w.iter_mut().zip(slot.words.iter()) {
            *d = s.load(Ordering::Relaxed);
        }
        let old = Mapping::unpack(&w);
        Some((self.take(a, pi, off, hash, mapping, hold)?, Some(old)))
    }

    /// The slot of port `off` of this worker's share of address `a`, protocol index `pi`.
    #[inline]
    fn share_slot(&self, a: usize, pi: usize, off: usize) -> Option<&Slot> {
        self.table.slots.get((a * 2 + pi) * self.table.ports + self.start + off)
    }

    /// Gives port `off` of this worker's share of address `a`, protocol index `pi`, to the
    /// flow `mapping` with client-side hash `hash`.
    fn take(&self, a: usize, pi: usize, off: usize, hash: u64, mapping: &Mapping, hold: Hold) -> Option<Lease> {
        let slot = self.share_slot(a, pi, off)?;
        write(slot, mapping, hold);
        let port = u16::try_from(usize::from(self.table.lo) + self.start + off).ok()?;
        let addr = u8::try_from(a).ok()?;
        if let Some(w) = self.table.index_at(hash) {
            w.store(index_word(hash, addr, pi, port), Ordering::Relaxed);
        }
        Lease::new(addr, port)
    }

    /// Rewrites the mapping of a port this worker holds (the flow moved to another backend).
    pub fn rewrite(&self, lease: Lease, proto: u8, mapping: &Mapping, hold: Hold) {
        if let Some(slot) = self.table.slot(lease.addr, proto, lease.port()) {
            write(slot, mapping, hold);
        }
    }

    /// Frees a port this worker holds at once (its flow was evicted from the flow table).
    pub fn release(&self, lease: Lease, proto: u8) {
        if let Some(slot) = self.table.slot(lease.addr, proto, lease.port()) {
            slot.expires.store(0, Ordering::Relaxed);
            slot.embryonic.store(false, Ordering::Relaxed);
        }
    }

    /// Whether `port` is in this worker's share.
    #[inline]
    pub fn owns(&self, port: u16) -> bool {
        let off = usize::from(port).wrapping_sub(usize::from(self.table.lo));
        off >= self.start && off < self.start + self.len
    }

    /// Moves a held port's deadline, and whether it is embryonic, with its flow's. Once the
    /// handshake is done the slot keeps a deadline from the flow's to [`TOUCH_SLACK`] past
    /// it, and is written only when the flow's moves out of that: about once a second for a
    /// busy flow, not on every packet, so the line that replies on other workers read stays
    /// shared. An embryonic port keeps its flow's deadline exactly: it may be taken back for
    /// a new flow, and must not outlive the flow that would then be evicted for it.
    #[inline(always)]
    pub fn touch(&self, lease: Lease, proto: u8, hold: Hold) {
        if let Some(slot) = self.table.slot(lease.addr, proto, lease.port()) {
            let slack = if hold.embryonic { 0 } else { TOUCH_SLACK };
            let held = slot.expires.load(Ordering::Relaxed);
            if held < hold.expires
                || held - hold.expires > slack
                || slot.embryonic.load(Ordering::Relaxed) != hold.embryonic
            {
                slot.expires.store(hold.expires.saturating_add(slack), Ordering::Relaxed);
                slot.embryonic.store(hold.embryonic, Ordering::Relaxed);
            }
        }
    }
}

/// The bit of `addr` (16-byte form) in [`SnatTable`]'s filter.
#[inline]
fn filter_bit(addr: &[u8; 16]) -> u64 {
    1 << (addr[15] & 63)
}

/// Writes a slot under its sequence lock. Only the worker owning the port calls this.
fn write(slot: &Slot, mapping: &Mapping, hold: Hold) {
    let seq = slot.seq.load(Ordering::Relaxed);
    slot.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
    fence(Ordering::Release);
    for (d, s) in slot.words.iter().zip(mapping.pack()) {
        d.store(s, Ordering::Relaxed);
    }
    slot.expires.store(hold.expires, Ordering::Relaxed);
    slot.embryonic.store(hold.embryonic, Ordering::Relaxed);
    slot.seq.store(seq.wrapping_add(2), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(i: u8) -> Mapping {
        Mapping {
            client: [i; 16],
            client_port: 40000 + u16::from(i),
            vip: [7; 16],
            vip_port: 80,
            backend: [9; 16],
            backend_port: 8080,
            client_mac: EthernetAddress([2, 0, 0, 0, 0, i]),
            service_stats: u16::from(i) * 3,
            backend_stats: 0xffff - u16::from(i),
        }
    }

    /// Held until `expires`, past the handshake.
    fn held(now: u64, expires: u64) -> Hold {
        Hold { now, expires, embryonic: false }
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapping_round_trips_through_the_slot_words() {
        let m = mapping(3);
        assert_eq!(Mapping::unpack(&m.pack()), m);
    }

    #[test]
    fn workers_get_disjoint_shares_covering_the_range() {
        let t = Arc::new(SnatTable::new(vec![v4("10.0.0.1")], 1000, 1009, 3).unwrap());
        let mut seen = std::collections::BTreeSet::new();
        for w in 0..3 {
            let mut p = t.worker(w);
            while let Some(l) = p.allocate(false, Protocol::TCP, 0, &mapping(1), held(0, 100)).map(|(l, _)| l) {
                assert!(seen.insert(l.port()), "port {} handed to two workers", l.port());
            }
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), (1000..=1009).collect::<Vec<_>>());
        let owners = |port| (0..3).filter(|w| t.worker(*w).owns(port)).count();
        assert!((1000..=1009).all(|p| owners(p) == 1));
        assert_eq!(owners(999), 0);
        assert_eq!(owners(1010), 0);
    }

    #[test]
    fn a_port_in_use_is_never_handed_out_and_frees_itself_at_expiry() {
        let t = Arc::new(SnatTable::new(vec![v4("10.0.0.1")], 2000, 2003, 1).unwrap());
        let mut p = t.worker(0);
        let leases: Vec<Lease> = (0..4)
            .map(|i| p.allocate(false, Protocol::TCP, 0, &mapping(i), held(10, 100)).map(|(l, _)| l).unwrap())
            .collect();
        // Exhausted while every flow lives; the other protocol has its own ports.
        assert_eq!(p.allocate(false, Protocol::TCP, 0, &mapping(9), held(50, 150)).map(|(l, _)| l), None);
        assert!(p.allocate(false, Protocol::UDP, 0, &mapping(9), held(50, 150)).map(|(l, _)| l).is_some());
        // One flow is kept alive, the others expire at 100.
        p.touch(leases[2], Protocol::TCP, held(0, 500));
        let mut again = Vec::new();
        while let Some(l) = p.allocate(false, Protocol::TCP, 0, &mapping(8), held(200, 300)).map(|(l, _)| l) {
            again.push(l.port());
        }
        again.sort_unstable();
        assert_eq!(again, vec![2000, 2001, 2003]);
        // Replies find the mapping of the live flow, and nothing for a free port.
        assert_eq!(t.lookup(0, Protocol::TCP, leases[2].port(), 250), Some(mapping(2)));
        assert_eq!(t.lookup(0, Protocol::TCP, 2000, 250), Some(mapping(8)));
        assert_eq!(t.lookup(0, Protocol::TCP, 2000, 300), None);
        assert_eq!(t.lookup(0, Protocol::TCP, 1999, 0), None);
        assert_eq!(t.lookup(0, Protocol::ICMP, 2000, 0), None);
    }

    #[test]
    fn a_touched_port_is_held_from_its_flows_deadline_to_a_second_past_it_once_established() {
        let t = Arc::new(SnatTable::new(vec![v4("10.0.0.1")], 2000, 2000, 1).unwrap());
        let mut p = t.worker(0);
        let l = Lease::new(0, 2000).unwrap();
        assert_eq!(p.allocate(false, Protocol::TCP, 0, &mapping(1), held(0, 100)).map(|(l, _)| l), Some(l));
        let held_until = || t.slot(0, Protocol::TCP, 2000).unwrap().expires.load(Ordering::Relaxed);
        assert_eq!(held_until(), 100);
        // A later deadline is written with the slack; later ones within it are not written.
        p.touch(l, Protocol::TCP, held(1, 200));
        assert_eq!(held_until(), 200 + TOUCH_SLACK);
        p.touch(l, Protocol::TCP, held(2, 300));
        p.touch(l, Protocol::TCP, held(3, 200 + TOUCH_SLACK));
        assert_eq!(held_until(), 200 + TOUCH_SLACK);
        p.touch(l, Protocol::TCP, held(4, 201 + TOUCH_SLACK));
        assert_eq!(held_until(), 201 + 2 * TOUCH_SLACK);
        // A flow that closes has a nearer deadline: written at once, and the port is free
        // from a second after it.
        p.touch(l, Protocol::TCP, held(5, 50));
        assert_eq!(held_until(), 50 + TOUCH_SLACK);
        assert_eq!(t.lookup(0, Protocol::TCP, 2000, 49 + TOUCH_SLACK), Some(mapping(1)));
        assert_eq!(t.lookup(0, Protocol::TCP, 2000, 50 + TOUCH_SLACK), None);
        // An embryonic port keeps its flow's deadline exactly; the end of the handshake is
        // written whatever the deadline.
        let embryonic = |now, expires| Hold { now, expires, embryonic: true };
        p.touch(l, Protocol::TCP, embryonic(6, 60));
        assert_eq!(held_until(), 60);
        assert!(t.slot(0, Protocol::TCP, 2000).unwrap().embryonic.load(Ordering::Relaxed));
        p.touch(l, Protocol::TCP, embryonic(7, 70));
        assert_eq!(held_until(), 70);
        p.touch(l, Protocol::TCP, held(8, 70));
        assert!(!t.slot(0, Protocol::TCP, 2000).unwrap().embryonic.load(Ordering::Relaxed));
        assert_eq!(held_until(), 70 + TOUCH_SLACK);
    }

    #[test]
    fn under_pressure_the_oldest_embryonic_port_is_taken_back_never_an_established_one() {
        let t = Arc::new(SnatTable::new(vec![v4("10.0.0.1")], 2000, 2003, 1).unwrap());
        let mut p = t.worker(0);
        let embryonic = |now, expires| Hold { now, expires, embryonic: true };
        // Two flows past their handshake, two embryonic ones (deadlines 40 and 30).
        let est: Vec<Lease> =
            (0..2).map(|i| p.allocate(false, Protocol::TCP, 0, &mapping(i), held(0, 1000)).unwrap().0).collect();
        let syn40 = p.allocate(false, Protocol::TCP, 0, &mapping(2), embryonic(0, 40)).unwrap().0;
        let syn30 = p.allocate(false, Protocol::TCP, 0, &mapping(3), embryonic(1, 30)).unwrap().0;
        // Full: the next flow gets the port of the nearest embryonic deadline, and the
        // mapping of the flow it belonged to, for the caller to evict.
        let (l, old) = p.allocate(false, Protocol::TCP, 0, &mapping(4), embryonic(2, 50)).unwrap();
        assert_eq!((l, old), (syn30, Some(mapping(3))));
        assert_eq!(t.lookup(0, Protocol::TCP, l.port(), 3), Some(mapping(4)));
        let (l, old) = p.allocate(false, Protocol::TCP, 0, &mapping(5), held(3, 60)).unwrap();
        assert_eq!((l, old), (syn40, Some(mapping(2))));
        // The embryonic one of deadline 50 goes next; then only established flows remain.
        assert_eq!(p.allocate(false, Protocol::TCP, 0, &mapping(6), held(4, 70)).unwrap().1, Some(mapping(4)));
        assert_eq!(p.allocate(false, Protocol::TCP, 0, &mapping(7), held(5, 70)), None);
        for (i, l) in est.iter().enumerate() {
            assert_eq!(t.lookup(0, Protocol::TCP, l.port(), 6), Some(mapping(u8::try_from(i).unwrap())));
        }
        // A flow that finishes its handshake is no longer taken back; a released port is free.
        p.touch(syn40, Protocol::TCP, held(6, 80));
        p.release(est[0], Protocol::TCP);
        assert_eq!(t.lookup(0, Protocol::TCP, est[0].port(), 7), None);
        assert_eq!(p.allocate(false, Protocol::TCP, 0, &mapping(8), held(7, 90)), Some((est[0], None)));
        assert_eq!(p.allocate(false, Protocol::TCP, 0, &mapping(9), embryonic(8, 90)), None);
    }

    #[test]
    fn only_addresses_of_the_flows_family_are_used() {
        let t = Arc::new(SnatTable::new(vec![v4("10.0.0.1"), v4("2001:db8::1")], 3000, 3000, 1).unwrap());
        let mut p = t.worker(0);
        assert_eq!(p.allocate(true, Protocol::TCP, 0, &mapping(1), held(0, 10)).map(|(l, _)| l), Lease::new(1, 3000));
        assert_eq!(p.allocate(true, Protocol::TCP, 0, &mapping(1), held(0, 10)).map(|(l, _)| l), None);
        assert_eq!(p.allocate(false, Protocol::TCP, 1, &mapping(1), held(0, 10)).map(|(l, _)| l), Lease::new(0, 3000));
        assert_eq!(t.in_use(5), vec![1, 1]);
    }

    #[test]
    fn the_address_filter_hides_no_snat_address() {
        // 10.0.0.1 and 2001:db8::41 share a filter bit (1 and 0x41, modulo 64); 10.0.0.65
        // has it too but is not ours, 10.0.0.2 has another bit.
        let t = SnatTable::new(vec![v4("10.0.0.1"), v4("2001:db8::41"), v4("10.0.0.3")], 3000, 3001, 1).unwrap();
        assert_eq!(t.addr_index(v4("10.0.0.1")), Some(0));
        assert_eq!(t.addr_index(v4("2001:db8::41")), Some(1));
        assert_eq!(t.addr_index(v4("10.0.0.3")), Some(2));
        assert_eq!(t.addr_index(v4("10.0.0.65")), None);
        assert_eq!(t.addr_index(v4("10.0.0.2")), None);
        assert_eq!(t.addr_index(v4("::ffff:10.0.0.1")), Some(0), "the mapped form is the same address");
    }

    #[test]
    fn readers_on_other_threads_never_see_a_torn_mapping() {
        let t = Arc::new(SnatTable::new(vec![v4("10.0.0.1")], 5000, 5000, 1).unwrap());
        let writer = {
            let t = t.clone();
            std::thread::spawn(move || {
                let p = t.worker(0);
                let lease = Lease::new(0, 5000).unwrap();
                for i in 0..200_000u32 {
                    let b = u8::try_from(i % 251).unwrap_or(0);
                    p.rewrite(lease, Protocol::UDP, &mapping(b), held(0, u64::MAX));
                }
            })
        };
        let mut seen = 0u32;
        while !writer.is_finished() || seen == 0 {
            if let Some(m) = t.lookup(0, Protocol::UDP, 5000, 0) {
                // Every field was written from the same i: a mix would break this.
                let i = m.client[0];
                assert_eq!(m, mapping(i));
                seen += 1;
            }
        }
        writer.join().unwrap();
        assert!(seen > 0);
    }

    #[test]
    fn a_flow_is_found_by_its_client_side_until_it_expires() {
        let t = Arc::new(SnatTable::new(vec![v4("10.0.0.1")], 4000, 4100, 1).unwrap());
        let mut p = t.worker(0);
        let l = p.allocate(false, Protocol::TCP, 0xabcd_0123_4567, &mapping(1), held(0, 100)).map(|(l, _)| l).unwrap();
        assert_eq!(t.find_by_client(0xabcd_0123_4567, Protocol::TCP, &mapping(1), 50), Some((l, mapping(1))));
        // Another client tuple with the same hash, another protocol, or an expired flow: no.
        assert_eq!(t.find_by_client(0xabcd_0123_4567, Protocol::TCP, &mapping(2), 50), None);
        assert_eq!(t.find_by_client(0xabcd_0123_4567, Protocol::UDP, &mapping(1), 50), None);
        assert_eq!(t.find_by_client(0xabcd_0123_4567, Protocol::TCP, &mapping(1), 100), None);
        assert_eq!(t.find_by_client(0x1111, Protocol::TCP, &mapping(1), 50), None);
    }

    #[test]
    fn bad_ranges_are_refused_with_the_fix() {
        assert!(SnatTable::new(vec![], 2000, 1000, 1).unwrap_err().to_string().contains("LOW <= HIGH"));
        assert!(matches!(SnatTable::new(vec![], 1, 2, 4), Err(SnatError::TooFewPorts(1, 2, 4))));
    }
}

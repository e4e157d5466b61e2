//! Per-worker connection tracking: which backend each flow was given, so a flow stays on its
//! backend for its whole life even when the Maglev table changes under it.
//!
//! A fixed-capacity open-addressing table (linear probing, probes bounded by `MAX_PROBE`,
//! backward-shift deletion, no tombstones), allocated once at start-up. Expiry is lazy and
//! driven by the `now` argument: an entry past its deadline counts as absent and its slot is
//! reused. When a new flow finds no free slot within its probe window, the evictable entry
//! with the nearest deadline goes: an embryonic flow (TCP SYN seen, nothing else) or a
//! session-affinity record, the two kinds a spoofed-source flood makes. Established flows are
//! never evicted, so their lookups never fail. If nothing evictable is there either, the
//! insert fails, is counted, and the caller serves the flow statelessly from Maglev. An
//! evicted SNAT flow's port is handed back (see [`Conntrack::insert_evicting`]).

use std::time::Duration;

use super::{snat::Lease, store::Store};
use crate::wire::tcp::TcpFlags;

/// Longest probe sequence: entries live within this many slots of their home.
pub const MAX_PROBE: usize = 64;

/// Identity of a flow as it arrives (client to VIP): protocol, addresses, ports. IPv4
/// addresses are stored IPv4-mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source (client) address.
    pub src: [u8; 16],
    /// Destination (VIP) address.
    pub dst: [u8; 16],
    /// Source port (ICMP: echo identifier).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
}

impl FlowKey {
    /// The flow hash: the same for the same flow on every worker and node (it also picks
    /// the Maglev slot for flows conntrack does not hold). Folded multiplies (the 128-bit
    /// product's halves xored) over the four address words, then over the ports and
    /// protocol: about twenty instructions. Pinned like Maglev's seeds: nodes must agree.
    /// Not keyed, so it does not hide collisions from a sender who sets out to make them;
    /// probe chains are bounded by [`MAX_PROBE`] whatever the keys.
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        let w = |b: &[u8]| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let src = fold(w(&self.src[..8]) ^ 0x243f_6a88_85a3_08d3, w(&self.src[8..]) ^ 0x1319_8a2e_0370_7344);
        let dst = fold(w(&self.dst[..8]) ^ 0xa409_3822_299f_31d0, w(&self.dst[8..]) ^ 0x082e_fa98_ec4e_6c89);
        let rest = u64::from(self.src_port) << 24 | u64::from(self.dst_port) << 8 | u64::from(self.proto);
        fold(src ^ rest ^ 0x4528_21e6_38d0_1377, dst ^ 0xbe54_66cf_34e9_0c6c)
    }
}

/// The 128-bit product of `a` and `b`, its halves xored.
#[inline]
#[allow(clippy::cast_possible_truncation)] // the two halves, on purpose
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Where a flow stands.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowState {
    /// Free slot.
    #[default]
    Empty = 0,
    /// TCP: SYN seen, no ACK yet (embryonic: first to go when the table is full).
    SynSent,
    /// TCP: established (or picked up mid-flow).
    Established,
    /// TCP: FIN or RST seen.
    Closing,
    /// UDP.
    Udp,
    /// ICMP echo, and any other protocol.
    Other,
    /// Not a flow: a client's session-affinity record (its deadline is the service's
    /// affinity timeout). Evictable like an embryonic flow: a flood of spoofed sources
    /// makes one per source.
    Affinity,
}

impl FlowState {
    /// Whether a new flow may take this entry's slot while it lives.
    #[inline]
    fn evictable(self) -> bool {
        matches!(self, FlowState::SynSent | FlowState::Affinity)
    }
}

/// How long an idle flow is kept, by state. `xlb run --conntrack-timeout NAME=SECONDS`, the
/// config's `conntrack.timeouts` and the chart's `conntrack.timeouts` set them; README.md
/// lists them beside the Linux kernel's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Embryonic TCP (SYN seen, no ACK from the client yet), DSR: it holds only a slot of
    /// the flow table, which a new flow may take.
    pub syn: Duration,
    /// Embryonic TCP in SNAT: it also holds a port of a SNAT address, which a spoofed SYN
    /// flood would otherwise keep for `syn`. Short, like the kernel's lifetime for
    /// unreplied entries: a client whose handshake takes longer retransmits its SYN, and
    /// that SYN takes a port again.
    pub syn_snat: Duration,
    /// Established TCP.
    pub established: Duration,
    /// TCP after FIN or RST.
    pub closing: Duration,
    /// UDP.
    pub udp: Duration,
    /// ICMP and other protocols.
    pub other: Duration,
}

impl Default for Timeouts {
    /// Close to Cilium's defaults: SYN 60 s, established 6 h, FIN/RST 10 s, others 60 s;
    /// an embryonic SNAT flow 5 s.
    fn default() -> Self {
        Timeouts {
            syn: Duration::from_secs(60),
            syn_snat: Duration::from_secs(5),
            established: Duration::from_secs(6 * 3600),
            closing: Duration::from_secs(10),
            udp: Duration::from_secs(60),
            other: Duration::from_secs(60),
        }
    }
}

/// The names `--conntrack-timeout` and the config's `conntrack.timeouts` know (README.md
/// lists them beside the Linux kernel's own timeouts).
pub const TIMEOUT_NAMES: [&str; 6] = ["tcpSyn", "tcpSynSnat", "tcpEstablished", "tcpClosing", "udp", "other"];

/// Longest timeout that may be set, in seconds: 30 days.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 86_400;

impl Timeouts {
    /// Sets the timeout called `name` (one of [`TIMEOUT_NAMES`]) to `secs` seconds, checked:
    /// the error says what is wrong and what would do.
    pub fn set_secs(&mut self, name: &str, secs: u64) -> Result<(), String> {
        if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
            return Err(format!("{secs} s is out of range: give 1 to {MAX_TIMEOUT_SECS} seconds"));
        }
        if !self.set(name, Duration::from_secs(secs)) {
            return Err(format!("{name:?} is not a timeout: give one of {}", TIMEOUT_NAMES.join(", ")));
        }
        Ok(())
    }

    /// Sets the timeout called `name` (one of [`TIMEOUT_NAMES`]) to `d`; `false`: no such
    /// timeout.
    pub fn set(&mut self, name: &str, d: Duration) -> bool {
        let field = match name {
            "tcpSyn" => &mut self.syn,
            "tcpSynSnat" => &mut self.syn_snat,
            "tcpEstablished" => &mut self.established,
            "tcpClosing" => &mut self.closing,
            "udp" => &mut self.udp,
            "other" => &mut self.other,
            _ => return false,
        };
        *field = d;
        true
    }

    fn for_state(&self, s: FlowState) -> u64 {
        let d = match s {
            FlowState::SynSent => self.syn,
            FlowState::Established => self.established,
            FlowState::Closing => self.closing,
            FlowState::Udp => self.udp,
            FlowState::Other | FlowState::Affinity | FlowState::Empty => self.other,
        };
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The same in nanoseconds, by state and by whether the flow holds a SNAT port: what
    /// the packet path adds to `now`.
    pub fn lifetimes(&self) -> Lifetimes {
        let mut ns = [0u64; 16];
        for s in [
            FlowState::Empty,
            FlowState::SynSent,
            FlowState::Established,
            FlowState::Closing,
            FlowState::Udp,
            FlowState::Other,
            FlowState::Affinity,
        ] {
            ns[s as usize] = self.for_state(s);
            ns[s as usize | 8] = self.for_state(s);
        }
        ns[FlowState::SynSent as usize | 8] = u64::try_from(self.syn_snat.as_nanos()).unwrap_or(u64::MAX);
        Lifetimes(ns)
    }
}

/// Idle lifetimes in nanoseconds, indexed by [`FlowState`] and by whether the flow holds a
/// SNAT port (+8): [`Timeouts`] converted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes([u64; 16]);

impl Lifetimes {
    /// How long a flow in state `s` that holds no SNAT port lives idle, in nanoseconds.
    #[inline]
    pub fn of(&self, s: FlowState) -> u64 {
        self.0[s as usize & 7]
    }

    /// How long a flow in state `s` lives idle, in nanoseconds, with a SNAT port (`snat`)
    /// or without.
    #[inline]
    pub fn of_flow(&self, s: FlowState, snat: bool) -> u64 {
        self.0[(s as usize & 7) | usize::from(snat) << 3]
    }

    /// How long the entry `e` lives idle from now on, in nanoseconds.
    #[inline]
    pub fn of_entry(&self, e: &Entry) -> u64 {
        self.of_flow(e.state, e.snat.is_some())
    }
}

/// One tracked flow: 64 bytes, one cache line, so a lookup at a million flows costs one
/// miss. The flow's hash is not stored (it would not fit): moving an entry on removal
/// recomputes it from the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(align(64))]
pub struct Entry {
    /// The flow.
    pub key: FlowKey,
    /// Deadline in `now` nanoseconds.
    pub expires: u64,
    /// Where the flow's service and backend were in the snapshot of its last packet. Hints
    /// only: snapshots may reorder both, so they are checked before use (the service's key
    /// against the flow's, the backend's against `backend_key`).
    pub hint: Hint,
    /// The backend's identity hash; what the flow is really pinned to.
    pub backend_key: u64,
    /// State.
    pub state: FlowState,
    /// The SNAT port the flow holds, for a SNAT service.
    pub snat: Option<Lease>,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 64, "a flow-table entry is one cache line");

/// A tracked flow's service index in the snapshot (high 16 bits) and its backend index
/// within the service (low 16 bits), as of its last packet, each cut to 16 bits. With it a
/// packet of a tracked flow finds its service and backend without a lookup. A hint is only
/// a hint: the service it names is used only if its key is the flow's, the backend only if
/// its identity is the entry's `backend_key`, so an index cut short (past 65,535) or a hint
/// from an older snapshot costs the lookup, nothing else. A state file of an xlb that kept
/// the backend index alone in these four bytes reads as service 0 and that backend: both
/// checked, so still right.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hint(u32);

impl Hint {
    /// The hint of service `service` and its backend `backend`.
    #[inline]
    #[allow(clippy::cast_possible_truncation)] // cut on purpose: checked before use
    pub fn new(service: u32, backend: u32) -> Self {
        Hint(service << 16 | u32::from(backend as u16))
    }

    /// The service's index (cut to 16 bits).
    #[inline]
    pub fn service(self) -> u32 {
        self.0 >> 16
    }

    /// The backend's index within the service (cut to 16 bits).
    #[inline]
    pub fn backend(self) -> u32 {
        self.0 & 0xffff
    }

    /// The same hint with another backend.
    #[inline]
    #[must_use]
    pub fn with_backend(self, backend: u32) -> Self {
        Hint::new(self.service(), backend)
    }
}

/// The SNAT port, and its protocol, of a live entry evicted to make room for another.
pub type Evicted = (Lease, u8);

/// Why an insert did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// No free, expired or evictable slot within the probe window.
    Full,
}

/// Counters the table keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    /// Flows inserted.
    pub inserts: u64,
    /// Evictable entries (embryonic flows, session-affinity records) evicted to make room
    /// for a new flow, and embryonic SNAT flows whose port was taken back for a new flow.
    pub evictions: u64,
    /// Inserts that found no room (served statelessly).
    pub full: u64,
    /// Entries found expired and removed or reused.
    pub expired: u64,
    /// Live entries.
    pub live: u64,
}

/// A worker's flow table.
#[derive(Debug)]
pub struct Conntrack {
    slots: Store<Entry>,
    mask: usize,
    timeouts: Timeouts,
    lifetimes: Lifetimes,
    stats: ConntrackStats,
}

/// Most flows one worker's table may be sized for (its slots then take 8 GiB).
pub const MAX_CAPACITY: usize = 1 << 26;

/// The slots of a table for about `capacity` flows: the next power of two at or above
/// 1.5 x capacity, so probe chains stay short.
pub fn slots_for(capacity: usize) -> usize {
    let want = capacity.clamp(16, MAX_CAPACITY).saturating_mul(3) / 2;
    want.next_power_of_two()
}

/// The memory a table for about `capacity` flows takes, in bytes (allocated and touched
/// when the worker starts).
pub fn bytes_for(capacity: usize) -> usize {
    slots_for(capacity) * std::mem::size_of::<Entry>()
}

impl Conntrack {
    /// A table for about `capacity` flows (at most [`MAX_CAPACITY`]; see [`slots_for`]),
    /// allocated now.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Self {
        let slots = slots_for(capacity);
        Conntrack {
            slots: Store::Heap(vec![Entry::default(); slots].into_boxed_slice()),
            mask: slots - 1,
            timeouts,
            lifetimes: timeouts.lifetimes(),
            stats: ConntrackStats::default(),
        }
    }

    /// A table in `store`, which may hold the flows a previous xlb left there (a state
    /// file): those live at `now` are counted and kept. `None` unless the store's length is
    /// a power of two of at least 16 slots.
    pub fn with_store(store: Store<Entry>, timeouts: Timeouts, now: u64) -> Option<Self> {
        let n = store.len();
        if n < 16 || !n.is_power_of_two() {
            return None;
        }
        let live = store.iter().filter(|e| e.state != FlowState::Empty && e.expires > now).count() as u64;
        Some(Conntrack {
            slots: store,
            mask: n - 1,
            timeouts,
            lifetimes: timeouts.lifetimes(),
            stats: ConntrackStats { live, ..ConntrackStats::default() },
        })
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Counters.
    pub fn stats(&self) -> ConntrackStats {
        self.stats
    }

    /// Live entries (for `xlb conntrack list`): everything not expired at `now`.
    pub fn iter_live(&self, now: u64) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter(move |e| e.state != FlowState::Empty && e.expires > now)
    }

    #[inline]
    fn dist(&self, from: usize, to: usize) -> usize {
        to.wrapping_sub(from) & self.mask
    }

    /// Where the lookup of a flow with `hash` starts, and how many bytes it reads there
    /// first (one entry): what to prefetch a batch ahead, so that the batch's cache misses
    /// overlap instead of following one another.
    #[inline]
    pub fn home_of(&self, hash: u64) -> (*const u8, usize) {
        let home = usize::try_from(hash).unwrap_or(0) & self.mask;
        let at = self.slots.get(home).map_or(std::ptr::null(), |e| std::ptr::from_ref(e).cast());
        (at, std::mem::size_of::<Entry>())
    }

    /// The live entry of `key` at `now`, if any.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, hash: u64, now: u64) -> Option<&mut Entry> {
        self.lookup_with_lifetimes(key, hash, now).map(|(e, _)| e)
    }

    /// [`Conntrack::lookup`], with the lifetimes to [`Conntrack::touch`] the entry with.
    #[inline]
    pub fn lookup_with_lifetimes(&mut self, key: &FlowKey, hash: u64, now: u64) -> Option<(&mut Entry, &Lifetimes)> {
        let home = usize::try_from(hash).unwrap_or(0) & self.mask;
        for i in 0..MAX_PROBE {
            let at = (home + i) & self.mask;
            let e = &self.slots[at];
            if e.state == FlowState::Empty {
                return None;
            }
            if e.key == *key {
                if e.expires <= now {
                    self.stats.expired += 1;
                    self.remove_at(at);
                    return None;
                }
                return Some((&mut self.slots[at], &self.lifetimes));
            }
        }
        None
    }

    /// Inserts a new flow (or replaces the live entry of the same key); returns the stored
    /// entry. `entry.expires` is set from the state's timeout.
    pub fn insert(&mut self, entry: Entry, now: u64) -> Result<&mut Entry, InsertError> {
        let hash = entry.key.hash();
        self.insert_hashed(entry, hash, now)
    }

    /// [`Conntrack::insert`] for a caller that has the key's hash (`entry.key.hash()`). A
    /// SNAT port held by an entry it evicts stays taken until that entry's deadline: where
    /// the table holds SNAT flows, use [`Conntrack::insert_evicting`].
    #[inline]
    pub fn insert_hashed(&mut self, entry: Entry, hash: u64, now: u64) -> Result<&mut Entry, InsertError> {
        let (at, _) = self.place(entry, hash, now)?;
        Ok(&mut self.slots[at])
    }

    /// [`Conntrack::insert_hashed`], also giving the SNAT port (and its protocol) of the
    /// live entry it evicted to make room, for the caller to free at once.
    #[inline]
    pub fn insert_evicting(
        &mut self,
        entry: Entry,
        hash: u64,
        now: u64,
    ) -> Result<(&mut Entry, Option<Evicted>), InsertError> {
        let (at, evicted) = self.place(entry, hash, now)?;
        Ok((&mut self.slots[at], evicted))
    }

    /// Stores `entry` and says where, with the SNAT port of the live entry evicted for it.
    #[inline]
    fn place(&mut self, mut entry: Entry, hash: u64, now: u64) -> Result<(usize, Option<Evicted>), InsertError> {
        debug_assert_eq!(hash, entry.key.hash(), "the hash of the entry's key");
        entry.expires = now.saturating_add(self.lifetimes.of_entry(&entry));
        let home = usize::try_from(hash).unwrap_or(0) & self.mask;
        let mut reuse: Option<usize> = None;
        let mut victim: Option<(usize, u64)> = None;
        for i in 0..MAX_PROBE {
            let at = (home + i) & self.mask;
            let e = &self.slots[at];
            if e.state == FlowState::Empty {
                reuse.get_or_insert(at);
                break;
            }
            if e.key == entry.key {
                if e.expires <= now {
                    self.stats.expired += 1;
                } else {
                    self.stats.live = self.stats.live.saturating_sub(1);
                }
                self.stats.live += 1;
                self.stats.inserts += 1;
                self.slots[at] = entry;
                return Ok((at, None));
            }
            if e.expires <= now {
                reuse.get_or_insert(at);
            } else if e.state.evictable() && victim.is_none_or(|(_, exp)| e.expires < exp) {
                victim = Some((at, e.expires));
            }
        }
        let (at, evicted) = match (reuse, victim) {
            (Some(at), _) => {
                // An expired entry's SNAT port frees itself (with it, or within a second
                // after, see `SnatPorts::touch`), and may be another flow's by now: nothing
                // to free.
                if self.slots[at].state != FlowState::Empty {
                    self.stats.expired += 1;
                    self.stats.live = self.stats.live.saturating_sub(1);
                }
                (at, None)
            }
            (None, Some((at, _))) => {
                self.stats.evictions += 1;
                self.stats.live = self.stats.live.saturating_sub(1);
                let old = &self.slots[at];
                (at, old.snat.map(|l| (l, old.key.proto)))
            }
            (None, None) => {
                self.stats.full += 1;
                return Err(InsertError::Full);
            }
        };
        self.slots[at] = entry;
        self.stats.inserts += 1;
        self.stats.live += 1;
        Ok((at, evicted))
    }

    /// Evicts the live entry of `key` (an embryonic SNAT flow whose port is taken back for a
    /// new flow): removed and counted as an eviction.
    pub fn evict(&mut self, key: &FlowKey, hash: u64) {
        if self.remove(key, hash) {
            self.stats.evictions += 1;
        }
    }

    /// Removes the entry of `key`, if there is one.
    /// Whether there was one.
    pub fn remove(&mut self, key: &FlowKey, hash: u64) -> bool {
        let home = usize::try_from(hash).unwrap_or(0) & self.mask;
        for i in 0..MAX_PROBE {
            let at = (home + i) & self.mask;
            let e = &self.slots[at];
            if e.state == FlowState::Empty {
                return false;
            }
            if e.key == *key {
                self.remove_at(at);
                return true;
            }
        }
        false
    }

    /// Moves an entry on after a packet: new state (from TCP flags) and a fresh deadline.
    #[inline]
    pub fn touch(lifetimes: &Lifetimes, e: &mut Entry, tcp_flags: Option<u8>, now: u64) {
        if let Some(flags) = tcp_flags {
            e.state = next_tcp_state(e.state, flags);
        }
        e.expires = now.saturating_add(lifetimes.of_entry(e));
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The same, in nanoseconds by state.
    #[inline]
    pub fn lifetimes(&self) -> &Lifetimes {
        &self.lifetimes
    }

    /// Removes the entry at `at`, shifting later members of its probe chain back so that
    /// lookups never stop early at the hole.
    fn remove_at(&mut self, at: usize) {
        self.stats.live = self.stats.live.saturating_sub(1);
        let mut hole = at;
        let mut j = at;
        for _ in 0..self.slots.len() {
            j = (j + 1) & self.mask;
            let e = &self.slots[j];
            if e.state == FlowState::Empty {
                break;
            }
            let home = usize::try_from(e.key.hash()).unwrap_or(0) & self.mask;
            // The entry may fill the hole if its home is not between the hole and it.
            if self.dist(home, j) >= self.dist(hole, j) {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
        }
        self.slots[hole] = Entry::default();
    }
}

/// The state a TCP flow moves to on a packet with `flags`.
#[inline]
pub fn next_tcp_state(s: FlowState, flags: u8) -> FlowState {
    let closing = flags & (TcpFlags::RST | TcpFlags::FIN) != 0;
    // Most packets are of an established flow and change nothing.
    if s == FlowState::Established && !closing {
        return s;
    }
    if closing {
        return FlowState::Closing;
    }
    match s {
        FlowState::SynSent if flags & TcpFlags::ACK != 0 && flags & TcpFlags::SYN == 0 => FlowState::Established,
        FlowState::Empty if flags & TcpFlags::SYN != 0 && flags & TcpFlags::ACK == 0 => FlowState::SynSent,
        FlowState::Empty => FlowState::Established,
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test inputs are small by construction
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn key(i: u32) -> FlowKey {
        let mut k = FlowKey { proto: 6, dst_port: 80, src_port: (i % 60000) as u16, ..FlowKey::default() };
        k.src[12..].copy_from_slice(&i.to_be_bytes());
        k.dst[12..].copy_from_slice(&[10, 0, 0, 100]);
        k
    }

    fn entry(i: u32, state: FlowState) -> Entry {
        let key = key(i);
        Entry { key, hint: Hint::new(0, i % 7), state, ..Entry::default() }
    }

    /// The flow hash is part of what the state files hold: it places each entry in the
    /// mapped flow table (and 31 of its bits index the SNAT table), so a build that hashes
    /// differently would adopt a table whose entries sit where its lookups never look. It also
    /// picks the Maglev slot, which every node must pick alike. A change to `FlowKey::hash`
    /// must come with a new `state::VERSION` (every table started afresh at that upgrade);
    /// these figures are the hash's as of 2026-12-01.
    #[test]
    fn the_flow_hash_is_pinned() {
        let v6 = FlowKey {
            src: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            dst: [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            src_port: 40000,
            dst_port: 443,
            proto: 17,
        };
        // IPv4 flows as the datapath keys them: IPv4-mapped addresses.
        let v4 = |src: [u8; 4], src_port: u16| {
            let mut k = FlowKey { src_port, dst_port: 80, proto: 6, ..FlowKey::default() };
            k.src[10..12].copy_from_slice(&[0xff, 0xff]);
            k.src[12..].copy_from_slice(&src);
            k.dst[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 100]);
            k
        };
        let hashes = [v4([192, 0, 2, 1], 10_000).hash(), v4([198, 51, 100, 7], 65_535).hash(), v6.hash()];
        assert_eq!(hashes, [0x33af_737c_9dff_3e2b, 0xb033_981d_acee_3220, 0xdce3_fd1e_4462_05ce], "{hashes:#018x?}");
    }

    #[test]
    fn insert_lookup_expire() {
        let mut ct = Conntrack::new(1000, Timeouts::default());
        let e = entry(1, FlowState::Established);
        assert!(ct.insert(e, 0).is_ok());
        assert_eq!(ct.lookup(&e.key, e.key.hash(), 5 * SEC).map(|x| x.hint.backend()), Some(1));
        // Established lives 6 h; a UDP flow 60 s.
        assert!(ct.lookup(&e.key, e.key.hash(), 6 * 3600 * SEC - 1).is_some());
        assert!(ct.lookup(&e.key, e.key.hash(), 6 * 3600 * SEC).is_none());
        assert_eq!(ct.stats().expired, 1);
        assert_eq!(ct.stats().live, 0);
    }

    #[test]
    fn tcp_states_follow_flags() {
        use TcpFlags as F;
        assert_eq!(next_tcp_state(FlowState::Empty, F::SYN), FlowState::SynSent);
        assert_eq!(next_tcp_state(FlowState::SynSent, F::SYN), FlowState::SynSent);
        assert_eq!(next_tcp_state(FlowState::SynSent, F::ACK), FlowState::Established);
        assert_eq!(next_tcp_state(FlowState::Established, F::ACK | F::PSH), FlowState::Established);
        assert_eq!(next_tcp_state(FlowState::Established, F::ACK | F::FIN), FlowState::Closing);
        assert_eq!(next_tcp_state(FlowState::SynSent, F::RST), FlowState::Closing);
        // Picked up mid-flow (after a restart or a failover): established.
        assert_eq!(next_tcp_state(FlowState::Empty, F::ACK), FlowState::Established);
        let t = Timeouts::default().lifetimes();
        let mut e = entry(3, FlowState::Established);
        Conntrack::touch(&t, &mut e, Some(F::FIN | F::ACK), 100);
        assert_eq!((e.state, e.expires), (FlowState::Closing, 100 + 10 * SEC));
    }

    #[test]
    fn full_table_evicts_embryonic_never_established() {
        // 16 flows asked: 32 slots. Fill every slot with established flows of one home.
        let mut ct = Conntrack::new(16, Timeouts::default());
        let n = ct.slots() as u32;
        let mut inserted = Vec::new();
        for i in 0..n * 4 {
            if inserted.len() == ct.slots() {
                break;
            }
            let e = entry(i, FlowState::Established);
            if ct.insert(e, 0).is_ok() {
                inserted.push(e);
            }
        }
        assert_eq!(inserted.len(), ct.slots(), "the table fills up completely");
        let extra = entry(10_000, FlowState::SynSent);
        assert_eq!(ct.insert(extra, 1).err(), Some(InsertError::Full));
        assert_eq!(ct.stats().full, 1);
        for e in &inserted {
            assert!(ct.lookup(&e.key, e.key.hash(), 2).is_some(), "established flow lost");
        }
        // Make one of them embryonic, holding a SNAT port: the next insert evicts it, not
        // the others, and hands its port back.
        let victim = inserted[5];
        let lease = Lease::new(0, 4242);
        assert!(ct.insert(Entry { state: FlowState::SynSent, snat: lease, ..victim }, 3).is_ok());
        let (_, freed) = ct.insert_evicting(extra, extra.key.hash(), 4).unwrap();
        assert_eq!(freed, lease.map(|l| (l, 6)));
        assert_eq!(ct.stats().evictions, 1);
        assert!(ct.lookup(&victim.key, victim.key.hash(), 5).is_none());
        assert!(ct.lookup(&extra.key, extra.key.hash(), 5).is_some());
        // A session-affinity record is evictable too (a spoofed-source flood makes one per
        // source); it holds no port. (Renewed at 3, it has the nearest deadline.)
        let affinity = inserted[9];
        assert!(ct.insert(Entry { state: FlowState::Affinity, ..affinity }, 3).is_ok());
        let more = entry(10_001, FlowState::SynSent);
        assert_eq!(ct.insert_evicting(more, more.key.hash(), 6).map(|(_, f)| f), Ok(None));
        assert_eq!(ct.stats().evictions, 2);
        assert!(ct.lookup(&affinity.key, affinity.key.hash(), 7).is_none());
        for e in inserted.iter().filter(|e| e.key != victim.key && e.key != affinity.key) {
            assert!(ct.lookup(&e.key, e.key.hash(), 7).is_some(), "established flow lost");
        }
    }

    #[test]
    fn an_embryonic_flow_with_a_snat_port_lives_its_own_short_lifetime() {
        let t = Timeouts::default().lifetimes();
        assert_eq!(t.of_flow(FlowState::SynSent, false), 60 * SEC);
        assert_eq!(t.of_flow(FlowState::SynSent, true), 5 * SEC);
        assert_eq!(t.of_flow(FlowState::Established, true), 6 * 3600 * SEC);
        let mut ct = Conntrack::new(100, Timeouts::default());
        let e = ct.insert(Entry { snat: Lease::new(0, 1024), ..entry(1, FlowState::SynSent) }, 0).unwrap();
        assert_eq!(e.expires, 5 * SEC);
        // Its handshake done, it lives as long as any established flow.
        Conntrack::touch(&t, e, Some(TcpFlags::ACK), SEC);
        assert_eq!(e.expires, SEC + 6 * 3600 * SEC);
        // Set by name, as the flags and the config do.
        let mut custom = Timeouts::default();
        assert!(custom.set("tcpSynSnat", Duration::from_secs(2)));
        assert!(!custom.set("tcp-syn", Duration::from_secs(2)));
        assert_eq!(custom.lifetimes().of_flow(FlowState::SynSent, true), 2 * SEC);
    }

    #[test]
    fn removal_keeps_every_chain_reachable() {
        // Many flows, short timeouts for half: expiring them in the middle of probe chains
        // must not hide the others.
        let t = Timeouts { udp: Duration::from_nanos(10), ..Timeouts::default() };
        let mut ct = Conntrack::new(2000, t);
        for i in 0..2000 {
            let state = if i % 2 == 0 { FlowState::Udp } else { FlowState::Established };
            ct.insert(entry(i, state), 0).map(|_| ()).unwrap_or_else(|_| panic!("insert {i}"));
        }
        for i in (0..2000).step_by(2) {
            let e = entry(i, FlowState::Udp);
            assert!(ct.lookup(&e.key, e.key.hash(), 100).is_none());
        }
        for i in (1..2000).step_by(2) {
            let e = entry(i, FlowState::Established);
            assert_eq!(ct.lookup(&e.key, e.key.hash(), 100).map(|x| x.hint.backend()), Some(i % 7), "flow {i}");
        }
        assert_eq!(ct.stats().live, 1000);
    }

    #[test]
    fn a_million_flows_fit_the_default_size() {
        let mut ct = Conntrack::new(1 << 20, Timeouts::default());
        let mut full = 0;
        for i in 0..(1u32 << 20) {
            if ct.insert(entry(i, FlowState::Established), 0).is_err() {
                full += 1;
            }
        }
        assert_eq!(full, 0, "{:?}", ct.stats());
        assert_eq!(ct.stats().live, 1 << 20);
    }
}

//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016), with the hash and its
//! seeds pinned so that every xlb node builds the same table from the same backends, in
//! whatever order it learned them.
//!
//! Each backend walks its own permutation of the table's slots (an offset and a skip, both
//! hashed from its identity) and claims the next free slot on its turn. Weights decide how
//! often a backend gets a turn: every round each backend earns its weight in credit, and
//! takes one slot for every `max_weight` of credit it holds. A backend of weight 0 gets no
//! slot (drained: established flows keep it through connection tracking). Tables are built
//! off the hot path; a lookup is one multiply-shift and one load.
//!
//! # Size: a pure function of the backend count
//!
//! Maglev balances well when the table has more than 100 slots per backend (M > 100 N), and
//! a table costs memory on every node for every service (10,000 Services at 65,537 four-byte
//! slots would be 2.6 GB). So a table is sized to its service ([`TableSize::Auto`], the
//! default): the smallest rung of [`LADDER`], a fixed list of primes about doubling from
//! 1,021 to [`MAX_TABLE_SIZE`], with M > 100 N. N counts every backend of the service,
//! weighted or not: drained, unhealthy, terminating and not yet resolved backends have weight
//! 0 and no slot, but they still count, so that a drain, a health flap or a neighbour entry
//! that one node resolves before another never resizes the table (which would move nearly
//! every slot); only a backend joining or leaving the service can, and only when the count
//! crosses a rung. A service of up to 10 backends has 1,021 slots.
//!
//! The size must be a pure function of the backend set, because every node must build the
//! same table: hysteresis (grow at one count, shrink at a lower one) would depend on the
//! history each node saw, and two nodes would disagree on the table, so there is none.
//! When the count crosses a rung, the table is rebuilt at the new size and most slots change
//! backend. Connection tracking covers it as it covers any backend change: a tracked flow is
//! pinned to its backend's identity (conntrack's `Entry::backend_key`), not to a slot, and
//! stays on its backend; only untracked flows (a flow met mid-way, as after a failover to
//! another node) are hashed afresh and can move. An explicit prime ([`TableSize::Fixed`],
//! `maglevTableSize` in the config) overrides the ladder for a service.
//!
//! # Slots: the narrowest width that holds the backends
//!
//! A slot holds a backend's index in the service's list: one byte per slot for up to 255
//! backends, two for up to 65,535, else four (the largest value of each width marks a free
//! slot while the table is filled; every slot is taken once one backend has weight). A table
//! whose backends all have weight 0 stores no slot. [`MaglevTable::lookup`] returns the
//! index as a `u32` ([`EMPTY`] when no backend has weight) whatever the width: a match on the
//! width (the same arm for every packet of a service, so predicted) then one load.

use std::{collections::HashMap, fmt, sync::Arc};

/// The automatic table sizes, smallest first: primes, each about twice the last. A service
/// of N backends gets the first with M > 100 N. Fixed: every node must pick the same size
/// from the same backends, and changing a rung reshuffles the tables of a cluster.
pub const LADDER: [u32; 15] = [
    1_021,
    2_039,
    4_093,
    8_191,
    16_381,
    32_749,
    65_537,
    131_071,
    262_139,
    524_287,
    1_048_573,
    2_097_143,
    4_194_301,
    8_388_593,
    MAX_TABLE_SIZE,
];
/// Largest table size accepted (the last rung of [`LADDER`]).
pub const MAX_TABLE_SIZE: u32 = 16_777_213;
/// Most backends for which an automatic table keeps M > 100 N; more get [`MAX_TABLE_SIZE`].
pub const MAX_BALANCED_BACKENDS: usize = 167_772;

/// Seeds of the two permutation hashes. Changing them reshuffles every table in a cluster:
/// they are part of the wire protocol between xlb nodes.
const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031; // "maglev01"
const SEED_SKIP: u64 = 0x786c_625f_736b_6970; // "xlb_skip"

/// Why a table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The table size is not a prime, or out of range.
    #[error(
        "Maglev table size {0} is not a prime between 3 and {MAX_TABLE_SIZE}: give one (e.g. 1021, 16381 or 65537), or none to size the table to the backends"
    )]
    BadSize(u32),
    /// More backends than the table can hold.
    #[error(
        "{backends} backends do not fit a Maglev table of {size} slots: give a prime over 100 per backend, or none to size the table to the backends"
    )]
    TooManyBackends {
        /// Backends given.
        backends: usize,
        /// Table size.
        size: u32,
    },
}

/// How many slots a service's table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TableSize {
    /// Sized to the service's backends: the first rung of [`LADDER`] with M > 100 N.
    #[default]
    Auto,
    /// This prime, whatever the backends (a configured override).
    Fixed(u32),
}

impl TableSize {
    /// The size of the table of a service with `backends` backends (weighted or not).
    pub fn slots_for(self, backends: usize) -> u32 {
        match self {
            TableSize::Fixed(size) => size,
            TableSize::Auto => {
                let least = u64::try_from(backends).unwrap_or(u64::MAX).saturating_mul(100);
                LADDER.into_iter().find(|m| u64::from(*m) > least).unwrap_or(MAX_TABLE_SIZE)
            }
        }
    }

    /// The size of the table of `backends` backends, if one can be built whatever their
    /// weights: a prime from 3 to [`MAX_TABLE_SIZE`] with a slot for every backend.
    pub fn check(self, backends: usize) -> Result<u32, MaglevError> {
        let size = self.slots_for(backends);
        check_prime(size)?;
        if backends > usize::try_from(size).unwrap_or(usize::MAX) {
            return Err(MaglevError::TooManyBackends { backends, size });
        }
        Ok(size)
    }
}

/// Refuses a size that is not a prime from 3 to [`MAX_TABLE_SIZE`].
fn check_prime(size: u32) -> Result<(), MaglevError> {
    if (3..=MAX_TABLE_SIZE).contains(&size) && is_prime(size) {
        Ok(())
    } else {
        Err(MaglevError::BadSize(size))
    }
}

/// A backend's identity for hashing: its address and port, as bytes (IPv4 as the last four
/// of sixteen), so that the same backend hashes the same on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub [u8; 18]);

impl BackendId {
    /// The identity of `addr:port`.
    pub fn new(addr: std::net::IpAddr, port: u16) -> Self {
        let mut b = [0u8; 18];
        let a = match addr {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        b[..16].copy_from_slice(&a);
        b[16..].copy_from_slice(&port.to_be_bytes());
        BackendId(b)
    }
}

/// 64-bit hash of `data` under `seed`: FNV-1a over the bytes, then the murmur3 finaliser
/// for avalanche. Pinned: its output is part of what nodes must agree on.
pub fn hash64(seed: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// The murmur3 64-bit finaliser.
#[inline]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Whether `n` is prime (trial division; table sizes are small and built rarely).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Marks a slot no backend holds (only when every weight is 0).
pub const EMPTY: u32 = u32::MAX;

/// A slot's width: an unsigned integer whose largest value marks a free slot while a
/// table is filled (a filled table has none left).
trait Slot: Copy + Eq + Into<u32> {
    /// A free slot.
    const FREE: Self;
    /// Backend `index`, which the width holds below [`Slot::FREE`] (checked when the width
    /// is chosen).
    fn of(index: usize) -> Self;
}

macro_rules! slot_width {
    ($($t:ty),*) => {$(
        impl Slot for $t {
            const FREE: Self = <$t>::MAX;
            fn of(index: usize) -> Self {
                <$t>::try_from(index).unwrap_or(Self::FREE)
            }
        }
    )*};
}
slot_width!(u8, u16, u32);

/// The slots, at the narrowest width that holds every backend index below the free mark.
/// Every slot of a built table holds a backend, or none is stored (no backend has weight:
/// an empty `U8`, on which every lookup misses).
#[derive(Clone, PartialEq, Eq)]
enum Slots {
    U8(Arc<[u8]>),
    U16(Arc<[u16]>),
    U32(Arc<[u32]>),
}

/// The backend a flow hash falls on: Lemire's multiply-shift maps a 64-bit hash onto
/// [0, len) without a division (the product fits in 64 bits: a 32-bit hash half times a
/// table of under 2^24 slots), then one load; [`EMPTY`] when no slot is stored.
#[inline(always)]
fn pick<T: Slot>(slots: &[T], hash: u64) -> u32 {
    let idx = usize::try_from(((hash >> 32) * slots.len() as u64) >> 32).unwrap_or(0);
    slots.get(idx).map_or(EMPTY, |s| (*s).into())
}

/// A built Maglev table: for each slot, the index of a backend in the list it was built from.
/// Cloning shares the slots (services with the same backends share one table).
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    slots: Slots,
    /// Slots in the table, stored or not.
    size: u32,
}

impl fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MaglevTable({} slots of {} bytes)", self.len(), self.slot_bytes())
    }
}

impl MaglevTable {
    /// Builds the table of `size` slots for `backends` (identity, weight). The result
    /// depends only on the set of (identity, weight) pairs, not on their order; slot values
    /// are indexes into `backends` as given. Slots are one byte wide for up to 255 backends,
    /// two for up to 65,535, else four; a table with no weighted backend stores none.
    pub fn build(backends: &[(BackendId, u32)], size: u32) -> Result<Self, MaglevError> {
        check_prime(size)?;
        let weighted = backends.iter().filter(|b| b.1 > 0).count();
        if weighted > usize::try_from(size).unwrap_or(usize::MAX) {
            return Err(MaglevError::TooManyBackends { backends: weighted, size });
        }
        let slots = if weighted == 0 {
            Slots::U8(Arc::new([]))
        } else if backends.len() <= usize::from(u8::MAX) {
            Slots::U8(fill(backends, size))
        } else if backends.len() <= usize::from(u16::MAX) {
            Slots::U16(fill(backends, size))
        } else {
            Slots::U32(fill(backends, size))
        };
        Ok(MaglevTable { slots, size })
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        usize::try_from(self.size).unwrap_or(0)
    }

    /// True for a table with no slots (never built that way; for clippy's sake).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend index for a flow hash ([`EMPTY`] when no backend has weight).
    #[inline]
    pub fn lookup(&self, hash: u64) -> u32 {
        match &self.slots {
            Slots::U8(s) => pick(s, hash),
            Slots::U16(s) => pick(s, hash),
            Slots::U32(s) => pick(s, hash),
        }
    }

    /// Number of slots (the prime it was built with).
    pub fn size(&self) -> usize {
        self.len()
    }

    /// Bytes per slot: 1, 2 or 4 (0 when no backend has weight: no slot is stored).
    pub fn slot_bytes(&self) -> usize {
        match &self.slots {
            Slots::U8(s) if s.is_empty() => 0,
            Slots::U8(_) => 1,
            Slots::U16(_) => 2,
            Slots::U32(_) => 4,
        }
    }

    /// How many slots point at backend `index`.
    pub fn slots_of(&self, index: u32) -> usize {
        self.slots().filter(|s| *s == index).count()
    }

    /// The backend index in slot `k` (none: empty slot or out of range).
    pub fn slot(&self, k: usize) -> Option<u32> {
        match &self.slots {
            Slots::U8(s) => s.get(k).map(|v| u32::from(*v)),
            Slots::U16(s) => s.get(k).map(|v| u32::from(*v)),
            Slots::U32(s) => s.get(k).copied(),
        }
    }

    /// The backend index of every slot in order ([`EMPTY`] for an empty one), for inspection
    /// (`xlb maglev show`) and tests.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len()).map(|k| self.slot(k).unwrap_or(EMPTY))
    }
}

/// Every slot of a table of `size` (a prime) for `backends`, at least one of them weighted,
/// at width `T` (which must hold every index of `backends` below [`Slot::FREE`]).
fn fill<T: Slot>(backends: &[(BackendId, u32)], size: u32) -> Arc<[T]> {
    let m = u64::from(size);
    let mut slots = vec![T::FREE; usize::try_from(size).unwrap_or(0)].into_boxed_slice();
    // Work in identity order so that every node fills the table the same way.
    let mut order: Vec<usize> = (0..backends.len()).filter(|i| backends[*i].1 > 0).collect();
    order.sort_by_key(|i| backends[*i].0);
    let max_weight = order.iter().map(|i| u64::from(backends[*i].1)).max().unwrap_or(0);
    if max_weight == 0 {
        return slots.into();
    }
    struct Walker<T> {
        index: T,
        offset: u64,
        skip: u64,
        next: u64,
        weight: u64,
        credit: u64,
    }
    let mut walkers: Vec<Walker<T>> = order
        .iter()
        .map(|&i| {
            let id = &backends[i].0 .0;
            Walker {
                index: T::of(i),
                offset: hash64(SEED_OFFSET, id) % m,
                skip: hash64(SEED_SKIP, id) % (m - 1) + 1,
                next: 0,
                weight: u64::from(backends[i].1),
                credit: 0,
            }
        })
        .collect();
    let mut filled = 0usize;
    let total = slots.len();
    while filled < total {
        for w in walkers.iter_mut() {
            w.credit += w.weight;
            while w.credit >= max_weight && filled < total {
                w.credit -= max_weight;
                // The permutation visits every slot once (m prime, 0 < skip < m), so a
                // free slot is always found while the table is not full.
                loop {
                    let slot = usize::try_from((w.offset + w.next * w.skip) % m).unwrap_or(0);
                    w.next += 1;
                    if slots[slot] == T::FREE {
                        slots[slot] = w.index;
                        filled += 1;
                        break;
                    }
                }
            }
            if filled == total {
                break;
            }
        }
    }
    slots.into()
}

/// The tables of the last build, by (backends in order, size): a rebuild computes only the
/// tables whose backends changed, and services with the same backends share one table (a
/// thousand Services over the same pods cost one table, not a thousand).
#[derive(Debug, Default)]
pub struct TableCache {
    last: HashMap<(Vec<(BackendId, u32)>, u32), MaglevTable>,
    this: HashMap<(Vec<(BackendId, u32)>, u32), MaglevTable>,
}

impl TableCache {
    /// The table for `backends` at `size` (resolved against the number of backends): from
    /// this build or the last one, else built.
    pub fn get(&mut self, backends: &[(BackendId, u32)], size: TableSize) -> Result<MaglevTable, MaglevError> {
        let size = size.slots_for(backends.len());
        let key = (backends.to_vec(), size);
        if let Some(t) = self.this.get(&key) {
            return Ok(t.clone());
        }
        let t = match self.last.remove(&key) {
            Some(t) => t,
            None => MaglevTable::build(backends, size)?,
        };
        self.this.insert(key, t.clone());
        Ok(t)
    }

    /// Ends a build: tables it did not ask for are dropped.
    pub fn finish(&mut self) {
        self.last = std::mem::take(&mut self.this);
    }

    /// Tables kept.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no table is kept.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test inputs are small by construction
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    /// The size most tests build at: the one every table had before they were sized to their
    /// backends (a rung of the ladder).
    const M: u32 = 65_537;

    fn backends(n: usize, weight: impl Fn(usize) -> u32) -> Vec<(BackendId, u32)> {
        (0..n)
            .map(|i| {
                let ip = IpAddr::V4(Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8 + 1));
                (BackendId::new(ip, 8080), weight(i))
            })
            .collect()
    }

    #[test]
    fn the_cache_shares_equal_tables_and_drops_unused_ones() -> Result<(), MaglevError> {
        let mut c = TableCache::default();
        let (two, three) = (backends(2, |_| 1), backends(3, |_| 1));
        let a = c.get(&two, TableSize::Fixed(251))?;
        let b = c.get(&two, TableSize::Fixed(251))?;
        assert!(same_slots(&a, &b), "the same backends share one table");
        let other = c.get(&two, TableSize::Fixed(257))?;
        assert_eq!(other.len(), 257);
        c.finish();
        assert_eq!(c.len(), 2);
        // The next build reuses what did not change, builds what did, drops the rest.
        let again = c.get(&two, TableSize::Fixed(251))?;
        assert!(same_slots(&a, &again), "unchanged backends are not rebuilt");
        assert_eq!(c.get(&three, TableSize::Fixed(251))?, MaglevTable::build(&three, 251)?);
        c.finish();
        assert_eq!(c.len(), 2, "the 257-slot table was not asked for: dropped");
        Ok(())
    }

    fn same_slots(a: &MaglevTable, b: &MaglevTable) -> bool {
        match (&a.slots, &b.slots) {
            (Slots::U8(x), Slots::U8(y)) => Arc::ptr_eq(x, y),
            (Slots::U16(x), Slots::U16(y)) => Arc::ptr_eq(x, y),
            (Slots::U32(x), Slots::U32(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
    }

    /// `n` backends on distinct addresses (any `n`), all of weight `w`.
    fn many(n: u32, w: u32) -> Vec<(BackendId, u32)> {
        (0..n).map(|i| (BackendId::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 80), w)).collect()
    }

    #[test]
    fn the_ladder_is_prime_doubling_and_ends_at_the_largest_size() {
        assert_eq!(LADDER.last(), Some(&MAX_TABLE_SIZE));
        for m in LADDER {
            assert!(is_prime(m), "{m} is not a prime");
        }
        for pair in LADDER.windows(2) {
            assert!(pair[0] < pair[1] && u64::from(pair[1]) < 21 * u64::from(pair[0]) / 10, "{pair:?}");
        }
        assert_eq!(MAX_BALANCED_BACKENDS, usize::try_from((MAX_TABLE_SIZE - 1) / 100).unwrap_or(0));
    }

    #[test]
    fn auto_size_is_the_first_rung_over_100_slots_a_backend() {
        // Every count the ladder balances: M > 100 N, and the rung below would not be.
        for n in 0..=MAX_BALANCED_BACKENDS {
            let m = TableSize::Auto.slots_for(n);
            let rung = LADDER.iter().position(|r| *r == m).unwrap_or(usize::MAX);
            assert!(rung < LADDER.len(), "n={n}: {m} is not a rung");
            assert!(u64::from(m) > 100 * n as u64, "n={n}: {m} slots");
            assert!(rung == 0 || u64::from(LADDER[rung - 1]) <= 100 * n as u64, "n={n}: {m} is not the first rung");
        }
        // Where it crosses rungs: 10 backends fit 1,021 slots, 11 take 2,039, and so on.
        let crossings = [(0, 1_021), (10, 1_021), (11, 2_039), (20, 2_039), (21, 4_093), (40, 4_093), (41, 8_191)];
        let more = [(81, 8_191), (82, 16_381), (163, 16_381), (164, 32_749), (327, 32_749), (328, 65_537)];
        let most = [(655, 65_537), (656, 131_071), (MAX_BALANCED_BACKENDS, MAX_TABLE_SIZE), (1 << 20, MAX_TABLE_SIZE)];
        for (n, m) in crossings.into_iter().chain(more).chain(most) {
            assert_eq!(TableSize::Auto.slots_for(n), m, "n={n}");
        }
        assert_eq!(TableSize::Fixed(251).slots_for(10_000), 251, "an explicit size is kept whatever the backends");
    }

    #[test]
    fn auto_size_counts_every_backend_weighted_or_not() -> Result<(), MaglevError> {
        let mut c = TableCache::default();
        let ten = backends(10, |_| 1);
        // Drained and unresolved backends (weight 0) count: draining does not resize.
        let drained = backends(10, |i| u32::from(i % 3 != 0));
        let mut reordered = drained.clone();
        reordered.reverse();
        for b in [&ten, &drained, &reordered] {
            let t = c.get(b, TableSize::Auto)?;
            assert_eq!((t.len(), t.slot_bytes()), (1_021, 1), "ten backends: 1,021 one-byte slots");
        }
        let (a, r) = (c.get(&drained, TableSize::Auto)?, c.get(&reordered, TableSize::Auto)?);
        assert!(a.slots().zip(r.slots()).all(|(x, y)| drained[x as usize].0 == reordered[y as usize].0));
        assert_eq!(c.get(&backends(11, |_| 1), TableSize::Auto)?.len(), 2_039);
        Ok(())
    }

    #[test]
    fn narrow_tables_pick_as_the_wide_table_does() -> Result<(), MaglevError> {
        let hashes: Vec<u64> = (0..100_000u64).map(fmix64).collect();
        let same = |narrow: &MaglevTable, wide: &[u32]| {
            let wide = MaglevTable { slots: Slots::U32(wide.into()), size: narrow.size };
            assert!(narrow.slots().eq(wide.slots()), "slot by slot");
            assert!(hashes.iter().all(|h| narrow.lookup(*h) == wide.lookup(*h)), "hash by hash");
        };
        for (n, size) in [(1, 1_021), (2, 1_021), (10, 1_021), (100, 16_381), (255, 32_749)] {
            let b = backends(n, |i| 1 + (i % 4) as u32);
            let t = MaglevTable::build(&b, size)?;
            assert_eq!(t.slot_bytes(), 1, "n={n}");
            assert!(t.slots().any(|s| s as usize == n - 1), "n={n}: the last index is not taken for empty");
            same(&t, &fill::<u32>(&b, size));
        }
        for (n, size) in [(256, 32_749), (700, 131_071)] {
            let b = many(n, 1);
            let t = MaglevTable::build(&b, size)?;
            assert_eq!(t.slot_bytes(), 2, "n={n}");
            same(&t, &fill::<u32>(&b, size));
        }
        Ok(())
    }

    #[test]
    fn the_width_holds_the_last_index_and_all_weights_zero_is_empty() -> Result<(), MaglevError> {
        for (n, bytes) in [(4u32, 1), (255, 1), (256, 2), (65_535, 2), (65_536, 4)] {
            // Only the last backend weighted: its index, the largest of the width, fills
            // every slot and is told apart from a free slot.
            let mut b = many(n, 0);
            b[n as usize - 1].1 = 1;
            let t = MaglevTable::build(&b, 251)?;
            assert_eq!(t.slot_bytes(), bytes, "n={n}");
            assert!(t.slots().all(|s| s == n - 1) && t.lookup(fmix64(7)) == n - 1, "n={n}");
            // No backend weighted: every slot empty, whatever the width, and none stored.
            let t = MaglevTable::build(&many(n, 0), 251)?;
            assert_eq!((t.len(), t.slot_bytes()), (251, 0), "n={n}");
            assert!(t.slots().all(|s| s == EMPTY), "n={n}");
            assert!((0..1_000u64).all(|h| t.lookup(fmix64(h)) == EMPTY), "n={n}");
            assert!((0..t.len()).all(|k| t.slot(k).is_none()) && t.slots_of(0) == 0, "n={n}");
        }
        let t = TableCache::default().get(&many(4, 0), TableSize::Auto)?;
        assert_eq!((t.len(), t.lookup(1 << 40)), (1_021, EMPTY), "automatic size, no weight");
        Ok(())
    }

    fn shares(t: &MaglevTable, n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for s in t.slots() {
            c[s as usize] += 1;
        }
        c
    }

    #[test]
    fn sizes_must_be_prime() {
        assert_eq!(MaglevTable::build(&backends(3, |_| 1), 65_536), Err(MaglevError::BadSize(65_536)));
        assert!(MaglevTable::build(&backends(3, |_| 1), 65_537).is_ok());
        assert!(is_prime(65_537) && is_prime(251) && !is_prime(1) && !is_prime(65_535));
    }

    #[test]
    fn every_slot_is_filled() -> Result<(), MaglevError> {
        for n in [1, 2, 3, 10, 100, 1000] {
            let t = MaglevTable::build(&backends(n, |i| 1 + (i % 5) as u32), M)?;
            assert!(t.slots().all(|s| (s as usize) < n), "n={n}");
        }
        Ok(())
    }

    #[test]
    fn equal_weights_share_evenly() -> Result<(), MaglevError> {
        let t = MaglevTable::build(&backends(7, |_| 1), M)?;
        let s = shares(&t, 7);
        let (lo, hi) = (s.iter().min().copied().unwrap_or(0), s.iter().max().copied().unwrap_or(0));
        assert!(hi - lo <= 1, "{s:?}");
        Ok(())
    }

    #[test]
    fn weighted_shares_within_one_percent() -> Result<(), MaglevError> {
        // M > 100 N: 65537 slots, 10 to 600 backends with weights 1 to 10. A table holds
        // whole slots, so a backend's count can be off its exact share by up to a slot or
        // two (the last, partial round of turns): that is within 1% for every backend owed
        // at least 200 slots, which M > 100 N gives the average backend.
        for n in [10usize, 60, 300, 600] {
            let b = backends(n, |i| 1 + (i as u32 * 7) % 10);
            let t = MaglevTable::build(&b, M)?;
            let total: u32 = b.iter().map(|x| x.1).sum();
            let (mut worst_rel, mut worst_abs) = (0.0f64, 0.0f64);
            for (got, (_, w)) in shares(&t, n).iter().zip(&b) {
                let want = f64::from(*w) / f64::from(total) * t.len() as f64;
                let err = (*got as f64 - want).abs();
                worst_abs = worst_abs.max(err);
                if want >= 200.0 {
                    worst_rel = worst_rel.max(err / want);
                }
            }
            eprintln!(
                "maglev: n={n}: worst share error {worst_abs:.2} slots, {:.3}% where owed >= 200",
                worst_rel * 100.0
            );
            assert!(worst_abs <= 2.0, "n={n}: a backend is {worst_abs} slots off its share");
            assert!(worst_rel <= 0.01, "n={n}: worst relative share error {worst_rel:.4}");
        }
        Ok(())
    }

    #[test]
    fn zero_weight_gets_nothing_and_all_zero_is_empty() -> Result<(), MaglevError> {
        let t = MaglevTable::build(&backends(4, |i| u32::from(i != 2)), 251)?;
        assert_eq!(shares(&t, 4)[2], 0);
        let t = MaglevTable::build(&backends(4, |_| 0), 251)?;
        assert!(t.slots().all(|s| s == EMPTY));
        assert_eq!(t.lookup(12345), EMPTY);
        Ok(())
    }

    #[test]
    fn same_table_in_any_order_and_every_run() -> Result<(), MaglevError> {
        let b = backends(50, |i| 1 + (i % 3) as u32);
        let t1 = MaglevTable::build(&b, M)?;
        let t2 = MaglevTable::build(&b, M)?;
        assert_eq!(t1, t2);
        let mut rev = b.clone();
        rev.reverse();
        let t3 = MaglevTable::build(&rev, M)?;
        // Same backend in every slot, whatever index it had in the list.
        assert!(t1.slots().zip(t3.slots()).all(|(a, c)| b[a as usize].0 == rev[c as usize].0));
        // Pinned: a fixed input gives a fixed table across builds, machines and releases.
        let fp = t1.slots().fold(0u64, |h, s| fmix64(h ^ u64::from(s)));
        assert_eq!(fp, PINNED_FINGERPRINT, "the table changed: every node of a cluster must agree on it");
        Ok(())
    }

    /// Recorded from the first build of this implementation; a change here is a change of
    /// the hash, the seeds or the fill order, and breaks agreement with older nodes.
    const PINNED_FINGERPRINT: u64 = 16_962_470_053_948_526_450;

    #[test]
    fn removing_one_backend_moves_few_other_slots() -> Result<(), MaglevError> {
        for n in [10usize, 100, 500] {
            let b = backends(n, |_| 1);
            let before = MaglevTable::build(&b, M)?;
            let removed = n / 2;
            let after_list: Vec<(BackendId, u32)> =
                b.iter().enumerate().filter(|(i, _)| *i != removed).map(|(_, x)| *x).collect();
            let after = MaglevTable::build(&after_list, M)?;
            let mut kept = 0usize;
            let mut moved = 0usize;
            for (x, y) in before.slots().zip(after.slots()) {
                if x as usize == removed {
                    continue;
                }
                kept += 1;
                if b[x as usize].0 != after_list[y as usize].0 {
                    moved += 1;
                }
            }
            let frac = moved as f64 / kept as f64;
            eprintln!("maglev: removing 1 of {n} backends moved {:.3}% of the other backends' slots", frac * 100.0);
            assert!(frac < 0.02, "n={n}: {frac}");
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test inputs are small by construction
mod properties {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn backend_set() -> impl Strategy<Value = Vec<(BackendId, u32)>> {
        prop::collection::btree_map((any::<bool>(), any::<u32>(), any::<u16>()), 0u32..20, 1..120).prop_map(|m| {
            m.into_iter()
                .map(|((v6, a, port), w)| {
                    let ip = if v6 {
                        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (a >> 16) as u16, a as u16))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(a))
                    };
                    (BackendId::new(ip, port), w)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn filled_fair_and_order_free(b in backend_set(), size in prop::sample::select(vec![20_011u32, 65_537, 131_071])) {
            let t = MaglevTable::build(&b, size).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let weighted: u32 = b.iter().map(|x| x.1).sum();
            let mut count = vec![0usize; b.len()];
            for s in t.slots() {
                if weighted == 0 {
                    prop_assert_eq!(s, EMPTY);
                } else {
                    prop_assert!((s as usize) < b.len());
                    count[s as usize] += 1;
                }
            }
            if weighted > 0 {
                // Turns are whole slots and the last round is cut short when the table
                // fills: a backend can be off by a slot, plus its weight's part of the at
                // most N turns of the last round. Relative to its share that is under
                // W / (M w) + N / M: below 1% once M > 100 N and the share is 200+ slots.
                let n = b.len() as f64;
                for (got, (_, w)) in count.iter().zip(&b) {
                    let want = f64::from(*w) / f64::from(weighted) * f64::from(size);
                    let bound = 2.0 + n * f64::from(*w) / f64::from(weighted);
                    prop_assert!((*got as f64 - want).abs() <= bound, "got {} slots, owed {:.1}, bound {:.2}", got, want, bound);
                }
            }
            let mut rev = b.clone();
            rev.reverse();
            let t2 = MaglevTable::build(&rev, size).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (x, y) in t.slots().zip(t2.slots()) {
                if x != EMPTY {
                    prop_assert_eq!(b[x as usize].0, rev[y as usize].0);
                }
            }
        }
    }
}

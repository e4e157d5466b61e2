//! Address management for VIPs: pools of addresses, and which service holds which address.
//! Pure (no I/O, no clock), shared by the standalone config and the Kubernetes source.
//!
//! Rules:
//! - A requested address is honoured if it lies in a usable pool and nobody else holds it;
//!   otherwise it is refused with the reason. Two services asking for one address: the second
//!   gets a conflict, never a double assignment.
//! - An automatic allocation takes the lowest free address of the named pool (or of the first
//!   pool of the right family with room), so the same config gives the same addresses.
//! - Pools that overlap are reported as conflicting; the later one (in the order given)
//!   allocates nothing new, so no address can come from two pools. So does a pool two of
//!   whose own blocks overlap.
//! - A disabled or conflicting pool allocates nothing new and keeps what it gave: a holder
//!   that asks to keep an address (`Request::Keep`, from what it holds already, e.g. after a
//!   restart) keeps it as long as some pool's blocks cover it.
//! - A holder keeps its address across edits as long as it asks for it again and the address
//!   is still in a pool.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

/// A contiguous range of addresses, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// First address.
    pub start: IpAddr,
    /// Last address.
    pub stop: IpAddr,
    /// Whether it came from a CIDR (its first and last addresses are network and broadcast
    /// addresses, skipped unless the pool allows them).
    pub cidr: bool,
}

impl Block {
    /// The block of a CIDR.
    pub fn cidr(net: ipnet::IpNet) -> Self {
        Block { start: net.network(), stop: net.broadcast(), cidr: true }
    }

    fn range(&self) -> (u128, u128) {
        (num(self.start), num(self.stop))
    }
}

/// A pool of addresses VIPs are taken from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// Name (unique).
    pub name: String,
    /// Its blocks.
    pub blocks: Vec<Block>,
    /// Whether the first and last address of CIDR blocks may be handed out.
    pub allow_first_last: bool,
    /// No new allocations (existing ones are kept).
    pub disabled: bool,
    /// Skip IPv4 addresses ending in .0 or .255, wherever they lie (MetalLB's
    /// `avoidBuggyIPs`: some old firmware drops them).
    pub avoid_buggy: bool,
}

/// An IPv4 address ending in .0 or .255 (as a number).
fn buggy(n: u128) -> bool {
    matches!(n % 256, 0 | 255)
}

/// How many numbers in `lo..=hi` are `buggy`.
fn buggy_in(lo: u128, hi: u128) -> u128 {
    // Numbers <= x that are 0 or 255 mod 256.
    let upto = |x: u128| x / 256 + 1 + u128::from(x % 256 == 255) + (x / 256);
    if lo > hi {
        return 0;
    }
    upto(hi) - if lo == 0 { 0 } else { upto(lo - 1) }
}

fn num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn addr(n: u128, v6: bool) -> Option<IpAddr> {
    if v6 {
        Some(IpAddr::V6(n.into()))
    } else {
        u32::try_from(n).ok().map(|v| IpAddr::V4(v.into()))
    }
}

impl Pool {
    /// Whether `a` is an address this pool may hand out.
    pub fn contains(&self, a: IpAddr) -> bool {
        let n = num(a);
        self.blocks.iter().any(|b| {
            let (lo, hi) = b.range();
            b.start.is_ipv6() == a.is_ipv6()
                && lo <= n
                && n <= hi
                && (self.allow_first_last || !b.cidr || hi - lo < 2 || (n != lo && n != hi))
                && !(self.avoid_buggy && !a.is_ipv6() && buggy(n))
        })
    }

    /// Whether `a` lies in one of the blocks at all (usable or not).
    pub fn covers(&self, a: IpAddr) -> bool {
        let n = num(a);
        self.blocks.iter().any(|b| b.start.is_ipv6() == a.is_ipv6() && b.range().0 <= n && n <= b.range().1)
    }

    /// How many addresses it may hand out.
    pub fn size(&self) -> u128 {
        self.blocks
            .iter()
            .map(|b| {
                let (mut lo, mut hi) = b.range();
                // Saturating: `::/0` holds 2^128 addresses, one more than a u128 counts.
                let mut n = (hi - lo).saturating_add(1);
                if b.cidr && !self.allow_first_last && n > 2 {
                    n -= 2;
                    (lo, hi) = (lo + 1, hi - 1);
                }
                if self.avoid_buggy && !b.start.is_ipv6() {
                    n -= buggy_in(lo, hi);
                }
                n
            })
            .fold(0u128, u128::saturating_add)
    }

    fn overlaps_itself(&self) -> bool {
        self.blocks.iter().enumerate().any(|(i, a)| {
            self.blocks[..i].iter().any(|b| {
                a.start.is_ipv6() == b.start.is_ipv6() && a.range().0 <= b.range().1 && b.range().0 <= a.range().1
            })
        })
    }

    fn overlaps(&self, other: &Pool) -> bool {
        self.blocks.iter().any(|a| {
            other.blocks.iter().any(|b| {
                a.start.is_ipv6() == b.start.is_ipv6() && a.range().0 <= b.range().1 && b.range().0 <= a.range().1
            })
        })
    }
}

/// What a service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// This address.
    Address(IpAddr),
    /// Any free address of this family (`v6`) from this pool.
    Pool {
        /// The pool.
        name: String,
        /// IPv6 rather than IPv4.
        v6: bool,
    },
    /// This address, which the holder already has (e.g. in a Service's status): kept while
    /// some pool's blocks cover it, even a disabled or conflicting pool, or one that reserves
    /// that address now.
    Keep(IpAddr),
    /// Any free address of the given family (`true`: IPv6) from any pool.
    Any {
        /// IPv6 rather than IPv4.
        v6: bool,
    },
    /// Any free address of the given family from these pools, tried in this order (those
    /// whose selectors select the holder).
    AnyOf {
        /// The pools' names.
        pools: Vec<String>,
        /// IPv6 rather than IPv4.
        v6: bool,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Another holder has the address.
    #[error("{addr} is already assigned to {holder}")]
    InUse {
        /// The address.
        addr: IpAddr,
        /// Who holds it.
        holder: String,
    },
    /// The address is in no pool.
    #[error("{0} is in no pool; add a pool that contains it, or pick an address from one")]
    NotInPool(IpAddr),
    /// The address ends in .0 or .255 and the pool avoids those.
    #[error("{0} ends in .0 or .255, which its pool avoids (avoidBuggyIPs); pick another")]
    Avoided(IpAddr),
    /// The address is the first or last of a CIDR block and the pool does not allow those.
    #[error("{0} is the first or last address of its pool's CIDR; set allowFirstLastIPs: true or pick another")]
    FirstLast(IpAddr),
    /// The pool allocates nothing new.
    #[error("pool {0} is disabled: it keeps what it gave and gives nothing new")]
    Disabled(String),
    /// The pool overlaps an earlier one (`1`: "pool NAME"), or itself.
    #[error("pool {0} overlaps {1}; it allocates nothing new until the overlap is removed")]
    Conflicting(String, String),
    /// No such pool.
    #[error("no pool named {0}")]
    NoPool(String),
    /// The pool has no free address.
    #[error("pool {0} has no free address left")]
    Exhausted(String),
    /// No pool of the family has room.
    #[error("no pool has a free {0} address")]
    NoneFree(&'static str),
}

/// Usage of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    /// Name.
    pub name: String,
    /// Addresses it may hand out.
    pub size: u128,
    /// Assigned now.
    pub used: u128,
    /// Disabled.
    pub disabled: bool,
    /// What it overlaps, if anything: "pool NAME" (an earlier one) or "itself".
    pub conflict: Option<String>,
}

/// The pools and the assignments.
#[derive(Debug, Clone, Default)]
pub struct Ipam {
    pools: Vec<Pool>,
    /// Pool index -> what it overlaps ("pool NAME", or "itself").
    conflicts: HashMap<usize, String>,
    assigned: BTreeMap<IpAddr, String>,
    by_holder: HashMap<String, Vec<IpAddr>>,
}

impl Ipam {
    /// Replaces the pools. Assignments stay until their holders ask again or are released;
    /// returns the overlaps found: (later pool, earlier pool).
    pub fn set_pools(&mut self, pools: Vec<Pool>) -> Vec<(String, String)> {
        self.conflicts.clear();
        let mut out = Vec::new();
        for i in 0..pools.len() {
            let with = if pools[i].overlaps_itself() {
                Some("itself (two of its blocks overlap)".to_string())
            } else {
                (0..i)
                    .find(|&j| !self.conflicts.contains_key(&j) && pools[i].overlaps(&pools[j]))
                    .map(|j| format!("pool {}", pools[j].name))
            };
            if let Some(with) = with {
                out.push((pools[i].name.clone(), with.clone()));
                self.conflicts.insert(i, with);
            }
        }
        self.pools = pools;
        out
    }

    /// Refuses `a` if a holder other than `holder` has it.
    fn not_anothers(&self, holder: &str, a: IpAddr) -> Result<(), IpamError> {
        match self.assigned.get(&a) {
            Some(h) if h != holder => Err(IpamError::InUse { addr: a, holder: h.clone() }),
            _ => Ok(()),
        }
    }

    /// The name of the usable pool an address request for `a` is served from, or why there
    /// is none.
    pub fn usable_pool(&self, a: IpAddr) -> Result<&str, IpamError> {
        self.pool_of(a).map(|i| self.pools[i].name.as_str())
    }

    /// The usable pool containing `a`, or why there is none.
    fn pool_of(&self, a: IpAddr) -> Result<usize, IpamError> {
        let mut reason = IpamError::NotInPool(a);
        for (i, p) in self.pools.iter().enumerate() {
            if !p.covers(a) {
                continue;
            }
            if let Some(with) = self.conflicts.get(&i) {
                reason = IpamError::Conflicting(p.name.clone(), with.clone());
                continue;
            }
            if !p.contains(a) {
                return Err(if p.avoid_buggy && !a.is_ipv6() && buggy(num(a)) {
                    IpamError::Avoided(a)
                } else {
                    IpamError::FirstLast(a)
                });
            }
            return Ok(i);
        }
        Err(reason)
    }

    fn give(&mut self, holder: &str, a: IpAddr) -> IpAddr {
        self.assigned.insert(a, holder.to_string());
        let mine = self.by_holder.entry(holder.to_string()).or_default();
        if !mine.contains(&a) {
            mine.push(a);
        }
        a
    }

    /// Who holds `a`.
    pub fn holder(&self, a: IpAddr) -> Option<&str> {
        self.assigned.get(&a).map(String::as_str)
    }

    /// What `holder` holds.
    pub fn held_by(&self, holder: &str) -> &[IpAddr] {
        self.by_holder.get(holder).map_or(&[], Vec::as_slice)
    }

    /// Gives `holder` an address as it asks, or says why not.
    pub fn request(&mut self, holder: &str, req: &Request) -> Result<IpAddr, IpamError> {
        match req {
            Request::Address(a) => {
                self.not_anothers(holder, *a)?;
                let i = self.pool_of(*a)?;
                if self.pools[i].disabled && self.holder(*a) != Some(holder) {
                    return Err(IpamError::Disabled(self.pools[i].name.clone()));
                }
                Ok(self.give(holder, *a))
            }
            Request::Keep(a) => {
                self.not_anothers(holder, *a)?;
                if !self.pools.iter().any(|p| p.covers(*a)) {
                    return Err(IpamError::NotInPool(*a));
                }
                Ok(self.give(holder, *a))
            }
            Request::Pool { name, v6 } => {
                let i = self.index_of(name).ok_or_else(|| IpamError::NoPool(name.clone()))?;
                if let Some(with) = self.conflicts.get(&i) {
                    return Err(IpamError::Conflicting(name.clone(), with.clone()));
                }
                // Already holds one from it: keep it.
                if let Some(a) = self.held_by(holder).iter().find(|a| a.is_ipv6() == *v6 && self.pools[i].contains(**a))
                {
                    return Ok(*a);
                }
                if self.pools[i].disabled {
                    return Err(IpamError::Disabled(name.clone()));
                }
                let a = self.lowest_free(i, *v6).ok_or_else(|| IpamError::Exhausted(name.clone()))?;
                Ok(self.give(holder, a))
            }
            Request::Any { v6 } => self.any_free(holder, *v6, &(0..self.pools.len()).collect::<Vec<_>>()),
            Request::AnyOf { pools, v6 } => {
                let order: Vec<usize> = pools.iter().filter_map(|n| self.index_of(n)).collect();
                self.any_free(holder, *v6, &order)
            }
        }
    }

    /// The index of the pool named `name`.
    fn index_of(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    /// An address of family `v6` from the first of pools `order` (indexes) that has one: the
    /// one `holder` already holds there, else the lowest free.
    fn any_free(&mut self, holder: &str, v6: bool, order: &[usize]) -> Result<IpAddr, IpamError> {
        let usable = |ipam: &Ipam, i: usize| {
            let p = &ipam.pools[i];
            !p.disabled && !ipam.conflicts.contains_key(&i) && p.blocks.iter().any(|b| b.start.is_ipv6() == v6)
        };
        for &i in order {
            if usable(self, i) {
                if let Some(a) = self.held_by(holder).iter().find(|a| a.is_ipv6() == v6 && self.pools[i].contains(**a))
                {
                    return Ok(*a);
                }
            }
        }
        for &i in order {
            if usable(self, i) {
                if let Some(a) = self.lowest_free(i, v6) {
                    return Ok(self.give(holder, a));
                }
            }
        }
        Err(IpamError::NoneFree(if v6 { "IPv6" } else { "IPv4" }))
    }

    fn lowest_free(&self, i: usize, v6: bool) -> Option<IpAddr> {
        let p = &self.pools[i];
        for b in p.blocks.iter().filter(|b| b.start.is_ipv6() == v6) {
            let (lo, hi) = b.range();
            let mut n = lo;
            // Assigned addresses in the block, in order: step over runs of them.
            let mut taken = self.assigned.range(b.start..=b.stop).map(|(a, _)| num(*a)).peekable();
            while n <= hi {
                if let Some(a) = addr(n, v6) {
                    while taken.peek().is_some_and(|t| *t < n) {
                        taken.next();
                    }
                    if taken.peek() != Some(&n) && p.contains(a) {
                        return Some(a);
                    }
                }
                n = n.checked_add(1)?;
            }
        }
        None
    }

    /// Releases everything `holder` holds.
    pub fn release(&mut self, holder: &str) {
        for a in self.by_holder.remove(holder).unwrap_or_default() {
            self.assigned.remove(&a);
        }
    }

    /// Releases `a` if `holder` holds it.
    pub fn free(&mut self, holder: &str, a: IpAddr) {
        if self.assigned.get(&a).is_some_and(|h| h == holder) {
            self.assigned.remove(&a);
            if let Some(mine) = self.by_holder.get_mut(holder) {
                mine.retain(|x| *x != a);
            }
        }
    }

    /// Releases what `holder` holds except `keep`.
    pub fn retain(&mut self, holder: &str, keep: &[IpAddr]) {
        if let Some(mine) = self.by_holder.get_mut(holder) {
            let (kept, gone): (Vec<IpAddr>, Vec<IpAddr>) = mine.iter().partition(|a| keep.contains(a));
            *mine = kept;
            for a in gone {
                self.assigned.remove(&a);
            }
        }
    }

    /// Every holder.
    pub fn holders(&self) -> impl Iterator<Item = &str> {
        self.by_holder.keys().map(String::as_str)
    }

    /// Size and use of every pool.
    pub fn usage(&self) -> Vec<PoolUsage> {
        self.pools
            .iter()
            .enumerate()
            .map(|(i, p)| PoolUsage {
                name: p.name.clone(),
                size: p.size(),
                used: self.assigned.keys().filter(|a| p.contains(**a)).count() as u128,
                disabled: p.disabled,
                conflict: self.conflicts.get(&i).cloned(),
            })
            .collect()
    }

    /// Every assignment.
    pub fn assignments(&self) -> impl Iterator<Item = (IpAddr, &str)> {
        self.assigned.iter().map(|(a, h)| (*a, h.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pool(name: &str, cidr: &str) -> Pool {
        Pool { name: name.into(), blocks: vec![Block::cidr(cidr.parse().unwrap())], ..Pool::default() }
    }

    #[test]
    fn requests_are_honoured_or_refused_with_a_reason() {
        let mut m = Ipam::default();
        assert!(m.set_pools(vec![pool("a", "192.0.2.0/29"), pool("b", "2001:db8::/126")]).is_empty());
        assert_eq!(m.request("web", &Request::Address(ip("192.0.2.3"))), Ok(ip("192.0.2.3")));
        // Asking again is fine; another holder is refused.
        assert_eq!(m.request("web", &Request::Address(ip("192.0.2.3"))), Ok(ip("192.0.2.3")));
        assert_eq!(
            m.request("dns", &Request::Address(ip("192.0.2.3"))),
            Err(IpamError::InUse { addr: ip("192.0.2.3"), holder: "web".into() })
        );
        assert_eq!(m.request("x", &Request::Address(ip("192.0.2.0"))), Err(IpamError::FirstLast(ip("192.0.2.0"))));
        assert_eq!(
            m.request("x", &Request::Address(ip("198.51.100.1"))),
            Err(IpamError::NotInPool(ip("198.51.100.1")))
        );
        // Automatic: lowest free, skipping the network address and the taken one.
        assert_eq!(m.request("dns", &Request::Pool { name: "a".into(), v6: false }), Ok(ip("192.0.2.1")));
        assert_eq!(m.request("mail", &Request::Pool { name: "a".into(), v6: false }), Ok(ip("192.0.2.2")));
        assert_eq!(m.request("ftp", &Request::Pool { name: "a".into(), v6: false }), Ok(ip("192.0.2.4")));
        assert_eq!(m.request("v6", &Request::Any { v6: true }), Ok(ip("2001:db8::1")));
        assert_eq!(
            m.request("nope", &Request::Pool { name: "zz".into(), v6: false }),
            Err(IpamError::NoPool("zz".into()))
        );
        // .5, .6 left (.7 is broadcast), then exhausted.
        assert!(m.request("f1", &Request::Pool { name: "a".into(), v6: false }).is_ok());
        assert!(m.request("f2", &Request::Pool { name: "a".into(), v6: false }).is_ok());
        assert_eq!(
            m.request("f3", &Request::Pool { name: "a".into(), v6: false }),
            Err(IpamError::Exhausted("a".into()))
        );
        let u = &m.usage()[0];
        assert_eq!((u.size, u.used), (6, 6));
        m.release("mail");
        assert_eq!(m.request("f3", &Request::Pool { name: "a".into(), v6: false }), Ok(ip("192.0.2.2")));
    }

    #[test]
    fn a_pool_of_both_families_gives_each_service_its_own() {
        let mut m = Ipam::default();
        let mut p = pool("dual", "192.0.2.0/30");
        p.blocks.push(Block::cidr("2001:db8::/126".parse().unwrap()));
        m.set_pools(vec![p]);
        assert_eq!(m.request("a", &Request::Pool { name: "dual".into(), v6: true }), Ok(ip("2001:db8::1")));
        assert_eq!(m.request("b", &Request::Pool { name: "dual".into(), v6: false }), Ok(ip("192.0.2.1")));
        // Asking again for the other family gives a second address, not the first one back.
        assert_eq!(m.request("a", &Request::Pool { name: "dual".into(), v6: false }), Ok(ip("192.0.2.2")));
    }

    #[test]
    fn overlapping_pools_conflict_and_disabled_pools_keep_what_they_gave() {
        let mut m = Ipam::default();
        let overlaps = m.set_pools(vec![pool("a", "192.0.2.0/28"), pool("b", "192.0.2.8/29")]);
        assert_eq!(overlaps, vec![("b".to_string(), "pool a".to_string())]);
        assert_eq!(
            m.request("x", &Request::Pool { name: "b".into(), v6: false }),
            Err(IpamError::Conflicting("b".into(), "pool a".into()))
        );
        assert_eq!(m.usage()[1].conflict.as_deref(), Some("pool a"));
        assert_eq!(m.request("web", &Request::Pool { name: "a".into(), v6: false }), Ok(ip("192.0.2.1")));
        let mut a = pool("a", "192.0.2.0/28");
        a.disabled = true;
        m.set_pools(vec![a]);
        assert_eq!(m.request("web", &Request::Pool { name: "a".into(), v6: false }), Ok(ip("192.0.2.1")));
        assert_eq!(m.request("web", &Request::Address(ip("192.0.2.1"))), Ok(ip("192.0.2.1")));
        assert_eq!(
            m.request("new", &Request::Pool { name: "a".into(), v6: false }),
            Err(IpamError::Disabled("a".into()))
        );
        assert_eq!(m.request("new", &Request::Address(ip("192.0.2.5"))), Err(IpamError::Disabled("a".into())));
    }

    #[test]
    fn a_pool_whose_blocks_overlap_conflicts_and_kept_addresses_outlive_pool_changes() {
        let mut m = Ipam::default();
        let mut twice = pool("twice", "192.0.2.0/28");
        twice.blocks.push(Block { start: ip("192.0.2.4"), stop: ip("192.0.2.20"), cidr: false });
        let found = m.set_pools(vec![twice, pool("other", "198.51.100.0/29")]);
        assert_eq!(found, vec![("twice".to_string(), "itself (two of its blocks overlap)".to_string())]);
        assert!(matches!(
            m.request("x", &Request::Pool { name: "twice".into(), v6: false }),
            Err(IpamError::Conflicting(..))
        ));
        // Keep: an address a holder already has stays while a pool covers it, usable or not.
        assert_eq!(m.request("held", &Request::Keep(ip("192.0.2.5"))), Ok(ip("192.0.2.5")));
        assert_eq!(m.request("edge", &Request::Keep(ip("198.51.100.0"))), Ok(ip("198.51.100.0")));
        assert!(matches!(m.request("other", &Request::Keep(ip("192.0.2.5"))), Err(IpamError::InUse { .. })));
        assert_eq!(m.request("gone", &Request::Keep(ip("203.0.113.1"))), Err(IpamError::NotInPool(ip("203.0.113.1"))));
        m.free("held", ip("192.0.2.5"));
        assert_eq!(m.holder(ip("192.0.2.5")), None);
        assert!(m.held_by("held").is_empty());
    }

    /// MetalLB `ipConfusesBuggyFirmwares`: every IPv4 address ending in .0 or .255 goes,
    /// wherever it lies (probe of metallb/metallb 7938d3f: 10.0.0.254-10.0.1.1 keeps two).
    #[test]
    fn avoiding_buggy_addresses_skips_every_dot_0_and_dot_255() {
        let range = Block { start: ip("10.0.0.254"), stop: ip("10.0.1.1"), cidr: false };
        let mut p = Pool {
            name: "m".into(),
            blocks: vec![range],
            allow_first_last: true,
            avoid_buggy: true,
            ..Pool::default()
        };
        assert_eq!(p.size(), 2);
        assert!(p.contains(ip("10.0.0.254")) && !p.contains(ip("10.0.0.255")) && !p.contains(ip("10.0.1.0")));
        p.blocks = vec![Block::cidr("10.0.0.4/30".parse().unwrap()), Block::cidr("10.1.0.0/23".parse().unwrap())];
        assert_eq!(p.size(), 4 + 512 - 4);
        p.blocks.push(Block::cidr("2001:db8::/120".parse().unwrap()));
        assert_eq!(p.size(), 4 + 508 + 256, "IPv6 is never avoided");
        let everything =
            Pool { blocks: vec![Block::cidr("::/0".parse().unwrap())], allow_first_last: true, ..Pool::default() };
        assert_eq!(everything.size(), u128::MAX, "counted without overflow");
        let mut m = Ipam::default();
        m.set_pools(vec![Pool { blocks: vec![Block::cidr("10.0.1.0/24".parse().unwrap())], ..p }]);
        assert_eq!(m.request("a", &Request::Pool { name: "m".into(), v6: false }), Ok(ip("10.0.1.1")));
        assert_eq!(m.request("b", &Request::Address(ip("10.0.1.255"))), Err(IpamError::Avoided(ip("10.0.1.255"))));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Ask(u8, u8),
        AskPool(u8, bool),
        Release(u8),
        Pools(bool, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..8, 0u8..20).prop_map(|(h, a)| Op::Ask(h, a)),
            (0u8..8, any::<bool>()).prop_map(|(h, p)| Op::AskPool(h, p)),
            (0u8..8).prop_map(Op::Release),
            (any::<bool>(), any::<bool>()).prop_map(|(d, o)| Op::Pools(d, o)),
        ]
    }

    proptest! {
        /// Over random requests, releases and pool edits, no address is ever held by two
        /// holders, and every address given out was in an enabled, non-conflicting pool.
        #[test]
        fn no_address_is_ever_assigned_twice(ops in proptest::collection::vec(op(), 1..200)) {
            let mut m = Ipam::default();
            m.set_pools(vec![pool("a", "10.0.0.0/29"), pool("b", "10.0.0.8/29")]);
            for o in ops {
                match o {
                    Op::Ask(h, a) => {
                        let me = format!("h{h}");
                        let before = m.holder(ip(&format!("10.0.0.{a}"))).map(str::to_string);
                        if let Ok(got) = m.request(&me, &Request::Address(ip(&format!("10.0.0.{a}")))) {
                            prop_assert!(before.is_none() || before.as_deref() == Some(me.as_str()));
                            prop_assert_eq!(got, ip(&format!("10.0.0.{a}")));
                        }
                    }
                    Op::AskPool(h, p) => {
                        let name = if p { "a" } else { "b" };
                        let me = format!("h{h}");
                        let before: Vec<(IpAddr, String)> = m.assignments().map(|(a, h)| (a, h.to_string())).collect();
                        if let Ok(got) = m.request(&me, &Request::Pool { name: name.into(), v6: false }) {
                            prop_assert!(m.held_by(&me).contains(&got));
                            // Either new, or already this holder's.
                            prop_assert!(before.iter().all(|(a, h)| *a != got || *h == me));
                        }
                    }
                    Op::Release(h) => m.release(&format!("h{h}")),
                    Op::Pools(disabled, overlap) => {
                        let mut b = pool("b", if overlap { "10.0.0.4/30" } else { "10.0.0.8/29" });
                        b.disabled = disabled;
                        m.set_pools(vec![pool("a", "10.0.0.0/29"), b]);
                    }
                }
                // The two views agree and no address has two holders.
                let mut seen = std::collections::HashSet::new();
                for h in m.holders().map(str::to_string).collect::<Vec<_>>() {
                    for a in m.held_by(&h) {
                        prop_assert!(seen.insert(*a), "{} held twice", a);
                        prop_assert_eq!(m.holder(*a), Some(h.as_str()));
                    }
                }
                prop_assert_eq!(seen.len(), m.assignments().count());
            }
        }
    }
}

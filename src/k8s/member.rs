//! Who is alive, judged by each node on its own monotonic clock: a member's Lease is valid
//! while this node has seen it change (a new resourceVersion) within the validity time. The
//! writer's `renewTime` is never read, so clock skew between nodes cannot keep a dead node
//! alive or kill a live one.
//!
//! While the API server cannot be reached, nobody's Lease can change, so time stops for
//! everyone (fail static): the view is frozen as it was, and when the API comes back the
//! time it was away is not counted against anyone.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::plan::Member;

#[derive(Debug, Clone)]
struct Seen {
    version: String,
    changed: Instant,
    interface: String,
}

/// The members as this node sees them.
#[derive(Debug)]
pub struct Membership {
    valid: Duration,
    seen: BTreeMap<String, Seen>,
    api_down_since: Option<Instant>,
}

impl Membership {
    /// An empty view; a Lease is valid for `valid` after each change.
    pub fn new(valid: Duration) -> Self {
        Membership { valid, seen: BTreeMap::new(), api_down_since: None }
    }

    /// `node`'s Lease was seen at `version` at `now`; a new version counts as a renewal.
    /// The first sight counts as one too: a starting node gives everyone one validity period.
    pub fn observe(&mut self, node: &str, version: &str, interface: &str, now: Instant) {
        match self.seen.get_mut(node) {
            Some(s) if s.version == version => {
                s.interface = interface.to_string();
            }
            Some(s) => {
                s.version = version.to_string();
                s.changed = now;
                s.interface = interface.to_string();
            }
            None => {
                self.seen.insert(
                    node.to_string(),
                    Seen { version: version.to_string(), changed: now, interface: interface.to_string() },
                );
            }
        }
    }

    /// `node`'s Lease was deleted: it left.
    pub fn remove(&mut self, node: &str) {
        self.seen.remove(node);
    }

    /// Keeps only these nodes (after a full relist of the Leases).
    pub fn retain(&mut self, nodes: &[String]) {
        self.seen.retain(|n, _| nodes.contains(n));
    }

    /// The API server cannot be reached since `now` (idempotent).
    pub fn api_down(&mut self, now: Instant) {
        self.api_down_since.get_or_insert(now);
    }

    /// Whether the view is frozen for an API outage.
    pub fn frozen(&self) -> bool {
        self.api_down_since.is_some()
    }

    /// The API server answers again at `now`: the time it was away is not counted.
    pub fn api_up(&mut self, now: Instant) {
        if let Some(since) = self.api_down_since.take() {
            // Only what was last seen before the outage is credited with its length (and
            // never past now); renewals seen during it keep their own time.
            let away = now.saturating_duration_since(since);
            for s in self.seen.values_mut() {
                if s.changed < since {
                    s.changed = (s.changed + away).min(now);
                }
            }
        }
    }

    /// The live members at `now` (as at the start of an API outage, during one).
    pub fn live(&self, now: Instant) -> BTreeMap<String, Member> {
        let at = self.api_down_since.unwrap_or(now);
        self.seen
            .iter()
            .filter(|(_, s)| at.saturating_duration_since(s.changed) < self.valid)
            .map(|(n, s)| (n.clone(), Member { node: n.clone(), interface: s.interface.clone() }))
            .collect()
    }

    /// When the next live member expires, if none renews before then.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        if self.frozen() {
            return None;
        }
        self.seen.values().map(|s| s.changed + self.valid).filter(|t| *t > now).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lives_while_it_changes_and_outages_do_not_count() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut m = Membership::new(10 * s);
        m.observe("a", "1", "eth0", t0);
        m.observe("b", "7", "eth1", t0);
        assert_eq!(m.live(t0 + 9 * s).len(), 2);
        // a renews, b does not: only the same version again.
        m.observe("a", "2", "eth0", t0 + 5 * s);
        m.observe("b", "7", "eth1", t0 + 5 * s);
        let live = m.live(t0 + 11 * s);
        assert_eq!(live.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(live["a"].interface, "eth0");
        assert_eq!(m.next_expiry(t0 + 11 * s), Some(t0 + 15 * s));
        // An outage from 12 s to 42 s: frozen, then the 30 s away are not counted.
        m.api_down(t0 + 12 * s);
        assert_eq!(m.live(t0 + 40 * s).keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(m.next_expiry(t0 + 40 * s), None);
        m.api_up(t0 + 42 * s);
        assert_eq!(m.live(t0 + 44 * s).keys().collect::<Vec<_>>(), ["a"], "a had 3 s left when the API went away");
        assert!(m.live(t0 + 46 * s).is_empty());
        // A deleted Lease is a node that left.
        m.observe("c", "1", "eth0", t0 + 50 * s);
        m.remove("c");
        assert!(m.live(t0 + 50 * s).is_empty());
    }
}

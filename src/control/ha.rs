//! Sub-second failover between xlb nodes: heartbeats, liveness, quorum and fencing.
//!
//! Every node broadcasts a heartbeat on its interface every `interval` (50 ms by default).
//! A peer is alive while its last heartbeat is younger than `dead_after` intervals (5). The
//! owner of a VIP is the first of its candidates (ranked by rendezvous score, best first:
//! from the API's eligible members in Kubernetes, from the configured peers standalone)
//! that is alive: every node that hears the same peers computes the same owners, and a dead
//! node's VIPs, and only those, move.
//!
//! Split brain is bounded on two sides:
//! - a node announces VIPs only while it has quorum: it hears more than half of the members
//!   (itself included); a two-member set counts a witness as the third vote (Kubernetes: the
//!   `xlb-witness` Lease, which only one node can hold at a time, see `k8s::witness`);
//! - a node that has not had quorum for `takeover` (150 ms by default, less than the time
//!   others need to declare it dead) fences itself: the workers stop answering ARP/NDP for
//!   its VIPs, checked before every batch, so even a stalled control thread cannot answer
//!   with stale ownership. Packets that still arrive are forwarded (every node has the same
//!   Maglev tables).
//!
//! Pure: time comes in as arguments.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{
    lb::{
        heartbeat::{self, Beat, Heartbeat, FLAG_HANDOVER, FLAG_LEAVING, FLAG_QUORUM, HANDOVER_HOLD},
        maglev::hash64,
        neighbor::OutFrame,
    },
    wire::EthernetAddress,
};

/// Timings of the heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaTimings {
    /// Between two heartbeats.
    pub interval: Duration,
    /// Heartbeats missed before a peer is dead.
    pub dead_after: u32,
    /// Without quorum for this long, a node stops answering for its VIPs.
    pub takeover: Duration,
}

impl Default for HaTimings {
    fn default() -> Self {
        HaTimings { interval: Duration::from_millis(50), dead_after: 5, takeover: Duration::from_millis(150) }
    }
}

impl HaTimings {
    /// How long a peer lives after its last heartbeat.
    pub fn dead_time(&self) -> Duration {
        self.interval * self.dead_after
    }
}

#[derive(Debug, Clone)]
struct Heard {
    /// When it was last heard: its last beat's arrival, or, after a beat that says it hands
    /// over, a time ahead that keeps it alive, hearing and voting through
    /// [`HANDOVER_HOLD`] (every use of `at` then holds it, as if it still beat).
    at: Instant,
    incarnation: u64,
    seq: u64,
    mac: EthernetAddress,
    digest: u64,
    hears: u64,
    /// Its last heartbeat said it has quorum (it may own VIPs).
    quorum: bool,
    /// Since when its member list differs from ours (none: the same).
    differs_since: Option<Instant>,
    /// Its member list was once the same as ours: a difference now is a change on its way
    /// (see [`DIGEST_GRACE`]), not a node that has yet to learn of this one.
    agreed: bool,
    /// Its last beat said it hands over to a new xlb (`at` holds it).
    handed_over: bool,
}

/// How long a peer whose member list differs from ours still counts as hearing us: about
/// the time the nodes' views of a membership change take to agree. Past it, the lists really
/// differ (e.g. the others dropped this node's expired Lease) and the peer counts no more.
/// Only a peer that agreed with us before gets it: a joining node counts nobody until the
/// others list it, so it cannot announce VIPs that they, not knowing it, still announce.
const DIGEST_GRACE: Duration = Duration::from_secs(2);

/// This node's view of its peers.
#[derive(Debug)]
pub struct Peers {
    me: String,
    cluster: u32,
    timings: HaTimings,
    incarnation: u64,
    seq: u64,
    heard: BTreeMap<String, Heard>,
    /// The members (all nodes that may own VIPs), this node included.
    members: Vec<String>,
    /// The hash of `members`, carried in heartbeats.
    digest: u64,
    /// The latest fencing deadline given.
    quorum_at: Option<Instant>,
    next_beat: Instant,
    /// When each member entered this view: a member not heard yet holds its VIPs for one
    /// dead time from then, so a node does not take VIPs from peers whose heartbeats it has
    /// not read yet (at start, or when the API's member list first names them: heartbeats
    /// of nodes not in the list are ignored).
    since: BTreeMap<String, Instant>,
    /// What the last heartbeat said of this node's quorum.
    said_quorum: Option<bool>,
    /// Heartbeats from unknown nodes or of old incarnations, ignored.
    pub ignored: u64,
    /// The key this node signs its heartbeats with.
    key: Option<std::sync::Arc<heartbeat::Key>>,
}

pub(super) fn digest_of(members: &[String]) -> u64 {
    hash64(0x6d65_6d62, members.join("\0").as_bytes())
}

/// The hash of a cluster name carried in heartbeats.
pub fn cluster_hash(name: &str) -> u32 {
    u32::try_from(hash64(0x6861, name.as_bytes()) & 0xffff_ffff).unwrap_or(0)
}

impl Peers {
    /// `me` among `members`, starting at `now` (a new incarnation).
    pub fn new(
        me: &str,
        cluster: &str,
        timings: HaTimings,
        members: Vec<String>,
        now: Instant,
        incarnation: u64,
    ) -> Self {
        let since = members.iter().map(|m| (m.clone(), now)).collect();
        Peers {
            me: me.to_string(),
            cluster: cluster_hash(cluster),
            timings,
            incarnation,
            seq: 0,
            heard: BTreeMap::new(),
            digest: digest_of(&members),
            members,
            quorum_at: None,
            next_beat: now,
            since,
            said_quorum: None,
            ignored: 0,
            key: None,
        }
    }

    /// Signs this node's heartbeats with `key`.
    pub fn with_key(mut self, key: Option<std::sync::Arc<heartbeat::Key>>) -> Self {
        self.key = key;
        self
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The timings.
    pub fn timings(&self) -> HaTimings {
        self.timings
    }

    /// Makes `members` the member set (from the API or the config) at `now`; returns whether
    /// it changed.
    pub fn set_members(&mut self, mut members: Vec<String>, now: Instant) -> bool {
        members.sort();
        members.dedup();
        if members == self.members {
            return false;
        }
        self.digest = digest_of(&members);
        self.since.retain(|m, _| members.contains(m));
        for m in &members {
            self.since.entry(m.clone()).or_insert(now);
        }
        self.members = members;
        let digest = self.digest;
        self.heard.retain(|n, _| self.members.contains(n));
        for p in self.heard.values_mut() {
            p.differs_since = if p.digest == digest { None } else { p.differs_since.or(Some(now)) };
        }
        true
    }

    /// The member whose name a heartbeat carries (names are cut to the heartbeat's limit).
    fn member_named(&self, name: &str) -> Option<&str> {
        self.members.iter().map(String::as_str).find(|m| heartbeat::cut_name(m) == name)
    }

    /// A heartbeat arrived at `now`. Returns whether it changed who is alive or may own VIPs.
    pub fn heard(&mut self, h: &Heartbeat, now: Instant) -> bool {
        let Some(name) = self.member_named(h.name()).map(str::to_string) else {
            self.ignored += 1;
            return false;
        };
        if h.cluster != self.cluster || name == self.me {
            self.ignored += 1;
            return false;
        }
        let was_alive = self.alive(&name, now);
        let was_quorum = self.heard.get(&name).is_some_and(|p| p.quorum);
        // An older incarnation, or a replay of an old sequence number, of a live record is
        // ignored (leaving beats too); a dead record takes any incarnation (a restart after
        // the clock stepped back is still heard).
        if let Some(p) = self.heard.get(&name) {
            let old = h.incarnation < p.incarnation || (h.incarnation == p.incarnation && h.seq <= p.seq);
            if old && was_alive {
                self.ignored += 1;
                return false;
            }
        }
        if h.leaving() {
            return self.heard.remove(&name).is_some() && was_alive;
        }
        // The successor of a node that handed over: until its beats say it hears this node
        // (it has the member list from the API, and this node's beats), the hold stands as
        // the last beat left it. Its first beats ("I hear nobody yet") thus cost nobody
        // quorum, and none of its VIPs move.
        if let Some(p) = self.heard.get(&name) {
            if p.handed_over && was_alive && h.incarnation > p.incarnation && !self.says_it_hears_me(h.digest, h.hears)
            {
                return false;
            }
        }
        let digest = self.members_digest();
        let before = self.heard.get(&name);
        let differs_since = if h.digest == digest { None } else { before.and_then(|p| p.differs_since).or(Some(now)) };
        let agreed = h.digest == digest || before.is_some_and(|p| p.agreed);
        let at = if h.handing_over() { now + HANDOVER_HOLD.saturating_sub(self.timings.dead_time()) } else { now };
        self.heard.insert(
            name,
            Heard {
                at,
                incarnation: h.incarnation,
                seq: h.seq,
                mac: h.mac,
                digest: h.digest,
                hears: h.hears,
                quorum: h.flags & FLAG_QUORUM != 0,
                differs_since,
                agreed,
                handed_over: h.handing_over(),
            },
        );
        !was_alive || was_quorum != (h.flags & FLAG_QUORUM != 0)
    }

    /// Whether `node` is alive at `now` (this node always is).
    pub fn alive(&self, node: &str, now: Instant) -> bool {
        node == self.me
            || self.heard.get(node).is_some_and(|p| now.saturating_duration_since(p.at) < self.timings.dead_time())
    }

    /// The members alive at `now`.
    pub fn alive_members(&self, now: Instant) -> Vec<&str> {
        self.members.iter().map(String::as_str).filter(|m| self.alive(m, now)).collect()
    }

    /// The node whose heartbeats come from `mac`, if any.
    pub fn node_of(&self, mac: EthernetAddress) -> Option<&str> {
        self.heard.iter().find(|(_, p)| p.mac == mac).map(|(n, _)| n.as_str())
    }

    /// The hash of the member list, carried in heartbeats so that peers know whether their
    /// `hears` bits index the same list.
    fn members_digest(&self) -> u64 {
        self.digest
    }

    /// Whether `node`, alive, also hears this node (as its last heartbeat said). A peer with
    /// another member list cannot say: it counts for [`DIGEST_GRACE`] if it agreed before.
    fn hears_me(&self, node: &str, now: Instant) -> bool {
        if node == self.me {
            return true;
        }
        let Some(p) = self.heard.get(node) else { return false };
        if p.digest != self.members_digest() {
            return p.agreed && p.differs_since.is_none_or(|t| now.saturating_duration_since(t) < DIGEST_GRACE);
        }
        self.says_it_hears_me(p.digest, p.hears)
    }

    /// Whether a heartbeat's member digest and `hears` bits say its sender hears this node.
    fn says_it_hears_me(&self, digest: u64, hears: u64) -> bool {
        digest == self.members_digest()
            && self.members.iter().position(|m| *m == self.me).is_none_or(|i| i >= 64 || hears & (1 << i) != 0)
    }

    /// Whether this node is in touch, both ways, with more than half of the members at `now`;
    /// `witness`: until when this node holds the third vote of a two-member set.
    /// A node whose own heartbeats no longer reach the others (a one-way cut) hears them say
    /// so, and loses quorum.
    pub fn quorum(&self, now: Instant, witness: Option<Instant>) -> bool {
        let n = self.members.len();
        if n <= 1 {
            return true;
        }
        let both_ways = self.alive_members(now).into_iter().filter(|m| self.hears_me(m, now)).count();
        let alive = both_ways + usize::from(n == 2 && witness.is_some_and(|t| t > now));
        let total = n + usize::from(n == 2);
        2 * alive > total
    }

    /// Whether a two-member set needs the witness at `now`: the peer missed two heartbeats
    /// in a row, or no longer hears this node. Asked early (well before the peer counts as
    /// dead) so that the vote is there before the fence would fall.
    pub fn wants_witness(&self, now: Instant) -> bool {
        if self.members.len() != 2 {
            return false;
        }
        let Some(peer) = self.members.iter().find(|m| **m != self.me) else { return false };
        !self.heard.get(peer).is_some_and(|p| {
            now.saturating_duration_since(p.at) < 2 * self.timings.interval && self.hears_me(peer, now)
        })
    }

    /// The fencing deadline at `now`: `takeover` after the moment this node last heard
    /// (both ways) enough peers to make a majority with itself, or the end of its hold on
    /// the witness if that is later. A node cut off from the others thus stops answering
    /// `takeover` after their last heartbeats, before they, waiting `dead_after` intervals,
    /// take its VIPs. `None`: no deadline (no peers needed).
    pub fn fence_deadline(&mut self, now: Instant, witness: Option<Instant>) -> Option<Instant> {
        let n = self.members.len();
        if n <= 1 {
            return None;
        }
        let total = n + usize::from(n == 2);
        // Votes needed beyond this node's own.
        let need = total / 2;
        let mut votes: Vec<Instant> = self
            .members
            .iter()
            .filter(|m| **m != self.me && self.alive(m, now) && self.hears_me(m, now))
            .filter_map(|m| self.heard.get(m).map(|p| p.at + self.timings.takeover))
            .chain(witness.filter(|_| n == 2))
            .collect();
        votes.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(t) = votes.get(need - 1) {
            // Never earlier than one already given: the workers read it without a lock.
            self.quorum_at = Some(self.quorum_at.map_or(*t, |q| q.max(*t)));
        }
        // Never had a majority: fenced from the start.
        Some(self.quorum_at.unwrap_or(now))
    }

    /// Whether `node` may own VIPs at `now`: this node while it has quorum (`quorum`); a
    /// peer that is alive and said in its last heartbeat that it has quorum (a peer that
    /// cannot hear the others is fenced, and must not be left VIPs it cannot answer for); a
    /// member not heard yet, during its first dead time in this view.
    fn may_own(&self, node: &str, now: Instant, quorum: bool) -> bool {
        if node == self.me {
            return quorum;
        }
        match self.heard.get(node) {
            Some(p) => p.quorum && self.alive(node, now),
            None => self.since.get(node).is_some_and(|t| now.saturating_duration_since(*t) < self.timings.dead_time()),
        }
    }

    /// The owner of a VIP: the first of `candidates` (best score first) that may own VIPs;
    /// `quorum`: whether this node has quorum (see [`Peers::quorum`], asked once for many
    /// VIPs).
    pub fn owner<'a>(&self, candidates: &'a [String], now: Instant, quorum: bool) -> Option<&'a str> {
        candidates.iter().map(String::as_str).find(|c| self.may_own(c, now, quorum))
    }

    /// Who may own VIPs at `now` (see [`Peers::owner`]): when this changes, owners may.
    pub fn owners_view(&self, now: Instant, quorum: bool) -> Vec<&str> {
        self.members.iter().map(String::as_str).filter(|m| self.may_own(m, now, quorum)).collect()
    }

    /// When the next heartbeat is due, or a peer may die, or a new member's grace ends.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let dead = self.timings.dead_time();
        self.heard
            .values()
            .map(|p| p.at + dead)
            .chain(self.since.values().map(|t| *t + dead))
            .filter(|t| *t > now)
            .fold(self.next_beat, Instant::min)
    }

    /// The heartbeat to send at `now`, if one is due (`leaving`: the last one); `quorum`:
    /// whether this node may own VIPs (said in the beat).
    pub fn beat(&mut self, mac: EthernetAddress, now: Instant, leaving: bool, quorum: bool) -> Option<OutFrame> {
        // A change of what it says goes out at once: peers learn that this node may own VIPs
        // before its gratuitous ARPs reach them (not as a stranger's claim), and that it may
        // not as soon as it fences.
        if now < self.next_beat && !leaving && self.said_quorum == Some(quorum) {
            return None;
        }
        self.said_quorum = Some(quorum);
        let flags = if leaving {
            FLAG_LEAVING
        } else if quorum {
            FLAG_QUORUM
        } else {
            0
        };
        Some(self.frame(mac, now, flags))
    }

    /// The last heartbeat of an xlb that hands over to a new one on this node: the peers
    /// hold this node alive, with the quorum it says, until the successor beats.
    pub fn handover_beat(&mut self, mac: EthernetAddress, now: Instant, quorum: bool) -> OutFrame {
        self.frame(mac, now, FLAG_HANDOVER | if quorum { FLAG_QUORUM } else { 0 })
    }

    /// The next heartbeat frame, saying `flags`.
    fn frame(&mut self, mac: EthernetAddress, now: Instant, flags: u8) -> OutFrame {
        self.seq += 1;
        self.next_beat = now + self.timings.interval;
        // "Hears" only members heard within dead time minus takeover: a node whose beats stop
        // reaching us loses our vote early enough to fence itself before we take its VIPs.
        let fresh = self.timings.dead_time().saturating_sub(self.timings.takeover);
        let hears = self
            .members
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, m)| {
                **m == self.me
                    || self.heard.get(m.as_str()).is_some_and(|p| now.saturating_duration_since(p.at) < fresh)
            })
            .fold(0u64, |bits, (i, _)| bits | (1 << i));
        let digest = self.members_digest();
        heartbeat::build_signed(
            mac,
            &Beat {
                name: &self.me,
                cluster: self.cluster,
                incarnation: self.incarnation,
                seq: self.seq,
                digest,
                hears,
                flags,
            },
            self.key.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    const MAC_B: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0xb]);

    fn hb(from: &str, inc: u64, seq: u64, leaving: bool) -> Heartbeat {
        hb_hearing(from, inc, seq, leaving, digest_of(&["a".into(), "b".into(), "c".into()]), u64::MAX)
    }

    fn hb_hearing(from: &str, inc: u64, seq: u64, leaving: bool, digest: u64, hears: u64) -> Heartbeat {
        let f = heartbeat::build(
            MAC_B,
            &Beat {
                name: from,
                cluster: cluster_hash("c"),
                incarnation: inc,
                seq,
                digest,
                hears,
                flags: if leaving { FLAG_LEAVING } else { FLAG_QUORUM },
            },
        );
        heartbeat::parse(f.bytes()).unwrap()
    }

    fn three(now: Instant) -> Peers {
        Peers::new("a", "c", HaTimings::default(), vec!["a".into(), "b".into(), "c".into()], now, 1)
    }

    #[test]
    fn liveness_quorum_and_fencing() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = three(t0);
        assert!(!p.quorum(t0, None), "alone of three");
        assert_eq!(p.fence_deadline(t0, None), Some(t0), "never had a majority: fenced");
        assert!(p.heard(&hb("b", 1, 1, false), t0), "b comes alive");
        assert!(p.quorum(t0, None));
        assert_eq!(p.fence_deadline(t0, None), Some(t0 + ms(150)));
        // The deadline follows the last heartbeat of the majority, not the 250 ms liveness.
        assert!(!p.heard(&hb("b", 1, 1, false), t0 + ms(100)), "a replay does not move it");
        assert_eq!(p.fence_deadline(t0 + ms(100), None), Some(t0 + ms(150)));
        // A lone member set needs nobody.
        let mut alone = Peers::new("a", "c", HaTimings::default(), vec!["a".into()], t0, 1);
        assert_eq!(alone.fence_deadline(t0, None), None);
        assert_eq!(p.node_of(MAC_B), Some("b"));
        // Replays and old incarnations are ignored; unknown nodes and other clusters too.
        assert!(!p.heard(&hb("b", 0, 9, false), t0 + ms(100)));
        assert!(!p.heard(&hb("x", 1, 1, false), t0));
        assert_eq!(p.ignored, 3);
        // b dies after 5 missed heartbeats: quorum lost, the deadline stays where it was.
        assert!(p.alive("b", t0 + ms(249)));
        assert!(!p.alive("b", t0 + ms(250)));
        assert!(!p.quorum(t0 + ms(250), None));
        assert_eq!(p.fence_deadline(t0 + ms(250), None), Some(t0 + ms(150)));
        // A restart (new incarnation, seq from 1) is taken; a leaving beat kills at once.
        assert!(p.heard(&hb("b", 2, 1, false), t0 + ms(300)));
        assert!(p.heard(&hb("b", 2, 2, true), t0 + ms(310)));
        assert!(!p.alive("b", t0 + ms(310)));
    }

    #[test]
    fn a_node_that_hands_over_is_held_until_its_successor_hears_us() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Two members: a (this node) and b; b's beats hear a.
        let two = || vec!["a".to_string(), "b".to_string()];
        let mut p = Peers::new("a", "c", HaTimings::default(), two(), t0, 1);
        let d = digest_of(&two());
        assert!(p.heard(&hb_hearing("b", 1, 1, false, d, 0b11), t0));
        assert!(p.quorum(t0, None));
        // b hands over: held alive, hearing a, owning its VIPs, well past the 250 ms dead time.
        let mut handover = hb_hearing("b", 1, 2, false, d, 0b11);
        handover.flags |= FLAG_HANDOVER;
        p.heard(&handover, t0 + ms(10));
        let later = t0 + ms(2000);
        assert!(p.alive("b", later) && p.quorum(later, None) && p.may_own("b", later, true));
        // Its successor's first beats know only itself (no member list yet, nobody heard):
        // ignored, the hold stands.
        let alone = digest_of(&["b".to_string()]);
        assert!(!p.heard(&hb_hearing("b", 2, 1, false, alone, 0b1), later));
        assert!(p.quorum(later, None) && p.may_own("b", later, true));
        // Once it hears a, it is b as usual.
        assert!(!p.heard(&hb_hearing("b", 2, 2, false, d, 0b11), later + ms(50)));
        assert!(p.alive("b", later + ms(290)) && !p.alive("b", later + ms(300)));
        // A node that hands over and has no successor is dead when the hold ends.
        p.heard(&hb_hearing("b", 2, 3, false, d, 0b11), t0 + ms(3000));
        let mut handover = hb_hearing("b", 2, 4, false, d, 0b11);
        handover.flags |= FLAG_HANDOVER;
        p.heard(&handover, t0 + ms(3000));
        assert!(p.alive("b", t0 + ms(3000) + HANDOVER_HOLD - ms(1)));
        assert!(!p.alive("b", t0 + ms(3000) + HANDOVER_HOLD));
        assert!(!p.quorum(t0 + ms(3000) + HANDOVER_HOLD, None));
    }

    #[test]
    fn a_node_whose_heartbeats_are_not_heard_loses_quorum() {
        let t0 = Instant::now();
        let mut p = three(t0);
        let d = p.members_digest();
        // b and c hear each other but not a (bit 0): a hears them, yet has no quorum.
        p.heard(&hb_hearing("b", 1, 1, false, d, 0b110), t0);
        p.heard(&hb_hearing("c", 1, 1, false, d, 0b110), t0);
        assert!(!p.quorum(t0, None), "one-way cut: a must not think it has quorum");
        // b hears a again: a, b both ways is 2 of 3.
        p.heard(&hb_hearing("b", 1, 2, false, d, 0b111), t0);
        assert!(p.quorum(t0, None));
        // What a sends: the digest of its list and the members it hears.
        let f = p.beat(EthernetAddress([2, 0, 0, 0, 0, 0xa]), t0, false, true).unwrap();
        let h = heartbeat::parse(f.bytes()).unwrap();
        assert_eq!((h.digest, h.hears, h.flags & FLAG_QUORUM), (d, 0b111, FLAG_QUORUM));
        // A peer with another member list counts for a grace time only (the others dropped
        // this node's Lease, say): then a loses quorum and fences.
        let t1 = t0 + Duration::from_millis(20);
        p.heard(&hb_hearing("b", 1, 3, false, d ^ 1, 0), t1);
        p.heard(&hb_hearing("c", 1, 2, false, d ^ 1, 0), t1);
        assert!(p.quorum(t1, None));
        let t2 = t1 + DIGEST_GRACE;
        p.heard(&hb_hearing("b", 1, 4, false, d ^ 1, 0), t2);
        p.heard(&hb_hearing("c", 1, 3, false, d ^ 1, 0), t2);
        assert!(!p.quorum(t2, None));
    }

    #[test]
    fn members_named_late_keep_their_vips_for_a_dead_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Kubernetes: the node starts alone; the API's member list comes seconds later.
        let mut p = Peers::new("c", "c", HaTimings::default(), vec!["c".into()], t0, 1);
        let t1 = t0 + Duration::from_secs(3);
        assert!(p.set_members(["a", "b", "c"].map(String::from).to_vec(), t1));
        assert!(!p.set_members(["c", "b", "a"].map(String::from).to_vec(), t1), "the same list");
        let ranked = ["a".to_string(), "c".into(), "b".into()];
        // a, not heard yet, still owns its VIPs for one dead time from being named (it was
        // announcing them before this node could hear it), then no longer.
        assert_eq!(p.owner(&ranked, t1 + ms(100), true), Some("a"));
        assert!(p.next_deadline(t1 + ms(100)) <= t1 + ms(250));
        assert_eq!(p.owner(&ranked, t1 + ms(250), true), Some("c"));
    }

    #[test]
    fn a_joining_node_counts_nobody_until_the_others_list_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // d joins: its list has a, b, c, d; theirs, from before its Lease, only a, b, c.
        let mut d = Peers::new("d", "c", HaTimings::default(), ["a", "b", "c", "d"].map(String::from).to_vec(), t0, 1);
        let old = digest_of(&["a".into(), "b".into(), "c".into()]);
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            d.heard(&hb_hearing(n, 1, 1, false, old, 0b111), t0 + ms(i as u64));
        }
        // They hear it (a list without d cannot say otherwise), but never agreed with it: d,
        // announcing now, would answer beside the nodes that still own its VIPs.
        assert!(!d.quorum(t0 + ms(10), None), "a newcomer must not count peers that do not list it");
        assert_eq!(d.fence_deadline(t0 + ms(10), None), Some(t0 + ms(10)));
        // The others read d's Lease: the same list, and d's bit (3) in what they hear.
        let new = d.members_digest();
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            d.heard(&hb_hearing(n, 1, 2, false, new, 0b1111), t0 + ms(50 + i as u64));
        }
        assert!(d.quorum(t0 + ms(60), None));
    }

    #[test]
    fn owners_follow_rank_and_two_nodes_need_a_witness() {
        let t0 = Instant::now();
        let mut p = three(t0);
        let vip: IpAddr = "192.0.2.1".parse().unwrap();
        let ranked = crate::control::rendezvous::rank(vip, ["a", "b", "c"]);
        assert_eq!(ranked.len(), 3);
        let ms = Duration::from_millis;
        // At start nobody is heard: peers not heard yet keep their VIPs for one dead time,
        // and this node, alone of three, has no quorum: it takes nothing.
        let first_peer = ranked.iter().find(|n| *n != "a").unwrap();
        assert_eq!(p.owner(&ranked, t0, false), Some(first_peer.as_str()));
        assert_eq!(p.owner(&ranked, t0 + ms(300), false), None);
        assert!(p.beat(EthernetAddress([2, 0, 0, 0, 0, 0xa]), t0 + ms(300), false, false).is_some());
        assert!(p.next_deadline(t0 + ms(300)) > t0 + ms(300), "no deadline in the past (no busy loop)");
        // Heard, with quorum: the ranking decides.
        p.heard(&hb("b", 1, 1, false), t0 + ms(300));
        p.heard(&hb("c", 1, 1, false), t0 + ms(300));
        assert_eq!(p.owner(&ranked, t0 + ms(300), p.quorum(t0 + ms(300), None)), Some(ranked[0].as_str()));
        // A peer that says it has no quorum (it is fenced) is passed over.
        let fenced = heartbeat::parse(
            heartbeat::build(
                MAC_B,
                &Beat { name: "b", cluster: cluster_hash("c"), incarnation: 1, seq: 2, digest: 0, hears: 0, flags: 0 },
            )
            .bytes(),
        )
        .unwrap();
        assert!(p.heard(&fenced, t0 + ms(310)), "losing quorum is a change");
        let owner = p.owner(&ranked, t0 + ms(310), true);
        assert!(owner.is_some() && owner != Some("b"), "{owner:?}");
        // Two members: one alone has quorum only with the witness.
        let mut two = Peers::new("a", "c", HaTimings::default(), vec!["a".into(), "b".into()], t0, 1);
        assert!(!two.quorum(t0, None));
        assert!(two.quorum(t0, Some(t0 + ms(1))));
        two.heard(&hb_hearing("b", 1, 1, false, two.members_digest(), u64::MAX), t0);
        assert!(two.quorum(t0, None));
        // It needs no witness while the peer beats, asks for it after two missed beats, and
        // the fence then follows the hold on the witness (never earlier than once given).
        assert!(!two.wants_witness(t0 + ms(99)));
        assert!(two.wants_witness(t0 + ms(100)));
        assert!(!two.quorum(t0 + ms(250), None));
        let hold = t0 + ms(1100);
        assert!(two.quorum(t0 + ms(250), Some(hold)));
        assert_eq!(two.fence_deadline(t0 + ms(250), Some(hold)), Some(hold));
        assert_eq!(two.fence_deadline(t0 + ms(300), None), Some(hold));
        assert!(!two.quorum(hold, Some(hold)), "a hold that has ended is no vote");
        assert!(!p.wants_witness(t0 + ms(400)), "three members need no witness");
        // Beats: one per interval, numbered.
        let mac = EthernetAddress([2, 0, 0, 0, 0, 0xa]);
        let t = t0 + ms(400);
        assert!(p.beat(mac, t, false, true).is_some());
        assert!(p.beat(mac, t + ms(10), false, true).is_none());
        // Saying something else (quorum lost, then back) does not wait for the interval.
        assert!(p.beat(mac, t + ms(11), false, false).is_some());
        assert!(p.beat(mac, t + ms(12), false, false).is_none());
        assert!(p.beat(mac, t + ms(13), false, true).is_some());
        assert!(p.beat(mac, t + ms(62), false, true).is_none());
        let f = p.beat(mac, t + ms(63), false, true).unwrap();
        let h = heartbeat::parse(f.bytes()).unwrap();
        assert_eq!((h.name(), h.seq, h.leaving()), ("a", 5, false));
        assert!(heartbeat::parse(p.beat(mac, t + ms(64), true, false).unwrap().bytes()).unwrap().leaving());
        // Long names are matched on what a heartbeat carries of them.
        let long = "n".repeat(80);
        let mut q = Peers::new("a", "c", HaTimings::default(), vec!["a".into(), long.clone()], t0, 1);
        assert!(q.heard(&hb_hearing(&long, 1, 1, false, q.members_digest(), u64::MAX), t0));
        assert!(q.alive(&long, t0));
    }
}

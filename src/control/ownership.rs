//! Which VIPs this node owns (announces), when it must stop answering for them (the fence),
//! and how another node's claim on one of them is settled. The failover decisions, as a
//! machine: the daemon feeds it heartbeats, member lists and claims, calls [`Ownership::tick`]
//! with the time, and carries out what comes back (send the beat, move the workers' fence,
//! hand the new owned set to the announcement protocols). Nothing here sends, sleeps or
//! reads a clock.
//!
//! - Owners: each VIP's candidates, best first ([`crate::control::rendezvous`]: from the
//!   configured boxes standalone, from the plan in Kubernetes); the owner is the first that
//!   may own VIPs ([`Peers::owner`]). Without quorum nothing is taken over and nothing given
//!   up: the fence, not the owned set, stops the answers.
//! - Owners are looked at again only when who may own VIPs changes (a peer's expiry, the
//!   start-up grace, quorum) or a yield ends, not on every tick: with 1,000 VIPs the tick
//!   stays cheap.
//! - The fence: past the deadline [`Peers::fence_deadline`] gives, the workers stop
//!   answering ARP/NDP and the node sends no announcements. When it lifts, every owned VIP
//!   is announced again (announcements were withheld meanwhile).
//! - The third vote of a two-member set: an outside witness (Kubernetes: the `xlb-witness`
//!   Lease; the daemon passes its hold in with [`Ownership::set_witness_hold`] and carries
//!   out [`Tick::want_witness`]), or, standalone with two boxes, the box left alone.
//! - Claims: a better-ranked live peer keeps the VIP (this node yields for one dead time);
//!   otherwise this node announces it again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Instant,
};

use super::{
    ha::{HaTimings, Peers},
    rendezvous::rank,
};
use crate::{
    lb::{heartbeat::Heartbeat, neighbor::OutFrame},
    wire::EthernetAddress,
};

/// Where the third vote of a two-member set comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    /// An outside witness that one node at most holds (Kubernetes: the `xlb-witness`
    /// Lease); its hold comes in through [`Ownership::set_witness_hold`].
    Witness,
    /// Standalone, two boxes: there is no third party to ask; the box left alone takes over
    /// (a cut between the two is settled by rank when they hear each other's claims).
    Alone,
    /// More than two members: no witness.
    Nobody,
}

/// What another MAC's claim on an owned VIP came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The claimant is no peer this node hears (or the VIP has no candidates): an outside
    /// host.
    NotAPeer,
    /// This node is cut off (fenced or without quorum): the claimant is probably the node
    /// that took over, and this node has stopped answering.
    Quiet,
    /// A better-ranked live peer claims it: this node yields it for one dead time (the owned
    /// set changes at the next [`Ownership::refresh`]).
    Yielded {
        /// The peer.
        node: String,
    },
    /// This node ranks first: it should announce the VIP again.
    Kept {
        /// The peer.
        node: String,
    },
}

/// A change of the owned set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedChange {
    /// Every VIP owned now.
    pub owned: Vec<IpAddr>,
    /// VIPs taken (owned now, not before).
    pub taken: Vec<IpAddr>,
    /// VIPs given up.
    pub given: Vec<IpAddr>,
}

/// What to do after a tick.
#[derive(Debug, Default)]
pub struct Tick {
    /// This node's heartbeat, to send before anything else.
    pub beat: Option<OutFrame>,
    /// The fencing deadline the workers must hold (none: never fenced).
    pub fence: Option<Instant>,
    /// The fence fell (`Some(true)`) or lifted (`Some(false)`) in this tick.
    pub fenced: Option<bool>,
    /// The owned set changed.
    pub owned: Option<OwnedChange>,
    /// The fence lifted: announce every owned address again.
    pub reannounce_all: bool,
    /// Whether the witness is needed now ([`Vote::Witness`] only).
    pub want_witness: Option<bool>,
}

/// What the owners were last computed from: quorum, who may own VIPs, yields in force.
type View = (bool, Vec<String>, usize);

/// The failover state of one node.
#[derive(Debug)]
pub struct Ownership {
    peers: Peers,
    mac: EthernetAddress,
    /// Standalone: the configured boxes (candidates are ranked from them).
    static_peers: Option<Vec<String>>,
    /// VIP -> nodes that may own it, best first.
    candidates: BTreeMap<IpAddr, Vec<String>>,
    vote: Vote,
    /// Until when this node holds the outside witness ([`Vote::Witness`]).
    witness_hold: Option<Instant>,
    /// VIPs left to a better-ranked node after a conflict, until then.
    yielded: HashMap<IpAddr, Instant>,
    last_view: Option<View>,
    /// The fencing deadline given to the workers.
    fence: Option<Instant>,
    /// Whether the fence had fallen at the end of the last tick (for [`Tick::fenced`]).
    was_fenced: bool,
    /// The VIPs this node owns.
    owned: BTreeSet<IpAddr>,
}

impl Ownership {
    /// A node among `peers`, sending its heartbeats from `mac`. `static_peers`: standalone,
    /// the configured boxes (each VIP's candidates are ranked from them); Kubernetes: none
    /// (candidates come with each plan, [`Ownership::set_candidates`]).
    pub fn new(peers: Peers, mac: EthernetAddress, static_peers: Option<Vec<String>>, vote: Vote) -> Self {
        Ownership {
            peers,
            mac,
            static_peers,
            candidates: BTreeMap::new(),
            vote,
            witness_hold: None,
            yielded: HashMap::new(),
            last_view: None,
            fence: None,
            was_fenced: false,
            owned: BTreeSet::new(),
        }
    }

    /// The vote a set of `static_peers` (standalone) or an outside witness gives.
    pub fn vote_for(witness: bool, static_peers: Option<&[String]>) -> Vote {
        match (witness, static_peers) {
            (true, _) => Vote::Witness,
            (false, Some(p)) if p.len() == 2 => Vote::Alone,
            _ => Vote::Nobody,
        }
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        self.peers.me()
    }

    /// The heartbeat timings.
    pub fn timings(&self) -> HaTimings {
        self.peers.timings()
    }

    /// Heartbeats ignored (unknown nodes, other clusters, replays).
    pub fn ignored(&self) -> u64 {
        self.peers.ignored
    }

    /// The VIPs this node owns.
    pub fn owned(&self) -> &BTreeSet<IpAddr> {
        &self.owned
    }

    /// The outside witness's hold, as last read (the Lease's holder and renewals).
    pub fn set_witness_hold(&mut self, until: Option<Instant>) {
        self.witness_hold = until;
    }

    /// Until when this node has the third vote (see [`Peers::quorum`]).
    fn witness(&self, now: Instant) -> Option<Instant> {
        match self.vote {
            Vote::Witness => self.witness_hold,
            // Renewed on every tick: a stalled control thread loses it.
            Vote::Alone => Some(now + self.peers.timings().takeover),
            Vote::Nobody => None,
        }
    }

    /// Whether this node holds the outside witness at `now`.
    pub fn holds_witness(&self, now: Instant) -> bool {
        self.witness(now).is_some_and(|t| t > now)
    }

    /// Whether this node hears a majority at `now`.
    pub fn quorum(&self, now: Instant) -> bool {
        self.peers.quorum(now, self.witness(now))
    }

    /// Whether the workers stop answering at `now`.
    pub fn fenced(&self, now: Instant) -> bool {
        self.fence.is_some_and(|t| now >= t)
    }

    /// The members alive at `now`.
    pub fn alive_members(&self, now: Instant) -> Vec<&str> {
        self.peers.alive_members(now)
    }

    /// When the next heartbeat is due, or a peer may die, or a new member's grace ends.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        self.peers.next_deadline(now)
    }

    /// The served VIPs changed (standalone: each one's candidates are the configured boxes,
    /// ranked for it). In Kubernetes candidates come with the plan instead.
    pub fn set_vips(&mut self, vips: &[IpAddr]) {
        if let Some(peers) = &self.static_peers {
            self.candidates = vips.iter().map(|v| (*v, rank(*v, peers.iter().map(String::as_str)))).collect();
        }
    }

    /// Each VIP's candidates, best first (Kubernetes: from the plan).
    pub fn set_candidates(&mut self, candidates: BTreeMap<IpAddr, Vec<String>>) {
        self.candidates = candidates;
    }

    /// The members (from the API); returns whether they changed.
    pub fn set_members(&mut self, members: Vec<String>, now: Instant) -> bool {
        self.peers.set_members(members, now)
    }

    /// A peer's heartbeat arrived at `now`; returns whether it changed who is alive or may
    /// own VIPs (then tick at once).
    pub fn heard(&mut self, h: &Heartbeat, now: Instant) -> bool {
        self.peers.heard(h, now)
    }

    /// The VIPs this node should own at `now`: those whose first candidate that may own
    /// VIPs is this node, while it has quorum and has not yielded them; without quorum,
    /// those it owns already (still candidates).
    fn decide(&self, now: Instant) -> BTreeSet<IpAddr> {
        if !self.quorum(now) {
            return self.owned.iter().filter(|v| self.candidates.contains_key(v)).copied().collect();
        }
        let me = self.peers.me();
        self.candidates
            .iter()
            .filter(|(v, c)| {
                self.peers.owner(c, now, true) == Some(me) && self.yielded.get(*v).is_none_or(|t| *t <= now)
            })
            .map(|(v, _)| *v)
            .collect()
    }

    /// Decides the owned set again; says what changed, if anything.
    pub fn refresh(&mut self, now: Instant) -> Option<OwnedChange> {
        let want = self.decide(now);
        if want == self.owned {
            return None;
        }
        let change = OwnedChange {
            owned: want.iter().copied().collect(),
            taken: want.difference(&self.owned).copied().collect(),
            given: self.owned.difference(&want).copied().collect(),
        };
        self.owned = want;
        Some(change)
    }

    /// Failover housekeeping at `now`: the heartbeat, the fence, owners when who may own
    /// VIPs changed.
    pub fn tick(&mut self, now: Instant) -> Tick {
        let mut out = Tick::default();
        if self.vote == Vote::Witness {
            out.want_witness = Some(self.peers.wants_witness(now));
        }
        let witness = self.witness(now);
        let was = self.fenced(now);
        let quorum = self.peers.quorum(now, witness) && !was;
        out.beat = self.peers.beat(self.mac, now, false, quorum);
        self.fence = self.peers.fence_deadline(now, witness);
        out.fence = self.fence;
        let is = self.fenced(now);
        if is != self.was_fenced {
            out.fenced = Some(is);
        }
        let q = self.peers.quorum(now, witness);
        let view: View = (
            q,
            self.peers.owners_view(now, q).into_iter().map(str::to_string).collect(),
            self.yielded.values().filter(|t| **t > now).count(),
        );
        if self.last_view.as_ref() != Some(&view) {
            self.last_view = Some(view);
            out.owned = self.refresh(now);
        }
        // Announcements were withheld while fenced: make up for them now.
        out.reannounce_all = was && !is;
        self.was_fenced = is;
        out
    }

    /// Another MAC claims `vip`, which this node owns: the better-ranked live node keeps it.
    pub fn conflict(&mut self, vip: IpAddr, mac: EthernetAddress, now: Instant) -> Claim {
        if self.fenced(now) || !self.quorum(now) {
            return Claim::Quiet;
        }
        let Some(other) = self.peers.node_of(mac).map(str::to_string) else { return Claim::NotAPeer };
        let Some(cands) = self.candidates.get(&vip) else { return Claim::NotAPeer };
        let pos = |n: &str| cands.iter().position(|c| c == n).unwrap_or(usize::MAX);
        if self.peers.alive(&other, now) && pos(&other) < pos(self.peers.me()) {
            self.yielded.insert(vip, now + self.peers.timings().dead_time());
            Claim::Yielded { node: other }
        } else {
            Claim::Kept { node: other }
        }
    }

    /// Leaving at `now`: the fence falls at once (the peers take the VIPs as soon as they
    /// read the beat), and the last heartbeat says so.
    pub fn leave(&mut self, now: Instant) -> Option<OutFrame> {
        self.fence = Some(now);
        self.peers.beat(self.mac, now, true, false)
    }

    /// Handing over to a new xlb on this node at `now`: the last heartbeat says so, and the
    /// quorum this node has; the peers hold it alive until the successor beats. Nothing
    /// here changes: the workers stop right after.
    pub fn hand_over(&mut self, now: Instant) -> OutFrame {
        let quorum = self.quorum(now);
        self.peers.handover_beat(self.mac, now, quorum)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        control::ha::{cluster_hash, digest_of},
        lb::heartbeat::{self, Beat, FLAG_LEAVING, FLAG_QUORUM},
    };

    const MAC_A: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0xa]);

    fn mac_of(n: &str) -> EthernetAddress {
        EthernetAddress([2, 0, 0, 0, 0, n.as_bytes()[0]])
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A heartbeat from `from` that hears every member of the same list and has quorum.
    fn beat(o: &Ownership, from: &str, seq: u64, flags: u8) -> Heartbeat {
        let f = heartbeat::build(
            mac_of(from),
            &Beat {
                name: from,
                cluster: cluster_hash("c"),
                incarnation: 1,
                seq,
                digest: digest_of(o.static_peers.as_deref().unwrap_or_default()),
                hears: u64::MAX,
                flags,
            },
        );
        heartbeat::parse(f.bytes()).unwrap()
    }

    fn node(me: &str, boxes: &[&str], t0: Instant) -> Ownership {
        let boxes: Vec<String> = boxes.iter().map(|s| s.to_string()).collect();
        let peers = Peers::new(me, "c", HaTimings::default(), boxes.clone(), t0, 1);
        let vote = Ownership::vote_for(false, Some(&boxes));
        let mut o = Ownership::new(peers, mac_of(me), Some(boxes), vote);
        o.set_vips(&vips());
        o
    }

    fn vips() -> Vec<IpAddr> {
        (1..=30u8).map(|i| IpAddr::from([10, 0, 0, i])).collect()
    }

    /// The VIPs `who` ranks first for among `boxes`.
    fn firsts(who: &str, boxes: &[&str]) -> BTreeSet<IpAddr> {
        vips().into_iter().filter(|v| rank(*v, boxes.iter().copied())[0] == who).collect()
    }

    fn hear_all(o: &mut Ownership, from: &[&str], seq: u64, at: Instant) {
        for n in from {
            let h = beat(o, n, seq, FLAG_QUORUM);
            o.heard(&h, at);
        }
    }

    #[test]
    fn three_boxes_share_the_vips_and_a_dead_one_s_move_to_the_next_candidate() {
        let t0 = Instant::now();
        let boxes = ["a", "b", "c"];
        let mut a = node("a", &boxes, t0);
        // Before anyone is heard: no quorum, fenced from the start, nothing owned.
        let t = a.tick(t0);
        assert!(t.beat.is_some(), "the first beat goes out at once");
        assert_eq!(t.fence, Some(t0));
        assert!(a.owned().is_empty());
        assert_eq!(t.fenced, Some(true), "fenced from the start (said in the log)");
        hear_all(&mut a, &["b", "c"], 1, t0 + ms(10));
        let t = a.tick(t0 + ms(10));
        assert_eq!(t.fenced, Some(false), "a majority heard: the fence lifts");
        assert!(t.reannounce_all);
        assert_eq!(t.fence, Some(t0 + ms(160)), "takeover after the majority's last beat");
        let change = t.owned.expect("quorum: owners decided");
        assert_eq!(change.owned.iter().copied().collect::<BTreeSet<_>>(), firsts("a", &boxes));
        assert!(change.given.is_empty());
        // c goes silent; b keeps beating. After c's dead time (250 ms), a takes the VIPs for
        // which it ranks after c, and only those.
        let mut now = t0 + ms(10);
        let mut seq = 1;
        while now < t0 + ms(300) {
            now += ms(50);
            seq += 1;
            hear_all(&mut a, &["b"], seq, now);
            let t = a.tick(now);
            if let Some(c) = t.owned {
                assert!(now >= t0 + ms(260), "c is dead only after 5 missed beats");
                let moved: BTreeSet<IpAddr> = c.taken.iter().copied().collect();
                let expect: BTreeSet<IpAddr> = vips()
                    .into_iter()
                    .filter(|v| {
                        let r = rank(*v, boxes);
                        r[0] == "c" && r[1] == "a"
                    })
                    .collect();
                assert_eq!(moved, expect);
                assert!(c.given.is_empty());
            }
        }
        let mut expect = firsts("a", &boxes);
        expect.extend(vips().into_iter().filter(|v| rank(*v, boxes)[..2] == ["c", "a"]));
        assert_eq!(*a.owned(), expect);
    }

    #[test]
    fn a_cut_off_box_fences_itself_keeps_its_set_and_announces_again_when_healed() {
        let t0 = Instant::now();
        let boxes = ["a", "b", "c"];
        let mut a = node("a", &boxes, t0);
        hear_all(&mut a, &["b", "c"], 1, t0);
        a.tick(t0);
        let before = a.owned().clone();
        assert!(!before.is_empty());
        // Cut: nothing heard. The fence falls 150 ms after the last beats, before the others
        // (250 ms) take the VIPs; the owned set stays (nothing taken, nothing given up).
        assert!(!a.fenced(t0 + ms(149)));
        let t = a.tick(t0 + ms(150));
        assert_eq!(t.fenced, Some(true));
        assert!(a.fenced(t0 + ms(150)));
        let t = a.tick(t0 + ms(400));
        assert_eq!(t.owned, None, "others dead and no quorum: the set does not move");
        assert_eq!(*a.owned(), before);
        let beat = heartbeat::parse(t.beat.expect("beats go on while fenced").bytes()).unwrap();
        assert_eq!(beat.flags & FLAG_QUORUM, 0, "a fenced box says it may not own VIPs");
        // A claim meanwhile: the claimant is probably the box that took over.
        assert_eq!(a.conflict(*before.first().unwrap(), mac_of("b"), t0 + ms(400)), Claim::Quiet);
        // Healed: the fence lifts and every owned VIP is announced again.
        hear_all(&mut a, &["b", "c"], 2, t0 + ms(500));
        let t = a.tick(t0 + ms(500));
        assert_eq!(t.fenced, Some(false));
        assert!(t.reannounce_all);
        assert!(!a.fenced(t0 + ms(500)));
        assert_eq!(*a.owned(), before, "the others took nothing while a was fenced at their rank");
    }

    #[test]
    fn a_claim_is_settled_by_rank() {
        let t0 = Instant::now();
        let boxes = ["a", "b", "c"];
        let mut a = node("a", &boxes, t0);
        hear_all(&mut a, &["b", "c"], 1, t0);
        a.tick(t0);
        let vip_b_first = vips().into_iter().find(|v| rank(*v, boxes)[..2] == ["b", "a"]).unwrap();
        let vip_a_first = *firsts("a", &boxes).first().unwrap();
        // A stranger's claim is not settled here.
        assert_eq!(a.conflict(vip_a_first, EthernetAddress([9; 6]), t0 + ms(10)), Claim::NotAPeer);
        // b claims a VIP a ranks first for: a keeps it and announces again.
        assert_eq!(a.conflict(vip_a_first, mac_of("b"), t0 + ms(10)), Claim::Kept { node: "b".into() });
        // b claims a VIP it ranks first for: a yields it for one dead time.
        assert_eq!(a.conflict(vip_b_first, mac_of("b"), t0 + ms(10)), Claim::Yielded { node: "b".into() });
        assert!(a.refresh(t0 + ms(10)).is_none(), "a did not own it: nothing to give up");
        // A VIP a does own, given to a better-ranked claimant: c first, a second.
        let mut c_dead = node("a", &boxes, t0);
        hear_all(&mut c_dead, &["b"], 1, t0 + ms(280));
        c_dead.tick(t0 + ms(300));
        let vip = vips().into_iter().find(|v| rank(*v, boxes)[..2] == ["c", "a"]).unwrap();
        assert!(c_dead.owned().contains(&vip), "c unheard past its grace: a took its VIP");
        // c comes back and claims it.
        let h = beat(&c_dead, "c", 1, FLAG_QUORUM);
        c_dead.heard(&h, t0 + ms(310));
        let b = beat(&c_dead, "b", 3, FLAG_QUORUM);
        c_dead.heard(&b, t0 + ms(310));
        assert_eq!(c_dead.conflict(vip, mac_of("c"), t0 + ms(310)), Claim::Yielded { node: "c".into() });
        let t = c_dead.tick(t0 + ms(310));
        let change = t.owned.expect("the yield changes the set");
        assert!(change.given.contains(&vip));
        assert!(!c_dead.owned().contains(&vip));
    }

    #[test]
    fn two_boxes_need_the_witness_to_take_over() {
        let t0 = Instant::now();
        let pair = ["a", "b"];
        let peers = Peers::new("a", "c", HaTimings::default(), pair.map(String::from).to_vec(), t0, 1);
        let mut a = Ownership::new(peers, MAC_A, Some(pair.map(String::from).to_vec()), Vote::Witness);
        a.set_vips(&vips());
        hear_all(&mut a, &["b"], 1, t0);
        let t = a.tick(t0);
        assert_eq!(t.want_witness, Some(false), "the peer is heard: no witness needed");
        assert_eq!(*a.owned(), firsts("a", &pair));
        // b silent for two intervals: ask for the witness early.
        let t = a.tick(t0 + ms(100));
        assert_eq!(t.want_witness, Some(true));
        // Without the witness, a fences itself at takeover and takes nothing.
        let t = a.tick(t0 + ms(300));
        assert!(a.fenced(t0 + ms(300)));
        assert_eq!(t.owned, None);
        // With it, a has quorum (2 of 3 votes) and takes every VIP.
        a.set_witness_hold(Some(t0 + ms(1300)));
        assert!(a.holds_witness(t0 + ms(300)));
        let t = a.tick(t0 + ms(300));
        assert_eq!(t.fenced, Some(false));
        assert_eq!(t.owned.expect("b is dead: its VIPs move").owned, vips());
        // Standalone pairs vote alone: the box left alone takes over.
        assert_eq!(Ownership::vote_for(false, Some(&pair.map(String::from))), Vote::Alone);
        assert_eq!(Ownership::vote_for(false, Some(&["a".into(), "b".into(), "c".into()])), Vote::Nobody);
    }

    #[test]
    fn a_leaving_box_fences_at_once_and_says_so() {
        let t0 = Instant::now();
        let mut a = node("a", &["a", "b", "c"], t0);
        hear_all(&mut a, &["b", "c"], 1, t0);
        a.tick(t0);
        let f = a.leave(t0 + ms(5)).expect("a last beat");
        assert!(a.fenced(t0 + ms(5)));
        let h = heartbeat::parse(f.bytes()).unwrap();
        assert_eq!(h.flags & FLAG_LEAVING, FLAG_LEAVING);
    }
}

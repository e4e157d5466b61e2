//! The seam between *which* addresses this node owns and *how* the network is told.
//!
//! # Contract
//!
//! **Input, from control.** The owned set: every address this node must make reachable
//! through itself, each with its kind (a VIP, or a SNAT address of this node's own), its
//! [`Readiness`] (XDP attached; at least one backend taking new flows, as of the last
//! snapshot), and how it is announced ([`OwnedAddr::l2`], [`OwnedAddr::routed`]). It is
//! decided above this seam, never below it: without failover every VIP the node serves;
//! with it, what [`super::ownership::Ownership`] decides (rendezvous rank, quorum, yields);
//! in Kubernetes, the plan's owners; and, whatever ownership says, every routed VIP the node
//! serves (ECMP: each node that serves it advertises it, with `l2` false where the node does
//! not own it on the segment). The daemon hands the whole set to every speaker each time it
//! changes ([`Speaker::set_owned`]), and after every snapshot rebuild where BGP runs
//! (readiness may have changed); a speaker diffs it against what it announces.
//!
//! **Output, to the daemon.** [`Actions`]: announcements to send (the daemon builds a frame
//! for each interface the address is placed on, and sends it through that interface's
//! outbox, behind heartbeats), entries of the XDP program's VIP map, whether the
//! datapath's per-VIP modes changed (a new snapshot is due), routes to advertise or
//! withdraw (carried out by the routing daemon), and state changes for the logs. The daemon carries them out, and withholds frames while the node is fenced.
//!
//! **Time.** Speakers are `now`-taking machines: the daemon calls [`Speaker::tick`] by
//! [`Speaker::next_deadline`], and [`Speaker::reannounce_all`] when the fence lifts (what
//! was withheld must be said again). A speaker never reads a clock, sleeps or sends.
//!
//! **What a speaker must not do.** Decide ownership, touch snapshots or services, or
//! announce an address that is not in the last owned set. A VIP that the node serves but does
//! not own stays in the VIP map as forward-only (the daemon sees to it): packets that still
//! reach this node are forwarded, and no speaker answers for them.
//!
//! **The speakers.** [`super::announcer::Announcer`] speaks L2 (duplicate-address probes,
//! ARP/NDP answers through the VIP map's modes, gratuitous ARP and unsolicited adverts,
//! refreshes) for the owned addresses with `l2`. It announces them whether or not their
//! backends are ready, as an L2 owner must (the address is the node's on the link).
//! [`super::bgp::Routes`] speaks BGP through FRR: it advertises the ready owned VIPs that are
//! `routed` as host routes and withdraws the others; it is added to [`Speakers`] at start-up
//! where `bgp:` is configured. The plane and the ownership machine stay as they are.

use std::{net::IpAddr, time::Instant};

use super::{
    announcer::{Actions, Announcer},
    bgp::RouteOf,
};

/// Whether the node can serve an owned address now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The XDP program is attached and the workers run.
    pub attached: bool,
    /// At least one backend of a service on the address takes new flows (a SNAT address:
    /// always).
    pub backends: bool,
}

impl Readiness {
    /// Ready to take traffic.
    pub fn ready(&self) -> bool {
        self.attached && self.backends
    }
}

/// What an owned address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrKind {
    /// A service address.
    Vip,
    /// A source address of this node's SNAT services (replies come back to it).
    Snat,
}

/// One address this node owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedAddr {
    /// The address.
    pub addr: IpAddr,
    /// What it is.
    pub kind: AddrKind,
    /// Whether it can be served now.
    pub ready: Readiness,
    /// Announced by ARP/NDP on its interfaces (false: routed only, by BGP).
    pub l2: bool,
    /// Advertised by BGP, with these advertisements (none: not routed).
    pub routed: Option<RouteOf>,
}

/// An announcement protocol: one consumer of the owned set.
pub trait Speaker {
    /// A short name for logs (`l2`, `bgp`).
    fn name(&self) -> &'static str;
    /// The owned set is now `owned` (the whole set).
    fn set_owned(&mut self, owned: &[OwnedAddr], now: Instant) -> Actions;
    /// Time has come to `now`.
    fn tick(&mut self, now: Instant) -> Actions;
    /// When [`Speaker::tick`] is next due, if ever.
    fn next_deadline(&self) -> Option<Instant>;
    /// Say again everything announced (the fence lifted; announcements were withheld).
    fn reannounce_all(&mut self, now: Instant) -> Actions;
}

impl Speaker for Announcer {
    fn name(&self) -> &'static str {
        "l2"
    }

    fn set_owned(&mut self, owned: &[OwnedAddr], now: Instant) -> Actions {
        let addrs: Vec<IpAddr> = owned.iter().filter(|o| o.l2).map(|o| o.addr).collect();
        self.set_vips(&addrs, now)
    }

    fn tick(&mut self, now: Instant) -> Actions {
        Announcer::tick(self, now)
    }

    fn next_deadline(&self) -> Option<Instant> {
        Announcer::next_deadline(self)
    }

    fn reannounce_all(&mut self, now: Instant) -> Actions {
        let owned: Vec<IpAddr> = self.vips().iter().map(|(v, _)| *v).collect();
        let mut all = Actions::default();
        for v in owned {
            all.merge(self.reannounce(v, now));
        }
        all
    }
}

/// Every speaker of this node: L2 (always; its conflicts, states and per-VIP timings are
/// read through [`Speakers::l2`]) and any others added at start-up.
pub struct Speakers {
    /// The L2 announcer.
    pub l2: Announcer,
    others: Vec<Box<dyn Speaker + Send>>,
}

impl std::fmt::Debug for Speakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speakers")
            .field("l2", &self.l2)
            .field("others", &self.others.iter().map(|s| s.name()).collect::<Vec<_>>())
            .finish()
    }
}

impl Speakers {
    /// L2 only.
    pub fn new(l2: Announcer) -> Self {
        Speakers { l2, others: Vec::new() }
    }

    /// Adds a speaker; it hears the owned set from the next change on.
    pub fn add(&mut self, s: Box<dyn Speaker + Send>) {
        self.others.push(s);
    }

    fn each(&mut self, mut f: impl FnMut(&mut dyn Speaker) -> Actions) -> Actions {
        let mut all = f(&mut self.l2);
        for s in &mut self.others {
            all.merge(f(s.as_mut()));
        }
        all
    }

    /// Hands the owned set to every speaker.
    pub fn set_owned(&mut self, owned: &[OwnedAddr], now: Instant) -> Actions {
        self.each(|s| s.set_owned(owned, now))
    }

    /// Advances every speaker.
    pub fn tick(&mut self, now: Instant) -> Actions {
        self.each(|s| s.tick(now))
    }

    /// Every speaker says again what it announces.
    pub fn reannounce_all(&mut self, now: Instant) -> Actions {
        self.each(|s| s.reannounce_all(now))
    }

    /// The earliest deadline of any speaker.
    pub fn next_deadline(&self) -> Option<Instant> {
        std::iter::once(self.l2.next_deadline()).chain(self.others.iter().map(|s| s.next_deadline())).flatten().min()
    }
}

/// How the VIPs are announced where BGP is configured: the routed VIPs with their
/// advertisements, and those of them that get no ARP/NDP answers. Empty: L2 only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announced {
    /// VIPs advertised by BGP, with the advertisements that select them.
    pub routes: std::collections::BTreeMap<IpAddr, RouteOf>,
    /// Routed VIPs that are not announced on the segment.
    pub routed_only: std::collections::BTreeSet<IpAddr>,
}

/// The owned set: `vips` and the `snat` addresses, each VIP ready when `ready_vip` says so
/// and announced as `how` says (SNAT addresses: by L2, their replies come from the segment).
pub fn owned_set(
    vips: &[IpAddr],
    snat: &[IpAddr],
    attached: bool,
    ready_vip: impl Fn(IpAddr) -> bool,
    how: &Announced,
) -> Vec<OwnedAddr> {
    let vips = vips.iter().map(|v| OwnedAddr {
        addr: *v,
        kind: AddrKind::Vip,
        ready: Readiness { attached, backends: ready_vip(*v) },
        l2: !how.routed_only.contains(v),
        routed: how.routes.get(v).cloned(),
    });
    let snat = snat.iter().map(|a| OwnedAddr {
        addr: *a,
        kind: AddrKind::Snat,
        ready: Readiness { attached, backends: true },
        l2: true,
        routed: None,
    });
    vips.chain(snat).collect()
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        time::Duration,
    };

    use super::*;
    use crate::{
        control::{
            bgp::{RouteChange, Routes},
            AnnounceConfig,
        },
        wire::EthernetAddress,
    };

    #[test]
    fn every_speaker_hears_the_owned_set_l2_announces_ready_or_not_and_bgp_only_ready() {
        let t0 = Instant::now();
        let cfg = AnnounceConfig {
            probes: 0,
            probe_interval: Duration::ZERO,
            probe_wait: Duration::ZERO,
            garp_count: 1,
            garp_interval: Duration::from_millis(100),
            garp_offsets: None,
            refresh: None,
        };
        let (l2, _) = Announcer::new(cfg, &[EthernetAddress([2, 0, 0, 0, 0, 1])], &[], t0);
        let mut s = Speakers::new(l2);
        s.add(Box::new(Routes::new()));
        let v1: IpAddr = "192.0.2.1".parse().unwrap();
        let v2: IpAddr = "192.0.2.2".parse().unwrap();
        let snat: IpAddr = "192.0.2.100".parse().unwrap();
        // Both VIPs routed, and announced on the segment too.
        let both = Announced { routes: BTreeMap::from([(v1, vec![0]), (v2, vec![0])]), routed_only: BTreeSet::new() };
        let owned = owned_set(&[v1, v2], &[snat], true, |v| v == v1, &both);
        assert_eq!(owned[2].kind, AddrKind::Snat);
        let act = s.set_owned(&owned, t0);
        // L2: all three announced at once (one gratuitous request and reply each for IPv4).
        assert_eq!(act.say.len(), 6);
        assert_eq!(s.l2.vips().len(), 3);
        // BGP: only the ready VIP.
        assert_eq!(act.routes, [RouteChange { vip: v1, adverts: Some(vec![0]) }]);
        assert_eq!(s.next_deadline(), None, "one round, no refresh: nothing due");
        // The fence lifts: L2 says it all again.
        assert_eq!(s.reannounce_all(t0 + Duration::from_secs(1)).say.len(), 6);
        // Not attached: nothing is ready.
        assert!(owned_set(&[v1], &[], false, |_| true, &Announced::default()).iter().all(|o| !o.ready.ready()));
        // A routed-only VIP: BGP only, no ARP.
        let how = Announced { routes: BTreeMap::from([(v2, vec![0])]), routed_only: BTreeSet::from([v2]) };
        let mut s = Speakers::new(Announcer::new(cfg, &[EthernetAddress([2, 0, 0, 0, 0, 1])], &[], t0).0);
        s.set_owned(&owned_set(&[v1, v2], &[], true, |_| true, &how), t0);
        assert_eq!(s.l2.vips().iter().map(|(v, _)| *v).collect::<Vec<_>>(), [v1], "the routed-only VIP gets no ARP");
    }
}

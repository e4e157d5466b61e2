//! Which VIPs this node announces, and the duplicate-address detection that comes first.
//!
//! A VIP starts in `Probing`: xlb sends RFC 5227 ARP probes (IPv6: DAD solicitations) and
//! watches for anyone else claiming the address. If nobody does within the probe time, it
//! becomes `Announcing`: answered from then on, with gratuitous ARP (request and reply) or
//! unsolicited neighbour advertisements sent `garp_count` times. A claim seen while probing
//! puts the VIP in `Conflict`: it is not announced and not answered, and the conflict is
//! reported. A claim seen while announcing is counted and reported; who wins such a race
//! is decided by the failover machinery, not here.
//!
//! This is a pure state machine: [`Announcer::tick`] and [`Announcer::conflict`] take the
//! time and return what to do, so every step is testable without a network.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    abi::{VIP_OWNED, VIP_PROBING},
    lb::{
        neighbor::{announcement, Announcement, OutFrame},
        VipMode,
    },
    wire::EthernetAddress,
};

/// Timings of probing and announcing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Probes sent before a VIP is announced (0: announce at once, no detection).
    pub probes: u32,
    /// Time between probes.
    pub probe_interval: Duration,
    /// Time to wait for a claim after the last probe.
    pub probe_wait: Duration,
    /// Gratuitous ARP / unsolicited NA rounds when a VIP becomes owned.
    pub garp_count: u32,
    /// Time between those rounds.
    pub garp_interval: Duration,
    /// Instead of `garp_count` rounds `garp_interval` apart: rounds at these offsets from
    /// taking the VIP (failover: 0, 50, 250 ms and 1 s, so that a lost first round is made
    /// up at once and late listeners still hear one).
    pub garp_offsets: Option<[Duration; 4]>,
    /// Once owned, one more round every this long (below common switch FDB ageing).
    pub refresh: Option<Duration>,
}

/// The failover announcement schedule: rounds at 0, 50, 250 ms and 1 s.
pub const FAILOVER_GARP_OFFSETS: [Duration; 4] =
    [Duration::from_millis(0), Duration::from_millis(50), Duration::from_millis(250), Duration::from_millis(1000)];

/// How a VIP taken over is announced: rounds at `garp_offsets` from the takeover, then one
/// every `refresh` while owned. Set per L2AnnouncementPolicy in Kubernetes, by `ha` in the
/// YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Offsets of the four rounds from the takeover.
    pub garp_offsets: [Duration; 4],
    /// Between refresh rounds (none: no refresh).
    pub refresh: Option<Duration>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { garp_offsets: FAILOVER_GARP_OFFSETS, refresh: Some(Duration::from_secs(30)) }
    }
}

impl Timing {
    /// From `gratuitousArpMs` (four ascending offsets, at most 60000 ms) and
    /// `refreshSeconds` (0: none, at most 3600); defaults for what is left out. The error
    /// names the field and says what is wanted.
    pub fn parse(offsets_ms: Option<&[u64]>, refresh_s: Option<u64>) -> Result<Self, (&'static str, String)> {
        let mut t = Timing::default();
        if let Some(o) = offsets_ms {
            let ok = o.len() == 4 && o.windows(2).all(|w| w[0] <= w[1]) && o.iter().all(|x| *x <= 60_000);
            if !ok {
                return Err((
                    "gratuitousArpMs",
                    format!("{o:?}: give four ascending offsets in ms from the takeover, each at most 60000 (default [0, 50, 250, 1000])"),
                ));
            }
            for (slot, ms) in t.garp_offsets.iter_mut().zip(o) {
                *slot = Duration::from_millis(*ms);
            }
        }
        match refresh_s {
            None => {}
            Some(0) => t.refresh = None,
            Some(s) if s <= 3600 => t.refresh = Some(Duration::from_secs(s)),
            Some(s) => {
                return Err((
                    "refreshSeconds",
                    format!("{s} is over 3600; give the seconds between refreshes (default 30, below common switch FDB ageing; 0: none)"),
                ))
            }
        }
        Ok(t)
    }
}

impl AnnounceConfig {
    /// With `t`'s rounds and refresh.
    pub fn with_timing(mut self, t: Timing) -> Self {
        self.garp_offsets = Some(t.garp_offsets);
        self.refresh = t.refresh;
        self
    }

    fn rounds(&self) -> u32 {
        if self.garp_offsets.is_some() {
            4
        } else {
            self.garp_count
        }
    }

    /// Time from round `sent` to the next.
    fn gap(&self, sent: u32) -> Duration {
        match self.garp_offsets {
            Some(o) => {
                let i = usize::try_from(sent).unwrap_or(0).min(3);
                o[(i + 1).min(3)].saturating_sub(o[i])
            }
            None => self.garp_interval,
        }
    }
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            probes: 3,
            probe_interval: Duration::from_millis(100),
            probe_wait: Duration::from_millis(200),
            garp_count: 3,
            garp_interval: Duration::from_millis(250),
            garp_offsets: None,
            refresh: None,
        }
    }
}

/// Where a VIP stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipStatus {
    /// Probing for duplicates: `sent` probes so far.
    Probing {
        /// Probes sent.
        sent: u32,
        /// When the next step is due.
        next: Instant,
    },
    /// Owned and being announced: `sent` rounds so far.
    Announcing {
        /// Rounds sent.
        sent: u32,
        /// When the next round is due.
        next: Instant,
    },
    /// Owned; announcements done.
    Owned,
    /// Someone else holds it: not announced. Probing starts again at `retry`, with a
    /// backoff that doubles per conflict (5 s to 60 s), so a VIP whose holder went away,
    /// or that two starting nodes both probed, is not blocked for good.
    Conflict {
        /// Who.
        mac: EthernetAddress,
        /// When to probe again.
        retry: Instant,
        /// Conflicts in a row so far.
        attempts: u32,
    },
}

impl VipStatus {
    /// Word for logs and the stats file.
    pub fn name(&self) -> &'static str {
        match self {
            VipStatus::Probing { .. } => "probing",
            VipStatus::Announcing { .. } => "announcing",
            VipStatus::Owned => "owned",
            VipStatus::Conflict { .. } => "conflict",
        }
    }

    fn mode(&self) -> VipMode {
        match self {
            VipStatus::Announcing { .. } | VipStatus::Owned => VipMode::Answer,
            VipStatus::Probing { .. } | VipStatus::Conflict { .. } => VipMode::Watch,
        }
    }

    fn map_flags(&self) -> u32 {
        match self.mode() {
            VipMode::Answer => VIP_OWNED,
            VipMode::Watch => VIP_PROBING,
        }
    }
}

/// One announcement to send: what, about which address. The daemon builds the frame with
/// the MAC of each interface the address is placed on ([`Say::frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Say {
    /// The address announced or probed for.
    pub vip: IpAddr,
    /// The form.
    pub what: Announcement,
}

impl Say {
    /// The frame, sent from `mac`.
    pub fn frame(&self, mac: EthernetAddress) -> Option<OutFrame> {
        announcement(mac, self.vip, self.what)
    }
}

/// What the control loop must do after a step.
#[derive(Debug, Default)]
pub struct Actions {
    /// Announcements to send, on each interface their address is placed on.
    pub say: Vec<Say>,
    /// VIP map entries to set (flags; 0 removes).
    pub map_updates: Vec<(IpAddr, u32)>,
    /// Whether the VIP modes changed: a new snapshot is due.
    pub vips_changed: bool,
    /// Things worth a log line: (vip, old status, new status).
    pub transitions: Vec<(IpAddr, VipStatus, VipStatus)>,
    /// Conflicts seen for the first time from this MAC: (vip, mac, status when seen).
    pub new_conflicts: Vec<(IpAddr, EthernetAddress, VipStatus)>,
    /// VIPs no longer served (removed from the configuration).
    pub withdrawn: Vec<IpAddr>,
    /// Routes to advertise or withdraw (BGP).
    pub routes: Vec<super::bgp::RouteChange>,
}

impl Actions {
    /// Adds `other`'s actions after these.
    pub fn merge(&mut self, other: Actions) {
        self.say.extend(other.say);
        self.map_updates.extend(other.map_updates);
        self.vips_changed |= other.vips_changed;
        self.transitions.extend(other.transitions);
        self.new_conflicts.extend(other.new_conflicts);
        self.withdrawn.extend(other.withdrawn);
        self.routes.extend(other.routes);
    }
}

/// The VIPs of one interface and their announcement state.
#[derive(Debug)]
pub struct Announcer {
    cfg: AnnounceConfig,
    /// This node's MACs (one per interface): a claim from one of them is no conflict.
    own: Vec<EthernetAddress>,
    vips: Vec<(IpAddr, VipStatus)>,
    claims: HashMap<(IpAddr, EthernetAddress), u64>,
    claims_overflow: u64,
    conflicts_in_a_row: HashMap<IpAddr, u32>,
    /// Owned VIPs' next refresh round.
    refresh_due: HashMap<IpAddr, Instant>,
    /// VIPs announced with timings of their own (an L2AnnouncementPolicy's).
    timings: HashMap<IpAddr, Timing>,
}

/// Most distinct (VIP, MAC) claims remembered.
pub const MAX_CLAIMS: usize = 1024;

/// What announces a VIP: gratuitous ARP request and reply, or an unsolicited advert.
fn gratuitous_forms(vip: IpAddr) -> &'static [Announcement] {
    match vip {
        IpAddr::V4(_) => &[Announcement::GratuitousRequest, Announcement::GratuitousReply],
        IpAddr::V6(_) => &[Announcement::UnsolicitedAdvert],
    }
}

/// A random number from std's randomly keyed hasher: enough for jitter, no extra crate.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x0078_6c62);
    h.finish()
}

impl Announcer {
    /// Starts probing (or, with `probes == 0`, announcing) every VIP at `now`; `own`: the
    /// MACs of this node's interfaces.
    pub fn new(cfg: AnnounceConfig, own: &[EthernetAddress], vips: &[IpAddr], now: Instant) -> (Self, Actions) {
        // RFC 5227's PROBE_WAIT: a random delay before the first probe, so that nodes
        // started together do not probe in lockstep.
        let first = Self::first_status(&cfg, now);
        let mut a = Announcer {
            cfg,
            own: own.to_vec(),
            vips: vips.iter().map(|v| (*v, first)).collect(),
            claims: HashMap::new(),
            claims_overflow: 0,
            conflicts_in_a_row: HashMap::new(),
            refresh_due: HashMap::new(),
            timings: HashMap::new(),
        };
        let map_updates = a.vips.iter().map(|(v, s)| (*v, s.map_flags())).collect();
        let mut actions = Actions { map_updates, vips_changed: true, ..Actions::default() };
        let more = a.tick(now);
        actions.say = more.say;
        actions.transitions = more.transitions;
        actions.map_updates.extend(more.map_updates);
        (a, actions)
    }

    /// Where a new VIP starts: probing after a random PROBE_WAIT, or announcing at once.
    fn first_status(cfg: &AnnounceConfig, now: Instant) -> VipStatus {
        if cfg.probes == 0 {
            VipStatus::Announcing { sent: 0, next: now }
        } else {
            let spread = u64::try_from(cfg.probe_interval.as_millis()).unwrap_or(0).max(1);
            VipStatus::Probing { sent: 0, next: now + Duration::from_millis(random() % spread) }
        }
    }

    /// Makes `vips` the set of VIPs at `now`: new ones start probing (or announcing), gone
    /// ones are withdrawn (their map entries removed), the others carry on as they were.
    pub fn set_vips(&mut self, vips: &[IpAddr], now: Instant) -> Actions {
        let mut actions = Actions::default();
        let before = self.vips.len();
        let wanted: HashSet<IpAddr> = vips.iter().copied().collect();
        self.vips.retain(|(v, _)| {
            let keep = wanted.contains(v);
            if !keep {
                actions.map_updates.push((*v, 0));
                actions.withdrawn.push(*v);
            }
            keep
        });
        self.claims.retain(|(v, _), _| wanted.contains(v));
        self.refresh_due.retain(|v, _| wanted.contains(v));
        let first = Self::first_status(&self.cfg, now);
        let mut have: HashSet<IpAddr> = self.vips.iter().map(|(v, _)| *v).collect();
        for v in vips {
            if have.insert(*v) {
                self.vips.push((*v, first));
                actions.map_updates.push((*v, first.map_flags()));
            }
        }
        actions.vips_changed = self.vips.len() != before || !actions.map_updates.is_empty();
        let more = self.tick(now);
        actions.say = more.say;
        actions.transitions = more.transitions;
        actions.map_updates.extend(more.map_updates);
        actions.vips_changed |= more.vips_changed;
        actions
    }

    /// Timings of their own for these VIPs (the others use the configured ones).
    pub fn set_timings(&mut self, timings: HashMap<IpAddr, Timing>) {
        self.timings = timings;
    }

    /// Every VIP and its status.
    pub fn vips(&self) -> &[(IpAddr, VipStatus)] {
        &self.vips
    }

    /// Claims by MACs past the first MAX_CLAIMS, counted only.
    pub fn claims_overflow(&self) -> u64 {
        self.claims_overflow
    }

    /// Claims seen so far, by (VIP, MAC).
    pub fn claims(&self) -> &HashMap<(IpAddr, EthernetAddress), u64> {
        &self.claims
    }

    /// How the datapath must treat each VIP now.
    pub fn vip_modes(&self) -> impl Iterator<Item = (IpAddr, VipMode)> + '_ {
        self.vips.iter().map(|(v, s)| (*v, s.mode()))
    }

    /// When the next step is due, if any VIP is still probing or announcing.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.vips
            .iter()
            .filter_map(|(_, s)| match s {
                VipStatus::Probing { next, .. } | VipStatus::Announcing { next, .. } => Some(*next),
                VipStatus::Conflict { retry, .. } => Some(*retry),
                VipStatus::Owned => None,
            })
            .chain(self.refresh_due.values().copied())
            .min()
    }

    /// Advances every VIP whose step is due at `now`.
    pub fn tick(&mut self, now: Instant) -> Actions {
        let mut actions = Actions::default();
        let mut changed = false;
        let base = self.cfg;
        for (vip, status) in &mut self.vips {
            let cfg = self.timings.get(vip).map_or(base, |t| base.with_timing(*t));
            let old = *status;
            match *status {
                VipStatus::Conflict { retry, .. } if retry <= now => {
                    *status = VipStatus::Probing { sent: 0, next: now };
                }
                _ => {}
            }
            match *status {
                VipStatus::Probing { sent, next } if next <= now => {
                    if sent < cfg.probes {
                        actions.say.push(Say { vip: *vip, what: Announcement::Probe });
                        let wait = if sent + 1 == cfg.probes { cfg.probe_wait } else { cfg.probe_interval };
                        *status = VipStatus::Probing { sent: sent + 1, next: now + wait };
                    } else {
                        *status = VipStatus::Announcing { sent: 0, next: now };
                    }
                }
                _ => {}
            }
            if let VipStatus::Announcing { sent, next } = *status {
                if next <= now {
                    let forms = gratuitous_forms(*vip);
                    if sent < cfg.rounds() {
                        actions.say.extend(forms.iter().map(|f| Say { vip: *vip, what: *f }));
                        *status = VipStatus::Announcing { sent: sent + 1, next: now + cfg.gap(sent) };
                    }
                    if sent + 1 >= cfg.rounds() {
                        *status = VipStatus::Owned;
                        self.conflicts_in_a_row.remove(vip);
                        if let Some(r) = cfg.refresh {
                            self.refresh_due.insert(*vip, now + r);
                        }
                    }
                }
            } else if let (VipStatus::Owned, Some(r)) = (*status, cfg.refresh) {
                let due = self.refresh_due.entry(*vip).or_insert(now + r);
                if *due <= now {
                    let forms = gratuitous_forms(*vip);
                    actions.say.extend(forms.iter().map(|f| Say { vip: *vip, what: *f }));
                    *due = now + r;
                }
            }
            if old.mode() != status.mode() {
                changed = true;
                actions.map_updates.push((*vip, status.map_flags()));
            }
            if old.name() != status.name() {
                actions.transitions.push((*vip, old, *status));
            }
        }
        actions.vips_changed = changed;
        actions
    }

    /// Announces an owned VIP again from the first round (after winning a conflict).
    pub fn reannounce(&mut self, vip: IpAddr, now: Instant) -> Actions {
        if let Some((_, s)) = self.vips.iter_mut().find(|(v, _)| *v == vip) {
            if matches!(s, VipStatus::Owned | VipStatus::Announcing { .. }) {
                *s = VipStatus::Announcing { sent: 0, next: now };
            }
        }
        self.tick(now)
    }

    /// Someone with `mac` claimed `vip` (seen by a worker) at `now`.
    pub fn conflict(&mut self, vip: IpAddr, mac: EthernetAddress, now: Instant) -> Actions {
        let mut actions = Actions::default();
        if self.own.contains(&mac) {
            return actions;
        }
        let Some((_, status)) = self.vips.iter_mut().find(|(v, _)| *v == vip) else { return actions };
        let old = *status;
        // Remember each claimant once; past MAX_CLAIMS distinct ones (a forged flood) they
        // are only counted, so the map cannot grow without bound.
        let known = self.claims.len();
        match self.claims.get_mut(&(vip, mac)) {
            Some(n) => *n += 1,
            None if known < MAX_CLAIMS => {
                self.claims.insert((vip, mac), 1);
                actions.new_conflicts.push((vip, mac, old));
            }
            None => self.claims_overflow += 1,
        }
        if let VipStatus::Probing { .. } = old {
            let attempts = self.conflicts_in_a_row.entry(vip).or_insert(0);
            *attempts += 1;
            let backoff = Duration::from_secs(5 << (*attempts - 1).min(4)).min(Duration::from_secs(60));
            let jitter = Duration::from_millis(random() % 1000);
            *status = VipStatus::Conflict { mac, retry: now + backoff + jitter, attempts: *attempts };
            actions.transitions.push((vip, old, *status));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::wire::{parse::Network, parse_frame, ArpOperation, Error};

    const MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x10]);
    const OTHER: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x20]);
    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x64));

    #[test]
    fn failover_schedule_then_refresh() {
        let now = Instant::now();
        let cfg = AnnounceConfig {
            probes: 0,
            garp_offsets: Some(FAILOVER_GARP_OFFSETS),
            refresh: Some(Duration::from_secs(30)),
            ..AnnounceConfig::default()
        };
        let (mut a, first) = Announcer::new(cfg, &[MAC], &[V4], now);
        // Round 1 at once (request + reply), then 50, 250 ms and 1 s, then every 30 s.
        assert_eq!(first.say.len(), 2);
        let sent = run(&mut a, now + Duration::from_secs(70));
        let times: Vec<u128> = sent.iter().step_by(2).map(|(t, _)| t.duration_since(now).as_millis()).collect();
        assert_eq!(times, [50, 250, 1000, 31_000, 61_000]);
        assert_eq!(a.vips()[0].1, VipStatus::Owned);
        // Winning a conflict starts the rounds again.
        let again = a.reannounce(V4, now + Duration::from_secs(70));
        assert_eq!(again.say.len(), 2);
        assert!(matches!(a.vips()[0].1, VipStatus::Announcing { sent: 1, .. }));
    }

    /// Runs the announcer until `until`, returning every frame sent with its time.
    fn run(a: &mut Announcer, until: Instant) -> Vec<(Instant, OutFrame)> {
        let mut out = Vec::new();
        while let Some(next) = a.next_deadline() {
            if next > until {
                break;
            }
            out.extend(a.tick(next).say.iter().filter_map(|s| s.frame(MAC)).map(|f| (next, f)));
        }
        out
    }

    #[test]
    fn vips_come_and_go_at_run_time() {
        let cfg = AnnounceConfig { probes: 0, ..AnnounceConfig::default() };
        let (a4, b4) = (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));
        let now = Instant::now();
        let (mut a, _) = Announcer::new(cfg, &[EthernetAddress([2, 0, 0, 0, 0, 1])], &[a4], now);
        let act = a.set_vips(&[b4], now);
        assert_eq!(act.withdrawn, vec![a4]);
        assert!(act.map_updates.contains(&(a4, 0)));
        assert!(act.map_updates.iter().any(|(v, f)| *v == b4 && *f != 0));
        assert!(act.vips_changed);
        // The new VIP is announced at once (probes: 0).
        assert!(!act.say.is_empty());
        assert_eq!(a.vips().iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![b4]);
        // The same set again changes nothing.
        let again = a.set_vips(&[b4], now);
        assert!(again.map_updates.is_empty() && again.withdrawn.is_empty());
    }

    #[test]
    fn probes_then_announces() -> Result<(), Error> {
        let cfg = AnnounceConfig::default();
        let t0 = Instant::now();
        let (mut a, first) = Announcer::new(cfg, &[MAC], &[V4], t0);
        assert_eq!(first.map_updates, vec![(V4, VIP_PROBING)]);
        assert!(first.vips_changed);
        assert_eq!(a.vip_modes().collect::<Vec<_>>(), vec![(V4, VipMode::Watch)]);
        // A random PROBE_WAIT of 0 sends the first probe at once, among the first actions.
        let mut sent: Vec<(Instant, OutFrame)> =
            first.say.iter().filter_map(|s| s.frame(MAC)).map(|f| (t0, f)).collect();
        sent.extend(run(&mut a, t0 + Duration::from_secs(10)));
        let arps: Vec<(Instant, ArpOperation, Ipv4Addr, Ipv4Addr)> = sent
            .iter()
            .filter_map(|(t, f)| match parse_frame(f.bytes()).map(|p| p.network) {
                Ok(Network::Arp(arp)) => Some((*t, arp.operation, arp.spa, arp.tpa)),
                _ => None,
            })
            .collect();
        let probes: Vec<_> = arps.iter().filter(|x| x.2 == Ipv4Addr::UNSPECIFIED).collect();
        let announces: Vec<_> = arps.iter().filter(|x| x.2 != Ipv4Addr::UNSPECIFIED).collect();
        assert_eq!(probes.len(), 3);
        assert!(probes.iter().all(|p| p.1 == ArpOperation::Request && p.3 == Ipv4Addr::new(10, 0, 0, 100)));
        // The first probe waits a random part of the probe interval (RFC 5227 PROBE_WAIT).
        assert!(probes[0].0 - t0 < cfg.probe_interval);
        assert_eq!(announces.len(), 6, "3 rounds of request + reply");
        assert!(announces.iter().all(|x| x.2 == Ipv4Addr::new(10, 0, 0, 100) && x.2 == x.3));
        // Probes 100 ms apart, 200 ms of waiting, then rounds 250 ms apart.
        assert_eq!(announces[0].0 - probes[2].0, cfg.probe_wait);
        assert_eq!(announces[5].0 - announces[0].0, 2 * cfg.garp_interval);
        assert!(announces[..5].iter().all(|x| x.0 <= announces[0].0 + 2 * cfg.garp_interval));
        assert_eq!(a.vips(), &[(V4, VipStatus::Owned)]);
        assert!(a.next_deadline().is_none());
        Ok(())
    }

    #[test]
    fn claim_while_probing_blocks_the_vip_then_retries() {
        let t0 = Instant::now();
        let (mut a, _) = Announcer::new(AnnounceConfig::default(), &[MAC], &[V4, V6], t0);
        let act = a.conflict(V6, OTHER, t0);
        assert_eq!(act.new_conflicts.len(), 1);
        assert!(matches!(a.vips()[1].1, VipStatus::Conflict { mac, attempts: 1, .. } if mac == OTHER));
        // A repeat is counted but not reported again.
        assert!(a.conflict(V6, OTHER, t0).new_conflicts.is_empty());
        assert_eq!(a.claims().get(&(V6, OTHER)), Some(&2));
        // For the next 4 s the v4 VIP comes up and nothing at all is sent for the v6 one.
        let v6_frames = |sent: &[(Instant, OutFrame)]| {
            sent.iter()
                .filter(|(_, f)| matches!(parse_frame(f.bytes()).map(|p| p.network), Ok(Network::Ipv6 { .. })))
                .count()
        };
        let sent = run(&mut a, t0 + Duration::from_secs(4));
        assert_eq!(v6_frames(&sent), 0, "probing stopped at the conflict, and nothing was advertised");
        assert_eq!(a.vips()[0].1, VipStatus::Owned);
        // After the backoff (5 s + up to 1 s) it probes again, and with no claim this time
        // it is announced.
        let sent = run(&mut a, t0 + Duration::from_secs(10));
        assert_eq!(v6_frames(&sent), 3 + 3, "3 DAD probes, then 3 unsolicited advertisements");
        assert_eq!(a.vips()[1].1, VipStatus::Owned);
    }

    #[test]
    fn claim_while_owned_is_reported_not_acted_on() {
        let cfg = AnnounceConfig { probes: 0, ..AnnounceConfig::default() };
        let now = Instant::now();
        let (mut a, first) = Announcer::new(cfg, &[MAC], &[V4], now);
        assert!(first.vips_changed);
        assert_eq!(a.vip_modes().collect::<Vec<_>>(), vec![(V4, VipMode::Answer)]);
        let act = a.conflict(V4, OTHER, now);
        assert_eq!(act.new_conflicts, vec![(V4, OTHER, a.vips()[0].1)]);
        assert!(act.transitions.is_empty());
        assert!(a.conflict(V4, MAC, now).new_conflicts.is_empty(), "our own MAC is no conflict");
    }

    #[test]
    fn a_flood_of_forged_claimants_is_bounded() {
        let now = Instant::now();
        let (mut a, _) = Announcer::new(AnnounceConfig { probes: 0, ..AnnounceConfig::default() }, &[MAC], &[V4], now);
        for i in 0..5000u32 {
            let b = i.to_be_bytes();
            a.conflict(V4, EthernetAddress([2, 0xee, b[0], b[1], b[2], b[3]]), now);
        }
        assert_eq!(a.claims().len(), MAX_CLAIMS);
        assert_eq!(a.claims_overflow(), 5000 - MAX_CLAIMS as u64);
    }
}

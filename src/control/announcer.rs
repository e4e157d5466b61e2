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
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    io::xdp::{VIP_OWNED, VIP_PROBING},
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
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            probes: 3,
            probe_interval: Duration::from_millis(100),
            probe_wait: Duration::from_millis(200),
            garp_count: 3,
            garp_interval: Duration::from_millis(250),
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
    /// Someone else holds it: not announced.
    Conflict {
        /// Who.
        mac: EthernetAddress,
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

/// What the control loop must do after a step.
#[derive(Debug, Default)]
pub struct Actions {
    /// Frames to send out of the interface.
    pub frames: Vec<OutFrame>,
    /// VIP map entries to set (flags; 0 removes).
    pub map_updates: Vec<(IpAddr, u32)>,
    /// Whether the VIP modes changed: a new snapshot is due.
    pub vips_changed: bool,
    /// Things worth a log line: (vip, old status, new status).
    pub transitions: Vec<(IpAddr, VipStatus, VipStatus)>,
    /// Conflicts seen for the first time from this MAC: (vip, mac, status when seen).
    pub new_conflicts: Vec<(IpAddr, EthernetAddress, VipStatus)>,
}

/// The VIPs of one interface and their announcement state.
#[derive(Debug)]
pub struct Announcer {
    cfg: AnnounceConfig,
    mac: EthernetAddress,
    vips: Vec<(IpAddr, VipStatus)>,
    claims: HashMap<(IpAddr, EthernetAddress), u64>,
}

impl Announcer {
    /// Starts probing (or, with `probes == 0`, announcing) every VIP at `now`.
    pub fn new(cfg: AnnounceConfig, mac: EthernetAddress, vips: &[IpAddr], now: Instant) -> (Self, Actions) {
        let first = if cfg.probes == 0 {
            VipStatus::Announcing { sent: 0, next: now }
        } else {
            VipStatus::Probing { sent: 0, next: now }
        };
        let mut a = Announcer { cfg, mac, vips: vips.iter().map(|v| (*v, first)).collect(), claims: HashMap::new() };
        let map_updates = a.vips.iter().map(|(v, s)| (*v, s.map_flags())).collect();
        let mut actions = Actions { map_updates, vips_changed: true, ..Actions::default() };
        let more = a.tick(now);
        actions.frames = more.frames;
        actions.transitions = more.transitions;
        actions.map_updates.extend(more.map_updates);
        (a, actions)
    }

    /// Every VIP and its status.
    pub fn vips(&self) -> &[(IpAddr, VipStatus)] {
        &self.vips
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
                _ => None,
            })
            .min()
    }

    /// Advances every VIP whose step is due at `now`.
    pub fn tick(&mut self, now: Instant) -> Actions {
        let mut actions = Actions::default();
        let mut changed = false;
        let cfg = self.cfg;
        for (vip, status) in &mut self.vips {
            let old = *status;
            match *status {
                VipStatus::Probing { sent, next } if next <= now => {
                    if sent < cfg.probes {
                        actions.frames.extend(announcement(self.mac, *vip, Announcement::Probe));
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
                    let forms: &[Announcement] = match vip {
                        IpAddr::V4(_) => &[Announcement::GratuitousRequest, Announcement::GratuitousReply],
                        IpAddr::V6(_) => &[Announcement::UnsolicitedAdvert],
                    };
                    if sent < cfg.garp_count {
                        actions.frames.extend(forms.iter().filter_map(|f| announcement(self.mac, *vip, *f)));
                        *status = VipStatus::Announcing { sent: sent + 1, next: now + cfg.garp_interval };
                    }
                    if sent + 1 >= cfg.garp_count {
                        *status = VipStatus::Owned;
                    }
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

    /// Someone with `mac` claimed `vip` (seen by a worker).
    pub fn conflict(&mut self, vip: IpAddr, mac: EthernetAddress) -> Actions {
        let mut actions = Actions::default();
        if mac == self.mac {
            return actions;
        }
        let Some((_, status)) = self.vips.iter_mut().find(|(v, _)| *v == vip) else { return actions };
        let seen = self.claims.entry((vip, mac)).or_insert(0);
        *seen += 1;
        let old = *status;
        if *seen == 1 {
            actions.new_conflicts.push((vip, mac, old));
        }
        if let VipStatus::Probing { .. } = old {
            *status = VipStatus::Conflict { mac };
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

    fn arp_ops(frames: &[OutFrame]) -> Result<Vec<(ArpOperation, Ipv4Addr)>, Error> {
        let mut out = Vec::new();
        for f in frames {
            if let Network::Arp(a) = parse_frame(f.bytes())?.network {
                out.push((a.operation, a.spa));
            }
        }
        Ok(out)
    }

    #[test]
    fn probes_then_announces() -> Result<(), Error> {
        let cfg = AnnounceConfig::default();
        let t0 = Instant::now();
        let (mut a, first) = Announcer::new(cfg, MAC, &[V4], t0);
        assert_eq!(first.map_updates, vec![(V4, VIP_PROBING)]);
        assert!(first.vips_changed);
        assert_eq!(a.vip_modes().collect::<Vec<_>>(), vec![(V4, VipMode::Watch)]);
        assert_eq!(arp_ops(&first.frames)?, vec![(ArpOperation::Request, Ipv4Addr::UNSPECIFIED)]);
        let mut t = t0;
        let mut probes = 1;
        let mut announce_frames = Vec::new();
        while let Some(next) = a.next_deadline() {
            t = next;
            let act = a.tick(t);
            for f in &act.frames {
                if let Network::Arp(arp) = parse_frame(f.bytes())?.network {
                    if arp.spa == Ipv4Addr::UNSPECIFIED {
                        probes += 1;
                    } else {
                        announce_frames.push((arp.operation, arp.spa, arp.tpa));
                    }
                }
            }
            if act.vips_changed {
                assert_eq!(a.vip_modes().collect::<Vec<_>>(), vec![(V4, VipMode::Answer)]);
                assert_eq!(act.map_updates, vec![(V4, VIP_OWNED)]);
            }
        }
        assert_eq!(probes, 3);
        assert_eq!(announce_frames.len(), 6, "3 rounds of request + reply");
        assert!(announce_frames.iter().all(|(_, spa, tpa)| *spa == Ipv4Addr::new(10, 0, 0, 100) && spa == tpa));
        // 2 probe intervals + the wait + 2 announce intervals.
        assert_eq!(t - t0, Duration::from_millis(100 + 100 + 200 + 250 + 250));
        assert_eq!(a.vips(), &[(V4, VipStatus::Owned)]);
        Ok(())
    }

    #[test]
    fn claim_while_probing_blocks_the_vip() {
        let t0 = Instant::now();
        let (mut a, _) = Announcer::new(AnnounceConfig::default(), MAC, &[V4, V6], t0);
        let act = a.conflict(V6, OTHER);
        assert_eq!(act.new_conflicts.len(), 1);
        assert!(matches!(a.vips()[1].1, VipStatus::Conflict { mac } if mac == OTHER));
        // A repeat is counted but not reported again.
        assert!(a.conflict(V6, OTHER).new_conflicts.is_empty());
        assert_eq!(a.claims().get(&(V6, OTHER)), Some(&2));
        // Run to the end: the v4 VIP is owned, the v6 one never announced.
        let mut v6_frames = 0;
        while let Some(next) = a.next_deadline() {
            for f in a.tick(next).frames {
                if matches!(parse_frame(f.bytes()).map(|p| p.network), Ok(Network::Ipv6 { .. })) {
                    v6_frames += 1;
                }
            }
        }
        assert_eq!(v6_frames, 0, "probing stopped at the conflict, and nothing was advertised");
        assert_eq!(a.vips()[0].1, VipStatus::Owned);
        assert!(matches!(a.vips()[1].1, VipStatus::Conflict { .. }));
    }

    #[test]
    fn claim_while_owned_is_reported_not_acted_on() {
        let cfg = AnnounceConfig { probes: 0, ..AnnounceConfig::default() };
        let (mut a, first) = Announcer::new(cfg, MAC, &[V4], Instant::now());
        assert!(first.vips_changed);
        assert_eq!(a.vip_modes().collect::<Vec<_>>(), vec![(V4, VipMode::Answer)]);
        let act = a.conflict(V4, OTHER);
        assert_eq!(act.new_conflicts, vec![(V4, OTHER, a.vips()[0].1)]);
        assert!(act.transitions.is_empty());
        assert!(a.conflict(V4, MAC).new_conflicts.is_empty(), "our own MAC is no conflict");
    }
}

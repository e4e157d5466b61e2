//! BGP: which VIPs are routed, how FRR is told, and the speaker that advertises them.
//!
//! xlb speaks BGP through FRR (bgpd, bfdd, zebra), never through BGP code of its own. This
//! module is the pure half: the model of the `bgp:` settings ([`BgpConfig`]), the FRR
//! configuration they render to ([`render`]), the vtysh commands that advertise and
//! withdraw VIPs without a reload ([`route_commands`]), and [`Routes`], the [`Speaker`] that
//! decides which VIPs are advertised: every ready VIP that an advertisement selects, on
//! every node that serves it (ECMP: each node builds the same Maglev tables, so a flow that
//! the router moves to another node still reaches its backend). The daemon
//! (`daemon/frr.rs`) runs FRR and carries the commands out.
//!
//! It must not start processes, read clocks or touch the network.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use super::{
    announcer::Actions,
    speaker::{AddrKind, OwnedAddr, Speaker},
};

/// The `bgp:` settings: this node's speaker, its peers, BFD profiles and advertisements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// This node's AS number (`localASN`).
    pub asn: u32,
    /// The router ID (`routerID`; none: the first IPv4 address of the first interface).
    pub router_id: Option<Ipv4Addr>,
    /// Whether bgpd accepts connections on port 179 (`listen`; default: no, it connects
    /// out to its peers, and nothing listens on the host's port 179).
    pub listen: bool,
    /// The routers this node peers with.
    pub peers: Vec<Peer>,
    /// BFD profiles, by name.
    pub bfd_profiles: Vec<BfdProfile>,
    /// Which VIPs are advertised, and with which attributes.
    pub advertisements: Vec<Advertisement>,
}

/// A BGP peer (field names from Cilium's `CiliumBGPPeeringPolicy` and MetalLB's `BGPPeer`).
/// Its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its address (`peerAddress`).
    pub address: IpAddr,
    /// Its AS number (`peerASN`).
    pub asn: u32,
    /// Its port (`peerPort`, default 179).
    pub port: u16,
    /// Seconds without a message before the session is dropped (`holdTimeSeconds`, 90).
    pub hold_time: u16,
    /// Seconds between keepalives (`keepAliveTimeSeconds`, 30).
    pub keepalive: u16,
    /// Seconds between connection attempts (`connectRetryTimeSeconds`, 120).
    pub connect_retry: u16,
    /// Hops to an eBGP peer that is not on a connected network (`eBGPMultihopTTL`).
    pub ebgp_multihop: Option<u8>,
    /// The address sessions are opened from (`sourceAddress`).
    pub source: Option<IpAddr>,
    /// The BFD profile that watches the session (`bfdProfile`; none: no BFD).
    pub bfd_profile: Option<String>,
    /// The TCP MD5 password (read from `passwordFile`).
    pub password: Option<String>,
    /// Graceful restart (`gracefulRestart`, off by default: a node that stops must be
    /// left at once, not waited for).
    pub graceful_restart: bool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("address", &self.address)
            .field("asn", &self.asn)
            .field("port", &self.port)
            .field("hold_time", &self.hold_time)
            .field("keepalive", &self.keepalive)
            .field("connect_retry", &self.connect_retry)
            .field("ebgp_multihop", &self.ebgp_multihop)
            .field("source", &self.source)
            .field("bfd_profile", &self.bfd_profile)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("graceful_restart", &self.graceful_restart)
            .finish()
    }
}

/// A BFD profile (MetalLB's `BFDProfile` fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdProfile {
    /// Its name, as peers' `bfdProfile` gives it.
    pub name: String,
    /// Slowest rate this node wants to receive at, in ms (`receiveInterval`, 300).
    pub receive_ms: u32,
    /// Rate this node sends at, in ms (`transmitInterval`, 300).
    pub transmit_ms: u32,
    /// Packets missed before the session is down (`detectMultiplier`, 3).
    pub multiplier: u8,
    /// Waits for the peer to start (`passiveMode`).
    pub passive: bool,
    /// Lowest TTL accepted from a multihop peer (`minimumTtl`, 254).
    pub minimum_ttl: u8,
}

/// A BGP community, as MetalLB's `BGPAdvertisement` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Community {
    /// `ASN:VALUE` (16 bits each).
    Standard(u16, u16),
    /// `large:GLOBAL:LOCAL1:LOCAL2` (32 bits each).
    Large(u32, u32, u32),
    /// A well-known community, by FRR's name for it.
    WellKnown(&'static str),
}

/// The well-known communities by the names users write, and FRR's spelling.
const WELL_KNOWN: &[(&str, &str)] = &[
    ("no-export", "no-export"),
    ("no-advertise", "no-advertise"),
    ("local-as", "local-AS"),
    ("no-peer", "no-peer"),
    ("blackhole", "blackhole"),
    ("graceful-shutdown", "graceful-shutdown"),
];

impl Community {
    /// Parses `65000:100`, `large:64512:1:2` or a well-known name (`no-export`).
    pub fn parse(s: &str) -> Result<Community, String> {
        let t = s.trim();
        if let Some((_, frr)) = WELL_KNOWN.iter().find(|(n, _)| n.eq_ignore_ascii_case(t)) {
            return Ok(Community::WellKnown(frr));
        }
        if let Some(rest) = t.strip_prefix("large:") {
            let parts: Vec<Option<u32>> = rest.split(':').map(|p| p.parse().ok()).collect();
            if let [Some(a), Some(b), Some(c)] = parts[..] {
                return Ok(Community::Large(a, b, c));
            }
            return Err(format!("{s:?} is not large:GLOBAL:LOCAL1:LOCAL2 with 32-bit numbers"));
        }
        if let Some((a, b)) = t.split_once(':') {
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                return Ok(Community::Standard(a, b));
            }
        }
        let names: Vec<&str> = WELL_KNOWN.iter().map(|(n, _)| *n).collect();
        Err(format!(
            "{s:?} is not ASN:VALUE (16-bit numbers, e.g. 65000:100), large:GLOBAL:LOCAL1:LOCAL2, or one of {}",
            names.join(", ")
        ))
    }
}

impl std::fmt::Display for Community {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Community::Standard(a, b) => write!(f, "{a}:{b}"),
            Community::Large(a, b, c) => write!(f, "{a}:{b}:{c}"),
            Community::WellKnown(n) => f.write_str(n),
        }
    }
}

/// Which VIPs go to the peers, and with what (MetalLB's `BGPAdvertisement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// What routes name it by ([`RouteOf`]), the same across changes of the others: its
    /// index in a file, a number from its name in Kubernetes (where objects come and go in
    /// any order).
    pub id: usize,
    /// The pools whose VIPs it selects (`pools`).
    pub pools: Vec<String>,
    /// The services whose VIPs it selects (`services`); with `pools` empty too: every VIP.
    pub services: Vec<String>,
    /// Communities set on the routes.
    pub communities: Vec<Community>,
    /// LOCAL_PREF set on the routes (iBGP peers only).
    pub local_pref: Option<u32>,
    /// Whether the VIPs it selects are also announced by ARP/NDP on the segment (`l2`;
    /// default: no, they are reached through the routers only).
    pub l2: bool,
    /// The peers its VIPs go to (`peers`; none: every peer).
    pub peers: Vec<IpAddr>,
    /// The prefix length its IPv4 VIPs are advertised with (`aggregationLength`, 32: each
    /// VIP alone; shorter: the prefix that holds it, advertised while any VIP in it is).
    pub aggregation_v4: u8,
    /// The same for IPv6 (`aggregationLengthV6`, 128).
    pub aggregation_v6: u8,
}

impl Advertisement {
    /// Whether it selects the VIP of `service`, drawn from (or inside) `pool`.
    pub fn selects(&self, service: &str, pool: Option<&str>) -> bool {
        (self.pools.is_empty() && self.services.is_empty())
            || self.services.iter().any(|s| s == service)
            || pool.is_some_and(|p| self.pools.iter().any(|x| x == p))
    }
}

/// A VIP's route: the advertisements that select it (their [`Advertisement::id`]s,
/// ascending).
pub type RouteOf = Vec<usize>;

/// Adds advertisement `id` to `route` (kept ascending, each once).
pub fn add_advert(route: &mut RouteOf, id: usize) {
    if let Err(at) = route.binary_search(&id) {
        route.insert(at, id);
    }
}

/// The advertisement `id` names (none: it is gone from the configuration).
fn advert(cfg: &BgpConfig, id: usize) -> Option<&Advertisement> {
    cfg.advertisements.iter().find(|a| a.id == id)
}

/// The route map that sets `adverts`' attributes (none: they set nothing).
fn route_map_name(adverts: &[usize]) -> String {
    let ids: Vec<String> = adverts.iter().map(ToString::to_string).collect();
    format!("xlb-adv-{}", ids.join("-"))
}

/// The second field of the large communities that mark a route, inside the node, with the
/// advertisements that select it: each peer's outbound route map passes the routes marked
/// by an advertisement that goes to it, and strips the marks (they never leave the node).
/// Always there, so that an advertisement that starts or stops naming `peers` changes lists,
/// never whether a route carries marks (FRR applies route-map changes after a delay).
const MARK: u32 = 4_294_967_294;

/// The mark of advertisement `id`.
fn mark(cfg: &BgpConfig, id: usize) -> String {
    format!("{}:{MARK}:{id}", cfg.asn)
}

/// The outbound route map of `peer` (by its address: peers come and go in any order).
fn out_map(peer: IpAddr) -> String {
    format!("xlb-to-{}", peer.to_string().replace(':', "-"))
}

/// The route map of `adverts`, defined (it may be said again: vtysh replaces its lines).
fn route_map(cfg: &BgpConfig, adverts: &[usize], out: &mut Vec<String>) {
    let chosen = || adverts.iter().filter_map(|i| advert(cfg, *i));
    let mut standard: BTreeSet<String> = BTreeSet::new();
    let mut large: BTreeSet<String> = chosen().map(|a| mark(cfg, a.id)).collect();
    for c in chosen().flat_map(|a| a.communities.iter()) {
        match c {
            Community::Large(..) => large.insert(c.to_string()),
            _ => standard.insert(c.to_string()),
        };
    }
    // Several advertisements select the VIP: the highest preference wins.
    let local_pref = chosen().filter_map(|a| a.local_pref).max();
    out.push(format!("route-map {} permit 10", route_map_name(adverts)));
    if !standard.is_empty() {
        out.push(format!(" set community {}", standard.into_iter().collect::<Vec<_>>().join(" ")));
    }
    if !large.is_empty() {
        out.push(format!(" set large-community {}", large.into_iter().collect::<Vec<_>>().join(" ")));
    }
    if let Some(p) = local_pref {
        out.push(format!(" set local-preference {p}"));
    }
    out.push("exit".into());
}

/// An address family, as FRR names it.
fn family(v6: bool) -> &'static str {
    if v6 {
        "ipv6 unicast"
    } else {
        "ipv4 unicast"
    }
}

/// A VIP as a host route (`10.0.0.1/32`, `fd00::1/128`).
pub fn host_route(a: IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

/// A prefix: an address with its host bits clear, and the length.
pub type Prefix = (IpAddr, u8);

/// The prefix of length `len` that holds `a`.
fn prefix_of(a: IpAddr, len: u8) -> Prefix {
    match a {
        IpAddr::V4(v4) => {
            let len = len.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            (IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)), len)
        }
        IpAddr::V6(v6) => {
            let len = len.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            (IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask)), len)
        }
    }
}

/// What FRR advertises for `routes` (each VIP with the advertisements that select it):
/// each VIP's prefix for each of them (its host route, or the aggregate the advertisement
/// asks for), with the advertisements whose attributes it carries. An aggregate stays while
/// any VIP in it is advertised.
pub fn prefixes(cfg: &BgpConfig, routes: &BTreeMap<IpAddr, RouteOf>) -> BTreeMap<Prefix, RouteOf> {
    let mut out: BTreeMap<Prefix, RouteOf> = BTreeMap::new();
    for (vip, adverts) in routes {
        for k in adverts {
            let len = advert(cfg, *k).map_or(if vip.is_ipv4() { 32 } else { 128 }, |a| {
                if vip.is_ipv4() {
                    a.aggregation_v4
                } else {
                    a.aggregation_v6
                }
            });
            add_advert(out.entry(prefix_of(*vip, len)).or_default(), *k);
        }
    }
    out
}

/// The `network` line of a prefix.
fn network((addr, len): Prefix, adverts: &[usize]) -> String {
    format!(" network {addr}/{len} route-map {}", route_map_name(adverts))
}

/// FRR's configuration, one file per daemon that reads one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrrConfig {
    /// bfdd's: the BFD profiles.
    pub bfdd: String,
    /// bgpd's: the route maps and the BGP router.
    pub bgpd: String,
}

/// The lines every file starts with.
fn preamble() -> Vec<String> {
    vec![
        "! Written by xlb from its bgp: settings; changes here are lost at its next start.".into(),
        "frr defaults traditional".into(),
        "hostname xlb".into(),
        "log stdout informational".into(),
        "!".into(),
    ]
}

/// FRR's configuration for `cfg` (`router_id` resolved), advertising `routes` from the
/// start. Every route learnt from a peer is refused: xlb never changes the node's routing.
pub fn render(cfg: &BgpConfig, router_id: Ipv4Addr, routes: &BTreeMap<IpAddr, RouteOf>) -> FrrConfig {
    let mut l = preamble();
    if !cfg.bfd_profiles.is_empty() {
        l.push("bfd".into());
        for p in &cfg.bfd_profiles {
            l.push(format!(" profile {}", p.name));
            l.push(format!("  detect-multiplier {}", p.multiplier));
            l.push(format!("  receive-interval {}", p.receive_ms));
            l.push(format!("  transmit-interval {}", p.transmit_ms));
            l.push(format!("  minimum-ttl {}", p.minimum_ttl));
            if p.passive {
                l.push("  passive-mode".into());
            }
            l.push(" exit".into());
        }
        l.push("exit".into());
    }
    l.push(String::new());
    let bfdd = l.join("\n");
    let mut l = preamble();
    // Never install a learnt route (the same as bgpd's -n, but in the configuration, where
    // frr-reload.py keeps it).
    l.push("bgp no-rib".into());
    l.push("route-map xlb-learn-nothing deny 10".into());
    l.push("exit".into());
    let routes = prefixes(cfg, routes);
    let combos: BTreeSet<&RouteOf> = routes.values().collect();
    for c in combos {
        route_map(cfg, c, &mut l);
    }
    // Each peer passes what is marked for it (an advertisement without `peers`: every peer).
    for a in &cfg.advertisements {
        l.push(format!("bgp large-community-list standard xlb-marks permit {}", mark(cfg, a.id)));
    }
    for p in &cfg.peers {
        let name = out_map(p.address);
        for a in cfg.advertisements.iter().filter(|a| a.peers.is_empty() || a.peers.contains(&p.address)) {
            l.push(format!("bgp large-community-list standard {name} permit {}", mark(cfg, a.id)));
        }
        l.push(format!("route-map {name} permit 10"));
        l.push(format!(" match large-community {name}"));
        l.push(" set large-comm-list xlb-marks delete".into());
        l.push("exit".into());
    }
    l.push("!".into());
    l.push(format!("router bgp {}", cfg.asn));
    l.push(format!(" bgp router-id {router_id}"));
    l.push(" no bgp ebgp-requires-policy".into());
    l.push(" no bgp default ipv4-unicast".into());
    l.push(" no bgp network import-check".into());
    if cfg.peers.iter().all(|p| !p.graceful_restart) {
        l.push(" bgp graceful-restart-disable".into());
    }
    for p in &cfg.peers {
        let n = format!(" neighbor {}", p.address);
        l.push(format!("{n} remote-as {}", p.asn));
        if p.port != 179 {
            l.push(format!("{n} port {}", p.port));
        }
        l.push(format!("{n} timers {} {}", p.keepalive, p.hold_time));
        l.push(format!("{n} timers connect {}", p.connect_retry));
        // Changes go out at once, not batched for 30 s: a withdrawal must be fast.
        l.push(format!("{n} advertisement-interval 0"));
        if let Some(ttl) = p.ebgp_multihop {
            l.push(format!("{n} ebgp-multihop {ttl}"));
        }
        if let Some(s) = p.source {
            l.push(format!("{n} update-source {s}"));
        }
        if let Some(pw) = &p.password {
            l.push(format!("{n} password {pw}"));
        }
        if let Some(b) = &p.bfd_profile {
            l.push(format!("{n} bfd"));
            l.push(format!("{n} bfd profile {b}"));
        }
        if p.graceful_restart {
            l.push(format!("{n} graceful-restart"));
        }
    }
    for v6 in [false, true] {
        let peers: Vec<&Peer> = cfg.peers.iter().filter(|p| p.address.is_ipv6() == v6).collect();
        if peers.is_empty() {
            continue;
        }
        l.push(format!(" address-family {}", family(v6)));
        for p in peers {
            l.push(format!("  neighbor {} activate", p.address));
            l.push(format!("  neighbor {} route-map xlb-learn-nothing in", p.address));
            l.push(format!("  neighbor {} route-map {} out", p.address, out_map(p.address)));
        }
        for (prefix, adverts) in routes.iter().filter(|(p, _)| p.0.is_ipv6() == v6) {
            l.push(format!(" {}", network(*prefix, adverts)));
        }
        l.push(" exit-address-family".into());
    }
    l.push("exit".into());
    l.push(String::new());
    FrrConfig { bfdd, bgpd: l.join("\n") }
}

/// One change to what is advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    /// The VIP.
    pub vip: IpAddr,
    /// Advertised with these advertisements' attributes (none: withdrawn).
    pub adverts: Option<RouteOf>,
}

/// The vtysh lines (each a `-c` argument, in order) that take a running FRR from
/// advertising `before` to advertising `after` (each VIP with its advertisements) without a
/// reload: the route maps they need, then the `network` lines of the prefixes that changed.
/// A prefix of a family no peer has is left out, as [`render`] leaves it out.
pub fn route_commands(
    cfg: &BgpConfig,
    before: &BTreeMap<IpAddr, RouteOf>,
    after: &BTreeMap<IpAddr, RouteOf>,
) -> Vec<String> {
    let family_has_peers = |p: &Prefix| cfg.peers.iter().any(|q| q.address.is_ipv6() == p.0.is_ipv6());
    let (was, now) = (prefixes(cfg, before), prefixes(cfg, after));
    let changed: Vec<(&Prefix, Option<&RouteOf>)> = now
        .iter()
        .filter(|(p, a)| was.get(p) != Some(a))
        .map(|(p, a)| (p, Some(a)))
        .chain(was.keys().filter(|p| !now.contains_key(p)).map(|p| (p, None)))
        .filter(|(p, _)| family_has_peers(p))
        .collect();
    let mut out = vec!["configure terminal".to_string()];
    let combos: BTreeSet<&RouteOf> = changed.iter().filter_map(|(_, a)| *a).collect();
    for c in combos {
        route_map(cfg, c, &mut out);
    }
    out.push(format!("router bgp {}", cfg.asn));
    for v6 in [false, true] {
        let mine: Vec<&(&Prefix, Option<&RouteOf>)> = changed.iter().filter(|(p, _)| p.0.is_ipv6() == v6).collect();
        if mine.is_empty() {
            continue;
        }
        out.push(format!("address-family {}", family(v6)));
        for (p, a) in mine {
            match a {
                Some(a) => out.push(network(**p, a).trim().to_string()),
                None => out.push(format!("no network {}/{}", p.0, p.1)),
            }
        }
        out.push("exit-address-family".into());
    }
    out.push("end".into());
    out
}

/// The BGP speaker: advertises every owned, ready VIP that an advertisement selects, and
/// withdraws it when it is no longer both (no ready backend, given up, removed).
#[derive(Debug, Default)]
pub struct Routes {
    /// What each VIP is advertised with, by the last owned set.
    advertised: BTreeMap<IpAddr, RouteOf>,
}

impl Routes {
    /// A speaker that advertises nothing yet.
    pub fn new() -> Self {
        Routes::default()
    }

    /// What is advertised now.
    #[cfg(test)]
    fn advertised(&self) -> &BTreeMap<IpAddr, RouteOf> {
        &self.advertised
    }
}

impl Speaker for Routes {
    fn name(&self) -> &'static str {
        "bgp"
    }

    fn set_owned(&mut self, owned: &[OwnedAddr], _now: Instant) -> Actions {
        let want: BTreeMap<IpAddr, RouteOf> = owned
            .iter()
            .filter(|o| o.kind == AddrKind::Vip && o.ready.ready())
            .filter_map(|o| Some((o.addr, o.routed.clone()?)))
            .collect();
        let mut act = Actions::default();
        for (vip, adverts) in &want {
            if self.advertised.get(vip) != Some(adverts) {
                act.routes.push(RouteChange { vip: *vip, adverts: Some(adverts.clone()) });
            }
        }
        for vip in self.advertised.keys().filter(|v| !want.contains_key(v)) {
            act.routes.push(RouteChange { vip: *vip, adverts: None });
        }
        self.advertised = want;
        act
    }

    fn tick(&mut self, _now: Instant) -> Actions {
        Actions::default()
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn reannounce_all(&mut self, _now: Instant) -> Actions {
        // Routes stay in FRR's table across a fence: there is nothing to say again.
        Actions::default()
    }
}

/// Renders `routes` as a one-line list for logs: `10.0.0.1/32, fd00::1/128`.
pub fn describe(routes: &BTreeMap<IpAddr, RouteOf>) -> String {
    let mut s = String::new();
    for (i, v) in routes.keys().enumerate() {
        let _ = write!(s, "{}{}", if i > 0 { ", " } else { "" }, host_route(*v));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::speaker::Readiness;

    fn cfg() -> BgpConfig {
        BgpConfig {
            asn: 64512,
            router_id: None,
            listen: false,
            peers: vec![
                Peer {
                    address: "10.88.0.1".parse().unwrap(),
                    asn: 64500,
                    port: 179,
                    hold_time: 9,
                    keepalive: 3,
                    connect_retry: 5,
                    ebgp_multihop: None,
                    source: None,
                    bfd_profile: Some("fast".into()),
                    password: None,
                    graceful_restart: false,
                },
                Peer {
                    address: "fd88::1".parse().unwrap(),
                    asn: 64500,
                    port: 1179,
                    hold_time: 90,
                    keepalive: 30,
                    connect_retry: 120,
                    ebgp_multihop: Some(2),
                    source: Some("fd88::11".parse().unwrap()),
                    bfd_profile: None,
                    password: Some("s3cret".into()),
                    graceful_restart: false,
                },
            ],
            bfd_profiles: vec![BfdProfile {
                name: "fast".into(),
                receive_ms: 100,
                transmit_ms: 100,
                multiplier: 3,
                passive: false,
                minimum_ttl: 254,
            }],
            advertisements: vec![
                Advertisement {
                    id: 0,
                    pools: vec!["public".into()],
                    services: vec![],
                    communities: vec![Community::Standard(65000, 100), Community::WellKnown("no-export")],
                    local_pref: None,
                    l2: false,
                    peers: vec![],
                    aggregation_v4: 32,
                    aggregation_v6: 128,
                },
                Advertisement {
                    id: 1,
                    pools: vec![],
                    services: vec!["api".into()],
                    communities: vec![Community::Large(64512, 1, 2)],
                    local_pref: Some(200),
                    l2: true,
                    peers: vec![],
                    aggregation_v4: 32,
                    aggregation_v6: 128,
                },
            ],
        }
    }

    #[test]
    fn communities_parse_as_metallb_writes_them() {
        assert_eq!(Community::parse("65000:100"), Ok(Community::Standard(65000, 100)));
        assert_eq!(Community::parse("large:64512:1:2"), Ok(Community::Large(64512, 1, 2)));
        assert_eq!(Community::parse("NO-EXPORT"), Ok(Community::WellKnown("no-export")));
        assert_eq!(Community::parse("local-as").map(|c| c.to_string()), Ok("local-AS".into()));
        for bad in ["70000:1", "65000", "x:y", ""] {
            let e = Community::parse(bad).unwrap_err();
            assert!(e.starts_with(&format!("{bad:?} is not ASN:VALUE (16-bit numbers")), "{bad}: {e}");
        }
        assert_eq!(
            Community::parse("large:1:2"),
            Err("\"large:1:2\" is not large:GLOBAL:LOCAL1:LOCAL2 with 32-bit numbers".into())
        );
    }

    #[test]
    fn advertisements_select_by_pool_or_service_or_everything() {
        let c = cfg();
        assert!(c.advertisements[0].selects("web", Some("public")));
        assert!(!c.advertisements[0].selects("web", Some("internal")));
        assert!(!c.advertisements[0].selects("web", None));
        assert!(c.advertisements[1].selects("api", None));
        let all = Advertisement { pools: vec![], services: vec![], ..c.advertisements[0].clone() };
        assert!(all.selects("anything", None));
    }

    #[test]
    fn render_gives_frr_the_peers_bfd_and_routes_and_refuses_every_learnt_route() {
        let c = cfg();
        let routes = BTreeMap::from([
            ("10.200.0.1".parse().unwrap(), vec![0]),
            ("10.200.0.2".parse().unwrap(), vec![0, 1]),
            ("fd20::1".parse().unwrap(), vec![1]),
        ]);
        let files = render(&c, "10.88.0.11".parse().unwrap(), &routes);
        assert!(files.bfdd.contains(
            "bfd\n profile fast\n  detect-multiplier 3\n  receive-interval 100\n  transmit-interval 100\n  minimum-ttl 254\n exit\nexit"
        ));
        assert!(!files.bfdd.contains("router bgp") && !files.bgpd.contains("detect-multiplier"));
        let text = files.bgpd;
        for line in [
            "bgp no-rib\nroute-map xlb-learn-nothing deny 10\nexit",
            "route-map xlb-adv-0 permit 10\n set community 65000:100 no-export\n set large-community 64512:4294967294:0\nexit",
            "route-map xlb-adv-0-1 permit 10\n set community 65000:100 no-export\n set large-community 64512:1:2 64512:4294967294:0 64512:4294967294:1\n set local-preference 200\nexit",
            "router bgp 64512\n bgp router-id 10.88.0.11\n no bgp ebgp-requires-policy",
            " bgp graceful-restart-disable\n",
            " neighbor 10.88.0.1 remote-as 64500\n neighbor 10.88.0.1 timers 3 9\n neighbor 10.88.0.1 timers connect 5\n neighbor 10.88.0.1 advertisement-interval 0\n neighbor 10.88.0.1 bfd\n neighbor 10.88.0.1 bfd profile fast\n",
            " neighbor fd88::1 port 1179\n",
            " neighbor fd88::1 ebgp-multihop 2\n neighbor fd88::1 update-source fd88::11\n neighbor fd88::1 password s3cret\n",
            " address-family ipv4 unicast\n  neighbor 10.88.0.1 activate\n  neighbor 10.88.0.1 route-map xlb-learn-nothing in\n  neighbor 10.88.0.1 route-map xlb-to-10.88.0.1 out\n  network 10.200.0.1/32 route-map xlb-adv-0\n  network 10.200.0.2/32 route-map xlb-adv-0-1\n exit-address-family",
            " address-family ipv6 unicast\n  neighbor fd88::1 activate\n  neighbor fd88::1 route-map xlb-learn-nothing in\n  neighbor fd88::1 route-map xlb-to-fd88--1 out\n  network fd20::1/128 route-map xlb-adv-1\n exit-address-family",
        ] {
            assert!(text.contains(line), "missing:\n{line}\nin:\n{text}");
        }
        assert!(!text.contains("fd88::1 bfd"), "no BFD where the peer names no profile");
    }

    #[test]
    fn an_advertisement_to_some_peers_marks_its_routes_and_each_peer_passes_its_own_marks() {
        let mut c = cfg();
        // The api advertisement goes to the IPv4 peer only.
        c.advertisements[1].peers = vec!["10.88.0.1".parse().unwrap()];
        let routes = BTreeMap::from([
            ("10.200.0.2".parse().unwrap(), vec![0, 1]),
            ("fd20::1".parse().unwrap(), vec![1]),
            ("fd20::2".parse().unwrap(), vec![0]),
        ]);
        let text = render(&c, "10.88.0.11".parse().unwrap(), &routes).bgpd;
        for line in [
            // Each route carries the marks of its advertisements, beside their communities.
            "route-map xlb-adv-0-1 permit 10\n set community 65000:100 no-export\n set large-community 64512:1:2 64512:4294967294:0 64512:4294967294:1\n",
            "route-map xlb-adv-1 permit 10\n set large-community 64512:1:2 64512:4294967294:1\n",
            "bgp large-community-list standard xlb-marks permit 64512:4294967294:0\nbgp large-community-list standard xlb-marks permit 64512:4294967294:1\n",
            // The IPv4 peer passes both advertisements' routes; the IPv6 one the first's only.
            "bgp large-community-list standard xlb-to-10.88.0.1 permit 64512:4294967294:0\nbgp large-community-list standard xlb-to-10.88.0.1 permit 64512:4294967294:1\nroute-map xlb-to-10.88.0.1 permit 10\n match large-community xlb-to-10.88.0.1\n set large-comm-list xlb-marks delete\nexit",
            "bgp large-community-list standard xlb-to-fd88--1 permit 64512:4294967294:0\nroute-map xlb-to-fd88--1 permit 10\n",
            "  neighbor 10.88.0.1 route-map xlb-to-10.88.0.1 out\n",
            "  neighbor fd88::1 route-map xlb-to-fd88--1 out\n",
        ] {
            assert!(text.contains(line), "missing:\n{line}\nin:\n{text}");
        }
        assert!(!text.contains("xlb-to-fd88--1 permit 64512:4294967294:1"), "{text}");
        // Without such an advertisement: the same marks, and every peer passes every one.
        let plain = render(&cfg(), "10.88.0.11".parse().unwrap(), &routes).bgpd;
        assert!(plain.contains("xlb-to-fd88--1 permit 64512:4294967294:0\nbgp large-community-list standard xlb-to-fd88--1 permit 64512:4294967294:1\n"), "{plain}");
    }

    #[test]
    fn route_commands_define_their_route_maps_then_change_each_family() {
        let c = cfg();
        let before = BTreeMap::from([
            ("10.200.0.3".parse().unwrap(), vec![0]),
            ("10.200.0.4".parse().unwrap(), vec![0]),
            ("fd20::1".parse().unwrap(), vec![1]),
        ]);
        let after =
            BTreeMap::from([("10.200.0.1".parse().unwrap(), vec![0]), ("10.200.0.4".parse().unwrap(), vec![0])]);
        let cmds = route_commands(&c, &before, &after);
        assert_eq!(
            cmds,
            [
                "configure terminal",
                "route-map xlb-adv-0 permit 10",
                " set community 65000:100 no-export",
                " set large-community 64512:4294967294:0",
                "exit",
                "router bgp 64512",
                "address-family ipv4 unicast",
                "network 10.200.0.1/32 route-map xlb-adv-0",
                "no network 10.200.0.3/32",
                "exit-address-family",
                "address-family ipv6 unicast",
                "no network fd20::1/128",
                "exit-address-family",
                "end",
            ]
        );
        // Without an IPv6 peer, an IPv6 VIP is neither rendered nor changed.
        let mut v4_only = c.clone();
        v4_only.peers.truncate(1);
        let v6 = BTreeMap::from([("fd20::1".parse().unwrap(), vec![1])]);
        let cmds = route_commands(&v4_only, &v6, &BTreeMap::new());
        assert_eq!(cmds, ["configure terminal", "router bgp 64512", "end"]);
        let routes = BTreeMap::from([("fd20::1".parse().unwrap(), vec![1])]);
        assert!(!render(&v4_only, "10.88.0.11".parse().unwrap(), &routes).bgpd.contains("fd20::1"));
        assert!(!format!("{:?}", c.peers[1]).contains("s3cret"), "Debug shows no password");
    }

    #[test]
    fn an_aggregate_is_advertised_while_any_vip_in_it_is() {
        let mut c = cfg();
        c.advertisements[0].aggregation_v4 = 24;
        c.advertisements[1].aggregation_v6 = 64;
        let v = |s: &str| -> IpAddr { s.parse().unwrap() };
        let one = BTreeMap::from([(v("10.200.0.1"), vec![0])]);
        let two = BTreeMap::from([(v("10.200.0.1"), vec![0]), (v("10.200.0.77"), vec![0, 1])]);
        // Advertisement 0 rolls both up into the /24; advertisement 1 keeps .77 alone.
        assert_eq!(
            prefixes(&c, &two),
            BTreeMap::from([((v("10.200.0.0"), 24), vec![0]), ((v("10.200.0.77"), 32), vec![1])])
        );
        assert_eq!(
            prefixes(&c, &BTreeMap::from([(v("fd20::1:2"), vec![1])])),
            BTreeMap::from([((v("fd20::"), 64), vec![1])])
        );
        // A second VIP in the /24 adds only its own route; the /24 stays while one is left.
        let added = route_commands(&c, &one, &two);
        assert!(added.contains(&"network 10.200.0.77/32 route-map xlb-adv-1".to_string()), "{added:?}");
        assert!(!added.iter().any(|l| l.contains("10.200.0.0/24")), "{added:?}");
        let gone = route_commands(&c, &two, &one);
        assert!(
            gone.contains(&"no network 10.200.0.77/32".to_string()) && !gone.iter().any(|l| l.contains("/24")),
            "{gone:?}"
        );
        let last = route_commands(&c, &one, &BTreeMap::new());
        assert!(last.contains(&"no network 10.200.0.0/24".to_string()), "{last:?}");
        assert!(render(&c, "10.88.0.11".parse().unwrap(), &two)
            .bgpd
            .contains("  network 10.200.0.0/24 route-map xlb-adv-0\n"));
    }

    #[test]
    fn the_speaker_advertises_ready_routed_vips_and_withdraws_the_rest() {
        let t = Instant::now();
        let v1: IpAddr = "10.200.0.1".parse().unwrap();
        let v2: IpAddr = "10.200.0.2".parse().unwrap();
        let l2only: IpAddr = "10.0.0.5".parse().unwrap();
        let owned = |v1_ready: bool, with_v2: bool| {
            let mut o = vec![
                OwnedAddr {
                    addr: v1,
                    kind: AddrKind::Vip,
                    ready: Readiness { attached: true, backends: v1_ready },
                    l2: false,
                    routed: Some(vec![0]),
                },
                OwnedAddr {
                    addr: l2only,
                    kind: AddrKind::Vip,
                    ready: Readiness { attached: true, backends: true },
                    l2: true,
                    routed: None,
                },
            ];
            if with_v2 {
                o.push(OwnedAddr {
                    addr: v2,
                    kind: AddrKind::Vip,
                    ready: Readiness { attached: true, backends: true },
                    l2: true,
                    routed: Some(vec![1]),
                });
            }
            o
        };
        let mut s = Routes::new();
        let act = s.set_owned(&owned(true, true), t);
        assert_eq!(
            act.routes,
            [RouteChange { vip: v1, adverts: Some(vec![0]) }, RouteChange { vip: v2, adverts: Some(vec![1]) }]
        );
        assert!(s.set_owned(&owned(true, true), t).routes.is_empty(), "nothing changed: nothing said");
        // v1 loses its last ready backend; v2 leaves the configuration.
        let act = s.set_owned(&owned(false, false), t);
        assert_eq!(act.routes, [RouteChange { vip: v1, adverts: None }, RouteChange { vip: v2, adverts: None }]);
        assert!(s.advertised().is_empty());
        assert_eq!(
            describe(&BTreeMap::from([(v1, vec![0]), ("fd20::1".parse().unwrap(), vec![])])),
            "10.200.0.1/32, fd20::1/128"
        );
    }
}

//! The `bgp:` section checked: every field with its path, its range and the default it
//! falls back to.

use std::collections::HashSet;

use super::{
    err,
    file::{BfdProfileFile, BgpFile, BgpPeerFile},
    validate::{parse_addr, port},
    ConfigError,
};
use crate::control::bgp::{Advertisement, BfdProfile, BgpConfig, Community, Peer};

/// A number of `field` within `lo..=hi`, or `default` when left out.
fn ranged(
    at: &str,
    field: &str,
    v: Option<u32>,
    (lo, hi): (u32, u32),
    default: u32,
    errors: &mut Vec<ConfigError>,
) -> u32 {
    match v {
        None => default,
        Some(v) if (lo..=hi).contains(&v) => v,
        Some(v) => {
            errors.push(err(format!("{at}.{field}"), format!("{v} is outside {lo}-{hi} (default {default})")));
            default
        }
    }
}

/// A value of at most `u16`/`u8` that [`ranged`] kept within its range.
fn narrow<T: TryFrom<u32> + Default>(v: u32) -> T {
    T::try_from(v).unwrap_or_default()
}

/// Checks peer `p` (its fields under `at`), with its password already read (`password`,
/// see [`check_password`]) and `profiles` the BFD profiles' names.
pub(crate) fn check_peer(
    at: &str,
    p: &BgpPeerFile,
    password: Option<String>,
    profiles: &HashSet<&str>,
    errors: &mut Vec<ConfigError>,
) -> Option<Peer> {
    let address = parse_addr(&format!("{at}.peerAddress"), &p.peer_address, errors);
    if p.peer_asn == 0 {
        errors.push(err(format!("{at}.peerASN"), "0 is not an AS number; give the router's (1-4294967295)"));
    }
    let hold = ranged(at, "holdTimeSeconds", p.hold_time_seconds, (3, 65535), 90, errors);
    let keepalive = ranged(at, "keepAliveTimeSeconds", p.keep_alive_time_seconds, (1, 65535), 30, errors);
    if keepalive >= hold {
        errors.push(err(
            format!("{at}.keepAliveTimeSeconds"),
            format!("{keepalive} s must be less than holdTimeSeconds ({hold} s); a third of it is usual"),
        ));
    }
    let source = p.source_address.as_ref().and_then(|s| parse_addr(&format!("{at}.sourceAddress"), s, errors));
    if let (Some(a), Some(s)) = (address, source) {
        if a.is_ipv4() != s.is_ipv4() {
            errors.push(err(format!("{at}.sourceAddress"), format!("{s} is not of the family of peerAddress {a}")));
        }
    }
    if let Some(b) = &p.bfd_profile {
        if !profiles.contains(b.as_str()) {
            errors.push(err(
                format!("{at}.bfdProfile"),
                format!("no BFD profile named {b:?}; add it under bgp.bfdProfiles, or leave bfdProfile out"),
            ));
        }
    }
    Some(Peer {
        address: address?,
        asn: p.peer_asn,
        port: p.peer_port.map_or(179, |v| port(&format!("{at}.peerPort"), v, errors)),
        hold_time: narrow(hold),
        keepalive: narrow(keepalive),
        connect_retry: narrow(ranged(
            at,
            "connectRetryTimeSeconds",
            p.connect_retry_time_seconds,
            (1, 65535),
            120,
            errors,
        )),
        ebgp_multihop: p.ebgp_multihop_ttl.map(|t| narrow(ranged(at, "eBGPMultihopTTL", Some(t), (1, 255), 1, errors))),
        source,
        bfd_profile: p.bfd_profile.clone(),
        password,
        graceful_restart: p.graceful_restart,
    })
}

/// A TCP-MD5 password read from `from` (for messages) as `text`, checked: FRR takes 1-80
/// printable ASCII characters without spaces. `at`: the field it came from.
pub(crate) fn check_password(at: &str, from: &str, text: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    let t = text.trim();
    if (1..=80).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(t.to_string());
    }
    errors.push(err(at, format!("{from} must hold the password alone: 1-80 printable ASCII characters, no spaces")));
    None
}

/// The password in the file `p.passwordFile` names, if any.
fn password_file(at: &str, p: &BgpPeerFile, errors: &mut Vec<ConfigError>) -> Option<String> {
    let f = p.password_file.as_ref()?;
    let at = format!("{at}.passwordFile");
    // A fuzzed file names paths at random: it must not make the fuzzer read them.
    if cfg!(fuzzing) {
        return None;
    }
    match std::fs::read_to_string(f) {
        Ok(text) => check_password(&at, &f.display().to_string(), &text, errors),
        Err(e) => {
            errors.push(err(at, format!("cannot read {}: {e}", f.display())));
            None
        }
    }
}

/// Checks BFD profile `b` (its fields under `at`).
pub(crate) fn check_bfd_profile(at: &str, b: &BfdProfileFile, errors: &mut Vec<ConfigError>) -> BfdProfile {
    BfdProfile {
        name: b.name.clone(),
        receive_ms: ranged(at, "receiveInterval", b.receive_interval, (10, 60000), 300, errors),
        transmit_ms: ranged(at, "transmitInterval", b.transmit_interval, (10, 60000), 300, errors),
        multiplier: narrow(ranged(at, "detectMultiplier", b.detect_multiplier, (2, 255), 3, errors)),
        passive: b.passive_mode,
        minimum_ttl: narrow(ranged(at, "minimumTtl", b.minimum_ttl, (1, 254), 254, errors)),
    }
}

/// The communities under `at`, each checked.
pub(crate) fn check_communities(at: &str, list: &[String], errors: &mut Vec<ConfigError>) -> Vec<Community> {
    list.iter()
        .enumerate()
        .filter_map(|(j, c)| {
            Community::parse(c).map_err(|e| errors.push(err(format!("{at}.communities[{j}]"), e))).ok()
        })
        .collect()
}

/// The prefix lengths an advertisement's IPv4 and IPv6 VIPs are advertised with
/// (`aggregationLength` 1-32, default 32; `aggregationLengthV6` 1-128, default 128).
pub(crate) fn check_aggregation(at: &str, v4: Option<u32>, v6: Option<u32>, errors: &mut Vec<ConfigError>) -> (u8, u8) {
    (
        narrow(ranged(at, "aggregationLength", v4, (1, 32), 32, errors)),
        narrow(ranged(at, "aggregationLengthV6", v6, (1, 128), 128, errors)),
    )
}

/// Checks `b` against the file's pools and services (by name).
pub(super) fn validate_bgp(
    b: &BgpFile,
    pools: &HashSet<String>,
    services: &HashSet<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<BgpConfig> {
    if b.local_asn == 0 {
        errors.push(err("bgp.localASN", "0 is not an AS number; give this node's (1-4294967295)"));
    }
    let router_id = b.router_id.as_ref().and_then(|r| match r.trim().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(err("bgp.routerID", format!("{r:?} is not an IPv4 address (a router ID is written as one)")));
            None
        }
    });
    let mut names = HashSet::new();
    let mut bfd_profiles = Vec::new();
    for (i, p) in b.bfd_profiles.iter().enumerate() {
        let at = format!("bgp.bfdProfiles[{i}]");
        if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            errors.push(err(format!("{at}.name"), format!("{:?}: give a name of letters, digits, - _ .", p.name)));
        } else if !names.insert(p.name.as_str()) {
            errors.push(err(format!("{at}.name"), format!("{:?} is named twice", p.name)));
        }
        bfd_profiles.push(check_bfd_profile(&at, p, errors));
    }
    if b.peers.is_empty() {
        errors.push(err("bgp.peers", "no peer; add the router: peers: [{peerAddress: 10.0.0.1, peerASN: 64500}]"));
    }
    let mut peers: Vec<Peer> = Vec::new();
    for (i, p) in b.peers.iter().enumerate() {
        let at = format!("bgp.peers[{i}]");
        let password = password_file(&at, p, errors);
        if let Some(p) = check_peer(&at, p, password, &names, errors) {
            if peers.iter().any(|q| q.address == p.address) {
                errors.push(err(format!("{at}.peerAddress"), format!("{} is listed twice", p.address)));
            }
            peers.push(p);
        }
    }
    if b.advertisements.is_empty() {
        errors.push(err(
            "bgp.advertisements",
            "none: no VIP would be advertised; add one, e.g. advertisements: [{pools: [public]}] ({} selects every VIP)",
        ));
    }
    let mut advertisements = Vec::new();
    for (i, a) in b.advertisements.iter().enumerate() {
        let at = format!("bgp.advertisements[{i}]");
        for (j, p) in a.pools.iter().enumerate() {
            if !pools.contains(p) {
                errors.push(err(format!("{at}.pools[{j}]"), format!("no pool named {p:?}")));
            }
        }
        for (j, s) in a.services.iter().enumerate() {
            if !services.contains(s) {
                errors.push(err(format!("{at}.services[{j}]"), format!("no service named {s:?}")));
            }
        }
        let communities = check_communities(&at, &a.communities, errors);
        let (aggregation_v4, aggregation_v6) =
            check_aggregation(&at, a.aggregation_length, a.aggregation_length_v6, errors);
        let mut to = Vec::new();
        for (j, p) in a.peers.iter().enumerate() {
            let Some(addr) = parse_addr(&format!("{at}.peers[{j}]"), p, errors) else { continue };
            if peers.iter().any(|q| q.address == addr) {
                to.push(addr);
            } else {
                errors.push(err(
                    format!("{at}.peers[{j}]"),
                    format!("{addr} is not the peerAddress of any of bgp.peers"),
                ));
            }
        }
        advertisements.push(Advertisement {
            id: i,
            pools: a.pools.clone(),
            services: a.services.clone(),
            communities,
            local_pref: a.local_pref,
            l2: a.l2,
            peers: to,
            aggregation_v4,
            aggregation_v6,
        });
    }
    Some(BgpConfig { asn: b.local_asn, router_id, listen: b.listen, peers, bfd_profiles, advertisements })
}

#[cfg(test)]
mod tests {
    use crate::control::{bgp::Community, config::parse};

    const BASE: &str = "interfaces: [{name: eth0}]\npools: [{name: public, blocks: [{cidr: 10.93.0.0/24}]}]\nservices:\n  - {name: web, pool: public, ports: [{port: 80}], backends: [{address: 10.0.0.11}]}\n";

    #[test]
    fn a_good_bgp_section_gets_its_defaults() {
        let text = format!(
            "{BASE}bgp:\n  localASN: 64512\n  peers: [{{peerAddress: 10.0.0.1, peerASN: 64500, bfdProfile: fast}}]\n  bfdProfiles: [{{name: fast}}]\n  advertisements: [{{pools: [public], communities: ['65000:1', no-export]}}]\n"
        );
        let d = parse(&text).unwrap();
        let b = d.bgp.unwrap();
        let p = &b.peers[0];
        assert_eq!((p.port, p.hold_time, p.keepalive, p.connect_retry), (179, 90, 30, 120));
        assert!(!p.graceful_restart && !b.listen);
        assert_eq!((b.bfd_profiles[0].receive_ms, b.bfd_profiles[0].multiplier), (300, 3));
        assert_eq!(b.advertisements[0].communities, [Community::Standard(65000, 1), Community::WellKnown("no-export")]);
    }

    #[test]
    fn each_mistake_names_its_field() {
        let text = format!(
            "{BASE}bgp:\n  localASN: 0\n  routerID: fd00::1\n  peers:\n    - {{peerAddress: 10.0.0.1, peerASN: 64500, holdTimeSeconds: 9, keepAliveTimeSeconds: 9, bfdProfile: slow, sourceAddress: 'fd00::2'}}\n    - {{peerAddress: 10.0.0.1, peerASN: 64500}}\n  bfdProfiles: [{{name: fast, detectMultiplier: 1}}]\n  advertisements: [{{pools: [private], services: [api], communities: ['65000:70000'], peers: [10.0.0.9]}}]\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        for needle in [
            "bgp.localASN: 0 is not an AS number",
            "bgp.routerID: \"fd00::1\" is not an IPv4 address",
            "bgp.peers[0].keepAliveTimeSeconds: 9 s must be less than holdTimeSeconds (9 s)",
            "bgp.peers[0].bfdProfile: no BFD profile named \"slow\"",
            "bgp.peers[0].sourceAddress: fd00::2 is not of the family of peerAddress 10.0.0.1",
            "bgp.peers[1].peerAddress: 10.0.0.1 is listed twice",
            "bgp.bfdProfiles[0].detectMultiplier: 1 is outside 2-255",
            "bgp.advertisements[0].pools[0]: no pool named \"private\"",
            "bgp.advertisements[0].services[0]: no service named \"api\"",
            "bgp.advertisements[0].communities[0]: \"65000:70000\" is not ASN:VALUE",
            "bgp.advertisements[0].peers[0]: 10.0.0.9 is not the peerAddress of any of bgp.peers",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in {e}");
        }
        let none = format!("{BASE}bgp: {{localASN: 64512}}\n");
        let e = parse(&none).unwrap_err().to_string();
        assert!(e.contains("bgp.peers: no peer") && e.contains("bgp.advertisements: none"), "{e}");
    }

    #[test]
    fn compile_routes_the_selected_vips_and_keeps_them_off_the_segment() {
        let text = "interfaces: [{name: eth0}]\npools: [{name: public, blocks: [{cidr: 10.93.0.0/24}]}, {name: lan, blocks: [{cidr: 10.1.0.0/24}]}]\nservices:\n  - {name: web, pool: public, ports: [{port: 80}], backends: [{address: 10.0.0.11}]}\n  - {name: api, vip: 10.1.0.5, ports: [{port: 80}], backends: [{address: 10.0.0.11}]}\n  - {name: both, vip: 10.1.0.6, ports: [{port: 80}], backends: [{address: 10.0.0.11}]}\nbgp:\n  localASN: 64512\n  peers: [{peerAddress: 10.0.0.1, peerASN: 64500}]\n  advertisements: [{pools: [public]}, {services: [both], l2: true}]\n";
        let d = parse(text).unwrap();
        let c = crate::control::compile::compile(&d, &mut crate::control::ipam::Ipam::default()).unwrap();
        let web = c.assignments.iter().find(|(n, _)| n == "web").unwrap().1;
        let both: std::net::IpAddr = "10.1.0.6".parse().unwrap();
        assert_eq!(c.announced.routes.keys().copied().collect::<Vec<_>>(), [both, web]);
        assert_eq!(c.announced.routes[&both], [1]);
        assert_eq!(
            c.announced.routed_only.iter().copied().collect::<Vec<_>>(),
            [web],
            "api is L2 only; both is on both"
        );
    }
}

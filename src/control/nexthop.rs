//! How xlb reaches each backend: the kernel's route to it (on the segment, or through a
//! router on it), then the MAC of that next hop from the neighbour table. The daemon asks
//! the kernel; this module holds what it found and decides which MAC a service may use.

use std::{collections::HashMap, fmt, net::IpAddr};

use crate::{lb::snapshot::ForwardMode, wire::EthernetAddress};

/// The path to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// On the interface's segment: frames go to the backend's own MAC.
    OnLink,
    /// Through a router on the segment: frames go to the router's MAC. SNAT only: a DSR
    /// packet keeps the VIP as its destination, and the router would send it back to us.
    Via(IpAddr),
    /// Not through xlb's interface, and why (no route, another interface, this host).
    Unreachable(String),
}

impl Path {
    /// The label in metrics and JSON: `on_link`, `gateway` or `unreachable`.
    pub fn name(&self) -> &'static str {
        match self {
            Path::OnLink => "on_link",
            Path::Via(_) => "gateway",
            Path::Unreachable(_) => "unreachable",
        }
    }

    /// The address whose MAC frames to `backend` are sent to.
    pub fn hop(&self, backend: IpAddr) -> Option<IpAddr> {
        match self {
            Path::OnLink => Some(backend),
            Path::Via(gw) => Some(*gw),
            Path::Unreachable(_) => None,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::OnLink => f.write_str("on-link"),
            Path::Via(gw) => write!(f, "via {gw}"),
            Path::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

/// One of xlb's interfaces, where it serves several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Its name.
    pub name: String,
    /// Its MAC.
    pub mac: EthernetAddress,
}

/// What is known of every backend's path and next-hop MAC.
#[derive(Debug, Default, Clone)]
pub struct NextHops {
    /// The path to each backend, as the kernel's routes last said.
    pub paths: HashMap<IpAddr, Path>,
    /// The MAC of each backend's next hop (its own, or its router's), once resolved.
    pub macs: HashMap<IpAddr, EthernetAddress>,
    /// Where xlb serves several interfaces: the one each backend is reached through.
    pub via: HashMap<IpAddr, Via>,
    /// The interfaces each VIP is placed on, by name, where it is not on every one.
    pub placed: HashMap<IpAddr, Vec<String>>,
}

impl NextHops {
    /// Whether a frame to `vip` can reach `backend`: it comes in on an interface the VIP is
    /// on and leaves by the same one, so the backend must be reached through one of them.
    pub fn reaches(&self, vip: IpAddr, backend: IpAddr) -> bool {
        match (self.via.get(&backend), self.placed.get(&vip)) {
            (Some(v), Some(on)) => on.contains(&v.name),
            _ => true,
        }
    }

    /// The MAC a service of `vip` in `mode` sends `backend`'s frames to ([`NextHops::mac_for`]),
    /// none when the backend is reached through an interface the VIP is not on.
    pub fn mac_for_service(&self, vip: IpAddr, backend: IpAddr, mode: ForwardMode) -> Option<EthernetAddress> {
        self.reaches(vip, backend).then(|| self.mac_for(backend, mode)).flatten()
    }

    /// Why `backend` gets no new flows of `vip` because of the interfaces the VIP is on (none
    /// said for a VIP on no interface: it takes no traffic at all).
    pub fn placement_problem(&self, vip: IpAddr, backend: IpAddr) -> Option<String> {
        let (v, on) = (self.via.get(&backend)?, self.placed.get(&vip)?);
        (!on.is_empty() && !self.reaches(vip, backend)).then(|| {
            format!(
                "it is reached through {}, and {vip} is on {} only, while xlb sends a packet back out of the interface it came in on; place the VIP on {} too, or reach the backend through {}",
                v.name,
                on.join(", "),
                v.name,
                on.join(" or ")
            )
        })
    }

    /// The MAC a service in `mode` sends `backend`'s frames to: none while unresolved, and
    /// none in DSR through a router (see [`Path::Via`]).
    pub fn mac_for(&self, backend: IpAddr, mode: ForwardMode) -> Option<EthernetAddress> {
        if mode == ForwardMode::Dsr && matches!(self.paths.get(&backend), Some(Path::Via(_))) {
            return None;
        }
        self.macs.get(&backend).copied()
    }

    /// Why `backend` gets no new flows in `mode`, if it gets none for a path reason.
    pub fn problem(&self, backend: IpAddr, mode: ForwardMode) -> Option<String> {
        match self.paths.get(&backend)? {
            Path::Unreachable(why) => Some(why.clone()),
            Path::Via(gw) if mode == ForwardMode::Dsr => Some(format!(
                "it is reached through the router {gw}, and DSR needs backends on the segment (the packet keeps the VIP as its destination); use SNAT, or the nodes path"
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsr_never_goes_through_a_router_snat_does() {
        let (pod, gw, near) =
            ("10.244.1.7".parse().unwrap(), "10.77.0.31".parse().unwrap(), "10.77.0.21".parse().unwrap());
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let mut h = NextHops::default();
        h.paths.insert(pod, Path::Via(gw));
        h.paths.insert(near, Path::OnLink);
        h.macs.insert(pod, mac);
        h.macs.insert(near, mac);
        assert_eq!(h.mac_for(pod, ForwardMode::Snat), Some(mac));
        assert_eq!(h.mac_for(pod, ForwardMode::Dsr), None);
        assert!(h.problem(pod, ForwardMode::Dsr).unwrap().contains("through the router 10.77.0.31"));
        assert_eq!(h.problem(pod, ForwardMode::Snat), None);
        assert_eq!(h.mac_for(near, ForwardMode::Dsr), Some(mac));
        assert_eq!(Path::Via(gw).hop(pod), Some(gw));
        assert_eq!(Path::OnLink.hop(near), Some(near));
        assert_eq!(Path::Unreachable("no route to it".into()).to_string(), "unreachable: no route to it");
    }
}

//! What each service's backends are in the next snapshot: the compiled specs, less the
//! backends failing their health checks, plus the backends removed from the config that
//! still drain (weight 0: no new flows, the flows they have go on). Pure: time comes in as
//! arguments; the daemon logs and publishes.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use super::services::ServiceSpec;

/// How long a backend removed from the config keeps the flows it has (it takes no new ones).
pub const BACKEND_DRAIN: Duration = Duration::from_secs(30);

/// A backend removed from a service, draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaving {
    /// The spec (`web/tcp:80`) it left.
    pub spec: String,
    /// Its address.
    pub addr: IpAddr,
    /// Its port.
    pub port: u16,
    /// When the drain ends.
    pub until: Instant,
}

/// Health of one backend of one service, as the checker last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    /// Passing its checks.
    pub up: bool,
    /// The checker's last word (why it is down).
    pub detail: String,
    /// Since when.
    pub since: Instant,
}

/// How a backend stands, for the views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Checked and passing.
    Up,
    /// Failing its checks: why, and for how long.
    Down(String),
    /// Its service has no health check.
    Unchecked,
}

impl Health {
    /// The word the admin API and metrics use.
    pub fn name(&self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down(_) => "down",
            Health::Unchecked => "unchecked",
        }
    }
}

/// The service a spec belongs to: `web` of `web/tcp:80`, `ns/web` of `ns/web/tcp:80`.
pub fn service_of_spec(spec: &str) -> &str {
    spec.rsplit_once('/').map_or(spec, |(svc, _)| svc)
}

/// Backends draining and backends down, between snapshots.
#[derive(Debug, Default)]
pub struct Backends {
    leaving: Vec<Leaving>,
    /// (service, backend) pairs failing their health checks.
    down: HashSet<(String, IpAddr)>,
    health: HashMap<(String, IpAddr), HealthState>,
}

impl Backends {
    /// The specs `old` are replaced by `new` at `now`: a backend that left a service that
    /// stays drains for [`BACKEND_DRAIN`]; one that comes back no longer drains. Returns the
    /// backends that started draining.
    pub fn replace(&mut self, old: &[ServiceSpec], new: &[ServiceSpec], now: Instant) -> Vec<Leaving> {
        let until = now + BACKEND_DRAIN;
        let by_name: HashMap<&str, &ServiceSpec> = new.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut started = Vec::new();
        for old in old {
            let Some(new) = by_name.get(old.name.as_str()) else { continue };
            for (addr, port, _) in &old.backends {
                let gone = !new.backends.iter().any(|(a, p, _)| a == addr && p == port);
                let already = self.leaving.iter().any(|l| l.spec == old.name && l.addr == *addr && l.port == *port);
                if gone && !already {
                    let l = Leaving { spec: old.name.clone(), addr: *addr, port: *port, until };
                    started.push(l.clone());
                    self.leaving.push(l);
                }
            }
        }
        self.leaving.retain(|l| {
            !by_name
                .get(l.spec.as_str())
                .is_some_and(|n| n.backends.iter().any(|(a, p, _)| *a == l.addr && *p == l.port))
        });
        started
    }

    /// The checker says `addr` of `service` is `up` (or not, and why) at `now`.
    pub fn health_changed(&mut self, service: &str, addr: IpAddr, up: bool, detail: String, now: Instant) {
        let key = (service.to_string(), addr);
        if up {
            self.down.remove(&key);
        } else {
            self.down.insert(key.clone());
        }
        self.health.insert(key, HealthState { up, detail, since: now });
    }

    /// Only these (service, backend) pairs are checked now: the others' health is forgotten.
    pub fn retain_checked(&mut self, targets: &HashSet<(String, IpAddr)>) {
        self.down.retain(|k| targets.contains(k));
        self.health.retain(|k, _| targets.contains(k));
    }

    /// Drains over at `now` end.
    pub fn expire(&mut self, now: Instant) {
        self.leaving.retain(|l| l.until > now);
    }

    /// When the next drain ends (a rebuild is due then).
    pub fn next_drain_end(&self) -> Option<Instant> {
        self.leaving.iter().map(|l| l.until).min()
    }

    /// The backends draining.
    pub fn leaving(&self) -> &[Leaving] {
        &self.leaving
    }

    /// The specs a snapshot is built from: `specs` with down backends out and draining ones
    /// in at weight 0.
    pub fn merge(&self, specs: &[ServiceSpec]) -> Vec<ServiceSpec> {
        specs
            .iter()
            .map(|s| {
                let owner = service_of_spec(&s.name);
                let mut s = s.clone();
                for l in self.leaving.iter().filter(|l| l.spec == s.name) {
                    s.backends.push((l.addr, l.port, 0));
                }
                s.backends.retain(|(a, _, _)| !self.down.contains(&(owner.to_string(), *a)));
                s
            })
            .collect()
    }

    /// How `addr` of `service` stands at `now`; `checked`: whether the service has health
    /// checks (a checked backend not heard of yet counts as up).
    pub fn health_of(&self, service: &str, addr: IpAddr, checked: bool, now: Instant) -> Health {
        match self.health.get(&(service.to_string(), addr)) {
            Some(h) if !h.up => {
                Health::Down(format!("{} ({}s ago)", h.detail, now.saturating_duration_since(h.since).as_secs()))
            }
            Some(_) => Health::Up,
            None if checked => Health::Up,
            None => Health::Unchecked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn spec(name: &str, backends: &[(u8, u32)]) -> ServiceSpec {
        let mut s: ServiceSpec = "tcp:192.0.2.10:80=10.0.0.1:80".parse().unwrap();
        s.name = name.into();
        s.backends = backends.iter().map(|(b, w)| (ip(*b), 80, *w)).collect();
        s
    }

    #[test]
    fn a_removed_backend_drains_at_weight_zero_then_goes() {
        let t0 = Instant::now();
        let mut b = Backends::default();
        let old = vec![spec("web/tcp:80", &[(1, 1), (2, 1), (3, 1)])];
        let new = vec![spec("web/tcp:80", &[(1, 1), (2, 1)])];
        let started = b.replace(&old, &new, t0);
        assert_eq!(
            started,
            vec![Leaving { spec: "web/tcp:80".into(), addr: ip(3), port: 80, until: t0 + BACKEND_DRAIN }]
        );
        assert_eq!(b.merge(&new)[0].backends, vec![(ip(1), 80, 1), (ip(2), 80, 1), (ip(3), 80, 0)]);
        assert_eq!(b.next_drain_end(), Some(t0 + BACKEND_DRAIN));
        // A second reload without it does not restart the drain.
        assert!(b.replace(&new, &new, t0 + Duration::from_secs(10)).is_empty());
        b.expire(t0 + BACKEND_DRAIN);
        assert_eq!(b.merge(&new)[0].backends, vec![(ip(1), 80, 1), (ip(2), 80, 1)]);
        assert_eq!(b.next_drain_end(), None);
    }

    #[test]
    fn a_backend_that_comes_back_no_longer_drains_and_a_removed_service_does_not_drain() {
        let t0 = Instant::now();
        let mut b = Backends::default();
        let full = vec![spec("web/tcp:80", &[(1, 1), (2, 1)])];
        let less = vec![spec("web/tcp:80", &[(1, 1)])];
        b.replace(&full, &less, t0);
        assert_eq!(b.leaving().len(), 1);
        b.replace(&less, &full, t0);
        assert!(b.leaving().is_empty());
        assert_eq!(b.merge(&full)[0].backends, vec![(ip(1), 80, 1), (ip(2), 80, 1)]);
        // The whole service goes: its backends do not drain (no service to drain in).
        assert!(b.replace(&full, &[], t0).is_empty());
    }

    #[test]
    fn health_takes_a_backend_out_of_every_port_of_its_service_and_back() {
        let t0 = Instant::now();
        let mut b = Backends::default();
        let specs = vec![spec("web/tcp:80", &[(1, 1), (2, 1)]), spec("web/tcp:443", &[(1, 1), (2, 1)])];
        assert_eq!(b.health_of("web", ip(1), true, t0), Health::Up, "checked, not heard yet");
        assert_eq!(b.health_of("web", ip(1), false, t0), Health::Unchecked);
        b.health_changed("web", ip(1), false, "connect: refused".into(), t0);
        let merged = b.merge(&specs);
        assert_eq!(merged[0].backends, vec![(ip(2), 80, 1)]);
        assert_eq!(merged[1].backends, vec![(ip(2), 80, 1)]);
        assert_eq!(
            b.health_of("web", ip(1), true, t0 + Duration::from_secs(3)),
            Health::Down("connect: refused (3s ago)".into())
        );
        b.health_changed("web", ip(1), true, "ok".into(), t0);
        assert_eq!(b.merge(&specs), specs);
        // Health of a target no longer checked is forgotten.
        b.health_changed("web", ip(2), false, "timeout".into(), t0);
        b.retain_checked(&HashSet::new());
        assert_eq!(b.merge(&specs), specs);
        assert_eq!(b.health_of("web", ip(2), false, t0), Health::Unchecked);
    }

    #[test]
    fn a_down_backend_that_drains_stays_out() {
        let t0 = Instant::now();
        let mut b = Backends::default();
        let full = vec![spec("web/tcp:80", &[(1, 1), (2, 1)])];
        let less = vec![spec("web/tcp:80", &[(1, 1)])];
        b.replace(&full, &less, t0);
        b.health_changed("web", ip(2), false, "timeout".into(), t0);
        assert_eq!(b.merge(&less)[0].backends, vec![(ip(1), 80, 1)]);
        assert_eq!(service_of_spec("ns/web/tcp:80"), "ns/web");
        assert_eq!(service_of_spec("web"), "web");
    }
}

//! The plane: desired state -> snapshot. It holds what the source said (flags, a file, the
//! Kubernetes plans), the compiled services, their backends' health, drains and next-hop
//! MACs, and builds and publishes the snapshots the workers read. It neither sends frames
//! nor decides who announces what.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use xlb::{
    control::{
        backends::{service_of_spec, Backends, BACKEND_DRAIN},
        compile::Compiled,
        health::{HealthChecker, HealthEvent},
        ipam::Ipam,
        nexthop::{NextHops, Path, Via},
        services::{build_services, Publisher, StatsIds},
    },
    io::{
        netdev,
        netlink::{self, RouteKind},
    },
    lb::{maglev::TableCache, snapshot::Service, VipMode},
};

use super::{
    datapath::Datapath,
    start::{mtime, Source},
};

/// The path the kernel's route `r` gives to a backend; `port`: which of `dp`'s interfaces
/// the route leaves by, if one of them.
fn path_of(r: &netlink::Route, dp: &Datapath, port: Option<usize>) -> Path {
    match r.kind {
        RouteKind::Local => Path::Unreachable("it is one of this host's own addresses".into()),
        RouteKind::Refused => {
            Path::Unreachable("the kernel's route to it refuses it (blackhole, unreachable or prohibit)".into())
        }
        RouteKind::Unicast if port.is_none() => Path::Unreachable(format!(
            "the kernel routes it through {} (ifindex {}), not {}, which xlb serves",
            netdev::name_of(r.oif).unwrap_or_else(|| "another interface".into()),
            r.oif,
            dp.ports.iter().map(|p| p.dev.name.as_str()).collect::<Vec<_>>().join(" or ")
        )),
        RouteKind::Unicast => r.gateway.map_or(Path::OnLink, Path::Via),
    }
}

/// Desired state and the snapshots built from it.
pub(super) struct Plane {
    pub(super) source: Source,
    pub(super) compiled: Compiled,
    pub(super) ipam: Ipam,
    /// The datapath services of the last build (index `i` is `compiled.specs[i]`).
    pub(super) services: Vec<Service>,
    /// Backends draining and down.
    pub(super) backends: Backends,
    /// Backends' paths and next-hop MACs, from the kernel's routes and neighbour table.
    pub(super) hops: NextHops,
    pub(super) stats_ids: StatsIds,
    /// Maglev tables of the last build, reused for unchanged backends.
    tables: TableCache,
    pub(super) publisher: Publisher,
    pub(super) health: HealthChecker,
    pub(super) reloads: u64,
    pub(super) reload_failures: u64,
    pub(super) last_reload_error: Option<String>,
    /// When the routes and neighbour table are read next.
    pub(super) next_neigh: Instant,
    /// When they were last read.
    pub(super) last_neigh: Instant,
    /// How many times a backend's path became unreachable.
    pub(super) unreachable_events: u64,
    /// When the config file's mtime is looked at next.
    pub(super) next_file_check: Instant,
}

impl Plane {
    pub(super) fn new(
        source: Source,
        compiled: Compiled,
        ipam: Ipam,
        publisher: Publisher,
        health: HealthChecker,
        now: Instant,
    ) -> Self {
        Plane {
            source,
            compiled,
            ipam,
            services: Vec::new(),
            backends: Backends::default(),
            hops: NextHops::default(),
            stats_ids: StatsIds::default(),
            tables: TableCache::default(),
            publisher,
            health,
            reloads: 0,
            reload_failures: 0,
            last_reload_error: None,
            next_neigh: now,
            last_neigh: now,
            unreachable_events: 0,
            next_file_check: now + Duration::from_secs(1),
        }
    }

    /// Publishes the services with the VIP modes `modes`.
    pub(super) fn publish(&mut self, modes: impl IntoIterator<Item = (IpAddr, VipMode)>) {
        let generation = self.publisher.publish(modes, self.services.clone());
        tracing::debug!(generation, "snapshot published");
    }

    /// Rebuilds the datapath services from the compiled specs, health, drains and MACs, and
    /// publishes them with `modes`.
    pub(super) fn rebuild(&mut self, modes: impl IntoIterator<Item = (IpAddr, VipMode)>, now: Instant) {
        self.backends.expire(now);
        let specs = self.backends.merge(&self.compiled.specs);
        match build_services(&specs, &self.hops, &mut self.stats_ids, &mut self.tables) {
            Ok(s) => {
                self.services = s;
                self.publish(modes);
            }
            Err(e) => tracing::error!(error = %e, "building the services failed; keeping the previous ones"),
        }
    }

    /// When the next drain ends (a rebuild is due then).
    pub(super) fn next_drain_end(&self) -> Option<Instant> {
        self.backends.next_drain_end()
    }

    /// The health checker's news; a rebuild is due.
    pub(super) fn health_changed(&mut self, ev: HealthEvent, now: Instant) {
        let backend = SocketAddr::new(ev.target.addr, ev.target.port);
        if ev.up {
            tracing::info!(service = %ev.target.service, %backend, "backend is up again");
        } else {
            tracing::warn!(service = %ev.target.service, %backend, reason = %ev.detail, "backend is down; it gets no new flows");
        }
        self.backends.health_changed(&ev.target.service, ev.target.addr, ev.up, ev.detail, now);
    }

    /// Makes `compiled` what runs at `now`: backends that leave a service that stays drain,
    /// health checks follow. The caller announces and rebuilds.
    pub(super) fn set_compiled(&mut self, compiled: Compiled, now: Instant) {
        for l in self.backends.replace(&self.compiled.specs, &compiled.specs, now) {
            tracing::info!(service = %l.spec, backend = %SocketAddr::new(l.addr, l.port), drain_s = BACKEND_DRAIN.as_secs(), "backend removed: draining (no new flows, existing ones go on)");
        }
        // The compiled specs keep every backend; health applies at rebuild.
        self.compiled = compiled;
        // Health checks for gone backends stop; their state is forgotten.
        let targets: HashSet<(String, IpAddr)> =
            self.compiled.health.iter().map(|t| (t.service.clone(), t.addr)).collect();
        self.backends.retain_checked(&targets);
        self.health.set_targets(self.compiled.health.clone());
        self.next_neigh = now;
    }

    /// Re-reads the config file. A valid one is returned, to be applied; an invalid one
    /// changes nothing and says why.
    pub(super) fn reload_file(&mut self) -> Option<Compiled> {
        let Source::File { path, mtime: seen, .. } = &mut self.source else {
            tracing::warn!("nothing to reload: xlb runs from flags, not from a config file");
            return None;
        };
        *seen = mtime(path);
        let path = path.clone();
        let mut ipam = self.ipam.clone();
        let (new, compiled) = match xlb::k8s::manifests::load(&path, &mut ipam) {
            Ok((new, compiled, notes)) => {
                for n in &notes {
                    tracing::warn!(file = %path.display(), "{n}");
                }
                (new, compiled)
            }
            Err(e) => {
                self.reload_failures += 1;
                self.last_reload_error = Some(e.to_string());
                for err in &e.0 {
                    tracing::error!(file = %path.display(), "config reload refused, the running config stays: {err}");
                }
                return None;
            }
        };
        let Source::File { desired: old, .. } = &mut self.source else { return None };
        // What needs a restart is kept as it was, and said.
        let restart_only = [
            ("interfaces", old.interfaces != new.interfaces),
            ("snat", old.snat_addrs != new.snat_addrs || old.snat_ports != new.snat_ports),
            (
                "conntrack",
                old.conntrack_capacity != new.conntrack_capacity || old.conntrack_timeouts != new.conntrack_timeouts,
            ),
            ("admin", old.admin_socket != new.admin_socket),
            ("metrics", old.metrics != new.metrics),
            ("announce", old.announce != new.announce),
            ("ha", old.ha != new.ha),
            // bgpd's listening port is a flag of its command line.
            ("bgp.listen", old.bgp.as_ref().map(|b| b.listen) != new.bgp.as_ref().map(|b| b.listen)),
        ];
        for (field, changed) in restart_only {
            if changed {
                tracing::warn!(field, "this part of the config changed and takes effect at the next restart");
            }
        }
        **old = new;
        self.ipam = ipam;
        Some(compiled)
    }

    /// Whether the config file changed since it was read (looked at once a second).
    pub(super) fn file_changed(&mut self, now: Instant) -> bool {
        if now < self.next_file_check {
            return false;
        }
        self.next_file_check = now + Duration::from_secs(1);
        let Source::File { path, mtime: seen, .. } = &self.source else { return false };
        let now_mtime = mtime(path);
        let changed = now_mtime.is_some() && now_mtime != *seen;
        if changed {
            tracing::info!(file = %path.display(), "config file changed: reloading");
        }
        changed
    }

    /// Looks up the kernel's route to each backend and its next hop's MAC on `dev`, asks the
    /// kernel to resolve next hops it does not know; returns whether a path or MAC changed
    /// (a rebuild is due).
    pub(super) fn refresh_neighbours(&mut self, dp: &Datapath, now: Instant) -> bool {
        // Every configured backend (down ones too: they may come back at any time) and the
        // draining ones, whose flows still go to them.
        let wanted: Vec<IpAddr> = {
            let mut w: Vec<IpAddr> = self.compiled.specs.iter().flat_map(|s| s.backends.iter().map(|b| b.0)).collect();
            w.extend(self.backends.leaving().iter().map(|l| l.addr));
            w.sort();
            w.dedup();
            w
        };
        self.last_neigh = now;
        self.hops.paths.retain(|a, _| wanted.binary_search(a).is_ok());
        self.hops.macs.retain(|a, _| wanted.binary_search(a).is_ok());
        self.hops.via.retain(|a, _| wanted.binary_search(a).is_ok());
        if wanted.is_empty() {
            self.next_neigh = now + Duration::from_secs(3600);
            return false;
        }
        let mut tables = Vec::new();
        for p in &dp.ports {
            match netlink::neighbours(p.dev.ifindex) {
                Ok(t) => tables.push(t),
                Err(e) => {
                    tracing::warn!(interface = %p.dev.name, error = %e, "reading the neighbour table failed; retrying");
                    self.next_neigh = now + Duration::from_secs(1);
                    return false;
                }
            }
        }
        let first = dp.ports.first().map(|p| p.dev.name.clone()).unwrap_or_default();
        let mut changed = false;
        let mut unresolved = 0;
        for addr in &wanted {
            let mut port = 0;
            let path = match netlink::route_to(*addr) {
                Ok(r) => {
                    let out = dp.ports.iter().position(|p| p.dev.ifindex == r.oif);
                    port = out.unwrap_or(0);
                    // Several interfaces: which one it is reached through.
                    let via = out
                        .filter(|_| dp.ports.len() > 1)
                        .and_then(|p| dp.ports.get(p))
                        .map(|p| Via { name: p.dev.name.clone(), mac: p.dev.mac });
                    if self.hops.via.get(addr) != via.as_ref() {
                        changed = true;
                        match via {
                            Some(v) => self.hops.via.insert(*addr, v),
                            None => self.hops.via.remove(addr),
                        };
                    }
                    path_of(&r, dp, out)
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) => {
                    Path::Unreachable(format!("it is not on {first}'s segment and no route leads to it"))
                }
                Err(e) => {
                    tracing::warn!(backend = %addr, error = %e, "looking up the route to a backend failed; retrying");
                    unresolved += 1;
                    continue;
                }
            };
            let old = self.hops.paths.insert(*addr, path.clone());
            if old.as_ref() != Some(&path) {
                changed = true;
                self.unreachable_events += u64::from(matches!(path, Path::Unreachable(_)));
                match &path {
                    Path::Unreachable(why) => {
                        tracing::warn!(backend = %addr, "backend unreachable, no new flows go to it: {why}");
                    }
                    p => tracing::info!(backend = %addr, path = %p, "backend path"),
                }
            }
            let Some(hop) = path.hop(*addr) else {
                changed |= self.hops.macs.remove(addr).is_some();
                continue;
            };
            let found =
                tables.get(port).and_then(|t| t.iter().find(|n| n.addr == hop && n.usable())).and_then(|n| n.mac);
            match (found, self.hops.macs.get(addr).copied()) {
                (Some(mac), old) if old != Some(mac) => {
                    tracing::info!(backend = %addr, %mac, path = %path, "backend next hop resolved");
                    self.hops.macs.insert(*addr, mac);
                    changed = true;
                }
                (Some(_), _) => {}
                (None, old) => {
                    unresolved += 1;
                    if old.is_some() {
                        tracing::warn!(backend = %addr, path = %path, "backend next hop lost; no new flows go to it");
                        self.hops.macs.remove(addr);
                        changed = true;
                    }
                    let ifindex = dp.ports.get(port).map_or(0, |p| p.dev.ifindex);
                    if let Err(e) = netlink::solicit(ifindex, hop) {
                        tracing::warn!(backend = %addr, next_hop = %hop, error = %e, "asking the kernel to resolve a next hop failed");
                    }
                }
            }
        }
        // Unresolved next hops are asked for again soon; the others are looked at again
        // when the kernel says its routes or neighbours changed, and every 5 s besides.
        let next = if unresolved > 0 { Duration::from_millis(200) } else { Duration::from_secs(5) };
        self.next_neigh = now + next;
        changed
    }

    /// The VIPs of the compiled services.
    pub(super) fn served_vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.compiled.specs.iter().map(|s| s.key.vip)
    }

    /// Whether a service on `vip` has a backend that takes new flows (last build).
    pub(super) fn vip_ready(&self, vip: IpAddr) -> bool {
        self.services.iter().any(|s| s.key.vip == vip && s.backends.iter().any(|b| b.takes_new_flows()))
    }

    /// The spec name of a datapath service (its index in `services` matches `compiled.specs`).
    pub(super) fn name_of(&self, i: usize) -> String {
        self.compiled.specs.get(i).map_or_else(|| "?".into(), |s| s.name.clone())
    }

    /// The config-level service a spec belongs to (`web` of `web/tcp:80`).
    pub(super) fn owner_of(&self, i: usize) -> String {
        service_of_spec(&self.name_of(i)).to_string()
    }
}

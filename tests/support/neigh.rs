//! Who answers ARP for the VIPs, seen from a lab client: a census of the answering MACs,
//! waiting until every VIP has exactly one, and timing a takeover after an owner fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use xlb::{io::packet_socket::PacketSocket, wire::EthernetAddress};

use super::frames::{arp_request, seen, Seen};

/// The client that asks: its socket, MAC and address.
pub struct Asker<'a> {
    pub sock: &'a PacketSocket,
    pub mac: EthernetAddress,
    pub ip: Ipv4Addr,
}

impl Asker<'_> {
    /// Which MACs answer ARP for each VIP (two rounds of requests).
    pub fn census(&self, vips: &[Ipv4Addr]) -> BTreeMap<Ipv4Addr, BTreeSet<EthernetAddress>> {
        let mut out: BTreeMap<Ipv4Addr, BTreeSet<EthernetAddress>> =
            vips.iter().map(|v| (*v, BTreeSet::new())).collect();
        for round in 0..2 {
            for v in vips {
                self.sock.send(&arp_request(self.mac, self.ip, *v)).unwrap();
            }
            let end = Instant::now() + Duration::from_millis(300 + 200 * round);
            let mut buf = [0u8; 2048];
            while Instant::now() < end {
                if let Some(n) = self.sock.recv(&mut buf, end.saturating_duration_since(Instant::now())).unwrap() {
                    if let Seen::ArpReply { spa, sha, tpa } = seen(&buf[..n]) {
                        if tpa == self.ip {
                            if let Some(set) = out.get_mut(&spa) {
                                set.insert(sha);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Asks until every VIP has exactly one answering MAC; returns VIP -> MAC.
    pub fn settled(&self, vips: &[Ipv4Addr], within: Duration) -> BTreeMap<Ipv4Addr, EthernetAddress> {
        let end = Instant::now() + within;
        loop {
            let c = self.census(vips);
            if c.values().all(|m| m.len() == 1) {
                return c.into_iter().map(|(v, m)| (v, *m.iter().next().unwrap())).collect();
            }
            assert!(Instant::now() < end, "VIPs without exactly one answering node after {within:?}: {c:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Watches `targets` with ARP probes (each every 10 ms) for `how_long`: for each target,
    /// when each MAC first and last answered.
    pub fn answers(&self, targets: &[Ipv4Addr], how_long: Duration) -> BTreeMap<Ipv4Addr, Answers> {
        let t0 = Instant::now();
        let mut out: BTreeMap<Ipv4Addr, Answers> = targets.iter().map(|t| (*t, BTreeMap::new())).collect();
        let mut buf = [0u8; 2048];
        let mut next = Instant::now();
        while t0.elapsed() < how_long {
            if Instant::now() >= next {
                for t in targets {
                    self.sock.send(&arp_request(self.mac, self.ip, *t)).unwrap();
                }
                next += Duration::from_millis(10);
            }
            if let Some(n) = self.sock.recv(&mut buf, next.saturating_duration_since(Instant::now())).unwrap() {
                if let Seen::ArpReply { spa, sha, tpa } = seen(&buf[..n]) {
                    if let Some(m) = out.get_mut(&spa).filter(|_| tpa == self.ip) {
                        let e = m.entry(sha).or_insert((t0.elapsed(), t0.elapsed()));
                        e.1 = t0.elapsed();
                    }
                }
            }
        }
        out
    }

    /// Probes `target` every 10 ms from `t0` (when its owner `old` failed) until another MAC
    /// answers; returns how long that took and whether the new owner sent gratuitous ARP.
    pub fn takeover(&self, target: Ipv4Addr, old: EthernetAddress, t0: Instant) -> (Duration, bool) {
        let mut buf = [0u8; 2048];
        let mut garp = false;
        let mut took = None;
        let mut next_probe = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if Instant::now() >= next_probe {
                self.sock.send(&arp_request(self.mac, self.ip, target)).unwrap();
                next_probe += Duration::from_millis(10);
            }
            let wait = next_probe.saturating_duration_since(Instant::now());
            if let Some(n) = self.sock.recv(&mut buf, wait).unwrap() {
                match seen(&buf[..n]) {
                    Seen::ArpReply { spa, sha, tpa } if spa == target && sha != old => {
                        garp |= tpa == target;
                        took.get_or_insert(t0.elapsed());
                    }
                    Seen::ArpRequest { spa, sha, tpa } if spa == target && tpa == target && sha != old => {
                        garp = true;
                        took.get_or_insert(t0.elapsed());
                    }
                    _ => {}
                }
            }
            if took.is_some() && garp || took.is_some_and(|t| t0.elapsed() > t + Duration::from_secs(2)) {
                break;
            }
        }
        (took.unwrap_or_else(|| panic!("no node took {target} within 30 s")), garp)
    }
}

/// Per answering MAC: when it first and last answered.
pub type Answers = BTreeMap<EthernetAddress, (Duration, Duration)>;

/// The time `answers` shows two MACs answering at once: from the first answer of a MAC other
/// than `old` to `old`'s last one (zero when they do not overlap).
pub fn overlap(answers: &Answers, old: EthernetAddress) -> Duration {
    let new = answers.iter().filter(|(m, _)| **m != old).map(|(_, x)| x.0).min();
    match (new, answers.get(&old)) {
        (Some(n), Some(o)) => o.1.saturating_sub(n),
        _ => Duration::ZERO,
    }
}

/// The `q` quantile (0..=1) of `v`.
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    // Nearest rank: the smallest value with at least q of them at or below it.
    let last = s.len() - 1;
    let i = (1..=s.len()).find(|k| *k as f64 >= q * s.len() as f64).map_or(last, |k| k - 1);
    s[i.min(last)]
}

//! This node's BGP sessions, told to the cluster: its entry in each `BGPPeer`'s
//! `status.nodes`, written by server-side apply with a field manager of its own
//! (`xlb-node/<node>`), so that the nodes never overwrite each other's entries; and an Event
//! on the `BGPPeer` when a session is established or leaves Established.
//!
//! API writes: one status patch per peer when its session changes (state, BFD state, routes
//! sent), nothing while nothing changes. A node that leaves removes its entries; one that
//! hands over to its successor leaves them for it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
    Api, Client, Resource as _, ResourceExt as _,
};
use serde_json::json;

use super::{
    bgp::{BgpPeer, PeerSession},
    events::Recorder,
    stats::{Error, Stats},
};

/// One session as this node's FRR reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// The peer's address.
    pub peer: IpAddr,
    /// BGP's state (`Established`, `Active`, ...).
    pub session: String,
    /// BFD's state, where a profile watches the session.
    pub bfd: Option<String>,
    /// Routes sent to the peer.
    pub advertised: u64,
}

/// What became of a session since the last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// It reached Established.
    Up(IpAddr),
    /// It left Established for this state.
    Down(IpAddr, String),
}

/// The sessions as last reported, and when each last changed state.
#[derive(Debug, Default)]
pub struct Tracker {
    last: BTreeMap<IpAddr, (SessionState, Timestamp)>,
}

impl Tracker {
    /// Takes a report made at `now`; says which sessions came up or went down. A session
    /// first seen established counts as up; one that goes from the report counts as down.
    pub fn update(&mut self, now: Timestamp, report: &[SessionState]) -> Vec<Change> {
        let up = |s: &SessionState| s.session == "Established";
        let mut out = Vec::new();
        let mut next = BTreeMap::new();
        for s in report {
            let since = match self.last.get(&s.peer) {
                Some((old, t)) if old.session == s.session => *t,
                Some((old, _)) => {
                    if up(old) != up(s) {
                        out.push(if up(s) { Change::Up(s.peer) } else { Change::Down(s.peer, s.session.clone()) });
                    }
                    now
                }
                None => {
                    if up(s) {
                        out.push(Change::Up(s.peer));
                    }
                    now
                }
            };
            next.insert(s.peer, (s.clone(), since));
        }
        for (peer, (old, _)) in &self.last {
            if up(old) && !next.contains_key(peer) {
                out.push(Change::Down(*peer, "removed".into()));
            }
        }
        self.last = next;
        out
    }

    /// This node's status entry for the peer at `addr`, if it has a session with it.
    pub fn entry(&self, node: &str, addr: IpAddr) -> Option<PeerSession> {
        let (s, since) = self.last.get(&addr)?;
        Some(PeerSession {
            node: node.to_string(),
            session: s.session.clone(),
            bfd: s.bfd.clone(),
            advertised: u32::try_from(s.advertised).unwrap_or(u32::MAX),
            since: Some(Time(*since)),
        })
    }
}

/// What the task needs besides the reports.
pub struct Gates {
    /// Ends the task (after this node's entries are removed, unless `stay`).
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Set when handing over: the entries stay for the successor.
    pub stay: Arc<AtomicBool>,
}

/// Keeps this node's entries and Events as the reports in `reports` say, until `stop`.
pub async fn run(
    client: Client,
    me: String,
    mut reports: tokio::sync::watch::Receiver<Vec<SessionState>>,
    gates: Gates,
    stats: Arc<Stats>,
) {
    let Gates { mut stop, stay } = gates;
    let api: Api<BgpPeer> = Api::all(client.clone());
    let recorder = Recorder::new(client, "xlb", &me);
    let manager = format!("xlb-node/{me}");
    let mut tracker = Tracker::default();
    // Peers whose status holds an entry of this node, as written.
    let mut written: BTreeMap<String, PeerSession> = BTreeMap::new();
    let mut dirty = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = reports.changed() => {
                if r.is_err() {
                    break;
                }
                let report = reports.borrow_and_update().clone();
                let changes = tracker.update(Timestamp::now(), &report);
                dirty = true;
                if !changes.is_empty() {
                    events(&api, &recorder, &me, &changes, &stats).await;
                }
            }
            // A write that failed is tried again.
            _ = tokio::time::sleep(Duration::from_secs(5)), if dirty => {}
        }
        if dirty {
            dirty = !write(&api, &manager, &me, &tracker, &mut written, &stats).await;
        }
    }
    if stay.load(Ordering::Relaxed) || written.is_empty() {
        return;
    }
    // Leaving: this node's entries go (bounded: the node is stopping).
    let clear = async {
        for name in written.keys() {
            let _ = api.patch_status(name, &PatchParams::apply(&manager).force(), &Patch::Apply(body(&[]))).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), clear).await.is_err() {
        tracing::debug!("removing this node's BGPPeer status entries timed out");
    }
}

/// The apply body of a `BGPPeer` status holding `entries`.
fn body(entries: &[PeerSession]) -> serde_json::Value {
    json!({"apiVersion": "xlb.dev/v1alpha1", "kind": "BGPPeer", "status": {"nodes": entries}})
}

/// The peers' objects, or None when they cannot be listed now.
async fn peers(api: &Api<BgpPeer>, stats: &Stats) -> Option<Vec<BgpPeer>> {
    match tokio::time::timeout(Duration::from_secs(5), api.list(&Default::default())).await {
        Ok(Ok(l)) => Some(l.items),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "listing BGPPeers failed");
            stats.failed("bgp_status", &Error::Kube(e));
            None
        }
        Err(_) => {
            stats.failed("bgp_status", &Error::Timeout(Duration::from_secs(5)));
            None
        }
    }
}

/// The address a peer object names.
fn address(p: &BgpPeer) -> Option<IpAddr> {
    p.spec.peer_address.trim().parse().ok()
}

/// Brings this node's entries to what `tracker` holds; whether every write went through.
async fn write(
    api: &Api<BgpPeer>,
    manager: &str,
    me: &str,
    tracker: &Tracker,
    written: &mut BTreeMap<String, PeerSession>,
    stats: &Stats,
) -> bool {
    let Some(objs) = peers(api, stats).await else { return false };
    let mut ok = true;
    let mut want: BTreeMap<String, PeerSession> = BTreeMap::new();
    for p in &objs {
        if let Some(e) = address(p).and_then(|a| tracker.entry(me, a)) {
            want.insert(p.name_any(), e);
        }
    }
    let names: BTreeSet<&String> = want.keys().chain(written.keys()).collect();
    let mut done = BTreeMap::new();
    for name in names {
        let entry = want.get(name);
        if entry.is_some() && written.get(name) == entry {
            done.insert(name.clone(), written[name].clone());
            continue;
        }
        let entries: Vec<PeerSession> = entry.into_iter().cloned().collect();
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            api.patch_status(name, &PatchParams::apply(manager).force(), &Patch::Apply(body(&entries))),
        )
        .await;
        match r {
            Ok(Ok(_)) => {
                if let Some(e) = entry {
                    done.insert(name.clone(), e.clone());
                }
            }
            // The peer was deleted: nothing to remove.
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %name, error = %e, "writing the BGPPeer's status failed");
                stats.failed("bgp_status", &Error::Kube(e));
                if let Some(old) = written.get(name) {
                    done.insert(name.clone(), old.clone());
                }
                ok = false;
            }
            Err(_) => {
                stats.failed("bgp_status", &Error::Timeout(Duration::from_secs(5)));
                if let Some(old) = written.get(name) {
                    done.insert(name.clone(), old.clone());
                }
                ok = false;
            }
        }
    }
    *written = done;
    ok
}

/// An Event on each peer object whose session came up or went down.
async fn events(api: &Api<BgpPeer>, recorder: &Recorder, me: &str, changes: &[Change], stats: &Stats) {
    let Some(objs) = peers(api, stats).await else { return };
    for c in changes {
        let (addr, ev) = match c {
            Change::Up(a) => (
                *a,
                Event {
                    type_: EventType::Normal,
                    reason: "SessionEstablished".into(),
                    note: Some(format!("node {me}: BGP session with {a} established")),
                    action: "Peer".into(),
                    secondary: None,
                },
            ),
            Change::Down(a, now) => (
                *a,
                Event {
                    type_: EventType::Warning,
                    reason: "SessionDown".into(),
                    note: Some(format!(
                        "node {me}: BGP session with {a} left Established (now {now}); the router no longer sends this node's VIPs' traffic here"
                    )),
                    action: "Peer".into(),
                    secondary: None,
                },
            ),
        };
        tracing::info!(peer = %addr, "{}", ev.note.as_deref().unwrap_or_default());
        for p in objs.iter().filter(|p| address(p) == Some(addr)) {
            recorder.publish_within(&ev, &p.object_ref(&()), stats).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(peer: &str, session: &str) -> SessionState {
        SessionState { peer: peer.parse().unwrap(), session: session.into(), bfd: None, advertised: 1 }
    }

    #[test]
    fn a_session_is_told_when_it_comes_up_and_when_it_goes_down_and_keeps_its_since() {
        let mut t = Tracker::default();
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(t.update(t0, &[s("10.0.0.1", "Active")]), []);
        assert_eq!(t.update(t1, &[s("10.0.0.1", "Established")]), [Change::Up(a)]);
        let mut more = s("10.0.0.1", "Established");
        more.advertised = 5;
        assert_eq!(t.update(Timestamp::from_second(3_000).unwrap(), &[more]), []);
        let e = t.entry("n1", a).unwrap();
        assert_eq!((e.advertised, e.since), (5, Some(Time(t1))), "routes sent change; the state's time stays");
        assert_eq!(t.update(t1, &[s("10.0.0.1", "Connect")]), [Change::Down(a, "Connect".into())]);
        assert_eq!(t.update(t1, &[s("10.0.0.1", "Established")]), [Change::Up(a)]);
        assert_eq!(t.update(t1, &[]), [Change::Down(a, "removed".into())]);
        assert!(t.entry("n1", a).is_none());
    }
}

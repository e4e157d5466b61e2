//! The third vote of a two-node set: the Lease `xlb-witness`, which at most one node holds.
//!
//! With two members, a node alone has quorum only with a third vote. "This node reaches the
//! API server" is not enough: in a cut between the two nodes both usually still reach it,
//! and both would take every VIP. Instead, a node that loses touch with its peer asks for
//! the witness Lease, and the API server's optimistic concurrency (a write names the
//! resourceVersion it read) lets only one of the two have it:
//!
//! - free (no holder, or this node): write it with this node as holder; held for [`HOLD`]
//!   from the moment the write was sent, renewed every [`RENEW`] while wanted;
//! - held by the other node: taken only after its resourceVersion stayed the same for
//!   [`FREE_AFTER`] on this node's own clock (the holder died while it held it). Since
//!   `FREE_AFTER` is well over `HOLD`, the old holder's hold has ended by then;
//! - no longer wanted (the nodes hear each other again): released (holder emptied) once.
//!
//! Nothing is written while the two nodes hear each other: the API load of a healthy pair
//! is zero. Without the API there is no witness, and a node left alone of two does not
//! take over: it cannot tell a dead peer from a cut one.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use k8s_openapi::{api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};
use kube::{
    api::{ObjectMeta, PostParams},
    Api, ResourceExt as _,
};

/// The witness Lease's name (in xlb's namespace).
pub const WITNESS_LEASE: &str = "xlb-witness";
/// How long a successful write lets its writer count the vote (from when it was sent).
pub const HOLD: Duration = Duration::from_millis(1000);
/// How often the holder renews while it needs the vote.
pub const RENEW: Duration = Duration::from_millis(250);
/// How long another node's hold must stay unchanged before it counts as abandoned.
pub const FREE_AFTER: Duration = Duration::from_secs(3);

/// Shared between the control thread (which wants the vote, and reads it) and the task that
/// talks to the API server.
#[derive(Debug)]
pub struct Witness {
    base: Instant,
    wanted: AtomicBool,
    /// Held until `base` + this many ns; 0: not held.
    until: AtomicU64,
    notify: tokio::sync::Notify,
}

impl Witness {
    /// Not wanted, not held.
    pub fn new() -> Arc<Self> {
        Arc::new(Witness {
            base: Instant::now(),
            wanted: AtomicBool::new(false),
            until: AtomicU64::new(0),
            notify: tokio::sync::Notify::new(),
        })
    }

    /// Whether this node needs the vote (called on every tick; a change wakes the task).
    pub fn want(&self, yes: bool) {
        if self.wanted.swap(yes, Ordering::AcqRel) != yes {
            self.notify.notify_one();
        }
    }

    fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    /// Until when this node holds the vote (none: it does not).
    pub fn held_until(&self) -> Option<Instant> {
        match self.until.load(Ordering::Acquire) {
            0 => None,
            ns => Some(self.base + Duration::from_nanos(ns)),
        }
    }

    fn set_until(&self, t: Option<Instant>) {
        let ns = t
            .map_or(0, |t| u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX).max(1));
        self.until.store(ns, Ordering::Release);
    }
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// It does not exist: create it, held by this node.
    Create,
    /// Write this node in as holder, on top of this resourceVersion.
    Take(String),
    /// Another node holds it: not this time.
    Wait,
}

/// Judges the Lease as this node reads it over time (pure: time comes in).
#[derive(Debug, Default)]
pub struct Judge {
    /// Another holder's resourceVersion, and since when this node has seen it unchanged.
    seen: Option<(String, Instant)>,
}

impl Judge {
    /// `lease`: (holder, resourceVersion) as read at `now`.
    pub fn step(&mut self, me: &str, lease: Option<(&str, &str)>, now: Instant) -> Step {
        match lease {
            None => Step::Create,
            Some((holder, rv)) if holder.is_empty() || holder == me => {
                self.seen = None;
                Step::Take(rv.to_string())
            }
            Some((_, rv)) => {
                let since = match &self.seen {
                    Some((r, t)) if r == rv => *t,
                    _ => {
                        self.seen = Some((rv.to_string(), now));
                        now
                    }
                };
                if now.saturating_duration_since(since) >= FREE_AFTER {
                    Step::Take(rv.to_string())
                } else {
                    Step::Wait
                }
            }
        }
    }
}

fn lease(me: &str, rv: Option<String>) -> Lease {
    Lease {
        metadata: ObjectMeta { name: Some(WITNESS_LEASE.into()), resource_version: rv, ..ObjectMeta::default() },
        spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    }
}

fn holder(l: &Lease) -> String {
    l.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default()
}

/// One attempt at holding the vote: true when this node holds it (written just now).
async fn acquire(api: &Api<Lease>, me: &str, judge: &mut Judge) -> kube::Result<bool> {
    let current = api.get_opt(WITNESS_LEASE).await?;
    let step = {
        let read = current.as_ref().map(|l| (holder(l), l.resource_version().unwrap_or_default()));
        judge.step(me, read.as_ref().map(|(h, v)| (h.as_str(), v.as_str())), Instant::now())
    };
    let pp = PostParams { field_manager: Some("xlb".into()), ..PostParams::default() };
    let written = match step {
        Step::Wait => return Ok(false),
        Step::Create => api.create(&pp, &lease(me, None)).await,
        Step::Take(rv) => api.replace(WITNESS_LEASE, &pp, &lease(me, Some(rv))).await,
    };
    match written {
        Ok(_) => Ok(true),
        // The other node wrote first (409), or created it first.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the vote up (holder emptied), if this node still holds it.
async fn release(api: &Api<Lease>, me: &str) -> kube::Result<()> {
    let Some(mut l) = api.get_opt(WITNESS_LEASE).await? else { return Ok(()) };
    if holder(&l) != me {
        return Ok(());
    }
    if let Some(s) = l.spec.as_mut() {
        s.holder_identity = Some(String::new());
    }
    match api.replace(WITNESS_LEASE, &PostParams::default(), &l).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs until `stop`: holds the witness while it is wanted, releases it when not.
pub async fn run(api: Api<Lease>, me: String, w: Arc<Witness>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut judge = Judge::default();
    let mut holding = false;
    let mut failing = false;
    loop {
        if w.wanted() {
            let sent = Instant::now();
            match tokio::time::timeout(HOLD, acquire(&api, &me, &mut judge)).await {
                Ok(Ok(true)) => {
                    if !holding {
                        tracing::warn!(
                            lease = WITNESS_LEASE,
                            "the peer is out of touch: this node holds the witness (the third vote of two)"
                        );
                    }
                    holding = true;
                    failing = false;
                    w.set_until(Some(sent + HOLD));
                }
                Ok(Ok(false)) => {
                    if holding || !failing {
                        tracing::warn!(lease = WITNESS_LEASE, "the peer holds the witness: this node has no quorum");
                    }
                    holding = false;
                    failing = true;
                    w.set_until(None);
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(lease = WITNESS_LEASE, error = %e, "cannot reach the witness: no third vote");
                    }
                    failing = true;
                }
                Err(_) => {
                    if !failing {
                        tracing::warn!(lease = WITNESS_LEASE, "the witness did not answer in time: no third vote");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = w.notify.notified() => {}
                _ = tokio::time::sleep(RENEW) => {}
            }
        } else {
            w.set_until(None);
            failing = false;
            if holding {
                holding = false;
                match tokio::time::timeout(HOLD, release(&api, &me)).await {
                    Ok(Ok(())) => {
                        tracing::info!(lease = WITNESS_LEASE, "in touch with the peer again: witness released")
                    }
                    _ => tracing::debug!(lease = WITNESS_LEASE, "releasing the witness failed; the peer waits for it"),
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = w.notify.notified() => {}
            }
        }
    }
    w.set_until(None);
    if holding {
        let _ = tokio::time::timeout(HOLD, release(&api, &me)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_free_or_abandoned_witness_is_taken() {
        let t0 = Instant::now();
        let mut j = Judge::default();
        assert_eq!(j.step("a", None, t0), Step::Create);
        assert_eq!(j.step("a", Some(("", "7")), t0), Step::Take("7".into()));
        assert_eq!(j.step("a", Some(("a", "8")), t0), Step::Take("8".into()));
        // b holds it and keeps renewing: never taken.
        let ms = Duration::from_millis;
        assert_eq!(j.step("a", Some(("b", "9")), t0), Step::Wait);
        assert_eq!(j.step("a", Some(("b", "10")), t0 + ms(2500)), Step::Wait);
        assert_eq!(j.step("a", Some(("b", "11")), t0 + ms(5000)), Step::Wait);
        // b stops renewing (it died while holding it): taken FREE_AFTER after the first
        // sight of the unchanged version, not after b's write.
        assert_eq!(j.step("a", Some(("b", "11")), t0 + ms(7999)), Step::Wait);
        assert_eq!(j.step("a", Some(("b", "11")), t0 + ms(8000)), Step::Take("11".into()));
    }

    #[test]
    fn the_shared_cell_says_until_when() {
        let w = Witness::new();
        assert_eq!(w.held_until(), None);
        let t = Instant::now() + HOLD;
        w.set_until(Some(t));
        let got = w.held_until().unwrap();
        assert!(got <= t && t - got < Duration::from_micros(1));
        w.want(true);
        assert!(w.wanted());
        w.set_until(None);
        assert_eq!(w.held_until(), None);
    }
}

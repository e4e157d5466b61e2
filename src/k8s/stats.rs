//! How the Kubernetes side is doing, for `/metrics`: failed API calls by operation and
//! kind ([`Error::metric_label`]), and the allocator's state. The node side and the
//! allocator count into one shared [`Stats`]; the daemon reads a [`KubeStats`] copy at each
//! scrape. Counting takes a short lock off the datapath, once per API call.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

/// A failed call to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server answered with an error status, or the call failed on the way.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Error {
    /// A label with a fixed, small set of values: `forbidden` (RBAC), `not_found`,
    /// `conflict` (an optimistic-concurrency race), `invalid`, `server` (5xx), `api` (other
    /// statuses), `transport` (no answer reached), `timeout`; [`Stats::watch_failed`] counts
    /// `watch`, and errors of other kinds `other`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(e) => kube_label(e),
            Error::Timeout(_) => "timeout",
        }
    }
}

fn kube_label(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) => match s.code {
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            422 => "invalid",
            500..=599 => "server",
            _ => "api",
        },
        _ => "transport",
    }
}

/// Counters shared by the node side and the allocator.
#[derive(Debug, Default)]
pub struct Stats {
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    plans: AtomicU64,
    leader: AtomicBool,
    rounds: AtomicU64,
    writes: AtomicU64,
    allocated: AtomicU64,
    pending: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeStats {
    /// Failed calls by (operation, [`Error::metric_label`]).
    pub errors: BTreeMap<(&'static str, &'static str), u64>,
    /// Plans the node side computed.
    pub plans: u64,
    /// This instance holds the allocator Lease.
    pub allocator_leader: bool,
    /// Allocation rounds run.
    pub allocator_rounds: u64,
    /// Service and pool status writes.
    pub allocator_writes: u64,
    /// Served Services with an address after the last round.
    pub services_allocated: u64,
    /// Served Services without one (no pool, none free, a refused request).
    pub services_pending: u64,
}

impl Stats {
    /// `op` failed with `e`.
    pub fn failed(&self, op: &'static str, e: &Error) {
        self.count(op, e.metric_label());
    }

    /// The watch `op` failed (it is retried).
    pub fn watch_failed(&self, op: &'static str) {
        self.count(op, "watch");
    }

    /// `op` failed with `e` (a [`kube::Error`] inside is labelled by kind; anything else is
    /// `other`).
    pub fn failed_any(&self, op: &'static str, e: &anyhow::Error) {
        match e.downcast_ref::<kube::Error>() {
            Some(k) => self.count(op, kube_label(k)),
            None => self.count(op, "other"),
        }
    }

    fn count(&self, op: &'static str, label: &'static str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry((op, label)).or_insert(0) += 1;
        }
    }

    /// A plan was computed.
    pub fn planned(&self) {
        self.plans.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this instance holds the allocator Lease.
    pub fn set_leader(&self, yes: bool) {
        self.leader.store(yes, Ordering::Relaxed);
    }

    /// An allocation round ended with `allocated` Services served an address and `pending`
    /// without; `writes` status writes in it.
    pub fn round(&self, allocated: u64, pending: u64, writes: u64) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.allocated.store(allocated, Ordering::Relaxed);
        self.pending.store(pending, Ordering::Relaxed);
        self.writes.fetch_add(writes, Ordering::Relaxed);
    }

    /// A copy of the counters now.
    pub fn read(&self) -> KubeStats {
        KubeStats {
            errors: self.errors.lock().map(|m| m.clone()).unwrap_or_default(),
            plans: self.plans.load(Ordering::Relaxed),
            allocator_leader: self.leader.load(Ordering::Relaxed),
            allocator_rounds: self.rounds.load(Ordering::Relaxed),
            allocator_writes: self.writes.load(Ordering::Relaxed),
            services_allocated: self.allocated.load(Ordering::Relaxed),
            services_pending: self.pending.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        Error::Kube(kube::Error::Api(kube::core::Status::failure("no", "Forbidden").with_code(code).boxed()))
    }

    #[test]
    fn errors_are_counted_by_operation_and_kind() {
        let s = Stats::default();
        s.failed("lease_renew", &api(409));
        s.failed("lease_renew", &api(409));
        s.failed("status_write", &api(403));
        s.failed("event", &Error::Timeout(Duration::from_secs(5)));
        s.failed("event", &api(503));
        let r = s.read();
        assert_eq!(r.errors.get(&("lease_renew", "conflict")), Some(&2));
        assert_eq!(r.errors.get(&("status_write", "forbidden")), Some(&1));
        assert_eq!(r.errors.get(&("event", "timeout")), Some(&1));
        assert_eq!(r.errors.get(&("event", "server")), Some(&1));
        s.round(3, 1, 4);
        s.set_leader(true);
        let r = s.read();
        assert_eq!((r.allocator_rounds, r.services_allocated, r.services_pending, r.allocator_writes), (1, 3, 1, 4));
        assert!(r.allocator_leader);
    }
}

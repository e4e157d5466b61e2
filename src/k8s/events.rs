//! Kubernetes Events (events.k8s.io/v1) that keep what they say.
//!
//! kube's `Recorder` folds every Event with the same object, reason and action into one
//! series and keeps the first note: a second `AddressConflict` naming another claimant, or
//! an `IPAllocated` naming a new address, only raised the count of the first Event and
//! showed its old text. Here the note is part of the key: the same news again within
//! [`SERIES_TTL`] counts up (series), different news is a new Event.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent, events::v1::EventSeries},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType},
    Api, Client,
};
use serde_json::json;
use tokio::sync::Mutex;

use super::stats::{Error, Stats};

/// How long an Event is counted up rather than written anew (as kubectl's and client-go's
/// event aggregation: a few minutes).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// The longest [`Recorder::publish_within`] waits.
const PUBLISH_WITHIN: Duration = Duration::from_secs(2);

/// Events remembered at most: past it the oldest are forgotten (the next one like them is
/// written anew, never lost).
const MAX_REMEMBERED: usize = 4096;

/// What makes two Events the same news.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>, Option<String>),
    type_: &'static str,
    reason: String,
    action: String,
    note: Option<String>,
}

#[derive(Debug)]
struct Written {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// What to send for one Event: create it, or count up one written before.
#[derive(Debug, PartialEq)]
pub enum Write {
    /// A new Event.
    Create(Box<K8sEvent>),
    /// An Event written before happened again.
    Count {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// How many times it happened in all.
        count: i32,
    },
}

/// The Events written lately (pure: time comes in as arguments).
#[derive(Debug, Default)]
pub struct EventCache {
    written: HashMap<Key, Written>,
}

fn type_name(t: &EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

impl EventCache {
    /// What to write for `ev` about `regarding` at `now`, reported by `controller`/`instance`;
    /// `name`: the new Event's name, if one is created.
    pub fn write(
        &mut self,
        ev: &Event,
        regarding: &ObjectReference,
        (controller, instance): (&str, &str),
        name: String,
        now: Instant,
    ) -> Write {
        let key = Key {
            regarding: (
                regarding.namespace.clone(),
                regarding.kind.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            type_: type_name(&ev.type_),
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            note: ev.note.clone(),
        };
        if let Some(w) = self.written.get_mut(&key) {
            if now.saturating_duration_since(w.last) < SERIES_TTL {
                w.count += 1;
                w.last = now;
                return Write::Count { namespace: w.namespace.clone(), name: w.name.clone(), count: w.count };
            }
        }
        if self.written.len() >= MAX_REMEMBERED {
            self.written.retain(|_, w| now.saturating_duration_since(w.last) < SERIES_TTL);
            if self.written.len() >= MAX_REMEMBERED {
                let mut ages: Vec<Instant> = self.written.values().map(|w| w.last).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                self.written.retain(|_, w| w.last > cut);
            }
        }
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let event = K8sEvent {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..Default::default() },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(key.type_.into()),
            event_time: Some(MicroTime(Timestamp::now())),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(controller.into()),
            reporting_instance: Some(instance.into()),
            ..Default::default()
        };
        self.written.insert(key, Written { namespace, name, count: 1, last: now });
        Write::Create(Box::new(event))
    }
}

/// Writes Events for one reporter (`xlb` on a node).
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    cache: Mutex<EventCache>,
    seq: AtomicU64,
}

impl Recorder {
    /// Events reported by `controller` (`instance`: the node).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Recorder {
            client,
            controller: controller.into(),
            instance: instance.into(),
            cache: Mutex::new(EventCache::default()),
            seq: AtomicU64::new(0),
        }
    }

    /// [`Recorder::publish`], never waited on for more than 2 s: a failure or a timeout is
    /// logged and counted in `stats` (an Event is only news; a slow API must not hold up the
    /// caller).
    pub async fn publish_within(&self, ev: &Event, regarding: &ObjectReference, stats: &Stats) {
        let object = regarding.name.as_deref().unwrap_or_default();
        match tokio::time::timeout(PUBLISH_WITHIN, self.publish(ev, regarding)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(object, reason = %ev.reason, error = %e, "publishing the Event failed");
                stats.failed("event", &Error::Kube(e));
            }
            Err(_) => {
                tracing::warn!(object, reason = %ev.reason, "publishing the Event timed out");
                stats.failed("event", &Error::Timeout(PUBLISH_WITHIN));
            }
        }
    }

    /// Writes `ev` about `regarding`: a new Event, or the count of the same one written
    /// lately.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        // Names unique per reporter: the object's name, the time and a sequence number.
        let stamp = Timestamp::now().as_nanosecond();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.{:x}{:x}", regarding.name.as_deref().unwrap_or(&self.controller), stamp, seq & 0xfff);
        let write =
            self.cache.lock().await.write(ev, regarding, (&self.controller, &self.instance), name, Instant::now());
        match write {
            Write::Create(event) => {
                let ns = event.metadata.namespace.clone().unwrap_or_default();
                Api::<K8sEvent>::namespaced(self.client.clone(), &ns).create(&PostParams::default(), &event).await?;
            }
            Write::Count { namespace, name, count } => {
                let series = EventSeries { count, last_observed_time: MicroTime(Timestamp::now()) };
                Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
                    .patch(&name, &PatchParams::default(), &Patch::Merge(json!({ "series": series })))
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("Service".into()),
            namespace: Some("lab".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn conflict(note: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: "AddressConflict".into(),
            note: Some(note.into()),
            action: "Announce".into(),
            secondary: None,
        }
    }

    fn created(w: Write) -> K8sEvent {
        match w {
            Write::Create(e) => *e,
            other => panic!("expected a new Event, got {other:?}"),
        }
    }

    #[test]
    fn the_same_news_counts_up_and_other_news_is_a_new_event() {
        let mut c = EventCache::default();
        let t0 = Instant::now();
        let who = ("xlb", "node-a");
        let first = created(c.write(&conflict("claimed by node node-b"), &svc("s"), who, "s.1".into(), t0));
        assert_eq!(first.note.as_deref(), Some("claimed by node node-b"));
        assert_eq!(first.metadata.namespace.as_deref(), Some("lab"));
        assert_eq!(first.reporting_instance.as_deref(), Some("node-a"));
        assert_eq!(first.type_.as_deref(), Some("Warning"));
        // The same again: the first Event's count.
        assert_eq!(
            c.write(&conflict("claimed by node node-b"), &svc("s"), who, "s.2".into(), t0 + Duration::from_secs(1)),
            Write::Count { namespace: "lab".into(), name: "s.1".into(), count: 2 }
        );
        // Another claimant on the same Service: its own Event, with its own note (kube's
        // Recorder counted it up on the first and kept "node node-b").
        let other = created(c.write(&conflict("claimed by MAC 02:00:00:00:00:01"), &svc("s"), who, "s.3".into(), t0));
        assert_eq!(other.note.as_deref(), Some("claimed by MAC 02:00:00:00:00:01"));
        // The same news about another Service, too.
        created(c.write(&conflict("claimed by node node-b"), &svc("t"), who, "t.1".into(), t0));
        // After the TTL the same news is written anew.
        let later = t0 + SERIES_TTL + Duration::from_secs(2);
        created(c.write(&conflict("claimed by node node-b"), &svc("s"), who, "s.4".into(), later));
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut c = EventCache::default();
        let t0 = Instant::now();
        for i in 0..(3 * MAX_REMEMBERED) {
            let note = format!("news {i}");
            let at = t0 + Duration::from_millis(i as u64);
            created(c.write(&conflict(&note), &svc("s"), ("xlb", "n"), format!("s.{i}"), at));
            assert!(c.written.len() <= MAX_REMEMBERED);
        }
        // The latest are still counted up.
        let last = format!("news {}", 3 * MAX_REMEMBERED - 1);
        let at = t0 + Duration::from_secs(60);
        assert!(matches!(c.write(&conflict(&last), &svc("s"), ("xlb", "n"), "x".into(), at), Write::Count { .. }));
    }
}

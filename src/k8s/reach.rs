//! The `xlb.dev/BackendsReachable` condition on each Service this node announces, and a
//! Warning Event when it turns False: a Service whose backends xlb cannot reach (no worker
//! node can take it, a pod with no route through xlb's interface, a DSR backend behind a
//! router) says so where its owner looks, not only in xlb's log.
//!
//! Only the node that announces a VIP writes the conditions of its Services: it is the one
//! whose forwarding counts, and one writer per Service keeps them from flapping. The
//! condition is written with server-side apply under a field manager of its own, so it
//! sits beside the allocator's `xlb.dev/IPAllocated`; what the Service shows is compared
//! with what this node wants on every pass, so a write lost to a race is made again.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Service,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
    Api, Client, ResourceExt as _,
};
use serde_json::json;

use super::{plan::Plan, service::key, stats::Error};

/// The condition's type.
pub const CONDITION: &str = "xlb.dev/BackendsReachable";
/// The field manager of its writes.
const MANAGER: &str = "xlb-node-reachability";
/// A condition's message is cut to this many bytes (the API caps it at 32 KiB).
const MAX_MESSAGE: usize = 2048;
/// One write per Service at most this often (a failing API is not hammered).
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// What this node wants each Service it announces to show: `None` when every backend can be
/// reached, else what is wrong (one line per problem, joined).
pub fn desired(plan: &Plan, paths: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for vip in &plan.vips {
        let Some(owned) = plan.owners.get(vip) else { continue };
        for svc in &owned.services {
            let mut list: Vec<&String> = plan.backend_problems.get(svc).into_iter().flatten().collect();
            list.extend(paths.get(svc).into_iter().flatten());
            list.dedup();
            let msg = (!list.is_empty()).then(|| {
                let mut m = list.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ");
                if m.len() > MAX_MESSAGE {
                    let mut cut = MAX_MESSAGE;
                    while !m.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    m.truncate(cut);
                    m.push_str(" ...");
                }
                m
            });
            out.insert(svc.clone(), msg);
        }
    }
    out
}

/// The condition as a Service shows it.
fn shown(svc: &Service) -> Option<&Condition> {
    svc.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == CONDITION)
}

/// Writes the conditions, and the Events of their changes.
pub struct Reporter {
    client: Client,
    node: String,
    tried: HashMap<String, Instant>,
}

impl Reporter {
    /// For node `node`.
    pub fn new(client: Client, node: &str) -> Self {
        Reporter { client, node: node.to_string(), tried: HashMap::new() }
    }

    /// Brings each Service of `want` (by `namespace/name`) to its condition; returns the
    /// Events to publish (Service key, Event) for those that changed.
    pub async fn reconcile(
        &mut self,
        want: &BTreeMap<String, Option<String>>,
        svcs: &[Arc<Service>],
        stats: &super::stats::Stats,
    ) -> Vec<(String, Event)> {
        let now = Instant::now();
        self.tried.retain(|k, _| want.contains_key(k));
        let mut events = Vec::new();
        if want.is_empty() {
            return events;
        }
        let by_key: HashMap<String, &Arc<Service>> = svcs.iter().map(|s| (key(s), s)).collect();
        for (k, problem) in want {
            let Some(svc) = by_key.get(k) else { continue };
            let (status, reason, message) = match problem {
                None => ("True", "Reachable", format!("every backend is reachable from node {}", self.node)),
                Some(p) => ("False", "Unreachable", p.clone()),
            };
            let before = shown(svc);
            if before.is_some_and(|c| c.status == status && c.message == message) {
                continue;
            }
            // The time of the last change of status, kept while only the message changes.
            let since = before
                .filter(|c| c.status == status)
                .map_or_else(|| Time(Timestamp::now()), |c| c.last_transition_time.clone());
            let was_false = before.is_some_and(|c| c.status == "False");
            if self.tried.get(k).is_some_and(|t| now.saturating_duration_since(*t) < RETRY_EVERY) {
                continue;
            }
            self.tried.insert(k.clone(), now);
            let patch = json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": svc.name_any(), "namespace": svc.namespace()},
                "status": {"conditions": [{
                    "type": CONDITION,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": since,
                    "observedGeneration": svc.metadata.generation,
                }]}
            });
            let api: Api<Service> = Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default());
            let params = PatchParams::apply(MANAGER).force();
            match tokio::time::timeout(
                Duration::from_secs(2),
                api.patch_status(&svc.name_any(), &params, &Patch::Apply(&patch)),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(service = %k, error = %e, "writing the {CONDITION} condition failed; retrying");
                    stats.failed("condition", &Error::Kube(e));
                    continue;
                }
                Err(_) => {
                    tracing::warn!(service = %k, "writing the {CONDITION} condition timed out; retrying");
                    continue;
                }
            }
            // An Event when it turns False or says something new, and when it recovers.
            if status == "False" {
                let ev = Event {
                    type_: EventType::Warning,
                    reason: "BackendUnreachable".into(),
                    note: Some(message.clone()),
                    action: "Forward".into(),
                    secondary: None,
                };
                events.push((k.clone(), ev));
            } else if was_false {
                let ev = Event {
                    type_: EventType::Normal,
                    reason: "BackendsReachable".into(),
                    note: Some(message.clone()),
                    action: "Forward".into(),
                    secondary: None,
                };
                events.push((k.clone(), ev));
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::k8s::plan::Owned;

    #[test]
    fn only_the_services_this_node_announces_and_every_problem_said() {
        let vip = |s: &str| s.parse::<IpAddr>().unwrap();
        let owned = |svcs: &[&str], owner: &str| Owned {
            services: svcs.iter().map(|s| s.to_string()).collect(),
            owner: Some(owner.into()),
            candidates: vec![owner.into()],
            timing: None,
        };
        let mut plan = Plan::default();
        plan.vips.push(vip("192.0.2.1"));
        plan.owners.insert(vip("192.0.2.1"), owned(&["default/web", "default/dns"], "me"));
        plan.owners.insert(vip("192.0.2.2"), owned(&["default/other"], "someone-else"));
        plan.backend_problems.insert("default/dns".into(), vec!["no backend on the nodes path".into()]);
        let mut paths = BTreeMap::new();
        paths.insert("default/dns".to_string(), vec!["backend 10.244.1.7: no route".to_string()]);
        paths.insert("default/other".to_string(), vec!["backend 10.244.2.7: no route".to_string()]);
        let want = desired(&plan, &paths);
        assert_eq!(want.len(), 2, "not another node's Service: {want:?}");
        assert_eq!(want["default/web"], None);
        assert_eq!(want["default/dns"].as_deref(), Some("no backend on the nodes path; backend 10.244.1.7: no route"));
        // A long list is cut, on a character boundary.
        paths.insert("default/web".into(), (0..500).map(|i| format!("backend 10.0.{i}.1: é")).collect());
        let web = desired(&plan, &paths)["default/web"].clone().unwrap();
        assert!(web.len() <= MAX_MESSAGE + 4 && web.ends_with(" ..."), "{}", web.len());
    }
}

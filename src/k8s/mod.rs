//! Kubernetes: the custom resources, LoadBalancer IPAM that writes Service status, and the
//! node side of `xlb run --kubernetes`: membership Leases, which node announces which VIP,
//! and the datapath services built from Services, EndpointSlices and Nodes.

pub mod alloc;
pub mod bgp;
pub mod cilium_bgp;
pub mod controller;
pub mod crds;
pub mod events;
pub mod foreign;
pub mod manifests;
pub mod member;
pub mod migrate;
pub mod plan;
pub mod pools;
pub mod reach;
pub mod service;
pub mod sessions;
pub mod source;
pub mod stats;
pub mod witness;

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use kube::{
    runtime::{reflector, watcher, WatchStreamExt as _},
    Api,
};

/// Retry delays of 200 ms doubling up to `max`. kube's default grows to 30 s, which after an
/// API outage of that length would keep a node on stale objects for another half minute.
#[derive(Debug)]
pub(crate) struct CappedBackoff {
    next: Option<Duration>,
    max: Duration,
}

impl CappedBackoff {
    pub(crate) fn new(max: Duration) -> Self {
        CappedBackoff { next: None, max }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next.unwrap_or(Duration::from_millis(200)).min(self.max);
        self.next = Some((d * 2).min(self.max));
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = None;
    }
}

/// Keeps a reflector's store filled; wakes `notify` on every change; failures are counted
/// under `what`.
pub(crate) fn reflect<K>(
    api: Api<K>,
    notify: Arc<tokio::sync::Notify>,
    what: &'static str,
    stats: Arc<stats::Stats>,
) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    reflect_with(api, (), notify, what, stats)
}

/// `reflect` for a kind known only at run time (`dyntype`: its `ApiResource`).
pub(crate) fn reflect_with<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    notify: Arc<tokio::sync::Notify>,
    what: &'static str,
    stats: Arc<stats::Stats>,
) -> reflector::Store<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let watch = watcher(api, watcher::Config::default()).backoff(CappedBackoff::new(Duration::from_secs(5)));
    let mut stream = reflector(writer, watch).touched_objects().boxed();
    tokio::spawn(async move {
        let mut failing = false;
        while let Some(r) = stream.next().await {
            if r.is_err() {
                stats.watch_failed(what);
            }
            match r {
                Err(e) if !failing => {
                    tracing::warn!(watch = what, error = %e, "watch failed; retrying (said once until it works again)");
                    failing = true;
                }
                Err(e) => tracing::debug!(watch = what, error = %e, "watch failed again"),
                Ok(_) if failing => {
                    tracing::info!(watch = what, "watch works again");
                    failing = false;
                }
                Ok(_) => {}
            }
            notify.notify_one();
        }
    });
    store
}

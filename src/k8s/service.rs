//! Which Services xlb serves and the name it knows each by: shared by the allocator
//! (`controller`), the node side's plan (`plan`) and its watchers (`source`). A leaf.

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt as _;

/// The class xlb serves (`spec.loadBalancerClass`).
pub const DEFAULT_CLASS: &str = "xlb.dev/xlb";

/// How the allocator runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `spec.loadBalancerClass` served.
    pub class: String,
    /// Also serve LoadBalancer Services with no class.
    pub unclassed: bool,
    /// This instance's name (the node's), for the Lease and Events.
    pub identity: String,
    /// Namespace of the allocator Lease.
    pub namespace: String,
    /// Lease duration.
    pub lease_seconds: u64,
}

/// Whether xlb serves this Service.
pub fn served(svc: &Service, s: &Settings) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer")
        && match spec.load_balancer_class.as_deref() {
            Some(c) => c == s.class,
            None => s.unclassed,
        }
}

/// A Service's `namespace/name`, the key xlb names it by (logs, Events, IPAM holders).
pub fn key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

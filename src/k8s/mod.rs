//! Kubernetes: the custom resources, LoadBalancer IPAM that writes Service status, and the
//! controller that reads Services, EndpointSlices, pools and Leases from the API.

pub mod alloc;
pub mod controller;
pub mod crds;

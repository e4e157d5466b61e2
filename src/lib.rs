//! xlb: a userspace L4 load balancer on AF_XDP.
//!
//! `wire` reads and writes packet bytes; `lb` decides what happens to a frame, with no I/O;
//! `io` owns every socket, BPF object and worker thread (and all of the crate's `unsafe`);
//! `control` turns what the user asked for into snapshots the workers read; `abi` holds what
//! Rust shares with the XDP program (a leaf that everything may import); `memory` computes
//! what a set-up takes from the layout of those parts (used by the daemon and the chart's test).
#![deny(unsafe_code)]

pub mod abi;
pub mod control;
#[allow(unsafe_code)]
pub mod io;
pub mod k8s;
pub mod lb;
pub mod memory;
pub mod wire;

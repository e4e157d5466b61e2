//! The control side: what the user asked for becomes snapshots and BPF map entries. It
//! never touches frames; it asks workers to send the few it builds (announcements, probes)
//! and hears from them about conflicts.

pub mod announcer;
pub mod compile;
pub mod config;
pub mod ha;
pub mod health;
pub mod ipam;
pub mod services;

pub use announcer::{AnnounceConfig, Announcer, VipStatus};

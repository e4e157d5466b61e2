//! The only home of `unsafe` in xlb: AF_XDP sockets (xsk-rs), the XDP program (libbpf-rs),
//! network-device queries, and the worker threads that poll the sockets. Every `unsafe`
//! block says why it is sound. Packet decisions are not made here: workers call
//! [`crate::lb::process`].

pub mod netdev;
pub mod netlink;
pub mod packet_socket;
pub mod port;
pub mod wake;
pub mod worker;
pub mod xdp;

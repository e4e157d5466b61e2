//! What the datapath decides about a frame: the verdict, the kind of answer sent, and a VIP
//! claim to report. A leaf: every step returns these, none defines them.

use std::net::IpAddr;

use super::stats::DropReason;
use crate::wire::EthernetAddress;

/// Another host claiming one of our VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// The VIP claimed.
    pub vip: IpAddr,
    /// The MAC that claimed it.
    pub mac: EthernetAddress,
}

/// Which kind of answer a transmitted frame is (for counting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// ARP reply.
    Arp,
    /// Neighbour advertisement.
    Ndp,
    /// Traffic forwarded to a backend.
    Forward,
    /// An ICMP error about one of our flows, sent where the flow goes (translated for SNAT).
    IcmpError,
    /// An echo reply to a ping of a VIP or SNAT address.
    Echo,
    /// A SNAT backend's reply, translated back and sent to the client.
    SnatReply {
        /// The flow's port belongs to another worker's share: the reply crossed workers.
        crossed: bool,
    },
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the first `len` bytes of the buffer back out of the interface.
    Tx {
        /// New length of the frame.
        len: usize,
        /// What kind of frame it is.
        reply: Reply,
    },
    /// Drop it, counted under this reason.
    Drop(DropReason),
    /// Drop it and report the claim to the control thread.
    Conflict(Conflict),
    /// A heartbeat of another xlb node: the worker hands it to the control thread.
    Heartbeat,
}

//! What xlb's Rust code shares with its XDP program and the kernel's AF_XDP interface:
//! the VIP map's value flags and the classification counters of `bpf/xlb.h`, and the modes
//! the program is attached and the sockets are bound in.
//!
//! A leaf: it imports nothing of the crate, so `control` can speak of VIP flags and modes
//! without importing `io` (which owns the program and the sockets, and all the `unsafe`).
//! `io::xdp` checks the layouts against the generated skeleton; the flags here must match
//! the `XLB_VIP_*` defines and `CLASS_NAMES` the order of `enum xlb_class`.

/// Value flag of the VIP map: owned, answer and take traffic (`XLB_VIP_OWNED`).
pub const VIP_OWNED: u32 = 1 << 0;
/// Value flag of the VIP map: probing, only neighbour traffic (`XLB_VIP_PROBING`).
pub const VIP_PROBING: u32 = 1 << 1;
/// Value flag of the VIP map: another node announces it; forward its traffic, answer and
/// watch nothing (`XLB_VIP_FORWARD`).
pub const VIP_FORWARD: u32 = 1 << 2;

/// Value flag of the VIP map: the VIP's traffic is this node's own service proxy's, so it
/// goes to the kernel; only its ARP/NDP comes to xlb (`XLB_VIP_LOCAL`).
pub const VIP_LOCAL: u32 = 1 << 3;

/// Classes counted by the XDP program, in the order of `enum xlb_class` in `bpf/xlb.h`.
pub const CLASS_NAMES: [&str; 9] =
    ["pass", "arp_request", "arp_watch", "ndp_solicit", "ndp_advert", "vip_v4", "vip_v6", "no_socket", "heartbeat"];

/// Where the program runs, as asked for or as it ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native where the driver has it, generic otherwise (only as a request).
    Auto,
    /// In the driver (native XDP).
    Native,
    /// In the generic (skb) path: works everywhere, costs an skb per packet.
    Generic,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// Whether to ask the driver for zero-copy when an AF_XDP socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ZeroCopy {
    /// Zero-copy where the driver has it, copy mode otherwise.
    Auto,
    /// Always copy mode.
    Off,
    /// Zero-copy or fail.
    Required,
}

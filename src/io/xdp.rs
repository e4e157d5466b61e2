//! Loading and attaching xlb's XDP program (`bpf/xlb.bpf.c`) and keeping its maps: the
//! XSKMAP of AF_XDP sockets by queue, the VIP map, and the per-CPU classification counters.
//!
//! The program is attached through a BPF link, so the kernel detaches it when the link is
//! dropped or when the process dies, even by SIGKILL: an interface is never left with a
//! program that redirects to sockets that no longer exist.

use std::{
    mem::MaybeUninit,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, RawFd},
};

use libbpf_rs::{
    skel::{OpenSkel, SkelBuilder},
    Link, MapCore, MapFlags, OpenObject, Xdp, XdpFlags,
};

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::unwrap_used,
    unreachable_pub,
    missing_docs,
    unsafe_op_in_unsafe_fn
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/xlb.skel.rs"));
}

use skel::{XlbSkel, XlbSkelBuilder};

/// Value flag of the VIP map: owned, answer and take traffic (`XLB_VIP_OWNED`).
pub const VIP_OWNED: u32 = 1 << 0;
/// Value flag of the VIP map: probing, only neighbour traffic (`XLB_VIP_PROBING`).
pub const VIP_PROBING: u32 = 1 << 1;

/// Classes counted by the XDP program, in the order of `enum xlb_class` in `bpf/xlb.h`.
pub const CLASS_NAMES: [&str; 8] =
    ["pass", "arp_request", "arp_watch", "ndp_solicit", "ndp_advert", "vip_v4", "vip_v6", "no_socket"];

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Native,
    /// In the generic (skb) path: works everywhere, costs an skb per packet.
    Generic,
    /// Offloaded to the NIC.
    Offload,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Offload => "offload",
        })
    }
}

/// Why the XDP program could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The BPF object failed to open or load (verifier, permissions, missing BTF).
    #[error("loading the XDP program failed: {0} (xlb needs root or CAP_BPF+CAP_NET_ADMIN)")]
    Load(#[source] libbpf_rs::Error),
    /// The kernel refused to attach the program to the interface.
    #[error("attaching XDP to {ifname} failed: {source} (is another XDP program attached? `ip link show {ifname}`)")]
    Attach {
        /// Interface name.
        ifname: String,
        /// The kernel's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// A map update failed.
    #[error("updating BPF map {map} failed: {source}")]
    Map {
        /// Which map.
        map: &'static str,
        /// The kernel's error.
        #[source]
        source: libbpf_rs::Error,
    },
}

/// The loaded program and its maps; attached to at most one interface.
pub struct XdpProgram {
    link: Option<Link>,
    skel: XlbSkel<'static>,
    ifindex: i32,
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram").field("ifindex", &self.ifindex).field("attached", &self.link.is_some()).finish()
    }
}

/// The VIP map's key for an address, laid out as `struct xlb_vip_key`.
pub fn vip_key(addr: IpAddr) -> [u8; 20] {
    let mut k = [0u8; 20];
    match addr {
        IpAddr::V4(a) => {
            k[0] = 4;
            k[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            k[0] = 6;
            k[4..20].copy_from_slice(&a.octets());
        }
    }
    k
}

impl XdpProgram {
    /// Opens and loads the program (not attached yet).
    pub fn load() -> Result<Self, XdpError> {
        // The skeleton borrows its object storage for as long as it lives. One program is
        // loaded per interface for the life of the process, so the storage (a pointer-sized
        // cell; the object itself is freed when the skeleton drops) is leaked to get that
        // lifetime.
        let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
        let open = XlbSkelBuilder::default().open(storage).map_err(XdpError::Load)?;
        let skel = open.load().map_err(XdpError::Load)?;
        Ok(XdpProgram { link: None, skel, ifindex: 0 })
    }

    /// Attaches the program to `ifindex` through a BPF link. The kernel picks native mode
    /// where the driver supports it and generic mode otherwise; the mode it chose is
    /// returned so that it can be reported.
    pub fn attach(&mut self, ifindex: u32, ifname: &str) -> Result<AttachMode, XdpError> {
        let idx = i32::try_from(ifindex).map_err(|_| XdpError::Attach {
            ifname: ifname.to_string(),
            source: libbpf_rs::Error::from(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
        })?;
        let link = self
            .skel
            .progs
            .xlb_xdp
            .attach_xdp(idx)
            .map_err(|source| XdpError::Attach { ifname: ifname.to_string(), source })?;
        self.link = Some(link);
        self.ifindex = idx;
        let query = Xdp::new(self.skel.progs.xlb_xdp.as_fd()).query(idx, XdpFlags::NONE);
        Ok(match query.map(|q| q.attach_mode) {
            Ok(2) => AttachMode::Generic,
            Ok(3) => AttachMode::Offload,
            _ => AttachMode::Native,
        })
    }

    /// Detaches the program (also done on drop).
    pub fn detach(&mut self) {
        if let Some(link) = self.link.take() {
            drop(link);
        }
    }

    /// Points `queue`'s redirects at the AF_XDP socket `fd`.
    pub fn set_socket(&self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        self.skel
            .maps
            .xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| XdpError::Map { map: "xsks", source })
    }

    /// Sets a VIP's flags ([`VIP_OWNED`], [`VIP_PROBING`]); 0 removes it.
    pub fn set_vip(&self, addr: IpAddr, flags: u32) -> Result<(), XdpError> {
        let key = vip_key(addr);
        let map = &self.skel.maps.vips;
        let res = if flags == 0 {
            match map.delete(&key) {
                // Deleting what is not there is what was asked.
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        } else {
            map.update(&key, &flags.to_ne_bytes(), MapFlags::ANY)
        };
        res.map_err(|source| XdpError::Map { map: "vips", source })
    }

    /// The classification counters, summed over CPUs, in [`CLASS_NAMES`] order.
    pub fn class_counts(&self) -> [u64; 8] {
        let mut out = [0u64; 8];
        for (i, slot) in (0u32..).zip(out.iter_mut()) {
            if let Ok(Some(per_cpu)) = self.skel.maps.stats.lookup_percpu(&i.to_ne_bytes(), MapFlags::ANY) {
                *slot =
                    per_cpu.iter().filter_map(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(u64::from_ne_bytes).sum();
            }
        }
        out
    }

    /// The program's file descriptor (for `BPF_PROG_TEST_RUN`).
    pub fn prog_fd(&self) -> RawFd {
        self.skel.progs.xlb_xdp.as_fd().as_raw_fd()
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` and returns its verdict
    /// (XDP_PASS is 2, XDP_REDIRECT 4). The frame runs on queue 0.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, libbpf_rs::Error> {
        let mut out = vec![0u8; frame.len() + 256];
        let input = libbpf_rs::ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut out[..]),
            ..libbpf_rs::ProgramInput::default()
        };
        Ok(self.skel.progs.xlb_xdp.test_run(input)?.return_value)
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        self.detach();
    }
}

//! Loading and attaching xlb's XDP program (`bpf/xlb.bpf.c`) and keeping its maps: the
//! XSKMAP of AF_XDP sockets by queue, the VIP map, and the per-CPU classification counters.
//!
//! The program is attached through a BPF link, so the kernel detaches it when the link is
//! dropped or when the process dies, even by SIGKILL: an interface is never left with a
//! program that redirects to sockets that no longer exist.

use std::{
    mem::MaybeUninit,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use libbpf_rs::{
    libbpf_sys,
    skel::{OpenSkel, SkelBuilder},
    MapCore, MapFlags, OpenObject,
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

pub use crate::abi::{AttachMode, CLASS_NAMES, VIP_FORWARD, VIP_LOCAL, VIP_OWNED, VIP_PROBING};

/// The outcome of [`XdpProgram::attach`].
#[derive(Debug)]
pub struct Attached {
    /// The mode the program runs in.
    pub mode: AttachMode,
    /// Why native mode was not used, when `auto` fell back to generic.
    pub native_error: Option<std::io::Error>,
}

/// Why the XDP program could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The BPF object failed to open or load (verifier, permissions, missing BTF).
    #[error("loading the XDP program failed: {0} (xlb needs root or CAP_BPF+CAP_NET_ADMIN)")]
    Load(#[source] libbpf_rs::Error),
    /// The kernel refused to attach the program to the interface.
    #[error("attaching XDP to {ifname} in {mode} mode failed: {source} (is another XDP program attached? `ip link show {ifname}`)")]
    Attach {
        /// Interface name.
        ifname: String,
        /// Mode tried.
        mode: AttachMode,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// The interface index does not fit the kernel's type.
    #[error("interface index {0} is out of range")]
    IfIndex(u32),
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
    link: Option<OwnedFd>,
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

    /// Attaches the program to `ifindex` through a BPF link in `mode`. `Auto` tries native
    /// mode and falls back to generic mode, saying why in the result.
    pub fn attach(&mut self, ifindex: u32, ifname: &str, mode: AttachMode) -> Result<Attached, XdpError> {
        let idx = i32::try_from(ifindex).map_err(|_| XdpError::IfIndex(ifindex))?;
        let attempt = |m: AttachMode| {
            let flags = match m {
                AttachMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
                _ => libbpf_sys::XDP_FLAGS_DRV_MODE,
            };
            self.link_create(idx, flags).map_err(|source| XdpError::Attach {
                ifname: ifname.to_string(),
                mode: m,
                source,
            })
        };
        let (link, attached) = match mode {
            AttachMode::Native | AttachMode::Generic => (attempt(mode)?, Attached { mode, native_error: None }),
            AttachMode::Auto => match attempt(AttachMode::Native) {
                Ok(link) => (link, Attached { mode: AttachMode::Native, native_error: None }),
                Err(XdpError::Attach { source: native, .. }) => {
                    let link = attempt(AttachMode::Generic)?;
                    (link, Attached { mode: AttachMode::Generic, native_error: Some(native) })
                }
                Err(other) => return Err(other),
            },
        };
        self.link = Some(link);
        self.ifindex = idx;
        Ok(attached)
    }

    fn link_create(&self, ifindex: i32, flags: u32) -> std::io::Result<OwnedFd> {
        // SAFETY: bpf_link_create_opts is plain old data; all-zero is its documented
        // default, completed by `sz` and `flags` below.
        let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t;
        opts.flags = flags;
        // SAFETY: the program descriptor is ours and live, `opts` is a live, sized struct,
        // and the returned descriptor is checked and then owned.
        let fd = unsafe { libbpf_sys::bpf_link_create(self.prog_fd(), ifindex, libbpf_sys::BPF_XDP, &opts) };
        if fd < 0 {
            return Err(std::io::Error::from_raw_os_error(-fd));
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Detaches the program (also done on drop, and by the kernel when the process dies).
    pub fn detach(&mut self) {
        self.link = None;
    }

    /// Points `queue`'s redirects at the AF_XDP socket `fd`.
    pub fn set_socket(&self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        self.skel
            .maps
            .xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| XdpError::Map { map: "xsks", source })
    }

    /// Sets a VIP's flags ([`VIP_OWNED`], [`VIP_PROBING`], [`VIP_FORWARD`], [`VIP_LOCAL`]); 0
    /// removes it.
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
    pub fn class_counts(&self) -> [u64; CLASS_NAMES.len()] {
        let mut out = [0u64; CLASS_NAMES.len()];
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

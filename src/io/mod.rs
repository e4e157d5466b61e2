//! The only home of `unsafe` in xlb: AF_XDP sockets (xsk-rs), the XDP program (libbpf-rs),
//! network-device queries, the worker threads that poll the sockets, and child processes
//! tied to xlb's life (`child`). Every `unsafe` block says why it is sound. Packet decisions are not made here: workers call
//! [`crate::lb::process`].

pub mod child;
pub mod netdev;
pub mod netlink;
pub mod packet_socket;
pub mod port;
pub mod state;
pub mod wake;
pub mod worker;
pub mod xdp;

/// Asks the CPU to bring the cache lines of `len` bytes at `p` in (a hint: it never faults
/// and changes nothing the program can observe). Workers prefetch each frame's flow-table
/// slot ([`crate::lb::Parsed::home`]) a batch ahead. A no-op where there is no stable
/// intrinsic.
#[inline]
pub fn prefetch((p, len): (*const u8, usize)) {
    #[cfg(target_arch = "x86_64")]
    {
        // An entry may straddle two lines: the first byte's and the last byte's.
        let last = p.wrapping_add(len.saturating_sub(1));
        // SAFETY: PREFETCHT0 is a hint; it does not dereference its address
        // architecturally, cannot fault, and any address (null, unmapped) is allowed.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(last.cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

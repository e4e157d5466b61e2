//! The AF_XDP socket of a worker (or of another tool, such as pktgen): the UMEM, the four
//! rings and the bind, zero-copy first where allowed; and the socket options for busy polling.

use std::{
    num::NonZeroU32,
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use xsk_rs::{
    config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
};

use super::{BindMode, WorkerConfig, WorkerError, ZeroCopy, FRAME_SIZE};

/// How long a bind that finds the queue busy is retried (see [`Xsk::open_params`]).
const BUSY_WAIT: Duration = Duration::from_secs(2);

/// Whether `e` is a bind refused because the queue is busy (EBUSY anywhere in its causes).
fn queue_busy(e: &WorkerError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| io.raw_os_error() == Some(libc::EBUSY)) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// What an AF_XDP socket is bound with.
#[derive(Debug, Clone, Copy)]
pub struct XskParams<'a> {
    /// Interface name.
    pub ifname: &'a str,
    /// Queue id.
    pub queue: u32,
    /// UMEM frames ([`FRAME_SIZE`] bytes each; at least twice `ring_size`).
    pub frames: u32,
    /// Size of each ring (power of two).
    pub ring_size: u32,
    /// Most frames handled at once (at most an eighth of `frames`).
    pub batch: usize,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
}

/// A bound AF_XDP socket with its UMEM and rings, not yet polled by a thread.
pub struct Xsk {
    pub(in crate::io) umem: Umem,
    pub(in crate::io) descs: Vec<FrameDesc>,
    pub(in crate::io) tx: TxQueue,
    pub(in crate::io) rx: RxQueue,
    pub(in crate::io) fq: FillQueue,
    pub(in crate::io) cq: CompQueue,
    /// How it was bound.
    pub mode: BindMode,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk").field("mode", &self.mode).field("frames", &self.descs.len()).finish()
    }
}

fn queue_size(what: &'static str, v: u32) -> Result<QueueSize, WorkerError> {
    QueueSize::new(v).map_err(|_| WorkerError::Size { what, value: v, why: "must be a power of two" })
}

impl Xsk {
    /// Creates the UMEM and binds a socket to `cfg.queue` of `cfg.ifname`, without loading
    /// any XDP program (xlb attaches its own). Zero-copy is tried first unless `Off`.
    pub fn open(cfg: &WorkerConfig) -> Result<Self, WorkerError> {
        Self::open_params(&XskParams {
            ifname: &cfg.ifname,
            queue: cfg.queue,
            frames: cfg.frames,
            ring_size: cfg.ring_size,
            batch: cfg.batch,
            zero_copy: cfg.zero_copy,
        })
    }

    /// Like [`Xsk::open`], from the socket's own parameters (tools other than the worker).
    ///
    /// The kernel lets go of a queue some time after the socket bound to it is closed (the
    /// pool is released on a workqueue): an xlb that binds right after another let go (a
    /// handover, a restart) can find the queue busy. EBUSY is therefore retried for up to
    /// [`BUSY_WAIT`].
    pub fn open_params(cfg: &XskParams<'_>) -> Result<Self, WorkerError> {
        let end = Instant::now() + BUSY_WAIT;
        let mut told = false;
        loop {
            match Self::open_modes(cfg) {
                Err(e) if queue_busy(&e) && Instant::now() < end => {
                    if !told {
                        tracing::info!(
                            ifname = cfg.ifname,
                            queue = cfg.queue,
                            "the queue is still held by a socket being closed; retrying"
                        );
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                r => return r,
            }
        }
    }

    /// One try of each bind mode allowed, best first.
    fn open_modes(cfg: &XskParams<'_>) -> Result<Self, WorkerError> {
        let attempts: &[BindMode] = match cfg.zero_copy {
            ZeroCopy::Auto => &[BindMode::ZeroCopy, BindMode::Copy],
            ZeroCopy::Off => &[BindMode::Copy],
            ZeroCopy::Required => &[BindMode::ZeroCopy],
        };
        let mut last = None;
        for mode in attempts {
            match Self::open_mode(cfg, *mode) {
                Ok(x) => return Ok(x),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(WorkerError::Size { what: "zero-copy", value: 0, why: "no bind mode to try" }))
    }

    fn open_mode(cfg: &XskParams<'_>, mode: BindMode) -> Result<Self, WorkerError> {
        let ring = queue_size("ring size", cfg.ring_size)?;
        let frames = NonZeroU32::new(cfg.frames).ok_or(WorkerError::Size {
            what: "UMEM frames",
            value: cfg.frames,
            why: "must be at least twice the ring size",
        })?;
        if u64::from(cfg.frames) < u64::from(cfg.ring_size) * 2 {
            return Err(WorkerError::Size {
                what: "UMEM frames",
                value: cfg.frames,
                why: "must be at least twice the ring size",
            });
        }
        // Two batches are kept back for replies; the rest must leave room to receive.
        if cfg.batch == 0 || cfg.batch.saturating_mul(8) > usize::try_from(cfg.frames).unwrap_or(0) {
            return Err(WorkerError::Size {
                what: "batch",
                value: u32::try_from(cfg.batch).unwrap_or(u32::MAX),
                why: "must be between 1 and an eighth of the UMEM frames",
            });
        }
        let umem_err = |source: Box<dyn std::error::Error + Send + Sync>| WorkerError::Umem {
            ifname: cfg.ifname.to_string(),
            queue: cfg.queue,
            source,
        };
        let frame_size = FrameSize::new(FRAME_SIZE).map_err(|e| umem_err(Box::new(e)))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| umem_err(Box::new(e)))?;
        let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| umem_err(Box::new(e)))?;
        let bind = match mode {
            BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
            BindMode::Copy => BindFlags::XDP_COPY,
        } | BindFlags::XDP_USE_NEED_WAKEUP;
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(bind)
            .build();
        let bind_err = |source: Box<dyn std::error::Error + Send + Sync>| WorkerError::Bind {
            ifname: cfg.ifname.to_string(),
            queue: cfg.queue,
            mode: match mode {
                BindMode::ZeroCopy => "zero-copy",
                BindMode::Copy => "copy",
            },
            source,
        };
        let ifname: Interface = cfg.ifname.parse().map_err(|e| bind_err(Box::new(e)))?;
        // SAFETY: the UMEM was created just above and is used by this socket alone, so the
        // shared-UMEM precondition of Socket::new does not apply.
        let (tx, rx, rings) =
            unsafe { Socket::new(sock_cfg, &umem, &ifname, cfg.queue) }.map_err(|e| bind_err(Box::new(e)))?;
        let (fq, cq) = rings.ok_or_else(|| bind_err("the kernel returned no fill/completion rings".into()))?;
        Ok(Xsk { umem, descs, tx, rx, fq, cq, mode })
    }

    /// The socket's descriptor, for the XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// One non-blocking recvfrom(): with busy polling on, this is what makes the kernel
    /// run the device's NAPI poll for this socket.
    pub(super) fn busy_poll_once(&self) {
        // SAFETY: a zero-length receive with no buffer and no address on our own socket.
        let _ = unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Sets the busy-poll socket options; returns what the kernel refused, if anything.
    pub fn set_busy_poll(&self, budget: usize) -> Result<(), std::io::Error> {
        const SO_PREFER_BUSY_POLL: i32 = 69;
        const SO_BUSY_POLL_BUDGET: i32 = 70;
        let budget = i32::try_from(budget).unwrap_or(64);
        for (opt, val) in [(SO_PREFER_BUSY_POLL, 1), (libc::SO_BUSY_POLL, 20), (SO_BUSY_POLL_BUDGET, budget)] {
            // SAFETY: passes a live i32 and its size to setsockopt on our own socket.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&val as *const i32).cast(),
                    u32::try_from(std::mem::size_of::<i32>()).unwrap_or(4),
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_queue_is_retried() {
        let bind = |errno| WorkerError::Bind {
            ifname: "eth0".into(),
            queue: 0,
            mode: "copy",
            source: Box::new(std::io::Error::from_raw_os_error(errno)),
        };
        assert!(queue_busy(&bind(libc::EBUSY)));
        assert!(!queue_busy(&bind(libc::ENODEV)));
        assert!(!queue_busy(&WorkerError::Size { what: "batch", value: 0, why: "test" }));
    }
}

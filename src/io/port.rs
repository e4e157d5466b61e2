//! A plain AF_XDP port for tools (pktgen's sender and sink, the benchmark's MAC-swapping
//! forwarder): send frames written by a closure, receive frames and optionally send them
//! back out, with the same ring handling as the worker (batched, need_wakeup, completions
//! recycled) and no load-balancing work at all.

use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::FrameDesc;

use super::worker::{BindMode, WorkerError, Xsk, XskParams};

/// One bound socket and its frames.
pub struct Port {
    xsk: Xsk,
    free: Vec<FrameDesc>,
    rx: Vec<FrameDesc>,
    comp: Vec<FrameDesc>,
    tx: Vec<FrameDesc>,
    in_flight: usize,
    ring: usize,
    batch: usize,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port").field("mode", &self.xsk.mode).field("free", &self.free.len()).finish()
    }
}

impl Port {
    /// Binds a socket (no XDP program is loaded: a sender needs none, a receiver attaches
    /// one and maps the socket itself).
    pub fn open(p: &XskParams<'_>) -> Result<Self, WorkerError> {
        let mut xsk = Xsk::open_params(p)?;
        let free = std::mem::take(&mut xsk.descs);
        let ring = usize::try_from(p.ring_size).unwrap_or(2048);
        let batch = p.batch.max(1);
        Ok(Port {
            xsk,
            free,
            rx: vec![FrameDesc::default(); batch],
            comp: vec![FrameDesc::default(); ring],
            tx: Vec::with_capacity(batch),
            in_flight: 0,
            ring,
            batch,
        })
    }

    /// The socket's descriptor (for an XSKMAP).
    pub fn fd(&self) -> RawFd {
        self.xsk.fd()
    }

    /// How it was bound.
    pub fn mode(&self) -> BindMode {
        self.xsk.mode
    }

    /// Frames handed to the kernel for sending and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn complete(&mut self) {
        // SAFETY: the completion ring hands back frames of this socket's own UMEM that we
        // submitted for TX; `comp` only receives their descriptors.
        let done = unsafe { self.xsk.cq.consume(&mut self.comp) };
        self.free.extend_from_slice(&self.comp[..done]);
        self.in_flight = self.in_flight.saturating_sub(done);
    }

    fn flush(&mut self) -> usize {
        let mut sent = 0;
        if !self.tx.is_empty() {
            let want = u32::try_from(self.tx.len()).unwrap_or(u32::MAX);
            let room = usize::try_from(self.xsk.tx.nb_free(want)).unwrap_or(0).min(self.tx.len());
            // SAFETY: every descriptor in `tx` is a frame of this UMEM in no ring; after
            // produce the kernel owns it until completion.
            sent = unsafe { self.xsk.tx.produce(&self.tx[..room]) };
            self.free.extend_from_slice(&self.tx[sent..]);
            self.tx.clear();
            self.in_flight += sent;
        }
        if self.in_flight > 0 && self.xsk.tx.needs_wakeup() {
            let _ = self.xsk.tx.wakeup();
        }
        sent
    }

    /// Sends up to `n` frames (at most a batch): `fill` writes each into its 2048-byte buffer
    /// and returns its length (0 to skip). Returns how many the kernel took.
    pub fn send(&mut self, n: usize, mut fill: impl FnMut(&mut [u8]) -> usize) -> usize {
        self.complete();
        for _ in 0..n.min(self.batch) {
            let Some(mut desc) = self.free.pop() else { break };
            // SAFETY: a free frame of this UMEM, in no ring.
            let mut data = unsafe { self.xsk.umem.data_mut(&mut desc) };
            let mut cur = data.cursor();
            let cap = cur.buf_len();
            cur.set_pos(cap);
            let len = fill(data.contents_mut()).min(cap);
            data.cursor().set_pos(len);
            if len == 0 {
                self.free.push(desc);
            } else {
                self.tx.push(desc);
            }
        }
        self.flush()
    }

    /// Keeps the fill ring stocked for receiving (keeping a batch back for sending).
    pub fn refill(&mut self) {
        let spare = self.free.len().saturating_sub(self.batch);
        if spare == 0 {
            return;
        }
        let want = u32::try_from(spare.min(self.ring)).unwrap_or(0);
        let room = usize::try_from(self.xsk.fq.nb_free(want)).unwrap_or(0).min(spare);
        if room > 0 {
            let from = self.free.len() - room;
            // SAFETY: these frames belong to this UMEM and are in no ring.
            let n = unsafe { self.xsk.fq.produce(&self.free[from..]) };
            self.free.truncate(self.free.len() - n);
            if n > 0 && self.xsk.fq.needs_wakeup() {
                let _ = self.xsk.fq.wakeup(self.xsk.rx.fd_mut(), 0);
            }
        }
    }

    /// Receives up to a batch. `f` sees each frame (its whole buffer and its length) and
    /// returns `Some(len)` to send it back out of this port, `None` to let it go. Returns
    /// the number received.
    pub fn recv(&mut self, mut f: impl FnMut(&mut [u8], usize) -> Option<usize>) -> usize {
        self.complete();
        self.refill();
        // SAFETY: `rx` only receives descriptors of frames in this socket's UMEM.
        let n = unsafe { self.xsk.rx.consume(&mut self.rx) };
        for i in 0..n {
            let mut desc = self.rx[i];
            // SAFETY: the frame was just consumed from RX: the kernel no longer writes it
            // and this is the only descriptor to it.
            let mut data = unsafe { self.xsk.umem.data_mut(&mut desc) };
            let len = data.contents().len();
            let mut cur = data.cursor();
            let cap = cur.buf_len();
            cur.set_pos(cap);
            match f(data.contents_mut(), len) {
                Some(out) => {
                    data.cursor().set_pos(out.min(cap));
                    self.tx.push(desc);
                }
                None => self.free.push(desc),
            }
        }
        self.flush();
        n
    }

    /// Sleeps until a frame may be there or `timeout_ms` passed.
    pub fn wait(&mut self, timeout_ms: i32) {
        if self.xsk.fq.needs_wakeup() {
            let _ = self.xsk.fq.wakeup(self.xsk.rx.fd_mut(), 0);
        }
        let mut fds = [libc::pollfd { fd: self.xsk.rx.fd().as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        // SAFETY: `fds` is a live array of one pollfd, and its length is passed.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout_ms) };
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process and namespace of a host,
/// so a sender's timestamp can be compared with a receiver's.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a live timespec the call writes; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

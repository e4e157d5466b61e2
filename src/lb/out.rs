//! Frames built off the hot path (announcements, probes, heartbeats) and copied into a UMEM
//! frame by a worker. A leaf: the neighbour and heartbeat code build them, workers send them.

/// Room in an [`OutFrame`]: an Ethernet header with one tag, IPv6 and an NDP message.
pub const OUT_FRAME_CAP: usize = 160;

/// A small frame built off the hot path and copied into a UMEM frame by a worker.
#[derive(Clone, Copy)]
pub struct OutFrame {
    buf: [u8; OUT_FRAME_CAP],
    len: usize,
}

impl core::fmt::Debug for OutFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "OutFrame({} bytes)", self.len)
    }
}

impl OutFrame {
    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// A frame of the first `len` bytes of `buf` (at most its capacity).
    pub(crate) fn from_parts(buf: [u8; OUT_FRAME_CAP], len: usize) -> Self {
        OutFrame { buf, len: len.min(OUT_FRAME_CAP) }
    }
}

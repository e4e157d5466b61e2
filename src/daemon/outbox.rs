//! Frames the control thread sends (heartbeats, announcements, probes), on their way to
//! queue 0's worker, which puts them on the wire between its batches (one copy per
//! interface is enough).

use std::collections::VecDeque;

use xlb::{io::worker::WorkerHandle, lb::neighbor::OutFrame};

/// Frames at most in queue 0's worker queue at a time (see [`Outbox::flush`]).
const IN_FLIGHT_FRAMES: usize = 256;
/// Frames at most waiting to be sent; past it, announcements are dropped (counted).
const OUTBOX_CAP: usize = 65_536;

/// Frames waiting for room in queue 0's worker queue.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: VecDeque<OutFrame>,
    /// Frames dropped because too many were waiting.
    pub(super) dropped: u64,
}

impl Outbox {
    /// Queues `frames` after those already waiting (`urgent`, heartbeats: before them) and
    /// hands what fits to the worker.
    pub(super) fn send(&mut self, frames: &[OutFrame], workers: &[WorkerHandle], urgent: bool) {
        for f in frames {
            if self.queue.len() >= OUTBOX_CAP {
                self.dropped += 1;
                if self.dropped == 1 {
                    tracing::warn!("too many announcements waiting to be sent; frames dropped (counted)");
                }
            } else if urgent {
                self.queue.push_front(*f);
            } else {
                self.queue.push_back(*f);
            }
        }
        self.flush(workers);
    }

    /// Hands waiting frames to queue 0's worker, keeping at most `IN_FLIGHT_FRAMES` in its
    /// queue: a burst (a refresh of a thousand VIPs) goes out over a few passes of the worker
    /// instead of overflowing the queue, and a heartbeat never waits behind more than that.
    pub(super) fn flush(&mut self, workers: &[WorkerHandle]) {
        let Some(w) = workers.first() else { return };
        let mut sent = false;
        while w.control.len() < IN_FLIGHT_FRAMES {
            let Some(f) = self.queue.pop_front() else { break };
            if let Err(e) = w.control.try_send(f) {
                self.queue.push_front(e.into_inner());
                break;
            }
            sent = true;
        }
        if sent {
            w.waker.notify();
        }
    }

    /// Whether frames are waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Forgets what is waiting (leaving: announcements no longer matter).
    pub(super) fn clear(&mut self) {
        self.queue.clear();
    }
}

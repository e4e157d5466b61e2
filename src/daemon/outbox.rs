//! Frames the control thread sends (heartbeats, announcements, probes), on their way to
//! the first worker of the interface they leave by, which puts them on the wire between its
//! batches (one copy per interface is enough).

use std::collections::VecDeque;

use xlb::{io::worker::WorkerHandle, lb::neighbor::OutFrame};

use super::datapath::Datapath;

/// Frames at most in a worker's queue at a time (see [`Outbox::flush`]).
const IN_FLIGHT_FRAMES: usize = 256;
/// Frames at most waiting to be sent; past it, announcements are dropped (counted).
const OUTBOX_CAP: usize = 65_536;

/// Frames waiting for room in their interface's first worker's queue.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Per interface (port index).
    queues: Vec<VecDeque<OutFrame>>,
    /// Frames dropped because too many were waiting.
    pub(super) dropped: u64,
}

impl Outbox {
    /// Queues `frames` for interface `port` after those already waiting (`urgent`,
    /// heartbeats: before them) and hands what fits to the worker.
    pub(super) fn send(&mut self, port: usize, frames: &[OutFrame], dp: &Datapath, urgent: bool) {
        if self.queues.len() <= port {
            self.queues.resize_with(port + 1, VecDeque::new);
        }
        let waiting: usize = self.queues.iter().map(VecDeque::len).sum();
        let queue = &mut self.queues[port];
        for (i, f) in frames.iter().enumerate() {
            if waiting + i >= OUTBOX_CAP {
                self.dropped += 1;
                if self.dropped == 1 {
                    tracing::warn!("too many announcements waiting to be sent; frames dropped (counted)");
                }
            } else if urgent {
                queue.push_front(*f);
            } else {
                queue.push_back(*f);
            }
        }
        if let Some(w) = dp.first_worker_of(port) {
            Self::flush_one(queue, w);
        }
    }

    /// Hands waiting frames to each interface's first worker.
    pub(super) fn flush(&mut self, dp: &Datapath) {
        for (port, queue) in self.queues.iter_mut().enumerate() {
            if let Some(w) = dp.first_worker_of(port) {
                Self::flush_one(queue, w);
            }
        }
    }

    /// Hands waiting frames to worker `w`, keeping at most `IN_FLIGHT_FRAMES` in its queue:
    /// a burst (a refresh of a thousand VIPs) goes out over a few passes of the worker
    /// instead of overflowing the queue, and a heartbeat never waits behind more than that.
    fn flush_one(queue: &mut VecDeque<OutFrame>, w: &WorkerHandle) {
        let mut sent = false;
        while w.control.len() < IN_FLIGHT_FRAMES {
            let Some(f) = queue.pop_front() else { break };
            if let Err(e) = w.control.try_send(f) {
                queue.push_front(e.into_inner());
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
        self.queues.iter().all(VecDeque::is_empty)
    }

    /// Forgets what is waiting (leaving: announcements no longer matter).
    pub(super) fn clear(&mut self) {
        self.queues.iter_mut().for_each(VecDeque::clear);
    }
}

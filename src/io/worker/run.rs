//! The polling loop of a worker thread: per pass, recycle completions, stock the fill ring,
//! receive a batch and run [`lb::process`] on each frame, serve the control thread's
//! requests, send its frames, transmit, then spin or sleep.

use std::{
    net::IpAddr,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use xsk_rs::FrameDesc;

use super::{
    batch_histogram, ConflictReport, SharedStats, WorkerConfig, WorkerRequest, WorkerShared, Xsk, BATCH_NS_RANGE,
};
use crate::{
    io::{port::monotonic_ns, wake::Waker},
    lb::{
        self,
        conntrack::{Conntrack, Entry},
        heartbeat,
        neighbor::OutFrame,
        store::Store,
        Counter, Ctx, DropReason, Reply, Verdict, WorkerState, WorkerStats,
    },
};

/// Shortest time between two conflict reports from one worker (10 ms).
const CONFLICT_REPORT_GAP_NS: u64 = 10_000_000;

/// Rate limit of conflict reports: a small table of the last report time per VIP (VIPs
/// that share a slot simply both get through).
#[derive(Debug)]
struct ReportLimiter {
    slots: [(Option<IpAddr>, u64); 64],
}

impl Default for ReportLimiter {
    fn default() -> Self {
        ReportLimiter { slots: [(None, 0); 64] }
    }
}

impl ReportLimiter {
    fn allow(&mut self, vip: IpAddr, now: u64) -> bool {
        let h = match vip {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let o = a.octets();
                let (hi, lo) = o.split_at(8);
                let word = |b: &[u8]| b.iter().fold(0u64, |acc, x| acc << 8 | u64::from(*x));
                word(hi) ^ word(lo)
            }
        };
        let slot = &mut self.slots[usize::try_from(crate::lb::maglev::fmix64(h) % 64).unwrap_or(0)];
        if slot.0 == Some(vip) && now.saturating_sub(slot.1) < CONFLICT_REPORT_GAP_NS {
            return false;
        }
        *slot = (Some(vip), now);
        true
    }
}

pub(super) struct Worker {
    pub(super) cfg: WorkerConfig,
    pub(super) xsk: Xsk,
    pub(super) shared: WorkerShared,
    pub(super) stats: Arc<SharedStats>,
    pub(super) waker: Arc<Waker>,
    pub(super) control: Receiver<OutFrame>,
    pub(super) requests: Receiver<WorkerRequest>,
    /// The flow table's memory from a state file (none: allocated here).
    pub(super) table: Option<Store<Entry>>,
}

impl Worker {
    pub(super) fn run(mut self, ready: Sender<()>) -> WorkerStats {
        if let Some(core) = self.cfg.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                tracing::warn!(queue = self.cfg.queue, core, "could not pin the worker to its core");
            }
        }
        // Allocated here, on the worker's own core, once; or the state file's table, with
        // the flows the previous xlb left in it.
        let conntrack = match self.table.take() {
            Some(store) => {
                let slots = store.len();
                match Conntrack::with_store(store, self.cfg.timeouts, monotonic_ns()) {
                    Some(ct) => {
                        tracing::info!(
                            queue = self.cfg.queue,
                            slots,
                            live = ct.stats().live,
                            "flow table: live flows found"
                        );
                        ct
                    }
                    None => {
                        tracing::warn!(
                            queue = self.cfg.queue,
                            slots,
                            "state table of a wrong size; using one of its own"
                        );
                        Conntrack::new(self.cfg.conntrack_capacity, self.cfg.timeouts)
                    }
                }
            }
            None => Conntrack::new(self.cfg.conntrack_capacity, self.cfg.timeouts),
        };
        let mut state = WorkerState::new(conntrack);
        state.snat = self.cfg.snat.as_ref().map(|t| t.worker(self.cfg.index));
        state.counters = self.cfg.counters.clone();
        let batch = self.cfg.batch.max(1);
        let ring = usize::try_from(self.cfg.ring_size).unwrap_or(2048);
        let mut free: Vec<FrameDesc> = std::mem::take(&mut self.xsk.descs);
        let mut rx_descs = vec![FrameDesc::default(); batch];
        // What the first pass over a batch read of each frame, for the second.
        let mut parsed: Vec<lb::Parsed> = Vec::with_capacity(batch);
        let mut comp_descs = vec![FrameDesc::default(); ring];
        let mut tx_descs: Vec<FrameDesc> = Vec::with_capacity(batch * 2);
        let mut stats = WorkerStats::default();
        let mut last_traffic = Instant::now();
        // Frames handed to the TX ring and not yet completed. In copy mode one sendto()
        // sends at most 32 of them, so the ring is kicked on every pass while any remain.
        let mut in_flight: usize = 0;
        let mut limiter = ReportLimiter::default();
        let mac = self.cfg.mac;
        // Deadlines in the tables are CLOCK_MONOTONIC nanoseconds: the same clock on every
        // worker (the SNAT table is shared) and in the next xlb (the tables may outlive
        // this process in a state file).
        // Frames kept back from the fill ring so that replies and announcements always find
        // a buffer.
        let reserve = batch * 2;

        // Batch times, swapped out whole by the control thread (see WorkerRequest).
        let mut batch_times = batch_histogram();
        let mut ready = Some(ready);
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            // 1. Completed transmissions give their frames back.
            // SAFETY: the completion ring hands back frames of this socket's own UMEM that
            // we submitted for TX; comp_descs only receives their descriptors.
            let done = unsafe { self.xsk.cq.consume(&mut comp_descs) };
            free.extend_from_slice(&comp_descs[..done]);
            in_flight = in_flight.saturating_sub(done);

            // 2. Keep the fill ring stocked.
            let spare = free.len().saturating_sub(reserve);
            if spare > 0 {
                let want = u32::try_from(spare.min(ring)).unwrap_or(0);
                let room = usize::try_from(self.xsk.fq.nb_free(want)).unwrap_or(0).min(spare);
                if room > 0 {
                    let from = free.len() - room;
                    // SAFETY: these frames belong to this UMEM and are not in any ring: they
                    // came back from RX, completion, or were never submitted.
                    let n = unsafe { self.xsk.fq.produce(&free[from..]) };
                    free.truncate(free.len() - n);
                    // A zero-copy driver that ran out of buffers waits for this kick.
                    if n > 0 && self.xsk.fq.needs_wakeup() {
                        let _ = self.xsk.fq.wakeup(self.xsk.rx.fd_mut(), 0);
                    }
                }
            }

            if let Some(r) = ready.take() {
                let _ = r.send(());
            }

            // 3. Receive and decide.
            let snap = self.shared.snapshot.load();
            // SAFETY: rx_descs only receives descriptors of frames in this socket's UMEM.
            let n = unsafe { self.xsk.rx.consume(&mut rx_descs) };
            tx_descs.clear();
            // Heartbeats in this batch: they are not traffic to spin for (step 7).
            let mut beats = 0;
            let batch_start = monotonic_ns();
            if n > 0 {
                // Read once per batch, not on every idle pass (it reads the clock).
                state.fenced = self.shared.fence.fenced();
                stats.bump(Counter::Batches);
                stats.add(Counter::RxFrames, n as u64);
                let now = batch_start;
                let cx = Ctx { now, snap: &snap, mac };
                // Read every frame and prefetch its flow-table slot first: at a million
                // flows each lookup misses the cache, and issued together the misses
                // overlap. What was read is used below: no frame is parsed twice.
                parsed.clear();
                for desc in rx_descs.iter().take(n) {
                    // SAFETY: as below: consumed from RX, so the kernel no longer writes it.
                    let data = unsafe { self.xsk.umem.data(desc) };
                    let frame = data.contents();
                    let p = lb::Parsed::of(frame, frame.len());
                    if let Some(home) = p.home(&state) {
                        crate::io::prefetch(home);
                    }
                    parsed.push(p);
                }
                for (desc, read) in rx_descs.iter_mut().take(n).zip(&parsed) {
                    // SAFETY: the frame was just consumed from RX, so the kernel no longer
                    // writes it and we hold the only descriptor to it.
                    let mut data = unsafe { self.xsk.umem.data_mut(desc) };
                    let len = data.contents().len();
                    let verdict = {
                        // Expose the whole frame buffer: a reply may be longer than the
                        // request (a neighbour advertisement for a solicitation).
                        let mut cur = data.cursor();
                        let cap = cur.buf_len();
                        cur.set_pos(cap);
                        // The frame is as the first pass read it: processing a frame
                        // changes no other.
                        lb::process_parsed(&cx, &mut state, data.contents_mut(), len, read)
                    };
                    match verdict {
                        Verdict::Tx { len: out_len, reply } => {
                            data.cursor().set_pos(out_len);
                            if let Reply::SnatReply { crossed: true } = reply {
                                stats.bump(Counter::SnatRepliesCrossed);
                            }
                            stats.bump(match reply {
                                Reply::Arp => Counter::ArpReplies,
                                Reply::Ndp => Counter::NdpAdverts,
                                Reply::Forward => Counter::Forwarded,
                                Reply::IcmpError => Counter::IcmpErrors,
                                Reply::Echo => Counter::EchoReplies,
                                Reply::SnatReply { .. } => Counter::SnatReplies,
                            });
                            tx_descs.push(*desc);
                        }
                        Verdict::Drop(reason) => {
                            stats.drop(reason);
                            free.push(*desc);
                        }
                        Verdict::Heartbeat => {
                            beats += 1;
                            let key = self.shared.heartbeat_key.as_deref();
                            let taken = self.shared.failover.then(|| heartbeat::accept(data.contents(), key));
                            match taken.flatten() {
                                Some(h) if self.shared.heartbeats.try_send(h).is_ok() => {
                                    stats.bump(Counter::Heartbeats);
                                }
                                _ => stats.bump(Counter::HeartbeatsLost),
                            }
                            free.push(*desc);
                        }
                        Verdict::Conflict(c) => {
                            stats.drop(DropReason::Conflict);
                            stats.bump(Counter::Conflicts);
                            // At most one report per VIP per 10 ms: a flood of forged claims
                            // costs the control thread (and this worker's wake-ups of it) a
                            // bounded rate; every claim is still counted.
                            if limiter.allow(c.vip, now) {
                                let report = ConflictReport { queue: self.cfg.queue, vip: c.vip, mac: c.mac };
                                if let Err(TrySendError::Full(_)) = self.shared.conflicts.try_send(report) {
                                    stats.bump(Counter::ConflictReportsLost);
                                }
                            } else {
                                stats.bump(Counter::ConflictReportsLost);
                            }
                            free.push(*desc);
                        }
                    }
                }
            }
            drop(snap);
            if n > 0 {
                let took = monotonic_ns().saturating_sub(batch_start);
                stats.add(Counter::BusyNanos, took);
                batch_times.saturating_record(took.clamp(BATCH_NS_RANGE.0, BATCH_NS_RANGE.1));
            }

            // 4. Requests from the control thread: rare, answered between batches.
            if let Ok(req) = self.requests.try_recv() {
                match req {
                    WorkerRequest::Conntrack { max, reply } => {
                        let now = monotonic_ns();
                        let _ = reply.try_send((now, state.conntrack.iter_live(now).take(max).copied().collect()));
                    }
                    WorkerRequest::Histogram { mut fresh, reply } => {
                        std::mem::swap(&mut fresh, &mut batch_times);
                        let _ = reply.try_send(fresh);
                    }
                }
            }

            // 5. Frames the control thread wants out (announcements, probes): at most a
            // batch per pass, so tx_descs never grows past its capacity; the rest wait.
            for _ in 0..batch {
                let Ok(frame) = self.control.try_recv() else { break };
                let Some(mut desc) = free.pop() else {
                    stats.bump(Counter::TxNoRoom);
                    continue;
                };
                // SAFETY: a free frame of this UMEM, in no ring.
                let mut data = unsafe { self.xsk.umem.data_mut(&mut desc) };
                let mut cur = data.cursor();
                cur.set_pos(0);
                if std::io::Write::write_all(&mut cur, frame.bytes()).is_ok() {
                    stats.bump(Counter::ControlFrames);
                    tx_descs.push(desc);
                } else {
                    stats.bump(Counter::TxNoRoom);
                    free.push(desc);
                }
            }

            // 6. Transmit.
            if !tx_descs.is_empty() {
                let want = u32::try_from(tx_descs.len()).unwrap_or(u32::MAX);
                let room = usize::try_from(self.xsk.tx.nb_free(want)).unwrap_or(0).min(tx_descs.len());
                // SAFETY: every descriptor in tx_descs is a frame of this UMEM that is in no
                // ring; after produce the kernel owns them until completion.
                let sent = unsafe { self.xsk.tx.produce(&tx_descs[..room]) };
                for d in &tx_descs[sent..] {
                    stats.bump(Counter::TxNoRoom);
                    free.push(*d);
                }
                stats.add(Counter::TxFrames, sent as u64);
                in_flight += sent;
            }
            if in_flight > 0 && self.xsk.tx.needs_wakeup() {
                // Errors here are transient (ENOBUFS, EAGAIN): the next pass kicks again.
                let _ = self.xsk.tx.wakeup();
            }

            // 7. Spin while traffic flows, sleep when idle (never with frames still to
            // send). Only frames other than heartbeats count as traffic: heartbeats and the
            // control thread's frames come dozens of times a second, and each would buy a
            // whole idle spin (with four peers, ~5% of a core spent spinning for nothing).
            if n > beats {
                last_traffic = Instant::now();
            }
            let sending = !tx_descs.is_empty() || in_flight > 0 || !self.control.is_empty();
            let sleep = !sending && last_traffic.elapsed() >= self.cfg.idle_spin;
            if n > 0 || sending || sleep {
                self.stats.publish(&stats);
                self.stats.publish_conntrack(&state.conntrack);
            }
            if sleep {
                stats.bump(Counter::Sleeps);
                // Completions still due are collected on waking; a sleep never outlasts a
                // second so shutdown and late completions are seen. What woke it is read
                // on the next pass: traffic restarts the spin, a heartbeat does not.
                self.waker.sleep(self.xsk.fd(), 1000);
            } else if n == 0 && !sending {
                if self.xsk.fq.needs_wakeup() {
                    let _ = self.xsk.fq.wakeup(self.xsk.rx.fd_mut(), 0);
                } else if self.cfg.busy_poll {
                    // With SO_PREFER_BUSY_POLL the kernel polls the device only when asked.
                    self.xsk.busy_poll_once();
                }
                std::hint::spin_loop();
            }
        }
        self.stats.publish(&stats);
        stats
    }
}

//! Each term of `xlb::memory` is what its part really allocates: a global allocator adds up
//! the large allocations (4 KiB and more) the calling thread makes while one part is built,
//! and the sum must be the term. A term computed from a private layout (the SNAT table's
//! slots) is held to the type it stands for here. The UMEM is mapped by xsk-rs, not
//! allocated: tests/lab.rs checks it, with the whole, against a running xlb.

#![allow(clippy::unwrap_used)] // test code: a panic is the report

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use xlb::{
    control::services::{MAX_COUNTED_BACKENDS, MAX_COUNTED_SERVICES},
    io::worker::CONTROL_QUEUE,
    lb::{
        conntrack::{bytes_for, Conntrack, Timeouts},
        out::OutFrame,
        snat::{SnatTable, DEFAULT_PORTS},
        stats::ObjectCounters,
    },
    memory::{control_queue_bytes, snat_bytes},
};

/// Allocations this large or larger are the parts' tables; smaller ones are their handles.
const LARGE: usize = 4096;

thread_local! {
    /// Whether this thread's allocations are being added up, and their sum.
    static NOTING: Cell<bool> = const { Cell::new(false) };
    static LARGE_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: a thread being torn down has no locals left, and is never noting.
    let _ = NOTING.try_with(|on| {
        if on.get() && size >= LARGE {
            let _ = LARGE_BYTES.try_with(|b| b.set(b.get() + size));
        }
    });
}

struct Noting;

// SAFETY: defers to the system allocator unchanged; only notes sizes.
unsafe impl GlobalAlloc for Noting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Noting = Noting;

/// What `build` allocates in large blocks on this thread, and what it built.
fn large_allocations<T>(build: impl FnOnce() -> T) -> (usize, T) {
    LARGE_BYTES.with(|b| b.set(0));
    NOTING.with(|on| on.set(true));
    let built = std::hint::black_box(build());
    NOTING.with(|on| on.set(false));
    (LARGE_BYTES.with(Cell::get), built)
}

#[test]
fn the_flow_table_is_its_slots() {
    for capacity in [64, 262_144, 1 << 20] {
        let (bytes, table) = large_allocations(|| Conntrack::new(capacity, Timeouts::default()));
        assert_eq!(bytes, bytes_for(capacity), "capacity {capacity}: {} slots", table.slots());
    }
}

#[test]
fn the_snat_table_is_a_slot_and_an_index_word_per_address_protocol_and_port() {
    let addrs = |n: u8| (1..=n).map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i))).collect::<Vec<_>>();
    for (n, ports, workers) in [(1, DEFAULT_PORTS, 1), (3, DEFAULT_PORTS, 4), (2, (2000, 2999), 2)] {
        let list = addrs(n);
        let (bytes, table) = large_allocations(|| SnatTable::new(list, ports.0, ports.1, workers).unwrap());
        assert_eq!(bytes, snat_bytes(usize::from(n), ports), "{n} address(es), ports {ports:?}");
        // A worker's share allocates nothing large.
        let table = Arc::new(table);
        let (share, _) = large_allocations(|| table.worker(0));
        assert_eq!(share, 0);
    }
}

#[test]
fn a_workers_counters_are_four_words_per_service_and_backend() {
    let (bytes, _) = large_allocations(|| ObjectCounters::new(MAX_COUNTED_SERVICES, MAX_COUNTED_BACKENDS));
    assert_eq!(bytes, ObjectCounters::bytes_for(MAX_COUNTED_SERVICES, MAX_COUNTED_BACKENDS));
    assert_eq!(bytes, (4096 + 65535) * 32);
}

#[test]
fn a_workers_control_channel_is_allocated_whole() {
    let (bytes, channel) = large_allocations(|| crossbeam_channel::bounded::<OutFrame>(CONTROL_QUEUE));
    assert_eq!(bytes, control_queue_bytes(), "{CONTROL_QUEUE} frames");
    drop(channel);
}

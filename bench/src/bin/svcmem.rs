//! Memory per service: heap bytes a node holds for each service of a snapshot.
//!
//! `cargo run --release -p xlb-bench --bin svcmem` builds, through the public API, a snapshot
//! of N services (N = 10, 1,000, 10,000), each on its own VIP with its own distinct set of 2,
//! then 10, backends (so no two services share a Maglev table), and counts the heap bytes
//! live afterwards with a counting global allocator. It prints a markdown table: bytes per
//! service for the snapshot alone (what the workers read) and with the control plane's
//! table cache (kept between builds, so also resident on every node). Tables are sized to
//! their backends, as a service without `maglevTableSize` has them.

#![allow(clippy::print_stdout)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::Context;
use xlb::{
    lb::{
        maglev::{TableCache, TableSize},
        snapshot::{Backend, ForwardMode, Service, ServiceKey},
        Snapshot, VipMode,
    },
    wire::EthernetAddress,
};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Service `i` of a snapshot: TCP port 80 on its own VIP, to `per` backends of its own.
fn service(i: u32, per: u32, tables: &mut TableCache) -> anyhow::Result<Service> {
    let vip = IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i));
    let backends = (0..per)
        .map(|j| {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * per + j));
            Backend { mac: Some(EthernetAddress([2, 0, 0, 0, 0, 1])), ..Backend::new(addr, 8080, 1) }
        })
        .collect();
    let key = ServiceKey { vip, port: 80, proto: 6 };
    Service::with_tables(key, ForwardMode::Dsr, backends, TableSize::Auto, tables)
        .with_context(|| format!("service {i}"))
}

/// What `n` services of `per` backends each cost.
struct Cost {
    /// Heap bytes per service, snapshot alone.
    alone: usize,
    /// Heap bytes per service, with the table cache.
    with_cache: usize,
    /// A table's slots and bytes per slot.
    table: (usize, usize),
}

fn measure(n: u32, per: u32) -> anyhow::Result<Cost> {
    let before = live();
    let mut tables = TableCache::default();
    let services = (0..n).map(|i| service(i, per, &mut tables)).collect::<anyhow::Result<Vec<_>>>()?;
    tables.finish();
    let vips: Vec<(IpAddr, VipMode)> = services.iter().map(|s| (s.key.vip, VipMode::Answer)).collect();
    let snap = Snapshot::new(1, vips).with_services(services);
    let with_cache = live() - before;
    drop(tables);
    let alone = live() - before;
    anyhow::ensure!(snap.services().len() == usize::try_from(n)?, "services lost");
    let table = snap.services().first().map(|s| (s.table().len(), s.table().slot_bytes())).unwrap_or_default();
    drop(snap);
    let n = usize::try_from(n)?;
    Ok(Cost { alone: alone / n, with_cache: with_cache / n, table })
}

fn main() -> anyhow::Result<()> {
    println!(
        "| services | backends each | table (slots x bytes) | bytes per service (snapshot) | with the table cache |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for n in [10u32, 1_000, 10_000] {
        for per in [2u32, 10] {
            let Cost { alone, with_cache, table: (slots, bytes) } = measure(n, per)?;
            println!("| {n} | {per} | {slots} x {bytes} | {alone} | {with_cache} |");
        }
    }
    Ok(())
}

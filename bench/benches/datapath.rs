//! Micro-benchmarks of the datapath's parts: a frame through the whole pipeline (parse,
//! conntrack, rewrite) in DSR and SNAT, Maglev lookup and build (at the sizes automatic
//! sizing gives), conntrack at a thousand and a million flows, one lookup at a time and a
//! batch prefetched as workers do. `cargo bench -p xlb-bench`.

#![allow(missing_docs, clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use xlb::lb::{
    conntrack::{Conntrack, Entry, FlowKey, FlowState, Timeouts},
    maglev::{BackendId, MaglevTable, TableSize},
    process,
    testing::{ctx, Scene, CLIENT4, DSR_PORT, SNAT_PORT, VIP4},
};
use xlb_bench::tcp_frame;

const VIP: Ipv4Addr = VIP4;

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    // Ten backends per service, Maglev tables sized to them (1,021 one-byte slots), every
    // SNAT port.
    let scene = Scene {
        backends: 10,
        table_size: TableSize::Auto,
        snat_ports: (1024, 65535),
        conntrack: 1 << 16,
        ..Scene::default()
    };
    let snap = scene.snapshot();
    for (name, port) in [("dsr", DSR_PORT), ("snat", SNAT_PORT)] {
        let mut st = scene.state();
        // 1024 flows, tracked after the first round: the steady state of established traffic.
        let frames: Vec<Vec<u8>> = (0..1024u16).map(|i| tcp_frame(CLIENT4, 10_000 + i, VIP, port)).collect();
        let mut buf = vec![0u8; 2048];
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("tracked_tcp_frame", name), |b| {
            b.iter(|| {
                let f = &frames[i & 1023];
                i += 1;
                buf[..60].copy_from_slice(f);
                black_box(process(&ctx(1, &snap), &mut st, &mut buf, 60))
            })
        });
    }
    g.finish();
}

fn ids(n: u32) -> Vec<(BackendId, u32)> {
    (0..n).map(|i| (BackendId::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 80), 1)).collect()
}

fn maglev(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for n in [10u32, 100, 1000] {
        let b = ids(n);
        let size = TableSize::Auto.slots_for(b.len());
        g.bench_with_input(BenchmarkId::new("build_auto", n), &b, |bench, b| {
            bench.iter(|| black_box(MaglevTable::build(b, size).unwrap()))
        });
    }
    let t = MaglevTable::build(&ids(100), TableSize::Auto.slots_for(100)).unwrap();
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    g.bench_function("lookup", |b| {
        b.iter(|| {
            h = h.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            black_box(t.lookup(h))
        })
    });
    g.finish();
}

fn key(i: u32) -> FlowKey {
    // IPv4-mapped, as the datapath stores addresses.
    let src = Ipv4Addr::from(0x0a00_0000 + i).to_ipv6_mapped().octets();
    FlowKey { src, dst: VIP.to_ipv6_mapped().octets(), src_port: (i % 50_000) as u16 + 1024, dst_port: 80, proto: 6 }
}

fn conntrack(c: &mut Criterion) {
    const BATCH: usize = 64;
    let mut g = c.benchmark_group("conntrack");
    for n in [1_000u32, 1_000_000] {
        let mut ct = Conntrack::new(n as usize, Timeouts::default());
        let keys: Vec<(FlowKey, u64)> = (0..n).map(|i| (key(i), key(i).hash())).collect();
        for (k, h) in &keys {
            let _ = ct.insert_hashed(Entry { key: *k, state: FlowState::Established, ..Entry::default() }, *h, 1);
        }
        assert_eq!(ct.stats().live, u64::from(n));
        // A stride through the keys, so that lookups do not follow the table's order.
        let mut i = 0usize;
        let mut next = || {
            i = (i + 7919) % keys.len();
            keys[i]
        };
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("lookup_hit", n), |b| {
            b.iter(|| {
                let (k, h) = next();
                black_box(ct.lookup(&k, h, 2).is_some())
            })
        });
        // As a worker does it: the slots of a whole RX batch prefetched, then looked up.
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(BenchmarkId::new("lookup_hit_batch64_prefetched", n), |b| {
            let mut batch = [(FlowKey::default(), 0u64); BATCH];
            b.iter(|| {
                for slot in batch.iter_mut() {
                    *slot = next();
                    xlb::io::prefetch(ct.home_of(slot.1));
                }
                let mut hits = 0;
                for (k, h) in &batch {
                    hits += usize::from(ct.lookup(k, *h, 2).is_some());
                }
                black_box(hits)
            })
        });
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("insert_replace", n), |b| {
            b.iter_batched(
                &mut next,
                |(k, h)| {
                    black_box(
                        ct.insert_hashed(Entry { key: k, state: FlowState::Established, ..Entry::default() }, h, 3)
                            .is_ok(),
                    )
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline, maglev, conntrack);
criterion_main!(benches);

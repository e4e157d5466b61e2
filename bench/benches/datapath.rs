//! Micro-benchmarks of the datapath's parts: a frame through the whole pipeline (parse,
//! conntrack, rewrite) in DSR and SNAT, Maglev lookup and build, conntrack at a million
//! flows. `cargo bench -p xlb-bench`.

#![allow(missing_docs, clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use xlb::lb::{
    conntrack::{Conntrack, Entry, FlowKey, FlowState, Timeouts},
    maglev::{BackendId, MaglevTable},
    process,
    snapshot::{Backend, ForwardMode, Service, ServiceKey},
    snat::SnatTable,
    Ctx, Snapshot, VipMode, WorkerState,
};
use xlb_bench::{tcp_frame, OURS};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn snapshot(mode: ForwardMode, services: u16) -> Snapshot {
    let backends: Vec<Backend> = (1..=10u8)
        .map(|i| Backend {
            mac: Some(xlb::wire::EthernetAddress([2, 0, 0, 0, 1, i])),
            ..Backend::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 80, 1)
        })
        .collect();
    let svcs = (0..services)
        .map(|p| {
            Service::with_default_table(
                ServiceKey { vip: IpAddr::V4(VIP), port: 80 + p, proto: 6 },
                mode,
                backends.clone(),
            )
            .unwrap()
        })
        .collect();
    let owned = [IpAddr::V4(VIP), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200))];
    Snapshot::new(1, owned.map(|a| (a, VipMode::Answer))).with_services(svcs)
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    for (name, mode) in [("dsr", ForwardMode::Dsr), ("snat", ForwardMode::Snat)] {
        let snap = snapshot(mode, 1);
        let mut st = WorkerState::new(Conntrack::new(1 << 16, Timeouts::default()));
        let table = Arc::new(SnatTable::new(vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200))], 1024, 65535, 1).unwrap());
        st.snat = Some(table.worker(0));
        // 1024 flows, tracked after the first round: the steady state of established traffic.
        let frames: Vec<Vec<u8>> =
            (0..1024u16).map(|i| tcp_frame(Ipv4Addr::new(198, 51, 100, 1), 10_000 + i, VIP, 80)).collect();
        let mut buf = vec![0u8; 2048];
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("tracked_tcp_frame", name), |b| {
            b.iter(|| {
                let f = &frames[i & 1023];
                i += 1;
                buf[..60].copy_from_slice(f);
                black_box(process(&Ctx { now: 1, snap: &snap, mac: OURS }, &mut st, &mut buf, 60))
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
        g.bench_with_input(BenchmarkId::new("build_65537", n), &b, |bench, b| {
            bench.iter(|| black_box(MaglevTable::build(b, 65_537).unwrap()))
        });
    }
    let t = MaglevTable::build(&ids(100), 65_537).unwrap();
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
    const N: u32 = 1_000_000;
    let mut g = c.benchmark_group("conntrack_1m");
    let mut ct = Conntrack::new(N as usize, Timeouts::default());
    let keys: Vec<(FlowKey, u64)> = (0..N).map(|i| (key(i), key(i).hash())).collect();
    for (k, h) in &keys {
        let _ = ct.insert(Entry { key: *k, hash: *h, state: FlowState::Established, ..Entry::default() }, 1);
    }
    assert_eq!(ct.stats().live, u64::from(N));
    let mut i = 0usize;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            // A stride through the table, so lookups do not stay in one cache line.
            i = (i + 7919) % keys.len();
            let (k, h) = &keys[i];
            black_box(ct.lookup(k, *h, 2).is_some())
        })
    });
    g.bench_function("insert_replace", |b| {
        b.iter_batched(
            || {
                i = (i + 7919) % keys.len();
                keys[i]
            },
            |(k, h)| {
                black_box(
                    ct.insert(Entry { key: k, hash: h, state: FlowState::Established, ..Entry::default() }, 3).is_ok(),
                )
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, pipeline, maglev, conntrack);
criterion_main!(benches);

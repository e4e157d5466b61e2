//! The pipeline allocates nothing per packet: a counting global allocator watches 10,000
//! frames of every kind it handles (ARP, NDP, garbage, TCP to a DSR service, TCP to a SNAT
//! service with session affinity, replies to the SNAT address) go through `lb::process`.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: a panic is the report

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use xlb::{
    lb::{
        maglev::TableSize,
        process,
        testing::{
            arp, backend, ctx, solicit, PacketBuilder, Scene, BACKEND_MAC, CLIENT4, CLIENT6, CLIENT_MAC, DSR_PORT,
            SNAT4, SNAT_BACKEND_PORT, SNAT_PORT, VIP4, VIP6,
        },
        Verdict,
    },
    wire::{tcp::TcpFlags, ArpOperation, ArpRepr, EthernetAddress},
};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn ten_thousand_frames_allocate_nothing() {
    // Three backends per service, session affinity, the default Maglev table, every SNAT port.
    let scene = Scene {
        backends: 3,
        affinity: Some(Duration::from_secs(60)),
        table_size: TableSize::Auto,
        snat_ports: (1024, 65535),
        conntrack: 4096,
        ..Scene::default()
    };
    let snap = scene.snapshot();
    let mut state = scene.state();
    let (vip4, snat4) = (IpAddr::V4(VIP4), IpAddr::V4(SNAT4));
    let arp = arp(
        CLIENT_MAC,
        EthernetAddress::BROADCAST,
        None,
        &ArpRepr {
            operation: ArpOperation::Request,
            sha: CLIENT_MAC,
            spa: CLIENT4,
            tha: EthernetAddress::ZERO,
            tpa: VIP4,
        },
    );
    let ns = solicit(CLIENT6, VIP6, 255);
    let garbage = vec![0x86u8; 90];
    // TCP segments to the DSR and the SNAT service from many clients (a new one every 32
    // frames): new flows (conntrack inserts) and tracked ones.
    let client = |i: usize| IpAddr::V4(Ipv4Addr::from(u32::from(CLIENT4) + (i / 32) as u32));
    let tcp =
        |i: usize, port| PacketBuilder { src: client(i), ..PacketBuilder::tcp(vip4, port, TcpFlags::SYN) }.build();
    // A backend's answer to the first SNAT ports (translated when its flow holds the port).
    let reply = |i: usize| {
        let syn_ack = PacketBuilder::tcp(snat4, 1024 + (i as u16 / 6) % 8, TcpFlags::SYN | TcpFlags::ACK);
        PacketBuilder { src_mac: BACKEND_MAC, src: backend(false, 0), sport: SNAT_BACKEND_PORT, ..syn_ack }.build()
    };
    // Every frame is built before counting starts.
    let kinds = 6;
    let frames: Vec<Vec<u8>> = (0..10_000)
        .map(|i| match i % kinds {
            0 => arp.clone(),
            1 => ns.clone(),
            2 => garbage.clone(),
            3 => tcp(i, DSR_PORT),
            4 => tcp(i, SNAT_PORT),
            _ => reply(i),
        })
        .collect();

    let mut buf = vec![0u8; 2048];
    let mut answered = [0usize; 6];
    let before = ALLOCS.load(Ordering::Relaxed);
    for (i, f) in frames.iter().enumerate() {
        buf[..f.len()].copy_from_slice(f);
        if let Verdict::Tx { .. } = process(&ctx(i as u64, &snap), &mut state, &mut buf, f.len()) {
            answered[i % kinds] += 1;
        }
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "the pipeline allocated {} times over 10k frames", after - before);
    // Everything but the garbage is answered or forwarded (replies only where their port
    // is held by a flow to that backend).
    let per_kind = 10_000 / kinds;
    assert!(answered[..2].iter().chain(&answered[3..5]).all(|n| *n >= per_kind), "{answered:?}");
    assert_eq!(answered[2], 0);
    assert!(answered[5] > 0, "no SNAT reply was translated: {answered:?}");
    assert!(state.conntrack.stats().inserts >= 300, "{:?}", state.conntrack.stats());
}

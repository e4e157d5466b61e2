//! The pipeline allocates nothing per packet: a counting global allocator watches 10,000
//! frames of every kind it handles (ARP, NDP, garbage, TCP to a DSR service, TCP to a SNAT
//! service with session affinity, replies to the SNAT address) go through `lb::process`.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: a panic is the report

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use xlb::{
    lb::{
        conntrack::{Conntrack, Timeouts},
        process,
        snapshot::{Backend, ForwardMode, Service, ServiceKey},
        snat::SnatTable,
        Ctx, Snapshot, VipMode, WorkerState,
    },
    wire::{
        build::{self, L2},
        icmpv6::NdiscRepr,
        ipv4::Ipv4Repr,
        ipv6::solicited_node,
        ArpOperation, ArpRepr, EthernetAddress,
    },
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

const OURS: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x10]);
const PEER: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x20]);

#[test]
fn ten_thousand_frames_allocate_nothing() {
    let vip4 = Ipv4Addr::new(192, 0, 2, 100);
    let vip6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    let peer6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let snat4 = Ipv4Addr::new(192, 0, 2, 200);
    let backends: Vec<Backend> = (1..=3u8)
        .map(|i| Backend {
            mac: Some(EthernetAddress([2, 0, 0, 0, 1, i])),
            ..Backend::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 80, 1)
        })
        .collect();
    let svc = |port, mode, backends| {
        Service::with_default_table(ServiceKey { vip: IpAddr::V4(vip4), port, proto: 6 }, mode, backends).unwrap()
    };
    let snat_svc = svc(81, ForwardMode::Snat, backends.clone()).with_affinity(Some(Duration::from_secs(60)));
    let owned = [IpAddr::V4(vip4), IpAddr::V6(vip6), IpAddr::V4(snat4)];
    let snap = Snapshot::new(1, owned.map(|a| (a, VipMode::Answer)))
        .with_services(vec![svc(80, ForwardMode::Dsr, backends), snat_svc]);
    let mut state = WorkerState::new(Conntrack::new(4096, Timeouts::default()));
    let table = Arc::new(SnatTable::new(vec![IpAddr::V4(snat4)], 1024, 65535, 1).unwrap());
    state.snat = Some(table.worker(0));
    // TCP segments to the service from many clients: new flows (conntrack inserts) and
    // tracked ones.
    let mut tcp = vec![0u8; 128];
    let ip = Ipv4Repr { src: Ipv4Addr::new(192, 0, 2, 1), dst: vip4, protocol: 6, payload_len: 20, ttl: 64 };
    let n = build::ipv4(&mut tcp, L2 { src: PEER, dst: OURS, vlan_tci: None }, &ip).unwrap();
    tcp.truncate(n);
    tcp[34..38].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
    tcp[46] = 0x50;
    tcp[47] = 0x02;

    let mut arp = vec![0u8; 128];
    let req = ArpRepr {
        operation: ArpOperation::Request,
        sha: PEER,
        spa: Ipv4Addr::new(192, 0, 2, 1),
        tha: EthernetAddress::ZERO,
        tpa: vip4,
    };
    let n = build::arp(&mut arp, L2 { src: PEER, dst: EthernetAddress::BROADCAST, vlan_tci: None }, &req).unwrap();
    arp.truncate(n);
    let dst = solicited_node(&vip6);
    let nd = NdiscRepr::NeighborSolicit { target: vip6, lladdr: Some(PEER) };
    let mut ns = vec![0u8; 128];
    let l2 = L2 { src: PEER, dst: EthernetAddress::ipv6_multicast(&dst), vlan_tci: None };
    let n = build::ndisc(&mut ns, l2, peer6, dst, 255, &nd).unwrap();
    ns.truncate(n);
    let garbage = vec![0x86u8; 90];
    let mut tcp_snat = tcp.clone();
    tcp_snat[36..38].copy_from_slice(&81u16.to_be_bytes());
    // A backend's answer to the first SNAT ports (translated when its flow holds the port).
    let mut reply = tcp.clone();
    reply[26..30].copy_from_slice(&[10, 0, 0, 1]);
    reply[30..34].copy_from_slice(&snat4.octets());
    reply[34..38].copy_from_slice(&[0x00, 0x50, 0x04, 0x00]);
    reply[47] = 0x12;
    let frames = [arp, ns, garbage, tcp, tcp_snat, reply];

    let mut buf = vec![0u8; 2048];
    let mut answered = [0usize; 6];
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..10_000 {
        let f = &frames[i % frames.len()];
        buf[..f.len()].copy_from_slice(f);
        let kind = i % frames.len();
        // TCP: a new client every few segments; replies to ports 1024-1031.
        if kind == 3 || kind == 4 {
            buf[26..30].copy_from_slice(&(i as u32 / 32).to_be_bytes());
        }
        if kind == 5 {
            buf[36..38].copy_from_slice(&(1024 + (i as u16 / 6) % 8).to_be_bytes());
        }
        if let xlb::lb::Verdict::Tx { .. } =
            process(&Ctx { now: i as u64, snap: &snap, mac: OURS }, &mut state, &mut buf, f.len())
        {
            answered[kind] += 1;
        }
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "the pipeline allocated {} times over 10k frames", after - before);
    // Everything but the garbage is answered or forwarded (replies only where their port
    // is held by a flow to that backend).
    let per_kind = 10_000 / frames.len();
    assert!(answered[..2].iter().chain(&answered[3..5]).all(|n| *n >= per_kind), "{answered:?}");
    assert_eq!(answered[2], 0);
    assert!(answered[5] > 0, "no SNAT reply was translated: {answered:?}");
    assert!(state.conntrack.stats().inserts >= 300, "{:?}", state.conntrack.stats());
}

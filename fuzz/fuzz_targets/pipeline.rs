//! Any bytes through the datapath (ARP/NDP, TCP/UDP to DSR and SNAT services over IPv4 and
//! IPv6, session affinity, replies to the SNAT addresses with one live SNAT flow to find), in
//! a frame buffer with room to spare: no panic, and a frame sent out always fits the buffer.
#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use libfuzzer_sys::fuzz_target;
use xlb::{
    lb::{
        conntrack::{Conntrack, Timeouts},
        process,
        snapshot::{Backend, ForwardMode, Service, ServiceKey},
        snat::SnatTable,
        Ctx, Snapshot, Verdict, VipMode, WorkerState,
    },
    wire::EthernetAddress,
};

/// A SYN from 10.0.0.1:40000 to 10.0.0.100:81 (the SNAT service), so that one SNAT flow is
/// live for the fuzzed frame to find.
const SNAT_SYN: [u8; 54] = [
    2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, // Ethernet
    0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 100, // IPv4
    0x9c, 0x40, 0, 81, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0x04, 0x00, 0, 0, 0, 0, // TCP SYN
];

fuzz_target!(|data: &[u8]| {
    let v4 = |d: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, d));
    let v6 = |d: u16| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, d));
    let snap = Snapshot::new(
        1,
        [
            (v4(100), VipMode::Answer),
            (v4(101), VipMode::Watch),
            (v6(0x100), VipMode::Answer),
            (v4(200), VipMode::Answer),
            (v6(0x200), VipMode::Answer),
        ],
    );
    let backend =
        |addr: IpAddr, i: u8| Backend { mac: Some(EthernetAddress([2, 0, 0, 0, 1, i])), ..Backend::new(addr, 80, 1) };
    let mut services = Vec::new();
    for proto in [6u8, 17] {
        for (port, mode) in [(80, ForwardMode::Dsr), (81, ForwardMode::Snat)] {
            let key4 = ServiceKey { vip: v4(100), port, proto };
            let b4 = vec![backend(v4(11), 1), backend(v4(12), 2)];
            let key6 = ServiceKey { vip: v6(0x100), port, proto };
            let b6 = vec![backend(v6(0x11), 3), backend(v6(0x12), 4)];
            services.extend(Service::new(key4, mode, b4, 251).ok());
            services
                .extend(Service::new(key6, mode, b6, 251).ok().map(|s| s.with_affinity(Some(Duration::from_secs(5)))));
        }
    }
    let snap = snap.with_services(services);
    let mut state = WorkerState::new(Conntrack::new(64, Timeouts::default()));
    // A small port range, so that exhaustion is reachable too.
    let Ok(table) = SnatTable::new(vec![v4(200), v6(0x200)], 1024, 1031, 1) else { return };
    state.snat = Some(Arc::new(table).worker(0));
    let ours = EthernetAddress([2, 0, 0, 0, 0, 1]);
    let mut buf = [0u8; 2048];
    buf[..SNAT_SYN.len()].copy_from_slice(&SNAT_SYN);
    let _ = process(&Ctx { now: 0, snap: &snap, mac: ours }, &mut state, &mut buf, SNAT_SYN.len());
    let len = data.len().min(buf.len());
    buf[..len].copy_from_slice(&data[..len]);
    if let Verdict::Tx { len: out, .. } = process(&Ctx { now: 1, snap: &snap, mac: ours }, &mut state, &mut buf, len) {
        assert!((14..=buf.len()).contains(&out));
    }
});

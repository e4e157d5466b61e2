//! Any bytes through the datapath (ARP/NDP, and TCP/UDP to a DSR service), in a frame
//! buffer with room to spare: no panic, and a frame sent out always fits the buffer.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use xlb::{
    lb::{
        conntrack::{Conntrack, Timeouts},
        process,
        snapshot::{Backend, ForwardMode, Service, ServiceKey},
        Snapshot, Verdict, VipMode, WorkerState,
    },
    wire::EthernetAddress,
};

fuzz_target!(|data: &[u8]| {
    let snap = Snapshot::new(
        1,
        [
            (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)), VipMode::Answer),
            (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101)), VipMode::Watch),
            (IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100)), VipMode::Answer),
        ],
    );
    let backend = |i: u8| Backend {
        mac: Some(EthernetAddress([2, 0, 0, 0, 1, i])),
        ..Backend::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)), 80, 1)
    };
    let services = [6u8, 17]
        .into_iter()
        .filter_map(|proto| {
            let key = ServiceKey { vip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)), port: 80, proto };
            Service::new(key, ForwardMode::Dsr, vec![backend(1), backend(2)], 251).ok()
        })
        .collect();
    let snap = snap.with_services(services);
    let mut state = WorkerState { conntrack: Conntrack::new(64, Timeouts::default()) };
    let mut buf = [0u8; 2048];
    let len = data.len().min(buf.len());
    buf[..len].copy_from_slice(&data[..len]);
    if let Verdict::Tx { len: out, .. } = process(0, &snap, &mut state, EthernetAddress([2, 0, 0, 0, 0, 1]), &mut buf, len) {
        assert!((14..=buf.len()).contains(&out));
    }
});

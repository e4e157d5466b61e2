//! Any bytes through the datapath, in a frame buffer with room to spare: no panic, and a
//! frame sent out always fits the buffer and is a frame.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use xlb::{
    lb::{
        conntrack::{Conntrack, Timeouts},
        process, Snapshot, Verdict, VipMode, WorkerState,
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
    let mut state = WorkerState { conntrack: Conntrack::new(64, Timeouts::default()) };
    let mut buf = [0u8; 2048];
    let len = data.len().min(buf.len());
    buf[..len].copy_from_slice(&data[..len]);
    if let Verdict::Tx { len: out, .. } = process(0, &snap, &mut state, EthernetAddress([2, 0, 0, 0, 0, 1]), &mut buf, len) {
        assert!((14..=buf.len()).contains(&out));
    }
});

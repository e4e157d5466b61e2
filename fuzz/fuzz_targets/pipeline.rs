//! Any bytes through the datapath (ARP/NDP, TCP/UDP to DSR and SNAT services over IPv4 and
//! IPv6, session affinity, replies to the SNAT addresses with one live SNAT flow to find), in
//! a frame buffer with room to spare: no panic, and a frame sent out always fits the buffer.
//! The scene is the fixtures' (`xlb::lb::testing`); the low bit of the first byte turns
//! session affinity on, so both paths are reached.
#![no_main]

use std::{net::IpAddr, time::Duration};

use libfuzzer_sys::fuzz_target;
use xlb::{
    lb::{
        process,
        testing::{ctx, PacketBuilder, Scene, SNAT_PORT, VIP4},
        Verdict,
    },
    wire::tcp::TcpFlags,
};

fuzz_target!(|data: &[u8]| {
    let affinity = data.first().is_some_and(|b| b & 1 == 1).then_some(Duration::from_secs(5));
    // Two backends per service, a small flow table, and a small port range, so that
    // exhaustion is reachable too.
    let scene = Scene { backends: 2, affinity, snat_ports: (1024, 1031), conntrack: 64, ..Scene::default() };
    let snap = scene.snapshot();
    let mut state = scene.state();
    // A SYN from the client to the SNAT service, so that one SNAT flow is live for the
    // fuzzed frame to find.
    let syn = PacketBuilder::tcp(IpAddr::V4(VIP4), SNAT_PORT, TcpFlags::SYN).build();
    let mut buf = [0u8; 2048];
    buf[..syn.len()].copy_from_slice(&syn);
    let _ = process(&ctx(0, &snap), &mut state, &mut buf, syn.len());
    let len = data.len().min(buf.len());
    buf[..len].copy_from_slice(&data[..len]);
    if let Verdict::Tx { len: out, .. } = process(&ctx(1, &snap), &mut state, &mut buf, len) {
        assert!((14..=buf.len()).contains(&out));
    }
});

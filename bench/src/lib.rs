//! xlb's benchmarks. Micro-benchmarks (criterion) are in `benches/datapath.rs`:
//! `cargo bench -p xlb-bench`. The end-to-end harness, which runs xlb, the AF_XDP ceiling and
//! the kernel's nftables DNAT side by side on the netns lab with pktgen and trafgen, is
//! `bench/harness.py` (`make bench`). This library holds what both share: the frames the
//! benchmarks feed the datapath.

use std::net::Ipv4Addr;

use xlb::wire::{
    build::{self, L2},
    ipv4::Ipv4Repr,
    EthernetAddress,
};

/// Our MAC in the benchmark frames.
pub const OURS: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x10]);
/// The client's MAC.
pub const CLIENT: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x20]);

/// A 60-byte TCP ACK frame from `src`:`sport` to `dst`:`dport`.
pub fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 128];
    let ip = Ipv4Repr { src, dst, protocol: 6, payload_len: 20, ttl: 64 };
    let n = build::ipv4(&mut f, L2 { src: CLIENT, dst: OURS, vlan_tci: None }, &ip).unwrap_or(0);
    f.truncate(n.max(54));
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x10;
    f.resize(60, 0);
    f
}

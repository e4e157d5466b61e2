//! xlb's benchmarks. Micro-benchmarks (criterion) are in `benches/datapath.rs`:
//! `cargo bench -p xlb-bench`. The end-to-end harness, which runs xlb, the AF_XDP ceiling and
//! the kernel's nftables DNAT side by side on the netns lab with pktgen and trafgen, is
//! `bench/harness.py` (`make bench`). Two binaries count rather than time: `pathcost`
//! (instructions per packet under callgrind, run by `scripts/pathcost.sh`) and `svcmem`
//! (heap bytes per service at 10, 1,000 and 10,000 services: `cargo run --release -p
//! xlb-bench --bin svcmem`). This library holds what the benchmarks share: the frames they
//! feed the datapath.

use std::net::{IpAddr, Ipv4Addr};

use xlb::{
    lb::testing::{PacketBuilder, CLIENT_MAC},
    wire::{build::MIN_FRAME_LEN, tcp::TcpFlags, EthernetAddress},
};

/// Our MAC in the benchmark frames.
pub const OURS: EthernetAddress = xlb::lb::testing::OURS;
/// The client's MAC.
pub const CLIENT: EthernetAddress = CLIENT_MAC;

/// A 60-byte TCP ACK frame from `src`:`sport` to `dst`:`dport` (built by the fixtures'
/// [`PacketBuilder`], padded to the Ethernet minimum).
pub fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let p = PacketBuilder {
        src_mac: CLIENT,
        src: IpAddr::V4(src),
        sport,
        ..PacketBuilder::tcp(IpAddr::V4(dst), dport, TcpFlags::ACK)
    };
    let mut f = p.build();
    f.resize(f.len().max(MIN_FRAME_LEN), 0);
    f
}

//! Writes the seed frames of the `parse` and `pipeline` targets (fuzz/seeds/frames/, checked
//! in): one frame of each kind the datapath answers, built with the fixtures' `PacketBuilder`,
//! so that fuzzing starts from frames that reach deep. Prints each seed with the verdict the
//! `pipeline` target's scene gives it. Run again when the frame formats or the scene change:
//!
//!   cargo run --manifest-path fuzz/Cargo.toml --example seeds [-- DIR]
//!
//! (a plain build: it does not link libFuzzer). Files are named after what they hold.

use std::{net::IpAddr, path::PathBuf};

use xlb::{
    lb::{
        heartbeat::{self, Beat},
        process,
        testing::{
            arp, ctx, icmp, solicit, PacketBuilder, Scene, CLIENT4, CLIENT6, CLIENT_MAC, DSR_PORT, OURS, ROUTER4,
            ROUTER_MAC, SNAT_PORT, VIP4, VIP6,
        },
        Verdict,
    },
    wire::{parse::Network, parse_frame, tcp::TcpFlags, ArpOperation, ArpRepr, EthernetAddress, Transport},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/seeds/frames".into()));
    // The `pipeline` target's scene (fuzz_targets/pipeline.rs), affinity off (the first
    // byte of each seed, a unicast MAC, has its low bit clear).
    let scene = Scene { backends: 2, snat_ports: (1024, 1031), conntrack: 64, ..Scene::default() };
    let snap = scene.snapshot();
    let (vip4, vip6) = (IpAddr::V4(VIP4), IpAddr::V6(VIP6));

    // The backend's SYN-ACK to the SNAT flow the target sets up: from the backend, address
    // and port, that flow's SYN went to, to the SNAT address and port it left with.
    let syn = PacketBuilder::tcp(vip4, SNAT_PORT, TcpFlags::SYN).build();
    let mut buf = [0u8; 2048];
    buf[..syn.len()].copy_from_slice(&syn);
    let Verdict::Tx { len, .. } = process(&ctx(0, &snap), &mut scene.state(), &mut buf, syn.len()) else {
        return Err("the scene's SNAT SYN was not forwarded".into());
    };
    let sent = parse_frame(&buf[..len])?;
    let (Network::Ipv4 { src: snat, dst: backend, .. }, Transport::Tcp { src_port, dst_port, .. }) =
        (sent.network, sent.transport)
    else {
        return Err("the forwarded SYN is not TCP over IPv4".into());
    };
    let syn_ack = PacketBuilder::tcp(IpAddr::V4(snat), src_port, TcpFlags::SYN | TcpFlags::ACK);
    let snat_reply =
        PacketBuilder { src_mac: sent.dst_mac, src: IpAddr::V4(backend), sport: dst_port, ..syn_ack }.build();

    // A router's "fragmentation needed" about a packet VIP:80 sent to the client.
    let quoted = PacketBuilder {
        src_mac: OURS,
        dst_mac: CLIENT_MAC,
        src: vip4,
        dst: IpAddr::V4(CLIENT4),
        sport: DSR_PORT,
        dport: 40000,
        ..PacketBuilder::tcp(IpAddr::V4(CLIENT4), 0, TcpFlags::ACK)
    };
    let frag_needed = icmp((ROUTER_MAC, OURS), IpAddr::V4(ROUTER4), vip4, (3, 4), [0, 0, 5, 0], &quoted.ip_packet());

    let arp_request = ArpRepr {
        operation: ArpOperation::Request,
        sha: CLIENT_MAC,
        spa: CLIENT4,
        tha: EthernetAddress::ZERO,
        tpa: VIP4,
    };
    let beat = Beat { name: "lb-1", cluster: 1, incarnation: 1, seq: 1, digest: 0, hears: 1, flags: 0 };

    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("tcp4-syn-dsr", PacketBuilder::tcp(vip4, DSR_PORT, TcpFlags::SYN).build()),
        ("tcp6-syn-dsr", PacketBuilder::tcp(vip6, DSR_PORT, TcpFlags::SYN).build()),
        ("udp4-dsr", PacketBuilder { payload: b"ping", ..PacketBuilder::udp(vip4, DSR_PORT) }.build()),
        ("tcp4-syn-snat", syn),
        ("udp6-snat", PacketBuilder { payload: b"ping", ..PacketBuilder::udp(vip6, SNAT_PORT) }.build()),
        ("tcp4-synack-snat-reply", snat_reply),
        ("tcp4-vlan-dsr", PacketBuilder { vlan: Some(7), ..PacketBuilder::tcp(vip4, DSR_PORT, TcpFlags::ACK) }.build()),
        ("ipv4-later-fragment", PacketBuilder { frag_offset: 8, ..PacketBuilder::udp(vip4, DSR_PORT) }.build()),
        ("arp-request-vip4", arp(CLIENT_MAC, EthernetAddress::BROADCAST, None, &arp_request)),
        ("ndp-solicit-vip6", solicit(CLIENT6, VIP6, 255)),
        ("icmp4-echo-vip4", icmp((CLIENT_MAC, OURS), IpAddr::V4(CLIENT4), vip4, (8, 0), [0, 1, 0, 1], b"ping")),
        ("icmp6-echo-vip6", icmp((CLIENT_MAC, OURS), IpAddr::V6(CLIENT6), vip6, (128, 0), [0, 1, 0, 1], b"ping")),
        ("icmp4-frag-needed-dsr", frag_needed),
        ("heartbeat", heartbeat::build(EthernetAddress([0x02, 0, 0, 0, 0, 0x50]), &beat).bytes().to_vec()),
    ];

    std::fs::create_dir_all(&dir)?;
    for (name, frame) in &seeds {
        let mut state = scene.state();
        let mut buf = [0u8; 2048];
        buf[..frame.len()].copy_from_slice(frame);
        // The target's first call, so that the SNAT reply finds its flow.
        let mut first = [0u8; 2048];
        let setup = PacketBuilder::tcp(vip4, SNAT_PORT, TcpFlags::SYN).build();
        first[..setup.len()].copy_from_slice(&setup);
        let _ = process(&ctx(0, &snap), &mut state, &mut first, setup.len());
        let verdict = process(&ctx(1, &snap), &mut state, &mut buf, frame.len());
        println!("{name:24} {:4} bytes  {verdict:?}", frame.len());
        std::fs::write(dir.join(name), frame)?;
    }
    Ok(())
}

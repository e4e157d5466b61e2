//! The per-packet cost of the datapath, for `valgrind --tool=callgrind`
//! (`scripts/pathcost.sh` runs it and prints instructions per packet).
//!
//! `pathcost PATH N` prepares the frames and the worker state of one path, runs one untimed
//! round so that flows are tracked and tables warm, then pushes `N` frames through the
//! datapath inside [`measured`], the only function callgrind collects: `lb::Parsed::of`
//! then `lb::process_parsed`, the two steps a worker takes for each frame (it reads the
//! whole batch first, to prefetch). Each frame is copied into the receive buffer first, as
//! the worker's RX ring would hold it; the `copy` path does only that, so the driver's own
//! share is known.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    process::ExitCode,
};

use xlb::{
    lb::{
        maglev::TableSize,
        process, process_parsed,
        testing::{
            arp, backend_mac, ctx, icmp, PacketBuilder, Scene, CLIENT4, CLIENT_MAC, DSR_PORT, OURS, ROUTER4,
            ROUTER_MAC, SNAT4, SNAT_BACKEND_PORT, SNAT_PORT, VIP4,
        },
        Parsed, Snapshot, Verdict, WorkerState,
    },
    wire::{build::MIN_FRAME_LEN, tcp::TcpFlags, ArpOperation, ArpRepr, EthernetAddress},
};

/// Flows the established paths cycle through.
const FLOWS: u16 = 1024;
/// Room after each frame for a longer reply.
const BUF: usize = 2048;
/// The clock the driver runs at (nanoseconds): far from zero, constant.
const NOW: u64 = 1_000_000_000;

/// The paths, with what each measures.
const PATHS: &[(&str, &str)] = &[
    ("copy", "the driver alone: each frame copied into the receive buffer, nothing processed"),
    ("dsr", "established TCP flow to a DSR service (conntrack hit, MAC rewrite)"),
    ("snat-out", "established TCP flow to a SNAT service (client to backend: addresses, ports, checksums)"),
    ("snat-in", "the backend's reply on a SNAT flow (translated back to the client)"),
    ("syn", "a new TCP flow to a DSR service (Maglev choice, conntrack insert)"),
    ("arp", "an ARP request for a VIP, answered"),
    ("icmp", "an ICMP error (fragmentation needed) about a DSR flow, sent on to its backend"),
];

fn pad(mut f: Vec<u8>) -> Vec<u8> {
    f.resize(f.len().max(MIN_FRAME_LEN), 0);
    f
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let p = PacketBuilder { src: IpAddr::V4(CLIENT4), sport, ..PacketBuilder::tcp(IpAddr::V4(VIP4), dport, flags) };
    pad(p.build())
}

/// One path: the scene's snapshot, a worker's state, and the frames, cycled.
struct Path {
    snap: Snapshot,
    st: WorkerState,
    frames: Vec<Vec<u8>>,
    process: bool,
}

/// Runs every frame of `p` once through `process`; what it sent out, in order.
fn round(p: &mut Path) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(p.frames.len());
    let mut buf = vec![0u8; BUF];
    for f in &p.frames {
        buf[..f.len()].copy_from_slice(f);
        if let Verdict::Tx { len, .. } = process(&ctx(NOW, &p.snap), &mut p.st, &mut buf, f.len()) {
            out.push(buf[..len].to_vec());
        }
    }
    out
}

fn prepare(name: &str, n: usize) -> Result<Path, String> {
    let scene = Scene {
        backends: 10,
        table_size: TableSize::Auto,
        snat_ports: (1024, 65535),
        conntrack: (n + usize::from(FLOWS)).max(1 << 16),
        ..Scene::default()
    };
    let mut p = Path { snap: scene.snapshot(), st: scene.state(), frames: Vec::new(), process: true };
    match name {
        "copy" => {
            p.frames = (0..FLOWS).map(|i| tcp(10_000 + i, DSR_PORT, TcpFlags::ACK)).collect();
            p.process = false;
        }
        "dsr" | "snat-out" => {
            let port = if name == "dsr" { DSR_PORT } else { SNAT_PORT };
            p.frames = (0..FLOWS).map(|i| tcp(10_000 + i, port, TcpFlags::ACK)).collect();
        }
        "snat-in" => {
            p.frames = (0..FLOWS).map(|i| tcp(10_000 + i, SNAT_PORT, TcpFlags::ACK)).collect();
            // The frames as the backends received them, answered.
            let sent = round(&mut p);
            if sent.len() != p.frames.len() {
                return Err(format!("snat-in: {} of {} flows set up", sent.len(), p.frames.len()));
            }
            p.frames = sent.iter().map(|f| reply(f)).collect::<Result<_, _>>()?;
        }
        "syn" => {
            // Every frame a new flow: as many distinct clients as frames, none repeated.
            p.frames = (0..n)
                .map(|i| {
                    let i = u32::try_from(i).unwrap_or(u32::MAX);
                    let src = Ipv4Addr::from(0x0a00_0000 | (i >> 14));
                    let sport = 10_000 + u16::try_from(i & 0x3fff).unwrap_or(0);
                    let b = PacketBuilder {
                        src: IpAddr::V4(src),
                        sport,
                        ..PacketBuilder::tcp(IpAddr::V4(VIP4), DSR_PORT, TcpFlags::SYN)
                    };
                    pad(b.build())
                })
                .collect();
        }
        "arp" => {
            let a = ArpRepr {
                operation: ArpOperation::Request,
                sha: CLIENT_MAC,
                spa: CLIENT4,
                tha: EthernetAddress::ZERO,
                tpa: VIP4,
            };
            p.frames = vec![arp(CLIENT_MAC, EthernetAddress::BROADCAST, None, &a)];
        }
        "icmp" => {
            // The router's "fragmentation needed" about VIP:80 -> client, for each DSR flow.
            p.frames = (0..FLOWS)
                .map(|i| {
                    let quoted = PacketBuilder {
                        src_mac: OURS,
                        dst_mac: CLIENT_MAC,
                        src: IpAddr::V4(VIP4),
                        dst: IpAddr::V4(CLIENT4),
                        sport: DSR_PORT,
                        dport: 10_000 + i,
                        ..PacketBuilder::tcp(IpAddr::V4(CLIENT4), 0, TcpFlags::ACK)
                    };
                    let l2 = (ROUTER_MAC, OURS);
                    icmp(l2, IpAddr::V4(ROUTER4), IpAddr::V4(VIP4), (3, 4), [0, 0, 5, 0], &quoted.ip_packet())
                })
                .collect();
        }
        other => return Err(format!("unknown path {other:?}")),
    }
    Ok(p)
}

/// The backend's answer to `f`, a frame xlb sent it (addresses, ports and MACs swapped).
fn reply(f: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "snat-in: a forwarded frame is not IPv4 TCP".to_string();
    let at = |r: std::ops::Range<usize>| f.get(r).ok_or_else(bad);
    let ip4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let (snat, backend) = (ip4(at(26..30)?), ip4(at(30..34)?));
    let sport = u16::from_be_bytes(at(34..36)?.try_into().map_err(|_| bad())?);
    let dport = u16::from_be_bytes(at(36..38)?.try_into().map_err(|_| bad())?);
    if snat != SNAT4 || dport != SNAT_BACKEND_PORT {
        return Err(bad());
    }
    let p = PacketBuilder {
        src_mac: backend_mac(0),
        dst_mac: OURS,
        src: IpAddr::V4(backend),
        sport: dport,
        ..PacketBuilder::tcp(IpAddr::V4(snat), sport, TcpFlags::ACK)
    };
    Ok(pad(p.build()))
}

/// The measured loop: `n` frames of `p`, cycled, each copied in and processed. Returns the
/// number forwarded or answered, which `main` checks.
#[inline(never)]
fn measured(p: &mut Path, n: usize, buf: &mut [u8]) -> usize {
    let mut sent = 0usize;
    let frames = p.frames.len();
    for i in 0..n {
        let f = &p.frames[i % frames];
        buf[..f.len()].copy_from_slice(f);
        if p.process {
            let read = Parsed::of(buf, f.len());
            let v = process_parsed(&ctx(NOW, &p.snap), &mut p.st, buf, f.len(), &read);
            sent += usize::from(matches!(v, Verdict::Tx { .. }));
        } else {
            sent += usize::from(black_box(&buf[..f.len()]).len() == f.len());
        }
    }
    sent
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, n) = match args.as_slice() {
        [name, n] => match n.parse::<usize>() {
            Ok(n) if n > 0 => (name.as_str(), n),
            _ => {
                eprintln!("pathcost: N must be a positive count of frames, not {n:?}");
                return ExitCode::from(2);
            }
        },
        [l] if l == "--list" => {
            for (name, what) in PATHS {
                println!("{name}\t{what}");
            }
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("usage: pathcost PATH N | pathcost --list\npaths:");
            for (name, what) in PATHS {
                eprintln!("  {name:<9} {what}");
            }
            return ExitCode::from(2);
        }
    };
    let mut p = match prepare(name, n) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pathcost: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The warm-up round: flows tracked, tables touched (not for `syn`, whose every frame
    // must stay new).
    if name != "syn" && p.process {
        round(&mut p);
    }
    let mut buf = vec![0u8; BUF];
    let sent = measured(&mut p, n, &mut buf);
    // Every frame of every path is forwarded or answered: anything else is a broken driver,
    // not a cost to report.
    if sent != n {
        eprintln!("pathcost: {name}: {sent} of {n} frames forwarded or answered");
        return ExitCode::FAILURE;
    }
    println!("{name}\t{n}");
    ExitCode::SUCCESS
}

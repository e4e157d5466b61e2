//! pktgen: xlb's AF_XDP traffic tools, for the benchmarks.
//!
//! - `send`: UDP or TCP SYN frames over N flows (source address and port ranges), at a target
//!   rate or as fast as possible, for a duration or a count, from one thread per queue. Each
//!   frame carries its flow number and a CLOCK_MONOTONIC timestamp in the payload.
//! - `sink`: receives the frames addressed to one address (an XDP program redirects them to
//!   one socket per queue), counts them per flow, and measures latency from the timestamps.
//! - `forward`: the ceiling for a load balancer on the same path: receives frames for an
//!   address and sends them back out with only the MACs rewritten (no load-balancing work).
//!
//! Every command prints a progress line each second and a JSON summary at the end.

// Rates and counts move between integers and floats for reporting; the values involved are
// far inside both ranges.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use std::{
    io::IsTerminal,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;
use xlb::{
    io::{
        netdev::NetDev,
        port::{monotonic_ns, Port},
        worker::{XskParams, ZeroCopy},
        xdp::{AttachMode, XdpProgram, VIP_OWNED},
    },
    wire::{checksum, EthernetAddress},
};

#[derive(Parser, Debug)]
#[command(version, about = "AF_XDP traffic generator, sink and MAC-swapping forwarder for xlb's benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// Interface.
    #[arg(long, short = 'i')]
    interface: String,
    /// Queues to use, from 0 (one thread each).
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Write the summary here as JSON (it is printed too).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Cores to pin the threads to, in queue order (default: not pinned).
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send UDP or TCP SYN frames.
    Send {
        #[command(flatten)]
        c: Common,
        /// Destination MAC (the load balancer's, or the sink's).
        #[arg(long)]
        dst_mac: EthernetAddress,
        /// Destination address and port (the VIP).
        #[arg(long)]
        dst: std::net::SocketAddrV4,
        /// First source address.
        #[arg(long)]
        src: Ipv4Addr,
        /// Number of source addresses (consecutive from --src).
        #[arg(long, default_value_t = 1)]
        src_count: u32,
        /// First source port.
        #[arg(long, default_value_t = 10_000)]
        sport: u16,
        /// Flows: distinct (source address, source port) pairs, used in turn.
        #[arg(long, default_value_t = 1024)]
        flows: u32,
        /// Destination ports: flow i goes to the --dst port + (i mod this), so traffic spreads
        /// over that many services on one VIP.
        #[arg(long, default_value_t = 1)]
        dports: u16,
        /// udp, or syn (TCP SYNs).
        #[arg(long, default_value = "udp")]
        proto: String,
        /// Frame size in bytes, without the FCS (60 to 1514).
        #[arg(long, default_value_t = 60)]
        size: usize,
        /// Packets per second in all (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Stop after this many packets in all (0: run for --duration).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Count and time the frames that arrive for an address.
    Sink {
        #[command(flatten)]
        c: Common,
        /// The destination address to take (the VIP in DSR, the backend's in SNAT).
        #[arg(long)]
        addr: std::net::IpAddr,
    },
    /// Receive frames for an address and send them back out with new MACs (the ceiling).
    Forward {
        #[command(flatten)]
        c: Common,
        /// The destination address to take.
        #[arg(long)]
        addr: std::net::IpAddr,
        /// Where frames go, picked by flow hash; repeat for more.
        #[arg(long = "to-mac", required = true)]
        to: Vec<EthernetAddress>,
    },
}

/// Payload after the transport header: flow number and send time.
const PAYLOAD: usize = 12;

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Send { c, dst_mac, dst, src, src_count, sport, flows, dports, proto, size, rate, count } => {
            send(&c, &SendCfg { dst_mac, dst, src, src_count, sport, flows, dports, proto, size, rate, count })
        }
        Cmd::Sink { c, addr } => sink(&c, addr, None),
        Cmd::Forward { c, addr, to } => sink(&c, addr, Some(to)),
    };
    if let Err(e) = r {
        eprintln!("pktgen: {e:#}");
        std::process::exit(1);
    }
}

fn port(c: &Common, dev: &NetDev, q: u32) -> anyhow::Result<Port> {
    Port::open(&XskParams {
        ifname: &dev.name,
        queue: q,
        frames: 8192,
        ring_size: 2048,
        batch: 64,
        zero_copy: ZeroCopy::Auto,
    })
    .with_context(|| format!("binding an AF_XDP socket to {} queue {q}", c.interface))
}

fn device(c: &Common) -> anyhow::Result<NetDev> {
    let dev = NetDev::by_name(&c.interface).map_err(|e| anyhow::anyhow!("--interface: {e}"))?;
    if c.queues == 0 || c.queues > dev.rx_queues {
        bail!("--queues {}: {} has {} queue(s)", c.queues, dev.name, dev.rx_queues);
    }
    if c.duration.is_nan() || c.duration <= 0.0 {
        bail!("--duration must be more than 0 seconds");
    }
    Ok(dev)
}

/// Pins the calling thread to the core given for queue `q`, if one was.
fn pin(c: &Common, q: u32) {
    if let Some(core) = c.cores.get(usize::try_from(q).unwrap_or(0)) {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: *core }) {
            eprintln!("pktgen: could not pin queue {q}'s thread to core {core}");
        }
    }
}

/// A progress line each second (one updated line on a terminal, plain lines otherwise).
fn progress(what: &str, started: Instant, counts: &[(&str, &AtomicU64)], last: &mut Vec<u64>) {
    let secs = started.elapsed().as_secs_f64();
    let now: Vec<u64> = counts.iter().map(|(_, c)| c.load(Ordering::Relaxed)).collect();
    let parts: Vec<String> = counts
        .iter()
        .zip(&now)
        .zip(last.iter().chain(std::iter::repeat(&0)))
        .map(|(((name, _), n), l)| format!("{name} {n} ({:.2} Mpps)", (n - l) as f64 / 1e6))
        .collect();
    let line = format!("{what} {secs:5.1}s  {}", parts.join("  "));
    if std::io::stderr().is_terminal() {
        eprint!("\r{line}   ");
    } else {
        eprintln!("{line}");
    }
    *last = now;
}

struct SendCfg {
    dst_mac: EthernetAddress,
    dst: std::net::SocketAddrV4,
    src: Ipv4Addr,
    src_count: u32,
    sport: u16,
    flows: u32,
    dports: u16,
    proto: String,
    size: usize,
    rate: u64,
    count: u64,
}

/// Writes the frame of `flow` into `buf`; returns its length.
fn build(buf: &mut [u8], t: &Template, flow: u32, now: u64) -> usize {
    let n = t.bytes.len();
    buf[..n].copy_from_slice(&t.bytes);
    let src_ip = u32::from(t.src).wrapping_add(flow / t.ports);
    let sport = t.sport.wrapping_add(u16::try_from(flow % t.ports).unwrap_or(0));
    buf[26..30].copy_from_slice(&src_ip.to_be_bytes());
    // IPv4 header checksum: the template's, updated for the source address.
    let c = checksum::update_bytes(
        u16::from_be_bytes([buf[24], buf[25]]),
        &u32::from(t.src).to_be_bytes(),
        &src_ip.to_be_bytes(),
    );
    buf[24..26].copy_from_slice(&c.to_be_bytes());
    buf[34..36].copy_from_slice(&sport.to_be_bytes());
    let dport = t.dst.port().wrapping_add(u16::try_from(flow % u32::from(t.dports)).unwrap_or(0));
    buf[36..38].copy_from_slice(&dport.to_be_bytes());
    let p = t.payload_at;
    buf[p..p + 4].copy_from_slice(&flow.to_be_bytes());
    buf[p + 4..p + 12].copy_from_slice(&now.to_be_bytes());
    if t.syn {
        // TCP checksum over the pseudo-header, header and payload (small: computed whole).
        buf[50..52].copy_from_slice(&[0, 0]);
        let l4_len = u16::try_from(n - 34).unwrap_or(0);
        let src = Ipv4Addr::from(src_ip);
        let sum = checksum::pseudo_v4(src, *t.dst.ip(), 6, l4_len);
        let c = checksum::finish(checksum::sum(sum, &buf[34..n]));
        buf[50..52].copy_from_slice(&c.to_be_bytes());
    }
    n
}

struct Template {
    bytes: Vec<u8>,
    src: Ipv4Addr,
    dst: std::net::SocketAddrV4,
    sport: u16,
    ports: u32,
    dports: u16,
    payload_at: usize,
    syn: bool,
}

fn template(cfg: &SendCfg, src_mac: EthernetAddress) -> anyhow::Result<Template> {
    let syn = match cfg.proto.as_str() {
        "udp" => false,
        "syn" => true,
        other => bail!("--proto {other:?}: udp or syn"),
    };
    let hdr = if syn { 14 + 20 + 20 } else { 14 + 20 + 8 };
    if cfg.size > 1514 || cfg.size < 60 || cfg.size < hdr + PAYLOAD {
        bail!("--size {}: between {} and 1514 bytes for {}", cfg.size, (hdr + PAYLOAD).max(60), cfg.proto);
    }
    if cfg.flows == 0 || cfg.src_count == 0 {
        bail!("--flows and --src-count must be at least 1");
    }
    let ports = cfg.flows.div_ceil(cfg.src_count);
    if u32::from(cfg.sport) + ports > 65_536 {
        bail!(
            "--flows {} over {} source address(es) needs {ports} ports from {}: more than 65535",
            cfg.flows,
            cfg.src_count,
            cfg.sport
        );
    }
    let mut b = vec![0u8; cfg.size];
    b[0..6].copy_from_slice(&cfg.dst_mac.0);
    b[6..12].copy_from_slice(&src_mac.0);
    b[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = u16::try_from(cfg.size - 14).unwrap_or(0);
    b[14] = 0x45;
    b[16..18].copy_from_slice(&ip_len.to_be_bytes());
    b[20..22].copy_from_slice(&[0x40, 0]); // don't fragment
    b[22] = 64;
    b[23] = if syn { 6 } else { 17 };
    b[26..30].copy_from_slice(&cfg.src.octets());
    b[30..34].copy_from_slice(&cfg.dst.ip().octets());
    let c = checksum::checksum(&b[14..34]);
    b[24..26].copy_from_slice(&c.to_be_bytes());
    b[36..38].copy_from_slice(&cfg.dst.port().to_be_bytes());
    if syn {
        b[38..42].copy_from_slice(&1u32.to_be_bytes());
        b[46] = 0x50;
        b[47] = 0x02;
        b[48..50].copy_from_slice(&64240u16.to_be_bytes());
    } else {
        // UDP with no checksum (allowed in IPv4): nothing to recompute per frame.
        b[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    }
    if cfg.dports == 0 || u32::from(cfg.dst.port()) + u32::from(cfg.dports) > 65_536 {
        bail!("--dports {}: from port {} it must stay within 1-65535", cfg.dports, cfg.dst.port());
    }
    Ok(Template {
        bytes: b,
        src: cfg.src,
        dst: cfg.dst,
        sport: cfg.sport,
        ports,
        dports: cfg.dports,
        payload_at: hdr,
        syn,
    })
}

fn send(c: &Common, cfg: &SendCfg) -> anyhow::Result<()> {
    let dev = device(c)?;
    let t = Arc::new(template(cfg, dev.mac)?);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let duration = Duration::from_secs_f64(c.duration);
    let mut threads = Vec::new();
    let k = u64::from(c.queues);
    for q in 0..c.queues {
        let mut p = port(c, &dev, q)?;
        let (t, stop, sent) = (t.clone(), stop.clone(), sent.clone());
        let (rate, count, flows) = (cfg.rate / k, cfg.count.div_ceil(k), cfg.flows);
        let c2 = c.clone();
        threads.push(std::thread::spawn(move || {
            pin(&c2, q);
            let mut mine = 0u64;
            let mut flow = q;
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) && (count == 0 || mine < count) {
                let mut want = 64usize;
                if rate > 0 {
                    let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
                    want = usize::try_from(due.saturating_sub(mine).min(64)).unwrap_or(64);
                    if want == 0 {
                        // Sleep until the next packet is due (frames then leave in small
                        // bursts): a paced sender leaves the CPU to the path it measures.
                        let next = (mine + 1) as f64 / rate as f64;
                        let wait = next - t0.elapsed().as_secs_f64();
                        if wait > 0.0 {
                            std::thread::sleep(Duration::from_secs_f64(wait.max(50e-6)));
                        }
                        continue;
                    }
                }
                if count > 0 {
                    want = want.min(usize::try_from(count - mine).unwrap_or(64));
                }
                let now = monotonic_ns();
                let n = p.send(want, |buf| {
                    let len = build(buf, &t, flow % flows, now);
                    flow = flow.wrapping_add(1);
                    len
                });
                mine += n as u64;
                sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            // Let the last frames leave.
            let end = Instant::now() + Duration::from_millis(200);
            while p.in_flight() > 0 && Instant::now() < end {
                p.send(0, |_| 0);
            }
            (mine, p.mode())
        }));
    }
    let mut last = Vec::new();
    while started.elapsed() < duration && !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(250).min(duration.saturating_sub(started.elapsed())));
        if started.elapsed().as_millis() % 1000 < 250 {
            progress("send", started, &[("sent", &sent)], &mut last);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut per_queue = Vec::new();
    for (q, th) in threads.into_iter().enumerate() {
        let (n, mode) = th.join().map_err(|_| anyhow::anyhow!("a sender thread panicked"))?;
        per_queue.push(json!({"queue": q, "sent": n, "socket": mode.to_string()}));
    }
    let secs = started.elapsed().as_secs_f64();
    let total = sent.load(Ordering::Relaxed);
    let pps = total as f64 / secs;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let mut doc = json!({
        "command": "send", "interface": dev.name, "queues": c.queues, "proto": cfg.proto, "size": cfg.size,
        "flows": cfg.flows, "seconds": secs, "sent": total, "pps": pps, "per_queue": per_queue,
        "target_pps": cfg.rate,
    });
    if cfg.rate > 0 && pps < 0.95 * cfg.rate as f64 {
        let msg =
            format!("could not reach --rate {}: sent {:.0} pps ({:.0}%)", cfg.rate, pps, 100.0 * pps / cfg.rate as f64);
        eprintln!("pktgen: {msg}");
        doc["warning"] = json!(msg);
    }
    output(c, &doc)
}

fn output(c: &Common, doc: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    println!("{text}");
    if let Some(p) = &c.json {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Receives frames for `addr` on every queue; counts them (sink) or forwards them to `to`.
fn sink(c: &Common, addr: std::net::IpAddr, to: Option<Vec<EthernetAddress>>) -> anyhow::Result<()> {
    let dev = device(c)?;
    let mut prog = XdpProgram::load().context("loading the XDP program")?;
    let mut ports = Vec::new();
    for q in 0..c.queues {
        let p = port(c, &dev, q)?;
        prog.set_socket(q, p.fd())?;
        ports.push(p);
    }
    prog.set_vip(addr, VIP_OWNED)?;
    let attached = prog.attach(dev.ifindex, &dev.name, AttachMode::Auto)?;
    let what = if to.is_some() { "forward" } else { "sink" };
    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let to = Arc::new(to);
    let mut threads = Vec::new();
    for (q, mut p) in ports.into_iter().enumerate() {
        let (stop, got, to, c2) = (stop.clone(), got.clone(), to.clone(), c.clone());
        threads.push(std::thread::spawn(move || {
            pin(&c2, u32::try_from(q).unwrap_or(0));
            let mut lat = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("constant bounds are valid");
            let mut per_flow: Vec<u64> = Vec::new();
            let mut bad = 0u64;
            let mut idle = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now = monotonic_ns();
                let n = p.recv(|buf, len| match to.as_ref() {
                    Some(macs) => {
                        // The ceiling: MACs rewritten, nothing else looked at but a flow hash.
                        let h = u64::from_be_bytes([0, 0, buf[26], buf[27], buf[28], buf[29], buf[34], buf[35]]);
                        let mac = macs[usize::try_from(h % macs.len() as u64).unwrap_or(0)];
                        // Our MAC (the frame's destination) becomes the source.
                        buf.copy_within(0..6, 6);
                        buf[..6].copy_from_slice(&mac.0);
                        Some(len)
                    }
                    None => {
                        let l4 = 14 + usize::from(buf[14] & 0xf) * 4;
                        let at = l4 + if buf[23] == 6 { 20 } else { 8 };
                        if len < at + PAYLOAD || buf[12..14] != [0x08, 0x00] {
                            bad += 1;
                            return None;
                        }
                        let flow = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
                        let mut ts = [0u8; 8];
                        ts.copy_from_slice(&buf[at + 4..at + 12]);
                        let sent = u64::from_be_bytes(ts);
                        if flow < 16_777_216 {
                            if per_flow.len() <= flow {
                                per_flow.resize(flow + 1, 0);
                            }
                            per_flow[flow] += 1;
                        }
                        let _ = lat.record(now.saturating_sub(sent).max(1));
                        None
                    }
                });
                if n > 0 {
                    got.fetch_add(n as u64, Ordering::Relaxed);
                    idle = Instant::now();
                } else if idle.elapsed() > Duration::from_millis(1) {
                    p.wait(100);
                }
            }
            (lat, per_flow, bad, p.mode())
        }));
    }
    let duration = Duration::from_secs_f64(c.duration);
    let mut last = Vec::new();
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(250).min(duration.saturating_sub(started.elapsed())));
        if started.elapsed().as_millis() % 1000 < 250 {
            progress(what, started, &[(if what == "sink" { "received" } else { "forwarded" }, &got)], &mut last);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let mut lat = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("constant bounds are valid");
    let mut flows: Vec<u64> = Vec::new();
    let mut bad = 0;
    let mut per_queue = Vec::new();
    for (q, th) in threads.into_iter().enumerate() {
        let (l, pf, b, mode) = th.join().map_err(|_| anyhow::anyhow!("a receiver thread panicked"))?;
        let _ = lat.add(&l);
        if flows.len() < pf.len() {
            flows.resize(pf.len(), 0);
        }
        for (a, b) in flows.iter_mut().zip(&pf) {
            *a += b;
        }
        bad += b;
        per_queue.push(json!({"queue": q, "received": l.len(), "socket": mode.to_string()}));
    }
    prog.detach();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let total = got.load(Ordering::Relaxed);
    let seen: Vec<u64> = flows.iter().copied().filter(|n| *n > 0).collect();
    let us = |q: f64| lat.value_at_quantile(q) as f64 / 1000.0;
    let mut doc = json!({
        "command": what, "interface": dev.name, "queues": c.queues, "xdp": attached.mode.to_string(),
        "seconds": secs, "received": total, "pps": total as f64 / secs, "per_queue": per_queue,
    });
    if what == "sink" {
        doc["malformed"] = json!(bad);
        doc["flows_seen"] = json!(seen.len());
        doc["per_flow_min"] = json!(seen.iter().min());
        doc["per_flow_max"] = json!(seen.iter().max());
        doc["latency_us"] = json!({
            "p50": us(0.5), "p99": us(0.99), "p999": us(0.999), "max": lat.max() as f64 / 1000.0, "samples": lat.len(),
        });
    }
    output(c, &doc)
}

//! Test support, hidden from the docs and never used by xlb itself: one [`Scene`] (an
//! address plan, with the snapshot and worker state built from it) and one
//! [`PacketBuilder`] (frames by meaning, written with the wire `Repr`s), shared by the
//! pipeline and SNAT fixtures, `tests/no_alloc.rs`, the fuzz targets and the criterion
//! benches. Katran's `KatranTestProvision` and `PacketBuilder` are the model.
//!
//! Like a failed assertion, it panics when asked for what cannot be built (a frame over
//! 2 KiB, mixed address families, a table size Maglev refuses).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use super::{
    conntrack::{Conntrack, Timeouts},
    maglev::TableSize,
    snapshot::{Backend, ForwardMode, Service, ServiceKey, SourceRanges},
    snat::SnatTable,
    Ctx, Snapshot, VipMode, WorkerState,
};
use crate::wire::{
    build::{self, L2},
    checksum::{finish, pseudo_v4, pseudo_v6, sum},
    ethernet::EthernetRepr,
    icmpv6::NdiscRepr,
    ipv4::{self, Ipv4Packet, Ipv4Repr, Protocol},
    ipv6::{self, solicited_node, Ipv6Repr},
    tcp::{TcpPacket, TcpRepr},
    udp::{UdpPacket, UdpRepr},
    ArpRepr, EtherType, EthernetAddress,
};

/// The load balancer's MAC: frames come in to it and leave from it.
pub const OURS: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x10]);
/// The client's MAC (or its router's): client traffic comes from it, replies go back to it.
pub const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x20]);
/// The first backend's MAC; backend `i` has [`backend_mac`]`(i)`.
pub const BACKEND_MAC: EthernetAddress = backend_mac(0);
/// A router on the client's side, which sends ICMP errors about our flows.
pub const ROUTER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x40]);

/// The client, IPv4.
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The client, IPv6.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7);
/// The router on the client's side, IPv4.
pub const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The router on the client's side, IPv6.
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
/// The IPv4 VIP (owned: answered).
pub const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The IPv6 VIP (owned: answered).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// An IPv4 VIP still being probed (watched, not answered).
pub const WATCH4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
/// An IPv6 VIP still being probed (watched, not answered).
pub const WATCH6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101);
/// The IPv4 SNAT address.
pub const SNAT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
/// The IPv6 SNAT address.
pub const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200);
/// The first IPv4 backend; backend `i` is [`backend`]`(false, i)`.
pub const BACKEND4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 0x30);
/// The first IPv6 backend; backend `i` is [`backend`]`(true, i)`.
pub const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x30);

/// The DSR services' port, TCP and UDP on both VIPs (backends listen on it too).
pub const DSR_PORT: u16 = 80;
/// The SNAT services' port, TCP and UDP on both VIPs.
pub const SNAT_PORT: u16 = 81;
/// The port the SNAT services' backends listen on.
pub const SNAT_BACKEND_PORT: u16 = 8080;
/// A DSR service (TCP, IPv4 VIP) whose backends' MACs are not resolved.
pub const UNRESOLVED_PORT: u16 = 82;
/// A DSR service of [`VIP4`] whose backends are reached through another interface of this
/// box than the one frames come in on ([`OTHER_IF_MAC`]).
pub const OTHER_IF_PORT: u16 = 83;
/// The MAC of another interface of this box.
pub const OTHER_IF_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0xee, 0x02]);
/// A port of the VIPs with no service.
pub const CLOSED_PORT: u16 = 9;
/// The client's source port unless a packet says otherwise.
pub const CLIENT_PORT: u16 = 40000;

/// Backend `i`'s MAC.
pub const fn backend_mac(i: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0, 0, 0, 0, 0x30 + i])
}

/// Backend `i`'s address, IPv6 or IPv4.
pub fn backend(v6: bool, i: u8) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(u128::from(BACKEND6) + u128::from(i)))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::from(BACKEND4) + u32::from(i)))
    }
}

/// The client's address of `addr`'s family.
pub fn client_of(addr: IpAddr) -> IpAddr {
    if addr.is_ipv6() {
        IpAddr::V6(CLIENT6)
    } else {
        IpAddr::V4(CLIENT4)
    }
}

/// One address plan, and how big to make what is built from it. The plan is the constants
/// above; [`Scene::services`] says which services it holds.
#[derive(Debug, Clone)]
pub struct Scene {
    /// Backends per service (at least one).
    pub backends: u8,
    /// Session affinity on every service (none: off).
    pub affinity: Option<Duration>,
    /// Maglev table size of every service.
    pub table_size: TableSize,
    /// SNAT ports, first and last.
    pub snat_ports: (u16, u16),
    /// Workers sharing the SNAT ports.
    pub workers: usize,
    /// Each worker's flow-table capacity.
    pub conntrack: usize,
    /// The clients every service admits (empty: all).
    pub sources: Vec<ipnet::IpNet>,
}

impl Default for Scene {
    /// One backend per service, no affinity, small tables, four SNAT ports, one worker.
    fn default() -> Self {
        Scene {
            backends: 1,
            affinity: None,
            table_size: TableSize::Fixed(251),
            snat_ports: (1024, 1027),
            workers: 1,
            conntrack: 1024,
            sources: Vec::new(),
        }
    }
}

impl Scene {
    /// For each VIP ([`VIP4`], [`VIP6`]) and protocol (TCP, UDP): DSR on [`DSR_PORT`] and
    /// SNAT on [`SNAT_PORT`] (backends on [`SNAT_BACKEND_PORT`]); and DSR TCP on
    /// [`UNRESOLVED_PORT`] of [`VIP4`] to backends whose MACs are unresolved; and DSR TCP on
    /// [`OTHER_IF_PORT`] to backends reached through another interface.
    pub fn services(&self) -> Vec<Service> {
        let mut out = Vec::new();
        for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
            for proto in [Protocol::TCP, Protocol::UDP] {
                out.push(self.service(ServiceKey { vip, port: DSR_PORT, proto }, ForwardMode::Dsr, DSR_PORT, true));
                let key = ServiceKey { vip, port: SNAT_PORT, proto };
                out.push(self.service(key, ForwardMode::Snat, SNAT_BACKEND_PORT, true));
            }
        }
        let key = ServiceKey { vip: IpAddr::V4(VIP4), port: UNRESOLVED_PORT, proto: Protocol::TCP };
        out.push(self.service(key, ForwardMode::Dsr, UNRESOLVED_PORT, false));
        let key = ServiceKey { vip: IpAddr::V4(VIP4), port: OTHER_IF_PORT, proto: Protocol::TCP };
        let mut other = self.service(key, ForwardMode::Dsr, OTHER_IF_PORT, true);
        for b in &mut other.backends {
            b.via = Some(OTHER_IF_MAC);
        }
        out.push(other);
        // Counted, as the control plane's services are: every packet writes its service's
        // and its backend's traffic counters.
        let per = u32::from(self.backends.max(1));
        for (i, svc) in (0u32..).zip(&mut out) {
            svc.stats_id = i;
            for (j, b) in (0u32..).zip(&mut svc.backends) {
                b.stats_id = i.saturating_mul(per).saturating_add(j);
            }
        }
        out
    }

    fn service(&self, key: ServiceKey, mode: ForwardMode, port: u16, resolved: bool) -> Service {
        let backends = (0..self.backends.max(1))
            .map(|i| Backend {
                mac: resolved.then(|| backend_mac(i)),
                ..Backend::new(backend(key.vip.is_ipv6(), i), port, 1)
            })
            .collect();
        Service::new(key, mode, backends, self.table_size).expect("the scene's table size is a prime Maglev takes")
    }

    /// The snapshot: the VIPs and SNAT addresses owned, [`WATCH4`] and [`WATCH6`] watched,
    /// and [`Scene::services`] (with the scene's affinity).
    pub fn snapshot(&self) -> Snapshot {
        let vips = [
            (IpAddr::V4(VIP4), VipMode::Answer),
            (IpAddr::V4(WATCH4), VipMode::Watch),
            (IpAddr::V6(VIP6), VipMode::Answer),
            (IpAddr::V6(WATCH6), VipMode::Watch),
            (IpAddr::V4(SNAT4), VipMode::Answer),
            (IpAddr::V6(SNAT6), VipMode::Answer),
        ];
        let sources = SourceRanges::new(&self.sources);
        let services =
            self.services().into_iter().map(|s| s.with_affinity(self.affinity).with_sources(sources.clone())).collect();
        Snapshot::new(1, vips).with_services(services)
    }

    /// The SNAT table of [`SNAT4`] and [`SNAT6`], shared by the scene's workers.
    pub fn snat_table(&self) -> Arc<SnatTable> {
        let (lo, hi) = self.snat_ports;
        let addrs = vec![IpAddr::V4(SNAT4), IpAddr::V6(SNAT6)];
        Arc::new(SnatTable::new(addrs, lo, hi, self.workers).expect("the scene's SNAT ports are a valid range"))
    }

    /// Worker 0's state, with a SNAT table of its own.
    pub fn state(&self) -> WorkerState {
        self.worker(&self.snat_table(), 0)
    }

    /// Worker `i`'s state over `table`.
    pub fn worker(&self, table: &Arc<SnatTable>, i: usize) -> WorkerState {
        let mut st = self.bare_state();
        st.snat = Some(table.worker(i));
        st
    }

    /// A worker's state with no SNAT address.
    pub fn bare_state(&self) -> WorkerState {
        WorkerState::new(Conntrack::new(self.conntrack, Timeouts::default()))
    }
}

/// The context of a call at `now` on `snap`, for a frame received on [`OURS`].
pub fn ctx(now: u64, snap: &Snapshot) -> Ctx<'_> {
    Ctx { now, snap, mac: OURS }
}

/// A TCP or UDP packet in an Ethernet frame, said by meaning; [`PacketBuilder::build`]
/// writes it with correct checksums. Its fields are public so that a variant is one struct
/// update away: `PacketBuilder { sport: 9999, ..syn }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketBuilder {
    /// Source MAC.
    pub src_mac: EthernetAddress,
    /// Destination MAC.
    pub dst_mac: EthernetAddress,
    /// 802.1Q tag control information, if tagged.
    pub vlan: Option<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address (of the same family).
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// [`Protocol::TCP`] or [`Protocol::UDP`] (another: the payload alone follows the IP
    /// header).
    pub proto: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags.
    pub flags: u8,
    /// An IPv4 UDP datagram sent without a checksum.
    pub no_udp_sum: bool,
    /// Bytes after the TCP/UDP header.
    pub payload: &'static [u8],
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub ip_options: &'static [u8],
    /// IPv4 more-fragments flag.
    pub more_frags: bool,
    /// IPv4 fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
}

impl PacketBuilder {
    /// A TCP segment with `flags` from the client ([`CLIENT_MAC`], the client address of
    /// `dst`'s family, [`CLIENT_PORT`]) to us and `dst`:`dport`; TTL 64, no payload.
    pub fn tcp(dst: IpAddr, dport: u16, flags: u8) -> Self {
        PacketBuilder {
            src_mac: CLIENT_MAC,
            dst_mac: OURS,
            vlan: None,
            src: client_of(dst),
            dst,
            ttl: 64,
            proto: Protocol::TCP,
            sport: CLIENT_PORT,
            dport,
            flags,
            no_udp_sum: false,
            payload: &[],
            ip_options: &[],
            more_frags: false,
            frag_offset: 0,
        }
    }

    /// A UDP datagram from the client to us and `dst`:`dport`, with a checksum, no payload.
    pub fn udp(dst: IpAddr, dport: u16) -> Self {
        PacketBuilder { proto: Protocol::UDP, flags: 0, ..Self::tcp(dst, dport, 0) }
    }

    /// The packet's transport header and payload, checksum filled.
    fn transport(&self) -> Vec<u8> {
        let (tcp, udp) = (self.proto == Protocol::TCP, self.proto == Protocol::UDP);
        let hdr = if tcp {
            crate::wire::tcp::HEADER_LEN
        } else if udp {
            crate::wire::udp::HEADER_LEN
        } else {
            0
        };
        let mut l4 = vec![0u8; hdr + self.payload.len()];
        l4[hdr..].copy_from_slice(self.payload);
        let pseudo = pseudo(self.src, self.dst, self.proto, l4.len());
        if tcp {
            let r =
                TcpRepr { src_port: self.sport, dst_port: self.dport, seq: 0, ack: 0, flags: self.flags, window: 1024 };
            r.emit(&mut l4).expect("room for the header");
            TcpPacket::new_checked(&mut l4[..]).expect("a whole segment").fill_checksum(pseudo);
        } else if udp {
            let payload_len = u16::try_from(self.payload.len()).expect("a payload under 64 KiB");
            UdpRepr { src_port: self.sport, dst_port: self.dport, payload_len }.emit(&mut l4).expect("room");
            if !(self.no_udp_sum && self.src.is_ipv4()) {
                UdpPacket::new_checked(&mut l4[..]).expect("a whole datagram").fill_checksum(pseudo);
            }
        }
        l4
    }

    /// The frame.
    pub fn build(&self) -> Vec<u8> {
        let l2 = L2 { src: self.src_mac, dst: self.dst_mac, vlan_tci: self.vlan };
        let v4 = Ipv4Extras { options: self.ip_options, more_frags: self.more_frags, frag_offset: self.frag_offset };
        ip_frame(l2, self.src, self.dst, self.proto, self.ttl, &self.transport(), v4)
    }

    /// The IP packet alone (the frame without its Ethernet header): what an ICMP error
    /// quotes.
    pub fn ip_packet(&self) -> Vec<u8> {
        let eth = EthernetRepr { src: self.src_mac, dst: self.dst_mac, vlan_tci: self.vlan, ethertype: 0 };
        self.build().split_off(eth.header_len())
    }
}

/// What an IPv4 header carries beyond [`Ipv4Repr`].
#[derive(Debug, Clone, Copy, Default)]
struct Ipv4Extras {
    options: &'static [u8],
    more_frags: bool,
    frag_offset: u16,
}

fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_v4(s, d, proto, u16::try_from(len).expect("a packet under 64 KiB")),
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_v6(&s, &d, proto, u32::try_from(len).expect("a packet under 4 GiB")),
        _ => panic!("mixed address families"),
    }
}

/// An IP packet carrying `l4` in a frame, header checksum filled.
fn ip_frame(l2: L2, src: IpAddr, dst: IpAddr, proto: u8, ttl: u8, l4: &[u8], v4: Ipv4Extras) -> Vec<u8> {
    let mut f = vec![0u8; 2048];
    let ethertype = if src.is_ipv4() { EtherType::IPV4 } else { EtherType::IPV6 };
    let eth = EthernetRepr { src: l2.src, dst: l2.dst, vlan_tci: l2.vlan_tci, ethertype };
    let l3 = eth.emit(&mut f).expect("room for the Ethernet header");
    let payload_len = |extra: usize| u16::try_from(extra + l4.len()).expect("a packet under 64 KiB");
    let at = match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let ip = Ipv4Repr { src, dst, protocol: proto, payload_len: payload_len(v4.options.len()), ttl };
            ip.emit(&mut f[l3..]).expect("room for the IPv4 header");
            let mut p = Ipv4Packet::new_checked(&mut f[l3..]).expect("the header just written");
            if !v4.options.is_empty() {
                p.set_header_len(ipv4::HEADER_LEN + v4.options.len());
                p.options_mut().copy_from_slice(v4.options);
            }
            p.set_frag(v4.more_frags, v4.frag_offset);
            p.fill_checksum();
            l3 + ipv4::HEADER_LEN + v4.options.len()
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let ip = Ipv6Repr { src, dst, next_header: proto, payload_len: payload_len(0), hop_limit: ttl };
            ip.emit(&mut f[l3..]).expect("room for the IPv6 header");
            l3 + ipv6::HEADER_LEN
        }
        _ => panic!("mixed address families"),
    };
    f.truncate(at + l4.len());
    f[at..].copy_from_slice(l4);
    f
}

/// An ICMP (IPv4) or ICMPv6 message from `src` to `dst` in a frame from `src_mac` to
/// `dst_mac`: `ty`, `code`, the four bytes after the checksum (`rest`: an echo's identifier
/// and sequence, a next-hop MTU), then `body` (what an error quotes); TTL 64, checksum
/// computed over the whole message.
pub fn icmp(
    (src_mac, dst_mac): (EthernetAddress, EthernetAddress),
    src: IpAddr,
    dst: IpAddr,
    (ty, code): (u8, u8),
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut msg = vec![ty, code, 0, 0];
    msg.extend_from_slice(&rest);
    msg.extend_from_slice(body);
    let proto = if src.is_ipv4() { Protocol::ICMP } else { Protocol::ICMPV6 };
    let acc = if src.is_ipv4() { 0 } else { pseudo(src, dst, proto, msg.len()) };
    let c = finish(sum(acc, &msg));
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    ip_frame(L2 { src: src_mac, dst: dst_mac, vlan_tci: None }, src, dst, proto, 64, &msg, Ipv4Extras::default())
}

/// An ARP frame (padded to the Ethernet minimum).
pub fn arp(src: EthernetAddress, dst: EthernetAddress, vlan_tci: Option<u16>, a: &ArpRepr) -> Vec<u8> {
    let mut f = vec![0u8; 128];
    let n = build::arp(&mut f, L2 { src, dst, vlan_tci }, a).expect("room for an ARP frame");
    f.truncate(n);
    f
}

/// An IPv6 neighbour-discovery frame.
pub fn ndisc(
    (src_mac, dst_mac): (EthernetAddress, EthernetAddress),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    nd: &NdiscRepr,
) -> Vec<u8> {
    let mut f = vec![0u8; 128];
    let l2 = L2 { src: src_mac, dst: dst_mac, vlan_tci: None };
    let n = build::ndisc(&mut f, l2, src, dst, hop_limit, nd).expect("room for an NDP frame");
    f.truncate(n);
    f
}

/// A neighbour solicitation from the client for `target`, from `src` (`::` for duplicate
/// address detection, which carries no link-layer address), to the target's solicited-node
/// group.
pub fn solicit(src: Ipv6Addr, target: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    let dst = solicited_node(&target);
    let lladdr = (!src.is_unspecified()).then_some(CLIENT_MAC);
    let l2 = (CLIENT_MAC, EthernetAddress::ipv6_multicast(&dst));
    ndisc(l2, src, dst, hop_limit, &NdiscRepr::NeighborSolicit { target, lladdr })
}

/// A bare Ethernet header of `ethertype` from the client to us.
pub fn ethernet_header(ethertype: u16) -> Vec<u8> {
    let r = EthernetRepr { src: CLIENT_MAC, dst: OURS, vlan_tci: None, ethertype };
    let mut f = vec![0u8; r.header_len()];
    r.emit(&mut f).expect("room for the header");
    f
}

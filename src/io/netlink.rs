//! The kernel's routing and neighbour tables over rtnetlink: the route to a backend (what
//! `ip route get ADDR` asks: interface and gateway), the neighbour table (RTM_GETNEIGH dump),
//! a request to resolve an address it does not know yet (RTM_NEWNEIGH with NTF_USE, what
//! `ip neigh replace ADDR dev IF use` sends), and a watch on changes to both. xlb never
//! guesses a next hop or a MAC: it uses the kernel's.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::wire::EthernetAddress;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NTF_USE: u8 = 0x01;
const NUD_PERMANENT: u16 = 0x80;
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_FAILED: u16 = 0x20;
const NLMSG_HDR: usize = 16;
const NDMSG_LEN: usize = 12;

static SEQ: AtomicU32 = AtomicU32::new(1);

/// One entry of the neighbour table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// The address.
    pub addr: IpAddr,
    /// Its MAC, when known.
    pub mac: Option<EthernetAddress>,
    /// NUD state bits (REACHABLE 0x02, STALE 0x04, FAILED 0x20, ...).
    pub state: u16,
}

impl Neighbour {
    /// Whether the entry gives a MAC that can be used (not incomplete, not failed).
    pub fn usable(&self) -> bool {
        self.mac.is_some() && self.state & (NUD_INCOMPLETE | NUD_FAILED) == 0 && self.state != 0
    }
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is checked, then owned.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
    let len = u32::try_from(std::mem::size_of::<libc::timeval>()).unwrap_or(16);
    // SAFETY: passes a live timeval and its size to our own socket; a failure only leaves
    // receives without a timeout.
    unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), len)
    };
    Ok(fd)
}

fn header(buf: &mut Vec<u8>, ty: u16, flags: u16) -> u32 {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, filled in by finish()
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    seq
}

fn ndmsg(buf: &mut Vec<u8>, family: u8, ifindex: i32, state: u16, flags: u8) {
    buf.extend_from_slice(&[family, 0, 0, 0]);
    buf.extend_from_slice(&ifindex.to_ne_bytes());
    buf.extend_from_slice(&state.to_ne_bytes());
    buf.extend_from_slice(&[flags, 0]);
}

fn finish(buf: &mut [u8]) {
    let len = u32::try_from(buf.len()).unwrap_or(0);
    buf[..4].copy_from_slice(&len.to_ne_bytes());
}

fn send(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: sends from a live slice of the given length on our own socket (the kernel is
    // the default destination of an unbound netlink socket).
    let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: receives into a live buffer of the given length on our own socket.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_ne_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// Every neighbour entry of interface `ifindex`, both families.
pub fn neighbours(ifindex: u32) -> io::Result<Vec<Neighbour>> {
    let fd = socket()?;
    let mut msg = Vec::with_capacity(32);
    let seq = header(&mut msg, RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP);
    ndmsg(&mut msg, 0, 0, 0, 0);
    finish(&mut msg);
    send(&fd, &msg)?;
    let want_if = i32::try_from(ifindex).unwrap_or(-1);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(&fd, &mut buf)?;
        for m in messages(&buf[..n]) {
            let m = m?;
            if u32_at(m, 8) == seq {
                match u16_at(m, 4) {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let err = i32::from_ne_bytes(u32_at(m, NLMSG_HDR).to_ne_bytes());
                        return Err(io::Error::from_raw_os_error(-err));
                    }
                    RTM_NEWNEIGH => {
                        if let Some(nb) = parse_neigh(&m[NLMSG_HDR..], want_if) {
                            out.push(nb);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The netlink messages of a datagram, each whole (header included); an error for one cut
/// short, and nothing after it.
fn messages(buf: &[u8]) -> impl Iterator<Item = io::Result<&[u8]>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + NLMSG_HDR > buf.len() {
            return None;
        }
        let len = usize::try_from(u32_at(buf, at)).unwrap_or(0);
        if len < NLMSG_HDR || at + len > buf.len() {
            at = buf.len();
            return Some(Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message")));
        }
        let m = &buf[at..at + len];
        at += (len + 3) & !3;
        Some(Ok(m))
    })
}

fn parse_neigh(b: &[u8], want_if: i32) -> Option<Neighbour> {
    if b.len() < NDMSG_LEN {
        return None;
    }
    let family = i32::from(b[0]);
    let ifindex = i32::from_ne_bytes(u32_at(b, 4).to_ne_bytes());
    if ifindex != want_if {
        return None;
    }
    let state = u16_at(b, 8);
    let (mut addr, mut mac) = (None, None);
    let mut at = NDMSG_LEN;
    while at + 4 <= b.len() {
        let len = usize::from(u16_at(b, at));
        let ty = u16_at(b, at + 2);
        if len < 4 || at + len > b.len() {
            break;
        }
        let data = &b[at + 4..at + len];
        match ty {
            NDA_DST if family == libc::AF_INET && data.len() == 4 => {
                addr = Some(IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])));
            }
            NDA_DST if family == libc::AF_INET6 && data.len() == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(data);
                addr = Some(IpAddr::V6(Ipv6Addr::from(o)));
            }
            NDA_LLADDR => mac = EthernetAddress::from_bytes(data),
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Some(Neighbour { addr: addr?, mac, state })
}

/// Asks the kernel to resolve `addr` on `ifindex` (it sends the ARP request or neighbour
/// solicitation itself); the answer shows up in [`neighbours`].
pub fn solicit(ifindex: u32, addr: IpAddr) -> io::Result<()> {
    let fd = socket()?;
    let mut msg = Vec::with_capacity(48);
    let seq = header(&mut msg, RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (u8::try_from(libc::AF_INET).unwrap_or(2), a.octets().to_vec()),
        IpAddr::V6(a) => (u8::try_from(libc::AF_INET6).unwrap_or(10), a.octets().to_vec()),
    };
    ndmsg(&mut msg, family, i32::try_from(ifindex).unwrap_or(0), NUD_PERMANENT, NTF_USE);
    let alen = u16::try_from(4 + bytes.len()).unwrap_or(20);
    msg.extend_from_slice(&alen.to_ne_bytes());
    msg.extend_from_slice(&NDA_DST.to_ne_bytes());
    msg.extend_from_slice(&bytes);
    finish(&mut msg);
    send(&fd, &msg)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = recv(&fd, &mut buf)?;
        if n >= NLMSG_HDR + 4 && u16_at(&buf, 4) == NLMSG_ERROR && u32_at(&buf, 8) == seq {
            let err = i32::from_ne_bytes(u32_at(&buf, NLMSG_HDR).to_ne_bytes());
            return if err == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-err)) };
        }
    }
}

/// The kernel's route to an address, as far as xlb uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The interface it leaves through (0: none, for a local or unreachable route).
    pub oif: u32,
    /// The router it goes through; `None` on the segment.
    pub gateway: Option<IpAddr>,
    /// What kind of route the kernel found.
    pub kind: RouteKind,
}

/// The kinds of route that matter to a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Forwarded: through a gateway or on the segment.
    Unicast,
    /// One of this host's own addresses.
    Local,
    /// Blackhole, unreachable, prohibit, throw: the kernel drops it.
    Refused,
}

/// The route the kernel takes to `addr` (RTM_GETROUTE, one lookup, not a dump). A missing
/// route is an error: `ENETUNREACH` or `EHOSTUNREACH`.
pub fn route_to(addr: IpAddr) -> io::Result<Route> {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST as REQUEST};
    use netlink_packet_route::{
        route::{RouteAttribute, RouteMessage, RouteType},
        AddressFamily, RouteNetlinkMessage,
    };
    let mut rm = RouteMessage::default();
    rm.header.address_family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    rm.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
    rm.attributes.push(RouteAttribute::Destination(addr.into()));
    let mut hdr = NetlinkHeader::default();
    hdr.flags = REQUEST;
    hdr.sequence_number = SEQ.fetch_add(1, Ordering::Relaxed);
    let seq = hdr.sequence_number;
    let mut msg = NetlinkMessage::new(hdr, NetlinkPayload::from(RouteNetlinkMessage::GetRoute(rm)));
    msg.finalize();
    let mut out = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut out);
    let fd = socket()?;
    send(&fd, &out)?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = recv(&fd, &mut buf)?;
        for one in messages(&buf[..n]) {
            let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(one?) else { continue };
            if m.header.sequence_number != seq {
                continue;
            }
            match m.payload {
                NetlinkPayload::Error(e) => {
                    return Err(e.code.map_or_else(
                        || io::Error::other("empty answer to a route lookup"),
                        |c| io::Error::from_raw_os_error(-c.get()),
                    ));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                    let mut route = Route {
                        oif: 0,
                        gateway: None,
                        kind: match r.header.kind {
                            RouteType::Unicast => RouteKind::Unicast,
                            RouteType::Local | RouteType::Broadcast | RouteType::Anycast => RouteKind::Local,
                            _ => RouteKind::Refused,
                        },
                    };
                    for a in r.attributes {
                        match a {
                            RouteAttribute::Oif(i) => route.oif = i,
                            RouteAttribute::Gateway(g) => route.gateway = route_address(&g),
                            RouteAttribute::Via(v) => {
                                route.gateway = match v {
                                    netlink_packet_route::route::RouteVia::Inet(a) => Some(IpAddr::V4(a)),
                                    netlink_packet_route::route::RouteVia::Inet6(a) => Some(IpAddr::V6(a)),
                                    _ => None,
                                };
                            }
                            _ => {}
                        }
                    }
                    return Ok(route);
                }
                _ => {}
            }
        }
    }
}

fn route_address(a: &netlink_packet_route::route::RouteAddress) -> Option<IpAddr> {
    use netlink_packet_route::route::RouteAddress;
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Multicast groups (the RTMGRP_* bits) of neighbour and route changes, both families.
const WATCHED_GROUPS: u32 = 0x4 /* NEIGH */ | 0x40 /* IPV4_ROUTE */ | 0x400 /* IPV6_ROUTE */;

/// Calls `changed` each time the kernel's routes or neighbours change (once per batch of
/// notifications read), on a thread of its own, until `changed` returns false.
pub fn watch_changes(mut changed: impl FnMut() -> bool + Send + 'static) -> io::Result<()> {
    let fd = socket()?;
    // SAFETY: a zeroed sockaddr_nl is a valid value; the fields set are plain integers.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = u16::try_from(libc::AF_NETLINK).unwrap_or(16);
    sa.nl_groups = WATCHED_GROUPS;
    let len = u32::try_from(std::mem::size_of::<libc::sockaddr_nl>()).unwrap_or(12);
    // SAFETY: binds our own socket to a live sockaddr_nl of the given size.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_nl).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    std::thread::Builder::new().name("xlb-route-watch".into()).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv(&fd, &mut buf) {
                // A batch: one call, whatever it held.
                Ok(_) => {
                    if !changed() {
                        return;
                    }
                }
                // The receive timeout (nothing changed) or an overrun (ENOBUFS: changes
                // were lost, so say something changed).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => {
                    // Never a busy loop on an error that stays.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if !changed() {
                        return;
                    }
                }
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_splits_into_aligned_messages_and_a_cut_one_is_an_error() {
        let msg = |len: u32| {
            let mut m = len.to_ne_bytes().to_vec();
            m.resize(usize::try_from(len).unwrap_or(0), 0);
            m.resize((m.len() + 3) & !3, 0);
            m
        };
        let mut buf = msg(18);
        buf.extend(msg(16));
        let lens: Vec<usize> = messages(&buf).map(|m| m.map(<[u8]>::len).unwrap_or(0)).collect();
        assert_eq!(lens, [18, 16], "the second starts after the first's padding");
        let mut cut = msg(40);
        cut.truncate(24);
        let got: Vec<io::Result<&[u8]>> = messages(&cut).collect();
        assert!(got.len() == 1 && got[0].is_err(), "one error, then nothing");
    }

    #[test]
    fn the_route_to_loopback_is_local() {
        // Looks the route up; sends nothing anywhere.
        let r = route_to(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("the kernel answers a route lookup");
        assert_eq!(r.kind, RouteKind::Local, "{r:?}");
        assert_eq!(r.gateway, None);
    }
}

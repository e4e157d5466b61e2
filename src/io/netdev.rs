//! What xlb needs to know about a network interface: its index, MAC and queue count.

use std::{ffi::CString, fs, path::Path};

use crate::wire::EthernetAddress;

/// A network interface xlb runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDev {
    /// Name, as given by the user.
    pub name: String,
    /// Kernel interface index.
    pub ifindex: u32,
    /// MAC address.
    pub mac: EthernetAddress,
    /// Number of receive queues (each gets an AF_XDP socket and a worker).
    pub rx_queues: u32,
}

/// Why an interface cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetDevError {
    /// No interface has this name in this network namespace.
    #[error("interface {0:?} not found (list them with `ip link`)")]
    NotFound(String),
    /// The interface has no Ethernet MAC (a tunnel or loopback).
    #[error("interface {0:?} has no Ethernet MAC address; xlb needs an Ethernet interface")]
    NoMac(String),
}

impl NetDev {
    /// Looks an interface up by name.
    pub fn by_name(name: &str) -> Result<Self, NetDevError> {
        let ifindex = ifindex(name).ok_or_else(|| NetDevError::NotFound(name.to_string()))?;
        let sys = Path::new("/sys/class/net").join(name);
        let mac = fs::read_to_string(sys.join("address"))
            .ok()
            .and_then(|s| s.trim().parse::<EthernetAddress>().ok())
            .filter(EthernetAddress::is_unicast)
            .ok_or_else(|| NetDevError::NoMac(name.to_string()))?;
        Ok(NetDev { name: name.to_string(), ifindex, mac, rx_queues: rx_queues(name).unwrap_or(1) })
    }
}

/// The receive queues of interface `name` (at least 1), if it exists.
pub fn rx_queues(name: &str) -> Option<u32> {
    ifindex(name)?;
    let rx = fs::read_dir(Path::new("/sys/class/net").join(name).join("queues"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(1);
    Some(u32::try_from(rx.max(1)).unwrap_or(1))
}

/// The index of interface `name`, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call, and
    // if_nametoindex only reads it.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Every address configured on interface `name` (getifaddrs).
pub fn addresses(name: &str) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            out.push(std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
        } else if family == libc::AF_INET6 {
            // SAFETY: family AF_INET6 means the sockaddr is a sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            out.push(std::net::IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
        }
    }
    // SAFETY: frees the list getifaddrs allocated, once; no reference into it survives.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Membership of an IPv6 multicast group on an interface, held while this lives. xlb joins
/// each v6 VIP's solicited-node group so that the NIC's multicast filter (and MLD-snooping
/// switches) let neighbour solicitations for the VIP through.
#[derive(Debug)]
pub struct Membership {
    _fd: std::os::fd::OwnedFd,
}

impl Membership {
    /// Joins `group` on `ifindex`.
    pub fn join(ifindex: u32, group: std::net::Ipv6Addr) -> std::io::Result<Self> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: plain socket(2); the descriptor is checked, then owned.
        let raw = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mreq =
            libc::ipv6_mreq { ipv6mr_multiaddr: libc::in6_addr { s6_addr: group.octets() }, ipv6mr_interface: ifindex };
        let len = u32::try_from(std::mem::size_of::<libc::ipv6_mreq>()).unwrap_or(20);
        // SAFETY: passes a live ipv6_mreq and its size to our own socket.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_ADD_MEMBERSHIP,
                (&mreq as *const libc::ipv6_mreq).cast(),
                len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Membership { _fd: fd })
    }
}

/// The name of interface `ifindex` in this network namespace, if it exists.
pub fn name_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes (NUL included) into `buf`.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

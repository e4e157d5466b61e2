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
        let rx_queues = fs::read_dir(sys.join("queues"))
            .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
            .unwrap_or(1);
        let rx_queues = u32::try_from(rx_queues.max(1)).unwrap_or(1);
        Ok(NetDev { name: name.to_string(), ifindex, mac, rx_queues })
    }
}

/// The index of interface `name`, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call, and
    // if_nametoindex only reads it.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

//! A raw AF_PACKET socket bound to one interface, optionally inside a named network
//! namespace: the lab tests' client and their source of crafted frames. Not used by the
//! datapath.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

/// Moves the calling thread into network namespace `netns` (as named by `ip netns`), for
/// the rest of its life. Tests and tools use it from a thread of their own.
pub fn enter_netns(netns: &str) -> io::Result<()> {
    let path = format!("/var/run/netns/{netns}");
    let nsfile = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    // SAFETY: setns takes a descriptor we own (open for the call) and a flag.
    if unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A raw socket that sends and receives whole Ethernet frames.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

const ETH_P_ALL: u16 = 0x0003;

impl PacketSocket {
    /// Opens a socket on `ifname` inside network namespace `netns` (as named by `ip netns`),
    /// or in the current namespace when `netns` is `None`. The socket stays in that
    /// namespace for its whole life; the calling thread's namespace is not changed.
    pub fn open(netns: Option<&str>, ifname: &str) -> io::Result<Self> {
        let Some(ns) = netns else { return Self::open_here(ifname) };
        let (ns, ifname) = (ns.to_string(), ifname.to_string());
        // setns() changes the calling thread only, so a short-lived thread enters the
        // namespace, opens the socket and hands it back.
        std::thread::spawn(move || {
            enter_netns(&ns)?;
            Self::open_here(&ifname)
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
    }

    fn open_here(ifname: &str) -> io::Result<Self> {
        let name = CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: if_nametoindex reads a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("interface {ifname:?} not found")));
        }
        let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        // SAFETY: plain socket(2) call; the descriptor is checked and then owned.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(ETH_P_ALL.to_be())) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex;
        let len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(20);
        // SAFETY: binds our socket to a live sockaddr_ll whose size is passed.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sends from a live slice of the given length on our socket.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one frame into `buf` within `timeout`; `Ok(None)` on timeout. Frames this
    /// socket itself sent are skipped.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: polls one live pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            if rc == 0 {
                return Ok(None);
            }
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut fromlen = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(20);
            // SAFETY: receives into a live buffer of the given length and a live sockaddr
            // whose size is passed and updated by the kernel.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut fromlen,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    continue;
                }
                return Err(e);
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(usize::try_from(n).unwrap_or(0)));
        }
    }

    /// Sets the receive buffer to `bytes`, beyond the system limit where the caller has
    /// CAP_NET_ADMIN (SO_RCVBUFFORCE), so that floods of replies are not lost here.
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        let v = i32::try_from(bytes).unwrap_or(i32::MAX);
        let len = u32::try_from(std::mem::size_of::<i32>()).unwrap_or(4);
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: passes a live i32 and its size to setsockopt on our own socket.
            let rc =
                unsafe { libc::setsockopt(self.fd.as_raw_fd(), libc::SOL_SOCKET, opt, (&v as *const i32).cast(), len) };
            if rc == 0 {
                return Ok(());
            }
        }
        Err(io::Error::last_os_error())
    }
}

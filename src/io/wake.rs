//! An eventfd that lets the control thread wake a worker sleeping in poll(), and the
//! poll() over (AF_XDP socket, eventfd) that the worker sleeps in.

use std::{io, os::fd::RawFd};

/// A wake-up channel: any number of `notify`, one waiter.
#[derive(Debug)]
pub struct Waker {
    fd: RawFd,
}

impl Waker {
    /// A new eventfd (non-blocking, close-on-exec).
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the returned descriptor is checked below and
        // owned by the Waker from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker { fd })
    }

    /// Wakes the waiter (or makes its next sleep return at once).
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd; an error (counter
        // saturated) means a wake-up is already pending, which is all we want.
        let _ = unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
    }

    /// Clears pending wake-ups.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own non-blocking eventfd.
        let _ = unsafe { libc::read(self.fd, (&mut v as *mut u64).cast(), 8) };
    }

    /// Sleeps until `sock` is readable, the waker is notified, or `timeout_ms` passes.
    /// Returns whether the socket is readable.
    pub fn sleep(&self, sock: RawFd, timeout_ms: i32) -> bool {
        let mut fds = [
            libc::pollfd { fd: sock, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a live array of two pollfd structs, and its length is passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if fds[1].revents != 0 {
            self.drain();
        }
        n > 0 && fds[0].revents & libc::POLLIN != 0
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.fd) };
    }
}

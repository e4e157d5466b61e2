//! Child processes that die with the thread that started them (the routing daemon xlb
//! runs): a crashed or killed xlb leaves nothing behind that still speaks for it.

use std::{
    io,
    os::unix::process::CommandExt,
    process::{Child, Command},
};

/// Starts `cmd` so that the kernel sends it SIGKILL when the calling thread ends (a crash
/// and `kill -9` of xlb included). The thread must live as long as the child should.
pub fn spawn_tied(cmd: &mut Command) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: prctl and getppid are system calls that take no
    // lock and allocate nothing, and the errors are built from numbers (errno, ESRCH)
    // without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // xlb may have died between the fork and the prctl: then nobody would kill us.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

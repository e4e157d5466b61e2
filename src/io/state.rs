//! State that outlives an xlb process: the flow tables and the SNAT reverse table live in
//! files of a state directory (on tmpfs: `/run` on most hosts), mapped shared, so that the
//! next xlb on the interface (a restart, `kill -9`, an upgrade of the DaemonSet) finds
//! every flow on its backend and every SNAT flow on its port, as the last one left them.
//!
//! - One xlb at a time: the directory's `lock` file is held (flock) for the life of the
//!   process; the kernel lets go of it when the process dies, however it dies. A new xlb
//!   waits for it, so it never binds queues or writes tables the old one still uses.
//! - A handover: a successor (`xlb run --takeover`, the new pod of a DaemonSet upgrade)
//!   that finds the lock held asks the holder, on the directory's `handover` socket, to let
//!   go. The holder stops its workers, releases the lock and answers `released`; it keeps
//!   the node's VIPs and membership for the successor rather than leaving (see
//!   `daemon::run`). A holder that takes no requests (an older xlb) is waited for instead.
//! - Each file starts with a header page: a magic, the layout of the slots it holds (sizes
//!   and field offsets: another build with another layout starts afresh), the number of
//!   slots and the set-up they were made for (an SNAT table's addresses and ports, the
//!   number of workers). A file whose header does not match is emptied and started over,
//!   and xlb says so.
//! - The slots follow, mapped `MAP_SHARED | MAP_POPULATE`: a new file is zero-filled by
//!   the kernel (an empty slot), an adopted one is mapped in place, without a copy.
//! - The mappings are never unmapped: they live as long as the process, as the tables do.
//!
//! Every slot type is checked here before it is handed to `lb` ([`Persist`]): a process
//! killed mid-write leaves each byte of a slot either old or new, which for these types is
//! always a valid value, but a byte that was never written by xlb (a damaged file) is not
//! trusted.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, Read, Write},
    os::{
        fd::AsRawFd,
        unix::{
            fs::OpenOptionsExt,
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    sync::atomic::AtomicU64,
    time::{Duration, Instant},
};

use crate::lb::{
    conntrack::{Entry, FlowState},
    snat::Slot,
    store::Store,
};

/// Bumped when the meaning of a slot's bytes changes without its layout changing.
const VERSION: u64 = 1;
const MAGIC: [u8; 8] = *b"XLBSTATE";
/// The header page in front of the slots.
const HEADER: usize = 4096;
/// Most words of set-up a header records.
const MAX_PARAMS: usize = 64;
/// The holder's socket for handover requests, in the state directory.
const HANDOVER_SOCKET: &str = "handover";
/// Longest handover request or answer line.
const HANDOVER_LINE: u64 = 256;

/// A slot type that may live in a state file.
///
/// # Safety
/// All-zero bytes must be a valid value, and [`Persist::repair`] must leave only valid
/// values: every byte pattern it accepts is a valid `Self`.
pub unsafe trait Persist: Sized + 'static {
    /// The layout, as a number that changes when it changes.
    fn layout() -> u64;
    /// Makes the bytes of one slot valid (zeroing it if they are not); whether they were.
    fn repair(raw: &mut [u8]) -> bool;
}

/// FNV-1a over words: a fingerprint, not a defence.
fn fingerprint(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

// SAFETY: an Entry is integers, byte arrays, a `FlowState` (one byte, 0 to 6) and an
// `Option<Lease>` (a byte and a u16 whose 0 is `None`): every byte pattern is valid except
// a state byte over 6, which `repair` zeroes (an empty slot). All zeros is an empty slot.
unsafe impl Persist for Entry {
    fn layout() -> u64 {
        use crate::lb::conntrack::FlowKey;
        use std::mem::{align_of, offset_of, size_of};
        fingerprint(&[
            VERSION,
            offset_of!(FlowKey, src) as u64,
            offset_of!(FlowKey, dst) as u64,
            offset_of!(FlowKey, src_port) as u64,
            offset_of!(FlowKey, dst_port) as u64,
            offset_of!(FlowKey, proto) as u64,
            size_of::<Entry>() as u64,
            align_of::<Entry>() as u64,
            offset_of!(Entry, key) as u64,
            offset_of!(Entry, expires) as u64,
            offset_of!(Entry, hint) as u64,
            offset_of!(Entry, backend_key) as u64,
            offset_of!(Entry, state) as u64,
            offset_of!(Entry, snat) as u64,
            FlowState::Affinity as u64,
        ])
    }

    fn repair(raw: &mut [u8]) -> bool {
        let at = std::mem::offset_of!(Entry, state);
        if raw.get(at).is_some_and(|s| *s <= FlowState::Affinity as u8) {
            return true;
        }
        raw.fill(0);
        false
    }
}

// SAFETY: a Slot is atomics (any bits) and an AtomicBool written only as 0 or 1; `repair`
// zeroes a slot whose flag byte is anything else. All zeros is a free slot.
unsafe impl Persist for Slot {
    fn layout() -> u64 {
        fingerprint(&[
            VERSION,
            std::mem::size_of::<Slot>() as u64,
            std::mem::align_of::<Slot>() as u64,
            crate::lb::snat::SLOT_FLAG_AT as u64,
        ])
    }

    fn repair(raw: &mut [u8]) -> bool {
        if raw.get(crate::lb::snat::SLOT_FLAG_AT).is_some_and(|b| *b <= 1) {
            return true;
        }
        raw.fill(0);
        false
    }
}

// SAFETY: any 8 bytes are a valid AtomicU64.
unsafe impl Persist for AtomicU64 {
    fn layout() -> u64 {
        fingerprint(&[VERSION, 8, 0x41])
    }

    fn repair(_: &mut [u8]) -> bool {
        true
    }
}

/// A state directory, held: no other xlb uses it while this value lives.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    /// The held lock (released when the process exits, or dies).
    _lock: File,
    /// Whether the directory is on tmpfs (else the tables are written back to a disk).
    pub tmpfs: bool,
}

/// What [`StateDir::table`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No file, or one made for another layout or set-up: started empty.
    Fresh,
    /// The previous xlb's table, taken over.
    Adopted {
        /// Slots whose bytes were not valid, emptied.
        repaired: usize,
    },
}

impl StateDir {
    /// Creates (mode 0700) and locks `dir`, waiting up to `wait` for another xlb that holds
    /// it to exit; with `takeover`, the holder is first asked to hand over (and the wait is
    /// for it to let go, not to exit).
    pub fn open(dir: &Path, wait: Duration, takeover: bool) -> io::Result<StateDir> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let path = dir.join("lock");
        let lock = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path)?;
        let end = Instant::now() + wait;
        let mut told = false;
        loop {
            // SAFETY: flock(2) on a descriptor this function owns; no memory is passed.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(e);
            }
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            if Instant::now() >= end {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is held by another xlb (pid {}) after {wait:?}: stop it, or give this one another --state-dir",
                        dir.display(),
                        holder.trim()
                    ),
                ));
            }
            if !told {
                told = true;
                if takeover {
                    ask_to_hand_over(dir, holder.trim(), end)?;
                    continue;
                }
                tracing::info!(dir = %dir.display(), pid = holder.trim(), "waiting for the previous xlb to let go of the state directory");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        lock.set_len(0)?;
        std::io::Write::write_all(&mut &lock, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(StateDir { dir: dir.to_path_buf(), _lock: lock, tmpfs: on_tmpfs(dir) })
    }

    /// Takes handover requests from a successor on the directory's `handover` socket: the
    /// first well-formed one goes to `to`, answered once this directory is released
    /// ([`Successor::released`]); the listener then stops (one handover per process).
    pub fn listen_for_successor(&self, to: crossbeam_channel::Sender<Successor>) -> io::Result<()> {
        let path = self.dir.join(HANDOVER_SOCKET);
        // A socket left by a holder that died: this process holds the lock, so it is stale.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        std::thread::Builder::new().name("xlb-handover".into()).spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                match Successor::read(stream) {
                    Ok(s) => {
                        // Sent once; a second request while the first is served finds the
                        // listener gone, and waits on the lock.
                        let _ = to.send(s);
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "a malformed handover request, ignored"),
                }
            }
        })?;
        Ok(())
    }

    /// The table `name` of `len` slots of `T`, made for the set-up `params` (at most 64
    /// words): the previous xlb's if it matches, else an empty one. Mapped for the rest of
    /// the process.
    pub fn table<T: Persist>(&self, name: &str, len: usize, params: &[u64]) -> io::Result<(Store<T>, Found)> {
        if params.len() > MAX_PARAMS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many set-up words for a state header"));
        }
        let size = std::mem::size_of::<T>();
        let bytes = len.checked_mul(size).and_then(|b| b.checked_add(HEADER)).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("a table of {len} slots does not fit in memory"))
        })?;
        let path = self.dir.join(name);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path)?;
        let header = header::<T>(len, params);
        let mut existing = [0u8; HEADER];
        let same = file.metadata()?.len() == bytes as u64
            && std::os::unix::fs::FileExt::read_exact_at(&file, &mut existing, 0).is_ok()
            && existing == header;
        if !same {
            // Emptied, then sized: the kernel fills the new file with zeros (empty slots).
            file.set_len(0)?;
            file.set_len(bytes as u64)?;
            std::os::unix::fs::FileExt::write_all_at(&file, &header, 0)?;
        }
        // SAFETY: a new shared mapping of `bytes` bytes of a file this function opened and
        // sized; the result is checked. It is never unmapped (the tables live as long as
        // the process), and no other mapping of it exists in this process; another
        // process cannot map it while this one holds the directory's lock, and a holder
        // lets go of it only once every writer of its tables has stopped (a handover).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping is `bytes` = HEADER + len x size long, readable and writable,
        // and exclusively ours (above); the slots start at a page boundary, which meets
        // any alignment of T up to 4096 (checked).
        let raw: &'static mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>().add(HEADER), len * size) };
        assert!(std::mem::align_of::<T>() <= HEADER, "slots aligned past a page");
        let mut repaired = 0;
        if same {
            for slot in raw.chunks_exact_mut(size) {
                if !T::repair(slot) {
                    repaired += 1;
                }
            }
        }
        // SAFETY: every slot's bytes are a valid T: zeros in a new file, or bytes written
        // by an xlb of this layout and passed through `T::repair` (the trait's contract).
        // The memory is aligned for T (above) and lives for the rest of the process.
        let slots: &'static mut [T] = unsafe { std::slice::from_raw_parts_mut(raw.as_mut_ptr().cast::<T>(), len) };
        let found = if same { Found::Adopted { repaired } } else { Found::Fresh };
        Ok((Store::Kept(slots), found))
    }
}

/// A successor that asked this xlb to hand over (see the module's doc).
#[derive(Debug)]
pub struct Successor {
    stream: UnixStream,
    /// Who it is, as it said (its pid and version).
    pub who: String,
}

impl Successor {
    /// Reads one request line: `handover WHO`, within 2 s.
    fn read(stream: UnixStream) -> io::Result<Successor> {
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        io::BufReader::new((&stream).take(HANDOVER_LINE)).read_line(&mut line)?;
        let who = line.trim().strip_prefix("handover ").ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("expected `handover WHO`, got {:?}", line.trim()))
        })?;
        Ok(Successor { who: who.to_string(), stream })
    }

    /// Tells the successor that the lock is let go: it takes the directory over at once.
    pub fn released(mut self) {
        if let Err(e) = self.stream.write_all(b"released\n") {
            tracing::warn!(error = %e, successor = %self.who, "telling the successor that the state is released failed; it finds the lock free on its own");
        }
    }
}

/// Asks the holder of `dir` (pid `holder`) to hand over, and waits until `end` for its
/// answer. A holder that takes no requests (an older xlb) is waited for as before.
fn ask_to_hand_over(dir: &Path, holder: &str, end: Instant) -> io::Result<()> {
    let path = dir.join(HANDOVER_SOCKET);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), pid = holder, error = %e, "the xlb holding the state directory takes no handover requests (an older version?): waiting for it to exit");
            return Ok(());
        }
    };
    tracing::info!(dir = %dir.display(), pid = holder, "asking the running xlb to hand over");
    let t0 = Instant::now();
    writeln!(stream, "handover pid {} xlb {}", std::process::id(), env!("CARGO_PKG_VERSION"))?;
    stream.set_read_timeout(Some(end.saturating_duration_since(t0).max(Duration::from_millis(1))))?;
    let mut answer = String::new();
    io::BufReader::new((&stream).take(HANDOVER_LINE)).read_line(&mut answer)?;
    if answer.trim() == "released" {
        tracing::info!(took_ms = t0.elapsed().as_millis(), "the previous xlb handed over");
    } else {
        // It was stopping anyway (its SIGTERM came first): it leaves, and its lock goes
        // with it.
        tracing::warn!(
            pid = holder,
            answer = answer.trim(),
            "the running xlb stopped without handing over: waiting for it to exit"
        );
    }
    Ok(())
}

/// The header page of a table of `len` slots of `T` for the set-up `params`.
fn header<T: Persist>(len: usize, params: &[u64]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&MAGIC);
    let words = [T::layout(), len as u64, params.len() as u64].into_iter().chain(params.iter().copied());
    for (i, w) in words.enumerate() {
        h[8 + i * 8..16 + i * 8].copy_from_slice(&w.to_le_bytes());
    }
    h
}

/// Whether `dir` is on tmpfs (statfs).
fn on_tmpfs(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs(2) with a NUL-terminated path and a zeroed struct it fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the pointers are valid for the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type == libc::TMPFS_MAGIC
}

/// Words that name a set-up of addresses (for a header): a fingerprint of them.
pub fn addresses_word(addrs: &[std::net::IpAddr]) -> u64 {
    let words: Vec<u64> = addrs
        .iter()
        .flat_map(|a| {
            let o = crate::lb::rewrite::to16(*a);
            let (hi, lo) = o.split_at(8);
            [
                u64::from_le_bytes(hi.try_into().unwrap_or_default()),
                u64::from_le_bytes(lo.try_into().unwrap_or_default()),
            ]
        })
        .collect();
    fingerprint(&words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::conntrack::Hint;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xlb-state-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_flow_table_of_the_previous_build_is_still_adopted() {
        // The fingerprint of the flow-table slot, as builds since 88bd9f9 (64-byte entries)
        // wrote it, and the offsets it was made of. A change here makes every running xlb's
        // state file unusable to the next one: an upgrade would lose its flows. The four
        // bytes at offset 16 were the backend index alone; they now hold the service and
        // backend hints (`conntrack::Hint`), which read an old value as hints to be checked.
        use std::mem::offset_of;
        let offsets = [
            offset_of!(Entry, key),
            offset_of!(Entry, expires),
            offset_of!(Entry, hint),
            offset_of!(Entry, backend_key),
            offset_of!(Entry, state),
            offset_of!(Entry, snat),
        ];
        assert_eq!(offsets, [24, 0, 16, 8, 62, 20]);
        assert_eq!(<Entry as Persist>::layout(), 15_047_225_087_696_515_966);
    }

    #[test]
    fn a_table_is_found_again_by_the_next_holder_only_with_the_same_set_up() {
        let d = dir("again");
        {
            let s = StateDir::open(&d, Duration::ZERO, false).unwrap();
            let (mut t, found) = s.table::<Entry>("ct", 32, &[7]).unwrap();
            assert_eq!(found, Found::Fresh);
            assert!(t.iter().all(|e| *e == Entry::default()), "a new table is empty");
            t[3].hint = Hint::new(3, 42);
            t[3].state = FlowState::Established;
            // Another holder is refused while this one lives.
            let e = StateDir::open(&d, Duration::from_millis(20), false).unwrap_err();
            assert!(e.to_string().contains("held by another xlb"), "{e}");
        }
        let s = StateDir::open(&d, Duration::ZERO, false).unwrap();
        let (t, found) = s.table::<Entry>("ct", 32, &[7]).unwrap();
        assert_eq!(found, Found::Adopted { repaired: 0 });
        assert_eq!((t[3].hint.backend(), t[3].state), (42, FlowState::Established));
        // Another set-up, or another size: started over.
        let (t, found) = s.table::<Entry>("ct", 32, &[8]).unwrap();
        assert_eq!(found, Found::Fresh);
        assert_eq!(t[3], Entry::default());
        let (_, found) = s.table::<Entry>("ct", 64, &[8]).unwrap();
        assert_eq!(found, Found::Fresh);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_successor_asks_the_holder_to_hand_over_and_takes_the_tables() {
        let d = dir("handover");
        let holder = StateDir::open(&d, Duration::ZERO, false).unwrap();
        let (mut t, _) = holder.table::<Entry>("ct", 8, &[]).unwrap();
        t[5].state = FlowState::Udp;
        let (tx, rx) = crossbeam_channel::bounded(1);
        holder.listen_for_successor(tx).unwrap();
        // A malformed request is ignored; the listener still takes the real one.
        let mut junk = UnixStream::connect(d.join(HANDOVER_SOCKET)).unwrap();
        junk.write_all(b"hello\n").unwrap();
        let succ = {
            let d = d.clone();
            std::thread::spawn(move || StateDir::open(&d, Duration::from_secs(10), true))
        };
        let s = rx.recv_timeout(Duration::from_secs(10)).expect("no handover request");
        assert!(s.who.starts_with("pid "), "{}", s.who);
        drop(holder);
        s.released();
        let next = succ.join().unwrap().unwrap();
        let (t, found) = next.table::<Entry>("ct", 8, &[]).unwrap();
        assert_eq!((found, t[5].state), (Found::Adopted { repaired: 0 }, FlowState::Udp));
        // Without --takeover a successor only waits, and says who holds the directory.
        let e = StateDir::open(&d, Duration::from_millis(20), false).unwrap_err();
        assert!(e.to_string().contains("held by another xlb"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bytes_xlb_never_writes_are_emptied_not_trusted() {
        let d = dir("repair");
        {
            let s = StateDir::open(&d, Duration::ZERO, false).unwrap();
            let (mut t, _) = s.table::<Entry>("ct", 16, &[]).unwrap();
            t[1].state = FlowState::Udp;
            t[2].state = FlowState::Udp;
        }
        // Damage slot 2's state byte in the file.
        let at = (HEADER + 2 * std::mem::size_of::<Entry>() + std::mem::offset_of!(Entry, state)) as u64;
        let f = OpenOptions::new().write(true).open(d.join("ct")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[200], at).unwrap();
        let s = StateDir::open(&d, Duration::ZERO, false).unwrap();
        let (t, found) = s.table::<Entry>("ct", 16, &[]).unwrap();
        assert_eq!(found, Found::Adopted { repaired: 1 });
        assert_eq!((t[1].state, t[2].state), (FlowState::Udp, FlowState::Empty));
        let _ = std::fs::remove_dir_all(&d);
    }
}

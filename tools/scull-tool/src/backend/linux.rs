//! The Linux target: `/dev/scull*` of the scull.ko module (`linux`, or `qemu`
//! when run in the QEMU guest).
//!
//! - `Who::Me` is this process. `Who::Other` is a forked helper process that
//!   made itself a session leader with its own pseudo-terminal as controlling
//!   tty (so scullpriv sees another key), then switched to uid/gid 1001 (which
//!   drops every capability). The helper opens the device and performs each
//!   operation on request over a socketpair, so the kernel sees the second
//!   uid for open, ioctl's `capable()` and everything else.
//! - `spawn_writer` uses the same helper without the uid switch: the writer
//!   is another process, as LDD3's "a reader woken by a writer" demands.
//! - `read_cancellable` blocks a thread in read(2) and interrupts it with
//!   SIGUSR1 (installed without SA_RESTART): the read fails with EINTR.

use super::{Caps, Handle, Join, OpenOpts, Pending, Ready, Target, Who};
use crate::conformance::Case;
use scull_core::devices::Dev;
use scull_core::ioctl::{ArgIn, ArgOut, Cmd, LINUX_STATS_SIZE};
use scull_core::store::Whence;
use scull_core::Error;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The second user's uid and gid.
pub const OTHER_UID: u32 = 1001;

fn errno() -> Error {
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    Error::from_errno(e).unwrap_or(Error::Invalid)
}

fn path(dev: Dev) -> CString {
    let mut s = String::from("/dev/");
    let _ = dev.linux_name(&mut s);
    CString::new(s).expect("no NUL in device names")
}

fn oflags(o: OpenOpts) -> i32 {
    let mut f = match (o.read, o.write) {
        (true, true) => libc::O_RDWR,
        (false, true) => libc::O_WRONLY,
        _ => libc::O_RDONLY,
    };
    if o.nonblock {
        f |= libc::O_NONBLOCK;
    }
    if o.truncate {
        f |= libc::O_TRUNC;
    }
    f | libc::O_CLOEXEC
}

fn sys_open(dev: Dev, o: OpenOpts) -> Result<OwnedFd, Error> {
    let p = path(dev);
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe { libc::open(p.as_ptr(), oflags(o)) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The operations, on a raw fd, shared by the local handle and the helper.
mod ops {
    use super::*;

    pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Error> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(errno())
        } else {
            Ok(n as usize)
        }
    }

    pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Error> {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(errno())
        } else {
            Ok(n as usize)
        }
    }

    pub fn seek(fd: i32, whence: Whence, off: i64) -> Result<u64, Error> {
        // SAFETY: plain syscall on an fd.
        let r = unsafe { libc::lseek(fd, off, whence as i32) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(r as u64)
        }
    }

    pub fn set_len(fd: i32, len: u64) -> Result<(), Error> {
        // SAFETY: plain syscall on an fd.
        let r = unsafe { libc::ftruncate(fd, len as i64) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }

    pub fn ioctl(fd: i32, cmd: Cmd, value: i32) -> Result<i32, Error> {
        let code = cmd.linux_code() as libc::c_ulong;
        let mut v = value;
        // SAFETY: the argument is a value, or a pointer to a live i32 for pointer commands;
        // STATS goes through `ioctl_raw` with a big enough buffer.
        let r = unsafe {
            match (cmd.arg_in(), cmd.arg_out()) {
                (ArgIn::Pointer, _) | (_, ArgOut::Pointer) => libc::ioctl(fd, code as _, &mut v as *mut i32),
                (ArgIn::Value, _) => libc::ioctl(fd, code as _, value as libc::c_ulong),
                (_, ArgOut::Text) => return ioctl_raw(fd, code as u32, &[], LINUX_STATS_SIZE as usize).map(|_| 0),
                _ => libc::ioctl(fd, code as _, 0 as libc::c_ulong),
            }
        };
        if r < 0 {
            return Err(errno());
        }
        Ok(match cmd.arg_out() {
            ArgOut::Pointer => v,
            ArgOut::Return => r,
            _ => 0,
        })
    }

    /// Any code with a buffer holding `input`, at least `out_len` bytes, and
    /// never less than the largest scull transfer (STATS writes up to
    /// LINUX_STATS_SIZE whatever the caller asked for). Returns the return
    /// value's 4 bytes, then `out_len` bytes of the buffer.
    pub fn ioctl_raw(fd: i32, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; input.len().max(out_len).max(LINUX_STATS_SIZE as usize)];
        buf[..input.len()].copy_from_slice(input);
        // SAFETY: `buf` is valid for the sizes any scull command reads or writes (4 bytes, or
        // LINUX_STATS_SIZE for STATS).
        let r = unsafe { libc::ioctl(fd, code as _, buf.as_mut_ptr()) };
        if r < 0 {
            return Err(errno());
        }
        let mut out = r.to_le_bytes().to_vec();
        out.extend_from_slice(&buf[..out_len]);
        Ok(out)
    }

    pub fn poll(fd: i32) -> Result<Ready, Error> {
        let mut p = libc::pollfd { fd, events: libc::POLLIN | libc::POLLOUT, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r < 0 {
            return Err(errno());
        }
        Ok(Ready { readable: p.revents & libc::POLLIN != 0, writable: p.revents & libc::POLLOUT != 0 })
    }
}

/// A handle in this process.
struct LocalHandle(OwnedFd);

impl Handle for LocalHandle {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        ops::read(self.0.as_raw_fd(), buf)
    }
    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        ops::write(self.0.as_raw_fd(), buf)
    }
    fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error> {
        ops::seek(self.0.as_raw_fd(), whence, off)
    }
    fn set_len(&mut self, len: u64) -> Result<(), Error> {
        ops::set_len(self.0.as_raw_fd(), len)
    }
    fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32, Error> {
        ops::ioctl(self.0.as_raw_fd(), cmd, value)
    }
    fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
        ops::ioctl_raw(self.0.as_raw_fd(), code, input, out_len).map(|v| v[4..].to_vec())
    }
    fn stats(&mut self) -> Result<String, Error> {
        let out = ops::ioctl_raw(self.0.as_raw_fd(), Cmd::Stats.linux_code(), &[], LINUX_STATS_SIZE as usize)?;
        let len = i32::from_le_bytes([out[0], out[1], out[2], out[3]]).max(0) as usize;
        Ok(String::from_utf8_lossy(&out[4..4 + len.min(out.len() - 4)]).into_owned())
    }
    fn poll(&mut self) -> Result<Ready, Error> {
        ops::poll(self.0.as_raw_fd())
    }
}

// ---------------------------------------------------------------------------
// The helper process.

/// Requests: op byte, then little-endian arguments. Replies: i64 status
/// (negative errno, or a result), u32 length, bytes.
const OP_READ: u8 = 1;
const OP_WRITE: u8 = 2;
const OP_SEEK: u8 = 3;
const OP_SETLEN: u8 = 4;
const OP_IOCTL: u8 = 5;
const OP_RAW: u8 = 6;
const OP_POLL: u8 = 7;

fn send(s: &mut UnixStream, status: i64, data: &[u8]) -> std::io::Result<()> {
    let mut m = Vec::with_capacity(12 + data.len());
    m.extend_from_slice(&status.to_le_bytes());
    m.extend_from_slice(&(data.len() as u32).to_le_bytes());
    m.extend_from_slice(data);
    s.write_all(&m)
}

fn recv(s: &mut UnixStream) -> std::io::Result<(i64, Vec<u8>)> {
    let mut h = [0u8; 12];
    s.read_exact(&mut h)?;
    let status = i64::from_le_bytes(h[..8].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(h[8..].try_into().unwrap_or_default()) as usize;
    let mut d = vec![0u8; len];
    s.read_exact(&mut d)?;
    Ok((status, d))
}

fn status<T>(r: &Result<T, Error>, v: impl Fn(&T) -> i64) -> i64 {
    match r {
        Ok(t) => v(t),
        Err(e) => -(e.errno() as i64),
    }
}

/// In the child: become the other user (with its own tty), open, serve.
fn child_main(mut s: UnixStream, dev: Dev, o: OpenOpts, other: bool) -> i32 {
    // Drop every descriptor inherited from the parent but our socket: a
    // duplicate of the parent's device file would keep it open after the
    // parent closes it (scullwuid would never be released).
    let keep = s.as_raw_fd();
    for fd in 3..4096 {
        if fd != keep {
            // SAFETY: closing descriptors this single-threaded child does not use.
            unsafe { libc::close(fd) };
        }
    }
    if other && become_other().is_err() {
        let _ = send(&mut s, -(libc::EPERM as i64), &[]);
        return 1;
    }
    let fd = match sys_open(dev, o) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = send(&mut s, -(e.errno() as i64), &[]);
            return 0;
        }
    };
    if send(&mut s, 0, &[]).is_err() {
        return 0;
    }
    let fd = fd.as_raw_fd();
    loop {
        let (op, arg) = match recv(&mut s) {
            Ok(m) => m,
            Err(_) => return 0, // parent closed: drop the handle
        };
        let a = |i: usize| i64::from_le_bytes(arg[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let r = match op as u8 {
            OP_READ => {
                let mut b = vec![0u8; a(0) as usize];
                let r = ops::read(fd, &mut b);
                let st = status(&r, |n| *n as i64);
                b.truncate(r.unwrap_or(0));
                send(&mut s, st, &b)
            }
            OP_WRITE => {
                let r = ops::write(fd, &arg);
                send(&mut s, status(&r, |n| *n as i64), &[])
            }
            OP_SEEK => {
                let w = Whence::from_raw(a(0) as u32).unwrap_or(Whence::Set);
                let r = ops::seek(fd, w, a(1));
                send(&mut s, status(&r, |n| *n as i64), &[])
            }
            OP_SETLEN => {
                let r = ops::set_len(fd, a(0) as u64);
                send(&mut s, status(&r, |_| 0), &[])
            }
            OP_IOCTL => {
                let r = match Cmd::from_nr(a(0) as u32) {
                    Some(c) => ops::ioctl(fd, c, a(1) as i32),
                    None => Err(Error::NotTty),
                };
                send(&mut s, status(&r, |v| *v as i64), &[])
            }
            OP_RAW => {
                let r = ops::ioctl_raw(fd, a(0) as u32, &arg[16..], a(1) as usize);
                let st = status(&r, |_| 0);
                send(&mut s, st, &r.unwrap_or_default())
            }
            OP_POLL => {
                let r = ops::poll(fd);
                send(&mut s, status(&r, |p| i64::from(p.readable) | (i64::from(p.writable) << 1)), &[])
            }
            _ => send(&mut s, -(libc::EINVAL as i64), &[]),
        };
        if r.is_err() {
            return 0;
        }
    }
}

/// setsid + a new pty as controlling tty, then uid/gid 1001.
fn become_other() -> Result<(), Error> {
    // SAFETY: plain syscalls in the single-threaded child.
    unsafe {
        if libc::setsid() < 0 {
            return Err(errno());
        }
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if m >= 0 && libc::grantpt(m) == 0 && libc::unlockpt(m) == 0 {
            let name = libc::ptsname(m);
            if !name.is_null() {
                let s = libc::open(name, libc::O_RDWR);
                if s >= 0 {
                    libc::ioctl(s, libc::TIOCSCTTY as _, 0);
                }
            }
        }
        if libc::setgroups(0, std::ptr::null()) < 0 || libc::setresgid(OTHER_UID, OTHER_UID, OTHER_UID) < 0 {
            return Err(errno());
        }
        if libc::setresuid(OTHER_UID, OTHER_UID, OTHER_UID) < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// A handle held by a helper process.
struct RemoteHandle {
    sock: UnixStream,
    pid: i32,
}

impl RemoteHandle {
    fn spawn(dev: Dev, o: OpenOpts, other: bool) -> Result<RemoteHandle, Error> {
        let (mut parent, child) = UnixStream::pair().map_err(|_| Error::NoMemory)?;
        // SAFETY: fork; the child only runs `child_main` and exits (musl's malloc is fork-safe).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(errno());
        }
        if pid == 0 {
            drop(parent);
            let code = child_main(child, dev, o, other);
            // SAFETY: leave without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        drop(child);
        let mut h = RemoteHandle { sock: parent.try_clone().map_err(|_| Error::NoMemory)?, pid };
        let (st, _) = recv(&mut parent).map_err(|_| Error::NoDevice)?;
        if st < 0 {
            return Err(Error::from_errno(-st as i32).unwrap_or(Error::Invalid));
        }
        h.pid = pid;
        Ok(h)
    }

    fn call(&mut self, op: u8, args: &[i64], data: &[u8]) -> Result<(i64, Vec<u8>), Error> {
        let mut m = Vec::new();
        for a in args {
            m.extend_from_slice(&a.to_le_bytes());
        }
        m.extend_from_slice(data);
        send(&mut self.sock, op as i64, &m).map_err(|_| Error::NoDevice)?;
        let (st, d) = recv(&mut self.sock).map_err(|_| Error::NoDevice)?;
        if st < 0 {
            Err(Error::from_errno(-st as i32).unwrap_or(Error::Invalid))
        } else {
            Ok((st, d))
        }
    }
}

impl Drop for RemoteHandle {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let mut st = 0;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(self.pid, &mut st, 0) };
    }
}

impl Handle for RemoteHandle {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let (n, d) = self.call(OP_READ, &[buf.len() as i64], &[])?;
        buf[..d.len()].copy_from_slice(&d);
        Ok(n as usize)
    }
    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        self.call(OP_WRITE, &[], buf).map(|(n, _)| n as usize)
    }
    fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error> {
        self.call(OP_SEEK, &[whence as i64, off], &[]).map(|(n, _)| n as u64)
    }
    fn set_len(&mut self, len: u64) -> Result<(), Error> {
        self.call(OP_SETLEN, &[len as i64], &[]).map(drop)
    }
    fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32, Error> {
        self.call(OP_IOCTL, &[cmd.nr() as i64, value as i64], &[]).map(|(n, _)| n as i32)
    }
    fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
        self.call(OP_RAW, &[code as i64, out_len as i64], input).map(|(_, d)| d[4..].to_vec())
    }
    fn poll(&mut self) -> Result<Ready, Error> {
        let (v, _) = self.call(OP_POLL, &[], &[])?;
        Ok(Ready { readable: v & 1 != 0, writable: v & 2 != 0 })
    }
}

// ---------------------------------------------------------------------------
// Background operations.

struct ThreadJoin(std::thread::JoinHandle<Result<usize, Error>>);

impl Join for ThreadJoin {
    fn join(self: Box<Self>) -> Result<usize, Error> {
        self.0.join().unwrap_or(Err(Error::Interrupted))
    }
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

fn install_sigusr1() {
    // SAFETY: installs a no-op handler without SA_RESTART, so blocked syscalls return EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// What a cancellable read ends with: the bytes, or the error.
type ReadResult = Result<Vec<u8>, Error>;

struct SignalPending {
    tid: Arc<AtomicI32>,
    done: Arc<AtomicBool>,
    cancelled: bool,
    thread: Option<std::thread::JoinHandle<Result<Vec<u8>, Error>>>,
    result: Arc<Mutex<Option<ReadResult>>>,
}

impl SignalPending {
    fn kick(&self) {
        let tid = self.tid.load(Ordering::SeqCst);
        if tid > 0 && !self.done.load(Ordering::SeqCst) {
            // SAFETY: signals a thread of this process that is still running.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
        }
    }
}

impl Pending for SignalPending {
    fn is_done(&mut self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
    fn cancel(&mut self, _close: bool) -> Result<(), Error> {
        self.cancelled = true;
        self.kick();
        Ok(())
    }
    fn wait(mut self: Box<Self>, timeout: Duration) -> Result<Vec<u8>, Error> {
        let start = Instant::now();
        while !self.done.load(Ordering::SeqCst) {
            if start.elapsed() > timeout {
                return Err(Error::WouldBlock);
            }
            if self.cancelled {
                // The first signal may have arrived before the thread entered read(2).
                self.kick();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = self.result.lock().ok().and_then(|mut g| g.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        r.unwrap_or(Err(Error::Interrupted))
    }
}

// ---------------------------------------------------------------------------

pub struct LinuxTarget {
    name: &'static str,
    nr_devs: u8,
    p_nr_devs: u8,
}

fn count_nodes(prefix: &str) -> u8 {
    (0..64u8).take_while(|i| std::path::Path::new(&format!("/dev/{prefix}{i}")).exists()).count() as u8
}

impl LinuxTarget {
    pub fn new(name: &'static str) -> Self {
        install_sigusr1();
        LinuxTarget { name, nr_devs: count_nodes("scull"), p_nr_devs: count_nodes("scullpipe") }
    }
}

impl Target for LinuxTarget {
    fn name(&self) -> &str {
        self.name
    }

    fn caps(&self) -> Caps {
        // SAFETY: getter syscalls.
        let root = unsafe { libc::geteuid() } == 0;
        let mut tty = false;
        // SAFETY: opening our controlling tty only tests that we have one.
        let fd = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDONLY | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if fd >= 0 {
            tty = true;
            // SAFETY: closes the fd just opened.
            unsafe { libc::close(fd) };
        }
        Caps {
            privileged: root,
            other_user: root,
            poll: true,
            cancel: true,
            processes: true,
            priv_dev: tty,
            linux_abi: true,
            pipe_seek_refused: true,
            open_modes: true,
            set_len: false,
            nr_devs: self.nr_devs,
            p_nr_devs: self.p_nr_devs,
        }
    }

    fn open_as(&self, who: Who, dev: Dev, opts: OpenOpts) -> Result<Box<dyn Handle>, Error> {
        match who {
            Who::Me => Ok(Box::new(LocalHandle(sys_open(dev, opts)?))),
            Who::Other => Ok(Box::new(RemoteHandle::spawn(dev, opts, true)?)),
        }
    }

    fn spawn_writer(&self, dev: Dev, data: Vec<u8>, delay: Duration) -> Result<Box<dyn Join>, Error> {
        let t = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let mut h = RemoteHandle::spawn(dev, OpenOpts::W, false)?;
            let mut at = 0;
            while at < data.len() {
                let n = h.write(&data[at..])?;
                if n == 0 {
                    break;
                }
                at += n;
            }
            Ok(at)
        });
        Ok(Box::new(ThreadJoin(t)))
    }

    fn read_cancellable(&self, dev: Dev, len: usize) -> Result<Box<dyn Pending>, Error> {
        let fd = sys_open(dev, OpenOpts::R)?;
        let tid = Arc::new(AtomicI32::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let result = Arc::new(Mutex::new(None));
        let (t2, d2, r2) = (tid.clone(), done.clone(), result.clone());
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            t2.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            let mut b = vec![0u8; len];
            let r = ops::read(fd.as_raw_fd(), &mut b).map(|n| {
                b.truncate(n);
                b
            });
            if let Ok(mut g) = r2.lock() {
                *g = Some(r.clone());
            }
            d2.store(true, Ordering::SeqCst);
            r
        });
        while tid.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        Ok(Box::new(SignalPending { tid, done, cancelled: false, thread: Some(thread), result }))
    }

    fn extra_cases(&self) -> Vec<Case> {
        extra::cases()
    }

    fn fuzz_bad_pointers(&self, rng: &mut crate::rng::Rng, n: usize) -> Option<Result<usize, String>> {
        Some(badptr::run(self, rng, n))
    }
}

/// Raw system calls on invalid user pointers: every one must fail with
/// EFAULT, and leave the device's data as it was.
mod badptr {
    use super::*;
    use crate::rng::Rng;
    use std::sync::OnceLock;

    /// Addresses no user copy may succeed on: the NULL page region (below
    /// mmap_min_addr, never mapped), a PROT_NONE page of ours, kernel and
    /// non-canonical addresses, the top of the address space.
    fn bad_addresses() -> &'static [usize] {
        static A: OnceLock<Vec<usize>> = OnceLock::new();
        A.get_or_init(|| {
            let mut v = vec![0usize, 1, 0xfff, 0x1000, 0xfff0, 0xffff_8880_0000_0000, 0x8000_0000_0000_0000, usize::MAX - 4095, usize::MAX];
            // SAFETY: an anonymous PROT_NONE mapping that is never unmapped: any access faults.
            let p = unsafe {
                libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
            };
            if p != libc::MAP_FAILED {
                v.push(p as usize);
                v.push(p as usize + 100);
            }
            v
        })
    }

    fn raw(nr: libc::c_long, fd: i32, a: usize, b: usize) -> Result<i64, i32> {
        // SAFETY: read/write/ioctl with an address the kernel must validate itself; nothing in
        // this process is accessed through it.
        let r = unsafe { libc::syscall(nr, fd as libc::c_long, a, b) };
        if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(r)
        }
    }

    fn expect_efault(r: Result<i64, i32>, what: &str) -> Result<(), String> {
        match r {
            Err(libc::EFAULT) => Ok(()),
            Err(e) => Err(format!("{what}: expected EFAULT, got errno {e}")),
            Ok(n) => Err(format!("{what}: expected EFAULT, got {n}")),
        }
    }

    fn drain(fd: i32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = [0u8; 4096];
        while let Ok(n) = ops::read(fd, &mut b) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&b[..n]);
        }
        out
    }

    pub fn run(t: &LinuxTarget, rng: &mut Rng, n: usize) -> Result<usize, String> {
        let addrs = bad_addresses();
        let ptr_cmds: Vec<Cmd> =
            Cmd::ALL.into_iter().filter(|c| c.arg_in() == ArgIn::Pointer || matches!(c.arg_out(), ArgOut::Pointer | ArgOut::Text)).collect();
        fn e(what: &'static str) -> impl Fn(Error) -> String {
            move |err| format!("bad pointers: {what}: {err}")
        }
        let mut calls = 0;
        for _ in 0..n {
            let bad = *rng.pick(addrs);
            let len = *rng.pick(&[1usize, 8, 100, 4096, 65536]);
            let store = Dev::Scull(rng.below(t.nr_devs.max(1) as u64) as u8);
            match rng.below(4) {
                0 => {
                    // Data at 0, then a read of it into a bad buffer.
                    let fd = sys_open(store, OpenOpts::RW).map_err(e("open"))?;
                    let fd = fd.as_raw_fd();
                    ops::seek(fd, Whence::Set, 0).map_err(e("seek"))?;
                    ops::write(fd, &vec![0xA5u8; len]).map_err(e("write"))?;
                    ops::seek(fd, Whence::Set, 0).map_err(e("seek"))?;
                    expect_efault(raw(libc::SYS_read, fd, bad, len), &format!("read({store:?}, {bad:#x}, {len})"))?;
                }
                1 => {
                    let fd = sys_open(store, OpenOpts::RW).map_err(e("open"))?;
                    expect_efault(raw(libc::SYS_write, fd.as_raw_fd(), bad, len), &format!("write({store:?}, {bad:#x}, {len})"))?;
                }
                2 => {
                    // A scullpipe: a 1-byte write from a bad buffer (room for it is made first),
                    // and a read of 8 queued bytes into one, which must not consume them.
                    let pipe = Dev::Pipe(rng.below(t.p_nr_devs.max(1) as u64) as u8);
                    let fd = sys_open(pipe, OpenOpts::RW.nonblocking()).map_err(e("open pipe"))?;
                    let fd = fd.as_raw_fd();
                    drain(fd);
                    expect_efault(raw(libc::SYS_write, fd, bad, 1), &format!("write({pipe:?}, {bad:#x}, 1)"))?;
                    if ops::write(fd, b"8 bytes!").map_err(e("pipe write"))? == 8 {
                        expect_efault(raw(libc::SYS_read, fd, bad, 8), &format!("read({pipe:?}, {bad:#x}, 8)"))?;
                        let left = drain(fd);
                        if left != b"8 bytes!" {
                            return Err(format!("bad pointers: {pipe:?} lost data to a faulted read: {left:?}"));
                        }
                    }
                    calls += 1;
                }
                _ => {
                    let cmd = *rng.pick(&ptr_cmds);
                    let fd = sys_open(store, OpenOpts::R).map_err(e("open"))?;
                    expect_efault(
                        raw(libc::SYS_ioctl, fd.as_raw_fd(), cmd.linux_code() as usize, bad),
                        &format!("ioctl({}, {bad:#x})", cmd.name()),
                    )?;
                }
            }
            calls += 1;
        }
        Ok(calls)
    }
}

/// `scull-tool fault-sweep`: the module's debug fault injection
/// (`/sys/module/scull/parameters/scull_fail_at`, a countdown to the
/// allocation that fails) swept over a workload, k = 1, 2, ... until the
/// workload makes fewer than k allocations. After each run: the injected
/// failure reached user space exactly once (ENOMEM, or a short write count),
/// a failed call changed nothing (size unchanged, pipe still closed),
/// every acknowledged byte reads back intact, and after trimming the
/// outstanding-allocation counter is back at its baseline.
pub mod fault_sweep {
    use super::*;
    use std::os::unix::fs::FileExt;

    const PARAMS: &str = "/sys/module/scull/parameters";
    const FAILSLAB: &str = "/sys/kernel/debug/failslab";

    /// What makes the k-th allocation fail.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Injector {
        /// scull.ko's own countdown, `scull_fail_at`: the k-th allocation the
        /// module makes fails, and the module counts it in `scull_faults`.
        Module,
        /// The kernel's failslab, armed through this thread's
        /// `/proc/thread-self/fail-nth`: the k-th slab allocation made by this
        /// thread's system calls fails, wherever it is (scull, the VFS's
        /// `struct file`, seq_file buffers, kmemleak's own metadata, which
        /// falls back to its pool silently). Other tasks are never affected.
        Failslab,
    }

    impl Injector {
        fn label(self) -> &'static str {
            match self {
                Injector::Module => "fault-sweep",
                Injector::Failslab => "failslab-sweep",
            }
        }
    }

    /// An armed injector: `arm(k)`, run, then `disarm()` says whether the
    /// fault was consumed.
    enum Arming {
        Module,
        /// The open `fail-nth` file of the sweeping thread.
        Failslab(std::fs::File),
    }

    impl Arming {
        fn new(inj: Injector) -> Result<Self, String> {
            Ok(match inj {
                Injector::Module => Arming::Module,
                Injector::Failslab => {
                    // GFP_KERNEL allocations may sleep; failslab skips them
                    // unless told otherwise. No stack dumps: the harness fails
                    // a run on any Call Trace.
                    for (f, v) in [("ignore-gfp-wait", "N"), ("verbose", "0")] {
                        let p = format!("{FAILSLAB}/{f}");
                        std::fs::write(&p, v).map_err(|e| format!("write {p}: {e} (a kernel with CONFIG_FAILSLAB and debugfs mounted?)"))?;
                    }
                    let p = "/proc/thread-self/fail-nth";
                    let f = std::fs::OpenOptions::new().read(true).write(true).open(p).map_err(|e| format!("{p}: {e} (CONFIG_FAULT_INJECTION?)"))?;
                    Arming::Failslab(f)
                }
            })
        }

        fn arm(&self, k: u32) -> Result<(), String> {
            match self {
                Arming::Module => set_param("scull_fail_at", k),
                Arming::Failslab(f) => f.write_at(format!("{k}").as_bytes(), 0).map(drop).map_err(|e| format!("fail-nth: {e}")),
            }
        }

        /// Disarms; true when the armed fault was consumed.
        fn disarm(&self) -> Result<bool, String> {
            let left = match self {
                Arming::Module => param("scull_fail_at")?,
                Arming::Failslab(f) => {
                    let mut b = [0u8; 16];
                    let n = f.read_at(&mut b, 0).map_err(|e| format!("fail-nth: {e}"))?;
                    String::from_utf8_lossy(&b[..n]).trim().parse::<i64>().map_err(|e| format!("fail-nth: {e}"))?
                }
            };
            self.arm(0)?;
            Ok(left == 0)
        }
    }
    /// The store and pipe the workload uses.
    const STORE: Dev = Dev::Scull(1);
    const PIPE: Dev = Dev::Pipe(1);

    fn param(name: &str) -> Result<i64, String> {
        let p = format!("{PARAMS}/{name}");
        let s = std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"))?;
        s.trim().parse().map_err(|e| format!("{p}: {s:?}: {e}"))
    }

    fn set_param(name: &str, v: u32) -> Result<(), String> {
        let p = format!("{PARAMS}/{name}");
        std::fs::write(&p, format!("{v}\n")).map_err(|e| format!("write {p}: {e}"))
    }

    /// What one run saw.
    #[derive(Default)]
    struct Seen {
        enomem: u32,
        short: u32,
        problems: Vec<String>,
    }

    fn size(fd: i32) -> Result<u64, String> {
        ops::seek(fd, Whence::End, 0).map_err(|e| format!("SEEK_END: {e}"))
    }

    fn pattern(off: u64, len: usize, k: u32) -> Vec<u8> {
        (0..len as u64).map(|i| ((off + i).wrapping_mul(2654435761) >> 13) as u8 ^ k as u8).collect()
    }

    /// Writes `data` at `off`, retrying after ENOMEM and continuing after a
    /// short count; checks that a failed write left the size as it was and a
    /// short one covered what it acknowledged.
    fn write_all(fd: i32, off: u64, data: &[u8], seen: &mut Seen) -> Result<(), String> {
        let mut at = 0usize;
        let mut tries = 0;
        while at < data.len() {
            tries += 1;
            if tries > 10 {
                return Err(format!("write at {off}: no progress after {tries} tries"));
            }
            let pos = off + at as u64;
            let before = size(fd)?;
            ops::seek(fd, Whence::Set, pos as i64).map_err(|e| format!("seek: {e}"))?;
            match ops::write(fd, &data[at..]) {
                Ok(n) => {
                    if n < data.len() - at {
                        seen.short += 1;
                        let after = size(fd)?;
                        if after < pos + n as u64 {
                            seen.problems.push(format!("short write of {n} at {pos}: size {after} does not cover it"));
                        }
                    }
                    at += n;
                }
                Err(Error::NoMemory) => {
                    seen.enomem += 1;
                    let after = size(fd)?;
                    if after != before {
                        seen.problems.push(format!("ENOMEM write at {pos}: size changed {before} -> {after}"));
                    }
                }
                Err(e) => return Err(format!("write at {pos}: {e} (only ENOMEM or a short count may come of a failed allocation)")),
            }
        }
        Ok(())
    }

    fn read_back(fd: i32, off: u64, want: &[u8]) -> Result<bool, String> {
        ops::seek(fd, Whence::Set, off as i64).map_err(|e| format!("seek: {e}"))?;
        let mut got = vec![0u8; want.len()];
        let mut at = 0;
        while at < got.len() {
            let n = ops::read(fd, &mut got[at..]).map_err(|e| format!("read at {}: {e}", off + at as u64))?;
            if n == 0 {
                break;
            }
            at += n;
        }
        Ok(at == want.len() && got == want)
    }

    /// One run of the workload with the fault armed at `k`.
    fn workload(k: u32, quantum: u64, qset: u64) -> Result<Seen, String> {
        let mut seen = Seen::default();
        let qbytes = quantum * qset;
        // Pieces: the start (several quanta), across a qset boundary, far away
        // (a new sparse qset), and an overwrite that needs no allocation.
        let pieces = [
            (0u64, (2 * quantum + 1) as usize),
            (qbytes - 2 * quantum - 100, (5 * quantum + 200) as usize),
            (3 * qbytes - 7, (2 * qbytes + quantum) as usize),
            (10 * qbytes + 17, (3 * quantum) as usize),
            (quantum / 2, quantum as usize),
        ];
        let opts = OpenOpts { read: true, write: true, nonblock: false, truncate: true };
        // Under failslab the open itself may fail (the VFS allocates a file).
        let fd = loop {
            match sys_open(STORE, opts) {
                Ok(fd) => break fd,
                Err(Error::NoMemory) if seen.enomem + seen.short < 8 => seen.enomem += 1,
                Err(e) => return Err(format!("open {STORE:?}: {e}")),
            }
        };
        let fd = fd.as_raw_fd();
        let mut shadow: Vec<(u64, Vec<u8>)> = Vec::new();
        for (i, &(off, len)) in pieces.iter().enumerate() {
            let data = pattern(off, len, k + i as u32);
            write_all(fd, off, &data, &mut seen)?;
            // A later piece overwrites earlier bytes: keep the shadow exact.
            for (o, d) in shadow.iter_mut() {
                for (j, b) in d.iter_mut().enumerate() {
                    let p = *o + j as u64;
                    if p >= off && p < off + len as u64 {
                        *b = data[(p - off) as usize];
                    }
                }
            }
            shadow.push((off, data));
        }
        for (off, want) in &shadow {
            if !read_back(fd, *off, want)? {
                seen.problems.push(format!("k={k}: acknowledged bytes at {off}..{} lost or corrupt", off + want.len() as u64));
            }
        }
        let end = pieces.iter().map(|(o, l)| o + *l as u64).max().unwrap_or(0);
        let sz = size(fd)?;
        if sz != end {
            seen.problems.push(format!("k={k}: size {sz}, expected {end}"));
        }
        // STATS allocates its text buffer.
        loop {
            match ops::ioctl_raw(fd, Cmd::Stats.linux_code(), &[], LINUX_STATS_SIZE as usize) {
                Ok(_) => break,
                Err(Error::NoMemory) if seen.enomem + seen.short < 8 => seen.enomem += 1,
                Err(e) => return Err(format!("STATS: {e}")),
            }
        }
        // The pipe's buffer is allocated by the first open.
        let p = loop {
            match sys_open(PIPE, OpenOpts::RW.nonblocking()) {
                Ok(p) => break p,
                Err(Error::NoMemory) if seen.enomem + seen.short < 8 => {
                    seen.enomem += 1;
                    let rep = std::fs::read_to_string("/proc/scullpipe").unwrap_or_default();
                    let line = rep.lines().find(|l| l.starts_with("scullpipe1 ")).unwrap_or("");
                    if scull_core::report::field(line, "buffer") != Some("0") {
                        seen.problems.push(format!("k={k}: a failed pipe open left a buffer: {line}"));
                    }
                }
                Err(e) => return Err(format!("open {PIPE:?}: {e}")),
            }
        };
        let msg = format!("fault sweep k={k}");
        let n = ops::write(p.as_raw_fd(), msg.as_bytes()).map_err(|e| format!("pipe write: {e}"))?;
        let mut b = [0u8; 64];
        let m = ops::read(p.as_raw_fd(), &mut b).map_err(|e| format!("pipe read: {e}"))?;
        if n != msg.len() || &b[..m] != msg.as_bytes() {
            seen.problems.push(format!("k={k}: pipe round trip {:?}", String::from_utf8_lossy(&b[..m])));
        }
        Ok(seen)
    }

    fn trim() -> Result<(), String> {
        drop(sys_open(STORE, OpenOpts::TRUNC).map_err(|e| format!("trim {STORE:?}: {e}"))?);
        Ok(())
    }

    /// The sweep's geometry: small, so the workload makes many allocations.
    const QUANTUM: i32 = 512;
    const QSET: i32 = 16;

    fn geometry(q: i32, s: i32) -> Result<(i32, i32), String> {
        let fd = sys_open(STORE, OpenOpts::R).map_err(|e| format!("open: {e}"))?;
        let fd = fd.as_raw_fd();
        let old_q = ops::ioctl(fd, Cmd::QQuantum, 0).map_err(|e| format!("QQUANTUM: {e}"))?;
        let old_s = ops::ioctl(fd, Cmd::QQset, 0).map_err(|e| format!("QQSET: {e}"))?;
        ops::ioctl(fd, Cmd::TQuantum, q).map_err(|e| format!("TQUANTUM: {e}"))?;
        ops::ioctl(fd, Cmd::TQset, s).map_err(|e| format!("TQSET: {e}"))?;
        Ok((old_q, old_s))
    }

    /// Runs the sweep; Ok(true) when every check held.
    pub fn run(max_k: u32, inj: Injector) -> Result<bool, String> {
        set_param("scull_fail_at", 0)?;
        let (old_q, old_s) = geometry(QUANTUM, QSET)?;
        let r = Arming::new(inj).and_then(|a| sweep(max_k, inj, &a));
        geometry(old_q, old_s)?;
        trim()?;
        r
    }

    fn sweep(max_k: u32, inj: Injector, arming: &Arming) -> Result<bool, String> {
        let label = inj.label();
        trim()?;
        if inj == Injector::Failslab {
            // One unarmed run first, so this process's own heap has grown to
            // its working size before slab allocations start failing.
            let warm = workload(0, QUANTUM as u64, QSET as u64)?;
            trim()?;
            if !warm.problems.is_empty() || warm.enomem + warm.short != 0 {
                return Err(format!("{label}: the unarmed run failed: {:?}", warm.problems));
            }
        }
        let baseline = param("scull_outstanding")?;
        let faults0 = param("scull_faults")?;
        let (quantum, qset) = (QUANTUM as u64, QSET as u64);
        crate::outln!("{label}: quantum={quantum} qset={qset}, outstanding allocations at baseline: {baseline}");
        let mut problems: Vec<String> = Vec::new();
        let (mut injected, mut enomem, mut short, mut leaks, mut silent) = (0u32, 0u32, 0u32, 0u32, 0u32);
        let mut k = 1;
        let mut exhausted = false;
        // No progress ticker under failslab: its thread's allocations would
        // make this thread's heap grow (mmap) while a fault is armed, and a
        // failed mmap aborts the tool instead of testing the module.
        let bar = (inj == Injector::Module).then(|| crate::progress::Progress::start(label, crate::progress::Goal::Open, "faults injected"));
        while k <= max_k {
            if let Some(b) = &bar {
                b.set(u64::from(k - 1));
            }
            arming.arm(k)?;
            let seen = workload(k, quantum, qset);
            let consumed = arming.disarm()?;
            let seen = seen?;
            trim()?;
            let out = param("scull_outstanding")?;
            if out != baseline {
                leaks += 1;
                problems.push(format!("k={k}: {out} allocations outstanding after trim (baseline {baseline})"));
            }
            problems.extend(seen.problems);
            enomem += seen.enomem;
            short += seen.short;
            if !consumed {
                // Fewer than k allocations in the workload: the sweep is complete.
                if seen.enomem + seen.short != 0 {
                    problems.push(format!("k={k}: the fault was not consumed, yet {} failures were seen", seen.enomem + seen.short));
                }
                exhausted = true;
                break;
            }
            injected += 1;
            let surfaced = seen.enomem + seen.short;
            // The module reports every failure it makes. A failed slab
            // allocation may also be absorbed inside the kernel (kmemleak's
            // metadata pool, a retry), but never reported twice.
            let expected = match inj {
                Injector::Module => surfaced == 1,
                Injector::Failslab => surfaced <= 1,
            };
            if surfaced == 0 {
                silent += 1;
            }
            if !expected {
                problems.push(format!("k={k}: one allocation failed but user space saw {} ENOMEM and {} short counts", seen.enomem, seen.short));
            }
            k += 1;
        }
        drop(bar);
        let faults = param("scull_faults")? - faults0;
        let want_faults = if inj == Injector::Module { injected as i64 } else { 0 };
        if faults != want_faults {
            problems.push(format!("scull_faults rose by {faults}, expected {want_faults} ({injected} faults injected by {inj:?})"));
        }
        if injected < 10 {
            problems.push(format!("only {injected} faults were injected: the workload or the injection is broken"));
        }
        if !exhausted {
            problems.push(format!("the workload still allocated at k={max_k}: raise --max-k"));
        }
        for p in &problems {
            crate::outln!("{label}: FAIL {p}");
        }
        crate::outln!(
            "{label}: k=1..{injected}: {injected} allocations failed, user space saw {enomem} ENOMEM and {short} short writes ({silent} absorbed in the kernel); k={}: no allocation left to fail; {} problems, {leaks} leaks",
            injected + 1,
            problems.len()
        );
        let ok = problems.is_empty();
        crate::outln!("{label}: {}", if ok { "0 lost, 0 corrupt, 0 leaked" } else { "FAILED" });
        Ok(ok)
    }
}

/// Linux-only cases.
mod extra {
    use super::*;

    type R = Result<(), String>;

    fn ok<T>(r: Result<T, Error>, what: &str) -> Result<T, String> {
        r.map_err(|e| format!("{what}: unexpected error {e:?}"))
    }

    fn no_need(_: &Caps) -> Option<&'static str> {
        None
    }

    fn need_root(c: &Caps) -> Option<&'static str> {
        if c.other_user {
            None
        } else {
            Some("needs root to switch to a second uid")
        }
    }

    pub fn cases() -> Vec<Case> {
        vec![
            Case { name: "linux_pipe_lseek_espipe", needs: no_need, run: pipe_lseek_espipe },
            Case { name: "linux_poll_pipe_readiness", needs: no_need, run: poll_pipe_readiness },
            Case { name: "linux_sigio_on_pipe_write", needs: no_need, run: sigio_on_write },
            Case { name: "linux_sculluid_ebusy_for_second_uid", needs: need_root, run: uid_busy },
            Case { name: "linux_scullwuid_blocks_then_proceeds", needs: need_root, run: wuid_blocks },
            Case { name: "linux_eperm_for_nonroot_privileged_ioctls", needs: need_root, run: eperm },
            Case { name: "linux_proc_reports", needs: no_need, run: proc_reports },
            Case { name: "linux_rmmod_refused_while_open", needs: no_need, run: rmmod_busy },
            Case { name: "linux_shared_fd_writes_keep_every_record", needs: no_need, run: shared_fd_writes },
            Case {
                name: "linux_read_killable_while_writer_stalls_in_copy",
                needs: crate::uffd::needs,
                run: crate::uffd::read_killable_while_writer_stalls,
            },
            Case {
                name: "linux_pipe_reader_interruptible_while_writer_stalls_in_copy",
                needs: crate::uffd::needs,
                run: crate::uffd::pipe_reader_interruptible_while_writer_stalls,
            },
        ]
    }

    fn pipe_lseek_espipe(t: &dyn Target) -> R {
        let mut h = ok(t.open(Dev::Pipe(1), OpenOpts::RW), "open")?;
        match h.seek(Whence::Set, 0) {
            Err(Error::NotSeekable) => Ok(()),
            other => Err(format!("lseek on a pipe: expected ESPIPE, got {other:?}")),
        }
    }

    fn poll_pipe_readiness(t: &dyn Target) -> R {
        let mut r = ok(t.open(Dev::Pipe(1), OpenOpts::R.nonblocking()), "open r")?;
        let mut w = ok(t.open(Dev::Pipe(1), OpenOpts::W.nonblocking()), "open w")?;
        let p = ok(r.poll(), "poll empty")?;
        if p.readable || !p.writable {
            return Err(format!("empty pipe: {p:?}"));
        }
        ok(w.write(b"x"), "write")?;
        let p = ok(r.poll(), "poll with data")?;
        if !p.readable {
            return Err(format!("after a write: {p:?}"));
        }
        // Fill it: then not writable.
        let big = vec![7u8; 1 << 20];
        while let Ok(n) = w.write(&big) {
            if n == 0 {
                break;
            }
        }
        let p = ok(w.poll(), "poll full")?;
        if p.writable || !p.readable {
            return Err(format!("full pipe: {p:?}"));
        }
        Ok(())
    }

    static SIGIO_SEEN: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_sigio(_: libc::c_int) {
        SIGIO_SEEN.store(true, Ordering::SeqCst);
    }

    fn sigio_on_write(_t: &dyn Target) -> R {
        SIGIO_SEEN.store(false, Ordering::SeqCst);
        let r = sys_open(Dev::Pipe(2), OpenOpts::R.nonblocking()).map_err(|e| format!("open: {e:?}"))?;
        let fd = r.as_raw_fd();
        // SAFETY: installs a handler that only stores to an atomic, then sets F_SETOWN/O_ASYNC on our fd.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigio as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGIO, &sa, std::ptr::null_mut());
            libc::fcntl(fd, libc::F_SETOWN, libc::getpid());
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if libc::fcntl(fd, libc::F_SETFL, fl | libc::O_ASYNC) < 0 {
                return Err(format!("F_SETFL O_ASYNC: {:?}", errno()));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        if SIGIO_SEEN.load(Ordering::SeqCst) {
            return Err("SIGIO before any write".into());
        }
        let mut w = RemoteHandle::spawn(Dev::Pipe(2), OpenOpts::W, false).map_err(|e| format!("writer: {e:?}"))?;
        ok(w.write(b"ping"), "write")?;
        let start = Instant::now();
        while !SIGIO_SEEN.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !SIGIO_SEEN.load(Ordering::SeqCst) {
            return Err("no SIGIO after a write".into());
        }
        Ok(())
    }

    fn uid_busy(t: &dyn Target) -> R {
        let mine = ok(t.open(Dev::Uid, OpenOpts::R), "open as root")?;
        // Root owns it; a non-root second uid gets EBUSY (no CAP_DAC_OVERRIDE).
        match t.open_as(Who::Other, Dev::Uid, OpenOpts::R) {
            Err(Error::Busy) => {}
            other => return Err(format!("uid {OTHER_UID}: expected EBUSY, got {:?}", other.map(|_| ()))),
        }
        drop(mine);
        let theirs = ok(t.open_as(Who::Other, Dev::Uid, OpenOpts::R), "second uid once free")?;
        // Root has CAP_DAC_OVERRIDE: it may open while uid 1001 owns it.
        drop(ok(t.open(Dev::Uid, OpenOpts::R), "CAP_DAC_OVERRIDE override")?);
        drop(theirs);
        Ok(())
    }

    fn wuid_blocks(t: &dyn Target) -> R {
        let mine = ok(t.open(Dev::Wuid, OpenOpts::R), "open as root")?;
        match t.open_as(Who::Other, Dev::Wuid, OpenOpts::R.nonblocking()) {
            Err(Error::WouldBlock) => {}
            other => return Err(format!("O_NONBLOCK: expected EAGAIN, got {:?}", other.map(|_| ()))),
        }
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let th = std::thread::spawn(move || {
            let t = LinuxTarget { name: "aux", nr_devs: 0, p_nr_devs: 0 };
            let r = t.open_as(Who::Other, Dev::Wuid, OpenOpts::R).map(drop);
            d2.store(true, Ordering::SeqCst);
            r
        });
        std::thread::sleep(Duration::from_millis(400));
        if done.load(Ordering::SeqCst) {
            return Err("the second uid's open did not block".into());
        }
        drop(mine);
        let r = th.join().map_err(|_| "thread panicked".to_string())?;
        ok(r, "blocked open after the owner closed")
    }

    fn eperm(t: &dyn Target) -> R {
        let mut h = ok(t.open_as(Who::Other, Dev::Scull(1), OpenOpts::R), "open as second uid")?;
        for c in Cmd::ALL {
            let r = h.ioctl(c, 1000);
            if c.needs_privilege() {
                if r != Err(Error::Perm) {
                    return Err(format!("{} as uid {OTHER_UID}: expected EPERM, got {r:?}", c.name()));
                }
            } else if c != Cmd::Stats && c != Cmd::PTSize && c != Cmd::Reset && r.is_err() {
                return Err(format!("{} as uid {OTHER_UID}: {r:?}", c.name()));
            }
        }
        Ok(())
    }

    fn proc_reports(t: &dyn Target) -> R {
        let mut h = ok(t.open(Dev::Scull(2), OpenOpts::TRUNC), "open")?;
        ok(h.write(b"hello"), "write")?;
        drop(h);
        for f in ["/proc/scullmem", "/proc/scullseq", "/proc/scullpipe"] {
            let s = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
            if f.ends_with("pipe") {
                if !s.starts_with("scullpipe v1") {
                    return Err(format!("{f}: {s}"));
                }
            } else if !s.lines().any(|l| l.starts_with("scull2 size=5 ")) {
                return Err(format!("{f} has no `scull2 size=5` line:\n{s}"));
            }
        }
        Ok(())
    }

    /// Threads appending through one shared fd: each write must start where
    /// the last one ended. Store files have FMODE_ATOMIC_POS, so the VFS
    /// serialises f_pos on f_pos_lock; without it two writers read the same
    /// f_pos and one record overwrites another (found by the review, L4).
    fn shared_fd_writes(_t: &dyn Target) -> R {
        const THREADS: u8 = 4;
        const EACH: u32 = 1500;
        const REC: usize = 16;
        let fd = Arc::new(sys_open(Dev::Scull(2), OpenOpts::TRUNC).map_err(|e| format!("open: {e:?}"))?);
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let fd = fd.clone();
                std::thread::spawn(move || -> Result<(), String> {
                    for seq in 0..EACH {
                        let mut r = [0xEEu8; REC];
                        r[0] = t;
                        r[1..5].copy_from_slice(&seq.to_le_bytes());
                        // SAFETY: writes our buffer to our fd.
                        let n = unsafe { libc::write(fd.as_raw_fd(), r.as_ptr().cast(), REC) };
                        if n != REC as isize {
                            return Err(format!("write returned {n}"));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "writer panicked".to_string())??;
        }
        drop(fd);
        let mut h = ok(sys_open(Dev::Scull(2), OpenOpts::R).map(std::fs::File::from), "open r")?;
        let mut all = Vec::new();
        h.read_to_end(&mut all).map_err(|e| format!("read: {e}"))?;
        let want = THREADS as usize * EACH as usize * REC;
        let mut seen = vec![0u32; THREADS as usize * EACH as usize];
        for r in all.chunks(REC) {
            let (t, seq) = (r[0] as usize, u32::from_le_bytes([r[1], r[2], r[3], r[4]]) as usize);
            if r.len() == REC && t < THREADS as usize && seq < EACH as usize {
                seen[t * EACH as usize + seq] += 1;
            }
        }
        let lost = seen.iter().filter(|&&c| c == 0).count();
        if all.len() != want || lost > 0 {
            return Err(format!("{} bytes, want {want}; {lost} of {} records lost (two writes at one f_pos)", all.len(), seen.len()));
        }
        Ok(())
    }

    fn rmmod_busy(t: &dyn Target) -> R {
        let h = ok(t.open(Dev::Scull(3), OpenOpts::R), "open")?;
        let name = c"scull";
        // SAFETY: delete_module with O_NONBLOCK; must fail while a file is open.
        let r = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
        let e = std::io::Error::last_os_error();
        drop(h);
        if r == 0 {
            return Err("the module unloaded while a device was open".into());
        }
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) | Some(libc::EBUSY) => Ok(()),
            other => Err(format!("delete_module: expected EBUSY/EWOULDBLOCK, got {other:?}")),
        }
    }
}


// SPDX-License-Identifier: GPL-2.0
//! scull for Linux: LDD3's scull devices as a Rust-for-Linux module.
//!
//! All semantics come from scull-core, whose files are compiled into this
//! crate below (`#[path]` modules at the crate root, so their `crate::x`
//! paths resolve). This file holds the Linux glue: module parameters, the
//! device table, locking and waiting, and user-copy.

use core::fmt;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use kernel::alloc::{flags::GFP_KERNEL, KBox, KVec};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::poll::{PollCondVar, PollTable};
use kernel::sync::{CondVar, Mutex, MutexGuard};
use kernel::uaccess::{UserPtr, UserSlice};
use kernel::{new_condvar, new_mutex, new_poll_condvar};

// scull-core, mounted at the crate root.
#[path = "../scull-core/src/access.rs"]
#[allow(dead_code, unreachable_pub)]
mod access;
#[path = "../scull-core/src/devices.rs"]
#[allow(dead_code, unreachable_pub)]
mod devices;
#[path = "../scull-core/src/error.rs"]
#[allow(dead_code, unreachable_pub)]
mod error;
#[path = "../scull-core/src/geometry.rs"]
#[allow(dead_code, unreachable_pub)]
mod geometry;
#[path = "../scull-core/src/ioctl.rs"]
#[allow(dead_code, unreachable_pub)]
mod ioctl;
#[path = "../scull-core/src/mem.rs"]
#[allow(dead_code, unreachable_pub)]
mod mem;
#[path = "../scull-core/src/pipe.rs"]
#[allow(dead_code, unreachable_pub)]
mod pipe;
#[path = "../scull-core/src/report.rs"]
#[allow(dead_code, unreachable_pub)]
mod report;
#[path = "../scull-core/src/store.rs"]
#[allow(dead_code, unreachable_pub)]
mod store;
#[path = "../scull-core/src/sync.rs"]
#[allow(dead_code, unreachable_pub)]
mod sync;

mod chrdev;
mod fault;
mod kmem;
mod params;
mod procfs;

use access::{OwnerUid, PrivTable, SingleOpen, WaitUid};
use chrdev::{capable, lock_interruptible, AsyncQueue, Cdev, FileOps, FileRef, Nodes, Region};
use error::Error;
use geometry::Params;
use ioctl::{ArgIn, ArgOut, Cmd};
use kmem::KPlat;
use pipe::Pipe;
use store::{Store, Whence};

type R<T> = core::result::Result<T, Error>;

module! {
    type: ScullModule,
    name: "scull",
    authors: ["scull-rs"],
    description: "LDD3's scull char devices, on scull-core",
    license: "GPL",
}
// The parameters (scull_quantum, ..., scull_max_size) are in `params`: they
// are readable in /sys/module/scull/parameters/, which `module!`'s are not.

/// Most scullpriv instances (one per controlling tty).
const PRIV_MAX: usize = 16;

type StoreDev = Mutex<Store<KPlat>>;

struct PipeInner {
    pipe: Pipe<KPlat>,
}

/// A scullpipe. `inner` is held across user copies, so a caller may wait for
/// it behind a copy that never completes (userfaultfd): it is only ever taken
/// interruptibly ([`PipeDev::lock`]) or not waited for at all (release), and
/// blocked readers and writers sleep on their queue with `gate` instead, a
/// lock held only around a wait's enqueue and a wakeup.
#[pin_data]
struct PipeDev {
    #[pin]
    inner: Mutex<PipeInner>,
    #[pin]
    gate: Mutex<()>,
    #[pin]
    inq: PollCondVar,
    #[pin]
    outq: PollCondVar,
    waiting_readers: AtomicU32,
    waiting_writers: AtomicU32,
    /// Releases that found `inner` taken, applied by its next holder.
    deferred_readers: AtomicU32,
    deferred_writers: AtomicU32,
    async_queue: AsyncQueue,
}

impl PipeDev {
    /// Takes `inner` (interruptibly: ERESTARTSYS on a signal) and applies the
    /// releases deferred while it was held.
    fn lock(&self) -> Result<MutexGuard<'_, PipeInner>, Error> {
        let mut g = lock_interruptible(&self.inner)?;
        self.apply_deferred(&mut g);
        Ok(g)
    }

    fn apply_deferred(&self, g: &mut PipeInner) {
        for _ in 0..self.deferred_readers.swap(0, Ordering::AcqRel) {
            g.pipe.release(true, false);
        }
        for _ in 0..self.deferred_writers.swap(0, Ordering::AcqRel) {
            g.pipe.release(false, true);
        }
    }

    /// Releases one open without sleeping for `inner`. Release cannot fail,
    /// and in an exiting task no signal can end a wait (the kernel drops
    /// signals to a dying process), so a close behind a writer stalled in a
    /// user copy would otherwise leave the task unkillable until the copy
    /// completes. If `inner` is held, the release is recorded and the
    /// holder's successor applies it (the next open, read, write, poll or
    /// report); the buffer a last release frees is freed then, at the latest
    /// at module exit.
    fn release(&self, read: bool, write: bool) {
        if let Some(mut g) = self.inner.try_lock() {
            self.apply_deferred(&mut g);
            g.pipe.release(read, write);
            return;
        }
        self.deferred_readers.fetch_add(u32::from(read), Ordering::AcqRel);
        self.deferred_writers.fetch_add(u32::from(write), Ordering::AcqRel);
        // The holder may have let go meanwhile: apply it now if so.
        if let Some(mut g) = self.inner.try_lock() {
            self.apply_deferred(&mut g);
        }
    }

    /// Gives up `g` and sleeps on `q` until woken (false) or signalled (true).
    /// `gate` is taken before `g` is dropped and wakers take it before they
    /// notify, so a wakeup between the caller's check and its sleep is not
    /// lost; waking never needs `inner` back.
    fn wait(&self, g: MutexGuard<'_, PipeInner>, q: &CondVar, waiting: &AtomicU32) -> bool {
        waiting.fetch_add(1, Ordering::Relaxed);
        let mut gate = self.gate.lock();
        drop(g);
        let signalled = q.wait_interruptible(&mut gate);
        drop(gate);
        waiting.fetch_sub(1, Ordering::Relaxed);
        signalled
    }

    /// Wakes everyone sleeping on `q` (call it after releasing `inner`).
    fn wake(&self, q: &CondVar) {
        let _gate = self.gate.lock();
        q.notify_all();
    }
}

#[pin_data]
struct WuidState {
    #[pin]
    lock: Mutex<WaitUid<u32>>,
    #[pin]
    cv: CondVar,
}

/// Every device. Lives from init to exit; files hold `&'static` references,
/// which is sound because each open file pins the module (fops.owner).
struct State {
    params: Params,
    nr_devs: u32,
    p_nr_devs: u32,
    sculls: KVec<Pin<KBox<StoreDev>>>,
    pipes: KVec<Pin<KBox<PipeDev>>>,
    single: Pin<KBox<StoreDev>>,
    single_open: SingleOpen,
    uid: Pin<KBox<StoreDev>>,
    uid_state: Pin<KBox<Mutex<OwnerUid<u32>>>>,
    wuid: Pin<KBox<StoreDev>>,
    wuid_state: Pin<KBox<WuidState>>,
    privs: Pin<KBox<Mutex<PrivTable<u32, Pin<KBox<StoreDev>>, PRIV_MAX>>>>,
}

static STATE: AtomicPtr<State> = AtomicPtr::new(core::ptr::null_mut());
static REGION_BASE: AtomicU32 = AtomicU32::new(0);

/// The first device number of the region (for minor → device).
pub(crate) fn region_base() -> u32 {
    REGION_BASE.load(Ordering::Acquire)
}

fn state() -> R<&'static State> {
    let p = STATE.load(Ordering::Acquire);
    if p.is_null() {
        return Err(Error::NoDevice);
    }
    // SAFETY: STATE points at the module's boxed State from before the first cdev_add until after the
    // last cdev_del and /proc removal; callers are file operations or /proc reads, which end before.
    Ok(unsafe { &*p })
}

fn new_store(geom: geometry::Geometry) -> R<Pin<KBox<StoreDev>>> {
    KBox::pin_init(new_mutex!(Store::new(KPlat, geom)), GFP_KERNEL).map_err(chrdev::kernel_error)
}

fn kerr(e: Error) -> kernel::error::Error {
    kernel::error::Error::from_errno(-e.errno())
}

impl State {
    fn new(params: Params, nr_devs: u32, p_nr_devs: u32) -> R<State> {
        let g = params.geometry();
        let mut sculls = KVec::with_capacity(nr_devs as usize, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        for _ in 0..nr_devs {
            sculls.push(new_store(g)?, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        }
        let mut pipes = KVec::with_capacity(p_nr_devs as usize, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        for _ in 0..p_nr_devs {
            let p = KBox::pin_init(
                pin_init!(PipeDev {
                    inner <- new_mutex!(PipeInner { pipe: Pipe::new() }),
                    gate <- new_mutex!(()),
                    inq <- new_poll_condvar!(),
                    outq <- new_poll_condvar!(),
                    waiting_readers: AtomicU32::new(0),
                    waiting_writers: AtomicU32::new(0),
                    deferred_readers: AtomicU32::new(0),
                    deferred_writers: AtomicU32::new(0),
                    async_queue: AsyncQueue::new(),
                }),
                GFP_KERNEL,
            )
            .map_err(chrdev::kernel_error)?;
            pipes.push(p, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        }
        Ok(State {
            nr_devs,
            p_nr_devs,
            sculls,
            pipes,
            single: new_store(g)?,
            single_open: SingleOpen::new(),
            uid: new_store(g)?,
            uid_state: KBox::pin_init(new_mutex!(OwnerUid::new()), GFP_KERNEL).map_err(chrdev::kernel_error)?,
            wuid: new_store(g)?,
            wuid_state: KBox::pin_init(
                pin_init!(WuidState { lock <- new_mutex!(WaitUid::new()), cv <- new_condvar!() }),
                GFP_KERNEL,
            )
            .map_err(chrdev::kernel_error)?,
            privs: KBox::pin_init(new_mutex!(PrivTable::new()), GFP_KERNEL).map_err(chrdev::kernel_error)?,
            params,
        })
    }

    /// The memory report (/proc/scullmem, /proc/scullseq, first half of STATS).
    fn mem_report(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        report::mem_header(w, &self.params)?;
        let mut name = NameBuf::new();
        for (i, d) in self.sculls.iter().enumerate() {
            name.set(format_args!("scull{i}"));
            report::mem_device(w, name.as_str(), &stats_of(d)?)?;
        }
        report::mem_device(w, "scullsingle", &stats_of(&self.single)?)?;
        report::mem_device(w, "sculluid", &stats_of(&self.uid)?)?;
        report::mem_device(w, "scullwuid", &stats_of(&self.wuid)?)?;
        let privs = self.privs.lock();
        for (k, d) in privs.iter() {
            name.set(format_args!("scullpriv.{k}"));
            report::mem_device(w, name.as_str(), &stats_of(d)?)?;
        }
        Ok(())
    }

    /// The pipe report (/proc/scullpipe, second half of STATS).
    fn pipe_report(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        report::pipe_header(w, &self.params)?;
        let mut name = NameBuf::new();
        for (i, p) in self.pipes.iter().enumerate() {
            name.set(format_args!("scullpipe{i}"));
            let g = p.lock().map_err(|_| fmt::Error)?;
            let (r, w_) = (p.waiting_readers.load(Ordering::Relaxed), p.waiting_writers.load(Ordering::Relaxed));
            report::pipe_device(w, name.as_str(), &g.pipe.stats(), r, w_)?;
        }
        Ok(())
    }
}

/// A store's numbers; a signal while waiting for its lock (held by a writer
/// stalled in a user copy) ends the report (`fmt::Error`).
fn stats_of(d: &StoreDev) -> Result<store::StoreStats, fmt::Error> {
    lock_interruptible(d).map(|g| g.stats()).map_err(|_| fmt::Error)
}

/// A short device name formatted on the stack.
struct NameBuf {
    buf: [u8; 32],
    len: usize,
}

impl NameBuf {
    fn new() -> Self {
        NameBuf { buf: [0; 32], len: 0 }
    }
    fn set(&mut self, a: fmt::Arguments<'_>) {
        let mut t = report::TextBuf::new(&mut self.buf[..31]);
        let _ = fmt::write(&mut t, a);
        self.len = t.len();
        self.buf[self.len] = 0;
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
    fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.buf[..=self.len]).unwrap_or(c"?")
    }
}

// ---------------------------------------------------------------------------
// File operations

/// How an open store device releases.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Plain,
    Single,
    Uid,
    Wuid,
    Priv,
}

/// One open file.
enum Open {
    Store { dev: &'static StoreDev, access: Access },
    Pipe { dev: &'static PipeDev },
}

/// The current task's (uid, euid).
fn current_ids() -> (u32, u32) {
    let uid = current!().uid().into_uid_in_current_ns();
    let euid = kernel::task::Kuid::current_euid().into_uid_in_current_ns();
    (uid, euid)
}

/// LDD3's override, asked only when the owner does not match (`open_lazy`):
/// capable() audits and sets PF_SUPERPRIV, so the owner's opens must not call it.
fn may_override() -> bool {
    capable(bindings::CAP_DAC_OVERRIDE)
}

/// LDD3 trims a store opened write-only; scull-rs also trims on O_TRUNC.
fn maybe_trim(st: &State, dev: &StoreDev, file: &FileRef<'_>) -> R<()> {
    if file.write_only() || (file.writable() && file.flags() & bindings::O_TRUNC != 0) {
        lock_interruptible(dev)?.trim(st.params.geometry());
    }
    Ok(())
}

fn open_store(st: &'static State, minor: u32, file: &FileRef<'_>) -> R<Open> {
    let n = st.nr_devs;
    let (dev, access): (&'static StoreDev, Access) = match minor.checked_sub(n + st.p_nr_devs) {
        None => (&st.sculls[minor as usize], Access::Plain),
        Some(0) => {
            st.single_open.open()?;
            (&st.single, Access::Single)
        }
        Some(1) => {
            let (uid, euid) = current_ids();
            st.uid_state.lock().open_lazy(uid, euid, may_override)?;
            (&st.uid, Access::Uid)
        }
        Some(2) => {
            let ws = &st.wuid_state;
            let (uid, euid) = current_ids();
            let mut g = ws.lock.lock();
            loop {
                match g.open_lazy(uid, euid, may_override) {
                    Ok(()) => break,
                    Err(Error::WouldBlock) if !file.nonblocking() => {
                        if ws.cv.wait_interruptible(&mut g) {
                            return Err(Error::Interrupted);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            (&st.wuid, Access::Wuid)
        }
        Some(3) => {
            let key = chrdev::current_tty().ok_or(Error::Invalid)?;
            let g = st.params.geometry();
            let mut t = st.privs.lock();
            let i = t.lookup_or_create(key, || new_store(g))?;
            let d: &StoreDev = t.get(i).ok_or(Error::NoDevice)?;
            let p: *const StoreDev = d;
            // SAFETY: scullpriv devices are pinned boxes kept in the table until State drops at module
            // exit (never removed before), so the device outlives every open file.
            (unsafe { &*p }, Access::Priv)
        }
        Some(_) => return Err(Error::NoDevice),
    };
    if let Err(e) = maybe_trim(st, dev, file) {
        release_access(st, access);
        return Err(e);
    }
    // Shared store files serialise f_pos (read/write/llseek) on f_pos_lock, which
    // char devices do not get by default; llseek's SAFETY comment relies on it.
    file.set_atomic_pos();
    Ok(Open::Store { dev, access })
}

/// Gives back what `open_store` claimed for `access`.
fn release_access(st: &State, access: Access) {
    match access {
        Access::Plain | Access::Priv => {}
        Access::Single => st.single_open.release(),
        Access::Uid => st.uid_state.lock().release(),
        Access::Wuid => {
            if st.wuid_state.lock.lock().release() {
                st.wuid_state.cv.notify_all();
            }
        }
    }
}

impl FileOps for Open {
    fn open(minor: u32, file: &FileRef<'_>) -> R<Open> {
        let st = state()?;
        let n = st.nr_devs;
        if minor >= n && minor < n + st.p_nr_devs {
            let dev: &'static PipeDev = &st.pipes[(minor - n) as usize];
            file.stream_open();
            dev.lock()?.pipe.open(&KPlat, file.readable(), file.writable(), st.params.p_buffer() as usize)?;
            return Ok(Open::Pipe { dev });
        }
        open_store(st, minor, file)
    }

    fn release(self, file: &FileRef<'_>) {
        let Ok(st) = state() else { return };
        match self {
            Open::Pipe { dev } => {
                let _ = dev.async_queue.helper(-1, file, false);
                dev.release(file.readable(), file.writable());
            }
            Open::Store { access, .. } => release_access(st, access),
        }
    }

    fn read(&self, file: &FileRef<'_>, buf: UserSlice, count: usize, pos: Option<&mut i64>) -> R<usize> {
        let mut w = buf.writer();
        match self {
            Open::Store { dev, .. } => {
                // Store files are seekable (not FMODE_STREAM): the VFS always passes a position.
                let pos = pos.ok_or(Error::Invalid)?;
                let at = u64::try_from(*pos).map_err(|_| Error::Invalid)?;
                let n = lock_interruptible(dev)?.read_with(at, count, |src| w.write_slice(src).map_err(|_| Error::Fault))?;
                *pos += n as i64;
                Ok(n)
            }
            Open::Pipe { dev } => loop {
                let mut g = dev.lock()?;
                let r = g.pipe.read_with(count, |src| w.write_slice(src).map_err(|_| Error::Fault));
                match r {
                    Err(Error::WouldBlock) if !file.nonblocking() => {
                        if dev.wait(g, &dev.inq, &dev.waiting_readers) {
                            return Err(Error::Interrupted);
                        }
                    }
                    Ok(n) => {
                        drop(g);
                        dev.wake(&dev.outq);
                        return Ok(n);
                    }
                    Err(e) => return Err(e),
                }
            },
        }
    }

    fn write(&self, file: &FileRef<'_>, buf: UserSlice, count: usize, pos: Option<&mut i64>) -> R<usize> {
        let mut r = buf.reader();
        match self {
            Open::Store { dev, .. } => {
                let pos = pos.ok_or(Error::Invalid)?;
                let at = u64::try_from(*pos).map_err(|_| Error::Invalid)?;
                let n = lock_interruptible(dev)?.write_with(at, count, |dst| r.read_slice(dst).map_err(|_| Error::Fault))?;
                *pos += n as i64;
                Ok(n)
            }
            Open::Pipe { dev } => loop {
                let mut g = dev.lock()?;
                let res = g.pipe.write_with(count, |dst| r.read_slice(dst).map_err(|_| Error::Fault));
                match res {
                    Err(Error::WouldBlock) if !file.nonblocking() => {
                        if dev.wait(g, &dev.outq, &dev.waiting_writers) {
                            return Err(Error::Interrupted);
                        }
                    }
                    Ok(n) => {
                        drop(g);
                        dev.wake(&dev.inq);
                        dev.async_queue.kill_io_in();
                        return Ok(n);
                    }
                    Err(e) => return Err(e),
                }
            },
        }
    }

    fn llseek(&self, _file: &FileRef<'_>, pos: i64, off: i64, whence: u32) -> R<i64> {
        match self {
            Open::Pipe { .. } => Err(Error::NotSeekable),
            Open::Store { dev, .. } => {
                let whence = Whence::from_raw(whence)?;
                let size = lock_interruptible(dev)?.size();
                let p = store::seek(u64::try_from(pos).map_err(|_| Error::Invalid)?, size, whence, off)?;
                i64::try_from(p).map_err(|_| Error::Invalid)
            }
        }
    }

    fn ioctl(&self, _file: &FileRef<'_>, code: u32, arg: usize) -> R<i64> {
        let st = state()?;
        let cmd = Cmd::from_linux_code(code)?;
        let privileged = cmd.needs_privilege() && capable(bindings::CAP_SYS_ADMIN);
        if cmd.needs_privilege() && !privileged {
            return Err(Error::Perm);
        }
        let user = |len| UserSlice::new(UserPtr::from_addr(arg), len);
        if cmd == Cmd::Stats {
            return stats_ioctl(st, user(ioctl::LINUX_STATS_SIZE as usize));
        }
        let value = match cmd.arg_in() {
            ArgIn::None => 0,
            ArgIn::Value => i32::try_from(arg as i64).map_err(|_| Error::Invalid)?,
            ArgIn::Pointer => user(4).reader().read::<i32>().map_err(|_| Error::Fault)?,
        };
        let result = ioctl::execute(&st.params, cmd, value, privileged)?;
        match cmd.arg_out() {
            ArgOut::Pointer => {
                user(4).writer().write(&result).map_err(|_| Error::Fault)?;
                Ok(0)
            }
            ArgOut::Return => Ok(result as i64),
            _ => Ok(0),
        }
    }

    fn poll(&self, file: &FileRef<'_>, table: &PollTable<'_>) -> u32 {
        match self {
            Open::Store { .. } => bindings::POLLIN | bindings::POLLRDNORM | bindings::POLLOUT | bindings::POLLWRNORM,
            Open::Pipe { dev } => {
                table.register_wait(file.as_file(), &dev.inq);
                table.register_wait(file.as_file(), &dev.outq);
                // A signal ends the wait for a lock held by a stalled copy:
                // nothing is ready, and the poll syscall, seeing the signal
                // pending, returns EINTR (ERESTARTNOHAND).
                let Ok(g) = dev.lock() else { return 0 };
                let mut mask = 0;
                if g.pipe.readable() {
                    mask |= bindings::POLLIN | bindings::POLLRDNORM;
                }
                if g.pipe.writable() {
                    mask |= bindings::POLLOUT | bindings::POLLWRNORM;
                }
                mask
            }
        }
    }

    fn fasync(&self, fd: i32, file: &FileRef<'_>, on: bool) -> R<()> {
        match self {
            Open::Pipe { dev } => dev.async_queue.helper(fd, file, on),
            Open::Store { .. } => Ok(()),
        }
    }
}

/// SCULL_IOCSTATS: the report, NUL-terminated, truncated to the buffer.
fn stats_ioctl(st: &State, out: UserSlice) -> R<i64> {
    let size = ioctl::LINUX_STATS_SIZE as usize;
    fault::check()?;
    let mut buf = KVec::<u8>::zeroed(size, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
    let len = {
        let mut t = report::TextBuf::new(&mut buf[..size - 1]);
        // A TextBuf never fails: an error is a signal while waiting for a device's lock.
        st.mem_report(&mut t).and_then(|()| st.pipe_report(&mut t)).map_err(|_| Error::Interrupted)?;
        t.len()
    };
    out.writer().write_slice(&buf[..len + 1]).map_err(|_| Error::Fault)?;
    Ok(len as i64)
}

// ---------------------------------------------------------------------------
// /proc

struct MemReport;
impl procfs::Report for MemReport {
    fn show(w: &mut dyn fmt::Write) -> fmt::Result {
        state().map_err(|_| fmt::Error)?.mem_report(w)
    }
}

struct PipeReport;
impl procfs::Report for PipeReport {
    fn show(w: &mut dyn fmt::Write) -> fmt::Result {
        state().map_err(|_| fmt::Error)?.pipe_report(w)
    }
}

// ---------------------------------------------------------------------------
// Module

/// What init registered, torn down in field order: /proc, nodes, cdev, region.
struct Registration {
    _proc: KVec<procfs::Entry>,
    _nodes: Nodes,
    _cdev: Cdev,
    _region: Region,
}

struct Inner {
    reg: Option<Registration>,
    state: KBox<State>,
}

struct ScullModule {
    inner: Option<Inner>,
}

fn register(st: &State, module: &'static ThisModule, major: u32, minor: u32) -> R<Registration> {
    let total = st.nr_devs + st.p_nr_devs + 4;
    let region = Region::new(major, minor, total, c"scull")?;
    REGION_BASE.store(region.base, Ordering::Release);
    let cdev = Cdev::new::<Open>(module, region.base, total)?;
    let mut nodes = Nodes::new(c"scull")?;
    let mut name = NameBuf::new();
    for i in 0..st.nr_devs {
        name.set(format_args!("scull{i}"));
        nodes.add(region.base + i, name.as_cstr())?;
    }
    for i in 0..st.p_nr_devs {
        name.set(format_args!("scullpipe{i}"));
        nodes.add(region.base + st.nr_devs + i, name.as_cstr())?;
    }
    let access_base = region.base + st.nr_devs + st.p_nr_devs;
    for (i, n) in [c"scullsingle", c"sculluid", c"scullwuid", c"scullpriv"].into_iter().enumerate() {
        nodes.add(access_base + i as u32, n)?;
    }
    let mut proc = KVec::with_capacity(3, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
    for e in [
        procfs::Entry::new::<MemReport>(c"scullmem")?,
        procfs::Entry::new::<MemReport>(c"scullseq")?,
        procfs::Entry::new::<PipeReport>(c"scullpipe")?,
    ] {
        proc.push_within_capacity(e).map_err(|_| Error::NoMemory)?;
    }
    Ok(Registration { _proc: proc, _nodes: nodes, _cdev: cdev, _region: region })
}

impl kernel::Module for ScullModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let p = params::loaded();
        let (quantum, qset, p_buffer) = (p.quantum, p.qset, p.p_buffer);
        let nr_devs = geometry::nr_devs(p.nr_devs as i64).map_err(kerr)? as u32;
        let p_nr_devs = geometry::nr_devs(p.p_nr_devs as i64).map_err(kerr)? as u32;
        let params = Params::with(quantum as i64, qset as i64, p_buffer as i64).map_err(kerr)?;
        params.set_max_size(p.max_size).map_err(kerr)?;
        let state = KBox::new(State::new(params, nr_devs, p_nr_devs).map_err(kerr)?, GFP_KERNEL)?;
        // Published before the first cdev_add: an open may come right after it.
        STATE.store(&*state as *const State as *mut State, Ordering::Release);
        let mut inner = Inner { reg: None, state };
        match register(&inner.state, module, p.major, p.minor) {
            Ok(r) => inner.reg = Some(r),
            Err(e) => {
                STATE.store(core::ptr::null_mut(), Ordering::Release);
                return Err(kerr(e));
            }
        }
        pr_info!(
            "major {} minors {}.. : {} scull, {} scullpipe, 4 access devices; quantum={} qset={} p_buffer={} max_size={}\n",
            chrdev::major(region_base()),
            chrdev::minor(region_base()),
            nr_devs,
            p_nr_devs,
            quantum,
            qset,
            p_buffer,
            p.max_size
        );
        Ok(ScullModule { inner: Some(inner) })
    }
}

impl Drop for ScullModule {
    fn drop(&mut self) {
        if let Some(mut inner) = self.inner.take() {
            // No new opens or /proc reads after this; no file is open (module refcount is 0).
            drop(inner.reg.take());
            STATE.store(core::ptr::null_mut(), Ordering::Release);
            inner.state.privs.lock().clear();
            drop(inner);
        }
        pr_info!("unloaded, {} allocations outstanding\n", kmem::outstanding());
    }
}

//! A small, safe char-device layer over `kernel::bindings`: a chrdev region,
//! a cdev with a `file_operations` table generated from the [`FileOps`]
//! trait, a class whose devices devtmpfs turns into /dev nodes, and fasync
//! queues. 7.3's `miscdevice` has no llseek, poll or fasync and gives `open`
//! no per-device data, so scull needs this instead.
//!
//! Every raw pointer stays inside this file; the rest of the module sees
//! references, `UserSlice`s and scull-core's `Error`.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong};
use core::marker::PhantomData;

use kernel::alloc::{flags::GFP_KERNEL, KBox, KVec};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::poll::PollTable;
use kernel::sync::{Mutex, MutexGuard};
use kernel::types::Opaque;
use kernel::uaccess::{UserPtr, UserSlice};

use crate::error::Error;

const MINORBITS: u32 = 20;
// <linux/fs.h> fmode_t bits (casts in the header: bindgen emits no constants).
const FMODE_READ: u32 = 1 << 0;
const FMODE_WRITE: u32 = 1 << 1;
const FMODE_ATOMIC_POS: u32 = 1 << 15;

pub(crate) const fn mkdev(major: u32, minor: u32) -> u32 {
    (major << MINORBITS) | minor
}

pub(crate) const fn major(dev: u32) -> u32 {
    dev >> MINORBITS
}

pub(crate) const fn minor(dev: u32) -> u32 {
    dev & ((1 << MINORBITS) - 1)
}

/// A negative errno for the kernel (ERESTARTSYS for an interrupted wait).
pub(crate) fn errno(e: Error) -> c_int {
    -e.kernel_errno()
}

fn from_kernel_err(e: kernel::error::Error) -> Error {
    Error::from_errno(-e.to_errno()).unwrap_or(Error::Invalid)
}

fn is_err_ptr<T>(p: *const T) -> bool {
    (p as usize) >= (-4095isize) as usize
}

/// `IS_ERR`/`PTR_ERR`/NULL as scull-core errors.
fn check_ptr<T>(p: *mut T) -> Result<*mut T, Error> {
    if p.is_null() {
        Err(Error::NoMemory)
    } else if is_err_ptr(p) {
        Err(Error::from_errno(-(p as isize) as i32).unwrap_or(Error::Invalid))
    } else {
        Ok(p)
    }
}

/// The file an operation runs on (valid for the duration of the callback).
pub(crate) struct FileRef<'a> {
    ptr: *mut bindings::file,
    _p: PhantomData<&'a bindings::file>,
}

impl FileRef<'_> {
    /// `f_flags` (O_ACCMODE, O_NONBLOCK, ...).
    pub(crate) fn flags(&self) -> u32 {
        // SAFETY: `ptr` is the valid file of the current callback.
        unsafe { (*self.ptr).f_flags }
    }

    pub(crate) fn nonblocking(&self) -> bool {
        self.flags() & bindings::O_NONBLOCK != 0
    }

    /// Opened for reading / writing (from `f_mode`).
    pub(crate) fn readable(&self) -> bool {
        // SAFETY: as in `flags`.
        unsafe { (*self.ptr).f_mode & FMODE_READ != 0 }
    }

    pub(crate) fn writable(&self) -> bool {
        // SAFETY: as in `flags`.
        unsafe { (*self.ptr).f_mode & FMODE_WRITE != 0 }
    }

    pub(crate) fn write_only(&self) -> bool {
        self.flags() & bindings::O_ACCMODE == bindings::O_WRONLY
    }

    /// The file as the kernel crate's `File` (for poll tables).
    pub(crate) fn as_file(&self) -> &kernel::fs::File {
        // SAFETY: the file is valid and referenced by the VFS for the whole callback.
        unsafe { kernel::fs::File::from_raw_file(self.ptr) }
    }

    /// Marks the file not seekable (pread/pwrite/lseek: ESPIPE). The VFS then
    /// passes `ppos = NULL` to read and write (FMODE_STREAM).
    pub(crate) fn stream_open(&self) {
        // SAFETY: called from open with the file being opened; stream_open only sets f_mode bits.
        unsafe { bindings::stream_open(core::ptr::null_mut(), self.ptr) };
    }

    /// FMODE_ATOMIC_POS is set (see [`FileRef::set_atomic_pos`]).
    pub(crate) fn atomic_pos(&self) -> bool {
        // SAFETY: as in `flags`; f_mode does not change after open.
        unsafe { (*self.ptr).f_mode & FMODE_ATOMIC_POS != 0 }
    }

    /// Sets FMODE_ATOMIC_POS, which regular files get and char devices do not:
    /// `fdget_pos` then takes the file's `f_pos_lock` around read, write and
    /// llseek whenever the file is shared (another fd, another thread), so
    /// `f_pos` is never read and written by two of them at once.
    pub(crate) fn set_atomic_pos(&self) {
        // SAFETY: called from open, before the file is installed in any fd table, so nothing
        // else reads or writes f_mode yet.
        unsafe { (*self.ptr).f_mode |= FMODE_ATOMIC_POS };
    }
}

/// A device's file operations. `Self` is the per-open state, kept boxed in
/// `private_data` from `open` to `release`.
pub(crate) trait FileOps: Sized + Send + Sync + 'static {
    /// `minor` is the offset of the opened node in the region.
    fn open(minor: u32, file: &FileRef<'_>) -> Result<Self, Error>;
    fn release(self, _file: &FileRef<'_>) {}
    /// `pos` is the position to use and update, or `None` for a stream
    /// (FMODE_STREAM, set by [`FileRef::stream_open`]: the VFS passes NULL).
    fn read(&self, file: &FileRef<'_>, buf: UserSlice, count: usize, pos: Option<&mut i64>) -> Result<usize, Error>;
    fn write(&self, file: &FileRef<'_>, buf: UserSlice, count: usize, pos: Option<&mut i64>) -> Result<usize, Error>;
    /// Returns the new position (the caller stores it in `f_pos`).
    fn llseek(&self, file: &FileRef<'_>, pos: i64, off: i64, whence: u32) -> Result<i64, Error>;
    fn ioctl(&self, file: &FileRef<'_>, cmd: u32, arg: usize) -> Result<i64, Error>;
    /// The ready mask (POLLIN...); register wait queues with `table`.
    fn poll(&self, file: &FileRef<'_>, table: &PollTable<'_>) -> u32;
    fn fasync(&self, fd: i32, file: &FileRef<'_>, on: bool) -> Result<(), Error>;
}

/// The `file_operations` table of `T`.
pub(crate) struct Vtable<T: FileOps>(PhantomData<T>);

impl<T: FileOps> Vtable<T> {
    const FOPS: bindings::file_operations = bindings::file_operations {
        owner: <crate::LocalModule as kernel::ModuleMetadata>::THIS_MODULE.as_ptr(),
        open: Some(Self::open),
        release: Some(Self::release),
        read: Some(Self::read),
        write: Some(Self::write),
        llseek: Some(Self::llseek),
        unlocked_ioctl: Some(Self::ioctl),
        compat_ioctl: bindings::compat_ptr_ioctl,
        poll: Some(Self::poll),
        fasync: Some(Self::fasync),
        ..pin_init::zeroed()
    };

    pub(crate) fn get() -> &'static bindings::file_operations {
        &Self::FOPS
    }

    /// # Safety
    /// `file` must be a file opened through this table (its `private_data`
    /// set by `open`) and valid for `'a`.
    unsafe fn state<'a>(file: *mut bindings::file) -> (&'a T, FileRef<'a>) {
        // SAFETY: by the function's contract, `private_data` is the `KBox<T>` leaked by `open`,
        // freed only in `release`, which the VFS never runs concurrently with other operations.
        let t = unsafe { &*((*file).private_data as *const T) };
        (t, FileRef { ptr: file, _p: PhantomData })
    }

    unsafe extern "C" fn open(inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: the VFS passes valid inode and file pointers to open.
        let rdev = unsafe { (*inode).i_rdev };
        let fr = FileRef { ptr: file, _p: PhantomData };
        let base = crate::region_base();
        let Some(m) = minor(rdev).checked_sub(minor(base)) else {
            return errno(Error::NoDevice);
        };
        // Allocate first: once `T::open` has claimed the device, nothing may fail.
        let slot = match KBox::<T>::new_uninit(GFP_KERNEL) {
            Ok(s) => s,
            Err(_) => return errno(Error::NoMemory),
        };
        let state = match T::open(m, &fr) {
            Ok(s) => s,
            Err(e) => return errno(e),
        };
        let b = KBox::write(slot, state);
        // SAFETY: `file` is valid; private_data is ours until release.
        unsafe { (*file).private_data = KBox::into_raw(b) as *mut c_void };
        0
    }

    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `private_data` was set by `open` from `KBox::into_raw`; release runs once.
        let b = unsafe { KBox::from_raw((*file).private_data as *mut T) };
        let fr = FileRef { ptr: file, _p: PhantomData };
        T::release(KBox::into_inner(b), &fr);
        0
    }

    unsafe extern "C" fn read(file: *mut bindings::file, buf: *mut c_char, count: usize, ppos: *mut i64) -> isize {
        // SAFETY: called by the VFS on a file opened through this table.
        let (t, fr) = unsafe { Self::state(file) };
        let us = UserSlice::new(UserPtr::from_ptr(buf as *mut c_void), count);
        // SAFETY: `ppos` is NULL for FMODE_STREAM files; otherwise it points at the position
        // for this call only (the VFS's local copy of f_pos, or pread's/pwrite's offset), which
        // nothing else touches until we return.
        let pos = unsafe { ppos.as_mut() };
        match t.read(&fr, us, count, pos) {
            Ok(n) => n as isize,
            Err(e) => errno(e) as isize,
        }
    }

    unsafe extern "C" fn write(file: *mut bindings::file, buf: *const c_char, count: usize, ppos: *mut i64) -> isize {
        // SAFETY: called by the VFS on a file opened through this table.
        let (t, fr) = unsafe { Self::state(file) };
        let us = UserSlice::new(UserPtr::from_ptr(buf as *mut c_void), count);
        // SAFETY: `ppos` is NULL for FMODE_STREAM files; otherwise it points at the position
        // for this call only (the VFS's local copy of f_pos, or pread's/pwrite's offset), which
        // nothing else touches until we return.
        let pos = unsafe { ppos.as_mut() };
        match t.write(&fr, us, count, pos) {
            Ok(n) => n as isize,
            Err(e) => errno(e) as isize,
        }
    }

    unsafe extern "C" fn llseek(file: *mut bindings::file, off: i64, whence: c_int) -> i64 {
        // SAFETY: called by the VFS on a file opened through this table.
        let (t, fr) = unsafe { Self::state(file) };
        if !fr.atomic_pos() {
            // Only files opened with `set_atomic_pos` (the seekable ones) touch f_pos here.
            return errno(Error::NotSeekable) as i64;
        }
        // SAFETY: `file` is valid and has FMODE_ATOMIC_POS (checked above): when the file is
        // shared, fdget_pos holds its f_pos_lock across this call and across the read/write
        // that update f_pos; unshared, no one else can reach f_pos.
        let pos = unsafe { (*file).f_pos };
        match t.llseek(&fr, pos, off, whence as u32) {
            Ok(p) => {
                // SAFETY: as above.
                unsafe { (*file).f_pos = p };
                p
            }
            Err(e) => errno(e) as i64,
        }
    }

    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: called by the VFS on a file opened through this table.
        let (t, fr) = unsafe { Self::state(file) };
        match t.ioctl(&fr, cmd, arg as usize) {
            Ok(v) => v as c_long,
            Err(e) => errno(e) as c_long,
        }
    }

    unsafe extern "C" fn poll(file: *mut bindings::file, wait: *mut bindings::poll_table_struct) -> bindings::__poll_t {
        // SAFETY: called by the VFS on a file opened through this table.
        let (t, fr) = unsafe { Self::state(file) };
        // SAFETY: the VFS passes a null or valid poll table for the duration of the call.
        let table = unsafe { PollTable::from_raw(wait) };
        t.poll(&fr, &table)
    }

    unsafe extern "C" fn fasync(fd: c_int, file: *mut bindings::file, on: c_int) -> c_int {
        // SAFETY: called by the VFS on a file opened through this table.
        let (t, fr) = unsafe { Self::state(file) };
        match t.fasync(fd, &fr, on != 0) {
            Ok(()) => 0,
            Err(e) => errno(e),
        }
    }
}

/// LDD3's `down_interruptible`: takes `m` in TASK_INTERRUPTIBLE, so a
/// caller that waits for a holder stalled in a user copy (a userfaultfd or
/// FUSE-backed buffer) can be killed or interrupted by a signal
/// (`Interrupted`, ERESTARTSYS) instead of sleeping in D state. The kernel
/// crate's `Mutex` only offers `lock` (uninterruptible) and `try_lock`.
pub(crate) fn lock_interruptible<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, Error> {
    let raw = (m as *const Mutex<T>).cast::<bindings::mutex>().cast_mut();
    // SAFETY: `Lock` is `#[repr(C)]` and its first field is `state: Opaque<bindings::mutex>`
    // (repr(transparent)), so it sits at offset 0 and `raw` is `m`'s kernel mutex, initialised
    // by `new_mutex!` and alive as long as `m`.
    #[cfg(not(CONFIG_DEBUG_LOCK_ALLOC))]
    let r = unsafe { bindings::mutex_lock_interruptible(raw) };
    // SAFETY: as above (with lockdep, mutex_lock_interruptible is this with subclass 0).
    #[cfg(CONFIG_DEBUG_LOCK_ALLOC)]
    let r = unsafe { bindings::mutex_lock_interruptible_nested(raw, 0) };
    if r != 0 {
        return Err(Error::Interrupted);
    }
    // SAFETY: we own the lock (mutex_lock_interruptible returned 0); MutexBackend's guard state
    // is `()`, and the guard's drop unlocks it with mutex_unlock.
    Ok(unsafe { MutexGuard::new(m, ()) })
}

/// A capability check of the current task (`capable()`).
pub(crate) fn capable(cap: u32) -> bool {
    // SAFETY: capable() only reads the current task's credentials.
    unsafe { bindings::capable(cap as c_int) }
}

/// The device number of the current task's controlling tty, if it has one.
pub(crate) fn current_tty() -> Option<u32> {
    extern "C" {
        fn get_current_tty() -> *mut c_void;
        fn tty_devnum(tty: *mut c_void) -> u32;
        fn tty_kref_put(tty: *mut c_void);
    }
    // SAFETY: get_current_tty returns NULL or a tty with a reference we own.
    let tty = unsafe { get_current_tty() };
    if tty.is_null() {
        return None;
    }
    // SAFETY: `tty` is valid while we hold its reference, which we then drop.
    let dev = unsafe { tty_devnum(tty) };
    // SAFETY: drops the reference get_current_tty took.
    unsafe { tty_kref_put(tty) };
    Some(dev)
}

/// A fasync queue (LDD3's `async_queue`).
pub(crate) struct AsyncQueue(UnsafeCell<*mut bindings::fasync_struct>);

// SAFETY: the pointer is only touched by fasync_helper and kill_fasync, which lock it themselves.
unsafe impl Send for AsyncQueue {}
// SAFETY: as above.
unsafe impl Sync for AsyncQueue {}

impl AsyncQueue {
    pub(crate) const fn new() -> Self {
        AsyncQueue(UnsafeCell::new(core::ptr::null_mut()))
    }

    /// Adds or removes `file` (fd -1 and `on == false` removes it at release).
    pub(crate) fn helper(&self, fd: i32, file: &FileRef<'_>, on: bool) -> Result<(), Error> {
        // SAFETY: `file` is valid for the call; the queue head lives as long as the device and
        // fasync_helper serialises updates with its own lock.
        let r = unsafe { bindings::fasync_helper(fd, file.ptr, on as c_int, self.0.get()) };
        if r < 0 {
            Err(Error::from_errno(-r).unwrap_or(Error::Invalid))
        } else {
            Ok(())
        }
    }

    /// Sends SIGIO with POLL_IN to every registered file.
    pub(crate) fn kill_io_in(&self) {
        // SAFETY: kill_fasync reads the queue under RCU; an empty queue is a no-op.
        unsafe { bindings::kill_fasync(self.0.get(), bindings::SIGIO as c_int, bindings::POLL_IN as c_int) };
    }
}

/// A chrdev region (`alloc_chrdev_region` or `register_chrdev_region`).
pub(crate) struct Region {
    pub(crate) base: u32,
    pub(crate) count: u32,
}

impl Region {
    pub(crate) fn new(major: u32, first_minor: u32, count: u32, name: &'static CStr) -> Result<Region, Error> {
        let mut dev: bindings::dev_t = 0;
        let r = if major != 0 {
            dev = mkdev(major, first_minor);
            // SAFETY: `name` is a static NUL-terminated string.
            unsafe { bindings::register_chrdev_region(dev, count, name.as_char_ptr()) }
        } else {
            // SAFETY: `dev` is a valid out-pointer, `name` static.
            unsafe { bindings::alloc_chrdev_region(&mut dev, first_minor, count, name.as_char_ptr()) }
        };
        if r < 0 {
            return Err(Error::from_errno(-r).unwrap_or(Error::Busy));
        }
        Ok(Region { base: dev, count })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the region was registered by `new` and is released once.
        unsafe { bindings::unregister_chrdev_region(self.base, self.count) };
    }
}

/// A cdev covering `count` minors from `first`, with `T`'s file operations.
pub(crate) struct Cdev {
    cdev: KBox<Opaque<bindings::cdev>>,
    added: bool,
}

// SAFETY: the cdev is only touched by `new` (init) and `drop` (exit); the VFS synchronises
// its own accesses.
unsafe impl Send for Cdev {}
// SAFETY: as above.
unsafe impl Sync for Cdev {}

impl Cdev {
    /// `module` becomes the cdev's owner (cdev_init zeroes it): chrdev_open's
    /// cdev_get then pins the module before it takes a reference to the cdev,
    /// so an open racing rmmod either pins the module (and rmmod fails with
    /// EBUSY) or fails with ENXIO; without it the open can hold the cdev past
    /// module exit, which frees it (LDD3 sets `owner = THIS_MODULE` too).
    pub(crate) fn new<T: FileOps>(module: &'static ThisModule, first: u32, count: u32) -> Result<Cdev, Error> {
        let cdev = KBox::new(Opaque::<bindings::cdev>::uninit(), GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        // SAFETY: cdev_init fully initialises the (boxed, never moved) cdev; the table is static.
        unsafe { bindings::cdev_init(cdev.get(), Vtable::<T>::get()) };
        // SAFETY: the cdev is initialised and not yet added, so nothing else reads it; the
        // module outlives the cdev (it is deleted in the module's exit).
        unsafe { (*cdev.get()).owner = module.as_ptr() };
        let mut c = Cdev { cdev, added: false };
        // SAFETY: the cdev is initialised; `first..first+count` is inside our region.
        let r = unsafe { bindings::cdev_add(c.cdev.get(), first, count) };
        if r < 0 {
            // SAFETY: a cdev that failed cdev_add still holds its kobject reference.
            unsafe { bindings::kobject_put(&raw mut (*c.cdev.get()).kobj) };
            return Err(Error::from_errno(-r).unwrap_or(Error::NoMemory));
        }
        c.added = true;
        Ok(c)
    }
}

impl Drop for Cdev {
    fn drop(&mut self) {
        if self.added {
            // SAFETY: the cdev was added by `new`; cdev_del waits for no one but stops new opens.
            unsafe { bindings::cdev_del(self.cdev.get()) };
        }
    }
}

/// A device class and its devices: devtmpfs creates the /dev nodes, mode 0666
/// as LDD3's scull_load script sets them.
pub(crate) struct Nodes {
    class: *mut bindings::class,
    devs: KVec<u32>,
}

// SAFETY: the class pointer is only used in `add` (init) and `drop` (exit).
unsafe impl Send for Nodes {}
// SAFETY: as above.
unsafe impl Sync for Nodes {}

unsafe extern "C" fn devnode_0666(_dev: *const bindings::device, mode: *mut bindings::umode_t) -> *mut c_char {
    if !mode.is_null() {
        // SAFETY: the driver core passes NULL or a valid mode out-pointer.
        unsafe { *mode = 0o666 };
    }
    core::ptr::null_mut()
}

impl Nodes {
    pub(crate) fn new(name: &'static CStr) -> Result<Nodes, Error> {
        // SAFETY: `name` is static and NUL-terminated.
        let class = check_ptr(unsafe { bindings::class_create(name.as_char_ptr()) })?;
        // SAFETY: the class was just created and is not yet visible to devices.
        unsafe { (*class).devnode = Some(devnode_0666) };
        Ok(Nodes { class, devs: KVec::new() })
    }

    /// Creates `/dev/<name>` for `dev`.
    pub(crate) fn add(&mut self, dev: u32, name: &CStr) -> Result<(), Error> {
        self.devs.reserve(1, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        // SAFETY: the class is live; "%s" with a NUL-terminated name.
        let d = unsafe {
            bindings::device_create(self.class, core::ptr::null_mut(), dev, core::ptr::null_mut(), c"%s".as_ptr() as *const c_char, name.as_char_ptr())
        };
        check_ptr(d)?;
        self.devs.push_within_capacity(dev).map_err(|_| Error::NoMemory)?;
        Ok(())
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for &d in self.devs.iter() {
            // SAFETY: each device was created by `add` in this class.
            unsafe { bindings::device_destroy(self.class, d) };
        }
        // SAFETY: all devices are gone; the class was created by `new`.
        unsafe { bindings::class_destroy(self.class) };
    }
}

pub(crate) fn kernel_error(e: kernel::error::Error) -> Error {
    from_kernel_err(e)
}

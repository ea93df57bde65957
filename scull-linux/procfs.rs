//! /proc/scullmem, /proc/scullseq and /proc/scullpipe.
//!
//! 7.3's bindings do not include <linux/proc_fs.h>, so `struct proc_ops` and
//! the two functions are declared here, field for field from the header
//! (Debian builds with CONFIG_RANDSTRUCT_NONE=y and CONFIG_COMPAT=y, so the
//! declared order is the layout). Each file is a `single_open` seq_file whose
//! text comes from scull-core's report formatter.

use core::ffi::c_void;
use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong};
use core::fmt;
use core::marker::PhantomData;

use kernel::bindings;
use kernel::prelude::*;

type Open = unsafe extern "C" fn(*mut bindings::inode, *mut bindings::file) -> c_int;
type Read = unsafe extern "C" fn(*mut bindings::file, *mut c_char, usize, *mut i64) -> isize;
type Seek = unsafe extern "C" fn(*mut bindings::file, i64, c_int) -> i64;

/// `struct proc_ops` of include/linux/proc_fs.h (7.3).
#[repr(C)]
pub(crate) struct ProcOps {
    proc_flags: c_uint,
    proc_open: Option<Open>,
    proc_read: Option<Read>,
    proc_read_iter: Option<unsafe extern "C" fn(*mut c_void, *mut c_void) -> isize>,
    proc_write: Option<unsafe extern "C" fn(*mut bindings::file, *const c_char, usize, *mut i64) -> isize>,
    proc_lseek: Option<Seek>,
    proc_release: Option<Open>,
    proc_poll: Option<unsafe extern "C" fn(*mut bindings::file, *mut c_void) -> c_uint>,
    proc_ioctl: Option<unsafe extern "C" fn(*mut bindings::file, c_uint, c_ulong) -> c_long>,
    proc_compat_ioctl: Option<unsafe extern "C" fn(*mut bindings::file, c_uint, c_ulong) -> c_long>,
    proc_mmap: Option<unsafe extern "C" fn(*mut bindings::file, *mut c_void) -> c_int>,
    proc_get_unmapped_area: Option<unsafe extern "C" fn(*mut bindings::file, c_ulong, c_ulong, c_ulong, c_ulong) -> c_ulong>,
}

// The proc_ops pointers mention kernel types that are zero-sized without lockdep.
#[allow(improper_ctypes)]
extern "C" {
    fn proc_create(name: *const c_char, mode: u16, parent: *mut c_void, ops: *const ProcOps) -> *mut c_void;
    fn proc_remove(de: *mut c_void);
}

/// A report: writes its text.
pub(crate) trait Report: 'static {
    fn show(w: &mut dyn fmt::Write) -> fmt::Result;
}

/// `fmt::Write` into a seq_file.
struct Seq(*mut bindings::seq_file);

impl fmt::Write for Seq {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // SAFETY: the seq_file is valid during `show`; seq_write copies the bytes and records
        // overflow itself (seq_read then retries with a bigger buffer).
        unsafe { bindings::seq_write(self.0, s.as_ptr() as *const c_void, s.len()) };
        Ok(())
    }
}

struct Ops<R: Report>(PhantomData<R>);

impl<R: Report> Ops<R> {
    const OPS: ProcOps = ProcOps {
        proc_flags: 0,
        proc_open: Some(Self::open),
        proc_read: Some(bindings::seq_read),
        proc_read_iter: None,
        proc_write: None,
        proc_lseek: Some(bindings::seq_lseek),
        proc_release: Some(bindings::single_release),
        proc_poll: None,
        proc_ioctl: None,
        proc_compat_ioctl: None,
        proc_mmap: None,
        proc_get_unmapped_area: None,
    };

    unsafe extern "C" fn show(m: *mut bindings::seq_file, _v: *mut c_void) -> c_int {
        // seq_file output never fails: an error is a signal while waiting for a device's lock
        // (EINTR, not ERESTARTSYS: a restarted read would start the text over).
        match R::show(&mut Seq(m)) {
            Ok(()) => 0,
            Err(_) => -(bindings::EINTR as c_int),
        }
    }

    unsafe extern "C" fn open(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `file` is the file being opened; single_open attaches a seq_file to it.
        unsafe { bindings::single_open(file, Some(Self::show), core::ptr::null_mut()) }
    }
}

/// A /proc entry, removed on drop.
pub(crate) struct Entry(*mut c_void);

// SAFETY: the pointer is only used to remove the entry, once.
unsafe impl Send for Entry {}
// SAFETY: as above.
unsafe impl Sync for Entry {}

impl Entry {
    pub(crate) fn new<R: Report>(name: &'static CStr) -> Result<Entry, crate::error::Error> {
        let ops: &'static ProcOps = &Ops::<R>::OPS;
        // SAFETY: `name` and `ops` are static; NULL parent is /proc.
        let p = unsafe { proc_create(name.as_char_ptr(), 0o444, core::ptr::null_mut(), ops) };
        if p.is_null() {
            Err(crate::error::Error::NoMemory)
        } else {
            Ok(Entry(p))
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // SAFETY: created by `new`; proc_remove waits for current readers to finish.
        unsafe { proc_remove(self.0) };
    }
}

//! Debug fault injection and the outstanding-allocation counter, as module
//! parameters under `/sys/module/scull/parameters/`:
//!
//! - `scull_fail_at` (0644, uint): a countdown. Writing k makes the k-th
//!   allocation attempt from then on fail with ENOMEM, once; the parameter
//!   then reads 0 again (so reading it tells whether the fault was consumed).
//!   0, the default, is off. Counted attempts: quanta, pipe buffers, qset slot
//!   arrays, growth of the qset vector, the STATS ioctl's buffer.
//! - `scull_faults` (0444, uint): failures injected since load.
//! - `scull_outstanding` (0444, long): quanta, pipe buffers and qset slot
//!   arrays allocated and not yet freed (the number printed at unload).
//!
//! `module!`'s parameters are load-time only and not in sysfs, so these are
//! `struct kernel_param`s placed in the `__param` section by hand, which is
//! what C's `module_param_named` expands to, with the kernel's own
//! `param_ops_uint`/`param_ops_long` doing the parsing and printing.

use core::sync::atomic::{AtomicIsize, AtomicU32, Ordering};
use kernel::bindings;

use crate::error::{Error, Result};

/// The countdown (0: off).
pub(crate) static FAIL_AT: AtomicU32 = AtomicU32::new(0);
/// Failures injected.
pub(crate) static FAULTS: AtomicU32 = AtomicU32::new(0);
/// Allocations not yet freed.
pub(crate) static OUTSTANDING: AtomicIsize = AtomicIsize::new(0);

/// Called before every counted allocation: `NoMemory` when this attempt is
/// the one `scull_fail_at` chose.
#[inline]
pub(crate) fn check() -> Result<()> {
    if FAIL_AT.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let prev = FAIL_AT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1));
    if prev == Ok(1) {
        FAULTS.fetch_add(1, Ordering::SeqCst);
        return Err(Error::NoMemory);
    }
    Ok(())
}

/// A `kernel_param` in a `static` (also used by `params` for LDD3's parameters).
#[repr(transparent)]
pub(crate) struct Param(bindings::kernel_param);

// SAFETY: the kernel only reads the descriptor itself; the values it points to are atomics
// (the kernel's param ops read and write them with plain aligned word accesses, under the
// kernel_param lock, which cannot tear on x86-64).
unsafe impl Sync for Param {}

pub(crate) const fn param(name: &'static core::ffi::CStr, ops: *const bindings::kernel_param_ops, perm: u16, arg: *mut core::ffi::c_void) -> Param {
    Param(bindings::kernel_param {
        name: name.as_ptr().cast(),
        mod_: &raw mut bindings::__this_module,
        ops,
        perm,
        level: -1,
        flags: 0,
        __bindgen_anon_1: bindings::kernel_param__bindgen_ty_1 { arg },
    })
}

#[link_section = "__param"]
#[used]
static PARAM_FAIL_AT: Param = param(c"scull_fail_at", &raw const bindings::param_ops_uint, 0o644, FAIL_AT.as_ptr().cast());

#[link_section = "__param"]
#[used]
static PARAM_FAULTS: Param = param(c"scull_faults", &raw const bindings::param_ops_uint, 0o444, FAULTS.as_ptr().cast());

#[link_section = "__param"]
#[used]
static PARAM_OUTSTANDING: Param =
    param(c"scull_outstanding", &raw const bindings::param_ops_long, 0o444, OUTSTANDING.as_ptr().cast());

// What modinfo lists for them.
#[link_section = ".modinfo"]
#[used]
static MODINFO: [u8; 275] = *b"parmtype=scull_fail_at:uint\0\
parm=scull_fail_at:Debug: the k-th allocation from now fails with ENOMEM (countdown; 0 off)\0\
parmtype=scull_faults:uint\0parm=scull_faults:Allocation failures injected\0\
parmtype=scull_outstanding:long\0parm=scull_outstanding:Allocations not yet freed\0";

//! LDD3's module parameters, readable (0444) in `/sys/module/scull/parameters/`
//! with their load-time values, as LDD3's `module_param(..., S_IRUGO)` are,
//! plus `scull_max_size`, the per-device size cap.
//!
//! The debug fault-injection parameters of `fault` (`scull_fail_at`, 0644;
//! `scull_faults` and `scull_outstanding`, 0444) are declared here too.
//!
//! `module!`'s parameters are load-time only and not in sysfs, so these are
//! `struct kernel_param`s placed in the `__param` section by hand, which is
//! what C's `module_param_named` expands to, parsed and printed by the
//! kernel's own `param_ops_*`. The kernel writes LDD3's once, while it parses
//! insmod's arguments before `init`; nothing writes them after (0444), so
//! what sysfs shows is what the module was loaded with. The ioctls change the
//! live defaults in scull-core's `Params`, not these.

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use kernel::bindings;

use crate::fault::{FAIL_AT, FAULTS, OUTSTANDING};
use crate::geometry::{DEFAULT_MAX_SIZE, DEFAULT_NR_DEVS, DEFAULT_P_BUFFER, DEFAULT_P_NR_DEVS, DEFAULT_QSET, DEFAULT_QUANTUM};

/// A `kernel_param` in a `static`.
#[repr(transparent)]
struct Param(bindings::kernel_param);

// SAFETY: the kernel only reads the descriptor itself; the values it points to are atomics
// (the kernel's param ops read and write them with plain aligned word accesses, under the
// kernel_param lock, which cannot tear on x86-64).
unsafe impl Sync for Param {}

/// The descriptor of parameter `name` of this module: `ops` parse and print
/// the value at `arg`, `perm` is its sysfs mode.
const fn param(name: &'static core::ffi::CStr, ops: *const bindings::kernel_param_ops, perm: u16, arg: *mut core::ffi::c_void) -> Param {
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

static MAJOR: AtomicU32 = AtomicU32::new(0);
static MINOR: AtomicU32 = AtomicU32::new(0);
static NR_DEVS: AtomicU32 = AtomicU32::new(DEFAULT_NR_DEVS as u32);
static QUANTUM: AtomicI32 = AtomicI32::new(DEFAULT_QUANTUM);
static QSET: AtomicI32 = AtomicI32::new(DEFAULT_QSET);
static P_NR_DEVS: AtomicU32 = AtomicU32::new(DEFAULT_P_NR_DEVS as u32);
static P_BUFFER: AtomicI32 = AtomicI32::new(DEFAULT_P_BUFFER);
static MAX_SIZE: AtomicU64 = AtomicU64::new(DEFAULT_MAX_SIZE);

/// The values insmod gave (or the defaults).
pub(crate) struct Loaded {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) nr_devs: u32,
    pub(crate) quantum: i32,
    pub(crate) qset: i32,
    pub(crate) p_nr_devs: u32,
    pub(crate) p_buffer: i32,
    pub(crate) max_size: u64,
}

pub(crate) fn loaded() -> Loaded {
    let r = Ordering::Relaxed;
    Loaded {
        major: MAJOR.load(r),
        minor: MINOR.load(r),
        nr_devs: NR_DEVS.load(r),
        quantum: QUANTUM.load(r),
        qset: QSET.load(r),
        p_nr_devs: P_NR_DEVS.load(r),
        p_buffer: P_BUFFER.load(r),
        max_size: MAX_SIZE.load(r),
    }
}

/// A `kernel_param` for the atomic `$value`, with permissions `$perm`.
macro_rules! sysfs_param {
    ($static:ident, $name:literal, $ops:ident, $perm:literal, $value:ident) => {
        #[link_section = "__param"]
        #[used]
        static $static: Param = param($name, &raw const bindings::$ops, $perm, $value.as_ptr().cast());
    };
}

sysfs_param!(PARAM_MAJOR, c"scull_major", param_ops_uint, 0o444, MAJOR);
sysfs_param!(PARAM_MINOR, c"scull_minor", param_ops_uint, 0o444, MINOR);
sysfs_param!(PARAM_NR_DEVS, c"scull_nr_devs", param_ops_uint, 0o444, NR_DEVS);
sysfs_param!(PARAM_QUANTUM, c"scull_quantum", param_ops_int, 0o444, QUANTUM);
sysfs_param!(PARAM_QSET, c"scull_qset", param_ops_int, 0o444, QSET);
sysfs_param!(PARAM_P_NR_DEVS, c"scull_p_nr_devs", param_ops_uint, 0o444, P_NR_DEVS);
sysfs_param!(PARAM_P_BUFFER, c"scull_p_buffer", param_ops_int, 0o444, P_BUFFER);
sysfs_param!(PARAM_MAX_SIZE, c"scull_max_size", param_ops_ulong, 0o444, MAX_SIZE);
sysfs_param!(PARAM_FAIL_AT, c"scull_fail_at", param_ops_uint, 0o644, FAIL_AT);
sysfs_param!(PARAM_FAULTS, c"scull_faults", param_ops_uint, 0o444, FAULTS);
sysfs_param!(PARAM_OUTSTANDING, c"scull_outstanding", param_ops_long, 0o444, OUTSTANDING);

/// What modinfo lists for every parameter; the array's length is computed.
const MODINFO_TEXT: &[u8] = concat!(
    "parmtype=scull_major:uint\0parm=scull_major:Major number (0: dynamic)\0",
    "parmtype=scull_minor:uint\0parm=scull_minor:First minor number\0",
    "parmtype=scull_nr_devs:uint\0parm=scull_nr_devs:Number of scull devices\0",
    "parmtype=scull_quantum:int\0parm=scull_quantum:Quantum size\0",
    "parmtype=scull_qset:int\0parm=scull_qset:Quantum set size\0",
    "parmtype=scull_p_nr_devs:uint\0parm=scull_p_nr_devs:Number of scullpipe devices\0",
    "parmtype=scull_p_buffer:int\0parm=scull_p_buffer:scullpipe buffer size\0",
    "parmtype=scull_max_size:ulong\0parm=scull_max_size:Per-device size cap in bytes (default 512 MiB)\0",
    "parmtype=scull_fail_at:uint\0",
    "parm=scull_fail_at:Debug: the k-th allocation from now fails with ENOMEM (countdown; 0 off)\0",
    "parmtype=scull_faults:uint\0parm=scull_faults:Allocation failures injected\0",
    "parmtype=scull_outstanding:long\0parm=scull_outstanding:Allocations not yet freed\0",
)
.as_bytes();

const fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let mut i = 0;
    while i < N {
        a[i] = s[i];
        i += 1;
    }
    a
}

#[link_section = ".modinfo"]
#[used]
static MODINFO: [u8; MODINFO_TEXT.len()] = array(MODINFO_TEXT);

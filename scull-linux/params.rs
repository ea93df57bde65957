//! LDD3's module parameters, readable (0444) in `/sys/module/scull/parameters/`
//! with their load-time values, as LDD3's `module_param(..., S_IRUGO)` are,
//! plus `scull_max_size`, the per-device size cap.
//!
//! `module!`'s parameters are load-time only and not in sysfs, so these are
//! hand-placed `struct kernel_param`s (see `fault`), parsed and printed by the
//! kernel's own `param_ops_*`. The kernel writes them once, while it parses
//! insmod's arguments before `init`; nothing writes them after (0444), so
//! what sysfs shows is what the module was loaded with. The ioctls change the
//! live defaults in scull-core's `Params`, not these.

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use kernel::bindings;

use crate::fault::{param, Param};
use crate::geometry::{DEFAULT_MAX_SIZE, DEFAULT_NR_DEVS, DEFAULT_P_BUFFER, DEFAULT_P_NR_DEVS, DEFAULT_QSET, DEFAULT_QUANTUM};

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

macro_rules! ro_param {
    ($static:ident, $name:literal, $ops:ident, $value:ident) => {
        #[link_section = "__param"]
        #[used]
        static $static: Param = param($name, &raw const bindings::$ops, 0o444, $value.as_ptr().cast());
    };
}

ro_param!(PARAM_MAJOR, c"scull_major", param_ops_uint, MAJOR);
ro_param!(PARAM_MINOR, c"scull_minor", param_ops_uint, MINOR);
ro_param!(PARAM_NR_DEVS, c"scull_nr_devs", param_ops_uint, NR_DEVS);
ro_param!(PARAM_QUANTUM, c"scull_quantum", param_ops_int, QUANTUM);
ro_param!(PARAM_QSET, c"scull_qset", param_ops_int, QSET);
ro_param!(PARAM_P_NR_DEVS, c"scull_p_nr_devs", param_ops_uint, P_NR_DEVS);
ro_param!(PARAM_P_BUFFER, c"scull_p_buffer", param_ops_int, P_BUFFER);
ro_param!(PARAM_MAX_SIZE, c"scull_max_size", param_ops_ulong, MAX_SIZE);

/// What modinfo lists for them.
const MODINFO_TEXT: &[u8] = concat!(
    "parmtype=scull_major:uint\0parm=scull_major:Major number (0: dynamic)\0",
    "parmtype=scull_minor:uint\0parm=scull_minor:First minor number\0",
    "parmtype=scull_nr_devs:uint\0parm=scull_nr_devs:Number of scull devices\0",
    "parmtype=scull_quantum:int\0parm=scull_quantum:Quantum size\0",
    "parmtype=scull_qset:int\0parm=scull_qset:Quantum set size\0",
    "parmtype=scull_p_nr_devs:uint\0parm=scull_p_nr_devs:Number of scullpipe devices\0",
    "parmtype=scull_p_buffer:int\0parm=scull_p_buffer:scullpipe buffer size\0",
    "parmtype=scull_max_size:ulong\0parm=scull_max_size:Per-device size cap in bytes (default 512 MiB)\0",
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

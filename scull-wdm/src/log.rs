//! `kprint!` and friends: LDD3's printk/PDEBUG as
//! `DbgPrintEx(DPFLTR_IHVDRIVER_ID, level, "%s", line)`. The text is
//! formatted with `core::fmt` into a stack buffer and passed as one `%s`
//! argument (no C format string ever sees driver data).
//!
//! Levels (docs/windows.md, "Debugging", says how to see each):
//! - `kprint!` / `kerror!`: DPFLTR_ERROR_LEVEL (0), shown by default: load,
//!   unload and the leak count, refused parameters, failed DDIs;
//! - `kwarn!`: DPFLTR_WARNING_LEVEL (1): requests refused for lack of memory,
//!   injected allocation failures, test modes;
//! - `ktrace!`: DPFLTR_TRACE_LEVEL (2): opens and closes, IRPs pended and
//!   completed;
//! - `kinfo!`: DPFLTR_INFO_LEVEL (3): per-request detail.
//!
//! Formatting costs stack and time even when the filter drops the line, so
//! trace and info lines are formatted only when [`VERBOSE`] allows them
//! (registry value `scull_debug_level`, default 1: errors and warnings).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

pub const ERROR: u32 = 0;
pub const WARNING: u32 = 1;
pub const TRACE: u32 = 2;
pub const INFO: u32 = 3;

/// The highest level formatted at all (the debugger's filter still applies).
pub static VERBOSE: AtomicU32 = AtomicU32::new(WARNING);

pub type LineBuf = scull_core::report::StackStr<256>;

/// Prints one line at `level` (DPFLTR_ERROR_LEVEL..DPFLTR_INFO_LEVEL).
pub fn print(level: u32, args: fmt::Arguments<'_>) {
    if level > VERBOSE.load(Ordering::Relaxed) && level > WARNING {
        return;
    }
    let mut b = LineBuf::new();
    let _ = b.write_str("scull: ");
    let _ = b.write_fmt(args);
    let _ = b.write_str("\n");
    // SAFETY: a NUL-terminated buffer passed to a constant "%s" format.
    unsafe {
        crate::ddk::DbgPrintEx(crate::ddk::DPFLTR_IHVDRIVER_ID as _, level as _, c"%s".as_ptr().cast(), b.with_nul().as_ptr());
    }
}

/// An error-level line (always shown).
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::log::print($crate::log::ERROR, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! kwarn {
    ($($arg:tt)*) => { $crate::log::print($crate::log::WARNING, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! ktrace {
    ($($arg:tt)*) => { $crate::log::print($crate::log::TRACE, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! kinfo {
    ($($arg:tt)*) => { $crate::log::print($crate::log::INFO, format_args!($($arg)*)) };
}

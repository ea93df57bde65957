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
//! The parameters themselves (their `kernel_param`s and modinfo lines) are
//! declared in `params`, with LDD3's.

use core::sync::atomic::{AtomicIsize, AtomicU32, Ordering};

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

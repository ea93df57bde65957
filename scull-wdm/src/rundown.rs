//! Unload's rundown of the driver's running routines.
//!
//! Windows calls DriverUnload only when no file object refers to the
//! driver's devices any more, so no dispatch or cancel routine can run
//! during or after it. Wine does not wait: `sc stop` runs DriverUnload on
//! winedevice.exe's service-control thread at once, while its dispatch
//! thread may be running an IRP, typically the IRP_MJ_CLOSE of a process
//! that exited because unload cancelled its pended read. Measured under Wine
//! 8 before this rundown: that close released a pipe's buffer while
//! `dev::delete_all` dropped the same pipe, and the unload line said
//! `outstanding 'lucS' blocks: -1` (a double free), in 1 of 6 full runs of
//! `cargo xtask wine`.
//!
//! Every dispatch routine holds an [`Active`] while it runs, taken before it
//! touches a device extension; once unload has begun, a new dispatch is
//! refused without touching one. Cancel routines hold one too. Unload
//! ([`begin_and_wait`]) marks the driver unloading and waits until nothing is
//! active; then it cancels what is pended and waits again before it frees
//! anything. What this cannot cover: a cancel routine the I/O manager has
//! already taken from an IRP but not yet entered when the last wait ends (a
//! few instructions on the cancelling thread). On Windows none of this runs
//! concurrently with unload at all.

use crate::ddk::*;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Routines now running in the driver.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Set by unload: new dispatches are refused.
static UNLOADING: AtomicBool = AtomicBool::new(false);
/// Released whenever the active count drops to 0 while unloading.
static DRAINED: Drained = Drained(UnsafeCell::new(unsafe_zeroed()));

struct Drained(UnsafeCell<KSEMAPHORE>);

// SAFETY: the KSEMAPHORE is only touched through the kernel's semaphore
// routines, which synchronise themselves, after `init` ran once in
// DriverEntry before any routine of the driver can be called.
unsafe impl Sync for Drained {}

const fn unsafe_zeroed() -> KSEMAPHORE {
    // SAFETY: KSEMAPHORE is plain data (a dispatcher header and a limit);
    // all-zero is a valid value until KeInitializeSemaphore sets it up.
    unsafe { core::mem::zeroed() }
}

/// DriverEntry, before any device exists.
pub fn init() {
    ACTIVE.store(0, Ordering::SeqCst);
    UNLOADING.store(false, Ordering::SeqCst);
    // Count 0; the limit is LONG's maximum, since every drop to 0 while
    // unloading releases it once.
    // SAFETY: DriverEntry runs before any routine that uses the semaphore
    // (no device exists yet); the semaphore is a static and never moves.
    unsafe { KeInitializeSemaphore(DRAINED.0.get(), 0, i32::MAX) }
}

/// One running routine; dropping it ends it.
pub struct Active(());

impl Drop for Active {
    fn drop(&mut self) {
        if ACTIVE.fetch_sub(1, Ordering::SeqCst) == 1 && UNLOADING.load(Ordering::SeqCst) {
            // Cancel routines end at DISPATCH_LEVEL at most.
            // SAFETY: initialised in DriverEntry; a release without a
            // following wait is callable at IRQL <= DISPATCH_LEVEL.
            unsafe { KeReleaseSemaphore(DRAINED.0.get(), 0, 1, 0) };
        }
    }
}

/// A dispatch routine begins: None once unload has begun (refuse the IRP
/// without touching the device extension).
pub fn enter() -> Option<Active> {
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let active = Active(());
    if UNLOADING.load(Ordering::SeqCst) {
        return None; // `active` drops here
    }
    Some(active)
}

/// A cancel routine begins: it owns its IRP and must complete it, so it is
/// never refused.
pub fn enter_cancel() -> Active {
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    Active(())
}

/// Unload: from now on dispatches are refused; returns when no routine of
/// the driver is running. PASSIVE_LEVEL (it waits).
pub fn begin_and_wait() {
    UNLOADING.store(true, Ordering::SeqCst);
    wait_idle();
}

/// Waits until no routine of the driver is running (after unload began).
pub fn wait_idle() {
    while ACTIVE.load(Ordering::SeqCst) != 0 {
        // The last routine to end while unloading releases the semaphore, so
        // the wait ends; a release left over from an earlier drop to 0 only
        // makes the loop look again.
        // SAFETY: initialised in DriverEntry; an infinite, non-alertable
        // kernel-mode wait at PASSIVE_LEVEL (DriverUnload's IRQL).
        let _ = unsafe { KeWaitForSingleObject(DRAINED.0.get().cast(), Executive, KernelMode as _, 0, core::ptr::null_mut()) };
    }
}

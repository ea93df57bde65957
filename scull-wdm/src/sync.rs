//! The two kernel locks the driver uses, wrapped so that data is reachable
//! only through a guard.
//!
//! - [`SemLock`]: a `KSEMAPHORE` with count 1 (LDD3's `struct semaphore`),
//!   taken at PASSIVE_LEVEL only, for the quantum stores. The holder may touch
//!   pageable memory; nobody waits for data while holding it. The whole hold
//!   is a critical region (KeEnterCriticalRegion before the wait,
//!   KeLeaveCriticalRegion after the release): normal kernel APCs, and with
//!   them thread suspension, are held off while the thread owns the
//!   semaphore, so a suspended holder cannot leave every other caller
//!   blocked in a non-alertable wait.
//! - [`SpinLock`]: a `KSPIN_LOCK` (raise to DISPATCH_LEVEL), for the pipes and
//!   the pended-IRP queues. Holders touch only non-paged memory (pool blocks
//!   and the system buffers of buffered I/O) and never wait.
//!
//! Both must be initialised in place ([`SemLock::init`], [`SpinLock::init`])
//! and never moved afterwards: they live in device extensions.

use crate::ddk::*;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

pub struct SemLock<T> {
    sem: UnsafeCell<KSEMAPHORE>,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialised by the semaphore.
unsafe impl<T: Send> Sync for SemLock<T> {}

impl<T> SemLock<T> {
    pub fn new(data: T) -> Self {
        // SAFETY: KSEMAPHORE is plain data; zero is a valid (uninitialised) state until `init`.
        SemLock { sem: UnsafeCell::new(unsafe { core::mem::zeroed() }), data: UnsafeCell::new(data) }
    }

    /// Initialises the semaphore where it now lives.
    ///
    /// # Safety
    /// Called once, before any `lock`, and `self` never moves afterwards.
    pub unsafe fn init(&self) {
        // SAFETY: caller contract; count 1, limit 1.
        unsafe { KeInitializeSemaphore(self.sem.get(), 1, 1) }
    }

    /// Enters a critical region, then waits for the semaphore
    /// (non-alertable, kernel mode). PASSIVE_LEVEL only.
    pub fn lock(&self) -> SemGuard<'_, T> {
        // Entered first, so that the thread cannot be suspended between
        // acquiring the semaphore and the guard existing.
        let region = CriticalRegion::enter();
        // SAFETY: the semaphore was initialised in place (`init` contract); an
        // infinite wait on a dispatcher object at PASSIVE_LEVEL (a critical
        // region does not raise the IRQL).
        let _ = unsafe {
            KeWaitForSingleObject(self.sem.get().cast(), Executive, KernelMode as _, 0, core::ptr::null_mut())
        };
        SemGuard { lock: self, _region: region }
    }
}

/// A critical region (normal kernel APCs disabled for the current thread),
/// left on drop. Must be dropped on the thread that entered it.
struct CriticalRegion(core::marker::PhantomData<*mut ()>);

impl CriticalRegion {
    fn enter() -> CriticalRegion {
        // SAFETY: callable at IRQL <= APC_LEVEL (the SemLock is taken at
        // PASSIVE_LEVEL only); it only adjusts the current thread's
        // kernel-APC-disable count, which `drop` restores on the same thread
        // (the type is !Send).
        unsafe { KeEnterCriticalRegion() };
        CriticalRegion(core::marker::PhantomData)
    }
}

impl Drop for CriticalRegion {
    fn drop(&mut self) {
        // SAFETY: pairs with the KeEnterCriticalRegion in `enter`, on the same
        // thread (!Send), at the IRQL it was entered at.
        unsafe { KeLeaveCriticalRegion() };
    }
}

/// Holds the semaphore, inside a critical region. Dropping it releases the
/// semaphore first, then leaves the region (the fields drop after `drop`).
pub struct SemGuard<'a, T> {
    lock: &'a SemLock<T>,
    _region: CriticalRegion,
}

impl<T> Deref for SemGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the semaphore.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SemGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the semaphore, exclusively.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SemGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: we hold the semaphore (count 0); releasing by 1 restores it.
        unsafe {
            KeReleaseSemaphore(self.lock.sem.get(), 0, 1, 0);
        }
    }
}

pub struct SpinLock<T> {
    lock: UnsafeCell<KSPIN_LOCK>,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialised by the spin lock.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub fn new(data: T) -> Self {
        SpinLock { lock: UnsafeCell::new(0), data: UnsafeCell::new(data) }
    }

    /// # Safety
    /// Called once before any `lock`; `self` never moves afterwards.
    pub unsafe fn init(&self) {
        // SAFETY: caller contract.
        unsafe { KeInitializeSpinLock(self.lock.get()) }
    }

    /// Acquires at IRQL <= DISPATCH_LEVEL, raising to DISPATCH_LEVEL.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        // SAFETY: an initialised spin lock; the old IRQL is restored on drop.
        let irql = unsafe { KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        SpinGuard { lock: self, irql }
    }

    /// The data, for the one-time initialisation of self-referencing parts
    /// (list heads) before the lock is shared.
    ///
    /// # Safety
    /// No other reference to the data exists.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_unlocked(&self) -> &mut T {
        // SAFETY: caller contract.
        unsafe { &mut *self.data.get() }
    }
}

pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
    irql: KIRQL,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the spin lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the spin lock, exclusively.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: we hold the lock, acquired at `irql`.
        unsafe { KeReleaseSpinLock(self.lock.lock.get(), self.irql) }
    }
}

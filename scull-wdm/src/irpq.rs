//! [`IrpQueue`]: a queue of pended IRPs that owns its `LIST_ENTRY` head,
//! guarded by the owner's spin lock, with the classic cancel protocol
//! (IoSetCancelRoutine as the ownership token):
//!
//! - Queueing sets the cancel routine; if the IRP was already cancelled and
//!   the routine can be taken back, the caller completes it as cancelled.
//! - Dequeueing takes the cancel routine back first. If it is already gone,
//!   the I/O manager is cancelling the IRP: it is unlinked (left linked to
//!   itself) and left to the cancel routine.
//! - The cancel routine drops the cancel spin lock, takes the owner's lock,
//!   unlinks the IRP (harmless if already unlinked) and completes it.
//!
//! IRPs that leave a queue are collected on a local [`Done`] list and
//! completed after the spin lock is released.
//!
//! An `IrpQueue` lives inside the data of a [`crate::sync::SpinLock`]
//! (`PipeState`, `WuidState`), so `&mut IrpQueue` is reachable only through
//! the held lock's `SpinGuard` (or, once, through `SpinLock::get_unlocked`
//! before the lock is shared, to [`IrpQueue::init`] it): the `&mut self`
//! borrow of every method is the proof that the lock is held. Its head is
//! self-referencing once initialised, so the queue never moves afterwards
//! (it lives in a device extension).

use crate::ddk::*;
use core::cell::UnsafeCell;
use core::marker::PhantomPinned;
use core::ptr;

/// A queue of pended IRPs (a `LIST_ENTRY` head and the IRPs' own list
/// entries), guarded by the spin lock whose data holds it.
///
/// The head is written through the queued entries' `Flink`/`Blink` as well
/// as through `self`, so it sits in an `UnsafeCell` and the type is `!Unpin`
/// (`PhantomPinned`): rustc marks neither `&IrpQueue` nor `&mut IrpQueue`
/// (nor a `&mut` of the state holding it) `noalias`, so the optimiser does
/// not keep a value of the head across those writes (a `noalias` head let
/// the test build's `bridge::admit_waiting_calls` loop on a stale `Flink`).
pub struct IrpQueue {
    head: UnsafeCell<LIST_ENTRY>,
    _pinned: PhantomPinned,
}

impl IrpQueue {
    /// An unusable queue until [`IrpQueue::init`] runs where it will live.
    pub const fn new() -> Self {
        IrpQueue { head: UnsafeCell::new(LIST_ENTRY { Flink: ptr::null_mut(), Blink: ptr::null_mut() }), _pinned: PhantomPinned }
    }

    /// Makes the head an empty list where it now lives.
    ///
    /// # Safety
    /// Called once, before any other method, and the queue never moves
    /// afterwards.
    pub unsafe fn init(&mut self) {
        // SAFETY: a head we own exclusively (`&mut`), in its final place
        // (contract).
        unsafe { InitializeListHead(self.head.get()) }
    }

    fn head(&mut self) -> *mut LIST_ENTRY {
        self.head.get()
    }

    /// Marks `irp` pending and queues it with `cancel` as its cancel
    /// routine; the caller returns STATUS_PENDING in every case. Returns false
    /// when the IRP was cancelled before it could be queued: the caller then
    /// completes it (after unlocking).
    ///
    /// # Safety
    /// `irp` is owned by the caller's dispatch routine; `cancel` unlinks it
    /// from this queue under this queue's lock ([`IrpQueue::unlink_cancelled`]).
    pub unsafe fn enqueue(&mut self, irp: *mut IRP, cancel: CancelFn) -> bool {
        // SAFETY: the caller owns the IRP (contract).
        unsafe { IoMarkIrpPending(irp) };
        // SAFETY: as above; `insert` returns it to the caller if it cannot queue it.
        unsafe { self.insert(irp, cancel, false) }
    }

    /// Puts an IRP taken with [`IrpQueue::take`] back at the head (it could
    /// not make progress after all: e.g. a pipe write of up to PIPE_ATOMIC
    /// bytes that needs more room than is free). Returns false when it was
    /// cancelled in the meantime: the caller then completes it as cancelled.
    ///
    /// # Safety
    /// As for [`IrpQueue::enqueue`]; the IRP is already marked pending.
    pub unsafe fn requeue_front(&mut self, irp: *mut IRP, cancel: CancelFn) -> bool {
        // SAFETY: forwarded contract.
        unsafe { self.insert(irp, cancel, true) }
    }

    /// Sets the cancel routine, then links `irp` at the front or the tail,
    /// unless it was cancelled and the routine could be taken back (false).
    ///
    /// # Safety
    /// As for [`IrpQueue::enqueue`].
    unsafe fn insert(&mut self, irp: *mut IRP, cancel: CancelFn, front: bool) -> bool {
        // SAFETY: the caller owns the IRP (contract).
        unsafe { IoSetCancelRoutine(irp, Some(cancel)) };
        // SAFETY: as above; `Cancel` is a plain byte the I/O manager sets
        // before it takes the cancel routine.
        let cancelled = unsafe { (*irp).Cancel } != 0;
        // SAFETY: as above.
        if cancelled && unsafe { IoSetCancelRoutine(irp, None) }.is_some() {
            return false;
        }
        // Either not cancelled, or the cancel routine is on its way and will
        // unlink it under our lock.
        let head = self.head();
        // SAFETY: the IRP's list entry is ours while it is queued (contract).
        let e = unsafe { irp_list_entry(irp) };
        if front {
            // SAFETY: `head` is an initialised list guarded by the held lock
            // (`&mut self`); `e` is a free list entry.
            unsafe { InsertHeadList(head, e) };
        } else {
            // SAFETY: as above.
            unsafe { InsertTailList(head, e) };
        }
        true
    }

    /// Takes `irp` off the queue if the cancel routine can be taken back.
    /// Returns false if a cancel is in progress (the IRP is then unlinked,
    /// and the cancel routine completes it).
    ///
    /// # Safety
    /// `irp` is on this queue.
    pub unsafe fn take(&mut self, irp: *mut IRP) -> bool {
        // SAFETY: a queued IRP is valid until its cancel routine or the
        // taker completes it, and neither can run while we hold the lock.
        let ours = unsafe { IoSetCancelRoutine(irp, None) }.is_some();
        // SAFETY: as above.
        let e = unsafe { irp_list_entry(irp) };
        // SAFETY: as above: the entry is linked on this queue, guarded by
        // the held lock (`&mut self`).
        unsafe { RemoveEntryList(e) };
        ours
    }

    /// A cancel routine's unlink of an IRP it is completing (harmless if
    /// [`IrpQueue::take`] already unlinked it: a removed entry points to
    /// itself).
    ///
    /// # Safety
    /// `irp` was queued on this queue, and the caller is its cancel routine.
    pub unsafe fn unlink_cancelled(&mut self, irp: *mut IRP) {
        // SAFETY: the cancel routine owns the IRP (contract).
        let e = unsafe { irp_list_entry(irp) };
        // SAFETY: the entry is linked on this queue or points to itself, and
        // the queue is guarded by the held lock (`&mut self`).
        unsafe { RemoveEntryList(e) }
    }

    /// The IRP at the head of the queue, if any (still queued).
    pub fn first(&mut self) -> Option<*mut IRP> {
        let head = self.head();
        // SAFETY: an initialised head guarded by the held lock.
        let first = unsafe { (*head).Flink };
        // SAFETY: every entry but the head is an IRP's list entry.
        (first != head).then(|| unsafe { irp_from_list_entry(first) })
    }

    /// Calls `f` with each queued IRP, in order, reading the next entry
    /// before the call (so `f` may take the IRP it is given).
    fn each(&mut self, mut f: impl FnMut(&mut Self, *mut IRP)) {
        let head = self.head();
        // SAFETY: an initialised head guarded by the held lock.
        let mut e = unsafe { (*head).Flink };
        while e != head {
            // SAFETY: a linked entry of this queue.
            let next = unsafe { (*e).Flink };
            // SAFETY: every entry but the head is an IRP's list entry.
            f(self, unsafe { irp_from_list_entry(e) });
            e = next;
        }
    }

    /// Number of IRPs queued.
    pub fn len(&mut self) -> u32 {
        let mut n = 0;
        self.each(|_, _| n += 1);
        n
    }

    /// Takes every IRP for which `want` says true (as [`IrpQueue::take`]:
    /// one being cancelled is left to its cancel routine) and hands it to
    /// `taken`, in queue order. `s` is the caller's other locked state, for
    /// both closures.
    pub fn take_each<S>(&mut self, s: &mut S, want: impl Fn(&S, *mut IRP) -> bool, mut taken: impl FnMut(&mut S, *mut IRP)) {
        self.each(|q, irp| {
            // SAFETY: `irp` is on this queue (`each`).
            if want(s, irp) && unsafe { q.take(irp) } {
                taken(s, irp);
            }
        });
    }

    /// The first IRP whose file object is `file` (still queued).
    #[cfg(feature = "test-build")]
    pub fn find_file(&mut self, file: *mut FILE_OBJECT) -> Option<*mut IRP> {
        let mut found = None;
        self.each(|_, irp| {
            if found.is_none() && file_of(irp) == file {
                found = Some(irp);
            }
        });
        found
    }

    /// Moves every IRP whose file object is `file` (all of them when `file`
    /// is null) to `done`, with STATUS_CANCELLED.
    pub fn cancel_matching(&mut self, file: *mut FILE_OBJECT, done: &mut Done) {
        self.each(|q, irp| {
            // SAFETY: `irp` is on this queue (`each`); once taken it is ours
            // to complete.
            if (file.is_null() || file_of(irp) == file) && unsafe { q.take(irp) } {
                // SAFETY: taken: ours, off every queue.
                unsafe { done.push(irp, STATUS_CANCELLED, 0) };
            }
        });
    }
}

/// The file object of a queued IRP.
fn file_of(irp: *mut IRP) -> *mut FILE_OBJECT {
    // SAFETY: a queued IRP, valid while the queue's lock is held (callers
    // are `IrpQueue` methods that hold it).
    unsafe { crate::irp::file_object(irp) }
}

/// IRPs to complete once the lock is released, chained through their list
/// entries' `Flink` (null-terminated, in order). Nothing points back into
/// `Done`, so it may move. Completing on drop means an early return cannot
/// lose one.
pub struct Done {
    first: *mut LIST_ENTRY,
    last: *mut LIST_ENTRY,
}

impl Done {
    pub const fn new() -> Self {
        Done { first: ptr::null_mut(), last: ptr::null_mut() }
    }

    /// Adds an IRP (already off every queue) with its final status.
    ///
    /// # Safety
    /// The driver owns `irp` (cancel routine taken back or never set).
    pub unsafe fn push(&mut self, irp: *mut IRP, status: NTSTATUS, info: usize) {
        // SAFETY: the driver owns the IRP (contract).
        unsafe { set_io_status(irp, status, info) };
        // SAFETY: as above: its list entry is ours to use.
        let e = unsafe { irp_list_entry(irp) };
        // SAFETY: as above.
        unsafe { (*e).Flink = ptr::null_mut() };
        // SAFETY: as above.
        unsafe { (*e).Blink = ptr::null_mut() };
        if self.last.is_null() {
            self.first = e;
        } else {
            // SAFETY: `last` is the list entry of an IRP pushed before, ours.
            unsafe { (*self.last).Flink = e };
        }
        self.last = e;
    }

    /// Visits the IRPs collected so far.
    pub fn for_each(&mut self, mut f: impl FnMut(*mut IRP)) {
        let mut e = self.first;
        while !e.is_null() {
            // SAFETY: entries on the chain are list entries of IRPs we own.
            let next = unsafe { (*e).Flink };
            // SAFETY: as above.
            f(unsafe { irp_from_list_entry(e) });
            e = next;
        }
    }

    /// Completes every IRP collected. Call with no spin lock held.
    pub fn complete(&mut self) {
        let mut e = self.first;
        self.first = ptr::null_mut();
        self.last = ptr::null_mut();
        while !e.is_null() {
            // SAFETY: every entry is the list entry of an IRP we own with
            // its status set; the link is read before completion hands the
            // IRP back.
            let next = unsafe { (*e).Flink };
            // SAFETY: as above.
            let irp = unsafe { irp_from_list_entry(e) };
            // SAFETY: as above: ours, status set, not touched afterwards.
            unsafe { IoCompleteRequest(irp, IO_NO_INCREMENT) };
            e = next;
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.complete();
    }
}

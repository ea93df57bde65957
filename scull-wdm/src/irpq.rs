//! Queues of pended IRPs on `LIST_ENTRY` heads, guarded by the owner's spin
//! lock, with the classic cancel protocol (IoSetCancelRoutine as the
//! ownership token):
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

use crate::ddk::*;
use core::ptr;

/// Pends `irp` on `head` with `cancel` as its cancel routine. The caller holds
/// the lock that guards `head`, marks the IRP pending and returns
/// STATUS_PENDING in every case. Returns false when the IRP was cancelled
/// before it could be queued: the caller then completes it (after unlocking).
///
/// # Safety
/// `head` is an initialised list guarded by the held lock; `irp` is owned by
/// the caller's dispatch routine.
pub unsafe fn enqueue(head: *mut LIST_ENTRY, irp: *mut IRP, cancel: CancelFn) -> bool {
    // SAFETY: caller contract.
    unsafe {
        IoMarkIrpPending(irp);
        IoSetCancelRoutine(irp, Some(cancel));
        if (*irp).Cancel != 0 && IoSetCancelRoutine(irp, None).is_some() {
            return false;
        }
        // Either not cancelled, or the cancel routine is on its way and will
        // unlink it under our lock.
        InsertTailList(head, irp_list_entry(irp));
        true
    }
}

/// Puts an IRP taken with [`take`] back at the head of `head` (it could not
/// make progress after all: e.g. a pipe write of up to PIPE_ATOMIC bytes that
/// needs more room than is free). Returns false when it was cancelled in the
/// meantime: the caller then completes it as cancelled.
///
/// # Safety
/// As for [`enqueue`]; the IRP is already marked pending.
pub unsafe fn requeue_front(head: *mut LIST_ENTRY, irp: *mut IRP, cancel: CancelFn) -> bool {
    // SAFETY: caller contract.
    unsafe {
        IoSetCancelRoutine(irp, Some(cancel));
        if (*irp).Cancel != 0 && IoSetCancelRoutine(irp, None).is_some() {
            return false;
        }
        let e = irp_list_entry(irp);
        (*e).Flink = (*head).Flink;
        (*e).Blink = head;
        (*(*head).Flink).Blink = e;
        (*head).Flink = e;
        true
    }
}

/// Takes `irp` off its queue if the cancel routine can be taken back. Returns
/// false if a cancel is in progress (the IRP is then unlinked, and the cancel
/// routine completes it).
///
/// # Safety
/// `irp` is on a queue guarded by the held lock.
pub unsafe fn take(irp: *mut IRP) -> bool {
    // SAFETY: caller contract.
    unsafe {
        let ours = IoSetCancelRoutine(irp, None).is_some();
        RemoveEntryList(irp_list_entry(irp));
        ours
    }
}

/// The IRP at the head of `head`, if any (still queued).
///
/// # Safety
/// `head` is an initialised list guarded by the held lock.
pub unsafe fn first(head: *mut LIST_ENTRY) -> Option<*mut IRP> {
    // SAFETY: caller contract; entries are IRP list entries.
    unsafe {
        if IsListEmpty(head) {
            None
        } else {
            Some(irp_from_list_entry((*head).Flink))
        }
    }
}

/// Number of IRPs on `head`.
///
/// # Safety
/// `head` is an initialised list guarded by the held lock.
pub unsafe fn len(head: *mut LIST_ENTRY) -> u32 {
    let mut n = 0;
    // SAFETY: caller contract.
    unsafe {
        let mut e = (*head).Flink;
        while e != head {
            n += 1;
            e = (*e).Flink;
        }
    }
    n
}

/// The first IRP on `head` whose file object is `file` (still queued).
/// Used by the test build's bridge.
///
/// # Safety
/// `head` is an initialised list guarded by the held lock.
#[cfg(feature = "test-build")]
pub unsafe fn find_file(head: *mut LIST_ENTRY, file: *mut FILE_OBJECT) -> Option<*mut IRP> {
    // SAFETY: caller contract; entries are IRP list entries.
    unsafe {
        let mut e = (*head).Flink;
        while e != head {
            let irp = irp_from_list_entry(e);
            if (*IoGetCurrentIrpStackLocation(irp)).FileObject == file {
                return Some(irp);
            }
            e = (*e).Flink;
        }
    }
    None
}

/// Moves every IRP on `head` whose file object is `file` (all of them when
/// `file` is null) to `done`, with STATUS_CANCELLED.
///
/// # Safety
/// `head` is an initialised list guarded by the held lock.
pub unsafe fn cancel_matching(head: *mut LIST_ENTRY, file: *mut FILE_OBJECT, done: &mut Done) {
    // SAFETY: caller contract; `next` is read before the entry is unlinked.
    unsafe {
        let mut e = (*head).Flink;
        while e != head {
            let next = (*e).Flink;
            let irp = irp_from_list_entry(e);
            let fo = (*IoGetCurrentIrpStackLocation(irp)).FileObject;
            if (file.is_null() || fo == file) && take(irp) {
                done.push(irp, STATUS_CANCELLED, 0);
            }
            e = next;
        }
    }
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
        // SAFETY: caller contract: the IRP's list entry is ours to use.
        unsafe {
            set_io_status(irp, status, info);
            let e = irp_list_entry(irp);
            (*e).Flink = ptr::null_mut();
            (*e).Blink = ptr::null_mut();
            if self.last.is_null() {
                self.first = e;
            } else {
                (*self.last).Flink = e;
            }
            self.last = e;
        }
    }

    /// Visits the IRPs collected so far.
    pub fn for_each(&mut self, mut f: impl FnMut(*mut IRP)) {
        let mut e = self.first;
        while !e.is_null() {
            // SAFETY: entries on the chain are IRPs we own.
            unsafe {
                let next = (*e).Flink;
                f(irp_from_list_entry(e));
                e = next;
            }
        }
    }

    /// Completes every IRP collected. Call with no spin lock held.
    pub fn complete(&mut self) {
        let mut e = self.first;
        self.first = ptr::null_mut();
        self.last = ptr::null_mut();
        while !e.is_null() {
            // SAFETY: every entry is an IRP we own with its status set; the
            // link is read before completion hands the IRP back.
            unsafe {
                let next = (*e).Flink;
                IoCompleteRequest(irp_from_list_entry(e), IO_NO_INCREMENT);
                e = next;
            }
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.complete();
    }
}

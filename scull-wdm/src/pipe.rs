//! scullpipe on Windows, LDD3 pipe.c (`scull_p_read`, `scull_p_write`, the
//! reader/writer counts of `scull_p_open`/`scull_p_release`): scull-core's
//! `Pipe` under a spin lock (KeAcquireSpinLockRaiseToDpc), with reads on an
//! empty pipe and writes to a full one pended on `LIST_ENTRY` queues with
//! cancel routines (`irpq`) where LDD3 sleeps on its wait queues.
//!
//! Nothing ever waits in a dispatch routine (Wine has one dispatch thread; on
//! Windows the caller's thread must not stall): a pended IRP completes when a
//! writer or reader makes progress, or when it is cancelled (CancelIoEx, the
//! handle's CLEANUP/CLOSE, unload). All copies under the lock are between
//! non-paged pool and the non-paged system buffer of buffered I/O.

use crate::ddk::*;
use crate::dev::{DevExt, Kind, PipeState, PARAMS};
use crate::irpq::{self, Done};
use crate::pool::Pool;
use crate::sync::{SpinGuard, SpinLock};
use scull_core::mem::Platform;
use scull_core::Error;

/// At most this many IRPs pend on one queue (a pipe's readers, its writers,
/// scullwuid's creates): far more than LDD3's blocking demos ever park, few
/// enough that a queue walk under the spin lock stays short and a user
/// cannot pin IRPs and their system buffers without end.
pub(crate) const MAX_PENDED: u32 = 64;

/// A request that would pend on a queue already holding [`MAX_PENDED`] IRPs
/// is refused with `NoMemory` (STATUS_INSUFFICIENT_RESOURCES, Win32
/// ERROR_NO_SYSTEM_RESOURCES: a kernel resource is exhausted, try later),
/// not `WouldBlock`, whose STATUS_CANT_WAIT a caller that asked to block
/// would not expect. Other results pass through.
///
/// # Safety
/// `queue` is an initialised list guarded by the held lock.
pub(crate) unsafe fn bound_pended<T>(r: Result<T, Error>, blocking: bool, queue: *mut LIST_ENTRY) -> Result<T, Error> {
    match r {
        // SAFETY: caller contract.
        Err(Error::WouldBlock) if blocking && unsafe { irpq::len(queue) } >= MAX_PENDED => Err(Error::NoMemory),
        r => r,
    }
}

/// IRP_MJ_READ / IRP_MJ_WRITE on a pipe, at PASSIVE_LEVEL (DISPATCH_LEVEL
/// under the spin lock): a read or write of `irp`'s system buffer. Returns
/// the status to return from dispatch (STATUS_PENDING when queued); the IRP
/// is completed or queued.
///
/// # Safety
/// `irp` is a read (`write == false`) or write IRP of buffered I/O on the pipe
/// `p`, owned by the dispatch routine.
pub unsafe fn transfer(p: &SpinLock<PipeState>, irp: *mut IRP, write: bool, nonblock: bool) -> NTSTATUS {
    let mut done = Done::new();
    let mut g = p.lock();
    // SAFETY: caller contract.
    let r = unsafe { try_io(&mut g, irp, write) };
    let queue = if write { &mut g.writeq as *mut LIST_ENTRY } else { &mut g.readq as *mut LIST_ENTRY };
    // SAFETY: the queue is guarded by the held lock.
    let r = unsafe { bound_pended(r, !nonblock, queue) };
    let status = match r {
        Ok(n) => {
            // Progress: wake the other side.
            // SAFETY: the lock is held.
            unsafe { service(&mut g, &mut done) };
            // SAFETY: we own the IRP; it was never queued.
            unsafe { done.push(irp, STATUS_SUCCESS, n) };
            STATUS_SUCCESS
        }
        Err(Error::WouldBlock) if !nonblock => {
            // SAFETY: the queue is guarded by the held lock; we own the IRP.
            if unsafe { !irpq::enqueue(queue, irp, cancel_routine) } {
                // SAFETY: cancelled before it was queued: ours to complete.
                unsafe { done.push(irp, STATUS_CANCELLED, 0) };
            }
            STATUS_PENDING
        }
        Err(e) => {
            // SAFETY: we own the IRP.
            unsafe { done.push(irp, e.ntstatus(), 0) };
            e.ntstatus()
        }
    };
    drop(g);
    done.complete();
    status
}

/// One attempt at moving `irp`'s bytes.
///
/// # Safety
/// The lock is held; `irp` is a buffered read or write IRP.
unsafe fn try_io(g: &mut SpinGuard<'_, PipeState>, irp: *mut IRP, write: bool) -> Result<usize, Error> {
    // SAFETY: caller contract: the current stack location and the system
    // buffer (Length bytes, non-paged) of a buffered read/write IRP.
    unsafe {
        let sl = IoGetCurrentIrpStackLocation(irp);
        let len = if write { (*sl).Parameters.Write.Length } else { (*sl).Parameters.Read.Length } as usize;
        if len == 0 {
            return Ok(0);
        }
        let buf = (*irp).AssociatedIrp.SystemBuffer as *mut u8;
        if buf.is_null() {
            return Err(Error::Fault);
        }
        let mut at = 0usize;
        if write {
            g.pipe.write_with(len, |dst| {
                core::ptr::copy_nonoverlapping(buf.add(at), dst.as_mut_ptr(), dst.len());
                at += dst.len();
                Ok(())
            })
        } else {
            g.pipe.read_with(len, |src| {
                core::ptr::copy_nonoverlapping(src.as_ptr(), buf.add(at), src.len());
                at += src.len();
                Ok(())
            })
        }
    }
}

/// Completes queued IRPs that can now make progress, until none can.
///
/// # Safety
/// The lock is held.
unsafe fn service(g: &mut SpinGuard<'_, PipeState>, done: &mut Done) {
    loop {
        let mut progressed = false;
        for write in [false, true] {
            loop {
                let head = if write { &mut g.writeq as *mut LIST_ENTRY } else { &mut g.readq as *mut LIST_ENTRY };
                let ready = if write { g.pipe.writable() } else { g.pipe.readable() };
                if !ready {
                    break;
                }
                // SAFETY: the queue is guarded by the held lock.
                let Some(irp) = (unsafe { irpq::first(head) }) else { break };
                // SAFETY: `irp` is on this queue.
                if unsafe { !irpq::take(irp) } {
                    continue; // being cancelled: its cancel routine completes it
                }
                // SAFETY: we own the IRP now (cancel routine taken back), and
                // hold the lock; it is completed or goes back to the head.
                unsafe {
                    match try_io(g, irp, write) {
                        Ok(n) => done.push(irp, STATUS_SUCCESS, n),
                        // Room for part of it only (an atomic write of up to
                        // PIPE_ATOMIC bytes waits for all of its room): it
                        // stays first in line.
                        Err(Error::WouldBlock) => {
                            if !irpq::requeue_front(head, irp, cancel_routine) {
                                done.push(irp, STATUS_CANCELLED, 0);
                            }
                            break;
                        }
                        Err(e) => done.push(irp, e.ntstatus(), 0),
                    }
                }
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
}

/// The cancel routine of pended pipe reads and writes.
unsafe extern "C" fn cancel_routine(d: *mut DEVICE_OBJECT, irp: *mut IRP) {
    let _active = crate::rundown::enter_cancel();
    // SAFETY: called by the I/O manager with the cancel spin lock held, for an
    // IRP we queued on this device's pipe.
    unsafe {
        IoReleaseCancelSpinLock((*irp).CancelIrql);
        if let Kind::Pipe(p) = &DevExt::of(d).kind {
            let g = p.lock();
            RemoveEntryList(irp_list_entry(irp));
            drop(g);
        }
        set_io_status(irp, STATUS_CANCELLED, 0);
        IoCompleteRequest(irp, IO_NO_INCREMENT);
    }
}

/// Cancels the pended IRPs of `file` (all of them if null): CLEANUP, CLOSE, unload.
pub fn cancel_file(p: &SpinLock<PipeState>, file: *mut FILE_OBJECT) {
    let mut done = Done::new();
    let mut g = p.lock();
    // SAFETY: both queues are guarded by the held lock.
    unsafe {
        irpq::cancel_matching(&mut g.readq, file, &mut done);
        irpq::cancel_matching(&mut g.writeq, file, &mut done);
    }
    drop(g);
    done.complete();
}

/// Open for reading and/or writing; the first open installs a buffer. The
/// buffer (up to 4 MiB, zeroed) is allocated here at PASSIVE_LEVEL, outside
/// the spin lock, then installed under it; if another opener installed one
/// meanwhile, ours is freed after the lock is dropped.
pub fn open(p: &SpinLock<PipeState>, read: bool, write: bool) -> Result<(), Error> {
    let mut spare = None;
    loop {
        let mut g = p.lock();
        if g.pipe.has_buffer() || spare.is_some() {
            let r = g.pipe.open_with(&mut spare, read, write);
            drop(g);
            drop(spare);
            return r;
        }
        // No buffer: the second pass has one in hand.
        drop(g);
        spare = Some(Pool.alloc_block((PARAMS.p_buffer() as usize).max(2))?);
    }
}

/// Last close of a handle.
pub fn release(p: &SpinLock<PipeState>, read: bool, write: bool) {
    p.lock().pipe.release(read, write);
}

/// (stats, waiting readers, waiting writers)
pub fn stats(p: &SpinLock<PipeState>) -> (scull_core::pipe::PipeStats, u32, u32) {
    let mut g = p.lock();
    // SAFETY: the queues are guarded by the held lock.
    let (r, w) = unsafe { (irpq::len(&mut g.readq), irpq::len(&mut g.writeq)) };
    (g.pipe.stats(), r, w)
}

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
use crate::irp;
use crate::irpq::{Done, IrpQueue};
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
/// `queue` is reached through the held spin guard.
pub(crate) fn bound_pended<T>(r: Result<T, Error>, blocking: bool, queue: &mut IrpQueue) -> Result<T, Error> {
    match r {
        Err(Error::WouldBlock) if blocking && queue.len() >= MAX_PENDED => Err(Error::NoMemory),
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
    let r = bound_pended(r, !nonblock, if write { &mut g.writeq } else { &mut g.readq });
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
            let q = if write { &mut g.writeq } else { &mut g.readq };
            // SAFETY: we own the IRP; `cancel_routine` unlinks it from this
            // queue under this lock.
            if unsafe { !q.enqueue(irp, cancel_routine) } {
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
    // SAFETY: a buffered read or write IRP (contract): its current stack
    // location is ours, and only read here.
    let sl = unsafe { irp::stack(irp) };
    let len = if write {
        // SAFETY: a write's parameters.
        unsafe { sl.Parameters.Write.Length }
    } else {
        // SAFETY: a read's parameters.
        unsafe { sl.Parameters.Read.Length }
    } as usize;
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: as above: its system buffer holds Length bytes of non-paged
    // memory, which the copies below stay within (`at` + chunk <= len).
    let buf = unsafe { irp::system_buffer(irp) };
    if buf.is_null() {
        return Err(Error::Fault);
    }
    let mut at = 0usize;
    if write {
        g.pipe.write_with(len, |dst| {
            // SAFETY: see `buf`.
            let from = unsafe { buf.add(at) };
            // SAFETY: see `buf`; `dst` is pool memory, not the buffer.
            unsafe { core::ptr::copy_nonoverlapping(from.cast_const(), dst.as_mut_ptr(), dst.len()) };
            at += dst.len();
            Ok(())
        })
    } else {
        g.pipe.read_with(len, |src| {
            // SAFETY: see `buf`.
            let to = unsafe { buf.add(at) };
            // SAFETY: see `buf`; `src` is pool memory, not the buffer.
            unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), to, src.len()) };
            at += src.len();
            Ok(())
        })
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
                let ready = if write { g.pipe.writable() } else { g.pipe.readable() };
                if !ready {
                    break;
                }
                let q = if write { &mut g.writeq } else { &mut g.readq };
                let Some(irp) = q.first() else { break };
                // SAFETY: `irp` is on this queue.
                if unsafe { !q.take(irp) } {
                    continue; // being cancelled: its cancel routine completes it
                }
                // We own the IRP now (cancel routine taken back), and hold
                // the lock; it is completed or goes back to the head.
                // SAFETY: a buffered read or write IRP of this pipe, ours.
                match unsafe { try_io(g, irp, write) } {
                    // SAFETY: ours, off the queue.
                    Ok(n) => unsafe { done.push(irp, STATUS_SUCCESS, n) },
                    // Room for part of it only (an atomic write of up to
                    // PIPE_ATOMIC bytes waits for all of its room): it
                    // stays first in line.
                    Err(Error::WouldBlock) => {
                        let q = if write { &mut g.writeq } else { &mut g.readq };
                        // SAFETY: ours, taken from this queue and already
                        // marked pending; `cancel_routine` unlinks it from
                        // this queue under this lock.
                        if unsafe { !q.requeue_front(irp, cancel_routine) } {
                            // SAFETY: cancelled meanwhile: still ours.
                            unsafe { done.push(irp, STATUS_CANCELLED, 0) };
                        }
                        break;
                    }
                    // SAFETY: ours, off the queue.
                    Err(e) => unsafe { done.push(irp, e.ntstatus(), 0) },
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
///
/// # Safety
/// Called only by the I/O manager, as the cancel routine of an IRP this
/// driver queued, with the cancel spin lock held.
unsafe extern "C" fn cancel_routine(d: *mut DEVICE_OBJECT, irp: *mut IRP) {
    let _active = crate::rundown::enter_cancel();
    // SAFETY: called by the I/O manager with the cancel spin lock held, for
    // an IRP we queued on this device's pipe: the cancel routine owns it.
    unsafe { irp::release_cancel_lock(irp) };
    // SAFETY: `d` is one of our devices (the I/O manager passes the IRP's).
    if let Kind::Pipe(p) = unsafe { &DevExt::of(d).kind } {
        let mut g = p.lock();
        let q = if is_write(irp) { &mut g.writeq } else { &mut g.readq };
        // SAFETY: the IRP was queued on `q` (writes on `writeq`, reads on
        // `readq`), and this is its cancel routine.
        unsafe { q.unlink_cancelled(irp) };
        drop(g);
    }
    // SAFETY: ours to complete (as above), and unlinked.
    unsafe { irp::finish(irp, STATUS_CANCELLED, 0) };
}

/// Whether a pipe IRP is a write (else a read).
fn is_write(irp: *mut IRP) -> bool {
    // SAFETY: a pipe read or write IRP the driver handles (its cancel routine).
    unsafe { irp::major(irp) == IRP_MJ_WRITE }
}

/// Cancels the pended IRPs of `file` (all of them if null): CLEANUP, CLOSE, unload.
pub fn cancel_file(p: &SpinLock<PipeState>, file: *mut FILE_OBJECT) {
    let mut done = Done::new();
    let mut g = p.lock();
    g.readq.cancel_matching(file, &mut done);
    g.writeq.cancel_matching(file, &mut done);
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
    let (r, w) = (g.readq.len(), g.writeq.len());
    (g.pipe.stats(), r, w)
}

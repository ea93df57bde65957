//! The Wine bridge: **test build only** (`--features test-build`,
//! `cargo xtask wdm --test-build`, output `target/wdm-test/`). The release
//! scull.sys has none of this: every code here is an unknown IOCTL
//! (STATUS_INVALID_DEVICE_REQUEST) there.
//!
//! Wine's I/O manager (8 and 10) returns the handle before IRP_MJ_CREATE
//! completes and delivers no create disposition, no path suffix and no
//! file-information IRPs. The bridge stands in for them, running the same
//! driver code as the native requests:
//! - `Flags::REFUSED` (`handle`): a refused create's status is kept in the file object and
//!   returned for every later request on it, so the refusal stays visible
//!   (on Windows such a file object never gets a handle);
//! - `WIN_IOCTL_OPEN_FLAGS`(`_WRITE`): non-blocking mode and the truncating
//!   open's trim, applied right after CreateFile; on a file object whose
//!   scullwuid create is pended (`Flags::WAITING`) the call waits with it;
//! - `WIN_IOCTL_GET_EOF` / `WIN_IOCTL_SET_EOF`: FileStandardInformation's
//!   EndOfFile and SetEndOfFile;
//! - `WIN_IOCTL_TEST` (`testmode`).
//!
//! Calls that change data (truncation, SET_EOF) carry FILE_WRITE_ACCESS in
//! their code, so the I/O manager only delivers them for a handle granted
//! FILE_WRITE_DATA (scull_core::ioctl::open_flags refuses truncation on the
//! FILE_ANY_ACCESS code).
//!
//! Everything here runs at PASSIVE_LEVEL (dispatch, IRP_MJ_DEVICE_CONTROL)
//! except [`wuid_bridge_cancel`], a cancel routine (DISPATCH_LEVEL on entry,
//! PASSIVE_LEVEL after IoReleaseCancelSpinLock on Wine).

use crate::ddk::*;
use crate::dev::{take_waiter, DevExt, Kind, WuidState};
use crate::handle::{flags, refuse, refused, set_flags, Flags};
use crate::irp::{self, finish, finish_result, read_i32};
use crate::irpq::{Done, IrpQueue};
use crate::store::{file_size, set_eof, trim};
use crate::sync::SpinLock;
use scull_core::ioctl as sioctl;
use scull_core::nt::{self, PendedEvent, PendedOpen};
use scull_core::Error;

/// The bridge IOCTLs and the test IOCTL; `None` for any other code.
///
/// # Safety
/// A METHOD_BUFFERED device-control IRP in dispatch, owned by the caller;
/// `buf` holds max(in_len, out_len) bytes.
pub unsafe fn device_control(
    ext: &DevExt,
    irp: *mut IRP,
    fo: *mut FILE_OBJECT,
    code: u32,
    buf: *mut u8,
    in_len: usize,
    out_len: usize,
) -> Option<NTSTATUS> {
    let r: Result<usize, Error> = match code {
        sioctl::WIN_IOCTL_OPEN_FLAGS | sioctl::WIN_IOCTL_OPEN_FLAGS_WRITE => {
            if let Kind::Wuid(w, _) = &ext.kind {
                if flags(fo).contains(Flags::WAITING) {
                    // SAFETY: caller contract.
                    return Some(unsafe { wuid_bridge_wait(ext, w, irp, fo, code, buf, in_len) });
                }
            }
            // SAFETY: caller contract.
            unsafe { bridge_open_flags(ext, fo, code, buf, in_len) }
        }
        // SAFETY: caller contract.
        crate::testmode::WIN_IOCTL_TEST => unsafe { crate::testmode::ioctl(buf, in_len, out_len) },
        sioctl::WIN_IOCTL_GET_EOF => {
            if out_len < 8 {
                Err(Error::BufferTooSmall)
            } else {
                file_size(ext, fo).map(|size| {
                    // SAFETY: out_len >= 8 bytes of system buffer.
                    unsafe { *(buf as *mut [u8; 8]) = (size as i64).to_le_bytes() };
                    8
                })
            }
        }
        sioctl::WIN_IOCTL_SET_EOF => {
            if in_len < 8 {
                Err(Error::BufferTooSmall)
            } else {
                // SAFETY: in_len >= 8 bytes of system buffer.
                let len = i64::from_le_bytes(unsafe { *(buf as *const [u8; 8]) });
                set_eof(ext, fo, len).map(|_| 0)
            }
        }
        _ => return None,
    };
    // SAFETY: caller contract: we own the IRP.
    Some(unsafe { finish_result(irp, r) })
}

/// A bridge OPEN_FLAGS call waiting on a pended scullwuid create
/// (`wuid_wake`): it completes right after its create. `bridgeq` is the
/// held scullwuid lock's queue of bridge calls, `admitted` a local list
/// head, `fo` the file object of a create just granted.
pub fn admit_waiting_calls(bridgeq: &mut IrpQueue, fo: *mut FILE_OBJECT, admitted: *mut LIST_ENTRY) {
    while let Some(b) = bridgeq.find_file(fo) {
        // SAFETY: `b` is on this queue (`find_file`).
        if unsafe { bridgeq.take(b) } {
            // SAFETY: taken: ours, off every queue.
            let e = unsafe { irp_list_entry(b) };
            // SAFETY: as above; `admitted` is the caller's initialised local list.
            unsafe { InsertTailList(admitted, e) };
        }
    }
}

/// Completes a bridge call taken by [`admit_waiting_calls`].
///
/// # Safety
/// The driver owns `irp`, a METHOD_BUFFERED OPEN_FLAGS call.
pub unsafe fn complete_admitted_call(ext: &DevExt, irp: *mut IRP) {
    // SAFETY: an IRP we own (contract); its stack location is only read here.
    let sl = unsafe { irp::stack(irp) };
    let fo = sl.FileObject;
    // SAFETY: as above: its system buffer (METHOD_BUFFERED).
    let buf = unsafe { irp::system_buffer(irp) };
    // SAFETY: a device-control IRP's parameters.
    let p = unsafe { &sl.Parameters.DeviceIoControl };
    let (in_len, code) = (p.InputBufferLength as usize, p.IoControlCode);
    // SAFETY: the system buffer holds at least InputBufferLength bytes.
    let r = unsafe { bridge_open_flags(ext, fo, code, buf, in_len) };
    // SAFETY: the IRP is ours.
    unsafe { finish_result(irp, r) };
}

/// A bridge `WIN_IOCTL_OPEN_FLAGS` on a file object whose scullwuid create is
/// pended: it waits (pended too) until the create is granted or cancelled.
///
/// # Safety
/// A device-control IRP in dispatch on scullwuid, owned by the caller.
unsafe fn wuid_bridge_wait(ext: &DevExt, w: &SpinLock<WuidState>, irp: *mut IRP, fo: *mut FILE_OBJECT, code: u32, buf: *mut u8, in_len: usize) -> NTSTATUS {
    let mut done = Done::new();
    // SAFETY: `buf` holds in_len >= 4 bytes (caller contract).
    let nonblock = in_len >= 4 && unsafe { read_i32(buf) } as u32 & sioctl::WIN_OPEN_NONBLOCK != 0;
    let mut g = w.lock();
    let waiting = g.waiters.find_file(fo);
    if let (Some(create), true) = (waiting, nonblock) {
        // A non-blocking open (O_NONBLOCK): it must not wait. The create ends
        // with STATUS_CANT_WAIT (EAGAIN), and so does this call.
        // SAFETY: `create` is on the queue guarded by the held lock.
        let ours = unsafe { g.waiters.take(create) };
        drop(g);
        // We own `create` when `take` said so (else its cancel routine
        // completes it).
        if ours {
            // SAFETY: a scullwuid create we own.
            unsafe { take_waiter(create) };
            refuse(fo, STATUS_CANT_WAIT);
            // SAFETY: as above.
            unsafe { finish(create, STATUS_CANT_WAIT, 0) };
        }
        // SAFETY: we own this IRP.
        return unsafe { finish(irp, STATUS_CANT_WAIT, 0) };
    }
    if waiting.is_none() {
        // The create finished in the meantime: answer as for any handle.
        drop(g);
        if let Some(st) = refused(fo) {
            // SAFETY: we own the IRP.
            return unsafe { finish(irp, st, 0) };
        }
        // SAFETY: `buf` holds in_len bytes (caller contract); the file
        // object is valid during dispatch.
        let r = unsafe { bridge_open_flags(ext, fo, code, buf, in_len) };
        // SAFETY: we own the IRP.
        return unsafe { finish_result(irp, r) };
    }
    // SAFETY: we own the IRP; `wuid_bridge_cancel` unlinks it from this
    // queue under this lock.
    if unsafe { !g.bridgeq.enqueue(irp, wuid_bridge_cancel) } {
        // SAFETY: cancelled before it was queued: still ours.
        unsafe { done.push(irp, STATUS_CANCELLED, 0) };
    }
    drop(g);
    ktrace!("bridge open call waits for the pended scullwuid create");
    done.complete();
    STATUS_PENDING
}

/// The cancel routine of a waiting bridge call (CancelIoEx, or the handle's
/// close). If its create is still pended, the open attempt is abandoned: the
/// create is cancelled with it and the handle stays refused. If the owner's
/// last close granted the create first (the grant took the create off
/// the queue, but this call's cancel had already begun), only this call
/// ends: the handle keeps its granted open, which its close releases.
///
/// # Safety
/// Called only by the I/O manager, as the cancel routine of an IRP this
/// driver queued, with the cancel spin lock held.
unsafe extern "C" fn wuid_bridge_cancel(d: *mut DEVICE_OBJECT, irp: *mut IRP) {
    let _active = crate::rundown::enter_cancel();
    // SAFETY: called by the I/O manager with the cancel spin lock held, for a
    // bridge IOCTL we pended on this device: the cancel routine owns it.
    unsafe { irp::release_cancel_lock(irp) };
    // SAFETY: as above.
    let fo = unsafe { irp::file_object(irp) };
    let mut done = Done::new();
    let mut end = PendedOpen::Granted;
    // SAFETY: `d` is one of our devices (the I/O manager passes the IRP's).
    if let Kind::Wuid(w, _) = unsafe { &DevExt::of(d).kind } {
        let mut g = w.lock();
        // SAFETY: the IRP was queued on `bridgeq`; this is its cancel routine.
        unsafe { g.bridgeq.unlink_cancelled(irp) };
        // Decided under the lock that `wuid_wake` grants under.
        let state = if g.waiters.find_file(fo).is_some() { PendedOpen::Waiting } else { PendedOpen::Granted };
        end = nt::pended_open(state, PendedEvent::CancelBridge);
        if let PendedOpen::Refused(_) = end {
            g.waiters.cancel_matching(fo, &mut done);
        }
        drop(g);
    }
    // IRPs on `done` are pended creates we own again: free their records.
    done.for_each(|c| {
        // SAFETY: a scullwuid create we own (on `done`, not yet completed).
        unsafe { take_waiter(c) };
    });
    if let PendedOpen::Refused(st) = end {
        refuse(fo, st);
        ktrace!("bridge open call cancelled; its pended create too");
    } else {
        ktrace!("bridge open call cancelled after its create was granted; the handle keeps its open");
    }
    done.complete();
    // SAFETY: ours to complete (as above), unlinked.
    unsafe { finish(irp, STATUS_CANCELLED, 0) };
}

/// OPEN_FLAGS: non-blocking mode, and the trim of a truncating open (only on
/// the FILE_WRITE_ACCESS code, see `scull_core::ioctl::open_flags`).
///
/// # Safety
/// `buf` holds `in_len` readable bytes; `fo` is the IRP's file object.
unsafe fn bridge_open_flags(ext: &DevExt, fo: *mut FILE_OBJECT, code: u32, buf: *mut u8, in_len: usize) -> Result<usize, Error> {
    let input: &[u8] = if buf.is_null() {
        &[]
    } else {
        // SAFETY: caller contract.
        unsafe { core::slice::from_raw_parts(buf, in_len) }
    };
    let (nonblock, truncate) = sioctl::open_flags(code, input)?;
    set_flags(fo, flags(fo).with(Flags::NONBLOCK, nonblock));
    if truncate {
        trim(ext, fo);
    }
    Ok(0)
}

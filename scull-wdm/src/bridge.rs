//! The Wine bridge: **test build only** (`--features test-build`,
//! `cargo xtask wdm --test-build`, output `target/wdm-test/`). The release
//! scull.sys has none of this: every code here is an unknown IOCTL
//! (STATUS_INVALID_DEVICE_REQUEST) there.
//!
//! Wine's I/O manager (8 and 10) returns the handle before IRP_MJ_CREATE
//! completes and delivers no create disposition, no path suffix and no
//! file-information IRPs. The bridge stands in for them, running the same
//! driver code as the native requests:
//! - [`H_REFUSED`]: a refused create's status is kept in the file object and
//!   returned for every later request on it, so the refusal stays visible
//!   (on Windows such a file object never gets a handle);
//! - `WIN_IOCTL_OPEN_FLAGS`(`_WRITE`): non-blocking mode and the truncating
//!   open's trim, applied right after CreateFile; on a file object whose
//!   scullwuid create is pended ([`H_WAITING`]) the call waits with it;
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
use crate::dev::{DevExt, Kind, WuidState};
use crate::access::take_waiter;
use crate::dispatch::{finish, finish_result, flags, read_i32, set_flags, H_NONBLOCK};
use crate::store::{file_size, set_eof, trim};
use crate::irpq::{self, Done};
use crate::sync::SpinLock;
use scull_core::ioctl as sioctl;
use scull_core::nt::{self, PendedEvent, PendedOpen};
use scull_core::Error;

/// The create of this file object failed (its NTSTATUS is in FsContext).
pub const H_REFUSED: usize = 32;
/// A scullwuid create of this file object is pended (the owner's last close
/// or a cancel completes it). Only an I/O manager that hands out the handle
/// before IRP_MJ_CREATE completes (Wine) can send anything else meanwhile.
pub const H_WAITING: usize = 64;

/// The refusal recorded on `fo`, if its create failed.
pub fn refused(fo: *mut FILE_OBJECT) -> Option<NTSTATUS> {
    if fo.is_null() || flags(fo) & H_REFUSED == 0 {
        return None;
    }
    // SAFETY: the file object of an IRP in dispatch; FsContext is ours.
    Some(unsafe { (*fo).FsContext } as usize as u32 as i32)
}

/// Marks a file object whose create failed (see [`H_REFUSED`]).
pub fn refuse(fo: *mut FILE_OBJECT, st: NTSTATUS) {
    if fo.is_null() {
        return;
    }
    // SAFETY: the file object of a create the driver still owns (or whose
    // create it just completed); FsContext/FsContext2 are the driver's.
    unsafe { (*fo).FsContext = st as u32 as usize as PVOID };
    set_flags(fo, H_REFUSED);
}

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
                if flags(fo) & H_WAITING != 0 {
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
/// (`wuid_wake`): it completes right after its create.
///
/// # Safety
/// `g` is the held scullwuid lock; `admitted` a local list head; `fo` the
/// file object of a create just granted.
pub unsafe fn admit_waiting_calls(g: &mut WuidState, fo: *mut FILE_OBJECT, admitted: *mut LIST_ENTRY) {
    // SAFETY: caller contract: the queue is guarded by the held lock.
    unsafe {
        while let Some(b) = irpq::find_file(&mut g.bridgeq, fo) {
            if irpq::take(b) {
                InsertTailList(admitted, irp_list_entry(b));
            }
        }
    }
}

/// Completes a bridge call taken by [`admit_waiting_calls`].
///
/// # Safety
/// The driver owns `irp`, a METHOD_BUFFERED OPEN_FLAGS call.
pub unsafe fn complete_admitted_call(ext: &DevExt, irp: *mut IRP) {
    // SAFETY: caller contract.
    unsafe {
        let sl = IoGetCurrentIrpStackLocation(irp);
        let fo = (*sl).FileObject;
        let buf = (*irp).AssociatedIrp.SystemBuffer as *mut u8;
        let in_len = (*sl).Parameters.DeviceIoControl.InputBufferLength as usize;
        let code = (*sl).Parameters.DeviceIoControl.IoControlCode;
        finish_result(irp, bridge_open_flags(ext, fo, code, buf, in_len));
    }
}

/// A bridge `WIN_IOCTL_OPEN_FLAGS` on a file object whose scullwuid create is
/// pended: it waits (pended too) until the create is granted or cancelled.
///
/// # Safety
/// A device-control IRP in dispatch on scullwuid, owned by the caller.
unsafe fn wuid_bridge_wait(ext: &DevExt, w: &SpinLock<WuidState>, irp: *mut IRP, fo: *mut FILE_OBJECT, code: u32, buf: *mut u8, in_len: usize) -> NTSTATUS {
    let mut done = Done::new();
    let nonblock = in_len >= 4 && read_i32(buf) as u32 & sioctl::WIN_OPEN_NONBLOCK != 0;
    let mut g = w.lock();
    // SAFETY: the queues are guarded by the held lock.
    let waiting = unsafe { irpq::find_file(&mut g.waiters, fo) };
    if let (Some(create), true) = (waiting, nonblock) {
        // A non-blocking open (O_NONBLOCK): it must not wait. The create ends
        // with STATUS_CANT_WAIT (EAGAIN), and so does this call.
        // SAFETY: `create` is on the queue guarded by the held lock.
        let ours = unsafe { irpq::take(create) };
        drop(g);
        // SAFETY: we own `create` when `take` said so (else its cancel
        // routine completes it), and this IRP.
        unsafe {
            if ours {
                take_waiter(create);
                refuse(fo, STATUS_CANT_WAIT);
                finish(create, STATUS_CANT_WAIT, 0);
            }
            return finish(irp, STATUS_CANT_WAIT, 0);
        }
    }
    if waiting.is_none() {
        // The create finished in the meantime: answer as for any handle.
        drop(g);
        if let Some(st) = refused(fo) {
            // SAFETY: we own the IRP.
            return unsafe { finish(irp, st, 0) };
        }
        // SAFETY: we own the IRP; the file object is valid during dispatch.
        return unsafe { finish_result(irp, bridge_open_flags(ext, fo, code, buf, in_len)) };
    }
    // SAFETY: as above; we own the IRP.
    unsafe {
        if !irpq::enqueue(&mut g.bridgeq, irp, wuid_bridge_cancel) {
            done.push(irp, STATUS_CANCELLED, 0);
        }
    }
    drop(g);
    ktrace!("bridge open call waits for the pended scullwuid create");
    done.complete();
    STATUS_PENDING
}

/// The cancel routine of a waiting bridge call (CancelIoEx, or the handle's
/// close). If its create is still pended, the open attempt is abandoned: the
/// create is cancelled with it and the handle stays refused. If the owner's
/// last close granted the create first (W7: the grant took the create off
/// the queue, but this call's cancel had already begun), only this call
/// ends: the handle keeps its granted open, which its close releases.
unsafe extern "C" fn wuid_bridge_cancel(d: *mut DEVICE_OBJECT, irp: *mut IRP) {
    let _active = crate::rundown::enter_cancel();
    // SAFETY: called by the I/O manager with the cancel spin lock held, for a
    // bridge IOCTL we pended on this device.
    unsafe {
        IoReleaseCancelSpinLock((*irp).CancelIrql);
        let fo = (*IoGetCurrentIrpStackLocation(irp)).FileObject;
        let mut done = Done::new();
        let mut end = PendedOpen::Granted;
        if let Kind::Wuid(w, _) = &DevExt::of(d).kind {
            let mut g = w.lock();
            RemoveEntryList(irp_list_entry(irp));
            // Decided under the lock that `wuid_wake` grants under.
            let state = if irpq::find_file(&mut g.waiters, fo).is_some() { PendedOpen::Waiting } else { PendedOpen::Granted };
            end = nt::pended_open(state, PendedEvent::CancelBridge);
            if let PendedOpen::Refused(_) = end {
                irpq::cancel_matching(&mut g.waiters, fo, &mut done);
            }
            drop(g);
        }
        // IRPs on `done` are pended creates we own again: free their records.
        done.for_each(|c| {
            take_waiter(c);
        });
        if let PendedOpen::Refused(st) = end {
            refuse(fo, st);
            ktrace!("bridge open call cancelled; its pended create too");
        } else {
            ktrace!("bridge open call cancelled after its create was granted; the handle keeps its open");
        }
        done.complete();
        set_io_status(irp, STATUS_CANCELLED, 0);
        IoCompleteRequest(irp, IO_NO_INCREMENT);
    }
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
    let mut f = flags(fo);
    if nonblock {
        f |= H_NONBLOCK;
    } else {
        f &= !H_NONBLOCK;
    }
    set_flags(fo, f);
    if truncate {
        trim(ext, fo);
    }
    Ok(0)
}

//! The IRP_MJ_* dispatch routines.
//!
//! Per-handle state lives in the FILE_OBJECT, without allocation:
//! `FsContext2` holds the `H_*` flags, `FsContext` the scullpriv slot + 1.
//! The decisions only a real NT I/O manager reaches (start position,
//! disposition, role, information classes, suffix) are scull-core's
//! `nt` functions; this file reads the IRP fields and applies the answers.
//! The Wine bridge (test build only) lives in `bridge`.

use crate::ddk::*;
use crate::dev::{self, DevExt, Kind, WuidState, PARAMS};
use crate::ident::{self, Sid};
use crate::irpq::{self, Done};
use crate::pipe;
use crate::pool;
use crate::sync::SpinLock;
use core::ptr;
use scull_core::access::Caller;
use scull_core::ioctl::{self as sioctl, ArgIn, ArgOut, Cmd};
use scull_core::report::{self, TextBuf};
use scull_core::nt::{self, CreateAction, PendedEvent, PendedOpen, Seekable, SetInformation};
use scull_core::store::Store;
use scull_core::Error;

// scull-core's `nt` constants are the headers' values.
const _: () = {
    assert!(FileStandardInformation as u32 == nt::FILE_STANDARD_INFORMATION);
    assert!(FilePositionInformation as u32 == nt::FILE_POSITION_INFORMATION);
    assert!(FileEndOfFileInformation as u32 == nt::FILE_END_OF_FILE_INFORMATION);
    assert!(core::mem::size_of::<FILE_STANDARD_INFORMATION>() == nt::STANDARD_INFO_LEN);
    assert!(core::mem::size_of::<FILE_POSITION_INFORMATION>() == nt::OFFSET_INFO_LEN);
    assert!(core::mem::size_of::<FILE_END_OF_FILE_INFORMATION>() == nt::OFFSET_INFO_LEN);
    assert!(FILE_OVERWRITE == nt::FILE_OVERWRITE && FILE_OVERWRITE_IF == nt::FILE_OVERWRITE_IF);
    assert!(FILE_CREATE == nt::FILE_CREATE && FILE_OPEN_IF == nt::FILE_OPEN_IF && FILE_SUPERSEDE == nt::FILE_SUPERSEDE);
    assert!(FILE_READ_DATA == nt::FILE_READ_DATA && FILE_WRITE_DATA == nt::FILE_WRITE_DATA && FILE_APPEND_DATA == nt::FILE_APPEND_DATA);
    assert!(GENERIC_READ == nt::GENERIC_READ && GENERIC_WRITE == nt::GENERIC_WRITE && GENERIC_ALL == nt::GENERIC_ALL);
    assert!(MAXIMUM_ALLOWED == nt::MAXIMUM_ALLOWED);
    assert!(STATUS_OBJECT_NAME_NOT_FOUND == nt::STATUS_OBJECT_NAME_NOT_FOUND);
    assert!(STATUS_OBJECT_NAME_COLLISION == nt::STATUS_OBJECT_NAME_COLLISION);
    assert!(STATUS_INVALID_DEVICE_REQUEST == nt::STATUS_INVALID_DEVICE_REQUEST);
};

/// Granted read access (counts as a pipe reader).
pub(crate) const H_READ: usize = 1;
/// Granted write access (counts as a pipe writer).
pub(crate) const H_WRITE: usize = 2;
/// Non-blocking: STATUS_CANT_WAIT instead of pending.
pub(crate) const H_NONBLOCK: usize = 4;
/// This handle holds an open of the device's policy (pipe count, single,
/// uid, wuid) that CLOSE must release.
pub(crate) const H_OWNS: usize = 8;
/// A truncating open (CREATE_ALWAYS/TRUNCATE_EXISTING).
pub(crate) const H_TRUNCATE: usize = 16;
// 32 and 64: the test build's bridge flags (`bridge::H_REFUSED`, `H_WAITING`).

/// Completes `irp` with `status` and `info`, returning `status`.
///
/// # Safety
/// The driver owns `irp`.
pub(crate) unsafe fn finish(irp: *mut IRP, status: NTSTATUS, info: usize) -> NTSTATUS {
    // SAFETY: caller contract.
    unsafe {
        set_io_status(irp, status, info);
        IoCompleteRequest(irp, IO_NO_INCREMENT);
    }
    status
}

pub(crate) unsafe fn finish_result(irp: *mut IRP, r: Result<usize, Error>) -> NTSTATUS {
    // SAFETY: caller contract.
    unsafe {
        match r {
            Ok(n) => finish(irp, STATUS_SUCCESS, n),
            Err(e) => finish(irp, e.ntstatus(), 0),
        }
    }
}

pub(crate) fn flags(fo: *mut FILE_OBJECT) -> usize {
    // SAFETY: a file object of an IRP in dispatch.
    unsafe { (*fo).FsContext2 as usize }
}

pub(crate) fn set_flags(fo: *mut FILE_OBJECT, f: usize) {
    // SAFETY: the file object of an IRP in dispatch; the field is ours.
    unsafe { (*fo).FsContext2 = f as PVOID }
}

fn priv_slot(fo: *mut FILE_OBJECT) -> Option<usize> {
    // SAFETY: as above.
    let v = unsafe { (*fo).FsContext } as usize;
    v.checked_sub(1)
}

/// Runs `f` on the store this file reads and writes.
fn with_store<R>(ext: &DevExt, fo: *mut FILE_OBJECT, f: impl FnOnce(&mut Store<pool::Pool>) -> R) -> Option<R> {
    if let Some(s) = ext.store_lock() {
        return Some(f(&mut s.lock()));
    }
    if let Kind::Priv(t) = &ext.kind {
        let slot = priv_slot(fo)?;
        let mut g = t.lock();
        return g.get_mut(slot).map(f);
    }
    None
}

pub(crate) fn trim(ext: &DevExt, fo: *mut FILE_OBJECT) {
    let geom = PARAMS.geometry();
    let _ = with_store(ext, fo, |s| s.trim(geom));
}

/// Every major function lands here.
pub unsafe extern "C" fn dispatch(d: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager passes one of our devices and a valid IRP whose
    // current stack location is ours.
    unsafe {
        let ext = DevExt::of(d);
        let sl = IoGetCurrentIrpStackLocation(irp);
        let major = (*sl).MajorFunction as u32;
        let fo = (*sl).FileObject;
        #[cfg(feature = "test-build")]
        if !matches!(major, IRP_MJ_CREATE | IRP_MJ_CLEANUP | IRP_MJ_CLOSE) {
            if let Some(st) = crate::bridge::refused(fo) {
                return finish(irp, st, 0);
            }
        }
        let _ = fo;
        match major {
            IRP_MJ_CREATE => create(ext, irp, sl),
            IRP_MJ_CLEANUP => cleanup(ext, irp, sl),
            IRP_MJ_CLOSE => close(ext, irp, sl),
            IRP_MJ_READ => read_write(ext, irp, sl, false),
            IRP_MJ_WRITE => read_write(ext, irp, sl, true),
            IRP_MJ_DEVICE_CONTROL => device_control(ext, irp, sl),
            IRP_MJ_QUERY_INFORMATION => query_information(ext, irp, sl),
            IRP_MJ_SET_INFORMATION => set_information(ext, irp, sl),
            _ => finish(irp, STATUS_INVALID_DEVICE_REQUEST, 0),
        }
    }
}

/// What follows the device name (`nt::parse_suffix`): nothing, or `\nonblock`.
fn suffix_nonblock(fo: *mut FILE_OBJECT) -> Result<bool, NTSTATUS> {
    // SAFETY: the file object of a create IRP; FileName is a counted string.
    let name: &[u16] = unsafe {
        let n = &(*fo).FileName;
        if n.Buffer.is_null() || n.Length == 0 {
            &[]
        } else {
            core::slice::from_raw_parts(n.Buffer, n.Length as usize / 2)
        }
    };
    nt::parse_suffix(name)
}

unsafe fn create(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a create IRP in dispatch; `create_inner` completes or pends it,
    // and the file object stays valid for the whole dispatch.
    unsafe {
        let fo = (*sl).FileObject;
        let st = create_inner(ext, irp, sl);
        if st < 0 {
            #[cfg(feature = "test-build")]
            crate::bridge::refuse(fo, st);
            let _ = fo;
            ktrace!("create on {} refused: {:#x}", dev::dev_name(ext.dev).as_str(), st);
        } else if st == STATUS_PENDING {
            ktrace!("create on {} pended", dev::dev_name(ext.dev).as_str());
        } else {
            ktrace!("open {} (pid {})", dev::dev_name(ext.dev).as_str(), crate::testmode::current_pid());
        }
        st
    }
}

unsafe fn create_inner(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a create IRP in dispatch: its stack location and file object are valid.
    unsafe {
        let fo = (*sl).FileObject;
        let nonblock = match suffix_nonblock(fo) {
            Ok(b) => b,
            Err(st) => return finish(irp, st, 0),
        };
        // The role from the access the I/O manager granted (W5): a
        // MAXIMUM_ALLOWED open asks for nothing specific. Wine passes no
        // security context: then the handle counts as both.
        let sc = (*sl).Parameters.Create.SecurityContext;
        let granted = if sc.is_null() {
            None
        } else if (*sc).AccessState.is_null() {
            Some((*sc).DesiredAccess)
        } else {
            Some((*(*sc).AccessState).PreviouslyGrantedAccess)
        };
        let nt::Role { read, write } = nt::role_from_granted(granted);
        let truncate = match nt::create_action((*sl).Parameters.Create.Options) {
            Ok(a) => a == CreateAction::Trim,
            Err(st) => return finish(irp, st, 0),
        };
        let mut f = (usize::from(read) * H_READ)
            | (usize::from(write) * H_WRITE)
            | (usize::from(nonblock) * H_NONBLOCK)
            | (usize::from(truncate) * H_TRUNCATE);
        (*fo).FsContext = ptr::null_mut();

        let r: Result<(), Error> = match &ext.kind {
            Kind::Store(_) => Ok(()),
            Kind::Pipe(p) => pipe::open(p, read, write).map(|_| f |= H_OWNS),
            Kind::Single(s, _) => s.open().map(|_| f |= H_OWNS),
            Kind::Uid(u, _) => match ident::caller(irp) {
                Ok(c) => u.lock().open(&c).map(|_| f |= H_OWNS),
                Err(st) => return finish(irp, st, 0),
            },
            Kind::Wuid(w, _) => match ident::caller(irp) {
                Ok(c) => return wuid_open(ext, w, irp, fo, c, f),
                Err(st) => return finish(irp, st, 0),
            },
            Kind::Priv(t) => {
                // The key: the opener's process id (documented in the README).
                let key = PsGetCurrentProcessId() as usize as u64;
                let geom = PARAMS.geometry();
                t.lock()
                    .lookup_or_create(key, || Ok(Store::new(pool::Pool, geom)))
                    .map(|slot| (*fo).FsContext = (slot + 1) as PVOID)
            }
        };
        if let Err(e) = r {
            return finish(irp, e.ntstatus(), 0);
        }
        set_flags(fo, f);
        if truncate {
            trim(ext, fo);
        }
        finish(irp, STATUS_SUCCESS, 0)
    }
}

/// A pended scullwuid open: who is waiting, and the handle flags to apply.
pub(crate) struct Waiter {
    caller: Caller<Sid>,
    flags: usize,
}

unsafe fn wuid_open(ext: &DevExt, w: &SpinLock<WuidState>, irp: *mut IRP, fo: *mut FILE_OBJECT, c: Caller<Sid>, f: usize) -> NTSTATUS {
    // The waiter record is allocated before taking the spin lock.
    let rec = pool::alloc(core::mem::size_of::<Waiter>());
    let mut done = Done::new();
    let mut g = w.lock();
    match g.policy.open(&c) {
        Ok(()) => {
            drop(g);
            if let Some(p) = rec {
                // SAFETY: unused block from `alloc`.
                unsafe { pool::free(p) };
            }
            set_flags(fo, f | H_OWNS);
            if f & H_TRUNCATE != 0 {
                trim(ext, fo);
            }
            // SAFETY: we own the IRP.
            unsafe { finish(irp, STATUS_SUCCESS, 0) }
        }
        Err(Error::WouldBlock) if f & H_NONBLOCK == 0 => {
            let Some(p) = rec else {
                drop(g);
                // SAFETY: we own the IRP.
                return unsafe { finish(irp, Error::NoMemory.ntstatus(), 0) };
            };
            // SAFETY: the pool block is big enough and 16-byte aligned; the IRP's driver
            // context is ours while it is queued; the held lock guards the queue.
            unsafe {
                ptr::write(p.as_ptr() as *mut Waiter, Waiter { caller: c, flags: f });
                (*irp_driver_context(irp))[0] = p.as_ptr().cast();
                // No role until granted (the test build marks it waiting).
                set_flags(fo, 0);
                #[cfg(feature = "test-build")]
                set_flags(fo, crate::bridge::H_WAITING);
                if !irpq::enqueue(&mut g.waiters, irp, wuid_cancel) {
                    #[cfg(feature = "test-build")]
                    crate::bridge::refuse(fo, STATUS_CANCELLED);
                    done.push(irp, STATUS_CANCELLED, 0);
                    (*irp_driver_context(irp))[0] = ptr::null_mut();
                    pool::free(p);
                }
            }
            drop(g);
            done.complete();
            STATUS_PENDING
        }
        Err(e) => {
            drop(g);
            if let Some(p) = rec {
                // SAFETY: unused block from `alloc`.
                unsafe { pool::free(p) };
            }
            // SAFETY: we own the IRP.
            unsafe { finish(irp, e.ntstatus(), 0) }
        }
    }
}

/// Frees the waiter record of a pended create that leaves the queue.
///
/// # Safety
/// The driver owns `irp`, a create pended by `wuid_open`.
pub(crate) unsafe fn take_waiter(irp: *mut IRP) -> Option<Waiter> {
    // SAFETY: caller contract: DriverContext[0] is null or a Waiter block.
    unsafe {
        let p = (*irp_driver_context(irp))[0] as *mut Waiter;
        (*irp_driver_context(irp))[0] = ptr::null_mut();
        let p = ptr::NonNull::new(p)?;
        let w = ptr::read(p.as_ptr());
        pool::free(p.cast());
        Some(w)
    }
}

/// The cancel routine of pended scullwuid opens.
unsafe extern "C" fn wuid_cancel(d: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: called by the I/O manager with the cancel spin lock held, for a
    // create we pended on this device.
    unsafe {
        IoReleaseCancelSpinLock((*irp).CancelIrql);
        let fo = (*IoGetCurrentIrpStackLocation(irp)).FileObject;
        let mut done = Done::new();
        if let Kind::Wuid(w, _) = &DevExt::of(d).kind {
            #[cfg_attr(not(feature = "test-build"), allow(unused_mut))]
            let mut g = w.lock();
            RemoveEntryList(irp_list_entry(irp));
            // A bridge call waiting for this create ends with it.
            #[cfg(feature = "test-build")]
            irpq::cancel_matching(&mut g.bridgeq, fo, &mut done);
            drop(g);
        }
        take_waiter(irp);
        if let PendedOpen::Refused(_st) = nt::pended_open(PendedOpen::Waiting, PendedEvent::CancelCreate) {
            #[cfg(feature = "test-build")]
            crate::bridge::refuse(fo, _st);
        }
        let _ = fo;
        ktrace!("pended scullwuid create cancelled");
        set_io_status(irp, STATUS_CANCELLED, 0);
        IoCompleteRequest(irp, IO_NO_INCREMENT);
        done.complete();
    }
}

/// The owner's last close freed scullwuid: admit every waiter the policy now
/// allows (the first one's user, then anyone of that user or privileged).
pub(crate) fn wuid_wake(ext: &DevExt, w: &SpinLock<WuidState>) {
    let mut admitted = LIST_ENTRY { Flink: ptr::null_mut(), Blink: ptr::null_mut() };
    let admitted_head: *mut LIST_ENTRY = &mut admitted;
    // SAFETY: a local list head that does not move while in use.
    unsafe { InitializeListHead(admitted_head) };
    let mut g = w.lock();
    // SAFETY: the queue is guarded by the held lock; entries are pended creates.
    unsafe {
        let head: *mut LIST_ENTRY = &mut g.waiters;
        let mut e = (*head).Flink;
        while e != head {
            let next = (*e).Flink;
            let irp = irp_from_list_entry(e);
            let rec = (*irp_driver_context(irp))[0] as *const Waiter;
            if !rec.is_null() && g.policy.state().available(&(*rec).caller) && irpq::take(irp) {
                let _ = g.policy.open(&(*rec).caller);
                let fo = (*IoGetCurrentIrpStackLocation(irp)).FileObject;
                // The handle is usable from here on: set its flags under the lock.
                set_flags(fo, (*rec).flags | H_OWNS);
                // Completed below (nt::pended_open: the create first, then
                // the test build's bridge calls waiting for it).
                InsertTailList(admitted_head, irp_list_entry(irp));
                #[cfg(feature = "test-build")]
                crate::bridge::admit_waiting_calls(&mut g, fo, admitted_head);
            }
            e = next;
        }
    }
    drop(g);
    // SAFETY: every IRP on `admitted` is a create or bridge call we own again.
    unsafe {
        while let Some(e) = RemoveHeadList(admitted_head) {
            let irp = irp_from_list_entry(e);
            let sl = IoGetCurrentIrpStackLocation(irp);
            let fo = (*sl).FileObject;
            if (*sl).MajorFunction as u32 == IRP_MJ_CREATE {
                let f = take_waiter(irp).map_or(0, |w| w.flags);
                if f & H_TRUNCATE != 0 {
                    trim(ext, fo);
                }
                ktrace!("pended scullwuid create granted");
                set_io_status(irp, STATUS_SUCCESS, 0);
                IoCompleteRequest(irp, IO_NO_INCREMENT);
            } else {
                #[cfg(feature = "test-build")]
                crate::bridge::complete_admitted_call(ext, irp);
            }
        }
    }
}

unsafe fn cancel_pended(ext: &DevExt, fo: *mut FILE_OBJECT) {
    match &ext.kind {
        Kind::Pipe(p) => pipe::cancel_file(p, fo),
        Kind::Wuid(w, _) => {
            let mut done = Done::new();
            let mut g = w.lock();
            // SAFETY: the queues are guarded by the held lock.
            unsafe {
                irpq::cancel_matching(&mut g.waiters, fo, &mut done);
                #[cfg(feature = "test-build")]
                irpq::cancel_matching(&mut g.bridgeq, fo, &mut done);
            }
            drop(g);
            // Free the records of the cancelled waiters; their handles stay refused.
            done.for_each(|irp| {
                // SAFETY: IRPs on `done` are ours, not yet completed.
                unsafe {
                    let sl = IoGetCurrentIrpStackLocation(irp);
                    if (*sl).MajorFunction as u32 == IRP_MJ_CREATE {
                        take_waiter(irp);
                        #[cfg(feature = "test-build")]
                        crate::bridge::refuse((*sl).FileObject, STATUS_CANCELLED);
                    }
                }
            });
            done.complete();
        }
        _ => {}
    }
}

unsafe fn cleanup(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a cleanup IRP in dispatch.
    unsafe {
        cancel_pended(ext, (*sl).FileObject);
        finish(irp, STATUS_SUCCESS, 0)
    }
}

unsafe fn close(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a close IRP in dispatch.
    unsafe {
        let fo = (*sl).FileObject;
        // Wine sends no CLEANUP: drain here too.
        cancel_pended(ext, fo);
        let f = flags(fo);
        if f & H_OWNS != 0 {
            match &ext.kind {
                Kind::Pipe(p) => pipe::release(p, f & H_READ != 0, f & H_WRITE != 0),
                Kind::Single(s, _) => s.release(),
                Kind::Uid(u, _) => u.lock().release(),
                Kind::Wuid(w, _) => {
                    let free = w.lock().policy.release();
                    if free {
                        wuid_wake(ext, w);
                    }
                }
                _ => {}
            }
        }
        set_flags(fo, 0);
        finish(irp, STATUS_SUCCESS, 0)
    }
}

unsafe fn read_write(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION, write: bool) -> NTSTATUS {
    // SAFETY: a read/write IRP of buffered I/O in dispatch.
    unsafe {
        let fo = (*sl).FileObject;
        if let Kind::Pipe(p) = &ext.kind {
            return pipe::transfer(p, irp, write, flags(fo) & H_NONBLOCK != 0);
        }
        let len = if write { (*sl).Parameters.Write.Length } else { (*sl).Parameters.Read.Length } as usize;
        let buf = (*irp).AssociatedIrp.SystemBuffer as *mut u8;
        if len > 0 && buf.is_null() {
            return finish(irp, Error::Fault.ntstatus(), 0);
        }
        let off = if write { (*sl).Parameters.Write.ByteOffset.QuadPart } else { (*sl).Parameters.Read.ByteOffset.QuadPart };
        let synchronous = (*fo).Flags & FO_SYNCHRONOUS_IO != 0;
        let r = with_store(ext, fo, |s| -> Result<usize, Error> {
            let pos = nt::start_position(off, write, (*fo).CurrentByteOffset.QuadPart, s.size())?;
            let mut at = 0usize;
            let n = if write {
                s.write_with(pos, len, |dst| {
                    ptr::copy_nonoverlapping(buf.add(at), dst.as_mut_ptr(), dst.len());
                    at += dst.len();
                    Ok(())
                })?
            } else {
                s.read_with(pos, len, |src| {
                    ptr::copy_nonoverlapping(src.as_ptr(), buf.add(at), src.len());
                    at += src.len();
                    Ok(())
                })?
            };
            if let Some(p) = nt::next_file_pointer(synchronous, pos, n) {
                (*fo).CurrentByteOffset.QuadPart = p;
            }
            Ok(n)
        })
        .unwrap_or(Err(Error::NoDevice));
        finish_result(irp, r)
    }
}

pub(crate) fn read_i32(buf: *const u8) -> i32 {
    // SAFETY: the caller checked 4 readable bytes.
    i32::from_le_bytes(unsafe { *(buf as *const [u8; 4]) })
}

unsafe fn device_control(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a METHOD_BUFFERED device-control IRP in dispatch: the system
    // buffer holds max(in, out) bytes.
    unsafe {
        let fo = (*sl).FileObject;
        let p = &(*sl).Parameters.DeviceIoControl;
        let (code, in_len, out_len) = (p.IoControlCode, p.InputBufferLength as usize, p.OutputBufferLength as usize);
        let buf = (*irp).AssociatedIrp.SystemBuffer as *mut u8;
        kinfo!("ioctl {:#x} on {}: in {} out {}", code, dev::dev_name(ext.dev).as_str(), in_len, out_len);
        #[cfg(feature = "test-build")]
        if let Some(st) = crate::bridge::device_control(ext, irp, fo, code, buf, in_len, out_len) {
            return st;
        }
        let _ = fo;
        let r = scull_ioctl(irp, code, buf, in_len, out_len);
        match r {
            Err(Error::BufferTooSmall) if code == Cmd::Stats.windows_code() => finish(irp, STATUS_BUFFER_OVERFLOW, out_len),
            r => finish_result(irp, r),
        }
    }
}

/// STATS text that does not fit is reported as BufferTooSmall here and turned
/// into STATUS_BUFFER_OVERFLOW (data returned, ERROR_MORE_DATA) by the caller.
unsafe fn scull_ioctl(irp: *mut IRP, code: u32, buf: *mut u8, in_len: usize, out_len: usize) -> Result<usize, Error> {
    let cmd = Cmd::from_windows_code(code)?;
    if in_len < cmd.windows_in_len() || out_len < cmd.windows_out_len() {
        return Err(Error::BufferTooSmall);
    }
    if cmd == Cmd::Stats {
        // SAFETY: the system buffer holds at least out_len bytes.
        let out = unsafe { core::slice::from_raw_parts_mut(buf, out_len) };
        let mut t = TextBuf::new(out);
        stats_text(&mut t);
        return if t.truncated() { Err(Error::BufferTooSmall) } else { Ok(t.len()) };
    }
    let value = if cmd.arg_in() == ArgIn::None { 0 } else { read_i32(buf) };
    let privileged = if cmd.needs_privilege() {
        match ident::caller(irp) {
            Ok(c) => c.privileged,
            Err(_) => false,
        }
    } else {
        false
    };
    let v = sioctl::execute(&PARAMS, cmd, value, privileged)?;
    if cmd.arg_out() == ArgOut::None {
        return Ok(0);
    }
    // SAFETY: out_len >= 4 was checked.
    unsafe { *(buf as *mut [u8; 4]) = v.to_le_bytes() };
    Ok(4)
}

/// The scullmem and scullpipe reports (scull-core's format).
fn stats_text(t: &mut TextBuf<'_>) {
    let _ = report::mem_header(t, &PARAMS);
    dev::for_each(|ext| {
        let name = dev::dev_name(ext.dev);
        if let Some(s) = ext.store_lock() {
            let st = s.lock().stats();
            let _ = report::mem_device(t, name.as_str(), &st);
        } else if let Kind::Priv(tab) = &ext.kind {
            let g = tab.lock();
            for (key, s) in g.iter() {
                let mut n = dev::Name::default();
                let _ = core::fmt::Write::write_fmt(&mut n, format_args!("scullpriv.{key}"));
                let _ = report::mem_device(t, n.as_str(), &s.stats());
            }
        }
    });
    let _ = report::pipe_header(t, &PARAMS);
    dev::for_each(|ext| {
        if let Kind::Pipe(p) = &ext.kind {
            let (st, r, w) = pipe::stats(p);
            let _ = report::pipe_device(t, dev::dev_name(ext.dev).as_str(), &st, r, w);
        }
    });
}

pub(crate) fn file_size(ext: &DevExt, fo: *mut FILE_OBJECT) -> Result<u64, Error> {
    if matches!(ext.kind, Kind::Pipe(_)) {
        return Err(Error::NotSeekable);
    }
    with_store(ext, fo, |s| s.size()).ok_or(Error::NoDevice)
}

pub(crate) fn set_eof(ext: &DevExt, fo: *mut FILE_OBJECT, len: i64) -> Result<(), Error> {
    if matches!(ext.kind, Kind::Pipe(_)) {
        return Err(Error::NotSeekable);
    }
    if len < 0 {
        return Err(Error::Invalid);
    }
    with_store(ext, fo, |s| s.set_len(len as u64)).unwrap_or(Err(Error::NoDevice))
}

/// What the information requests see of this file's device.
fn seekable(ext: &DevExt, fo: *mut FILE_OBJECT) -> Result<Seekable, Error> {
    match file_size(ext, fo) {
        Ok(size) => Ok(Seekable::Store { size }),
        Err(Error::NotSeekable) => Ok(Seekable::Pipe),
        Err(e) => Err(e),
    }
}

/// IRP_MJ_QUERY_INFORMATION (GetFileSizeEx, FILE_END seeks); IRQL PASSIVE_LEVEL.
unsafe fn query_information(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a buffered query-information IRP: the system buffer holds Length bytes.
    unsafe {
        let fo = (*sl).FileObject;
        let len = (*sl).Parameters.QueryFile.Length as usize;
        let buf = (*irp).AssociatedIrp.SystemBuffer as *mut u8;
        let class = (*sl).Parameters.QueryFile.FileInformationClass as u32;
        let dev = match seekable(ext, fo) {
            Ok(d) => d,
            Err(e) => return finish(irp, e.ntstatus(), 0),
        };
        let mut reply = [0u8; nt::STANDARD_INFO_LEN];
        match nt::query_information(class, len, dev, (*fo).CurrentByteOffset.QuadPart, &mut reply) {
            Ok(n) => {
                // n <= len was checked by `query_information`.
                ptr::copy_nonoverlapping(reply.as_ptr(), buf, n);
                finish(irp, STATUS_SUCCESS, n)
            }
            Err(st) => finish(irp, st, 0),
        }
    }
}

/// IRP_MJ_SET_INFORMATION (SetEndOfFile); IRQL PASSIVE_LEVEL.
unsafe fn set_information(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a buffered set-information IRP: the system buffer holds Length bytes.
    unsafe {
        let fo = (*sl).FileObject;
        let len = (*sl).Parameters.SetFile.Length as usize;
        let buf = (*irp).AssociatedIrp.SystemBuffer as *const u8;
        let input: &[u8] = if buf.is_null() { &[] } else { core::slice::from_raw_parts(buf, len) };
        let class = (*sl).Parameters.SetFile.FileInformationClass as u32;
        let dev = match seekable(ext, fo) {
            Ok(d) => d,
            Err(e) => return finish(irp, e.ntstatus(), 0),
        };
        match nt::set_information(class, input, dev) {
            Ok(SetInformation::EndOfFile(n)) => finish_result(irp, set_eof(ext, fo, n as i64).map(|_| 0)),
            Ok(SetInformation::Position(p)) => {
                (*fo).CurrentByteOffset.QuadPart = p;
                finish(irp, STATUS_SUCCESS, 0)
            }
            Err(st) => finish(irp, st, 0),
        }
    }
}

/// Unload: cancels every pended IRP on every device.
pub fn cancel_everything() {
    dev::for_each(|ext| {
        // SAFETY: a null file object matches every queued IRP.
        unsafe { cancel_pended(ext, ptr::null_mut()) };
    });
}


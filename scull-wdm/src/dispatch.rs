//! The IRP_MJ_* dispatch routines.
//!
//! Per-handle state lives in the FILE_OBJECT, without allocation:
//! `FsContext2` holds the `H_*` flags, `FsContext` the scullpriv slot + 1.

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
use scull_core::store::{self, Store, Whence};
use scull_core::Error;

/// Opened for reading (counts as a pipe reader).
const H_READ: usize = 1;
/// Opened for writing (counts as a pipe writer).
const H_WRITE: usize = 2;
/// Non-blocking: STATUS_CANT_WAIT instead of pending.
const H_NONBLOCK: usize = 4;
/// This handle holds an open of the device's policy (pipe count, single,
/// uid, wuid) that CLOSE must release.
const H_OWNS: usize = 8;
/// A truncating open (CREATE_ALWAYS/TRUNCATE_EXISTING).
const H_TRUNCATE: usize = 16;
/// The create of this file object failed (its NTSTATUS is in FsContext). An
/// I/O manager that keeps the handle anyway (Wine 8 does not wait for
/// IRP_MJ_CREATE) gets that status for every later request on it, so the
/// refusal stays visible. On Windows such a file object never gets a handle.
const H_REFUSED: usize = 32;
/// A scullwuid create of this file object is pended (the owner's last close
/// or a cancel completes it). Only an I/O manager that hands out the handle
/// before IRP_MJ_CREATE completes (Wine 8) can send anything else meanwhile.
const H_WAITING: usize = 64;

/// `FILE_WRITE_TO_END_OF_FILE` as a LARGE_INTEGER.
const WRITE_TO_END: i64 = -1;
/// `FILE_USE_FILE_POINTER_POSITION` as a LARGE_INTEGER.
const USE_FILE_POINTER: i64 = -2;

/// Completes `irp` with `status` and `info`, returning `status`.
///
/// # Safety
/// The driver owns `irp`.
unsafe fn finish(irp: *mut IRP, status: NTSTATUS, info: usize) -> NTSTATUS {
    // SAFETY: caller contract.
    unsafe {
        set_io_status(irp, status, info);
        IoCompleteRequest(irp, IO_NO_INCREMENT);
    }
    status
}

unsafe fn finish_result(irp: *mut IRP, r: Result<usize, Error>) -> NTSTATUS {
    // SAFETY: caller contract.
    unsafe {
        match r {
            Ok(n) => finish(irp, STATUS_SUCCESS, n),
            Err(e) => finish(irp, e.ntstatus(), 0),
        }
    }
}

fn flags(fo: *mut FILE_OBJECT) -> usize {
    // SAFETY: a file object of an IRP in dispatch.
    unsafe { (*fo).FsContext2 as usize }
}

fn set_flags(fo: *mut FILE_OBJECT, f: usize) {
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

fn trim(ext: &DevExt, fo: *mut FILE_OBJECT) {
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
        if !matches!(major, IRP_MJ_CREATE | IRP_MJ_CLEANUP | IRP_MJ_CLOSE) && !fo.is_null() && flags(fo) & H_REFUSED != 0 {
            return finish(irp, (*fo).FsContext as usize as u32 as i32, 0);
        }
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

/// Parses what follows the device name: nothing, or `\nonblock`.
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
    let name = match name.first() {
        Some(&c) if c == b'\\' as u16 => &name[1..],
        _ => name,
    };
    if name.is_empty() {
        return Ok(false);
    }
    let want = sioctl::WIN_NONBLOCK_SUFFIX.as_bytes();
    let same = name.len() == want.len()
        && name.iter().zip(want).all(|(&c, &w)| c < 128 && (c as u8).eq_ignore_ascii_case(&w));
    if same {
        Ok(true)
    } else {
        Err(STATUS_OBJECT_NAME_NOT_FOUND)
    }
}

/// Marks a file object whose create failed (see [`H_REFUSED`]).
///
/// # Safety
/// `fo` is the file object of a create the driver still owns.
unsafe fn refuse(fo: *mut FILE_OBJECT, st: NTSTATUS) {
    if fo.is_null() {
        return;
    }
    // SAFETY: caller contract; FsContext/FsContext2 are the driver's.
    unsafe { (*fo).FsContext = st as u32 as usize as PVOID };
    set_flags(fo, H_REFUSED);
}

unsafe fn create(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a create IRP in dispatch; `create_inner` completes or pends it,
    // and the file object stays valid for the whole dispatch.
    unsafe {
        let fo = (*sl).FileObject;
        let st = create_inner(ext, irp, sl);
        if st < 0 {
            refuse(fo, st);
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
        // The desired access, when the I/O manager provides it (Wine passes no
        // security context: then the handle counts as both reader and writer).
        let sc = (*sl).Parameters.Create.SecurityContext;
        let (read, write) = if sc.is_null() {
            (true, true)
        } else {
            let a = (*sc).DesiredAccess;
            (a & (FILE_READ_DATA | GENERIC_READ | GENERIC_ALL) != 0, a & (FILE_WRITE_DATA | FILE_APPEND_DATA | GENERIC_WRITE | GENERIC_ALL) != 0)
        };
        // CREATE_ALWAYS and TRUNCATE_EXISTING arrive as FILE_OVERWRITE_IF and
        // FILE_OVERWRITE. FILE_SUPERSEDE (0, NtCreateFile only) is not taken:
        // Wine 8 passes no disposition at all, which reads as 0.
        let disposition = (*sl).Parameters.Create.Options >> 24;
        let truncate = matches!(disposition, FILE_OVERWRITE | FILE_OVERWRITE_IF);
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
struct Waiter {
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
                set_flags(fo, H_WAITING);
                if !irpq::enqueue(&mut g.waiters, irp, wuid_cancel) {
                    refuse(fo, STATUS_CANCELLED);
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
unsafe fn take_waiter(irp: *mut IRP) -> Option<Waiter> {
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
            let mut g = w.lock();
            RemoveEntryList(irp_list_entry(irp));
            // A bridge call waiting for this create ends with it.
            irpq::cancel_matching(&mut g.bridgeq, fo, &mut done);
            drop(g);
        }
        take_waiter(irp);
        refuse(fo, STATUS_CANCELLED);
        ktrace!("pended scullwuid create cancelled");
        set_io_status(irp, STATUS_CANCELLED, 0);
        IoCompleteRequest(irp, IO_NO_INCREMENT);
        done.complete();
    }
}

/// A bridge `WIN_IOCTL_OPEN_FLAGS` on a file object whose scullwuid create is
/// pended: it waits (pended too) until the create is granted or cancelled.
///
/// # Safety
/// A device-control IRP in dispatch on scullwuid, owned by the caller.
unsafe fn wuid_bridge_wait(ext: &DevExt, w: &SpinLock<WuidState>, irp: *mut IRP, fo: *mut FILE_OBJECT, buf: *mut u8, in_len: usize) -> NTSTATUS {
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
        // SAFETY: we own the IRP; the file object is valid during dispatch.
        unsafe {
            let f = flags(fo);
            if f & H_REFUSED != 0 {
                return finish(irp, (*fo).FsContext as usize as u32 as i32, 0);
            }
            return finish_result(irp, bridge_open_flags(ext, fo, buf, in_len));
        }
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
/// close): the open attempt is abandoned, so its pended create is cancelled
/// with it and the handle stays refused (STATUS_CANCELLED).
unsafe extern "C" fn wuid_bridge_cancel(d: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: called by the I/O manager with the cancel spin lock held, for a
    // bridge IOCTL we pended on this device.
    unsafe {
        IoReleaseCancelSpinLock((*irp).CancelIrql);
        let fo = (*IoGetCurrentIrpStackLocation(irp)).FileObject;
        let mut done = Done::new();
        if let Kind::Wuid(w, _) = &DevExt::of(d).kind {
            let mut g = w.lock();
            RemoveEntryList(irp_list_entry(irp));
            irpq::cancel_matching(&mut g.waiters, fo, &mut done);
            drop(g);
        }
        // IRPs on `done` are pended creates we own again: free their records.
        done.for_each(|c| {
            take_waiter(c);
        });
        refuse(fo, STATUS_CANCELLED);
        ktrace!("bridge open call cancelled; its pended create too");
        done.complete();
        set_io_status(irp, STATUS_CANCELLED, 0);
        IoCompleteRequest(irp, IO_NO_INCREMENT);
    }
}

/// The owner's last close freed scullwuid: admit every waiter the policy now
/// allows (the first one's user, then anyone of that user or privileged).
fn wuid_wake(ext: &DevExt, w: &SpinLock<WuidState>) {
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
                // Completed below; a bridge call waiting for it right after.
                InsertTailList(admitted_head, irp_list_entry(irp));
                while let Some(b) = irpq::find_file(&mut g.bridgeq, fo) {
                    if irpq::take(b) {
                        InsertTailList(admitted_head, irp_list_entry(b));
                    }
                }
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
                let buf = (*irp).AssociatedIrp.SystemBuffer as *mut u8;
                let in_len = (*sl).Parameters.DeviceIoControl.InputBufferLength as usize;
                finish_result(irp, bridge_open_flags(ext, fo, buf, in_len));
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
                        refuse((*sl).FileObject, STATUS_CANCELLED);
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

/// The position a read or write starts at.
///
/// # Safety
/// A read or write IRP's stack location and file object.
unsafe fn start_position(sl: *mut IO_STACK_LOCATION, fo: *mut FILE_OBJECT, write: bool, size: u64) -> i64 {
    // SAFETY: caller contract.
    unsafe {
        let off = if write { (*sl).Parameters.Write.ByteOffset.QuadPart } else { (*sl).Parameters.Read.ByteOffset.QuadPart };
        match off {
            USE_FILE_POINTER => (*fo).CurrentByteOffset.QuadPart,
            WRITE_TO_END if write => size as i64,
            o => o,
        }
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
        let r = with_store(ext, fo, |s| -> Result<usize, Error> {
            let pos = start_position(sl, fo, write, s.size());
            if pos < 0 {
                return Err(Error::Invalid);
            }
            let pos = pos as u64;
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
            (*fo).CurrentByteOffset.QuadPart = (pos + n as u64) as i64;
            Ok(n)
        })
        .unwrap_or(Err(Error::NoDevice));
        finish_result(irp, r)
    }
}

fn read_i32(buf: *const u8) -> i32 {
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
        let r: Result<usize, Error> = match code {
            sioctl::WIN_IOCTL_OPEN_FLAGS => {
                if let Kind::Wuid(w, _) = &ext.kind {
                    if flags(fo) & H_WAITING != 0 {
                        return wuid_bridge_wait(ext, w, irp, fo, buf, in_len);
                    }
                }
                bridge_open_flags(ext, fo, buf, in_len)
            }
            crate::testmode::WIN_IOCTL_TEST => crate::testmode::ioctl(buf, in_len, out_len),
            sioctl::WIN_IOCTL_GET_EOF => {
                if out_len < 8 {
                    Err(Error::BufferTooSmall)
                } else {
                    match file_size(ext, fo) {
                        Ok(size) => {
                            *(buf as *mut [u8; 8]) = (size as i64).to_le_bytes();
                            Ok(8)
                        }
                        Err(e) => Err(e),
                    }
                }
            }
            sioctl::WIN_IOCTL_SET_EOF => {
                if in_len < 8 {
                    Err(Error::BufferTooSmall)
                } else {
                    set_eof(ext, fo, i64::from_le_bytes(*(buf as *const [u8; 8]))).map(|_| 0)
                }
            }
            _ => scull_ioctl(irp, code, buf, in_len, out_len),
        };
        match r {
            Err(Error::BufferTooSmall) if code == Cmd::Stats.windows_code() => finish(irp, STATUS_BUFFER_OVERFLOW, out_len),
            r => finish_result(irp, r),
        }
    }
}

unsafe fn bridge_open_flags(ext: &DevExt, fo: *mut FILE_OBJECT, buf: *mut u8, in_len: usize) -> Result<usize, Error> {
    if in_len < 4 {
        return Err(Error::BufferTooSmall);
    }
    let v = read_i32(buf) as u32;
    if v & !(sioctl::WIN_OPEN_NONBLOCK | sioctl::WIN_OPEN_TRUNCATE) != 0 {
        return Err(Error::Invalid);
    }
    let mut f = flags(fo);
    if v & sioctl::WIN_OPEN_NONBLOCK != 0 {
        f |= H_NONBLOCK;
    } else {
        f &= !H_NONBLOCK;
    }
    set_flags(fo, f);
    if v & sioctl::WIN_OPEN_TRUNCATE != 0 {
        trim(ext, fo);
    }
    Ok(0)
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

fn file_size(ext: &DevExt, fo: *mut FILE_OBJECT) -> Result<u64, Error> {
    if matches!(ext.kind, Kind::Pipe(_)) {
        return Err(Error::NotSeekable);
    }
    with_store(ext, fo, |s| s.size()).ok_or(Error::NoDevice)
}

fn set_eof(ext: &DevExt, fo: *mut FILE_OBJECT, len: i64) -> Result<(), Error> {
    if matches!(ext.kind, Kind::Pipe(_)) {
        return Err(Error::NotSeekable);
    }
    if len < 0 {
        return Err(Error::Invalid);
    }
    with_store(ext, fo, |s| s.set_len(len as u64)).unwrap_or(Err(Error::NoDevice))
}

unsafe fn query_information(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a buffered query-information IRP: the system buffer holds Length bytes.
    unsafe {
        let fo = (*sl).FileObject;
        let len = (*sl).Parameters.QueryFile.Length as usize;
        let buf = (*irp).AssociatedIrp.SystemBuffer;
        let class = (*sl).Parameters.QueryFile.FileInformationClass;
        let r = if class == FileStandardInformation {
            let need = core::mem::size_of::<FILE_STANDARD_INFORMATION>();
            if len < need {
                Err(Error::BufferTooSmall)
            } else {
                file_size(ext, fo).map(|size| {
                    let info = buf as *mut FILE_STANDARD_INFORMATION;
                    ptr::write_bytes(info as *mut u8, 0, need);
                    (*info).AllocationSize.QuadPart = size as i64;
                    (*info).EndOfFile.QuadPart = size as i64;
                    (*info).NumberOfLinks = 1;
                    need
                })
            }
        } else if class == FilePositionInformation {
            let need = core::mem::size_of::<FILE_POSITION_INFORMATION>();
            if len < need {
                Err(Error::BufferTooSmall)
            } else if matches!(ext.kind, Kind::Pipe(_)) {
                Err(Error::NotSeekable)
            } else {
                (*(buf as *mut FILE_POSITION_INFORMATION)).CurrentByteOffset.QuadPart = (*fo).CurrentByteOffset.QuadPart;
                Ok(need)
            }
        } else {
            return finish(irp, STATUS_INVALID_DEVICE_REQUEST, 0);
        };
        finish_result(irp, r)
    }
}

unsafe fn set_information(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a buffered set-information IRP: the system buffer holds Length bytes.
    unsafe {
        let fo = (*sl).FileObject;
        let len = (*sl).Parameters.SetFile.Length as usize;
        let buf = (*irp).AssociatedIrp.SystemBuffer;
        let class = (*sl).Parameters.SetFile.FileInformationClass;
        let r = if class == FileEndOfFileInformation {
            if len < core::mem::size_of::<FILE_END_OF_FILE_INFORMATION>() {
                Err(Error::BufferTooSmall)
            } else {
                set_eof(ext, fo, (*(buf as *const FILE_END_OF_FILE_INFORMATION)).EndOfFile.QuadPart).map(|_| 0)
            }
        } else if class == FilePositionInformation {
            if len < core::mem::size_of::<FILE_POSITION_INFORMATION>() {
                Err(Error::BufferTooSmall)
            } else if matches!(ext.kind, Kind::Pipe(_)) {
                Err(Error::NotSeekable)
            } else {
                let p = (*(buf as *const FILE_POSITION_INFORMATION)).CurrentByteOffset.QuadPart;
                match store::seek(0, 0, Whence::Set, p) {
                    Ok(p) if p <= scull_core::geometry::MAX_SIZE => {
                        (*fo).CurrentByteOffset.QuadPart = p as i64;
                        Ok(0)
                    }
                    Ok(_) => Err(Error::FileTooBig),
                    Err(e) => Err(e),
                }
            }
        } else {
            return finish(irp, STATUS_INVALID_DEVICE_REQUEST, 0);
        };
        finish_result(irp, r)
    }
}

/// Unload: cancels every pended IRP on every device.
pub fn cancel_everything() {
    dev::for_each(|ext| {
        // SAFETY: a null file object matches every queued IRP.
        unsafe { cancel_pended(ext, ptr::null_mut()) };
    });
}


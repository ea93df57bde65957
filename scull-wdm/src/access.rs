//! Open and close policy: LDD3 access.c (scullsingle, sculluid, scullwuid,
//! scullpriv) and main.c's `scull_open`/`scull_release`, with scullpipe's
//! reader/writer counts (pipe.c's `scull_p_open`/`scull_p_release`). NT
//! primitives: IRP_MJ_CREATE (the create disposition, the granted access in
//! the security context, the path suffix in FileName), IRP_MJ_CLEANUP and
//! IRP_MJ_CLOSE, and for scullwuid's `wait_event_interruptible` a pended
//! create on a cancel-safe queue (`irpq`), completed by the owner's last
//! close or cancelled.
//!
//! scullpriv's key. LDD3's `scull_c_open` gives each controlling tty its
//! own device (keyed by `tty->index`, created on first open, kept until
//! unload), so the commands of one terminal session share one device. NT
//! has no controlling tty; scull.sys gives each opener **process** its own
//! device, keyed by the process id (`PsGetCurrentProcessId` in
//! IRP_MJ_CREATE, the client's id under Wine too). A process id alone is
//! ambiguous, since Windows reuses ids quickly, so the device also holds a
//! kernel handle to its process (`ZwOpenProcess`, SYNCHRONIZE,
//! `ident::Process`): NT frees an id only when its process object goes, and
//! the handle keeps the object, so while the device exists no other process
//! can carry its key. A device is freed when its process has exited (a
//! zero-timeout `ZwWaitForSingleObject` on that handle says signalled) and
//! no file object holds it (a count per device, decremented in
//! IRP_MJ_CLOSE: a handle duplicated into another process keeps it); the
//! check runs at every scullpriv open
//! (`scull_core::access::PrivTable::open_reaping`), so until the next open
//! the STATS report still lists an exited process's device (its memory is
//! still held). So a new process that gets a dead process's id starts with
//! an empty device, and short-lived openers never fill the 32 slots: only
//! 32 live opener processes do (then STATUS_SHARING_VIOLATION). Not chosen: a process-exit callback
//! (`PsSetCreateProcessNotifyRoutine`: a callback to unregister before
//! unload, run for every process on the machine; Wine accepts the
//! registration but is not known to call it), the process creation time
//! (`PsGetProcessCreateTimeQuadPart` is a crash stub in Wine) and the logon
//! session (all of a user's processes would share one device, which is not
//! LDD3's per-terminal privacy).

use crate::ddk::*;
use crate::dev::{self, DevExt, Kind, PrivSlot, WuidState, PARAMS};
use crate::dispatch::{finish, set_flags, flags, H_NONBLOCK, H_OWNS, H_READ, H_TRUNCATE, H_WRITE};
use crate::ident::{self, Sid};
use crate::irpq::{self, Done};
use crate::pipe;
use crate::pool;
use crate::store::trim;
use crate::sync::SpinLock;
use core::ptr;
use scull_core::access::Caller;
use scull_core::nt::{self, CreateAction, PendedEvent, PendedOpen};
use scull_core::store::Store;
use scull_core::Error;

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

/// IRP_MJ_CREATE (LDD3 `scull_open` and the access.c opens); PASSIVE_LEVEL.
/// Completes the IRP, or pends it (scullwuid held by another user).
pub(crate) unsafe fn create(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
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
        // A trimming disposition needs FILE_WRITE_DATA granted (N2); without
        // a security context (Wine) the disposition alone decides.
        let truncate = match nt::create_action((*sl).Parameters.Create.Options, granted) {
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
                // The key: the opener's process id, made unambiguous by the
                // handle to that process the device holds (module doc, N5).
                let pid = PsGetCurrentProcessId() as usize as u64;
                let geom = PARAMS.geometry();
                let make = || match ident::Process::open(pid) {
                    Ok(process) => Ok(PrivSlot { store: Store::new(pool::StorePool, geom), process }),
                    Err(st) => {
                        kprint!("scullpriv: opening process {} failed: {:#x}", pid, st);
                        Err(if st == STATUS_INSUFFICIENT_RESOURCES { Error::NoMemory } else { Error::NoDevice })
                    }
                };
                t.lock().open_reaping(pid, |_, s| s.process.exited(), make).map(|slot| {
                    (*fo).FsContext = (slot + 1) as PVOID;
                    f |= H_OWNS;
                })
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
    let r = g.policy.open(&c);
    // SAFETY: the queue is guarded by the held lock.
    match unsafe { crate::pipe::bound_pended(r, f & H_NONBLOCK == 0, &mut g.waiters) } {
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

/// The cancel routine of pended scullwuid opens: entered at DISPATCH_LEVEL
/// with the cancel spin lock held; it releases it first.
unsafe extern "C" fn wuid_cancel(d: *mut DEVICE_OBJECT, irp: *mut IRP) {
    let _active = crate::rundown::enter_cancel();
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
/// LDD3's `wake_up_interruptible(&scull_w_wait)`; called from close at
/// PASSIVE_LEVEL, takes the device's spin lock (DISPATCH_LEVEL inside).
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

/// Cancels the pended IRPs of `fo` (every one when null: unload) on a pipe
/// or scullwuid; PASSIVE_LEVEL.
pub(crate) unsafe fn cancel_pended(ext: &DevExt, fo: *mut FILE_OBJECT) {
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

/// IRP_MJ_CLEANUP (the last handle of a file object closed); PASSIVE_LEVEL.
/// Cancels its pended IRPs.
pub(crate) unsafe fn cleanup(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a cleanup IRP in dispatch.
    unsafe {
        cancel_pended(ext, (*sl).FileObject);
        finish(irp, STATUS_SUCCESS, 0)
    }
}

/// IRP_MJ_CLOSE (LDD3 `scull_release` and the access.c releases);
/// PASSIVE_LEVEL.
pub(crate) unsafe fn close(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
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
                Kind::Priv(t) => {
                    if let Some(slot) = crate::store::priv_slot(fo) {
                        t.lock().close(slot);
                    }
                    (*fo).FsContext = ptr::null_mut();
                }
                _ => {}
            }
        }
        set_flags(fo, 0);
        finish(irp, STATUS_SUCCESS, 0)
    }
}

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
use crate::dev::{self, take_waiter, waiter_of, DevExt, Kind, PrivSlot, Waiter, WuidState, PARAMS};
use crate::handle::{self, set_flags, Flags};
use crate::ident::{self, Sid};
use crate::irp::{self, finish};
use crate::irpq::Done;
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
    // SAFETY: the file object of a create IRP in dispatch, valid meanwhile.
    let n = unsafe { &(*fo).FileName };
    let name: &[u16] = if n.Buffer.is_null() || n.Length == 0 {
        &[]
    } else {
        // SAFETY: FileName is a counted string of Length bytes, unchanged
        // during the create.
        unsafe { core::slice::from_raw_parts(n.Buffer, n.Length as usize / 2) }
    };
    nt::parse_suffix(name)
}

/// IRP_MJ_CREATE (LDD3 `scull_open` and the access.c opens); PASSIVE_LEVEL.
/// Completes the IRP, or pends it (scullwuid held by another user).
///
/// # Safety
/// A create IRP in dispatch, owned by the caller, with its stack location.
pub(crate) unsafe fn create(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: the IRP's current stack location (contract).
    let fo = unsafe { (*sl).FileObject };
    // SAFETY: forwarded contract; `create_inner` completes or pends the
    // IRP, and the file object stays valid for the whole dispatch.
    let st = unsafe { create_inner(ext, irp, sl) };
    if st < 0 {
        #[cfg(feature = "test-build")]
        handle::refuse(fo, st);
        let _ = fo;
        ktrace!("create on {} refused: {:#x}", dev::dev_name(ext.dev).as_str(), st);
    } else if st == STATUS_PENDING {
        ktrace!("create on {} pended", dev::dev_name(ext.dev).as_str());
    } else {
        ktrace!("open {} (pid {})", dev::dev_name(ext.dev).as_str(), crate::testmode::current_pid());
    }
    st
}

/// The access the I/O manager granted this create, if it says (Wine
/// passes no security context).
///
/// # Safety
/// `sl` is the stack location of a create IRP in dispatch.
unsafe fn granted_access(sl: *mut IO_STACK_LOCATION) -> Option<ACCESS_MASK> {
    // SAFETY: a valid stack location (contract), only read here.
    let sl = unsafe { &*sl };
    // SAFETY: a create's parameters (contract).
    let sc = unsafe { sl.Parameters.Create.SecurityContext };
    if sc.is_null() {
        return None;
    }
    // SAFETY: a non-null security context of a create in dispatch is valid.
    let sc = unsafe { &*sc };
    if sc.AccessState.is_null() {
        Some(sc.DesiredAccess)
    } else {
        // SAFETY: as above: its non-null access state is valid.
        Some(unsafe { (*sc.AccessState).PreviouslyGrantedAccess })
    }
}

/// # Safety
/// As for [`create`].
unsafe fn create_inner(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: the IRP's current stack location (contract).
    let fo = unsafe { (*sl).FileObject };
    let nonblock = match suffix_nonblock(fo) {
        Ok(b) => b,
        // SAFETY: the IRP is ours (contract).
        Err(st) => return unsafe { finish(irp, st, 0) },
    };
    // The role from the access the I/O manager granted: a MAXIMUM_ALLOWED
    // open asks for nothing specific. Wine passes no security context:
    // then the handle counts as both.
    // SAFETY: a create's stack location (contract).
    let granted = unsafe { granted_access(sl) };
    let nt::Role { read, write } = nt::role_from_granted(granted);
    // A trimming disposition needs FILE_WRITE_DATA granted; without a
    // security context (Wine) the disposition alone decides.
    // SAFETY: a valid stack location (contract), only read here.
    let params = unsafe { &(*sl).Parameters };
    // SAFETY: a create's parameters (contract).
    let options = unsafe { params.Create.Options };
    let truncate = match nt::create_action(options, granted) {
        Ok(a) => a == CreateAction::Trim,
        // SAFETY: the IRP is ours (contract).
        Err(st) => return unsafe { finish(irp, st, 0) },
    };
    let mut f = Flags::NONE
        .with(Flags::READ, read)
        .with(Flags::WRITE, write)
        .with(Flags::NONBLOCK, nonblock)
        .with(Flags::TRUNCATE, truncate);
    handle::set_priv_slot(fo, None);

    // SAFETY (the early returns below): the IRP is ours (contract).
    let r: Result<(), Error> = match &ext.kind {
        Kind::Store(_) => Ok(()),
        Kind::Pipe(p) => pipe::open(p, read, write).map(|_| f |= Flags::OWNS),
        Kind::Single(s, _) => s.open().map(|_| f |= Flags::OWNS),
        Kind::Uid(u, _) => match ident::caller(irp) {
            Ok(c) => u.lock().open(&c).map(|_| f |= Flags::OWNS),
            // SAFETY: see above.
            Err(st) => return unsafe { finish(irp, st, 0) },
        },
        Kind::Wuid(w, _) => match ident::caller(irp) {
            // SAFETY: see above; a create on this scullwuid device.
            Ok(c) => return unsafe { wuid_open(ext, w, irp, fo, c, f) },
            // SAFETY: see above.
            Err(st) => return unsafe { finish(irp, st, 0) },
        },
        Kind::Priv(t) => {
            // The key: the opener's process id, made unambiguous by the
            // handle to that process the device holds (module doc).
            // SAFETY: no precondition; the dispatch runs in the opener's thread.
            let pid = unsafe { PsGetCurrentProcessId() } as usize as u64;
            let geom = PARAMS.geometry();
            let make = || match ident::Process::open(pid) {
                Ok(process) => Ok(PrivSlot { store: Store::new(pool::StorePool, geom), process }),
                Err(st) => {
                    kprint!("scullpriv: opening process {} failed: {:#x}", pid, st);
                    Err(if st == STATUS_INSUFFICIENT_RESOURCES { Error::NoMemory } else { Error::NoDevice })
                }
            };
            t.lock().open_reaping(pid, |_, s| s.process.exited(), make).map(|slot| {
                handle::set_priv_slot(fo, Some(slot));
                f |= Flags::OWNS;
            })
        }
    };
    if let Err(e) = r {
        // SAFETY: see above.
        return unsafe { finish(irp, e.ntstatus(), 0) };
    }
    set_flags(fo, f);
    if truncate {
        trim(ext, fo);
    }
    // SAFETY: see above.
    unsafe { finish(irp, STATUS_SUCCESS, 0) }
}

/// A create on scullwuid: granted now, pended until the owner's last close
/// (or a cancel), or refused.
///
/// # Safety
/// A create IRP in dispatch on the scullwuid device `ext` (whose state `w`
/// is), owned by the caller; `fo` is its file object.
unsafe fn wuid_open(ext: &DevExt, w: &SpinLock<WuidState>, irp: *mut IRP, fo: *mut FILE_OBJECT, c: Caller<Sid>, f: Flags) -> NTSTATUS {
    // The waiter record is allocated before taking the spin lock.
    let rec = pool::alloc(core::mem::size_of::<Waiter>());
    let mut done = Done::new();
    let mut g = w.lock();
    let r = g.policy.open(&c);
    match crate::pipe::bound_pended(r, !f.contains(Flags::NONBLOCK), &mut g.waiters) {
        Ok(()) => {
            drop(g);
            if let Some(p) = rec {
                // SAFETY: unused block from `alloc`.
                unsafe { pool::free(p) };
            }
            set_flags(fo, f | Flags::OWNS);
            if f.contains(Flags::TRUNCATE) {
                trim(ext, fo);
            }
            // SAFETY: we own the IRP.
            unsafe { finish(irp, STATUS_SUCCESS, 0) }
        }
        Err(Error::WouldBlock) if !f.contains(Flags::NONBLOCK) => {
            let Some(p) = rec else {
                drop(g);
                // SAFETY: we own the IRP.
                return unsafe { finish(irp, Error::NoMemory.ntstatus(), 0) };
            };
            // SAFETY: the pool block is big enough for a Waiter and 16-byte
            // aligned, and nothing else refers to it.
            unsafe { ptr::write(p.as_ptr() as *mut Waiter, Waiter { caller: c, flags: f }) };
            // SAFETY: we own the IRP; its driver context is ours while it is queued.
            let ctx = unsafe { irp_driver_context(irp) };
            // SAFETY: as above.
            unsafe { (*ctx)[0] = p.as_ptr().cast() };
            // No role until granted (the test build marks it waiting).
            set_flags(fo, Flags::NONE);
            #[cfg(feature = "test-build")]
            set_flags(fo, Flags::WAITING);
            // SAFETY: we own the IRP; `wuid_cancel` unlinks it from this
            // queue under this lock.
            if unsafe { !g.waiters.enqueue(irp, wuid_cancel) } {
                #[cfg(feature = "test-build")]
                handle::refuse(fo, STATUS_CANCELLED);
                // SAFETY: cancelled before it was queued: still ours.
                unsafe { done.push(irp, STATUS_CANCELLED, 0) };
                // SAFETY: as above; frees the record written above.
                unsafe { take_waiter(irp) };
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

/// The cancel routine of pended scullwuid opens: entered at DISPATCH_LEVEL
/// with the cancel spin lock held; it releases it first.
///
/// # Safety
/// Called only by the I/O manager, as the cancel routine of an IRP this
/// driver queued, with the cancel spin lock held.
unsafe extern "C" fn wuid_cancel(d: *mut DEVICE_OBJECT, irp: *mut IRP) {
    let _active = crate::rundown::enter_cancel();
    // SAFETY: called by the I/O manager with the cancel spin lock held, for a
    // create we pended on this device: the cancel routine owns the IRP.
    unsafe { irp::release_cancel_lock(irp) };
    // SAFETY: as above.
    let fo = unsafe { irp::file_object(irp) };
    let mut done = Done::new();
    // SAFETY: `d` is one of our devices (the I/O manager passes the IRP's).
    if let Kind::Wuid(w, _) = unsafe { &DevExt::of(d).kind } {
        let mut g = w.lock();
        // SAFETY: the IRP was queued on `waiters`; this is its cancel routine.
        unsafe { g.waiters.unlink_cancelled(irp) };
        // A bridge call waiting for this create ends with it.
        #[cfg(feature = "test-build")]
        g.bridgeq.cancel_matching(fo, &mut done);
        drop(g);
    }
    // SAFETY: the IRP is ours (as above), a pended scullwuid create.
    unsafe { take_waiter(irp) };
    if let PendedOpen::Refused(_st) = nt::pended_open(PendedOpen::Waiting, PendedEvent::CancelCreate) {
        #[cfg(feature = "test-build")]
        handle::refuse(fo, _st);
    }
    let _ = fo;
    ktrace!("pended scullwuid create cancelled");
    // SAFETY: ours to complete (as above), unlinked.
    unsafe { finish(irp, STATUS_CANCELLED, 0) };
    done.complete();
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
    let WuidState { policy, waiters, #[cfg(feature = "test-build")] bridgeq } = &mut *g;
    #[cfg(feature = "test-build")]
    let mut others = (policy, bridgeq);
    #[cfg(not(feature = "test-build"))]
    let mut others = (policy, ());
    waiters.take_each(
        &mut others,
        |(policy, _), irp| {
            // SAFETY: a pended create on `waiters`, whose record stays until
            // the create leaves the queue.
            let rec = unsafe { waiter_of(irp) };
            rec.is_some_and(|r| policy.state().available(&r.caller))
        },
        |(policy, _bridgeq), irp| {
            // SAFETY: just taken off `waiters` (so ours), and its record
            // (which `want` saw) is freed only below, after this closure.
            let Some(rec) = (unsafe { waiter_of(irp) }) else { return };
            let _ = policy.open(&rec.caller);
            // SAFETY: as above.
            let fo = unsafe { irp::file_object(irp) };
            // The handle is usable from here on: set its flags under the lock.
            set_flags(fo, rec.flags | Flags::OWNS);
            // Completed below (nt::pended_open: the create first, then
            // the test build's bridge calls waiting for it).
            // SAFETY: as above.
            let e = unsafe { irp_list_entry(irp) };
            // SAFETY: the IRP is ours, off every queue; `admitted` is a local list.
            unsafe { InsertTailList(admitted_head, e) };
            #[cfg(feature = "test-build")]
            crate::bridge::admit_waiting_calls(_bridgeq, fo, admitted_head);
        },
    );
    drop(g);
    // SAFETY: every entry on `admitted` is a create or bridge call we own again.
    while let Some(e) = unsafe { RemoveHeadList(admitted_head) } {
        // SAFETY: as above: an IRP's list entry.
        let irp = unsafe { irp_from_list_entry(e) };
        // SAFETY: as above: an IRP we own.
        if unsafe { irp::major(irp) } == IRP_MJ_CREATE {
            // SAFETY: a scullwuid create we own.
            let f = unsafe { take_waiter(irp) }.map_or(Flags::NONE, |w| w.flags);
            if f.contains(Flags::TRUNCATE) {
                // SAFETY: as above.
                trim(ext, unsafe { irp::file_object(irp) });
            }
            ktrace!("pended scullwuid create granted");
            // SAFETY: ours to complete.
            unsafe { finish(irp, STATUS_SUCCESS, 0) };
        } else {
            #[cfg(feature = "test-build")]
            // SAFETY: a bridge OPEN_FLAGS call taken by `admit_waiting_calls`, ours.
            unsafe { crate::bridge::complete_admitted_call(ext, irp) };
        }
    }
}

/// Cancels the pended IRPs of `fo` (every one when null: unload) on a pipe
/// or scullwuid; PASSIVE_LEVEL.
pub(crate) fn cancel_pended(ext: &DevExt, fo: *mut FILE_OBJECT) {
    match &ext.kind {
        Kind::Pipe(p) => pipe::cancel_file(p, fo),
        Kind::Wuid(w, _) => {
            let mut done = Done::new();
            let mut g = w.lock();
            g.waiters.cancel_matching(fo, &mut done);
            #[cfg(feature = "test-build")]
            g.bridgeq.cancel_matching(fo, &mut done);
            drop(g);
            // Free the records of the cancelled waiters; their handles stay refused.
            done.for_each(|irp| {
                // SAFETY: an IRP on `done`: ours, not yet completed.
                if unsafe { irp::major(irp) } == IRP_MJ_CREATE {
                    // SAFETY: as above: a scullwuid create we own.
                    unsafe { take_waiter(irp) };
                    #[cfg(feature = "test-build")]
                    // SAFETY: as above.
                    handle::refuse(unsafe { irp::file_object(irp) }, STATUS_CANCELLED);
                }
            });
            done.complete();
        }
        _ => {}
    }
}

/// Unload: cancels every pended IRP on every device.
pub fn cancel_everything() {
    // A null file object matches every queued IRP.
    dev::for_each(|ext| cancel_pended(ext, ptr::null_mut()));
}

/// IRP_MJ_CLEANUP (the last handle of a file object closed); PASSIVE_LEVEL.
/// Cancels its pended IRPs.
///
/// # Safety
/// A cleanup IRP in dispatch, owned by the caller, with its stack location.
pub(crate) unsafe fn cleanup(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: the IRP's current stack location (contract).
    cancel_pended(ext, unsafe { (*sl).FileObject });
    // SAFETY: the IRP is ours (contract).
    unsafe { finish(irp, STATUS_SUCCESS, 0) }
}

/// IRP_MJ_CLOSE (LDD3 `scull_release` and the access.c releases);
/// PASSIVE_LEVEL.
///
/// # Safety
/// A close IRP in dispatch, owned by the caller, with its stack location.
pub(crate) unsafe fn close(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: the IRP's current stack location (contract).
    let fo = unsafe { (*sl).FileObject };
    // Wine sends no CLEANUP: drain here too.
    cancel_pended(ext, fo);
    let f = handle::flags(fo);
    if f.contains(Flags::OWNS) {
        match &ext.kind {
            Kind::Pipe(p) => pipe::release(p, f.contains(Flags::READ), f.contains(Flags::WRITE)),
            Kind::Single(s, _) => s.release(),
            Kind::Uid(u, _) => u.lock().release(),
            Kind::Wuid(w, _) => {
                let free = w.lock().policy.release();
                if free {
                    wuid_wake(ext, w);
                }
            }
            Kind::Priv(t) => {
                if let Some(slot) = handle::priv_slot(fo) {
                    t.lock().close(slot);
                }
                handle::set_priv_slot(fo, None);
            }
            _ => {}
        }
    }
    set_flags(fo, Flags::NONE);
    // SAFETY: the IRP is ours (contract).
    unsafe { finish(irp, STATUS_SUCCESS, 0) }
}

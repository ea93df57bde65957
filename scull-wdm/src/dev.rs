//! The device objects and what their extensions hold.
//!
//! Each `\Device\Scull*` object's extension is a [`DevExt`]: the scull-core
//! [`Dev`] it is, and the state of that kind of device. Locks and list heads
//! are initialised in place after the extension is written, and the extension
//! never moves (the I/O manager owns its memory).

use crate::ddk::*;
use crate::handle::Flags;
use crate::ident::Sid;
use crate::irpq::IrpQueue;
use crate::pool::{Pool, StorePool};
use crate::sync::{SemLock, SpinLock};
use core::fmt::Write;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use scull_core::access::{OwnerUid, PrivTable, SingleOpen, WaitUid};
use scull_core::devices::Dev;
use scull_core::geometry::{Params, MAX_NR_DEVS};
use scull_core::pipe::Pipe;
use scull_core::store::Store;

/// scullpriv keeps at most this many private devices (one per live opener
/// process; a device is freed once its process has exited and no file
/// holds it, see `access.rs`).
pub const MAX_PRIV: usize = scull_core::access::PRIV_SLOTS;
const MAGIC: u32 = u32::from_le_bytes(*b"scul");
/// Scull0..N-1, ScullPipe0..P-1, and the four access devices.
pub const MAX_DEVICES: usize = 2 * MAX_NR_DEVS as usize + 4;

/// The global defaults (LDD3's scull_quantum, scull_qset, scull_p_buffer).
pub static PARAMS: Params = Params::new();

/// Every device object, in creation order (the order of the STATS report).
/// Written only by DriverEntry and DriverUnload, which nothing runs beside.
pub static DEVICES: [AtomicPtr<DEVICE_OBJECT>; MAX_DEVICES] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_DEVICES];
pub static NDEVICES: AtomicUsize = AtomicUsize::new(0);

pub type StoreLock = SemLock<Store<StorePool>>;

/// One scullpriv device: its store and the process it belongs to (whose
/// handle reserves the process id that keys it).
pub struct PrivSlot {
    pub store: Store<StorePool>,
    pub process: crate::ident::Process,
}

/// A scull pipe: the core's state machine plus the queues of pended IRPs.
pub struct PipeState {
    pub pipe: Pipe<Pool>,
    /// Pended reads (pipe empty).
    pub readq: IrpQueue,
    /// Pended writes (pipe full).
    pub writeq: IrpQueue,
}

/// scullwuid: the policy plus the pended IRP_MJ_CREATEs waiting for it.
pub struct WuidState {
    pub policy: WaitUid<Sid>,
    pub waiters: IrpQueue,
    /// Test build only: bridge IOCTLs (`WIN_IOCTL_OPEN_FLAGS`) sent on a file object whose
    /// create is still pended: an I/O manager that does not wait for
    /// IRP_MJ_CREATE (Wine 8) already gave the caller a handle, and the
    /// bridge call is where that caller waits. Completed with the create.
    #[cfg(feature = "test-build")]
    pub bridgeq: IrpQueue,
}

/// A pended scullwuid open: who is waiting, and the handle flags to apply.
/// Kept in a pool block that the create IRP's `DriverContext[0]` points to
/// while it is queued on `WuidState::waiters`.
pub struct Waiter {
    pub caller: scull_core::access::Caller<Sid>,
    pub flags: Flags,
}

/// The waiter record of a pended scullwuid create, if it has one.
///
/// # Safety
/// `irp` is a create pended by scullwuid (on `WuidState::waiters`, or just
/// taken off it), valid for `'a`; the record is not freed during `'a`.
pub unsafe fn waiter_of<'a>(irp: *mut IRP) -> Option<&'a Waiter> {
    // SAFETY: a valid IRP the driver handles (contract); its driver context is ours.
    let ctx = unsafe { irp_driver_context(irp) };
    // SAFETY: as above.
    let p = unsafe { (*ctx)[0] } as *const Waiter;
    // SAFETY: null, or the Waiter the pending create wrote, alive for `'a` (contract).
    unsafe { p.as_ref() }
}

/// Frees the waiter record of a pended create that leaves the queue.
///
/// # Safety
/// The driver owns `irp`, a create pended on scullwuid; its
/// `DriverContext[0]` is null or a `Waiter` block.
pub unsafe fn take_waiter(irp: *mut IRP) -> Option<Waiter> {
    // SAFETY: the driver owns the IRP (contract); its driver context is ours.
    let ctx = unsafe { irp_driver_context(irp) };
    // SAFETY: as above.
    let p = unsafe { (*ctx)[0] } as *mut Waiter;
    // SAFETY: as above.
    unsafe { (*ctx)[0] = ptr::null_mut() };
    let p = ptr::NonNull::new(p)?;
    // SAFETY: a Waiter written by the pending create, read once (the slot
    // is cleared above).
    let w = unsafe { ptr::read(p.as_ptr()) };
    // SAFETY: the pool block of that Waiter, no longer referenced.
    unsafe { crate::pool::free(p.cast()) };
    Some(w)
}

#[allow(clippy::large_enum_variant)] // lives in place in a device extension, never moved
pub enum Kind {
    Store(StoreLock),
    Pipe(SpinLock<PipeState>),
    Single(SingleOpen, StoreLock),
    Uid(SemLock<OwnerUid<Sid>>, StoreLock),
    Wuid(SpinLock<WuidState>, StoreLock),
    /// Keyed by the opener's process id, held by a handle to the process.
    Priv(SemLock<PrivTable<u64, PrivSlot, MAX_PRIV>>),
}

pub struct DevExt {
    magic: u32,
    pub dev: Dev,
    linked: bool,
    pub kind: Kind,
}

impl DevExt {
    /// The extension of one of our devices.
    ///
    /// # Safety
    /// `d` is a device object this driver created and has not deleted.
    pub unsafe fn of<'a>(d: *mut DEVICE_OBJECT) -> &'a DevExt {
        // SAFETY: a device object of ours (contract).
        let p = unsafe { (*d).DeviceExtension } as *const DevExt;
        // SAFETY: `create` wrote a DevExt there, which lives until the
        // device is deleted.
        let e = unsafe { &*p };
        debug_assert!(e.magic == MAGIC);
        e
    }

    /// The one store of a store, scullsingle, sculluid or scullwuid device.
    /// None for pipes and for scullpriv, whose stores are per opener
    /// (`store::with_store` finds them through the file's slot).
    pub fn store_lock(&self) -> Option<&StoreLock> {
        match &self.kind {
            Kind::Store(s) | Kind::Single(_, s) | Kind::Uid(_, s) | Kind::Wuid(_, s) => Some(s),
            _ => None,
        }
    }
}

fn new_store() -> Store<StorePool> {
    Store::new(StorePool, PARAMS.geometry())
}

fn kind_for(dev: Dev) -> Kind {
    match dev {
        Dev::Scull(_) => Kind::Store(SemLock::new(new_store())),
        Dev::Pipe(_) => Kind::Pipe(SpinLock::new(PipeState { pipe: Pipe::new(), readq: IrpQueue::new(), writeq: IrpQueue::new() })),
        Dev::Single => Kind::Single(SingleOpen::new(), SemLock::new(new_store())),
        Dev::Uid => Kind::Uid(SemLock::new(OwnerUid::new()), SemLock::new(new_store())),
        Dev::Wuid => Kind::Wuid(
            SpinLock::new(WuidState {
                policy: WaitUid::new(),
                waiters: IrpQueue::new(),
                #[cfg(feature = "test-build")]
                bridgeq: IrpQueue::new(),
            }),
            SemLock::new(new_store()),
        ),
        Dev::Priv => Kind::Priv(SemLock::new(PrivTable::new())),
    }
}

/// Initialises the locks and list heads of an extension where it lives.
///
/// # Safety
/// `k` is in its final place and not yet shared.
unsafe fn init_in_place(k: &Kind) {
    match k {
        // SAFETY: each lock is initialised once, in place, before it is
        // shared (contract), and so is each queue, through the one
        // reference to the lock's data that exists yet.
        Kind::Store(s) | Kind::Single(_, s) => unsafe { s.init() },
        Kind::Pipe(p) => {
            // SAFETY: as above.
            unsafe { p.init() };
            // SAFETY: as above.
            let st = unsafe { p.get_unlocked() };
            // SAFETY: as above.
            unsafe { st.readq.init() };
            // SAFETY: as above.
            unsafe { st.writeq.init() };
        }
        Kind::Uid(u, s) => {
            // SAFETY: as above.
            unsafe { u.init() };
            // SAFETY: as above.
            unsafe { s.init() };
        }
        Kind::Wuid(w, s) => {
            // SAFETY: as above.
            unsafe { w.init() };
            // SAFETY: as above.
            let st = unsafe { w.get_unlocked() };
            // SAFETY: as above.
            unsafe { st.waiters.init() };
            // SAFETY: as above.
            #[cfg(feature = "test-build")]
            unsafe { st.bridgeq.init() };
            // SAFETY: as above.
            unsafe { s.init() };
        }
        // SAFETY: as above.
        Kind::Priv(t) => unsafe { t.init() },
    }
}

fn names(dev: Dev) -> (WStr<48>, WStr<48>) {
    let mut n = WStr::<48>::new();
    let mut l = WStr::<48>::new();
    let _ = n.write_str("\\Device\\");
    let _ = dev.windows_name(&mut n);
    let _ = l.write_str("\\DosDevices\\");
    let _ = dev.windows_name(&mut l);
    (n, l)
}

/// Creates one device, writes its extension, records it in [`DEVICES`]
/// and applies the ACL. The device keeps DO_DEVICE_INITIALIZING and gets
/// no DOS link here: nothing can open it until [`link`] and [`ready`] have
/// run for every device (`scull_core::nt::bring_up`).
///
/// # Safety
/// Called from DriverEntry with a valid driver object.
pub unsafe fn create(driver: *mut DRIVER_OBJECT, dev: Dev) -> NTSTATUS {
    let (mut name, _) = names(dev);
    let mut uname = name.unicode();
    let mut d: *mut DEVICE_OBJECT = ptr::null_mut();
    // SAFETY: valid driver object and name; the extension is sized for DevExt.
    let st = unsafe {
        IoCreateDevice(
            driver,
            core::mem::size_of::<DevExt>() as u32,
            uname.as_mut_ptr(),
            FILE_DEVICE_UNKNOWN,
            FILE_DEVICE_SECURE_OPEN,
            0,
            &mut d,
        )
    };
    if st < 0 {
        kprint!("IoCreateDevice {} failed: {:#x}", dev_name(dev).as_str(), st);
        return st;
    }
    // SAFETY (each step): a new device whose extension (zeroed, suitably
    // aligned, at least size_of::<DevExt>() bytes) nobody else sees yet.
    // SAFETY: see above.
    let ext = unsafe { (*d).DeviceExtension } as *mut DevExt;
    // SAFETY: see above.
    unsafe { ptr::write(ext, DevExt { magic: MAGIC, dev, linked: false, kind: kind_for(dev) }) };
    // SAFETY: see above: written just before.
    let kind = unsafe { &(*ext).kind };
    // SAFETY: see above; the extension is in its final place and not shared.
    unsafe { init_in_place(kind) };
    // SAFETY: see above.
    unsafe { (*d).Flags |= DO_BUFFERED_IO };
    let n = NDEVICES.load(Ordering::Relaxed);
    DEVICES[n].store(d, Ordering::Relaxed);
    NDEVICES.store(n + 1, Ordering::Relaxed);
    // The ACL before anything can open it (initialising, no link yet).
    // SAFETY: the device just created.
    match unsafe { crate::acl::apply(d) } {
        Ok(aces) => ktrace!("{}: ACL applied, {} ACEs read back", dev_name(dev).as_str(), aces),
        Err(st) => {
            kprint!("setting the ACL of {} failed: {:#x}", dev_name(dev).as_str(), st);
            return st;
        }
    }
    STATUS_SUCCESS
}

/// Creates the DOS link (`\DosDevices\Scull0`...) of the `i`-th device.
/// The device still has DO_DEVICE_INITIALIZING, so the link does not make
/// it openable yet (see [`ready`]).
///
/// # Safety
/// Called from DriverEntry, after [`create`] succeeded for device `i`.
pub unsafe fn link(i: usize) -> NTSTATUS {
    let d = DEVICES[i].load(Ordering::Relaxed);
    // SAFETY: caller contract: a device `create` made, with its DevExt.
    let dev = unsafe { DevExt::of(d) }.dev;
    let (mut name, mut link) = names(dev);
    let mut uname = name.unicode();
    let mut ulink = link.unicode();
    // SAFETY: valid counted strings on our stack.
    let st = unsafe { IoCreateSymbolicLink(ulink.as_mut_ptr(), uname.as_mut_ptr()) };
    if st < 0 {
        kprint!("IoCreateSymbolicLink {} failed: {:#x}", dev_name(dev).as_str(), st);
        return st;
    }
    // SAFETY: our extension; no IRP reaches the device while it is
    // initialising (DO_DEVICE_INITIALIZING is still set), so nothing else
    // reads it.
    let ext = unsafe { (*d).DeviceExtension } as *mut DevExt;
    // SAFETY: as above.
    unsafe { (*ext).linked = true };
    st
}

/// Makes the `i`-th device openable: clears DO_DEVICE_INITIALIZING. Called
/// once every device exists and is linked.
///
/// # Safety
/// Called from DriverEntry, after [`create`] and [`link`] succeeded for
/// every device.
pub unsafe fn ready(i: usize) {
    let d = DEVICES[i].load(Ordering::Relaxed);
    // SAFETY: caller contract: our device; DriverEntry is the only code
    // touching its flags (no IRP reaches it before this store).
    unsafe { (*d).Flags &= !DO_DEVICE_INITIALIZING };
}

/// Deletes every device, newest first: its link, its state (freeing every
/// pool block it holds) and the object. The one cleanup path of DriverEntry
/// failures and DriverUnload.
///
/// # Safety
/// Nothing else runs in the driver (DriverEntry failure or DriverUnload), and
/// no IRP is queued any more.
pub unsafe fn delete_all() {
    let n = NDEVICES.swap(0, Ordering::Relaxed);
    for slot in DEVICES[..n].iter().rev() {
        let d = slot.swap(ptr::null_mut(), Ordering::Relaxed);
        if d.is_null() {
            continue;
        }
        // SAFETY (each step): a device we created, with a DevExt written by
        // `create`, that nothing else uses any more (contract).
        // SAFETY: see above.
        let ext = unsafe { (*d).DeviceExtension } as *mut DevExt;
        // SAFETY: see above.
        let (linked, dev) = {
            // SAFETY: see above.
            let e = unsafe { &*ext };
            (e.linked, e.dev)
        };
        if linked {
            let (_, mut link) = names(dev);
            let mut ulink = link.unicode();
            // SAFETY: a counted string on our stack, naming our link.
            let _ = unsafe { IoDeleteSymbolicLink(ulink.as_mut_ptr()) };
        }
        // SAFETY: see above; dropped once, and never read again.
        unsafe { ptr::drop_in_place(ext) };
        // SAFETY: see above; its extension is dropped.
        unsafe { IoDeleteDevice(d) };
    }
}

/// The Linux-style name (`scull0`, `scullpipe1`...) for logs and reports.
pub fn dev_name(dev: Dev) -> Name {
    let mut n = Name::new();
    let _ = dev.linux_name(&mut n);
    n
}

pub type Name = scull_core::report::StackStr<24>;

/// Visits every device extension in creation order.
pub fn for_each(mut f: impl FnMut(&DevExt)) {
    let n = NDEVICES.load(Ordering::Relaxed);
    for slot in &DEVICES[..n] {
        let d = slot.load(Ordering::Relaxed);
        if !d.is_null() {
            // SAFETY: a live device of ours (devices are deleted only at unload).
            f(unsafe { DevExt::of(d) });
        }
    }
}

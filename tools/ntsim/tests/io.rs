//! ntsim's I/O manager and verifier against a small driver written here
//! (Rust functions with the Microsoft x64 convention, loaded with
//! `io::load_native`). Each verifier check is shown to fire in a child
//! process (a stop ends the process), and the I/O manager's rules are
//! checked in-process. No real driver is needed.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]
#![allow(non_snake_case)]

use ntsim::ddi::*;
use ntsim::io::{self, STATUS_CANCELLED, STATUS_PENDING};
use ntsim::kernel;
use ntsim::win32::*;
use std::ffi::c_void;
use std::process::Command;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IO_STACK_LOCATION, IRP};
use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE, UNICODE_STRING};
use windows_sys::Win32::System::IO::OVERLAPPED;

// ------------------------------------------------------------- the test driver

const NORMAL: u32 = 0;
const PEND_READS: u32 = 1;
const DOUBLE_COMPLETE: u32 = 2;
const COMPLETE_WITH_CANCEL_ROUTINE: u32 = 3;
const PENDING_UNMARKED: u32 = 4;
const LEAK_AT_CREATE: u32 = 5;
const RETURN_AT_DISPATCH: u32 = 6;
const STATUS_MISMATCH: u32 = 7;
const INFO_TOO_BIG: u32 = 8;
const COMPLETE_PENDING: u32 = 9;
const PEND_NO_DRAIN: u32 = 10;
const COMPLETE_LOCKED: u32 = 11;

static MODE: AtomicU32 = AtomicU32::new(NORMAL);
static SEEN: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static PENDED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static CANCEL_THREAD: AtomicUsize = AtomicUsize::new(0);
static DEV: AtomicUsize = AtomicUsize::new(0);
const TAG: u32 = u32::from_le_bytes(*b"Test");

type SysDispatch = unsafe extern "system" fn(*const DEVICE_OBJECT, *mut IRP) -> i32;
type Dispatch = unsafe extern "win64" fn(*mut DEVICE_OBJECT, *mut IRP) -> i32;
type Cancel = unsafe extern "win64" fn(*mut DEVICE_OBJECT, *mut IRP);

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn ustr(w: &mut [u16]) -> UNICODE_STRING {
    UNICODE_STRING {
        Length: (w.len() * 2) as u16,
        MaximumLength: (w.len() * 2) as u16,
        Buffer: w.as_mut_ptr(),
    }
}

unsafe fn sl(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: the I/O manager's IRP and its stack location, valid while this driver routine owns the IRP.
    unsafe {
        (*irp)
            .Tail
            .Overlay
            .Anonymous2
            .Anonymous
            .CurrentStackLocation
    }
}

unsafe fn complete(irp: *mut IRP, st: i32, info: usize) -> i32 {
    // SAFETY: the I/O manager's IRP and its stack location, valid while this driver routine owns the IRP.
    unsafe {
        (*irp).IoStatus.Anonymous.Status = st;
        (*irp).IoStatus.Information = info;
        io::IofCompleteRequest(irp, 0);
    }
    st
}

unsafe fn set_cancel(irp: *mut IRP, f: Option<Cancel>) {
    // SAFETY: the I/O manager's IRP and its stack location, valid while this driver routine owns the IRP.
    let slot = unsafe { std::ptr::addr_of_mut!((*irp).CancelRoutine) } as *mut usize;
    unsafe { AtomicUsize::from_ptr(slot) }.store(f.map_or(0, |f| f as usize), Ordering::SeqCst);
}

unsafe extern "win64" fn cancel(_d: *mut DEVICE_OBJECT, irp: *mut IRP) {
    CANCEL_THREAD.store(kernel::thread_id(), Ordering::SeqCst);
    // SAFETY: the I/O manager's IRP and its stack location, valid while this driver routine owns the IRP.
    unsafe { IoReleaseCancelSpinLock((*irp).CancelIrql) };
    PENDED.lock().unwrap().retain(|&p| p != irp as usize);
    unsafe { complete(irp, STATUS_CANCELLED, 0) };
}

unsafe extern "win64" fn dispatch(_d: *mut DEVICE_OBJECT, irp: *mut IRP) -> i32 {
    // SAFETY: the I/O manager's IRP and its stack location, valid while this driver routine owns the IRP.
    let s = unsafe { sl(irp) };
    let major = unsafe { (*s).MajorFunction };
    SEEN.lock().unwrap().push(major);
    let mode = MODE.load(Ordering::SeqCst);
    // SAFETY: the I/O manager's IRP and its stack location, valid while this driver routine owns the IRP.
    unsafe {
        match (major, mode) {
            (io::IRP_MJ_CREATE, LEAK_AT_CREATE) => {
                ExAllocatePoolWithTag(512, 64, TAG);
                complete(irp, 0, 0)
            }
            (io::IRP_MJ_READ, PEND_READS) => {
                set_cancel(irp, Some(cancel));
                (*s).Control |= 1; // IoMarkIrpPending
                PENDED.lock().unwrap().push(irp as usize);
                STATUS_PENDING
            }
            (io::IRP_MJ_READ, DOUBLE_COMPLETE) => {
                complete(irp, 0, 0);
                complete(irp, 0, 0)
            }
            (io::IRP_MJ_READ, COMPLETE_WITH_CANCEL_ROUTINE) => {
                set_cancel(irp, Some(cancel));
                complete(irp, 0, 0)
            }
            (io::IRP_MJ_READ, PENDING_UNMARKED) => STATUS_PENDING,
            (io::IRP_MJ_READ, INFO_TOO_BIG) => complete(irp, 0, 4096),
            (io::IRP_MJ_READ, COMPLETE_LOCKED) => {
                static LOCK: AtomicUsize = AtomicUsize::new(0);
                let old = KeAcquireSpinLockRaiseToDpc(LOCK.as_ptr());
                let st = complete(irp, 0, 0);
                KeReleaseSpinLock(LOCK.as_ptr(), old);
                st
            }
            (io::IRP_MJ_READ, COMPLETE_PENDING) => {
                (*s).Control |= 1;
                complete(irp, STATUS_PENDING, 0);
                STATUS_PENDING
            }
            (io::IRP_MJ_READ, PEND_NO_DRAIN) => {
                (*s).Control |= 1;
                STATUS_PENDING
            }
            (io::IRP_MJ_CLEANUP, PEND_NO_DRAIN) => complete(irp, 0, 0),
            (io::IRP_MJ_READ, RETURN_AT_DISPATCH) => {
                static LOCK: AtomicUsize = AtomicUsize::new(0);
                let st = complete(irp, 0, 0);
                KeAcquireSpinLockRaiseToDpc(LOCK.as_ptr());
                st
            }
            (io::IRP_MJ_READ, STATUS_MISMATCH) => {
                complete(irp, 0, 0);
                0xC000_0001u32 as i32
            }
            (io::IRP_MJ_READ, _) => {
                let len = (*(s as *mut u8).add(8).cast::<u32>()) as usize;
                std::ptr::write_bytes((*irp).AssociatedIrp.SystemBuffer as *mut u8, b'x', len);
                complete(irp, 0, len)
            }
            (io::IRP_MJ_WRITE, _) => {
                complete(irp, 0, *(s as *mut u8).add(8).cast::<u32>() as usize)
            }
            (io::IRP_MJ_CLEANUP, _) => {
                // Cancel-safe drain: under the cancel lock, take the pended IRPs
                // whose cancel routine is still set.
                let mut irql = 0;
                IoAcquireCancelSpinLock(&mut irql);
                let mine: Vec<usize> = std::mem::take(&mut *PENDED.lock().unwrap());
                for &p in &mine {
                    set_cancel(p as *mut IRP, None);
                }
                IoReleaseCancelSpinLock(irql);
                for p in mine {
                    complete(p as *mut IRP, STATUS_CANCELLED, 0);
                }
                complete(irp, 0, 0)
            }
            _ => complete(irp, 0, 0),
        }
    }
}

unsafe extern "win64" fn unload(d: *mut DRIVER_OBJECT) {
    let mut l = wide("\\DosDevices\\T0");
    let mut ul = ustr(&mut l);
    // SAFETY: DriverEntry/DriverUnload's driver object and counted strings on this stack; the transmutes only restate our routines' Microsoft x64 convention for windows-sys's slot types.
    unsafe {
        io::IoDeleteSymbolicLink(&mut ul);
        io::IoDeleteDevice((*d).DeviceObject);
    }
}

unsafe extern "win64" fn entry(d: *mut DRIVER_OBJECT, _r: *mut UNICODE_STRING) -> i32 {
    let mut n = wide("\\Device\\T0");
    let mut l = wide("\\DosDevices\\T0");
    let (mut un, mut ul) = (ustr(&mut n), ustr(&mut l));
    let mut dev: *mut DEVICE_OBJECT = null_mut();
    // SAFETY: DriverEntry/DriverUnload's driver object and counted strings on this stack; the transmutes only restate our routines' Microsoft x64 convention for windows-sys's slot types.
    unsafe {
        let st = io::IoCreateDevice(d, 16, &mut un, 0x22, 0x100, 0, &mut dev);
        if st < 0 {
            return st;
        }
        (*dev).Flags |= 0x4; // DO_BUFFERED_IO
        (*dev).Flags &= !0x80; // DO_DEVICE_INITIALIZING
        DEV.store(dev as usize, Ordering::SeqCst);
        io::IoCreateSymbolicLink(&mut ul, &mut un);
        for f in (*d).MajorFunction.iter_mut() {
            *f = Some(std::mem::transmute::<Dispatch, SysDispatch>(dispatch));
        }
        (*d).DriverUnload = Some(std::mem::transmute::<
            unsafe extern "win64" fn(*mut DRIVER_OBJECT),
            unsafe extern "system" fn(*const DRIVER_OBJECT),
        >(unload));
    }
    0
}

fn open(path: &str, access: u32, flags: u32) -> HANDLE {
    let p: Vec<u16> = path.encode_utf16().chain([0]).collect();
    // SAFETY: ntsim's Win32 call on a handle this test opened, with buffers and out-parameters that are live locals (for overlapped I/O, alive until it completes).
    unsafe {
        CreateFileW(
            p.as_ptr(),
            access,
            3,
            std::ptr::null(),
            3,
            flags,
            null_mut(),
        )
    }
}

/// Loads the test driver on a fresh kernel; returns the exclusive guard.
fn setup(
    mode: u32,
) -> (
    std::sync::MutexGuard<'static, ()>,
    std::sync::Arc<io::Driver>,
) {
    let g = kernel::exclusive();
    kernel::reset();
    MODE.store(mode, Ordering::SeqCst);
    SEEN.lock().unwrap().clear();
    let d = io::load_native(entry, "t0").expect("DriverEntry");
    (g, d)
}

// ------------------------------------------------------------- verifier stops (child processes)

/// Runs test `name` in a child process with NTSIM_CHILD set; returns its
/// exit code (None: killed after 30 s, a missed bug that hangs) and output.
fn child(name: &str) -> (Option<i32>, String) {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("NTSIM_CHILD", name)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while c.try_wait().unwrap().is_none() && t0.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = c.kill();
    let o = c.wait_with_output().unwrap();
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

macro_rules! stops {
    ($name:ident, $bugcheck:literal, $check:literal, $body:block) => {
        /// A planted bug: the run must stop with this bugcheck, named by this check.
        #[test]
        fn $name() {
            if std::env::var("NTSIM_CHILD").as_deref() == Ok(stringify!($name)) {
                $body;
                println!("no stop");
                return;
            }
            let (code, out) = child(stringify!($name));
            assert_eq!(code, Some(3), "the run did not stop: {out}");
            assert!(
                out.contains(concat!("BUGCHECK ", $bugcheck, " (")),
                "want {}: {out}",
                $bugcheck
            );
            assert!(out.contains(concat!("[check ", $check, "]")), "want check {}: {out}", $check);
        }
    };
}

/// A read on an asynchronous handle (it may stay pending); the handle.
fn read_async() -> HANDLE {
    let h = open("\\\\.\\T0", 0x8000_0000, 0x4000_0000);
    assert_ne!(h, INVALID_HANDLE_VALUE);
    let b = Box::leak(Box::new([0u8; 8]));
    let ov = Box::leak(Box::new(OVERLAPPED::default()));
    // SAFETY: ntsim's Win32 call; the buffer and OVERLAPPED are leaked, so alive until completion.
    unsafe { ReadFile(h, b.as_mut_ptr(), 8, null_mut(), ov) };
    h
}

fn read_once() {
    let h = open("\\\\.\\T0", 0x8000_0000, 0);
    assert_ne!(h, INVALID_HANDLE_VALUE);
    let mut b = [0u8; 8];
    let mut n = 0;
    // SAFETY: ntsim's Win32 call on a handle this test opened, with buffers and out-parameters that are live locals (for overlapped I/O, alive until it completes).
    unsafe { ReadFile(h, b.as_mut_ptr(), 8, &mut n, null_mut()) };
}

stops!(planted_double_free_is_bad_pool_caller, "BAD_POOL_CALLER", "pool.free", {
    // SAFETY: deliberate misuse of a DDI's contract: ntsim stops the run (exits) before anything unsound happens.
    unsafe {
        let p = ExAllocatePoolWithTag(512, 16, TAG);
        ExFreePoolWithTag(p, TAG);
        ExFreePoolWithTag(p, TAG);
    }
});

stops!(planted_free_with_wrong_tag_is_bad_pool_caller, "BAD_POOL_CALLER", "pool.tag", {
    // SAFETY: deliberate misuse of a DDI's contract: ntsim stops the run (exits) before anything unsound happens.
    unsafe {
        let p = ExAllocatePoolWithTag(512, 16, TAG);
        ExFreePoolWithTag(p, u32::from_le_bytes(*b"Othr"));
    }
});

stops!(
    planted_spin_lock_taken_twice_is_already_owned,
    "SPIN_LOCK_ALREADY_OWNED", "spin.owner",
    {
        let l = AtomicUsize::new(0);
        // SAFETY: deliberate misuse of a DDI's contract: ntsim stops the run (exits) before anything unsound happens.
        unsafe {
            KeAcquireSpinLockRaiseToDpc(l.as_ptr());
            KeAcquireSpinLockRaiseToDpc(l.as_ptr());
        }
    }
);

stops!(
    planted_wait_at_dispatch_level_is_irql_violation,
    "DRIVER_VERIFIER_DETECTED_VIOLATION", "irql.ddi",
    {
        let l = AtomicUsize::new(0);
        let mut sem = windows_sys::Wdk::System::SystemServices::KSEMAPHORE::default();
        // SAFETY: deliberate misuse of a DDI's contract: ntsim stops the run (exits) before anything unsound happens.
        unsafe {
            KeInitializeSemaphore(&mut sem, 1, 1);
            KeAcquireSpinLockRaiseToDpc(l.as_ptr());
            KeWaitForSingleObject(&mut sem as *mut _ as *mut c_void, 0, 0, 0, null_mut());
        }
    }
);

stops!(
    planted_paged_pool_at_dispatch_level_is_irql_violation,
    "DRIVER_VERIFIER_DETECTED_VIOLATION", "irql.ddi",
    {
        let l = AtomicUsize::new(0);
        // SAFETY: deliberate misuse of a DDI's contract: ntsim stops the run (exits) before anything unsound happens.
        unsafe {
            KeAcquireSpinLockRaiseToDpc(l.as_ptr());
            ExAllocatePoolWithTag(1, 16, TAG);
        }
    }
);

stops!(
    planted_semaphore_released_past_limit,
    "KMODE_EXCEPTION_NOT_HANDLED", "sem.limit",
    {
        let mut sem = windows_sys::Wdk::System::SystemServices::KSEMAPHORE::default();
        // SAFETY: deliberate misuse of a DDI's contract: ntsim stops the run (exits) before anything unsound happens.
        unsafe {
            KeInitializeSemaphore(&mut sem, 1, 1);
            KeReleaseSemaphore(&mut sem, 0, 1, 0);
        }
    }
);

stops!(
    planted_unbalanced_critical_region_is_apc_index_mismatch,
    "APC_INDEX_MISMATCH", "critical.balance",
    {
        // SAFETY: deliberate misuse of a DDI's contract: ntsim stops the run (exits) before anything unsound happens.
        unsafe { KeLeaveCriticalRegion() };
    }
);

stops!(planted_closing_a_bad_kernel_handle, "INVALID_KERNEL_HANDLE", "handle.kernel", {
    // SAFETY: deliberate misuse of a DDI's contract: ntsim stops the run (exits) before anything unsound happens.
    unsafe { ZwClose(0x4242) };
});

stops!(planted_irp_completed_twice, "MULTIPLE_IRP_COMPLETE_REQUESTS", "io.complete_once", {
    let _s = setup(DOUBLE_COMPLETE);
    read_once();
});

stops!(
    planted_irp_completed_with_cancel_routine,
    "CANCEL_STATE_IN_COMPLETED_IRP", "io.cancel_routine",
    {
        let _s = setup(COMPLETE_WITH_CANCEL_ROUTINE);
        read_once();
    }
);

stops!(
    planted_pending_without_iomarkirppending,
    "DRIVER_VERIFIER_IOMANAGER_VIOLATION", "io.pending",
    {
        let _s = setup(PENDING_UNMARKED);
        read_once();
    }
);

stops!(
    planted_returned_status_differs_from_completed,
    "DRIVER_VERIFIER_IOMANAGER_VIOLATION", "io.status",
    {
        let _s = setup(STATUS_MISMATCH);
        read_once();
    }
);

stops!(
    planted_dispatch_returning_at_dispatch_level,
    "IRQL_GT_ZERO_AT_SYSTEM_SERVICE", "irql.return",
    {
        let _s = setup(RETURN_AT_DISPATCH);
        read_once();
    }
);

stops!(
    planted_pool_left_at_unload,
    "DRIVER_VERIFIER_DETECTED_VIOLATION", "pool.unload",
    {
        let (_g, d) = setup(LEAK_AT_CREATE);
        let h = open("\\\\.\\T0", 0x8000_0000, 0);
        // SAFETY: a handle this test opened.
        unsafe { CloseHandle(h) };
        io::request_unload(&d);
    }
);

stops!(planted_information_larger_than_the_buffer, "DRIVER_VERIFIER_IOMANAGER_VIOLATION", "io.information", {
    let _s = setup(INFO_TOO_BIG);
    read_once();
});

stops!(planted_completed_holding_a_spin_lock, "DRIVER_VERIFIER_IOMANAGER_VIOLATION", "io.complete_unlocked", {
    let _s = setup(COMPLETE_LOCKED);
    read_once();
});

stops!(planted_completed_with_status_pending, "DRIVER_VERIFIER_IOMANAGER_VIOLATION", "io.pending", {
    let _s = setup(COMPLETE_PENDING);
    read_once();
});

stops!(planted_cleanup_leaves_a_pended_irp, "DRIVER_VERIFIER_IOMANAGER_VIOLATION", "io.cleanup_drain", {
    let _s = setup(PEND_NO_DRAIN);
    let h = read_async();
    // SAFETY: a handle this test opened.
    unsafe { CloseHandle(h) };
});

stops!(planted_lock_order_cycle, "DRIVER_VERIFIER_DETECTED_VIOLATION", "deadlock.lock_order", {
    use windows_sys::Wdk::System::SystemServices::KSEMAPHORE;
    let (mut a, mut b) = (KSEMAPHORE::default(), KSEMAPHORE::default());
    let (pa, pb) = (&mut a as *mut KSEMAPHORE, &mut b as *mut KSEMAPHORE);
    // SAFETY: two semaphores used as mutexes, taken A then B, then B then A on one thread: no deadlock this time, but the order graph has a cycle.
    unsafe {
        KeInitializeSemaphore(pa, 1, 1);
        KeInitializeSemaphore(pb, 1, 1);
        for (x, y) in [(pa, pb), (pb, pa)] {
            KeWaitForSingleObject(x.cast(), 0, 0, 0, null_mut());
            KeWaitForSingleObject(y.cast(), 0, 0, 0, null_mut());
            KeReleaseSemaphore(y, 0, 1, 0);
            KeReleaseSemaphore(x, 0, 1, 0);
        }
    }
});

stops!(planted_spin_lock_and_mutex_in_both_orders, "DRIVER_VERIFIER_DETECTED_VIOLATION", "deadlock.lock_order", {
    use windows_sys::Wdk::System::SystemServices::KSEMAPHORE;
    let mut m = KSEMAPHORE::default();
    let pm = &mut m as *mut KSEMAPHORE;
    let (l1, l2) = (AtomicUsize::new(0), AtomicUsize::new(0));
    // SAFETY: a mutex then spin lock 1 then 2; later 2 then 1 (on another thread): a cycle between the spin locks.
    unsafe {
        KeInitializeSemaphore(pm, 1, 1);
        KeWaitForSingleObject(pm.cast(), 0, 0, 0, null_mut());
        let o = KeAcquireSpinLockRaiseToDpc(l1.as_ptr());
        KeAcquireSpinLockAtDpcLevel(l2.as_ptr());
        KeReleaseSpinLockFromDpcLevel(l2.as_ptr());
        KeReleaseSpinLock(l1.as_ptr(), o);
        KeReleaseSemaphore(pm, 0, 1, 0);
    }
    let (p1, p2) = (l1.as_ptr() as usize, l2.as_ptr() as usize);
    // SAFETY: the same two locks, alive: the spawning thread joins before they go.
    std::thread::spawn(move || unsafe {
        let o = KeAcquireSpinLockRaiseToDpc(p2 as *mut usize);
        KeAcquireSpinLockAtDpcLevel(p1 as *mut usize);
        KeReleaseSpinLockFromDpcLevel(p1 as *mut usize);
        KeReleaseSpinLock(p2 as *mut usize, o);
    })
    .join()
    .unwrap();
});

stops!(planted_large_zeroed_allocation_under_a_spin_lock, "DPC_WATCHDOG_VIOLATION", "irql.dpc_watchdog", {
    let l = AtomicUsize::new(0);
    // SAFETY: a pipe-sized (4 MiB) buffer allocated and zeroed while holding a spin lock: legal DDI use, but minutes of CPU time at DISPATCH_LEVEL on a busy machine.
    unsafe {
        let o = KeAcquireSpinLockRaiseToDpc(l.as_ptr());
        let p = ExAllocatePoolWithTag(512, 4 << 20, TAG) as *mut u8;
        std::ptr::write_bytes(p, 0, 4 << 20);
        KeReleaseSpinLock(l.as_ptr(), o);
    }
});

stops!(planted_release_raising_the_irql, "IRQL_NOT_LESS_OR_EQUAL", "irql.lower", {
    let l = AtomicUsize::new(0);
    // SAFETY: deliberate misuse: KeReleaseSpinLock "restoring" HIGH_LEVEL, above DISPATCH_LEVEL.
    unsafe {
        KeAcquireSpinLockRaiseToDpc(l.as_ptr());
        KeReleaseSpinLock(l.as_ptr(), kernel::HIGH_LEVEL);
    }
});

stops!(planted_pool_underrun_hits_the_guard_page, "PAGE_FAULT_IN_NONPAGED_AREA", "pool.special", {
    // Before the first allocation: special pool puts the guard page before blocks.
    std::env::set_var("NTSIM_SPECIAL_POOL", "underrun");
    // SAFETY: a deliberate access one byte before the block: it hits the guard page and the fault handler ends the process.
    unsafe {
        let p = ExAllocatePoolWithTag(512, 32, TAG) as *mut u8;
        std::ptr::write_volatile(p.sub(1), 1);
    }
});

stops!(planted_failed_driver_entry_leaves_a_device, "DRIVER_VERIFIER_DETECTED_VIOLATION", "entry.failed_clean", {
    unsafe extern "win64" fn bad_entry(d: *mut DRIVER_OBJECT, _r: *mut UNICODE_STRING) -> i32 {
        let mut n = wide("\\Device\\T1");
        let mut un = ustr(&mut n);
        let mut dev: *mut DEVICE_OBJECT = null_mut();
        // SAFETY: DriverEntry's driver object and a counted name on this stack.
        unsafe { io::IoCreateDevice(d, 0, &mut un, 0x22, 0, 0, &mut dev) };
        io::STATUS_INSUFFICIENT_RESOURCES
    }
    let _g = kernel::exclusive();
    kernel::reset();
    let _ = io::load_native(bad_entry, "t1");
});

// ------------------------------------------------------------- I/O manager rules (in process)

#[test]
fn cleanup_then_close_and_balanced_unload() {
    let (_g, d) = setup(NORMAL);
    let h = open("\\\\.\\T0", 0xC000_0000, 0);
    assert_ne!(h, INVALID_HANDLE_VALUE);
    let mut b = [0u8; 5];
    let mut n = 0;
    // SAFETY: ntsim's Win32 call on a handle this test opened, with buffers and out-parameters that are live locals (for overlapped I/O, alive until it completes).
    assert_eq!(
        unsafe { ReadFile(h, b.as_mut_ptr(), 5, &mut n, null_mut()) },
        1
    );
    assert_eq!((n, &b), (5, b"xxxxx"));
    assert_eq!(
        unsafe { WriteFile(h, b.as_ptr(), 3, &mut n, null_mut()) },
        1
    );
    assert_eq!(n, 3);
    // SAFETY: a handle this test opened.
    unsafe { CloseHandle(h) };
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            io::IRP_MJ_CREATE,
            io::IRP_MJ_READ,
            io::IRP_MJ_WRITE,
            io::IRP_MJ_CLEANUP,
            io::IRP_MJ_CLOSE
        ]
    );
    assert!(io::request_unload(&d));
    assert_eq!(d.unload_report.lock().unwrap().clone(), Some(vec![]));
}

#[test]
fn position_of_a_synchronous_handle_is_the_io_managers() {
    let (_g, d) = setup(NORMAL);
    let h = open("\\\\.\\T0", 0xC000_0000, 0);
    let mut p = 0i64;
    // SAFETY: ntsim's Win32 call on a handle this test opened, with buffers and out-parameters that are live locals (for overlapped I/O, alive until it completes).
    assert_eq!(unsafe { SetFilePointerEx(h, 42, &mut p, 0) }, 1);
    assert_eq!(p, 42);
    assert_eq!(io_position(h), 42);
    // FILE_CURRENT: served without an IRP.
    // SAFETY: ntsim's Win32 call on a handle this test opened, with buffers and out-parameters that are live locals (for overlapped I/O, alive until it completes).
    assert_eq!(unsafe { SetFilePointerEx(h, -2, &mut p, 1) }, 1);
    assert_eq!(p, 40);
    assert!(!SEEN
        .lock()
        .unwrap()
        .iter()
        .any(|&m| m == io::IRP_MJ_QUERY_INFORMATION || m == io::IRP_MJ_SET_INFORMATION));
    // A negative position: ERROR_NEGATIVE_SEEK.
    // SAFETY: ntsim's Win32 call on a handle this test opened, with buffers and out-parameters that are live locals (for overlapped I/O, alive until it completes).
    assert_eq!(unsafe { SetFilePointerEx(h, -100, &mut p, 1) }, 0);
    assert_eq!(unsafe { GetLastError() }, 131);
    unsafe { CloseHandle(h) };
    assert!(io::request_unload(&d));
}

fn io_position(h: HANDLE) -> i64 {
    file_of(h).unwrap().position()
}

#[test]
fn ioctl_access_bits_are_checked_before_the_driver() {
    let (_g, d) = setup(NORMAL);
    let h = open("\\\\.\\T0", 0x8000_0000, 0); // GENERIC_READ only
    let code_write = (0x22 << 16) | (2 << 14) | (0x800 << 2);
    let mut n = 0;
    SEEN.lock().unwrap().clear();
    // SAFETY: ntsim's Win32 call on a handle this test opened, with buffers and out-parameters that are live locals (for overlapped I/O, alive until it completes).
    assert_eq!(
        unsafe {
            DeviceIoControl(
                h,
                code_write,
                null_mut(),
                0,
                null_mut(),
                0,
                &mut n,
                null_mut(),
            )
        },
        0
    );
    assert_eq!(unsafe { GetLastError() }, 5);
    assert!(
        SEEN.lock().unwrap().is_empty(),
        "the driver saw the refused ioctl"
    );
    let code_read = (0x22 << 16) | (1 << 14) | (0x800 << 2);
    // SAFETY: ntsim's Win32 call on a handle this test opened, with buffers and out-parameters that are live locals (for overlapped I/O, alive until it completes).
    assert_eq!(
        unsafe {
            DeviceIoControl(
                h,
                code_read,
                null_mut(),
                0,
                null_mut(),
                0,
                &mut n,
                null_mut(),
            )
        },
        1
    );
    unsafe { CloseHandle(h) };
    assert!(io::request_unload(&d));
}

#[test]
fn pended_read_completed_from_another_thread_and_cancelled_on_the_cancelling_thread() {
    let (_g, d) = setup(PEND_READS);
    let h = open("\\\\.\\T0", 0x8000_0000, 0x4000_0000); // overlapped
                                                         // SAFETY: no memory is passed but NULL pointers and handle values.
    let ev = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.hEvent = ev;
    let mut b = [0u8; 4];
    let mut n = 0;
    // SAFETY: ntsim's Win32 call on a handle this test opened, with buffers and out-parameters that are live locals (for overlapped I/O, alive until it completes).
    assert_eq!(
        unsafe { ReadFile(h, b.as_mut_ptr(), 4, &mut n, &mut ov) },
        0
    );
    assert_eq!(unsafe { GetLastError() }, 997);
    // Completed by another thread.
    let irp = PENDED.lock().unwrap()[0];
    // SAFETY: the pended IRP stays valid until this completion: the driver owns it, and its cancel routine is cleared under the cancel spin lock first.
    std::thread::spawn(move || unsafe {
        let irp = irp as *mut IRP;
        let mut irql = 0;
        IoAcquireCancelSpinLock(&mut irql);
        set_cancel(irp, None);
        PENDED.lock().unwrap().clear();
        IoReleaseCancelSpinLock(irql);
        std::ptr::write_bytes((*irp).AssociatedIrp.SystemBuffer as *mut u8, b'k', 4);
        complete(irp, 0, 4);
    })
    .join()
    .unwrap();
    // SAFETY: no memory is passed but NULL pointers and handle values.
    assert_eq!(unsafe { WaitForSingleObject(ev, 5000) }, 0);
    assert_eq!((ov.Internal, ov.InternalHigh, &b), (0, 4, b"kkkk"));
    // Pended again, cancelled from this thread: the cancel routine runs here.
    // SAFETY: OVERLAPPED is plain data; all-zero is its initial state.
    let mut ov2: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov2.hEvent = ev;
    assert_eq!(
        unsafe { ReadFile(h, b.as_mut_ptr(), 4, &mut n, &mut ov2) },
        0
    );
    // SAFETY: ntsim's Win32 call on a handle this test opened, with buffers and out-parameters that are live locals (for overlapped I/O, alive until it completes).
    assert_eq!(unsafe { CancelIoEx(h, &ov2) }, 1);
    assert_eq!(CANCEL_THREAD.load(Ordering::SeqCst), kernel::thread_id());
    assert_eq!(ov2.Internal as u32, STATUS_CANCELLED as u32);
    assert_eq!(kernel::irql(), 0);
    // A third, left pended: the handle's close (CLEANUP) completes it, then CLOSE.
    // SAFETY: OVERLAPPED is plain data; all-zero is its initial state.
    let mut ov3: OVERLAPPED = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { ReadFile(h, b.as_mut_ptr(), 4, &mut n, &mut ov3) },
        0
    );
    SEEN.lock().unwrap().clear();
    // SAFETY: a handle this test opened.
    unsafe { CloseHandle(h) };
    assert_eq!(ov3.Internal as u32, STATUS_CANCELLED as u32);
    assert_eq!(
        *SEEN.lock().unwrap(),
        [io::IRP_MJ_CLEANUP, io::IRP_MJ_CLOSE]
    );
    assert_eq!(io::live_irps(), 0);
    assert!(io::request_unload(&d));
}

#[test]
fn unload_waits_for_the_last_file_object() {
    let (_g, d) = setup(NORMAL);
    let h = open("\\\\.\\T0", 0x8000_0000, 0);
    assert!(!io::request_unload(&d), "unload ran with a file open");
    assert_eq!(open("\\\\.\\T0", 0x8000_0000, 0), INVALID_HANDLE_VALUE);
    // SAFETY: no memory is passed but NULL pointers and handle values.
    assert_eq!(unsafe { GetLastError() }, 2);
    unsafe { CloseHandle(h) };
    assert!(io::is_unloaded(&d));
}

#[test]
fn access_check_follows_the_dacl() {
    use kernel::{Ace, Security, Sid, Token};
    let sec = Security {
        dacl: Some(vec![
            Ace {
                kind: 0,
                flags: 0,
                mask: 0x001F_01FF,
                sid: Sid::administrators(),
            },
            Ace {
                kind: 0,
                flags: 0,
                mask: map_generic(0x8000_0000),
                sid: Sid::authenticated_users(),
            },
        ]),
        protected: true,
    };
    let admin = Token::admin("a", 500);
    let user = Token::user("u", 1001);
    let filtered = Token::filtered_admin("f", 502);
    assert_eq!(
        io::access_check(Some(&sec), &admin, 0xC000_0000),
        Some(0x0012_019F)
    );
    assert_eq!(
        io::access_check(Some(&sec), &user, 0x8000_0000),
        Some(0x0012_0089)
    );
    assert_eq!(io::access_check(Some(&sec), &user, 0x4000_0000), None);
    assert_eq!(
        io::access_check(Some(&sec), &filtered, 0x4000_0000),
        None,
        "a deny-only group grants nothing"
    );
    assert_eq!(
        io::access_check(None, &user, 0x4000_0000),
        Some(0x0012_0116)
    );
}

#[test]
fn dbgprint_formats_microsoft_varargs() {
    let _g = kernel::exclusive();
    kernel::reset();
    unsafe extern "win64" {
        fn ntsim_DbgPrintEx(c: u32, l: u32, f: *const u8, ...) -> u32;
    }
    // SAFETY: a C-variadic ms_abi function called with a format whose conversions match the arguments.
    unsafe {
        ntsim_DbgPrintEx(
            77,
            0,
            c"%s=%d %u %x %08X %I64x %c %p %%".as_ptr().cast(),
            c"k".as_ptr(),
            -5i32,
            7u32,
            255u32,
            0xABCu32,
            0x1_0000_0000u64,
            b'z' as i32,
            0x10usize,
        )
    };
    assert_eq!(
        kernel::dbg_lines(),
        ["k=-5 7 ff 00000ABC 100000000 z 0000000000000010 %"]
    );
}

stops!(
    planted_touching_an_invalid_address_is_a_page_fault,
    "PAGE_FAULT_IN_NONPAGED_AREA", "pool.special",
    {
        let _s = setup(NORMAL);
        // SAFETY: none; the point is the fault (0x10 is never mapped).
        unsafe { std::ptr::read_volatile(0x10 as *const u8) };
    }
);

stops!(
    planted_pool_overrun_hits_the_guard_page,
    "PAGE_FAULT_IN_NONPAGED_AREA", "pool.special",
    {
        // SAFETY: a deliberate access past the block or after its free: it hits an inaccessible page and the fault handler ends the process.
        unsafe {
            let p = ExAllocatePoolWithTag(512, 32, TAG) as *mut u8;
            std::ptr::write_volatile(p.add(32), 1);
        }
    }
);

stops!(planted_pool_use_after_free_faults, "PAGE_FAULT_IN_NONPAGED_AREA", "pool.special", {
    // SAFETY: a deliberate access past the block or after its free: it hits an inaccessible page and the fault handler ends the process.
    unsafe {
        let p = ExAllocatePoolWithTag(512, 32, TAG) as *mut u8;
        ExFreePoolWithTag(p.cast(), TAG);
        std::ptr::read_volatile(p);
    }
});

//! scull.sys: LDD3's scull devices as a Windows WDM driver.
//!
//! All of scull's semantics come from `scull-core`; this crate maps them onto
//! NT: device objects and DOS links, IRP dispatch, pended IRPs with cancel
//! routines, pool memory, semaphores and spin locks. `ddk` is the only module
//! that knows which binding (wdk-sys or mingw-w64 bindgen) is in use.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Every unsafe block states why it is sound, one unsafe operation at a
// time, and every unsafe fn states its contract.
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc, clippy::multiple_unsafe_ops_per_block)]

#[cfg(feature = "wdk")]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

#[macro_use]
mod log;
mod access;
mod acl;
#[cfg(feature = "test-build")]
mod bridge;
mod ddk;
mod dev;
mod dispatch;
mod evlog;
mod handle;
mod ident;
mod ioctl;
mod irp;
mod irpq;
#[cfg(feature = "oracle")]
mod oracle;
mod pipe;
mod pool;
mod registry;
mod rundown;
mod store;
mod sync;
mod testmode;

use core::sync::atomic::Ordering;
use ddk::*;

/// LDD3's `scull_init_module`: parameters, then every device, with one
/// cleanup path on failure.
///
/// # Safety
/// Called once by the I/O manager, at PASSIVE_LEVEL, with this driver's
/// object and its service key path.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(driver: *mut DRIVER_OBJECT, registry_path: *mut UNICODE_STRING) -> NTSTATUS {
    rundown::init();
    let p = registry::read(registry_path);
    if let Some(l) = p.debug_level {
        log::VERBOSE.store(l.clamp(0, 3) as u32, Ordering::Relaxed);
    }
    let table = match p.load.apply(&dev::PARAMS) {
        Ok(t) => t,
        Err(bad) => {
            kprint!("{bad}");
            evlog::load_refused(driver, evlog::Refused::Parameter, bad.name, STATUS_INVALID_PARAMETER);
            return STATUS_INVALID_PARAMETER;
        }
    };
    pool::BUDGET.set_limit(p.load.max_total());
    test_switches(&p);
    // The device ACL (registry scull_sddl, else SYSTEM + Administrators only).
    let mut default = [0u16; 64];
    for (d, c) in default.iter_mut().zip(acl::DEFAULT_SDDL.bytes()) {
        *d = c as u16;
    }
    let sddl: &[u16] = match &p.sddl {
        Some(s) => s.as_slice(),
        None => &default[..acl::DEFAULT_SDDL.len()],
    };
    let Some(dacl) = acl::parse(sddl) else {
        kprint!("bad registry parameter scull_sddl (supported: D:[P](A;;rights;;;sid)...); not loading");
        evlog::load_refused(driver, evlog::Refused::Sddl, "scull_sddl", STATUS_INVALID_PARAMETER);
        return STATUS_INVALID_PARAMETER;
    };
    if let Err(st) = acl::build(&dacl) {
        kprint!("building the device ACL failed: {:#x}; not loading", st);
        return st;
    }
    show_acl(sddl, p.sddl.is_some());
    // SAFETY: the I/O manager passes a valid driver object, which only
    // DriverEntry writes while it runs; the dispatch routines and unload
    // have the required signatures.
    let d = unsafe { &mut *driver };
    for f in d.MajorFunction.iter_mut() {
        *f = Some(dispatch::dispatch);
    }
    d.DriverUnload = Some(driver_unload);
    let ok = |st: NTSTATUS| if st < 0 { Err(st) } else { Ok(()) };
    // Every device, then every link, then every device made ready:
    // nothing is openable until all devices exist.
    let up = scull_core::nt::bring_up(
        table.len(),
        // SAFETY: a valid driver object, from DriverEntry.
        |i| ok(unsafe { dev::create(driver, table.get(i).ok_or(STATUS_INVALID_PARAMETER)?) }),
        // SAFETY: from DriverEntry, after `create` succeeded for device i.
        |i| ok(unsafe { dev::link(i) }),
        // SAFETY: from DriverEntry, once every device is created and linked.
        |i| unsafe { dev::ready(i) },
    );
    if let Err(st) = up {
        // SAFETY: `bring_up` stopped before making any device ready, so
        // every device that exists still has DO_DEVICE_INITIALIZING, and the
        // I/O manager fails a create on such a device (STATUS_NO_SUCH_DEVICE):
        // no file object, so no IRP, refers to any of them, and no dispatch
        // routine or cancel routine of this driver is running. DriverEntry
        // is the only code of the driver that runs. (Wine is not known to
        // test the flag: under Wine this rests on nothing opening a scull
        // device before its load completes.)
        unsafe { dev::delete_all() };
        acl::release();
        report_leaks("DriverEntry failed");
        return st;
    }
    #[cfg(feature = "test-build")]
    kprint!(
        "test build: test identity mode (scull_test_identity): {}; fault injection (scull_fail_at): {}",
        if testmode::identity_mode() { "ON, every process is its own user (tests only)" } else { "off" },
        if pool::FAULTS_ENABLED.load(Ordering::Relaxed) { "ON (tests only)" } else { "off" }
    );
    #[cfg(not(feature = "test-build"))]
    kprint!("release build: no bridge IOCTLs, no test switches");
    acl::release();
    kprint!(
        "loaded: scull_nr_devs={} scull_p_nr_devs={} scull_quantum={} scull_qset={} scull_p_buffer={} scull_max_size={} scull_max_total={}",
        table.scull,
        table.pipes,
        dev::PARAMS.quantum(),
        dev::PARAMS.qset(),
        dev::PARAMS.p_buffer(),
        dev::PARAMS.max_size(),
        pool::BUDGET.limit()
    );
    STATUS_SUCCESS
}

/// The test build's switches (scull_test_identity, scull_fail_at).
#[cfg(feature = "test-build")]
fn test_switches(p: &registry::Values) {
    testmode::IDENTITY.store(p.test_identity.unwrap_or(0) != 0, Ordering::Relaxed);
    if let Some(k) = p.fail_at {
        pool::FAIL_AT.store(k.max(0) as i64, Ordering::Relaxed);
        pool::FAULTS_ENABLED.store(true, Ordering::Relaxed);
    }
}

/// The release build has no test switches: a value left in the registry is
/// reported and ignored.
#[cfg(not(feature = "test-build"))]
fn test_switches(p: &registry::Values) {
    if p.test_identity.is_some() || p.fail_at.is_some() {
        kwarn!("scull_test_identity/scull_fail_at are test-build switches; ignored by this release build");
    }
}

#[inline(never)]
fn show_acl(sddl: &[u16], from_registry: bool) {
    let mut shown = log::LineBuf::new();
    for c in char::decode_utf16(sddl.iter().copied()) {
        let _ = core::fmt::Write::write_char(&mut shown, c.unwrap_or('?'));
    }
    kprint!(
        "device ACL ({}): {}",
        if from_registry { "scull_sddl" } else { "default, scull_sddl absent" },
        shown.as_str()
    );
}

/// LDD3's `scull_cleanup_module`. It says when it starts and, with the
/// outstanding-block count, when it ends, so a log shows whether an unload
/// that never finished was entered at all.
///
/// # Safety
/// Called only by the I/O manager, once, as this driver's unload routine.
unsafe extern "C" fn driver_unload(_driver: *mut DRIVER_OBJECT) {
    kprint!("unload: entered");
    // No dispatch runs or starts from here on (Wine calls unload with
    // handles open; Windows only once none is).
    rundown::begin_and_wait();
    access::cancel_everything();
    rundown::wait_idle();
    // On Windows unload starts only once no file object refers to a device,
    // so nothing else can run. Under Wine the rundown above ended every
    // dispatch and counted cancel routine and refuses new dispatches, and
    // `cancel_everything` completed every pended IRP; the one window it
    // cannot close is a cancel routine taken but not yet entered (rundown.rs).
    // SAFETY: unload runs once, with no other routine of the driver running
    // (above: always on Windows; under Wine up to that window).
    unsafe { dev::delete_all() };
    report_leaks("unload");
}

fn report_leaks(when: &str) {
    let n = pool::OUTSTANDING.load(Ordering::Relaxed);
    kprint!("{}: outstanding 'lucS' blocks: {}", when, n);
}

/// The bugcheck code of a Rust panic: ASCII "RPNC", the code wdk-panic 0.5
/// uses, so a dump reads like any windows-drivers-rs driver's.
const RUST_PANIC_BUGCHECK: u32 = u32::from_be_bytes(*b"RPNC");

/// Set by the first panic: a panic while printing the first one's message
/// goes straight to the bugcheck.
static PANICKING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The panic handler of both binding paths (one function, no cfg), so a
/// panic stops the machine alike whichever path built scull.sys, at any
/// IRQL (under a spin lock too): print the message (DbgPrintEx, callable at
/// any IRQL with a `%s` format), then KeBugCheckEx(RPNC, file name pointer,
/// file name length, line, column).
///
/// The parameters are wdk-panic 0.5's. Its handler is not used because it
/// exists on the wdk path only, prints nothing, and in debug builds first
/// calls DbgBreakPoint, which without a kernel debugger is a different
/// bugcheck (a breakpoint exception) from the release build's.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if !PANICKING.swap(true, Ordering::Relaxed) {
        kprint!("panic: {}", info.message());
    }
    let (file, file_len, line, column) = info.location().map_or((0, 0, 0, 0), |l| {
        (l.file().as_ptr() as usize, l.file().len(), l.line() as usize, l.column() as usize)
    });
    // SAFETY: KeBugCheckEx has no preconditions on its arguments and may be
    // called at any IRQL; stopping the machine is the only safe reaction to a
    // broken invariant in kernel mode.
    unsafe { KeBugCheckEx(RUST_PANIC_BUGCHECK as _, file as _, file_len as _, line as _, column as _) }
}

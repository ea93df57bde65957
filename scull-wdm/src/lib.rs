//! scull.sys: LDD3's scull devices as a Windows WDM driver.
//!
//! All of scull's semantics come from `scull-core`; this crate maps them onto
//! NT: device objects and DOS links, IRP dispatch, pended IRPs with cancel
//! routines, pool memory, semaphores and spin locks. `ddk` is the only module
//! that knows which binding (wdk-sys or mingw-w64 bindgen) is in use.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(clippy::missing_safety_doc)]

#[cfg(feature = "wdk")]
extern crate wdk_panic;

#[cfg(feature = "wdk")]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

#[macro_use]
mod log;
mod ddk;
mod dev;
mod dispatch;
mod ident;
mod irpq;
#[cfg(feature = "oracle")]
mod oracle;
mod pipe;
mod pool;
mod registry;
mod sync;

use core::sync::atomic::Ordering;
use ddk::*;
use scull_core::devices::Dev;
use scull_core::geometry::{self, Geometry};

/// LDD3's `scull_init_module`: parameters, then every device, with one
/// cleanup path on failure.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(driver: *mut DRIVER_OBJECT, registry_path: *mut UNICODE_STRING) -> NTSTATUS {
    let p = registry::read(registry_path);
    let (nr, pnr) = match apply(&p) {
        Ok(n) => n,
        Err(what) => {
            kprint!("bad registry parameter {what}; not loading");
            return STATUS_INVALID_PARAMETER;
        }
    };
    // SAFETY: the I/O manager passes a valid driver object; the dispatch
    // routines and unload have the required signatures.
    unsafe {
        for f in (*driver).MajorFunction.iter_mut() {
            *f = Some(dispatch::dispatch);
        }
        (*driver).DriverUnload = Some(driver_unload);
    }
    let devs = (0..nr as u8)
        .map(Dev::Scull)
        .chain((0..pnr as u8).map(Dev::Pipe))
        .chain([Dev::Single, Dev::Uid, Dev::Wuid, Dev::Priv]);
    for d in devs {
        // SAFETY: a valid driver object, from DriverEntry.
        let st = unsafe { dev::create(driver, d) };
        if st < 0 {
            // SAFETY: nothing else runs yet; no IRP can be queued.
            unsafe { dev::delete_all() };
            report_leaks("DriverEntry failed");
            return st;
        }
    }
    kprint!(
        "loaded: scull_nr_devs={} scull_p_nr_devs={} scull_quantum={} scull_qset={} scull_p_buffer={}",
        nr,
        pnr,
        dev::PARAMS.quantum(),
        dev::PARAMS.qset(),
        dev::PARAMS.p_buffer()
    );
    STATUS_SUCCESS
}

/// Validates the registry values and installs them as the global defaults.
fn apply(p: &registry::Values) -> Result<(usize, usize), &'static str> {
    let q = p.quantum.unwrap_or(geometry::DEFAULT_QUANTUM) as i64;
    let s = p.qset.unwrap_or(geometry::DEFAULT_QSET) as i64;
    let g = Geometry::new(q, s).map_err(|_| "scull_quantum/scull_qset")?;
    let b = p.p_buffer.unwrap_or(geometry::DEFAULT_P_BUFFER) as i64;
    geometry::pipe_buffer_size(b).map_err(|_| "scull_p_buffer")?;
    let nr = geometry::nr_devs(p.nr_devs.unwrap_or(geometry::DEFAULT_NR_DEVS) as i64).map_err(|_| "scull_nr_devs")?;
    let pnr = geometry::nr_devs(p.p_nr_devs.unwrap_or(geometry::DEFAULT_P_NR_DEVS) as i64).map_err(|_| "scull_p_nr_devs")?;
    dev::PARAMS.update_geometry(|_| Ok(g)).map_err(|_| "geometry")?;
    dev::PARAMS.set_p_buffer(b).map_err(|_| "scull_p_buffer")?;
    Ok((nr, pnr))
}

/// LDD3's `scull_cleanup_module`.
unsafe extern "C" fn driver_unload(_driver: *mut DRIVER_OBJECT) {
    dispatch::cancel_everything();
    // SAFETY: the I/O manager calls unload once, with no dispatch running.
    unsafe { dev::delete_all() };
    report_leaks("unload");
}

fn report_leaks(when: &str) {
    let n = pool::OUTSTANDING.load(Ordering::Relaxed);
    kprint!("{}: outstanding 'lucS' blocks: {}", when, n);
}

#[cfg(feature = "mingw")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kprint!("panic: {}", info.message());
    let line = info.location().map_or(0, |l| l.line());
    // SAFETY: stopping the machine is the only safe reaction to a broken
    // invariant in kernel mode. 0xDEADDEAD: MANUALLY_INITIATED_CRASH1.
    unsafe { KeBugCheckEx(0xDEAD_DEAD, line as _, 0, 0, 0) }
}

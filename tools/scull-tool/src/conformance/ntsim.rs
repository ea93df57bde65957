//! The ntsim-only cases: what only a native I/O manager can show, run
//! against the release scull.sys that the `ntsim` target loads into this
//! process (its plumbing is `crate::backend::windows::ntsim`).

use super::check::{case, check, R};
use super::Case;
use crate::backend::windows::ntsim::{env, load, outstanding_blocks, seed_registry, unload, DRIVER, PARAMS_KEY, POOL_TAG};
use crate::backend::windows::{device_io_control, open_raw, wide, Owned, WinHandle};
use crate::backend::{Handle, OpenOpts, Target};
use crate::win32::{CreateFileW, GetLastError, ReadFile, SetEndOfFile, SetFilePointerEx};
use ::ntsim::kernel::{self, Process, RegValue};
use scull_core::devices::Dev;
use scull_core::ioctl::{self, Cmd};
use scull_core::report::field;
use scull_core::store::Whence;
use scull_core::Error;
use std::ptr::null_mut;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use windows_sys::Win32::Foundation::{GENERIC_READ, GENERIC_WRITE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{
    CREATE_ALWAYS, FILE_BEGIN, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING, TRUNCATE_EXISTING,
};

/// The cases only a native I/O manager can run: truncation as Windows
/// sends it, access checks in creates, impersonation, load, unload and
/// DriverEntry races, the event log.
pub fn cases() -> Vec<Case> {
    vec![
        case!("ntsim_", truncate_existing_opens_and_trims),
        case!("ntsim_", truncate_existing_reactos_disposition_trims),
        case!("ntsim_", set_end_of_file_with_allocation_step),
        case!("ntsim_", read_only_create_always_refused),
        case!("ntsim_", read_only_truncate_existing_refused_by_kernel32),
        case!("ntsim_", type_sequential_reads_to_eof),
        case!("ntsim_", impersonating_admin_service_privileged_ioctl_refused),
        case!("ntsim_", impersonating_service_opens_as_client),
        case!("ntsim_", ioctl_access_bits_checked_before_the_driver),
        case!("ntsim_", irps_racing_closehandle),
        case!("ntsim_", device_acl_applied_and_checked),
        case!("ntsim_", unload_balanced_then_reload),
        case!("ntsim_", unload_deferred_while_open),
        case!("ntsim_", refused_load_writes_event_log_entry),
        case!("ntsim_", no_open_while_driver_entry_runs),
        case!("ntsim_", scullpriv_reused_pid_sees_no_old_data),
        case!("ntsim_", scullpriv_many_short_lived_processes),
        case!("ntsim_", read_only_handle_cannot_change_state),
        case!("ntsim_", loader_binds_every_import_and_refuses_a_missing_one),
        case!("ntsim_", dispatch_runs_concurrently_on_callers_threads),
        case!("ntsim_", store_budget_bounds_the_pool_of_every_store),
        case!("ntsim_", pended_requests_are_capped),
        case!("ntsim_", pipe_buffer_allocated_outside_the_spin_lock),
        case!("ntsim_", pipe_role_is_the_granted_access),
        case!("ntsim_", random_irps_devices_survive),
        case!("ntsim_", cancel_races_completion_on_pended_pipe_io),
        case!("ntsim_", pool_failure_sweep_loses_nothing),
        case!("ntsim_", driver_entry_failure_sweep_refuses_cleanly),
    ]
}

/// A raw CreateFileW; the Win32 error on failure.
fn raw_open(name: &str, access: u32, disposition: u32, flags: u32) -> Result<Owned, u32> {
    let p = wide(&format!(r"\\.\{name}"));
    // SAFETY: a NUL-terminated path; no security attributes or template.
    let h = unsafe { CreateFileW(p.as_ptr(), access, FILE_SHARE_READ | FILE_SHARE_WRITE, null_mut(), disposition, flags, null_mut()) };
    if h == INVALID_HANDLE_VALUE {
        // SAFETY: the thread's last error.
        return Err(unsafe { GetLastError() });
    }
    Ok(Owned(h))
}

fn put(name: &str, dev: Dev, data: &[u8]) -> R {
    let h = raw_open(name, GENERIC_READ | GENERIC_WRITE, OPEN_EXISTING, 0).map_err(|e| format!("open {name}: error {e}"))?;
    let mut w = WinHandle { h, dev, wine: false, pos: 0 };
    w.set_len(0).ok();
    let n = w.write(data).map_err(|e| format!("write {name}: {e}"))?;
    check!(n == data.len(), "short write {n}");
    Ok(())
}

fn size_of(name: &str) -> Result<u64, String> {
    let h = raw_open("Scull0", GENERIC_READ, OPEN_EXISTING, 0).map_err(|e| format!("open Scull0: error {e}"))?;
    let mut w = WinHandle { h, dev: Dev::Scull(0), wine: false, pos: 0 };
    let text = w.stats().map_err(|e| format!("stats: {e}"))?;
    let dev = name.to_lowercase();
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(dev.as_str())).ok_or(format!("no {dev} in stats"))?;
    field(line, "size").and_then(|v| v.parse().ok()).ok_or(format!("no size in {line}"))
}

/// Trims a store with a FILE_OVERWRITE open (ReactOS's TRUNCATE_EXISTING),
/// which does not depend on FileAllocationInformation.
fn trim_overwrite(name: &str) -> R {
    use ::ntsim::win32::{set_truncate_mode, truncate_mode, TruncateMode};
    let was = truncate_mode();
    set_truncate_mode(TruncateMode::ReactOs);
    let r = raw_open(name, GENERIC_WRITE, TRUNCATE_EXISTING, 0);
    set_truncate_mode(was);
    r.map(drop).map_err(|e| format!("trim {name}: error {e}"))
}

/// Puts the driver back as the suite loaded it (after a case unloaded it).
fn reload() -> R {
    seed_registry(&[]);
    load().map(drop)
}

/// Windows' CreateFileW turns TRUNCATE_EXISTING into FILE_OPEN and a
/// FileAllocationInformation set of 0, which must succeed and trim.
fn truncate_existing_opens_and_trims(_t: &dyn Target) -> R {
    put("Scull2", Dev::Scull(2), b"0123456789")?;
    let h = raw_open("Scull2", GENERIC_WRITE, TRUNCATE_EXISTING, 0)
        .map_err(|e| format!("TRUNCATE_EXISTING open failed with error {e} (FileAllocationInformation refused?)"))?;
    drop(h);
    let n = size_of("Scull2")?;
    check!(n == 0, "size {n} after a TRUNCATE_EXISTING open");
    Ok(())
}

/// The other I/O manager (ReactOS: TRUNCATE_EXISTING is FILE_OVERWRITE): trims too.
fn truncate_existing_reactos_disposition_trims(_t: &dyn Target) -> R {
    use ::ntsim::win32::{set_truncate_mode, truncate_mode, TruncateMode};
    let was = truncate_mode();
    put("Scull2", Dev::Scull(2), b"0123456789")?;
    set_truncate_mode(TruncateMode::ReactOs);
    let r = raw_open("Scull2", GENERIC_WRITE, TRUNCATE_EXISTING, 0);
    set_truncate_mode(was);
    drop(r.map_err(|e| format!("FILE_OVERWRITE open failed with error {e}"))?);
    let n = size_of("Scull2")?;
    check!(n == 0, "size {n} after a FILE_OVERWRITE open");
    Ok(())
}

/// SetEndOfFile sends FileEndOfFileInformation and then
/// FileAllocationInformation; both must succeed.
fn set_end_of_file_with_allocation_step(_t: &dyn Target) -> R {
    put("Scull3", Dev::Scull(3), b"0123456789")?;
    let h = raw_open("Scull3", GENERIC_READ | GENERIC_WRITE, OPEN_EXISTING, 0).map_err(|e| format!("open: error {e}"))?;
    let mut p = 0i64;
    // SAFETY: a valid handle and out pointer.
    check!(unsafe { SetFilePointerEx(h.0, 4, &mut p, FILE_BEGIN) } != 0, "seek");
    // SAFETY: a valid handle.
    let ok = unsafe { SetEndOfFile(h.0) } != 0;
    // SAFETY: the thread's last error.
    let err = unsafe { GetLastError() };
    let n = size_of("Scull3")?;
    check!(ok, "SetEndOfFile failed with error {err} after the size became {n} (the allocation step refused)");
    check!(n == 4, "size {n} after SetEndOfFile at 4");
    Ok(())
}

/// CREATE_ALWAYS (FILE_OVERWRITE_IF) on a handle without write access
/// must not wipe the store.
fn read_only_create_always_refused(_t: &dyn Target) -> R {
    put("Scull1", Dev::Scull(1), b"keep me")?;
    let r = raw_open("Scull1", GENERIC_READ, CREATE_ALWAYS, 0);
    let n = size_of("Scull1")?;
    check!(n == 7, "a read-only CREATE_ALWAYS open trimmed the store to {n} bytes (a trim needs FILE_WRITE_DATA); the open returned {:?}", r.as_ref().map(|_| ()));
    match r {
        Err(5) => Ok(()),
        other => Err(format!("read-only CREATE_ALWAYS: {:?}, want ERROR_ACCESS_DENIED", other.map(|_| ()))),
    }
}

/// kernel32 refuses TRUNCATE_EXISTING without GENERIC_WRITE before any IRP.
fn read_only_truncate_existing_refused_by_kernel32(_t: &dyn Target) -> R {
    put("Scull1", Dev::Scull(1), b"keep me")?;
    match raw_open("Scull1", GENERIC_READ, TRUNCATE_EXISTING, 0) {
        Err(87) => {}
        other => return Err(format!("{:?}, want ERROR_INVALID_PARAMETER", other.map(|_| ()))),
    }
    let n = size_of("Scull1")?;
    check!(n == 7, "size {n}");
    Ok(())
}

/// `type scull0`: ReadFile on a synchronous handle until it returns 0 bytes.
fn type_sequential_reads_to_eof(_t: &dyn Target) -> R {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
    put("Scull0", Dev::Scull(0), &data)?;
    let h = raw_open("Scull0", GENERIC_READ, OPEN_EXISTING, 0).map_err(|e| format!("open: error {e}"))?;
    let mut got = Vec::new();
    let mut calls = 0;
    loop {
        let mut b = [0u8; 4096];
        let mut n = 0u32;
        // SAFETY: a valid buffer of 4096 bytes; a synchronous handle.
        check!(unsafe { ReadFile(h.0, b.as_mut_ptr(), 4096, &mut n, null_mut()) } != 0, "ReadFile failed after {} bytes", got.len());
        calls += 1;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&b[..n as usize]);
        check!(calls < 100, "no end of file after {calls} reads");
    }
    check!(got == data, "read back {} bytes, {} written, or different", got.len(), data.len());
    put("Scull0", Dev::Scull(0), b"")?;
    Ok(())
}

/// An administrator's service impersonating a plain client acts with
/// the client's rights: a privileged ioctl on its behalf is refused.
fn impersonating_admin_service_privileged_ioctl_refused(_t: &dyn Target) -> R {
    let e = env();
    let service = Process::new("service.exe", e.admin.clone());
    let user = e.user.clone();
    std::thread::spawn(move || {
        kernel::enter_process(&service);
        // The service itself: privileged.
        let h = open_raw(Dev::Scull(0), OpenOpts::RW, false, false).map_err(|e| format!("service open: {e}"))?;
        let mut w = WinHandle { h, dev: Dev::Scull(0), wine: false, pos: 0 };
        let q = w.ioctl(Cmd::QQuantum, 0).map_err(|e| format!("QQUANTUM: {e}"))?;
        w.ioctl(Cmd::HQuantum, q).map_err(|e| format!("the service's own privileged HQUANTUM: {e}"))?;
        drop(w);
        kernel::impersonating(&user, || {
            let h = open_raw(Dev::Scull(0), OpenOpts::RW, false, false).map_err(|e| format!("open for the client: {e}"))?;
            let mut w = WinHandle { h, dev: Dev::Scull(0), wine: false, pos: 0 };
            match w.ioctl(Cmd::HQuantum, q) {
                Err(Error::Perm) => Ok(()),
                other => Err(format!("privileged HQUANTUM while impersonating a plain user: {other:?}, want Perm (the driver used the primary token)")),
            }
        })
    })
    .join()
    .map_err(|_| "thread panicked".to_string())?
}

/// A service impersonating a client opens sculluid as the client: the
/// device owned by the suite's user is busy for it.
fn impersonating_service_opens_as_client(t: &dyn Target) -> R {
    let owner = t.open(Dev::Uid, OpenOpts::R).map_err(|e| format!("owner open: {e}"))?;
    let e = env();
    let service = Process::new("service.exe", e.admin.clone());
    let user = e.user.clone();
    let r = std::thread::spawn(move || {
        kernel::enter_process(&service);
        let as_client = kernel::impersonating(&user, || open_raw(Dev::Uid, OpenOpts::R, false, false).map(drop));
        let as_itself = open_raw(Dev::Uid, OpenOpts::R, false, false).map(drop);
        (as_client, as_itself)
    })
    .join()
    .map_err(|_| "thread panicked".to_string())?;
    drop(owner);
    check!(r.0 == Err(Error::Busy), "impersonating a plain user, sculluid opened: {:?}, want Busy", r.0);
    // Not impersonating: the service's own token, an administrator, is let in.
    check!(r.1.is_ok(), "the administrator service itself: {:?}", r.1);
    Ok(())
}

/// A FILE_WRITE_ACCESS code on a read-only handle stops in the I/O
/// manager (ERROR_ACCESS_DENIED), a FILE_ANY_ACCESS unknown code reaches
/// the driver (ERROR_INVALID_FUNCTION).
fn ioctl_access_bits_checked_before_the_driver(_t: &dyn Target) -> R {
    let h = raw_open("Scull0", GENERIC_READ, OPEN_EXISTING, 0).map_err(|e| format!("open: error {e}"))?;
    let write_code = ioctl::ctl_code(ioctl::WIN_DEVICE_TYPE, 0x8ff, 0, 2);
    let any_code = ioctl::ctl_code(ioctl::WIN_DEVICE_TYPE, 0x8ff, 0, 0);
    let e1 = device_io_control(h.0, write_code, &[0; 4], 4).err();
    let e2 = device_io_control(h.0, any_code, &[0; 4], 4).err();
    check!(e1 == Some(Error::Perm), "FILE_WRITE_ACCESS code on a read-only handle: {e1:?}");
    check!(e2 == Some(Error::NotTty), "unknown FILE_ANY_ACCESS code: {e2:?}");
    Ok(())
}

/// Pended reads on an overlapped handle while another thread closes it:
/// every read ends (cancelled), no IRP is left.
fn irps_racing_closehandle(t: &dyn Target) -> R {
    for round in 0..20 {
        let mut reads = Vec::new();
        for _ in 0..3 {
            reads.push(t.read_cancellable(Dev::Pipe(2), 8).map_err(|e| format!("pend: {e}"))?);
        }
        let mut closer = reads.pop().unwrap();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(50 * (round % 4)));
            closer.cancel(true).map(|_| closer)
        });
        for r in reads.iter_mut() {
            r.cancel(true).map_err(|e| format!("close: {e}"))?;
        }
        let closer = h.join().map_err(|_| "closer panicked")?.map_err(|e| format!("close: {e}"))?;
        reads.push(closer);
        for r in reads {
            match r.wait(Duration::from_secs(10)) {
                Err(Error::Interrupted) => {}
                other => return Err(format!("round {round}: a read on a closed handle ended {other:?}")),
            }
        }
    }
    let live = ::ntsim::io::live_irps();
    check!(live == 0, "{live} IRPs outstanding after every handle closed");
    Ok(())
}

/// The DACL the driver applied is the one the SDDL says, and the I/O
/// manager checks it: with the default SDDL (no scull_sddl), a plain user
/// is refused and an administrator admitted.
fn device_acl_applied_and_checked(_t: &dyn Target) -> R {
    {
        let s = kernel::state();
        let dev = *s.devices.get("\\device\\scull0").ok_or("no \\Device\\Scull0")?;
        let sec = s.security.get(&dev).ok_or("no security descriptor applied to Scull0")?;
        let aces = sec.dacl.as_ref().ok_or("no DACL")?;
        let sids: Vec<String> = aces.iter().map(|a| a.sid.to_string()).collect();
        check!(sids == ["S-1-5-18", "S-1-5-32-544", "S-1-5-11"], "ACEs {sids:?}");
        check!(aces[0].mask == 0x001F_01FF && aces[2].mask == 0x0012_019F, "masks {:#x} {:#x}", aces[0].mask, aces[2].mask);
        check!(sec.protected, "the DACL is not protected (D:P)");
    }
    unload_clean()?;
    kernel::reset();
    kernel::reg_create(PARAMS_KEY);
    let r = load().map(drop).and_then(|_| {
        let e = env();
        let bob = Process::new("bob.exe", e.user.clone());
        let as_bob = std::thread::spawn(move || {
            kernel::enter_process(&bob);
            raw_open("Scull0", GENERIC_READ, OPEN_EXISTING, 0).map(drop)
        })
        .join()
        .map_err(|_| "thread panicked".to_string())?;
        check!(as_bob == Err(5), "a plain user opened Scull0 under the default ACL: {as_bob:?}");
        drop(raw_open("Scull0", GENERIC_READ | GENERIC_WRITE, OPEN_EXISTING, 0).map_err(|e| format!("administrator open: error {e}"))?);
        Ok(())
    });
    unload_clean()?;
    kernel::reset();
    reload()?;
    r
}

fn unload_clean() -> R {
    let left = unload()?;
    check!(left.is_empty(), "left at unload: {}", left.join("; "));
    Ok(())
}

fn unload_balanced_then_reload(_t: &dyn Target) -> R {
    {
        let h = raw_open("Scull1", GENERIC_WRITE, OPEN_EXISTING, 0).map_err(|e| format!("open: error {e}"))?;
        let mut w = WinHandle { h, dev: Dev::Scull(1), wine: false, pos: 0 };
        w.write(&[7u8; 9000]).map_err(|e| format!("write: {e}"))?;
    }
    check!(outstanding_blocks() > 0, "no pool blocks for stored data");
    unload_clean()?;
    check!(kernel::eventlog().is_empty(), "event log entries: {:?}", kernel::eventlog());
    let s = kernel::state();
    check!(s.devices.is_empty() && s.links.is_empty() && s.pool.is_empty(), "state left after unload");
    drop(s);
    kernel::reset();
    reload()?;
    check!(size_of("Scull1")? == 0, "a reloaded driver kept data");
    Ok(())
}

/// DriverUnload waits for the last file object: new opens fail meanwhile.
fn unload_deferred_while_open(_t: &dyn Target) -> R {
    let h = raw_open("ScullPipe0", GENERIC_READ, OPEN_EXISTING, FILE_FLAG_OVERLAPPED).map_err(|e| format!("open: error {e}"))?;
    let d = DRIVER.lock().unwrap().take().ok_or("no driver")?;
    let ran = ::ntsim::io::request_unload(&d);
    let during = raw_open("Scull0", GENERIC_READ, OPEN_EXISTING, 0).map(drop);
    drop(h);
    let done = ::ntsim::io::is_unloaded(&d);
    let left = d.unload_report.lock().unwrap().clone();
    kernel::reset();
    reload()?;
    check!(!ran, "DriverUnload ran with a file open");
    check!(during == Err(2), "an open while unload was pending: {during:?}, want ERROR_FILE_NOT_FOUND (STATUS_NO_SUCH_DEVICE)");
    check!(done, "DriverUnload did not run at the last close");
    check!(left.is_some_and(|l| l.is_empty()), "left at the deferred unload");
    Ok(())
}

/// A bad registry value refuses the load and writes one event-log entry:
/// IO_ERR_CONFIGURATION_ERROR, STATUS_INVALID_PARAMETER, the value's name.
fn refused_load_writes_event_log_entry(_t: &dyn Target) -> R {
    unload_clean()?;
    kernel::reset();
    seed_registry(&[("scull_quantum", RegValue::Dword(0))]);
    let r = load();
    let log = kernel::eventlog();
    let dbg = kernel::dbg_lines();
    let pool = kernel::pool_outstanding();
    kernel::reset();
    reload()?;
    check!(r.is_err(), "the load with scull_quantum=0 succeeded");
    check!(log.len() == 1, "{} event-log entries", log.len());
    let e = &log[0];
    check!(e.error_code == 0xC004_0003, "ErrorCode {:#x}, want IO_ERR_CONFIGURATION_ERROR", e.error_code);
    check!(e.final_status == 0xC000_000Du32 as i32, "FinalStatus {:#x}", e.final_status);
    check!(e.strings.len() == 1 && e.strings[0].contains("scull_quantum"), "strings {:?}", e.strings);
    // The same line the Linux module logs for insmod scull_quantum=0 (scull-core's text).
    let want = format!("scull: {}", scull_core::geometry::BadParam { name: "scull_quantum", value: 0 });
    check!(dbg.contains(&want), "no debug line {want:?} in {:?}", dbg.iter().rev().take(3).collect::<Vec<_>>());
    check!(pool.is_empty(), "pool left by the refused load: {pool:?}");
    Ok(())
}

/// While DriverEntry still creates devices (and will fail at a later
/// one), nothing may be openable: an early opener would hold a device the
/// failing DriverEntry frees.
fn no_open_while_driver_entry_runs(_t: &dyn Target) -> R {
    unload_clean()?;
    kernel::reset();
    seed_registry(&[]);
    let seen = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    ::ntsim::io::set_create_device_hook(Some(Arc::new(move |n, _name| {
        if n != 6 {
            return None;
        }
        // Another thread opens the first device while DriverEntry is in its 6th IoCreateDevice.
        let r = std::thread::spawn(|| raw_open("Scull0", GENERIC_READ, OPEN_EXISTING, 0).map(drop)).join().unwrap();
        *s2.lock().unwrap() = Some(r);
        Some(0xC000_009Au32 as i32) // STATUS_INSUFFICIENT_RESOURCES
    })));
    let r = load();
    ::ntsim::io::set_create_device_hook(None);
    let pool = kernel::pool_outstanding();
    kernel::reset();
    reload()?;
    check!(r.is_err(), "DriverEntry succeeded with an IoCreateDevice failed");
    check!(pool.is_empty(), "pool left by the failed DriverEntry: {pool:?}");
    let seen = *seen.lock().unwrap();
    match seen {
        Some(Err(_)) => Ok(()),
        Some(Ok(())) => Err("Scull0 opened while DriverEntry was still creating devices; DriverEntry then failed and freed it".into()),
        None => Err("the 6th IoCreateDevice never came".into()),
    }
}

/// Runs `f` on a new thread of process `p`.
fn as_process<T: Send + 'static>(p: &Arc<Process>, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let p = p.clone();
    std::thread::spawn(move || {
        kernel::enter_process(&p);
        f()
    })
    .join()
    .map_err(|_| "thread panicked".to_string())
}

/// A process that gets an exited process's id (Windows reuses ids as
/// soon as the process object is gone) must not see its scullpriv data.
/// If the driver holds the old process object, NT keeps the id taken and
/// the new process gets another one: fine too.
fn scullpriv_reused_pid_sees_no_old_data(_t: &dyn Target) -> R {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0x7000);
    let pid = NEXT.fetch_add(4, std::sync::atomic::Ordering::SeqCst);
    let e = env();
    let a = Process::reuse_pid("a.exe", e.user.clone(), pid).ok_or("the test id is taken")?;
    as_process(&a, || -> R {
        let h = raw_open("ScullPriv", GENERIC_READ | GENERIC_WRITE, OPEN_EXISTING, 0).map_err(|e| format!("a opens: error {e}"))?;
        let mut w = WinHandle { h, dev: Dev::Priv, wine: false, pos: 0 };
        w.write(b"secret of a").map_err(|e| format!("a writes: {e}"))?;
        Ok(())
    })??;
    a.exit();
    let b = Process::reuse_pid("b.exe", e.user.clone(), pid).unwrap_or_else(|| Process::new("b.exe", e.user.clone()));
    let got = as_process(&b, || -> Result<Vec<u8>, String> {
        let h = raw_open("ScullPriv", GENERIC_READ, OPEN_EXISTING, 0).map_err(|e| format!("b opens: error {e}"))?;
        let mut w = WinHandle { h, dev: Dev::Priv, wine: false, pos: 0 };
        let mut buf = [0u8; 64];
        let n = w.read(&mut buf).map_err(|e| format!("b reads: {e}"))?;
        Ok(buf[..n].to_vec())
    })??;
    b.exit();
    check!(got.is_empty(), "process {pid:#x} (b, reusing a's id) read {:?} from a's scullpriv", String::from_utf8_lossy(&got));
    Ok(())
}

/// Short-lived processes must not use up scullpriv's slots.
fn scullpriv_many_short_lived_processes(_t: &dyn Target) -> R {
    let e = env();
    for i in 0..40 {
        let p = Process::new("short.exe", e.user.clone());
        let r = as_process(&p, || raw_open("ScullPriv", GENERIC_READ, OPEN_EXISTING, 0).map(drop))?;
        p.exit();
        check!(r.is_ok(), "short-lived process number {} could not open scullpriv: error {:?} (slots never freed)", i + 1, r.err());
    }
    Ok(())
}

/// Commands that change state need a handle with write access: RESET
/// and P_IOCTSIZE on a read-only handle (of an administrator, so that
/// only the access bits decide) are refused.
fn read_only_handle_cannot_change_state(t: &dyn Target) -> R {
    let mut h = t.open(Dev::Scull(0), OpenOpts::R).map_err(|e| format!("open: {e}"))?;
    let r = h.ioctl(Cmd::Reset, 0);
    check!(r == Err(Error::Perm), "RESET on a read-only handle: {r:?}, want Perm (a FILE_ANY_ACCESS code)");
    let mut p = t.open(Dev::Pipe(0), OpenOpts::R).map_err(|e| format!("open pipe: {e}"))?;
    let r = p.ioctl(Cmd::PTSize, 4000);
    check!(r == Err(Error::Perm), "P_IOCTSIZE on a read-only handle: {r:?}, want Perm (a FILE_ANY_ACCESS code)");
    Ok(())
}

/// The loader binds every ntoskrnl.exe import of the release image by name
/// (data imports included), and refuses an image with an import it cannot
/// bind, naming it.
fn loader_binds_every_import_and_refuses_a_missing_one(_t: &dyn Target) -> R {
    let path = &env().path;
    let img = ::ntsim::pe::load(path, &|d, n| ::ntsim::io::resolve(d, n)).map_err(|e| format!("load: {e}"))?;
    check!(img.imports.len() >= 39, "{} imports bound", img.imports.len());
    for want in ["ntoskrnl.exe!PsProcessType", "ntoskrnl.exe!SeTokenObjectType", "ntoskrnl.exe!DbgPrintEx"] {
        check!(img.imports.iter().any(|i| i == want), "{want} not among the bound imports");
    }
    drop(img);
    match ::ntsim::pe::load(path, &|d, n| if n == "KeBugCheckEx" { None } else { ::ntsim::io::resolve(d, n) }) {
        Err(e) if e.contains("ntoskrnl.exe!KeBugCheckEx") => Ok(()),
        Err(e) => Err(format!("refused without naming the import: {e}")),
        Ok(_) => Err("an image with an unbound import loaded".into()),
    }
}

/// Dispatch runs on the caller's thread: four threads writing and reading
/// their own stores are in the driver at the same time (the I/O manager
/// takes no lock around dispatch).
fn dispatch_runs_concurrently_on_callers_threads(_t: &dyn Target) -> R {
    let _ = ::ntsim::io::take_max_concurrent_dispatches();
    let mut joins = Vec::new();
    for i in 0..4u8 {
        joins.push(std::thread::spawn(move || -> R {
            let dev = Dev::Scull(i);
            let h = open_raw(dev, OpenOpts::RW, false, false).map_err(|e| format!("open: {e}"))?;
            let mut w = WinHandle { h, dev, wine: false, pos: 0 };
            let data = [i; 1000];
            let mut back = [0u8; 1000];
            for _ in 0..400 {
                w.seek(Whence::Set, 0).map_err(|e| format!("seek: {e}"))?;
                w.write(&data).map_err(|e| format!("write: {e}"))?;
                w.seek(Whence::Set, 0).map_err(|e| format!("seek: {e}"))?;
                let n = w.read(&mut back).map_err(|e| format!("read: {e}"))?;
                check!(n == 1000 && back == data, "thread {i} read back other bytes");
            }
            Ok(())
        }));
    }
    for j in joins {
        j.join().map_err(|_| "thread panicked".to_string())??;
    }
    for i in 0..4u8 {
        trim_overwrite(&format!("Scull{i}"))?;
    }
    let most = ::ntsim::io::take_max_concurrent_dispatches();
    check!(most >= 2, "at most {most} dispatch routine(s) ran at once");
    Ok(())
}

/// Bytes of scull's pool blocks outstanding: (all, paged).
fn scul_bytes() -> (u64, u64) {
    let s = kernel::state();
    let mut all = 0;
    let mut paged = 0;
    for &(tag, n, is_paged) in s.pool.values() {
        if tag == POOL_TAG {
            all += n as u64;
            if is_paged {
                paged += n as u64;
            }
        }
    }
    (all, paged)
}

/// The store bytes of every device together stay within `scull_max_total`,
/// in PagedPool. A plain user (the suite's ACL lets authenticated users
/// write) writes to every store until a write is refused with
/// ERROR_NO_SYSTEM_RESOURCES; what was stored before stays readable; scull's
/// outstanding pool never exceeds the budget plus what it held at load; the
/// unload leaves nothing.
fn store_budget_bounds_the_pool_of_every_store(_t: &dyn Target) -> R {
    const BUDGET: u64 = 256 << 10;
    with_params(&[("scull_max_total", RegValue::Dword(BUDGET as u32))], || {
        let base = scul_bytes().0;
        let bob = Process::new("bob.exe", env().user.clone());
        as_process(&bob, move || fill_every_store(base, BUDGET))??;
        let (all, paged) = scul_bytes();
        check!(all <= base + BUDGET && paged <= BUDGET, "{all} bytes of 'Scul' pool ({paged} paged) with the handles closed");
        Ok(())
    })
}

/// Runs `f` on the driver loaded with `extra` registry values, then unloads
/// it (which must leave nothing) and loads the suite's again.
fn with_params(extra: &[(&str, RegValue)], f: impl FnOnce() -> R) -> R {
    unload_clean()?;
    kernel::reset();
    seed_registry(extra);
    let r = load().map(drop).and_then(|_| f());
    let left = unload();
    kernel::reset();
    reload()?;
    r?;
    let left = left?;
    check!(left.is_empty(), "left at unload: {}", left.join("; "));
    Ok(())
}

/// Writes 64 KiB pieces (up to 128 KiB a device, 1 MiB in all) to every
/// store device, checking the pool after each write; see the caller.
fn fill_every_store(base: u64, budget: u64) -> R {
    const PIECE: usize = 64 << 10;
    let devs = [Dev::Scull(0), Dev::Scull(1), Dev::Scull(2), Dev::Scull(3), Dev::Single, Dev::Uid, Dev::Wuid, Dev::Priv];
    let mut held = Vec::new();
    let (mut stored, mut refused) = (0u64, 0);
    for (i, dev) in devs.into_iter().enumerate() {
        let mut name = String::new();
        let _ = dev.windows_name(&mut name);
        let h = open_raw(dev, OpenOpts::RW, false, false).map_err(|e| format!("open {name}: {e}"))?;
        let mut w = WinHandle { h, dev, wine: false, pos: 0 };
        w.set_len(0).map_err(|e| format!("trim {name}: {e}"))?;
        let piece = vec![i as u8 + 1; PIECE];
        let mut at = 0u64;
        while at < 2 * PIECE as u64 {
            match w.write(&piece) {
                Ok(n) => at += n as u64,
                Err(Error::NoMemory) => {
                    refused += 1;
                    break;
                }
                Err(e) => return Err(format!("write {name} at {at}: {e}")),
            }
            let (all, paged) = scul_bytes();
            check!(all <= base + budget, "{all} bytes of 'Scul' pool, budget {budget} + {base} at load (after {name} at {at})");
            check!(paged + base >= all, "{} of {all} 'Scul' bytes not in PagedPool (after {name} at {at})", all - paged);
        }
        stored += at;
        // Nothing stored is lost: the device reads back all it took.
        w.seek(Whence::Set, 0).map_err(|e| format!("seek {name}: {e}"))?;
        let mut back = vec![0u8; at as usize];
        let n = w.read(&mut back).map_err(|e| format!("read {name}: {e}"))?;
        check!(n as u64 == at && back.iter().all(|&b| b == i as u8 + 1), "{name} read back {n} of {at} bytes, or other bytes");
        held.push(w);
    }
    check!(refused > 0, "no write refused: {stored} bytes stored against a budget of {budget}");
    check!(stored <= budget, "{stored} bytes stored against a budget of {budget}");
    for w in held.iter_mut() {
        w.set_len(0).map_err(|e| format!("trim: {e}"))?;
    }
    Ok(())
}

/// Blocking requests pend up to 64 on a queue (a pipe's readers,
/// scullwuid's creates); the next is refused with ERROR_NO_SYSTEM_RESOURCES
/// instead of pending. The pended ones still end as they should, and
/// nothing is left at unload.
fn pended_requests_are_capped(t: &dyn Target) -> R {
    const CAP: usize = 64;
    let mut reads = Vec::new();
    for i in 0..CAP {
        reads.push(t.read_cancellable(Dev::Pipe(1), 8).map_err(|e| format!("pended read {i}: {e}"))?);
    }
    let over = match t.read_cancellable(Dev::Pipe(1), 8) {
        Ok(mut p) => {
            p.cancel(true).map_err(|e| format!("close: {e}"))?;
            reads.push(p);
            Ok(())
        }
        Err(e) => Err(e),
    };
    for r in reads.iter_mut() {
        r.cancel(true).map_err(|e| format!("close: {e}"))?;
    }
    for r in reads {
        match r.wait(Duration::from_secs(10)) {
            Err(Error::Interrupted) => {}
            other => return Err(format!("a pended read on a closed handle ended {other:?}")),
        }
    }
    check!(over == Err(Error::NoMemory), "read {} on an empty pipe: {over:?}, want NoMemory (ERROR_NO_SYSTEM_RESOURCES)", CAP + 1);

    let owner = raw_open("ScullWuid", GENERIC_READ, OPEN_EXISTING, 0).map_err(|e| format!("owner open: error {e}"))?;
    let bob = Process::new("bob.exe", env().user.clone());
    let spawn = |bob: &Arc<Process>| {
        let bob = bob.clone();
        std::thread::spawn(move || {
            kernel::enter_process(&bob);
            raw_open("ScullWuid", GENERIC_READ, OPEN_EXISTING, 0).map(drop)
        })
    };
    let waiters: Vec<_> = (0..CAP).map(|_| spawn(&bob)).collect();
    // Queued, not just submitted: a live create may still be in its
    // dispatch routine, and then the 65th could take its place in the queue.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while ::ntsim::io::pended_irps() < CAP && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let pended = ::ntsim::io::pended_irps();
    let over = spawn(&bob);
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while !over.is_finished() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let refused_at_once = over.is_finished();
    // The owner's close admits every waiter (the one past the cap too, if it pended).
    drop(owner);
    let over = over.join().map_err(|_| "thread panicked")?;
    let mut admitted = 0;
    for w in waiters {
        admitted += usize::from(w.join().map_err(|_| "thread panicked")?.is_ok());
    }
    check!(pended == CAP, "{pended} scullwuid creates pended, want {CAP}");
    check!(refused_at_once && over == Err(1450), "create {}: {over:?} (ended at once: {refused_at_once}), want error 1450", CAP + 1);
    check!(admitted == CAP, "{admitted} of {CAP} pended creates admitted at the owner's close");
    check!(::ntsim::io::live_irps() == 0, "IRPs left");
    unload_clean()?;
    kernel::reset();
    reload()
}

/// A pipe's first open allocates (and zeroes) its buffer, up to 4 MiB, at
/// PASSIVE_LEVEL and installs it under the spin lock: no pool block bigger
/// than a page is allocated at DISPATCH_LEVEL.
fn pipe_buffer_allocated_outside_the_spin_lock(_t: &dyn Target) -> R {
    const BUFFER: u32 = 4 << 20;
    with_params(&[("scull_p_buffer", RegValue::Dword(BUFFER))], || {
        let h = raw_open("ScullPipe0", GENERIC_READ | GENERIC_WRITE, OPEN_EXISTING, 0).map_err(|e| format!("open: error {e}"))?;
        let held = kernel::state().pool.values().any(|&(t, n, _)| t == POOL_TAG && n == BUFFER as usize);
        drop(h);
        check!(held, "no {BUFFER}-byte pipe buffer while the pipe was open");
        let most = kernel::state().dispatch_alloc_max;
        check!(most <= 4096, "a {most}-byte pool block was allocated at DISPATCH_LEVEL");
        Ok(())
    })
}

/// A handle's role on a pipe comes from the access the I/O manager
/// granted: a read-only open counts as a reader, not a writer.
fn pipe_role_is_the_granted_access(_t: &dyn Target) -> R {
    let h = raw_open("ScullPipe2", GENERIC_READ, OPEN_EXISTING, 0).map_err(|e| format!("open: error {e}"))?;
    let line = {
        let h0 = raw_open("Scull0", GENERIC_READ, OPEN_EXISTING, 0).map_err(|e| format!("open Scull0: error {e}"))?;
        let mut w = WinHandle { h: h0, dev: Dev::Scull(0), wine: false, pos: 0 };
        let text = w.stats().map_err(|e| format!("stats: {e}"))?;
        text.lines().find(|l| l.starts_with("scullpipe2 ")).map(String::from).ok_or("no scullpipe2 in stats")?
    };
    drop(h);
    let (r, w) = (field(&line, "readers"), field(&line, "writers"));
    check!(r == Some("1") && w == Some("0"), "a read-only open counts as readers={r:?} writers={w:?}: {line}");
    Ok(())
}

/// The workload of the pool-failure sweep: writes three chunks that cross
/// quantum boundaries to Scull3, and opens and writes a pipe. Returns the
/// bytes of Scull3 acknowledged (a failed call may be anywhere).
fn sweep_workload(data: &[u8]) -> usize {
    let mut acked = 0;
    if let Ok(h) = raw_open("Scull3", GENERIC_READ | GENERIC_WRITE, OPEN_EXISTING, 0) {
        let mut w = WinHandle { h, dev: Dev::Scull(3), wine: false, pos: 0 };
        for c in data.chunks(data.len() / 3) {
            match w.write(c) {
                Ok(n) => {
                    acked += n;
                    if n < c.len() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    if let Ok(h) = raw_open("ScullPipe1", GENERIC_READ | GENERIC_WRITE, OPEN_EXISTING, 0) {
        let mut w = WinHandle { h, dev: Dev::Pipe(1), wine: false, pos: 0 };
        if w.write(b"through the pipe").is_ok_and(|n| n > 0) {
            let mut b = [0u8; 16];
            let _ = w.read(&mut b);
        }
    }
    acked
}

/// Low-resources simulation on the release binary: the k-th pool
/// allocation of the whole kernel (the driver's, or the I/O manager's
/// system buffers) fails, k = 1, 2, ... until the workload makes fewer
/// than k. After each k, with nothing failing: Scull3 holds exactly the
/// acknowledged bytes (nothing lost, no stale byte), and the driver
/// unloads with no pool outstanding.
fn pool_failure_sweep_loses_nothing(_t: &dyn Target) -> R {
    trim_overwrite("Scull3")?;
    let base = outstanding_blocks();
    let data: Vec<u8> = (0..12_000u32).map(|i| (i % 251) as u8 + 1).collect();
    let mut held = 0;
    for k in 1..=5000u64 {
        kernel::pool_fail_at(k);
        let acked = sweep_workload(&data);
        let fired = !kernel::pool_fail_armed();
        kernel::pool_fail_at(0);
        let h = raw_open("Scull3", GENERIC_READ, OPEN_EXISTING, 0).map_err(|e| format!("k={k}: reopen: error {e}"))?;
        let mut w = WinHandle { h, dev: Dev::Scull(3), wine: false, pos: 0 };
        let mut back = vec![0u8; data.len() + 64];
        let mut got = 0;
        loop {
            let n = w.read(&mut back[got..]).map_err(|e| format!("k={k}: read back: {e}"))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        drop(w);
        check!(got == acked, "k={k}: {acked} bytes acknowledged, {got} read back");
        check!(back[..got] == data[..got], "k={k}: the bytes read back differ from those written (stale or lost)");
        trim_overwrite("Scull3")?;
        held += (outstanding_blocks() != base) as usize;
        // Nothing outstanding at unload (ntsim stops the run otherwise).
        unload_clean()?;
        kernel::reset();
        reload()?;
        if !fired {
            println!("ntsim-verifier: low-resources sweep: {} allocation failures, each survived ({held} left blocks held after the trim until unload)", k - 1);
            return Ok(());
        }
    }
    Err("the workload still allocates after 5000 failures".into())
}

/// A thread that keeps opening Scull0 until stopped; how many opens succeeded.
struct Opener {
    stop: Arc<std::sync::atomic::AtomicBool>,
    join: std::thread::JoinHandle<usize>,
}

impl Opener {
    fn start() -> Opener {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let me = env().me.clone();
        let join = std::thread::spawn(move || {
            kernel::enter_process(&me);
            let mut n = 0;
            while !s2.load(std::sync::atomic::Ordering::SeqCst) {
                n += raw_open("Scull0", GENERIC_READ, OPEN_EXISTING, 0).is_ok() as usize;
            }
            n
        });
        Opener { stop, join }
    }

    fn stop(self) -> Result<usize, String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.join.join().map_err(|_| "the opener panicked".to_string())
    }
}

/// One load of the DriverEntry sweep with `arm` injecting a failure while
/// an opener races it: Some(opens) when the failure fired (and the load
/// was refused cleanly: ntsim stops the run if it left anything), None
/// when the load made too few calls to reach it (then it is unloaded).
fn refused_load(what: &str, arm: impl FnOnce(), fired: impl FnOnce() -> bool) -> Result<Option<usize>, String> {
    kernel::reset();
    seed_registry(&[]);
    let o = Opener::start();
    arm();
    let l = load();
    let hit = fired();
    let opens = o.stop()?;
    if !hit {
        l?;
        unload_clean()?;
        return Ok(None);
    }
    check!(l.is_err(), "DriverEntry succeeded with {what} failed");
    Ok(Some(opens))
}

/// DriverEntry under low resources: each of its pool allocations, then
/// each IoCreateDevice, fails in turn while another thread keeps opening
/// Scull0. Every such load is refused cleanly, no open succeeds during
/// it, and the driver loads again afterwards.
fn driver_entry_failure_sweep_refuses_cleanly(_t: &dyn Target) -> R {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    unload_clean()?;
    let (mut pool_k, mut dev_k, mut opens) = (0, 0, 0);
    let mut r: R = Ok(());
    for k in 1..=500u64 {
        let step = refused_load(&format!("allocation {k}"), || kernel::pool_fail_at(k), || {
            let f = !kernel::pool_fail_armed();
            kernel::pool_fail_at(0);
            f
        });
        match step {
            Ok(Some(n)) => (pool_k, opens) = (k, opens + n),
            Ok(None) => break,
            Err(e) => {
                r = Err(e);
                break;
            }
        }
    }
    for j in 1..=100usize {
        if r.is_err() {
            break;
        }
        let hit = Arc::new(AtomicBool::new(false));
        let (h2, early) = (hit.clone(), Arc::new(AtomicBool::new(false)));
        let e2 = early.clone();
        let me = env().me.clone();
        let arm = move || {
            ::ntsim::io::set_create_device_hook(Some(Arc::new(move |n, _| {
                (n == j).then(|| {
                    h2.store(true, SeqCst);
                    // At the failing call, an open from another thread: nothing may be openable yet.
                    let me = me.clone();
                    let ok = std::thread::spawn(move || {
                        kernel::enter_process(&me);
                        raw_open("Scull0", GENERIC_READ, OPEN_EXISTING, 0).is_ok()
                    });
                    e2.fetch_or(ok.join().unwrap_or(true), SeqCst);
                    0xC000_009Au32 as i32
                })
            })))
        };
        let step = refused_load(&format!("IoCreateDevice {j}"), arm, || {
            ::ntsim::io::set_create_device_hook(None);
            hit.load(SeqCst)
        });
        match step {
            Ok(Some(n)) => (dev_k, opens) = (j, opens + n + early.load(SeqCst) as usize),
            Ok(None) => break,
            Err(e) => r = Err(e),
        }
    }
    kernel::reset();
    reload()?;
    r?;
    check!(pool_k > 0 && dev_k > 0, "no failure injected (allocations {pool_k}, devices {dev_k})");
    check!(opens == 0, "{opens} opens succeeded while failing loads ran");
    println!("ntsim-verifier: DriverEntry sweep: {pool_k} allocation failures and {dev_k} IoCreateDevice failures, each refused cleanly");
    Ok(())
}

/// Seeded random IRPs straight to the I/O manager (no kernel32 checks):
/// creates with random dispositions, access masks, options and name
/// suffixes; reads and writes of random lengths at offsets -1, -2,
/// negative, huge; random CTL_CODEs and buffer lengths; random
/// information classes and lengths. Asynchronous file objects, so nothing
/// blocks; CLEANUP must finish what is pended. Then every store still
/// round-trips, and the driver unloads with nothing left.
fn random_irps_devices_survive(_t: &dyn Target) -> R {
    use ::ntsim::io::{self as nio, Io};
    let mut rng = crate::rng::Rng::new(20261204);
    let names = ["Scull0", "Scull1", "Scull2", "Scull3", "ScullPipe0", "ScullPipe1", "ScullSingle", "ScullUid", "ScullPriv"];
    let suffixes = ["", "\\nonblock", "\\x", "\\..\\Scull0", "\\nonblock\\nonblock", "\\\u{e9}"];
    let offsets = [-1i64, -2, -3, i64::MIN, i64::MAX, 1 << 40, 0, 5, 4000];
    let (mut opened, mut irps) = (0, 0);
    for _ in 0..6000 {
        let path = format!("\\??\\{}{}", rng.pick(&names), rng.pick(&suffixes));
        let access = match rng.below(3) { 0 => rng.next_u64() as u32, 1 => 0x0012_019F, _ => 0x8000_0000u32 >> rng.below(4) };
        let disposition = rng.below(7) as u32;
        let options = (rng.next_u64() as u32) & 0x00FF_FFDF; // any option but FILE_SYNCHRONOUS_IO_*
        let Ok(o) = nio::create(&path, access, 3, disposition, options & !0x30, rng.next_u64() as u32 & 0xFFFF) else { continue };
        opened += 1;
        let f = o.file;
        let mut keep: Vec<Vec<u8>> = Vec::new();
        for _ in 0..rng.below(6) {
            irps += 1;
            let io = Io { asynchronous: true, ..Default::default() };
            let len = *rng.pick(&[0usize, 1, 7, 4095, 4096, 70_000]);
            let mut b = vec![0x5Au8; len];
            let p = b.as_mut_ptr() as usize;
            match rng.below(4) {
                0 => { let _ = f.read_write(rng.chance(50), p, len, *rng.pick(&offsets), io); }
                1 => {
                    let code = ((rng.below(0x30) as u32 + 0x20) << 16) | ((rng.below(4) as u32) << 14) | ((0x800 + rng.below(20) as u32) << 2) | rng.below(4) as u32;
                    let code = if rng.chance(50) { code } else { rng.next_u64() as u32 };
                    let (il, ol) = (rng.below(64) as usize, rng.below(64) as usize);
                    let mut i = vec![rng.next_u64() as u8; il.max(1)];
                    let mut out = vec![0u8; ol.max(1)];
                    let _ = f.ioctl(code, i.as_mut_ptr() as usize, il, out.as_mut_ptr() as usize, ol, io);
                    keep.push(i);
                    keep.push(out);
                }
                2 => { let _ = f.query_information(rng.below(80) as u32, p, len.min(64)); }
                _ => {
                    let d: Vec<u8> = (0..rng.below(40)).map(|_| rng.next_u64() as u8).collect();
                    let _ = f.set_information(rng.below(80) as u32, &d);
                }
            }
            keep.push(b);
        }
        f.close_handle();
        check!(f.outstanding() == 0, "{} IRP(s) of {path} still outstanding after CLEANUP", f.outstanding());
        drop(keep);
    }
    for i in 0..4 {
        let name = format!("Scull{i}");
        put(&name, Dev::Scull(i), b"survived")?;
        trim_overwrite(&name)?;
    }
    unload_clean()?;
    kernel::reset();
    reload()?;
    println!("ntsim-verifier: random IRPs: {opened} creates granted, {irps} IRPs, devices survive");
    Ok(())
}

/// CancelIoEx racing the completion of pended pipe reads and writes: a
/// reader thread pends reads, a writer completes them while the main
/// thread cancels; every read ends exactly once (data or cancelled) and
/// every byte written and acknowledged is read or still in the pipe.
fn cancel_races_completion_on_pended_pipe_io(_t: &dyn Target) -> R {
    use ::ntsim::io::{self as nio, Io, Outcome};
    let o = nio::create("\\??\\ScullPipe3", 0x0012_019F, 3, 1, 0, 0).map_err(|e| format!("open: {e:#x}"))?;
    let f = o.file;
    let (mut reads, mut got, mut put_n) = (0usize, 0usize, 0usize);
    for round in 0..100 {
        let mut bufs: Vec<(Vec<u8>, Box<[usize; 4]>)> = (0..4).map(|_| (vec![0u8; 64], Box::new([0usize; 4]))).collect();
        for (b, ov) in bufs.iter_mut() {
            let io = Io { asynchronous: true, overlapped: ov.as_mut_ptr() as usize, ..Default::default() };
            if let Outcome::Done(st, n) = f.read_write(false, b.as_mut_ptr() as usize, 64, -1, io) {
                check!(st >= 0 || st == 0xC000_0120u32 as i32, "read: {st:#x}");
                got += n;
                ov[0] = usize::MAX;
            }
            reads += 1;
        }
        let f2 = f.clone();
        let w = std::thread::spawn(move || {
            let data = [b'w'; 24];
            match f2.read_write(true, data.as_ptr() as usize, 24, -1, Io::default()) {
                Outcome::Done(st, n) if st >= 0 => n,
                _ => 0,
            }
        });
        if round % 2 == 0 {
            std::thread::yield_now();
        }
        f.cancel(0);
        put_n += w.join().map_err(|_| "writer panicked")?;
        // Every read ended: completed with data, or cancelled.
        let t0 = std::time::Instant::now();
        while f.outstanding() > 0 && t0.elapsed().as_secs() < 5 {
            f.cancel(0);
            std::thread::yield_now();
        }
        check!(f.outstanding() == 0, "round {round}: {} read(s) never ended", f.outstanding());
        for (_, ov) in &bufs {
            if ov[0] != usize::MAX && ov[0] as u32 as i32 >= 0 {
                got += ov[1];
            }
        }
    }
    // What is left in the pipe.
    let mut rest = [0u8; 8192];
    let left = match f.read_write(false, rest.as_mut_ptr() as usize, rest.len(), -1, Io { asynchronous: true, ..Default::default() }) {
        Outcome::Done(st, n) if st >= 0 => n,
        _ => {
            f.cancel(0);
            0
        }
    };
    f.close_handle();
    check!(got + left == put_n, "{put_n} bytes written, {got} read by {reads} reads and {left} left in the pipe");
    Ok(())
}

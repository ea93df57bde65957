//! IRP_MJ_DEVICE_CONTROL: LDD3 main.c's `scull_ioctl` (the 16 commands,
//! scull-core's `ioctl::execute`) and `scull_read_procmem`/pipe.c's
//! `scull_read_p_mem` as the STATS command. NT primitives: METHOD_BUFFERED
//! IOCTLs (CTL_CODE), STATUS_BUFFER_OVERFLOW for a partial report.

use crate::ddk::*;
use crate::dev::{self, Kind, PARAMS};
use crate::dev::DevExt;
use crate::irp::{self, finish, finish_result, read_i32};
use crate::ident;
use crate::pipe;
use core::sync::atomic::Ordering;
use scull_core::ioctl::{self as sioctl, ArgIn, ArgOut, Cmd};
use scull_core::report::{self, TextBuf, Who};
use scull_core::Error;

/// IRP_MJ_DEVICE_CONTROL (LDD3 `scull_ioctl`); PASSIVE_LEVEL. The test
/// build's bridge codes go to `bridge` first.
///
/// # Safety
/// A METHOD_BUFFERED device-control IRP in dispatch, owned by the caller,
/// with its stack location.
pub(crate) unsafe fn device_control(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: the IRP's current stack location (contract), only read here.
    let sl = unsafe { &*sl };
    let fo = sl.FileObject;
    // SAFETY: a device-control IRP's parameters.
    let p = unsafe { &sl.Parameters.DeviceIoControl };
    let (code, in_len, out_len) = (p.IoControlCode, p.InputBufferLength as usize, p.OutputBufferLength as usize);
    // SAFETY: the IRP is ours: METHOD_BUFFERED, so its system buffer holds
    // max(in, out) bytes.
    let buf = unsafe { irp::system_buffer(irp) };
    kinfo!("ioctl {:#x} on {}: in {} out {}", code, dev::dev_name(ext.dev).as_str(), in_len, out_len);
    #[cfg(feature = "test-build")]
    // SAFETY: as above.
    if let Some(st) = unsafe { crate::bridge::device_control(ext, irp, fo, code, buf, in_len, out_len) } {
        return st;
    }
    let _ = fo;
    // SAFETY: as above.
    let r = unsafe { scull_ioctl(irp, code, buf, in_len, out_len) };
    match r {
        // SAFETY: the IRP is ours (contract).
        Err(Error::BufferTooSmall) if code == Cmd::Stats.windows_code() => unsafe { finish(irp, STATUS_BUFFER_OVERFLOW, out_len) },
        // SAFETY: the IRP is ours (contract).
        r => unsafe { finish_result(irp, r) },
    }
}

/// STATS text that does not fit is reported as BufferTooSmall here and turned
/// into STATUS_BUFFER_OVERFLOW (data returned, ERROR_MORE_DATA) by the caller.
///
/// # Safety
/// `buf` is the system buffer of `irp`, a METHOD_BUFFERED device-control
/// IRP, holding max(in_len, out_len) bytes.
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
    let value = if cmd.arg_in() == ArgIn::None {
        0
    } else {
        // SAFETY: in_len >= the command's input length (4) was checked.
        unsafe { read_i32(buf) }
    };
    // LDD3's capable(CAP_SYS_ADMIN): the requesting thread's effective
    // token (its impersonation token when it impersonates) must be an
    // administrator; an identity that cannot be read is not privileged.
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

/// The devices in creation order, which is the device table's order.
fn devices() -> impl Iterator<Item = &'static DevExt> {
    let n = dev::NDEVICES.load(Ordering::Relaxed);
    let live = dev::DEVICES[..n].iter().map(|d| d.load(Ordering::Relaxed)).filter(|d| !d.is_null());
    // SAFETY: DEVICES holds only devices `dev::create` made, with their
    // extensions; they are deleted only at unload (after the rundown has
    // waited out every dispatch routine, this one included) or by a failed
    // DriverEntry, before any IRP can arrive.
    live.map(|d| unsafe { DevExt::of(d) })
}

/// The scullmem and scullpipe reports (scull-core's writer).
fn stats_text(t: &mut TextBuf<'_>) {
    let stores = devices().filter_map(|ext| Some(Ok((Who::Dev(ext.dev), ext.store_lock()?.lock().stats()))));
    // Every scullpriv device still held, including those of exited openers
    // that the next scullpriv open will free (`access.rs`).
    let tab = devices().find_map(|ext| if let Kind::Priv(tab) = &ext.kind { Some(tab) } else { None });
    let privs = report::lock_late(|| tab.map(|t| t.lock()), |g, i| {
        g.as_ref()?.iter().nth(i).map(|(key, s)| Ok((Who::Priv(*key), s.store.stats())))
    });
    let pipes = devices().filter_map(|ext| match &ext.kind {
        Kind::Pipe(p) => {
            let (st, r, w) = pipe::stats(p);
            Some(Ok((ext.dev, st, r, w)))
        }
        _ => None,
    });
    let _ = report::stats(t, &PARAMS, stores.chain(privs), pipes);
}

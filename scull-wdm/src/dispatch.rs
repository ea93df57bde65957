//! The thin router of scull.sys: every IRP_MJ_* lands in [`dispatch`]
//! (LDD3's `scull_fops` table), which hands it to the device family's file:
//! `store` (main.c: read/write/llseek/trim, file size and information),
//! `pipe` (pipe.c), `access` (access.c and main.c's open/release: create,
//! cleanup, close, the pended scullwuid creates) and `ioctl` (main.c's
//! `scull_ioctl` and the /proc report). NT primitives: the IRP and its
//! current IO_STACK_LOCATION, IoCompleteRequest.
//!
//! Per-handle state lives in the FILE_OBJECT, without allocation:
//! `FsContext2` holds the `H_*` flags, `FsContext` the scullpriv slot + 1.
//! The decisions only a real NT I/O manager reaches (start position,
//! disposition, role, information classes, suffix) are scull-core's
//! `nt` functions; the family files read the IRP fields and apply the
//! answers. The Wine bridge (test build only) lives in `bridge`.

use crate::ddk::*;
use crate::dev::{self, DevExt, Kind};
use crate::{access, ioctl, pipe, store};
use core::ptr;
use scull_core::nt;
use scull_core::Error;

// scull-core's `nt` constants are the headers' values.
const _: () = {
    assert!(FileStandardInformation as u32 == nt::FILE_STANDARD_INFORMATION);
    assert!(FilePositionInformation as u32 == nt::FILE_POSITION_INFORMATION);
    assert!(FileEndOfFileInformation as u32 == nt::FILE_END_OF_FILE_INFORMATION);
    assert!(FileAllocationInformation as u32 == nt::FILE_ALLOCATION_INFORMATION);
    assert!(core::mem::size_of::<FILE_ALLOCATION_INFORMATION>() == nt::OFFSET_INFO_LEN);
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

pub(crate) fn read_i32(buf: *const u8) -> i32 {
    // SAFETY: the caller checked 4 readable bytes.
    i32::from_le_bytes(unsafe { *(buf as *const [u8; 4]) })
}

/// Every major function lands here (DriverObject->MajorFunction[*]), at
/// PASSIVE_LEVEL in the requester's thread (a top-level driver; under Wine
/// in winedevice's one dispatch thread). Nothing here waits.
pub unsafe extern "C" fn dispatch(d: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager passes one of our devices and a valid IRP whose
    // current stack location is ours.
    unsafe {
        let sl = IoGetCurrentIrpStackLocation(irp);
        let major = (*sl).MajorFunction as u32;
        // Held until this routine returns; refused once unload has begun
        // (Wine unloads with handles open), before the extension is touched.
        let Some(_active) = crate::rundown::enter() else {
            let st = if matches!(major, IRP_MJ_CLEANUP | IRP_MJ_CLOSE) { STATUS_SUCCESS } else { STATUS_DELETE_PENDING };
            return finish(irp, st, 0);
        };
        let ext = DevExt::of(d);
        let fo = (*sl).FileObject;
        #[cfg(feature = "test-build")]
        if !matches!(major, IRP_MJ_CREATE | IRP_MJ_CLEANUP | IRP_MJ_CLOSE) {
            if let Some(st) = crate::bridge::refused(fo) {
                return finish(irp, st, 0);
            }
        }
        match major {
            IRP_MJ_CREATE => access::create(ext, irp, sl),
            IRP_MJ_CLEANUP => access::cleanup(ext, irp, sl),
            IRP_MJ_CLOSE => access::close(ext, irp, sl),
            IRP_MJ_READ | IRP_MJ_WRITE => {
                let write = major == IRP_MJ_WRITE;
                match &ext.kind {
                    Kind::Pipe(p) => pipe::transfer(p, irp, write, flags(fo) & H_NONBLOCK != 0),
                    _ => store::read_write(ext, irp, sl, write),
                }
            }
            IRP_MJ_DEVICE_CONTROL => ioctl::device_control(ext, irp, sl),
            IRP_MJ_QUERY_INFORMATION => store::query_information(ext, irp, sl),
            IRP_MJ_SET_INFORMATION => store::set_information(ext, irp, sl),
            _ => finish(irp, STATUS_INVALID_DEVICE_REQUEST, 0),
        }
    }
}

/// Unload: cancels every pended IRP on every device.
pub fn cancel_everything() {
    dev::for_each(|ext| {
        // SAFETY: a null file object matches every queued IRP.
        unsafe { access::cancel_pended(ext, ptr::null_mut()) };
    });
}

//! IRP completion and system-buffer reads: the leaf every family file uses.
//! It names nothing of the driver but the bindings (`ddk`).

use crate::ddk::*;
use scull_core::nt;
use scull_core::Error;

// scull-core's `nt` constants are the headers' values. (The information
// classes are u32 in the mingw bindings, i32 in wdk-sys's: the cast is
// needed on one path only.)
#[allow(clippy::unnecessary_cast)]
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

/// Completes `irp` with `status` and `info`, returning `status`.
///
/// # Safety
/// The driver owns `irp`; it is not touched after this call.
pub(crate) unsafe fn finish(irp: *mut IRP, status: NTSTATUS, info: usize) -> NTSTATUS {
    // SAFETY: the caller owns the IRP (contract).
    unsafe { set_io_status(irp, status, info) };
    // SAFETY: the caller owns the IRP and gives it up here (contract).
    unsafe { IoCompleteRequest(irp, IO_NO_INCREMENT) };
    status
}

/// Completes `irp` with `r`'s byte count or error status.
///
/// # Safety
/// As for [`finish`].
pub(crate) unsafe fn finish_result(irp: *mut IRP, r: Result<usize, Error>) -> NTSTATUS {
    match r {
        // SAFETY: forwarded contract.
        Ok(n) => unsafe { finish(irp, STATUS_SUCCESS, n) },
        // SAFETY: forwarded contract.
        Err(e) => unsafe { finish(irp, e.ntstatus(), 0) },
    }
}

/// A little-endian i32 from the start of a system buffer.
///
/// # Safety
/// `buf` points to at least 4 readable bytes.
pub(crate) unsafe fn read_i32(buf: *const u8) -> i32 {
    // SAFETY: 4 readable bytes (contract); `[u8; 4]` needs no alignment.
    i32::from_le_bytes(unsafe { *(buf as *const [u8; 4]) })
}

/// The current stack location's major function.
///
/// # Safety
/// `irp` is a valid IRP the driver handles (in dispatch, queued, or in
/// its cancel routine).
pub(crate) unsafe fn major(irp: *mut IRP) -> u32 {
    // SAFETY: a valid IRP (contract).
    let sl = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: its current stack location is ours and valid.
    (unsafe { (*sl).MajorFunction }) as u32
}

/// The file object of the current stack location.
///
/// # Safety
/// As for [`major`].
pub(crate) unsafe fn file_object(irp: *mut IRP) -> *mut FILE_OBJECT {
    // SAFETY: a valid IRP (contract).
    let sl = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: its current stack location is ours and valid.
    unsafe { (*sl).FileObject }
}

/// The system buffer of a buffered I/O or METHOD_BUFFERED IRP (may be null).
///
/// # Safety
/// As for [`major`].
pub(crate) unsafe fn system_buffer(irp: *mut IRP) -> *mut u8 {
    // SAFETY: a valid IRP (contract); only a field address is taken.
    let p = unsafe { &raw const (*irp).AssociatedIrp.SystemBuffer };
    // SAFETY: for buffered I/O this union arm is the system buffer pointer.
    (unsafe { p.read() }) as *mut u8
}

/// A cancel routine's first step: releases the cancel spin lock that the
/// I/O manager holds when it calls the routine, at the IRQL it saved.
///
/// # Safety
/// Called once, by the cancel routine of `irp`, with the cancel spin lock held.
pub(crate) unsafe fn release_cancel_lock(irp: *mut IRP) {
    // SAFETY: the IRP being cancelled is valid (contract).
    let irql = unsafe { (*irp).CancelIrql };
    // SAFETY: the cancel spin lock is held, acquired at `irql` (contract).
    unsafe { IoReleaseCancelSpinLock(irql) }
}

/// The current stack location, to read.
///
/// # Safety
/// As for [`major`]; nothing writes the stack location while the reference
/// lives.
pub(crate) unsafe fn stack<'a>(irp: *mut IRP) -> &'a IO_STACK_LOCATION {
    // SAFETY: a valid IRP (contract).
    let sl = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: its current stack location is valid, and not written while
    // borrowed (contract).
    unsafe { &*sl }
}

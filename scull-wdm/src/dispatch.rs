//! The thin router of scull.sys: every IRP_MJ_* lands in [`dispatch`]
//! (LDD3's `scull_fops` table), which hands it to the device family's file:
//! `store` (main.c: read/write/llseek/trim, file size and information),
//! `pipe` (pipe.c), `access` (access.c and main.c's open/release: create,
//! cleanup, close, the pended scullwuid creates) and `ioctl` (main.c's
//! `scull_ioctl` and the /proc report). Nothing imports this module but
//! `lib.rs`: IRP completion is `irp`, per-handle state `handle`.
//!
//! The decisions only a real NT I/O manager reaches (start position,
//! disposition, role, information classes, suffix) are scull-core's
//! `nt` functions; the family files read the IRP fields and apply the
//! answers. The Wine bridge (test build only) lives in `bridge`.

use crate::ddk::*;
use crate::dev::{DevExt, Kind};
use crate::handle::{self, Flags};
use crate::irp::finish;
use crate::{access, ioctl, pipe, store};

/// Every major function lands here (DriverObject->MajorFunction[*]), at
/// PASSIVE_LEVEL in the requester's thread (a top-level driver; under Wine
/// in winedevice's one dispatch thread). Nothing here waits.
///
/// # Safety
/// Called by the I/O manager with one of our devices and a valid IRP whose
/// current stack location is ours.
pub unsafe extern "C" fn dispatch(d: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: a valid IRP owned by this dispatch routine (contract).
    let sl = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: its current stack location, ours (contract).
    let major = unsafe { (*sl).MajorFunction } as u32;
    // Held until this routine returns; refused once unload has begun
    // (Wine unloads with handles open), before the extension is touched.
    let Some(_active) = crate::rundown::enter() else {
        let st = if matches!(major, IRP_MJ_CLEANUP | IRP_MJ_CLOSE) { STATUS_SUCCESS } else { STATUS_DELETE_PENDING };
        // SAFETY: the IRP is ours (contract).
        return unsafe { finish(irp, st, 0) };
    };
    // SAFETY: one of our devices (contract), not deleted while a dispatch runs.
    let ext = unsafe { DevExt::of(d) };
    // SAFETY: as for `major`.
    let fo = unsafe { (*sl).FileObject };
    #[cfg(feature = "test-build")]
    if !matches!(major, IRP_MJ_CREATE | IRP_MJ_CLEANUP | IRP_MJ_CLOSE) {
        if let Some(st) = handle::refused(fo) {
            // SAFETY: the IRP is ours (contract).
            return unsafe { finish(irp, st, 0) };
        }
    }
    // SAFETY (every arm): an IRP of this major function in dispatch, owned
    // by this routine, with its current stack location, handed on once.
    match major {
        // SAFETY: see above.
        IRP_MJ_CREATE => unsafe { access::create(ext, irp, sl) },
        // SAFETY: see above.
        IRP_MJ_CLEANUP => unsafe { access::cleanup(ext, irp, sl) },
        // SAFETY: see above.
        IRP_MJ_CLOSE => unsafe { access::close(ext, irp, sl) },
        IRP_MJ_READ | IRP_MJ_WRITE => {
            let write = major == IRP_MJ_WRITE;
            match &ext.kind {
                Kind::Pipe(p) => {
                    let nonblock = handle::flags(fo).contains(Flags::NONBLOCK);
                    // SAFETY: see above; a buffered read or write on this pipe.
                    unsafe { pipe::transfer(p, irp, write, nonblock) }
                }
                // SAFETY: see above.
                _ => unsafe { store::read_write(ext, irp, sl, write) },
            }
        }
        // SAFETY: see above.
        IRP_MJ_DEVICE_CONTROL => unsafe { ioctl::device_control(ext, irp, sl) },
        // SAFETY: see above.
        IRP_MJ_QUERY_INFORMATION => unsafe { store::query_information(ext, irp, sl) },
        // SAFETY: see above.
        IRP_MJ_SET_INFORMATION => unsafe { store::set_information(ext, irp, sl) },
        // SAFETY: see above.
        _ => unsafe { finish(irp, STATUS_INVALID_DEVICE_REQUEST, 0) },
    }
}

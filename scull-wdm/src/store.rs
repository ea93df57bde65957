//! The scull store devices' I/O (scull0-3, scullsingle, sculluid,
//! scullwuid, scullpriv): LDD3 main.c's `scull_read`, `scull_write`,
//! `scull_llseek` and `scull_trim`, over scull-core's `Store`. NT
//! primitives: buffered I/O (`AssociatedIrp.SystemBuffer`), the FILE_OBJECT's
//! `CurrentByteOffset`, and FileStandardInformation /
//! FilePositionInformation / FileEndOfFileInformation /
//! FileAllocationInformation (GetFileSizeEx, SetEndOfFile, Windows'
//! TRUNCATE_EXISTING). The decisions are `scull_core::nt`'s.

use crate::ddk::*;
use crate::dev::{DevExt, Kind, PARAMS};
use crate::dispatch::{finish, finish_result, flags, H_WRITE};
use crate::pool;
use core::ptr;
use scull_core::nt::{self, Seekable, SetInformation};
use scull_core::store::Store;
use scull_core::Error;

/// The scullpriv device of a file (`FsContext` holds its index + 1).
pub(crate) fn priv_slot(fo: *mut FILE_OBJECT) -> Option<usize> {
    // SAFETY: as above.
    let v = unsafe { (*fo).FsContext } as usize;
    v.checked_sub(1)
}

/// Runs `f` on the store this file reads and writes.
pub(crate) fn with_store<R>(ext: &DevExt, fo: *mut FILE_OBJECT, f: impl FnOnce(&mut Store<pool::StorePool>) -> R) -> Option<R> {
    if let Some(s) = ext.store_lock() {
        return Some(f(&mut s.lock()));
    }
    if let Kind::Priv(t) = &ext.kind {
        let slot = priv_slot(fo)?;
        let mut g = t.lock();
        return g.get_mut(slot).map(|d| f(&mut d.store));
    }
    None
}

pub(crate) fn trim(ext: &DevExt, fo: *mut FILE_OBJECT) {
    let geom = PARAMS.geometry();
    let _ = with_store(ext, fo, |s| s.trim(geom));
}

/// IRP_MJ_READ / IRP_MJ_WRITE on a store device (LDD3 `scull_read` /
/// `scull_write`); PASSIVE_LEVEL (the store's KSEMAPHORE is waited on).
pub(crate) unsafe fn read_write(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION, write: bool) -> NTSTATUS {
    // SAFETY: a read/write IRP of buffered I/O in dispatch.
    unsafe {
        let fo = (*sl).FileObject;
        let len = if write { (*sl).Parameters.Write.Length } else { (*sl).Parameters.Read.Length } as usize;
        let buf = (*irp).AssociatedIrp.SystemBuffer as *mut u8;
        if len > 0 && buf.is_null() {
            return finish(irp, Error::Fault.ntstatus(), 0);
        }
        let off = if write { (*sl).Parameters.Write.ByteOffset.QuadPart } else { (*sl).Parameters.Read.ByteOffset.QuadPart };
        let synchronous = (*fo).Flags & FO_SYNCHRONOUS_IO != 0;
        let r = with_store(ext, fo, |s| -> Result<usize, Error> {
            let pos = nt::start_position(off, write, (*fo).CurrentByteOffset.QuadPart, s.size())?;
            let mut at = 0usize;
            let n = if write {
                s.write_with(pos, len, |dst| {
                    ptr::copy_nonoverlapping(buf.add(at), dst.as_mut_ptr(), dst.len());
                    at += dst.len();
                    Ok(())
                })?
            } else {
                s.read_with(pos, len, |src| {
                    ptr::copy_nonoverlapping(src.as_ptr(), buf.add(at), src.len());
                    at += src.len();
                    Ok(())
                })?
            };
            if let Some(p) = nt::next_file_pointer(synchronous, pos, n) {
                (*fo).CurrentByteOffset.QuadPart = p;
            }
            Ok(n)
        })
        .unwrap_or(Err(Error::NoDevice));
        finish_result(irp, r)
    }
}

pub(crate) fn file_size(ext: &DevExt, fo: *mut FILE_OBJECT) -> Result<u64, Error> {
    if matches!(ext.kind, Kind::Pipe(_)) {
        return Err(Error::NotSeekable);
    }
    with_store(ext, fo, |s| s.size()).ok_or(Error::NoDevice)
}

pub(crate) fn set_eof(ext: &DevExt, fo: *mut FILE_OBJECT, len: i64) -> Result<(), Error> {
    if matches!(ext.kind, Kind::Pipe(_)) {
        return Err(Error::NotSeekable);
    }
    if len < 0 {
        return Err(Error::Invalid);
    }
    with_store(ext, fo, |s| s.set_len(len as u64)).unwrap_or(Err(Error::NoDevice))
}

/// FileAllocationInformation: 0 is LDD3's trim (Windows' CreateFileW sends
/// it for TRUNCATE_EXISTING), an allocation below the data truncates it
/// (Windows' SetEndOfFile sends it after FileEndOfFileInformation), anything
/// else succeeds and changes nothing (`nt::allocation_action`). Decided and
/// applied under the store's lock.
fn set_allocation(ext: &DevExt, fo: *mut FILE_OBJECT, allocation: u64) -> Result<(), Error> {
    if matches!(ext.kind, Kind::Pipe(_)) {
        return Err(Error::NotSeekable);
    }
    let geom = PARAMS.geometry();
    with_store(ext, fo, |s| match nt::allocation_action(allocation, s.size()) {
        nt::Allocation::Trim => {
            s.trim(geom);
            Ok(())
        }
        nt::Allocation::Truncate(len) => s.set_len(len),
        nt::Allocation::Keep => Ok(()),
    })
    .unwrap_or(Err(Error::NoDevice))
}

/// What the information requests see of this file's device.
fn seekable(ext: &DevExt, fo: *mut FILE_OBJECT) -> Result<Seekable, Error> {
    match file_size(ext, fo) {
        Ok(size) => Ok(Seekable::Store { size }),
        Err(Error::NotSeekable) => Ok(Seekable::Pipe),
        Err(e) => Err(e),
    }
}

/// IRP_MJ_QUERY_INFORMATION (GetFileSizeEx, FILE_END seeks); IRQL PASSIVE_LEVEL.
pub(crate) unsafe fn query_information(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a buffered query-information IRP: the system buffer holds Length bytes.
    unsafe {
        let fo = (*sl).FileObject;
        let len = (*sl).Parameters.QueryFile.Length as usize;
        let buf = (*irp).AssociatedIrp.SystemBuffer as *mut u8;
        let class = (*sl).Parameters.QueryFile.FileInformationClass as u32;
        let dev = match seekable(ext, fo) {
            Ok(d) => d,
            Err(e) => return finish(irp, e.ntstatus(), 0),
        };
        let mut reply = [0u8; nt::STANDARD_INFO_LEN];
        match nt::query_information(class, len, dev, (*fo).CurrentByteOffset.QuadPart, &mut reply) {
            Ok(n) => {
                // n <= len was checked by `query_information`.
                ptr::copy_nonoverlapping(reply.as_ptr(), buf, n);
                finish(irp, STATUS_SUCCESS, n)
            }
            Err(st) => finish(irp, st, 0),
        }
    }
}

/// IRP_MJ_SET_INFORMATION (SetEndOfFile: FileEndOfFileInformation, then on
/// Windows FileAllocationInformation; TRUNCATE_EXISTING on Windows:
/// FileAllocationInformation 0; SetFilePointerEx where the I/O manager does
/// not keep the position); IRQL PASSIVE_LEVEL. The classes that change data
/// need a handle granted write access (STATUS_ACCESS_DENIED).
pub(crate) unsafe fn set_information(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: a buffered set-information IRP: the system buffer holds Length bytes.
    unsafe {
        let fo = (*sl).FileObject;
        let len = (*sl).Parameters.SetFile.Length as usize;
        let buf = (*irp).AssociatedIrp.SystemBuffer as *const u8;
        let input: &[u8] = if buf.is_null() { &[] } else { core::slice::from_raw_parts(buf, len) };
        let class = (*sl).Parameters.SetFile.FileInformationClass as u32;
        let dev = match seekable(ext, fo) {
            Ok(d) => d,
            Err(e) => return finish(irp, e.ntstatus(), 0),
        };
        // Only a handle granted write access changes the data (Wine, which
        // passes no security context, counts every handle as a writer).
        let write = flags(fo) & H_WRITE != 0;
        match nt::set_information(class, input, dev, write) {
            Ok(SetInformation::EndOfFile(n)) => finish_result(irp, set_eof(ext, fo, n as i64).map(|_| 0)),
            Ok(SetInformation::Allocation(n)) => finish_result(irp, set_allocation(ext, fo, n).map(|_| 0)),
            Ok(SetInformation::Position(p)) => {
                (*fo).CurrentByteOffset.QuadPart = p;
                finish(irp, STATUS_SUCCESS, 0)
            }
            Err(st) => finish(irp, st, 0),
        }
    }
}

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
use crate::handle::{self, Flags};
use crate::irp::{self, finish, finish_result};
use crate::pool;
use core::ptr;
use scull_core::nt::{self, Seekable, SetInformation};
use scull_core::store::Store;
use scull_core::Error;

/// Runs `f` on the store this file reads and writes.
pub(crate) fn with_store<R>(ext: &DevExt, fo: *mut FILE_OBJECT, f: impl FnOnce(&mut Store<pool::StorePool>) -> R) -> Option<R> {
    if let Some(s) = ext.store_lock() {
        return Some(f(&mut s.lock()));
    }
    if let Kind::Priv(t) = &ext.kind {
        let slot = handle::priv_slot(fo)?;
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
///
/// # Safety
/// A read or write IRP of buffered I/O in dispatch, owned by the caller,
/// with its stack location.
pub(crate) unsafe fn read_write(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION, write: bool) -> NTSTATUS {
    // SAFETY: the IRP's current stack location (contract), only read here.
    let sl = unsafe { &*sl };
    let fo = sl.FileObject;
    let (len, off) = if write {
        // SAFETY: a write's parameters.
        let p = unsafe { &sl.Parameters.Write };
        // SAFETY: LARGE_INTEGER: every bit pattern is a valid i64.
        (p.Length, unsafe { p.ByteOffset.QuadPart })
    } else {
        // SAFETY: a read's parameters.
        let p = unsafe { &sl.Parameters.Read };
        // SAFETY: as above.
        (p.Length, unsafe { p.ByteOffset.QuadPart })
    };
    let len = len as usize;
    // SAFETY: the IRP is ours (contract); with buffered I/O its system
    // buffer holds Length bytes, which the copies below stay within
    // (`at` + chunk <= len).
    let buf = unsafe { irp::system_buffer(irp) };
    if len > 0 && buf.is_null() {
        // SAFETY: the IRP is ours (contract).
        return unsafe { finish(irp, Error::Fault.ntstatus(), 0) };
    }
    let synchronous = handle::synchronous(fo);
    let r = with_store(ext, fo, |s| -> Result<usize, Error> {
        let pos = nt::start_position(off, write, handle::position(fo), s.size())?;
        let mut at = 0usize;
        let n = if write {
            s.write_with(pos, len, |dst| {
                // SAFETY: see `buf`.
                let from = unsafe { buf.add(at) };
                // SAFETY: see `buf`; `dst` is pool memory, not the buffer.
                unsafe { ptr::copy_nonoverlapping(from.cast_const(), dst.as_mut_ptr(), dst.len()) };
                at += dst.len();
                Ok(())
            })?
        } else {
            s.read_with(pos, len, |src| {
                // SAFETY: see `buf`.
                let to = unsafe { buf.add(at) };
                // SAFETY: see `buf`; `src` is pool memory, not the buffer.
                unsafe { ptr::copy_nonoverlapping(src.as_ptr(), to, src.len()) };
                at += src.len();
                Ok(())
            })?
        };
        if let Some(p) = nt::next_file_pointer(synchronous, pos, n) {
            handle::set_position(fo, p);
        }
        Ok(n)
    })
    .unwrap_or(Err(Error::NoDevice));
    // SAFETY: the IRP is ours (contract).
    unsafe { finish_result(irp, r) }
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

/// The file object, buffer length, information class and system buffer of
/// a query-information (`set` false) or set-information IRP.
///
/// # Safety
/// Such a buffered IRP in dispatch, owned by the caller, with its stack
/// location.
unsafe fn info_request(irp: *mut IRP, sl: *mut IO_STACK_LOCATION, set: bool) -> (*mut FILE_OBJECT, usize, u32, *mut u8) {
    // SAFETY: the IRP's current stack location (contract), only read here.
    let sl = unsafe { &*sl };
    let (len, class) = if set {
        // SAFETY: a set-information IRP's parameters (contract).
        let q = unsafe { &sl.Parameters.SetFile };
        (q.Length, q.FileInformationClass)
    } else {
        // SAFETY: a query-information IRP's parameters (contract).
        let q = unsafe { &sl.Parameters.QueryFile };
        (q.Length, q.FileInformationClass)
    };
    // SAFETY: the IRP is ours (contract): its system buffer holds Length bytes.
    let buf = unsafe { irp::system_buffer(irp) };
    // The class is u32 in the mingw bindings, i32 in wdk-sys's.
    #[allow(clippy::unnecessary_cast)]
    (sl.FileObject, len as usize, class as u32, buf)
}

/// IRP_MJ_QUERY_INFORMATION (GetFileSizeEx, FILE_END seeks); IRQL PASSIVE_LEVEL.
///
/// # Safety
/// A buffered query-information IRP in dispatch, owned by the caller, with
/// its stack location.
pub(crate) unsafe fn query_information(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: forwarded contract.
    let (fo, len, class, buf) = unsafe { info_request(irp, sl, false) };
    let dev = match seekable(ext, fo) {
        Ok(d) => d,
        // SAFETY: the IRP is ours (contract).
        Err(e) => return unsafe { finish(irp, e.ntstatus(), 0) },
    };
    let mut reply = [0u8; nt::STANDARD_INFO_LEN];
    match nt::query_information(class, len, dev, handle::position(fo), &mut reply) {
        Ok(n) => {
            // SAFETY: n <= len was checked by `query_information`; see `buf`.
            unsafe { ptr::copy_nonoverlapping(reply.as_ptr(), buf, n) };
            // SAFETY: the IRP is ours (contract).
            unsafe { finish(irp, STATUS_SUCCESS, n) }
        }
        // SAFETY: the IRP is ours (contract).
        Err(st) => unsafe { finish(irp, st, 0) },
    }
}

/// IRP_MJ_SET_INFORMATION (SetEndOfFile: FileEndOfFileInformation, then on
/// Windows FileAllocationInformation; TRUNCATE_EXISTING on Windows:
/// FileAllocationInformation 0; SetFilePointerEx where the I/O manager does
/// not keep the position); IRQL PASSIVE_LEVEL. The classes that change data
/// need a handle granted write access (STATUS_ACCESS_DENIED).
///
/// # Safety
/// A buffered set-information IRP in dispatch, owned by the caller, with
/// its stack location.
pub(crate) unsafe fn set_information(ext: &DevExt, irp: *mut IRP, sl: *mut IO_STACK_LOCATION) -> NTSTATUS {
    // SAFETY: forwarded contract.
    let (fo, len, class, buf) = unsafe { info_request(irp, sl, true) };
    // SAFETY: the system buffer holds Length bytes, not written while
    // `input` lives.
    let input: &[u8] = if buf.is_null() { &[] } else { unsafe { core::slice::from_raw_parts(buf.cast_const(), len) } };
    let dev = match seekable(ext, fo) {
        Ok(d) => d,
        // SAFETY: the IRP is ours (contract).
        Err(e) => return unsafe { finish(irp, e.ntstatus(), 0) },
    };
    // Only a handle granted write access changes the data (Wine, which
    // passes no security context, counts every handle as a writer).
    let write = handle::flags(fo).contains(Flags::WRITE);
    let r = match nt::set_information(class, input, dev, write) {
        Ok(SetInformation::EndOfFile(n)) => set_eof(ext, fo, n as i64).map(|_| 0),
        Ok(SetInformation::Allocation(n)) => set_allocation(ext, fo, n).map(|_| 0),
        Ok(SetInformation::Position(p)) => {
            handle::set_position(fo, p);
            Ok(0)
        }
        // SAFETY: the IRP is ours (contract).
        Err(st) => return unsafe { finish(irp, st, 0) },
    };
    // SAFETY: the IRP is ours (contract).
    unsafe { finish_result(irp, r) }
}

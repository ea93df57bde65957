//! The `windows` target's side: the Win32 idioms a native client uses,
//! which the real I/O manager turns into the IRPs scull.sys's native paths
//! serve (SetFilePointerEx with FILE_END -> IRP_MJ_QUERY_INFORMATION,
//! SetEndOfFile -> IRP_MJ_SET_INFORMATION, TRUNCATE_EXISTING -> the create
//! disposition). None of this runs under Wine.

use super::*;

/// The create disposition of an open: a truncating open is TRUNCATE_EXISTING
/// (FILE_OVERWRITE at the driver).
pub(super) fn disposition(o: OpenOpts) -> u32 {
    if o.truncate {
        TRUNCATE_EXISTING
    } else {
        OPEN_EXISTING
    }
}

/// SetFilePointerEx; returns the new position.
pub(super) fn seek(h: &Owned, whence: Whence, off: i64) -> Result<u64, Error> {
    let method = match whence {
        Whence::Set => FILE_BEGIN,
        Whence::Cur => FILE_CURRENT,
        Whence::End => FILE_END,
    };
    let mut new = 0i64;
    // SAFETY: a valid handle and out pointer.
    if unsafe { SetFilePointerEx(h.0, off, &mut new, method) } == 0 {
        return Err(last_error());
    }
    Ok(new as u64)
}

/// SetEndOfFile at `len`, the file pointer put back where it was.
pub(super) fn set_len(h: &Owned, len: u64) -> Result<(), Error> {
    let keep = seek(h, Whence::Cur, 0)?;
    seek(h, Whence::Set, i64::try_from(len).map_err(|_| Error::FileTooBig)?)?;
    // SAFETY: a valid handle.
    let r = if unsafe { SetEndOfFile(h.0) } == 0 { Err(last_error()) } else { Ok(()) };
    seek(h, Whence::Set, keep as i64)?;
    r
}

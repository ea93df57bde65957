//! The `wine` target's side: what Wine's I/O manager (8 and 10, measured)
//! does not deliver to a driver, and how this target works around it.
//!
//! Wine passes no create disposition, no path suffix, no file-information
//! IRPs, and a zero ByteOffset for a read without one; it returns the handle
//! before IRP_MJ_CREATE completes. So this target keeps the position itself
//! and passes it as an explicit offset (OVERLAPPED.Offset, see
//! `WinHandle::explicit`), computes SEEK_SET/CUR the way the I/O manager
//! does, and, when the loaded scull.sys is the test build, uses its bridge
//! IOCTLs (`WIN_IOCTL_OPEN_FLAGS`(`_WRITE`), `WIN_IOCTL_GET_EOF`,
//! `WIN_IOCTL_SET_EOF`), which run the same driver code as the native
//! requests. The release scull.sys has no bridge ([`has_bridge`] probes
//! once): then truncating and non-blocking opens, refused opens and the
//! file size are not expressible under Wine (`Caps::open_modes` is false
//! and the cases that need them skip with that reason).

use super::*;

static BRIDGE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether the loaded scull.sys is the test build: its bridge answers
/// `WIN_IOCTL_OPEN_FLAGS`; the release build answers ERROR_INVALID_FUNCTION.
/// Probed once per process, on scull0.
pub fn has_bridge() -> bool {
    *BRIDGE.get_or_init(|| match create_raw(Dev::Scull(0), OpenOpts::R, true, false) {
        Ok(h) => device_io_control(h.0, ioctl::WIN_IOCTL_OPEN_FLAGS, &0u32.to_le_bytes(), 0).is_ok(),
        Err(_) => false,
    })
}

pub(super) fn send_open_flags(h: &Owned, o: OpenOpts) -> Result<(), Error> {
    let mut bits = 0u32;
    if o.nonblock {
        bits |= ioctl::WIN_OPEN_NONBLOCK;
    }
    if o.truncate {
        bits |= ioctl::WIN_OPEN_TRUNCATE;
    }
    // Truncation changes data: its code carries FILE_WRITE_ACCESS.
    let code = if o.truncate { ioctl::WIN_IOCTL_OPEN_FLAGS_WRITE } else { ioctl::WIN_IOCTL_OPEN_FLAGS };
    device_io_control(h.0, code, &bits.to_le_bytes(), 0).map(drop)
}

/// The file size, through the bridge (FileStandardInformation's EndOfFile).
fn size(h: &Owned) -> Result<u64, Error> {
    let out = device_io_control(h.0, ioctl::WIN_IOCTL_GET_EOF, &[], 8)?;
    let b: [u8; 8] = out.as_slice().try_into().map_err(|_| Error::Invalid)?;
    Ok(i64::from_le_bytes(b) as u64)
}

/// What the I/O manager does for a synchronous handle; FILE_END asks the
/// driver for the size. Returns the new position.
pub(super) fn seek(h: &Owned, pos: u64, whence: Whence, off: i64) -> Result<u64, Error> {
    let size = if whence == Whence::End { size(h)? } else { 0 };
    store::seek(pos, size, whence, off)
}

/// SetEndOfFile through the bridge (FILE_WRITE_ACCESS: the handle needs write access).
pub(super) fn set_len(h: &Owned, len: u64) -> Result<(), Error> {
    device_io_control(h.0, ioctl::WIN_IOCTL_SET_EOF, &(len as i64).to_le_bytes(), 0).map(drop)
}

//! Per-handle state, kept in the FILE_OBJECT without allocation:
//! `FsContext2` holds the handle's [`Flags`], `FsContext` the scullpriv slot
//! + 1 (0: none) or, in the test build, a refused create's NTSTATUS.
//!
//! Every function takes the file object of an IRP the driver is handling
//! (in dispatch, or pended on one of its queues): the I/O manager keeps it
//! valid meanwhile, and the two fields are the driver's alone.

use crate::ddk::*;

/// The flags of one handle (a file object).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Flags(usize);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// Granted read access (counts as a pipe reader).
    pub const READ: Flags = Flags(1);
    /// Granted write access (counts as a pipe writer).
    pub const WRITE: Flags = Flags(2);
    /// Non-blocking: STATUS_CANT_WAIT instead of pending.
    pub const NONBLOCK: Flags = Flags(4);
    /// This handle holds an open of the device's policy (pipe count, single,
    /// uid, wuid) that CLOSE must release.
    pub const OWNS: Flags = Flags(8);
    /// A truncating open (CREATE_ALWAYS/TRUNCATE_EXISTING).
    pub const TRUNCATE: Flags = Flags(16);
    /// Test build: the create of this file object failed; its NTSTATUS is
    /// in FsContext ([`refused`]).
    #[cfg(feature = "test-build")]
    pub const REFUSED: Flags = Flags(32);
    /// Test build: a scullwuid create of this file object is pended (the
    /// owner's last close or a cancel completes it). Only an I/O manager
    /// that hands out the handle before IRP_MJ_CREATE completes (Wine) can
    /// send anything else meanwhile.
    #[cfg(feature = "test-build")]
    pub const WAITING: Flags = Flags(64);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with `other`'s flags set when `on`, cleared otherwise.
    pub const fn with(self, other: Flags, on: bool) -> Flags {
        if on {
            Flags(self.0 | other.0)
        } else {
            Flags(self.0 & !other.0)
        }
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl core::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, other: Flags) {
        self.0 |= other.0;
    }
}

/// The flags of `fo`.
pub(crate) fn flags(fo: *mut FILE_OBJECT) -> Flags {
    // SAFETY: a file object of an IRP the driver handles (module doc).
    Flags(unsafe { (*fo).FsContext2 } as usize)
}

/// Replaces the flags of `fo`.
pub(crate) fn set_flags(fo: *mut FILE_OBJECT, f: Flags) {
    // SAFETY: a file object of an IRP the driver handles; the field is ours.
    unsafe { (*fo).FsContext2 = f.0 as PVOID }
}

/// The scullpriv device slot `fo` holds, if any.
pub(crate) fn priv_slot(fo: *mut FILE_OBJECT) -> Option<usize> {
    // SAFETY: a file object of an IRP the driver handles (module doc).
    let v = unsafe { (*fo).FsContext } as usize;
    v.checked_sub(1)
}

/// Records the scullpriv device slot of `fo` (None: no slot).
pub(crate) fn set_priv_slot(fo: *mut FILE_OBJECT, slot: Option<usize>) {
    let v = slot.map_or(0, |s| s + 1);
    // SAFETY: a file object of an IRP the driver handles; the field is ours.
    unsafe { (*fo).FsContext = v as PVOID }
}

/// Test build: the refusal recorded on `fo` (null: none), if its create failed.
#[cfg(feature = "test-build")]
pub(crate) fn refused(fo: *mut FILE_OBJECT) -> Option<NTSTATUS> {
    if fo.is_null() || !flags(fo).contains(Flags::REFUSED) {
        return None;
    }
    // SAFETY: a file object of an IRP the driver handles (module doc).
    Some(unsafe { (*fo).FsContext } as usize as u32 as i32)
}

/// Test build: marks a file object whose create failed (see
/// [`Flags::REFUSED`]); every later request on it returns `st`. A null
/// file object is ignored.
#[cfg(feature = "test-build")]
pub(crate) fn refuse(fo: *mut FILE_OBJECT, st: NTSTATUS) {
    if fo.is_null() {
        return;
    }
    // SAFETY: the file object of a create the driver still owns (or whose
    // create it just completed); the field is ours.
    unsafe { (*fo).FsContext = st as u32 as usize as PVOID };
    set_flags(fo, Flags::REFUSED);
}

/// The file position the I/O manager keeps in `fo` (CurrentByteOffset).
pub(crate) fn position(fo: *mut FILE_OBJECT) -> i64 {
    // SAFETY: a file object of an IRP the driver handles (module doc); only
    // the field address is taken.
    let p = unsafe { &raw const (*fo).CurrentByteOffset.QuadPart };
    // SAFETY: as above; every bit pattern of LARGE_INTEGER is a valid i64.
    unsafe { p.read() }
}

/// Sets the file position of `fo`.
pub(crate) fn set_position(fo: *mut FILE_OBJECT, pos: i64) {
    // SAFETY: a file object of an IRP the driver handles (module doc); only
    // the field address is taken.
    let p = unsafe { &raw mut (*fo).CurrentByteOffset.QuadPart };
    // SAFETY: as above; the I/O manager leaves the position to the
    // dispatch routine of the request.
    unsafe { p.write(pos) };
}

/// Whether `fo` was opened for synchronous I/O (FO_SYNCHRONOUS_IO).
pub(crate) fn synchronous(fo: *mut FILE_OBJECT) -> bool {
    // SAFETY: a file object of an IRP the driver handles (module doc).
    (unsafe { (*fo).Flags }) & FO_SYNCHRONOUS_IO != 0
}

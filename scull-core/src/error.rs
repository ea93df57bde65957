//! One error type for every scull operation, and the single table that maps it
//! to Linux errno values, Windows NTSTATUS values, and the Win32 error codes
//! that user mode sees after the I/O manager translates the NTSTATUS.
//!
//! The table is part of the public ABI: the user-mode tool maps errno/Win32
//! codes back to [`Error`] with it, so every row must be unique per column.

use core::fmt;

/// Everything that can go wrong in scull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// An allocation failed. Nothing already stored was lost.
    NoMemory,
    /// A bad argument: zero/negative geometry, negative seek, bad pipe size...
    Invalid,
    /// The device is held by someone else (scullsingle, sculluid, scullpriv full).
    Busy,
    /// The operation would block and the handle is non-blocking.
    WouldBlock,
    /// Unknown ioctl command ("inappropriate ioctl for device").
    NotTty,
    /// A user buffer could not be accessed.
    Fault,
    /// The caller lacks the privilege a command needs.
    Perm,
    /// A wait was interrupted by a signal (Linux) or the request was cancelled (Windows).
    Interrupted,
    /// Seeking on a FIFO.
    NotSeekable,
    /// A position or size beyond the largest file offset scull supports.
    FileTooBig,
    /// An ioctl output/input buffer is shorter than the command needs.
    BufferTooSmall,
    /// The device is going away (unload with handles open).
    NoDevice,
}

/// One row of the mapping table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codes {
    pub error: Error,
    /// Linux errno as user space sees it (positive).
    pub errno: i32,
    /// Symbolic errno name.
    pub errno_name: &'static str,
    /// NTSTATUS a WDM driver completes the IRP with.
    pub ntstatus: i32,
    /// Symbolic NTSTATUS name.
    pub ntstatus_name: &'static str,
    /// Win32 error (GetLastError) that RtlNtStatusToDosError gives user mode.
    pub win32: u32,
}

/// `ERESTARTSYS`: what a Linux driver returns from an interrupted wait; the
/// kernel turns it into a restart or `EINTR` before user space sees it.
pub const ERESTARTSYS: i32 = 512;

const fn nt(v: u32) -> i32 {
    v as i32
}

/// The mapping table. Unique in every column.
pub const TABLE: [Codes; 12] = [
    Codes { error: Error::NoMemory, errno: 12, errno_name: "ENOMEM", ntstatus: nt(0xC000_009A), ntstatus_name: "STATUS_INSUFFICIENT_RESOURCES", win32: 1450 },
    Codes { error: Error::Invalid, errno: 22, errno_name: "EINVAL", ntstatus: nt(0xC000_000D), ntstatus_name: "STATUS_INVALID_PARAMETER", win32: 87 },
    Codes { error: Error::Busy, errno: 16, errno_name: "EBUSY", ntstatus: nt(0xC000_0043), ntstatus_name: "STATUS_SHARING_VIOLATION", win32: 32 },
    Codes { error: Error::WouldBlock, errno: 11, errno_name: "EAGAIN", ntstatus: nt(0xC000_00D8), ntstatus_name: "STATUS_CANT_WAIT", win32: 554 },
    Codes { error: Error::NotTty, errno: 25, errno_name: "ENOTTY", ntstatus: nt(0xC000_0010), ntstatus_name: "STATUS_INVALID_DEVICE_REQUEST", win32: 1 },
    Codes { error: Error::Fault, errno: 14, errno_name: "EFAULT", ntstatus: nt(0xC000_00E8), ntstatus_name: "STATUS_INVALID_USER_BUFFER", win32: 1784 },
    Codes { error: Error::Perm, errno: 1, errno_name: "EPERM", ntstatus: nt(0xC000_0022), ntstatus_name: "STATUS_ACCESS_DENIED", win32: 5 },
    Codes { error: Error::Interrupted, errno: 4, errno_name: "EINTR", ntstatus: nt(0xC000_0120), ntstatus_name: "STATUS_CANCELLED", win32: 995 },
    Codes { error: Error::NotSeekable, errno: 29, errno_name: "ESPIPE", ntstatus: nt(0xC000_00BB), ntstatus_name: "STATUS_NOT_SUPPORTED", win32: 50 },
    Codes { error: Error::FileTooBig, errno: 27, errno_name: "EFBIG", ntstatus: nt(0xC000_0904), ntstatus_name: "STATUS_FILE_TOO_LARGE", win32: 223 },
    Codes { error: Error::BufferTooSmall, errno: 34, errno_name: "ERANGE", ntstatus: nt(0xC000_0023), ntstatus_name: "STATUS_BUFFER_TOO_SMALL", win32: 122 },
    Codes { error: Error::NoDevice, errno: 19, errno_name: "ENODEV", ntstatus: nt(0xC000_000E), ntstatus_name: "STATUS_NO_SUCH_DEVICE", win32: 433 },
];

impl Error {
    /// Every variant, in table order.
    pub const ALL: [Error; 12] = {
        let mut all = [Error::NoMemory; 12];
        let mut i = 0;
        while i < TABLE.len() {
            all[i] = TABLE[i].error;
            i += 1;
        }
        all
    };

    /// This error's row of [`TABLE`].
    pub const fn codes(self) -> &'static Codes {
        let mut i = 0;
        while i < TABLE.len() {
            if TABLE[i].error as u8 == self as u8 {
                return &TABLE[i];
            }
            i += 1;
        }
        // Every variant has a row; `table_is_complete_and_unique` tests it.
        &TABLE[0]
    }

    /// errno as user space sees it.
    pub const fn errno(self) -> i32 {
        self.codes().errno
    }

    /// What a Linux driver returns (negated by the caller): like [`Error::errno`],
    /// except that an interrupted wait is `ERESTARTSYS`.
    pub const fn kernel_errno(self) -> i32 {
        match self {
            Error::Interrupted => ERESTARTSYS,
            _ => self.errno(),
        }
    }

    /// The NTSTATUS a WDM driver completes the IRP with.
    pub const fn ntstatus(self) -> i32 {
        self.codes().ntstatus
    }

    /// The Win32 error code user mode reads from GetLastError.
    pub const fn win32(self) -> u32 {
        self.codes().win32
    }

    /// A short stable name, e.g. `"NoMemory"`.
    pub const fn name(self) -> &'static str {
        match self {
            Error::NoMemory => "NoMemory",
            Error::Invalid => "Invalid",
            Error::Busy => "Busy",
            Error::WouldBlock => "WouldBlock",
            Error::NotTty => "NotTty",
            Error::Fault => "Fault",
            Error::Perm => "Perm",
            Error::Interrupted => "Interrupted",
            Error::NotSeekable => "NotSeekable",
            Error::FileTooBig => "FileTooBig",
            Error::BufferTooSmall => "BufferTooSmall",
            Error::NoDevice => "NoDevice",
        }
    }

    /// Inverse of [`Error::errno`] (`ERESTARTSYS` also maps to `Interrupted`).
    pub fn from_errno(errno: i32) -> Option<Error> {
        if errno == ERESTARTSYS {
            return Some(Error::Interrupted);
        }
        TABLE.iter().find(|c| c.errno == errno).map(|c| c.error)
    }

    /// Inverse of [`Error::ntstatus`].
    pub fn from_ntstatus(status: i32) -> Option<Error> {
        TABLE.iter().find(|c| c.ntstatus == status).map(|c| c.error)
    }

    /// Inverse of [`Error::win32`].
    pub fn from_win32(code: u32) -> Option<Error> {
        TABLE.iter().find(|c| c.win32 == code).map(|c| c.error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.codes();
        write!(f, "{} ({} / {})", self.name(), c.errno_name, c.ntstatus_name)
    }
}

/// Result alias used throughout the core.
pub type Result<T> = core::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete_and_unique() {
        for (i, a) in TABLE.iter().enumerate() {
            assert_eq!(a.error.codes(), a, "codes() finds its own row");
            for b in &TABLE[i + 1..] {
                assert_ne!(a.error, b.error);
                assert_ne!(a.errno, b.errno, "{:?}/{:?}", a.error, b.error);
                assert_ne!(a.ntstatus, b.ntstatus, "{:?}/{:?}", a.error, b.error);
                assert_ne!(a.win32, b.win32, "{:?}/{:?}", a.error, b.error);
            }
            // NTSTATUS error severity: the top two bits are 11.
            assert_eq!((a.ntstatus as u32) >> 30, 3, "{:?} must be an error-severity NTSTATUS", a.error);
        }
        assert_eq!(Error::ALL.len(), TABLE.len());
    }

    #[test]
    fn round_trips() {
        for e in Error::ALL {
            assert_eq!(Error::from_errno(e.errno()), Some(e));
            assert_eq!(Error::from_errno(e.kernel_errno()), Some(e));
            assert_eq!(Error::from_ntstatus(e.ntstatus()), Some(e));
            assert_eq!(Error::from_win32(e.win32()), Some(e));
        }
        assert_eq!(Error::from_errno(0), None);
        assert_eq!(Error::from_ntstatus(0), None);
        assert_eq!(Error::Interrupted.kernel_errno(), ERESTARTSYS);
        assert_eq!(Error::NoMemory.ntstatus(), 0xC000_009Au32 as i32);
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn well_known_codes() {
        assert_eq!(Error::Perm.win32(), 5, "ERROR_ACCESS_DENIED");
        assert_eq!(Error::Invalid.win32(), 87, "ERROR_INVALID_PARAMETER");
        assert_eq!(Error::Interrupted.win32(), 995, "ERROR_OPERATION_ABORTED");
        assert_eq!(Error::NotTty.errno(), 25);
        assert_eq!(Error::WouldBlock.errno(), 11);
        assert_eq!(Error::Busy.ntstatus(), 0xC000_0043u32 as i32);
    }

    #[test]
    fn display_names_both_kernels() {
        let s = Error::NoMemory.to_string();
        assert!(s.contains("NoMemory") && s.contains("ENOMEM") && s.contains("STATUS_INSUFFICIENT_RESOURCES"), "{s}");
    }
}

//! The ioctl ABI: command numbers, their Linux and Windows encodings, argument
//! conventions, privilege, and semantics. This module is the public ABI; the
//! user-mode tool uses it too.
//!
//! | nr | name         | Linux (`'k'`)       | argument in     | result out       | privileged | Windows access |
//! |----|--------------|---------------------|-----------------|------------------|------------|----------------|
//! | 0  | `RESET`      | `_IO(k,0)`          | -               | -                | no (LDD3)  | write          |
//! | 1  | `SQUANTUM`   | `_IOW(k,1,int)`     | pointer         | -                | yes        | write          |
//! | 2  | `SQSET`      | `_IOW(k,2,int)`     | pointer         | -                | yes        | write          |
//! | 3  | `TQUANTUM`   | `_IO(k,3)`          | value           | -                | yes        | write          |
//! | 4  | `TQSET`      | `_IO(k,4)`          | value           | -                | yes        | write          |
//! | 5  | `GQUANTUM`   | `_IOR(k,5,int)`     | -               | pointer          | no         | any            |
//! | 6  | `GQSET`      | `_IOR(k,6,int)`     | -               | pointer          | no         | any            |
//! | 7  | `QQUANTUM`   | `_IO(k,7)`          | -               | return value     | no         | any            |
//! | 8  | `QQSET`      | `_IO(k,8)`          | -               | return value     | no         | any            |
//! | 9  | `XQUANTUM`   | `_IOWR(k,9,int)`    | pointer         | same pointer     | yes        | read + write   |
//! | 10 | `XQSET`      | `_IOWR(k,10,int)`   | pointer         | same pointer     | yes        | read + write   |
//! | 11 | `HQUANTUM`   | `_IO(k,11)`         | value           | return value     | yes        | read + write   |
//! | 12 | `HQSET`      | `_IO(k,12)`         | value           | return value     | yes        | read + write   |
//! | 13 | `P_IOCTSIZE` | `_IO(k,13)`         | value           | -                | no (LDD3)  | write          |
//! | 14 | `P_IOCQSIZE` | `_IO(k,14)`         | -               | return value     | no         | any            |
//! | 15 | `STATS`      | `_IOR(k,15,char[4096])` | -           | report text      | no         | any            |
//!
//! Windows: `CTL_CODE(0x8000, 0x800 + nr, METHOD_BUFFERED, access)`, where
//! `access` ([`Cmd::windows_access`]) says what the command does:
//! FILE_WRITE_ACCESS for a command that changes state, FILE_READ_ACCESS |
//! FILE_WRITE_ACCESS for one that also hands the old value back, and
//! FILE_ANY_ACCESS for one that only reads. The I/O manager checks it
//! against the handle's granted access (FILE_WRITE_DATA, FILE_READ_DATA)
//! before the driver sees the request (STATUS_ACCESS_DENIED), so a
//! read-only handle cannot RESET or resize the pipes. The privilege check
//! is LDD3's, on top: RESET and P_IOCTSIZE need no privilege, as in LDD3.
//! Values are 32-bit signed integers in the system buffer: a command that takes
//! an argument reads it from the first 4 bytes of the input buffer, a command
//! that produces one writes 4 bytes to the output buffer. So on Windows S≡T,
//! G≡Q and X≡H. `STATS` writes the report text (no NUL) to the output buffer.
//! Short buffers are `BufferTooSmall`.
//!
//! Linux `STATS` writes at most 4096 bytes (NUL-terminated, truncated if need
//! be) and returns the text length.
//!
//! Privilege: `capable(CAP_SYS_ADMIN)` on Linux; on Windows the caller's token
//! must be a member of BUILTIN\Administrators. Refusal is `Perm`.
//! Unknown codes are `NotTty` (ENOTTY / STATUS_INVALID_DEVICE_REQUEST).
//!
//! Semantics act on the global defaults ([`Params`]) exactly as in LDD3: a
//! device adopts a new geometry when it is next trimmed; a pipe adopts a new
//! buffer size when its buffer is next allocated. Values are validated
//! (LDD3 accepted a zero quantum and crashed on the next write).

use crate::error::{Error, Result};
use crate::geometry::Params;

/// LDD3's magic number.
pub const MAGIC: u8 = b'k';
/// Highest command number.
pub const MAXNR: u32 = 15;
/// Bytes of report text the Linux `STATS` command can return.
pub const LINUX_STATS_SIZE: u32 = 4096;

/// Windows custom device type (0x8000-0xFFFF are for vendors).
pub const WIN_DEVICE_TYPE: u32 = 0x8000;
/// Windows function code of command 0 (0x800-0xFFF are for vendors).
pub const WIN_FUNCTION_BASE: u32 = 0x800;
/// `METHOD_BUFFERED`.
pub const WIN_METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS`.
pub const WIN_FILE_ANY_ACCESS: u32 = 0;
/// `FILE_READ_ACCESS` (the I/O manager checks FILE_READ_DATA on the handle).
pub const WIN_FILE_READ_ACCESS: u32 = 1;
/// `FILE_WRITE_ACCESS` (the I/O manager checks FILE_WRITE_DATA on the handle).
pub const WIN_FILE_WRITE_ACCESS: u32 = 2;

/// Windows `CTL_CODE` macro.
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

// Linux <asm-generic/ioctl.h>
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Linux `_IOC` macro.
pub const fn ioc(dir: u32, ty: u8, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | ((ty as u32) << 8) | nr
}

/// How a command takes its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgIn {
    None,
    /// The ioctl argument itself is the value.
    Value,
    /// The ioctl argument points at an `int`.
    Pointer,
}

/// How a command returns its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgOut {
    None,
    /// As the (non-negative) return value of ioctl.
    Return,
    /// Through the `int` the argument points at.
    Pointer,
    /// Report text (STATS).
    Text,
}

/// The 16 scull commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmd {
    Reset = 0,
    SQuantum = 1,
    SQset = 2,
    TQuantum = 3,
    TQset = 4,
    GQuantum = 5,
    GQset = 6,
    QQuantum = 7,
    QQset = 8,
    XQuantum = 9,
    XQset = 10,
    HQuantum = 11,
    HQset = 12,
    PTSize = 13,
    PQSize = 14,
    Stats = 15,
}

impl Cmd {
    pub const ALL: [Cmd; 16] = [
        Cmd::Reset,
        Cmd::SQuantum,
        Cmd::SQset,
        Cmd::TQuantum,
        Cmd::TQset,
        Cmd::GQuantum,
        Cmd::GQset,
        Cmd::QQuantum,
        Cmd::QQset,
        Cmd::XQuantum,
        Cmd::XQset,
        Cmd::HQuantum,
        Cmd::HQset,
        Cmd::PTSize,
        Cmd::PQSize,
        Cmd::Stats,
    ];

    /// The command number.
    pub const fn nr(self) -> u32 {
        self as u32
    }

    pub fn from_nr(nr: u32) -> Option<Cmd> {
        Cmd::ALL.get(nr as usize).copied()
    }

    /// LDD3's macro name.
    pub const fn name(self) -> &'static str {
        match self {
            Cmd::Reset => "SCULL_IOCRESET",
            Cmd::SQuantum => "SCULL_IOCSQUANTUM",
            Cmd::SQset => "SCULL_IOCSQSET",
            Cmd::TQuantum => "SCULL_IOCTQUANTUM",
            Cmd::TQset => "SCULL_IOCTQSET",
            Cmd::GQuantum => "SCULL_IOCGQUANTUM",
            Cmd::GQset => "SCULL_IOCGQSET",
            Cmd::QQuantum => "SCULL_IOCQQUANTUM",
            Cmd::QQset => "SCULL_IOCQQSET",
            Cmd::XQuantum => "SCULL_IOCXQUANTUM",
            Cmd::XQset => "SCULL_IOCXQSET",
            Cmd::HQuantum => "SCULL_IOCHQUANTUM",
            Cmd::HQset => "SCULL_IOCHQSET",
            Cmd::PTSize => "SCULL_P_IOCTSIZE",
            Cmd::PQSize => "SCULL_P_IOCQSIZE",
            Cmd::Stats => "SCULL_IOCSTATS",
        }
    }

    /// Short name for the command line (`reset`, `squantum`, ... `stats`).
    pub const fn short(self) -> &'static str {
        match self {
            Cmd::Reset => "reset",
            Cmd::SQuantum => "squantum",
            Cmd::SQset => "sqset",
            Cmd::TQuantum => "tquantum",
            Cmd::TQset => "tqset",
            Cmd::GQuantum => "gquantum",
            Cmd::GQset => "gqset",
            Cmd::QQuantum => "qquantum",
            Cmd::QQset => "qqset",
            Cmd::XQuantum => "xquantum",
            Cmd::XQset => "xqset",
            Cmd::HQuantum => "hquantum",
            Cmd::HQset => "hqset",
            Cmd::PTSize => "ptsize",
            Cmd::PQSize => "pqsize",
            Cmd::Stats => "stats",
        }
    }

    /// Parses [`Cmd::short`] or [`Cmd::name`] (case-insensitive).
    pub fn parse(s: &str) -> Option<Cmd> {
        Cmd::ALL.into_iter().find(|c| c.short().eq_ignore_ascii_case(s) || c.name().eq_ignore_ascii_case(s))
    }

    pub const fn arg_in(self) -> ArgIn {
        match self {
            Cmd::SQuantum | Cmd::SQset | Cmd::XQuantum | Cmd::XQset => ArgIn::Pointer,
            Cmd::TQuantum | Cmd::TQset | Cmd::HQuantum | Cmd::HQset | Cmd::PTSize => ArgIn::Value,
            _ => ArgIn::None,
        }
    }

    pub const fn arg_out(self) -> ArgOut {
        match self {
            Cmd::GQuantum | Cmd::GQset | Cmd::XQuantum | Cmd::XQset => ArgOut::Pointer,
            Cmd::QQuantum | Cmd::QQset | Cmd::HQuantum | Cmd::HQset | Cmd::PQSize => ArgOut::Return,
            Cmd::Stats => ArgOut::Text,
            _ => ArgOut::None,
        }
    }

    /// Whether the command changes state (the global defaults): RESET,
    /// the S/T/X/H setters and P_IOCTSIZE.
    pub const fn changes_state(self) -> bool {
        matches!(
            self,
            Cmd::Reset
                | Cmd::SQuantum
                | Cmd::SQset
                | Cmd::TQuantum
                | Cmd::TQset
                | Cmd::XQuantum
                | Cmd::XQset
                | Cmd::HQuantum
                | Cmd::HQset
                | Cmd::PTSize
        )
    }

    /// The required access of the Windows code (CTL_CODE's access field),
    /// which the I/O manager checks against the handle's granted access
    /// before the driver sees the request: FILE_ANY_ACCESS for a command
    /// that only reads the parameters.
    pub const fn windows_access(self) -> u32 {
        match self {
            // Change the parameters and hand back the old value.
            Cmd::XQuantum | Cmd::XQset | Cmd::HQuantum | Cmd::HQset => WIN_FILE_READ_ACCESS | WIN_FILE_WRITE_ACCESS,
            Cmd::Reset | Cmd::SQuantum | Cmd::SQset | Cmd::TQuantum | Cmd::TQset | Cmd::PTSize => WIN_FILE_WRITE_ACCESS,
            Cmd::GQuantum | Cmd::GQset | Cmd::QQuantum | Cmd::QQset | Cmd::PQSize | Cmd::Stats => WIN_FILE_ANY_ACCESS,
        }
    }

    /// Whether LDD3 checks `capable(CAP_SYS_ADMIN)` for this command.
    pub const fn needs_privilege(self) -> bool {
        matches!(
            self,
            Cmd::SQuantum | Cmd::SQset | Cmd::TQuantum | Cmd::TQset | Cmd::XQuantum | Cmd::XQset | Cmd::HQuantum | Cmd::HQset
        )
    }

    /// The Linux ioctl number.
    pub const fn linux_code(self) -> u32 {
        let int = core::mem::size_of::<i32>() as u32;
        match self {
            Cmd::SQuantum | Cmd::SQset => ioc(IOC_WRITE, MAGIC, self.nr(), int),
            Cmd::GQuantum | Cmd::GQset => ioc(IOC_READ, MAGIC, self.nr(), int),
            Cmd::XQuantum | Cmd::XQset => ioc(IOC_READ | IOC_WRITE, MAGIC, self.nr(), int),
            Cmd::Stats => ioc(IOC_READ, MAGIC, self.nr(), LINUX_STATS_SIZE),
            _ => ioc(IOC_NONE, MAGIC, self.nr(), 0),
        }
    }

    /// The Windows IOCTL code.
    pub const fn windows_code(self) -> u32 {
        ctl_code(WIN_DEVICE_TYPE, WIN_FUNCTION_BASE + self.nr(), WIN_METHOD_BUFFERED, self.windows_access())
    }

    /// Decodes a Linux ioctl number. Anything but an exact match is `NotTty`.
    pub fn from_linux_code(code: u32) -> Result<Cmd> {
        let nr = code & 0xff;
        let ty = ((code >> 8) & 0xff) as u8;
        if ty != MAGIC || nr > MAXNR {
            return Err(Error::NotTty);
        }
        match Cmd::from_nr(nr) {
            Some(c) if c.linux_code() == code => Ok(c),
            _ => Err(Error::NotTty),
        }
    }

    /// Decodes a Windows IOCTL code. Anything but an exact match is `NotTty`.
    pub fn from_windows_code(code: u32) -> Result<Cmd> {
        let function = (code >> 2) & 0xfff;
        match function.checked_sub(WIN_FUNCTION_BASE).and_then(Cmd::from_nr) {
            Some(c) if c.windows_code() == code => Ok(c),
            _ => Err(Error::NotTty),
        }
    }

    /// Bytes of input buffer the Windows IOCTL needs.
    pub const fn windows_in_len(self) -> usize {
        match self.arg_in() {
            ArgIn::None => 0,
            _ => 4,
        }
    }

    /// Bytes of output buffer the Windows IOCTL needs (`STATS`: at least 1).
    pub const fn windows_out_len(self) -> usize {
        match self.arg_out() {
            ArgOut::None => 0,
            ArgOut::Text => 1,
            _ => 4,
        }
    }
}

/// Runs a non-`STATS` command against the global defaults.
///
/// `value` is the argument (ignored by commands that take none); the result is
/// the value to hand back (return value or pointer), 0 for commands that
/// produce nothing. Privilege is checked before anything else, as in LDD3, and
/// a rejected value changes nothing. `STATS` is the driver's to format: passing
/// it here is `Invalid`.
pub fn execute(params: &Params, cmd: Cmd, value: i32, privileged: bool) -> Result<i32> {
    if cmd.needs_privilege() && !privileged {
        return Err(Error::Perm);
    }
    let v = value as i64;
    match cmd {
        Cmd::Reset => {
            params.reset();
            Ok(0)
        }
        Cmd::SQuantum | Cmd::TQuantum => params.set_quantum(v).map(|_| 0),
        Cmd::SQset | Cmd::TQset => params.set_qset(v).map(|_| 0),
        Cmd::GQuantum | Cmd::QQuantum => Ok(params.quantum()),
        Cmd::GQset | Cmd::QQset => Ok(params.qset()),
        Cmd::XQuantum | Cmd::HQuantum => params.set_quantum(v),
        Cmd::XQset | Cmd::HQset => params.set_qset(v),
        Cmd::PTSize => params.set_p_buffer(v).map(|_| 0),
        Cmd::PQSize => Ok(params.p_buffer()),
        Cmd::Stats => Err(Error::Invalid),
    }
}

/// The suffix of a Windows device path that opens a handle in non-blocking
/// mode, the counterpart of `O_NONBLOCK`: `\\.\ScullPipe0\nonblock`.
pub const WIN_NONBLOCK_SUFFIX: &str = "nonblock";

/// Windows only, **test build** (`cargo xtask wdm --test-build`): a bridge
/// for I/O managers that deliver to a driver neither the create
/// disposition, nor a path suffix, nor file-information IRPs (Wine 8 and 10
/// deliver none of them: `Parameters.Create.Options` lacks the disposition,
/// `\\.\Dev\suffix` fails before the driver, and
/// NtQuery/SetInformationFile return STATUS_OBJECT_TYPE_MISMATCH). Each runs
/// the same driver code as the native request. They are outside the scull
/// command range, so [`Cmd::from_windows_code`] rejects them, and the
/// release scull.sys answers every one STATUS_INVALID_DEVICE_REQUEST.
///
/// A bridge call that changes data carries FILE_WRITE_ACCESS in its code,
/// so the I/O manager refuses it (STATUS_ACCESS_DENIED) on a handle not
/// granted FILE_WRITE_DATA, as it refuses SetEndOfFile there.
///
/// `WIN_IOCTL_OPEN_FLAGS` (FILE_ANY_ACCESS): input a `u32` of
/// [`WIN_OPEN_NONBLOCK`], applied to the handle right after CreateFile (the
/// `\nonblock` suffix). [`WIN_OPEN_TRUNCATE`] is refused on this code
/// (STATUS_ACCESS_DENIED): use [`WIN_IOCTL_OPEN_FLAGS_WRITE`].
pub const WIN_IOCTL_OPEN_FLAGS: u32 = ctl_code(WIN_DEVICE_TYPE, WIN_FUNCTION_BASE + 0x40, WIN_METHOD_BUFFERED, WIN_FILE_ANY_ACCESS);
/// The same call with FILE_WRITE_ACCESS: [`WIN_OPEN_TRUNCATE`] allowed
/// (CREATE_ALWAYS/TRUNCATE_EXISTING).
pub const WIN_IOCTL_OPEN_FLAGS_WRITE: u32 = ctl_code(WIN_DEVICE_TYPE, WIN_FUNCTION_BASE + 0x40, WIN_METHOD_BUFFERED, WIN_FILE_WRITE_ACCESS);
/// Output an `i64` (little endian): FileStandardInformation's EndOfFile.
pub const WIN_IOCTL_GET_EOF: u32 = ctl_code(WIN_DEVICE_TYPE, WIN_FUNCTION_BASE + 0x41, WIN_METHOD_BUFFERED, WIN_FILE_ANY_ACCESS);
/// Input an `i64` (little endian): FileEndOfFileInformation (SetEndOfFile).
/// FILE_WRITE_ACCESS.
pub const WIN_IOCTL_SET_EOF: u32 = ctl_code(WIN_DEVICE_TYPE, WIN_FUNCTION_BASE + 0x42, WIN_METHOD_BUFFERED, WIN_FILE_WRITE_ACCESS);
/// Every bridge code (what the release build must refuse).
pub const WIN_BRIDGE_CODES: [u32; 4] = [WIN_IOCTL_OPEN_FLAGS, WIN_IOCTL_OPEN_FLAGS_WRITE, WIN_IOCTL_GET_EOF, WIN_IOCTL_SET_EOF];
/// [`WIN_IOCTL_OPEN_FLAGS`] bit: non-blocking handle.
pub const WIN_OPEN_NONBLOCK: u32 = 1;
/// [`WIN_IOCTL_OPEN_FLAGS_WRITE`] bit: trim now, as a truncating open does.
pub const WIN_OPEN_TRUNCATE: u32 = 2;

/// The access field of a CTL_CODE (bits 14-15).
pub const fn ctl_access(code: u32) -> u32 {
    (code >> 14) & 3
}

/// Decodes an OPEN_FLAGS bridge call: `(nonblock, truncate)`. Truncation
/// needs the FILE_WRITE_ACCESS code, which the I/O manager only delivers
/// for a handle granted FILE_WRITE_DATA; on the FILE_ANY_ACCESS code it is
/// `Perm` (STATUS_ACCESS_DENIED), so a read-only handle cannot trim.
pub fn open_flags(code: u32, input: &[u8]) -> Result<(bool, bool)> {
    let b: [u8; 4] = input.get(..4).and_then(|b| b.try_into().ok()).ok_or(Error::BufferTooSmall)?;
    let v = u32::from_le_bytes(b);
    if v & !(WIN_OPEN_NONBLOCK | WIN_OPEN_TRUNCATE) != 0 {
        return Err(Error::Invalid);
    }
    let truncate = v & WIN_OPEN_TRUNCATE != 0;
    if truncate && ctl_access(code) & WIN_FILE_WRITE_ACCESS == 0 {
        return Err(Error::Perm);
    }
    Ok((v & WIN_OPEN_NONBLOCK != 0, truncate))
}

/// Windows only, test builds of the harness: scull.sys's test IOCTL. It exists
/// only while the driver was loaded with `scull_test_identity=1` or
/// `scull_fail_at` (otherwise it is an unknown code). Input: [`TestRequest`]
/// (8 bytes); output: [`TestReport`] (32 bytes).
pub const WIN_IOCTL_TEST: u32 = ctl_code(WIN_DEVICE_TYPE, WIN_FUNCTION_BASE + 0x60, WIN_METHOD_BUFFERED, WIN_FILE_ANY_ACCESS);
/// Report only.
pub const TEST_OP_QUERY: u32 = 0;
/// Test identity mode: the calling process gives up its administrator override.
pub const TEST_OP_DEMOTE: u32 = 1;
/// Fault injection: fail the arg-th pool allocation from now on (0 disarms).
pub const TEST_OP_FAIL_AT: u32 = 2;
/// [`TestReport::modes`] bit: test identity mode is on.
pub const TEST_MODE_IDENTITY: u32 = 1;
/// [`TestReport::modes`] bit: fault injection is on.
pub const TEST_MODE_FAULTS: u32 = 2;

/// The input of [`WIN_IOCTL_TEST`]: `op: u32, arg: i32`, little endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRequest {
    pub op: u32,
    pub arg: i32,
}

impl TestRequest {
    pub const LEN: usize = 8;

    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.op.to_le_bytes());
        b[4..].copy_from_slice(&self.arg.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<TestRequest> {
        if b.len() < Self::LEN {
            return Err(Error::BufferTooSmall);
        }
        Ok(TestRequest { op: u32::from_le_bytes([b[0], b[1], b[2], b[3]]), arg: i32::from_le_bytes([b[4], b[5], b[6], b[7]]) })
    }
}

/// The output of [`WIN_IOCTL_TEST`]: modes u32, 4 bytes of padding, then
/// outstanding 'lucS' blocks i64, allocations u64 and injected failures u64,
/// little endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestReport {
    pub modes: u32,
    pub outstanding: i64,
    pub allocs: u64,
    pub injected: u64,
}

impl TestReport {
    pub const LEN: usize = 32;

    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&self.modes.to_le_bytes());
        b[8..16].copy_from_slice(&self.outstanding.to_le_bytes());
        b[16..24].copy_from_slice(&self.allocs.to_le_bytes());
        b[24..32].copy_from_slice(&self.injected.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<TestReport> {
        if b.len() != Self::LEN {
            return Err(Error::Invalid);
        }
        let u = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        Ok(TestReport { modes: u32::from_le_bytes([b[0], b[1], b[2], b[3]]), outstanding: u(8) as i64, allocs: u(16), injected: u(24) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_codes_match_ldd3() {
        // Values of the C macros on x86_64 (computed from <asm-generic/ioctl.h>).
        assert_eq!(Cmd::Reset.linux_code(), 0x6b00);
        assert_eq!(Cmd::SQuantum.linux_code(), 0x4004_6b01);
        assert_eq!(Cmd::GQuantum.linux_code(), 0x8004_6b05);
        assert_eq!(Cmd::XQset.linux_code(), 0xc004_6b0a);
        assert_eq!(Cmd::HQset.linux_code(), 0x6b0c);
        assert_eq!(Cmd::PQSize.linux_code(), 0x6b0e);
        assert_eq!(Cmd::Stats.linux_code(), 0x9000_6b0f);
    }

    #[test]
    fn windows_codes() {
        // CTL_CODE(0x8000, 0x800 + nr, METHOD_BUFFERED, access).
        assert_eq!(Cmd::Reset.windows_code(), 0x8000_a000, "FILE_WRITE_ACCESS");
        assert_eq!(Cmd::SQuantum.windows_code(), 0x8000_a004, "FILE_WRITE_ACCESS");
        assert_eq!(Cmd::GQuantum.windows_code(), 0x8000_2014, "FILE_ANY_ACCESS");
        assert_eq!(Cmd::XQuantum.windows_code(), 0x8000_e024, "FILE_READ_ACCESS | FILE_WRITE_ACCESS");
        assert_eq!(Cmd::PTSize.windows_code(), 0x8000_a034, "FILE_WRITE_ACCESS");
        assert_eq!(Cmd::Stats.windows_code(), 0x8000_203c, "FILE_ANY_ACCESS");
        for c in Cmd::ALL {
            assert_eq!(Cmd::from_windows_code(c.windows_code()), Ok(c));
            assert_eq!(Cmd::from_linux_code(c.linux_code()), Ok(c));
            assert_eq!(Cmd::parse(c.short()), Some(c));
            assert_eq!(Cmd::parse(c.name()), Some(c));
        }
    }

    #[test]
    fn neighbours_of_valid_codes_are_not_tty() {
        for c in Cmd::ALL {
            for delta in [1u32, 2, 3] {
                // Wrong method / access bits.
                assert_eq!(Cmd::from_windows_code(c.windows_code() ^ delta), Err(Error::NotTty));
            }
            assert_eq!(Cmd::from_windows_code(c.windows_code() ^ (1 << 14)), Err(Error::NotTty));
            assert_eq!(Cmd::from_windows_code(c.windows_code() ^ (1 << 16)), Err(Error::NotTty));
            // Wrong direction or size on Linux.
            assert_eq!(Cmd::from_linux_code(c.linux_code() ^ (1 << 30)), Err(Error::NotTty));
            assert_eq!(Cmd::from_linux_code(c.linux_code() ^ (1 << 17)), Err(Error::NotTty));
            assert_eq!(Cmd::from_linux_code(c.linux_code() ^ (1 << 8)), Err(Error::NotTty));
        }
        assert_eq!(Cmd::from_linux_code(ioc(0, MAGIC, 16, 0)), Err(Error::NotTty));
        assert_eq!(Cmd::from_windows_code(Cmd::Stats.windows_code() + 4), Err(Error::NotTty));
        assert_eq!(Cmd::from_windows_code(ctl_code(0x8000, 0x7ff, 0, 0)), Err(Error::NotTty));
        assert_eq!(Cmd::from_windows_code(0), Err(Error::NotTty));
        assert_eq!(WIN_IOCTL_TEST, ctl_code(0x8000, 0x860, 0, 0));
        let r = TestReport { modes: 3, outstanding: -1, allocs: 7, injected: 2 };
        assert_eq!(TestReport::decode(&r.encode()), Ok(r));
        assert_eq!(TestReport::decode(&[0u8; 31]), Err(Error::Invalid));
        let q = TestRequest { op: TEST_OP_FAIL_AT, arg: -3 };
        assert_eq!(TestRequest::decode(&q.encode()), Ok(q));
        assert_eq!(TestRequest::decode(&[0u8; 7]), Err(Error::BufferTooSmall));
        for code in WIN_BRIDGE_CODES.into_iter().chain([WIN_IOCTL_TEST]) {
            assert_eq!(Cmd::from_windows_code(code), Err(Error::NotTty));
        }
        assert_eq!(Cmd::from_linux_code(0), Err(Error::NotTty));
        assert_eq!(Cmd::from_nr(16), None);
        assert_eq!(Cmd::parse("bogus"), None);
    }

    #[test]
    fn bridge_calls_that_change_data_need_write_access() {
        // "Defining I/O Control Codes" (learn.microsoft.com): the I/O manager
        // sends an IOCTL whose RequiredAccess is FILE_WRITE_ACCESS only for a
        // handle opened with FILE_WRITE_DATA.
        assert_eq!(ctl_access(WIN_IOCTL_SET_EOF), WIN_FILE_WRITE_ACCESS);
        assert_eq!(ctl_access(WIN_IOCTL_OPEN_FLAGS_WRITE), WIN_FILE_WRITE_ACCESS);
        assert_eq!(ctl_access(WIN_IOCTL_OPEN_FLAGS), WIN_FILE_ANY_ACCESS);
        assert_eq!(ctl_access(WIN_IOCTL_GET_EOF), WIN_FILE_ANY_ACCESS);
        let t = WIN_OPEN_TRUNCATE.to_le_bytes();
        assert_eq!(open_flags(WIN_IOCTL_OPEN_FLAGS, &t), Err(Error::Perm));
        assert_eq!(open_flags(WIN_IOCTL_OPEN_FLAGS_WRITE, &t), Ok((false, true)));
        assert_eq!(open_flags(WIN_IOCTL_OPEN_FLAGS, &1u32.to_le_bytes()), Ok((true, false)));
        assert_eq!(open_flags(WIN_IOCTL_OPEN_FLAGS_WRITE, &3u32.to_le_bytes()), Ok((true, true)));
        assert_eq!(open_flags(WIN_IOCTL_OPEN_FLAGS, &8u32.to_le_bytes()), Err(Error::Invalid));
        assert_eq!(open_flags(WIN_IOCTL_OPEN_FLAGS, &[0; 2]), Err(Error::BufferTooSmall));
        // The two OPEN_FLAGS codes differ only in the access field.
        assert_eq!(WIN_IOCTL_OPEN_FLAGS_WRITE & !(3 << 14), WIN_IOCTL_OPEN_FLAGS);
    }

    /// "Defining I/O Control Codes" (learn.microsoft.com): the I/O
    /// manager sends an IOCTL whose RequiredAccess is FILE_WRITE_ACCESS
    /// only on a handle granted FILE_WRITE_DATA (FILE_READ_ACCESS:
    /// FILE_READ_DATA), so a command's access bits say what a handle must
    /// be allowed to do. Measured on the commands themselves: a command
    /// that changes the parameters needs write access, one that also hands
    /// a value back needs read access too, and one that changes nothing
    /// needs none.
    #[test]
    fn windows_access_matches_what_each_command_changes() {
        for c in Cmd::ALL.into_iter().filter(|c| *c != Cmd::Stats) {
            let p = Params::new();
            // Non-default starting values, so that RESET changes something too.
            p.set_quantum(100).unwrap();
            p.set_qset(10).unwrap();
            p.set_p_buffer(64).unwrap();
            let before = (p.quantum(), p.qset(), p.p_buffer());
            execute(&p, c, 128, true).unwrap();
            let changed = (p.quantum(), p.qset(), p.p_buffer()) != before;
            assert_eq!(changed, c.changes_state(), "{c:?}");
            let want = match (changed, c.arg_out()) {
                (false, _) => WIN_FILE_ANY_ACCESS,
                (true, ArgOut::None) => WIN_FILE_WRITE_ACCESS,
                (true, _) => WIN_FILE_READ_ACCESS | WIN_FILE_WRITE_ACCESS,
            };
            assert_eq!(c.windows_access(), want, "{c:?}");
            assert_eq!(ctl_access(c.windows_code()), want, "{c:?} code {:#x}", c.windows_code());
        }
        assert_eq!(Cmd::Stats.windows_access(), WIN_FILE_ANY_ACCESS);
        // RESET and P_IOCTSIZE stay unprivileged (LDD3 checks no capability
        // for them); the access bits are what now guards them.
        assert!(!Cmd::Reset.needs_privilege() && !Cmd::PTSize.needs_privilege());
        assert_eq!(ctl_access(Cmd::Reset.windows_code()), WIN_FILE_WRITE_ACCESS);
        assert_eq!(ctl_access(Cmd::PTSize.windows_code()), WIN_FILE_WRITE_ACCESS);
    }

    #[test]
    fn privilege_table_is_ldd3s() {
        let privileged: [Cmd; 8] = [
            Cmd::SQuantum,
            Cmd::SQset,
            Cmd::TQuantum,
            Cmd::TQset,
            Cmd::XQuantum,
            Cmd::XQset,
            Cmd::HQuantum,
            Cmd::HQset,
        ];
        for c in Cmd::ALL {
            assert_eq!(c.needs_privilege(), privileged.contains(&c), "{c:?}");
        }
    }

    #[test]
    fn execute_semantics() {
        let p = Params::new();
        assert_eq!(execute(&p, Cmd::QQuantum, 0, false), Ok(4000));
        assert_eq!(execute(&p, Cmd::GQset, 0, false), Ok(1000));
        assert_eq!(execute(&p, Cmd::SQuantum, 10, false), Err(Error::Perm));
        assert_eq!(p.quantum(), 4000, "refused before any change");
        assert_eq!(execute(&p, Cmd::SQuantum, 10, true), Ok(0));
        assert_eq!(execute(&p, Cmd::TQset, 20, true), Ok(0));
        assert_eq!(execute(&p, Cmd::XQuantum, 30, true), Ok(10));
        assert_eq!(execute(&p, Cmd::HQset, 40, true), Ok(20));
        assert_eq!((p.quantum(), p.qset()), (30, 40));
        assert_eq!(execute(&p, Cmd::HQuantum, 0, true), Err(Error::Invalid));
        assert_eq!(execute(&p, Cmd::TQset, -5, true), Err(Error::Invalid));
        assert_eq!((p.quantum(), p.qset()), (30, 40));
        assert_eq!(execute(&p, Cmd::Reset, 0, false), Ok(0));
        assert_eq!((p.quantum(), p.qset()), (4000, 1000));
        assert_eq!(execute(&p, Cmd::PTSize, 128, false), Ok(0));
        assert_eq!(execute(&p, Cmd::PQSize, 0, false), Ok(128));
        assert_eq!(execute(&p, Cmd::PTSize, 0, false), Err(Error::Invalid));
        assert_eq!(execute(&p, Cmd::Stats, 0, false), Err(Error::Invalid));
    }
}

#[cfg(test)]
mod abi_tests {
    use super::*;

    #[test]
    fn linux_direction_bits_follow_argument_kinds() {
        for c in Cmd::ALL {
            let dir = c.linux_code() >> 30;
            let writes_in = c.arg_in() == ArgIn::Pointer;
            let reads_out = matches!(c.arg_out(), ArgOut::Pointer | ArgOut::Text);
            assert_eq!(dir & IOC_WRITE != 0, writes_in, "{c:?} _IOW bit");
            assert_eq!(dir & IOC_READ != 0, reads_out, "{c:?} _IOR bit");
            let size = (c.linux_code() >> 16) & 0x3fff;
            assert_eq!(size != 0, writes_in || reads_out, "{c:?} size");
        }
    }

    #[test]
    fn windows_buffer_lengths_follow_argument_kinds() {
        for c in Cmd::ALL {
            assert_eq!(c.windows_in_len() == 4, c.arg_in() != ArgIn::None, "{c:?}");
            assert_eq!(c.windows_out_len() > 0, c.arg_out() != ArgOut::None, "{c:?}");
            // METHOD_BUFFERED, the command's access, vendor device type.
            assert_eq!(c.windows_code() & 3, 0);
            assert_eq!((c.windows_code() >> 14) & 3, c.windows_access());
            assert_eq!(c.windows_code() >> 16, WIN_DEVICE_TYPE);
        }
    }

    #[test]
    fn unprivileged_caller_can_run_exactly_the_unprivileged_commands() {
        for c in Cmd::ALL.into_iter().filter(|c| *c != Cmd::Stats) {
            let p = Params::new();
            let r = execute(&p, c, 64, false);
            if c.needs_privilege() {
                assert_eq!(r, Err(Error::Perm), "{c:?}");
                assert_eq!((p.quantum(), p.qset()), (4000, 1000), "{c:?} changed state");
            } else {
                assert!(r.is_ok(), "{c:?}: {r:?}");
            }
        }
    }
}

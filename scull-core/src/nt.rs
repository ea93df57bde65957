//! The decisions scull.sys makes that only a real NT I/O manager reaches,
//! as pure functions with host tests (Wine's I/O manager never sends a
//! create disposition, a security context, a path suffix, a
//! FILE_USE_FILE_POINTER_POSITION offset or a file-information IRP, so no
//! CI target executes the driver's side of these; see docs/windows.md).
//!
//! The driver's IRP plumbing reads the fields out of the IRP, calls one of
//! these, and writes back what it returns. Each test names the documented
//! NT behaviour it encodes (learn.microsoft.com page names).

use crate::error::Error;
use crate::geometry::MAX_SIZE;
use crate::store::{self, Whence};

/// An NTSTATUS value.
pub type NtStatus = i32;

const fn nt(v: u32) -> NtStatus {
    v as NtStatus
}

/// STATUS_OBJECT_NAME_NOT_FOUND: a path suffix scull does not know.
pub const STATUS_OBJECT_NAME_NOT_FOUND: NtStatus = nt(0xC000_0034);
/// STATUS_OBJECT_NAME_COLLISION: FILE_CREATE (CREATE_NEW) on a device, which always exists.
pub const STATUS_OBJECT_NAME_COLLISION: NtStatus = nt(0xC000_0035);
/// STATUS_INVALID_DEVICE_REQUEST: an information class scull does not serve.
pub const STATUS_INVALID_DEVICE_REQUEST: NtStatus = nt(0xC000_0010);

// ---------------------------------------------------------------- access

pub const FILE_READ_DATA: u32 = 0x0001;
pub const FILE_WRITE_DATA: u32 = 0x0002;
pub const FILE_APPEND_DATA: u32 = 0x0004;
pub const GENERIC_ALL: u32 = 0x1000_0000;
pub const GENERIC_WRITE: u32 = 0x4000_0000;
pub const GENERIC_READ: u32 = 0x8000_0000;
pub const MAXIMUM_ALLOWED: u32 = 0x0200_0000;

/// A handle's role at a scullpipe (and for every device, what the bridge
/// may let it change): counted as a reader, a writer, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    pub read: bool,
    pub write: bool,
}

/// The role from the access the I/O manager **granted** at create
/// (`SecurityContext->AccessState->PreviouslyGrantedAccess`), not the access
/// asked for: a MAXIMUM_ALLOWED open asks for no specific right, and gets
/// every right the DACL allows. Generic rights are mapped with the file
/// object type's mapping (GENERIC_READ includes FILE_READ_DATA,
/// GENERIC_WRITE includes FILE_WRITE_DATA and FILE_APPEND_DATA).
///
/// `None`: no security context reached the driver (Wine): the handle counts
/// as both, as it did before roles existed.
pub fn role_from_granted(granted: Option<u32>) -> Role {
    let Some(a) = granted else {
        return Role { read: true, write: true };
    };
    let read = a & (FILE_READ_DATA | GENERIC_READ | GENERIC_ALL) != 0;
    let write = a & (FILE_WRITE_DATA | FILE_APPEND_DATA | GENERIC_WRITE | GENERIC_ALL) != 0;
    Role { read, write }
}

// ---------------------------------------------------------------- create

pub const FILE_SUPERSEDE: u32 = 0;
pub const FILE_OPEN: u32 = 1;
pub const FILE_CREATE: u32 = 2;
pub const FILE_OPEN_IF: u32 = 3;
pub const FILE_OVERWRITE: u32 = 4;
pub const FILE_OVERWRITE_IF: u32 = 5;

/// What a create does to a store device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateAction {
    /// Open, keeping the data.
    Open,
    /// Open and trim (LDD3's `O_TRUNC`/write-only trim).
    Trim,
}

/// The create disposition, the high 8 bits of
/// `Parameters.Create.Options`: FILE_OVERWRITE_IF and FILE_OVERWRITE trim;
/// FILE_OPEN and FILE_OPEN_IF open; FILE_CREATE is refused, since a device
/// always exists. FILE_SUPERSEDE (0, NtCreateFile only) opens: Wine passes
/// no disposition at all, which reads as 0.
///
/// `granted`: the access the I/O manager granted the handle (as for
/// [`role_from_granted`]), `None` without a security context (Wine). An
/// overwriting disposition on a handle not granted FILE_WRITE_DATA is
/// STATUS_ACCESS_DENIED: a read-only handle must not wipe a store.
///
/// Which disposition a CreateFileW mode becomes depends on the user-mode
/// library: CREATE_ALWAYS is FILE_OVERWRITE_IF, OPEN_EXISTING FILE_OPEN,
/// OPEN_ALWAYS FILE_OPEN_IF and CREATE_NEW FILE_CREATE everywhere; but
/// TRUNCATE_EXISTING is FILE_OVERWRITE in Wine's and ReactOS's kernel32
/// only. Windows' CreateFileW opens with FILE_OPEN and then sets
/// FileAllocationInformation to 0 (reported by OSR), so on Windows that trim
/// arrives as IRP_MJ_SET_INFORMATION ([`set_information`],
/// [`allocation_action`]), not here.
pub fn create_action(options: u32, granted: Option<u32>) -> Result<CreateAction, NtStatus> {
    match options >> 24 {
        FILE_OVERWRITE | FILE_OVERWRITE_IF if may_overwrite(granted) => Ok(CreateAction::Trim),
        FILE_OVERWRITE | FILE_OVERWRITE_IF => Err(Error::Perm.ntstatus()),
        FILE_SUPERSEDE | FILE_OPEN | FILE_OPEN_IF => Ok(CreateAction::Open),
        FILE_CREATE => Err(STATUS_OBJECT_NAME_COLLISION),
        _ => Err(Error::Invalid.ntstatus()),
    }
}

/// Whether the granted access lets a create overwrite (trim) the data:
/// FILE_WRITE_DATA, or an unmapped GENERIC_WRITE/GENERIC_ALL that maps to
/// it. FILE_APPEND_DATA alone may add data, never wipe it. `None` (no
/// security context reached the driver: Wine) leaves the decision to the
/// disposition, as before this check existed; Wine passes no disposition
/// either (Options 0, which opens), so under Wine nothing trims here.
fn may_overwrite(granted: Option<u32>) -> bool {
    granted.is_none_or(|a| a & (FILE_WRITE_DATA | GENERIC_WRITE | GENERIC_ALL) != 0)
}

/// What follows the device name in the create's `FileObject->FileName`:
/// nothing (or a lone `\`) opens a blocking handle, `\nonblock` (any case) a
/// non-blocking one ([`crate::ioctl::WIN_NONBLOCK_SUFFIX`]); anything else
/// is STATUS_OBJECT_NAME_NOT_FOUND. Returns whether the handle is non-blocking.
pub fn parse_suffix(name: &[u16]) -> Result<bool, NtStatus> {
    let name = match name.first() {
        Some(&c) if c == b'\\' as u16 => &name[1..],
        _ => name,
    };
    if name.is_empty() {
        return Ok(false);
    }
    let want = crate::ioctl::WIN_NONBLOCK_SUFFIX.as_bytes();
    let same = name.len() == want.len() && name.iter().zip(want).all(|(&c, &w)| c < 128 && (c as u8).eq_ignore_ascii_case(&w));
    if same {
        Ok(true)
    } else {
        Err(STATUS_OBJECT_NAME_NOT_FOUND)
    }
}

// ---------------------------------------------------------------- read/write

/// `FILE_WRITE_TO_END_OF_FILE` (LowPart 0xFFFFFFFF, HighPart -1) as a LARGE_INTEGER.
pub const WRITE_TO_END: i64 = -1;
/// `FILE_USE_FILE_POINTER_POSITION` (LowPart 0xFFFFFFFE, HighPart -1).
pub const USE_FILE_POINTER: i64 = -2;

/// Where a read or write on a store device starts.
///
/// - `byte_offset`: `Parameters.Read/Write.ByteOffset`. For a file object
///   opened for synchronous I/O (FO_SYNCHRONOUS_IO) the I/O manager already
///   replaced a missing offset with `CurrentByteOffset`; it may also pass
///   FILE_USE_FILE_POINTER_POSITION, which means the same.
/// - FILE_WRITE_TO_END_OF_FILE on a write appends at `size`.
/// - Any other negative offset is STATUS_INVALID_PARAMETER.
pub fn start_position(byte_offset: i64, write: bool, current: i64, size: u64) -> Result<u64, Error> {
    let pos = match byte_offset {
        USE_FILE_POINTER => current,
        WRITE_TO_END if write => return Ok(size),
        o => o,
    };
    u64::try_from(pos).map_err(|_| Error::Invalid)
}

/// The new `FileObject->CurrentByteOffset` after `done` bytes moved from
/// `start`, or `None` to leave it. The driver advances it for a synchronous
/// file object (as file systems do; the I/O manager only reads it to fill
/// in the next request's offset); an asynchronous handle has no file
/// position, every request carries its own offset.
pub fn next_file_pointer(synchronous: bool, start: u64, done: usize) -> Option<i64> {
    synchronous.then(|| (start + done as u64) as i64)
}

// ---------------------------------------------------------------- information

/// FILE_INFORMATION_CLASS values scull serves.
pub const FILE_STANDARD_INFORMATION: u32 = 5;
pub const FILE_POSITION_INFORMATION: u32 = 14;
pub const FILE_ALLOCATION_INFORMATION: u32 = 19;
pub const FILE_END_OF_FILE_INFORMATION: u32 = 20;
/// sizeof(FILE_STANDARD_INFORMATION): two LARGE_INTEGERs, a ULONG, two BOOLEANs, padded to 8.
pub const STANDARD_INFO_LEN: usize = 24;
/// sizeof(FILE_POSITION_INFORMATION), sizeof(FILE_ALLOCATION_INFORMATION)
/// and sizeof(FILE_END_OF_FILE_INFORMATION): one LARGE_INTEGER.
pub const OFFSET_INFO_LEN: usize = 8;

/// What the device is, as the information requests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seekable {
    /// A store device holding `size` bytes.
    Store { size: u64 },
    /// A scullpipe: no size, no position.
    Pipe,
}

/// The reply to IRP_MJ_QUERY_INFORMATION: the bytes to copy into the
/// system buffer (`IoStatus.Information` = the returned length).
pub fn query_information(class: u32, len: usize, dev: Seekable, current: i64, out: &mut [u8; STANDARD_INFO_LEN]) -> Result<usize, NtStatus> {
    *out = [0; STANDARD_INFO_LEN];
    let need = match class {
        FILE_STANDARD_INFORMATION => STANDARD_INFO_LEN,
        FILE_POSITION_INFORMATION => OFFSET_INFO_LEN,
        _ => return Err(STATUS_INVALID_DEVICE_REQUEST),
    };
    if len < need {
        return Err(Error::BufferTooSmall.ntstatus());
    }
    let Seekable::Store { size } = dev else {
        return Err(Error::NotSeekable.ntstatus());
    };
    if class == FILE_STANDARD_INFORMATION {
        out[0..8].copy_from_slice(&(size as i64).to_le_bytes()); // AllocationSize
        out[8..16].copy_from_slice(&(size as i64).to_le_bytes()); // EndOfFile
        out[16..20].copy_from_slice(&1u32.to_le_bytes()); // NumberOfLinks
    } else {
        out[0..8].copy_from_slice(&current.to_le_bytes());
    }
    Ok(need)
}

/// What an IRP_MJ_SET_INFORMATION asks for, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetInformation {
    /// SetEndOfFile: the new size (trim or extend with zeros).
    EndOfFile(u64),
    /// FileAllocationInformation: the new allocation size. Apply it with
    /// [`allocation_action`] under the store's lock.
    Allocation(u64),
    /// The new CurrentByteOffset (only reaches a driver for a file object
    /// the I/O manager does not position itself).
    Position(i64),
}

/// Decodes an IRP_MJ_SET_INFORMATION's class and system buffer.
///
/// `write`: the handle was granted write access (its role,
/// [`role_from_granted`]); the classes that change the data need it.
pub fn set_information(class: u32, input: &[u8], dev: Seekable, write: bool) -> Result<SetInformation, NtStatus> {
    let changes_data = match class {
        FILE_END_OF_FILE_INFORMATION | FILE_ALLOCATION_INFORMATION => true,
        FILE_POSITION_INFORMATION => false,
        _ => return Err(STATUS_INVALID_DEVICE_REQUEST),
    };
    let Some(b) = input.get(..OFFSET_INFO_LEN) else {
        return Err(Error::BufferTooSmall.ntstatus());
    };
    let Seekable::Store { .. } = dev else {
        return Err(Error::NotSeekable.ntstatus());
    };
    if changes_data && !write {
        return Err(Error::Perm.ntstatus());
    }
    let v = i64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    let len = || u64::try_from(v).map_err(|_| Error::Invalid.ntstatus());
    match class {
        FILE_END_OF_FILE_INFORMATION => return len().map(SetInformation::EndOfFile),
        FILE_ALLOCATION_INFORMATION => return len().map(SetInformation::Allocation),
        _ => {}
    }
    match store::seek(0, 0, Whence::Set, v) {
        Ok(p) if p <= MAX_SIZE => Ok(SetInformation::Position(p as i64)),
        Ok(_) => Err(Error::FileTooBig.ntstatus()),
        Err(e) => Err(e.ntstatus()),
    }
}

/// What a FileAllocationInformation set of `allocation` does to a store of
/// `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// 0: LDD3's `scull_trim`: free every quantum and take the current
    /// default geometry. Windows' CreateFileW sends it for TRUNCATE_EXISTING
    /// (FILE_OPEN, then an allocation of 0): the open-time trim of LDD3's
    /// `open(O_WRONLY)`. SetEndOfFile(0) sends it too, after the size is 0.
    Trim,
    /// Below the data: cut the store to this size.
    Truncate(u64),
    /// At or above the data: a reservation scull has no use for; succeed.
    Keep,
}

/// The action of a FileAllocationInformation set of `allocation` on a store
/// of `size` bytes.
pub fn allocation_action(allocation: u64, size: u64) -> Allocation {
    if allocation == 0 {
        Allocation::Trim
    } else if allocation < size {
        Allocation::Truncate(allocation)
    } else {
        Allocation::Keep
    }
}

// ---------------------------------------------------------------- load

/// The order DriverEntry brings up its `n` devices in: nothing may be
/// openable until every device exists, so that a failure can free every
/// device extension with no IRP referring to any of them.
///
/// 1. `create(i)` for every device: IoCreateDevice, the extension, the
///    ACL. Each device keeps DO_DEVICE_INITIALIZING, which makes the I/O
///    manager refuse a create on it, and has no DOS link.
/// 2. `link(i)` for every device: IoCreateSymbolicLink.
/// 3. `ready(i)` for every device: clear DO_DEVICE_INITIALIZING. (For
///    devices created in DriverEntry the I/O manager would clear it
///    itself once DriverEntry returns; clearing it last does the same.)
///
/// The first failure stops the bring-up and is returned, before any
/// `ready`: the caller then deletes whatever exists (links and devices).
pub fn bring_up<E>(
    n: usize,
    mut create: impl FnMut(usize) -> Result<(), E>,
    mut link: impl FnMut(usize) -> Result<(), E>,
    mut ready: impl FnMut(usize),
) -> Result<(), E> {
    (0..n).try_for_each(&mut create)?;
    (0..n).try_for_each(&mut link)?;
    (0..n).for_each(&mut ready);
    Ok(())
}

// ---------------------------------------------------------------- pended creates

/// A scullwuid create pended until the owner's last close. The test build's
/// bridge call (Wine hands out the handle before the create completes)
/// waits with it. The driver holds the device's spin lock for every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendedOpen {
    Waiting,
    /// The owner's last close admitted it: the handle owns scullwuid and
    /// its close must release it.
    Granted,
    /// Cancelled (CancelIoEx, the opener's exit, a close) or refused.
    Refused(NtStatus),
}

/// What happens to a pended open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendedEvent {
    /// The owner's last close freed the device and the policy admits this opener.
    Grant,
    /// The create IRP is cancelled (or the handle closes) before the grant.
    CancelCreate,
    /// The bridge call waiting with the create is cancelled.
    CancelBridge,
}

/// The next state, and in which order the IRPs complete: on a grant the
/// create completes first (STATUS_SUCCESS), then its waiting bridge calls;
/// a cancel before the grant ends both as STATUS_CANCELLED. A cancel after
/// the grant ends only the cancelled IRP: the granted open stays granted
/// (a late bridge cancel that refused the granted handle would leave a
/// handle whose close never releases scullwuid).
pub fn pended_open(state: PendedOpen, ev: PendedEvent) -> PendedOpen {
    let cancelled = Error::Interrupted.ntstatus();
    match (state, ev) {
        (PendedOpen::Waiting, PendedEvent::Grant) => PendedOpen::Granted,
        (PendedOpen::Waiting, PendedEvent::CancelCreate | PendedEvent::CancelBridge) => PendedOpen::Refused(cancelled),
        (s, _) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> std::vec::Vec<u16> {
        s.encode_utf16().collect()
    }

    #[test]
    fn role_comes_from_the_granted_access() {
        // "ACCESS_STATE structure (learn.microsoft.com)": PreviouslyGrantedAccess
        // holds the rights granted so far; for MAXIMUM_ALLOWED the access check
        // grants every right the DACL allows, so the asked-for mask says nothing.
        assert_eq!(role_from_granted(Some(MAXIMUM_ALLOWED)), Role { read: false, write: false });
        assert_eq!(role_from_granted(Some(FILE_READ_DATA | FILE_WRITE_DATA | 0x0012_0000)), Role { read: true, write: true });
        assert_eq!(role_from_granted(Some(FILE_READ_DATA | 0x0012_0000)), Role { read: true, write: false });
        // "File Access Rights Constants": FILE_APPEND_DATA alone is a writer.
        assert_eq!(role_from_granted(Some(FILE_APPEND_DATA)), Role { read: false, write: true });
        // "Generic Access Rights": unmapped generic bits count as what they map to.
        assert_eq!(role_from_granted(Some(GENERIC_READ)), Role { read: true, write: false });
        assert_eq!(role_from_granted(Some(GENERIC_WRITE)), Role { read: false, write: true });
        assert_eq!(role_from_granted(Some(GENERIC_ALL)), Role { read: true, write: true });
        // No security context (Wine): both, as before.
        assert_eq!(role_from_granted(None), Role { read: true, write: true });
    }

    #[test]
    fn create_disposition_trims_opens_or_refuses() {
        // "IRP_MJ_CREATE (IFS)": the disposition is the high 8 bits of
        // Parameters.Create.Options. "NtCreateFile": FILE_OVERWRITE and
        // FILE_OVERWRITE_IF overwrite an existing file. (Which CreateFileW
        // mode becomes which disposition is kernel32's choice: Wine and
        // ReactOS send FILE_OVERWRITE for TRUNCATE_EXISTING, Windows sends
        // FILE_OPEN and a FileAllocationInformation set of 0, see
        // `allocation_information_truncates_or_does_nothing`.)
        let opt = |d: u32| (d << 24) | 0x20; // FILE_SYNCHRONOUS_IO_NONALERT in the low bits
        const RW: u32 = FILE_READ_DATA | FILE_WRITE_DATA;
        assert_eq!(create_action(opt(FILE_OVERWRITE_IF), Some(RW)), Ok(CreateAction::Trim));
        assert_eq!(create_action(opt(FILE_OVERWRITE), Some(RW)), Ok(CreateAction::Trim));
        assert_eq!(create_action(opt(FILE_OPEN), Some(RW)), Ok(CreateAction::Open));
        assert_eq!(create_action(opt(FILE_OPEN_IF), Some(RW)), Ok(CreateAction::Open));
        assert_eq!(create_action(opt(FILE_CREATE), Some(RW)), Err(STATUS_OBJECT_NAME_COLLISION));
        // Wine passes Options 0: FILE_SUPERSEDE must open, never trim.
        assert_eq!(create_action(0, Some(RW)), Ok(CreateAction::Open));
        assert_eq!(create_action(opt(6), Some(RW)), Err(Error::Invalid.ntstatus()));
    }

    #[test]
    fn a_trimming_create_needs_write_access() {
        // "IRP_MJ_CREATE": SecurityContext->AccessState->
        // PreviouslyGrantedAccess is what the access check granted this
        // handle; a disposition that overwrites changes the data, so a
        // handle without FILE_WRITE_DATA must not trim (STATUS_ACCESS_DENIED,
        // as NtCreateFile refuses FILE_OVERWRITE on a file without it).
        let denied = Err(Error::Perm.ntstatus());
        let opt = |d: u32| d << 24;
        for d in [FILE_OVERWRITE, FILE_OVERWRITE_IF] {
            assert_eq!(create_action(opt(d), Some(FILE_READ_DATA | 0x0012_0000)), denied, "read-only {d}");
            assert_eq!(create_action(opt(d), Some(MAXIMUM_ALLOWED)), denied, "nothing granted {d}");
            assert_eq!(create_action(opt(d), Some(0)), denied, "no access {d}");
            // Append-only may add data, not wipe it.
            assert_eq!(create_action(opt(d), Some(FILE_APPEND_DATA)), denied, "append-only {d}");
            assert_eq!(create_action(opt(d), Some(FILE_WRITE_DATA)), Ok(CreateAction::Trim));
            assert_eq!(create_action(opt(d), Some(GENERIC_WRITE)), Ok(CreateAction::Trim));
            assert_eq!(create_action(opt(d), Some(GENERIC_ALL)), Ok(CreateAction::Trim));
            // Wine passes a NULL SecurityContext: no granted access to
            // check; the disposition alone decides, as before (and Wine
            // passes no disposition either, so it never trims here).
            assert_eq!(create_action(opt(d), None), Ok(CreateAction::Trim));
        }
        // Opening needs nothing more than the access check granted.
        assert_eq!(create_action(opt(FILE_OPEN), Some(FILE_READ_DATA)), Ok(CreateAction::Open));
        assert_eq!(create_action(opt(FILE_OPEN_IF), Some(0)), Ok(CreateAction::Open));
        assert_eq!(create_action(opt(FILE_SUPERSEDE), Some(FILE_READ_DATA)), Ok(CreateAction::Open));
        assert_eq!(create_action(opt(FILE_CREATE), Some(FILE_READ_DATA)), Err(STATUS_OBJECT_NAME_COLLISION));
    }

    #[test]
    fn suffix_nonblock_or_not_found() {
        // "IRP_MJ_CREATE": FileObject->FileName holds the path after the device name.
        assert_eq!(parse_suffix(&[]), Ok(false));
        assert_eq!(parse_suffix(&w("\\")), Ok(false));
        assert_eq!(parse_suffix(&w("\\nonblock")), Ok(true));
        assert_eq!(parse_suffix(&w("\\NonBlock")), Ok(true));
        assert_eq!(parse_suffix(&w("nonblock")), Ok(true));
        assert_eq!(parse_suffix(&w("\\nonblock\\x")), Err(STATUS_OBJECT_NAME_NOT_FOUND));
        assert_eq!(parse_suffix(&w("\\nonbloc")), Err(STATUS_OBJECT_NAME_NOT_FOUND));
        assert_eq!(parse_suffix(&w("\\nonblocк")), Err(STATUS_OBJECT_NAME_NOT_FOUND));
        assert_eq!(parse_suffix(&[b'\\' as u16, b'n' as u16 + 0x100]), Err(STATUS_OBJECT_NAME_NOT_FOUND));
    }

    #[test]
    fn start_position_from_byte_offset() {
        // "IRP_MJ_READ"/"IRP_MJ_WRITE": ByteOffset is the starting offset;
        // "NtReadFile": FILE_USE_FILE_POINTER_POSITION uses the file
        // object's current position (synchronous handles); "NtWriteFile":
        // FILE_WRITE_TO_END_OF_FILE writes at the end of the file.
        assert_eq!(start_position(100, false, 7, 50), Ok(100));
        assert_eq!(start_position(USE_FILE_POINTER, false, 7, 50), Ok(7));
        assert_eq!(start_position(USE_FILE_POINTER, true, 7, 50), Ok(7));
        assert_eq!(start_position(WRITE_TO_END, true, 7, 50), Ok(50));
        // Appending is for writes; a read at -1 is a negative offset.
        assert_eq!(start_position(WRITE_TO_END, false, 7, 50), Err(Error::Invalid));
        assert_eq!(start_position(-3, true, 7, 50), Err(Error::Invalid));
        assert_eq!(start_position(i64::MAX, true, 0, 0), Ok(i64::MAX as u64));
        // A corrupt file pointer is refused, not wrapped.
        assert_eq!(start_position(USE_FILE_POINTER, false, -9, 50), Err(Error::Invalid));
    }

    #[test]
    fn who_advances_the_file_pointer() {
        // "FILE_OBJECT structure": CurrentByteOffset is meaningful only for
        // file objects opened for synchronous I/O (FO_SYNCHRONOUS_IO).
        assert_eq!(next_file_pointer(true, 10, 5), Some(15));
        assert_eq!(next_file_pointer(true, 10, 0), Some(10));
        assert_eq!(next_file_pointer(false, 10, 5), None);
    }

    #[test]
    fn query_information_classes_lengths_and_replies() {
        // "FILE_STANDARD_INFORMATION": AllocationSize, EndOfFile (LARGE_INTEGER),
        // NumberOfLinks (ULONG), DeletePending, Directory (BOOLEAN): 24 bytes.
        let mut out = [0xEEu8; STANDARD_INFO_LEN];
        assert_eq!(query_information(FILE_STANDARD_INFORMATION, 24, Seekable::Store { size: 4097 }, 3, &mut out), Ok(24));
        assert_eq!(&out[0..8], &4097i64.to_le_bytes());
        assert_eq!(&out[8..16], &4097i64.to_le_bytes());
        assert_eq!(&out[16..20], &1u32.to_le_bytes());
        assert_eq!(&out[20..], &[0; 4]);
        // "FILE_POSITION_INFORMATION": CurrentByteOffset, 8 bytes.
        assert_eq!(query_information(FILE_POSITION_INFORMATION, 8, Seekable::Store { size: 1 }, 77, &mut out), Ok(8));
        assert_eq!(&out[0..8], &77i64.to_le_bytes());
        assert_eq!(query_information(FILE_STANDARD_INFORMATION, 23, Seekable::Store { size: 1 }, 0, &mut out), Err(Error::BufferTooSmall.ntstatus()));
        assert_eq!(query_information(FILE_POSITION_INFORMATION, 7, Seekable::Store { size: 1 }, 0, &mut out), Err(Error::BufferTooSmall.ntstatus()));
        assert_eq!(query_information(FILE_STANDARD_INFORMATION, 24, Seekable::Pipe, 0, &mut out), Err(Error::NotSeekable.ntstatus()));
        // FileBasicInformation (4) and others: not served.
        assert_eq!(query_information(4, 64, Seekable::Store { size: 1 }, 0, &mut out), Err(STATUS_INVALID_DEVICE_REQUEST));
    }

    #[test]
    fn allocation_information_truncates_or_does_nothing() {
        // "SetEndOfFile (learn.microsoft.com)" on Windows sends
        // FileEndOfFileInformation and then FileAllocationInformation with
        // the same size; Windows' CreateFileW turns TRUNCATE_EXISTING into
        // FILE_OPEN followed by a FileAllocationInformation set of 0 (OSR).
        // "FILE_ALLOCATION_INFORMATION": AllocationSize, one LARGE_INTEGER;
        // a file system truncates a file whose end lies beyond the new
        // allocation, and keeps a larger allocation as a reservation (scull
        // has nothing to reserve: a successful no-op).
        let s = Seekable::Store { size: 10 };
        assert_eq!(set_information(FILE_ALLOCATION_INFORMATION, &0i64.to_le_bytes(), s, true), Ok(SetInformation::Allocation(0)));
        assert_eq!(set_information(FILE_ALLOCATION_INFORMATION, &4096i64.to_le_bytes(), s, true), Ok(SetInformation::Allocation(4096)));
        assert_eq!(set_information(FILE_ALLOCATION_INFORMATION, &(-1i64).to_le_bytes(), s, true), Err(Error::Invalid.ntstatus()));
        assert_eq!(set_information(FILE_ALLOCATION_INFORMATION, &[0; 7], s, true), Err(Error::BufferTooSmall.ntstatus()));
        assert_eq!(set_information(FILE_ALLOCATION_INFORMATION, &0i64.to_le_bytes(), Seekable::Pipe, true), Err(Error::NotSeekable.ntstatus()));
        // 0 is LDD3's trim (TRUNCATE_EXISTING's form on Windows), whatever
        // the size: the open-time trim takes the new default geometry even
        // of an empty store. Smaller than the data: truncate; anything
        // else: nothing to do.
        assert_eq!(allocation_action(0, 10), Allocation::Trim);
        assert_eq!(allocation_action(0, 0), Allocation::Trim);
        assert_eq!(allocation_action(9, 10), Allocation::Truncate(9));
        assert_eq!(allocation_action(10, 10), Allocation::Keep);
        assert_eq!(allocation_action(4096, 10), Allocation::Keep);
        // SetEndOfFile's pair: the EOF set then the allocation set of the
        // same value changes nothing more, except at 0 (a trim).
        for (size, eof) in [(10u64, 3u64), (3, 10), (7, 7)] {
            let after_eof = eof;
            assert_eq!(allocation_action(eof, after_eof), Allocation::Keep, "SetEndOfFile({eof}) on {size} bytes");
        }
        // Both change data: a handle without write access is refused
        // (STATUS_ACCESS_DENIED), as the I/O manager refuses them to a
        // handle without FILE_WRITE_DATA ("NtSetInformationFile").
        let denied = Err(Error::Perm.ntstatus());
        assert_eq!(set_information(FILE_ALLOCATION_INFORMATION, &0i64.to_le_bytes(), s, false), denied);
        assert_eq!(set_information(FILE_END_OF_FILE_INFORMATION, &0i64.to_le_bytes(), s, false), denied);
        // Moving the file pointer changes no data.
        assert_eq!(set_information(FILE_POSITION_INFORMATION, &3i64.to_le_bytes(), s, false), Ok(SetInformation::Position(3)));
    }

    #[test]
    fn set_information_classes_and_checks() {
        // "FILE_END_OF_FILE_INFORMATION": EndOfFile, the new size (SetEndOfFile).
        let s = Seekable::Store { size: 10 };
        assert_eq!(set_information(FILE_END_OF_FILE_INFORMATION, &5i64.to_le_bytes(), s, true), Ok(SetInformation::EndOfFile(5)));
        assert_eq!(set_information(FILE_END_OF_FILE_INFORMATION, &(-1i64).to_le_bytes(), s, true), Err(Error::Invalid.ntstatus()));
        assert_eq!(set_information(FILE_END_OF_FILE_INFORMATION, &[0; 7], s, true), Err(Error::BufferTooSmall.ntstatus()));
        assert_eq!(set_information(FILE_POSITION_INFORMATION, &9i64.to_le_bytes(), s, true), Ok(SetInformation::Position(9)));
        assert_eq!(set_information(FILE_POSITION_INFORMATION, &(-9i64).to_le_bytes(), s, true), Err(Error::Invalid.ntstatus()));
        assert_eq!(set_information(FILE_POSITION_INFORMATION, &9i64.to_le_bytes(), Seekable::Pipe, true), Err(Error::NotSeekable.ntstatus()));
        assert_eq!(set_information(4, &[0; 40], s, true), Err(STATUS_INVALID_DEVICE_REQUEST));
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Step {
        Create(usize),
        Link(usize),
        Ready(usize),
    }

    /// Runs `bring_up` over `n` devices whose `fail` step fails.
    fn bring_up_log(n: usize, fail: Option<Step>) -> (Result<(), Step>, std::vec::Vec<Step>) {
        let log = core::cell::RefCell::new(std::vec::Vec::new());
        let step = |s: Step| {
            log.borrow_mut().push(s);
            if Some(s) == fail { Err(s) } else { Ok(()) }
        };
        let r = bring_up(n, |i| step(Step::Create(i)), |i| step(Step::Link(i)), |i| log.borrow_mut().push(Step::Ready(i)));
        (r, log.into_inner())
    }

    #[test]
    fn no_device_is_openable_until_every_device_exists() {
        // "DEVICE_OBJECT structure" (Flags): the I/O manager sends no
        // create to a device while DO_DEVICE_INITIALIZING is set; for
        // devices created in DriverEntry it clears the flag when DriverEntry
        // returns. A DOS link is how user mode names a device.
        let n = 6;
        let (r, log) = bring_up_log(n, None);
        assert_eq!(r, Ok(()));
        assert_eq!(log.len(), 3 * n);
        let first = |f: &dyn Fn(&Step) -> bool| log.iter().position(f).unwrap();
        let last = |f: &dyn Fn(&Step) -> bool| log.iter().rposition(f).unwrap();
        let (is_c, is_l, is_r) = (|s: &Step| matches!(s, Step::Create(_)), |s: &Step| matches!(s, Step::Link(_)), |s: &Step| matches!(s, Step::Ready(_)));
        assert!(last(&is_c) < first(&is_l), "every device exists before the first link: {log:?}");
        assert!(last(&is_l) < first(&is_r), "every link exists before the first device is ready: {log:?}");
        for i in 0..n {
            assert!(log.contains(&Step::Create(i)) && log.contains(&Step::Link(i)) && log.contains(&Step::Ready(i)));
        }
        // Any failure: nothing was made ready, so no IRP can refer to any
        // device the caller is about to free.
        for k in 0..n {
            for fail in [Step::Create(k), Step::Link(k)] {
                let (r, log) = bring_up_log(n, Some(fail));
                assert_eq!(r, Err(fail));
                assert!(!log.iter().any(is_r), "{fail:?}: a device was made ready before the failure: {log:?}");
                assert_eq!(log.last(), Some(&fail), "{fail:?}: the bring-up stops at the failure");
            }
        }
    }

    #[test]
    fn pended_open_completion_order_and_late_cancels() {
        use PendedEvent::*;
        let c = PendedOpen::Refused(Error::Interrupted.ntstatus());
        // "Cancel Routines": once a driver took the cancel routine back
        // (IoSetCancelRoutine returned it), that IRP is the driver's to complete;
        // a cancel of another IRP may still run after it.
        assert_eq!(pended_open(PendedOpen::Waiting, Grant), PendedOpen::Granted);
        assert_eq!(pended_open(PendedOpen::Waiting, CancelCreate), c);
        assert_eq!(pended_open(PendedOpen::Waiting, CancelBridge), c);
        // A bridge cancel that lands after the grant leaves the open granted.
        assert_eq!(pended_open(PendedOpen::Granted, CancelBridge), PendedOpen::Granted);
        assert_eq!(pended_open(PendedOpen::Granted, CancelCreate), PendedOpen::Granted);
        assert_eq!(pended_open(c, Grant), c);
        // Every order of the three events: a grant before any cancel always
        // ends granted, a cancel before the grant always ends refused.
        let evs = [Grant, CancelCreate, CancelBridge];
        for a in evs {
            for b in evs {
                for d in evs {
                    let end = [a, b, d].iter().fold(PendedOpen::Waiting, |s, &e| pended_open(s, e));
                    let want = if a == Grant { PendedOpen::Granted } else { c };
                    assert_eq!(end, want, "{a:?} {b:?} {d:?}");
                }
            }
        }
    }
}

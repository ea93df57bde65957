//! The Win32 layer: kernel32's file functions with windows-sys's
//! signatures, on top of ntsim's I/O manager, so a Windows program's file
//! code can run against a driver loaded in this process. Handles live in
//! one process-wide table; GetLastError is per thread.
//!
//! What each function sends follows kernel32 (Microsoft Learn pages of
//! each function, learn.microsoft.com/windows/win32/api/fileapi/ and
//! .../ioapiset/; where silent, ReactOS dll/win32/kernel32/client/file,
//! read for facts only):
//! - CreateFileW adds SYNCHRONIZE | FILE_READ_ATTRIBUTES to the access,
//!   opens with FILE_SYNCHRONOUS_IO_NONALERT unless FILE_FLAG_OVERLAPPED,
//!   maps CREATE_NEW/CREATE_ALWAYS/OPEN_EXISTING/OPEN_ALWAYS to
//!   FILE_CREATE/FILE_OVERWRITE_IF/FILE_OPEN/FILE_OPEN_IF, and reports
//!   ERROR_ALREADY_EXISTS for OPEN_ALWAYS/CREATE_ALWAYS of an existing file
//!   ("CreateFileW"). TRUNCATE_EXISTING: Windows opens FILE_OPEN and then
//!   sets FileAllocationInformation to 0 (reported by OSR); ReactOS opens
//!   FILE_OVERWRITE. [`set_truncate_mode`] picks one (Windows by default).
//! - SetFilePointerEx computes the position (FILE_END from
//!   FileStandardInformation) and sets FilePositionInformation; a
//!   negative result is ERROR_NEGATIVE_SEEK ("SetFilePointerEx").
//! - SetEndOfFile sets FileEndOfFileInformation to the current position,
//!   then FileAllocationInformation to the same value ("SetEndOfFile";
//!   ReactOS SetEndOfFile does both).
//! - ReadFile on a synchronous handle at end of file: STATUS_END_OF_FILE
//!   is success with 0 bytes (ReactOS ReadFile).
//! - DeviceIoControl: a warning status (STATUS_BUFFER_OVERFLOW) fails the
//!   call with ERROR_MORE_DATA and still reports the bytes returned
//!   ("DeviceIoControl").

use crate::io::{self, File, Io, Outcome, STATUS_PENDING};
use crate::kernel::Event;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::System::IO::OVERLAPPED;

pub type BOOL = i32;
const FALSE: BOOL = 0;
const TRUE: BOOL = 1;

thread_local! {
    static LAST_ERROR: Cell<u32> = const { Cell::new(0) };
}

enum Obj {
    File(Arc<File>),
    Event(Arc<Event>),
}

static HANDLES: Mutex<Option<(usize, HashMap<usize, Obj>)>> = Mutex::new(None);

fn insert(o: Obj) -> HANDLE {
    let mut g = HANDLES.lock().unwrap();
    let (next, m) = g.get_or_insert_with(|| (0x100, HashMap::new()));
    *next += 4;
    m.insert(*next, o);
    *next as HANDLE
}

fn file(h: HANDLE) -> Option<Arc<File>> {
    match HANDLES.lock().unwrap().as_ref()?.1.get(&(h as usize))? {
        Obj::File(f) => Some(f.clone()),
        Obj::Event(_) => None,
    }
}

fn event(h: HANDLE) -> Option<Arc<Event>> {
    match HANDLES.lock().unwrap().as_ref()?.1.get(&(h as usize))? {
        Obj::Event(e) => Some(e.clone()),
        Obj::File(_) => None,
    }
}

/// Open Win32 handles (files and events).
pub fn open_handles() -> usize {
    HANDLES.lock().unwrap().as_ref().map_or(0, |g| g.1.len())
}

pub unsafe fn GetLastError() -> u32 {
    LAST_ERROR.with(|c| c.get())
}

pub unsafe fn SetLastError(e: u32) {
    LAST_ERROR.with(|c| c.set(e))
}

fn fail(st: i32) -> BOOL {
    LAST_ERROR.with(|c| c.set(nt_to_win32(st)));
    FALSE
}

fn fail_win32(e: u32) -> BOOL {
    LAST_ERROR.with(|c| c.set(e));
    FALSE
}

/// RtlNtStatusToDosError for the statuses a driver commonly returns
/// (Microsoft's mapping table, KB113996 / "NTSTATUS values" + "System
/// Error Codes"); anything else is ERROR_MR_MID_NOT_FOUND, as Windows
/// answers for a status without a mapping.
pub fn nt_to_win32(st: i32) -> u32 {
    match st as u32 {
        0 => 0,
        0x0000_0103 => 997,  // STATUS_PENDING -> ERROR_IO_PENDING
        0x8000_0005 => 234,  // STATUS_BUFFER_OVERFLOW -> ERROR_MORE_DATA
        0x8000_0011 => 170,  // STATUS_DEVICE_BUSY -> ERROR_BUSY
        0xC000_0001 => 31,   // STATUS_UNSUCCESSFUL -> ERROR_GEN_FAILURE
        0xC000_0002 => 1,    // STATUS_NOT_IMPLEMENTED -> ERROR_INVALID_FUNCTION
        0xC000_0003 => 87,   // STATUS_INVALID_INFO_CLASS -> ERROR_INVALID_PARAMETER
        0xC000_0004 => 24,   // STATUS_INFO_LENGTH_MISMATCH -> ERROR_BAD_LENGTH
        0xC000_0008 => 6,    // STATUS_INVALID_HANDLE
        0xC000_000D => 87,   // STATUS_INVALID_PARAMETER
        0xC000_000E => 2,    // STATUS_NO_SUCH_DEVICE -> ERROR_FILE_NOT_FOUND
        0xC000_0010 => 1,    // STATUS_INVALID_DEVICE_REQUEST -> ERROR_INVALID_FUNCTION
        0xC000_0011 => 38,   // STATUS_END_OF_FILE -> ERROR_HANDLE_EOF
        0xC000_0017 => 8,    // STATUS_NO_MEMORY -> ERROR_NOT_ENOUGH_MEMORY
        0xC000_0022 => 5,    // STATUS_ACCESS_DENIED
        0xC000_0023 => 122,  // STATUS_BUFFER_TOO_SMALL -> ERROR_INSUFFICIENT_BUFFER
        0xC000_0024 => 6,    // STATUS_OBJECT_TYPE_MISMATCH -> ERROR_INVALID_HANDLE
        0xC000_0033 => 123,  // STATUS_OBJECT_NAME_INVALID -> ERROR_INVALID_NAME
        0xC000_0034 => 2,    // STATUS_OBJECT_NAME_NOT_FOUND -> ERROR_FILE_NOT_FOUND
        0xC000_0035 => 183,  // STATUS_OBJECT_NAME_COLLISION -> ERROR_ALREADY_EXISTS
        0xC000_003A => 3,    // STATUS_OBJECT_PATH_NOT_FOUND
        0xC000_0043 => 32,   // STATUS_SHARING_VIOLATION
        0xC000_0056 => 303,  // STATUS_DELETE_PENDING
        0xC000_0061 => 1314, // STATUS_PRIVILEGE_NOT_HELD
        0xC000_007F => 112,  // STATUS_DISK_FULL
        0xC000_0095 => 534,  // STATUS_INTEGER_OVERFLOW -> ERROR_ARITHMETIC_OVERFLOW
        0xC000_009A => 1450, // STATUS_INSUFFICIENT_RESOURCES -> ERROR_NO_SYSTEM_RESOURCES
        0xC000_00BB => 50,   // STATUS_NOT_SUPPORTED
        0xC000_00D8 => 554,  // STATUS_CANT_WAIT
        0xC000_00E8 => 1784, // STATUS_INVALID_USER_BUFFER
        0xC000_0120 => 995,  // STATUS_CANCELLED -> ERROR_OPERATION_ABORTED
        0xC000_0184 => 5023, // STATUS_INVALID_DEVICE_STATE -> ERROR_INVALID_STATE
        0xC000_0904 => 223,  // STATUS_FILE_TOO_LARGE
        _ => 317,            // ERROR_MR_MID_NOT_FOUND
    }
}

/// Which create TRUNCATE_EXISTING becomes (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TruncateMode {
    /// Windows: FILE_OPEN, then FileAllocationInformation 0.
    Windows,
    /// ReactOS: FILE_OVERWRITE.
    ReactOs,
}

static TRUNCATE: AtomicU8 = AtomicU8::new(0);

pub fn set_truncate_mode(m: TruncateMode) {
    TRUNCATE.store(m as u8, Ordering::SeqCst);
}

pub fn truncate_mode() -> TruncateMode {
    if TRUNCATE.load(Ordering::SeqCst) == 1 {
        TruncateMode::ReactOs
    } else {
        TruncateMode::Windows
    }
}

const GENERIC_WRITE: u32 = 0x4000_0000;
const SYNCHRONIZE: u32 = 0x0010_0000;
const FILE_READ_ATTRIBUTES: u32 = 0x80;
const FILE_FLAG_OVERLAPPED: u32 = 0x4000_0000;
const FILE_SYNCHRONOUS_IO_NONALERT: u32 = 0x20;
const FILE_NON_DIRECTORY_FILE: u32 = 0x40;
const FILE_OPENED: usize = 1;
const FILE_OVERWRITTEN: usize = 3;
const FILE_STANDARD_INFORMATION: u32 = 5;
const FILE_POSITION_INFORMATION: u32 = 14;
const FILE_ALLOCATION_INFORMATION: u32 = 19;
const FILE_END_OF_FILE_INFORMATION: u32 = 20;

fn wstr(p: *const u16) -> String {
    let mut n = 0;
    // SAFETY: a NUL-terminated string of the caller's.
    unsafe {
        while *p.add(n) != 0 {
            n += 1;
        }
        String::from_utf16_lossy(std::slice::from_raw_parts(p, n))
    }
}

/// `\\.\X` -> `\??\X` (RtlDosPathNameToNtPathName_U for device paths).
fn nt_path(win: &str) -> String {
    if let Some(rest) = win
        .strip_prefix("\\\\.\\")
        .or_else(|| win.strip_prefix("\\\\?\\"))
    {
        format!("\\??\\{rest}")
    } else if win.starts_with('\\') {
        win.to_string()
    } else {
        format!("\\??\\{win}")
    }
}

/// CreateFileW.
pub unsafe fn CreateFileW(
    name: *const u16,
    access: u32,
    share: u32,
    _sa: *const SECURITY_ATTRIBUTES,
    disposition: u32,
    flags: u32,
    _template: HANDLE,
) -> HANDLE {
    let path = nt_path(&wstr(name));
    let (nt_disp, trunc_after) = match disposition {
        1 => (2, false), // CREATE_NEW -> FILE_CREATE
        2 => (5, false), // CREATE_ALWAYS -> FILE_OVERWRITE_IF
        3 => (1, false), // OPEN_EXISTING -> FILE_OPEN
        4 => (3, false), // OPEN_ALWAYS -> FILE_OPEN_IF
        5 => match truncate_mode() {
            TruncateMode::Windows => (1, true),
            TruncateMode::ReactOs => (4, false), // FILE_OVERWRITE
        },
        _ => {
            fail_win32(87);
            return INVALID_HANDLE_VALUE;
        }
    };
    if disposition == 5 && access & (GENERIC_WRITE | 0x2) == 0 {
        // "TRUNCATE_EXISTING ... The calling process must open the file with
        // the GENERIC_WRITE bit set" (CreateFileW).
        fail_win32(87);
        return INVALID_HANDLE_VALUE;
    }
    let mut options = FILE_NON_DIRECTORY_FILE;
    if flags & FILE_FLAG_OVERLAPPED == 0 {
        options |= FILE_SYNCHRONOUS_IO_NONALERT;
    }
    let desired = access | SYNCHRONIZE | FILE_READ_ATTRIBUTES;
    match io::create(&path, desired, share, nt_disp, options, flags & 0xFFFF) {
        Err(st) => {
            fail(st);
            INVALID_HANDLE_VALUE
        }
        Ok(o) => {
            let h = insert(Obj::File(o.file.clone()));
            if trunc_after {
                let st = o
                    .file
                    .set_information(FILE_ALLOCATION_INFORMATION, &0i64.to_le_bytes());
                if st < 0 {
                    // SAFETY: the handle just made.
                    unsafe { CloseHandle(h) };
                    fail(st);
                    return INVALID_HANDLE_VALUE;
                }
            }
            let exists = (disposition == 4 && o.information == FILE_OPENED)
                || (disposition == 2 && o.information == FILE_OVERWRITTEN);
            LAST_ERROR.with(|c| c.set(if exists { 183 } else { 0 }));
            h
        }
    }
}

/// CloseHandle.
pub unsafe fn CloseHandle(h: HANDLE) -> BOOL {
    let o = HANDLES
        .lock()
        .unwrap()
        .as_mut()
        .and_then(|g| g.1.remove(&(h as usize)));
    match o {
        Some(Obj::File(f)) => {
            f.close_handle();
            TRUE
        }
        Some(Obj::Event(_)) => TRUE,
        None => fail_win32(6),
    }
}

fn offset_of(ov: *const OVERLAPPED) -> i64 {
    // SAFETY: the caller's OVERLAPPED.
    unsafe {
        (((*ov).Anonymous.Anonymous.OffsetHigh as u64) << 32
            | (*ov).Anonymous.Anonymous.Offset as u64) as i64
    }
}

fn ov_event(ov: *const OVERLAPPED) -> Option<Arc<Event>> {
    if ov.is_null() {
        return None;
    }
    // SAFETY: the caller's OVERLAPPED.
    let h = unsafe { (*ov).hEvent };
    let e = event(h);
    if let Some(e) = &e {
        e.reset();
    }
    e
}

fn transfer(
    h: HANDLE,
    write: bool,
    buf: usize,
    len: u32,
    done: *mut u32,
    ov: *mut OVERLAPPED,
) -> BOOL {
    let Some(f) = file(h) else {
        return fail_win32(6);
    };
    if !done.is_null() {
        // SAFETY: the caller's out parameter.
        unsafe { *done = 0 };
    }
    if !f.synchronous && ov.is_null() {
        return fail_win32(87);
    }
    let _serial = f.serialise();
    let offset = if ov.is_null() {
        f.position()
    } else {
        offset_of(ov)
    };
    if !ov.is_null() {
        // SAFETY: the caller's OVERLAPPED.
        unsafe {
            (*ov).Internal = STATUS_PENDING as usize;
            (*ov).InternalHigh = 0;
        }
    }
    let io = Io {
        overlapped: ov as usize,
        event: ov_event(ov),
        asynchronous: !f.synchronous,
        ..Default::default()
    };
    match f.read_write(write, buf, len as usize, offset, io) {
        Outcome::Pending => fail_win32(997),
        Outcome::Done(st, n) => {
            if st == 0xC000_0011u32 as i32 && f.synchronous && !write {
                return TRUE; // end of file: success, 0 bytes
            }
            if st < 0 {
                return fail(st);
            }
            if !done.is_null() {
                // SAFETY: the caller's out parameter.
                unsafe { *done = n as u32 };
            }
            TRUE
        }
    }
}

/// ReadFile.
pub unsafe fn ReadFile(
    h: HANDLE,
    buf: *mut u8,
    len: u32,
    read: *mut u32,
    ov: *mut OVERLAPPED,
) -> BOOL {
    transfer(h, false, buf as usize, len, read, ov)
}

/// WriteFile.
pub unsafe fn WriteFile(
    h: HANDLE,
    buf: *const u8,
    len: u32,
    written: *mut u32,
    ov: *mut OVERLAPPED,
) -> BOOL {
    transfer(h, true, buf as usize, len, written, ov)
}

/// DeviceIoControl.
#[allow(clippy::too_many_arguments)] // the Win32 signature
pub unsafe fn DeviceIoControl(
    h: HANDLE,
    code: u32,
    input: *const c_void,
    in_len: u32,
    output: *mut c_void,
    out_len: u32,
    returned: *mut u32,
    ov: *mut OVERLAPPED,
) -> BOOL {
    let Some(f) = file(h) else {
        return fail_win32(6);
    };
    // The CTL_CODE's required access against the handle's granted access.
    let need = (code >> 14) & 3;
    if (need & 1 != 0 && f.granted & io::FILE_READ_DATA == 0)
        || (need & 2 != 0 && f.granted & io::FILE_WRITE_DATA == 0)
    {
        return fail_win32(5);
    }
    if !f.synchronous && ov.is_null() {
        return fail_win32(87);
    }
    let _serial = f.serialise();
    if !ov.is_null() {
        // SAFETY: the caller's OVERLAPPED.
        unsafe { (*ov).Internal = STATUS_PENDING as usize };
    }
    let io = Io {
        overlapped: ov as usize,
        event: ov_event(ov),
        asynchronous: !f.synchronous,
        ..Default::default()
    };
    match f.ioctl(
        code,
        input as usize,
        in_len as usize,
        output as usize,
        out_len as usize,
        io,
    ) {
        Outcome::Pending => fail_win32(997),
        Outcome::Done(st, n) => {
            if !returned.is_null() && (st as u32) >> 30 != 3 {
                // SAFETY: the caller's out parameter.
                unsafe { *returned = n as u32 };
            }
            if st < 0 || (st as u32) >> 30 == 2 {
                return fail(st);
            }
            TRUE
        }
    }
}

/// NtQueryInformationFile: FilePositionInformation of a synchronous file
/// object is the I/O manager's own (no IRP).
pub fn query_information(f: &Arc<File>, class: u32, len: usize) -> Result<Vec<u8>, i32> {
    if class == FILE_POSITION_INFORMATION && f.synchronous {
        if len < 8 {
            return Err(io::STATUS_INFO_LENGTH_MISMATCH);
        }
        return Ok(f.position().to_le_bytes().to_vec());
    }
    let mut out = vec![0u8; len];
    let (st, n) = f.query_information(class, out.as_mut_ptr() as usize, len);
    if st < 0 {
        return Err(st);
    }
    out.truncate(n);
    Ok(out)
}

/// NtSetInformationFile: the access each class needs (ZwSetInformationFile:
/// FileEndOfFileInformation and FileAllocationInformation need
/// FILE_WRITE_DATA); FilePositionInformation of a synchronous file object is
/// served by the I/O manager (a negative position is STATUS_INVALID_PARAMETER).
pub fn set_information(f: &Arc<File>, class: u32, data: &[u8]) -> i32 {
    if matches!(
        class,
        FILE_END_OF_FILE_INFORMATION | FILE_ALLOCATION_INFORMATION
    ) && f.granted & io::FILE_WRITE_DATA == 0
    {
        return io::STATUS_ACCESS_DENIED;
    }
    if class == FILE_POSITION_INFORMATION && f.synchronous {
        let p = i64::from_le_bytes(data[..8].try_into().unwrap());
        if p < 0 {
            return io::STATUS_INVALID_PARAMETER;
        }
        f.set_position(p);
        return 0;
    }
    let _serial = f.serialise();
    f.set_information(class, data)
}

fn size_of_file(f: &Arc<File>) -> Result<i64, i32> {
    let _serial = f.serialise();
    let b = query_information(f, FILE_STANDARD_INFORMATION, 24)?;
    if b.len() < 16 {
        return Err(io::STATUS_BUFFER_TOO_SMALL);
    }
    Ok(i64::from_le_bytes(b[8..16].try_into().unwrap()))
}

/// SetFilePointerEx.
pub unsafe fn SetFilePointerEx(h: HANDLE, dist: i64, new: *mut i64, method: u32) -> BOOL {
    let Some(f) = file(h) else {
        return fail_win32(6);
    };
    let base = match method {
        0 => 0,
        1 => match query_information(&f, FILE_POSITION_INFORMATION, 8) {
            Ok(b) if b.len() == 8 => i64::from_le_bytes(b[..8].try_into().unwrap()),
            Ok(_) => return fail(io::STATUS_BUFFER_TOO_SMALL),
            Err(st) => return fail(st),
        },
        2 => match size_of_file(&f) {
            Ok(s) => s,
            Err(st) => return fail(st),
        },
        _ => return fail_win32(87),
    };
    let Some(pos) = base.checked_add(dist) else {
        return fail_win32(87);
    };
    if pos < 0 {
        return fail_win32(131); // ERROR_NEGATIVE_SEEK
    }
    let st = set_information(&f, FILE_POSITION_INFORMATION, &pos.to_le_bytes());
    if st < 0 {
        return fail(st);
    }
    if !new.is_null() {
        // SAFETY: the caller's out parameter.
        unsafe { *new = pos };
    }
    TRUE
}

/// GetFileSizeEx.
pub unsafe fn GetFileSizeEx(h: HANDLE, size: *mut i64) -> BOOL {
    let Some(f) = file(h) else {
        return fail_win32(6);
    };
    match size_of_file(&f) {
        Ok(s) => {
            // SAFETY: the caller's out parameter.
            unsafe { *size = s };
            TRUE
        }
        Err(st) => fail(st),
    }
}

/// SetEndOfFile: FileEndOfFileInformation, then FileAllocationInformation.
pub unsafe fn SetEndOfFile(h: HANDLE) -> BOOL {
    let Some(f) = file(h) else {
        return fail_win32(6);
    };
    let pos = match query_information(&f, FILE_POSITION_INFORMATION, 8) {
        Ok(b) if b.len() == 8 => b,
        Ok(_) => return fail(io::STATUS_BUFFER_TOO_SMALL),
        Err(st) => return fail(st),
    };
    let st = set_information(&f, FILE_END_OF_FILE_INFORMATION, &pos);
    if st < 0 {
        return fail(st);
    }
    let st = set_information(&f, FILE_ALLOCATION_INFORMATION, &pos);
    if st < 0 {
        return fail(st);
    }
    TRUE
}

/// CancelIoEx: FALSE with ERROR_NOT_FOUND when nothing was outstanding.
pub unsafe fn CancelIoEx(h: HANDLE, ov: *const OVERLAPPED) -> BOOL {
    let Some(f) = file(h) else {
        return fail_win32(6);
    };
    if f.cancel(ov as usize) == 0 {
        return fail_win32(1168);
    }
    TRUE
}

/// CreateEventW (unnamed events only).
pub unsafe fn CreateEventW(
    _sa: *const SECURITY_ATTRIBUTES,
    manual: BOOL,
    initial: BOOL,
    _name: *const u16,
) -> HANDLE {
    let e = Arc::new(Event {
        manual: manual != 0,
        ..Default::default()
    });
    if initial != 0 {
        e.set();
    }
    insert(Obj::Event(e))
}

pub unsafe fn SetEvent(h: HANDLE) -> BOOL {
    match event(h) {
        Some(e) => {
            e.set();
            TRUE
        }
        None => fail_win32(6),
    }
}

/// WaitForSingleObject on an event: WAIT_OBJECT_0 or WAIT_TIMEOUT.
pub unsafe fn WaitForSingleObject(h: HANDLE, ms: u32) -> u32 {
    match event(h) {
        Some(e) => {
            if e.wait(ms) {
                0
            } else {
                0x102
            }
        }
        None => {
            fail_win32(6);
            0xFFFF_FFFF
        }
    }
}

/// GetOverlappedResult.
pub unsafe fn GetOverlappedResult(
    _h: HANDLE,
    ov: *const OVERLAPPED,
    n: *mut u32,
    wait: BOOL,
) -> BOOL {
    // SAFETY: the caller's OVERLAPPED, written by completion.
    unsafe {
        if wait != 0 {
            if let Some(e) = event((*ov).hEvent) {
                while std::ptr::read_volatile(&(*ov).Internal) == STATUS_PENDING as usize {
                    e.wait(50);
                }
            }
        }
        let st = std::ptr::read_volatile(&(*ov).Internal) as u32 as i32;
        if st == STATUS_PENDING {
            return fail_win32(996); // ERROR_IO_INCOMPLETE
        }
        *n = (*ov).InternalHigh as u32;
        if st < 0 {
            return fail(st);
        }
        TRUE
    }
}

/// The file object behind a handle (for harness checks).
pub fn file_of(h: HANDLE) -> Option<Arc<File>> {
    file(h)
}

//! The `windows` and `wine` targets: scull.sys's `\\.\Scull*` devices through
//! CreateFileW, ReadFile, WriteFile, DeviceIoControl, SetFilePointerEx,
//! SetEndOfFile and CancelIoEx (windows-sys).
//!
//! - `windows`: the native Win32 idioms. Sequential I/O uses the handle's file
//!   pointer; seeks are SetFilePointerEx (FILE_END asks the driver through
//!   IRP_MJ_QUERY_INFORMATION); SetEndOfFile; truncating opens are
//!   TRUNCATE_EXISTING; non-blocking handles open `\\.\Dev\nonblock`.
//! - `wine`: Wine 8's I/O manager delivers to a driver no create disposition,
//!   no path suffix, no file-information IRPs, and a zero ByteOffset for a
//!   read without one. So this target keeps the position itself and passes
//!   it as an explicit offset (OVERLAPPED.Offset), computes SEEK_SET/CUR the
//!   way the I/O manager does, and uses scull-core's bridge IOCTLs
//!   (`WIN_IOCTL_OPEN_FLAGS`, `WIN_IOCTL_GET_EOF`, `WIN_IOCTL_SET_EOF`), which
//!   run the same driver code as the native requests.
//!
//! Win32 errors map back to [`Error`] with scull-core's table; codes outside
//! it (e.g. ERROR_FILE_NOT_FOUND for a missing device) become `Invalid`.
//! `spawn_writer` runs a child process: this executable, re-run with a hidden
//! subcommand (see [`child_main`]).

use super::{Caps, Handle, Join, OpenOpts, Pending, Target, Who};
use crate::conformance::Case;
use scull_core::devices::Dev;
use scull_core::ioctl::{self, ArgIn, ArgOut, Cmd};
use scull_core::report::field;
use scull_core::store::{self, Whence};
use scull_core::Error;
use std::ffi::c_void;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::ptr::null_mut;
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_IO_PENDING, ERROR_MORE_DATA, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE,
    WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, ReadFile, SetEndOfFile, SetFilePointerEx, WriteFile, FILE_BEGIN, FILE_CURRENT, FILE_END, FILE_FLAG_OVERLAPPED,
    FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING, TRUNCATE_EXISTING,
};
use windows_sys::Win32::System::Threading::{CreateEventW, WaitForSingleObject};
use windows_sys::Win32::System::IO::{CancelIoEx, DeviceIoControl, OVERLAPPED};

/// The hidden subcommand of a spawned writer.
const CHILD_WRITER: &str = "__scull_child_writer";
/// The hidden subcommand of `Who::Other`: a child process that holds one
/// handle and runs the parent's requests on it (see [`proxy`]).
const CHILD_PROXY: &str = "__scull_child_proxy";

pub use scull_core::ioctl::{
    TestReport, TestRequest, TEST_MODE_FAULTS as MODE_FAULTS, TEST_MODE_IDENTITY as MODE_IDENTITY, TEST_OP_DEMOTE, TEST_OP_FAIL_AT,
    TEST_OP_QUERY, WIN_IOCTL_TEST,
};

/// One test op on a fresh handle of scull0.
pub fn test_op(wine: bool, op: u32, arg: i32) -> Result<TestReport, Error> {
    let h = open_raw(Dev::Scull(0), OpenOpts::R, wine, false)?;
    let input = TestRequest { op, arg }.encode();
    let out = device_io_control(h.0, WIN_IOCTL_TEST, &input, TestReport::LEN)?;
    TestReport::decode(&out)
}

/// Win32 error → scull error (scull-core's table; anything else is `Invalid`).
fn map(code: u32) -> Error {
    Error::from_win32(code).unwrap_or(Error::Invalid)
}

fn last_error() -> Error {
    // SAFETY: reads the calling thread's last-error value.
    map(unsafe { GetLastError() })
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

fn path(dev: Dev, suffix: bool) -> String {
    let mut name = String::new();
    let _ = dev.windows_name(&mut name);
    if suffix {
        format!(r"\\.\{name}\{}", ioctl::WIN_NONBLOCK_SUFFIX)
    } else {
        format!(r"\\.\{name}")
    }
}

/// An owned Win32 handle.
struct Owned(HANDLE);

// SAFETY: a kernel handle may be used from any thread.
unsafe impl Send for Owned {}
// SAFETY: the handle value is only read; the Win32 calls on it are thread-safe.
unsafe impl Sync for Owned {}

impl Drop for Owned {
    fn drop(&mut self) {
        if !self.0.is_null() && self.0 != INVALID_HANDLE_VALUE {
            // SAFETY: a handle we opened and still own.
            unsafe { CloseHandle(self.0) };
        }
    }
}

fn open_raw(dev: Dev, o: OpenOpts, wine: bool, overlapped: bool) -> Result<Owned, Error> {
    let h = create_raw(dev, o, wine, overlapped)?;
    // Wine does not wait for IRP_MJ_CREATE, so a refused open still yields a
    // handle: the bridge IOCTL, sent on every open, returns the refusal (and
    // waits while a scullwuid create is pended).
    if wine {
        send_open_flags(&h, o)?;
    }
    Ok(h)
}

fn send_open_flags(h: &Owned, o: OpenOpts) -> Result<(), Error> {
    let mut bits = 0u32;
    if o.nonblock {
        bits |= ioctl::WIN_OPEN_NONBLOCK;
    }
    if o.truncate {
        bits |= ioctl::WIN_OPEN_TRUNCATE;
    }
    device_io_control(h.0, ioctl::WIN_IOCTL_OPEN_FLAGS, &bits.to_le_bytes(), 0).map(drop)
}

/// CreateFileW alone (no bridge call).
fn create_raw(dev: Dev, o: OpenOpts, wine: bool, overlapped: bool) -> Result<Owned, Error> {
    let mut access = 0;
    if o.read {
        access |= GENERIC_READ;
    }
    if o.write || o.truncate {
        access |= GENERIC_WRITE;
    }
    let disposition = if o.truncate && !wine { TRUNCATE_EXISTING } else { OPEN_EXISTING };
    let flags = if overlapped { FILE_FLAG_OVERLAPPED } else { 0 };
    let p = wide(&path(dev, o.nonblock && !wine));
    // SAFETY: a NUL-terminated path; no security attributes or template.
    let h = unsafe {
        CreateFileW(p.as_ptr(), access, FILE_SHARE_READ | FILE_SHARE_WRITE, null_mut(), disposition, flags, null_mut())
    };
    if h == INVALID_HANDLE_VALUE {
        return Err(last_error());
    }
    Ok(Owned(h))
}

/// DeviceIoControl on a synchronous handle. ERROR_MORE_DATA keeps the data
/// (returned as `Err((BufferTooSmall, data))` by [`device_io_control_more`]).
fn device_io_control(h: HANDLE, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
    device_io_control_more(h, code, input, out_len).map_err(|(e, _)| e)
}

fn device_io_control_more(h: HANDLE, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, (Error, Vec<u8>)> {
    let mut out = vec![0u8; out_len];
    let mut got = 0u32;
    let inp = if input.is_empty() { std::ptr::null() } else { input.as_ptr() as *const c_void };
    let outp = if out_len == 0 { null_mut() } else { out.as_mut_ptr() as *mut c_void };
    // SAFETY: buffers valid for the lengths given; a synchronous handle.
    let ok = unsafe { DeviceIoControl(h, code, inp, input.len() as u32, outp, out_len as u32, &mut got, null_mut()) };
    if ok == 0 {
        // SAFETY: reads the thread's last error.
        let code = unsafe { GetLastError() };
        if code == ERROR_MORE_DATA {
            out.truncate(got as usize);
            return Err((Error::BufferTooSmall, out));
        }
        return Err((map(code), Vec::new()));
    }
    out.truncate(got as usize);
    Ok(out)
}

pub struct WinHandle {
    h: Owned,
    dev: Dev,
    wine: bool,
    /// The file position, kept here on `wine` (see the module docs).
    pos: u64,
}

impl WinHandle {
    fn explicit(&self) -> bool {
        self.wine && !matches!(self.dev, Dev::Pipe(_))
    }

    fn overlapped_at(pos: u64) -> OVERLAPPED {
        // SAFETY: OVERLAPPED is plain data; all-zero is its initial state.
        let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
        ov.Anonymous.Anonymous.Offset = pos as u32;
        ov.Anonymous.Anonymous.OffsetHigh = (pos >> 32) as u32;
        ov
    }

    fn size(&mut self) -> Result<u64, Error> {
        let out = device_io_control(self.h.0, ioctl::WIN_IOCTL_GET_EOF, &[], 8)?;
        let b: [u8; 8] = out.as_slice().try_into().map_err(|_| Error::Invalid)?;
        Ok(i64::from_le_bytes(b) as u64)
    }
}

impl Handle for WinHandle {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut n = 0u32;
        let mut ov = Self::overlapped_at(self.pos);
        let ovp: *mut OVERLAPPED = if self.explicit() { &mut ov } else { null_mut() };
        // SAFETY: `buf` is writable for its length; a synchronous handle, so
        // the call returns when the read has completed.
        let ok = unsafe { ReadFile(self.h.0, buf.as_mut_ptr(), buf.len() as u32, &mut n, ovp) };
        if ok == 0 {
            return Err(last_error());
        }
        self.pos += n as u64;
        Ok(n as usize)
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        let mut n = 0u32;
        let mut ov = Self::overlapped_at(self.pos);
        let ovp: *mut OVERLAPPED = if self.explicit() { &mut ov } else { null_mut() };
        // SAFETY: as in `read`.
        let ok = unsafe { WriteFile(self.h.0, buf.as_ptr(), buf.len() as u32, &mut n, ovp) };
        if ok == 0 {
            return Err(last_error());
        }
        self.pos += n as u64;
        Ok(n as usize)
    }

    fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error> {
        if self.wine {
            // What the I/O manager does for a synchronous handle; FILE_END
            // asks the driver for the size.
            let size = if whence == Whence::End { self.size()? } else { 0 };
            self.pos = store::seek(self.pos, size, whence, off)?;
            return Ok(self.pos);
        }
        let method = match whence {
            Whence::Set => FILE_BEGIN,
            Whence::Cur => FILE_CURRENT,
            Whence::End => FILE_END,
        };
        let mut new = 0i64;
        // SAFETY: a valid handle and out pointer.
        if unsafe { SetFilePointerEx(self.h.0, off, &mut new, method) } == 0 {
            return Err(last_error());
        }
        self.pos = new as u64;
        Ok(self.pos)
    }

    fn set_len(&mut self, len: u64) -> Result<(), Error> {
        if self.wine {
            device_io_control(self.h.0, ioctl::WIN_IOCTL_SET_EOF, &(len as i64).to_le_bytes(), 0)?;
            return Ok(());
        }
        let keep = self.pos;
        self.seek(Whence::Set, i64::try_from(len).map_err(|_| Error::FileTooBig)?)?;
        // SAFETY: a valid handle.
        let r = if unsafe { SetEndOfFile(self.h.0) } == 0 { Err(last_error()) } else { Ok(()) };
        self.seek(Whence::Set, keep as i64)?;
        r
    }

    fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32, Error> {
        let input = value.to_le_bytes();
        let input: &[u8] = if cmd.arg_in() == ArgIn::None { &[] } else { &input };
        let out_len = cmd.windows_out_len();
        if cmd.arg_out() == ArgOut::Text {
            return Err(Error::Invalid);
        }
        let out = device_io_control(self.h.0, cmd.windows_code(), input, out_len)?;
        if cmd.arg_out() == ArgOut::None {
            return Ok(0);
        }
        let b: [u8; 4] = out.as_slice().try_into().map_err(|_| Error::Invalid)?;
        Ok(i32::from_le_bytes(b))
    }

    fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
        device_io_control(self.h.0, code, input, out_len)
    }

    /// STATS, growing the buffer while the driver says ERROR_MORE_DATA.
    fn stats(&mut self) -> Result<String, Error> {
        let mut len = 4096;
        loop {
            match device_io_control_more(self.h.0, Cmd::Stats.windows_code(), &[], len) {
                Ok(out) => return Ok(String::from_utf8_lossy(&out).into_owned()),
                Err((Error::BufferTooSmall, _)) if len < (1 << 20) => len *= 4,
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// A writer child process.
struct ChildWriter(Child);

impl Join for ChildWriter {
    fn join(self: Box<Self>) -> Result<usize, Error> {
        let out = self.0.wait_with_output().map_err(|_| Error::Invalid)?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let code = text.trim().strip_prefix("error ").and_then(|c| c.parse::<u32>().ok());
            return Err(code.map(map).unwrap_or(Error::Invalid));
        }
        text.trim().parse().map_err(|_| Error::Invalid)
    }
}

/// A read pended in the driver, on its own overlapped handle.
struct PendingRead {
    h: Option<Owned>,
    event: Owned,
    // Boxed: the kernel writes into both until the read completes.
    ov: Box<OVERLAPPED>,
    buf: Box<[u8]>,
    finished: bool,
}

// SAFETY: the handle, event and buffers are owned; Win32 allows their use from any thread.
unsafe impl Send for PendingRead {}

/// `STATUS_PENDING` as OVERLAPPED.Internal holds it while the read runs.
const STATUS_PENDING: usize = 0x103;

impl PendingRead {
    fn completed(&self) -> bool {
        // SAFETY: `Internal` is written by the kernel with one store at completion.
        let st = unsafe { std::ptr::read_volatile(&self.ov.Internal) };
        st != STATUS_PENDING
    }
}

impl Pending for PendingRead {
    fn is_done(&mut self) -> bool {
        self.completed()
    }

    fn cancel(&mut self, close: bool) -> Result<(), Error> {
        if close {
            // Closing the handle must complete the pended IRP (CLEANUP/CLOSE).
            self.h = None;
            return Ok(());
        }
        let h = self.h.as_ref().ok_or(Error::Invalid)?;
        // SAFETY: the OVERLAPPED of the read issued on this handle.
        if unsafe { CancelIoEx(h.0, &*self.ov) } == 0 {
            return Err(last_error());
        }
        Ok(())
    }

    fn wait(mut self: Box<Self>, timeout: Duration) -> Result<Vec<u8>, Error> {
        let ms = timeout.as_millis().min(u32::MAX as u128 - 1) as u32;
        // SAFETY: our event handle.
        let w = unsafe { WaitForSingleObject(self.event.0, ms) };
        if w != WAIT_OBJECT_0 && !self.completed() {
            return Err(Error::Invalid);
        }
        self.finished = true;
        // The final NTSTATUS and count, readable even after the handle closed.
        let status = self.ov.Internal as u32 as i32;
        let n = self.ov.InternalHigh;
        if status < 0 {
            return Err(Error::from_ntstatus(status).unwrap_or(Error::Invalid));
        }
        Ok(self.buf[..n.min(self.buf.len())].to_vec())
    }
}

impl Drop for PendingRead {
    fn drop(&mut self) {
        if !self.finished && !self.completed() {
            if let Some(h) = &self.h {
                // SAFETY: our handle and OVERLAPPED.
                unsafe { CancelIoEx(h.0, &*self.ov) };
            }
            // The kernel must be done with `ov` and `buf` before they are freed.
            // SAFETY: our event.
            unsafe { WaitForSingleObject(self.event.0, 10_000) };
        }
    }
}

pub struct WinTarget {
    wine: bool,
    nr_devs: u8,
    p_nr_devs: u8,
    privileged: bool,
    /// `WIN_IOCTL_TEST` modes (0 when the driver has none on).
    modes: u32,
}

impl WinTarget {
    pub fn new(wine: bool) -> Self {
        let count = |f: fn(u8) -> Dev| {
            (0..64u8).take_while(|&n| open_raw(f(n), OpenOpts::R, wine, false).is_ok()).count() as u8
        };
        let nr_devs = count(Dev::Scull);
        let p_nr_devs = count(Dev::Pipe);
        // Privileged means the driver accepts a privileged command: a
        // no-change exchange of the quantum (XQUANTUM with its own value).
        let privileged = open_raw(Dev::Scull(0), OpenOpts::R, wine, false)
            .ok()
            .and_then(|h| {
                let mut w = WinHandle { h, dev: Dev::Scull(0), wine, pos: 0 };
                let q = w.ioctl(Cmd::QQuantum, 0).ok()?;
                w.ioctl(Cmd::HQuantum, q).ok()
            })
            .is_some();
        let modes = test_op(wine, TEST_OP_QUERY, 0).map_or(0, |r| r.modes);
        WinTarget { wine, nr_devs, p_nr_devs, privileged, modes }
    }
}

impl Target for WinTarget {
    fn name(&self) -> &str {
        if self.wine {
            "wine"
        } else {
            "windows"
        }
    }

    fn caps(&self) -> Caps {
        Caps {
            privileged: self.privileged,
            // Test identity mode: every process is its own user, and a
            // proxy child process that gave up the override is `Who::Other`.
            other_user: self.modes & MODE_IDENTITY != 0,
            poll: false,
            cancel: true,
            processes: true,
            priv_dev: true,
            linux_abi: false,
            pipe_seek_refused: false,
            // SetEndOfFile (windows) / WIN_IOCTL_SET_EOF (wine) reach the driver.
            set_len: true,
            nr_devs: self.nr_devs,
            p_nr_devs: self.p_nr_devs,
        }
    }

    fn open_as(&self, who: Who, dev: Dev, opts: OpenOpts) -> Result<Box<dyn Handle>, Error> {
        if who == Who::Other {
            if self.modes & MODE_IDENTITY == 0 {
                return Err(Error::NotTty);
            }
            let mut p = proxy::Proxy::spawn(self.wine, dev, opts)?;
            match p.opened(Duration::from_secs(60)) {
                Ok(()) => return Ok(Box::new(p)),
                // Still pending after a minute: not an outcome any case expects.
                Err(Error::WouldBlock) if p.open.is_none() => return Err(Error::Invalid),
                Err(e) => return Err(e),
            }
        }
        let h = open_raw(dev, opts, self.wine, false)?;
        Ok(Box::new(WinHandle { h, dev, wine: self.wine, pos: 0 }))
    }

    fn spawn_writer(&self, dev: Dev, data: Vec<u8>, delay: Duration) -> Result<Box<dyn Join>, Error> {
        let exe = std::env::current_exe().map_err(|_| Error::Invalid)?;
        let mut name = String::new();
        let _ = dev.windows_name(&mut name);
        let mut child = Command::new(exe)
            .args([CHILD_WRITER, self.name(), &name, &delay.as_millis().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|_| Error::Invalid)?;
        let mut stdin = child.stdin.take().ok_or(Error::Invalid)?;
        // A thread feeds the data so that a large payload cannot dead-lock us.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        Ok(Box::new(ChildWriter(child)))
    }

    fn read_cancellable(&self, dev: Dev, len: usize) -> Result<Box<dyn Pending>, Error> {
        let h = open_raw(dev, OpenOpts::R, self.wine, true)?;
        // SAFETY: an unnamed manual-reset event, initially clear.
        let ev = unsafe { CreateEventW(null_mut(), 1, 0, null_mut()) };
        if ev.is_null() {
            return Err(last_error());
        }
        let event = Owned(ev);
        // SAFETY: OVERLAPPED is plain data.
        let mut ov: Box<OVERLAPPED> = Box::new(unsafe { std::mem::zeroed() });
        ov.hEvent = event.0;
        let mut buf = vec![0u8; len].into_boxed_slice();
        let mut n = 0u32;
        // SAFETY: `buf` and `ov` are boxed and outlive the I/O (see Drop).
        let ok = unsafe { ReadFile(h.0, buf.as_mut_ptr(), len as u32, &mut n, &mut *ov) };
        let mut p = PendingRead { h: Some(h), event, ov, buf, finished: false };
        if ok == 0 {
            // SAFETY: reads the thread's last error.
            let e = unsafe { GetLastError() };
            if e != ERROR_IO_PENDING {
                p.finished = true;
                return Err(map(e));
            }
        }
        Ok(Box::new(p))
    }

    fn extra_cases(&self) -> Vec<Case> {
        extra::all()
    }
}

/// The targets this module provides, by name.
pub fn by_name(name: &str) -> Option<Box<dyn Target>> {
    match name {
        "windows" => Some(Box::new(WinTarget::new(false))),
        "wine" => Some(Box::new(WinTarget::new(true))),
        _ => None,
    }
}

/// Hidden child-process entry points. `__scull_child_writer <target> <Dev>
/// <delay ms>`: after the delay, opens the device for writing, writes all of
/// stdin (looping on partial writes), prints the count and exits 0; on error
/// prints `error <win32>` and exits 1.
pub fn child_main(args: &[String]) -> Option<u8> {
    match args.first().map(String::as_str) {
        Some(CHILD_WRITER) => {}
        Some(CHILD_PROXY) => return Some(proxy::child(&args[1..])),
        Some("win-fault-sweep") => return Some(harness::fault_sweep(&args[1..])),
        Some("win-pend-read") => return Some(harness::pend_read(&args[1..])),
        Some("win-test") => return Some(harness::test_cmd(&args[1..])),
        _ => return None,
    }
    let wine = args.get(1).map(String::as_str) == Some("wine");
    let dev = args.get(2).and_then(|s| Dev::parse(s));
    let delay = args.get(3).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let Some(dev) = dev else {
        println!("error 87");
        return Some(1);
    };
    let mut data = Vec::new();
    if std::io::stdin().read_to_end(&mut data).is_err() {
        println!("error 87");
        return Some(1);
    }
    std::thread::sleep(Duration::from_millis(delay));
    let mut h = match open_raw(dev, OpenOpts::W, wine, false) {
        Ok(h) => WinHandle { h, dev, wine, pos: 0 },
        Err(e) => {
            println!("error {}", e.win32());
            return Some(1);
        }
    };
    let mut done = 0;
    while done < data.len() {
        match h.write(&data[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => {
                println!("error {}", e.win32());
                return Some(1);
            }
        }
    }
    println!("{done}");
    Some(0)
}

/// Windows-only cases: the DeviceIoControl-level ABI, cancellation and
/// handle close with pended IRPs, the bridge IOCTLs.
mod extra {
    use super::*;

    type R = Result<(), String>;

    macro_rules! check {
        ($cond:expr, $($msg:tt)*) => {
            if !$cond {
                return Err(format!($($msg)*));
            }
        };
    }

    fn always(_: &Caps) -> Option<&'static str> {
        None
    }

    fn ok<T>(r: Result<T, Error>, what: &str) -> Result<T, String> {
        r.map_err(|e| format!("{what}: {e}"))
    }

    fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, want: Error, what: &str) -> R {
        match r {
            Err(e) if e == want => Ok(()),
            other => Err(format!("{what}: got {other:?}, want Err({want:?})")),
        }
    }

    fn stats_field(t: &dyn Target, dev: &str, key: &str) -> Result<String, String> {
        let mut h = ok(t.open(Dev::Scull(0), OpenOpts::R), "open scull0")?;
        let text = ok(h.stats(), "stats")?;
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(dev))
            .ok_or_else(|| format!("no {dev} line in:\n{text}"))?;
        field(line, key).map(str::to_owned).ok_or_else(|| format!("no {key} in {line}"))
    }

    fn wait_until(mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    macro_rules! case {
        ($name:ident) => {
            Case { name: concat!("win_", stringify!($name)), needs: always, run: $name }
        };
    }

    pub fn all() -> Vec<Case> {
        vec![
            case!(pended_read_counted_then_cancelled),
            case!(cancelioex_leaves_other_reads_queued),
            case!(close_with_two_pended_reads),
            case!(pended_read_completed_by_child_process),
            case!(bad_ioctl_codes),
            case!(short_buffers_every_command),
            case!(stats_short_buffer_more_data),
            case!(bridge_ioctls_validate),
            case!(eof_and_set_len_through_driver),
            case!(unknown_path_suffix_refused),
            case!(scullpriv_per_process),
            Case { name: "win_wuid_pended_create_completed_by_owner_close", needs: second_user, run: wuid_pend },
            Case { name: "win_wuid_pended_create_cancelled", needs: second_user, run: wuid_cancel_pended },
        ]
    }

    /// A pended IRP_MJ_CREATE needs an opener with another identity: the
    /// driver's test identity mode (`scull_test_identity=1`) gives each
    /// process its own, and `Who::Other` is a child process (see [`proxy`]).
    /// Under Wine, which does not wait for IRP_MJ_CREATE, the wait shows in
    /// the bridge call that follows CreateFile.
    fn second_user(c: &Caps) -> Option<&'static str> {
        (!c.other_user).then_some("needs a second identity (load the driver with scull_test_identity=1)")
    }

    fn wuid_cancel_pended(t: &dyn Target) -> R {
        let wine = t.name() == "wine";
        let owner = ok(t.open(Dev::Wuid, OpenOpts::RW), "owner opens scullwuid")?;
        let base = ok(test_op(wine, TEST_OP_QUERY, 0), "test query")?;
        let mut p = ok(proxy::Proxy::spawn(wine, Dev::Wuid, OpenOpts::R), "spawn the other user")?;
        match p.opened(Duration::from_millis(700)) {
            Err(Error::WouldBlock) => {}
            other => return Err(format!("the other user's open did not wait: {other:?}")),
        }
        ok(p.cancel_open(), "send cancel")?;
        match p.opened(Duration::from_secs(10)) {
            Err(Error::Interrupted) => {}
            // Real Windows: CreateFile itself blocks; the child exits to cancel it.
            Err(Error::Invalid) if !wine => {}
            other => return Err(format!("the cancelled open: {other:?}, want ERROR_OPERATION_ABORTED")),
        }
        drop(p);
        let now = ok(test_op(wine, TEST_OP_QUERY, 0), "test query")?;
        check!(now.outstanding == base.outstanding, "the waiter's record leaked: {} blocks, {} before", now.outstanding, base.outstanding);
        drop(owner);
        // The cancelled waiter was not admitted: the device is free for anyone.
        let started = Instant::now();
        let q = ok(t.open_as(Who::Other, Dev::Wuid, OpenOpts::R), "another user opens the freed scullwuid")?;
        check!(started.elapsed() < Duration::from_secs(5), "the freed device made a new user wait");
        drop(q);
        drop(ok(t.open(Dev::Wuid, OpenOpts::R), "the first user reopens")?);
        Ok(())
    }

    fn wuid_pend(t: &dyn Target) -> R {
        let owner = ok(t.open(Dev::Wuid, OpenOpts::RW), "owner opens scullwuid")?;
        let started = Instant::now();
        let r = std::thread::scope(|s| {
            let waiter = s.spawn(|| t.open_as(Who::Other, Dev::Wuid, OpenOpts::R).map(drop));
            std::thread::sleep(Duration::from_millis(300));
            drop(owner);
            waiter.join()
        });
        let r = r.map_err(|_| "waiter panicked".to_string())?;
        ok(r, "the other user's open, completed by the owner's last close")?;
        check!(started.elapsed() >= Duration::from_millis(250), "the other user's open did not wait");
        Ok(())
    }

    fn pended_read_counted_then_cancelled(t: &dyn Target) -> R {
        let mut p = ok(t.read_cancellable(Dev::Pipe(1), 8), "pend a read")?;
        check!(
            wait_until(|| stats_field(t, "scullpipe1", "waiting_readers").as_deref() == Ok("1")),
            "the pended read is not counted: {:?}",
            stats_field(t, "scullpipe1", "waiting_readers")
        );
        check!(!p.is_done(), "a read on an empty pipe completed");
        ok(p.cancel(false), "CancelIoEx")?;
        expect_err(p.wait(Duration::from_secs(10)), Error::Interrupted, "cancelled read")?;
        let w = stats_field(t, "scullpipe1", "waiting_readers")?;
        check!(w == "0", "waiting_readers={w} after CancelIoEx");
        Ok(())
    }

    fn cancelioex_leaves_other_reads_queued(t: &dyn Target) -> R {
        let mut a = ok(t.read_cancellable(Dev::Pipe(2), 4), "read a")?;
        let b = ok(t.read_cancellable(Dev::Pipe(2), 4), "read b")?;
        check!(
            wait_until(|| stats_field(t, "scullpipe2", "waiting_readers").as_deref() == Ok("2")),
            "two pended reads expected: {:?}",
            stats_field(t, "scullpipe2", "waiting_readers")
        );
        ok(a.cancel(false), "cancel a")?;
        expect_err(a.wait(Duration::from_secs(10)), Error::Interrupted, "read a")?;
        let mut w = ok(t.open(Dev::Pipe(2), OpenOpts::W), "writer")?;
        check!(ok(w.write(b"left"), "write")? == 4, "write count");
        let got = ok(b.wait(Duration::from_secs(10)), "read b completes")?;
        check!(got == b"left", "read b got {got:?}");
        Ok(())
    }

    fn close_with_two_pended_reads(t: &dyn Target) -> R {
        let mut a = ok(t.read_cancellable(Dev::Pipe(3), 4), "read a")?;
        let mut b = ok(t.read_cancellable(Dev::Pipe(3), 4), "read b")?;
        check!(
            wait_until(|| stats_field(t, "scullpipe3", "waiting_readers").as_deref() == Ok("2")),
            "two pended reads expected"
        );
        ok(a.cancel(true), "close a")?;
        ok(b.cancel(true), "close b")?;
        expect_err(a.wait(Duration::from_secs(10)), Error::Interrupted, "read a")?;
        expect_err(b.wait(Duration::from_secs(10)), Error::Interrupted, "read b")?;
        check!(
            wait_until(|| stats_field(t, "scullpipe3", "readers").as_deref() == Ok("0")),
            "the closed handles still count as readers: {:?}",
            stats_field(t, "scullpipe3", "readers")
        );
        let w = stats_field(t, "scullpipe3", "waiting_readers")?;
        check!(w == "0", "waiting_readers={w}");
        let b = stats_field(t, "scullpipe3", "buffer")?;
        check!(b == "0", "the last close must free the pipe buffer, buffer={b}");
        Ok(())
    }

    fn pended_read_completed_by_child_process(t: &dyn Target) -> R {
        check!(t.caps().processes, "this target runs writers in threads");
        let p = ok(t.read_cancellable(Dev::Pipe(0), 5), "pend a read")?;
        let w = ok(t.spawn_writer(Dev::Pipe(0), b"child".to_vec(), Duration::from_millis(200)), "spawn")?;
        let got = ok(p.wait(Duration::from_secs(20)), "read completed by the child's write")?;
        check!(ok(w.join(), "child")? == 5, "child count");
        check!(got == b"child", "{got:?}");
        Ok(())
    }

    fn bad_ioctl_codes(t: &dyn Target) -> R {
        let mut h = ok(t.open(Dev::Scull(0), OpenOpts::R), "open")?;
        let q = Cmd::QQuantum.windows_code();
        let bad = [
            q | 3,                                            // METHOD_NEITHER
            q | (1 << 14),                                    // FILE_READ_ACCESS
            (q & 0xffff) | (0x22 << 16),                      // FILE_DEVICE_UNKNOWN
            ioctl::ctl_code(0x8000, 0x800 + 16, 0, 0),        // past MAXNR
            ioctl::ctl_code(0x8000, 0x7ff, 0, 0),             // below the base
            0,
        ];
        for code in bad {
            expect_err(h.ioctl_raw(code, &[0; 4], 4), Error::NotTty, &format!("code {code:#x}"))?;
        }
        Ok(())
    }

    fn short_buffers_every_command(t: &dyn Target) -> R {
        let mut h = ok(t.open(Dev::Scull(0), OpenOpts::R), "open")?;
        for cmd in Cmd::ALL {
            if cmd == Cmd::Stats {
                expect_err(h.ioctl_raw(cmd.windows_code(), &[], 0), Error::BufferTooSmall, "STATS, no output buffer")?;
                continue;
            }
            if cmd.windows_in_len() > 0 {
                let out = cmd.windows_out_len();
                expect_err(h.ioctl_raw(cmd.windows_code(), &[0; 3], out), Error::BufferTooSmall, &format!("{cmd:?} 3-byte input"))?;
            }
            if cmd.windows_out_len() > 0 {
                let inp = vec![0u8; cmd.windows_in_len()];
                expect_err(h.ioctl_raw(cmd.windows_code(), &inp, 3), Error::BufferTooSmall, &format!("{cmd:?} 3-byte output"))?;
            }
        }
        check!(ok(h.ioctl(Cmd::QQuantum, 0), "QQUANTUM")? == scull_core::geometry::DEFAULT_QUANTUM, "a short buffer changed a value");
        Ok(())
    }

    fn stats_short_buffer_more_data(t: &dyn Target) -> R {
        let mut h = ok(t.open(Dev::Scull(0), OpenOpts::R), "open")?;
        let full = ok(h.stats(), "stats")?;
        check!(full.len() > 20, "report too short: {full}");
        let wh = open_raw(Dev::Scull(0), OpenOpts::R, t.name() == "wine", false).map_err(|e| e.to_string())?;
        match device_io_control_more(wh.0, Cmd::Stats.windows_code(), &[], 10) {
            Err((Error::BufferTooSmall, part)) => {
                check!(part.len() == 10 && full.as_bytes().starts_with(&part), "partial report {part:?}");
            }
            other => return Err(format!("10-byte STATS: {other:?}, want ERROR_MORE_DATA with 10 bytes")),
        }
        Ok(())
    }

    fn bridge_ioctls_validate(t: &dyn Target) -> R {
        let mut h = ok(t.open(Dev::Scull(2), OpenOpts::RW), "open")?;
        expect_err(h.ioctl_raw(ioctl::WIN_IOCTL_OPEN_FLAGS, &[0; 2], 0), Error::BufferTooSmall, "OPEN_FLAGS 2 bytes")?;
        expect_err(h.ioctl_raw(ioctl::WIN_IOCTL_OPEN_FLAGS, &8u32.to_le_bytes(), 0), Error::Invalid, "OPEN_FLAGS unknown bit")?;
        expect_err(h.ioctl_raw(ioctl::WIN_IOCTL_GET_EOF, &[], 4), Error::BufferTooSmall, "GET_EOF 4 bytes")?;
        expect_err(h.ioctl_raw(ioctl::WIN_IOCTL_SET_EOF, &[0; 4], 0), Error::BufferTooSmall, "SET_EOF 4 bytes")?;
        expect_err(h.ioctl_raw(ioctl::WIN_IOCTL_SET_EOF, &(-1i64).to_le_bytes(), 0), Error::Invalid, "SET_EOF -1")?;
        let mut p = ok(t.open(Dev::Pipe(0), OpenOpts::R), "open pipe")?;
        expect_err(p.ioctl_raw(ioctl::WIN_IOCTL_GET_EOF, &[], 8), Error::NotSeekable, "GET_EOF on a pipe")?;
        Ok(())
    }

    fn eof_and_set_len_through_driver(t: &dyn Target) -> R {
        let mut h = ok(t.open(Dev::Scull(3), OpenOpts { truncate: true, read: true, ..OpenOpts::W }), "open")?;
        check!(ok(h.write(b"0123456789"), "write")? == 10, "write");
        check!(ok(h.seek(Whence::End, -4), "seek end-4")? == 6, "end-4");
        let mut b = [0u8; 8];
        check!(ok(h.read(&mut b), "read")? == 4 && &b[..4] == b"6789", "{b:?}");
        ok(h.set_len(3), "set_len 3")?;
        check!(ok(h.seek(Whence::End, 0), "seek end")? == 3, "size after set_len");
        let size = stats_field(t, "scull3", "size")?;
        check!(size == "3", "report size={size}");
        Ok(())
    }

    fn unknown_path_suffix_refused(_t: &dyn Target) -> R {
        let p = wide(r"\\.\Scull0\no-such-suffix");
        // SAFETY: a NUL-terminated path.
        let h = unsafe { CreateFileW(p.as_ptr(), GENERIC_READ, FILE_SHARE_READ, null_mut(), OPEN_EXISTING, 0, null_mut()) };
        if h != INVALID_HANDLE_VALUE {
            drop(Owned(h));
            return Err("a path with an unknown suffix opened".into());
        }
        Ok(())
    }

    fn scullpriv_per_process(t: &dyn Target) -> R {
        // A private device per process: what this process writes, a child
        // process (another key) does not see in its own device.
        let mut h = ok(t.open(Dev::Priv, OpenOpts { truncate: true, read: true, ..OpenOpts::W }), "open scullpriv")?;
        check!(ok(h.write(b"mine"), "write")? == 4, "write");
        let w = ok(t.spawn_writer(Dev::Priv, b"theirs!".to_vec(), Duration::ZERO), "child writes its own scullpriv")?;
        check!(ok(w.join(), "child")? == 7, "child count");
        ok(h.seek(Whence::Set, 0), "rewind")?;
        let mut b = [0u8; 16];
        let n = ok(h.read(&mut b), "read")?;
        check!(&b[..n] == b"mine", "this process's scullpriv holds {:?}", &b[..n]);
        let mut c = ok(t.open(Dev::Scull(0), OpenOpts::R), "open scull0")?;
        let text = ok(c.stats(), "stats")?;
        let privs: Vec<&str> = text.lines().filter(|l| l.starts_with("scullpriv.")).collect();
        check!(privs.len() >= 2, "two scullpriv instances expected:\n{text}");
        check!(privs.iter().any(|l| field(l, "size") == Some("7")), "the child's instance (size=7) is missing:\n{text}");
        Ok(())
    }
}

/// `Who::Other` under test identity mode: a child process of this tool that
/// gives up the administrator override (`TEST_OP_DEMOTE`), opens one device
/// and then runs the parent's requests on that handle, one line each:
/// `read N`, `write HEX`, `seek s|c|e OFF`, `setlen N`, `ioctl CODE VALUE`,
/// `raw CODE HEX|- OUTLEN`, `stats`; answers `ok [VALUE]` or `error WIN32`.
/// The first answer is the open's. `cancel` (while the open waits) cancels
/// the pending open: CancelIoEx on the handle (wine: the bridge call waits),
/// or, where CreateFile itself blocks (windows), the process exits, which
/// cancels its I/O. End of input closes the handle and ends the child.
pub mod proxy {
    use super::*;
    use std::io::BufRead;
    use std::process::ChildStdin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    pub fn hex(b: &[u8]) -> String {
        if b.is_empty() {
            return "-".into();
        }
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    pub fn unhex(s: &str) -> Option<Vec<u8>> {
        if s == "-" {
            return Some(Vec::new());
        }
        if s.len() % 2 != 0 {
            return None;
        }
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
    }

    pub struct Proxy {
        child: Child,
        stdin: Option<ChildStdin>,
        lines: mpsc::Receiver<String>,
        /// The open's outcome once the child reported it.
        pub open: Option<Result<(), Error>>,
    }

    fn parse_reply(l: &str) -> Result<String, Error> {
        if let Some(rest) = l.strip_prefix("ok") {
            return Ok(rest.trim().to_string());
        }
        let code = l.strip_prefix("error ").and_then(|c| c.trim().parse::<u32>().ok());
        Err(code.map(map).unwrap_or(Error::Invalid))
    }

    impl Proxy {
        pub fn spawn(wine: bool, dev: Dev, o: OpenOpts) -> Result<Proxy, Error> {
            let exe = std::env::current_exe().map_err(|_| Error::Invalid)?;
            let mut name = String::new();
            let _ = dev.windows_name(&mut name);
            let bits = u8::from(o.read) | (u8::from(o.write) << 1) | (u8::from(o.nonblock) << 2) | (u8::from(o.truncate) << 3);
            let mut child = Command::new(exe)
                .args([CHILD_PROXY, if wine { "wine" } else { "windows" }, &name, &bits.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|_| Error::Invalid)?;
            let stdin = child.stdin.take();
            let out = child.stdout.take().ok_or(Error::Invalid)?;
            let (tx, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            Ok(Proxy { child, stdin, lines, open: None })
        }

        /// The open's outcome, waiting up to `timeout`; `Err(WouldBlock)`
        /// while it is still pending (then `open` is still None).
        pub fn opened(&mut self, timeout: Duration) -> Result<(), Error> {
            if let Some(r) = self.open {
                return r;
            }
            match self.lines.recv_timeout(timeout) {
                Ok(l) => {
                    let r = parse_reply(&l).map(drop);
                    self.open = Some(r);
                    r
                }
                Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::WouldBlock),
                Err(_) => {
                    self.open = Some(Err(Error::Invalid));
                    Err(Error::Invalid)
                }
            }
        }

        /// Asks the child to cancel its pending open.
        pub fn cancel_open(&mut self) -> Result<(), Error> {
            self.send("cancel")
        }

        fn send(&mut self, line: &str) -> Result<(), Error> {
            let s = self.stdin.as_mut().ok_or(Error::Invalid)?;
            writeln!(s, "{line}").and_then(|_| s.flush()).map_err(|_| Error::Invalid)
        }

        fn request(&mut self, line: &str) -> Result<String, Error> {
            if self.opened(Duration::from_secs(60)).is_err() && self.open.is_none() {
                return Err(Error::Invalid);
            }
            self.opened(Duration::ZERO)?;
            self.send(line)?;
            let l = self.lines.recv_timeout(Duration::from_secs(60)).map_err(|_| Error::Invalid)?;
            parse_reply(&l)
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            // End of input: the child closes its handle and exits. Wait for
            // that, so that the close has happened when the drop returns.
            self.stdin = None;
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Handle for Proxy {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
            let got = unhex(&self.request(&format!("read {}", buf.len()))?).ok_or(Error::Invalid)?;
            let n = got.len().min(buf.len());
            buf[..n].copy_from_slice(&got[..n]);
            Ok(n)
        }

        fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
            self.request(&format!("write {}", hex(buf)))?.parse().map_err(|_| Error::Invalid)
        }

        fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error> {
            let w = match whence {
                Whence::Set => "s",
                Whence::Cur => "c",
                Whence::End => "e",
            };
            self.request(&format!("seek {w} {off}"))?.parse().map_err(|_| Error::Invalid)
        }

        fn set_len(&mut self, len: u64) -> Result<(), Error> {
            self.request(&format!("setlen {len}")).map(drop)
        }

        fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32, Error> {
            self.request(&format!("ioctl {} {value}", cmd.windows_code()))?.parse().map_err(|_| Error::Invalid)
        }

        fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
            unhex(&self.request(&format!("raw {code} {} {out_len}", hex(input)))?).ok_or(Error::Invalid)
        }

        fn stats(&mut self) -> Result<String, Error> {
            let b = unhex(&self.request("stats")?).ok_or(Error::Invalid)?;
            Ok(String::from_utf8_lossy(&b).into_owned())
        }
    }

    /// The handle value, for a `cancel` from the input thread.
    static OPENING: AtomicUsize = AtomicUsize::new(0);

    fn reply(r: Result<String, Error>) {
        match r {
            Ok(v) if v.is_empty() => println!("ok"),
            Ok(v) => println!("ok {v}"),
            Err(e) => println!("error {}", e.win32()),
        }
        let _ = std::io::stdout().flush();
    }

    fn exec(h: &mut WinHandle, line: &str) -> Result<String, Error> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<i64>().ok()).ok_or(Error::Invalid);
        match w.first().copied() {
            Some("read") => {
                let mut b = vec![0u8; num(1)? as usize];
                let n = h.read(&mut b)?;
                Ok(hex(&b[..n]))
            }
            Some("write") => h.write(&unhex(w.get(1).ok_or(Error::Invalid)?).ok_or(Error::Invalid)?).map(|n| n.to_string()),
            Some("seek") => {
                let wh = match w.get(1).copied() {
                    Some("s") => Whence::Set,
                    Some("c") => Whence::Cur,
                    Some("e") => Whence::End,
                    _ => return Err(Error::Invalid),
                };
                h.seek(wh, num(2)?).map(|p| p.to_string())
            }
            Some("setlen") => h.set_len(num(1)? as u64).map(|_| String::new()),
            Some("ioctl") => {
                let cmd = Cmd::from_windows_code(num(1)? as u32)?;
                h.ioctl(cmd, num(2)? as i32).map(|v| v.to_string())
            }
            Some("raw") => {
                let input = unhex(w.get(2).ok_or(Error::Invalid)?).ok_or(Error::Invalid)?;
                h.ioctl_raw(num(1)? as u32, &input, num(3)? as usize).map(|b| hex(&b))
            }
            Some("stats") => h.stats().map(|t| hex(t.as_bytes())),
            _ => Err(Error::Invalid),
        }
    }

    /// `__scull_child_proxy <wine|windows> <Dev> <bits>`.
    pub fn child(args: &[String]) -> u8 {
        let wine = args.first().map(String::as_str) == Some("wine");
        let dev = args.get(1).and_then(|s| Dev::parse(s));
        let bits: u8 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
        let Some(dev) = dev else {
            reply(Err(Error::Invalid));
            return 1;
        };
        let o = OpenOpts { read: bits & 1 != 0, write: bits & 2 != 0, nonblock: bits & 4 != 0, truncate: bits & 8 != 0 };
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for l in std::io::stdin().lock().lines().map_while(|l| l.ok()) {
                if l.trim() == "cancel" {
                    let h = OPENING.load(Ordering::SeqCst);
                    if h == 0 {
                        // CreateFile itself is blocked (an I/O manager that
                        // waits for IRP_MJ_CREATE): exiting cancels it.
                        std::process::exit(3);
                    }
                    // SAFETY: the handle stays open until the open has finished
                    // and OPENING is cleared.
                    unsafe { CancelIoEx(h as HANDLE, null_mut()) };
                    continue;
                }
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        // Another user: no administrator override for this process.
        if let Err(e) = test_op(wine, TEST_OP_DEMOTE, 0) {
            reply(Err(e));
            return 1;
        }
        let h = match create_raw(dev, o, wine, false) {
            Ok(h) => h,
            Err(e) => {
                reply(Err(e));
                return 1;
            }
        };
        OPENING.store(h.0 as usize, Ordering::SeqCst);
        let r = if wine { send_open_flags(&h, o) } else { Ok(()) };
        OPENING.store(0, Ordering::SeqCst);
        if let Err(e) = r {
            reply(Err(e));
            return 1;
        }
        reply(Ok(String::new()));
        let mut h = WinHandle { h, dev, wine, pos: 0 };
        for line in rx {
            reply(exec(&mut h, &line));
        }
        0
    }
}

/// Windows-only harness commands that `cargo xtask wine` runs (target first):
/// - `win-test <wine|windows> query | fail-at K`: the test IOCTL; prints
///   `modes=M outstanding=N allocs=A injected=I`.
/// - `win-pend-read <wine|windows> <dev>`: opens `dev` for reading, prints
///   `pending`, blocks in ReadFile, then prints `read ended: ok N` or
///   `read ended: error WIN32` (for unloading with an IRP pended).
/// - `win-fault-sweep <wine|windows> [max_k]`: the fault-injection sweep
///   (driver loaded with `scull_fail_at`), see [`fault_sweep`].
pub mod harness {
    use super::*;

    fn wine_arg(args: &[String]) -> bool {
        args.first().map(String::as_str) == Some("wine")
    }

    pub fn test_cmd(args: &[String]) -> u8 {
        let wine = wine_arg(args);
        let (op, arg) = match (args.get(1).map(String::as_str), args.get(2).and_then(|s| s.parse::<i32>().ok())) {
            (Some("query"), _) => (TEST_OP_QUERY, 0),
            (Some("fail-at"), Some(k)) => (TEST_OP_FAIL_AT, k),
            _ => {
                eprintln!("usage: win-test <wine|windows> query | fail-at K");
                return 2;
            }
        };
        match test_op(wine, op, arg) {
            Ok(r) => {
                println!("modes={} outstanding={} allocs={} injected={}", r.modes, r.outstanding, r.allocs, r.injected);
                0
            }
            Err(e) => {
                println!("error {} ({e})", e.win32());
                1
            }
        }
    }

    pub fn pend_read(args: &[String]) -> u8 {
        let wine = wine_arg(args);
        let Some(dev) = args.get(1).and_then(|s| Dev::parse(s)) else {
            eprintln!("usage: win-pend-read <wine|windows> <dev>");
            return 2;
        };
        let mut h = match open_raw(dev, OpenOpts::R, wine, false) {
            Ok(h) => WinHandle { h, dev, wine, pos: 0 },
            Err(e) => {
                println!("open failed: error {}", e.win32());
                return 1;
            }
        };
        println!("pending");
        let _ = std::io::stdout().flush();
        let mut b = [0u8; 64];
        match h.read(&mut b) {
            Ok(n) => println!("read ended: ok {n}"),
            // SAFETY: reads the thread's last error, set by the failed ReadFile.
            Err(_) => println!("read ended: error {}", unsafe { GetLastError() }),
        }
        let _ = std::io::stdout().flush();
        0
    }

    /// Bytes the driver acknowledged at an offset of scull1.
    struct Acked {
        off: u64,
        data: Vec<u8>,
    }

    #[derive(Default)]
    struct Outcome {
        nomem: u32,
        short: u32,
    }

    fn pattern(k: i32, rec: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (k as usize * 31 + rec * 7 + j) as u8 | 1).collect()
    }

    /// One workload run while the k-th allocation fails. A contract breach
    /// (an error other than NoMemory, a count larger than asked) is `Err`.
    fn workload(wine: bool, k: i32, acked: &mut Vec<Acked>, o: &mut Outcome) -> Result<(), String> {
        let mut note = |r: Result<usize, Error>, want: usize, what: &str| -> Result<usize, String> {
            match r {
                Ok(n) if n > want => Err(format!("{what}: {n} bytes acknowledged, {want} asked")),
                Ok(n) => {
                    if n < want {
                        o.short += 1;
                    }
                    Ok(n)
                }
                Err(Error::NoMemory) => {
                    o.nomem += 1;
                    Ok(0)
                }
                Err(e) => Err(format!("{what}: {e} (want success, a short count or NoMemory)")),
            }
        };
        // Store: records that span quanta (4000) and a far one (a new qset).
        let dev = Dev::Scull(1);
        let mut h = match open_raw(dev, OpenOpts::RW, wine, false) {
            Ok(h) => WinHandle { h, dev, wine, pos: 0 },
            Err(e) => {
                note(Err(e), 0, "open scull1")?;
                return Ok(());
            }
        };
        let recs: [(u64, usize); 5] = [(0, 3000), (3000, 3000), (6000, 5000), (11_000, 2000), (8_000_000 + 5, 300)];
        for (i, &(off, len)) in recs.iter().enumerate() {
            let data = pattern(k, i, len);
            h.seek(Whence::Set, off as i64).map_err(|e| format!("seek: {e}"))?;
            let n = note(h.write(&data), len, &format!("write record {i}"))?;
            if n > 0 {
                acked.push(Acked { off, data: data[..n].to_vec() });
            }
        }
        drop(h);
        // Pipe: the first open allocates the buffer.
        let dev = Dev::Pipe(1);
        match open_raw(dev, OpenOpts::RW, wine, false) {
            Ok(p) => {
                let mut p = WinHandle { h: p, dev, wine, pos: 0 };
                let data = pattern(k, 99, 100);
                let n = note(p.write(&data), 100, "pipe write")?;
                let mut b = vec![0u8; 200];
                let got = if n > 0 { p.read(&mut b).map_err(|e| format!("pipe read: {e}"))? } else { 0 };
                if b[..got] != data[..n] {
                    return Err(format!("pipe: read back {got} bytes that differ from the {n} acknowledged"));
                }
            }
            Err(e) => {
                note(Err(e), 0, "open scullpipe1")?;
            }
        }
        Ok(())
    }

    fn verify(wine: bool, acked: &[Acked]) -> Result<(), String> {
        let dev = Dev::Scull(1);
        let mut h = WinHandle { h: open_raw(dev, OpenOpts::R, wine, false).map_err(|e| format!("reopen: {e}"))?, dev, wine, pos: 0 };
        let size = h.seek(Whence::End, 0).map_err(|e| format!("size: {e}"))?;
        for a in acked {
            let end = a.off + a.data.len() as u64;
            if size < end {
                return Err(format!("size {size} < end {end} of acknowledged bytes"));
            }
            h.seek(Whence::Set, a.off as i64).map_err(|e| format!("seek: {e}"))?;
            let mut b = vec![0u8; a.data.len()];
            let mut got = 0;
            while got < b.len() {
                match h.read(&mut b[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) => return Err(format!("read back at {}: {e}", a.off)),
                }
            }
            if b[..got] != a.data[..] {
                return Err(format!("acknowledged bytes at {} ({} bytes) read back different", a.off, a.data.len()));
            }
        }
        Ok(())
    }

    /// For k = 1, 2, ...: arm "the k-th allocation fails", run the workload,
    /// disarm, check every acknowledged byte, trim, and check the outstanding
    /// block count is back at its baseline. Ends at the first k the workload
    /// never reaches (no failure injected), or at max_k. Exit 0 when every
    /// run kept the contract and at least one failure was injected.
    pub fn fault_sweep(args: &[String]) -> u8 {
        let wine = wine_arg(args);
        let max_k: i32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
        let q = |op, arg| test_op(wine, op, arg);
        match q(TEST_OP_QUERY, 0) {
            Ok(r) if r.modes & MODE_FAULTS != 0 => {}
            other => {
                println!("FAIL fault sweep: the driver has no fault injection (load it with scull_fail_at): {other:?}");
                return 1;
            }
        }
        let _ = open_raw(Dev::Scull(1), OpenOpts::TRUNC, wine, false);
        let (mut runs, mut injected, mut nomem, mut short) = (0, 0u64, 0, 0);
        let mut reached_end = false;
        for k in 1..=max_k {
            let before = match q(TEST_OP_QUERY, 0) {
                Ok(r) => r,
                Err(e) => {
                    println!("FAIL fault k={k}: query: {e}");
                    return 1;
                }
            };
            if let Err(e) = q(TEST_OP_FAIL_AT, k) {
                println!("FAIL fault k={k}: arm: {e}");
                return 1;
            }
            let mut acked = Vec::new();
            let mut o = Outcome::default();
            let r = workload(wine, k, &mut acked, &mut o);
            let disarm = q(TEST_OP_FAIL_AT, 0);
            let r = r.and_then(|_| disarm.map(drop).map_err(|e| format!("disarm: {e}"))).and_then(|_| verify(wine, &acked));
            let _ = open_raw(Dev::Scull(1), OpenOpts::TRUNC, wine, false);
            let after = match q(TEST_OP_QUERY, 0) {
                Ok(a) => a,
                Err(e) => {
                    println!("FAIL fault k={k}: query: {e}");
                    return 1;
                }
            };
            runs += 1;
            let hit = after.injected - before.injected;
            injected += hit;
            nomem += o.nomem;
            short += o.short;
            let bytes: usize = acked.iter().map(|a| a.data.len()).sum();
            println!(
                "fault k={k}: injected={hit} nomem={} short={} acknowledged={bytes} B, outstanding {} -> {}",
                o.nomem, o.short, before.outstanding, after.outstanding
            );
            if let Err(msg) = r {
                println!("FAIL fault k={k}: {msg}");
                return 1;
            }
            if after.outstanding != before.outstanding {
                println!("FAIL fault k={k}: outstanding blocks {} after trim, {} before", after.outstanding, before.outstanding);
                return 1;
            }
            if hit > 0 && o.nomem + o.short == 0 {
                println!("FAIL fault k={k}: an allocation failed but no request reported it");
                return 1;
            }
            if hit == 0 {
                reached_end = true;
                break;
            }
        }
        if !reached_end || injected == 0 {
            println!("FAIL fault sweep: injected={injected} over {runs} runs; the workload never ran clean before k={max_k}");
            return 1;
        }
        println!(
            "fault sweep: {runs} runs (k=1..{runs}), {injected} injected failures, {nomem} NoMemory errors, {short} short counts, 0 corrupted, outstanding back to baseline after every trim"
        );
        0
    }
}

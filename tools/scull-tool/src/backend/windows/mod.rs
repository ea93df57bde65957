//! The `windows` and `wine` targets' shared core: scull.sys's
//! `\\.\Scull*` devices through CreateFileW, ReadFile, WriteFile,
//! DeviceIoControl and CancelIoEx (windows-sys), one [`WinTarget`] and one
//! [`WinHandle`] type for both. What differs lives in two files:
//!
//! - [`native`] (`windows`): the Win32 idioms. Sequential I/O uses the
//!   handle's file pointer; seeks are SetFilePointerEx (FILE_END asks the
//!   driver through IRP_MJ_QUERY_INFORMATION); SetEndOfFile; truncating
//!   opens are TRUNCATE_EXISTING; non-blocking handles open `\\.\Dev\nonblock`.
//! - [`wine`]: what Wine's I/O manager does not deliver, and the test
//!   build's bridge IOCTLs that stand in for it.
//!
//! The second-user proxy child is in [`proxy`], the `win-*` harness
//! commands in [`harness`]. The suite's Windows-only cases pick these
//! targets by name; nothing here depends on them.
//!
//! Win32 errors map back to [`Error`] with scull-core's table; codes outside
//! it (e.g. ERROR_FILE_NOT_FOUND for a missing device) become `Invalid`.
//! `spawn_writer` runs a child process: this executable, re-run with a hidden
//! subcommand (see [`child_main`]).

use super::{Caps, Handle, Join, OpenOpts, Pending, Target, Who};
use scull_core::devices::Dev;
use scull_core::ioctl::{self, ArgIn, ArgOut, Cmd};
use scull_core::store::{self, Whence};
use scull_core::Error;
use std::ffi::c_void;
#[cfg(windows)]
use std::io::Read;
use std::io::Write;
#[cfg(windows)]
use std::process::{Child, Command, Stdio};
use std::ptr::null_mut;
use std::time::{Duration, Instant};
// The Win32 functions come through the one seam (windows-sys on Windows,
// ntsim on Linux); types and constants from windows-sys on both.
use crate::win32::{
    CancelIoEx, CloseHandle, CreateEventW, CreateFileW, DeviceIoControl, GetLastError, ReadFile, SetEndOfFile, SetFilePointerEx,
    WaitForSingleObject, WriteFile,
};
use windows_sys::Win32::Foundation::{
    ERROR_IO_PENDING, ERROR_MORE_DATA, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_BEGIN, FILE_CURRENT, FILE_END, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING, TRUNCATE_EXISTING,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

/// The hidden subcommand of a spawned writer.
#[cfg(windows)]
const CHILD_WRITER: &str = "__scull_child_writer";
/// The hidden subcommand of `Who::Other`: a child process that holds one
/// handle and runs the parent's requests on it (see [`proxy`]).
#[cfg(windows)]
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

pub(crate) fn wide(s: &str) -> Vec<u16> {
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
pub(crate) struct Owned(pub(crate) HANDLE);

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

pub(crate) fn open_raw(dev: Dev, o: OpenOpts, wine: bool, overlapped: bool) -> Result<Owned, Error> {
    let h = create_raw(dev, o, wine, overlapped)?;
    // Wine does not wait for IRP_MJ_CREATE, so a refused open still yields a
    // handle: the test build's bridge IOCTL, sent on every open, returns the
    // refusal (and waits while a scullwuid create is pended).
    if wine && wine::has_bridge() {
        wine::send_open_flags(&h, o)?;
    }
    Ok(h)
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
    // Under Wine neither the disposition nor the suffix reaches the driver.
    let disposition = if wine { OPEN_EXISTING } else { native::disposition(o) };
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
pub(crate) fn device_io_control(h: HANDLE, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
    device_io_control_more(h, code, input, out_len).map_err(|(e, _)| e)
}

pub(crate) fn device_io_control_more(h: HANDLE, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, (Error, Vec<u8>)> {
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
    pub(crate) h: Owned,
    pub(crate) dev: Dev,
    pub(crate) wine: bool,
    /// The file position, kept here on `wine` (see the module docs).
    pub(crate) pos: u64,
}

impl WinHandle {
    fn explicit(&self) -> bool {
        self.wine && !matches!(self.dev, Dev::Pipe(_))
    }

    /// One ReadFile/WriteFile (`call(handle, &mut count, overlapped)`), at
    /// the kept position on `wine` (an explicit offset), advancing it.
    fn transfer(&mut self, call: impl FnOnce(HANDLE, *mut u32, *mut OVERLAPPED) -> i32) -> Result<usize, Error> {
        let mut n = 0u32;
        let mut ov = Self::overlapped_at(self.pos);
        let ovp: *mut OVERLAPPED = if self.explicit() { &mut ov } else { null_mut() };
        if call(self.h.0, &mut n, ovp) == 0 {
            return Err(last_error());
        }
        self.pos += n as u64;
        Ok(n as usize)
    }

    fn overlapped_at(pos: u64) -> OVERLAPPED {
        // SAFETY: OVERLAPPED is plain data; all-zero is its initial state.
        let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
        ov.Anonymous.Anonymous.Offset = pos as u32;
        ov.Anonymous.Anonymous.OffsetHigh = (pos >> 32) as u32;
        ov
    }
}

impl Handle for WinHandle {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        // SAFETY: `buf` is writable for its length, `n` and `ov` point at
        // `transfer`'s locals; a synchronous handle, so the call returns when
        // the read has completed and nothing writes them later.
        self.transfer(|h, n, ov| unsafe { ReadFile(h, buf.as_mut_ptr(), buf.len() as u32, n, ov) })
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        // SAFETY: as in `read`; `buf` is readable for its length.
        self.transfer(|h, n, ov| unsafe { WriteFile(h, buf.as_ptr(), buf.len() as u32, n, ov) })
    }

    fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error> {
        self.pos = if self.wine { wine::seek(&self.h, self.pos, whence, off)? } else { native::seek(&self.h, whence, off)? };
        Ok(self.pos)
    }

    fn set_len(&mut self, len: u64) -> Result<(), Error> {
        if self.wine {
            return wine::set_len(&self.h, len);
        }
        native::set_len(&self.h, len)
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
#[cfg(windows)]
struct ChildWriter(Child);

#[cfg(windows)]
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
    /// The release scull.sys under ntsim in this process (Linux builds).
    ntsim: bool,
    nr_devs: u8,
    p_nr_devs: u8,
    privileged: bool,
    /// `WIN_IOCTL_TEST` modes (0 when the driver has none on).
    modes: u32,
}

impl WinTarget {
    pub fn new(wine: bool) -> Self {
        Self::with(wine, false)
    }

    fn with(wine: bool, ntsim: bool) -> Self {
        let count = |f: fn(u8) -> Dev| {
            (0..64u8).take_while(|&n| open_raw(f(n), OpenOpts::R, wine, false).is_ok()).count() as u8
        };
        let nr_devs = count(Dev::Scull);
        let p_nr_devs = count(Dev::Pipe);
        // Privileged means the driver accepts a privileged command: a
        // no-change exchange of the quantum (XQUANTUM with its own value).
        let privileged = open_raw(Dev::Scull(0), OpenOpts::RW, wine, false)
            .ok()
            .and_then(|h| {
                let mut w = WinHandle { h, dev: Dev::Scull(0), wine, pos: 0 };
                let q = w.ioctl(Cmd::QQuantum, 0).ok()?;
                w.ioctl(Cmd::HQuantum, q).ok()
            })
            .is_some();
        let modes = test_op(wine, TEST_OP_QUERY, 0).map_or(0, |r| r.modes);
        WinTarget { wine, ntsim, nr_devs, p_nr_devs, privileged, modes }
    }
}

impl Target for WinTarget {
    fn name(&self) -> &str {
        if self.wine {
            "wine"
        } else if self.ntsim {
            "ntsim"
        } else {
            "windows"
        }
    }

    fn caps(&self) -> Caps {
        Caps {
            privileged: self.privileged,
            // Test identity mode: every process is its own user, and a
            // proxy child process that gave up the override is `Who::Other`.
            // ntsim: a process with a plain user's token.
            other_user: self.modes & MODE_IDENTITY != 0 || self.ntsim,
            poll: false,
            cancel: true,
            processes: true,
            priv_dev: true,
            linux_abi: false,
            pipe_seek_refused: false,
            // Wine without the test build's bridge: see the module docs.
            open_modes: !self.wine || wine::has_bridge(),
            // SetEndOfFile (windows) / WIN_IOCTL_SET_EOF (wine, test build) reach the driver.
            set_len: true,
            nr_devs: self.nr_devs,
            p_nr_devs: self.p_nr_devs,
        }
    }

    fn open_as(&self, who: Who, dev: Dev, opts: OpenOpts) -> Result<Box<dyn Handle>, Error> {
        if who == Who::Other {
            if !self.caps().other_user {
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

    #[cfg(not(windows))]
    fn spawn_writer(&self, dev: Dev, data: Vec<u8>, delay: Duration) -> Result<Box<dyn Join>, Error> {
        ntsim::spawn_writer(dev, data, delay)
    }

    #[cfg(windows)]
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
}

/// The targets this module provides, by name.
pub fn by_name(name: &str) -> Option<Box<dyn Target>> {
    match name {
        #[cfg(windows)]
        "windows" => Some(Box::new(WinTarget::new(false))),
        #[cfg(windows)]
        "wine" => Some(Box::new(WinTarget::new(true))),
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        "ntsim" => {
            if let Err(e) = ntsim::start() {
                eprintln!("scull-tool: ntsim: {e}");
                std::process::exit(1);
            }
            Some(Box::new(WinTarget::with(false, true)))
        }
        _ => None,
    }
}

/// Hidden child-process entry points (Windows builds). `__scull_child_writer <target> <Dev>
/// <delay ms>`: after the delay, opens the device for writing, writes all of
/// stdin (looping on partial writes), prints the count and exits 0; on error
/// prints `error <win32>` and exits 1.
#[cfg(windows)]
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

mod native;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub mod ntsim;
pub(crate) mod wine;

pub mod proxy;

pub mod harness;

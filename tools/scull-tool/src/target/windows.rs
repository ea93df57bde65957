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
    let h = Owned(h);
    // Wine does not wait for IRP_MJ_CREATE, so a refused open still yields a
    // handle: the bridge IOCTL, sent on every open, returns the refusal.
    if wine {
        let mut bits = 0u32;
        if o.nonblock {
            bits |= ioctl::WIN_OPEN_NONBLOCK;
        }
        if o.truncate {
            bits |= ioctl::WIN_OPEN_TRUNCATE;
        }
        device_io_control(h.0, ioctl::WIN_IOCTL_OPEN_FLAGS, &bits.to_le_bytes(), 0)?;
    }
    Ok(h)
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
        WinTarget { wine, nr_devs, p_nr_devs, privileged }
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
            other_user: false,
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
            return Err(Error::NotTty);
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
    if args.first().map(String::as_str) != Some(CHILD_WRITER) {
        return None;
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
        ]
    }

    /// A pended IRP_MJ_CREATE needs an opener with another user SID. The
    /// targets have no second identity (Wine runs every process as one
    /// administrator, and does not wait for IRP_MJ_CREATE at all).
    fn second_user(c: &Caps) -> Option<&'static str> {
        (!c.other_user).then_some("needs a second, unprivileged user SID (and an I/O manager that waits for IRP_MJ_CREATE)")
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

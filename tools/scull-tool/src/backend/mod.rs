//! The black-box device interface the test suite and the human
//! commands are written against. Each kernel gets one implementation:
//! `model` (the host model device, in-process), `windows` (`\\.\Scull*`
//! through CreateFileW/ReadFile/...; run natively or under Wine) and `linux`
//! (`/dev/scull*` through open/read/ioctl).
//!
//! Every error comes back as a [`scull_core::Error`], mapped from errno or the
//! Win32 error with scull-core's one table, so cases compare kernels alike.

use scull_core::devices::Dev;
use scull_core::ioctl::Cmd;
use scull_core::store::Whence;
use scull_core::Error;
use std::time::Duration;

#[cfg(target_os = "linux")]
pub mod linux;
pub mod model;
/// Windows builds: `windows`, `wine`; Linux builds: `ntsim` (the same code
/// against scull.sys loaded by ntsim in this process).
#[cfg(any(windows, all(target_os = "linux", target_env = "gnu")))]
pub mod windows;

/// How to open a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenOpts {
    pub read: bool,
    pub write: bool,
    /// `O_NONBLOCK` / the `\nonblock` path suffix on Windows.
    pub nonblock: bool,
    /// Truncate: LDD3 trims a scull device opened write-only, so on Linux this
    /// is `O_WRONLY` alone (`O_TRUNC` is added too); on Windows
    /// `CREATE_ALWAYS`/`TRUNCATE_EXISTING`.
    pub truncate: bool,
}

impl OpenOpts {
    pub const R: OpenOpts = OpenOpts { read: true, write: false, nonblock: false, truncate: false };
    pub const W: OpenOpts = OpenOpts { read: false, write: true, nonblock: false, truncate: false };
    pub const RW: OpenOpts = OpenOpts { read: true, write: true, nonblock: false, truncate: false };
    /// Write-only with truncation: LDD3's `open(O_WRONLY)` trim.
    pub const TRUNC: OpenOpts = OpenOpts { read: false, write: true, nonblock: false, truncate: true };

    pub const fn nonblocking(mut self) -> OpenOpts {
        self.nonblock = true;
        self
    }
}

/// Who opens: the suite's own identity, or a second, unprivileged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The identity the suite runs as (privileged where the target says so).
    Me,
    /// A second user without privilege (Linux: another uid; model: uid 1001).
    Other,
}

/// What a target can express. Cases that need a missing capability are
/// counted as skipped, with the reason printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    /// The suite's identity is privileged (root / an administrator).
    pub privileged: bool,
    /// `open_as(Who::Other, ..)` works.
    pub other_user: bool,
    /// `Handle::poll` works.
    pub poll: bool,
    /// Blocked callers can be interrupted/cancelled (`Handle::read_cancellable`).
    pub cancel: bool,
    /// `spawn_writer` runs in another process (not just another thread).
    pub processes: bool,
    /// scullpriv can be opened (it needs a key: a controlling tty on Linux).
    pub priv_dev: bool,
    /// `ioctl_raw` takes Linux `_IOC` codes and returns the 4-byte return
    /// value; otherwise Windows `CTL_CODE`s with METHOD_BUFFERED buffers.
    pub linux_abi: bool,
    /// Seeking a scullpipe handle fails with `NotSeekable`. (On Windows the I/O
    /// manager handles FilePositionInformation of synchronous handles itself,
    /// so the driver never sees the seek.)
    pub pipe_seek_refused: bool,
    /// `Handle::set_len` reaches the driver. (Linux's ftruncate refuses
    /// character devices with EINVAL in the VFS, before any driver code.)
    pub set_len: bool,
    /// Truncating and non-blocking opens, refused opens and the file size
    /// (SEEK_END) reach the driver. False only under Wine with the release
    /// scull.sys: Wine's I/O manager passes no create disposition and no
    /// path suffix, returns the handle before IRP_MJ_CREATE completes and
    /// sends no query-information IRP; the test build's bridge stands in.
    pub open_modes: bool,
    /// Number of scull and scullpipe devices.
    pub nr_devs: u8,
    pub p_nr_devs: u8,
}

/// Readiness, as poll(2) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
}

/// An open device.
pub trait Handle: Send {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error>;
    fn write(&mut self, buf: &[u8]) -> Result<usize, Error>;
    /// lseek / SetFilePointerEx; returns the new position.
    fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error>;
    /// ftruncate / SetEndOfFile at `len` (the position is left where it was).
    fn set_len(&mut self, len: u64) -> Result<(), Error>;
    /// A scull command with its value: Linux passes it by value or by pointer
    /// as the command wants; Windows in the input buffer. Returns the command's
    /// result value (0 when it has none).
    fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32, Error>;
    /// A raw ioctl: any code, raw input bytes, an output buffer of `out_len`
    /// bytes. Returns the output bytes (Windows) or, on Linux, the 4 bytes of
    /// the return value. For bad codes and short buffers.
    fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error>;
    /// The STATS report text.
    fn stats(&mut self) -> Result<String, Error> {
        let out = self.ioctl_raw(Cmd::Stats.windows_code(), &[], 4096)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
    /// poll(2) with a zero timeout.
    fn poll(&mut self) -> Result<Ready, Error> {
        Err(Error::NotTty)
    }
}

/// A kernel (or the model) holding scull devices.
pub trait Target: Sync {
    /// `model`, `wine`, `windows`, `qemu`, `linux`.
    fn name(&self) -> &str;
    fn caps(&self) -> Caps;
    fn open_as(&self, who: Who, dev: Dev, opts: OpenOpts) -> Result<Box<dyn Handle>, Error>;

    fn open(&self, dev: Dev, opts: OpenOpts) -> Result<Box<dyn Handle>, Error> {
        self.open_as(Who::Me, dev, opts)
    }

    /// Starts a writer that, after `delay`, opens `dev` and writes `data`
    /// (all of it, looping on partial writes), then closes. Another process
    /// when `caps().processes`, else another thread. `join` returns the bytes
    /// written.
    fn spawn_writer(&self, dev: Dev, data: Vec<u8>, delay: Duration) -> Result<Box<dyn Join>, Error>;

    /// Starts a blocking read of up to `len` bytes from a new handle on `dev`,
    /// which the caller can then cancel (Windows: CancelIoEx; Linux: a signal;
    /// model: interrupt). Needs `caps().cancel`.
    fn read_cancellable(&self, _dev: Dev, _len: usize) -> Result<Box<dyn Pending>, Error> {
        Err(Error::NotTty)
    }

    /// Fuzzing with invalid user pointers (Linux: raw system calls on NULL and
    /// unmapped addresses, each must fail with EFAULT). Returns the number of
    /// calls made, `Err` on any other outcome, or `None` where the target
    /// cannot express it.
    fn fuzz_bad_pointers(&self, _rng: &mut crate::rng::Rng, _n: usize) -> Option<Result<usize, String>> {
        None
    }
}

/// A background writer.
pub trait Join: Send {
    fn join(self: Box<Self>) -> Result<usize, Error>;
}

/// A blocked operation that can be cancelled.
pub trait Pending: Send {
    /// Has it completed on its own?
    fn is_done(&mut self) -> bool;
    /// Cancels it, or closes its handle when `close` is set (Windows: the
    /// CLOSE/CLEANUP path must complete the pended IRP).
    fn cancel(&mut self, close: bool) -> Result<(), Error>;
    /// Waits for completion: the bytes read or the error (`Interrupted` after
    /// a cancel).
    fn wait(self: Box<Self>, timeout: Duration) -> Result<Vec<u8>, Error>;
}

/// The target called `name` on this build (`model` everywhere; `windows`/`wine`
/// on Windows builds; `linux`/`qemu` on Linux builds).
pub fn target_by_name(name: &str) -> Option<Box<dyn Target>> {
    match name {
        "model" => Some(Box::new(model::ModelTarget::new())),
        #[cfg(target_os = "linux")]
        "linux" => Some(Box::new(linux::LinuxTarget::new("linux"))),
        #[cfg(target_os = "linux")]
        "qemu" => Some(Box::new(linux::LinuxTarget::new("qemu"))),
        #[cfg(windows)]
        "windows" | "wine" => windows::by_name(name),
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        "ntsim" => windows::by_name(name),
        _ => None,
    }
}

/// The target used when `--target` is not given: the driver of this machine
/// (`windows` on Windows, `linux` when `/dev/scull0` exists), else none. The
/// model is never a default: its devices die with the process, so a
/// `write` followed by a `read` would silently lose the data.
pub fn default_target() -> Option<&'static str> {
    if cfg!(windows) {
        Some("windows")
    } else if std::path::Path::new("/dev/scull0").exists() {
        Some("linux")
    } else {
        None
    }
}

/// Hidden child-process entry points (e.g. a writer spawned by
/// `Target::spawn_writer`). Returns the exit code if `args` asked for one.
pub fn child_main(_args: &[String]) -> Option<u8> {
    #[cfg(windows)]
    if let Some(code) = windows::child_main(_args) {
        return Some(code);
    }
    None
}

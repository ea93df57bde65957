//! The two userfaultfd cases, Linux only. In each, a writer stalls inside
//! the driver's copy_from_user on a userfaultfd-registered buffer whose page
//! fault is not served, holding whatever the driver holds across the copy:
//!
//! - `linux_read_killable_while_writer_stalls_in_copy` (scull0): another
//!   process's read of the same device must be killable (SIGKILL reaps it)
//!   and interruptible (a signal handler without SA_RESTART makes it fail
//!   with EINTR), each within a bound;
//! - `linux_pipe_reader_interruptible_while_writer_stalls_in_copy`
//!   (scullpipe0): a reader already blocked on the empty pipe must get EINTR
//!   without needing the pipe's lock back, its exit must not wait for that
//!   lock, and a poller must be killable.
//!
//! Then the fault is served, the writer completes, and the data is checked.
//! A driver that sleeps uninterruptibly for its lock (the bug these catch)
//! leaves the readers in D state until the writer is released: the case
//! fails, and still ends cleanly.
//!
//! It needs root: a userfaultfd that handles faults raised by kernel code
//! (copy_from_user) needs CAP_SYS_PTRACE unless vm.unprivileged_userfaultfd=1.

use super::check::R;
use crate::backend::{Caps, Target};
use std::ffi::CString;
use std::time::{Duration, Instant};

/// How long a reader may take to die or see EINTR once signalled.
const BOUND: Duration = Duration::from_secs(5);
/// Two pages: the write covers both; the fault comes on the first.
const LEN: usize = 8192;

// <linux/userfaultfd.h> (ioctl numbers are _IOWR(0xAA, nr, struct)).
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_COPY: libc::c_ulong = 0xC028_AA03;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Root, as the case needs.
pub fn needs(_: &Caps) -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        None
    } else {
        Some("needs root (userfaultfd for kernel-mode faults)")
    }
}

/// An anonymous mapping registered with a userfaultfd; closing both on drop
/// releases any thread still waiting on the fault.
struct Stall {
    uffd: libc::c_int,
    addr: *mut libc::c_void,
}

impl Stall {
    fn new() -> Result<Stall, String> {
        // SAFETY: plain syscall; the result is checked.
        let uffd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) } as libc::c_int;
        if uffd < 0 {
            return Err(os_err("userfaultfd"));
        }
        // SAFETY: a private anonymous mapping of LEN bytes; checked below.
        let addr = unsafe {
            libc::mmap(std::ptr::null_mut(), LEN, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        let s = Stall { uffd, addr };
        if addr == libc::MAP_FAILED {
            return Err(os_err("mmap"));
        }
        let mut api = UffdioApi { api: UFFD_API, features: 0, ioctls: 0 };
        // SAFETY: a valid uffd and a struct of the size the ioctl number encodes.
        if unsafe { libc::ioctl(uffd, UFFDIO_API as _, &mut api) } < 0 {
            return Err(os_err("UFFDIO_API"));
        }
        let mut reg = UffdioRegister { start: addr as u64, len: LEN as u64, mode: UFFDIO_REGISTER_MODE_MISSING, ioctls: 0 };
        // SAFETY: as above; the range is our own mapping.
        if unsafe { libc::ioctl(uffd, UFFDIO_REGISTER as _, &mut reg) } < 0 {
            return Err(os_err("UFFDIO_REGISTER"));
        }
        Ok(s)
    }

    /// Waits for the first page-fault event (the writer is then stalled).
    fn wait_fault(&self, within: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            let mut pfd = libc::pollfd { fd: self.uffd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, 100) };
            if n > 0 {
                let mut msg = [0u8; 32];
                // SAFETY: reading one uffd_msg (32 bytes) into our buffer.
                let r = unsafe { libc::read(self.uffd, msg.as_mut_ptr().cast(), msg.len()) };
                if r == 32 && msg[0] == UFFD_EVENT_PAGEFAULT {
                    return Ok(());
                }
            }
            if t0.elapsed() > within {
                return Err("the writer never faulted on the userfaultfd buffer".into());
            }
        }
    }

    /// Serves the faults: fills the whole range with `data` and wakes the writer.
    fn serve(&self, data: &[u8]) -> Result<(), String> {
        let mut c = UffdioCopy { dst: self.addr as u64, src: data.as_ptr() as u64, len: LEN as u64, mode: 0, copy: 0 };
        // SAFETY: `data` is LEN readable bytes; dst is our registered range.
        if unsafe { libc::ioctl(self.uffd, UFFDIO_COPY as _, &mut c) } < 0 {
            return Err(os_err("UFFDIO_COPY"));
        }
        Ok(())
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        // SAFETY: closes our fd and unmaps our mapping; a thread still stalled is woken by the
        // close and then faults the page in normally.
        unsafe {
            libc::close(self.uffd);
            libc::munmap(self.addr, LEN);
        }
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Forks a reader of `dev`: plain, or with SIGALRM (no SA_RESTART) after
/// `alarm` seconds. Exit status, also written as one byte to `report` (if not
/// -1) before the child closes anything: 0 the read failed with EINTR, 1 it
/// returned data, 2 another error, 3 the open failed.
fn fork_reader(dev: &CString, alarm: u32, report: libc::c_int) -> Result<libc::pid_t, String> {
    // SAFETY: the child only makes async-signal-safe calls (sigaction, alarm, open, read, _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid == 0 {
        // SAFETY: see above; the buffer is the child's own stack.
        unsafe {
            if alarm > 0 {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
                libc::alarm(alarm);
            }
            let fd = libc::open(dev.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                libc::_exit(3);
            }
            let mut b = [0u8; 16];
            let r = libc::read(fd, b.as_mut_ptr().cast(), b.len());
            let eintr = r < 0 && *libc::__errno_location() == libc::EINTR;
            let code: u8 = if eintr { 0 } else if r >= 0 { 1 } else { 2 };
            if report >= 0 {
                libc::write(report, (&code as *const u8).cast(), 1);
            }
            libc::_exit(code as libc::c_int);
        }
    }
    Ok(pid)
}

/// Forks a poller of the pipe `dev`: it opens it (non-blocking, read-only),
/// waits for a byte on `go`, then polls it for input for up to 30 s. It is
/// meant to be killed while in poll(2); its exit status is not checked.
fn fork_poller(dev: &CString, go: libc::c_int) -> Result<libc::pid_t, String> {
    // SAFETY: the child only makes async-signal-safe calls (open, read, poll, _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid == 0 {
        // SAFETY: see above; the buffers are the child's own stack.
        unsafe {
            let fd = libc::open(dev.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
            if fd < 0 {
                libc::_exit(3);
            }
            let mut b = 0u8;
            libc::read(go, (&mut b as *mut u8).cast(), 1);
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            libc::poll(&mut pfd, 1, 30_000);
            libc::_exit(0);
        }
    }
    Ok(pid)
}

/// The process state letter from /proc/PID/stat (R, S, D...).
fn state(pid: libc::pid_t) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    s.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()).unwrap_or('?')
}

/// Reaps `pid` within `within`: its wait status, or None if it is still there.
fn reap(pid: libc::pid_t, within: Duration) -> Option<libc::c_int> {
    let t0 = Instant::now();
    loop {
        let mut st = 0;
        // SAFETY: waits for our own child without blocking.
        if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
            return Some(st);
        }
        if t0.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Store: the readers come after the writer stalled, and wait for the lock.
pub fn read_killable_while_writer_stalls(_t: &dyn Target) -> R {
    stalled_writer_case("/dev/scull0", false)
}

/// Pipe: a reader blocks on the empty pipe first; the writer then stalls
/// holding the pipe's lock; the reader, signalled, must get EINTR without
/// needing that lock back, and its exit (whose release cannot fail, nor be
/// interrupted in a dying task) must not wait for the lock either. A poller
/// that calls poll(2) on the pipe while the writer stalls must be killable.
/// Each is bounded by [`BOUND`].
pub fn pipe_reader_interruptible_while_writer_stalls(_t: &dyn Target) -> R {
    stalled_writer_case("/dev/scullpipe0", true)
}

fn stalled_writer_case(path: &str, pipe: bool) -> R {
    let dev = CString::new(path).expect("no NUL");
    let stall = Stall::new()?;
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + 3) as u8).collect();
    let mut problems = Vec::new();
    // Children not reaped yet.
    let mut pids = Vec::new();
    // A pipe keeps its data only while open: hold it open to check it after.
    // SAFETY: a valid path; closed at the end.
    let keep = if pipe { unsafe { libc::open(dev.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) } } else { -1 };
    if pipe && keep < 0 {
        return Err(os_err("open the pipe"));
    }
    let mut readers = None;
    let mut report = [-1 as libc::c_int; 2];
    let mut go = [-1 as libc::c_int; 2];
    let mut poller = None;
    if pipe {
        // SAFETY: a pipe(2) to start the poller; both ends closed below.
        if unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(os_err("pipe2"));
        }
        // It opens the pipe now (an open waits for the lock) and polls on `go`.
        poller = Some(fork_poller(&dev, go[0])?);
        // SAFETY: a pipe(2) for the reader's report; both ends closed below.
        if unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(os_err("pipe2"));
        }
        // It blocks on the empty pipe before the writer stalls; SIGALRM after 2 s.
        pids.push(fork_reader(&dev, 2, report[1])?);
        std::thread::sleep(Duration::from_millis(300));
    }
    // SAFETY: a valid path; the fd is closed by the writer thread.
    let wfd = unsafe { libc::open(dev.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if wfd < 0 {
        return Err(os_err("open for writing"));
    }
    let buf = stall.addr as usize;
    let writer = std::thread::spawn(move || {
        // SAFETY: `buf` is LEN bytes of our mapping, alive until the thread is joined.
        let n = unsafe { libc::write(wfd, buf as *const libc::c_void, LEN) };
        let e = std::io::Error::last_os_error();
        // SAFETY: our fd.
        unsafe { libc::close(wfd) };
        if n < 0 {
            Err(e.to_string())
        } else {
            Ok(n as usize)
        }
    });
    let stalled = stall.wait_fault(BOUND);
    if let Err(e) = &stalled {
        problems.push(e.clone());
    }
    if stalled.is_ok() && !pipe {
        // Reader 1 is SIGKILLed; reader 2 gets SIGALRM after 1 s.
        readers = Some((fork_reader(&dev, 0, -1)?, fork_reader(&dev, 1, -1)?));
    }
    if stalled.is_ok() && pipe {
        let mut pfd = libc::pollfd { fd: report[0], events: libc::POLLIN, revents: 0 };
        let mut code = 9u8;
        // SAFETY: one valid pollfd, then one byte into `code`.
        let ready = unsafe { libc::poll(&mut pfd, 1, (BOUND + Duration::from_secs(2)).as_millis() as i32) } > 0
            && unsafe { libc::read(report[0], (&mut code as *mut u8).cast(), 1) } == 1;
        if !ready || code != 0 {
            problems.push(format!(
                "a pipe reader signalled while the writer stalled: {} (state {})",
                if ready { format!("status {code} (0: EINTR, 1: read data, 2: other error, 3: open failed)") } else { format!("no EINTR within {BOUND:?} of SIGALRM") },
                pids.first().map_or('?', |&p| state(p))
            ));
        } else if let Some(&reader) = pids.first() {
            // Having reported, it exits: its release must not wait for the lock.
            if reap(reader, BOUND).is_some() {
                pids.clear();
            } else {
                problems.push(format!("the pipe reader's exit (state {}) waited for the stalled writer's lock in release", state(reader)));
            }
        }
    }
    if let (Some(p), true) = (poller.take(), stalled.is_ok()) {
        // SAFETY: one byte into our own pipe; the poller then calls poll(2) on the scull pipe.
        unsafe { libc::write(go[1], b"g".as_ptr().cast(), 1) };
        std::thread::sleep(Duration::from_millis(500));
        let s = state(p);
        // SAFETY: signals our own child.
        unsafe { libc::kill(p, libc::SIGKILL) };
        if reap(p, BOUND).is_none() {
            problems.push(format!("a poller of the pipe (state {s}) was not reaped within {BOUND:?} of SIGKILL while the writer stalled"));
            pids.push(p);
        }
    } else if let Some(p) = poller {
        pids.push(p);
    }
    if let Some((killed, alarmed)) = readers {
        std::thread::sleep(Duration::from_millis(500));
        let s = state(killed);
        // SAFETY: signals our own child.
        unsafe { libc::kill(killed, libc::SIGKILL) };
        match reap(killed, BOUND) {
            Some(st) if libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL => {}
            Some(st) => problems.push(format!("the SIGKILLed reader ended with status {st:#x}, not by SIGKILL")),
            None => {
                problems.push(format!("a reader (state {s}) was not reaped within {BOUND:?} of SIGKILL while the writer stalled"));
                pids.push(killed);
            }
        }
        match reap(alarmed, BOUND + Duration::from_secs(2)) {
            Some(st) if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 => {}
            Some(st) => problems.push(format!("the SIGALRMed reader: status {st:#x} (0: EINTR, 1: read data, 2: other error, 3: open failed)")),
            None => {
                problems.push(format!("a reader (state {}) did not see EINTR within {BOUND:?} of SIGALRM while the writer stalled", state(alarmed)));
                pids.push(alarmed);
            }
        }
    }
    // Release the writer whatever happened, then let every child finish.
    stall.serve(&data)?;
    let wrote = writer.join().map_err(|_| "writer thread panicked".to_string())?;
    for fd in report.into_iter().chain(go) {
        if fd >= 0 {
            // SAFETY: our report pipe's ends.
            unsafe { libc::close(fd) };
        }
    }
    for pid in pids {
        // SAFETY: signals our own child, one still stuck before the release.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        if reap(pid, BOUND).is_none() {
            problems.push(format!("reader {pid} still alive after the writer was released"));
        }
    }
    let want = if pipe { None } else { Some(LEN) };
    let n_written = match wrote {
        Ok(n) if want.is_none_or(|w| n == w) && n > 0 => n,
        other => {
            problems.push(format!("the stalled write: {other:?}, expected {}", if pipe { "a count > 0".to_string() } else { format!("{LEN} bytes") }));
            0
        }
    };
    drop(stall);
    // Everything consistent: the device holds exactly what was written.
    // SAFETY: a valid path (or the pipe fd held open); closed below.
    let rfd = if pipe { keep } else { unsafe { libc::open(dev.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) } };
    if rfd < 0 {
        return Err(os_err("open for reading"));
    }
    let mut back = vec![0u8; LEN + 1];
    // SAFETY: reading into our buffer.
    let n = unsafe { libc::read(rfd, back.as_mut_ptr().cast(), back.len()) };
    // SAFETY: our fd.
    unsafe { libc::close(rfd) };
    if n != n_written as isize || back[..n_written] != data[..n_written] {
        problems.push(format!("{path} after the stalled write of {n_written} bytes: read {n}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

//! The cancellable read (`Target::read_cancellable`): a thread blocks in
//! read(2) and is interrupted with SIGUSR1, installed without SA_RESTART, so
//! the read fails with EINTR, as a signal interrupts LDD3's sleeping reader.

use super::sys;
use crate::backend::{OpenOpts, Pending};
use scull_core::devices::Dev;
use scull_core::Error;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// SIGUSR1 interrupts a blocked system call of the thread it is sent to.
pub fn install_sigusr1() {
    // SAFETY: installs a no-op handler without SA_RESTART, so blocked syscalls return EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// What a cancellable read ends with: the bytes, or the error.
type ReadResult = Result<Vec<u8>, Error>;

struct SignalPending {
    tid: Arc<AtomicI32>,
    done: Arc<AtomicBool>,
    cancelled: bool,
    thread: Option<std::thread::JoinHandle<Result<Vec<u8>, Error>>>,
    result: Arc<Mutex<Option<ReadResult>>>,
}

impl SignalPending {
    fn kick(&self) {
        let tid = self.tid.load(Ordering::SeqCst);
        if tid > 0 && !self.done.load(Ordering::SeqCst) {
            // SAFETY: signals a thread of this process that is still running.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
        }
    }
}

impl Pending for SignalPending {
    fn is_done(&mut self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
    fn cancel(&mut self, _close: bool) -> Result<(), Error> {
        self.cancelled = true;
        self.kick();
        Ok(())
    }
    fn wait(mut self: Box<Self>, timeout: Duration) -> Result<Vec<u8>, Error> {
        let start = Instant::now();
        while !self.done.load(Ordering::SeqCst) {
            if start.elapsed() > timeout {
                return Err(Error::WouldBlock);
            }
            if self.cancelled {
                // The first signal may have arrived before the thread entered read(2).
                self.kick();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = self.result.lock().ok().and_then(|mut g| g.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        r.unwrap_or(Err(Error::Interrupted))
    }
}

/// Starts a blocking read of up to `len` bytes from a new handle on `dev`.
pub fn read(dev: Dev, len: usize) -> Result<Box<dyn Pending>, Error> {
    let fd = sys::open(dev, OpenOpts::R)?;
    let tid = Arc::new(AtomicI32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let result = Arc::new(Mutex::new(None));
    let (t2, d2, r2) = (tid.clone(), done.clone(), result.clone());
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        t2.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        let mut b = vec![0u8; len];
        let r = sys::read(fd.as_raw_fd(), &mut b).map(|n| {
            b.truncate(n);
            b
        });
        if let Ok(mut g) = r2.lock() {
            *g = Some(r.clone());
        }
        d2.store(true, Ordering::SeqCst);
        r
    });
    while tid.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    Ok(Box::new(SignalPending { tid, done, cancelled: false, thread: Some(thread), result }))
}

//! The Linux target: `/dev/scull*` of the scull.ko module (`linux`, or `qemu`
//! when run in the QEMU guest).
//!
//! - `Who::Me` is this process ([`sys`], the system calls).
//! - `Who::Other` and `spawn_writer` are a helper process ([`proxy`]).
//! - `read_cancellable` blocks a thread in read(2) and interrupts it with a
//!   signal ([`cancel`]).
//! - `fuzz_bad_pointers` makes raw system calls on invalid user pointers
//!   ([`badptr`]).
//!
//! The suite's Linux-only cases pick this target by its ioctl ABI; nothing
//! here depends on them.

mod badptr;
mod cancel;
pub mod proxy;
pub mod sys;

use super::{Caps, Handle, Join, OpenOpts, Pending, Ready, Target, Who};
use scull_core::devices::Dev;
use scull_core::ioctl::{Cmd, LINUX_STATS_SIZE};
use scull_core::store::Whence;
use scull_core::Error;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

pub use proxy::OTHER_UID;

/// A handle in this process.
struct LocalHandle(OwnedFd);

impl Handle for LocalHandle {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        sys::read(self.0.as_raw_fd(), buf)
    }
    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        sys::write(self.0.as_raw_fd(), buf)
    }
    fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error> {
        sys::seek(self.0.as_raw_fd(), whence, off)
    }
    fn set_len(&mut self, len: u64) -> Result<(), Error> {
        sys::set_len(self.0.as_raw_fd(), len)
    }
    fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32, Error> {
        sys::ioctl(self.0.as_raw_fd(), cmd, value)
    }
    fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
        sys::ioctl_raw(self.0.as_raw_fd(), code, input, out_len).map(|v| v[4..].to_vec())
    }
    fn stats(&mut self) -> Result<String, Error> {
        let out = sys::ioctl_raw(self.0.as_raw_fd(), Cmd::Stats.linux_code(), &[], LINUX_STATS_SIZE as usize)?;
        let len = i32::from_le_bytes([out[0], out[1], out[2], out[3]]).max(0) as usize;
        Ok(String::from_utf8_lossy(&out[4..4 + len.min(out.len() - 4)]).into_owned())
    }
    fn poll(&mut self) -> Result<Ready, Error> {
        sys::poll(self.0.as_raw_fd())
    }
}

/// A writer running on a thread of this process (its helper is the other process).
struct ThreadJoin(std::thread::JoinHandle<Result<usize, Error>>);

impl Join for ThreadJoin {
    fn join(self: Box<Self>) -> Result<usize, Error> {
        self.0.join().unwrap_or(Err(Error::Interrupted))
    }
}

/// scull.ko's devices as `/dev` shows them (the counts are the nodes found).
pub struct LinuxTarget {
    name: &'static str,
    nr_devs: u8,
    p_nr_devs: u8,
}

/// How many of `/dev/<prefix>0`, `1`, ... exist, counting up to the first gap.
fn count_nodes(prefix: &str) -> u8 {
    (0..64u8).take_while(|i| std::path::Path::new(&format!("/dev/{prefix}{i}")).exists()).count() as u8
}

impl LinuxTarget {
    pub fn new(name: &'static str) -> Self {
        cancel::install_sigusr1();
        LinuxTarget { name, nr_devs: count_nodes("scull"), p_nr_devs: count_nodes("scullpipe") }
    }
}

impl Target for LinuxTarget {
    fn name(&self) -> &str {
        self.name
    }

    fn caps(&self) -> Caps {
        // SAFETY: getter syscalls.
        let root = unsafe { libc::geteuid() } == 0;
        let mut tty = false;
        // SAFETY: opening our controlling tty only tests that we have one.
        let fd = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDONLY | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if fd >= 0 {
            tty = true;
            // SAFETY: closes the fd just opened.
            unsafe { libc::close(fd) };
        }
        Caps {
            privileged: root,
            other_user: root,
            poll: true,
            cancel: true,
            processes: true,
            priv_dev: tty,
            linux_abi: true,
            pipe_seek_refused: true,
            open_modes: true,
            set_len: false,
            nr_devs: self.nr_devs,
            p_nr_devs: self.p_nr_devs,
        }
    }

    fn open_as(&self, who: Who, dev: Dev, opts: OpenOpts) -> Result<Box<dyn Handle>, Error> {
        match who {
            Who::Me => Ok(Box::new(LocalHandle(sys::open(dev, opts)?))),
            Who::Other => Ok(Box::new(proxy::RemoteHandle::spawn(dev, opts, true)?)),
        }
    }

    fn read_cancellable(&self, dev: Dev, len: usize) -> Result<Box<dyn Pending>, Error> {
        cancel::read(dev, len)
    }

    fn spawn_writer(&self, dev: Dev, data: Vec<u8>, delay: Duration) -> Result<Box<dyn Join>, Error> {
        let t = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let mut h = proxy::RemoteHandle::spawn(dev, OpenOpts::W, false)?;
            let mut at = 0;
            while at < data.len() {
                let n = h.write(&data[at..])?;
                if n == 0 {
                    break;
                }
                at += n;
            }
            Ok(at)
        });
        Ok(Box::new(ThreadJoin(t)))
    }

    fn fuzz_bad_pointers(&self, rng: &mut crate::rng::Rng, n: usize) -> Option<Result<usize, String>> {
        Some(badptr::run(self, rng, n))
    }
}

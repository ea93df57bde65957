// SPDX-License-Identifier: GPL-2.0
//! The file operations (LDD3's `scull_fops` and `scull_pipe_fops`): open
//! with each device's access policy, release, read and write (the pipes
//! sleeping on their queues), llseek, the ioctls, poll and fasync.

use kernel::alloc::{flags::GFP_KERNEL, KVec};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::poll::PollTable;
use kernel::uaccess::{UserPtr, UserSlice};

use crate::chrdev::{self, capable, lock_interruptible, FileOps, FileRef};
use crate::devices::Dev;
use crate::error::Error;
use crate::ioctl::{self, ArgIn, ArgOut, Cmd};
use crate::kmem::KPlat;
use crate::state::{new_store, state, PipeDev, State, StoreDev};
use crate::store::{self, Whence};
use crate::{fault, report, R};

/// How an open store device releases.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Plain,
    Single,
    Uid,
    Wuid,
    Priv,
}

/// One open file.
pub(crate) enum Open {
    Store { dev: &'static StoreDev, access: Access },
    Pipe { dev: &'static PipeDev },
}

/// The current task's (uid, euid).
fn current_ids() -> (u32, u32) {
    let uid = current!().uid().into_uid_in_current_ns();
    let euid = kernel::task::Kuid::current_euid().into_uid_in_current_ns();
    (uid, euid)
}

/// LDD3's override, asked only when the owner does not match (`open_lazy`):
/// capable() audits and sets PF_SUPERPRIV, so the owner's opens must not call it.
fn may_override() -> bool {
    capable(bindings::CAP_DAC_OVERRIDE)
}

/// LDD3 trims a store opened write-only; scull-rs also trims on O_TRUNC.
fn maybe_trim(st: &State, dev: &StoreDev, file: &FileRef<'_>) -> R<()> {
    if file.write_only() || (file.writable() && file.flags() & bindings::O_TRUNC != 0) {
        lock_interruptible(dev)?.trim(st.params.geometry());
    }
    Ok(())
}

fn open_store(st: &'static State, d: Dev, file: &FileRef<'_>) -> R<Open> {
    let (dev, access): (&'static StoreDev, Access) = match d {
        Dev::Scull(_) => (st.store(d).ok_or(Error::NoDevice)?, Access::Plain),
        Dev::Single => {
            st.single_open.open()?;
            (&st.single, Access::Single)
        }
        Dev::Uid => {
            let (uid, euid) = current_ids();
            st.uid_state.lock().open_lazy(uid, euid, may_override)?;
            (&st.uid, Access::Uid)
        }
        Dev::Wuid => {
            let ws = &st.wuid_state;
            let (uid, euid) = current_ids();
            let mut g = ws.lock.lock();
            loop {
                match g.open_lazy(uid, euid, may_override) {
                    Ok(()) => break,
                    Err(Error::WouldBlock) if !file.nonblocking() => {
                        if ws.cv.wait_interruptible(&mut g) {
                            return Err(Error::Interrupted);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            (&st.wuid, Access::Wuid)
        }
        Dev::Priv => {
            let key = chrdev::current_tty().ok_or(Error::Invalid)?;
            let g = st.params.geometry();
            let mut t = st.privs.lock();
            let i = t.lookup_or_create(key, || new_store(g))?;
            let d: &StoreDev = t.get(i).ok_or(Error::NoDevice)?;
            let p: *const StoreDev = d;
            // SAFETY: scullpriv devices are pinned boxes kept in the table until State drops at module
            // exit (never removed before), so the device outlives every open file.
            (unsafe { &*p }, Access::Priv)
        }
        Dev::Pipe(_) => return Err(Error::NoDevice),
    };
    if let Err(e) = maybe_trim(st, dev, file) {
        release_access(st, access);
        return Err(e);
    }
    // Shared store files serialise f_pos (read/write/llseek) on f_pos_lock, which
    // char devices do not get by default; llseek's SAFETY comment relies on it.
    file.set_atomic_pos();
    Ok(Open::Store { dev, access })
}

/// Gives back what `open_store` claimed for `access`.
fn release_access(st: &State, access: Access) {
    match access {
        Access::Plain | Access::Priv => {}
        Access::Single => st.single_open.release(),
        Access::Uid => st.uid_state.lock().release(),
        Access::Wuid => {
            if st.wuid_state.lock.lock().release() {
                st.wuid_state.cv.notify_all();
            }
        }
    }
}

impl FileOps for Open {
    fn open(minor: u32, file: &FileRef<'_>) -> R<Open> {
        let st = state()?;
        let d = st.table.get(minor as usize).ok_or(Error::NoDevice)?;
        if let Dev::Pipe(n) = d {
            let dev: &'static PipeDev = &st.pipes[n as usize];
            file.stream_open();
            dev.lock()?.pipe.open(&KPlat, file.readable(), file.writable(), st.params.p_buffer() as usize)?;
            return Ok(Open::Pipe { dev });
        }
        open_store(st, d, file)
    }

    fn release(self, file: &FileRef<'_>) {
        let Ok(st) = state() else { return };
        match self {
            Open::Pipe { dev } => {
                let _ = dev.async_queue.helper(-1, file, false);
                dev.release(file.readable(), file.writable());
            }
            Open::Store { access, .. } => release_access(st, access),
        }
    }

    fn read(&self, file: &FileRef<'_>, buf: UserSlice, count: usize, pos: Option<&mut i64>) -> R<usize> {
        let mut w = buf.writer();
        match self {
            Open::Store { dev, .. } => {
                // Store files are seekable (not FMODE_STREAM): the VFS always passes a position.
                let pos = pos.ok_or(Error::Invalid)?;
                let at = u64::try_from(*pos).map_err(|_| Error::Invalid)?;
                let n = lock_interruptible(dev)?.read_with(at, count, |src| w.write_slice(src).map_err(|_| Error::Fault))?;
                *pos += n as i64;
                Ok(n)
            }
            Open::Pipe { dev } => loop {
                let mut g = dev.lock()?;
                let r = g.pipe.read_with(count, |src| w.write_slice(src).map_err(|_| Error::Fault));
                match r {
                    Err(Error::WouldBlock) if !file.nonblocking() => {
                        if dev.wait(g, &dev.inq, &dev.waiting_readers) {
                            return Err(Error::Interrupted);
                        }
                    }
                    Ok(n) => {
                        drop(g);
                        dev.wake(&dev.outq);
                        return Ok(n);
                    }
                    Err(e) => return Err(e),
                }
            },
        }
    }

    fn write(&self, file: &FileRef<'_>, buf: UserSlice, count: usize, pos: Option<&mut i64>) -> R<usize> {
        let mut r = buf.reader();
        match self {
            Open::Store { dev, .. } => {
                let pos = pos.ok_or(Error::Invalid)?;
                let at = u64::try_from(*pos).map_err(|_| Error::Invalid)?;
                let n = lock_interruptible(dev)?.write_with(at, count, |dst| r.read_slice(dst).map_err(|_| Error::Fault))?;
                *pos += n as i64;
                Ok(n)
            }
            Open::Pipe { dev } => loop {
                let mut g = dev.lock()?;
                let res = g.pipe.write_with(count, |dst| r.read_slice(dst).map_err(|_| Error::Fault));
                match res {
                    Err(Error::WouldBlock) if !file.nonblocking() => {
                        if dev.wait(g, &dev.outq, &dev.waiting_writers) {
                            return Err(Error::Interrupted);
                        }
                    }
                    Ok(n) => {
                        drop(g);
                        dev.wake(&dev.inq);
                        dev.async_queue.kill_io_in();
                        return Ok(n);
                    }
                    Err(e) => return Err(e),
                }
            },
        }
    }

    fn llseek(&self, _file: &FileRef<'_>, pos: i64, off: i64, whence: u32) -> R<i64> {
        match self {
            Open::Pipe { .. } => Err(Error::NotSeekable),
            Open::Store { dev, .. } => {
                let whence = Whence::from_raw(whence)?;
                let size = lock_interruptible(dev)?.size();
                let p = store::seek(u64::try_from(pos).map_err(|_| Error::Invalid)?, size, whence, off)?;
                i64::try_from(p).map_err(|_| Error::Invalid)
            }
        }
    }

    fn ioctl(&self, _file: &FileRef<'_>, code: u32, arg: usize) -> R<i64> {
        let st = state()?;
        let cmd = Cmd::from_linux_code(code)?;
        let privileged = cmd.needs_privilege() && capable(bindings::CAP_SYS_ADMIN);
        if cmd.needs_privilege() && !privileged {
            return Err(Error::Perm);
        }
        let user = |len| UserSlice::new(UserPtr::from_addr(arg), len);
        if cmd == Cmd::Stats {
            return stats_ioctl(st, user(ioctl::LINUX_STATS_SIZE as usize));
        }
        let value = match cmd.arg_in() {
            ArgIn::None => 0,
            ArgIn::Value => i32::try_from(arg as i64).map_err(|_| Error::Invalid)?,
            ArgIn::Pointer => user(4).reader().read::<i32>().map_err(|_| Error::Fault)?,
        };
        let result = ioctl::execute(&st.params, cmd, value, privileged)?;
        match cmd.arg_out() {
            ArgOut::Pointer => {
                user(4).writer().write(&result).map_err(|_| Error::Fault)?;
                Ok(0)
            }
            ArgOut::Return => Ok(result as i64),
            _ => Ok(0),
        }
    }

    fn poll(&self, file: &FileRef<'_>, table: &PollTable<'_>) -> u32 {
        match self {
            Open::Store { .. } => bindings::POLLIN | bindings::POLLRDNORM | bindings::POLLOUT | bindings::POLLWRNORM,
            Open::Pipe { dev } => {
                table.register_wait(file.as_file(), &dev.inq);
                table.register_wait(file.as_file(), &dev.outq);
                // A signal ends the wait for a lock held by a stalled copy:
                // nothing is ready, and the poll syscall, seeing the signal
                // pending, returns EINTR (ERESTARTNOHAND).
                let Ok(g) = dev.lock() else { return 0 };
                let mut mask = 0;
                if g.pipe.readable() {
                    mask |= bindings::POLLIN | bindings::POLLRDNORM;
                }
                if g.pipe.writable() {
                    mask |= bindings::POLLOUT | bindings::POLLWRNORM;
                }
                mask
            }
        }
    }

    fn fasync(&self, fd: i32, file: &FileRef<'_>, on: bool) -> R<()> {
        match self {
            Open::Pipe { dev } => dev.async_queue.helper(fd, file, on),
            Open::Store { .. } => Ok(()),
        }
    }
}

/// SCULL_IOCSTATS: the report, NUL-terminated, truncated to the buffer.
fn stats_ioctl(st: &State, out: UserSlice) -> R<i64> {
    let size = ioctl::LINUX_STATS_SIZE as usize;
    fault::check()?;
    let mut buf = KVec::<u8>::zeroed(size, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
    let len = {
        let mut t = report::TextBuf::new(&mut buf[..size - 1]);
        // A TextBuf never fails: an error is a signal while waiting for a device's lock.
        st.mem_report(&mut t).and_then(|()| st.pipe_report(&mut t)).map_err(|_| Error::Interrupted)?;
        t.len()
    };
    out.writer().write_slice(&buf[..len + 1]).map_err(|_| Error::Fault)?;
    Ok(len as i64)
}

//! The helper process behind `Who::Other` and `spawn_writer`: a forked child
//! that (for `Who::Other`) made itself a session leader with its own
//! pseudo-terminal as controlling tty, so scullpriv sees another key, and
//! switched to uid/gid [`OTHER_UID`], which drops every capability. It opens
//! the device and performs each operation on request over a socketpair, so
//! the kernel sees the second uid for open, ioctl's `capable()` and
//! everything else. A writer uses the same helper without the uid switch:
//! another process, as LDD3's "a reader woken by a writer" demands.

use super::sys;
use crate::backend::{Handle, OpenOpts, Ready};
use scull_core::devices::Dev;
use scull_core::ioctl::Cmd;
use scull_core::store::Whence;
use scull_core::Error;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The second user's uid and gid.
pub const OTHER_UID: u32 = 1001;

/// Requests: op byte, then little-endian arguments. Replies: i64 status
/// (negative errno, or a result), u32 length, bytes.
const OP_READ: u8 = 1;
const OP_WRITE: u8 = 2;
const OP_SEEK: u8 = 3;
const OP_SETLEN: u8 = 4;
const OP_IOCTL: u8 = 5;
const OP_RAW: u8 = 6;
const OP_POLL: u8 = 7;

fn send(s: &mut UnixStream, status: i64, data: &[u8]) -> std::io::Result<()> {
    let mut m = Vec::with_capacity(12 + data.len());
    m.extend_from_slice(&status.to_le_bytes());
    m.extend_from_slice(&(data.len() as u32).to_le_bytes());
    m.extend_from_slice(data);
    s.write_all(&m)
}

fn recv(s: &mut UnixStream) -> std::io::Result<(i64, Vec<u8>)> {
    let mut h = [0u8; 12];
    s.read_exact(&mut h)?;
    let status = i64::from_le_bytes(h[..8].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(h[8..].try_into().unwrap_or_default()) as usize;
    let mut d = vec![0u8; len];
    s.read_exact(&mut d)?;
    Ok((status, d))
}

fn status<T>(r: &Result<T, Error>, v: impl Fn(&T) -> i64) -> i64 {
    match r {
        Ok(t) => v(t),
        Err(e) => -(e.errno() as i64),
    }
}

/// In the child: become the other user (with its own tty), open, serve.
fn child_main(mut s: UnixStream, dev: Dev, o: OpenOpts, other: bool) -> i32 {
    // Drop every descriptor inherited from the parent but our socket: a
    // duplicate of the parent's device file would keep it open after the
    // parent closes it (scullwuid would never be released).
    let keep = s.as_raw_fd();
    for fd in 3..4096 {
        if fd != keep {
            // SAFETY: closing descriptors this single-threaded child does not use.
            unsafe { libc::close(fd) };
        }
    }
    if other && become_other().is_err() {
        let _ = send(&mut s, -(libc::EPERM as i64), &[]);
        return 1;
    }
    let fd = match sys::open(dev, o) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = send(&mut s, -(e.errno() as i64), &[]);
            return 0;
        }
    };
    if send(&mut s, 0, &[]).is_err() {
        return 0;
    }
    let fd = fd.as_raw_fd();
    loop {
        let (op, arg) = match recv(&mut s) {
            Ok(m) => m,
            Err(_) => return 0, // parent closed: drop the handle
        };
        let a = |i: usize| i64::from_le_bytes(arg[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let r = match op as u8 {
            OP_READ => {
                let mut b = vec![0u8; a(0) as usize];
                let r = sys::read(fd, &mut b);
                let st = status(&r, |n| *n as i64);
                b.truncate(r.unwrap_or(0));
                send(&mut s, st, &b)
            }
            OP_WRITE => {
                let r = sys::write(fd, &arg);
                send(&mut s, status(&r, |n| *n as i64), &[])
            }
            OP_SEEK => {
                let w = Whence::from_raw(a(0) as u32).unwrap_or(Whence::Set);
                let r = sys::seek(fd, w, a(1));
                send(&mut s, status(&r, |n| *n as i64), &[])
            }
            OP_SETLEN => {
                let r = sys::set_len(fd, a(0) as u64);
                send(&mut s, status(&r, |_| 0), &[])
            }
            OP_IOCTL => {
                let r = match Cmd::from_nr(a(0) as u32) {
                    Some(c) => sys::ioctl(fd, c, a(1) as i32),
                    None => Err(Error::NotTty),
                };
                send(&mut s, status(&r, |v| *v as i64), &[])
            }
            OP_RAW => {
                let r = sys::ioctl_raw(fd, a(0) as u32, &arg[16..], a(1) as usize);
                let st = status(&r, |_| 0);
                send(&mut s, st, &r.unwrap_or_default())
            }
            OP_POLL => {
                let r = sys::poll(fd);
                send(&mut s, status(&r, |p| i64::from(p.readable) | (i64::from(p.writable) << 1)), &[])
            }
            _ => send(&mut s, -(libc::EINVAL as i64), &[]),
        };
        if r.is_err() {
            return 0;
        }
    }
}

/// setsid + a new pty as controlling tty, then uid/gid 1001.
fn become_other() -> Result<(), Error> {
    // SAFETY: plain syscalls in the single-threaded child.
    unsafe {
        if libc::setsid() < 0 {
            return Err(sys::errno());
        }
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if m >= 0 && libc::grantpt(m) == 0 && libc::unlockpt(m) == 0 {
            let name = libc::ptsname(m);
            if !name.is_null() {
                let s = libc::open(name, libc::O_RDWR);
                if s >= 0 {
                    libc::ioctl(s, libc::TIOCSCTTY as _, 0);
                }
            }
        }
        if libc::setgroups(0, std::ptr::null()) < 0 || libc::setresgid(OTHER_UID, OTHER_UID, OTHER_UID) < 0 {
            return Err(sys::errno());
        }
        if libc::setresuid(OTHER_UID, OTHER_UID, OTHER_UID) < 0 {
            return Err(sys::errno());
        }
    }
    Ok(())
}

/// A handle held by a helper process.
pub struct RemoteHandle {
    sock: UnixStream,
    pid: i32,
}

impl RemoteHandle {
    /// Forks a helper that opens `dev` with `o`, as the second user when
    /// `other` is set, and serves this handle's calls.
    pub fn spawn(dev: Dev, o: OpenOpts, other: bool) -> Result<RemoteHandle, Error> {
        let (mut parent, child) = UnixStream::pair().map_err(|_| Error::NoMemory)?;
        // SAFETY: fork; the child only runs `child_main` and exits (musl's malloc is fork-safe).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(sys::errno());
        }
        if pid == 0 {
            drop(parent);
            let code = child_main(child, dev, o, other);
            // SAFETY: leave without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        drop(child);
        let mut h = RemoteHandle { sock: parent.try_clone().map_err(|_| Error::NoMemory)?, pid };
        let (st, _) = recv(&mut parent).map_err(|_| Error::NoDevice)?;
        if st < 0 {
            return Err(Error::from_errno(-st as i32).unwrap_or(Error::Invalid));
        }
        h.pid = pid;
        Ok(h)
    }

    fn call(&mut self, op: u8, args: &[i64], data: &[u8]) -> Result<(i64, Vec<u8>), Error> {
        let mut m = Vec::new();
        for a in args {
            m.extend_from_slice(&a.to_le_bytes());
        }
        m.extend_from_slice(data);
        send(&mut self.sock, op as i64, &m).map_err(|_| Error::NoDevice)?;
        let (st, d) = recv(&mut self.sock).map_err(|_| Error::NoDevice)?;
        if st < 0 {
            Err(Error::from_errno(-st as i32).unwrap_or(Error::Invalid))
        } else {
            Ok((st, d))
        }
    }
}

impl Drop for RemoteHandle {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let mut st = 0;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(self.pid, &mut st, 0) };
    }
}

impl Handle for RemoteHandle {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let (n, d) = self.call(OP_READ, &[buf.len() as i64], &[])?;
        buf[..d.len()].copy_from_slice(&d);
        Ok(n as usize)
    }
    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        self.call(OP_WRITE, &[], buf).map(|(n, _)| n as usize)
    }
    fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error> {
        self.call(OP_SEEK, &[whence as i64, off], &[]).map(|(n, _)| n as u64)
    }
    fn set_len(&mut self, len: u64) -> Result<(), Error> {
        self.call(OP_SETLEN, &[len as i64], &[]).map(drop)
    }
    fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32, Error> {
        self.call(OP_IOCTL, &[cmd.nr() as i64, value as i64], &[]).map(|(n, _)| n as i32)
    }
    fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
        self.call(OP_RAW, &[code as i64, out_len as i64], input).map(|(_, d)| d[4..].to_vec())
    }
    fn poll(&mut self) -> Result<Ready, Error> {
        let (v, _) = self.call(OP_POLL, &[], &[])?;
        Ok(Ready { readable: v & 1 != 0, writable: v & 2 != 0 })
    }
}

//! The system calls on scull's device nodes: open(2) with the flags an
//! [`OpenOpts`] stands for, and read, write, lseek, ftruncate, ioctl and poll
//! on a raw fd, each error mapped through scull-core's errno table. The local
//! handle, the helper process, the cancellable read, the bad-pointer fuzz and
//! the fault sweep all call these.

use crate::backend::{OpenOpts, Ready};
use scull_core::devices::Dev;
use scull_core::ioctl::{ArgIn, ArgOut, Cmd, LINUX_STATS_SIZE};
use scull_core::store::Whence;
use scull_core::Error;
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

/// The last OS error as scull's error (errnos outside scull-core's table
/// become `Invalid`).
pub fn errno() -> Error {
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    Error::from_errno(e).unwrap_or(Error::Invalid)
}

/// `/dev/<name>` of a device.
pub fn path(dev: Dev) -> CString {
    let mut s = String::from("/dev/");
    let _ = dev.linux_name(&mut s);
    CString::new(s).expect("no NUL in device names")
}

fn oflags(o: OpenOpts) -> i32 {
    let mut f = match (o.read, o.write) {
        (true, true) => libc::O_RDWR,
        (false, true) => libc::O_WRONLY,
        _ => libc::O_RDONLY,
    };
    if o.nonblock {
        f |= libc::O_NONBLOCK;
    }
    if o.truncate {
        f |= libc::O_TRUNC;
    }
    f | libc::O_CLOEXEC
}

/// open(2) of a device node with the flags `o` stands for.
pub fn open(dev: Dev, o: OpenOpts) -> Result<OwnedFd, Error> {
    let p = path(dev);
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe { libc::open(p.as_ptr(), oflags(o)) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Error> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Error> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

pub fn seek(fd: i32, whence: Whence, off: i64) -> Result<u64, Error> {
    // SAFETY: plain syscall on an fd.
    let r = unsafe { libc::lseek(fd, off, whence as i32) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as u64)
    }
}

pub fn set_len(fd: i32, len: u64) -> Result<(), Error> {
    // SAFETY: plain syscall on an fd.
    let r = unsafe { libc::ftruncate(fd, len as i64) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

pub fn ioctl(fd: i32, cmd: Cmd, value: i32) -> Result<i32, Error> {
    let code = cmd.linux_code() as libc::c_ulong;
    let mut v = value;
    // SAFETY: the argument is a value, or a pointer to a live i32 for pointer commands;
    // STATS goes through `ioctl_raw` with a big enough buffer.
    let r = unsafe {
        match (cmd.arg_in(), cmd.arg_out()) {
            (ArgIn::Pointer, _) | (_, ArgOut::Pointer) => libc::ioctl(fd, code as _, &mut v as *mut i32),
            (ArgIn::Value, _) => libc::ioctl(fd, code as _, value as libc::c_ulong),
            (_, ArgOut::Text) => return ioctl_raw(fd, code as u32, &[], LINUX_STATS_SIZE as usize).map(|_| 0),
            _ => libc::ioctl(fd, code as _, 0 as libc::c_ulong),
        }
    };
    if r < 0 {
        return Err(errno());
    }
    Ok(match cmd.arg_out() {
        ArgOut::Pointer => v,
        ArgOut::Return => r,
        _ => 0,
    })
}

/// Any code with a buffer holding `input`, at least `out_len` bytes, and
/// never less than the largest scull transfer (STATS writes up to
/// LINUX_STATS_SIZE whatever the caller asked for). Returns the return
/// value's 4 bytes, then `out_len` bytes of the buffer.
pub fn ioctl_raw(fd: i32, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; input.len().max(out_len).max(LINUX_STATS_SIZE as usize)];
    buf[..input.len()].copy_from_slice(input);
    // SAFETY: `buf` is valid for the sizes any scull command reads or writes (4 bytes, or
    // LINUX_STATS_SIZE for STATS).
    let r = unsafe { libc::ioctl(fd, code as _, buf.as_mut_ptr()) };
    if r < 0 {
        return Err(errno());
    }
    let mut out = r.to_le_bytes().to_vec();
    out.extend_from_slice(&buf[..out_len]);
    Ok(out)
}

pub fn poll(fd: i32) -> Result<Ready, Error> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN | libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r < 0 {
        return Err(errno());
    }
    Ok(Ready { readable: p.revents & libc::POLLIN != 0, writable: p.revents & libc::POLLOUT != 0 })
}

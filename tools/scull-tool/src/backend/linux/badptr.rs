//! Raw system calls on invalid user pointers: every one must fail with
//! EFAULT, and leave the device's data as it was.

use super::{sys, LinuxTarget};
use crate::backend::OpenOpts;
use scull_core::devices::Dev;
use scull_core::ioctl::{ArgIn, ArgOut, Cmd};
use scull_core::store::Whence;
use scull_core::Error;
use std::os::fd::AsRawFd;
use crate::rng::Rng;
use std::sync::OnceLock;

/// Addresses no user copy may succeed on: the NULL page region (below
/// mmap_min_addr, never mapped), a PROT_NONE page of ours, kernel and
/// non-canonical addresses, the top of the address space.
fn bad_addresses() -> &'static [usize] {
    static A: OnceLock<Vec<usize>> = OnceLock::new();
    A.get_or_init(|| {
        let mut v = vec![0usize, 1, 0xfff, 0x1000, 0xfff0, 0xffff_8880_0000_0000, 0x8000_0000_0000_0000, usize::MAX - 4095, usize::MAX];
        // SAFETY: an anonymous PROT_NONE mapping that is never unmapped: any access faults.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p != libc::MAP_FAILED {
            v.push(p as usize);
            v.push(p as usize + 100);
        }
        v
    })
}

fn raw(nr: libc::c_long, fd: i32, a: usize, b: usize) -> Result<i64, i32> {
    // SAFETY: read/write/ioctl with an address the kernel must validate itself; nothing in
    // this process is accessed through it.
    let r = unsafe { libc::syscall(nr, fd as libc::c_long, a, b) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

fn expect_efault(r: Result<i64, i32>, what: &str) -> Result<(), String> {
    match r {
        Err(libc::EFAULT) => Ok(()),
        Err(e) => Err(format!("{what}: expected EFAULT, got errno {e}")),
        Ok(n) => Err(format!("{what}: expected EFAULT, got {n}")),
    }
}

fn drain(fd: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    while let Ok(n) = sys::read(fd, &mut b) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[..n]);
    }
    out
}

pub fn run(t: &LinuxTarget, rng: &mut Rng, n: usize) -> Result<usize, String> {
    let addrs = bad_addresses();
    let ptr_cmds: Vec<Cmd> =
        Cmd::ALL.into_iter().filter(|c| c.arg_in() == ArgIn::Pointer || matches!(c.arg_out(), ArgOut::Pointer | ArgOut::Text)).collect();
    fn e(what: &'static str) -> impl Fn(Error) -> String {
        move |err| format!("bad pointers: {what}: {err}")
    }
    let mut calls = 0;
    for _ in 0..n {
        let bad = *rng.pick(addrs);
        let len = *rng.pick(&[1usize, 8, 100, 4096, 65536]);
        let store = Dev::Scull(rng.below(t.nr_devs.max(1) as u64) as u8);
        match rng.below(4) {
            0 => {
                // Data at 0, then a read of it into a bad buffer.
                let fd = sys::open(store, OpenOpts::RW).map_err(e("open"))?;
                let fd = fd.as_raw_fd();
                sys::seek(fd, Whence::Set, 0).map_err(e("seek"))?;
                sys::write(fd, &vec![0xA5u8; len]).map_err(e("write"))?;
                sys::seek(fd, Whence::Set, 0).map_err(e("seek"))?;
                expect_efault(raw(libc::SYS_read, fd, bad, len), &format!("read({store:?}, {bad:#x}, {len})"))?;
            }
            1 => {
                let fd = sys::open(store, OpenOpts::RW).map_err(e("open"))?;
                expect_efault(raw(libc::SYS_write, fd.as_raw_fd(), bad, len), &format!("write({store:?}, {bad:#x}, {len})"))?;
            }
            2 => {
                // A scullpipe: a 1-byte write from a bad buffer (room for it is made first),
                // and a read of 8 queued bytes into one, which must not consume them.
                let pipe = Dev::Pipe(rng.below(t.p_nr_devs.max(1) as u64) as u8);
                let fd = sys::open(pipe, OpenOpts::RW.nonblocking()).map_err(e("open pipe"))?;
                let fd = fd.as_raw_fd();
                drain(fd);
                expect_efault(raw(libc::SYS_write, fd, bad, 1), &format!("write({pipe:?}, {bad:#x}, 1)"))?;
                if sys::write(fd, b"8 bytes!").map_err(e("pipe write"))? == 8 {
                    expect_efault(raw(libc::SYS_read, fd, bad, 8), &format!("read({pipe:?}, {bad:#x}, 8)"))?;
                    let left = drain(fd);
                    if left != b"8 bytes!" {
                        return Err(format!("bad pointers: {pipe:?} lost data to a faulted read: {left:?}"));
                    }
                }
                calls += 1;
            }
            _ => {
                let cmd = *rng.pick(&ptr_cmds);
                let fd = sys::open(store, OpenOpts::R).map_err(e("open"))?;
                expect_efault(
                    raw(libc::SYS_ioctl, fd.as_raw_fd(), cmd.linux_code() as usize, bad),
                    &format!("ioctl({}, {bad:#x})", cmd.name()),
                )?;
            }
        }
        calls += 1;
    }
    Ok(calls)
}

//! The Linux-only conformance cases: what only a Linux kernel can show
//! (ESPIPE, poll, SIGIO, the second uid's EBUSY/EPERM, /proc, rmmod while
//! open, one fd shared by threads, and the userfaultfd cases of [`super::uffd`]).
//! They run on every target with the Linux ioctl ABI.

use super::check::{always, ok, other_user, R};
use super::Case;
use crate::backend::linux::proxy::RemoteHandle;
use crate::backend::linux::{sys, LinuxTarget, OTHER_UID};
use crate::backend::{Handle, OpenOpts, Target, Who};
use scull_core::devices::Dev;
use scull_core::ioctl::Cmd;
use scull_core::store::Whence;
use scull_core::Error;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Linux-only cases.
pub fn cases() -> Vec<Case> {
    vec![
        Case { name: "linux_pipe_lseek_espipe", needs: always, run: pipe_lseek_espipe },
        Case { name: "linux_poll_pipe_readiness", needs: always, run: poll_pipe_readiness },
        Case { name: "linux_sigio_on_pipe_write", needs: always, run: sigio_on_write },
        Case { name: "linux_sculluid_ebusy_for_second_uid", needs: other_user, run: uid_busy },
        Case { name: "linux_scullwuid_blocks_then_proceeds", needs: other_user, run: wuid_blocks },
        Case { name: "linux_eperm_for_nonroot_privileged_ioctls", needs: other_user, run: eperm },
        Case { name: "linux_proc_reports", needs: always, run: proc_reports },
        Case { name: "linux_rmmod_refused_while_open", needs: always, run: rmmod_busy },
        Case { name: "linux_shared_fd_writes_keep_every_record", needs: always, run: shared_fd_writes },
        Case {
            name: "linux_read_killable_while_writer_stalls_in_copy",
            needs: super::uffd::needs,
            run: super::uffd::read_killable_while_writer_stalls,
        },
        Case {
            name: "linux_pipe_reader_interruptible_while_writer_stalls_in_copy",
            needs: super::uffd::needs,
            run: super::uffd::pipe_reader_interruptible_while_writer_stalls,
        },
    ]
}

fn pipe_lseek_espipe(t: &dyn Target) -> R {
    let mut h = ok(t.open(Dev::Pipe(1), OpenOpts::RW), "open")?;
    match h.seek(Whence::Set, 0) {
        Err(Error::NotSeekable) => Ok(()),
        other => Err(format!("lseek on a pipe: expected ESPIPE, got {other:?}")),
    }
}

fn poll_pipe_readiness(t: &dyn Target) -> R {
    let mut r = ok(t.open(Dev::Pipe(1), OpenOpts::R.nonblocking()), "open r")?;
    let mut w = ok(t.open(Dev::Pipe(1), OpenOpts::W.nonblocking()), "open w")?;
    let p = ok(r.poll(), "poll empty")?;
    if p.readable || !p.writable {
        return Err(format!("empty pipe: {p:?}"));
    }
    ok(w.write(b"x"), "write")?;
    let p = ok(r.poll(), "poll with data")?;
    if !p.readable {
        return Err(format!("after a write: {p:?}"));
    }
    // Fill it: then not writable.
    let big = vec![7u8; 1 << 20];
    while let Ok(n) = w.write(&big) {
        if n == 0 {
            break;
        }
    }
    let p = ok(w.poll(), "poll full")?;
    if p.writable || !p.readable {
        return Err(format!("full pipe: {p:?}"));
    }
    Ok(())
}

static SIGIO_SEEN: AtomicBool = AtomicBool::new(false);
extern "C" fn on_sigio(_: libc::c_int) {
    SIGIO_SEEN.store(true, Ordering::SeqCst);
}

fn sigio_on_write(_t: &dyn Target) -> R {
    SIGIO_SEEN.store(false, Ordering::SeqCst);
    let r = sys::open(Dev::Pipe(2), OpenOpts::R.nonblocking()).map_err(|e| format!("open: {e:?}"))?;
    let fd = r.as_raw_fd();
    // SAFETY: installs a handler that only stores to an atomic, then sets F_SETOWN/O_ASYNC on our fd.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigio as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGIO, &sa, std::ptr::null_mut());
        libc::fcntl(fd, libc::F_SETOWN, libc::getpid());
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if libc::fcntl(fd, libc::F_SETFL, fl | libc::O_ASYNC) < 0 {
            return Err(format!("F_SETFL O_ASYNC: {:?}", sys::errno()));
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    if SIGIO_SEEN.load(Ordering::SeqCst) {
        return Err("SIGIO before any write".into());
    }
    let mut w = RemoteHandle::spawn(Dev::Pipe(2), OpenOpts::W, false).map_err(|e| format!("writer: {e:?}"))?;
    ok(w.write(b"ping"), "write")?;
    let start = Instant::now();
    while !SIGIO_SEEN.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !SIGIO_SEEN.load(Ordering::SeqCst) {
        return Err("no SIGIO after a write".into());
    }
    Ok(())
}

fn uid_busy(t: &dyn Target) -> R {
    let mine = ok(t.open(Dev::Uid, OpenOpts::R), "open as root")?;
    // Root owns it; a non-root second uid gets EBUSY (no CAP_DAC_OVERRIDE).
    match t.open_as(Who::Other, Dev::Uid, OpenOpts::R) {
        Err(Error::Busy) => {}
        other => return Err(format!("uid {OTHER_UID}: expected EBUSY, got {:?}", other.map(|_| ()))),
    }
    drop(mine);
    let theirs = ok(t.open_as(Who::Other, Dev::Uid, OpenOpts::R), "second uid once free")?;
    // Root has CAP_DAC_OVERRIDE: it may open while uid 1001 owns it.
    drop(ok(t.open(Dev::Uid, OpenOpts::R), "CAP_DAC_OVERRIDE override")?);
    drop(theirs);
    Ok(())
}

fn wuid_blocks(t: &dyn Target) -> R {
    let mine = ok(t.open(Dev::Wuid, OpenOpts::R), "open as root")?;
    match t.open_as(Who::Other, Dev::Wuid, OpenOpts::R.nonblocking()) {
        Err(Error::WouldBlock) => {}
        other => return Err(format!("O_NONBLOCK: expected EAGAIN, got {:?}", other.map(|_| ()))),
    }
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let th = std::thread::spawn(move || {
        let t = LinuxTarget::new("aux");
        let r = t.open_as(Who::Other, Dev::Wuid, OpenOpts::R).map(drop);
        d2.store(true, Ordering::SeqCst);
        r
    });
    std::thread::sleep(Duration::from_millis(400));
    if done.load(Ordering::SeqCst) {
        return Err("the second uid's open did not block".into());
    }
    drop(mine);
    let r = th.join().map_err(|_| "thread panicked".to_string())?;
    ok(r, "blocked open after the owner closed")
}

fn eperm(t: &dyn Target) -> R {
    let mut h = ok(t.open_as(Who::Other, Dev::Scull(1), OpenOpts::R), "open as second uid")?;
    for c in Cmd::ALL {
        let r = h.ioctl(c, 1000);
        if c.needs_privilege() {
            if r != Err(Error::Perm) {
                return Err(format!("{} as uid {OTHER_UID}: expected EPERM, got {r:?}", c.name()));
            }
        } else if c != Cmd::Stats && c != Cmd::PTSize && c != Cmd::Reset && r.is_err() {
            return Err(format!("{} as uid {OTHER_UID}: {r:?}", c.name()));
        }
    }
    Ok(())
}

fn proc_reports(t: &dyn Target) -> R {
    let mut h = ok(t.open(Dev::Scull(2), OpenOpts::TRUNC), "open")?;
    ok(h.write(b"hello"), "write")?;
    drop(h);
    for f in ["/proc/scullmem", "/proc/scullseq", "/proc/scullpipe"] {
        let s = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
        if f.ends_with("pipe") {
            if !s.starts_with("scullpipe v1") {
                return Err(format!("{f}: {s}"));
            }
        } else if !s.lines().any(|l| l.starts_with("scull2 size=5 ")) {
            return Err(format!("{f} has no `scull2 size=5` line:\n{s}"));
        }
    }
    Ok(())
}

/// Threads appending through one shared fd: each write must start where
/// the last one ended. Store files have FMODE_ATOMIC_POS, so the VFS
/// serialises f_pos on f_pos_lock; without it two writers read the same
/// f_pos and one record overwrites another (a review found the module
/// without it).
fn shared_fd_writes(_t: &dyn Target) -> R {
    const THREADS: u8 = 4;
    const EACH: u32 = 1500;
    const REC: usize = 16;
    let fd = Arc::new(sys::open(Dev::Scull(2), OpenOpts::TRUNC).map_err(|e| format!("open: {e:?}"))?);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let fd = fd.clone();
            std::thread::spawn(move || -> Result<(), String> {
                for seq in 0..EACH {
                    let mut r = [0xEEu8; REC];
                    r[0] = t;
                    r[1..5].copy_from_slice(&seq.to_le_bytes());
                    // SAFETY: writes our buffer to our fd.
                    let n = unsafe { libc::write(fd.as_raw_fd(), r.as_ptr().cast(), REC) };
                    if n != REC as isize {
                        return Err(format!("write returned {n}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "writer panicked".to_string())??;
    }
    drop(fd);
    let mut h = ok(sys::open(Dev::Scull(2), OpenOpts::R).map(std::fs::File::from), "open r")?;
    let mut all = Vec::new();
    h.read_to_end(&mut all).map_err(|e| format!("read: {e}"))?;
    let want = THREADS as usize * EACH as usize * REC;
    let mut seen = vec![0u32; THREADS as usize * EACH as usize];
    for r in all.chunks(REC) {
        let (t, seq) = (r[0] as usize, u32::from_le_bytes([r[1], r[2], r[3], r[4]]) as usize);
        if r.len() == REC && t < THREADS as usize && seq < EACH as usize {
            seen[t * EACH as usize + seq] += 1;
        }
    }
    let lost = seen.iter().filter(|&&c| c == 0).count();
    if all.len() != want || lost > 0 {
        return Err(format!("{} bytes, want {want}; {lost} of {} records lost (two writes at one f_pos)", all.len(), seen.len()));
    }
    Ok(())
}

fn rmmod_busy(t: &dyn Target) -> R {
    let h = ok(t.open(Dev::Scull(3), OpenOpts::R), "open")?;
    let name = c"scull";
    // SAFETY: delete_module with O_NONBLOCK; must fail while a file is open.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    let e = std::io::Error::last_os_error();
    drop(h);
    if r == 0 {
        return Err("the module unloaded while a device was open".into());
    }
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) | Some(libc::EBUSY) => Ok(()),
        other => Err(format!("delete_module: expected EBUSY/EWOULDBLOCK, got {other:?}")),
    }
}

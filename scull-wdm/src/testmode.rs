//! Test-only facilities: compiled into the test build only (`test-build`
//! feature, `target/wdm-test/scull.sys`), and even there off unless the
//! registry turns them on at load. The release build keeps
//! [`identity_mode`] (always false) and [`current_pid`] for its callers.
//!
//! - `scull_test_identity=1` (REG_DWORD): **test identity mode**. Every
//!   process is its own user: the caller's identity is a pseudo SID
//!   `S-1-9-<pid>` instead of its token's user SID, so that one machine
//!   account (Wine runs every process as the same administrator) can play
//!   several users for sculluid/scullwuid. A process can give up the
//!   administrator override for itself with `TEST_OP_DEMOTE`; everyone else
//!   keeps what their token says. Never enable it outside tests: it lets any
//!   process pose as a distinct user.
//! - `scull_fail_at` (REG_DWORD, present at all): **fault injection**: the
//!   k-th pool allocation after load fails (k = the value; 0 = disarmed), and
//!   `TEST_OP_FAIL_AT` re-arms it at run time.
//!
//! `WIN_IOCTL_TEST` (METHOD_BUFFERED, input `[op: u32, arg: i32]`, output
//! [`TestReport`], 32 bytes) exists only while one of the two is on; otherwise
//! it is an unknown code (STATUS_INVALID_DEVICE_REQUEST).

use crate::ddk::*;
#[cfg(feature = "test-build")]
pub use self::test_build::*;

/// Test identity mode is a test-build switch: never on in the release build.
#[cfg(not(feature = "test-build"))]
pub fn identity_mode() -> bool {
    false
}

/// Never demoted: test identity mode is off in the release build.
#[cfg(not(feature = "test-build"))]
pub fn demoted(_pid: usize) -> bool {
    false
}

pub fn current_pid() -> usize {
    // SAFETY: no arguments; the id of the process whose context we run in
    // (the requester, for a top-level driver's dispatch routines).
    unsafe { PsGetCurrentProcessId() as usize }
}

#[cfg(feature = "test-build")]
mod test_build {
    use super::current_pid;
    use crate::pool;
    use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use scull_core::Error;

    pub use scull_core::ioctl::{
        TestReport, TestRequest, TEST_MODE_FAULTS as MODE_FAULTS, TEST_MODE_IDENTITY as MODE_IDENTITY, TEST_OP_DEMOTE, TEST_OP_FAIL_AT,
        TEST_OP_QUERY, WIN_IOCTL_TEST,
    };

    pub static IDENTITY: AtomicBool = AtomicBool::new(false);

    /// Process ids that gave up the administrator override (a ring: the oldest
    /// entry is reused; ids of dead processes may be reused by Windows, which
    /// a test-only mode accepts).
    static DEMOTED: [AtomicUsize; 32] = [const { AtomicUsize::new(0) }; 32];
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    pub fn identity_mode() -> bool {
        IDENTITY.load(Ordering::Relaxed)
    }

    pub fn modes() -> u32 {
        let mut m = 0;
        if identity_mode() {
            m |= MODE_IDENTITY;
        }
        if pool::FAULTS_ENABLED.load(Ordering::Relaxed) {
            m |= MODE_FAULTS;
        }
        m
    }

    pub fn demoted(pid: usize) -> bool {
        pid != 0 && DEMOTED.iter().any(|d| d.load(Ordering::Relaxed) == pid)
    }

    fn demote(pid: usize) {
        if demoted(pid) {
            return;
        }
        let i = NEXT.fetch_add(1, Ordering::Relaxed) % DEMOTED.len();
        DEMOTED[i].store(pid, Ordering::Relaxed);
    }

    /// Runs one test op; `buf` is the METHOD_BUFFERED system buffer.
    ///
    /// # Safety
    /// `buf` holds max(in_len, out_len) bytes.
    pub unsafe fn ioctl(buf: *mut u8, in_len: usize, out_len: usize) -> Result<usize, Error> {
        let m = modes();
        if m == 0 {
            return Err(Error::NotTty);
        }
        if in_len < 8 || out_len < 32 {
            return Err(Error::BufferTooSmall);
        }
        // SAFETY: caller contract: 8 readable bytes.
        let TestRequest { op, arg } = TestRequest::decode(unsafe { &*(buf as *const [u8; TestRequest::LEN]) })?;
        match op {
            TEST_OP_QUERY => {}
            TEST_OP_DEMOTE if m & MODE_IDENTITY != 0 => {
                let pid = current_pid();
                demote(pid);
                kwarn!("test identity: process {} gave up the administrator override", pid);
            }
            TEST_OP_FAIL_AT if m & MODE_FAULTS != 0 && arg >= 0 => pool::FAIL_AT.store(arg as i64, Ordering::Release),
            _ => return Err(Error::Invalid),
        }
        let out = TestReport {
            modes: m,
            outstanding: pool::OUTSTANDING.load(Ordering::Relaxed) as i64,
            allocs: pool::ALLOCS.load(Ordering::Relaxed),
            injected: pool::INJECTED.load(Ordering::Relaxed),
        }
        .encode();
        // SAFETY: caller contract: 32 writable bytes.
        unsafe { core::ptr::copy_nonoverlapping(out.as_ptr(), buf, 32) };
        Ok(32)
    }
}

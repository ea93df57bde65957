//! Test-only facilities, all off unless the registry turns them on at load.
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
use crate::pool;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use scull_core::Error;

/// `CTL_CODE(0x8000, 0x860, METHOD_BUFFERED, FILE_ANY_ACCESS)`; outside the
/// scull command range and the 0x840.. bridge codes.
pub const WIN_IOCTL_TEST: u32 = CTL_CODE(0x8000, 0x860, 0, 0);
/// Report only.
pub const TEST_OP_QUERY: u32 = 0;
/// Test identity mode: the calling process loses the administrator override.
pub const TEST_OP_DEMOTE: u32 = 1;
/// Fault injection: fail the arg-th allocation from now (0 disarms).
pub const TEST_OP_FAIL_AT: u32 = 2;
/// Bits of `TestReport::modes`.
pub const MODE_IDENTITY: u32 = 1;
pub const MODE_FAULTS: u32 = 2;

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

pub fn current_pid() -> usize {
    // SAFETY: no arguments; the id of the process whose context we run in
    // (the requester, for a top-level driver's dispatch routines).
    unsafe { PsGetCurrentProcessId() as usize }
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
    let (op, arg) = unsafe {
        let b = &*(buf as *const [u8; 8]);
        (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), i32::from_le_bytes([b[4], b[5], b[6], b[7]]))
    };
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
    let mut out = [0u8; 32];
    out[0..4].copy_from_slice(&m.to_le_bytes());
    out[8..16].copy_from_slice(&(pool::OUTSTANDING.load(Ordering::Relaxed) as i64).to_le_bytes());
    out[16..24].copy_from_slice(&pool::ALLOCS.load(Ordering::Relaxed).to_le_bytes());
    out[24..32].copy_from_slice(&pool::INJECTED.load(Ordering::Relaxed).to_le_bytes());
    // SAFETY: caller contract: 32 writable bytes.
    unsafe { core::ptr::copy_nonoverlapping(out.as_ptr(), buf, 32) };
    Ok(32)
}

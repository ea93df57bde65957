//! Who is calling: the user SID of the requesting process's primary token,
//! and whether that token is an administrator.
//!
//! The path is the one that works on real Windows and under Wine alike:
//! `IoGetRequestorProcess` → `ObOpenObjectByPointer(*PsProcessType)` →
//! `ZwOpenProcessTokenEx` → `ZwQueryInformationToken(TokenUser, TokenGroups)`.
//! (SeCaptureSubjectContext, SeQueryInformationToken and SeTokenIsAdmin are
//! crash stubs in Wine.) "Administrator" means the token holds
//! BUILTIN\Administrators (S-1-5-32-544) enabled, not deny-only: a filtered
//! (UAC) token is not privileged. Call at PASSIVE_LEVEL.

use crate::ddk::*;
use core::ptr;
use scull_core::access::Caller;

/// `SECURITY_MAX_SID_SIZE`.
const MAX_SID: usize = 68;
const SE_GROUP_ENABLED: u32 = 0x4;
const SE_GROUP_USE_FOR_DENY_ONLY: u32 = 0x10;
const PROCESS_QUERY_INFORMATION: u32 = 0x0400;

/// BUILTIN\Administrators: revision 1, 2 sub-authorities, NT authority (5), 32, 544.
const ADMINS: [u8; 16] = [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 0x02, 0, 0];

/// A copied SID, comparable by value (the identity scull-core's policies use).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sid {
    len: u8,
    bytes: [u8; MAX_SID],
}

impl Sid {
    pub const NONE: Sid = Sid { len: 0, bytes: [0; MAX_SID] };

    /// Copies the SID at `p`.
    ///
    /// # Safety
    /// `p` points at a valid SID.
    unsafe fn copy_from(p: *const u8) -> Sid {
        // SAFETY: a SID's second byte is its sub-authority count; its size is 8 + 4 * count.
        let count = unsafe { *p.add(1) } as usize;
        let len = (8 + 4 * count).min(MAX_SID);
        let mut s = Sid::NONE;
        // SAFETY: `len` bytes of a valid SID are readable.
        unsafe { ptr::copy_nonoverlapping(p, s.bytes.as_mut_ptr(), len) };
        s.len = len as u8;
        s
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl core::fmt::Display for Sid {
    /// `S-1-5-21-...`
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = self.as_bytes();
        if b.len() < 8 {
            return f.write_str("S-?");
        }
        let auth = b[2..8].iter().fold(0u64, |a, &x| (a << 8) | x as u64);
        write!(f, "S-{}-{}", b[0], auth)?;
        for c in b[8..].chunks_exact(4) {
            write!(f, "-{}", u32::from_le_bytes([c[0], c[1], c[2], c[3]]))?;
        }
        Ok(())
    }
}

/// An open kernel handle, closed on drop.
struct KHandle(HANDLE);

impl Drop for KHandle {
    fn drop(&mut self) {
        // SAFETY: a kernel handle we opened and own.
        let _ = unsafe { ZwClose(self.0) };
    }
}

/// A token-information buffer, aligned for the structures it receives.
#[repr(C, align(8))]
struct InfoBuf([u8; 1024]);

/// The caller of `irp`: its user SID, and whether it is an administrator.
/// `Err` carries the NTSTATUS of the step that failed.
pub fn caller(irp: *mut IRP) -> Result<Caller<Sid>, NTSTATUS> {
    // SAFETY: a valid IRP in dispatch; the process pointer is not referenced
    // beyond ObOpenObjectByPointer, which takes its own reference.
    let process = unsafe { IoGetRequestorProcess(irp) };
    let process = if process.is_null() {
        // SAFETY: no arguments; returns the current process.
        unsafe { IoGetCurrentProcess() }
    } else {
        process
    };
    let mut h: HANDLE = ptr::null_mut();
    // SAFETY: a valid process object; the handle is a kernel handle we close.
    let st = unsafe {
        ObOpenObjectByPointer(
            process.cast(),
            OBJ_KERNEL_HANDLE,
            ptr::null_mut(),
            PROCESS_QUERY_INFORMATION,
            process_object_type(),
            KernelMode as _,
            &mut h,
        )
    };
    if st < 0 {
        return Err(st);
    }
    let process = KHandle(h);
    let mut t: HANDLE = ptr::null_mut();
    // SAFETY: a process handle opened above.
    let st = unsafe { ZwOpenProcessTokenEx(process.0, TOKEN_QUERY, OBJ_KERNEL_HANDLE, &mut t) };
    if st < 0 {
        return Err(st);
    }
    let token = KHandle(t);

    let mut buf = InfoBuf([0; 1024]);
    let mut got = 0u32;
    // SAFETY: the buffer is writable for its length.
    let st = unsafe { ZwQueryInformationToken(token.0, TokenUser, buf.0.as_mut_ptr().cast(), buf.0.len() as u32, &mut got) };
    if st < 0 {
        return Err(st);
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER whose SID points into it.
    let user = unsafe { Sid::copy_from((*(buf.0.as_ptr() as *const TOKEN_USER)).User.Sid as *const u8) };

    // SAFETY: as above, for TOKEN_GROUPS.
    let st = unsafe { ZwQueryInformationToken(token.0, TokenGroups, buf.0.as_mut_ptr().cast(), buf.0.len() as u32, &mut got) };
    let admin = if st < 0 {
        false
    } else {
        // SAFETY: a TOKEN_GROUPS with GroupCount entries, each SID inside the buffer.
        unsafe {
            let groups = buf.0.as_ptr() as *const TOKEN_GROUPS;
            let n = (*groups).GroupCount as usize;
            let first = ptr::addr_of!((*groups).Groups) as *const SID_AND_ATTRIBUTES;
            (0..n).any(|i| {
                let g = &*first.add(i);
                let sid = Sid::copy_from(g.Sid as *const u8);
                sid.as_bytes() == ADMINS
                    && g.Attributes & SE_GROUP_ENABLED != 0
                    && g.Attributes & SE_GROUP_USE_FOR_DENY_ONLY == 0
            })
        }
    };
    Ok(Caller::new(user, admin))
}

//! Who is calling: the user SID of the requestor's token, and whether that
//! token is an administrator.
//!
//! The token: in IRP_MJ_CREATE, the create's subject security context
//! (client token when the opener impersonates, else its primary token),
//! opened with `ObOpenObjectByPointer(*SeTokenObjectType)`; otherwise (ioctls,
//! or a create without a context: Wine) the requesting thread's effective
//! token: its impersonation token, opened with
//! `ZwOpenThreadTokenEx(NtCurrentThread())` (dispatch runs in the
//! requestor's thread), and only when that says STATUS_NO_TOKEN the
//! process's primary token: `IoGetRequestorProcess` →
//! `ObOpenObjectByPointer(*PsProcessType)` → `ZwOpenProcessTokenEx`. Either
//! handle is then read with `ZwQueryInformationToken(TokenUser, TokenGroups)`
//! into pool buffers sized from ReturnLength. (SeCaptureSubjectContext,
//! SeQueryInformationToken, SeTokenIsAdmin, PsReferencePrimaryToken and
//! PsReferenceImpersonationToken are crash stubs in Wine;
//! ZwOpenThreadTokenEx is Wine's NtOpenThreadTokenEx, which says
//! STATUS_NO_TOKEN for winedevice's dispatch thread, so under Wine the
//! process path runs as before.) "Administrator" means the token holds
//! BUILTIN\Administrators (S-1-5-32-544) enabled, not deny-only: a filtered
//! (UAC) token is not privileged; an impersonation token lends it only at
//! SecurityImpersonation or above. Call at PASSIVE_LEVEL.

use crate::ddk::*;
use crate::pool::{Block, Pool};
use core::ptr;
use scull_core::access::Caller;
use scull_core::mem::Platform;
use scull_core::token::{effective_token, impersonation_may_act, query_sized, token_for_create, Effective, TokenChoice};

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
        // SAFETY: a SID's second byte is its sub-authority count (contract);
        // its size is 8 + 4 * count.
        let at = unsafe { p.add(1) };
        // SAFETY: as above.
        let count = unsafe { at.read() } as usize;
        let len = (8 + 4 * count).min(MAX_SID);
        let mut s = Sid::NONE;
        // SAFETY: `len` bytes of a valid SID are readable.
        unsafe { ptr::copy_nonoverlapping(p, s.bytes.as_mut_ptr(), len) };
        s.len = len as u8;
        s
    }

    /// Test identity mode's pseudo user of process `pid`: `S-1-9-<pid>`
    /// (authority 9, resource managers: never a real account).
    pub fn pseudo(pid: usize) -> Sid {
        let mut s = Sid::NONE;
        s.bytes[..8].copy_from_slice(&[1, 1, 0, 0, 0, 0, 0, 9]);
        s.bytes[8..12].copy_from_slice(&(pid as u32).to_le_bytes());
        s.len = 12;
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

/// The process that opened a scullpriv device, held by a kernel handle
/// (SYNCHRONIZE, OBJ_KERNEL_HANDLE) for as long as its device exists.
///
/// The handle is what makes the process id a safe key: NT frees a
/// process's id only when its process object goes away, and an open handle
/// keeps the object, so while the device exists no other process can get
/// that id. Whether the process has exited is a zero-timeout wait on the
/// handle (a process object is signalled when it exits). Dropping it
/// closes the handle (PASSIVE_LEVEL).
pub struct Process(KHandle);

impl Process {
    /// Opens the process whose id is `pid` (in IRP_MJ_CREATE: the opener,
    /// `PsGetCurrentProcessId`, which is the client's id under Wine too).
    /// `ZwOpenProcess` by client id works alike on Windows and under Wine,
    /// where `IoGetRequestorProcess` is not the client. PASSIVE_LEVEL.
    pub fn open(pid: u64) -> Result<Process, NTSTATUS> {
        // SAFETY: OBJECT_ATTRIBUTES is plain data; all zeroes is valid.
        let mut oa: OBJECT_ATTRIBUTES = unsafe { core::mem::zeroed() };
        // SAFETY: CLIENT_ID is plain data; all zeroes is valid.
        let mut cid: CLIENT_ID = unsafe { core::mem::zeroed() };
        oa.Length = core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32;
        oa.Attributes = OBJ_KERNEL_HANDLE;
        cid.UniqueProcess = pid as usize as HANDLE;
        let mut h: HANDLE = ptr::null_mut();
        // SAFETY: valid attributes (no name) and client id on our stack; the
        // handle is a kernel handle we own (closed by KHandle).
        let st = unsafe { ZwOpenProcess(&mut h, SYNCHRONIZE, &mut oa, &mut cid) };
        if st < 0 {
            return Err(st);
        }
        Ok(Process(KHandle(h)))
    }

    /// Whether the process has exited (its object is signalled). A wait
    /// that fails counts as alive: keeping a device never discloses it to
    /// another process, since the handle still reserves the id.
    pub fn exited(&self) -> bool {
        let mut now = LARGE_INTEGER { QuadPart: 0 };
        // SAFETY: a process handle we opened with SYNCHRONIZE; a zero
        // timeout never blocks.
        let st = unsafe { ZwWaitForSingleObject((self.0).0, 0, &mut now) };
        st == STATUS_SUCCESS
    }
}

impl Drop for KHandle {
    fn drop(&mut self) {
        // SAFETY: a kernel handle we opened and own.
        let _ = unsafe { ZwClose(self.0) };
    }
}

/// The caller of `irp`: its user SID, and whether it is an administrator.
/// `Err` carries the NTSTATUS of the step that failed. PASSIVE_LEVEL.
///
/// Which token: in IRP_MJ_CREATE, the one the I/O manager
/// captured in `Parameters.Create.SecurityContext->AccessState->
/// SubjectSecurityContext`: the client token of an impersonating thread, else
/// the primary token (`scull_core::token::token_for_create`). Everywhere else
/// (ioctls carry no security context), and in a create without one (Wine
/// passes a NULL SecurityContext), the thread's effective token
/// ([`open_effective_token`]): an administrator service impersonating a
/// plain client is the plain client.
pub fn caller(irp: *mut IRP) -> Result<Caller<Sid>, NTSTATUS> {
    let (token, may_act) = match token_for_create(create_subject(irp)) {
        TokenChoice::Subject(t) => (open_token_object(t)?, true),
        TokenChoice::Effective => open_effective_token(irp)?,
    };
    let (user, admin) = identity(&token)?;
    let admin = admin && may_act;
    if crate::testmode::identity_mode() {
        // Test identity mode: one pseudo user per process; a process that
        // gave up the override is not privileged (see `testmode`).
        let pid = crate::testmode::current_pid();
        return Ok(Caller::new(Sid::pseudo(pid), admin && !crate::testmode::demoted(pid)));
    }
    Ok(Caller::new(user, admin))
}

/// The `(ClientToken, PrimaryToken)` of a create's subject security context,
/// or None when `irp` is not a create or carries no context.
fn create_subject(irp: *mut IRP) -> Option<(Option<PVOID>, Option<PVOID>)> {
    let some = |t: PVOID| (!t.is_null()).then_some(t);
    // SAFETY: a valid IRP in dispatch; its current stack location is valid.
    // For a create, SecurityContext is NULL or points at the I/O manager's
    // IO_SECURITY_CONTEXT, whose AccessState (NULL or valid) lives until the
    // create completes, which is after this dispatch-time read.
    // SAFETY: see above.
    let sl = unsafe { crate::irp::stack(irp) };
    if sl.MajorFunction as u32 != IRP_MJ_CREATE {
        return None;
    }
    // SAFETY: see above: a create's parameters.
    let sc = unsafe { sl.Parameters.Create.SecurityContext };
    if sc.is_null() {
        return None;
    }
    // SAFETY: see above: a non-null security context is valid.
    let state = unsafe { (*sc).AccessState };
    if state.is_null() {
        return None;
    }
    // SAFETY: see above: a non-null access state is valid.
    let subject = unsafe { &(*state).SubjectSecurityContext };
    Some((some(subject.ClientToken), some(subject.PrimaryToken)))
}

/// A kernel handle (TOKEN_QUERY) to the token object `token`.
///
/// ObOpenObjectByPointer with the token object type, not
/// SeQuerySubjectContextToken/SeQueryInformationToken: the same handle-based
/// query then serves both token sources, and the Se* routines crash in Wine
/// (the path must at least link and load there). Measured under Wine 8 with
/// a token object from ObReferenceObjectByHandle: this call passes the object
/// type check and then fails with STATUS_INVALID_HANDLE (Wine's kernel token
/// objects have no server object behind them), while the process type gives
/// STATUS_OBJECT_TYPE_MISMATCH; so `token_object_type` reads the right type,
/// and the rest of this path runs on Windows only (Wine never passes a
/// subject context).
fn open_token_object(token: PVOID) -> Result<KHandle, NTSTATUS> {
    let mut h: HANDLE = ptr::null_mut();
    // SAFETY: `token` is a referenced token object of the create's subject
    // context (valid during dispatch); the handle is a kernel handle we close.
    // SAFETY: reads an exported kernel variable.
    let ty = unsafe { token_object_type() };
    // SAFETY: see above.
    let st = unsafe { ObOpenObjectByPointer(token, OBJ_KERNEL_HANDLE, ptr::null_mut(), TOKEN_QUERY, ty, KernelMode as _, &mut h) };
    if st < 0 {
        return Err(st);
    }
    Ok(KHandle(h))
}

/// A kernel handle (TOKEN_QUERY) to the effective token of the requesting
/// thread, and whether it may lend its administrator membership.
///
/// Dispatch runs in the requestor's thread (a top-level driver at
/// PASSIVE_LEVEL), so the current thread's token is the requestor's: its
/// impersonation token if it impersonates (usable for privilege only at
/// SecurityImpersonation or above), else, on STATUS_NO_TOKEN, the
/// process's primary token. An impersonating thread whose token cannot be
/// opened is refused, never judged by the process token
/// (`scull_core::token::effective_token`).
fn open_effective_token(irp: *mut IRP) -> Result<(KHandle, bool), NTSTATUS> {
    let mut t: HANDLE = ptr::null_mut();
    // SAFETY: NtCurrentThread() is a pseudo handle valid in any thread;
    // OpenAsSelf (TRUE) opens it with the process's own security context,
    // and OBJ_KERNEL_HANDLE makes the handle ours (closed by KHandle).
    let st = unsafe { ZwOpenThreadTokenEx(nt_current_thread(), TOKEN_QUERY, 1, OBJ_KERNEL_HANDLE, &mut t) };
    match effective_token(st) {
        Effective::Thread => {
            let token = KHandle(t);
            let level = query_token(&token, TokenImpersonationLevel).ok().and_then(|(buf, len)| {
                // SAFETY: a SECURITY_IMPERSONATION_LEVEL (a 4-byte enum) fills
                // the first `len` bytes of the block when `len >= 4`.
                (len >= 4).then(|| unsafe { *(buf.as_ptr() as *const u32) })
            });
            Ok((token, impersonation_may_act(level)))
        }
        Effective::Process => Ok((open_process_token(irp)?, true)),
        Effective::Fail(st) => {
            kprint!("the impersonating caller's token could not be opened ({:#x}): refused", st);
            Err(st)
        }
    }
}

/// A kernel handle (TOKEN_QUERY) to the primary token of the process that
/// requested `irp` (the current process when the I/O manager names none).
fn open_process_token(irp: *mut IRP) -> Result<KHandle, NTSTATUS> {
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
    // SAFETY: reads an exported kernel variable.
    let ty = unsafe { process_object_type() };
    // SAFETY: a valid process object; the handle is a kernel handle we close.
    let st = unsafe {
        ObOpenObjectByPointer(process.cast(), OBJ_KERNEL_HANDLE, ptr::null_mut(), PROCESS_QUERY_INFORMATION, ty, KernelMode as _, &mut h)
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
    Ok(KHandle(t))
}

/// One token-information record in a `'lucS'` pool block sized by the
/// kernel's ReturnLength (`scull_core::token::query_sized`), and its length.
/// The block is freed when dropped, on every path.
fn query_token(token: &KHandle, class: TOKEN_INFORMATION_CLASS) -> Result<(Block, usize), NTSTATUS> {
    query_sized(
        |len| Pool.alloc_block(len).ok(),
        |buf: &mut Block, len| {
            let mut got = 0u32;
            // SAFETY: the block is writable for `len` (<= its length) bytes and
            // 16-byte aligned (pool), enough for every TOKEN_* record.
            let st = unsafe { ZwQueryInformationToken(token.0, class, buf.as_mut_ptr().cast(), len as u32, &mut got) };
            (st, got)
        },
    )
}

/// The user SID of `token`, and whether it holds BUILTIN\Administrators
/// enabled (not deny-only). A failed TokenGroups query means "not an
/// administrator", never a failed open.
fn identity(token: &KHandle) -> Result<(Sid, bool), NTSTATUS> {
    let (buf, _) = query_token(token, TokenUser)?;
    // SAFETY: on success the block starts with a TOKEN_USER whose SID points
    // into the block (alive until `buf` drops, after the copy).
    let sid = unsafe { (*(buf.as_ptr() as *const TOKEN_USER)).User.Sid };
    // SAFETY: as above: a valid SID inside the block.
    let user = unsafe { Sid::copy_from(sid as *const u8) };
    drop(buf);
    let admin = match query_token(token, TokenGroups) {
        Err(st) => {
            kprint!("TokenGroups query failed ({:#x}): the administrator override is not applied", st);
            false
        }
        Ok((buf, len)) => {
            let groups = buf.as_ptr() as *const TOKEN_GROUPS;
            let first = core::mem::offset_of!(TOKEN_GROUPS, Groups);
            // SAFETY: a TOKEN_GROUPS record fills the first `len` bytes; its
            // GroupCount is read only if the header fits.
            let n = if len >= first { unsafe { (*groups).GroupCount as usize } } else { 0 };
            let n = n.min(len.saturating_sub(first) / core::mem::size_of::<SID_AND_ATTRIBUTES>());
            // SAFETY: `n` SID_AND_ATTRIBUTES entries lie inside the record,
            // each SID pointing into the block, which lives until this arm ends.
            // SAFETY: see above; only the field address is taken.
            let entries = unsafe { ptr::addr_of!((*groups).Groups) } as *const SID_AND_ATTRIBUTES;
            (0..n).any(|i| {
                // SAFETY: see above: entry i < n lies inside the record.
                let e = unsafe { entries.add(i) };
                // SAFETY: as above.
                let g = unsafe { &*e };
                // SAFETY: see above: its SID points into the block.
                let sid = unsafe { Sid::copy_from(g.Sid as *const u8) };
                sid.as_bytes() == ADMINS
                    && g.Attributes & SE_GROUP_ENABLED != 0
                    && g.Attributes & SE_GROUP_USE_FOR_DENY_ONLY == 0
            })
        }
    };
    Ok((user, admin))
}

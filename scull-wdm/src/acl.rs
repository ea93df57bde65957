//! The devices' ACL: the SDDL string in `Parameters\scull_sddl` (written by
//! the INF and install.ps1), or, when the value is absent, SYSTEM and
//! Administrators only (`D:P(A;;GA;;;SY)(A;;GA;;;BA)`).
//!
//! `IoCreateDeviceSecure` lives in wdmsec.lib, which the mingw path does not
//! have, so the driver does what it does on both paths: parse the SDDL, build
//! an absolute security descriptor (RtlCreateSecurityDescriptor, RtlCreateAcl,
//! RtlAddAccessAllowedAce, RtlSetDaclSecurityDescriptor) and apply it to each
//! new device object before it is linked or initialised
//! (ObOpenObjectByPointer(WRITE_DAC | READ_CONTROL) → ZwSetSecurityObject),
//! then read it back (ZwQuerySecurityObject) and compare the ACEs.
//!
//! The SDDL subset is IoCreateDeviceSecure's: one `D:` section, optional `P`,
//! access-allowed ACEs `(A;;rights;;;sid)` without flags or GUIDs. Rights are
//! GA GR GW GX (mapped here to FILE_ALL_ACCESS / FILE_GENERIC_*, as the I/O
//! manager maps them for files), FA FR FW FX, SD RC WD WO, or `0x` hex; SIDs
//! are SY BA BU BG AU WD IU AN SU LS NS RC or `S-1-...`. Anything else makes
//! DriverEntry refuse to load (a typo must not widen access).
//! Call at PASSIVE_LEVEL (DriverEntry).

use crate::ddk::*;
use crate::pool;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

pub const DEFAULT_SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)";
const MAX_ACES: usize = 8;
const MAX_SID: usize = 68;
const SD_ABSOLUTE: usize = 48;

#[derive(Clone, Copy)]
struct Ace {
    mask: u32,
    sid: [u8; MAX_SID],
    sid_len: usize,
}

/// A parsed DACL.
#[derive(Clone, Copy)]
pub struct Dacl {
    aces: [Ace; MAX_ACES],
    n: usize,
    protected: bool,
}

fn sid(rev_auth: (u8, u64), subs: &[u32]) -> Option<([u8; MAX_SID], usize)> {
    if subs.len() > 15 {
        return None;
    }
    let mut b = [0u8; MAX_SID];
    b[0] = rev_auth.0;
    b[1] = subs.len() as u8;
    b[2..8].copy_from_slice(&rev_auth.1.to_be_bytes()[2..8]);
    for (i, s) in subs.iter().enumerate() {
        b[8 + 4 * i..12 + 4 * i].copy_from_slice(&s.to_le_bytes());
    }
    Some((b, 8 + 4 * subs.len()))
}

fn parse_sid(s: &[u8]) -> Option<([u8; MAX_SID], usize)> {
    let nt = |subs: &[u32]| sid((1, 5), subs);
    match s {
        b"SY" => nt(&[18]),
        b"BA" => nt(&[32, 544]),
        b"BU" => nt(&[32, 545]),
        b"BG" => nt(&[32, 546]),
        b"AU" => nt(&[11]),
        b"IU" => nt(&[4]),
        b"AN" => nt(&[7]),
        b"SU" => nt(&[6]),
        b"LS" => nt(&[19]),
        b"NS" => nt(&[20]),
        b"RC" => nt(&[12]),
        b"WD" => sid((1, 1), &[0]),
        _ => {
            let rest = s.strip_prefix(b"S-")?;
            let mut parts = rest.split(|&c| c == b'-');
            let rev: u8 = num(parts.next()?)?.try_into().ok()?;
            let auth = num(parts.next()?)?;
            if auth >= 1 << 48 {
                return None;
            }
            let mut subs = [0u32; 15];
            let mut n = 0;
            for p in parts {
                *subs.get_mut(n)? = num(p)?.try_into().ok()?;
                n += 1;
            }
            sid((rev, auth), &subs[..n])
        }
    }
}

fn num(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let (digits, radix) = match s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    let mut v: u64 = 0;
    for &c in digits {
        v = v.checked_mul(radix)?.checked_add((c as char).to_digit(radix as u32)? as u64)?;
    }
    (!digits.is_empty()).then_some(v)
}

fn parse_rights(s: &[u8]) -> Option<u32> {
    if s.starts_with(b"0x") || s.starts_with(b"0X") {
        return num(s)?.try_into().ok();
    }
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    let mut m = 0u32;
    for c in s.chunks(2) {
        m |= match c {
            b"GA" | b"FA" => FILE_ALL_ACCESS,
            b"GR" | b"FR" => FILE_GENERIC_READ,
            b"GW" | b"FW" => FILE_GENERIC_WRITE,
            b"GX" | b"FX" => FILE_GENERIC_EXECUTE,
            b"SD" => DELETE,
            b"RC" => READ_CONTROL,
            b"WD" => WRITE_DAC,
            b"WO" => WRITE_OWNER,
            _ => return None,
        };
    }
    Some(m)
}

/// Parses the SDDL subset above (ASCII, no spaces).
// Its own frame: DriverEntry must stay under a page of stack (no __chkstk in a driver).
#[inline(never)]
pub fn parse(text: &[u16]) -> Option<Dacl> {
    let mut b = [0u8; 192];
    if text.len() > b.len() {
        return None;
    }
    for (d, &c) in b.iter_mut().zip(text) {
        *d = u8::try_from(c).ok().filter(u8::is_ascii_graphic)?;
    }
    let mut s = b[..text.len()].strip_prefix(b"D:")?;
    let mut d = Dacl { aces: [Ace { mask: 0, sid: [0; MAX_SID], sid_len: 0 }; MAX_ACES], n: 0, protected: false };
    loop {
        if let Some(r) = s.strip_prefix(b"P") {
            d.protected = true;
            s = r;
        } else if let Some(r) = s.strip_prefix(b"AI").or_else(|| s.strip_prefix(b"AR")) {
            s = r;
        } else {
            break;
        }
    }
    while !s.is_empty() {
        let body = s.strip_prefix(b"(")?;
        let end = body.iter().position(|&c| c == b')')?;
        let mut f = body[..end].split(|&c| c == b';');
        let fields = [f.next()?, f.next()?, f.next()?, f.next()?, f.next()?, f.next()?];
        if f.next().is_some() || fields[0] != b"A" || !fields[1].is_empty() || !fields[3].is_empty() || !fields[4].is_empty() {
            return None;
        }
        let mask = parse_rights(fields[2])?;
        let (sid, sid_len) = parse_sid(fields[5])?;
        *d.aces.get_mut(d.n)? = Ace { mask, sid, sid_len };
        d.n += 1;
        s = &body[end + 1..];
    }
    (d.n > 0).then_some(d)
}

/// The built descriptor (a counted pool block), shared by every device
/// created in DriverEntry and freed at its end.
static SD: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static SD_INFO: AtomicUsize = AtomicUsize::new(0);
static DACL: AtomicPtr<Dacl> = AtomicPtr::new(ptr::null_mut());

fn acl_len(d: &Dacl) -> usize {
    // ACL header, then per ACE: ACE_HEADER + mask + SID.
    8 + d.aces[..d.n].iter().map(|a| 8 + a.sid_len).sum::<usize>()
}

/// Builds the descriptor of `d` into one pool block. Keeps `d` (copied into
/// the same block) for the read-back check.
// Its own frame: DriverEntry must stay under a page of stack (no __chkstk in a driver).
#[inline(never)]
pub fn build(d: &Dacl) -> Result<(), NTSTATUS> {
    let alen = acl_len(d);
    let total = SD_ABSOLUTE + alen + core::mem::size_of::<Dacl>() + 8;
    let block = pool::alloc(total).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
    let base = block.as_ptr();
    let acl = base.wrapping_add(SD_ABSOLUTE);
    let copy = base.wrapping_add((SD_ABSOLUTE + alen).next_multiple_of(8)) as *mut Dacl;
    // SAFETY: the block holds the absolute descriptor, then the ACL of
    // `alen` bytes, then an aligned copy of `d`; every pointer is inside it.
    // SAFETY: see above.
    unsafe { ptr::write(copy, *d) };
    // SAFETY: see above: the descriptor's bytes.
    let mut st = unsafe { RtlCreateSecurityDescriptor(base.cast(), SECURITY_DESCRIPTOR_REVISION) };
    if st >= 0 {
        // SAFETY: see above: the ACL's `alen` bytes.
        st = unsafe { RtlCreateAcl(acl.cast(), alen as u32, ACL_REVISION) };
    }
    // SAFETY: see above: written just before.
    let copied = unsafe { &*copy };
    for a in &copied.aces[..d.n] {
        if st >= 0 {
            // SAFETY: see above: the ACL was sized for these ACEs, and the
            // SID lives in the block's copy.
            st = unsafe { RtlAddAccessAllowedAce(acl.cast(), ACL_REVISION, a.mask, a.sid.as_ptr() as PSID) };
        }
    }
    if st >= 0 {
        // SAFETY: see above: descriptor and ACL, both in the block.
        st = unsafe { RtlSetDaclSecurityDescriptor(base.cast(), 1, acl.cast(), 0) };
    }
    if st < 0 {
        // SAFETY: the unused block from `alloc`.
        unsafe { pool::free(block) };
        return Err(st);
    }
    let mut info = DACL_SECURITY_INFORMATION;
    if d.protected {
        info |= PROTECTED_DACL_SECURITY_INFORMATION;
    }
    SD_INFO.store(info as usize, Ordering::Relaxed);
    DACL.store(copy, Ordering::Relaxed);
    SD.store(base, Ordering::Release);
    Ok(())
}

/// Frees the descriptor (end of DriverEntry, or its failure path).
pub fn release() {
    DACL.store(ptr::null_mut(), Ordering::Relaxed);
    if let Some(p) = NonNull::new(SD.swap(ptr::null_mut(), Ordering::AcqRel)) {
        // SAFETY: the block from `build`, no longer referenced.
        unsafe { pool::free(p) };
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

#[repr(C, align(8))]
struct ReadBack([u8; 512]);

/// Applies the descriptor to device `d` and reads it back. Returns the
/// number of ACEs read back.
///
/// # Safety
/// `d` is a device object this driver just created.
// Its own frame: DriverEntry must stay under a page of stack (no __chkstk in a driver).
#[inline(never)]
pub unsafe fn apply(d: *mut DEVICE_OBJECT) -> Result<usize, NTSTATUS> {
    let sd = SD.load(Ordering::Acquire);
    let want = DACL.load(Ordering::Relaxed);
    if sd.is_null() || want.is_null() {
        return Err(STATUS_INVALID_SECURITY_DESCR);
    }
    let mut h: HANDLE = ptr::null_mut();
    // SAFETY: a live device object; a kernel handle that KHandle closes.
    let st = unsafe {
        ObOpenObjectByPointer(d.cast(), OBJ_KERNEL_HANDLE, ptr::null_mut(), WRITE_DAC | READ_CONTROL, ptr::null_mut(), KernelMode as _, &mut h)
    };
    if st < 0 {
        return Err(st);
    }
    let h = KHandle(h);
    // SAFETY: an open handle with WRITE_DAC and a valid absolute descriptor.
    let st = unsafe { ZwSetSecurityObject(h.0, SD_INFO.load(Ordering::Relaxed) as u32, sd.cast()) };
    if st < 0 {
        return Err(st);
    }
    let mut buf = ReadBack([0; 512]);
    let mut got = 0u32;
    // SAFETY: an open handle with READ_CONTROL; the buffer is writable for its length.
    let st = unsafe { ZwQuerySecurityObject(h.0, DACL_SECURITY_INFORMATION, buf.0.as_mut_ptr().cast(), buf.0.len() as u32, &mut got) };
    if st < 0 {
        return Err(st);
    }
    // SAFETY: `want` is the Dacl copy inside the live SD block.
    let want = unsafe { &*want };
    check_readback(&buf.0[..(got as usize).min(buf.0.len())], want).ok_or(STATUS_INVALID_SECURITY_DESCR)
}

/// Compares the DACL of a self-relative descriptor with `want`.
// Its own frame: DriverEntry must stay under a page of stack (no __chkstk in a driver).
#[inline(never)]
fn check_readback(sd: &[u8], want: &Dacl) -> Option<usize> {
    // SECURITY_DESCRIPTOR_RELATIVE: Revision, Sbz1, Control u16, Owner,
    // Group, Sacl, Dacl offsets (u32 each).
    let u16_at = |o: usize| Some(u16::from_le_bytes(sd.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(sd.get(o..o + 4)?.try_into().ok()?));
    let control = u16_at(2)?;
    const SE_DACL_PRESENT: u16 = 4;
    const SE_SELF_RELATIVE: u16 = 0x8000;
    if control & SE_DACL_PRESENT == 0 || control & SE_SELF_RELATIVE == 0 {
        return None;
    }
    let acl = u32_at(16)? as usize;
    if acl == 0 {
        return None;
    }
    let count = u16_at(acl + 4)? as usize;
    if count != want.n {
        return None;
    }
    let mut at = acl + 8;
    for a in &want.aces[..want.n] {
        let ty = *sd.get(at)?;
        let size = u16_at(at + 2)? as usize;
        let mask = u32_at(at + 4)?;
        let sid = sd.get(at + 8..at + 8 + a.sid_len)?;
        if ty != 0 || mask != a.mask || sid != &a.sid[..a.sid_len] {
            return None;
        }
        at += size;
    }
    Some(count)
}

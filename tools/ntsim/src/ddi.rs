//! The ntoskrnl.exe exports ntsim implements, as `extern "win64"` functions
//! (the driver calls them with the Microsoft x64 convention; windows-sys's
//! `extern "system"` is SysV on Linux), and the export table the loader
//! binds imports against.
//!
//! Each DDI checks the IRQL its Microsoft Learn page allows ("IRQL" in the
//! Requirements table of https://learn.microsoft.com/windows-hardware/drivers/ddi/
//! <header>/nf-<header>-<name>), and follows the page's semantics. Where a
//! page is silent, the comment says whose behaviour is followed.

use crate::kernel::{
    self, bugcheck, check_irql, state, Ace, KHandle, Obj, RegValue, Security, Sid, APC_LEVEL,
    DISPATCH_LEVEL, PASSIVE_LEVEL,
};
use crate::layout::*;
use crate::verifier as v;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::System::SystemServices::{KLOCK_QUEUE_HANDLE, KSEMAPHORE};
use windows_sys::Win32::Foundation::UNICODE_STRING;

pub type NTSTATUS = i32;

/// Reads a counted UTF-16 string.
///
/// # Safety
/// `u` is NULL or points at a UNICODE_STRING whose Buffer holds Length bytes.
pub unsafe fn ustr(u: *const UNICODE_STRING) -> String {
    if u.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe {
        let u = &*u;
        if u.Buffer.is_null() {
            return String::new();
        }
        String::from_utf16_lossy(std::slice::from_raw_parts(u.Buffer, u.Length as usize / 2))
    }
}

// ---------------------------------------------------------------- debug output

unsafe extern "C" {
    // The C-variadic ms_abi functions of varargs.c (only their addresses are used here).
    fn ntsim_DbgPrint();
    fn ntsim_DbgPrintEx();
    fn ntsim_vDbgPrintEx();
}

/// Where varargs.c sends each formatted DbgPrint line.
///
/// # Safety
/// `text` points at `len` readable bytes (varargs.c's buffer).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntsim_dbgprint_sink(
    _component: u32,
    level: u32,
    text: *const u8,
    len: usize,
) {
    // SAFETY: the contract above.
    let s = String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(text, len) })
        .trim_end()
        .to_string();
    let mut st = state();
    if st.echo {
        eprintln!("[dbg {level}] {s}");
    }
    st.dbg.push(s);
}

// ---------------------------------------------------------------- pool

/// Special pool (Driver Verifier's, in miniature): every block ends at a
/// page boundary followed by an inaccessible guard page (an overrun
/// faults), or with `NTSIM_SPECIAL_POOL=underrun` starts at one preceded by
/// the guard (an underrun faults), and a freed block's pages are made inaccessible and kept in a
/// quarantine of QUARANTINE blocks (a use after free faults); both faults
/// stop the run (see kernel::install_fault_handler). Blocks are 16-byte
/// aligned (MEMORY_ALLOCATION_ALIGNMENT on x64), so an overrun of less
/// than the block's rounding is not seen. mmap/mprotect through `libc`
/// because no crate offers guarded allocations with a quarantine.
const PAGE: usize = 4096;
const QUARANTINE: usize = 1024;
/// Live guarded blocks at most (each is two memory mappings, and a
/// process has about 65530): past this, blocks come from the ordinary
/// heap, as Driver Verifier's special pool falls back to normal pool when
/// it is exhausted.
const SPECIAL_LIMIT: usize = 16384;

struct Mapping {
    base: usize,
    len: usize,
}

/// Live blocks' mappings by block address, and the quarantine (oldest first).
type Mappings = (HashMap<usize, Mapping>, std::collections::VecDeque<Mapping>);

static MAPPINGS: std::sync::Mutex<Option<Mappings>> = std::sync::Mutex::new(None);

fn heap_layout(size: usize) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(size.max(1), 16).unwrap()
}

/// Off: pool blocks come from the ordinary heap, without the 0xC3/0xDD
/// fills, as pool without Driver Verifier (for benchmarks, never for tests).
static SPECIAL_POOL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

pub fn set_special_pool(on: bool) {
    SPECIAL_POOL.store(on, Ordering::Relaxed);
}

/// Whether the guard page precedes blocks (`NTSIM_SPECIAL_POOL=underrun`).
fn guard_before() -> bool {
    static B: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *B.get_or_init(|| std::env::var("NTSIM_SPECIAL_POOL").as_deref() == Ok("underrun"))
}

fn special_alloc(size: usize) -> *mut u8 {
    if !SPECIAL_POOL.load(Ordering::Relaxed) || MAPPINGS.lock().unwrap().as_ref().is_some_and(|m| m.0.len() >= SPECIAL_LIMIT) {
        // SAFETY: a non-zero-sized layout.
        return unsafe { std::alloc::alloc(heap_layout(size)) };
    }
    let rounded = size.max(1).div_ceil(16) * 16;
    let pages = rounded.div_ceil(PAGE);
    let len = (pages + 1) * PAGE;
    // SAFETY: a fresh private anonymous mapping.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    let base = base as usize;
    let (guard, p) = if guard_before() {
        (base, base + PAGE)
    } else {
        (base + pages * PAGE, base + pages * PAGE - rounded)
    };
    // SAFETY: one page of our own mapping (its first or last) becomes the guard.
    unsafe { libc::mprotect(guard as *mut libc::c_void, PAGE, libc::PROT_NONE) };
    v::POOL_SPECIAL.test(false);
    let mut g = MAPPINGS.lock().unwrap();
    g.get_or_insert_with(Default::default)
        .0
        .insert(p, Mapping { base, len });
    p as *mut u8
}

fn special_free(p: usize, size: usize) {
    let mut g = MAPPINGS.lock().unwrap();
    let (live, quarantine) = g.get_or_insert_with(Default::default);
    let Some(m) = live.remove(&p) else {
        // SAFETY: a block special_alloc took from the heap with this size.
        unsafe { std::alloc::dealloc(p as *mut u8, heap_layout(size)) };
        return;
    };
    // SAFETY: our own mapping: its pages are released and made inaccessible.
    unsafe {
        libc::madvise(m.base as *mut libc::c_void, m.len, libc::MADV_DONTNEED);
        libc::mprotect(m.base as *mut libc::c_void, m.len, libc::PROT_NONE);
    }
    quarantine.push_back(m);
    if quarantine.len() > QUARANTINE {
        let old = quarantine.pop_front().unwrap();
        // SAFETY: a quarantined mapping of ours that nothing may use any more.
        unsafe { libc::munmap(old.base as *mut libc::c_void, old.len) };
    }
}

/// ExAllocatePoolWithTag (wdm.h): IRQL <= DISPATCH_LEVEL for nonpaged
/// types, <= APC_LEVEL for paged; the memory is not zeroed (ntsim fills it
/// with 0xC3 so that a driver relying on zeroed pool reads garbage).
pub unsafe extern "win64" fn ExAllocatePoolWithTag(
    pool_type: i32,
    size: usize,
    tag: u32,
) -> *mut c_void {
    let paged = pool_type & 1 == 1;
    check_irql(
        "ExAllocatePoolWithTag",
        if paged { APC_LEVEL } else { DISPATCH_LEVEL },
    );
    if v::POOL_TAG.test(tag == 0) {
        v::POOL_TAG.stop(
            "BAD_POOL_CALLER",
            0xC2,
            [0x9B, pool_type as usize, size, 0],
            "ExAllocatePoolWithTag with tag 0",
        );
    }
    let at_dispatch = kernel::irql() >= DISPATCH_LEVEL;
    let mut s = state();
    s.pool_allocs += 1;
    if at_dispatch {
        s.dispatch_alloc_max = s.dispatch_alloc_max.max(size);
    }
    if s.pool_fail_at > 0 {
        s.pool_fail_at -= 1;
        if s.pool_fail_at == 0 {
            return std::ptr::null_mut();
        }
    }
    let p = special_alloc(size);
    if p.is_null() {
        return p.cast();
    }
    if SPECIAL_POOL.load(Ordering::Relaxed) {
        // SAFETY: `size` bytes just allocated.
        unsafe { std::ptr::write_bytes(p, 0xC3, size) };
    }
    s.pool.insert(p as usize, (tag, size, paged));
    s.pool_bytes += size;
    p.cast()
}

/// ExFreePoolWithTag: IRQL <= DISPATCH_LEVEL (<= APC_LEVEL for paged
/// pool); a tag that does not match the allocation's is BAD_POOL_CALLER
/// (0xC2) with parameter 0xA, as Windows checks it; a free of a block not
/// allocated (double free) too.
pub unsafe extern "win64" fn ExFreePoolWithTag(p: *mut c_void, tag: u32) {
    check_irql("ExFreePoolWithTag", DISPATCH_LEVEL);
    let mut s = state();
    let known = s.pool.get(&(p as usize)).copied();
    if v::POOL_FREE.test(known.is_none()) {
        drop(s);
        v::POOL_FREE.stop(
            "BAD_POOL_CALLER",
            0xC2,
            [0x7, 0, p as usize, 0],
            "free of an address that is not an allocated pool block (double free?)",
        );
    }
    // With the check disabled, an unknown block's free is ignored.
    let Some((t, size, paged)) = known else { return };
    if paged {
        check_irql("ExFreePoolWithTag (paged pool)", APC_LEVEL);
    }
    if v::POOL_TAG.test(tag != 0 && tag != t) {
        drop(s);
        v::POOL_TAG.stop(
            "BAD_POOL_CALLER",
            0xC2,
            [0xA, p as usize, tag as usize, t as usize],
            &format!(
                "block freed with tag '{}', allocated with '{}'",
                kernel::tag_str(tag),
                kernel::tag_str(t)
            ),
        );
    }
    s.pool.remove(&(p as usize));
    s.pool_bytes -= size;
    drop(s);
    v::forget_range(p as usize, size);
    if SPECIAL_POOL.load(Ordering::Relaxed) {
        // SAFETY: the block was allocated by ExAllocatePoolWithTag with this size.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0xDD, size) };
    }
    special_free(p as usize, size);
}

pub unsafe extern "win64" fn ExFreePool(p: *mut c_void) {
    // SAFETY: as ExFreePoolWithTag, with no tag check.
    unsafe { ExFreePoolWithTag(p, 0) }
}

// ---------------------------------------------------------------- dispatcher objects

const SEMAPHORE_OBJECT: u8 = 5;
const NOTIFICATION_EVENT: u8 = 0;
const SYNCHRONIZATION_EVENT: u8 = 1;

/// The signal state of a dispatcher object (DISPATCHER_HEADER.SignalState, +4).
fn signal(obj: *mut c_void) -> *mut i32 {
    (obj as usize + 4) as *mut i32
}

/// KeInitializeSemaphore: any IRQL.
pub unsafe extern "win64" fn KeInitializeSemaphore(sem: *mut KSEMAPHORE, count: i32, limit: i32) {
    let _g = kernel::DISPATCHER.lock().unwrap();
    // SAFETY: the driver passes a KSEMAPHORE it owns (resident storage).
    unsafe {
        std::ptr::write_bytes(sem, 0, 1);
        *(sem as *mut u8) = SEMAPHORE_OBJECT;
        *(sem as *mut u8).add(2) = (std::mem::size_of::<KSEMAPHORE>() / 4) as u8;
        (*sem).Header.SignalState = count;
        (*sem).Limit = limit;
    }
}

/// KeReleaseSemaphore: IRQL <= DISPATCH_LEVEL. A release past the limit
/// raises STATUS_SEMAPHORE_LIMIT_EXCEEDED; unhandled in a driver, that is
/// KMODE_EXCEPTION_NOT_HANDLED.
pub unsafe extern "win64" fn KeReleaseSemaphore(
    sem: *mut KSEMAPHORE,
    _increment: i32,
    adjustment: i32,
    _wait: u8,
) -> i32 {
    check_irql("KeReleaseSemaphore", DISPATCH_LEVEL);
    let g = kernel::DISPATCHER.lock().unwrap();
    // SAFETY: an initialised KSEMAPHORE of the driver's; changed under the dispatcher lock.
    let (prev, limit) = unsafe { ((*sem).Header.SignalState, (*sem).Limit) };
    if v::SEM_LIMIT.test(adjustment <= 0 || prev.checked_add(adjustment).is_none_or(|n| n > limit)) {
        drop(g);
        v::SEM_LIMIT.stop(
            "KMODE_EXCEPTION_NOT_HANDLED",
            0x1E,
            [0xC000_0047, sem as usize, prev as usize, limit as usize],
            &format!("KeReleaseSemaphore past the limit (STATUS_SEMAPHORE_LIMIT_EXCEEDED): count {prev} + {adjustment} > limit {limit}"),
        );
    }
    // SAFETY: as above.
    unsafe { (*sem).Header.SignalState = prev.saturating_add(adjustment) };
    kernel::DISPATCHER_CV.notify_all();
    if limit == 1 {
        v::released(sem as usize);
    }
    prev
}

/// KeReadStateSemaphore: any IRQL.
pub unsafe extern "win64" fn KeReadStateSemaphore(sem: *mut KSEMAPHORE) -> i32 {
    let _g = kernel::DISPATCHER.lock().unwrap();
    // SAFETY: an initialised KSEMAPHORE.
    unsafe { (*sem).Header.SignalState }
}

/// KeInitializeEvent: any IRQL.
pub unsafe extern "win64" fn KeInitializeEvent(ev: *mut c_void, kind: i32, state_: u8) {
    let _g = kernel::DISPATCHER.lock().unwrap();
    // SAFETY: a KEVENT (a DISPATCHER_HEADER, 24 bytes) of the driver's.
    unsafe {
        std::ptr::write_bytes(ev as *mut u8, 0, 24);
        *(ev as *mut u8) = if kind == 0 {
            NOTIFICATION_EVENT
        } else {
            SYNCHRONIZATION_EVENT
        };
        *(ev as *mut u8).add(2) = 6;
        *signal(ev) = state_ as i32;
    }
}

/// KeSetEvent: IRQL <= DISPATCH_LEVEL; returns the previous state.
pub unsafe extern "win64" fn KeSetEvent(ev: *mut c_void, _increment: i32, _wait: u8) -> i32 {
    check_irql("KeSetEvent", DISPATCH_LEVEL);
    let _g = kernel::DISPATCHER.lock().unwrap();
    // SAFETY: an initialised KEVENT.
    let prev = unsafe { std::mem::replace(&mut *signal(ev), 1) };
    kernel::DISPATCHER_CV.notify_all();
    prev
}

/// KeWaitForSingleObject: IRQL <= DISPATCH_LEVEL with a zero timeout, else
/// <= APC_LEVEL. Semaphores and events; the wait really blocks the thread.
pub unsafe extern "win64" fn KeWaitForSingleObject(
    obj: *mut c_void,
    _reason: i32,
    _mode: i8,
    _alertable: u8,
    timeout: *mut i64,
) -> NTSTATUS {
    // SAFETY: NULL or a LARGE_INTEGER of the caller's.
    let t = if timeout.is_null() {
        None
    } else {
        Some(unsafe { *timeout })
    };
    check_irql(
        "KeWaitForSingleObject",
        if t == Some(0) {
            DISPATCH_LEVEL
        } else {
            APC_LEVEL
        },
    );
    let deadline = match t {
        None => None,
        Some(v) if v <= 0 => Some(
            std::time::Instant::now()
                + std::time::Duration::from_nanos((-(v as i128) * 100) as u64),
        ),
        // An absolute time: ntsim has no system clock epoch; treat as "now".
        Some(_) => Some(std::time::Instant::now()),
    };
    // SAFETY: `obj` is a dispatcher object of the driver's (header first).
    let kind = unsafe { *(obj as *const u8) };
    // A semaphore of limit 1 is a mutex: its waits join the lock order
    // (not a zero-timeout try, which cannot deadlock).
    // SAFETY: a KSEMAPHORE (kind 5) has its Limit after the header.
    let mutex = kind == SEMAPHORE_OBJECT && t != Some(0) && unsafe { (*(obj as *mut KSEMAPHORE)).Limit } == 1;
    if mutex {
        v::acquiring(obj as usize, "KeWaitForSingleObject");
    }
    let mut g = kernel::DISPATCHER.lock().unwrap();
    let mut first = true;
    loop {
        // SAFETY: as above; the signal state changes only under the dispatcher lock.
        let s = unsafe { &mut *signal(obj) };
        if *s > 0 {
            match kind {
                SEMAPHORE_OBJECT | SYNCHRONIZATION_EVENT => {
                    *s -= if kind == SEMAPHORE_OBJECT { 1 } else { *s }
                }
                _ => {}
            }
            if mutex {
                v::acquired(obj as usize);
            }
            return 0;
        }
        if std::mem::take(&mut first) && kind == SEMAPHORE_OBJECT {
            v::SEM_CONTENDED.fetch_add(1, Ordering::Relaxed);
        }
        match deadline {
            None => g = kernel::DISPATCHER_CV.wait(g).unwrap(),
            Some(d) => {
                let now = std::time::Instant::now();
                if now >= d {
                    return 0x102; // STATUS_TIMEOUT
                }
                g = kernel::DISPATCHER_CV.wait_timeout(g, d - now).unwrap().0;
            }
        }
    }
}

/// KeEnterCriticalRegion: IRQL <= APC_LEVEL.
pub unsafe extern "win64" fn KeEnterCriticalRegion() {
    check_irql("KeEnterCriticalRegion", APC_LEVEL);
    kernel::add_critical(1);
}

/// KeLeaveCriticalRegion: IRQL <= DISPATCH_LEVEL; leaving a region the
/// thread is not in corrupts KernelApcDisable.
pub unsafe extern "win64" fn KeLeaveCriticalRegion() {
    check_irql("KeLeaveCriticalRegion", DISPATCH_LEVEL);
    if v::CRITICAL_REGION.test(kernel::add_critical(-1) < 0) {
        v::CRITICAL_REGION.stop(
            "APC_INDEX_MISMATCH",
            0x1,
            [0, 0, 0, 0],
            "KeLeaveCriticalRegion without a matching KeEnterCriticalRegion",
        );
    }
}

// ---------------------------------------------------------------- spin locks

/// Acquires the spin lock at `lock` (a KSPIN_LOCK: 0 free, else the owner's
/// thread id). It really excludes: other threads spin (yielding).
///
/// # Safety
/// `lock` points at a KSPIN_LOCK that stays valid while held.
pub unsafe fn spin_acquire(lock: *mut usize, who: &str) {
    // SAFETY: the contract above; a KSPIN_LOCK is a pointer-sized, pointer-aligned integer.
    let a = unsafe { AtomicUsize::from_ptr(lock) };
    let me = kernel::thread_id();
    if v::SPIN_OWNER.test(a.load(Ordering::Relaxed) == me) {
        v::SPIN_OWNER.stop(
            "SPIN_LOCK_ALREADY_OWNED",
            0xF,
            [lock as usize, 0, 0, 0],
            &format!("{who}: this thread already holds the lock (deadlock)"),
        );
    }
    v::acquiring(lock as usize, who);
    if a
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        v::SPIN_CONTENDED.fetch_add(1, Ordering::Relaxed);
        let t0 = v::cpu_ns();
        while a
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        v::spun(v::cpu_ns() - t0);
    }
    kernel::hold(lock as usize);
    v::acquired(lock as usize);
}

/// # Safety
/// As [`spin_acquire`].
pub unsafe fn spin_release(lock: *mut usize, who: &str) {
    // SAFETY: the contract above.
    let a = unsafe { AtomicUsize::from_ptr(lock) };
    let me = kernel::thread_id();
    if v::SPIN_OWNER.test(a.load(Ordering::Relaxed) != me || !kernel::unhold(lock as usize)) {
        v::SPIN_OWNER.stop(
            "SPIN_LOCK_NOT_OWNED",
            0x10,
            [lock as usize, 0, 0, 0],
            &format!("{who}: releasing a spin lock this thread does not hold"),
        );
    }
    v::released(lock as usize);
    a.store(0, Ordering::Release);
}

/// Lowers the IRQL to `new` (the value a release restores).
fn lower_irql(new: u8, who: &str) {
    let now = kernel::irql();
    if v::IRQL_LOWER.test(new > now) {
        v::IRQL_LOWER.stop(
            "IRQL_NOT_LESS_OR_EQUAL",
            0xA,
            [0, new as usize, now as usize, 0],
            &format!("{who}: \"lowering\" IRQL {now} to {new}"),
        );
    }
    kernel::set_irql(new);
}

/// KeAcquireSpinLockRaiseToDpc: IRQL <= DISPATCH_LEVEL; raises to DISPATCH_LEVEL.
pub unsafe extern "win64" fn KeAcquireSpinLockRaiseToDpc(lock: *mut usize) -> u8 {
    check_irql("KeAcquireSpinLockRaiseToDpc", DISPATCH_LEVEL);
    let old = kernel::irql();
    kernel::set_irql(DISPATCH_LEVEL);
    // SAFETY: the caller\'s KSPIN_LOCK (the DDI contract) or our static cancel lock.
    unsafe { spin_acquire(lock, "KeAcquireSpinLockRaiseToDpc") };
    old
}

/// KeReleaseSpinLock: IRQL == DISPATCH_LEVEL.
pub unsafe extern "win64" fn KeReleaseSpinLock(lock: *mut usize, new: u8) {
    if v::IRQL_LOWER.test(kernel::irql() != DISPATCH_LEVEL) {
        v::IRQL_LOWER.stop(
            "IRQL_NOT_DISPATCH_LEVEL",
            0x8,
            [lock as usize, kernel::irql() as usize, 0, 0],
            "KeReleaseSpinLock below DISPATCH_LEVEL",
        );
    }
    // SAFETY: as for the acquire.
    unsafe { spin_release(lock, "KeReleaseSpinLock") };
    lower_irql(new, "KeReleaseSpinLock");
}

/// KeAcquireSpinLockAtDpcLevel: IRQL >= DISPATCH_LEVEL.
pub unsafe extern "win64" fn KeAcquireSpinLockAtDpcLevel(lock: *mut usize) {
    if v::IRQL_DDI.test(kernel::irql() < DISPATCH_LEVEL) {
        v::IRQL_DDI.stop(
            "IRQL_NOT_GREATER_OR_EQUAL",
            0x9,
            [lock as usize, kernel::irql() as usize, 0, 0],
            "KeAcquireSpinLockAtDpcLevel below DISPATCH_LEVEL",
        );
    }
    // SAFETY: the caller\'s KSPIN_LOCK (the DDI contract) or our static cancel lock.
    unsafe { spin_acquire(lock, "KeAcquireSpinLockAtDpcLevel") };
}

pub unsafe extern "win64" fn KeReleaseSpinLockFromDpcLevel(lock: *mut usize) {
    // SAFETY: as for the acquire.
    unsafe { spin_release(lock, "KeReleaseSpinLockFromDpcLevel") };
}

/// KeAcquireInStackQueuedSpinLock: IRQL <= DISPATCH_LEVEL; the handle keeps the lock and the old IRQL.
pub unsafe extern "win64" fn KeAcquireInStackQueuedSpinLock(
    lock: *mut usize,
    h: *mut KLOCK_QUEUE_HANDLE,
) {
    check_irql("KeAcquireInStackQueuedSpinLock", DISPATCH_LEVEL);
    let old = kernel::irql();
    kernel::set_irql(DISPATCH_LEVEL);
    // SAFETY: the caller\'s KSPIN_LOCK (the DDI contract) or our static cancel lock.
    unsafe { spin_acquire(lock, "KeAcquireInStackQueuedSpinLock") };
    // SAFETY: the caller's lock-queue handle (on its stack).
    unsafe {
        (*h).LockQueue.Next = std::ptr::null_mut();
        (*h).LockQueue.Lock = lock;
        (*h).OldIrql = old;
    }
}

pub unsafe extern "win64" fn KeReleaseInStackQueuedSpinLock(h: *mut KLOCK_QUEUE_HANDLE) {
    // SAFETY: the handle filled by KeAcquireInStackQueuedSpinLock.
    let (lock, old) = unsafe { ((*h).LockQueue.Lock, (*h).OldIrql) };
    // SAFETY: as for the acquire.
    unsafe { spin_release(lock, "KeReleaseInStackQueuedSpinLock") };
    lower_irql(old, "KeReleaseInStackQueuedSpinLock");
}

/// KeGetCurrentIrql (an export on x64 Windows only as an inline; provided for C drivers).
pub unsafe extern "win64" fn KeGetCurrentIrql() -> u8 {
    kernel::irql()
}

/// The global cancel spin lock (IoAcquireCancelSpinLock).
pub static CANCEL_LOCK: AtomicUsize = AtomicUsize::new(0);

/// IoAcquireCancelSpinLock: IRQL <= DISPATCH_LEVEL; raises to DISPATCH_LEVEL.
pub unsafe extern "win64" fn IoAcquireCancelSpinLock(irql: *mut u8) {
    check_irql("IoAcquireCancelSpinLock", DISPATCH_LEVEL);
    let old = kernel::irql();
    kernel::set_irql(DISPATCH_LEVEL);
    // SAFETY: the caller\'s KSPIN_LOCK (the DDI contract) or our static cancel lock.
    unsafe { spin_acquire(CANCEL_LOCK.as_ptr(), "IoAcquireCancelSpinLock") };
    // SAFETY: the caller's out parameter.
    unsafe { *irql = old };
}

/// IoReleaseCancelSpinLock: IRQL == DISPATCH_LEVEL.
pub unsafe extern "win64" fn IoReleaseCancelSpinLock(irql: u8) {
    if v::IRQL_LOWER.test(kernel::irql() != DISPATCH_LEVEL) {
        v::IRQL_LOWER.stop(
            "IRQL_NOT_DISPATCH_LEVEL",
            0x8,
            [0, kernel::irql() as usize, 0, 0],
            "IoReleaseCancelSpinLock below DISPATCH_LEVEL",
        );
    }
    // SAFETY: as for the acquire.
    unsafe { spin_release(CANCEL_LOCK.as_ptr(), "IoReleaseCancelSpinLock") };
    lower_irql(irql, "IoReleaseCancelSpinLock");
}

// ---------------------------------------------------------------- bugcheck

/// KeBugCheckEx: the driver stopped the machine. A Rust driver's panic
/// (windows-drivers-rs convention: code "RPNC", file pointer, file length,
/// line, column) is decoded.
pub unsafe extern "win64" fn KeBugCheckEx(
    code: u32,
    p1: usize,
    p2: usize,
    p3: usize,
    p4: usize,
) -> ! {
    let what = if code == u32::from_be_bytes(*b"RPNC") && p1 != 0 && p2 < 4096 {
        // SAFETY: the panic location's file name: `p2` bytes at `p1` in the image's read-only data.
        let file =
            String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p1 as *const u8, p2) })
                .into_owned();
        format!("the driver panicked (Rust, \"RPNC\") at {file}:{p3}:{p4}")
    } else {
        "the driver called KeBugCheckEx".to_string()
    };
    let name = if code == u32::from_be_bytes(*b"RPNC") {
        "RUST_PANIC".to_string()
    } else {
        format!("{code:#x}")
    };
    bugcheck(&name, code, [p1, p2, p3, p4], &what)
}

// ---------------------------------------------------------------- objects, processes, tokens

/// The object types drivers import as data (`POBJECT_TYPE *`): the import
/// is the address of a variable holding the type object's address.
#[repr(C)]
pub struct ObjectType([u8; 64]);
pub struct TypeVar(pub *const ObjectType);
// SAFETY: a constant address of an immutable static.
unsafe impl Sync for TypeVar {}

pub static PROCESS_TYPE: ObjectType = ObjectType([0; 64]);
pub static TOKEN_TYPE: ObjectType = ObjectType([0; 64]);
pub static DEVICE_TYPE: ObjectType = ObjectType([0; 64]);
pub static FILE_TYPE: ObjectType = ObjectType([0; 64]);
pub static PS_PROCESS_TYPE: TypeVar = TypeVar(&PROCESS_TYPE);
pub static SE_TOKEN_OBJECT_TYPE: TypeVar = TypeVar(&TOKEN_TYPE);
pub static IO_DEVICE_OBJECT_TYPE: TypeVar = TypeVar(&DEVICE_TYPE);
pub static IO_FILE_OBJECT_TYPE: TypeVar = TypeVar(&FILE_TYPE);

const STATUS_OBJECT_TYPE_MISMATCH: NTSTATUS = 0xC000_0024u32 as i32;
const STATUS_INVALID_HANDLE: NTSTATUS = 0xC000_0008u32 as i32;
const STATUS_ACCESS_DENIED: NTSTATUS = 0xC000_0022u32 as i32;
const STATUS_BUFFER_TOO_SMALL: NTSTATUS = 0xC000_0023u32 as i32;
const STATUS_BUFFER_OVERFLOW: NTSTATUS = 0x8000_0005u32 as i32;
const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = 0xC000_0034u32 as i32;
const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000Du32 as i32;
const STATUS_INVALID_INFO_CLASS: NTSTATUS = 0xC000_0003u32 as i32;
const STATUS_UNKNOWN_REVISION: NTSTATUS = 0xC000_0058u32 as i32;
const STATUS_ALLOTTED_SPACE_EXCEEDED: NTSTATUS = 0xC000_0099u32 as i32;
const STATUS_INVALID_SID: NTSTATUS = 0xC000_0078u32 as i32;
const STATUS_INVALID_ACL: NTSTATUS = 0xC000_0077u32 as i32;
const STATUS_INVALID_SECURITY_DESCR: NTSTATUS = 0xC000_0079u32 as i32;

pub const WRITE_DAC: u32 = 0x0004_0000;
pub const READ_CONTROL: u32 = 0x0002_0000;

/// ObOpenObjectByPointer (wdm.h/ntifs.h): IRQL == PASSIVE_LEVEL. A non-NULL
/// ObjectType must match the object's type (STATUS_OBJECT_TYPE_MISMATCH).
/// Kernel-mode callers get the access they ask for (no access check).
pub unsafe extern "win64" fn ObOpenObjectByPointer(
    object: *mut c_void,
    _attributes: u32,
    _access_state: *mut c_void,
    access: u32,
    ty: *const ObjectType,
    _mode: i8,
    handle: *mut usize,
) -> NTSTATUS {
    check_irql("ObOpenObjectByPointer", PASSIVE_LEVEL);
    let mut s = state();
    let known = s.objects.get(&(object as usize)).cloned();
    if v::OBJECT_KNOWN.test(known.is_none()) {
        drop(s);
        v::OBJECT_KNOWN.stop(
            "INVALID_OBJECT",
            0x1E,
            [object as usize, 0, 0, 0],
            "ObOpenObjectByPointer on an address that is no object ntsim knows",
        );
    }
    let Some(obj) = known else {
        return STATUS_INVALID_HANDLE;
    };
    let actual: *const ObjectType = match obj {
        Obj::Process(_) => &PROCESS_TYPE,
        Obj::Token(_) => &TOKEN_TYPE,
        Obj::Device => &DEVICE_TYPE,
    };
    if !ty.is_null() && ty != actual {
        return STATUS_OBJECT_TYPE_MISMATCH;
    }
    let h = s.new_handle(KHandle::Object {
        ptr: object as usize,
        access,
    });
    // SAFETY: the caller's out parameter.
    unsafe { *handle = h };
    0
}

/// ObfReferenceObject / ObfDereferenceObject: objects here live for the run.
pub unsafe extern "win64" fn ObfReferenceObject(_o: *mut c_void) -> isize {
    1
}
pub unsafe extern "win64" fn ObfDereferenceObject(_o: *mut c_void) -> isize {
    check_irql("ObfDereferenceObject", DISPATCH_LEVEL);
    1
}

/// ZwClose: IRQL == PASSIVE_LEVEL; closing a kernel handle that does not
/// exist is INVALID_KERNEL_HANDLE (0x93).
pub unsafe extern "win64" fn ZwClose(h: usize) -> NTSTATUS {
    check_irql("ZwClose", PASSIVE_LEVEL);
    if v::HANDLE_KERNEL.test(state().handles.remove(&h).is_none()) {
        v::HANDLE_KERNEL.stop(
            "INVALID_KERNEL_HANDLE",
            0x93,
            [h, 0, 0, 0],
            "ZwClose of a handle that is not open",
        );
    }
    0
}

fn handle_obj(h: usize) -> Option<(Obj, u32)> {
    let s = state();
    match s.handles.get(&h)? {
        KHandle::Object { ptr, access } => Some((s.objects.get(ptr)?.clone(), *access)),
        KHandle::Key(_) => None,
    }
}

/// PsGetCurrentProcessId: any IRQL.
pub unsafe extern "win64" fn PsGetCurrentProcessId() -> usize {
    kernel::current_process().pid
}

/// IoGetCurrentProcess / PsGetCurrentProcess: IRQL <= DISPATCH_LEVEL.
pub unsafe extern "win64" fn IoGetCurrentProcess() -> *mut c_void {
    check_irql("IoGetCurrentProcess", DISPATCH_LEVEL);
    std::sync::Arc::as_ptr(&kernel::current_process()) as *mut c_void
}

/// ZwOpenProcessTokenEx: IRQL == PASSIVE_LEVEL.
pub unsafe extern "win64" fn ZwOpenProcessTokenEx(
    process: usize,
    access: u32,
    _attrs: u32,
    token: *mut usize,
) -> NTSTATUS {
    check_irql("ZwOpenProcessTokenEx", PASSIVE_LEVEL);
    let Some((Obj::Process(p), _)) = handle_obj(process) else {
        return STATUS_INVALID_HANDLE;
    };
    let mut s = state();
    let ptr = std::sync::Arc::as_ptr(&p.token) as usize;
    s.objects.insert(ptr, Obj::Token(p.token.clone()));
    let h = s.new_handle(KHandle::Object { ptr, access });
    // SAFETY: the caller's out parameter.
    unsafe { *token = h };
    0
}

/// The pseudo handle of the current thread (NtCurrentThread / ZwCurrentThread).
pub const CURRENT_THREAD: usize = usize::MAX - 1;
/// The pseudo handle of the current process (NtCurrentProcess).
pub const CURRENT_PROCESS: usize = usize::MAX;
const STATUS_NO_TOKEN: NTSTATUS = 0xC000_007Cu32 as i32;
const STATUS_INVALID_CID: NTSTATUS = 0xC000_000Bu32 as i32;
const STATUS_TIMEOUT: NTSTATUS = 0x102;

/// ZwOpenThreadTokenEx: IRQL == PASSIVE_LEVEL. The current thread's
/// impersonation token, or STATUS_NO_TOKEN when it is not impersonating
/// (only the current-thread pseudo handle is supported).
pub unsafe extern "win64" fn ZwOpenThreadTokenEx(
    thread: usize,
    access: u32,
    _as_self: u8,
    _attrs: u32,
    token: *mut usize,
) -> NTSTATUS {
    check_irql("ZwOpenThreadTokenEx", PASSIVE_LEVEL);
    if thread != CURRENT_THREAD {
        return STATUS_INVALID_HANDLE;
    }
    let Some(t) = kernel::impersonation() else {
        return STATUS_NO_TOKEN;
    };
    let mut s = state();
    let ptr = std::sync::Arc::as_ptr(&t) as usize;
    s.objects.insert(ptr, Obj::Token(t));
    let h = s.new_handle(KHandle::Object { ptr, access });
    // SAFETY: the caller's out parameter.
    unsafe { *token = h };
    0
}

/// ZwOpenThreadToken: as ZwOpenThreadTokenEx with no handle attributes.
pub unsafe extern "win64" fn ZwOpenThreadToken(
    thread: usize,
    access: u32,
    as_self: u8,
    token: *mut usize,
) -> NTSTATUS {
    // SAFETY: forwarded with the same contract.
    unsafe { ZwOpenThreadTokenEx(thread, access, as_self, 0, token) }
}

/// ZwOpenProcessToken: as ZwOpenProcessTokenEx with no handle attributes.
pub unsafe extern "win64" fn ZwOpenProcessToken(
    process: usize,
    access: u32,
    token: *mut usize,
) -> NTSTATUS {
    // SAFETY: forwarded with the same contract.
    unsafe { ZwOpenProcessTokenEx(process, access, 0, token) }
}

/// ZwOpenProcess by CLIENT_ID (UniqueProcess): IRQL == PASSIVE_LEVEL. A
/// process id names the process object as long as that object exists: a
/// live process, or an exited one some handle still holds.
pub unsafe extern "win64" fn ZwOpenProcess(
    out: *mut usize,
    access: u32,
    _oa: *mut c_void,
    cid: *mut usize,
) -> NTSTATUS {
    check_irql("ZwOpenProcess", PASSIVE_LEVEL);
    if cid.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the caller's CLIENT_ID (UniqueProcess first).
    let pid = unsafe { *cid };
    let Some(p) = kernel::process_by_id(pid) else {
        return STATUS_INVALID_CID;
    };
    let mut s = state();
    let h = s.new_handle(KHandle::Object {
        ptr: std::sync::Arc::as_ptr(&p) as usize,
        access,
    });
    // SAFETY: the caller's out parameter.
    unsafe { *out = h };
    0
}

/// ZwWaitForSingleObject on a process handle (signalled once the process
/// has exited): IRQL == PASSIVE_LEVEL; STATUS_TIMEOUT when the timeout
/// passes first.
pub unsafe extern "win64" fn ZwWaitForSingleObject(
    h: usize,
    _alertable: u8,
    timeout: *mut i64,
) -> NTSTATUS {
    check_irql("ZwWaitForSingleObject", PASSIVE_LEVEL);
    let Some((Obj::Process(p), _)) = handle_obj(h) else {
        return STATUS_INVALID_HANDLE;
    };
    // SAFETY: NULL or the caller's LARGE_INTEGER.
    let t = if timeout.is_null() {
        None
    } else {
        Some(unsafe { *timeout })
    };
    let end = t.map(|v| {
        std::time::Instant::now()
            + std::time::Duration::from_nanos((v.min(0).unsigned_abs() as u128 * 100) as u64)
    });
    loop {
        if p.exited.load(Ordering::SeqCst) {
            return 0;
        }
        if end.is_some_and(|e| std::time::Instant::now() >= e) {
            return STATUS_TIMEOUT;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// ZwQueryInformationToken (TokenUser 1, TokenGroups 2): IRQL == PASSIVE_LEVEL.
/// Too small a buffer: STATUS_BUFFER_TOO_SMALL with the length needed.
pub unsafe extern "win64" fn ZwQueryInformationToken(
    token: usize,
    class: i32,
    info: *mut c_void,
    len: u32,
    ret: *mut u32,
) -> NTSTATUS {
    check_irql("ZwQueryInformationToken", PASSIVE_LEVEL);
    let Some((Obj::Token(t), _)) = handle_obj(token) else {
        return STATUS_INVALID_HANDLE;
    };
    // Build the record at offset 0 of a scratch buffer, with SID pointers
    // fixed up for the caller's address afterwards.
    let (head, entries): (usize, Vec<(&Sid, u32)>) = match class {
        1 => (0, vec![(&t.user, 0)]),
        2 => (8, t.groups.iter().map(|(s, a)| (s, *a)).collect()),
        _ => return STATUS_INVALID_INFO_CLASS,
    };
    let sids_at = head + 16 * entries.len();
    let need = sids_at + entries.iter().map(|(s, _)| s.0.len()).sum::<usize>();
    // SAFETY: the caller's out parameter.
    unsafe { *ret = need as u32 };
    if (len as usize) < need {
        return STATUS_BUFFER_TOO_SMALL;
    }
    let base = info as usize;
    let mut buf = vec![0u8; need];
    if class == 2 {
        buf[..4].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    }
    let mut at = sids_at;
    for (i, (sid, attr)) in entries.iter().enumerate() {
        let e = head + 16 * i;
        buf[e..e + 8].copy_from_slice(&((base + at) as u64).to_le_bytes());
        buf[e + 8..e + 12].copy_from_slice(&attr.to_le_bytes());
        buf[at..at + sid.0.len()].copy_from_slice(&sid.0);
        at += sid.0.len();
    }
    // SAFETY: the caller's buffer holds `len` >= `need` bytes.
    unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), info as *mut u8, need) };
    0
}

// ---------------------------------------------------------------- security descriptors

/// Reads a SID at `p` (bounded).
///
/// # Safety
/// `p` points at a SID.
unsafe fn read_sid(p: *const u8) -> Option<Sid> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's contract; a SID's length comes from its second byte.
    unsafe {
        if *p != 1 || *p.add(1) > 15 {
            return None;
        }
        let n = 8 + 4 * *p.add(1) as usize;
        Some(Sid(std::slice::from_raw_parts(p, n).to_vec()))
    }
}

/// The file objects' generic mapping (GENERIC_READ -> FILE_GENERIC_READ,
/// ...; "File Security and Access Rights", Win32 docs), applied to ACE
/// masks when a descriptor is set, as the object manager does.
pub fn map_generic(mut m: u32) -> u32 {
    const GENERIC_READ: u32 = 0x8000_0000;
    const GENERIC_WRITE: u32 = 0x4000_0000;
    const GENERIC_EXECUTE: u32 = 0x2000_0000;
    const GENERIC_ALL: u32 = 0x1000_0000;
    let mut out = m & 0x0FFF_FFFF;
    if m & GENERIC_READ != 0 {
        out |= 0x0012_0089;
    }
    if m & GENERIC_WRITE != 0 {
        out |= 0x0012_0116;
    }
    if m & GENERIC_EXECUTE != 0 {
        out |= 0x0012_00A0;
    }
    if m & GENERIC_ALL != 0 {
        out |= 0x001F_01FF;
    }
    m = out;
    m
}

/// Parses an ACL.
///
/// # Safety
/// `acl` points at an ACL of AclSize bytes.
unsafe fn read_acl(acl: *const u8) -> Option<Vec<Ace>> {
    // SAFETY: the caller's contract; every ACE is bounded by AclSize.
    unsafe {
        let size = u16::from_le_bytes([*acl.add(2), *acl.add(3)]) as usize;
        let count = u16::from_le_bytes([*acl.add(4), *acl.add(5)]) as usize;
        let mut at = 8;
        let mut v = Vec::new();
        for _ in 0..count {
            if at + 8 > size {
                return None;
            }
            let p = acl.add(at);
            let ace_size = u16::from_le_bytes([*p.add(2), *p.add(3)]) as usize;
            if ace_size < 12 || at + ace_size > size {
                return None;
            }
            let mask = u32::from_le_bytes(std::slice::from_raw_parts(p.add(4), 4).try_into().ok()?);
            let sid = read_sid(p.add(8))?;
            v.push(Ace {
                kind: *p,
                flags: *p.add(1),
                mask: map_generic(mask),
                sid,
            });
            at += ace_size;
        }
        Some(v)
    }
}

const SE_DACL_PRESENT: u16 = 0x4;
const SE_DACL_PROTECTED: u16 = 0x1000;
const SE_SELF_RELATIVE: u16 = 0x8000;
const DACL_SECURITY_INFORMATION: u32 = 0x4;
const PROTECTED_DACL_SECURITY_INFORMATION: u32 = 0x8000_0000;

/// RtlCreateSecurityDescriptor: any IRQL; an absolute descriptor (40 bytes on x64).
pub unsafe extern "win64" fn RtlCreateSecurityDescriptor(
    sd: *mut c_void,
    revision: u32,
) -> NTSTATUS {
    if revision != 1 {
        return STATUS_UNKNOWN_REVISION;
    }
    // SAFETY: the caller's SECURITY_DESCRIPTOR (40 bytes).
    unsafe {
        std::ptr::write_bytes(sd as *mut u8, 0, SD_ABSOLUTE_LEN);
        *(sd as *mut u8) = 1;
    }
    0
}

/// RtlCreateAcl: any IRQL. ACL_REVISION (2) or ACL_REVISION_DS (4).
pub unsafe extern "win64" fn RtlCreateAcl(acl: *mut c_void, len: u32, revision: u32) -> NTSTATUS {
    if !(2..=4).contains(&revision) {
        return STATUS_INVALID_PARAMETER;
    }
    if len < 8 {
        return STATUS_BUFFER_TOO_SMALL;
    }
    if len > 0xFFFF {
        return STATUS_INVALID_PARAMETER;
    }
    let a = acl as *mut u8;
    // SAFETY: the caller's buffer of `len` >= 8 bytes.
    unsafe {
        std::ptr::write_bytes(a, 0, 8);
        *a = revision as u8;
        std::ptr::copy_nonoverlapping((len as u16 & !3).to_le_bytes().as_ptr(), a.add(2), 2);
    }
    0
}

/// RtlAddAccessAllowedAce: IRQL <= APC_LEVEL; appends an ACCESS_ALLOWED_ACE.
pub unsafe extern "win64" fn RtlAddAccessAllowedAce(
    acl: *mut c_void,
    _revision: u32,
    mask: u32,
    sid: *mut c_void,
) -> NTSTATUS {
    check_irql("RtlAddAccessAllowedAce", APC_LEVEL);
    // SAFETY: an ACL made by RtlCreateAcl and a SID of the caller's.
    unsafe {
        let a = acl as *mut u8;
        let Some(sid) = read_sid(sid as *const u8) else {
            return STATUS_INVALID_SID;
        };
        let size = u16::from_le_bytes([*a.add(2), *a.add(3)]) as usize;
        let count = u16::from_le_bytes([*a.add(4), *a.add(5)]) as usize;
        let mut at = 8;
        for _ in 0..count {
            if at + 4 > size {
                return STATUS_INVALID_ACL;
            }
            at += u16::from_le_bytes([*a.add(at + 2), *a.add(at + 3)]) as usize;
        }
        let ace = 8 + sid.0.len();
        if at + ace > size {
            return STATUS_ALLOTTED_SPACE_EXCEEDED;
        }
        let p = a.add(at);
        *p = 0;
        *p.add(1) = 0;
        std::ptr::copy_nonoverlapping((ace as u16).to_le_bytes().as_ptr(), p.add(2), 2);
        std::ptr::copy_nonoverlapping(mask.to_le_bytes().as_ptr(), p.add(4), 4);
        std::ptr::copy_nonoverlapping(sid.0.as_ptr(), p.add(8), sid.0.len());
        std::ptr::copy_nonoverlapping(((count + 1) as u16).to_le_bytes().as_ptr(), a.add(4), 2);
    }
    0
}

/// RtlSetDaclSecurityDescriptor: IRQL <= APC_LEVEL; absolute descriptors only.
pub unsafe extern "win64" fn RtlSetDaclSecurityDescriptor(
    sd: *mut c_void,
    present: u8,
    dacl: *mut c_void,
    defaulted: u8,
) -> NTSTATUS {
    check_irql("RtlSetDaclSecurityDescriptor", APC_LEVEL);
    let p = sd as *mut u8;
    // SAFETY: a descriptor made by RtlCreateSecurityDescriptor.
    unsafe {
        let mut control = u16::from_le_bytes([*p.add(2), *p.add(3)]);
        if control & SE_SELF_RELATIVE != 0 {
            return STATUS_INVALID_SECURITY_DESCR;
        }
        control &= !(SE_DACL_PRESENT | 0x8);
        if present != 0 {
            control |= SE_DACL_PRESENT;
            if defaulted != 0 {
                control |= 0x8;
            }
        }
        std::ptr::copy_nonoverlapping(control.to_le_bytes().as_ptr(), p.add(2), 2);
        *(p.add(SD_DACL_OFFSET) as *mut usize) = if present != 0 { dacl as usize } else { 0 };
    }
    0
}

/// Reads a security descriptor (absolute or self-relative).
///
/// # Safety
/// `sd` points at a valid descriptor.
unsafe fn read_sd(sd: *const u8) -> Option<Security> {
    // SAFETY: the caller's contract.
    unsafe {
        if *sd != 1 {
            return None;
        }
        let control = u16::from_le_bytes([*sd.add(2), *sd.add(3)]);
        let protected = control & SE_DACL_PROTECTED != 0;
        if control & SE_DACL_PRESENT == 0 {
            return Some(Security {
                dacl: None,
                protected,
            });
        }
        let acl = if control & SE_SELF_RELATIVE != 0 {
            let off = u32::from_le_bytes(std::slice::from_raw_parts(sd.add(16), 4).try_into().ok()?)
                as usize;
            if off == 0 {
                std::ptr::null()
            } else {
                sd.add(off)
            }
        } else {
            *(sd.add(SD_DACL_OFFSET) as *const usize) as *const u8
        };
        if acl.is_null() {
            return Some(Security {
                dacl: None,
                protected,
            });
        }
        Some(Security {
            dacl: Some(read_acl(acl)?),
            protected,
        })
    }
}

/// ZwSetSecurityObject: IRQL == PASSIVE_LEVEL; the handle needs WRITE_DAC
/// to set a DACL (ntifs.h docs).
pub unsafe extern "win64" fn ZwSetSecurityObject(h: usize, info: u32, sd: *mut c_void) -> NTSTATUS {
    check_irql("ZwSetSecurityObject", PASSIVE_LEVEL);
    let (ptr, access) = match state().handles.get(&h) {
        Some(KHandle::Object { ptr, access }) => (*ptr, *access),
        _ => return STATUS_INVALID_HANDLE,
    };
    if info & DACL_SECURITY_INFORMATION == 0 {
        return STATUS_INVALID_PARAMETER;
    }
    if access & WRITE_DAC == 0 {
        return STATUS_ACCESS_DENIED;
    }
    // SAFETY: the caller's descriptor.
    let Some(mut sec) = (unsafe { read_sd(sd as *const u8) }) else {
        return STATUS_INVALID_SECURITY_DESCR;
    };
    if info & PROTECTED_DACL_SECURITY_INFORMATION != 0 {
        sec.protected = true;
    }
    state().security.insert(ptr, sec);
    0
}

/// ZwQuerySecurityObject: IRQL == PASSIVE_LEVEL; a self-relative descriptor
/// with the DACL; too small a buffer: STATUS_BUFFER_TOO_SMALL and the length needed.
pub unsafe extern "win64" fn ZwQuerySecurityObject(
    h: usize,
    info: u32,
    sd: *mut c_void,
    len: u32,
    needed: *mut u32,
) -> NTSTATUS {
    check_irql("ZwQuerySecurityObject", PASSIVE_LEVEL);
    let s = state();
    let (ptr, access) = match s.handles.get(&h) {
        Some(KHandle::Object { ptr, access }) => (*ptr, *access),
        _ => return STATUS_INVALID_HANDLE,
    };
    if access & READ_CONTROL == 0 {
        return STATUS_ACCESS_DENIED;
    }
    let sec = s.security.get(&ptr).cloned().unwrap_or_default();
    drop(s);
    let bytes = self_relative(&sec, info & DACL_SECURITY_INFORMATION != 0);
    // SAFETY: the caller's out parameter.
    unsafe { *needed = bytes.len() as u32 };
    if (len as usize) < bytes.len() {
        return STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: the caller's buffer holds `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), sd as *mut u8, bytes.len()) };
    0
}

/// A self-relative descriptor: 20-byte header, then the DACL.
pub fn self_relative(sec: &Security, with_dacl: bool) -> Vec<u8> {
    let mut control = SE_SELF_RELATIVE;
    let mut acl = Vec::new();
    if with_dacl {
        if let Some(aces) = &sec.dacl {
            control |= SE_DACL_PRESENT;
            if sec.protected {
                control |= SE_DACL_PROTECTED;
            }
            let size = 8 + aces.iter().map(|a| 8 + a.sid.0.len()).sum::<usize>();
            acl.extend_from_slice(&[2, 0]);
            acl.extend_from_slice(&(size as u16).to_le_bytes());
            acl.extend_from_slice(&(aces.len() as u16).to_le_bytes());
            acl.extend_from_slice(&[0, 0]);
            for a in aces {
                acl.extend_from_slice(&[a.kind, a.flags]);
                acl.extend_from_slice(&((8 + a.sid.0.len()) as u16).to_le_bytes());
                acl.extend_from_slice(&a.mask.to_le_bytes());
                acl.extend_from_slice(&a.sid.0);
            }
        }
    }
    let mut v = vec![1, 0];
    v.extend_from_slice(&control.to_le_bytes());
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(&(if acl.is_empty() { 0u32 } else { 20 }).to_le_bytes());
    v.extend_from_slice(&acl);
    v
}

// ---------------------------------------------------------------- registry

/// ZwOpenKey: IRQL == PASSIVE_LEVEL; a missing key is STATUS_OBJECT_NAME_NOT_FOUND.
pub unsafe extern "win64" fn ZwOpenKey(
    key: *mut usize,
    _access: u32,
    oa: *mut OBJECT_ATTRIBUTES,
) -> NTSTATUS {
    check_irql("ZwOpenKey", PASSIVE_LEVEL);
    // SAFETY: the caller's OBJECT_ATTRIBUTES with a counted name.
    let name = unsafe { ustr((*oa).ObjectName) }.to_lowercase();
    let mut s = state();
    if !s.registry.contains_key(&name) {
        return STATUS_OBJECT_NAME_NOT_FOUND;
    }
    let h = s.new_handle(KHandle::Key(name));
    // SAFETY: the caller's out parameter.
    unsafe { *key = h };
    0
}

/// ZwQueryValueKey, KeyValuePartialInformation (2): IRQL == PASSIVE_LEVEL.
/// Shorter than the header: STATUS_BUFFER_TOO_SMALL; than the data:
/// STATUS_BUFFER_OVERFLOW with the header filled (the page's table).
pub unsafe extern "win64" fn ZwQueryValueKey(
    key: usize,
    name: *mut UNICODE_STRING,
    class: i32,
    info: *mut c_void,
    len: u32,
    ret: *mut u32,
) -> NTSTATUS {
    check_irql("ZwQueryValueKey", PASSIVE_LEVEL);
    let s = state();
    let Some(KHandle::Key(path)) = s.handles.get(&key) else {
        return STATUS_INVALID_HANDLE;
    };
    if class != 2 {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the caller's counted name.
    let vname = unsafe { ustr(name) }.to_lowercase();
    let Some(v) = s.registry.get(path).and_then(|k| k.get(&vname)).cloned() else {
        return STATUS_OBJECT_NAME_NOT_FOUND;
    };
    drop(s);
    let (ty, data): (u32, Vec<u8>) = match v {
        RegValue::Dword(d) => (4, d.to_le_bytes().to_vec()),
        RegValue::Sz(t) => (
            1,
            t.encode_utf16()
                .chain([0])
                .flat_map(|u| u.to_le_bytes())
                .collect(),
        ),
        RegValue::Binary(t, b) => (t, b),
    };
    let need = 12 + data.len();
    // SAFETY: the caller's out parameter.
    unsafe { *ret = need as u32 };
    if len < 12 {
        return STATUS_BUFFER_TOO_SMALL;
    }
    let p = info as *mut u8;
    // SAFETY: `len` >= 12 bytes of the caller's buffer; data copied only when it fits.
    unsafe {
        std::ptr::write_bytes(p, 0, 4);
        std::ptr::copy_nonoverlapping(ty.to_le_bytes().as_ptr(), p.add(4), 4);
        std::ptr::copy_nonoverlapping((data.len() as u32).to_le_bytes().as_ptr(), p.add(8), 4);
        if (len as usize) < need {
            return STATUS_BUFFER_OVERFLOW;
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(12), data.len());
    }
    0
}

// ---------------------------------------------------------------- error log

/// ERROR_LOG_LIMIT_SIZE (wdm.h): on x64, ERROR_LOG_MAXIMUM_SIZE equals it.
pub const ERROR_LOG_MAXIMUM_SIZE: usize = 240;

/// IoAllocateErrorLogEntry: IRQL <= DISPATCH_LEVEL; NULL for a size over
/// ERROR_LOG_MAXIMUM_SIZE; the entry is zeroed.
pub unsafe extern "win64" fn IoAllocateErrorLogEntry(
    io_object: *mut c_void,
    size: u8,
) -> *mut c_void {
    check_irql("IoAllocateErrorLogEntry", DISPATCH_LEVEL);
    if size as usize > ERROR_LOG_MAXIMUM_SIZE
        || (size as usize) < std::mem::size_of::<IoErrorLogPacketHead>()
    {
        return std::ptr::null_mut();
    }
    let b = vec![0u8; size as usize].into_boxed_slice();
    let p = Box::into_raw(b) as *mut u8;
    state()
        .errlog_pending
        .insert(p as usize, size as usize | (io_object as usize) << 8);
    p.cast()
}

/// The fixed part of IO_ERROR_LOG_PACKET (windows-sys's layout, checked in layout.rs).
pub type IoErrorLogPacketHead = windows_sys::Wdk::System::SystemServices::IO_ERROR_LOG_PACKET;

/// IoWriteErrorLogEntry: IRQL <= DISPATCH_LEVEL; the entry is the I/O
/// manager's afterwards (freed here), recorded decoded for tests.
pub unsafe extern "win64" fn IoWriteErrorLogEntry(entry: *mut c_void) {
    check_irql("IoWriteErrorLogEntry", DISPATCH_LEVEL);
    let Some(v) = state().errlog_pending.remove(&(entry as usize)) else {
        bugcheck("DRIVER_VERIFIER_DETECTED_VIOLATION", 0xC4, [0, entry as usize, 0, 0], "IoWriteErrorLogEntry of an entry IoAllocateErrorLogEntry did not return (or written twice)");
    };
    let (size, io_object) = (v & 0xff, v >> 8);
    // SAFETY: the box of `size` bytes made by IoAllocateErrorLogEntry.
    let raw = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(entry as *mut u8, size)) }
        .to_vec();
    // SAFETY: `raw` holds at least the packet head (checked at allocation).
    let h = unsafe { std::ptr::read_unaligned(raw.as_ptr() as *const IoErrorLogPacketHead) };
    let dump_at = std::mem::offset_of!(IoErrorLogPacketHead, DumpData);
    let dump: Vec<u32> = raw[dump_at..(dump_at + h.DumpDataSize as usize).min(size)]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut strings = Vec::new();
    let mut at = h.StringOffset as usize;
    for _ in 0..h.NumberOfStrings {
        let mut u = Vec::new();
        while at + 1 < size {
            let c = u16::from_le_bytes([raw[at], raw[at + 1]]);
            at += 2;
            if c == 0 {
                break;
            }
            u.push(c);
        }
        strings.push(String::from_utf16_lossy(&u));
    }
    state().eventlog.push(kernel::EventEntry {
        io_object,
        error_code: h.ErrorCode as u32,
        unique_error_value: h.UniqueErrorValue,
        final_status: h.FinalStatus,
        major_function: h.MajorFunctionCode,
        event_category: h.EventCategory,
        dump_data: dump,
        strings,
        raw,
    });
}

// ---------------------------------------------------------------- C runtime

pub unsafe extern "win64" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the C contract (non-overlapping, valid for n bytes); copy handles both.
    unsafe { std::ptr::copy(s, d, n) };
    d
}
pub unsafe extern "win64" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the C contract (valid for n bytes, may overlap).
    unsafe { std::ptr::copy(s, d, n) };
    d
}
pub unsafe extern "win64" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the C contract (valid for n bytes).
    unsafe { std::ptr::write_bytes(d, c as u8, n) };
    d
}
pub unsafe extern "win64" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the C contract (both valid for n bytes).
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// RtlInitUnicodeString: IRQL <= DISPATCH_LEVEL (for nonpaged strings).
pub unsafe extern "win64" fn RtlInitUnicodeString(u: *mut UNICODE_STRING, s: *const u16) {
    check_irql("RtlInitUnicodeString", DISPATCH_LEVEL);
    let mut n = 0;
    // SAFETY: a NUL-terminated string of the caller's (or NULL).
    unsafe {
        if !s.is_null() {
            while *s.add(n) != 0 {
                n += 1;
            }
        }
        (*u).Length = (n * 2) as u16;
        (*u).MaximumLength = if s.is_null() { 0 } else { (n * 2 + 2) as u16 };
        (*u).Buffer = s as *mut u16;
    }
}

// ---------------------------------------------------------------- the export table

/// Every ntoskrnl.exe export ntsim implements: name -> address.
pub fn exports() -> Vec<(&'static str, usize)> {
    macro_rules! f {
        ($($n:ident),* $(,)?) => { vec![$((stringify!($n), $n as *const () as usize)),*] };
    }
    let mut v = f![
        ExAllocatePoolWithTag,
        ExFreePoolWithTag,
        ExFreePool,
        KeInitializeSemaphore,
        KeReleaseSemaphore,
        KeReadStateSemaphore,
        KeInitializeEvent,
        KeSetEvent,
        KeWaitForSingleObject,
        KeEnterCriticalRegion,
        KeLeaveCriticalRegion,
        KeAcquireSpinLockRaiseToDpc,
        KeReleaseSpinLock,
        KeAcquireSpinLockAtDpcLevel,
        KeReleaseSpinLockFromDpcLevel,
        KeAcquireInStackQueuedSpinLock,
        KeReleaseInStackQueuedSpinLock,
        KeGetCurrentIrql,
        IoAcquireCancelSpinLock,
        IoReleaseCancelSpinLock,
        KeBugCheckEx,
        ObOpenObjectByPointer,
        ObfReferenceObject,
        ObfDereferenceObject,
        ZwClose,
        PsGetCurrentProcessId,
        IoGetCurrentProcess,
        ZwOpenProcessTokenEx,
        ZwQueryInformationToken,
        RtlCreateSecurityDescriptor,
        RtlCreateAcl,
        RtlAddAccessAllowedAce,
        RtlSetDaclSecurityDescriptor,
        ZwSetSecurityObject,
        ZwQuerySecurityObject,
        ZwOpenKey,
        ZwQueryValueKey,
        ZwOpenThreadTokenEx,
        ZwOpenThreadToken,
        ZwOpenProcessToken,
        ZwOpenProcess,
        ZwWaitForSingleObject,
        IoAllocateErrorLogEntry,
        IoWriteErrorLogEntry,
        memcpy,
        memmove,
        memset,
        memcmp,
        RtlInitUnicodeString,
    ];
    v.extend([
        (
            "PsGetCurrentProcess",
            IoGetCurrentProcess as *const () as usize,
        ),
        ("DbgPrint", ntsim_DbgPrint as *const () as usize),
        ("DbgPrintEx", ntsim_DbgPrintEx as *const () as usize),
        ("vDbgPrintEx", ntsim_vDbgPrintEx as *const () as usize),
        ("PsProcessType", &PS_PROCESS_TYPE as *const TypeVar as usize),
        (
            "SeTokenObjectType",
            &SE_TOKEN_OBJECT_TYPE as *const TypeVar as usize,
        ),
        (
            "IoDeviceObjectType",
            &IO_DEVICE_OBJECT_TYPE as *const TypeVar as usize,
        ),
        (
            "IoFileObjectType",
            &IO_FILE_OBJECT_TYPE as *const TypeVar as usize,
        ),
    ]);
    v.extend(crate::io::exports());
    v
}

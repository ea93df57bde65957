//! The one place that knows which DDK binding is in use.
//!
//! - Feature `wdk` (the default: a Windows host with the WDK, or
//!   `cargo xtask wdk-check` on Linux): Microsoft's `wdk-sys`, whose types and
//!   constants live at the crate root and functions in `ntddk`.
//! - Feature `mingw` (Linux, `cargo xtask wdm`): bindgen over the mingw-w64 DDK headers
//!   (`build.rs`), generated with the same naming settings as wdk-build
//!   (module-constant enums, `STATUS_*` typed `NTSTATUS`, `core` types). Every
//!   function is a raw-dylib import of `ntoskrnl.exe`.
//!
//! The rest of the driver names only what this module exports, so it compiles
//! on both paths alike. This module also holds what neither binding emits: the
//! DDK's inline helpers (`IoGetCurrentIrpStackLocation`, `IoMarkIrpPending`,
//! `IoSetCancelRoutine`, list macros...) and the deprecated pool allocator
//! declarations that wdk-sys blocklists.
#![allow(non_snake_case, dead_code)]

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

#[cfg(feature = "mingw")]
#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unused_imports,
    improper_ctypes,
    unnecessary_transmutes,
    clippy::all,
    // Generated declarations (extern blocks, types, constants, and
    // bindgen's bitfield accessors), not code to review: the contract of
    // each function is its DDK documentation.
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    clippy::multiple_unsafe_ops_per_block
)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/ddk_bindings.rs"));
}

#[cfg(feature = "mingw")]
pub use sys::*;

#[cfg(feature = "wdk")]
pub use wdk_sys::ntddk::*;
#[cfg(feature = "wdk")]
pub use wdk_sys::*;

// Enum module constants, re-exported flat so that the driver writes the C names.
pub use _DPFLTR_TYPE::DPFLTR_IHVDRIVER_ID;
pub use _FILE_INFORMATION_CLASS::{FileAllocationInformation, FileEndOfFileInformation, FilePositionInformation, FileStandardInformation};
pub use _KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation;
pub use _KWAIT_REASON::Executive;
pub use _MODE::KernelMode;
pub use _POOL_TYPE::{NonPagedPoolNx, PagedPool};
pub use _TOKEN_INFORMATION_CLASS::{TokenGroups, TokenImpersonationLevel, TokenUser};

// Declared here on both paths: wdk-sys blocklists the deprecated allocator
// (ExAllocatePool2 is not in Wine 8), and both must come from one place.
#[cfg(feature = "mingw")]
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    pub fn ExAllocatePoolWithTag(PoolType: POOL_TYPE, NumberOfBytes: SIZE_T, Tag: ULONG) -> PVOID;
    pub fn ExFreePoolWithTag(P: PVOID, Tag: ULONG);
}

#[cfg(feature = "wdk")]
unsafe extern "C" {
    pub fn ExAllocatePoolWithTag(PoolType: POOL_TYPE, NumberOfBytes: SIZE_T, Tag: ULONG) -> PVOID;
    pub fn ExFreePoolWithTag(P: PVOID, Tag: ULONG);
}

// The C runtime memory functions that LLVM emits calls to (memcpy, memset,
// memmove, memcmp) are not provided by compiler-builtins on the msvc target.
// ntoskrnl exports them (real Windows and Wine): on the mingw path the
// bindings declare them from <string.h> as raw-dylib imports of
// ntoskrnl.exe; on the wdk path the WDK's libraries provide them.

/// `NtCurrentThread()` / `ZwCurrentThread()`: the pseudo handle of the
/// current thread (a macro in the WDK headers, so no binding emits it).
pub fn nt_current_thread() -> HANDLE {
    -2isize as HANDLE
}

/// The compiler needs this symbol whenever floating point appears in a
/// kernel image (the CRT would normally define it).
#[cfg(feature = "mingw")]
#[unsafe(no_mangle)]
#[used]
pub static _fltused: i32 = 0;

/// `CTL_CODE`.
pub const fn CTL_CODE(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// `IoGetCurrentIrpStackLocation`.
///
/// # Safety
/// `irp` is a valid IRP owned by the caller.
#[inline]
pub unsafe fn IoGetCurrentIrpStackLocation(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: the caller guarantees a valid IRP; only a field address is taken.
    let p = unsafe { &raw const (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation };
    // SAFETY: while the I/O manager or a driver handles an IRP, this union
    // arm is its current stack location, a plain pointer.
    unsafe { p.read() }
}

/// `IoMarkIrpPending`.
///
/// # Safety
/// `irp` is a valid IRP owned by the caller's dispatch routine.
#[inline]
pub unsafe fn IoMarkIrpPending(irp: *mut IRP) {
    // SAFETY: a valid IRP owned by the caller (contract).
    let sl = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: the current stack location of a valid IRP is valid, and the
    // owner of the IRP may set its control flags.
    unsafe { (*sl).Control |= SL_PENDING_RETURNED as u8 };
}

/// A cancel routine, as the I/O manager calls it.
pub type CancelFn = unsafe extern "C" fn(*mut DEVICE_OBJECT, *mut IRP);

/// `IoSetCancelRoutine`: an interlocked exchange of `Irp->CancelRoutine`,
/// returning the previous routine (None when the I/O manager has already
/// taken it to cancel the IRP).
///
/// # Safety
/// `irp` is a valid IRP.
#[inline]
pub unsafe fn IoSetCancelRoutine(irp: *mut IRP, routine: Option<CancelFn>) -> Option<CancelFn> {
    let new = routine.map_or(core::ptr::null_mut(), |f| f as *mut c_void);
    // SAFETY: a field address of a valid IRP (contract); no reference is made.
    let field = unsafe { core::ptr::addr_of_mut!((*irp).CancelRoutine) } as *mut *mut c_void;
    // SAFETY: `CancelRoutine` is a pointer-sized, pointer-aligned field that
    // the I/O manager also accesses only with interlocked operations.
    let old = unsafe { AtomicPtr::from_ptr(field) }.swap(new, Ordering::AcqRel);
    if old.is_null() {
        None
    } else {
        // SAFETY: a non-null value in this field is always a cancel routine.
        Some(unsafe { core::mem::transmute::<*mut c_void, CancelFn>(old) })
    }
}

/// `IoCompleteRequest`.
///
/// # Safety
/// `irp` is a valid IRP owned by the caller, not referenced after this call.
#[inline]
pub unsafe fn IoCompleteRequest(irp: *mut IRP, boost: u32) {
    // SAFETY: forwarded contract.
    unsafe { IofCompleteRequest(irp, boost as _) }
}

/// The `LIST_ENTRY` inside an IRP that its current owner may use.
///
/// # Safety
/// `irp` is a valid IRP.
#[inline]
pub unsafe fn irp_list_entry(irp: *mut IRP) -> *mut LIST_ENTRY {
    // SAFETY: a field address of a valid IRP.
    unsafe { core::ptr::addr_of_mut!((*irp).Tail.Overlay.__bindgen_anon_2.ListEntry) }
}

/// `CONTAINING_RECORD(entry, IRP, Tail.Overlay.ListEntry)`.
///
/// # Safety
/// `entry` was obtained from [`irp_list_entry`].
#[inline]
pub unsafe fn irp_from_list_entry(entry: *mut LIST_ENTRY) -> *mut IRP {
    let off = core::mem::offset_of!(IRP, Tail.Overlay.__bindgen_anon_2.ListEntry);
    // SAFETY: the entry lives inside an IRP at this offset.
    unsafe { (entry as *mut u8).sub(off) as *mut IRP }
}

/// `InitializeListHead`.
///
/// # Safety
/// `head` is valid for writes.
#[inline]
pub unsafe fn InitializeListHead(head: *mut LIST_ENTRY) {
    // SAFETY: `head` is valid for writes (contract).
    unsafe { (*head).Flink = head };
    // SAFETY: as above.
    unsafe { (*head).Blink = head };
}

/// `IsListEmpty`.
///
/// # Safety
/// `head` is an initialised list head.
#[inline]
pub unsafe fn IsListEmpty(head: *const LIST_ENTRY) -> bool {
    // SAFETY: caller contract.
    unsafe { core::ptr::eq((*head).Flink, head) }
}

/// `InsertTailList`.
///
/// # Safety
/// `head` is an initialised list; `entry` is not on any list.
#[inline]
pub unsafe fn InsertTailList(head: *mut LIST_ENTRY, entry: *mut LIST_ENTRY) {
    // The DDK's algorithm. SAFETY (each step): `head` is an initialised
    // list, so it and its last entry are valid; `entry` is valid and free
    // (contract).
    // SAFETY: see above.
    let blink = unsafe { (*head).Blink };
    // SAFETY: see above.
    unsafe { (*entry).Flink = head };
    // SAFETY: see above.
    unsafe { (*entry).Blink = blink };
    // SAFETY: see above.
    unsafe { (*blink).Flink = entry };
    // SAFETY: see above.
    unsafe { (*head).Blink = entry };
}

/// `InsertHeadList`.
///
/// # Safety
/// `head` is an initialised list; `entry` is not on any list.
#[inline]
pub unsafe fn InsertHeadList(head: *mut LIST_ENTRY, entry: *mut LIST_ENTRY) {
    // SAFETY: an initialised head (contract).
    let first = unsafe { (*head).Flink };
    // SAFETY: inserting before the first entry (the head itself when the
    // list is empty) puts `entry` first.
    unsafe { InsertBefore(first, entry) }
}

/// Inserts `entry` before `next` (which is on a list, or is the head).
///
/// # Safety
/// `next` is on an initialised list; `entry` is not on any list.
#[inline]
pub unsafe fn InsertBefore(next: *mut LIST_ENTRY, entry: *mut LIST_ENTRY) {
    // SAFETY: inserting before `next` is inserting at the tail of a list whose head is `next`.
    unsafe { InsertTailList(next, entry) }
}

/// `RemoveEntryList`; leaves `entry` linked to itself, so that removing it
/// again is harmless (the cancel-routine race relies on this).
///
/// # Safety
/// `entry` is on a list or linked to itself.
#[inline]
pub unsafe fn RemoveEntryList(entry: *mut LIST_ENTRY) {
    // SAFETY (each step): `entry` is on a list or linked to itself
    // (contract), so it and its neighbours are valid.
    // SAFETY: see above.
    let flink = unsafe { (*entry).Flink };
    // SAFETY: see above.
    let blink = unsafe { (*entry).Blink };
    // SAFETY: see above.
    unsafe { (*blink).Flink = flink };
    // SAFETY: see above.
    unsafe { (*flink).Blink = blink };
    // SAFETY: see above; now unlinked, it becomes linked to itself.
    unsafe { InitializeListHead(entry) };
}

/// `RemoveHeadList`, or None when the list is empty.
///
/// # Safety
/// `head` is an initialised list.
#[inline]
pub unsafe fn RemoveHeadList(head: *mut LIST_ENTRY) -> Option<*mut LIST_ENTRY> {
    // SAFETY: an initialised list (contract).
    if unsafe { IsListEmpty(head) } {
        return None;
    }
    // SAFETY: as above.
    let first = unsafe { (*head).Flink };
    // SAFETY: not empty, so `first` is an entry on the list.
    unsafe { RemoveEntryList(first) };
    Some(first)
}

/// `KeInitializeSpinLock` (inline in the headers on x64).
///
/// # Safety
/// `lock` is valid for writes.
#[inline]
pub unsafe fn KeInitializeSpinLock(lock: *mut KSPIN_LOCK) {
    // SAFETY: caller contract.
    unsafe { *lock = 0 }
}

/// A counted UTF-16 string on the stack, for object and registry names.
pub struct WStr<const N: usize> {
    buf: [u16; N],
    len: usize,
}

impl<const N: usize> WStr<N> {
    pub const fn new() -> Self {
        WStr { buf: [0; N], len: 0 }
    }

    /// The string as a UNICODE_STRING that borrows `self` mutably for as
    /// long as the returned [`UStr`] lives, so the buffer it points to can
    /// neither move nor change meanwhile.
    pub fn unicode(&mut self) -> UStr<'_> {
        UStr {
            s: UNICODE_STRING {
                Length: (self.len * 2) as u16,
                MaximumLength: (N * 2) as u16,
                Buffer: self.buf.as_mut_ptr(),
            },
            _buf: core::marker::PhantomData,
        }
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.buf[..self.len]
    }
}

/// A UNICODE_STRING over a borrowed [`WStr`]'s buffer.
pub struct UStr<'a> {
    s: UNICODE_STRING,
    _buf: core::marker::PhantomData<&'a mut [u16]>,
}

impl UStr<'_> {
    /// The pointer a DDI takes; valid while `self` is.
    pub fn as_mut_ptr(&mut self) -> *mut UNICODE_STRING {
        &mut self.s
    }
}

impl<const N: usize> core::fmt::Write for WStr<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.encode_utf16() {
            // Keep one slot for a terminating NUL.
            if self.len + 1 >= N {
                return Err(core::fmt::Error);
            }
            self.buf[self.len] = c;
            self.len += 1;
        }
        Ok(())
    }
}

/// Layout facts the driver relies on, checked at compile time on both paths.
const _: () = {
    assert!(core::mem::size_of::<LIST_ENTRY>() == 16);
    assert!(core::mem::size_of::<UNICODE_STRING>() == 16);
    assert!(core::mem::size_of::<KSPIN_LOCK>() == 8);
    assert!(core::mem::size_of::<Option<CancelFn>>() == core::mem::size_of::<PDRIVER_CANCEL>());
};

/// `Irp->Tail.Overlay.DriverContext`: four pointers the current owner of a
/// queued IRP may use.
///
/// # Safety
/// `irp` is a valid IRP owned by the driver.
#[inline]
pub unsafe fn irp_driver_context(irp: *mut IRP) -> *mut [PVOID; 4] {
    // SAFETY: a field address of a valid IRP.
    unsafe { core::ptr::addr_of_mut!((*irp).Tail.Overlay.__bindgen_anon_1.__bindgen_anon_1.DriverContext) }
}

/// Sets `IoStatus` of an IRP.
///
/// # Safety
/// `irp` is a valid IRP owned by the driver.
#[inline]
pub unsafe fn set_io_status(irp: *mut IRP, status: NTSTATUS, information: usize) {
    // SAFETY: a valid IRP owned by the driver (contract); only a field
    // address is taken.
    let st = unsafe { &raw mut (*irp).IoStatus.__bindgen_anon_1.Status };
    // SAFETY: as above: the owner of the IRP writes its final status.
    unsafe { st.write(status) };
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.Information = information as _ };
}

/// `*PsProcessType`: the process object type.
///
/// ntoskrnl exports the variable `PsProcessType` (a POBJECT_TYPE). C reaches
/// it through the import slot, which is why the DDK declares it
/// `POBJECT_TYPE *` and code writes `*PsProcessType`. A raw-dylib import
/// binds the Rust static to the variable itself (dllimport), so the static's
/// value already is the POBJECT_TYPE. (Measured under Wine: dereferencing
/// once more gives STATUS_OBJECT_TYPE_MISMATCH.)
///
/// Both paths read it through such an import. The mingw bindings are all
/// raw-dylib (build.rs). wdk-sys declares the variable as a plain extern
/// static with no dllimport, so its `PsProcessType` names a symbol that no
/// import library defines (only `__imp_PsProcessType` exists: the link fails
/// with an undefined `PsProcessType`; windows-drivers-rs issue 338 is the
/// same for PsInitialSystemProcess). The wdk path therefore declares its own
/// raw-dylib import below and never touches wdk-sys's.
///
/// # Safety
/// Reads an exported kernel variable.
#[inline]
pub unsafe fn process_object_type() -> POBJECT_TYPE {
    #[cfg(feature = "mingw")]
    let p = core::ptr::addr_of!(PsProcessType).cast::<POBJECT_TYPE>();
    #[cfg(feature = "wdk")]
    let p = core::ptr::addr_of!(wdk_data::PS_PROCESS_TYPE);
    // SAFETY: on both paths the raw-dylib import is the variable itself
    // (see [`process_object_type`]), a POBJECT_TYPE that ntoskrnl sets
    // before any driver loads and never changes.
    unsafe { p.read() }
}

/// The kernel data exports the wdk path reads (see [`process_object_type`]).
#[cfg(feature = "wdk")]
mod wdk_data {
    use super::POBJECT_TYPE;

    #[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
    unsafe extern "C" {
        #[link_name = "PsProcessType"]
        pub static PS_PROCESS_TYPE: POBJECT_TYPE;
        #[link_name = "SeTokenObjectType"]
        pub static SE_TOKEN_OBJECT_TYPE: POBJECT_TYPE;
    }
}

/// `*SeTokenObjectType`: the token object type (ident.rs opens the create's
/// subject-context token by pointer). The same kind of data import as
/// `PsProcessType`, reached the same way on each path (see
/// [`process_object_type`]): on the wdk path through our own raw-dylib
/// import in `wdk_data`, never wdk-sys's plain extern static.
///
/// # Safety
/// Reads an exported kernel variable.
#[inline]
pub unsafe fn token_object_type() -> POBJECT_TYPE {
    #[cfg(feature = "mingw")]
    let p = core::ptr::addr_of!(SeTokenObjectType).cast::<POBJECT_TYPE>();
    #[cfg(feature = "wdk")]
    let p = core::ptr::addr_of!(wdk_data::SE_TOKEN_OBJECT_TYPE);
    // SAFETY: on both paths the raw-dylib import is the variable itself
    // (see [`process_object_type`]), a POBJECT_TYPE that ntoskrnl sets
    // before any driver loads and never changes.
    unsafe { p.read() }
}

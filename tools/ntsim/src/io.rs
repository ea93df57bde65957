//! The I/O manager: driver load and unload, device objects and symbolic
//! links, file objects, IRPs built with Microsoft's layouts and dispatched
//! on the calling thread, completion, cancellation, cleanup and close.
//!
//! Rules and their sources (Microsoft Learn unless marked ReactOS: the
//! titles below are pages under learn.microsoft.com/windows-hardware/drivers/,
//! in kernel/ (concepts, IRP_MJ_*), ddi/wdm/ (DDIs) and debugger/ (bug
//! checks); ReactOS
//! facts were read in reactos/reactos ntoskrnl/io/iomgr and
//! dll/win32/kernel32/client/file, never copied):
//! - Dispatch runs in the context of the calling thread for a top-level
//!   driver ("Dispatch Routine IRQL and Thread Context").
//! - IoCompleteRequest completes once; completing with a cancel routine set
//!   is CANCEL_STATE_IN_COMPLETED_IRP (0x48); a second completion is
//!   MULTIPLE_IRP_COMPLETE_REQUESTS (0x44) ("Bug Check 0x44", "Bug Check 0x48").
//! - A dispatch routine returning STATUS_PENDING must have called
//!   IoMarkIrpPending ("Completing IRPs" / "IoMarkIrpPending"); Driver
//!   Verifier reports it as DRIVER_VERIFIER_IOMANAGER_VIOLATION (0xC9).
//! - IoCancelIrp: under the cancel spin lock, set Irp->Cancel, exchange the
//!   cancel routine with NULL and call it with the lock held and
//!   Irp->CancelIrql set ("Canceling IRPs", "IoCancelIrp").
//! - IRP_MJ_CLEANUP when the last handle of a file object closes,
//!   IRP_MJ_CLOSE when its last reference goes ("IRP_MJ_CLEANUP",
//!   "IRP_MJ_CLOSE"); outstanding IRPs hold references, so CLOSE follows
//!   their completion.
//! - Opens of a device being initialised (DO_DEVICE_INITIALIZING) or whose
//!   driver is unloading fail with STATUS_NO_SUCH_DEVICE; an exclusive
//!   device with an open file fails with STATUS_ACCESS_DENIED (ReactOS
//!   IopCheckDeviceAndDriver; "DEVICE_OBJECT" Flags).
//! - FILE_DEVICE_SECURE_OPEN: the device's DACL applies to opens with a
//!   trailing name too; without it, only opens of the device itself are
//!   checked ("Controlling Device Namespace Access").
//! - DriverUnload runs only once no file object references the driver's
//!   devices (ReactOS IopUnloadDriver marks the devices unload-pending and
//!   IopCheckUnloadDriver unloads at the last dereference; "Unload Routine
//!   Environment").
//! - METHOD_BUFFERED: one system buffer of max(in, out) bytes, input copied
//!   in, Information bytes copied out on a non-error status ("Buffer
//!   Descriptions for I/O Control Codes"); the CTL_CODE's required access
//!   is checked against the handle before any IRP ("Defining I/O Control
//!   Codes": FILE_READ_ACCESS needs FILE_READ_DATA, FILE_WRITE_ACCESS
//!   FILE_WRITE_DATA).
//! - Synchronous file objects (FO_SYNCHRONOUS_IO): the I/O manager
//!   serialises their requests, supplies CurrentByteOffset when no offset
//!   is given, and serves FilePositionInformation itself (ReactOS
//!   NtQueryInformationFile/NtSetInformationFile; "FILE_POSITION_INFORMATION").

use crate::ddi::{self, NTSTATUS};
use crate::kernel::{self, bugcheck, Event, Process, PASSIVE_LEVEL};
use crate::layout::*;
use crate::pe::Image;
use crate::verifier as v;
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use windows_sys::Wdk::Foundation::{
    ACCESS_STATE, DEVICE_OBJECT, DRIVER_EXTENSION, DRIVER_OBJECT, FILE_OBJECT, IO_SECURITY_CONTEXT,
    IO_STACK_LOCATION, IRP,
};
use windows_sys::Win32::Foundation::UNICODE_STRING;

pub const STATUS_SUCCESS: NTSTATUS = 0;
pub const STATUS_PENDING: NTSTATUS = 0x103;
pub const STATUS_INVALID_DEVICE_REQUEST: NTSTATUS = 0xC000_0010u32 as i32;
pub const STATUS_NO_SUCH_DEVICE: NTSTATUS = 0xC000_000Eu32 as i32;
pub const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = 0xC000_0034u32 as i32;
pub const STATUS_OBJECT_NAME_COLLISION: NTSTATUS = 0xC000_0035u32 as i32;
pub const STATUS_ACCESS_DENIED: NTSTATUS = 0xC000_0022u32 as i32;
pub const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000Du32 as i32;
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = 0xC000_009Au32 as i32;
pub const STATUS_CANCELLED: NTSTATUS = 0xC000_0120u32 as i32;
pub const STATUS_INVALID_HANDLE: NTSTATUS = 0xC000_0008u32 as i32;
pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = 0xC000_0023u32 as i32;
pub const STATUS_INFO_LENGTH_MISMATCH: NTSTATUS = 0xC000_0004u32 as i32;

pub const IRP_MJ_CREATE: u8 = 0x00;
pub const IRP_MJ_CLOSE: u8 = 0x02;
pub const IRP_MJ_READ: u8 = 0x03;
pub const IRP_MJ_WRITE: u8 = 0x04;
pub const IRP_MJ_QUERY_INFORMATION: u8 = 0x05;
pub const IRP_MJ_SET_INFORMATION: u8 = 0x06;
pub const IRP_MJ_DEVICE_CONTROL: u8 = 0x0e;
pub const IRP_MJ_CLEANUP: u8 = 0x12;

const SL_PENDING_RETURNED: u8 = 0x01;
const DO_BUFFERED_IO: u32 = 0x4;
const DO_EXCLUSIVE: u32 = 0x8;
const DO_DIRECT_IO: u32 = 0x10;
const DO_DEVICE_INITIALIZING: u32 = 0x80;
pub const FO_SYNCHRONOUS_IO: u32 = 0x2;
const FILE_DEVICE_SECURE_OPEN: u32 = 0x100;
const IRP_BUFFERED_IO: u32 = 0x10;
const IRP_DEALLOCATE_BUFFER: u32 = 0x20;
const IRP_INPUT_OPERATION: u32 = 0x40;
const IRP_CREATE_OPERATION: u32 = 0x80;
const IRP_SYNCHRONOUS_API: u32 = 0x4;

pub const FILE_READ_DATA: u32 = 0x1;
pub const FILE_WRITE_DATA: u32 = 0x2;

/// The entry-point shapes of a driver (Microsoft x64 convention).
type DispatchFn = unsafe extern "win64" fn(*mut DEVICE_OBJECT, *mut IRP) -> NTSTATUS;
/// windows-sys's type of a MajorFunction slot (DRIVER_DISPATCH's function).
type SysDispatch = unsafe extern "system" fn(*const DEVICE_OBJECT, *mut IRP) -> NTSTATUS;
type CancelFn = unsafe extern "win64" fn(*mut DEVICE_OBJECT, *mut IRP);
type UnloadFn = unsafe extern "win64" fn(*mut DRIVER_OBJECT);
pub type EntryFn = unsafe extern "win64" fn(*mut DRIVER_OBJECT, *mut UNICODE_STRING) -> NTSTATUS;

fn nt_error(st: NTSTATUS) -> bool {
    (st as u32) >> 30 == 3
}

// ---------------------------------------------------------------- drivers

/// A loaded driver.
pub struct Driver {
    image: Mutex<Option<Image>>,
    pub object: *mut DRIVER_OBJECT,
    pub sha256: String,
    pub path: String,
    unload_pending: AtomicBool,
    unloaded: AtomicBool,
    /// DriverUnload's outcome once it ran (leftovers found, if any).
    pub unload_report: Mutex<Option<Vec<String>>>,
    _ext: Box<DRIVER_EXTENSION>,
    _names: (Vec<u16>, Vec<u16>),
}

// SAFETY: the driver object is shared with the driver, which synchronises its own use.
unsafe impl Send for Driver {}
// SAFETY: as above.
unsafe impl Sync for Driver {}

static DRIVER: Mutex<Option<Arc<Driver>>> = Mutex::new(None);

/// Why a load failed.
#[derive(Debug)]
pub enum LoadError {
    /// The image could not be loaded (bad PE, missing import...).
    Image(String),
    /// DriverEntry returned this status (leftovers were checked).
    Entry(NTSTATUS),
}

/// The default major function: IopInvalidDeviceRequest.
unsafe extern "win64" fn invalid_device_request(_d: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager's own IRP.
    unsafe {
        (*irp).IoStatus.Anonymous.Status = STATUS_INVALID_DEVICE_REQUEST;
        (*irp).IoStatus.Information = 0;
        IofCompleteRequest(irp, 0);
    }
    STATUS_INVALID_DEVICE_REQUEST
}

/// Resolves one import: ntoskrnl.exe exports only.
pub fn resolve(dll: &str, name: &str) -> Option<usize> {
    static TABLE: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    if !dll.eq_ignore_ascii_case("ntoskrnl.exe") {
        return None;
    }
    TABLE
        .get_or_init(|| ddi::exports().into_iter().collect())
        .get(name)
        .copied()
}

/// Loads the driver at `path` as service `service` (its key is
/// `\\Registry\\Machine\\System\\CurrentControlSet\\Services\\<service>`) and
/// runs DriverEntry in the System process.
pub fn load(path: &Path, service: &str) -> Result<Arc<Driver>, LoadError> {
    let image = crate::pe::load(path, &|d, n| resolve(d, n)).map_err(LoadError::Image)?;
    let entry = image.entry;
    let sha = image.sha256.clone();
    start(Some(image), entry, sha, path.display().to_string(), service)
}

/// Runs a driver whose DriverEntry is a function of this process (a driver
/// written against ntsim's DDIs with the Microsoft x64 convention: ntsim's
/// own tests, or a driver crate built for the host).
pub fn load_native(entry: EntryFn, service: &str) -> Result<Arc<Driver>, LoadError> {
    start(
        None,
        entry as usize,
        "(native)".into(),
        format!("(native {service})"),
        service,
    )
}

fn start(
    image: Option<Image>,
    entry: usize,
    sha256: String,
    path: String,
    service: &str,
) -> Result<Arc<Driver>, LoadError> {
    let name: Vec<u16> = format!("\\Driver\\{service}").encode_utf16().collect();
    let reg: Vec<u16> =
        format!("\\Registry\\Machine\\System\\CurrentControlSet\\Services\\{service}")
            .encode_utf16()
            .collect();
    let obj = Box::into_raw(Box::<DRIVER_OBJECT>::default());
    let mut ext = Box::<DRIVER_EXTENSION>::default();
    let (base, size) = image.as_ref().map_or((0, 0), |i| (i.base, i.size));
    kernel::IMAGE_BASE.store(base, Ordering::Relaxed);
    kernel::IMAGE_RANGE.store(size as u64, Ordering::Relaxed);
    kernel::install_fault_handler();
    v::report_at_exit();
    // SAFETY: our fresh driver object.
    unsafe {
        (*obj).Type = 4; // IO_TYPE_DRIVER
        (*obj).Size = std::mem::size_of::<DRIVER_OBJECT>() as i16;
        (*obj).DriverStart = base as *mut c_void;
        (*obj).DriverSize = size as u32;
        (*obj).DriverName = UNICODE_STRING {
            Length: (name.len() * 2) as u16,
            MaximumLength: (name.len() * 2) as u16,
            Buffer: name.as_ptr() as *mut u16,
        };
        ext.DriverObject = obj;
        (*obj).DriverExtension = &mut *ext;
        for f in (*obj).MajorFunction.iter_mut() {
            // SAFETY: same ABI on both sides; windows-sys types the slot `extern "system"`,
            // ntsim calls it as `extern "win64"` (see `dispatch_fn`).
            *f = Some(std::mem::transmute::<DispatchFn, SysDispatch>(
                invalid_device_request,
            ));
        }
    }
    let driver = Arc::new(Driver {
        sha256,
        path,
        image: Mutex::new(image),
        object: obj,
        unload_pending: false.into(),
        unloaded: false.into(),
        unload_report: Mutex::new(None),
        _ext: ext,
        _names: (name, reg.clone()),
    });
    *DRIVER.lock().unwrap() = Some(driver.clone());
    let mut ureg = UNICODE_STRING {
        Length: (reg.len() * 2) as u16,
        MaximumLength: (reg.len() * 2) as u16,
        Buffer: reg.as_ptr() as *mut u16,
    };
    let st = kernel::as_process(&kernel::system_process(), || {
        // SAFETY: the image's entry point is DriverEntry (the PE's
        // AddressOfEntryPoint, /ENTRY:DriverEntry), Microsoft x64 convention.
        let f: EntryFn = unsafe { std::mem::transmute::<usize, EntryFn>(entry) };
        // SAFETY: a valid driver object and registry path, at PASSIVE_LEVEL.
        let st = unsafe { f(obj, &mut ureg) };
        after_call("DriverEntry");
        st
    });
    if st < 0 {
        // A failed DriverEntry: the driver is unloaded without DriverUnload;
        // it must have deleted everything it made.
        let left = leftovers(&driver);
        if v::ENTRY_FAILED_CLEAN.test(!left.is_empty()) {
            v::ENTRY_FAILED_CLEAN.stop(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                0xC4,
                [0x62, st as usize, 0, 0],
                &format!("DriverEntry failed ({st:#x}) and left: {}", left.join("; ")),
            );
        }
        driver.unloaded.store(true, Ordering::SeqCst);
        *DRIVER.lock().unwrap() = None;
        return Err(LoadError::Entry(st));
    }
    Ok(driver)
}

/// The checks after the driver returns to the I/O manager (system service
/// exit): IRQL back at PASSIVE_LEVEL, no spin lock held, critical regions
/// balanced.
fn after_call(what: &str) {
    let irql = kernel::irql();
    if v::IRQL_RETURN.test(irql != PASSIVE_LEVEL) {
        v::IRQL_RETURN.stop(
            "IRQL_GT_ZERO_AT_SYSTEM_SERVICE",
            0x4A,
            [0, irql as usize, 0, 0],
            &format!("{what} returned at IRQL {irql}"),
        );
    }
    let held = kernel::held_locks();
    if v::SPIN_RETURN.test(!held.is_empty()) {
        v::SPIN_RETURN.stop(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            0xC4,
            [0x3F, held[0], 0, 0],
            &format!("{what} returned holding {} spin lock(s)", held.len()),
        );
    }
    let c = kernel::critical_depth();
    if v::CRITICAL_REGION.test(c != 0) {
        v::CRITICAL_REGION.stop(
            "APC_INDEX_MISMATCH",
            0x1,
            [0, c as usize, 0, 0],
            &format!("{what} returned inside {c} unbalanced critical region(s)"),
        );
    }
}

/// What is left of a driver: device objects, links to them, pool blocks, IRPs.
fn leftovers(d: &Driver) -> Vec<String> {
    let mut v = Vec::new();
    // SAFETY: the driver object lives as long as `d`.
    let first = unsafe { (*d.object).DeviceObject };
    if !first.is_null() {
        v.push("device objects still exist".into());
    }
    let s = kernel::state();
    if !s.devices.is_empty() {
        v.push(format!(
            "devices: {}",
            s.devices.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if !s.links.is_empty() {
        v.push(format!(
            "symbolic links: {}",
            s.links.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if !s.pool.is_empty() {
        let mut per: std::collections::BTreeMap<String, usize> = Default::default();
        for (t, ..) in s.pool.values() {
            *per.entry(kernel::tag_str(*t)).or_default() += 1;
        }
        v.push(format!("pool blocks: {per:?}"));
    }
    if !s.handles.is_empty() {
        v.push(format!("{} kernel handle(s) open", s.handles.len()));
    }
    drop(s);
    let live = live_irps();
    if live > 0 {
        v.push(format!("{live} IRP(s) not completed"));
    }
    let open = OPEN_FILES.load(Ordering::SeqCst);
    if open > 0 {
        v.push(format!("{open} file object(s) still open on its devices"));
    }
    v
}

/// Asks for DriverUnload (`sc stop`, `net stop`). It runs now when no file
/// object references the driver's devices, else when the last one goes
/// (new opens then fail with STATUS_NO_SUCH_DEVICE). Returns whether it ran.
pub fn request_unload(d: &Arc<Driver>) -> bool {
    d.unload_pending.store(true, Ordering::SeqCst);
    maybe_unload(d)
}

fn maybe_unload(d: &Arc<Driver>) -> bool {
    if !d.unload_pending.load(Ordering::SeqCst) || OPEN_FILES.load(Ordering::SeqCst) != 0 {
        return false;
    }
    if d.unloaded.swap(true, Ordering::SeqCst) {
        return true;
    }
    // SAFETY: our driver object.
    let unload = unsafe { (*d.object).DriverUnload };
    if let Some(f) = unload {
        kernel::as_process(&kernel::system_process(), || {
            // SAFETY: the driver's unload routine (Microsoft x64 convention), at PASSIVE_LEVEL.
            let f: UnloadFn = unsafe {
                std::mem::transmute::<unsafe extern "system" fn(*const DRIVER_OBJECT), UnloadFn>(f)
            };
            // SAFETY: as above.
            unsafe { f(d.object) };
            after_call("DriverUnload");
        });
    }
    let left = leftovers(d);
    let pool = left.iter().find(|l| l.starts_with("pool blocks"));
    if v::POOL_UNLOAD.test(pool.is_some()) {
        let s = kernel::state();
        let (n, bytes) = (s.pool.len(), s.pool_bytes);
        drop(s);
        v::POOL_UNLOAD.stop(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            0xC4,
            [0x62, d.object as usize, n, bytes],
            &format!("the driver unloads without freeing its pool: {}", pool.unwrap()),
        );
    }
    if v::UNLOAD_PENDING.test(!left.is_empty()) {
        v::UNLOAD_PENDING.stop(
            "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS",
            0xCE,
            [d.object as usize, 0, 0, 0],
            &format!("after DriverUnload: {}", left.join("; ")),
        );
    }
    *d.unload_report.lock().unwrap() = Some(left);
    *d.image.lock().unwrap() = None;
    *DRIVER.lock().unwrap() = None;
    true
}

pub fn is_unloaded(d: &Driver) -> bool {
    d.unloaded.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------- devices and links

/// Per-device bookkeeping beside the DEVICE_OBJECT.
struct DevInfo {
    name: String,
    alloc: usize,
}

static DEVS: Mutex<Vec<(usize, DevInfo)>> = Mutex::new(Vec::new());
/// File objects open on any device (create succeeded, CLOSE not yet sent).
static OPEN_FILES: AtomicUsize = AtomicUsize::new(0);

/// A fault-injection and race hook on IoCreateDevice: called with the
/// call's number (1, 2, ... since the hook was set) and the device name
/// before the device is made; `Some(status)` fails the call with it.
pub type CreateDeviceHook = Arc<dyn Fn(usize, &str) -> Option<NTSTATUS> + Send + Sync>;

static CREATE_DEVICE_HOOK: Mutex<Option<CreateDeviceHook>> = Mutex::new(None);
static CREATE_DEVICE_CALLS: AtomicUsize = AtomicUsize::new(0);

pub fn set_create_device_hook(h: Option<CreateDeviceHook>) {
    CREATE_DEVICE_CALLS.store(0, Ordering::SeqCst);
    *CREATE_DEVICE_HOOK.lock().unwrap() = h;
}

/// IoCreateDevice: IRQL == PASSIVE_LEVEL. The device starts with
/// DO_DEVICE_INITIALIZING set; its zeroed extension follows the object.
pub unsafe extern "win64" fn IoCreateDevice(
    driver: *mut DRIVER_OBJECT,
    ext_size: u32,
    name: *mut UNICODE_STRING,
    dev_type: u32,
    characteristics: u32,
    exclusive: u8,
    out: *mut *mut DEVICE_OBJECT,
) -> NTSTATUS {
    kernel::check_irql("IoCreateDevice", PASSIVE_LEVEL);
    // SAFETY: NULL or the caller's counted name.
    let n = unsafe { ddi::ustr(name) };
    let call = CREATE_DEVICE_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    let hook = CREATE_DEVICE_HOOK.lock().unwrap().clone();
    if let Some(st) = hook.and_then(|h| h(call, &n)) {
        return st;
    }
    let key = n.to_lowercase();
    if !n.is_empty() && kernel::state().devices.contains_key(&key) {
        return STATUS_OBJECT_NAME_COLLISION;
    }
    let size = DEVICE_OBJECT_ALLOC + ext_size as usize;
    let layout = std::alloc::Layout::from_size_align(size, 16).unwrap();
    // SAFETY: a non-zero-sized layout.
    let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut DEVICE_OBJECT;
    if p.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: our fresh device object; the driver object is the caller's.
    unsafe {
        (*p).Type = 3; // IO_TYPE_DEVICE
        (*p).Size = (std::mem::size_of::<DEVICE_OBJECT>() + ext_size as usize) as u16;
        (*p).ReferenceCount = 0;
        (*p).DriverObject = driver;
        (*p).NextDevice = (*driver).DeviceObject;
        (*driver).DeviceObject = p;
        (*p).DeviceExtension = if ext_size > 0 {
            (p as *mut u8).add(DEVICE_OBJECT_ALLOC) as *mut c_void
        } else {
            std::ptr::null_mut()
        };
        (*p).DeviceType = dev_type;
        (*p).Characteristics = characteristics;
        (*p).Flags = DO_DEVICE_INITIALIZING | if exclusive != 0 { DO_EXCLUSIVE } else { 0 };
        (*p).StackSize = 1;
        *out = p;
    }
    let mut s = kernel::state();
    if !n.is_empty() {
        s.devices.insert(key, p as usize);
    }
    s.objects.insert(p as usize, kernel::Obj::Device);
    drop(s);
    DEVS.lock().unwrap().push((
        p as usize,
        DevInfo {
            name: n,
            alloc: size,
        },
    ));
    STATUS_SUCCESS
}

/// IoDeleteDevice: IRQL == PASSIVE_LEVEL. The name goes at once; the
/// memory when no file object references the device any more (here: at
/// the driver's unload, or now when none is open).
pub unsafe extern "win64" fn IoDeleteDevice(dev: *mut DEVICE_OBJECT) {
    kernel::check_irql("IoDeleteDevice", PASSIVE_LEVEL);
    let mut devs = DEVS.lock().unwrap();
    let Some(i) = devs.iter().position(|(p, _)| *p == dev as usize) else {
        drop(devs);
        v::OBJECT_KNOWN.stop(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            0xC4,
            [0, dev as usize, 0, 0],
            "IoDeleteDevice of an address that is no live device object",
        );
    };
    let (_, info) = devs.remove(i);
    drop(devs);
    let mut s = kernel::state();
    s.devices.remove(&info.name.to_lowercase());
    s.objects.remove(&(dev as usize));
    s.security.remove(&(dev as usize));
    drop(s);
    // SAFETY: a live device of ours; unlink it from its driver's list.
    unsafe {
        let drv = (*dev).DriverObject;
        let mut at: *mut *mut DEVICE_OBJECT = &mut (*drv).DeviceObject;
        while !(*at).is_null() {
            if *at == dev {
                *at = (*dev).NextDevice;
                break;
            }
            at = &mut (**at).NextDevice;
        }
        if (*dev).ReferenceCount == 0 {
            std::alloc::dealloc(
                dev as *mut u8,
                std::alloc::Layout::from_size_align(info.alloc, 16).unwrap(),
            );
        }
        // else: file objects still point at it; the memory stays (ntsim
        // leaks it rather than free under them, as Windows defers the free).
    }
}

/// IoCreateSymbolicLink: IRQL == PASSIVE_LEVEL.
pub unsafe extern "win64" fn IoCreateSymbolicLink(
    link: *mut UNICODE_STRING,
    target: *mut UNICODE_STRING,
) -> NTSTATUS {
    kernel::check_irql("IoCreateSymbolicLink", PASSIVE_LEVEL);
    // SAFETY: the caller's counted strings.
    let (l, t) = unsafe { (ddi::ustr(link), ddi::ustr(target)) };
    let key = normalise_link(&l);
    let mut s = kernel::state();
    if s.links.contains_key(&key) {
        return STATUS_OBJECT_NAME_COLLISION;
    }
    s.links.insert(key, t);
    STATUS_SUCCESS
}

/// IoDeleteSymbolicLink: IRQL == PASSIVE_LEVEL.
pub unsafe extern "win64" fn IoDeleteSymbolicLink(link: *mut UNICODE_STRING) -> NTSTATUS {
    kernel::check_irql("IoDeleteSymbolicLink", PASSIVE_LEVEL);
    // SAFETY: the caller's counted string.
    let l = unsafe { ddi::ustr(link) };
    match kernel::state().links.remove(&normalise_link(&l)) {
        Some(_) => STATUS_SUCCESS,
        None => STATUS_OBJECT_NAME_NOT_FOUND,
    }
}

/// `\DosDevices\X` and `\??\X` name the same directory (lower-cased key `\??\x`).
fn normalise_link(l: &str) -> String {
    let lower = l.to_lowercase();
    match lower.strip_prefix("\\dosdevices\\") {
        Some(rest) => format!("\\??\\{rest}"),
        None => lower,
    }
}

// ---------------------------------------------------------------- file objects

/// A file object and the I/O manager's state for it.
pub struct File {
    fo: *mut FILE_OBJECT,
    _name: Vec<u16>,
    pub device: *mut DEVICE_OBJECT,
    /// The access granted at open (after generic mapping).
    pub granted: u32,
    pub synchronous: bool,
    /// Serialises requests on a synchronous file object.
    serial: Mutex<()>,
    handles: AtomicUsize,
    refs: AtomicUsize,
    irps: Mutex<Vec<Arc<IrpCell>>>,
    pub process: Arc<Process>,
    closed: AtomicBool,
}

// SAFETY: the file object is shared with the driver and used under the I/O manager's rules.
unsafe impl Send for File {}
// SAFETY: as above.
unsafe impl Sync for File {}

impl File {
    pub fn file_object(&self) -> *mut FILE_OBJECT {
        self.fo
    }

    /// FileObject->CurrentByteOffset.
    pub fn position(&self) -> i64 {
        // SAFETY: our file object; the field is read whole.
        unsafe { std::ptr::read_volatile(&(*self.fo).CurrentByteOffset) }
    }

    pub fn set_position(&self, p: i64) {
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(&mut (*self.fo).CurrentByteOffset, p) }
    }

    /// Another handle to the same file object (DuplicateHandle).
    pub fn add_handle(self: &Arc<Self>) {
        self.handles.fetch_add(1, Ordering::SeqCst);
        self.refs.fetch_add(1, Ordering::SeqCst);
    }

    fn add_ref(&self) {
        self.refs.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops one reference; the last sends IRP_MJ_CLOSE.
    fn release(self: &Arc<Self>) {
        if self.refs.fetch_sub(1, Ordering::SeqCst) == 1 {
            if kernel::irql() == PASSIVE_LEVEL && !IN_DRIVER.with(|c| c.get()) {
                self.send_close();
            } else {
                // Completion at raised IRQL or inside a dispatch routine:
                // the final dereference runs in a worker, as Windows defers it.
                let f = self.clone();
                std::thread::spawn(move || f.send_close());
            }
        }
    }

    fn send_close(self: &Arc<Self>) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let (st, _) = self.call(IRP_MJ_CLOSE, |_, _| {}, Io::default());
        // IRP_MJ_CLOSE cannot fail ("IRP_MJ_CLOSE": the driver must complete it with success).
        if v::IO_CLEANUP_CLOSE.test(st < 0) {
            v::IO_CLEANUP_CLOSE.stop(
                "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                0xC9,
                [0, st as usize, 0, 0],
                &format!("IRP_MJ_CLOSE completed with {st:#x}"),
            );
        }
        // SAFETY: the device outlives its file objects (IoDeleteDevice defers the free).
        unsafe { (*self.device).ReferenceCount -= 1 };
        OPEN_FILES.fetch_sub(1, Ordering::SeqCst);
        let d = DRIVER.lock().unwrap().clone();
        if let Some(d) = d {
            maybe_unload(&d);
        }
    }

    /// CloseHandle's part: the last handle sends IRP_MJ_CLEANUP (on this
    /// thread), then the handle's reference goes.
    pub fn close_handle(self: &Arc<Self>) {
        if self.handles.fetch_sub(1, Ordering::SeqCst) == 1 {
            // IRPs pended before the cleanup: the driver must complete them
            // in IRP_MJ_CLEANUP ("IRP_MJ_CLEANUP").
            let pended: Vec<Arc<IrpCell>> = self
                .irps
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.pended.load(Ordering::SeqCst))
                .cloned()
                .collect();
            let (st, _) = self.call(IRP_MJ_CLEANUP, |_, _| {}, Io::default());
            let left = pended.iter().filter(|c| c.done.lock().unwrap().is_none()).count();
            if v::IO_CLEANUP_DRAIN.test(left > 0) {
                v::IO_CLEANUP_DRAIN.stop(
                    "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                    0xC9,
                    [0x24, self.fo as usize, left, 0],
                    &format!("IRP_MJ_CLEANUP completed with {left} IRP(s) of the file object still pending"),
                );
            }
            if v::IO_CLEANUP_CLOSE.test(st < 0) {
                v::IO_CLEANUP_CLOSE.stop(
                    "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                    0xC9,
                    [0, st as usize, 0, 0],
                    &format!("IRP_MJ_CLEANUP completed with {st:#x}"),
                );
            }
        }
        self.release();
    }
}

thread_local! {
    /// True while this thread runs a driver routine (dispatch, cancel).
    static IN_DRIVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The outcome of a create.
pub struct Opened {
    pub file: Arc<File>,
    /// IoStatus.Information: FILE_OPENED, FILE_OVERWRITTEN, ...
    pub information: usize,
}

/// Generic rights for files (see ddi::map_generic).
pub use ddi::map_generic;

/// Which NT path an open names: the device and the rest of the path.
fn resolve_path(path: &str) -> Option<(usize, String)> {
    let s = kernel::state();
    let mut p = path.to_string();
    // \??\X -> its link target, once (links to links are not followed).
    if p.to_lowercase().starts_with("\\??\\") || p.to_lowercase().starts_with("\\dosdevices\\") {
        let lower = normalise_link(&p);
        let (name, rest) = match lower[4..].find('\\') {
            Some(i) => (
                lower[..4 + i].to_string(),
                p[p.len() - (lower.len() - 4 - i)..].to_string(),
            ),
            None => (lower.clone(), String::new()),
        };
        let target = s.links.get(&name)?;
        p = format!("{target}{rest}");
    }
    let lower = p.to_lowercase();
    // The longest device name that is the whole path or followed by '\'.
    let mut best: Option<(usize, usize)> = None;
    for (name, &dev) in s.devices.iter() {
        let under = lower == *name
            || (lower.starts_with(name.as_str())
                && lower.as_bytes().get(name.len()) == Some(&b'\\'));
        if under && best.is_none_or(|(l, _)| name.len() > l) {
            best = Some((name.len(), dev));
        }
    }
    let (len, dev) = best?;
    Some((dev, p[len..].to_string()))
}

/// SeAccessCheck in miniature: the DACL's ACEs in order; an access-denied
/// ACE for any of the token's SIDs (deny-only groups included) denies the
/// bits it names that are not yet granted; access-allowed ACEs grant for
/// enabled SIDs. No DACL: everything. Returns the granted mask or None.
/// ("How DACLs Control Access to an Object", Win32 security docs.)
pub fn access_check(
    sec: Option<&kernel::Security>,
    token: &kernel::Token,
    desired: u32,
) -> Option<u32> {
    const MAXIMUM_ALLOWED: u32 = 0x0200_0000;
    let desired = map_generic(desired);
    let Some(aces) = sec.and_then(|s| s.dacl.as_ref()) else {
        return Some(if desired & MAXIMUM_ALLOWED != 0 {
            0x001F_01FF
        } else {
            desired
        });
    };
    let want = if desired & MAXIMUM_ALLOWED != 0 {
        0x001F_01FF
    } else {
        desired
    };
    let mut granted = 0u32;
    let mut denied = 0u32;
    for a in aces {
        match a.kind {
            0 if token.matches(&a.sid, false) => granted |= a.mask & !denied,
            1 if token.matches(&a.sid, true) => denied |= a.mask & !granted,
            _ => {}
        }
    }
    if desired & MAXIMUM_ALLOWED != 0 {
        let g = granted & want;
        return (g != 0 || desired & !MAXIMUM_ALLOWED == 0)
            .then_some(g | (desired & !MAXIMUM_ALLOWED));
    }
    (granted & want == want).then_some(want)
}

/// NtCreateFile's path for a device: resolve the name, check the device
/// and driver state, check access, build the file object and send
/// IRP_MJ_CREATE on this thread (waiting if the driver pends it).
pub fn create(
    path: &str,
    desired: u32,
    share: u32,
    disposition: u32,
    options: u32,
    attributes: u32,
) -> Result<Opened, NTSTATUS> {
    kernel::check_irql("NtCreateFile", PASSIVE_LEVEL);
    let Some((dev, rest)) = resolve_path(path) else {
        return Err(STATUS_OBJECT_NAME_NOT_FOUND);
    };
    let dev = dev as *mut DEVICE_OBJECT;
    let driver = DRIVER.lock().unwrap().clone();
    if driver
        .as_ref()
        .is_none_or(|d| d.unload_pending.load(Ordering::SeqCst))
    {
        return Err(STATUS_NO_SUCH_DEVICE);
    }
    // SAFETY: a live device (found in the namespace under the state lock just now).
    let (flags, chars, refs) =
        unsafe { ((*dev).Flags, (*dev).Characteristics, (*dev).ReferenceCount) };
    if flags & DO_DEVICE_INITIALIZING != 0 {
        return Err(STATUS_NO_SUCH_DEVICE);
    }
    if flags & DO_EXCLUSIVE != 0 && refs != 0 {
        return Err(STATUS_ACCESS_DENIED);
    }
    let process = kernel::current_process();
    let client = kernel::impersonation();
    let token = client.clone().unwrap_or_else(|| process.token.clone());
    let sec = kernel::state().security.get(&(dev as usize)).cloned();
    let check = rest.is_empty() || chars & FILE_DEVICE_SECURE_OPEN != 0;
    let granted = if check {
        access_check(sec.as_ref(), &token, desired).ok_or(STATUS_ACCESS_DENIED)?
    } else {
        map_generic(desired)
    };

    let name: Vec<u16> = rest.encode_utf16().collect();
    let fo = Box::into_raw(Box::<FILE_OBJECT>::default());
    // SAFETY: our fresh file object.
    unsafe {
        (*fo).Type = 5; // IO_TYPE_FILE
        (*fo).Size = std::mem::size_of::<FILE_OBJECT>() as i16;
        (*fo).DeviceObject = dev;
        (*fo).FileName = UNICODE_STRING {
            Length: (name.len() * 2) as u16,
            MaximumLength: (name.len() * 2) as u16,
            Buffer: if name.is_empty() {
                std::ptr::null_mut()
            } else {
                name.as_ptr() as *mut u16
            },
        };
        const FILE_SYNCHRONOUS_IO_ALERT: u32 = 0x10;
        const FILE_SYNCHRONOUS_IO_NONALERT: u32 = 0x20;
        if options & (FILE_SYNCHRONOUS_IO_ALERT | FILE_SYNCHRONOUS_IO_NONALERT) != 0 {
            (*fo).Flags |= FO_SYNCHRONOUS_IO;
        }
        (*dev).ReferenceCount += 1;
    }
    kernel::state()
        .objects
        .insert(fo as usize, kernel::Obj::Device);
    OPEN_FILES.fetch_add(1, Ordering::SeqCst);
    let file = Arc::new(File {
        fo,
        _name: name,
        device: dev,
        granted,
        // SAFETY: set just above.
        synchronous: unsafe { (*fo).Flags } & FO_SYNCHRONOUS_IO != 0,
        serial: Mutex::new(()),
        handles: AtomicUsize::new(1),
        refs: AtomicUsize::new(1),
        irps: Mutex::new(Vec::new()),
        process: process.clone(),
        closed: false.into(),
    });

    // The security context of the create ("IRP_MJ_CREATE": Parameters.Create.SecurityContext).
    let mut access_state = Box::<ACCESS_STATE>::default();
    access_state.OriginalDesiredAccess = desired;
    access_state.PreviouslyGrantedAccess = granted;
    access_state.RemainingDesiredAccess = 0;
    access_state.SubjectSecurityContext.ClientToken = client
        .as_ref()
        .map_or(std::ptr::null_mut(), |t| Arc::as_ptr(t) as *mut c_void);
    access_state.SubjectSecurityContext.ImpersonationLevel = if client.is_some() { 2 } else { 0 };
    access_state.SubjectSecurityContext.PrimaryToken = Arc::as_ptr(&process.token) as *mut c_void;
    {
        let mut s = kernel::state();
        s.objects.insert(
            Arc::as_ptr(&process.token) as usize,
            kernel::Obj::Token(process.token.clone()),
        );
        if let Some(c) = &client {
            s.objects
                .insert(Arc::as_ptr(c) as usize, kernel::Obj::Token(c.clone()));
        }
    }
    let mut sc = Box::new(IO_SECURITY_CONTEXT {
        SecurityQos: std::ptr::null_mut(),
        AccessState: &mut *access_state,
        DesiredAccess: desired,
        FullCreateOptions: options,
    });
    let scp: *mut IO_SECURITY_CONTEXT = &mut *sc;
    let (st, info) = file.call(
        IRP_MJ_CREATE,
        |irp, sl| {
            // SAFETY: the IRP and stack location being built.
            unsafe {
                (*irp).Flags = IRP_CREATE_OPERATION | IRP_SYNCHRONOUS_API;
                let p = params::<CreateParams>(sl);
                (*p).security_context = scp;
                (*p).options = (disposition << 24) | (options & 0x00FF_FFFF);
                (*p).file_attributes = attributes as u16;
                (*p).share_access = share as u16;
                (*p).ea_length = 0;
            }
        },
        Io::default(),
    );
    drop(sc);
    drop(access_state);
    if st < 0 {
        // A failed create: no CLEANUP or CLOSE is sent; the file object goes.
        file.closed.store(true, Ordering::SeqCst);
        // SAFETY: as above.
        unsafe { (*dev).ReferenceCount -= 1 };
        OPEN_FILES.fetch_sub(1, Ordering::SeqCst);
        let d = DRIVER.lock().unwrap().clone();
        if let Some(d) = d {
            maybe_unload(&d);
        }
        return Err(st);
    }
    Ok(Opened {
        file,
        information: info,
    })
}

// ---------------------------------------------------------------- IRPs

/// One IRP with its single stack location, as IoAllocateIrp lays them out
/// (the stack locations follow the IRP), plus ntsim's bookkeeping.
#[repr(C)]
struct IrpBox {
    irp: IRP,
    stack: IO_STACK_LOCATION,
}

/// Where completion delivers the result.
#[derive(Default)]
pub struct Io {
    /// Copy min(Information, len) bytes from the system buffer here on a non-error status.
    pub out: Option<(usize, usize)>,
    /// The caller's OVERLAPPED (Internal/InternalHigh written at completion).
    pub overlapped: usize,
    pub event: Option<Arc<Event>>,
    /// Do not wait for a pended IRP (overlapped handles).
    pub asynchronous: bool,
}

pub struct IrpCell {
    b: std::cell::UnsafeCell<IrpBox>,
    file: Arc<File>,
    io: Io,
    system_buffer: usize,
    system_len: usize,
    done: Mutex<Option<(NTSTATUS, usize)>>,
    cv: Condvar,
    /// The dispatch routine returned STATUS_PENDING.
    pended: AtomicBool,
    /// The IRP holds a reference to its file object, dropped at completion.
    /// An IRP_MJ_CREATE holds none: the opener's reference is the file's
    /// (IopCompleteRequest skips the dereference for a create), so a
    /// create completed on another thread cannot leave the file's last
    /// reference, and so its IRP_MJ_CLOSE, to that thread.
    file_ref: bool,
}

// SAFETY: the IRP is handed between threads under the I/O manager's rules.
unsafe impl Send for IrpCell {}
// SAFETY: as above.
unsafe impl Sync for IrpCell {}

impl IrpCell {
    fn irp(&self) -> *mut IRP {
        // SAFETY: the cell's IrpBox; IRP is its first field.
        unsafe { std::ptr::addr_of_mut!((*self.b.get()).irp) }
    }
    fn stack(&self) -> *mut IO_STACK_LOCATION {
        // SAFETY: as above.
        unsafe { std::ptr::addr_of_mut!((*self.b.get()).stack) }
    }
}

/// Live (not yet completed) IRPs by address.
static LIVE: Mutex<Option<HashMap<usize, Arc<IrpCell>>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashMap<usize, Arc<IrpCell>>>> {
    let mut g = LIVE.lock().unwrap();
    if g.is_none() {
        *g = Some(HashMap::new());
    }
    g
}

/// How a dispatched request ended.
pub enum Outcome {
    Done(NTSTATUS, usize),
    /// Pended on an asynchronous handle: completion reaches the Io's overlapped/event.
    Pending,
}

impl File {
    /// Builds an IRP for `major`, lets `setup` fill it, dispatches it on this
    /// thread and waits for its completion.
    fn call(
        self: &Arc<Self>,
        major: u8,
        setup: impl FnOnce(*mut IRP, *mut IO_STACK_LOCATION),
        io: Io,
    ) -> (NTSTATUS, usize) {
        match self.submit(major, 0, setup, io) {
            Outcome::Done(st, info) => (st, info),
            Outcome::Pending => unreachable!("a synchronous call cannot stay pending"),
        }
    }

    /// Builds and dispatches an IRP with a system buffer of `sysbuf` bytes
    /// (0: none). Waits unless `io.asynchronous`.
    pub fn submit(
        self: &Arc<Self>,
        major: u8,
        sysbuf: usize,
        setup: impl FnOnce(*mut IRP, *mut IO_STACK_LOCATION),
        io: Io,
    ) -> Outcome {
        let sb = if sysbuf > 0 {
            // SAFETY: the I/O manager's own pool allocation for the system buffer.
            let p = unsafe { ddi::ExAllocatePoolWithTag(512, sysbuf, u32::from_le_bytes(*b"IoSb")) }
                as usize;
            if p == 0 {
                return Outcome::Done(STATUS_INSUFFICIENT_RESOURCES, 0);
            }
            p
        } else {
            0
        };
        let asynchronous = io.asynchronous;
        // SAFETY: IRP and IO_STACK_LOCATION are plain data; all-zero is their initial state.
        let b: IrpBox = unsafe { std::mem::zeroed() };
        let cell = Arc::new(IrpCell {
            b: std::cell::UnsafeCell::new(b),
            file: self.clone(),
            io,
            system_buffer: sb,
            system_len: sysbuf,
            done: Mutex::new(None),
            cv: Condvar::new(),
            pended: false.into(),
            file_ref: major != IRP_MJ_CREATE,
        });
        let irp = cell.irp();
        let sl = cell.stack();
        // SAFETY: our fresh IRP (IoAllocateIrp(1) + IoGetNextIrpStackLocation + IoCallDriver's step).
        unsafe {
            (*irp).Type = 6; // IO_TYPE_IRP
            (*irp).Size =
                (std::mem::size_of::<IRP>() + std::mem::size_of::<IO_STACK_LOCATION>()) as u16;
            (*irp).StackCount = 1;
            (*irp).CurrentLocation = 1;
            (*irp).RequestorMode = 1; // UserMode
            (*irp).AssociatedIrp.SystemBuffer = sb as *mut c_void;
            (*irp)
                .Tail
                .Overlay
                .Anonymous2
                .Anonymous
                .CurrentStackLocation = sl;
            (*irp).Tail.Overlay.OriginalFileObject = self.fo;
            (*irp).Tail.Overlay.Thread = kernel::thread_id() as isize;
            (*sl).MajorFunction = major;
            (*sl).DeviceObject = self.device;
            (*sl).FileObject = self.fo;
        }
        setup(irp, sl);
        if cell.file_ref {
            self.add_ref();
        }
        live().as_mut().unwrap().insert(irp as usize, cell.clone());
        self.irps.lock().unwrap().push(cell.clone());
        REQUESTOR
            .lock()
            .unwrap()
            .insert(irp as usize, kernel::current_process());

        // SAFETY: the driver object of a loaded driver.
        let f = unsafe { (*(*self.device).DriverObject).MajorFunction[major as usize] };
        let f = dispatch_fn(f);
        kernel::check_irql("IoCallDriver", PASSIVE_LEVEL);
        let was = IN_DRIVER.with(|c| c.replace(true));
        let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
        MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
        // SAFETY: the driver's dispatch routine with its device and our IRP.
        let st = unsafe { f(self.device, irp) };
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        IN_DRIVER.with(|c| c.set(was));
        after_call(&format!("dispatch of IRP_MJ {major:#x}"));
        let done = *cell.done.lock().unwrap();
        if st == STATUS_PENDING {
            // SAFETY: the stack location stays valid (the cell is alive).
            let marked = unsafe { (*sl).Control } & SL_PENDING_RETURNED != 0;
            cell.pended.store(true, Ordering::SeqCst);
            if v::IO_PENDING.test(!marked) {
                v::IO_PENDING.stop(
                    "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                    0xC9,
                    [0x8, irp as usize, major as usize, 0],
                    "dispatch returned STATUS_PENDING without IoMarkIrpPending",
                );
            }
        } else {
            match done {
                None if v::IO_STATUS.test(true) => v::IO_STATUS.stop(
                    "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                    0xC9,
                    [0xE, irp as usize, st as usize, 0],
                    &format!("dispatch of IRP_MJ {major:#x} returned {st:#x} without completing the IRP (and not STATUS_PENDING)"),
                ),
                Some((cst, _)) if v::IO_STATUS.test(cst != st) => v::IO_STATUS.stop(
                    "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                    0xC9,
                    [0x228, irp as usize, st as usize, cst as usize],
                    &format!("dispatch of IRP_MJ {major:#x} returned {st:#x} but completed the IRP with {cst:#x}"),
                ),
                _ => {}
            }
        }
        if asynchronous && done.is_none() {
            return Outcome::Pending;
        }
        let mut g = cell.done.lock().unwrap();
        while g.is_none() {
            g = cell.cv.wait(g).unwrap();
        }
        let (st, info) = g.unwrap();
        Outcome::Done(st, info)
    }
}

/// Dispatch routines running now, and the most seen at once.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MAX_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The most dispatch routines that ran at the same time (on different
/// threads) since the last reset; resets it.
pub fn take_max_concurrent_dispatches() -> usize {
    MAX_IN_FLIGHT.swap(0, Ordering::SeqCst)
}

/// The requestor process of each live IRP (IoGetRequestorProcess).
static REQUESTOR: Mutex<Option<HashMap<usize, Arc<Process>>>> = Mutex::new(None);

trait ReqMap {
    fn insert(&mut self, k: usize, v: Arc<Process>);
}
impl ReqMap for std::sync::MutexGuard<'static, Option<HashMap<usize, Arc<Process>>>> {
    fn insert(&mut self, k: usize, v: Arc<Process>) {
        self.get_or_insert_with(HashMap::new).insert(k, v);
    }
}

/// windows-sys types MajorFunction slots `extern "system"` (SysV on Linux);
/// the driver's routines are Microsoft x64: call them through this type.
fn dispatch_fn(f: Option<SysDispatch>) -> DispatchFn {
    match f {
        // SAFETY: same size and argument types; only the calling convention
        // is restated, to the one the driver was compiled with.
        Some(f) => unsafe { std::mem::transmute::<SysDispatch, DispatchFn>(f) },
        None => invalid_device_request,
    }
}

/// IoGetRequestorProcess: IRQL <= DISPATCH_LEVEL.
pub unsafe extern "win64" fn IoGetRequestorProcess(irp: *mut IRP) -> *mut c_void {
    kernel::check_irql("IoGetRequestorProcess", 2);
    let g = REQUESTOR.lock().unwrap();
    g.as_ref()
        .and_then(|m| m.get(&(irp as usize)))
        .map_or(std::ptr::null_mut(), |p| Arc::as_ptr(p) as *mut c_void)
}

/// IofCompleteRequest: IRQL <= DISPATCH_LEVEL.
pub unsafe extern "win64" fn IofCompleteRequest(irp: *mut IRP, _boost: i8) {
    kernel::check_irql("IoCompleteRequest", 2);
    let cell = live().as_mut().unwrap().remove(&(irp as usize));
    if v::IO_COMPLETE_ONCE.test(cell.is_none()) {
        v::IO_COMPLETE_ONCE.stop(
            "MULTIPLE_IRP_COMPLETE_REQUESTS",
            0x44,
            [irp as usize, 0, 0, 0],
            "IoCompleteRequest of an IRP that is already completed (or no IRP)",
        );
    }
    let Some(cell) = cell else { return };
    // ntsim's rule, stricter than Windows': completion runs completion
    // routines and wakes waiters, so a driver completes after releasing
    // its spin locks (the cancel spin lock included).
    let held = kernel::held_locks();
    if v::IO_COMPLETE_UNLOCKED.test(!held.is_empty()) {
        v::IO_COMPLETE_UNLOCKED.stop(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            0xC9,
            [0x227, irp as usize, held[0], 0],
            &format!("IRP completed while holding {} spin lock(s)", held.len()),
        );
    }
    // SAFETY: a live IRP of ours.
    let (st, info, cancel) = unsafe {
        (
            (*irp).IoStatus.Anonymous.Status,
            (*irp).IoStatus.Information,
            (*irp).CancelRoutine,
        )
    };
    if v::IO_CANCEL_ROUTINE.test(cancel.is_some()) {
        v::IO_CANCEL_ROUTINE.stop(
            "CANCEL_STATE_IN_COMPLETED_IRP",
            0x48,
            [irp as usize, cancel.map_or(0, |f| f as usize), 0, 0],
            "IRP completed with its cancel routine still set",
        );
    }
    if v::IO_PENDING.test(st == STATUS_PENDING) {
        v::IO_PENDING.stop(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            0xC9,
            [0x1, irp as usize, 0, 0],
            "IRP completed with STATUS_PENDING",
        );
    }
    if v::IO_INFORMATION.test(cell.system_len > 0 && cell.io.out.is_some() && info > cell.system_len && !nt_error(st)) {
        v::IO_INFORMATION.stop(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            0xC9,
            [0x229, irp as usize, info, cell.system_len],
            "buffered I/O completed with Information larger than the buffer",
        );
    }
    // Buffered output: copied to the caller's buffer on a non-error status.
    if let Some((ubuf, ulen)) = cell.io.out {
        if !nt_error(st) && cell.system_buffer != 0 {
            let n = info.min(ulen).min(cell.system_len);
            // SAFETY: the caller's buffer of `ulen` bytes (the Win32 contract: valid until completion).
            unsafe {
                std::ptr::copy_nonoverlapping(cell.system_buffer as *const u8, ubuf as *mut u8, n)
            };
        }
    }
    if cell.system_buffer != 0 {
        // SAFETY: the system buffer allocated in `submit`.
        unsafe {
            ddi::ExFreePoolWithTag(
                cell.system_buffer as *mut c_void,
                u32::from_le_bytes(*b"IoSb"),
            )
        };
    }
    if cell.io.overlapped != 0 {
        let ov = cell.io.overlapped as *mut usize;
        // SAFETY: the caller's OVERLAPPED (Internal, InternalHigh first), alive until completion.
        unsafe {
            std::ptr::write_volatile(ov.add(1), info);
            std::ptr::write_volatile(ov, st as u32 as usize);
        }
    }
    cell.file
        .irps
        .lock()
        .unwrap()
        .retain(|c| !Arc::ptr_eq(c, &cell));
    if let Some(m) = REQUESTOR.lock().unwrap().as_mut() {
        m.remove(&(irp as usize));
    }
    {
        let mut g = cell.done.lock().unwrap();
        *g = Some((st, info));
        cell.cv.notify_all();
    }
    if let Some(e) = &cell.io.event {
        e.set();
    }
    if cell.file_ref {
        cell.file.release();
    }
}

/// IoCancelIrp, run on the calling thread: under the cancel spin lock.
pub fn cancel_irp(cell: &Arc<IrpCell>) -> bool {
    let irp = cell.irp();
    let mut old = 0u8;
    // SAFETY: our cancel lock; `old` receives the IRQL.
    unsafe { ddi::IoAcquireCancelSpinLock(&mut old) };
    // SAFETY: the IRP memory is alive (we hold its cell); the fields are the I/O manager's protocol.
    let routine = unsafe {
        (*irp).Cancel = true;
        let slot = std::ptr::addr_of_mut!((*irp).CancelRoutine) as *mut usize;
        AtomicUsize::from_ptr(slot).swap(0, Ordering::SeqCst)
    };
    if routine == 0 {
        // SAFETY: releases the lock taken above.
        unsafe { ddi::IoReleaseCancelSpinLock(old) };
        return false;
    }
    // SAFETY: as above.
    unsafe { (*irp).CancelIrql = old };
    // SAFETY: a cancel routine the driver set (Microsoft x64 convention).
    let f: CancelFn = unsafe { std::mem::transmute::<usize, CancelFn>(routine) };
    let was = IN_DRIVER.with(|c| c.replace(true));
    // SAFETY: the driver's routine with the IRP's device and the IRP, cancel lock held.
    unsafe { f((*cell.stack()).DeviceObject, irp) };
    IN_DRIVER.with(|c| c.set(was));
    if v::IO_CANCEL_LOCK.test(kernel::held_locks().contains(&(ddi::CANCEL_LOCK.as_ptr() as usize))) {
        v::IO_CANCEL_LOCK.stop(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            0xC9,
            [0x10, irp as usize, 0, 0],
            "the cancel routine returned without releasing the cancel spin lock",
        );
    }
    if v::IRQL_LOWER.test(kernel::irql() != old) {
        v::IRQL_LOWER.stop("IRQL_NOT_LESS_OR_EQUAL", 0xA, [0, kernel::irql() as usize, old as usize, 0], "the cancel routine did not restore the IRQL (IoReleaseCancelSpinLock(Irp->CancelIrql))");
    }
    true
}

impl File {
    /// CancelIoEx: cancels this file's outstanding IRPs (those issued with
    /// `overlapped` when non-zero). Returns how many were found.
    pub fn cancel(&self, overlapped: usize) -> usize {
        let list: Vec<Arc<IrpCell>> = self
            .irps
            .lock()
            .unwrap()
            .iter()
            .filter(|c| overlapped == 0 || c.io.overlapped == overlapped)
            .cloned()
            .collect();
        for c in &list {
            cancel_irp(c);
        }
        list.len()
    }

    /// The I/O of process `p` on this file (process exit cancels it).
    pub fn cancel_process(&self, p: &Arc<Process>) -> usize {
        let list: Vec<Arc<IrpCell>> = self.irps.lock().unwrap().iter().cloned().collect();
        let mut n = 0;
        for c in &list {
            let mine = REQUESTOR
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|m| m.get(&(c.irp() as usize)).cloned());
            if mine.is_some_and(|q| Arc::ptr_eq(&q, p)) {
                cancel_irp(c);
                n += 1;
            }
        }
        n
    }

    /// The lock that serialises a synchronous file object's requests.
    pub fn serialise(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        self.synchronous.then(|| self.serial.lock().unwrap())
    }

    /// IRP_MJ_READ / IRP_MJ_WRITE with `len` bytes at `offset`
    /// (Parameters.Read/Write.ByteOffset). Buffered devices get a system
    /// buffer; others the user buffer (METHOD_NEITHER-style).
    pub fn read_write(
        self: &Arc<Self>,
        write: bool,
        buf: usize,
        len: usize,
        offset: i64,
        mut io: Io,
    ) -> Outcome {
        // SAFETY: a live device.
        let dflags = unsafe { (*self.device).Flags };
        if dflags & DO_DIRECT_IO != 0 {
            bugcheck(
                "NTSIM_UNSUPPORTED",
                0,
                [0; 4],
                "DO_DIRECT_IO devices (MDLs) are not supported by ntsim",
            );
        }
        let buffered = dflags & DO_BUFFERED_IO != 0;
        let sys = if buffered { len } else { 0 };
        if buffered && !write {
            io.out = Some((buf, len));
        }
        let major = if write { IRP_MJ_WRITE } else { IRP_MJ_READ };
        self.submit(
            major,
            sys,
            |irp, sl| {
                // SAFETY: the IRP being built; `buf` holds `len` bytes (the caller's contract).
                unsafe {
                    if buffered && sys > 0 {
                        let sb = (*irp).AssociatedIrp.SystemBuffer as *mut u8;
                        if write {
                            std::ptr::copy_nonoverlapping(buf as *const u8, sb, len);
                        }
                        (*irp).Flags = IRP_BUFFERED_IO
                            | IRP_DEALLOCATE_BUFFER
                            | if write { 0 } else { IRP_INPUT_OPERATION };
                    }
                    (*irp).UserBuffer = buf as *mut c_void;
                    let p = params::<ReadWriteParams>(sl);
                    (*p).length = len as u32;
                    (*p).byte_offset = offset;
                }
            },
            io,
        )
    }

    /// IRP_MJ_DEVICE_CONTROL, METHOD_BUFFERED semantics for every method
    /// except METHOD_NEITHER (no MDLs: the direct methods get the output
    /// buffer as the system buffer's copy-out too, which a driver that maps
    /// MdlAddress would notice as NULL).
    pub fn ioctl(
        self: &Arc<Self>,
        code: u32,
        input: usize,
        in_len: usize,
        output: usize,
        out_len: usize,
        mut io: Io,
    ) -> Outcome {
        let method = code & 3;
        let sys = if method == 3 { 0 } else { in_len.max(out_len) };
        if method != 3 {
            io.out = Some((output, out_len));
        }
        self.submit(
            IRP_MJ_DEVICE_CONTROL,
            sys,
            |irp, sl| {
                // SAFETY: the IRP being built; the buffers hold their lengths.
                unsafe {
                    if sys > 0 {
                        let sb = (*irp).AssociatedIrp.SystemBuffer as *mut u8;
                        std::ptr::write_bytes(sb, 0, sys);
                        if in_len > 0 {
                            std::ptr::copy_nonoverlapping(input as *const u8, sb, in_len);
                        }
                        (*irp).Flags = IRP_BUFFERED_IO
                            | IRP_DEALLOCATE_BUFFER
                            | if out_len > 0 { IRP_INPUT_OPERATION } else { 0 };
                    }
                    (*irp).UserBuffer = output as *mut c_void;
                    let p = params::<IoctlParams>(sl);
                    (*p).output_length = out_len as u32;
                    (*p).input_length = in_len as u32;
                    (*p).code = code;
                    (*p).type3_input = if method == 3 {
                        input as *mut c_void
                    } else {
                        std::ptr::null_mut()
                    };
                }
            },
            io,
        )
    }

    /// IRP_MJ_QUERY_INFORMATION: `len` bytes of class `class` into `out`.
    pub fn query_information(
        self: &Arc<Self>,
        class: u32,
        out: usize,
        len: usize,
    ) -> (NTSTATUS, usize) {
        let io = Io {
            out: Some((out, len)),
            ..Default::default()
        };
        match self.submit(
            IRP_MJ_QUERY_INFORMATION,
            len,
            |irp, sl| {
                // SAFETY: the IRP being built.
                unsafe {
                    (*irp).Flags = IRP_BUFFERED_IO | IRP_DEALLOCATE_BUFFER | IRP_INPUT_OPERATION;
                    std::ptr::write_bytes((*irp).AssociatedIrp.SystemBuffer as *mut u8, 0, len);
                    let p = params::<QueryFileParams>(sl);
                    (*p).length = len as u32;
                    (*p).class = class;
                }
            },
            io,
        ) {
            Outcome::Done(st, i) => (st, i),
            Outcome::Pending => (STATUS_PENDING, 0),
        }
    }

    /// IRP_MJ_SET_INFORMATION with the record `data` of class `class`.
    pub fn set_information(self: &Arc<Self>, class: u32, data: &[u8]) -> NTSTATUS {
        let len = data.len();
        match self.submit(
            IRP_MJ_SET_INFORMATION,
            len,
            |irp, sl| {
                // SAFETY: the IRP being built; the system buffer holds `len` bytes.
                unsafe {
                    (*irp).Flags = IRP_BUFFERED_IO | IRP_DEALLOCATE_BUFFER;
                    std::ptr::copy_nonoverlapping(
                        data.as_ptr(),
                        (*irp).AssociatedIrp.SystemBuffer as *mut u8,
                        len,
                    );
                    let p = params::<SetFileParams>(sl);
                    (*p).length = len as u32;
                    (*p).class = class;
                    (*p).file_object = std::ptr::null_mut();
                }
            },
            Io::default(),
        ) {
            Outcome::Done(st, _) => st,
            Outcome::Pending => STATUS_PENDING,
        }
    }

    /// Outstanding IRPs of this file.
    pub fn outstanding(&self) -> usize {
        self.irps.lock().unwrap().len()
    }
}

/// IRPs not yet completed, in the whole kernel.
pub fn live_irps() -> usize {
    live().as_ref().map_or(0, |m| m.len())
}

/// IRPs not yet completed whose dispatch routine has returned
/// STATUS_PENDING (live ones may still be inside their dispatch).
pub fn pended_irps() -> usize {
    live().as_ref().map_or(0, |m| m.values().filter(|c| c.pended.load(Ordering::SeqCst)).count())
}

/// The loaded driver, if any.
pub fn driver() -> Option<Arc<Driver>> {
    DRIVER.lock().unwrap().clone()
}

/// The I/O manager's exports.
pub fn exports() -> Vec<(&'static str, usize)> {
    vec![
        ("IoCreateDevice", IoCreateDevice as *const () as usize),
        ("IoDeleteDevice", IoDeleteDevice as *const () as usize),
        (
            "IoCreateSymbolicLink",
            IoCreateSymbolicLink as *const () as usize,
        ),
        (
            "IoDeleteSymbolicLink",
            IoDeleteSymbolicLink as *const () as usize,
        ),
        (
            "IoGetRequestorProcess",
            IoGetRequestorProcess as *const () as usize,
        ),
        (
            "IofCompleteRequest",
            IofCompleteRequest as *const () as usize,
        ),
    ]
}

/// Cancels every IRP process `p` issued (what the process's exit does to
/// its outstanding I/O: IoCancelThreadIo for each of its threads).
pub fn cancel_process_io(p: &Arc<Process>) -> usize {
    let cells: Vec<Arc<IrpCell>> = {
        let req = REQUESTOR.lock().unwrap();
        let live = live();
        match (req.as_ref(), live.as_ref()) {
            (Some(req), Some(live)) => live
                .iter()
                .filter(|(irp, _)| req.get(irp).is_some_and(|q| Arc::ptr_eq(q, p)))
                .map(|(_, c)| c.clone())
                .collect(),
            _ => Vec::new(),
        }
    };
    for c in &cells {
        cancel_irp(c);
    }
    cells.len()
}

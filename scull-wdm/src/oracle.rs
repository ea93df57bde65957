//! Compile-time layout checks (feature `oracle`, `cargo check` only) of the
//! mingw-derived bindings against
//! Microsoft's own WDK metadata, as published in `windows-sys` 0.61
//! (`Wdk_*` features). A layout that differs fails the build, not a kernel.
//!
//! Checked: the size of every structure the driver shares with the kernel,
//! the offset of every field it touches, and, for each DDI it imports, that
//! both declarations take the same number of parameters.
//!
//! One measured exception: windows-sys 0.61 drops the `POINTER_ALIGNMENT`
//! (8-byte) members of IO_STACK_LOCATION's parameter structs (its `Read` is
//! `packed(4)` with ByteOffset at 8; DeviceIoControl's IoControlCode at 8).
//! The WDK headers align them: Wine's ntoskrnl (built from such headers)
//! delivers `Read.ByteOffset` and `DeviceIoControl.IoControlCode` at offset
//! 16, as the mingw headers say, and the driver reads them there correctly
//! under Wine. For those members this file asserts the WDK offsets directly.

#![allow(dead_code, clippy::all)]

use crate::ddk as b;
use core::mem::{offset_of, size_of};
use windows_sys::Wdk::Foundation as wf;
use windows_sys::Wdk::Storage::FileSystem as wfs;
use windows_sys::Wdk::System::SystemServices as wss;
use windows_sys::Win32::Foundation as w32;
use windows_sys::Win32::System::Kernel as wk;

macro_rules! same_size {
    ($a:ty, $b:ty) => {
        const _: () = assert!(size_of::<$a>() == size_of::<$b>(), concat!("size of ", stringify!($a)));
    };
}

macro_rules! same_offset {
    ($a:ty, $($fa:ident).+ ; $b:ty, $($fb:ident).+) => {
        const _: () = assert!(
            offset_of!($a, $($fa).+) == offset_of!($b, $($fb).+),
            concat!("offset of ", stringify!($a), ".", stringify!($($fa).+))
        );
    };
}

macro_rules! at {
    ($a:ty, $($fa:ident).+, $off:expr) => {
        const _: () = assert!(offset_of!($a, $($fa).+) == $off, concat!("offset of ", stringify!($a), ".", stringify!($($fa).+)));
    };
}

same_size!(b::IRP, wf::IRP);
same_size!(b::IO_STACK_LOCATION, wf::IO_STACK_LOCATION);
same_size!(b::DEVICE_OBJECT, wf::DEVICE_OBJECT);
same_size!(b::DRIVER_OBJECT, wf::DRIVER_OBJECT);
same_size!(b::FILE_OBJECT, wf::FILE_OBJECT);
same_size!(b::KSEMAPHORE, wss::KSEMAPHORE);
same_size!(b::KLOCK_QUEUE_HANDLE, wss::KLOCK_QUEUE_HANDLE);
same_size!(b::LIST_ENTRY, wk::LIST_ENTRY);
same_size!(b::UNICODE_STRING, w32::UNICODE_STRING);
same_size!(b::OBJECT_ATTRIBUTES, wf::OBJECT_ATTRIBUTES);
same_size!(b::CLIENT_ID, windows_sys::Win32::System::WindowsProgramming::CLIENT_ID);
same_offset!(b::CLIENT_ID, UniqueProcess; windows_sys::Win32::System::WindowsProgramming::CLIENT_ID, UniqueProcess);
same_size!(b::FILE_STANDARD_INFORMATION, wfs::FILE_STANDARD_INFORMATION);
same_size!(b::FILE_POSITION_INFORMATION, wfs::FILE_POSITION_INFORMATION);
same_size!(b::FILE_END_OF_FILE_INFORMATION, wss::FILE_END_OF_FILE_INFORMATION);
same_size!(b::FILE_ALLOCATION_INFORMATION, wfs::FILE_ALLOCATION_INFORMATION);
const _: () = assert!(b::FileAllocationInformation as i32 == wfs::FileAllocationInformation);
same_size!(b::KEY_VALUE_PARTIAL_INFORMATION, wss::KEY_VALUE_PARTIAL_INFORMATION);
same_size!(b::TOKEN_USER, windows_sys::Win32::Security::TOKEN_USER);
same_size!(b::SID_AND_ATTRIBUTES, windows_sys::Win32::Security::SID_AND_ATTRIBUTES);
same_size!(b::IO_SECURITY_CONTEXT, wf::IO_SECURITY_CONTEXT);
same_size!(b::SECURITY_SUBJECT_CONTEXT, wf::SECURITY_SUBJECT_CONTEXT);
same_size!(b::IO_ERROR_LOG_PACKET, wss::IO_ERROR_LOG_PACKET);

// IRP
same_offset!(b::IRP, AssociatedIrp.SystemBuffer; wf::IRP, AssociatedIrp.SystemBuffer);
same_offset!(b::IRP, IoStatus; wf::IRP, IoStatus);
same_offset!(b::IRP, Cancel; wf::IRP, Cancel);
same_offset!(b::IRP, CancelIrql; wf::IRP, CancelIrql);
same_offset!(b::IRP, CancelRoutine; wf::IRP, CancelRoutine);
same_offset!(b::IRP, Tail.Overlay.__bindgen_anon_1.__bindgen_anon_1.DriverContext; wf::IRP, Tail.Overlay.Anonymous1.Anonymous.DriverContext);
same_offset!(b::IRP, Tail.Overlay.__bindgen_anon_2.ListEntry; wf::IRP, Tail.Overlay.Anonymous2.ListEntry);
same_offset!(b::IRP, Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation; wf::IRP, Tail.Overlay.Anonymous2.Anonymous.CurrentStackLocation);

// IO_STACK_LOCATION
same_offset!(b::IO_STACK_LOCATION, MajorFunction; wf::IO_STACK_LOCATION, MajorFunction);
same_offset!(b::IO_STACK_LOCATION, Control; wf::IO_STACK_LOCATION, Control);
same_offset!(b::IO_STACK_LOCATION, Parameters; wf::IO_STACK_LOCATION, Parameters);
same_offset!(b::IO_STACK_LOCATION, FileObject; wf::IO_STACK_LOCATION, FileObject);
same_offset!(b::IO_STACK_LOCATION, Parameters.Create.SecurityContext; wf::IO_STACK_LOCATION, Parameters.Create.SecurityContext);
same_offset!(b::IO_STACK_LOCATION, Parameters.Create.Options; wf::IO_STACK_LOCATION, Parameters.Create.Options);
same_offset!(b::IO_STACK_LOCATION, Parameters.Read.Length; wf::IO_STACK_LOCATION, Parameters.Read.Length);
same_offset!(b::IO_STACK_LOCATION, Parameters.Write.Length; wf::IO_STACK_LOCATION, Parameters.Write.Length);
same_offset!(b::IO_STACK_LOCATION, Parameters.DeviceIoControl.OutputBufferLength; wf::IO_STACK_LOCATION, Parameters.DeviceIoControl.OutputBufferLength);
same_offset!(b::IO_STACK_LOCATION, Parameters.QueryFile.Length; wf::IO_STACK_LOCATION, Parameters.QueryFile.Length);
same_offset!(b::IO_STACK_LOCATION, Parameters.SetFile.Length; wf::IO_STACK_LOCATION, Parameters.SetFile.Length);
// POINTER_ALIGNMENT members (see the module docs): the WDK's offsets.
const PARAMS: usize = offset_of!(b::IO_STACK_LOCATION, Parameters);
at!(b::IO_STACK_LOCATION, Parameters.Read.ByteOffset, PARAMS + 16);
at!(b::IO_STACK_LOCATION, Parameters.Write.ByteOffset, PARAMS + 16);
at!(b::IO_STACK_LOCATION, Parameters.DeviceIoControl.InputBufferLength, PARAMS + 8);
at!(b::IO_STACK_LOCATION, Parameters.DeviceIoControl.IoControlCode, PARAMS + 16);
at!(b::IO_STACK_LOCATION, Parameters.QueryFile.FileInformationClass, PARAMS + 8);
at!(b::IO_STACK_LOCATION, Parameters.SetFile.FileInformationClass, PARAMS + 8);

// The create's subject security context (ident.rs)
same_offset!(b::IO_SECURITY_CONTEXT, AccessState; wf::IO_SECURITY_CONTEXT, AccessState);
same_offset!(b::ACCESS_STATE, SubjectSecurityContext; wf::ACCESS_STATE, SubjectSecurityContext);
same_offset!(b::SECURITY_SUBJECT_CONTEXT, ClientToken; wf::SECURITY_SUBJECT_CONTEXT, ClientToken);
same_offset!(b::SECURITY_SUBJECT_CONTEXT, PrimaryToken; wf::SECURITY_SUBJECT_CONTEXT, PrimaryToken);

// The error-log entry of a refused load (evlog.rs)
same_offset!(b::IO_ERROR_LOG_PACKET, DumpDataSize; wss::IO_ERROR_LOG_PACKET, DumpDataSize);
same_offset!(b::IO_ERROR_LOG_PACKET, NumberOfStrings; wss::IO_ERROR_LOG_PACKET, NumberOfStrings);
same_offset!(b::IO_ERROR_LOG_PACKET, StringOffset; wss::IO_ERROR_LOG_PACKET, StringOffset);
same_offset!(b::IO_ERROR_LOG_PACKET, ErrorCode; wss::IO_ERROR_LOG_PACKET, ErrorCode);
same_offset!(b::IO_ERROR_LOG_PACKET, UniqueErrorValue; wss::IO_ERROR_LOG_PACKET, UniqueErrorValue);
same_offset!(b::IO_ERROR_LOG_PACKET, FinalStatus; wss::IO_ERROR_LOG_PACKET, FinalStatus);

// DEVICE_OBJECT, DRIVER_OBJECT, FILE_OBJECT
same_offset!(b::DEVICE_OBJECT, Flags; wf::DEVICE_OBJECT, Flags);
same_offset!(b::DEVICE_OBJECT, DeviceExtension; wf::DEVICE_OBJECT, DeviceExtension);
same_offset!(b::DRIVER_OBJECT, DriverUnload; wf::DRIVER_OBJECT, DriverUnload);
same_offset!(b::DRIVER_OBJECT, MajorFunction; wf::DRIVER_OBJECT, MajorFunction);
same_offset!(b::FILE_OBJECT, FsContext; wf::FILE_OBJECT, FsContext);
same_offset!(b::FILE_OBJECT, FsContext2; wf::FILE_OBJECT, FsContext2);
same_offset!(b::FILE_OBJECT, FileName; wf::FILE_OBJECT, FileName);
same_offset!(b::FILE_OBJECT, CurrentByteOffset; wf::FILE_OBJECT, CurrentByteOffset);

// Information classes and records
same_offset!(b::FILE_STANDARD_INFORMATION, EndOfFile; wfs::FILE_STANDARD_INFORMATION, EndOfFile);
same_offset!(b::FILE_STANDARD_INFORMATION, NumberOfLinks; wfs::FILE_STANDARD_INFORMATION, NumberOfLinks);
same_offset!(b::KEY_VALUE_PARTIAL_INFORMATION, Type; wss::KEY_VALUE_PARTIAL_INFORMATION, Type);
same_offset!(b::KEY_VALUE_PARTIAL_INFORMATION, DataLength; wss::KEY_VALUE_PARTIAL_INFORMATION, DataLength);
same_offset!(b::KEY_VALUE_PARTIAL_INFORMATION, Data; wss::KEY_VALUE_PARTIAL_INFORMATION, Data);
same_offset!(b::OBJECT_ATTRIBUTES, ObjectName; wf::OBJECT_ATTRIBUTES, ObjectName);
same_offset!(b::OBJECT_ATTRIBUTES, Attributes; wf::OBJECT_ATTRIBUTES, Attributes);

/// Same parameter count for every imported DDI. The fn-pointer coercions are
/// evaluated at compile time only: no windows-sys function may reach the link
/// (it declares some DDIs, e.g. ZwClose and DbgPrintEx, as ntdll.dll imports).
macro_rules! arity {
    ($ws:path, $b:path, $($p:tt)*) => {{
        let _a: unsafe extern "system" fn($($p)*) -> _ = $ws;
        let _b: unsafe extern "C" fn($($p)*) -> _ = $b;
    }};
}

const _: () = {
    arity!(wss::IoCreateDevice, b::IoCreateDevice, _, _, _, _, _, _, _);
    arity!(wss::IoCreateSymbolicLink, b::IoCreateSymbolicLink, _, _);
    arity!(wss::IoDeleteSymbolicLink, b::IoDeleteSymbolicLink, _);
    arity!(wss::IoDeleteDevice, b::IoDeleteDevice, _);
    arity!(wss::IofCompleteRequest, b::IofCompleteRequest, _, _);
    arity!(wss::IoReleaseCancelSpinLock, b::IoReleaseCancelSpinLock, _);
    arity!(wss::IoGetCurrentProcess, b::IoGetCurrentProcess,);
    arity!(wfs::IoGetRequestorProcess, b::IoGetRequestorProcess, _);
    arity!(wss::KeInitializeSemaphore, b::KeInitializeSemaphore, _, _, _);
    arity!(wss::KeReleaseSemaphore, b::KeReleaseSemaphore, _, _, _, _);
    arity!(wss::KeWaitForSingleObject, b::KeWaitForSingleObject, _, _, _, _, _);
    arity!(wss::KeEnterCriticalRegion, b::KeEnterCriticalRegion,);
    arity!(wss::KeLeaveCriticalRegion, b::KeLeaveCriticalRegion,);
    arity!(wss::IoAllocateErrorLogEntry, b::IoAllocateErrorLogEntry, _, _);
    arity!(wss::IoWriteErrorLogEntry, b::IoWriteErrorLogEntry, _);
    arity!(wss::ExAllocatePoolWithTag, b::ExAllocatePoolWithTag, _, _, _);
    arity!(wss::ExFreePoolWithTag, b::ExFreePoolWithTag, _, _);
    arity!(wfs::ObOpenObjectByPointer, b::ObOpenObjectByPointer, _, _, _, _, _, _, _);
    arity!(wfs::ZwOpenProcessTokenEx, b::ZwOpenProcessTokenEx, _, _, _, _);
    arity!(wfs::ZwOpenThreadTokenEx, b::ZwOpenThreadTokenEx, _, _, _, _, _);
    arity!(windows_sys::Wdk::System::Threading::ZwOpenProcess, b::ZwOpenProcess, _, _, _, _);
    arity!(windows_sys::Wdk::System::Threading::ZwWaitForSingleObject, b::ZwWaitForSingleObject, _, _, _);
    arity!(wfs::ZwQueryInformationToken, b::ZwQueryInformationToken, _, _, _, _, _);
    arity!(windows_sys::Wdk::System::Registry::ZwOpenKey, b::ZwOpenKey, _, _, _);
    arity!(windows_sys::Wdk::System::Registry::ZwQueryValueKey, b::ZwQueryValueKey, _, _, _, _, _, _);
    arity!(wss::ZwClose, b::ZwClose, _);
    arity!(wss::PsGetCurrentProcessId, b::PsGetCurrentProcessId,);
    // The device ACL (acl.rs).
    arity!(wss::RtlCreateSecurityDescriptor, b::RtlCreateSecurityDescriptor, _, _);
    arity!(wss::RtlSetDaclSecurityDescriptor, b::RtlSetDaclSecurityDescriptor, _, _, _, _);
    arity!(wfs::RtlCreateAcl, b::RtlCreateAcl, _, _, _);
    arity!(wfs::RtlAddAccessAllowedAce, b::RtlAddAccessAllowedAce, _, _, _, _);
    arity!(wfs::ZwSetSecurityObject, b::ZwSetSecurityObject, _, _, _);
    arity!(wfs::ZwQuerySecurityObject, b::ZwQuerySecurityObject, _, _, _, _, _);
};

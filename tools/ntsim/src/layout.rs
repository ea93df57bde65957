//! Layouts. ntsim builds every object with windows-sys's types (generated
//! from Microsoft's WDK metadata, fixed-width, usable on Linux), except
//! where windows-sys is measurably wrong for x64: the parameter members of
//! IO_STACK_LOCATION lose the WDK's POINTER_ALIGNMENT. For those ntsim
//! uses the structs below, whose offsets follow wdm.h of the WDK (each
//! POINTER_ALIGNMENT member on an 8-byte boundary on x64), which is also
//! what mingw-w64's ddk/wdm.h (the headers the mingw binding path builds drivers against)
//! declares. The tests at the end pin both sides, so a change in either
//! is seen.
//!
//! | member (x64)                           | WDK / mingw-w64 | windows-sys 0.61 |
//! |----------------------------------------|-----------------|------------------|
//! | Create.Options                         | +8              | +8               |
//! | Create.FileAttributes                  | +16             | +12              |
//! | Create.ShareAccess                     | +18             | +14              |
//! | Create.EaLength                        | +24             | +16              |
//! | Read/Write.Key                         | +8              | +4               |
//! | Read/Write.ByteOffset                  | +16             | +8               |
//! | QueryFile/SetFile.FileInformationClass | +8              | +4               |
//! | SetFile.FileObject                     | +16             | +8               |
//! | DeviceIoControl.InputBufferLength      | +8              | +4               |
//! | DeviceIoControl.IoControlCode          | +16             | +8               |
//! | DeviceIoControl.Type3InputBuffer       | +24             | +16              |
//!
//! (Offsets within `Parameters`, which itself is at +8 in both.)

use std::ffi::c_void;
use windows_sys::Wdk::Foundation::{FILE_OBJECT, IO_SECURITY_CONTEXT, IO_STACK_LOCATION};

/// Parameters.Create (WDK wdm.h).
#[repr(C)]
pub struct CreateParams {
    pub security_context: *mut IO_SECURITY_CONTEXT,
    pub options: u32,
    _pad0: u32,
    pub file_attributes: u16,
    pub share_access: u16,
    _pad1: u32,
    pub ea_length: u32,
    _pad2: u32,
}

/// Parameters.Read / Parameters.Write (WDK wdm.h; Flags is the Win10 WDK's
/// member in the Key padding).
#[repr(C)]
pub struct ReadWriteParams {
    pub length: u32,
    _pad0: u32,
    pub key: u32,
    pub flags: u32,
    pub byte_offset: i64,
}

/// Parameters.QueryFile.
#[repr(C)]
pub struct QueryFileParams {
    pub length: u32,
    _pad0: u32,
    pub class: u32,
    _pad1: u32,
}

/// Parameters.SetFile.
#[repr(C)]
pub struct SetFileParams {
    pub length: u32,
    _pad0: u32,
    pub class: u32,
    _pad1: u32,
    pub file_object: *mut FILE_OBJECT,
    pub replace_if_exists: usize,
}

/// Parameters.DeviceIoControl.
#[repr(C)]
pub struct IoctlParams {
    pub output_length: u32,
    _pad0: u32,
    pub input_length: u32,
    _pad1: u32,
    pub code: u32,
    _pad2: u32,
    pub type3_input: *mut c_void,
}

/// The parameters of a stack location, viewed as `T`.
///
/// # Safety
/// `sl` is a valid stack location; `T` is one of the structs above (all
/// fit the 32-byte union).
pub unsafe fn params<T>(sl: *mut IO_STACK_LOCATION) -> *mut T {
    const { assert!(std::mem::size_of::<T>() <= 32) };
    // SAFETY: the union is 32 bytes at +8; `T` fits (checked above).
    unsafe { std::ptr::addr_of_mut!((*sl).Parameters) as *mut T }
}

/// An absolute SECURITY_DESCRIPTOR on x64: 40 bytes, the DACL pointer at +32.
pub const SD_ABSOLUTE_LEN: usize = 40;
pub const SD_DACL_OFFSET: usize = 32;

/// The DEVICE_OBJECT size ntsim allocates: the WDK declares the struct
/// DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT), 16 on x64, so its size
/// rounds up to 0x150; windows-sys and mingw-w64 omit the alignment
/// (0x148). The device extension follows at this offset.
pub const DEVICE_OBJECT_ALLOC: usize = 0x150;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use windows_sys::Wdk::Foundation::*;

    #[test]
    fn wdk_parameter_offsets() {
        assert_eq!(offset_of!(IO_STACK_LOCATION, Parameters), 8);
        assert_eq!(size_of::<IO_STACK_LOCATION>(), 0x48);
        assert_eq!(offset_of!(CreateParams, options), 8);
        assert_eq!(offset_of!(CreateParams, file_attributes), 16);
        assert_eq!(offset_of!(CreateParams, share_access), 18);
        assert_eq!(offset_of!(CreateParams, ea_length), 24);
        assert_eq!(offset_of!(ReadWriteParams, key), 8);
        assert_eq!(offset_of!(ReadWriteParams, byte_offset), 16);
        assert_eq!(offset_of!(QueryFileParams, class), 8);
        assert_eq!(offset_of!(SetFileParams, class), 8);
        assert_eq!(offset_of!(SetFileParams, file_object), 16);
        assert_eq!(offset_of!(IoctlParams, input_length), 8);
        assert_eq!(offset_of!(IoctlParams, code), 16);
        assert_eq!(offset_of!(IoctlParams, type3_input), 24);
    }

    /// windows-sys 0.61's members, measured: they differ from the WDK's
    /// (see the module table). If this test fails, windows-sys changed:
    /// re-check the table and whether ntsim can use its types directly.
    #[test]
    fn windows_sys_parameter_offsets_disagree() {
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_0, FileAttributes), 12);
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_0, ShareAccess), 14);
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_0, EaLength), 16);
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_3, Key), 4);
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_3, ByteOffset), 8);
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_4, ByteOffset), 8);
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_8, FileInformationClass), 4);
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_9, FileInformationClass), 4);
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_9, FileObject), 8);
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_16, InputBufferLength), 4);
        assert_eq!(offset_of!(IO_STACK_LOCATION_0_16, IoControlCode), 8);
    }

    /// The structures ntsim takes from windows-sys as they are: sizes and
    /// the offsets drivers use agree with the WDK's x64 layout.
    #[test]
    fn windows_sys_objects_match_the_wdk() {
        assert_eq!(size_of::<IRP>(), 0xD0);
        assert_eq!(offset_of!(IRP, AssociatedIrp), 0x18);
        assert_eq!(offset_of!(IRP, IoStatus), 0x30);
        assert_eq!(offset_of!(IRP, Cancel), 0x44);
        assert_eq!(offset_of!(IRP, CancelIrql), 0x45);
        assert_eq!(offset_of!(IRP, CancelRoutine), 0x68);
        assert_eq!(offset_of!(IRP, UserBuffer), 0x70);
        assert_eq!(offset_of!(IRP, Tail), 0x78);
        assert_eq!(size_of::<FILE_OBJECT>(), 0xD8);
        assert_eq!(offset_of!(FILE_OBJECT, FsContext), 0x18);
        assert_eq!(offset_of!(FILE_OBJECT, FsContext2), 0x20);
        assert_eq!(offset_of!(FILE_OBJECT, Flags), 0x50);
        assert_eq!(offset_of!(FILE_OBJECT, FileName), 0x58);
        assert_eq!(offset_of!(FILE_OBJECT, CurrentByteOffset), 0x68);
        assert_eq!(
            size_of::<DEVICE_OBJECT>(),
            0x148,
            "windows-sys drops the WDK's 16-byte alignment (0x150)"
        );
        assert_eq!(offset_of!(DEVICE_OBJECT, Flags), 0x30);
        assert_eq!(offset_of!(DEVICE_OBJECT, DeviceExtension), 0x40);
        assert_eq!(size_of::<DRIVER_OBJECT>(), 0x150);
        assert_eq!(offset_of!(DRIVER_OBJECT, DriverUnload), 0x68);
        assert_eq!(offset_of!(DRIVER_OBJECT, MajorFunction), 0x70);
        assert_eq!(offset_of!(ACCESS_STATE, PreviouslyGrantedAccess), 0x14);
        assert_eq!(offset_of!(ACCESS_STATE, SubjectSecurityContext), 0x20);
        assert_eq!(
            size_of::<windows_sys::Wdk::System::SystemServices::KSEMAPHORE>(),
            0x20
        );
        assert_eq!(
            size_of::<windows_sys::Wdk::System::SystemServices::IO_ERROR_LOG_PACKET>(),
            0x30
        );
    }
}

//! The one seam between the Windows backend and the Win32 functions it
//! calls: windows-sys's (kernel32) on Windows; on Linux, ntsim's Win32
//! layer, which runs the same calls against the release scull.sys loaded
//! into this process by ntsim (the `ntsim` target). Types and constants
//! come from windows-sys on both.
#[cfg(windows)]
pub use windows_sys::Win32::{
    Foundation::{CloseHandle, GetLastError},
    Storage::FileSystem::{CreateFileW, ReadFile, SetEndOfFile, SetFilePointerEx, WriteFile},
    System::Threading::{CreateEventW, WaitForSingleObject},
    System::IO::{CancelIoEx, DeviceIoControl},
};

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub use ntsim::win32::{
    CancelIoEx, CloseHandle, CreateEventW, CreateFileW, DeviceIoControl, GetLastError, ReadFile, SetEndOfFile, SetFilePointerEx,
    WaitForSingleObject, WriteFile,
};

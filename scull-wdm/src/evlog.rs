//! The System event-log entry of a refused load: when DriverEntry refuses a
//! registry value (a bad parameter, an SDDL it cannot parse), it also writes
//! an I/O error-log entry (`IoAllocateErrorLogEntry` → `IO_ERROR_LOG_PACKET`
//! → `IoWriteErrorLogEntry`), so that an administrator sees why `sc start`
//! failed in Event Viewer without a debugger. PASSIVE_LEVEL (DriverEntry).
//!
//! The entry uses the generic I/O messages of `%SystemRoot%\System32\IoLogMsg.dll`,
//! which the INF registers as the `scull` event source of the System log:
//! ErrorCode `IO_ERR_CONFIGURATION_ERROR` (the driver is incorrectly
//! configured), FinalStatus the status DriverEntry returns, UniqueErrorValue
//! which check refused ([`Refused`]), and one insertion string, the registry
//! value's name (shown in the event's details).
//!
//! Under Wine, `IoAllocateErrorLogEntry` returns NULL (measured): then no
//! entry is written, the DbgPrint line says so, and the load fails as before.

use crate::ddk::*;
use core::mem::size_of;
use core::ptr;

/// `IO_ERR_CONFIGURATION_ERROR` (ntiologc.h; that header is not in the bindings).
pub const IO_ERR_CONFIGURATION_ERROR: NTSTATUS = 0xC004_0003_u32 as i32;

/// The entry's UniqueErrorValue: which check refused the load.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Refused {
    /// A geometry or device-count value (`scull_quantum`, `scull_qset`,
    /// `scull_p_buffer`, `scull_nr_devs`, `scull_p_nr_devs`).
    Parameter = 1,
    /// `scull_sddl`: not in the supported SDDL subset.
    Sddl = 2,
}

/// The largest entry IoAllocateErrorLogEntry accepts: the WDK's
/// ERROR_LOG_MAXIMUM_SIZE, which on x64 (PORT_MAXIMUM_MESSAGE_LENGTH 512)
/// comes to ERROR_LOG_LIMIT_SIZE, 240. wdk-sys does not emit that computed
/// macro, so both paths use the plain one.
const MAX_ENTRY: usize = ERROR_LOG_LIMIT_SIZE as usize;
/// The insertion string follows the packet (no dump data).
const STRING_OFFSET: usize = size_of::<IO_ERROR_LOG_PACKET>();
/// UTF-16 units of the insertion string, its terminating NUL included.
const MAX_UNITS: usize = (MAX_ENTRY - STRING_OFFSET) / 2;

const _: () = assert!(STRING_OFFSET & 1 == 0 && MAX_UNITS >= 32);

/// Writes the event-log entry of a refused load. Never fails the caller: an
/// entry that cannot be allocated is reported on the debug output only.
pub fn load_refused(driver: *mut DRIVER_OBJECT, why: Refused, value: &str, status: NTSTATUS) {
    let mut name = [0u16; MAX_UNITS];
    let mut units = 0;
    // Truncated to fit, keeping one unit for the NUL (names here are short).
    for (d, c) in name[..MAX_UNITS - 1].iter_mut().zip(value.encode_utf16()) {
        *d = c;
        units += 1;
    }
    let size = STRING_OFFSET + (units + 1) * 2;
    // SAFETY: DriverEntry's driver object, at PASSIVE_LEVEL; the loop above
    // keeps `units` below MAX_UNITS, so `size` is at most MAX_ENTRY (240),
    // the largest entry the call accepts, and fits its UCHAR.
    let entry = unsafe { IoAllocateErrorLogEntry(driver.cast(), size as u8) } as *mut IO_ERROR_LOG_PACKET;
    if entry.is_null() {
        kprint!("event log: IoAllocateErrorLogEntry returned NULL; no entry written for {value}");
        return;
    }
    // SAFETY: the I/O manager gave us `size` writable bytes for this entry,
    // suitably aligned for the packet; we fill all of them (header zeroed,
    // then the fields, then the string at STRING_OFFSET) and hand the entry
    // to IoWriteErrorLogEntry, which frees it: it is not touched afterwards.
    // SAFETY: see above.
    unsafe { ptr::write_bytes(entry.cast::<u8>(), 0, size) };
    {
        // SAFETY: see above; the header is zeroed, a valid packet.
        let e = unsafe { &mut *entry };
        e.ErrorCode = IO_ERR_CONFIGURATION_ERROR;
        e.UniqueErrorValue = why as u32;
        e.FinalStatus = status;
        e.NumberOfStrings = 1;
        e.StringOffset = STRING_OFFSET as u16;
        e.DumpDataSize = 0;
    }
    // SAFETY: see above: STRING_OFFSET lies inside the entry.
    let strings = unsafe { entry.cast::<u8>().add(STRING_OFFSET) }.cast::<u16>();
    // SAFETY: see above: the string and its NUL fit after STRING_OFFSET.
    unsafe { ptr::copy_nonoverlapping(name.as_ptr(), strings, units + 1) };
    // SAFETY: see above: the entry is complete and not touched afterwards.
    unsafe { IoWriteErrorLogEntry(entry.cast()) };
    kprint!("event log: wrote IO_ERR_CONFIGURATION_ERROR for {value} (status {:#x})", status);
}

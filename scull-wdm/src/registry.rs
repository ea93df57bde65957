//! LDD3's module parameters as registry values under the service key:
//! `HKLM\SYSTEM\CurrentControlSet\Services\scull\Parameters`, REG_DWORDs
//! `scull_quantum`, `scull_qset`, `scull_nr_devs`, `scull_p_buffer`,
//! `scull_p_nr_devs`. Missing values keep LDD3's defaults. Also
//! `scull_max_size` (REG_DWORD, bytes, read as unsigned: the per-device size
//! cap, default 512 MiB; see scull-core's `geometry::DEFAULT_MAX_SIZE`) and
//! `scull_max_total` (REG_DWORD, bytes, unsigned: the store bytes of all
//! devices together, default 512 MiB; see scull-core's `budget`).
//!
//! Also read: `scull_sddl` (REG_SZ, the device ACL; see `acl`),
//! `scull_debug_level` (REG_DWORD 0..3, see `log`), and two test-only
//! switches, both off when absent: `scull_test_identity` (see `testmode`) and
//! `scull_fail_at` (fault injection, see `pool`).

use crate::ddk::*;
use core::fmt::Write;
use core::ptr;
use scull_core::geometry::LoadParams;

#[derive(Debug, Default, Clone, Copy)]
pub struct Values {
    /// LDD3's parameters and `scull_max_size`, for scull-core to check.
    pub load: LoadParams,
    pub test_identity: Option<i32>,
    pub fail_at: Option<i32>,
    pub debug_level: Option<i32>,
    /// `scull_sddl` as UTF-16 (no NUL), when present and a REG_SZ that fits.
    pub sddl: Option<Sddl>,
}

/// An SDDL string read from the registry.
#[derive(Debug, Clone, Copy)]
pub struct Sddl {
    pub buf: [u16; 192],
    pub len: usize,
}

impl Sddl {
    pub fn as_slice(&self) -> &[u16] {
        &self.buf[..self.len]
    }
}

/// Reads the values; any failure (no Parameters key...) leaves them unset.
// Its own frame: DriverEntry must stay under a page of stack (no __chkstk in a driver).
#[inline(never)]
pub fn read(registry_path: *mut UNICODE_STRING) -> Values {
    let mut v = Values::default();
    let mut path = WStr::<512>::new();
    // SAFETY: the registry path from DriverEntry is a valid counted string.
    let r = unsafe { &*registry_path };
    let service = if r.Buffer.is_null() {
        &[][..]
    } else {
        // SAFETY: as above: Length bytes at Buffer.
        unsafe { core::slice::from_raw_parts(r.Buffer, r.Length as usize / 2) }
    };
    for c in char::decode_utf16(service.iter().copied()) {
        if path.write_char(c.unwrap_or('?')).is_err() {
            return v;
        }
    }
    if path.write_str("\\Parameters").is_err() {
        return v;
    }
    let mut upath = path.unicode();
    // SAFETY: OBJECT_ATTRIBUTES is plain data.
    let mut oa: OBJECT_ATTRIBUTES = unsafe { core::mem::zeroed() };
    oa.Length = core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32;
    oa.ObjectName = upath.as_mut_ptr();
    oa.Attributes = OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE;
    let mut key: HANDLE = ptr::null_mut();
    // SAFETY: valid attributes; the key handle is closed below.
    if unsafe { ZwOpenKey(&mut key, KEY_READ, &mut oa) } < 0 {
        return v;
    }
    let int = |name| dword(key, name).map(i64::from);
    v.load.quantum = int("scull_quantum");
    v.load.qset = int("scull_qset");
    v.load.nr_devs = int("scull_nr_devs");
    v.load.p_buffer = int("scull_p_buffer");
    v.load.p_nr_devs = int("scull_p_nr_devs");
    v.load.max_size = dword(key, "scull_max_size").map(|m| u64::from(m as u32));
    v.load.max_total = dword(key, "scull_max_total").map(|m| u64::from(m as u32));
    v.test_identity = dword(key, "scull_test_identity");
    v.fail_at = dword(key, "scull_fail_at");
    v.debug_level = dword(key, "scull_debug_level");
    v.sddl = string(key, "scull_sddl");
    // SAFETY: the handle opened above.
    let _ = unsafe { ZwClose(key) };
    v
}

#[repr(C, align(8))]
struct ValueBuf([u8; 512]);

/// KEY_VALUE_PARTIAL_INFORMATION of `name`, or None (absent, too big...).
// Its own frame: DriverEntry must stay under a page of stack (no __chkstk in a driver).
#[inline(never)]
fn query(key: HANDLE, name: &str, buf: &mut ValueBuf) -> Option<()> {
    let mut n = WStr::<32>::new();
    n.write_str(name).ok()?;
    let mut un = n.unicode();
    let mut got = 0u32;
    // SAFETY: an open key, a valid name and a writable buffer.
    let st = unsafe {
        ZwQueryValueKey(key, un.as_mut_ptr(), KeyValuePartialInformation, buf.0.as_mut_ptr().cast(), buf.0.len() as u32, &mut got)
    };
    (st >= 0).then_some(())
}

// Its own frame: DriverEntry must stay under a page of stack (no __chkstk in a driver).
#[inline(never)]
fn string(key: HANDLE, name: &str) -> Option<Sddl> {
    let mut buf = ValueBuf([0; 512]);
    query(key, name, &mut buf)?;
    let (info, data) = partial_info(&buf);
    let n = (info.DataLength as usize).min(data.len());
    if info.Type != REG_SZ {
        kprint!("registry value {} is not a REG_SZ; ignored", name);
        return None;
    }
    let mut s = Sddl { buf: [0; 192], len: 0 };
    for i in 0..n / 2 {
        let c = u16::from_le_bytes([data[2 * i], data[2 * i + 1]]);
        if c == 0 {
            break;
        }
        if s.len == s.buf.len() {
            kprint!("registry value {} is too long; ignored", name);
            return None;
        }
        s.buf[s.len] = c;
        s.len += 1;
    }
    Some(s)
}

/// The KEY_VALUE_PARTIAL_INFORMATION header at the start of a buffer that
/// `query` filled, and the bytes from its `Data` to the buffer's end.
fn partial_info(buf: &ValueBuf) -> (&KEY_VALUE_PARTIAL_INFORMATION, &[u8]) {
    // SAFETY: the buffer is 8-aligned and larger than the header, which is
    // plain data (any bytes are a valid value); `query` wrote it on success.
    let info = unsafe { &*(buf.0.as_ptr() as *const KEY_VALUE_PARTIAL_INFORMATION) };
    (info, &buf.0[core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data)..])
}

// Its own frame: DriverEntry must stay under a page of stack (no __chkstk in a driver).
#[inline(never)]
fn dword(key: HANDLE, name: &str) -> Option<i32> {
    let mut buf = ValueBuf([0; 512]);
    query(key, name, &mut buf)?;
    let (info, data) = partial_info(&buf);
    if info.Type != REG_DWORD || info.DataLength != 4 {
        kprint!("registry value {} is not a REG_DWORD; ignored", name);
        return None;
    }
    Some(i32::from_le_bytes([data[0], data[1], data[2], data[3]]))
}

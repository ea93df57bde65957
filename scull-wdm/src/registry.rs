//! LDD3's module parameters as registry values under the service key:
//! `HKLM\SYSTEM\CurrentControlSet\Services\scull\Parameters`, REG_DWORDs
//! `scull_quantum`, `scull_qset`, `scull_nr_devs`, `scull_p_buffer`,
//! `scull_p_nr_devs`. Missing values keep LDD3's defaults.

use crate::ddk::*;
use core::fmt::Write;
use core::ptr;

#[derive(Debug, Default, Clone, Copy)]
pub struct Values {
    pub quantum: Option<i32>,
    pub qset: Option<i32>,
    pub nr_devs: Option<i32>,
    pub p_buffer: Option<i32>,
    pub p_nr_devs: Option<i32>,
}

/// Reads the values; any failure (no Parameters key...) leaves them unset.
pub fn read(registry_path: *mut UNICODE_STRING) -> Values {
    let mut v = Values::default();
    let mut path = WStr::<512>::new();
    // SAFETY: the registry path from DriverEntry is a valid counted string.
    let service = unsafe {
        let r = &*registry_path;
        if r.Buffer.is_null() {
            &[][..]
        } else {
            core::slice::from_raw_parts(r.Buffer, r.Length as usize / 2)
        }
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
    oa.ObjectName = &mut upath;
    oa.Attributes = OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE;
    let mut key: HANDLE = ptr::null_mut();
    // SAFETY: valid attributes; the key handle is closed below.
    if unsafe { ZwOpenKey(&mut key, KEY_READ, &mut oa) } < 0 {
        return v;
    }
    v.quantum = dword(key, "scull_quantum");
    v.qset = dword(key, "scull_qset");
    v.nr_devs = dword(key, "scull_nr_devs");
    v.p_buffer = dword(key, "scull_p_buffer");
    v.p_nr_devs = dword(key, "scull_p_nr_devs");
    // SAFETY: the handle opened above.
    let _ = unsafe { ZwClose(key) };
    v
}

#[repr(C, align(8))]
struct ValueBuf([u8; 64]);

fn dword(key: HANDLE, name: &str) -> Option<i32> {
    let mut n = WStr::<32>::new();
    n.write_str(name).ok()?;
    let mut un = n.unicode();
    let mut buf = ValueBuf([0; 64]);
    let mut got = 0u32;
    // SAFETY: an open key, a valid name and a writable buffer.
    let st = unsafe {
        ZwQueryValueKey(key, &mut un, KeyValuePartialInformation, buf.0.as_mut_ptr().cast(), buf.0.len() as u32, &mut got)
    };
    if st < 0 {
        return None;
    }
    // SAFETY: on success the buffer starts with a KEY_VALUE_PARTIAL_INFORMATION.
    unsafe {
        let info = buf.0.as_ptr() as *const KEY_VALUE_PARTIAL_INFORMATION;
        if (*info).Type != REG_DWORD || (*info).DataLength != 4 {
            kprint!("registry value {} is not a REG_DWORD; ignored", name);
            return None;
        }
        let d = ptr::addr_of!((*info).Data) as *const [u8; 4];
        Some(i32::from_le_bytes(*d))
    }
}

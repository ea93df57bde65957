//! `kprint!`: LDD3's printk/PDEBUG as `DbgPrintEx(DPFLTR_IHVDRIVER_ID, ...)`.
//! The text is formatted with `core::fmt` into a stack buffer and passed as
//! one `%s` argument (no C format string ever sees driver data).

use core::fmt::{self, Write};

pub struct LineBuf {
    pub buf: [u8; 256],
    pub len: usize,
}

impl LineBuf {
    pub const fn new() -> Self {
        LineBuf { buf: [0; 256], len: 0 }
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            // Keep the last byte for the NUL; drop what does not fit.
            if self.len + 1 < self.buf.len() {
                self.buf[self.len] = if b == 0 { b'?' } else { b };
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// Prints one line (DPFLTR_ERROR_LEVEL, so that it shows without a filter mask).
pub fn print(args: fmt::Arguments<'_>) {
    let mut b = LineBuf::new();
    let _ = b.write_str("scull: ");
    let _ = b.write_fmt(args);
    let _ = b.write_str("\n");
    b.buf[b.len] = 0;
    // SAFETY: a NUL-terminated buffer passed to a constant "%s" format.
    unsafe {
        crate::ddk::DbgPrintEx(crate::ddk::DPFLTR_IHVDRIVER_ID as _, 0, c"%s".as_ptr().cast(), b.buf.as_ptr());
    }
}

#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::log::print(format_args!($($arg)*)) };
}

//! Report text: the counterparts of LDD3's /proc/scullmem, /proc/scullseq and
//! /proc/scullpipe, formatted with `core::fmt` into a caller's buffer.
//!
//! The format is stable (version 1) and line oriented; new `key=value`
//! fields are only ever appended to a line (`max_size=`, the per-device size
//! cap, came after the first release). Kernel addresses are
//! never printed (LDD3 printed `%p`s, which leak kernel layout).
//!
//! ```text
//! scullmem v1 quantum=4000 qset=1000 max_size=536870912
//! scull0 size=12 quantum=4000 qset=1000 qsets=1 quanta=1
//! ...
//! scullpipe v1 buffer=4000
//! scullpipe0 buffer=4000 rp=3 wp=3 readable=0 writable=3999 readers=1 writers=1 waiting_readers=0 waiting_writers=0
//! ...
//! ```
//!
//! `scullseq` is the same text as `scullmem` (LDD3's seq_file version prints
//! what the read_proc version prints). A pipe with no allocated buffer shows
//! `buffer=0`.

use crate::geometry::Params;
use crate::pipe::PipeStats;
use crate::store::StoreStats;
use core::fmt::{self, Write};

/// A `fmt::Write` into a fixed byte buffer. Never fails: output past the end is
/// counted in [`TextBuf::needed`] and dropped.
pub struct TextBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
    needed: usize,
}

impl<'a> TextBuf<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        TextBuf { buf, len: 0, needed: 0 }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the whole text needs.
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// True if some text did not fit.
    pub fn truncated(&self) -> bool {
        self.needed > self.len
    }

    /// The text written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for TextBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = room.min(s.len());
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        self.needed += s.len();
        Ok(())
    }
}

/// A `fmt::Write` that only counts.
#[derive(Debug, Default)]
pub struct Counter(pub usize);

impl Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Header of the memory report.
pub fn mem_header(w: &mut dyn Write, params: &Params) -> fmt::Result {
    writeln!(w, "scullmem v1 quantum={} qset={} max_size={}", params.quantum(), params.qset(), params.max_size())
}

/// One device line of the memory report. `name` is e.g. `scull0`.
pub fn mem_device(w: &mut dyn Write, name: &str, s: &StoreStats) -> fmt::Result {
    writeln!(
        w,
        "{} size={} quantum={} qset={} qsets={} quanta={}",
        name, s.size, s.quantum, s.qset, s.qsets, s.quanta
    )
}

/// Header of the pipe report.
pub fn pipe_header(w: &mut dyn Write, params: &Params) -> fmt::Result {
    writeln!(w, "scullpipe v1 buffer={}", params.p_buffer())
}

/// One device line of the pipe report; `waiting_*` count blocked callers
/// (sleepers on Linux, pended IRPs on Windows).
pub fn pipe_device(w: &mut dyn Write, name: &str, s: &PipeStats, waiting_readers: u32, waiting_writers: u32) -> fmt::Result {
    writeln!(
        w,
        "{} buffer={} rp={} wp={} readable={} writable={} readers={} writers={} waiting_readers={} waiting_writers={}",
        name, s.buffer, s.rp, s.wp, s.readable, s.writable, s.readers, s.writers, waiting_readers, waiting_writers
    )
}

/// Parses `key=value` from a report line (for tools and tests).
pub fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_buf_truncates_and_counts() {
        let mut b = [0u8; 8];
        let mut t = TextBuf::new(&mut b);
        write!(t, "hello {}", 12345).unwrap();
        assert_eq!(t.as_bytes(), b"hello 12");
        assert_eq!(t.needed(), 11);
        assert!(t.truncated());
        let mut c = Counter::default();
        write!(c, "hello {}", 12345).unwrap();
        assert_eq!(c.0, 11);
    }

    #[test]
    fn report_lines() {
        let p = Params::new();
        let mut b = [0u8; 512];
        let mut t = TextBuf::new(&mut b);
        mem_header(&mut t, &p).unwrap();
        let s = StoreStats { size: 12, quantum: 4000, qset: 1000, qsets: 1, quanta: 1 };
        mem_device(&mut t, "scull0", &s).unwrap();
        pipe_header(&mut t, &p).unwrap();
        let ps = PipeStats { buffer: 4000, rp: 3, wp: 5, readable: 2, writable: 3997, readers: 1, writers: 2 };
        pipe_device(&mut t, "scullpipe0", &ps, 0, 1).unwrap();
        let text = core::str::from_utf8(t.as_bytes()).unwrap();
        let lines: [&str; 4] = {
            let mut it = text.lines();
            [it.next().unwrap(), it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
        };
        assert_eq!(lines[0], "scullmem v1 quantum=4000 qset=1000 max_size=536870912");
        assert_eq!(lines[1], "scull0 size=12 quantum=4000 qset=1000 qsets=1 quanta=1");
        assert_eq!(lines[2], "scullpipe v1 buffer=4000");
        assert_eq!(field(lines[3], "wp"), Some("5"));
        assert_eq!(field(lines[3], "waiting_writers"), Some("1"));
        assert_eq!(field(lines[3], "missing"), None);
        assert!(!text.contains("0x"), "no addresses");
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn exact_fit_is_not_truncated() {
        let mut b = [0u8; 5];
        let mut t = TextBuf::new(&mut b);
        t.write_str("hello").unwrap();
        assert!(!t.truncated());
        assert_eq!(t.len(), 5);
        let mut e = [0u8; 0];
        let mut t = TextBuf::new(&mut e);
        t.write_str("x").unwrap();
        assert!(t.is_empty() && t.truncated());
    }

    #[test]
    fn unallocated_pipe_line_and_field_prefixes() {
        let mut b = [0u8; 256];
        let mut t = TextBuf::new(&mut b);
        pipe_device(&mut t, "scullpipe3", &PipeStats::default(), 0, 0).unwrap();
        let line = core::str::from_utf8(t.as_bytes()).unwrap();
        assert_eq!(field(line, "buffer"), Some("0"));
        assert_eq!(field(line, "writ"), None, "a key prefix is not a key");
        assert_eq!(field(line, "rp"), Some("0"));
        assert!(line.starts_with("scullpipe3 "));
        assert!(line.ends_with('\n'));
    }
}

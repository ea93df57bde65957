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

use crate::devices::Dev;
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

/// A short string formatted on the stack (device names, log lines): at most
/// `N - 1` bytes, always followed by a NUL for C. Text that does not fit is
/// cut at a character boundary; a NUL written into it becomes `?`.
pub struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    pub const fn new() -> Self {
        StackStr { buf: [0; N], len: 0 }
    }

    /// The text `args` formats to (cut to fit).
    pub fn format(args: fmt::Arguments<'_>) -> Self {
        let mut s = Self::new();
        let _ = s.write_fmt(args);
        s
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }

    /// The text and its terminating NUL.
    pub fn with_nul(&self) -> &[u8] {
        &self.buf[..=self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> Default for StackStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let c = if c == '\0' { '?' } else { c };
            let n = c.len_utf8();
            if self.len + n >= N {
                break;
            }
            c.encode_utf8(&mut self.buf[self.len..self.len + n]);
            self.len += n;
        }
        Ok(())
    }
}

/// What a memory-report line is about: a device of the table, or one
/// scullpriv instance by its key (the tty on Linux, the process on Windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Dev(Dev),
    Priv(u64),
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Who::Dev(d) => d.linux_name(f),
            Who::Priv(k) => write!(f, "scullpriv.{k}"),
        }
    }
}

/// A store's line; `Err` ends the report (a signal while waiting for a lock).
pub type StoreLine = Result<(Who, StoreStats), fmt::Error>;
/// A pipe's line: its numbers and the callers waiting to read and to write
/// (sleepers on Linux, pended IRPs on Windows).
pub type PipeLine = Result<(Dev, PipeStats, u32, u32), fmt::Error>;

/// The memory report (/proc/scullmem and /proc/scullseq, the first half of
/// STATS): the header, then a line per store as `stores` yields them, which
/// is the device table's order, scullpriv's instances last.
pub fn mem_report(w: &mut dyn Write, params: &Params, stores: impl IntoIterator<Item = StoreLine>) -> fmt::Result {
    writeln!(w, "scullmem v1 quantum={} qset={} max_size={}", params.quantum(), params.qset(), params.max_size())?;
    for line in stores {
        let (who, s) = line?;
        writeln!(w, "{who} size={} quantum={} qset={} qsets={} quanta={}", s.size, s.quantum, s.qset, s.qsets, s.quanta)?;
    }
    Ok(())
}

/// The pipe report (/proc/scullpipe, the second half of STATS): the header,
/// then a line per pipe in table order.
pub fn pipe_report(w: &mut dyn Write, params: &Params, pipes: impl IntoIterator<Item = PipeLine>) -> fmt::Result {
    writeln!(w, "scullpipe v1 buffer={}", params.p_buffer())?;
    for line in pipes {
        let (d, s, waiting_readers, waiting_writers) = line?;
        writeln!(
            w,
            "{} buffer={} rp={} wp={} readable={} writable={} readers={} writers={} waiting_readers={} waiting_writers={}",
            Who::Dev(d), s.buffer, s.rp, s.wp, s.readable, s.writable, s.readers, s.writers, waiting_readers, waiting_writers
        )?;
    }
    Ok(())
}

/// Lines from a locked table, taken only when the first is asked for (after
/// every line before it, so no other lock is taken while it is held):
/// `lock()` once, then `nth(&guard, 0)`, `nth(&guard, 1)`... until `None`.
pub fn lock_late<G, T>(lock: impl FnOnce() -> G, mut nth: impl FnMut(&G, usize) -> Option<T>) -> impl Iterator<Item = T> {
    let (mut lock, mut guard, mut i) = (Some(lock), None, 0);
    core::iter::from_fn(move || {
        if let Some(l) = lock.take() {
            guard = Some(l());
        }
        let t = nth(guard.as_ref()?, i)?;
        i += 1;
        Some(t)
    })
}

/// The STATS text: the memory report, then the pipe report.
pub fn stats(
    w: &mut dyn Write,
    params: &Params,
    stores: impl IntoIterator<Item = StoreLine>,
    pipes: impl IntoIterator<Item = PipeLine>,
) -> fmt::Result {
    mem_report(w, params, stores)?;
    pipe_report(w, params, pipes)
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
        let s = StoreStats { size: 12, quantum: 4000, qset: 1000, qsets: 1, quanta: 1 };
        let ps = PipeStats { buffer: 4000, rp: 3, wp: 5, readable: 2, writable: 3997, readers: 1, writers: 2 };
        stats(&mut t, &p, [Ok((Who::Dev(Dev::Scull(0)), s))], [Ok((Dev::Pipe(0), ps, 0, 1))]).unwrap();
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
        pipe_report(&mut t, &Params::new(), [Ok((Dev::Pipe(3), PipeStats::default(), 0, 0))]).unwrap();
        let line = core::str::from_utf8(t.as_bytes()).unwrap().lines().nth(1).unwrap();
        assert_eq!(field(line, "buffer"), Some("0"));
        assert_eq!(field(line, "writ"), None, "a key prefix is not a key");
        assert_eq!(field(line, "rp"), Some("0"));
        assert!(line.starts_with("scullpipe3 "));
        assert!(t.as_bytes().ends_with(b"\n"));
    }

    /// The whole text from the device table, byte for byte: stores in table
    /// order (pipes have no memory line), scullpriv instances last, pipes.
    #[test]
    fn stats_from_the_table() {
        use crate::devices::Table;
        let p = Params::new();
        let st = |size| StoreStats { size, quantum: 4000, qset: 1000, qsets: 1, quanta: 1 };
        let stores = Table { scull: 2, pipes: 1 }
            .iter()
            .filter(|d| d.is_store() && *d != Dev::Priv)
            .map(Who::Dev)
            .chain([Who::Priv(7)])
            .enumerate()
            .map(|(i, w)| Ok((w, st(i as u64))));
        let pipes = [Ok((Dev::Pipe(0), PipeStats::default(), 2, 0))];
        let mut b = [0u8; 1024];
        let mut t = TextBuf::new(&mut b);
        stats(&mut t, &p, stores, pipes).unwrap();
        let want = "scullmem v1 quantum=4000 qset=1000 max_size=536870912\n\
            scull0 size=0 quantum=4000 qset=1000 qsets=1 quanta=1\n\
            scull1 size=1 quantum=4000 qset=1000 qsets=1 quanta=1\n\
            scullsingle size=2 quantum=4000 qset=1000 qsets=1 quanta=1\n\
            sculluid size=3 quantum=4000 qset=1000 qsets=1 quanta=1\n\
            scullwuid size=4 quantum=4000 qset=1000 qsets=1 quanta=1\n\
            scullpriv.7 size=5 quantum=4000 qset=1000 qsets=1 quanta=1\n\
            scullpipe v1 buffer=4000\n\
            scullpipe0 buffer=0 rp=0 wp=0 readable=0 writable=0 readers=0 writers=0 waiting_readers=2 waiting_writers=0\n";
        assert_eq!(core::str::from_utf8(t.as_bytes()).unwrap(), want);
        // A failed line ends the report there.
        let mut c = Counter::default();
        let bad = [Ok((Who::Priv(1), st(0))), Err(fmt::Error), Ok((Who::Priv(2), st(0)))];
        assert!(mem_report(&mut c, &p, bad).is_err());
    }

    #[test]
    fn lock_late_locks_at_the_first_line() {
        let locked = core::cell::Cell::new(0);
        let table = [5u64, 6];
        let it = lock_late(|| { locked.set(locked.get() + 1); &table }, |t, i| t.get(i).copied());
        let mut it = [1u64].into_iter().chain(it);
        assert_eq!(it.next(), Some(1));
        assert_eq!(locked.get(), 0, "locked before its first line");
        assert_eq!(it.collect::<std::vec::Vec<_>>(), [5, 6]);
        assert_eq!(locked.get(), 1);
    }

    #[test]
    fn stack_str_cuts_at_a_char_and_ends_with_nul() {
        let s = StackStr::<6>::format(format_args!("ab{}c\u{e9}xyz", '\0'));
        assert_eq!(s.as_str(), "ab?c");
        assert_eq!(s.with_nul(), b"ab?c\0");
        let s = StackStr::<8>::format(format_args!("{}", Who::Dev(Dev::Pipe(12))));
        assert_eq!(s.as_str(), "scullpi");
        assert_eq!(StackStr::<1>::format(format_args!("x")).with_nul(), b"\0");
    }
}

//! scullpipe: a ring buffer with LDD3's rp/wp convention (one slot always
//! free, so `rp == wp` means empty), plus the open/release/read/write state
//! machine. Blocking decisions come back as [`Error::WouldBlock`]; each driver
//! decides how to wait (a wait queue on Linux, a pended IRP on Windows, a
//! condition variable on the host).
//!
//! Differences from LDD3, all deliberate:
//! - A transfer handles wrap-around in one call (LDD3 stops at the buffer end).
//! - The buffer size is fixed when the buffer is allocated (first open after
//!   all handles closed). `P_IOCTSIZE` applies then; LDD3 changed the size of
//!   an existing buffer on open and could overrun it.
//! - Opening does not discard unread data (LDD3 reset rp/wp on every open).
//! - A zero-length read or write returns 0 at once instead of blocking.
//! - A write of at most [`PIPE_ATOMIC`] bytes (and no more than the ring holds)
//!   is atomic, as POSIX requires of pipes for `PIPE_BUF`: it waits for room
//!   for all of it instead of writing part. So records from several writers
//!   never interleave. Larger writes are partial, as in LDD3.

use crate::error::{Error, Result};
use crate::mem::Platform;
use core::ops::DerefMut;

/// Writes up to this many bytes are all-or-nothing (POSIX's minimum `PIPE_BUF`).
pub const PIPE_ATOMIC: usize = 512;

/// A byte ring over a buffer of `len >= 2` bytes, holding at most `len - 1`.
#[derive(Debug)]
pub struct Ring<B> {
    buf: B,
    rp: usize,
    wp: usize,
}

impl<B: DerefMut<Target = [u8]>> Ring<B> {
    /// A ring over `buf`. Fails with `Invalid` if it has fewer than 2 bytes.
    pub fn new(buf: B) -> Result<Self> {
        if buf.len() < 2 {
            return Err(Error::Invalid);
        }
        Ok(Ring { buf, rp: 0, wp: 0 })
    }

    /// Size of the underlying buffer.
    pub fn buffer_size(&self) -> usize {
        self.buf.len()
    }

    /// Most bytes the ring can hold.
    pub fn capacity(&self) -> usize {
        self.buf.len() - 1
    }

    /// Read pointer (offset in the buffer).
    pub fn rp(&self) -> usize {
        self.rp
    }

    /// Write pointer (offset in the buffer).
    pub fn wp(&self) -> usize {
        self.wp
    }

    /// Bytes that can be read now.
    pub fn readable(&self) -> usize {
        if self.wp >= self.rp {
            self.wp - self.rp
        } else {
            self.buf.len() - self.rp + self.wp
        }
    }

    /// Bytes that can be written now (LDD3's `spacefree`).
    pub fn writable(&self) -> usize {
        self.capacity() - self.readable()
    }

    /// Empties the ring.
    pub fn reset(&mut self) {
        self.rp = 0;
        self.wp = 0;
    }

    /// Moves up to `max` bytes out, in at most two pieces, through `copy_out`.
    /// `rp` advances only past pieces that were copied. Returns the bytes moved,
    /// or the first piece's error.
    pub fn read_with(&mut self, max: usize, mut copy_out: impl FnMut(&[u8]) -> Result<()>) -> Result<usize> {
        let total = max.min(self.readable());
        let mut done = 0;
        while done < total {
            let contiguous = if self.wp >= self.rp { self.wp - self.rp } else { self.buf.len() - self.rp };
            let n = contiguous.min(total - done);
            if let Err(e) = copy_out(&self.buf[self.rp..self.rp + n]) {
                return if done > 0 { Ok(done) } else { Err(e) };
            }
            self.rp = (self.rp + n) % self.buf.len();
            done += n;
        }
        Ok(done)
    }

    /// Moves up to `max` bytes in, in at most two pieces, through `copy_in`.
    /// `wp` advances only past pieces that were filled.
    pub fn write_with(&mut self, max: usize, mut copy_in: impl FnMut(&mut [u8]) -> Result<()>) -> Result<usize> {
        let total = max.min(self.writable());
        let mut done = 0;
        while done < total {
            let len = self.buf.len();
            let contiguous = if self.wp >= self.rp {
                // Up to the end, but never onto rp when rp == 0 (keep a slot free).
                len - self.wp - usize::from(self.rp == 0)
            } else {
                self.rp - self.wp - 1
            };
            let n = contiguous.min(total - done);
            if let Err(e) = copy_in(&mut self.buf[self.wp..self.wp + n]) {
                return if done > 0 { Ok(done) } else { Err(e) };
            }
            self.wp = (self.wp + n) % len;
            done += n;
        }
        Ok(done)
    }

    /// Convenience: read into a slice.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let mut at = 0;
        let r = self.read_with(out.len(), |src| {
            out[at..at + src.len()].copy_from_slice(src);
            at += src.len();
            Ok(())
        });
        r.unwrap_or(0)
    }

    /// Convenience: write from a slice.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let mut at = 0;
        let r = self.write_with(data.len(), |dst| {
            dst.copy_from_slice(&data[at..at + dst.len()]);
            at += dst.len();
            Ok(())
        });
        r.unwrap_or(0)
    }
}

/// Numbers describing a pipe, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PipeStats {
    /// Size of the allocated buffer, 0 when none is allocated.
    pub buffer: usize,
    pub rp: usize,
    pub wp: usize,
    pub readable: usize,
    pub writable: usize,
    pub readers: u32,
    pub writers: u32,
}

/// One scullpipe device's state. The driver holds its lock around every call.
pub struct Pipe<P: Platform> {
    ring: Option<Ring<P::Block>>,
    readers: u32,
    writers: u32,
}

impl<P: Platform> Default for Pipe<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Platform> Pipe<P> {
    /// A closed pipe with no buffer.
    pub const fn new() -> Self {
        Pipe { ring: None, readers: 0, writers: 0 }
    }

    /// Opens for reading and/or writing. Allocates the buffer (`buffer_size`
    /// bytes, the current `scull_p_buffer`) if there is none. `NoMemory` leaves
    /// the pipe as it was.
    pub fn open(&mut self, platform: &P, read: bool, write: bool, buffer_size: usize) -> Result<()> {
        let mut spare = if self.has_buffer() { None } else { Some(platform.alloc_block(buffer_size.max(2))?) };
        self.open_with(&mut spare, read, write)
    }

    /// True while a buffer is allocated (some reader or writer holds it).
    pub fn has_buffer(&self) -> bool {
        self.ring.is_some()
    }

    /// [`Pipe::open`] with a buffer the caller allocated beforehand (outside
    /// its spin lock): a pipe with no buffer takes `spare` (`NoMemory` if
    /// there is none); one that has a buffer leaves `spare` to the caller
    /// to free.
    pub fn open_with(&mut self, spare: &mut Option<P::Block>, read: bool, write: bool) -> Result<()> {
        if self.ring.is_none() {
            let block = spare.take().ok_or(Error::NoMemory)?;
            self.ring = Some(Ring::new(block)?);
        }
        self.readers += u32::from(read);
        self.writers += u32::from(write);
        Ok(())
    }

    /// Releases one open. The buffer (and any unread data) is freed when the
    /// last reader and writer are gone, as in LDD3.
    pub fn release(&mut self, read: bool, write: bool) {
        self.readers = self.readers.saturating_sub(u32::from(read));
        self.writers = self.writers.saturating_sub(u32::from(write));
        if self.readers == 0 && self.writers == 0 {
            self.ring = None;
        }
    }

    /// Reads up to `count` bytes. `WouldBlock` if empty (and `count > 0`).
    pub fn read_with(&mut self, count: usize, copy_out: impl FnMut(&[u8]) -> Result<()>) -> Result<usize> {
        if count == 0 {
            return Ok(0);
        }
        let ring = self.ring.as_mut().ok_or(Error::NoDevice)?;
        if ring.readable() == 0 {
            return Err(Error::WouldBlock);
        }
        ring.read_with(count, copy_out)
    }

    /// Writes up to `count` bytes (as many as fit). `WouldBlock` if full, or
    /// if an atomic write (see [`PIPE_ATOMIC`]) does not fit whole.
    pub fn write_with(&mut self, count: usize, copy_in: impl FnMut(&mut [u8]) -> Result<()>) -> Result<usize> {
        if count == 0 {
            return Ok(0);
        }
        let ring = self.ring.as_mut().ok_or(Error::NoDevice)?;
        let free = ring.writable();
        let atomic = count <= PIPE_ATOMIC.min(ring.capacity());
        if free == 0 || (atomic && free < count) {
            return Err(Error::WouldBlock);
        }
        ring.write_with(count, copy_in)
    }

    /// Can a write of `count` bytes make progress now (the wake-up test for a
    /// blocked writer)?
    pub fn can_write(&self, count: usize) -> bool {
        match &self.ring {
            Some(r) => {
                let need = if count <= PIPE_ATOMIC.min(r.capacity()) { count.max(1) } else { 1 };
                r.writable() >= need
            }
            None => false,
        }
    }

    /// Convenience: read into a slice.
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize> {
        let mut at = 0;
        self.read_with(out.len(), |src| {
            out[at..at + src.len()].copy_from_slice(src);
            at += src.len();
            Ok(())
        })
    }

    /// Convenience: write from a slice.
    pub fn write(&mut self, data: &[u8]) -> Result<usize> {
        let mut at = 0;
        self.write_with(data.len(), |dst| {
            dst.copy_from_slice(&data[at..at + dst.len()]);
            at += dst.len();
            Ok(())
        })
    }

    /// Can a read make progress now? (POLLIN)
    pub fn readable(&self) -> bool {
        self.ring.as_ref().is_some_and(|r| r.readable() > 0)
    }

    /// Can a write make progress now? (POLLOUT)
    pub fn writable(&self) -> bool {
        self.ring.as_ref().is_some_and(|r| r.writable() > 0)
    }

    pub fn readers(&self) -> u32 {
        self.readers
    }

    pub fn writers(&self) -> u32 {
        self.writers
    }

    pub fn stats(&self) -> PipeStats {
        match &self.ring {
            Some(r) => PipeStats {
                buffer: r.buffer_size(),
                rp: r.rp(),
                wp: r.wp(),
                readable: r.readable(),
                writable: r.writable(),
                readers: self.readers,
                writers: self.writers,
            },
            None => PipeStats { readers: self.readers, writers: self.writers, ..PipeStats::default() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostPlatform;
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    fn ring(n: usize) -> Ring<Vec<u8>> {
        Ring::new(vec![0u8; n]).unwrap()
    }

    #[test]
    fn ring_keeps_one_slot_free() {
        let mut r = ring(5);
        assert_eq!(r.capacity(), 4);
        assert_eq!(r.write(b"abcdef"), 4);
        assert_eq!(r.writable(), 0);
        assert_eq!(r.readable(), 4);
        let mut o = [0u8; 8];
        assert_eq!(r.read(&mut o), 4);
        assert_eq!(&o[..4], b"abcd");
        assert!(Ring::new(vec![0u8; 1]).is_err());
    }

    #[test]
    fn ring_wraps_in_one_call() {
        let mut r = ring(8);
        let mut o = [0u8; 8];
        assert_eq!(r.write(b"12345"), 5);
        assert_eq!(r.read(&mut o[..4]), 4);
        // rp=4, wp=5: writing 6 bytes wraps.
        assert_eq!(r.write(b"abcdef"), 6);
        assert_eq!((r.rp(), r.wp()), (4, 3));
        assert_eq!(r.read(&mut o), 7);
        assert_eq!(&o[..7], b"5abcdef");
        assert_eq!(r.readable(), 0);
    }

    #[test]
    fn ring_fifo_order_over_many_wraps() {
        let mut r = ring(7);
        let mut next_in = 0u8;
        let mut next_out = 0u8;
        for round in 0..200 {
            let n = (round * 7 + 3) % 6 + 1;
            let data: Vec<u8> = (0..n).map(|i| next_in.wrapping_add(i as u8)).collect();
            let w = r.write(&data);
            next_in = next_in.wrapping_add(w as u8);
            let mut o = vec![0u8; (round % 5) + 1];
            let got = r.read(&mut o);
            for b in &o[..got] {
                assert_eq!(*b, next_out);
                next_out = next_out.wrapping_add(1);
            }
        }
    }

    #[test]
    fn ring_partial_copy_failure_advances_only_what_was_copied() {
        let mut r = ring(8);
        r.write(b"12345");
        let mut o = [0u8; 2];
        r.read(&mut o);
        r.write(b"abcd"); // wraps: rp=2, wp=1
        let mut pieces = 0;
        let got = r.read_with(8, |_| {
            pieces += 1;
            if pieces == 2 {
                Err(Error::Fault)
            } else {
                Ok(())
            }
        });
        assert_eq!(got, Ok(6), "first contiguous piece only");
        assert_eq!(r.readable(), 1);
        assert_eq!(r.write_with(1, |_| Err(Error::Fault)), Err(Error::Fault));
        assert_eq!(r.readable(), 1, "a failed write adds nothing");
    }

    #[test]
    fn pipe_lifecycle() {
        let p = HostPlatform::new();
        let mut pipe: Pipe<HostPlatform> = Pipe::new();
        assert_eq!(pipe.read(&mut [0u8; 4]), Err(Error::NoDevice), "not open");
        pipe.open(&p, true, false, 16).unwrap();
        pipe.open(&p, false, true, 99).unwrap();
        assert_eq!(pipe.stats().buffer, 16, "size fixed at allocation");
        assert_eq!(pipe.read(&mut [0u8; 4]), Err(Error::WouldBlock));
        assert_eq!(pipe.read(&mut []), Ok(0), "zero-length read does not block");
        assert!(!pipe.readable());
        assert!(pipe.writable());
        assert_eq!(pipe.write(&[1u8; 20]), Ok(15));
        assert_eq!(pipe.write(b"x"), Err(Error::WouldBlock));
        assert!(!pipe.writable());
        assert_eq!(pipe.write(b""), Ok(0));
        assert!(!pipe.can_write(1));
        let mut o = [0u8; 10];
        assert_eq!(pipe.read(&mut o), Ok(10));
        // Opening again keeps unread data (LDD3 discarded it).
        pipe.open(&p, true, false, 64).unwrap();
        assert_eq!(pipe.stats().readable, 5);
        assert_eq!((pipe.readers(), pipe.writers()), (2, 1));
        pipe.release(true, false);
        pipe.release(true, false);
        assert_eq!(pipe.stats().buffer, 16, "a writer still holds it");
        pipe.release(false, true);
        assert_eq!(pipe.stats(), PipeStats::default());
        assert_eq!(p.stats().outstanding(), 0, "last close frees the buffer");
        pipe.open(&p, true, true, 64).unwrap();
        assert_eq!(pipe.stats().buffer, 64, "new size applies at the next allocation");
        pipe.release(true, true);
    }

    #[test]
    fn open_with_takes_the_spare_only_when_it_has_no_buffer() {
        let p = HostPlatform::new();
        let mut pipe: Pipe<HostPlatform> = Pipe::new();
        assert_eq!(pipe.open_with(&mut None, true, false), Err(Error::NoMemory));
        assert_eq!((pipe.readers(), pipe.has_buffer()), (0, false), "a refused open changes nothing");
        let mut spare = Some(p.alloc_block(8).unwrap());
        pipe.open_with(&mut spare, true, false).unwrap();
        assert!(spare.is_none() && pipe.has_buffer());
        let mut late = Some(p.alloc_block(32).unwrap());
        pipe.open_with(&mut late, false, true).unwrap();
        assert!(late.is_some(), "a second opener's spare is left to free");
        assert_eq!((pipe.stats().buffer, pipe.readers(), pipe.writers()), (8, 1, 1));
        drop(late);
        pipe.release(true, true);
        assert_eq!(p.stats().outstanding(), 0);
    }

    #[test]
    fn small_writes_are_atomic() {
        let p = HostPlatform::new();
        let mut pipe: Pipe<HostPlatform> = Pipe::new();
        pipe.open(&p, true, true, 1024).unwrap();
        assert_eq!(pipe.write(&[1u8; 1020]), Ok(1020), "a large write fills what it can");
        assert!(pipe.can_write(3) && !pipe.can_write(4));
        assert_eq!(pipe.write(&[2u8; 4]), Err(Error::WouldBlock), "4 bytes don't fit whole: no partial write");
        assert_eq!(pipe.write(&[2u8; 3]), Ok(3));
        let mut o = [0u8; 600];
        assert_eq!(pipe.read(&mut o), Ok(600));
        assert_eq!(pipe.write(&[3u8; 600]), Ok(600), "600 > PIPE_ATOMIC: partial allowed (and here whole)");
        assert_eq!(pipe.write(&[4u8; 600]), Err(Error::WouldBlock), "full");
        pipe.release(true, true);
        // A ring smaller than the write cannot be atomic: partial writes.
        pipe.open(&p, true, true, 8).unwrap();
        assert_eq!(pipe.write(&[5u8; 100]), Ok(7));
        pipe.release(true, true);
    }

    #[test]
    fn pipe_open_fails_cleanly() {
        let p = HostPlatform::new();
        let mut pipe: Pipe<HostPlatform> = Pipe::new();
        p.stats().fail_after(1);
        assert_eq!(pipe.open(&p, true, false, 16), Err(Error::NoMemory));
        assert_eq!((pipe.readers(), pipe.writers()), (0, 0));
        assert_eq!(p.stats().outstanding(), 0);
        assert!(pipe.open(&p, true, false, 16).is_ok());
    }
}

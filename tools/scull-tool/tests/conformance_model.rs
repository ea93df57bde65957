//! The conformance suite passes on the model, and fails on a deliberately
//! broken target: proof that the cases can fail.

use scull_core::devices::Dev;
use scull_core::ioctl::Cmd;
use scull_core::store::Whence;
use scull_core::Error;
use scull_tool::conformance;
use scull_tool::backend::model::ModelTarget;
use scull_tool::backend::{Caps, Handle, Join, OpenOpts, Pending, Ready, Target, Who};
use std::time::Duration;

#[test]
fn model_passes_every_case() {
    let t = ModelTarget::new();
    let s = conformance::run(&t, None);
    assert_eq!(s.failed, 0);
    assert_eq!(s.skipped, 0);
    assert!(s.passed >= 50, "{s:?}");
    assert_eq!(t.model().unload(), 0, "no block outstanding after the suite");
}

/// Faults to inject into the model.
#[derive(Clone, Copy)]
enum Bug {
    /// Truncating opens don't trim.
    NoTrim,
    /// Non-blocking reads block... reported as success with 0 bytes.
    NonblockReturnsZero,
    /// Privileged ioctls are not refused.
    NoPrivilegeCheck,
    /// SEEK_END is off by one.
    SeekEndOffByOne,
}

struct Broken {
    inner: ModelTarget,
    bug: Bug,
}

struct BrokenHandle {
    inner: Box<dyn Handle>,
    bug: Bug,
    nonblock: bool,
}

impl Handle for BrokenHandle {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        match (self.bug, self.inner.read(buf)) {
            (Bug::NonblockReturnsZero, Err(Error::WouldBlock)) if self.nonblock => Ok(0),
            (_, r) => r,
        }
    }
    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        self.inner.write(buf)
    }
    fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error> {
        match (self.bug, whence) {
            (Bug::SeekEndOffByOne, Whence::End) => self.inner.seek(whence, off + 1),
            _ => self.inner.seek(whence, off),
        }
    }
    fn set_len(&mut self, len: u64) -> Result<(), Error> {
        self.inner.set_len(len)
    }
    fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32, Error> {
        match (self.bug, self.inner.ioctl(cmd, value)) {
            (Bug::NoPrivilegeCheck, Err(Error::Perm)) => Ok(0),
            (_, r) => r,
        }
    }
    fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
        self.inner.ioctl_raw(code, input, out_len)
    }
    fn poll(&mut self) -> Result<Ready, Error> {
        self.inner.poll()
    }
}

impl Target for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn caps(&self) -> Caps {
        self.inner.caps()
    }
    fn open_as(&self, who: Who, dev: Dev, mut opts: OpenOpts) -> Result<Box<dyn Handle>, Error> {
        if matches!(self.bug, Bug::NoTrim) && opts.truncate {
            opts = OpenOpts { read: true, write: true, nonblock: opts.nonblock, truncate: false };
        }
        let inner = self.inner.open_as(who, dev, opts)?;
        Ok(Box::new(BrokenHandle { inner, bug: self.bug, nonblock: opts.nonblock }))
    }
    fn spawn_writer(&self, dev: Dev, data: Vec<u8>, delay: Duration) -> Result<Box<dyn Join>, Error> {
        self.inner.spawn_writer(dev, data, delay)
    }
    fn read_cancellable(&self, dev: Dev, len: usize) -> Result<Box<dyn Pending>, Error> {
        self.inner.read_cancellable(dev, len)
    }
}

fn failures(bug: Bug, filter: &str) -> usize {
    let t = Broken { inner: ModelTarget::new(), bug };
    conformance::run(&t, Some(filter)).failed
}

#[test]
fn cases_catch_injected_bugs() {
    assert!(failures(Bug::NoTrim, "store_trim_on_truncating_open") > 0);
    assert!(failures(Bug::NonblockReturnsZero, "pipe_nonblocking_read_empty") > 0);
    assert!(failures(Bug::NoPrivilegeCheck, "ioctl_privileged_commands_refused") > 0);
    assert!(failures(Bug::SeekEndOffByOne, "seek_set_cur_end") > 0);
}

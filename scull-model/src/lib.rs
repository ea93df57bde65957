//! The host model device: scull-core composed on std the way the drivers
//! compose it on their kernels. A `Mutex` stands in for the per-device
//! semaphore, `Condvar`s for wait queues / pended IRPs, a cancel token for
//! signals / CancelIoEx.
//!
//! Open-time rules follow LDD3 (Linux): a write-only open of a store device
//! trims it, as does an explicit truncate.

use scull_core::access::{Caller, OwnerUid, PrivTable, SingleOpen, WaitUid, PRIV_SLOTS};
use scull_core::devices::{Dev, Table};
use scull_core::geometry::{Geometry, Params};
use scull_core::host::HostPlatform;
use scull_core::ioctl::{self, ArgOut, Cmd};
use scull_core::pipe::Pipe;
use scull_core::report::{self, Who};
use scull_core::store::{self, Store, Whence};
use scull_core::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub euid: u32,
    /// CAP_SYS_ADMIN / CAP_DAC_OVERRIDE / administrator.
    pub privileged: bool,
    /// Controlling tty (scullpriv's key); None: no tty.
    pub tty: Option<u32>,
}

impl Identity {
    pub const ROOT: Identity = Identity { uid: 0, euid: 0, privileged: true, tty: Some(1) };
    pub const USER: Identity = Identity { uid: 1001, euid: 1001, privileged: false, tty: Some(2) };

    fn caller(&self) -> Caller<u32> {
        Caller { uid: self.uid, euid: self.euid, privileged: self.privileged }
    }
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub read: bool,
    pub write: bool,
    pub nonblock: bool,
    pub truncate: bool,
}

/// A cancel token: the model's signal / CancelIoEx.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long a blocked caller sleeps before re-checking its cancel token.
const POLL_CANCEL: Duration = Duration::from_millis(20);

struct PipeState {
    pipe: Pipe<HostPlatform>,
    waiting_readers: u32,
    waiting_writers: u32,
}

impl PipeState {
    fn waiting(&mut self, side: Side) -> &mut u32 {
        match side {
            Side::Reader => &mut self.waiting_readers,
            Side::Writer => &mut self.waiting_writers,
        }
    }
}

struct PipeDev {
    state: Mutex<PipeState>,
    readable: Condvar,
    writable: Condvar,
}

struct Wuid {
    policy: Mutex<WaitUid<u32>>,
    freed: Condvar,
}

/// The whole "driver": every device, the global parameters and the platform.
pub struct Model {
    params: Params,
    platform: HostPlatform,
    scull: Vec<Mutex<Store<HostPlatform>>>,
    pipes: Vec<PipeDev>,
    single: SingleOpen,
    single_store: Mutex<Store<HostPlatform>>,
    uid: Mutex<OwnerUid<u32>>,
    uid_store: Mutex<Store<HostPlatform>>,
    wuid: Wuid,
    wuid_store: Mutex<Store<HostPlatform>>,
    privs: Mutex<PrivTable<u32, Store<HostPlatform>, PRIV_SLOTS>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Model {
    /// A model with LDD3's parameters.
    pub fn new() -> Arc<Model> {
        Model::with(4, 4, Params::new())
    }

    /// A model with `nr_devs` scull and `p_nr_devs` pipe devices.
    pub fn with(nr_devs: usize, p_nr_devs: usize, params: Params) -> Arc<Model> {
        let platform = HostPlatform::new();
        let g = params.geometry();
        let store = || Mutex::new(Store::new(platform.clone(), g));
        Arc::new(Model {
            scull: (0..nr_devs).map(|_| store()).collect(),
            pipes: (0..p_nr_devs)
                .map(|_| PipeDev {
                    state: Mutex::new(PipeState { pipe: Pipe::new(), waiting_readers: 0, waiting_writers: 0 }),
                    readable: Condvar::new(),
                    writable: Condvar::new(),
                })
                .collect(),
            single: SingleOpen::new(),
            single_store: store(),
            uid: Mutex::new(OwnerUid::new()),
            uid_store: store(),
            wuid: Wuid { policy: Mutex::new(WaitUid::new()), freed: Condvar::new() },
            wuid_store: store(),
            privs: Mutex::new(PrivTable::new()),
            params,
            platform: platform.clone(),
        })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn platform(&self) -> &HostPlatform {
        &self.platform
    }

    pub fn nr_devs(&self) -> usize {
        self.scull.len()
    }

    pub fn p_nr_devs(&self) -> usize {
        self.pipes.len()
    }

    /// Opens a device. Blocking opens (scullwuid) wait unless `nonblock`, and
    /// give up with `Interrupted` when `cancel` fires.
    pub fn open(self: &Arc<Self>, dev: Dev, flags: Flags, who: Identity, cancel: &Cancel) -> Result<File> {
        let mut priv_key = None;
        match dev {
            Dev::Scull(n) if (n as usize) < self.scull.len() => {}
            Dev::Pipe(n) if (n as usize) < self.pipes.len() => {
                let p = &self.pipes[n as usize];
                lock(&p.state).pipe.open(&self.platform, flags.read, flags.write, self.params.p_buffer() as usize)?;
            }
            Dev::Scull(_) | Dev::Pipe(_) => return Err(Error::NoDevice),
            Dev::Single => self.single.open()?,
            Dev::Uid => lock(&self.uid).open(&who.caller())?,
            Dev::Wuid => {
                let mut w = lock(&self.wuid.policy);
                loop {
                    match w.open(&who.caller()) {
                        Ok(()) => break,
                        Err(Error::WouldBlock) if flags.nonblock => return Err(Error::WouldBlock),
                        Err(Error::WouldBlock) => {
                            if cancel.is_cancelled() {
                                return Err(Error::Interrupted);
                            }
                            w = self.wuid.freed.wait_timeout(w, POLL_CANCEL).unwrap_or_else(|p| p.into_inner()).0;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Dev::Priv => {
                let key = who.tty.ok_or(Error::Invalid)?;
                let g = self.params.geometry();
                lock(&self.privs).lookup_or_create(key, || Ok(Store::new(self.platform.clone(), g)))?;
                priv_key = Some(key);
            }
        }
        let file = File { model: self.clone(), dev, pos: 0, flags, who, priv_key };
        // LDD3: a write-only open trims the device (to the current defaults).
        if dev.is_store() && (flags.truncate || (flags.write && !flags.read)) {
            let g = self.params.geometry();
            file.with_store(|s| {
                s.trim(g);
                Ok(())
            })?;
        }
        Ok(file)
    }

    /// The device table of this model.
    pub fn table(&self) -> Table {
        Table { scull: self.scull.len() as u8, pipes: self.pipes.len() as u8 }
    }

    /// The one store of a scull, scullsingle, sculluid or scullwuid device
    /// (pipes have none, scullpriv one per key).
    fn store(&self, d: Dev) -> Option<&Mutex<Store<HostPlatform>>> {
        d.own_store(&self.scull, &self.single_store, &self.uid_store, &self.wuid_store)
    }

    /// The STATS report text.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let stores = self.table().iter().filter_map(|d| Some(Ok((Who::Dev(d), lock(self.store(d)?).stats()))));
        let privs = report::lock_late(|| lock(&self.privs), |t, i| t.iter().nth(i).map(|(k, st)| Ok((Who::Priv(u64::from(*k)), st.stats()))));
        let pipes = self.pipes.iter().enumerate().map(|(i, p)| {
            let st = lock(&p.state);
            Ok((Dev::Pipe(i as u8), st.pipe.stats(), st.waiting_readers, st.waiting_writers))
        });
        let _ = report::stats(&mut s, &self.params, stores.chain(privs), pipes);
        s
    }

    /// Frees every device's data (module unload). Outstanding blocks are 0 afterwards
    /// if no file is open.
    pub fn unload(&self) -> usize {
        for d in &self.scull {
            lock(d).trim(Geometry::DEFAULT);
        }
        for d in [&self.single_store, &self.uid_store, &self.wuid_store] {
            lock(d).trim(Geometry::DEFAULT);
        }
        lock(&self.privs).clear();
        self.platform.stats().outstanding()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Reader,
    Writer,
}

/// Runs `op` on the pipe, sleeping while it would block (the model's wait
/// queue). Progress wakes the other side; a cancel ends the wait.
fn pipe_wait(p: &PipeDev, side: Side, nonblock: bool, cancel: &Cancel, mut op: impl FnMut(&mut PipeState) -> Result<usize>) -> Result<usize> {
    let (mine, theirs) = match side {
        Side::Reader => (&p.readable, &p.writable),
        Side::Writer => (&p.writable, &p.readable),
    };
    let mut st = lock(&p.state);
    loop {
        match op(&mut st) {
            Ok(n) => {
                theirs.notify_all();
                return Ok(n);
            }
            Err(Error::WouldBlock) if !nonblock => {
                if cancel.is_cancelled() {
                    return Err(Error::Interrupted);
                }
                *st.waiting(side) += 1;
                st = mine.wait_timeout(st, POLL_CANCEL).unwrap_or_else(|e| e.into_inner()).0;
                *st.waiting(side) -= 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// An open device file.
pub struct File {
    model: Arc<Model>,
    dev: Dev,
    pos: u64,
    flags: Flags,
    who: Identity,
    priv_key: Option<u32>,
}

impl File {
    fn with_store<T>(&self, f: impl FnOnce(&mut Store<HostPlatform>) -> Result<T>) -> Result<T> {
        let m = &self.model;
        match self.dev {
            Dev::Priv => {
                let mut t = lock(&m.privs);
                let key = self.priv_key.ok_or(Error::Invalid)?;
                let i = t.find(&key).ok_or(Error::NoDevice)?;
                f(t.get_mut(i).ok_or(Error::NoDevice)?)
            }
            Dev::Pipe(_) => Err(Error::NotSeekable),
            d => f(&mut lock(m.store(d).ok_or(Error::NoDevice)?)),
        }
    }

    fn pipe(&self) -> Option<&PipeDev> {
        match self.dev {
            Dev::Pipe(n) => Some(&self.model.pipes[n as usize]),
            _ => None,
        }
    }

    pub fn dev(&self) -> Dev {
        self.dev
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// read(2).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.read_cancellable(buf, &Cancel::new())
    }

    /// read(2) whose wait can be interrupted through `cancel`.
    pub fn read_cancellable(&mut self, buf: &mut [u8], cancel: &Cancel) -> Result<usize> {
        if !self.flags.read {
            return Err(Error::Invalid);
        }
        let Some(p) = self.pipe() else {
            let pos = self.pos;
            let n = self.with_store(|s| s.read(pos, buf))?;
            self.pos += n as u64;
            return Ok(n);
        };
        pipe_wait(p, Side::Reader, self.flags.nonblock, cancel, |st| st.pipe.read(buf))
    }

    /// write(2). A pipe write blocks until some space is free, then writes
    /// what fits (partial counts, as LDD3).
    pub fn write(&mut self, data: &[u8]) -> Result<usize> {
        self.write_cancellable(data, &Cancel::new())
    }

    pub fn write_cancellable(&mut self, data: &[u8], cancel: &Cancel) -> Result<usize> {
        if !self.flags.write {
            return Err(Error::Invalid);
        }
        let Some(p) = self.pipe() else {
            let pos = self.pos;
            let n = self.with_store(|s| s.write(pos, data))?;
            self.pos += n as u64;
            return Ok(n);
        };
        pipe_wait(p, Side::Writer, self.flags.nonblock, cancel, |st| st.pipe.write(data))
    }

    /// llseek.
    pub fn seek(&mut self, whence: Whence, off: i64) -> Result<u64> {
        let size = self.with_store(|s| Ok(s.size()))?;
        self.pos = store::seek(self.pos, size, whence, off)?;
        Ok(self.pos)
    }

    /// ftruncate.
    pub fn set_len(&mut self, len: u64) -> Result<()> {
        if !self.flags.write {
            return Err(Error::Invalid);
        }
        self.with_store(|s| s.set_len(len))
    }

    /// A typed scull ioctl.
    pub fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32> {
        if cmd == Cmd::Stats {
            return Ok(self.model.report().len() as i32);
        }
        ioctl::execute(&self.model.params, cmd, value, self.who.privileged)
    }

    /// A raw ioctl with Windows buffer rules (`METHOD_BUFFERED`).
    pub fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>> {
        let cmd = Cmd::from_windows_code(code)?;
        if input.len() < cmd.windows_in_len() || out_len < cmd.windows_out_len() {
            return Err(Error::BufferTooSmall);
        }
        if cmd == Cmd::Stats {
            let text = self.model.report();
            if out_len < text.len() {
                return Err(Error::BufferTooSmall);
            }
            return Ok(text.into_bytes());
        }
        let value = if cmd.windows_in_len() == 4 { i32::from_le_bytes([input[0], input[1], input[2], input[3]]) } else { 0 };
        let out = ioctl::execute(&self.model.params, cmd, value, self.who.privileged)?;
        Ok(match cmd.arg_out() {
            ArgOut::None => Vec::new(),
            _ => out.to_le_bytes().to_vec(),
        })
    }

    /// poll: (readable, writable) now.
    pub fn poll(&self) -> (bool, bool) {
        match self.pipe() {
            Some(p) => {
                let st = lock(&p.state);
                (st.pipe.readable(), st.pipe.writable())
            }
            None => (true, true),
        }
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let m = &self.model;
        match self.dev {
            Dev::Pipe(n) => {
                let p = &m.pipes[n as usize];
                lock(&p.state).pipe.release(self.flags.read, self.flags.write);
                p.readable.notify_all();
                p.writable.notify_all();
            }
            Dev::Single => m.single.release(),
            Dev::Uid => lock(&m.uid).release(),
            Dev::Wuid => {
                if lock(&m.wuid.policy).release() {
                    m.wuid.freed.notify_all();
                }
            }
            Dev::Scull(_) | Dev::Priv => {}
        }
    }
}

/// Formats a device's display name (`scull0`, `scullpipe1`...).
pub fn linux_name(dev: Dev) -> String {
    let mut s = String::new();
    let _ = dev.linux_name(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw() -> Flags {
        Flags { read: true, write: true, ..Flags::default() }
    }

    #[test]
    fn store_roundtrip_and_trim_on_write_only_open() {
        let m = Model::new();
        let c = Cancel::new();
        let mut f = m.open(Dev::Scull(0), rw(), Identity::ROOT, &c).unwrap();
        assert_eq!(f.write(b"hello"), Ok(5));
        f.seek(Whence::Set, 0).unwrap();
        let mut b = [0u8; 8];
        assert_eq!(f.read(&mut b), Ok(5));
        drop(f);
        let w = m.open(Dev::Scull(0), Flags { write: true, ..Flags::default() }, Identity::ROOT, &c).unwrap();
        drop(w);
        assert_eq!(m.platform().stats().outstanding(), 0, "write-only open trimmed");
    }

    #[test]
    fn pipe_blocking_reader_is_woken() {
        let m = Model::new();
        let c = Cancel::new();
        let mut r = m.open(Dev::Pipe(0), Flags { read: true, ..Flags::default() }, Identity::ROOT, &c).unwrap();
        let m2 = m.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut w = m2.open(Dev::Pipe(0), Flags { write: true, ..Flags::default() }, Identity::ROOT, &Cancel::new()).unwrap();
            w.write(b"wake").unwrap()
        });
        let mut b = [0u8; 8];
        assert_eq!(r.read(&mut b), Ok(4));
        assert_eq!(&b[..4], b"wake");
        assert_eq!(t.join().unwrap(), 4);
    }

    #[test]
    fn cancel_interrupts_a_blocked_read() {
        let m = Model::new();
        let c = Cancel::new();
        let mut r = m.open(Dev::Pipe(1), Flags { read: true, ..Flags::default() }, Identity::ROOT, &c).unwrap();
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c2.cancel();
        });
        assert_eq!(r.read_cancellable(&mut [0u8; 4], &c), Err(Error::Interrupted));
        t.join().unwrap();
    }
}

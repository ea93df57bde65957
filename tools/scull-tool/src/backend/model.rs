//! The host model target: scull-model in-process. `Who::Me` is root with
//! tty 1; `Who::Other` is uid 1001 without privilege, tty 2.

use super::{Caps, Handle, Join, OpenOpts, Pending, Ready, Target, Who};
use scull_core::devices::Dev;
use scull_core::ioctl::Cmd;
use scull_core::store::Whence;
use scull_core::Error;
use scull_model::{Cancel, File, Flags, Identity, Model};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

pub struct ModelTarget {
    model: Arc<Model>,
}

impl ModelTarget {
    pub fn new() -> Self {
        ModelTarget { model: Model::new() }
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
}

impl Default for ModelTarget {
    fn default() -> Self {
        Self::new()
    }
}

fn flags(o: OpenOpts) -> Flags {
    Flags { read: o.read, write: o.write, nonblock: o.nonblock, truncate: o.truncate }
}

fn identity(who: Who) -> Identity {
    match who {
        Who::Me => Identity::ROOT,
        Who::Other => Identity::USER,
    }
}

struct ModelHandle(File);

impl Handle for ModelHandle {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        self.0.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        self.0.write(buf)
    }
    fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error> {
        self.0.seek(whence, off)
    }
    fn set_len(&mut self, len: u64) -> Result<(), Error> {
        self.0.set_len(len)
    }
    fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32, Error> {
        self.0.ioctl(cmd, value)
    }
    fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
        self.0.ioctl_raw(code, input, out_len)
    }
    fn poll(&mut self) -> Result<Ready, Error> {
        let (readable, writable) = self.0.poll();
        Ok(Ready { readable, writable })
    }
}

struct ThreadJoin(std::thread::JoinHandle<Result<usize, Error>>);

impl Join for ThreadJoin {
    fn join(self: Box<Self>) -> Result<usize, Error> {
        self.0.join().unwrap_or(Err(Error::Interrupted))
    }
}

struct ModelPending {
    cancel: Cancel,
    rx: mpsc::Receiver<Result<Vec<u8>, Error>>,
    done: Option<Result<Vec<u8>, Error>>,
}

impl Pending for ModelPending {
    fn is_done(&mut self) -> bool {
        if self.done.is_none() {
            self.done = self.rx.try_recv().ok();
        }
        self.done.is_some()
    }
    fn cancel(&mut self, _close: bool) -> Result<(), Error> {
        self.cancel.cancel();
        Ok(())
    }
    fn wait(mut self: Box<Self>, timeout: Duration) -> Result<Vec<u8>, Error> {
        if let Some(d) = self.done.take() {
            return d;
        }
        self.rx.recv_timeout(timeout).unwrap_or(Err(Error::WouldBlock))
    }
}

impl Target for ModelTarget {
    fn name(&self) -> &str {
        "model"
    }

    fn caps(&self) -> Caps {
        Caps {
            privileged: true,
            other_user: true,
            poll: true,
            cancel: true,
            processes: false,
            priv_dev: true,
            linux_abi: false,
            pipe_seek_refused: true,
            set_len: true,
            nr_devs: self.model.nr_devs() as u8,
            p_nr_devs: self.model.p_nr_devs() as u8,
        }
    }

    fn open_as(&self, who: Who, dev: Dev, opts: OpenOpts) -> Result<Box<dyn Handle>, Error> {
        Ok(Box::new(ModelHandle(self.model.open(dev, flags(opts), identity(who), &Cancel::new())?)))
    }

    fn spawn_writer(&self, dev: Dev, data: Vec<u8>, delay: Duration) -> Result<Box<dyn Join>, Error> {
        let model = self.model.clone();
        Ok(Box::new(ThreadJoin(std::thread::spawn(move || {
            std::thread::sleep(delay);
            let mut f = model.open(dev, flags(OpenOpts::W), Identity::ROOT, &Cancel::new())?;
            let mut sent = 0;
            while sent < data.len() {
                sent += f.write(&data[sent..])?;
            }
            Ok(sent)
        }))))
    }

    fn read_cancellable(&self, dev: Dev, len: usize) -> Result<Box<dyn Pending>, Error> {
        let cancel = Cancel::new();
        let mut f = self.model.open(dev, flags(OpenOpts::R), Identity::ROOT, &cancel)?;
        let (tx, rx) = mpsc::channel();
        let c = cancel.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; len];
            let r = f.read_cancellable(&mut buf, &c).map(|n| {
                buf.truncate(n);
                buf
            });
            let _ = tx.send(r);
        });
        Ok(Box::new(ModelPending { cancel, rx, done: None }))
    }
}

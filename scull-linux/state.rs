// SPDX-License-Identifier: GPL-2.0
//! The devices and their state, from init to exit: the scull stores (each a
//! scull-core `Store` under a kernel `Mutex`), the scullpipes with their wait
//! queues and deferred releases, the access-control state of scullsingle,
//! sculluid, scullwuid and scullpriv, and the scullmem/scullpipe reports
//! (LDD3's `scull_dev` and `scull_pipe`, and `scull_read_procmem`).

use core::fmt;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use kernel::alloc::{flags::GFP_KERNEL, KBox, KVec};
use kernel::prelude::*;
use kernel::sync::poll::PollCondVar;
use kernel::sync::{CondVar, Mutex, MutexGuard};
use kernel::{new_condvar, new_mutex, new_poll_condvar};

use crate::access::{OwnerUid, PrivTable, SingleOpen, WaitUid, PRIV_SLOTS};
use crate::devices::{Dev, Table};
use crate::chrdev::{self, lock_interruptible, AsyncQueue};
use crate::error::Error;
use crate::geometry::{self, Params};
use crate::kmem::KPlat;
use crate::pipe::Pipe;
use crate::store::{self, Store};
use crate::report::{self, Who};
use crate::R;

pub(crate) type StoreDev = Mutex<Store<KPlat>>;

pub(crate) struct PipeInner {
    pub(crate) pipe: Pipe<KPlat>,
}

/// A scullpipe. `inner` is held across user copies, so a caller may wait for
/// it behind a copy that never completes (userfaultfd): it is only ever taken
/// interruptibly ([`PipeDev::lock`]) or not waited for at all (release), and
/// blocked readers and writers sleep on their queue with `gate` instead, a
/// lock held only around a wait's enqueue and a wakeup.
#[pin_data]
pub(crate) struct PipeDev {
    #[pin]
    inner: Mutex<PipeInner>,
    #[pin]
    gate: Mutex<()>,
    #[pin]
    pub(crate) inq: PollCondVar,
    #[pin]
    pub(crate) outq: PollCondVar,
    pub(crate) waiting_readers: AtomicU32,
    pub(crate) waiting_writers: AtomicU32,
    /// Releases that found `inner` taken, applied by its next holder.
    deferred_readers: AtomicU32,
    deferred_writers: AtomicU32,
    pub(crate) async_queue: AsyncQueue,
}

impl PipeDev {
    /// Takes `inner` (interruptibly: ERESTARTSYS on a signal) and applies the
    /// releases deferred while it was held.
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, PipeInner>, Error> {
        let mut g = lock_interruptible(&self.inner)?;
        self.apply_deferred(&mut g);
        Ok(g)
    }

    fn apply_deferred(&self, g: &mut PipeInner) {
        for _ in 0..self.deferred_readers.swap(0, Ordering::AcqRel) {
            g.pipe.release(true, false);
        }
        for _ in 0..self.deferred_writers.swap(0, Ordering::AcqRel) {
            g.pipe.release(false, true);
        }
    }

    /// Releases one open without sleeping for `inner`. Release cannot fail,
    /// and in an exiting task no signal can end a wait (the kernel drops
    /// signals to a dying process), so a close behind a writer stalled in a
    /// user copy would otherwise leave the task unkillable until the copy
    /// completes. If `inner` is held, the release is recorded and the
    /// holder's successor applies it (the next open, read, write, poll or
    /// report); the buffer a last release frees is freed then, at the latest
    /// at module exit.
    pub(crate) fn release(&self, read: bool, write: bool) {
        if let Some(mut g) = self.inner.try_lock() {
            self.apply_deferred(&mut g);
            g.pipe.release(read, write);
            return;
        }
        self.deferred_readers.fetch_add(u32::from(read), Ordering::AcqRel);
        self.deferred_writers.fetch_add(u32::from(write), Ordering::AcqRel);
        // The holder may have let go meanwhile: apply it now if so.
        if let Some(mut g) = self.inner.try_lock() {
            self.apply_deferred(&mut g);
        }
    }

    /// Gives up `g` and sleeps on `q` until woken (false) or signalled (true).
    /// `gate` is taken before `g` is dropped and wakers take it before they
    /// notify, so a wakeup between the caller's check and its sleep is not
    /// lost; waking never needs `inner` back.
    pub(crate) fn wait(&self, g: MutexGuard<'_, PipeInner>, q: &CondVar, waiting: &AtomicU32) -> bool {
        waiting.fetch_add(1, Ordering::Relaxed);
        let mut gate = self.gate.lock();
        drop(g);
        let signalled = q.wait_interruptible(&mut gate);
        drop(gate);
        waiting.fetch_sub(1, Ordering::Relaxed);
        signalled
    }

    /// Wakes everyone sleeping on `q` (call it after releasing `inner`).
    pub(crate) fn wake(&self, q: &CondVar) {
        let _gate = self.gate.lock();
        q.notify_all();
    }
}

#[pin_data]
pub(crate) struct WuidState {
    #[pin]
    pub(crate) lock: Mutex<WaitUid<u32>>,
    #[pin]
    pub(crate) cv: CondVar,
}

/// Every device. Lives from init to exit; files hold `&'static` references,
/// which is sound because each open file pins the module (fops.owner).
pub(crate) struct State {
    pub(crate) params: Params,
    pub(crate) table: Table,
    pub(crate) sculls: KVec<Pin<KBox<StoreDev>>>,
    pub(crate) pipes: KVec<Pin<KBox<PipeDev>>>,
    pub(crate) single: Pin<KBox<StoreDev>>,
    pub(crate) single_open: SingleOpen,
    pub(crate) uid: Pin<KBox<StoreDev>>,
    pub(crate) uid_state: Pin<KBox<Mutex<OwnerUid<u32>>>>,
    pub(crate) wuid: Pin<KBox<StoreDev>>,
    pub(crate) wuid_state: Pin<KBox<WuidState>>,
    pub(crate) privs: Pin<KBox<Mutex<PrivTable<u32, Pin<KBox<StoreDev>>, PRIV_SLOTS>>>>,
}

/// The module's `State` while it is registered (null before init and after exit).
pub(crate) static STATE: AtomicPtr<State> = AtomicPtr::new(core::ptr::null_mut());
/// The first `dev_t` of the module's region.
pub(crate) static REGION_BASE: AtomicU32 = AtomicU32::new(0);

/// The first device number of the region (for minor → device).
pub(crate) fn region_base() -> u32 {
    REGION_BASE.load(Ordering::Acquire)
}

/// The module's `State`, for file operations and /proc reads.
pub(crate) fn state() -> R<&'static State> {
    let p = STATE.load(Ordering::Acquire);
    if p.is_null() {
        return Err(Error::NoDevice);
    }
    // SAFETY: STATE points at the module's boxed State from before the first cdev_add until after the
    // last cdev_del and /proc removal; callers are file operations or /proc reads, which end before.
    Ok(unsafe { &*p })
}

/// A new, empty store device with geometry `geom`.
pub(crate) fn new_store(geom: geometry::Geometry) -> R<Pin<KBox<StoreDev>>> {
    KBox::pin_init(new_mutex!(Store::new(KPlat, geom)), GFP_KERNEL).map_err(chrdev::kernel_error)
}

impl State {
    pub(crate) fn new(params: Params, table: Table) -> R<State> {
        let g = params.geometry();
        let mut sculls = KVec::with_capacity(table.scull.into(), GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        for _ in 0..table.scull {
            sculls.push(new_store(g)?, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        }
        let mut pipes = KVec::with_capacity(table.pipes.into(), GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        for _ in 0..table.pipes {
            let p = KBox::pin_init(
                pin_init!(PipeDev {
                    inner <- new_mutex!(PipeInner { pipe: Pipe::new() }),
                    gate <- new_mutex!(()),
                    inq <- new_poll_condvar!(),
                    outq <- new_poll_condvar!(),
                    waiting_readers: AtomicU32::new(0),
                    waiting_writers: AtomicU32::new(0),
                    deferred_readers: AtomicU32::new(0),
                    deferred_writers: AtomicU32::new(0),
                    async_queue: AsyncQueue::new(),
                }),
                GFP_KERNEL,
            )
            .map_err(chrdev::kernel_error)?;
            pipes.push(p, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        }
        Ok(State {
            table,
            sculls,
            pipes,
            single: new_store(g)?,
            single_open: SingleOpen::new(),
            uid: new_store(g)?,
            uid_state: KBox::pin_init(new_mutex!(OwnerUid::new()), GFP_KERNEL).map_err(chrdev::kernel_error)?,
            wuid: new_store(g)?,
            wuid_state: KBox::pin_init(
                pin_init!(WuidState { lock <- new_mutex!(WaitUid::new()), cv <- new_condvar!() }),
                GFP_KERNEL,
            )
            .map_err(chrdev::kernel_error)?,
            privs: KBox::pin_init(new_mutex!(PrivTable::new()), GFP_KERNEL).map_err(chrdev::kernel_error)?,
            params,
        })
    }

    /// The one store of a scull, scullsingle, sculluid or scullwuid device
    /// (pipes have none, scullpriv one per tty).
    pub(crate) fn store(&self, d: Dev) -> Option<&Pin<KBox<StoreDev>>> {
        d.own_store(&self.sculls, &self.single, &self.uid, &self.wuid)
    }

    /// The memory report (/proc/scullmem, /proc/scullseq).
    pub(crate) fn mem_report(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        let stores = self.table.iter().filter_map(|d| Some(stats_of(self.store(d)?).map(|s| (Who::Dev(d), s))));
        let privs = report::lock_late(
            || self.privs.lock(),
            |t, i| t.iter().nth(i).map(|(k, d)| stats_of(d).map(|s| (Who::Priv(u64::from(*k)), s))),
        );
        report::mem_report(w, &self.params, Iterator::chain(stores, privs))
    }

    /// The pipe report (/proc/scullpipe).
    pub(crate) fn pipe_report(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        let pipes = self.pipes.iter().enumerate().map(|(i, p)| {
            let g = p.lock().map_err(|_| fmt::Error)?;
            let (r, w_) = (p.waiting_readers.load(Ordering::Relaxed), p.waiting_writers.load(Ordering::Relaxed));
            Ok((Dev::Pipe(i as u8), g.pipe.stats(), r, w_))
        });
        report::pipe_report(w, &self.params, pipes)
    }
}

/// A store's numbers; a signal while waiting for its lock (held by a writer
/// stalled in a user copy) ends the report (`fmt::Error`).
fn stats_of(d: &StoreDev) -> Result<store::StoreStats, fmt::Error> {
    lock_interruptible(d).map(|g| g.stats()).map_err(|_| fmt::Error)
}

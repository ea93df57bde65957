// SPDX-License-Identifier: GPL-2.0
//! scull for Linux: LDD3's scull devices as a Rust-for-Linux module.
//!
//! All semantics come from scull-core, whose files are compiled into this
//! crate below (`#[path]` modules at the crate root, so their `crate::x`
//! paths resolve). This file is the crate root: the module, its /proc
//! files and init/exit. The devices' state is in `state`, the file
//! operations in `fops`, the parameters in `params`; `chrdev`, `kmem` and
//! `procfs` are the thin unsafe adapters over the kernel's C API.

use core::fmt;
use core::sync::atomic::Ordering;

use kernel::alloc::{flags::GFP_KERNEL, KBox, KVec};
use kernel::prelude::*;

// scull-core, mounted at the crate root.
#[path = "../scull-core/src/access.rs"]
#[allow(dead_code, unreachable_pub)]
mod access;
// Only LoadParams's check of `scull_max_total` (Windows' budget) uses it.
#[path = "../scull-core/src/budget.rs"]
#[allow(dead_code, unreachable_pub)]
mod budget;
#[path = "../scull-core/src/devices.rs"]
#[allow(dead_code, unreachable_pub)]
mod devices;
#[path = "../scull-core/src/error.rs"]
#[allow(dead_code, unreachable_pub)]
mod error;
#[path = "../scull-core/src/geometry.rs"]
#[allow(dead_code, unreachable_pub)]
mod geometry;
#[path = "../scull-core/src/ioctl.rs"]
#[allow(dead_code, unreachable_pub)]
mod ioctl;
#[path = "../scull-core/src/mem.rs"]
#[allow(dead_code, unreachable_pub)]
mod mem;
#[path = "../scull-core/src/pipe.rs"]
#[allow(dead_code, unreachable_pub)]
mod pipe;
#[path = "../scull-core/src/report.rs"]
#[allow(dead_code, unreachable_pub)]
mod report;
#[path = "../scull-core/src/store.rs"]
#[allow(dead_code, unreachable_pub)]
mod store;
#[path = "../scull-core/src/sync.rs"]
#[allow(dead_code, unreachable_pub)]
mod sync;

mod chrdev;
mod fault;
mod fops;
mod kmem;
mod params;
mod procfs;
mod state;

use chrdev::{Cdev, Nodes, Region};
use error::Error;
use fops::Open;
use geometry::Params;
use report::{StackStr, Who};
use state::{state, State, REGION_BASE, STATE};

pub(crate) use state::region_base;

type R<T> = core::result::Result<T, Error>;

/// scull's error as the kernel's.
fn kerr(e: Error) -> kernel::error::Error {
    kernel::error::Error::from_errno(-e.errno())
}

module! {
    type: ScullModule,
    name: "scull",
    authors: ["scull-rs"],
    description: "LDD3's scull char devices, on scull-core",
    license: "GPL",
}
// The parameters (scull_quantum, ..., scull_max_size) are in `params`: they
// are readable in /sys/module/scull/parameters/, which `module!`'s are not.

// ---------------------------------------------------------------------------
// /proc

struct MemReport;
impl procfs::Report for MemReport {
    fn show(w: &mut dyn fmt::Write) -> fmt::Result {
        state().map_err(|_| fmt::Error)?.mem_report(w)
    }
}

struct PipeReport;
impl procfs::Report for PipeReport {
    fn show(w: &mut dyn fmt::Write) -> fmt::Result {
        state().map_err(|_| fmt::Error)?.pipe_report(w)
    }
}

// ---------------------------------------------------------------------------
// Module

/// What init registered, torn down in field order: /proc, nodes, cdev, region.
struct Registration {
    _proc: KVec<procfs::Entry>,
    _nodes: Nodes,
    _cdev: Cdev,
    _region: Region,
}

struct Inner {
    reg: Option<Registration>,
    state: KBox<State>,
}

struct ScullModule {
    inner: Option<Inner>,
}

fn register(st: &State, module: &'static ThisModule, major: u32, minor: u32) -> R<Registration> {
    let total = st.table.len() as u32;
    let region = Region::new(major, minor, total, c"scull")?;
    REGION_BASE.store(region.base, Ordering::Release);
    let cdev = Cdev::new::<Open>(module, region.base, total)?;
    let mut nodes = Nodes::new(c"scull")?;
    for (i, d) in st.table.iter().enumerate() {
        let name = StackStr::<32>::format(format_args!("{}", Who::Dev(d)));
        nodes.add(region.base + i as u32, CStr::from_bytes_with_nul(name.with_nul()).map_err(|_| Error::Invalid)?)?;
    }
    let mut proc = KVec::with_capacity(3, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
    for e in [
        procfs::Entry::new::<MemReport>(c"scullmem")?,
        procfs::Entry::new::<MemReport>(c"scullseq")?,
        procfs::Entry::new::<PipeReport>(c"scullpipe")?,
    ] {
        proc.push_within_capacity(e).map_err(|_| Error::NoMemory)?;
    }
    Ok(Registration { _proc: proc, _nodes: nodes, _cdev: cdev, _region: region })
}

impl kernel::Module for ScullModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let p = params::loaded();
        let (quantum, qset, p_buffer) = (p.quantum, p.qset, p.p_buffer);
        let given = geometry::LoadParams {
            quantum: Some(quantum.into()),
            qset: Some(qset.into()),
            p_buffer: Some(p_buffer.into()),
            nr_devs: Some(p.nr_devs.into()),
            p_nr_devs: Some(p.p_nr_devs.into()),
            max_size: Some(p.max_size),
            // Quanta are charged to the writer's memory cgroup instead.
            max_total: None,
        };
        let params = Params::new();
        let table = given.apply(&params).map_err(|bad| {
            pr_err!("{}\n", format_args!("{bad}"));
            kerr(Error::Invalid)
        })?;
        let state = KBox::new(State::new(params, table).map_err(kerr)?, GFP_KERNEL)?;
        // Published before the first cdev_add: an open may come right after it.
        STATE.store(&*state as *const State as *mut State, Ordering::Release);
        let mut inner = Inner { reg: None, state };
        match register(&inner.state, module, p.major, p.minor) {
            Ok(r) => inner.reg = Some(r),
            Err(e) => {
                STATE.store(core::ptr::null_mut(), Ordering::Release);
                return Err(kerr(e));
            }
        }
        pr_info!(
            "major {} minors {}.. : {} scull, {} scullpipe, 4 access devices; quantum={} qset={} p_buffer={} max_size={}\n",
            chrdev::major(region_base()),
            chrdev::minor(region_base()),
            table.scull,
            table.pipes,
            quantum,
            qset,
            p_buffer,
            p.max_size
        );
        Ok(ScullModule { inner: Some(inner) })
    }
}

impl Drop for ScullModule {
    fn drop(&mut self) {
        if let Some(mut inner) = self.inner.take() {
            // No new opens or /proc reads after this; no file is open (module refcount is 0).
            drop(inner.reg.take());
            STATE.store(core::ptr::null_mut(), Ordering::Release);
            inner.state.privs.lock().clear();
            drop(inner);
        }
        pr_info!("unloaded, {} allocations outstanding\n", kmem::outstanding());
    }
}

//! scull-core's memory traits over the kernel's fallible allocators.
//!
//! Quanta and pipe buffers are `KVVec<u8>` (kvmalloc: kmalloc, falling back
//! to vmalloc for big quanta), zeroed by the allocator. The qset container is
//! a vector (kvmalloc'd too) of qsets sorted by index, with a cache of the last one found, so
//! the store's sequential look-ups are O(1). Every quantum, pipe buffer and
//! qset slot array counts in [`OUTSTANDING`], which the module prints at
//! unload (it must be 0) and in `scull_outstanding`; each attempt first asks
//! [`fault::check`] (the debug fault injection).
//!
//! All of it is allocated with GFP_KERNEL_ACCOUNT: data that user space
//! decides the size of is charged to the writer's memory cgroup, so a memcg
//! limit bounds it as it bounds tmpfs pages (the per-device `scull_max_size`
//! cap bounds it without one).

use core::ops::{Deref, DerefMut};
use core::sync::atomic::Ordering;
use kernel::alloc::{flags::GFP_KERNEL_ACCOUNT, KVVec};

use crate::error::{Error, Result};
use crate::fault::{self, OUTSTANDING};
use crate::mem::{Platform, QsetList, Slots};

pub(crate) fn outstanding() -> isize {
    OUTSTANDING.load(Ordering::SeqCst)
}

/// A zeroed byte block.
pub(crate) struct KBlock(KVVec<u8>);

impl Deref for KBlock {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for KBlock {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for KBlock {
    fn drop(&mut self) {
        OUTSTANDING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One qset: its index and its slots.
struct Qset {
    index: u64,
    slots: KVVec<Option<KBlock>>,
}

impl Qset {
    fn new(index: u64, n: usize) -> Result<Qset> {
        fault::check()?;
        let mut slots = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT).map_err(|_| Error::NoMemory)?;
        for _ in 0..n {
            // Within the capacity just reserved: cannot fail.
            slots.push_within_capacity(None).map_err(|_| Error::NoMemory)?;
        }
        OUTSTANDING.fetch_add(1, Ordering::SeqCst);
        Ok(Qset { index, slots })
    }
}

impl Drop for Qset {
    fn drop(&mut self) {
        OUTSTANDING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The sparse, sorted qset list. A `KVVec` too: with a hostile geometry
/// (quantum=1, qset=1) one 64 KiB write makes 65536 qsets, and a kmalloc'd
/// vector of them would soon ask the page allocator for an order above
/// MAX_PAGE_ORDER (a kernel WARNING, found by the fuzzer); kvmalloc falls
/// back to vmalloc instead.
pub(crate) struct KList {
    qsets: KVVec<Qset>,
    /// Position in `qsets` of the last qset found.
    last: usize,
}

impl KList {
    /// Position of `index` in `qsets`: `Ok(pos)` if present, else where it goes.
    fn position(&mut self, index: u64) -> core::result::Result<usize, usize> {
        let qsets = &self.qsets;
        crate::mem::cached_position(qsets.len(), &mut self.last, index, |i| qsets[i].index)
    }
}

impl QsetList for KList {
    type Block = KBlock;

    fn len(&self) -> usize {
        self.qsets.len()
    }

    fn get_mut(&mut self, index: u64) -> Option<&mut Slots<KBlock>> {
        let p = self.position(index).ok()?;
        Some(&mut self.qsets[p].slots)
    }

    fn insert(&mut self, index: u64, slots: usize) -> Result<&mut Slots<KBlock>> {
        let at = match self.position(index) {
            Ok(p) => return Ok(&mut self.qsets[p].slots),
            Err(at) => at,
        };
        // Reserve first: on failure nothing changed.
        if self.qsets.len() == self.qsets.capacity() {
            fault::check()?;
        }
        self.qsets.reserve(1, GFP_KERNEL_ACCOUNT).map_err(|_| Error::NoMemory)?;
        let q = Qset::new(index, slots)?;
        self.qsets.insert_within_capacity(at, q).map_err(|_| Error::NoMemory)?;
        self.last = at;
        Ok(&mut self.qsets[at].slots)
    }

    fn truncate(&mut self, first: u64) {
        let keep = match self.qsets.binary_search_by(|q| q.index.cmp(&first)) {
            Ok(p) | Err(p) => p,
        };
        self.qsets.truncate(keep);
        self.last = 0;
    }

    fn for_each(&self, f: &mut dyn FnMut(u64, &Slots<KBlock>)) {
        for q in self.qsets.iter() {
            f(q.index, &q.slots);
        }
    }
}

/// The kernel platform (stateless: the counter is global).
#[derive(Clone, Copy, Default)]
pub(crate) struct KPlat;

impl Platform for KPlat {
    type Block = KBlock;
    type List = KList;

    fn alloc_block(&self, len: usize) -> Result<KBlock> {
        fault::check()?;
        let v = KVVec::<u8>::zeroed(len, GFP_KERNEL_ACCOUNT).map_err(|_| Error::NoMemory)?;
        OUTSTANDING.fetch_add(1, Ordering::SeqCst);
        Ok(KBlock(v))
    }

    fn new_list(&self) -> KList {
        KList { qsets: KVVec::new(), last: 0 }
    }
}

//! scull-core's memory traits over the kernel's fallible allocators.
//!
//! Quanta and pipe buffers of more than half a page and at most a page (LDD3's
//! default quantum of 4000 bytes among them) are whole pages from the page
//! allocator (`get_zeroed_page`): kmalloc would round them up to a 4 KiB slab
//! object anyway, and the profile in docs/performance.md shows the slab path
//! costing more than the copy itself (new slabs' freelist shuffling, the
//! object's second zeroing, slab refills with interrupts off). Other sizes are
//! `KVVec<u8>` (kvmalloc: kmalloc, falling back to vmalloc for big quanta).
//! Both are zeroed by the allocator. The qset container is
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
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use kernel::alloc::{flags::GFP_KERNEL_ACCOUNT, KVVec};
use kernel::bindings;
use kernel::page::PAGE_SIZE;

use crate::error::{Error, Result};
use crate::fault::{self, OUTSTANDING};
use crate::mem::{Platform, QsetList, Slots};

pub(crate) fn outstanding() -> isize {
    OUTSTANDING.load(Ordering::SeqCst)
}

/// A byte block, zeroed when allocated.
pub(crate) enum KBlock {
    /// kvmalloc'd.
    Vec(KVVec<u8>),
    /// The first `len` bytes of one page from `get_zeroed_page`, owned by this
    /// block (`addr` is its direct-map address).
    Page { addr: NonNull<u8>, len: usize },
}

// SAFETY: a `Page` block exclusively owns its page; kernel memory is not tied
// to a thread. (`Vec` blocks are `Send` by themselves.)
unsafe impl Send for KBlock {}

impl KBlock {
    /// One zeroed page for `len <= PAGE_SIZE` bytes.
    fn page(len: usize) -> Result<KBlock> {
        // SAFETY: a plain page allocation with a valid GFP mask (charged to the
        // caller's memory cgroup, like every other block here); it may sleep,
        // and the store is only ever called in process context.
        let addr = unsafe { bindings::get_zeroed_page_noprof(bindings::GFP_KERNEL_ACCOUNT) };
        let addr = NonNull::new(addr as *mut u8).ok_or(Error::NoMemory)?;
        Ok(KBlock::Page { addr, len })
    }
}

impl Deref for KBlock {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            KBlock::Vec(v) => v,
            // SAFETY: `addr` is the direct-map address of a page this block
            // owns, `len <= PAGE_SIZE`, and every byte is initialised: the page
            // was zeroed at allocation and since written only through this block.
            KBlock::Page { addr, len } => unsafe { core::slice::from_raw_parts(addr.as_ptr(), *len) },
        }
    }
}

impl DerefMut for KBlock {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            KBlock::Vec(v) => v,
            // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
            KBlock::Page { addr, len } => unsafe { core::slice::from_raw_parts_mut(addr.as_ptr(), *len) },
        }
    }
}

impl Drop for KBlock {
    fn drop(&mut self) {
        if let KBlock::Page { addr, .. } = self {
            // SAFETY: the page came from `get_zeroed_page_noprof` (order 0) and
            // is freed once, here; no slice into it outlives `self`.
            unsafe { bindings::free_pages(addr.as_ptr() as usize as _, 0) };
        }
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
        let b = if len > PAGE_SIZE / 2 && len <= PAGE_SIZE {
            KBlock::page(len)?
        } else {
            KBlock::Vec(KVVec::<u8>::zeroed(len, GFP_KERNEL_ACCOUNT).map_err(|_| Error::NoMemory)?)
        };
        OUTSTANDING.fetch_add(1, Ordering::SeqCst);
        Ok(b)
    }

    fn new_list(&self) -> KList {
        KList { qsets: KVVec::new(), last: 0 }
    }
}

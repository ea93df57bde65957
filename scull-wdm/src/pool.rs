//! scull-core's memory traits over the NT pool: zeroed `'lucS'` blocks from
//! `ExAllocatePoolWithTag`, and the qset container as a sorted `LIST_ENTRY`
//! list of qset nodes with a cursor cache.
//!
//! Two platforms. [`StorePool`] holds the stores (quanta, qset nodes) in
//! PagedPool, each byte charged to [`BUDGET`]: store memory is touched only
//! at PASSIVE_LEVEL with the store's KSEMAPHORE held (read, write, set
//! information, trim, reports, create and close), never by a cancel routine
//! or under a spin lock. [`Pool`] is NonPagedPoolNx for everything else:
//! pipe buffers (copied under the pipe's spin lock), scullwuid waiter
//! records (freed by cancel routines), token buffers.
//!
//! Every block the driver allocates goes through [`alloc`]/[`free`], which keep
//! [`OUTSTANDING`], the count DriverUnload reports (it must be 0).

use crate::ddk::*;
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};
#[cfg(feature = "test-build")]
use core::sync::atomic::{AtomicBool, AtomicI64};
use core::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use scull_core::budget::{Budget, DEFAULT_MAX_TOTAL};
use scull_core::mem::{Platform, QsetList, Slots};
use scull_core::{Error, Result};

/// `'lucS'` as the debugger shows it: "Scul" in memory order.
pub const TAG: u32 = u32::from_le_bytes(*b"Scul");

/// Blocks allocated and not yet freed.
pub static OUTSTANDING: AtomicIsize = AtomicIsize::new(0);

/// Store bytes (quanta and qset nodes) of every device together, against
/// `scull_max_total`. A charge past it fails like an exhausted pool.
pub static BUDGET: Budget = Budget::new(DEFAULT_MAX_TOTAL);

/// Fault injection (test build only, registry `scull_fail_at` present).
/// When enabled, [`FAIL_AT`] counts allocations down: the one that takes it
/// from 1 to 0 fails as if the pool were exhausted (one shot). 0 = disarmed.
/// The test IOCTL re-arms it at run time.
#[cfg(feature = "test-build")]
pub static FAULTS_ENABLED: AtomicBool = AtomicBool::new(false);
#[cfg(feature = "test-build")]
pub static FAIL_AT: AtomicI64 = AtomicI64::new(0);
/// Allocation attempts since load.
pub static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations failed on purpose (test build).
#[cfg(feature = "test-build")]
pub static INJECTED: AtomicU64 = AtomicU64::new(0);

/// The release build injects nothing.
#[cfg(not(feature = "test-build"))]
fn inject_failure() -> bool {
    false
}

/// True when this allocation is the one fault injection must fail.
#[cfg(feature = "test-build")]
fn inject_failure() -> bool {
    if !FAULTS_ENABLED.load(Ordering::Relaxed) {
        return false;
    }
    let hit = FAIL_AT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| (k > 0).then(|| k - 1)) == Ok(1);
    if hit {
        INJECTED.fetch_add(1, Ordering::Relaxed);
        kwarn!("fault injection: allocation {} fails", ALLOCS.load(Ordering::Relaxed));
    }
    hit
}

/// Allocates `len` zeroed bytes of non-paged, non-executable pool.
/// Callable at IRQL <= DISPATCH_LEVEL.
pub fn alloc(len: usize) -> Option<NonNull<u8>> {
    alloc_in(len, false)
}

/// Allocates `len` zeroed bytes of store memory: PagedPool, charged to
/// [`BUDGET`] (None, nothing charged, when it would go past it). PASSIVE_LEVEL.
fn alloc_store(len: usize) -> Option<NonNull<u8>> {
    if len == 0 || !BUDGET.charge(len as u64) {
        return None;
    }
    let p = alloc_in(len, true);
    if p.is_none() {
        BUDGET.release(len as u64);
    }
    p
}

/// Frees a block of `len` bytes from [`alloc_store`] and releases its charge.
///
/// # Safety
/// As for [`free`]; `len` is the length it was allocated with.
unsafe fn free_store(p: NonNull<u8>, len: usize) {
    // SAFETY: caller contract.
    unsafe { free(p) };
    BUDGET.release(len as u64);
}

fn alloc_in(len: usize, paged: bool) -> Option<NonNull<u8>> {
    if len == 0 {
        return None;
    }
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    if inject_failure() {
        return None;
    }
    let pool = if paged { PagedPool } else { NonPagedPoolNx };
    // SAFETY: a plain pool allocation; the result is checked for NULL.
    let p = unsafe { ExAllocatePoolWithTag(pool, len as _, TAG) } as *mut u8;
    let p = NonNull::new(p)?;
    // SAFETY: `p` points at `len` freshly allocated bytes.
    unsafe { ptr::write_bytes(p.as_ptr(), 0, len) };
    OUTSTANDING.fetch_add(1, Ordering::Relaxed);
    Some(p)
}

/// Frees a block from [`alloc`] (or, through [`free_store`], [`alloc_store`]).
///
/// # Safety
/// `p` came from [`alloc`] and is not used afterwards.
pub unsafe fn free(p: NonNull<u8>) {
    OUTSTANDING.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: caller contract; same tag as the allocation.
    unsafe { ExFreePoolWithTag(p.as_ptr().cast(), TAG) }
}

/// The non-paged platform (pipes, token buffers): stateless, all state is
/// in the pool and [`OUTSTANDING`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Pool;

/// The stores' platform: quanta from [`alloc_store`] (PagedPool, charged to
/// [`BUDGET`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct StorePool;

/// One zeroed pool block; freed (and, a store block, uncharged) on drop.
pub struct Block {
    ptr: NonNull<u8>,
    len: usize,
    store: bool,
}

// SAFETY: a Block exclusively owns its pool memory; pool memory is not tied to a thread.
unsafe impl Send for Block {}

impl Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` owns `len` initialised (zeroed at allocation) bytes.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Block {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` is exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.store {
            // SAFETY: the block came from `alloc_store` with this length and
            // is dropped once.
            unsafe { free_store(self.ptr, self.len) }
        } else {
            // SAFETY: the block came from `alloc` and is dropped once.
            unsafe { free(self.ptr) }
        }
    }
}

/// The platform impl of `$platform`, whose blocks come from `$alloc`
/// (`$store`: charged to the budget, freed with `free_store`). Both keep
/// their qset nodes as store memory (pipes have none).
macro_rules! platform {
    ($platform:ty, $alloc:ident, $store:expr) => {
        impl Platform for $platform {
            type Block = Block;
            type List = QsetNodes;

            fn alloc_block(&self, len: usize) -> Result<Block> {
                $alloc(len).map(|ptr| Block { ptr, len, store: $store }).ok_or(Error::NoMemory)
            }

            fn new_list(&self) -> QsetNodes {
                QsetNodes::new()
            }
        }
    };
}

platform!(Pool, alloc, false);
platform!(StorePool, alloc_store, true);

/// A qset node: list linkage, its index, and `slots` quantum pointers that
/// follow the header in the same pool block.
#[repr(C)]
struct QsetNode {
    link: LIST_ENTRY,
    index: u64,
    slots: usize,
}

impl QsetNode {
    /// The node that owns `entry`.
    fn from_link(entry: *mut LIST_ENTRY) -> *mut QsetNode {
        // `link` is the first field of a repr(C) struct.
        entry.cast()
    }

    /// Pointer to the slot array that follows the header.
    fn slots_ptr(node: *mut QsetNode) -> *mut Option<Block> {
        let off = Self::slots_offset();
        (node as *mut u8).wrapping_add(off).cast()
    }

    const fn slots_offset() -> usize {
        let h = core::mem::size_of::<QsetNode>();
        let a = core::mem::align_of::<Option<Block>>();
        h.div_ceil(a) * a
    }

    /// Bytes of a node with `slots` slots.
    fn bytes(slots: usize) -> Option<usize> {
        slots.checked_mul(core::mem::size_of::<Option<Block>>())?.checked_add(Self::slots_offset())
    }
}

/// Bytes of a list head block.
const HEAD_BYTES: usize = core::mem::size_of::<LIST_ENTRY>();

/// The qsets of one store: a `LIST_ENTRY` list sorted by index, with a cursor
/// on the node found last, so that sequential look-ups are O(1).
///
/// The list head is a pool block of its own, allocated with the first node
/// and freed on drop. Nothing points back into `QsetNodes` itself: the store
/// can move, and list surgery through node links never writes memory that a
/// `&mut self` borrow covers (a head stored inline would be updated through
/// pointers that the compiler may assume do not alias `self`).
pub struct QsetNodes {
    head: *mut LIST_ENTRY,
    len: usize,
    cursor: *mut QsetNode,
}

// SAFETY: the list owns its nodes exclusively; the driver serialises access with a semaphore.
unsafe impl Send for QsetNodes {}

impl QsetNodes {
    const fn new() -> Self {
        QsetNodes { head: ptr::null_mut(), len: 0, cursor: ptr::null_mut() }
    }

    /// The list head, allocating it on first use.
    fn head(&mut self) -> Result<*mut LIST_ENTRY> {
        if self.head.is_null() {
            let h: *mut LIST_ENTRY = alloc_store(HEAD_BYTES).ok_or(Error::NoMemory)?.as_ptr().cast();
            // SAFETY: a fresh block of the right size.
            unsafe { InitializeListHead(h) };
            self.head = h;
        }
        Ok(self.head)
    }

    /// The first node whose index is >= `index` (or the head), walking from
    /// the cursor when that is behind `index`.
    ///
    /// # Safety
    /// `head` is this list's (allocated) head.
    unsafe fn seek(&self, head: *mut LIST_ENTRY, index: u64) -> *mut LIST_ENTRY {
        // SAFETY (each step): `head` is our list's head (contract), and
        // every entry on the list other than the head, and the cursor when
        // set, is a live QsetNode.
        // SAFETY: see above.
        let mut e = if !self.cursor.is_null() && unsafe { (*self.cursor).index } <= index {
            // SAFETY: see above; only the field address is taken.
            unsafe { ptr::addr_of_mut!((*self.cursor).link) }
        } else {
            // SAFETY: see above.
            unsafe { (*head).Flink }
        };
        // SAFETY: see above.
        while e != head && unsafe { (*QsetNode::from_link(e)).index } < index {
            // SAFETY: see above.
            e = unsafe { (*e).Flink };
        }
        e
    }

    fn slots_of<'a>(node: *mut QsetNode) -> &'a mut [Option<Block>] {
        // SAFETY: a live node holds `slots` initialised slot values after its header.
        let n = unsafe { (*node).slots };
        // SAFETY: as above.
        unsafe { core::slice::from_raw_parts_mut(QsetNode::slots_ptr(node), n) }
    }

    /// Unlinks and frees one node and its quanta.
    ///
    /// # Safety
    /// `node` is on this list.
    unsafe fn drop_node(&mut self, node: *mut QsetNode) {
        // SAFETY (each step): a live node on our list (contract), unlinked,
        // then its slots dropped once, then its block freed.
        // SAFETY: see above; only the field address is taken.
        let link = unsafe { ptr::addr_of_mut!((*node).link) };
        // SAFETY: see above.
        unsafe { RemoveEntryList(link) };
        let slots = QsetNode::slots_ptr(node);
        // SAFETY: see above.
        let n = unsafe { (*node).slots };
        for i in 0..n {
            // SAFETY: see above: slot i < n is initialised.
            let slot = unsafe { slots.add(i) };
            // SAFETY: see above.
            unsafe { ptr::drop_in_place(slot) };
        }
        // A live node's size was computed without overflow at insertion.
        let bytes = QsetNode::bytes(n).unwrap_or(0);
        // SAFETY: see above: the block `alloc_store` returned (not null).
        let block = unsafe { NonNull::new_unchecked(node.cast()) };
        // SAFETY: see above: allocated by `alloc_store` with `bytes` bytes.
        unsafe { free_store(block, bytes) };
        if self.cursor == node {
            self.cursor = ptr::null_mut();
        }
        self.len -= 1;
    }
}

impl QsetList for QsetNodes {
    type Block = Block;

    fn len(&self) -> usize {
        self.len
    }

    fn get_mut(&mut self, index: u64) -> Option<&mut Slots<Block>> {
        if self.len == 0 {
            return None;
        }
        // SAFETY: the cursor, when set, is a live node of this list.
        if !self.cursor.is_null() && unsafe { (*self.cursor).index } == index {
            return Some(Self::slots_of(self.cursor));
        }
        let head = self.head;
        // SAFETY: len > 0, so the head is allocated.
        let e = unsafe { self.seek(head, index) };
        if e == head {
            return None;
        }
        let node = QsetNode::from_link(e);
        // SAFETY: `e` is not the head, so it is a live node.
        if unsafe { (*node).index } != index {
            return None;
        }
        self.cursor = node;
        Some(Self::slots_of(node))
    }

    fn insert(&mut self, index: u64, slots: usize) -> Result<&mut Slots<Block>> {
        let bytes = QsetNode::bytes(slots).ok_or(Error::NoMemory)?;
        let head = self.head()?;
        // SAFETY: `head` is this list's head.
        let next = unsafe { self.seek(head, index) };
        let mem = alloc_store(bytes).ok_or(Error::NoMemory)?;
        let node: *mut QsetNode = mem.as_ptr().cast();
        // SAFETY: `mem` holds `bytes` bytes, enough for the header and the
        // slots; `next` is the list position that keeps the list sorted.
        let link = LIST_ENTRY { Flink: ptr::null_mut(), Blink: ptr::null_mut() };
        // SAFETY: see above.
        unsafe { ptr::write(node, QsetNode { link, index, slots }) };
        let s = QsetNode::slots_ptr(node);
        for i in 0..slots {
            // SAFETY: see above: slot i < slots lies in the block.
            let slot = unsafe { s.add(i) };
            // SAFETY: see above.
            unsafe { ptr::write(slot, None) };
        }
        // SAFETY: see above; only the field address is taken.
        let link = unsafe { ptr::addr_of_mut!((*node).link) };
        // SAFETY: see above.
        unsafe { InsertBefore(next, link) };
        self.len += 1;
        self.cursor = node;
        Ok(Self::slots_of(node))
    }

    fn truncate(&mut self, first: u64) {
        if self.len == 0 {
            return;
        }
        let head = self.head;
        loop {
            // SAFETY: the list is initialised (len > 0 or head set above).
            let last = unsafe { (*head).Blink };
            if last == head {
                break;
            }
            let node = QsetNode::from_link(last);
            // SAFETY: `last` is not the head, so it is a live node.
            if unsafe { (*node).index } < first {
                break;
            }
            // SAFETY: `node` is on this list.
            unsafe { self.drop_node(node) };
        }
        // An emptied list gives its head block back too, so that a trimmed
        // device holds no pool at all (the fault sweep checks the count).
        if self.len == 0 {
            if let Some(h) = NonNull::new(self.head) {
                // SAFETY: the head block from `alloc_store`; no node links to it any more.
                unsafe { free_store(h.cast(), HEAD_BYTES) };
                self.head = ptr::null_mut();
                self.cursor = ptr::null_mut();
            }
        }
    }

    fn for_each(&self, f: &mut dyn FnMut(u64, &Slots<Block>)) {
        if self.head.is_null() {
            return;
        }
        let head = self.head;
        // SAFETY (each step): a read-only walk of our own list, whose
        // entries other than the head are live QsetNodes.
        // SAFETY: see above.
        let mut e = unsafe { (*head).Flink };
        while e != head {
            let node = QsetNode::from_link(e);
            // SAFETY: see above.
            let index = unsafe { (*node).index };
            f(index, Self::slots_of(node));
            // SAFETY: see above.
            e = unsafe { (*e).Flink };
        }
    }
}

impl Drop for QsetNodes {
    fn drop(&mut self) {
        self.truncate(0);
        if let Some(h) = NonNull::new(self.head) {
            // SAFETY: the head block from `alloc_store`, now unused.
            unsafe { free_store(h.cast(), HEAD_BYTES) };
            self.head = ptr::null_mut();
        }
    }
}

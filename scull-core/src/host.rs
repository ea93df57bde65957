//! A std implementation of the platform traits (feature `host`): boxed blocks
//! filled with a stale-byte pattern, a sorted vector of qsets with a look-up
//! cache, allocation counting, and fault injection (fail the k-th allocation).
//! Used by the model device, the tests and the benchmarks.

extern crate std;

use crate::error::{Error, Result};
use crate::mem::{Platform, QsetList, Slots};
use core::ops::{Deref, DerefMut};
use std::boxed::Box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::vec::Vec;

/// What every new host block holds: [`Platform::alloc_block`] promises no
/// particular contents (kernel platforms hand out stale memory), and a
/// non-zero pattern makes any byte the store exposes without writing it show
/// up in the tests as 0xAA instead of passing as a zero.
pub const STALE: u8 = 0xAA;

/// Allocation accounting shared by everything one [`HostPlatform`] allocated.
#[derive(Debug, Default)]
pub struct AllocStats {
    outstanding: AtomicUsize,
    bytes: AtomicUsize,
    allocations: AtomicU64,
    fail_at: AtomicU64,
}

impl AllocStats {
    /// Blocks (quanta, pipe buffers, qset slot arrays) not yet freed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Bytes not yet freed.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Allocation attempts so far (successful or injected failures).
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::SeqCst)
    }

    /// Makes allocation attempt number `k` (1-based, counting from now) fail;
    /// 0 disables injection.
    pub fn fail_after(&self, k: u64) {
        let at = if k == 0 { 0 } else { self.allocations() + k };
        self.fail_at.store(at, Ordering::SeqCst);
    }

    fn attempt(&self, bytes: usize) -> Result<()> {
        let n = self.allocations.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at.load(Ordering::SeqCst) {
            return Err(Error::NoMemory);
        }
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        self.bytes.fetch_add(bytes, Ordering::SeqCst);
        Ok(())
    }

    fn free(&self, bytes: usize) {
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.bytes.fetch_sub(bytes, Ordering::SeqCst);
    }
}

/// The host platform. Cloning shares the accounting.
#[derive(Debug, Clone, Default)]
pub struct HostPlatform {
    stats: Arc<AllocStats>,
}

impl HostPlatform {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> &AllocStats {
        &self.stats
    }
}

/// A heap block (filled with [`STALE`] when new) that reports its release.
#[derive(Debug)]
pub struct HostBlock {
    data: Box<[u8]>,
    stats: Arc<AllocStats>,
}

impl Deref for HostBlock {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl DerefMut for HostBlock {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl Drop for HostBlock {
    fn drop(&mut self) {
        self.stats.free(self.data.len());
    }
}

impl Platform for HostPlatform {
    type Block = HostBlock;
    type List = HostList;

    fn alloc_block(&self, len: usize) -> Result<HostBlock> {
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| Error::NoMemory)?;
        self.stats.attempt(len)?;
        v.resize(len, STALE);
        Ok(HostBlock { data: v.into_boxed_slice(), stats: self.stats.clone() })
    }

    fn new_list(&self) -> HostList {
        HostList { nodes: Vec::new(), cache: 0, stats: self.stats.clone() }
    }
}

struct Node {
    index: u64,
    slots: Box<[Option<HostBlock>]>,
}

/// Sorted vector of qsets. Each slot array counts as one allocation.
pub struct HostList {
    nodes: Vec<Node>,
    cache: usize,
    stats: Arc<AllocStats>,
}

impl HostList {
    fn position(&mut self, index: u64) -> core::result::Result<usize, usize> {
        let nodes = &self.nodes;
        crate::mem::cached_position(nodes.len(), &mut self.cache, index, |i| nodes[i].index)
    }
}

impl QsetList for HostList {
    type Block = HostBlock;

    fn len(&self) -> usize {
        self.nodes.len()
    }

    fn get_mut(&mut self, index: u64) -> Option<&mut Slots<HostBlock>> {
        let at = self.position(index).ok()?;
        Some(&mut self.nodes[at].slots)
    }

    fn insert(&mut self, index: u64, slots: usize) -> Result<&mut Slots<HostBlock>> {
        let at = match self.position(index) {
            Ok(_) => return Err(Error::Invalid),
            Err(at) => at,
        };
        let bytes = slots * core::mem::size_of::<Option<HostBlock>>();
        let mut v = Vec::new();
        v.try_reserve_exact(slots).map_err(|_| Error::NoMemory)?;
        self.stats.attempt(bytes)?;
        v.resize_with(slots, || None);
        self.nodes.insert(at, Node { index, slots: v.into_boxed_slice() });
        self.cache = at;
        Ok(&mut self.nodes[at].slots)
    }

    fn truncate(&mut self, first: u64) {
        let keep = self.nodes.partition_point(|n| n.index < first);
        for n in self.nodes.drain(keep..) {
            self.stats.free(n.slots.len() * core::mem::size_of::<Option<HostBlock>>());
        }
        self.cache = 0;
    }

    fn for_each(&self, f: &mut dyn FnMut(u64, &Slots<HostBlock>)) {
        for n in &self.nodes {
            f(n.index, &n.slots);
        }
    }
}

impl Drop for HostList {
    fn drop(&mut self) {
        self.truncate(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_stale_and_counted() {
        let p = HostPlatform::new();
        let b = p.alloc_block(100).unwrap();
        assert!(b.iter().all(|&x| x == STALE));
        assert_eq!((p.stats().outstanding(), p.stats().bytes()), (1, 100));
        drop(b);
        assert_eq!((p.stats().outstanding(), p.stats().bytes()), (0, 0));
    }

    #[test]
    fn fail_after_counts_from_now_and_zero_disables() {
        let p = HostPlatform::new();
        let _a = p.alloc_block(1).unwrap();
        p.stats().fail_after(2);
        assert!(p.alloc_block(1).is_ok());
        assert_eq!(p.alloc_block(1).err(), Some(Error::NoMemory));
        assert!(p.alloc_block(1).is_ok(), "only the k-th fails");
        p.stats().fail_after(1);
        p.stats().fail_after(0);
        assert!(p.alloc_block(1).is_ok(), "0 disables");
    }

    #[test]
    fn list_keeps_order_and_truncates() {
        let p = HostPlatform::new();
        let mut l = p.new_list();
        for i in [5u64, 1, 9, 3] {
            l.insert(i, 2).unwrap();
        }
        assert_eq!(l.insert(3, 2).err(), Some(Error::Invalid), "no duplicates");
        let mut seen = Vec::new();
        l.for_each(&mut |i, s| {
            assert_eq!(s.len(), 2);
            seen.push(i)
        });
        assert_eq!(seen, [1, 3, 5, 9]);
        assert!(l.get_mut(4).is_none());
        l.get_mut(5).unwrap()[1] = Some(p.alloc_block(8).unwrap());
        assert_eq!(p.stats().outstanding(), 5);
        l.truncate(5);
        assert_eq!(l.len(), 2);
        assert_eq!(p.stats().outstanding(), 2, "qset 5's quantum and both slot arrays freed");
        l.clear();
        assert!(l.is_empty());
        assert_eq!(p.stats().outstanding(), 0);
    }

    #[test]
    fn list_insert_failure_leaves_it_unchanged() {
        let p = HostPlatform::new();
        let mut l = p.new_list();
        l.insert(1, 4).unwrap();
        p.stats().fail_after(1);
        assert_eq!(l.insert(2, 4).err(), Some(Error::NoMemory));
        assert_eq!(l.len(), 1);
        assert!(l.get_mut(2).is_none());
    }
}

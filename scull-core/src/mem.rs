//! The platform memory traits each kernel implements.
//!
//! scull-core never allocates by itself. A [`Platform`] hands out blocks
//! (quantum buffers, pipe buffers) whose contents are unspecified, and creates
//! the qset container; the
//! Windows driver backs them with `ExAllocatePoolWithTag` and a `LIST_ENTRY`
//! list, the Linux module with `kmalloc`-backed vectors, and the host with std
//! plus allocation counting and fault injection (`host` feature).

use crate::error::Result;
use core::ops::DerefMut;

/// One qset: `qset` slots, each empty or holding one quantum.
pub type Slots<B> = [Option<B>];

/// Allocation services of one kernel.
pub trait Platform {
    /// A block of memory that this platform allocated. Dropping it frees it
    /// (and decrements the platform's outstanding-block counter).
    type Block: DerefMut<Target = [u8]>;
    /// The container of qsets.
    type List: QsetList<Block = Self::Block>;

    /// Allocates `len` bytes (`len` is never 0). Their contents are
    /// unspecified: zero, or stale bytes from the memory's earlier use. The
    /// callers never let a byte they did not write be seen: the store zeroes the
    /// part of a new quantum the allocating write does not cover (so each byte
    /// is touched once, not zeroed and then overwritten), the pipe reads only
    /// what was written. The host platform fills new blocks with
    /// [`crate::host::STALE`] so that the tests would see any leak.
    fn alloc_block(&self, len: usize) -> Result<Self::Block>;

    /// A new, empty qset container. Must not allocate (creating a device's
    /// list cannot fail).
    fn new_list(&self) -> Self::List;
}

/// A sparse, ordered collection of qsets, keyed by qset index
/// (`offset / (quantum * qset)`).
///
/// Only qsets that hold data exist, so a write at a huge offset costs one node,
/// not a walk over millions of empty ones (an improvement over LDD3's dense
/// list). Implementations must make repeated and sequential look-ups
/// (`index`, `index + 1`) O(1) amortised, e.g. by caching the last node found:
/// the store walks files front to back.
pub trait QsetList {
    type Block;

    /// Number of qsets present.
    fn len(&self) -> usize;

    /// True when no qset is present.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slots of qset `index`, if present.
    fn get_mut(&mut self, index: u64) -> Option<&mut Slots<Self::Block>>;

    /// Inserts qset `index` (which must not be present) with `slots` empty
    /// slots and returns them. On `NoMemory` the list is unchanged.
    fn insert(&mut self, index: u64, slots: usize) -> Result<&mut Slots<Self::Block>>;

    /// Drops every qset whose index is `>= first` (freeing their quanta).
    fn truncate(&mut self, first: u64);

    /// Visits the qsets in index order.
    fn for_each(&self, f: &mut dyn FnMut(u64, &Slots<Self::Block>));

    /// Drops every qset.
    fn clear(&mut self) {
        self.truncate(0)
    }
}

/// Where qset `index` is in a list sorted by qset index: `Ok(pos)` if present,
/// else `Err(pos)` where it would be inserted. Checks the cached position and
/// its successor first, so repeated and sequential look-ups are O(1), then
/// falls back to a binary search; a hit updates `cache`. `key(i)` is the qset
/// index at position `i` (`i < len`). Vector-backed [`QsetList`]s share this.
pub fn cached_position(len: usize, cache: &mut usize, index: u64, key: impl Fn(usize) -> u64) -> core::result::Result<usize, usize> {
    for at in [*cache, cache.wrapping_add(1)] {
        if at < len && key(at) == index {
            *cache = at;
            return Ok(at);
        }
    }
    let (mut lo, mut hi) = (0usize, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match key(mid).cmp(&index) {
            core::cmp::Ordering::Less => lo = mid + 1,
            core::cmp::Ordering::Greater => hi = mid,
            core::cmp::Ordering::Equal => {
                *cache = mid;
                return Ok(mid);
            }
        }
    }
    Err(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_position_finds_inserts_and_caches() {
        let keys = [2u64, 5, 9, 40];
        let k = |i: usize| keys[i];
        let mut cache = 0;
        assert_eq!(cached_position(4, &mut cache, 9, k), Ok(2));
        assert_eq!(cache, 2);
        assert_eq!(cached_position(4, &mut cache, 40, k), Ok(3), "the successor of the cache");
        assert_eq!(cache, 3);
        assert_eq!(cached_position(4, &mut cache, 0, k), Err(0));
        assert_eq!(cached_position(4, &mut cache, 6, k), Err(2));
        assert_eq!(cached_position(4, &mut cache, 41, k), Err(4));
        assert_eq!(cache, 3, "a miss leaves the cache");
        assert_eq!(cached_position(0, &mut cache, 1, k), Err(0));
        let mut stale = usize::MAX;
        assert_eq!(cached_position(4, &mut stale, 2, k), Ok(0), "a stale cache is harmless");
    }
}

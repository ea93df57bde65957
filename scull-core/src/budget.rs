//! The global budget of store bytes: one counter that every device's quanta
//! and qset nodes are charged to, so that all stores together hold at most
//! the limit (the per-device cap alone allows it once per device).
//!
//! A charge that would take the total past the limit is refused and charges
//! nothing; the caller fails the allocation as if the pool were exhausted
//! (`NoMemory`), and the store keeps what it already holds.

use crate::error::{Error, Result};
use core::sync::atomic::{AtomicU64, Ordering};

/// Default budget (`scull_max_total`): 512 MiB, the default per-device cap,
/// so that one device can still fill up to its cap while all of them
/// together hold no more than that one could.
pub const DEFAULT_MAX_TOTAL: u64 = 512 << 20;

/// Validates a `scull_max_total` value: at least one byte.
pub fn max_total(bytes: u64) -> Result<u64> {
    if bytes == 0 {
        return Err(Error::Invalid);
    }
    Ok(bytes)
}

/// Bytes charged and the limit they may reach.
#[derive(Debug)]
pub struct Budget {
    used: AtomicU64,
    limit: AtomicU64,
}

impl Budget {
    pub const fn new(limit: u64) -> Budget {
        Budget { used: AtomicU64::new(0), limit: AtomicU64::new(limit) }
    }

    /// Sets the limit (at load, before anything is charged).
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Release);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Charges `n` bytes if the total stays within the limit; false (and
    /// nothing charged) otherwise. Concurrent charges never overshoot.
    pub fn charge(&self, n: u64) -> bool {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|&t| t <= limit))
            .is_ok()
    }

    /// Gives back `n` bytes charged earlier.
    pub fn release(&self, n: u64) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "budget released more than was charged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    #[test]
    fn charges_up_to_the_limit_then_refuses_without_charging() {
        let b = Budget::new(10);
        assert!(b.charge(4));
        assert!(b.charge(6), "exactly the limit is allowed");
        assert!(!b.charge(1));
        assert_eq!(b.used(), 10, "a refused charge charges nothing");
        b.release(6);
        assert!(!b.charge(7));
        assert!(b.charge(6));
        assert!(!b.charge(u64::MAX), "no wrap-around");
        assert_eq!(b.used(), 10);
    }

    #[test]
    fn concurrent_charges_never_overshoot() {
        let b = std::sync::Arc::new(Budget::new(1000));
        let threads: std::vec::Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.charge(3)).count() as u64)
            })
            .collect();
        let granted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(granted, 333, "333 charges of 3 fit in 1000");
        assert_eq!(b.used(), 999);
    }

    #[test]
    fn zero_is_not_a_budget() {
        assert_eq!(max_total(0), Err(Error::Invalid));
        assert_eq!(max_total(1), Ok(1));
        assert_eq!(DEFAULT_MAX_TOTAL, crate::geometry::DEFAULT_MAX_SIZE);
    }
}

//! Atomics, swapped for loom's under `--cfg loom` so the policies can be model
//! checked.
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

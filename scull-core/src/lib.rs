//! scull-core: the semantics of LDD3's scull driver (chapters 3-6), written
//! once and shared by the Windows WDM driver (`scull-wdm`), the Linux module
//! (`scull-linux`) and the host model (`scull-model`).
//!
//! `#![no_std]`, no `alloc`: memory comes from a [`mem::Platform`] that each
//! kernel implements. No OS code and no `unsafe` lives here.
//!
//! Module paths are written as `crate::x` so that the Linux module, which
//! compiles these files into its own crate with `#[path]` modules at its crate
//! root, resolves them the same way.
#![cfg_attr(not(any(test, feature = "host")), no_std)]
#![forbid(unsafe_code)]

pub mod access;
pub mod budget;
pub mod devices;
pub mod error;
pub mod geometry;
pub mod ioctl;
pub mod mem;
pub mod nt;
pub mod pipe;
pub mod report;
pub mod store;
pub mod sync;
pub mod token;

#[cfg(any(test, feature = "host"))]
pub mod host;

pub use error::{Error, Result};

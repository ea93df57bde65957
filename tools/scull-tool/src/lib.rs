//! scull-tool's library: the device-access trait and its targets, and the
//! conformance suite.
pub mod backend;
pub mod bench;
pub mod conformance;
#[cfg(target_os = "linux")]
pub mod fault_sweep;
pub mod fuzz;
pub mod hint;
pub mod out;
pub mod progress;
pub mod rng;
pub mod stress;
#[cfg(any(windows, all(target_os = "linux", target_env = "gnu")))]
pub mod win32;

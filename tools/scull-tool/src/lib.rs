//! scull-tool's library: the device-access trait and its targets, and the
//! conformance suite.
pub mod conformance;
pub mod target;

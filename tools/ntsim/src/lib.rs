//! ntsim: a miniature NT kernel, I/O manager and Win32 layer that loads a
//! real WDM driver image (a `.sys` built for x86_64-pc-windows-msvc) into a
//! Linux x86_64 process and runs it with the I/O manager's semantics, from
//! many threads, with verifier checks. It knows NT, not any particular
//! driver. See docs/ntsim.md.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]
// The DDIs and Win32 functions keep their Microsoft names.
#![allow(non_snake_case)]
// The extern "win64" DDIs are called by driver code; their contracts are the DDI pages.
#![allow(clippy::missing_safety_doc)]

pub mod ddi;
pub mod io;
pub mod kernel;
pub mod layout;
pub mod pe;
pub mod verifier;
pub mod win32;

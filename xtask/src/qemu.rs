//! `cargo xtask qemu`: boots Debian's 7.3.4 kernel with scull.ko in QEMU.

use crate::util::Result;

pub fn qemu(_args: &[String]) -> Result {
    Err("not yet".into())
}

//! `cargo xtask bench`'s stage for the Windows driver: `scull-tool --target
//! ntsim bench` against the release scull.sys, the tool built with
//! optimisations (ntsim's I/O manager and Win32 layer run in the tool's
//! process, so a debug build would measure them, not the driver). Prints the
//! tool's figures: `ratio wdm_vs_memcpy`, `ratio wdm_scale_256m_vs_1m` and
//! the null-ioctl round trip. Figures, never pass/fail: the stage fails only
//! when the tool does or a figure is missing.

use crate::util::{cargo, output, root, run, step, target_dir, Result};
use std::process::Command;

/// The lines the stage must find in the tool's output.
const FIGURES: [&str; 3] = ["ratio wdm_vs_memcpy = ", "ratio wdm_scale_256m_vs_1m = ", "wdm null ioctl round trip = "];

pub fn bench() -> Result {
    let sys = crate::wdm::build()?;
    step("bench: cargo build --release -p scull-tool");
    run(cargo().args(["build", "--quiet", "--release", "-p", "scull-tool"]))?;
    let exe = target_dir().join("release").join("scull-tool");
    step("bench: scull-tool --target ntsim bench (the release scull.sys, ntsim's special pool off)");
    let out = output(Command::new(exe).current_dir(root()).env("SCULL_SYS", &sys).args(["--target", "ntsim", "bench"]))?;
    crate::util::end_step(true);
    // The per-round lines stay in the step's log.
    for l in out.lines().filter(|l| !l.contains(" MiB round ")) {
        println!("{l}");
    }
    match missing(&out) {
        Some(f) => Err(format!("ntsim bench printed no `{}` line", f.trim_end_matches(" = "))),
        None => Ok(()),
    }
}

/// The first of [`FIGURES`] no line of `out` starts with.
fn missing(out: &str) -> Option<&'static str> {
    FIGURES.iter().copied().find(|f| !out.lines().any(|l| l.starts_with(f)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_figure_is_named() {
        let all = "ratio wdm_vs_memcpy = 1.25 (a / b MB/s)\nratio wdm_scale_256m_vs_1m = 0.36\nwdm null ioctl round trip = 2.54 us\n";
        assert_eq!(super::missing(all), None);
        let without = all.replace("ratio wdm_scale", "info: wdm_scale");
        assert_eq!(super::missing(&without), Some("ratio wdm_scale_256m_vs_1m = "));
        assert_eq!(super::missing(""), Some("ratio wdm_vs_memcpy = "));
    }
}

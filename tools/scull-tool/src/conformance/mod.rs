//! The black-box conformance suite. Every case is written against
//! [`crate::backend::Target`], so the same cases run on the host model, on
//! Windows (natively or under Wine) and on Linux (QEMU). Each kind of target
//! adds its own: the Linux-only cases for the Linux ioctl ABI, the
//! Windows-only ones by target name (`ntsim` also its own).
//!
//! Each case leaves the devices as it found them: LDD3 defaults restored
//! (`RESET`, pipe size 4000) and the devices it wrote trimmed.
//!
//! The last line printed is `<target>: N passed, M failed, K skipped`.

use crate::backend::{Caps, Target};

mod cases;
pub mod check;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod uffd;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod ntsim;
#[cfg(any(windows, all(target_os = "linux", target_env = "gnu")))]
mod windows;

/// What a case concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// The target cannot express this case; the reason is printed.
    Skip(&'static str),
}

/// One conformance case.
#[derive(Clone)]
pub struct Case {
    pub name: &'static str,
    /// Capabilities the case needs; checked before it runs.
    pub needs: fn(&Caps) -> Option<&'static str>,
    pub run: fn(&dyn Target) -> Result<(), String>,
}

/// The tally of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// Every common case.
pub fn cases() -> Vec<Case> {
    cases::all()
}

/// Runs the common cases and the target's own, those whose name contains
/// `filter` (or one of its comma-separated parts) if given. Prints one
/// line per case and the closing line.
pub fn run(target: &dyn Target, filter: Option<&str>) -> Summary {
    run_with(target, filter, false)
}

/// One case's line: `ok   NAME (N ms)`, `FAIL NAME: why`, `skip NAME: why`.
fn human(name: &str, outcome: &Outcome, ms: u128) -> String {
    match outcome {
        Outcome::Pass => format!("ok   {name} ({ms} ms)"),
        Outcome::Fail(msg) => format!("FAIL {name}: {msg}"),
        Outcome::Skip(why) => format!("skip {name}: {why}"),
    }
}

/// One case as a JSON object: `{"name", "result": "pass"|"fail"|"skip",
/// "reason": null or text, "ms"}`.
pub fn json(name: &str, outcome: &Outcome, ms: u128) -> String {
    let (result, reason) = match outcome {
        Outcome::Pass => ("pass", None),
        Outcome::Fail(msg) => ("fail", Some(msg.as_str())),
        Outcome::Skip(why) => ("skip", Some(*why)),
    };
    serde_json::json!({ "name": name, "result": result, "reason": reason, "ms": ms as u64 }).to_string()
}

/// The cases `run` would run on `target`: the common ones and the target's
/// own, those whose name contains `filter` (or one of its comma-separated
/// parts) if given.
pub fn select(target: &dyn Target, filter: Option<&str>) -> Vec<Case> {
    let mut all = cases();
    #[cfg(target_os = "linux")]
    if target.caps().linux_abi {
        all.extend(linux::cases());
    }
    all.extend(target_cases(target.name()));
    all.retain(|c| filter.is_none_or(|f| f.split(',').any(|p| c.name.contains(p))));
    all
}

/// The cases of the target named `name` beyond the common and the Linux
/// ABI ones: the Windows-only cases on `windows` and `wine`; on `ntsim`
/// those without the bridge (the test build's stand-in for what Wine's I/O
/// manager lacks; ntsim loads the release build), then its own.
fn target_cases(name: &str) -> Vec<Case> {
    match name {
        #[cfg(any(windows, all(target_os = "linux", target_env = "gnu")))]
        "windows" | "wine" => windows::cases(),
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        "ntsim" => {
            let mut v = windows::cases();
            v.retain(|c| !c.name.starts_with("win_bridge_"));
            v.extend(ntsim::cases());
            v
        }
        _ => Vec::new(),
    }
}

/// [`run`], and with `json` each case is also one JSON object on its own
/// stdout line ([`json`]), its human line going to stderr; the closing
/// `<target>: N passed, M failed, K skipped` line stays on stdout, last.
pub fn run_with(target: &dyn Target, filter: Option<&str>, json_lines: bool) -> Summary {
    let caps = target.caps();
    let mut s = Summary::default();
    for case in select(target, filter) {
        let started = std::time::Instant::now();
        let outcome = match (case.needs)(&caps) {
            Some(why) => Outcome::Skip(why),
            None => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.run)(target)));
                let o = match r {
                    Ok(Ok(())) => Outcome::Pass,
                    Ok(Err(msg)) => Outcome::Fail(msg),
                    Err(p) => Outcome::Fail(format!(
                        "panicked: {}",
                        p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
                    )),
                };
                cases::restore(target);
                o
            }
        };
        match outcome {
            Outcome::Pass => s.passed += 1,
            Outcome::Fail(_) => s.failed += 1,
            Outcome::Skip(_) => s.skipped += 1,
        }
        let ms = started.elapsed().as_millis();
        if json_lines {
            eprintln!("{}", human(case.name, &outcome, ms));
            crate::outln!("{}", json(case.name, &outcome, ms));
        } else {
            crate::outln!("{}", human(case.name, &outcome, ms));
        }
    }
    crate::outln!("{}: {} passed, {} failed, {} skipped", target.name(), s.passed, s.failed, s.skipped);
    s
}

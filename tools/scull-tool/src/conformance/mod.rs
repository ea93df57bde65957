//! The black-box conformance suite. Every case is written against
//! [`crate::backend::Target`], so the same cases run on the host model, on
//! Windows (natively or under Wine) and on Linux (QEMU). A target may add its
//! own cases with `Target::extra_cases`.
//!
//! Each case leaves the devices as it found them: LDD3 defaults restored
//! (`RESET`, pipe size 4000) and the devices it wrote trimmed.
//!
//! The last line printed is `<target>: N passed, M failed, K skipped`.

use crate::backend::{Caps, Target};

mod cases;

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
/// `filter` if given. Prints one line per case and the closing line.
pub fn run(target: &dyn Target, filter: Option<&str>) -> Summary {
    let caps = target.caps();
    let mut all = cases();
    all.extend(target.extra_cases());
    let mut s = Summary::default();
    for case in all.iter().filter(|c| filter.is_none_or(|f| c.name.contains(f))) {
        if let Some(why) = (case.needs)(&caps) {
            println!("skip {}: {}", case.name, why);
            s.skipped += 1;
            continue;
        }
        let started = std::time::Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.run)(target)));
        let outcome = match r {
            Ok(Ok(())) => Outcome::Pass,
            Ok(Err(msg)) => Outcome::Fail(msg),
            Err(p) => Outcome::Fail(format!(
                "panicked: {}",
                p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
            )),
        };
        match outcome {
            Outcome::Pass => {
                s.passed += 1;
                println!("ok   {} ({} ms)", case.name, started.elapsed().as_millis());
            }
            Outcome::Fail(msg) => {
                s.failed += 1;
                println!("FAIL {}: {}", case.name, msg);
            }
            Outcome::Skip(why) => {
                s.skipped += 1;
                println!("skip {}: {}", case.name, why);
            }
        }
        cases::restore(target);
    }
    println!("{}: {} passed, {} failed, {} skipped", target.name(), s.passed, s.failed, s.skipped);
    s
}

//! Host targets: unit/property/fault tests, loom, the model conformance run,
//! the model demo and the core benchmark.

use crate::util::{cargo, run, show, step, Result};

pub fn test() -> Result {
    step("host: cargo test (workspace)");
    run(cargo().args(["test", "--workspace", "--all-features"]))?;
    step("host: loom models (--cfg loom)");
    let loom_target = crate::util::target_dir().join("loom");
    run(cargo()
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", loom_target)
        .env("LOOM_MAX_PREEMPTIONS", "3")
        .args(["test", "-p", "scull-core", "--features", "host", "--release", "--test", "loom"]))?;
    conformance()
}

pub fn conformance() -> Result {
    step("host: stress and fuzz against the model device (fixed seed)");
    run(cargo().args(["run", "--quiet", "--release", "-p", "scull-tool", "--", "--target", "model", "stress", "--writers", "8", "--readers", "8", "--seconds", "3"]))?;
    run(cargo().args(["run", "--quiet", "--release", "-p", "scull-tool", "--", "--target", "model", "fuzz", "--seconds", "10", "--seed", "20261121"]))?;
    step("host: conformance suite against the model device");
    run(cargo().args(["run", "--quiet", "-p", "scull-tool", "--", "conformance", "--target", "model"]))
}


pub fn demo() -> Result {
    step("demo: the model device");
    show(cargo().args(["run", "--quiet", "-p", "scull-tool", "--", "demo", "--target", "model"]))
}

pub fn bench_core() -> Result {
    step("bench: scull-core store vs memcpy");
    run(cargo().args(["bench", "-p", "scull-core", "--features", "host", "--bench", "core_vs_memcpy"]))
}

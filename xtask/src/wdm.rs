//! `cargo xtask wdm`: cross-builds scull.sys (and scull.pdb) on Linux.
//!
//! The driver crate (scull-wdm, its own workspace) is built with
//! `--no-default-features --features mingw` (its default feature is the
//! Windows host's `wdk`) for x86_64-pc-windows-msvc with rust-lld in lld-link
//! mode; its build script
//! runs bindgen over the mingw-w64 DDK headers and adds the kernel-driver link
//! flags. A `cargo check --features oracle` then compares the bindings'
//! layouts with windows-sys's WDK metadata at compile time. The result is
//! copied to `target/wdm/scull.sys` and checked: native subsystem, only
//! ntoskrnl.exe imports, and the imports the driver must have.
//!
//! That is the release driver: no Wine bridge, no test switches.
//! `cargo xtask wdm --test-build` builds the test build instead (feature
//! `test-build`: the bridge IOCTLs, WIN_IOCTL_TEST, scull_test_identity,
//! scull_fail_at) into `target/wdm-test/`, from its own cargo target dir.

use crate::util::{apt_install, output, root, rustup_targets, step, target_dir, Result};
use std::path::PathBuf;
use std::process::Command;

pub const DRIVER_TARGET: &str = "x86_64-pc-windows-msvc";

/// Debian packages the cross build needs.
pub const APT: &[&str] = &["mingw-w64-x86-64-dev", "binutils-mingw-w64-x86-64", "libclang-dev", "clang", "lld"];

/// Imports the issue requires scull.sys to have.
const REQUIRED_IMPORTS: &[&str] = &[
    "ExAllocatePoolWithTag",
    "ExFreePoolWithTag",
    "KeInitializeSemaphore",
    "KeReleaseSemaphore",
    // The critical region around the store semaphore (no APC may suspend
    // a thread that holds it).
    "KeEnterCriticalRegion",
    "KeLeaveCriticalRegion",
    // The event-log entry that names the bad parameter of a refused load.
    "IoAllocateErrorLogEntry",
    "IoWriteErrorLogEntry",
    "KeAcquireSpinLockRaiseToDpc",
    "IoCreateDevice",
    "IoCreateSymbolicLink",
    "IofCompleteRequest",
];

/// Where `cargo xtask wdm` puts its output (`test`: the test build's).
pub fn out_dir(test: bool) -> PathBuf {
    target_dir().join(if test { "wdm-test" } else { "wdm" })
}

/// Installs what the build needs (idempotent).
pub fn deps() -> Result {
    apt_install(APT)?;
    rustup_targets(&[DRIVER_TARGET])
}

/// Builds and checks the release scull.sys; returns its path.
pub fn build() -> Result<PathBuf> {
    build_variant(false)
}

/// Builds and checks scull.sys, the test build when `test`; returns its path.
pub fn build_variant(test: bool) -> Result<PathBuf> {
    crate::modgraph::check()?;
    deps()?;
    let what = if test { "test build, --features test-build" } else { "release" };
    step(&format!("wdm: cargo build scull-wdm ({what}; x86_64-pc-windows-msvc, bindgen over mingw-w64 DDK headers)"));
    let cargo_target = target_dir().join(if test { "scull-wdm-test" } else { "scull-wdm" });
    let manifest = root().join("scull-wdm").join("Cargo.toml");
    clippy(test, &cargo_target, &manifest)?;
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root().join("scull-wdm"))
        .env("CARGO_TARGET_DIR", &cargo_target)
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER", "rust-lld")
        .env(
            "CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_RUSTFLAGS",
            "-C linker-flavor=lld-link -C target-feature=+crt-static",
        )
        .args(["build", "--release", "--no-default-features", "--features", "mingw"])
        .args(["--target", DRIVER_TARGET, "--manifest-path"])
        .arg(&manifest);
    if test {
        c.args(["--features", "test-build"]);
    }
    crate::util::run(&mut c)?;
    if !test {
        oracle(&cargo_target, &manifest)?;
    }
    let built = cargo_target.join(DRIVER_TARGET).join("release");
    let out = out_dir(test);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let sys = out.join("scull.sys");
    let pdb = out.join("scull.pdb");
    copy(&built.join("scull.dll"), &sys)?;
    copy(&built.join("scull.pdb"), &pdb)?;
    check(&sys, &["ntoskrnl.exe"])?;
    Ok(sys)
}

/// clippy is in rustup's default profile, not in the minimal one.
pub fn ensure_clippy() -> Result {
    let cargo = || Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    if !cargo().args(["clippy", "--version"]).output().is_ok_and(|o| o.status.success()) {
        crate::util::run(Command::new("rustup").args(["component", "add", "clippy"]))?;
    }
    Ok(())
}

/// `cargo clippy -- -D warnings` on this binding path: the crate denies the
/// unsafe-code lints (`undocumented_unsafe_blocks`, `missing_safety_doc`,
/// `multiple_unsafe_ops_per_block`), which only clippy checks.
fn clippy(test: bool, cargo_target: &std::path::Path, manifest: &std::path::Path) -> Result {
    ensure_clippy()?;
    step("wdm: cargo clippy -- -D warnings (mingw-w64 bindings; the unsafe-code lints denied)");
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root().join("scull-wdm"))
        .env("CARGO_TARGET_DIR", cargo_target)
        .args(["clippy", "--release", "--no-default-features", "--features", if test { "mingw,test-build" } else { "mingw" }])
        .args(["--target", DRIVER_TARGET, "--manifest-path"])
        .arg(manifest)
        .args(["--", "-D", "warnings"]);
    crate::util::run(&mut c)
}

fn oracle(cargo_target: &std::path::Path, manifest: &std::path::Path) -> Result {
    step("wdm: layout oracle (cargo check --features oracle: bindings vs windows-sys WDK metadata)");
    let mut o = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    o.current_dir(root().join("scull-wdm"))
        .env("CARGO_TARGET_DIR", cargo_target)
        .args(["check", "--release", "--no-default-features", "--features", "oracle"])
        .args(["--target", DRIVER_TARGET, "--manifest-path"])
        .arg(manifest);
    crate::util::run(&mut o)
}

fn copy(from: &std::path::Path, to: &std::path::Path) -> Result {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}

/// Subsystem NATIVE, the required imports, and imports from the DLLs in
/// `dlls` only (ntoskrnl.exe first), read with objdump. Shared with
/// `cargo xtask wdk-check`. Returns the import count and the DLL names.
pub fn check(sys: &std::path::Path, dlls: &[&str]) -> Result<(usize, Vec<String>)> {
    let dump = output(Command::new("x86_64-w64-mingw32-objdump").arg("-p").arg(sys))?;
    let native = dump.lines().any(|l| l.starts_with("Subsystem") && l.contains("(NT native)"));
    if !native {
        return Err(format!("{}: subsystem is not NATIVE", sys.display()));
    }
    let imports: Vec<&str> = dump
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // "<hint-rva> <ordinal> <name>" rows of the import table.
            (w.len() == 3 && w[1].chars().all(|c| c.is_ascii_digit()) && u64::from_str_radix(w[0], 16).is_ok()).then(|| w[2])
        })
        .collect();
    let missing: Vec<&&str> = REQUIRED_IMPORTS.iter().filter(|i| !imports.contains(i)).collect();
    if !missing.is_empty() {
        return Err(format!("{}: missing imports {missing:?}", sys.display()));
    }
    let dll: Vec<&str> = dump.lines().filter_map(|l| l.trim().strip_prefix("DLL Name: ")).collect();
    // One import descriptor per DLL, ntoskrnl.exe's first, nothing outside `dlls`.
    let unique = dll.iter().enumerate().all(|(i, d)| !dll[..i].contains(d));
    if dll.first() != dlls.first() || !unique || dll.iter().any(|d| !dlls.contains(d)) {
        return Err(format!("{}: imports from {dll:?}; a kernel driver here imports from {dlls:?} only", sys.display()));
    }
    eprintln!("wdm: subsystem NATIVE; {} imports from {}", imports.len(), dll.join(", "));
    Ok((imports.len(), dll.iter().map(|d| d.to_string()).collect()))
}

/// `cargo xtask wdm [--test-build]`: build, then print the path (last line of output).
pub fn run(args: &[String]) -> Result {
    let test = match args {
        [] => false,
        [a] if a == "--test-build" => true,
        _ => return Err(format!("usage: cargo xtask wdm [--test-build]; got {args:?}")),
    };
    let sys = build_variant(test)?;
    println!("{}", sys.display());
    Ok(())
}

//! `cargo xtask wdk-check`: the wdk binding path (wdk-sys, wdk-build,
//! wdk-alloc: what a Windows user builds) compiled, linted and linked on
//! Linux.
//!
//! wdk-build 0.6.0 does not build on a non-Windows host as published, so the
//! check:
//! 1. copies the pinned wdk-build from the cargo registry (unmodified, as
//!    `cargo fetch` unpacked it) to `target/wdk-check/` and applies our patch
//!    `xtask/wdk-check/wdk-build-<version>.patch` with `patch -p1`; any other
//!    wdk-build version, or sources the patch does not fit exactly, fail;
//! 2. lays out a WDKContentRoot over the mingw-w64 headers and import
//!    libraries (`layout_content_root`), with the two headers of
//!    `xtask/wdk-check/` for what mingw-w64 lacks;
//! 3. runs `cargo clippy -- -D warnings` and `cargo build --release` on
//!    scull-wdm with its default feature `wdk` for x86_64-pc-windows-msvc,
//!    with `--config patch.crates-io.wdk-build.path=...` (nothing vendored,
//!    no file of the repository changed: Cargo.lock is put back), in
//!    scull-wdm's own `target/` (see `cargo_target`);
//! 4. checks the linked scull.sys with `cargo xtask wdm`'s own check.
//!
//! Before all that it checks the layout `cargo wdk build` (cargo-wdk) needs
//! in scull-wdm/ (xtask/src/cargowdk.rs): cargo-wdk itself builds only on
//! Windows.
//!
//! The last line is `wdk-check: ok (...)`.

use crate::util::{self, apt_install, output, root, step, target_dir, Result};
use crate::wdm;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The wdk-build version the patch fits. scull-wdm/Cargo.toml pins it too.
pub const WDK_BUILD_VERSION: &str = "0.6.0";

/// The SDK/WDK version directory of the laid-out content root (wdk-build
/// takes the highest `Lib/10.*`); the pair windows.yml installs.
const SDK_VERSION: &str = "10.0.22621.0";

/// mingw-w64's sysroot (mingw-w64-x86-64-dev).
const MINGW: &str = "/usr/x86_64-w64-mingw32";

/// The import libraries wdk-sys links on the WDM path (wdk-build's
/// `base_libraries`), and the mingw-w64 archive that stands for each. None:
/// mingw-w64 has no such library; an empty archive stands for it, so a
/// reference to one of its symbols fails the link.
const LIBS: &[(&str, Option<&str>)] = &[
    ("ntoskrnl.lib", Some("libntoskrnl.a")),
    ("hal.lib", Some("libhal.a")),
    ("wmilib.lib", Some("libwmilib.a")),
    // /GS failure reporting (__report_gsfailure): rustc emits no /GS checks.
    ("BufferOverflowFastFailK.lib", None),
];

fn cargo_cmd() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn manifest() -> PathBuf {
    root().join("scull-wdm").join("Cargo.toml")
}

fn scratch() -> PathBuf {
    target_dir().join("wdk-check")
}

/// Cargo's target dir for this build: scull-wdm's own `target/`, as on a
/// Windows host. wdk-build finds the top-level manifest as the first
/// ancestor of OUT_DIR that holds a Cargo.lock, so a target dir outside
/// scull-wdm/ would make it read the host workspace's manifest (and find no
/// `[package.metadata.wdk]`).
fn cargo_target() -> PathBuf {
    root().join("scull-wdm").join("target")
}

/// The registry copy of the locked wdk-build, after checking its version.
fn registry_wdk_build() -> Result<PathBuf> {
    util::run(cargo_cmd().arg("fetch").arg("--manifest-path").arg(manifest()))?;
    let id = output(cargo_cmd().args(["pkgid", "--manifest-path"]).arg(manifest()).arg("wdk-build"))?;
    let id = id.trim();
    let version = id.rsplit(['@', '#']).next().unwrap_or("");
    if !id.starts_with("registry+") || version != WDK_BUILD_VERSION {
        return Err(format!(
            "scull-wdm resolves wdk-build to `{id}`; wdk-check patches wdk-build {WDK_BUILD_VERSION} from crates.io \
             only (xtask/wdk-check/wdk-build-{WDK_BUILD_VERSION}.patch). Pin wdk-build ={WDK_BUILD_VERSION} in \
             scull-wdm/Cargo.toml, or write and review a patch for the new version"
        ));
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let src = home.join("registry").join("src");
    let mut found: Vec<PathBuf> = fs::read_dir(&src)
        .map_err(|e| format!("{}: {e}", src.display()))?
        .flatten()
        .map(|e| e.path().join(format!("wdk-build-{WDK_BUILD_VERSION}")))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| format!("wdk-build-{WDK_BUILD_VERSION} not unpacked under {}", src.display()))
}

/// `target/wdk-check/wdk-build-<version>`: the registry copy with our patch.
/// Kept while the patch is unchanged (a fresh copy would rebuild wdk-sys's
/// bindings).
fn patched_wdk_build(registry: &Path) -> Result<PathBuf> {
    let patch = root().join("xtask").join("wdk-check").join(format!("wdk-build-{WDK_BUILD_VERSION}.patch"));
    let text = fs::read(&patch).map_err(|e| format!("{}: {e}", patch.display()))?;
    let dir = scratch().join(format!("wdk-build-{WDK_BUILD_VERSION}"));
    let stamp = scratch().join(format!("wdk-build-{WDK_BUILD_VERSION}.applied"));
    if dir.join("Cargo.toml").is_file() && fs::read(&stamp).is_ok_and(|s| s == text) {
        return Ok(dir);
    }
    step(&format!("wdk-check: patch a copy of {}", registry.display()));
    let _ = fs::remove_file(&stamp);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::create_dir_all(scratch()).map_err(|e| format!("{}: {e}", scratch().display()))?;
    util::run(Command::new("cp").arg("-a").arg(registry).arg(&dir))?;
    // No fuzz, no offset guessing beyond patch's own: the patch fits these
    // sources exactly or the check stops.
    util::run(Command::new("patch")
        .args(["-p1", "--forward", "--fuzz=0", "--no-backup-if-mismatch", "-d"])
        .arg(&dir)
        .arg("-i")
        .arg(&patch))?;
    fs::write(&stamp, &text).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(dir)
}

/// A WDKContentRoot as wdk-build reads it (`Include/<ver>/{km/crt,km,shared}`,
/// `Lib/<ver>/km/x64`), made of links into mingw-w64's sysroot:
/// - `km/crt`: our `ntifs.h` (mingw-w64's plus the shim) and `ntstrsafe.h`;
/// - `km`: every header of mingw-w64's `include/ddk`;
/// - `shared`: mingw-w64's `include`;
/// - `Lib/.../km/x64`: the `LIBS` names, linked to mingw-w64's archives.
fn layout_content_root() -> Result<PathBuf> {
    let croot = scratch().join("content-root");
    let _ = fs::remove_dir_all(&croot);
    let inc = croot.join("Include").join(SDK_VERSION);
    let crt = inc.join("km").join("crt");
    let lib = croot.join("Lib").join(SDK_VERSION).join("km").join("x64");
    for d in [&crt, &lib] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let link = |from: &Path, to: &Path| {
        std::os::unix::fs::symlink(from, to).map_err(|e| format!("symlink {} -> {}: {e}", to.display(), from.display()))
    };
    let shim = root().join("xtask").join("wdk-check");
    for h in ["ntifs.h", "ntstrsafe.h"] {
        link(&shim.join(h), &crt.join(h))?;
    }
    let ddk = Path::new(MINGW).join("include").join("ddk");
    let headers = fs::read_dir(&ddk).map_err(|e| format!("{}: {e} (apt-get install mingw-w64-x86-64-dev)", ddk.display()))?;
    for h in headers.flatten() {
        link(&h.path(), &inc.join("km").join(h.file_name()))?;
    }
    link(&Path::new(MINGW).join("include"), &inc.join("shared"))?;
    for (name, archive) in LIBS {
        match archive {
            Some(a) => link(&Path::new(MINGW).join("lib").join(a), &lib.join(name))?,
            // The empty `ar` archive: its magic only.
            None => fs::write(lib.join(name), b"!<arch>\n").map_err(|e| format!("{name}: {e}"))?,
        }
    }
    Ok(croot)
}

/// Runs cargo `sub` on the wdk path of scull-wdm (default features).
fn cargo_wdk(sub: &[&str], patched: &Path, croot: &Path, tail: &[&str]) -> Result {
    // Two clang arguments for wdk-build's bindgen run (after its own):
    // - `-fno-ms-compatibility`, which undoes wdk-build's
    //   `-fms-compatibility` only: in that mode clang does not define
    //   __GNUC__, and mingw-w64's _mingw.h (written for GNU compilers) then
    //   defines `__attribute__(x)` away, which breaks clang's own intrinsics
    //   headers. The target stays x86_64-pc-windows-msvc (MS record layout,
    //   _MSC_VER defined), and `-fms-extensions` stays on;
    // - clang's own headers (mmintrin.h...): the libclang that bindgen loads
    //   from /usr/lib/x86_64-linux-gnu derives a resource dir that does not
    //   exist, and wdk-build turns off bindgen's include detection.
    let resource = output(Command::new("clang").arg("-print-resource-dir"))?;
    let mut c = cargo_cmd();
    c.current_dir(root().join("scull-wdm"))
        .env("CARGO_TARGET_DIR", cargo_target())
        .env("WDKContentRoot", croot)
        // As windows.yml (windows-drivers-rs's CI convention): the SDK/WDK
        // version named, not guessed.
        .env("Version_Number", SDK_VERSION)
        // Only the linker: `-C linker-flavor=lld-link` in the target's
        // rustflags would also reach the `cargo metadata` that wdk-build runs.
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER", "rust-lld")
        // wdk-build refuses a dynamically linked CRT (StaticCrtNotEnabled).
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_RUSTFLAGS", "-C target-feature=+crt-static")
        .env(
            format!("BINDGEN_EXTRA_CLANG_ARGS_{}", wdm::DRIVER_TARGET.replace('-', "_")),
            format!("-fno-ms-compatibility -isystem{}/include", resource.trim()),
        )
        .args(sub)
        .arg("--config")
        .arg(format!("patch.crates-io.wdk-build.path={:?}", patched.display().to_string()))
        .args(["--release", "--target", wdm::DRIVER_TARGET, "--manifest-path"])
        .arg(manifest())
        .args(tail);
    util::run(&mut c)
}

/// `cargo xtask wdk-check`.
pub fn run(_args: &[String]) -> Result {
    let t0 = Instant::now();
    step("wdk-check: the layout `cargo wdk build` needs (package name, scull.inx, metadata.wdk, cdylib)");
    crate::cargowdk::run()?;
    crate::modgraph::check()?;
    wdm::deps()?;
    apt_install(&["patch"])?;
    wdm::ensure_clippy()?;
    let registry = registry_wdk_build()?;
    let patched = patched_wdk_build(&registry)?;
    let croot = layout_content_root()?;
    // The [patch] makes cargo record the path source in Cargo.lock (and
    // wdk-build's own `cargo metadata`, which has no patch, writes it back):
    // the check leaves the file as it found it.
    let lock_path = root().join("scull-wdm").join("Cargo.lock");
    let lock = fs::read(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let built = (|| {
        step("wdk-check: cargo clippy -- -D warnings (feature wdk: wdk-sys bindings over the mingw-w64 content root)");
        cargo_wdk(&["clippy"], &patched, &croot, &["--", "-D", "warnings"])?;
        step("wdk-check: cargo build --release (feature wdk), linked by rust-lld against mingw-w64's import libraries");
        cargo_wdk(&["build"], &patched, &croot, &[])
    })();
    fs::write(&lock_path, &lock).map_err(|e| format!("restoring {}: {e}", lock_path.display()))?;
    built?;
    // The build step's own line first: the result line must be the last.
    crate::util::end_step(true);
    let built = cargo_target().join(wdm::DRIVER_TARGET).join("release");
    // What cargo-wdk's PackageTask takes from this directory (`cargo wdk build
    // --target-arch amd64 --profile release`): the package's dll, renamed to
    // .sys, and its pdb.
    let pdb = built.join(format!("{}.pdb", crate::cargowdk::DRIVER));
    if !pdb.is_file() {
        return Err(format!("{} is missing: cargo-wdk copies it into the driver package", pdb.display()));
    }
    let dll = built.join(format!("{}.dll", crate::cargowdk::DRIVER));
    let sys = scratch().join("scull.sys");
    fs::copy(&dll, &sys).map_err(|e| format!("copy {} -> {}: {e}", dll.display(), sys.display()))?;
    let (n, dlls) = wdm::check(&sys, &["ntoskrnl.exe", "hal.dll"])?;
    let size = fs::metadata(&sys).map_err(|e| format!("{}: {e}", sys.display()))?.len();
    crate::util::note(&format!("wdk-check: {:.0} s in all", t0.elapsed().as_secs_f64()));
    println!(
        "wdk-check: ok (cargo-wdk layout, clippy clean, scull.sys {size} bytes, subsystem NATIVE, {n} imports from {})",
        dlls.join(", ")
    );
    Ok(())
}

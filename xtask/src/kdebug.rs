//! The debug kernel of `cargo xtask qemu --debug-kernel`: Debian's
//! linux-source-7.3 built in the trixie chroot with `make tinyconfig` plus
//! `xtask/linux-debug.config` (KASAN, lockdep, kmemleak, failslab, Rust...),
//! and scull.ko built a second time against it.
//!
//! `CONFIG_RUST` with KASAN needs a clang-built kernel (init/Kconfig: `depends
//! on !KASAN || CC_IS_CLANG`), so this kernel is compiled by trixie's clang-19
//! (the LLVM of its rustc 1.85 and of the libclang bindgen uses), linked by
//! binutils; host programs stay on gcc-14.
//!
//! Everything lives in `~/.cache/scull-rs/linux/debug/`, bind-mounted at
//! `/scull-debug` in the chroot for each command (in the command's private
//! mount namespace, see [`chroot::Mounted`]):
//!
//! 1. clang-19 installed in the chroot (apt, checked by path, not stamped:
//!    a chroot restored from `chroot.tar.zst` lacks it);
//! 2. `work/src`: the source, unpacked from the linux-source .deb;
//! 3. the config: tinyconfig, the fragment merged by merge_config.sh,
//!    olddefconfig; then every line of the fragment must be in `.config`
//!    as written (an option that drops out fails the build);
//! 4. `make -j2` (vmlinux, bzImage, Module.symvers); an interrupted build
//!    resumes where make stopped;
//! 5. `tree/`: what an out-of-tree module build needs (the kernel's own
//!    `scripts/package/install-extmod-build`, plus `rust/*.rmeta`, the Rust
//!    proc-macro libraries and `scripts/target.json`), the bzImage and the
//!    config, assembled in `tree.tmp` and renamed into place; `work/` is then
//!    deleted;
//! 6. `debug-<key>.tar.zst` of `tree/`: a machine that restores that file
//!    skips steps 1-5.
//!
//! Stamps carry a key made of [`RECIPE`] and a hash of the fragment, so
//! editing either rebuilds.

use std::path::PathBuf;
use std::time::Instant;

use crate::chroot::{self, remove_dir, Mounted, Stamps};
use crate::kmod::{self, Tree};
use crate::util::{sh, step, Result};

/// Bump when the recipe (not the fragment) changes.
const RECIPE: &str = "1";
/// The config fragment, merged over tinyconfig.
pub const FRAGMENT: &str = include_str!("../linux-debug.config");
/// `CONFIG_LOCALVERSION` of the fragment: the vermagic of the debug scull.ko.
pub const KREL: &str = "7.3.4-scull-debug";
/// Where `dir()` appears inside the chroot.
const INSIDE: &str = "/scull-debug";
const CLANG: &str = "clang-19";

pub fn dir() -> PathBuf {
    let d = chroot::dir().join("debug");
    let _ = std::fs::create_dir_all(&d);
    d
}

/// FNV-1a: a stable hash of the fragment for the stamp key.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

fn key() -> String {
    format!("r{RECIPE}-{:08x}", fnv(FRAGMENT))
}

/// The stamps: the unpacked source does not depend on the fragment (a
/// changed fragment reconfigures and rebuilds incrementally in the same
/// `work/`); every later step does.
fn stamps() -> Stamps {
    Stamps::new(dir(), |name| if name == "source" { format!("r{RECIPE}") } else { key() })
}

/// The finished tree (host path).
pub fn tree() -> PathBuf {
    dir().join("tree")
}

fn tarball() -> PathBuf {
    dir().join(format!("debug-{}.tar.zst", key()))
}

fn chroot_run(script: &str) -> Result {
    Mounted::new(&chroot::chroot())?.bind(&dir(), INSIDE).run(script)
}

/// make with the debug kernel's toolchain.
fn make_vars() -> String {
    format!("ARCH=x86 CC={CLANG} HOSTCC=gcc-14")
}

/// The lines of the fragment that must survive olddefconfig, as
/// (option, `Some(value)` or `None` for "is not set").
fn required() -> Vec<(String, Option<String>)> {
    FRAGMENT
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix("# CONFIG_") {
                rest.strip_suffix(" is not set").map(|o| (format!("CONFIG_{o}"), None))
            } else if l.starts_with("CONFIG_") {
                l.split_once('=').map(|(k, v)| (k.to_string(), Some(v.to_string())))
            } else {
                None
            }
        })
        .collect()
}

/// Every fragment line must be in `.config` as written.
fn verify_config(config: &str) -> Result {
    let mut missing = Vec::new();
    for (opt, want) in required() {
        let have = config.lines().find_map(|l| l.strip_prefix(&format!("{opt}=")));
        if have != want.as_deref() {
            missing.push(format!("{opt}: wanted {}, olddefconfig made it {}", want.as_deref().unwrap_or("unset"), have.unwrap_or("unset")));
        }
    }
    if missing.is_empty() {
        eprintln!("kdebug: all {} options of xtask/linux-debug.config are in the .config", required().len());
        Ok(())
    } else {
        Err(format!(
            "the debug kernel's .config lost options of xtask/linux-debug.config (a dependency is missing; for CONFIG_RUST see `make rustavailable`):\n  {}",
            missing.join("\n  ")
        ))
    }
}

/// The linux-source .deb (downloaded again if only the chroot tarball was restored).
fn source_deb() -> Result<PathBuf> {
    let debs = chroot::dir().join("debs");
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(&debs).ok()?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("linux-source-7.3_")))
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    step("kdebug: downloading linux-source-7.3");
    sh(&format!("mkdir -p {d} && cd {d} && apt-get {o} download linux-source-7.3={v}", d = debs.display(), o = chroot::apt_opts(&chroot::dir()), v = kmod::KVER_PKG))?;
    find().ok_or_else(|| "linux-source-7.3 .deb not found after download".to_string())
}

/// Builds (or restores) the debug kernel tree; returns its host path.
pub fn kernel() -> Result<PathBuf> {
    let t0 = Instant::now();
    kmod::setup()?;
    let d = dir();
    let ds = d.display();
    // Two checkouts asking at once take turns; the second finds the tree.
    let _lock = chroot::lock(&d.join("build.lock"), "debug kernel build")?;
    let stamps = stamps();
    if stamps.done("tree") && tree().join("bzImage").exists() {
        if !tarball().exists() {
            pack()?;
        }
        return Ok(tree());
    }
    remove_dir(&tree())?;
    if tarball().exists() {
        step("kdebug: restoring the debug kernel tree from its tarball");
        remove_dir(&d.join("restore.tmp"))?;
        sh(&format!(
            "mkdir -p {ds}/restore.tmp && tar -C {ds}/restore.tmp -I 'zstd -T2' -xf {t} && mv {ds}/restore.tmp/tree {ds}/tree && rmdir {ds}/restore.tmp",
            t = tarball().display()
        ))?;
        stamps.mark("tree")?;
        eprintln!("kdebug: restored in {:.0} s", t0.elapsed().as_secs_f64());
        return Ok(tree());
    }

    step(&format!("kdebug: {CLANG} in the chroot (CONFIG_RUST with KASAN needs a clang-built kernel)"));
    chroot_run(&format!("command -v {CLANG} >/dev/null || {{ apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends {CLANG}; }}; {CLANG} --version | head -1"))?;

    let work = d.join("work");
    if !stamps.done("source") {
        step("kdebug: unpacking linux-source-7.3");
        let deb = source_deb()?;
        remove_dir(&work)?;
        remove_dir(&d.join("work.tmp"))?;
        sh(&format!(
            "mkdir -p {ds}/work.tmp && cd {ds}/work.tmp && dpkg-deb --fsys-tarfile {deb} | tar -x --strip-components=3 ./usr/src/linux-source-7.3.tar.xz
tar -xf linux-source-7.3.tar.xz && rm linux-source-7.3.tar.xz && mv linux-source-7.3 src && cd .. && mv work.tmp work",
            deb = deb.display()
        ))?;
        stamps.mark("source")?;
    }

    let m = make_vars();
    if !stamps.done("config") {
        step("kdebug: config: tinyconfig + xtask/linux-debug.config, olddefconfig");
        std::fs::write(work.join("debug.config"), FRAGMENT).map_err(|e| e.to_string())?;
        chroot_run(&format!(
            "cd {INSIDE}/work/src
make {m} tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config ../debug.config >/dev/null
make {m} olddefconfig"
        ))?;
        let config = std::fs::read_to_string(work.join("src/.config")).map_err(|e| format!(".config: {e}"))?;
        verify_config(&config)?;
        stamps.mark("config")?;
    }

    if !stamps.done("built") {
        step("kdebug: building the debug kernel (make -j2; resumes where it stopped)");
        let tb = Instant::now();
        chroot_run(&format!(
            "cd {INSIDE}/work/src
make {m} -j2 all
test \"$(cat include/config/kernel.release)\" = {KREL}
ls -la arch/x86/boot/bzImage Module.symvers rust/*.rmeta rust/*.so scripts/target.json"
        ))?;
        eprintln!("kdebug: make took {:.0} s", tb.elapsed().as_secs_f64());
        stamps.mark("built")?;
    }

    step("kdebug: keeping what out-of-tree modules need (tree/)");
    remove_dir(&d.join("tree.tmp"))?;
    chroot_run(&format!(
        "cd {INSIDE}/work/src
srctree=. SRCARCH=x86 CC=cc HOSTCC=cc MAKE=make sh scripts/package/install-extmod-build {INSIDE}/tree.tmp
mkdir -p {INSIDE}/tree.tmp/rust
cp rust/*.rmeta rust/*.so {INSIDE}/tree.tmp/rust/
cp scripts/target.json {INSIDE}/tree.tmp/scripts/
cp arch/x86/boot/bzImage .config System.map {INSIDE}/tree.tmp/"
    ))?;
    std::fs::rename(d.join("tree.tmp"), tree()).map_err(|e| format!("rename tree: {e}"))?;
    stamps.mark("tree")?;
    remove_dir(&work)?;
    for s in ["source", "config", "built"] {
        stamps.unmark(s);
    }

    pack()?;
    eprintln!("kdebug: debug kernel ready in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(tree())
}

/// `debug-<key>.tar.zst` of `tree/`, written under a temporary name.
fn pack() -> Result {
    step("kdebug: compressing tree/ for restores");
    let d = dir();
    sh(&format!(
        "cd {ds} && rm -f debug-*.tar.zst.tmp && tar -C {ds} -I 'zstd -T2 -3' -cf {t}.tmp tree && mv {t}.tmp {t} && du -sh tree {t}",
        ds = d.display(),
        t = tarball().display()
    ))
}

/// The debug kernel's bzImage and scull.ko built against its tree
/// (target/scull-linux-debug/scull.ko).
pub fn build() -> Result<(PathBuf, PathBuf)> {
    let t0 = Instant::now();
    let tree = kernel()?;
    eprintln!("kdebug: debug kernel tree ready ({:.0} s)", t0.elapsed().as_secs_f64());
    let kdir = format!("{INSIDE}/tree");
    let ko = kmod::build_against(&Tree { kdir: &kdir, make_vars: make_vars(), suffix: "-debug", binds: vec![(dir(), INSIDE)] })?;
    Ok((tree.join("bzImage"), ko))
}

/// `cargo xtask kmod --debug-kernel`: build, then print the two paths.
pub fn run() -> Result {
    let (bz, ko) = build()?;
    println!("{}\n{}", bz.display(), ko.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragment_asks_for_the_checkers() {
        let req = required();
        for o in ["CONFIG_RUST", "CONFIG_KASAN", "CONFIG_KASAN_GENERIC", "CONFIG_PROVE_LOCKING", "CONFIG_DEBUG_ATOMIC_SLEEP", "CONFIG_DEBUG_KMEMLEAK", "CONFIG_DEBUG_LIST", "CONFIG_FAULT_INJECTION", "CONFIG_FAILSLAB", "CONFIG_FAULT_INJECTION_DEBUG_FS", "CONFIG_USERFAULTFD", "CONFIG_SMP", "CONFIG_DEVTMPFS", "CONFIG_PROC_FS", "CONFIG_SYSFS", "CONFIG_MODULES", "CONFIG_MODULE_UNLOAD", "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_BLK_DEV_INITRD", "CONFIG_TMPFS", "CONFIG_DEBUG_FS"] {
            assert!(req.iter().any(|(k, v)| k == o && v.as_deref() == Some("y")), "{o}=y missing from the fragment");
        }
        assert!(req.iter().any(|(k, v)| k == "CONFIG_SLUB_TINY" && v.is_none()));
        assert!(req.iter().any(|(k, v)| k == "CONFIG_LOCALVERSION" && v.as_deref() == Some(&format!("\"{}\"", &KREL[5..]) as &str)));
    }

    #[test]
    fn a_dropped_option_fails_verification() {
        let full: String = required()
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}\n")))
            .collect();
        assert!(verify_config(&full).is_ok());
        let no_rust = full.replace("CONFIG_RUST=y\n", "# CONFIG_RUST is not set\n");
        let e = verify_config(&no_rust).unwrap_err();
        assert!(e.contains("CONFIG_RUST: wanted y"), "{e}");
        let tiny = format!("{full}CONFIG_SLUB_TINY=y\n");
        assert!(verify_config(&tiny).unwrap_err().contains("CONFIG_SLUB_TINY: wanted unset"));
    }
}

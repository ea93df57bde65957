//! `cargo xtask kmod`: builds `scull.ko` against Debian's trixie-backports
//! 7.3.4 kernel (CONFIG_RUST=y).
//!
//! Debian ships no Rust metadata in its headers, and trixie's rustc/bindgen
//! need a newer glibc than bookworm has, so everything runs in a trixie
//! chroot kept under `~/.cache/scull-rs/linux/`:
//!
//! 1. a private apt source list (trixie + trixie-backports) with its own
//!    lists directory: the system's apt configuration is never touched;
//! 2. trixie's debootstrap, unpacked with `dpkg -x`;
//! 3. the chroot (`debootstrap --variant=minbase`);
//! 4. the kernel packages (source, headers, kbuild, image);
//! 5. `olddefconfig` + `modules_prepare` of Debian's source with Debian's
//!    `.config`, then `rust/*.rmeta`, `rust/*.so` and `scripts/target.json`
//!    copied into the installed headers; the source tree is then deleted;
//! 6. a zstd tarball of the finished chroot (`chroot.tar.zst`), so a machine
//!    that restores only that file skips steps 1-5.
//!
//! Each step writes its stamp only after it succeeded, and works in a
//! temporary directory that is renamed into place, so an interrupted run
//! resumes cleanly. Mounts under the cache are always unmounted before any
//! directory is removed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::chroot::{self, apt_opts, chroot, dir, remove_dir, unmount_all, Mounted, Stamps};
use crate::util::{apt_install, root, sh, step, target_dir, Result};

pub const KREL: &str = "7.3.4+deb13-amd64";
pub const KVER_PKG: &str = "7.3.4-1~bpo13+1";
const KBUILD_PKG: &str = "linux-kbuild-7.3.4+deb13";
const HEADERS: &str = "/usr/src/linux-headers-7.3.4+deb13-amd64";
/// Bump when the chroot recipe changes: old stamps are then ignored.
const RECIPE: &str = "3";

const CHROOT_PKGS: &str = "gcc,make,bc,bison,flex,libelf-dev,libdw-dev,libssl-dev,python3,rustc,rust-src,\
bindgen,libclang-dev,cpio,kmod,xz-utils,dwarves,perl,zstd";

/// Holds an exclusive lock on `<cache>/linux/setup.lock` while it lives, so
/// that two checkouts setting up the shared chroot at once take turns (the
/// second then finds the first one's stamps) instead of both debootstrapping
/// into the same temporary directory. The kernel drops the lock if the
/// process dies.
pub fn setup_lock() -> Result<std::fs::File> {
    chroot::lock(&dir().join("setup.lock"), "chroot setup")
}

/// Steps 1-6 above (each skipped when its stamp exists).
pub fn setup() -> Result {
    let stamps = Stamps::new(dir(), |_| format!("r{RECIPE}"));
    let _lock = setup_lock()?;
    let d = dir();
    let ds = d.display();
    apt_install(&["debian-archive-keyring", "zstd", "xz-utils", "binutils", "apt"])?;

    if !stamps.done("apt") {
        step("kmod: private apt lists for trixie + trixie-backports");
        sh(&format!(
            "mkdir -p {ds}/apt/lists/partial {ds}/apt/cache/archives/partial
cat > {ds}/apt/sources.list <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
EOF
apt-get {o} update",
            o = apt_opts(&d)
        ))?;
        stamps.mark("apt")?;
    }

    if !stamps.done("debs") {
        step("kmod: downloading trixie debootstrap and the 7.3.4 kernel packages");
        sh(&format!(
            "rm -rf {ds}/debs.tmp && mkdir -p {ds}/debs.tmp && cd {ds}/debs.tmp
apt-get {o} download debootstrap linux-source-7.3={v} linux-headers-{k} linux-headers-7.3.4+deb13-common \
  {kb} linux-binary-{k}
ls -la
cd .. && rm -rf debs && mv debs.tmp debs",
            o = apt_opts(&d),
            v = KVER_PKG,
            k = KREL,
            kb = KBUILD_PKG
        ))?;
        stamps.mark("debs")?;
    }

    let tarball = d.join("chroot.tar.zst");
    if !stamps.done("chroot-ready") && tarball.exists() && stamps.done("tarball") {
        step("kmod: restoring the chroot from chroot.tar.zst");
        remove_dir(&chroot())?;
        remove_dir(&d.join("restore.tmp"))?;
        sh(&format!(
            "mkdir -p {ds}/restore.tmp && tar -C {ds}/restore.tmp -I 'zstd -T2' -xf {ds}/chroot.tar.zst && mv {ds}/restore.tmp/chroot {ds}/chroot && rmdir {ds}/restore.tmp"
        ))?;
        for s in ["chroot", "headers", "prepared"] {
            stamps.mark(s)?;
        }
        stamps.mark("chroot-ready")?;
    }

    if !stamps.done("chroot") {
        step("kmod: debootstrap trixie (minbase)");
        let tmp = d.join("chroot.tmp");
        remove_dir(&tmp)?;
        remove_dir(&chroot())?;
        sh(&format!(
            "rm -rf {ds}/debootstrap && mkdir -p {ds}/debootstrap && dpkg -x {ds}/debs/debootstrap_*.deb {ds}/debootstrap
DEBOOTSTRAP_DIR={ds}/debootstrap/usr/share/debootstrap {ds}/debootstrap/usr/sbin/debootstrap \
  --variant=minbase --include={CHROOT_PKGS} trixie {ds}/chroot.tmp http://deb.debian.org/debian"
        ))?;
        unmount_all(&tmp)?;
        std::fs::rename(&tmp, chroot()).map_err(|e| format!("rename chroot: {e}"))?;
        stamps.mark("chroot")?;
    }

    if !stamps.done("headers") {
        step("kmod: unpacking Debian's 7.3.4 headers and kbuild in the chroot (dpkg -x: no maintainer scripts)");
        sh(&format!("mkdir -p {ds}/chroot/debs && cp {ds}/debs/linux-*.deb {ds}/chroot/debs/"))?;
        let m = Mounted::new(&chroot())?;
        m.run(&format!(
            "cd /debs && for p in {kb}_*.deb linux-headers-7.3.4+deb13-common_*.deb linux-headers-{k}_*.deb; do dpkg -x $p /; done
ls {h}",
            kb = KBUILD_PKG,
            k = KREL,
            h = HEADERS
        ))?;
        drop(m);
        stamps.mark("headers")?;
    }

    if !stamps.done("prepared") {
        step("kmod: modules_prepare of linux-source-7.3 with Debian's config (rust metadata)");
        let m = Mounted::new(&chroot())?;
        m.run(&format!(
            "cd /usr/src && rm -rf linux-source-7.3 && dpkg-deb --fsys-tarfile /debs/linux-source-7.3_*.deb | tar -x --strip-components=3 ./usr/src/linux-source-7.3.tar.xz
tar -xf linux-source-7.3.tar.xz && rm linux-source-7.3.tar.xz
cd linux-source-7.3
cp {h}/.config .config
cp {h}/Module.symvers Module.symvers
M='make ARCH=x86 CC=x86_64-linux-gnu-gcc-14 HOSTCC=gcc-14 KERNELRELEASE={k}'
$M olddefconfig
$M -j2 modules_prepare
ls rust/*.rmeta rust/*.so scripts/target.json
for dst in {h} /usr/lib/{kb}; do
  mkdir -p $dst/rust $dst/scripts
  cp rust/*.rmeta rust/*.so $dst/rust/
  cp scripts/target.json $dst/scripts/target.json
done
# The generated bindings, for reference when writing the module.
mkdir -p {h}/rust/generated && cp rust/bindings/*generated*.rs rust/uapi/*generated*.rs {h}/rust/generated/ 2>/dev/null || true
cd /usr/src && rm -rf linux-source-7.3 /debs/linux-source-7.3_*.deb",
            h = HEADERS,
            k = KREL,
            kb = KBUILD_PKG
        ))?;
        drop(m);
        stamps.mark("prepared")?;
    }

    if !stamps.done("tarball") {
        step("kmod: compressing the chroot to chroot.tar.zst");
        unmount_all(&chroot())?;
        sh(&format!(
            "cd {ds} && rm -f chroot.tar.zst.tmp && tar --one-file-system -C {ds} -I 'zstd -T2 -3' -cf chroot.tar.zst.tmp chroot && mv chroot.tar.zst.tmp chroot.tar.zst && ls -la chroot.tar.zst"
        ))?;
        stamps.mark("tarball")?;
    }
    stamps.mark("chroot-ready")?;
    Ok(())
}

/// The path of the vmlinuz from Debian's image package (extracted on demand).
pub fn vmlinuz() -> Result<PathBuf> {
    let d = dir();
    let out = d.join(format!("vmlinuz-{KREL}"));
    if !out.exists() {
        sh(&format!(
            "cd {ds} && rm -rf img.tmp && mkdir img.tmp && dpkg -x $(ls debs/linux-binary-*.deb | head -1) img.tmp && cp $(ls img.tmp/boot/vmlinuz-{KREL} img.tmp/usr/lib/modules/{KREL}/vmlinuz 2>/dev/null | head -1) vmlinuz-{KREL}.tmp && mv vmlinuz-{KREL}.tmp vmlinuz-{KREL} && rm -rf img.tmp",
            ds = d.display()
        ))?;
    }
    Ok(out)
}

/// `build/<checkout>`: where this checkout's module builds inside the chroot.
pub fn build_subdir() -> String {
    let name: String = root()
        .file_name()
        .map(|n| n.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect())
        .unwrap_or_default();
    format!("build/{}", if name.is_empty() { "scull" } else { &name })
}

/// A kernel build tree in the chroot that scull.ko can be built against.
pub struct Tree<'a> {
    /// The tree's path inside the chroot (`make -C`).
    pub kdir: &'a str,
    /// Extra make variables (`KERNELRELEASE=...`, `CC=...`).
    pub make_vars: String,
    /// Appended to the chroot build dir and to `target/scull-linux`.
    pub suffix: &'a str,
    /// Host directories the build needs in the chroot (see [`Mounted::bind`]).
    pub binds: Vec<(PathBuf, &'a str)>,
}

/// Builds scull.ko against Debian's headers and returns its path
/// (target/scull-linux/scull.ko).
pub fn build() -> Result<PathBuf> {
    let t0 = Instant::now();
    setup()?;
    crate::util::note(&format!("kmod: chroot and metadata ready ({:.0} s)", t0.elapsed().as_secs_f64()));
    let ko = build_against(&Tree { kdir: HEADERS, make_vars: format!("KERNELRELEASE={KREL}"), suffix: "", binds: Vec::new() })?;
    crate::util::note(&format!("kmod: done in {:.0} s", t0.elapsed().as_secs_f64()));
    Ok(ko)
}

/// Builds scull.ko against `tree` (the chroot is ready) and returns its path
/// (target/scull-linux<suffix>/scull.ko).
pub fn build_against(tree: &Tree) -> Result<PathBuf> {
    step(&format!("kmod: building scull.ko against {}", tree.kdir));
    let cr = chroot();
    let src = root();
    let b = format!("{}{}", build_subdir(), tree.suffix);
    // The module and the core are copied (not bind-mounted) into the chroot,
    // under a directory of this checkout's own, so two worktrees can build.
    sh(&format!(
        "mkdir -p {c}/{b}/scull-linux {c}/{b}/scull-core/src
cp -p {s}/scull-core/src/*.rs {c}/{b}/scull-core/src/
find {c}/{b}/scull-linux -maxdepth 1 -type f \\( -name '*.rs' -o -name Kbuild \\) -delete
cp -p {s}/scull-linux/*.rs {s}/scull-linux/Kbuild {c}/{b}/scull-linux/",
        c = cr.display(),
        s = src.display()
    ))?;
    let mut m = Mounted::new(&cr)?;
    for (host, inside) in &tree.binds {
        m = m.bind(host, inside);
    }
    m.run(&format!("make -C {} M=/{b}/scull-linux {} -j2 modules", tree.kdir, tree.make_vars))?;
    drop(m);
    let out = target_dir().join(format!("scull-linux{}", tree.suffix));
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let ko = out.join("scull.ko");
    std::fs::copy(cr.join(&b).join("scull-linux/scull.ko"), &ko).map_err(|e| format!("copy scull.ko: {e}"))?;
    Ok(ko)
}

/// `modinfo` of a built scull.ko (run in the chroot, where kmod is installed).
pub fn modinfo(ko: &Path) -> Result<String> {
    let cr = chroot();
    let rel = format!("{}/modinfo-scull.ko", build_subdir());
    std::fs::create_dir_all(cr.join(build_subdir())).map_err(|e| format!("mkdir: {e}"))?;
    std::fs::copy(ko, cr.join(&rel)).map_err(|e| format!("copy: {e}"))?;
    let info = Command::new("chroot").arg(&cr).args(["/usr/sbin/modinfo", &format!("/{rel}")]).output().map_err(|e| format!("modinfo: {e}"))?;
    Ok(String::from_utf8_lossy(&info.stdout).into_owned())
}

/// `cargo xtask kmod`: build, then print the path of scull.ko.
pub fn run() -> Result {
    let ko = build()?;
    println!("{}", ko.display());
    Ok(())
}

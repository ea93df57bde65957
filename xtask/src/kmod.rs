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

use crate::util::{apt_install, cache_dir, root, run, step, target_dir, Result};

pub const KREL: &str = "7.3.4+deb13-amd64";
pub const KVER_PKG: &str = "7.3.4-1~bpo13+1";
const KBUILD_PKG: &str = "linux-kbuild-7.3.4+deb13";
const HEADERS: &str = "/usr/src/linux-headers-7.3.4+deb13-amd64";
/// Bump when the chroot recipe changes: old stamps are then ignored.
const RECIPE: &str = "3";

const CHROOT_PKGS: &str = "gcc,make,bc,bison,flex,libelf-dev,libdw-dev,libssl-dev,python3,rustc,rust-src,\
bindgen,libclang-dev,cpio,kmod,xz-utils,dwarves,perl,zstd";

pub fn dir() -> PathBuf {
    let d = cache_dir().join("linux");
    let _ = std::fs::create_dir_all(&d);
    d
}

pub fn chroot() -> PathBuf {
    dir().join("chroot")
}

fn stamp(name: &str) -> PathBuf {
    dir().join(format!("stamp-{name}-r{RECIPE}"))
}

fn done(name: &str) -> bool {
    stamp(name).exists()
}

fn mark(name: &str) -> Result {
    std::fs::write(stamp(name), b"").map_err(|e| format!("write stamp {name}: {e}"))
}

pub fn sh(script: &str) -> Result {
    run(Command::new("bash").args(["-euo", "pipefail", "-c", script]))
}

/// Every mount point at or below `p`, deepest first.
fn mounts_under(p: &Path) -> Vec<String> {
    let p = p.to_string_lossy().into_owned();
    let mut v: Vec<String> = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .filter(|m| m == &p || m.starts_with(&format!("{p}/")))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

fn unmount_all(p: &Path) -> Result {
    for m in mounts_under(p) {
        run(Command::new("umount").arg(&m)).or_else(|_| run(Command::new("umount").args(["-l", &m])))?;
    }
    if mounts_under(p).is_empty() {
        Ok(())
    } else {
        Err(format!("still mounted under {}", p.display()))
    }
}

/// `rm -rf` that refuses to cross live mounts.
pub fn remove_dir(p: &Path) -> Result {
    if !p.exists() {
        return Ok(());
    }
    unmount_all(p)?;
    run(Command::new("rm").args(["-rf", "--one-file-system"]).arg(p))
}

/// Runs commands in the chroot, each in a private mount namespace of its own
/// (`unshare --mount --propagation private`) in which /proc is mounted for
/// rustc (it finds its sysroot through /proc/self/exe). The mount lives and
/// dies with that one command and is invisible to every other process, so
/// concurrent runs in the shared chroot (two worktrees, or a kernel build
/// beside a module build) never unmount each other's /proc, and nothing is
/// left mounted under the cache if a run is killed.
/// Host directories can be bind-mounted into the chroot the same way
/// ([`Mounted::bind`]): the debug kernel's cache lives outside the chroot.
pub struct Mounted(PathBuf, Vec<(PathBuf, String)>);

impl Mounted {
    pub fn new(root: &Path) -> Result<Self> {
        Ok(Mounted(root.to_path_buf(), Vec::new()))
    }
    /// Bind-mounts `host` at `inside` (absolute, in the chroot) for each command.
    pub fn bind(mut self, host: &Path, inside: &str) -> Self {
        self.1.push((host.to_path_buf(), inside.to_string()));
        self
    }
    pub fn run(&self, script: &str) -> Result {
        let proc_dir = self.0.join("proc");
        // $1 = proc dir, then host/target pairs up to "--", then the chroot command.
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                r#"mount -t proc proc "$1" && shift
while [ "$1" != -- ]; do mkdir -p "$2" && mount --bind "$1" "$2" || exit 1; shift 2; done
shift && exec chroot "$@""#,
            )
            .arg("sh")
            .arg(&proc_dir);
        for (host, inside) in &self.1 {
            cmd.arg(host).arg(self.0.join(inside.trim_start_matches('/')));
        }
        run(cmd
            .arg("--")
            .arg(&self.0)
            .args(["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"])
            .args(["bash", "-euo", "pipefail", "-c", script]))
    }
}

pub fn apt_opts(d: &Path) -> String {
    format!(
        "-o Dir::Etc::SourceList={d}/apt/sources.list -o Dir::Etc::SourceParts=/dev/null \
         -o Dir::State::Lists={d}/apt/lists -o Dir::Cache={d}/apt/cache -o Debug::NoLocking=1 -qq",
        d = d.display()
    )
}

/// Holds an exclusive lock on `<cache>/linux/setup.lock` while it lives, so
/// that two checkouts setting up the shared chroot at once take turns (the
/// second then finds the first one's stamps) instead of both debootstrapping
/// into the same temporary directory. The kernel drops the lock if the
/// process dies.
pub fn setup_lock() -> Result<std::fs::File> {
    lock(&dir().join("setup.lock"), "chroot setup")
}

/// An exclusive lock on the file `p` (created), waited for if taken.
pub fn lock(p: &Path, what: &str) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if f.try_lock().is_err() {
        eprintln!("kmod: waiting for another checkout's {what} ({})", p.display());
        f.lock().map_err(|e| format!("lock {}: {e}", p.display()))?;
    }
    Ok(f)
}

/// Steps 1-6 above (each skipped when its stamp exists).
pub fn setup() -> Result {
    let _lock = setup_lock()?;
    let d = dir();
    let ds = d.display();
    apt_install(&["debian-archive-keyring", "zstd", "xz-utils", "binutils", "apt"])?;

    if !done("apt") {
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
        mark("apt")?;
    }

    if !done("debs") {
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
        mark("debs")?;
    }

    let tarball = d.join("chroot.tar.zst");
    if !done("chroot-ready") && tarball.exists() && done("tarball") {
        step("kmod: restoring the chroot from chroot.tar.zst");
        remove_dir(&chroot())?;
        remove_dir(&d.join("restore.tmp"))?;
        sh(&format!(
            "mkdir -p {ds}/restore.tmp && tar -C {ds}/restore.tmp -I 'zstd -T2' -xf {ds}/chroot.tar.zst && mv {ds}/restore.tmp/chroot {ds}/chroot && rmdir {ds}/restore.tmp"
        ))?;
        for s in ["chroot", "headers", "prepared"] {
            mark(s)?;
        }
        mark("chroot-ready")?;
    }

    if !done("chroot") {
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
        mark("chroot")?;
    }

    if !done("headers") {
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
        mark("headers")?;
    }

    if !done("prepared") {
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
        mark("prepared")?;
    }

    if !done("tarball") {
        step("kmod: compressing the chroot to chroot.tar.zst");
        unmount_all(&chroot())?;
        sh(&format!(
            "cd {ds} && rm -f chroot.tar.zst.tmp && tar --one-file-system -C {ds} -I 'zstd -T2 -3' -cf chroot.tar.zst.tmp chroot && mv chroot.tar.zst.tmp chroot.tar.zst && ls -la chroot.tar.zst"
        ))?;
        mark("tarball")?;
    }
    mark("chroot-ready")?;
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
find {c}/{b}/scull-linux -maxdepth 1 -type f \\( -name '*.rs' -o -name Kbuild -o -name Makefile -o -name '*.c' -o -name '*.h' \\) -delete
cp -p {s}/scull-linux/*.rs {s}/scull-linux/Kbuild {c}/{b}/scull-linux/
for f in {s}/scull-linux/*.c {s}/scull-linux/*.h {s}/scull-linux/Makefile; do [ -e \"$f\" ] && cp -p \"$f\" {c}/{b}/scull-linux/; done; true",
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

/// `cargo xtask kmod [--debug-kernel]`.
pub fn kmod(args: &[String]) -> Result {
    if args.iter().any(|a| a == "--debug-kernel") {
        return crate::kdebug::kmod(args);
    }
    let ko = build()?;
    println!("{}", ko.display());
    Ok(())
}

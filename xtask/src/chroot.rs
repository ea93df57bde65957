//! The trixie chroot's plumbing, shared by `kmod` (the chroot and Debian's
//! kernel metadata) and `kdebug` (the debug kernel built in it): where the
//! cache lives, commands run inside it with private mounts, removal that
//! never crosses a live mount, exclusive locks between checkouts, and the
//! stamp files that let an interrupted setup resume.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{cache_dir, run, Result};

/// `~/.cache/scull-rs/linux`: the chroot, its tarball, the kernel packages
/// and the debug kernel.
pub fn dir() -> PathBuf {
    let d = cache_dir().join("linux");
    let _ = std::fs::create_dir_all(&d);
    d
}

pub fn chroot() -> PathBuf {
    dir().join("chroot")
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

/// Unmounts everything at or below `p` (lazily if it is busy).
pub fn unmount_all(p: &Path) -> Result {
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

/// apt-get options for the private source list and lists under `d`: the
/// system's apt configuration is never touched.
pub fn apt_opts(d: &Path) -> String {
    format!(
        "-o Dir::Etc::SourceList={d}/apt/sources.list -o Dir::Etc::SourceParts=/dev/null \
         -o Dir::State::Lists={d}/apt/lists -o Dir::Cache={d}/apt/cache -o Debug::NoLocking=1 -qq",
        d = d.display()
    )
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
        eprintln!("xtask: waiting for another checkout's {what} ({})", p.display());
        f.lock().map_err(|e| format!("lock {}: {e}", p.display()))?;
    }
    Ok(f)
}

/// Stamp files `stamp-<name>-<key>` in one directory. A step writes its
/// stamp only after it succeeded, so an interrupted run redoes just that
/// step; the key (a recipe number, a hash) makes old stamps stale when the
/// recipe changes.
pub struct Stamps {
    dir: PathBuf,
    key: fn(&str) -> String,
}

impl Stamps {
    /// Stamps in `dir`, keyed by `key(name)`.
    pub fn new(dir: PathBuf, key: fn(&str) -> String) -> Self {
        Stamps { dir, key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("stamp-{name}-{}", (self.key)(name)))
    }

    pub fn done(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    pub fn mark(&self, name: &str) -> Result {
        std::fs::write(self.path(name), b"").map_err(|e| format!("write stamp {name}: {e}"))
    }

    pub fn unmark(&self, name: &str) {
        let _ = std::fs::remove_file(self.path(name));
    }
}

//! Shared helpers for xtask: running commands, idempotent installs, paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub type Result<T = ()> = std::result::Result<T, String>;

/// The repository root (the parent of xtask/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repo").to_path_buf()
}

/// `target/` of the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// `~/.cache/scull-rs` (created).
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"));
    let d = base.join("scull-rs");
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Prints a section banner.
pub fn step(msg: &str) {
    eprintln!("\n==> {msg}");
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdio; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result {
    let d = describe(cmd);
    eprintln!("+ {d}");
    let st = cmd.status().map_err(|e| format!("cannot run `{d}`: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("`{d}` failed: {st}"))
    }
}

/// Runs a command and returns its stdout; fails on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let d = describe(cmd);
    let out = cmd.stderr(Stdio::inherit()).output().map_err(|e| format!("cannot run `{d}`: {e}"))?;
    if !out.status.success() {
        return Err(format!("`{d}` failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs Debian packages that are not installed yet (idempotent).
pub fn apt_install(pkgs: &[&str]) -> Result {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("apt-get install {}", missing.join(" ")));
    let stamp = cache_dir().join("apt-updated");
    let fresh = stamp
        .metadata()
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().map(|e| e.as_secs() < 6 * 3600).unwrap_or(false))
        .unwrap_or(false);
    if !fresh {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        let _ = std::fs::write(&stamp, b"");
    }
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

/// Adds rustup targets that are not installed yet (idempotent).
pub fn rustup_targets(targets: &[&str]) -> Result {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    let missing: Vec<&str> = targets.iter().copied().filter(|t| !installed.lines().any(|l| l.trim() == *t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add"]).args(&missing))
}

/// `cargo` as invoked by the user.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

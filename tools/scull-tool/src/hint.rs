//! Errors that say what to do. When a device cannot be opened, the backend
//! reports a [`scull_core::Error`], and scull-core's table only holds the
//! errors scull itself returns: a missing node (ENOENT /
//! ERROR_FILE_NOT_FOUND) or a refused open (EACCES / ERROR_ACCESS_DENIED)
//! have no entry, and the Linux backend maps errnos outside the table to
//! `Invalid`, which is how `/dev/scull0` missing used to print as EINVAL.
//! So on an open failure [`open_failure`] asks the operating system again,
//! with a plain `std::fs` open of the same path, and names the device path,
//! the real OS error and the likely fix.

use crate::backend::{Caps, OpenOpts, Target};
use scull_core::devices::Dev;
use scull_core::Error;
use std::io::ErrorKind;

/// What `--target model` is, said wherever the model is offered or used.
pub const MODEL_LIFETIME: &str =
    "the model target's devices live inside this one scull-tool process: what one command writes is gone when it exits";

/// The message when no `--target` was given and no driver was found.
pub fn no_target() -> String {
    format!(
        "no --target given and no scull driver found (/dev/scull0 does not exist). Choose one:\n  \
         --target linux   scull.ko's /dev/scull*: {}\n  \
         --target model   the in-process host model, no driver needed; {}",
        load_hint("linux"),
        MODEL_LIFETIME
    )
}

/// scull's name of a device (`scull0`, `scullpipe1`, `scullpriv`).
pub fn dev_name(dev: Dev) -> String {
    let mut s = String::new();
    let _ = dev.linux_name(&mut s);
    s
}

/// The devices a target has, for an error about one it has not.
pub fn dev_list(caps: &Caps) -> String {
    let range = |prefix: &str, n: u8| match n {
        0 => format!("no {prefix}N"),
        1 => format!("{prefix}0"),
        n => format!("{prefix}0-{prefix}{}", n - 1),
    };
    format!("it has {}, {}, scullsingle, sculluid, scullwuid, scullpriv", range("scull", caps.nr_devs), range("scullpipe", caps.p_nr_devs))
}

/// The path user mode opens for `dev` on target `target` (`None` for the
/// in-process model).
pub fn device_path(target: &str, dev: Dev) -> Option<String> {
    let mut s = String::new();
    match target {
        "linux" | "qemu" => {
            s.push_str("/dev/");
            dev.linux_name(&mut s).ok()?;
        }
        "windows" | "wine" => {
            s.push_str(r"\\.\");
            dev.windows_name(&mut s).ok()?;
        }
        _ => return None,
    }
    Some(s)
}

/// What to do when the driver is not there.
pub fn load_hint(target: &str) -> &'static str {
    match target {
        "linux" => "load the driver: `insmod scull.ko` as root (`cargo xtask qemu` builds it and runs it in a VM)",
        "qemu" => "load the driver in the guest: `insmod /scull.ko` (`cargo xtask qemu` does it)",
        "wine" => "the driver is not loaded in this Wine prefix: `cargo xtask wine` builds scull.sys, installs it and runs the tool",
        "windows" => {
            "the driver is not loaded: install and start it with `install.ps1` (elevated), or `sc.exe start scull` (docs/windows.md)"
        }
        _ => "load the driver",
    }
}

/// What to do when the open is refused.
pub fn access_hint(target: &str) -> &'static str {
    match target {
        "linux" | "qemu" => "permission denied by the node's mode: run as root, or `chmod 666` the node (LDD3's scull_load does)",
        _ => {
            "access denied by the device ACL (SYSTEM and Administrators by default): run elevated, \
             or reinstall with `install.ps1 -RelaxedAcl` (docs/windows.md)"
        }
    }
}

/// The message for a failed open of `dev` with `o` on `t`: the device path,
/// the error and, where the OS says the node is missing or refused, the fix.
pub fn open_failure(t: &dyn Target, dev: Dev, o: OpenOpts, err: Error) -> String {
    let Some(path) = device_path(t.name(), dev) else {
        return format!("open {}: {err}", dev_name(dev));
    };
    // Only errors that may stand for an OS error outside scull-core's table
    // are probed; a busy or would-block open is what it says.
    if !matches!(err, Error::Invalid | Error::Perm | Error::NoDevice) {
        return format!("open {path}: {err}");
    }
    let mut probe = std::fs::OpenOptions::new();
    probe.read(o.read || !o.write).write(o.write);
    #[cfg(target_os = "linux")]
    {
        // Never block in the probe (scullwuid's open waits for its owner).
        use std::os::unix::fs::OpenOptionsExt;
        probe.custom_flags(libc::O_NONBLOCK);
    }
    match probe.open(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            format!("open {path}: {e}: {}", load_hint(t.name()))
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            format!("open {path}: {e}: {}", access_hint(t.name()))
        }
        _ => format!("open {path}: {err}"),
    }
}

/// Before a command runs on a kernel target: fails with the load hint when
/// the first store device (`scull0`) does not exist at all, so every command
/// (conformance, stress, bench, ...) says the same thing instead of failing
/// somewhere inside.
pub fn preflight(t: &dyn Target) -> Result<(), String> {
    let Some(path) = device_path(t.name(), Dev::Scull(0)) else { return Ok(()) };
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Err(format!("{path}: {e}: {}", load_hint(t.name()))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_device() {
        assert_eq!(device_path("linux", Dev::Pipe(1)).as_deref(), Some("/dev/scullpipe1"));
        assert_eq!(device_path("wine", Dev::Scull(0)).as_deref(), Some(r"\\.\Scull0"));
        assert_eq!(device_path("model", Dev::Scull(0)), None);
        assert_eq!(dev_name(Dev::Pipe(1)), "scullpipe1");
    }

    #[test]
    fn device_lists_speak_scull_names() {
        let caps = Caps { nr_devs: 4, p_nr_devs: 1, ..Caps::default() };
        assert_eq!(dev_list(&caps), "it has scull0-scull3, scullpipe0, scullsingle, sculluid, scullwuid, scullpriv");
    }
}

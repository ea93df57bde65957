//! The helpers every conformance case is written with, shared by the common,
//! Linux-only, Windows-only and ntsim-only cases: the case list's `case!`,
//! results with messages that name what failed, device I/O that loops,
//! report lookups, and the capability checks.

use crate::backend::{Caps, Handle, OpenOpts, Target};
use scull_core::devices::Dev;
use scull_core::ioctl::Cmd;
use scull_core::report::field;
use scull_core::Error;

/// What a case returns: `Err` says what went wrong.
pub type R = Result<(), String>;

/// Fails the case with the message unless the condition holds.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}
pub(crate) use check;

/// A case list's entry: `case!(name, needs)` is the case `name` that runs
/// `name` when `needs` passes; `case!("prefix_", name)` is the case
/// `prefix_name` that runs `name` on every target it is offered to.
macro_rules! case {
    ($prefix:literal, $name:ident) => {
        $crate::conformance::Case { name: concat!($prefix, stringify!($name)), needs: $crate::conformance::check::always, run: $name }
    };
    ($name:ident, $needs:expr) => {
        $crate::conformance::Case { name: stringify!($name), needs: $needs, run: $name }
    };
}
pub(crate) use case;

/// The value, or the unexpected error named after `what`.
pub fn ok<T>(r: Result<T, Error>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: unexpected error {e}"))
}

/// Passes when `r` failed with one of `want`.
pub fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, want: &[Error], what: &str) -> R {
    match r {
        Err(e) if want.contains(&e) => Ok(()),
        other => Err(format!("{what}: expected {want:?}, got {other:?}")),
    }
}

/// Opens `dev`, an error naming the device and the mode.
pub fn open(t: &dyn Target, dev: Dev, o: OpenOpts) -> Result<Box<dyn Handle>, String> {
    ok(t.open(dev, o), &format!("open {dev:?} {o:?}"))
}

/// Opens a store device write-only with truncation (trims it), then read-write.
pub fn fresh(t: &dyn Target, dev: Dev) -> Result<Box<dyn Handle>, String> {
    drop(open(t, dev, OpenOpts::TRUNC)?);
    open(t, dev, OpenOpts::RW)
}

/// `n` bytes of a pattern that differs per `seed` and never repeats quickly.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed as u32).to_le_bytes()[3]).collect()
}

/// Writes all of `data`, looping on partial writes; a zero-length write fails.
pub fn write_all(h: &mut dyn Handle, data: &[u8]) -> R {
    let mut at = 0;
    while at < data.len() {
        let n = ok(h.write(&data[at..]), "write")?;
        check!(n > 0, "write returned 0 at {at}");
        at += n;
    }
    Ok(())
}

/// One read of up to `n` bytes.
pub fn read_n(h: &mut dyn Handle, n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    let got = ok(h.read(&mut buf), "read")?;
    buf.truncate(got);
    Ok(buf)
}

/// Exactly `n` bytes, looping on short reads; end of file fails.
pub fn read_exact(h: &mut dyn Handle, n: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let chunk = read_n(h, n - out.len())?;
        check!(!chunk.is_empty(), "read returned 0 after {} of {n} bytes", out.len());
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The STATS report of scull0.
pub fn stats(t: &dyn Target) -> Result<String, String> {
    let mut h = open(t, Dev::Scull(0), OpenOpts::R)?;
    ok(h.stats(), "stats")
}

/// The report line of device `name`.
pub fn stats_line(text: &str, name: &str) -> Result<String, String> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(str::to_owned)
        .ok_or_else(|| format!("no `{name}` line in report:\n{text}"))
}

/// The `key=` field of device `dev`'s report line.
pub fn stats_field(t: &dyn Target, dev: &str, key: &str) -> Result<String, String> {
    let line = stats_line(&stats(t)?, dev)?;
    field(&line, key).map(str::to_owned).ok_or_else(|| format!("no {key} in {line}"))
}

/// The raw ioctl code of `cmd` in the target's ABI.
pub fn raw_code(t: &dyn Target, cmd: Cmd) -> u32 {
    if t.caps().linux_abi {
        cmd.linux_code()
    } else {
        cmd.windows_code()
    }
}

/// The capability checks of [`super::Case::needs`]: `None` when the target
/// can run the case, else why not.
pub fn always(_: &Caps) -> Option<&'static str> {
    None
}
pub fn privileged(c: &Caps) -> Option<&'static str> {
    (!c.privileged).then_some("needs a privileged caller")
}
pub fn other_user(c: &Caps) -> Option<&'static str> {
    (!c.other_user).then_some("needs a second, unprivileged identity")
}
pub fn cancel(c: &Caps) -> Option<&'static str> {
    (!c.cancel).then_some("needs cancellable blocked reads")
}
pub fn poll(c: &Caps) -> Option<&'static str> {
    (!c.poll).then_some("needs poll")
}
pub fn priv_dev(c: &Caps) -> Option<&'static str> {
    (!c.priv_dev).then_some("needs a scullpriv key (controlling tty)")
}
pub fn windows_abi(c: &Caps) -> Option<&'static str> {
    c.linux_abi.then_some("Windows buffer rules (METHOD_BUFFERED lengths)")
}
/// Why a case needs [`Caps::open_modes`].
pub const NO_OPEN_MODES: &str = "needs truncating and non-blocking opens, refused opens and the file size to reach the driver (Wine: only the test build's bridge carries them)";
pub fn open_modes(c: &Caps) -> Option<&'static str> {
    (!c.open_modes).then_some(NO_OPEN_MODES)
}
pub fn privileged_open_modes(c: &Caps) -> Option<&'static str> {
    privileged(c).or_else(|| open_modes(c))
}
pub fn other_user_open_modes(c: &Caps) -> Option<&'static str> {
    other_user(c).or_else(|| open_modes(c))
}
pub fn priv_dev_open_modes(c: &Caps) -> Option<&'static str> {
    priv_dev(c).or_else(|| open_modes(c))
}
pub fn set_len(c: &Caps) -> Option<&'static str> {
    open_modes(c).or_else(|| (!c.set_len).then_some("ftruncate on a character device is refused by the kernel before the driver"))
}
pub fn pipe_seek(c: &Caps) -> Option<&'static str> {
    (!c.pipe_seek_refused).then_some("the I/O manager handles seeks on synchronous handles itself")
}

//! The tool's standard output. `println!` panics when stdout is a pipe whose
//! reader has gone (`scull-tool conformance | head -1`), because Rust ignores
//! SIGPIPE. [`outln!`](crate::outln) and [`out!`](crate::out) write the same
//! text, and a closed stdout ends the process quietly with status
//! [`CLOSED`]; any other write error is reported once on stderr (status 1).

use std::io::{ErrorKind, Write};

/// The exit status after the reader of stdout went away: 128 + SIGPIPE, what
/// a C tool killed by SIGPIPE reports, so a `set -o pipefail` script still
/// sees that the run did not finish.
pub const CLOSED: i32 = 141;

/// Writes `args` (and a newline when `newline`) to stdout.
pub fn fmt(args: std::fmt::Arguments, newline: bool) {
    let mut o = std::io::stdout().lock();
    let r = o.write_fmt(args).and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = r {
        failed(e);
    }
}

/// Writes raw bytes to stdout and flushes them.
pub fn bytes(b: &[u8]) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(b).and_then(|()| o.flush()) {
        failed(e);
    }
}

fn failed(e: std::io::Error) -> ! {
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(CLOSED);
    }
    eprintln!("scull-tool: writing to stdout: {e}");
    std::process::exit(1);
}

/// `println!` to stdout through [`fmt`]: a closed stdout ends the process quietly.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::fmt(format_args!(""), true) };
    ($($t:tt)*) => { $crate::out::fmt(format_args!($($t)*), true) };
}

/// `print!` to stdout through [`fmt`]: a closed stdout ends the process quietly.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::out::fmt(format_args!($($t)*), false) };
}

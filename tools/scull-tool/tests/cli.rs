//! The command line as a user meets it: the built `scull-tool` binary run
//! with std::process::Command, its exit status and what it prints. Every
//! test here names the misleading behaviour it guards against.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_scull-tool");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run scull-tool")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the exit status and returns (stdout, stderr).
fn status(args: &[&str], want: i32) -> (String, String) {
    let o = run(args);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(want), "scull-tool {}\nstdout: {out}\nstderr: {err}", args.join(" "));
    assert!(!err.contains("panicked"), "scull-tool {} panicked: {err}", args.join(" "));
    (out, err)
}

#[test]
fn no_target_and_no_driver_is_not_silently_the_model() {
    if cfg!(windows) || std::path::Path::new("/dev/scull0").exists() {
        return; // a driver is there: the default is the real one
    }
    let (out, err) = status(&["write", "scull0", "hi"], 2);
    assert!(out.is_empty(), "nothing may claim a write: {out}");
    assert!(err.contains("--target model") && err.contains("--target linux"), "says how to choose: {err}");
    assert!(err.contains("this one scull-tool process"), "states the model's lifetime: {err}");
}

#[test]
fn a_write_to_the_model_says_it_dies_with_the_process() {
    let (out, err) = status(&["--target", "model", "write", "scull0", "hi"], 0);
    assert_eq!(out.trim(), "wrote 2 bytes to scull0");
    assert!(err.contains("this one scull-tool process"), "{err}");
}

#[test]
fn target_help_states_the_models_lifetime() {
    let (out, _) = status(&["--help"], 0);
    assert!(out.contains("this one scull-tool process"), "{out}");
}

#[test]
fn reading_an_empty_pipe_can_give_up() {
    let (_, err) = status(&["--target", "model", "read", "scullpipe0", "--nonblock"], 1);
    assert!(err.contains("nothing to read"), "{err}");
    let start = Instant::now();
    let (_, err) = status(&["--target", "model", "read", "scullpipe0", "--timeout", "0.2"], 1);
    assert!(err.contains("no data within"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20), "the timeout held");
    // On the model nothing else can ever write: a blocking read is refused, not hung.
    let (_, err) = status(&["--target", "model", "read", "scullpipe0"], 2);
    assert!(err.contains("--nonblock") && err.contains("--timeout"), "{err}");
    let (_, err) = status(&["--target", "model", "cat", "scullpipe0"], 2);
    assert!(err.contains("no end"), "{err}");
}

#[test]
fn a_filter_that_matches_nothing_fails() {
    let (out, err) = status(&["--target", "model", "conformance", "--filter", "no_such_case"], 2);
    assert!(!out.contains("0 passed"), "no empty success line: {out}");
    assert!(err.contains("no_such_case") && err.contains("--list"), "{err}");
    let (out, _) = status(&["--target", "model", "conformance", "--list", "--filter", "pipe_fifo"], 0);
    assert_eq!(out.trim(), "pipe_fifo_order");
}

#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly() {
    // `head -1` leaves after the first case's line; the suite goes on writing.
    let script = r#"{ "$0" --target model conformance; echo "rc=$?" >&2; } | head -1"#;
    let o = Command::new("sh").arg("-c").arg(script).arg(BIN).output().expect("sh");
    let err = text(&o.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert!(err.contains("rc=141"), "ends with 128 + SIGPIPE, as a C tool would: {err}");
    assert_eq!(text(&o.stdout).lines().count(), 1);
}

#[test]
fn ioctl_arguments_are_usage_errors() {
    let (_, err) = status(&["--target", "model", "ioctl", "tquantum"], 2);
    assert!(err.contains("needs a value"), "{err}");
    let (_, err) = status(&["--target", "model", "ioctl", "reset", "5"], 2);
    assert!(err.contains("takes no value"), "{err}");
    status(&["--target", "model", "ioctl", "tquantum", "64"], 0);
    status(&["--target", "model", "ioctl", "nosuch"], 2);
    let (out, _) = status(&["ioctl", "--help"], 0);
    for name in ["reset", "squantum", "tquantum", "qqset", "xquantum", "hqset", "ptsize", "pqsize", "stats", "SCULL_IOCTQUANTUM"] {
        assert!(out.contains(name), "ioctl --help lists `{name}`: {out}");
    }
}

#[test]
fn devices_are_checked_and_named_as_scull_names_them() {
    let (_, err) = status(&["--target", "model", "write", "scull9", "hi"], 2);
    assert!(err.contains("scull9 does not exist") && err.contains("scull0-scull3"), "{err}");
    assert!(!err.contains("Scull(9)"), "no Rust debug names: {err}");
    let (_, err) = status(&["--target", "model", "read", "scullpipe7", "--nonblock"], 2);
    assert!(err.contains("scullpipe7 does not exist"), "{err}");
}

#[test]
fn commands_without_a_driver_do_not_ask_for_one() {
    // As `cargo xtask qemu` runs it, but on a machine without scull.ko.
    let (out, _) = status(&["--target", "qemu", "scale-reference", "--scale-size", "2M"], 0);
    assert!(out.contains("reference memory"), "{out}");
}

#[cfg(target_os = "linux")]
#[test]
fn open_loop_needs_no_target_and_fault_sweep_refuses_the_model() {
    let (out, _) = status(&["open-loop", "/dev/null", "--until", "/"], 0);
    assert!(out.starts_with("opened=256 failed=0"), "{out}");
    let (_, err) = status(&["--target", "model", "fault-sweep"], 2);
    assert!(err.contains("--target linux or qemu"), "{err}");
}

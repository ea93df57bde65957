//! scull-tool: drive scull devices from user mode. `scull-tool --help` lists
//! the commands, `scull-tool <command> --help` their options; the reference
//! is docs/scull-tool.md. Exit codes: 0 ok, 1 a failed check or operation,
//! 2 a usage error (no target among them), 141 stdout closed early.
//!
//! Targets: the kernels this build supports (`windows`/`wine` on Windows,
//! `linux`/`qemu` on Linux), and `model`, the in-process host model, whose
//! devices live only as long as the one process. The model is never chosen
//! silently: without `--target` and without a driver, the tool stops.

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use scull_core::devices::Dev;
use scull_core::ioctl::{ArgIn, Cmd};
use scull_core::store::Whence;
use scull_tool::backend::{self, Handle, OpenOpts, Target};
use scull_tool::hint;
use scull_core::Error;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "\
Targets: linux, qemu (Linux builds: /dev/scull*, scull.ko loaded);
windows, wine (Windows builds: \\\\.\\Scull*, scull.sys started); model (every
build: the in-process host model, no driver needed; its devices live only as
long as this one scull-tool process, so data written by one command is gone
by the next). Without --target: windows on Windows, linux when /dev/scull0
exists; otherwise scull-tool stops and asks for a --target.

Sizes take a suffix: 4096, 4K, 64M, 1G (powers of 1024), or 0x1000.
Exit codes: 0 ok, 1 a failed check or operation, 2 a usage error (a bad
argument, no target), 141 stdout closed before the output ended.
Reference: docs/scull-tool.md";

/// The help text of a device argument.
const DEV_HELP: &str = "scull0-3 (stores), scullpipe0-3 (FIFOs), scullsingle, sculluid, scullwuid, scullpriv";

#[derive(Parser)]
#[command(name = "scull-tool", version, about = "Drive LDD3's scull devices from user mode: commands, the conformance suite, benchmarks, stress and fuzzing", after_help = AFTER_HELP)]
struct Cli {
    /// Device set to drive: linux, qemu, windows, wine, ntsim (Linux: the
    /// release scull.sys under ntsim, in this process), or model (in-process,
    /// no driver; its data dies with this process). See below for the default
    #[arg(long, global = true, value_name = "TARGET")]
    target: Option<String>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write text to a device (a store write without --offset replaces its data, as LDD3's write-only open trims)
    Write {
        #[arg(value_parser = parse_dev, help = DEV_HELP)]
        dev: Dev,
        /// The bytes to write (UTF-8, no newline added)
        text: String,
        /// Write at this position, keeping the rest of the data
        #[arg(long, value_parser = parse_offset)]
        offset: Option<i64>,
    },
    /// Read from a device and print it (a read of an empty scullpipe waits for a writer, as LDD3's: see --nonblock, --timeout)
    Read {
        #[arg(value_parser = parse_dev, help = DEV_HELP)]
        dev: Dev,
        /// Read from this position (stores)
        #[arg(long, value_parser = parse_offset, conflicts_with = "timeout")]
        offset: Option<i64>,
        /// At most this many bytes
        #[arg(long, value_parser = parse_size, default_value = "256")]
        len: u64,
        /// Open non-blocking: an empty scullpipe fails at once (EAGAIN) instead of waiting
        #[arg(long, conflicts_with = "timeout")]
        nonblock: bool,
        /// Wait at most this many seconds for data, then give up (exit 1)
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
        timeout: Option<f64>,
    },
    /// Read a store device from 0 to the end and write it to stdout
    Cat {
        #[arg(value_parser = parse_dev, help = "scull0-3, scullsingle, sculluid, scullwuid, scullpriv (a scullpipe has no end: use `read`)")]
        dev: Dev,
    },
    /// Run one scull ioctl on scull0 (e.g. `qquantum`, `tquantum 64`, `reset`, `stats`; the list is below)
    Ioctl {
        /// The command: its short name (`tquantum`) or LDD3's macro name (`SCULL_IOCTQUANTUM`)
        #[arg(value_parser = parse_cmd)]
        name: Cmd,
        /// The value: required by the S/T/X/H commands and ptsize, refused by the others
        #[arg(allow_negative_numbers = true)]
        value: Option<i32>,
    },
    /// Print the scullmem / scullpipe report (the STATS ioctl, /proc on Linux)
    Stats,
    /// A reader blocked on an empty scullpipe0, woken by a writer 500 ms later
    PipeDemo,
    /// Every command above, on one device set
    Demo,
    /// The black-box conformance suite; ends with `<target>: N passed, M failed, K skipped`
    Conformance {
        /// Only the cases whose name contains this text (or one of its comma-separated parts); none matching is an error
        #[arg(long)]
        filter: Option<String>,
        /// `json` adds one JSON object per case (name, result, reason)
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Print the names of the cases this target runs (with --filter: those it selects) and exit
        #[arg(long)]
        list: bool,
    },
    /// Throughput of scull0 against a plain file, scullpipe0 against pipe(2), and scaling
    Bench {
        /// Bytes moved per figure (whole MiB)
        #[arg(long, value_parser = parse_size, default_value = "64M")]
        size: u64,
        /// The large file of the scaling figure (whole MiB)
        #[arg(long, value_parser = parse_size, default_value = "256M")]
        scale_size: u64,
        /// Directory of the baseline file (default: the temp directory)
        #[arg(long)]
        baseline_dir: Option<PathBuf>,
        /// Print `reference NAME = X` instead of `ratio` (figures that are not the target's own, e.g. Wine)
        #[arg(long)]
        reference: bool,
    },
    /// Concurrent pipe and store traffic; every record is checked
    Stress {
        /// Writers on the scullpipe (and on scull0's slots)
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// Readers on the scullpipe (and on scull0's slots)
        #[arg(long, default_value_t = 4)]
        readers: usize,
        /// Seconds per part (pipe, then store)
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Workers are processes instead of threads
        #[arg(long)]
        processes: bool,
        /// The scullpipe to use
        #[arg(long, default_value_t = 0)]
        pipe: u8,
        /// Checksummed slots on scull0
        #[arg(long, default_value_t = 1024)]
        slots: usize,
        /// Seed of the store workers' slot choices (the same seed, the same sequence)
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Hostile input for a while; the devices must survive and still work
    Fuzz {
        /// How long to fuzz
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Fixed seeds reproduce the same operation sequence
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// (Linux, root, scull.ko loaded) make the k-th allocation fail, k swept over a workload: nothing lost, corrupt or leaked.
    /// Works on /dev/scull* and scull.ko's sysfs parameters directly: --target linux or qemu only
    #[cfg(target_os = "linux")]
    FaultSweep {
        /// Stop after this many injected failures
        #[arg(long, default_value_t = 2000)]
        max_k: u32,
        /// module: scull.ko's scull_fail_at; failslab: the kernel's failslab
        /// through /proc/thread-self/fail-nth (any slab allocation of this thread's syscalls)
        #[arg(long, value_enum, default_value_t = InjectorArg::Module)]
        injector: InjectorArg,
    },
    /// (Linux) open and close the paths in turn until the file UNTIL exists;
    /// prints `opened=N failed=M` (the open-versus-rmmod race of
    /// `cargo xtask qemu`). Needs no target: it opens the paths as given
    #[cfg(target_os = "linux")]
    OpenLoop {
        /// Files to open read-only and close, in turn (e.g. /dev/scull0)
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Stop once this file exists (looked for every 256 rounds, every round when pausing)
        #[arg(long)]
        until: PathBuf,
        /// After each open and close, sleep a random time averaging PAUSE
        /// times as long as that pair took (0: no pause, as fast as possible)
        #[arg(long, default_value_t = 0)]
        pause: u32,
        /// Seed of the pauses' random lengths
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A plain file and plain memory over bench's two working sets (the scaling reference). Needs no driver or target
    ScaleReference {
        /// Directory of the plain file (default: the temp directory)
        #[arg(long)]
        baseline_dir: Option<PathBuf>,
        /// The large working set (whole MiB), as bench's --scale-size
        #[arg(long, value_parser = parse_size, default_value = "256M")]
        scale_size: u64,
    },
}

/// `fault-sweep --injector`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InjectorArg {
    Module,
    Failslab,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
}

/// A size: digits with an optional K/M/G (powers of 1024, `KiB`/`MB` spellings
/// too) or a 0x hex number.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("`{s}` is not a size (e.g. 4096, 4K, 64M, 1G, 0x1000)");
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).map_err(|_| bad());
    }
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("`{s}` is too large"))
}

fn parse_offset(s: &str) -> Result<i64, String> {
    let n = parse_size(s)?;
    i64::try_from(n).map_err(|_| format!("`{s}` is beyond the largest position"))
}

fn whole_mib(what: &str, bytes: u64) -> Result<usize, String> {
    if bytes == 0 || bytes % (1 << 20) != 0 {
        return Err(format!("{what}: {bytes} bytes is not a whole number of MiB (e.g. 64M)"));
    }
    Ok((bytes >> 20) as usize)
}

fn parse_dev(name: &str) -> Result<Dev, String> {
    Dev::parse(name).ok_or_else(|| format!("unknown device `{name}` (scull0-3, scullpipe0-3, scullsingle, sculluid, scullwuid, scullpriv)"))
}

/// `read --timeout`: a non-negative number of seconds.
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds (e.g. 2 or 0.5)")),
    }
}

fn parse_cmd(name: &str) -> Result<Cmd, String> {
    Cmd::parse(name).ok_or_else(|| {
        let all: Vec<&str> = Cmd::ALL.iter().map(|c| c.short()).collect();
        format!("unknown ioctl `{name}` (one of: {})", all.join(", "))
    })
}

fn e(what: &str) -> impl Fn(scull_core::Error) -> String + '_ {
    move |err| format!("{what}: {err}")
}

/// Exit status for usage errors (clap's own errors use it too).
const USAGE: u8 = 2;

/// The CLI with the generated parts of its help: the ioctl commands.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("ioctl", |c| c.after_help(ioctl_help()))
}

/// The ioctl table for `ioctl --help`, from scull-core's command list.
fn ioctl_help() -> String {
    let mut s = String::from("Commands (short name, VALUE where one is required, LDD3's macro, what it does):\n");
    for c in Cmd::ALL {
        let arg = if matches!(c.arg_in(), ArgIn::None) { "" } else { "VALUE" };
        let what = match (c, c.short().as_bytes()[0]) {
            (Cmd::Reset, _) => "restore the default quantum and qset",
            (Cmd::Stats, _) => "print the scullmem/scullpipe report",
            (Cmd::PTSize, _) => "set the scullpipe buffer size (from the next allocation)",
            (Cmd::PQSize, _) => "print the scullpipe buffer size",
            (_, b's') => "set from VALUE, passed by pointer",
            (_, b't') => "set to VALUE, passed by value",
            (_, b'g') => "print it, returned through a pointer",
            (_, b'q') => "print it, as ioctl's return value",
            (_, b'x') => "set by pointer, print the old value",
            _ => "set by value, print the old value",
        };
        let privileged = if c.needs_privilege() { " (privileged)" } else { "" };
        s.push_str(&format!("  {:<9} {arg:<6} {:<18} {what}{privileged}\n", c.short(), c.name()));
    }
    s
}

/// A usage error found after parsing, in clap's form with `sub`'s usage
/// line; exits 2.
fn usage_error(sub: &str, msg: impl std::fmt::Display) -> ! {
    let mut c = command();
    c.build();
    match c.find_subcommand_mut(sub) {
        Some(sc) => sc.error(ErrorKind::InvalidValue, msg).exit(),
        None => c.error(ErrorKind::InvalidValue, msg).exit(),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = backend::child_main(&args) {
        return ExitCode::from(code);
    }
    if let Some(r) = internal(&args) {
        return finish(r);
    }
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    finish(run(cli))
}

fn finish(r: Result<ExitCode, String>) -> ExitCode {
    match r {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("scull-tool: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The target `--target` names, or the driver found on this machine. The
/// model is never chosen unasked: without `--target` and without a driver,
/// this stops with exit 2 and says how to choose.
fn target(name: Option<&str>) -> Result<&'static dyn Target, String> {
    let name = match (name, backend::default_target()) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => {
            eprintln!("scull-tool: {}", hint::no_target());
            std::process::exit(USAGE.into());
        }
    };
    let Some(t) = backend::target_by_name(name) else {
        eprintln!("scull-tool: target `{name}` is not available in this build (see scull-tool --help)");
        std::process::exit(USAGE.into());
    };
    // Workers on other threads need a target that lives as long as the process.
    Ok(Box::leak(t))
}

/// The hidden child entry points (`[--target T] __name args...`), spawned by
/// this tool itself for bench and stress workers; not part of the CLI.
fn internal(args: &[String]) -> Option<Result<ExitCode, String>> {
    let (name, w) = match args {
        [flag, t, rest @ ..] if flag == "--target" => (Some(t.as_str()), rest),
        rest => (None, rest),
    };
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    if !w.first()?.starts_with("__") {
        return None;
    }
    let ok = |r: Result<(), String>| r.map(|()| ExitCode::SUCCESS);
    if let ["__bench-pipe2-writer", n] = w.as_slice() {
        return Some(ok(n.parse().map_err(|_| "bytes".to_string()).and_then(|n| scull_tool::bench::pipe_writer_child(None, n))));
    }
    let t = match target(name) {
        Ok(t) => t,
        Err(m) => return Some(Err(m)),
    };
    if let Some(r) = scull_tool::stress::child(t, &w) {
        return Some(ok(r));
    }
    match w.as_slice() {
        ["__bench-pipe-writer", n] => {
            Some(ok(n.parse().map_err(|_| "bytes".to_string()).and_then(|n| scull_tool::bench::pipe_writer_child(Some(t), n))))
        }
        _ => Some(Err(format!("unknown internal command {w:?}"))),
    }
}

fn checked(clean: bool) -> ExitCode {
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    // The commands that drive no scull target: they never ask for one.
    match cli.cmd {
        Command::ScaleReference { baseline_dir, scale_size } => {
            let mib = whole_mib("--scale-size", scale_size).unwrap_or_else(|m| usage_error("scale-reference", m));
            scull_tool::bench::scale_reference(&baseline_dir.unwrap_or_else(std::env::temp_dir), mib)?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(target_os = "linux")]
        Command::OpenLoop { paths, until, pause, seed } => {
            let (opened, failed) = open_loop(&paths, &until, pause, seed);
            scull_tool::outln!("opened={opened} failed={failed}");
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(target_os = "linux")]
        Command::FaultSweep { max_k, injector } => {
            use scull_tool::fault_sweep::{self, Injector};
            // The sweep drives scull.ko through /dev and sysfs itself: only a
            // Linux target means anything to it.
            let t = match cli.target.as_deref() {
                None | Some("linux" | "qemu") => target(cli.target.as_deref().or(Some("linux")))?,
                Some(other) => usage_error(
                    "fault-sweep",
                    format!("fault-sweep injects allocation failures into scull.ko through /dev/scull* and /sys/module/scull: it runs on --target linux or qemu, not `{other}`"),
                ),
            };
            scull_tool::hint::preflight(t)?;
            let inj = match injector {
                InjectorArg::Module => Injector::Module,
                InjectorArg::Failslab => Injector::Failslab,
            };
            Ok(checked(fault_sweep::run(max_k, inj)?))
        }
        cmd => {
            let t = target(cli.target.as_deref())?;
            scull_tool::hint::preflight(t)?;
            on_target(t, cmd)
        }
    }
}

/// A command that drives the devices of `t`.
fn on_target(t: &'static dyn Target, cmd: Command) -> Result<ExitCode, String> {
    match cmd {
        Command::Write { dev, text, offset } => {
            check_dev(t, "write", dev);
            cmd_write(t, dev, text.as_bytes(), offset)?
        }
        Command::Read { dev, offset, len, nonblock, timeout } => {
            check_dev(t, "read", dev);
            cmd_read(t, dev, offset, len as usize, nonblock, timeout)?
        }
        Command::Cat { dev } => {
            check_dev(t, "cat", dev);
            if !dev.is_store() {
                usage_error("cat", format!("{} has no end to read to (LDD3's pipe has no end of file): use `read`, with --nonblock or --timeout", hint::dev_name(dev)));
            }
            cmd_cat(t, dev)?
        }
        Command::Ioctl { name, value } => {
            let value = match (name.arg_in(), value) {
                (ArgIn::None, None) => 0,
                (ArgIn::None, Some(v)) => usage_error("ioctl", format!("`{}` takes no value, but `{v}` was given", name.short())),
                (_, Some(v)) => v,
                (_, None) => usage_error("ioctl", format!("`{}` needs a value, e.g. `ioctl {} 4000`", name.short(), name.short())),
            };
            cmd_ioctl(t, name, value)?
        }
        Command::Stats => scull_tool::out!("{}", stats(t)?),
        Command::PipeDemo => pipe_demo(t)?,
        Command::Demo => demo(t)?,
        Command::Conformance { filter, format, list } => {
            let cases = scull_tool::conformance::select(t, filter.as_deref());
            if cases.is_empty() {
                usage_error(
                    "conformance",
                    format!(
                        "--filter `{}` matches no case on target `{}` (`scull-tool --target {} conformance --list` lists them)",
                        filter.as_deref().unwrap_or_default(),
                        t.name(),
                        t.name()
                    ),
                );
            }
            if list {
                for c in &cases {
                    scull_tool::outln!("{}", c.name);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let s = scull_tool::conformance::run_with(t, filter.as_deref(), format == Format::Json);
            return Ok(checked(s.failed == 0));
        }
        Command::Bench { size, scale_size, baseline_dir, reference } => {
            let o = scull_tool::bench::Options {
                reference,
                mib: whole_mib("--size", size).unwrap_or_else(|m| usage_error("bench", m)),
                scale_mib: whole_mib("--scale-size", scale_size).unwrap_or_else(|m| usage_error("bench", m)),
                baseline_dir,
            };
            scull_tool::bench::run(t, &o)?;
        }
        Command::Stress { writers, readers, seconds, processes, pipe, slots, seed } => {
            let o = scull_tool::stress::Options { writers, readers, seconds, processes, pipe, slots, seed };
            return Ok(checked(scull_tool::stress::run(t, &o)?));
        }
        Command::Fuzz { seconds, seed } => scull_tool::fuzz::run(t, &scull_tool::fuzz::Options { seconds, seed })?,
        Command::ScaleReference { .. } => unreachable!("handled without a target"),
        #[cfg(target_os = "linux")]
        Command::OpenLoop { .. } | Command::FaultSweep { .. } => unreachable!("handled without a target"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses (exit 2) a device the target does not have, naming what it has.
fn check_dev(t: &dyn Target, sub: &str, dev: Dev) {
    let caps = t.caps();
    let there = match dev {
        Dev::Scull(n) => n < caps.nr_devs,
        Dev::Pipe(n) => n < caps.p_nr_devs,
        _ => true,
    };
    if !there {
        usage_error(sub, format!("{} does not exist on target `{}`: {}", hint::dev_name(dev), t.name(), hint::dev_list(&caps)));
    }
}

/// `open-loop`: opens (read-only) and closes each path in turn until `until`
/// exists, looked for every 256 rounds so the loop stays in open(2) and
/// close(2) (every round when pausing). Returns how many opens succeeded and failed.
///
/// With `pause` > 0, each open and close is followed by a sleep of a random
/// length, uniform in 0..2·pause times what that pair took (so pause times on
/// average). An opener that is preempted inside open(2) or close(2) holds a
/// module reference until it runs again; without pauses, several openers
/// sharing a CPU on a preemptible kernel are nearly always inside one, and
/// rmmod is refused nearly every time (a fresh-machine CI run made 2 unloads
/// in 4 minutes). Scaling the pause by the measured pair keeps the openers'
/// share of the time the same on a fast kernel and on a slow debug one.
#[cfg(target_os = "linux")]
fn open_loop(paths: &[PathBuf], until: &std::path::Path, pause: u32, seed: u64) -> (u64, u64) {
    use std::time::{Duration, Instant};
    let mut rng = scull_tool::rng::Rng::new(seed);
    let (mut opened, mut failed) = (0u64, 0u64);
    // Pausing openers look for `until` after every round: 256 rounds with
    // pauses can take a minute on a debug kernel.
    let per_look = if pause > 0 { 1 } else { 256 };
    loop {
        for _ in 0..per_look {
            for p in paths {
                let start = Instant::now();
                match std::fs::File::open(p) {
                    Ok(_) => opened += 1,
                    Err(_) => failed += 1,
                }
                if pause > 0 {
                    let took = start.elapsed().as_nanos() as u64;
                    let ns = took.saturating_mul(2 * u64::from(pause));
                    std::thread::sleep(Duration::from_nanos(rng.below(ns.max(1))));
                }
            }
        }
        if until.exists() {
            return (opened, failed);
        }
    }
}

fn open(t: &dyn Target, d: Dev, o: OpenOpts) -> Result<Box<dyn Handle>, String> {
    t.open(d, o).map_err(|err| scull_tool::hint::open_failure(t, d, o, err))
}

fn cmd_write(t: &dyn Target, d: Dev, data: &[u8], offset: Option<i64>) -> Result<(), String> {
    // A store write at an offset keeps the data (read-write open); without one
    // it replaces it (write-only open trims, as LDD3).
    let opts = if d.is_store() && offset.is_none() { OpenOpts::TRUNC } else { OpenOpts::W };
    let opts = if offset.is_some() { OpenOpts::RW } else { opts };
    let mut h = open(t, d, opts)?;
    if let Some(off) = offset {
        h.seek(Whence::Set, off).map_err(e("seek"))?;
    }
    let mut at = 0;
    while at < data.len() {
        at += h.write(&data[at..]).map_err(e("write"))?;
    }
    scull_tool::outln!("wrote {} bytes to {}", data.len(), hint::dev_name(d));
    if t.name() == "model" {
        eprintln!("scull-tool: note: {}", hint::MODEL_LIFETIME);
    }
    Ok(())
}

fn cmd_read(t: &dyn Target, d: Dev, offset: Option<i64>, len: usize, nonblock: bool, timeout: Option<f64>) -> Result<(), String> {
    let name = hint::dev_name(d);
    if let Some(secs) = timeout {
        return read_with_timeout(t, d, len, Duration::from_secs_f64(secs));
    }
    if !d.is_store() && !nonblock && t.name() == "model" {
        usage_error(
            "read",
            format!("on --target model nothing else can write to {name} ({}), so this read would wait forever: add --nonblock or --timeout SECONDS", hint::MODEL_LIFETIME),
        );
    }
    let opts = if nonblock { OpenOpts::R.nonblocking() } else { OpenOpts::R };
    let mut h = open(t, d, opts)?;
    if let Some(off) = offset {
        h.seek(Whence::Set, off).map_err(e("seek"))?;
    }
    if !d.is_store() && !nonblock && std::io::stderr().is_terminal() && h.poll().is_ok_and(|r| !r.readable) {
        eprintln!("scull-tool: {name} is empty: waiting for a writer (LDD3's pipe has no end of file; --nonblock or --timeout SECONDS give up instead)");
    }
    let mut buf = vec![0u8; len];
    let n = match h.read(&mut buf) {
        Err(Error::WouldBlock) if nonblock => return Err(format!("read {name}: nothing to read (non-blocking read of an empty pipe: EAGAIN)")),
        r => r.map_err(e("read"))?,
    };
    scull_tool::outln!("{}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}

/// `read --timeout`: a cancellable read, given up (cancelled) after `limit`.
fn read_with_timeout(t: &dyn Target, d: Dev, len: usize, limit: Duration) -> Result<(), String> {
    let name = hint::dev_name(d);
    if !t.caps().cancel {
        return Err(format!("read --timeout: target `{}` cannot cancel a blocked read; use --nonblock", t.name()));
    }
    let mut p = t.read_cancellable(d, len).map_err(|err| hint::open_failure(t, d, OpenOpts::R, err))?;
    let start = Instant::now();
    while !p.is_done() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !p.is_done() {
        p.cancel(false).map_err(e("cancel"))?;
        // The cancelled read ends with Interrupted; its result is not wanted.
        let _ = p.wait(Duration::from_secs(5));
        return Err(format!("read {name}: no data within {} s (--timeout)", limit.as_secs_f64()));
    }
    let data = p.wait(Duration::from_secs(5)).map_err(e("read"))?;
    scull_tool::outln!("{}", String::from_utf8_lossy(&data));
    Ok(())
}

fn cmd_cat(t: &dyn Target, d: Dev) -> Result<(), String> {
    let mut h = open(t, d, OpenOpts::R)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = h.read(&mut buf).map_err(e("read"))?;
        if n == 0 {
            break;
        }
        scull_tool::out::bytes(&buf[..n]);
    }
    Ok(())
}

fn cmd_ioctl(t: &dyn Target, cmd: Cmd, value: i32) -> Result<(), String> {
    // A command that changes state needs a handle with write access on
    // Windows (its CTL_CODE carries FILE_WRITE_ACCESS).
    let o = if cmd.changes_state() { OpenOpts::RW } else { OpenOpts::R };
    let mut h = open(t, Dev::Scull(0), o)?;
    if cmd == Cmd::Stats {
        scull_tool::out!("{}", h.stats().map_err(e("stats"))?);
        return Ok(());
    }
    let r = h.ioctl(cmd, value).map_err(e(cmd.name()))?;
    scull_tool::outln!("{} = {r}", cmd.name());
    Ok(())
}

fn stats(t: &dyn Target) -> Result<String, String> {
    open(t, Dev::Scull(0), OpenOpts::R)?.stats().map_err(e("stats"))
}

fn pipe_demo(t: &dyn Target) -> Result<(), String> {
    scull_tool::outln!("pipe-demo: a reader blocks on an empty scullpipe0; a writer arrives 500 ms later");
    let mut r = open(t, Dev::Pipe(0), OpenOpts::R)?;
    let started = Instant::now();
    let w = t
        .spawn_writer(Dev::Pipe(0), b"hello through the pipe".to_vec(), Duration::from_millis(500))
        .map_err(e("spawn writer"))?;
    let mut buf = [0u8; 64];
    let n = r.read(&mut buf).map_err(e("read"))?;
    scull_tool::outln!(
        "pipe-demo: reader woke after {} ms with {n} bytes: {:?}",
        started.elapsed().as_millis(),
        String::from_utf8_lossy(&buf[..n])
    );
    w.join().map_err(e("writer"))?;
    Ok(())
}

fn demo(t: &dyn Target) -> Result<(), String> {
    scull_tool::outln!("== demo on target `{}`", t.name());
    scull_tool::outln!("-- write 10000 bytes to scull0 (spans three 4000-byte quanta) and read them back");
    let data: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut h = open(t, Dev::Scull(0), OpenOpts::TRUNC)?;
    let n = h.write(&data).map_err(e("write"))?;
    drop(h);
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    h.seek(Whence::Set, 3995).map_err(e("seek"))?;
    let mut buf = [0u8; 10];
    let m = h.read(&mut buf).map_err(e("read"))?;
    scull_tool::outln!("wrote {n} bytes; read {m} bytes across the quantum boundary at 3995: {:?}", String::from_utf8_lossy(&buf[..m]));
    let end = h.seek(Whence::End, 0).map_err(e("seek"))?;
    scull_tool::outln!("size (SEEK_END) = {end}");
    scull_tool::outln!("-- ioctl round trip");
    let q = h.ioctl(Cmd::QQuantum, 0).map_err(e("QQUANTUM"))?;
    scull_tool::outln!("SCULL_IOCQQUANTUM = {q}");
    match h.ioctl(Cmd::XQuantum, 1000) {
        Ok(old) => {
            let now = h.ioctl(Cmd::QQuantum, 0).map_err(e("QQUANTUM"))?;
            scull_tool::outln!("SCULL_IOCXQUANTUM 1000 -> old {old}, now {now}");
            h.ioctl(Cmd::Reset, 0).map_err(e("RESET"))?;
            scull_tool::outln!("SCULL_IOCRESET -> quantum {}", h.ioctl(Cmd::QQuantum, 0).map_err(e("QQUANTUM"))?);
        }
        Err(err) => scull_tool::outln!("SCULL_IOCXQUANTUM refused: {err} (needs privilege)"),
    }
    scull_tool::outln!("-- scullmem / scullpipe report (STATS)");
    scull_tool::out!("{}", h.stats().map_err(e("stats"))?);
    drop(h);
    pipe_demo(t)?;
    drop(open(t, Dev::Scull(0), OpenOpts::TRUNC)?);
    scull_tool::outln!("== demo done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn every_argument_is_described() {
        let mut missing = Vec::new();
        for sub in command().get_subcommands() {
            for a in sub.get_arguments().filter(|a| !a.is_global_set()) {
                let id = a.get_id().as_str();
                if id != "help" && a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{} {id}", sub.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "arguments without a help line: {missing:?}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999G").is_err());
        assert_eq!(whole_mib("--size", 64 << 20), Ok(64));
        assert!(whole_mib("--size", 1000).is_err());
    }

    #[test]
    fn harness_command_lines_parse() {
        // The forms xtask (wine.rs, qemu.rs, host.rs) and the docs use.
        for line in [
            "conformance --target wine --filter uid",
            "--target qemu stress --processes --writers 8 --readers 8 --seconds 30 --seed 20261121",
            "--target qemu fuzz --seconds 60 --seed 20261121",
            "--target wine bench --reference --size 64M --scale-size 256M --baseline-dir C:\\scull\\bench",
            "--target qemu scale-reference --baseline-dir /bench",
            "--target wine write scull0 hello",
            "--target windows read scull0 --len 5",
            "--target model ioctl tquantum 64",
            "--target model ioctl qquantum",
            "demo --target model",
            "conformance --format json",
            "open-loop /tmp/race.0 --until /tmp/race.stop --pause 8 --seed 3",
            "--target qemu fault-sweep",
            "--target qemu fault-sweep --injector failslab --max-k 5000",
            "--target qemu read scullpipe0 --nonblock",
            "--target qemu read scullpipe0 --timeout 2.5",
        ] {
            let argv = std::iter::once("scull-tool").chain(line.split(' '));
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{line}: {e}");
            }
        }
        let err = |line: &str| Cli::try_parse_from(std::iter::once("scull-tool").chain(line.split(' '))).err().map(|e| e.exit_code());
        assert_eq!(err("write"), Some(2));
        assert_eq!(err("write nosuchdev x"), Some(2));
        assert_eq!(err("ioctl nosuchioctl"), Some(2));
        assert_eq!(err("--help"), Some(0));
        assert_eq!(err("write --help"), Some(0));
    }
}

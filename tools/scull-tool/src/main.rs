//! scull-tool: drive scull devices from user mode. `scull-tool --help` lists
//! the commands, `scull-tool <command> --help` their options; the reference
//! is docs/scull-tool.md. Exit codes: 0 ok, 1 a failed check or operation,
//! 2 a usage error.
//!
//! Targets: `model` (in-process host model), plus the kernels this build
//! supports (`windows`/`wine` on Windows, `linux`/`qemu` on Linux).

use clap::{Parser, Subcommand, ValueEnum};
use scull_core::devices::Dev;
use scull_core::ioctl::Cmd;
use scull_core::store::Whence;
use scull_tool::backend::{self, Handle, OpenOpts, Target};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "\
Targets: model (the in-process host model, every build); linux, qemu (Linux
builds: /dev/scull*); windows, wine (Windows builds: \\\\.\\Scull*). Without
--target: windows on Windows, linux when /dev/scull0 exists, else model.

Sizes take a suffix: 4096, 4K, 64M, 1G (powers of 1024), or 0x1000.
Exit codes: 0 ok, 1 a failed check or operation, 2 a usage error.
Reference: docs/scull-tool.md";

#[derive(Parser)]
#[command(name = "scull-tool", version, about = "Drive LDD3's scull devices from user mode: commands, the conformance suite, benchmarks, stress and fuzzing", after_help = AFTER_HELP)]
struct Cli {
    /// Device set to drive (model, linux, qemu, windows, wine; see below)
    #[arg(long, global = true, value_name = "TARGET")]
    target: Option<String>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write text to a device (a store write without --offset replaces its data, as LDD3's write-only open trims)
    Write {
        /// scull0-3, scullpipe0-3, scullsingle, sculluid, scullwuid, scullpriv
        #[arg(value_parser = parse_dev)]
        dev: Dev,
        text: String,
        /// Write at this position, keeping the rest of the data
        #[arg(long, value_parser = parse_offset)]
        offset: Option<i64>,
    },
    /// Read from a device and print it
    Read {
        #[arg(value_parser = parse_dev)]
        dev: Dev,
        /// Read from this position
        #[arg(long, value_parser = parse_offset)]
        offset: Option<i64>,
        /// At most this many bytes
        #[arg(long, value_parser = parse_size, default_value = "256")]
        len: u64,
    },
    /// Read a device from 0 to the end and write it to stdout
    Cat {
        #[arg(value_parser = parse_dev)]
        dev: Dev,
    },
    /// Run one scull ioctl on scull0 (e.g. `qquantum`, `tquantum 64`, `reset`, `stats`)
    Ioctl {
        #[arg(value_parser = parse_cmd)]
        name: Cmd,
        /// The value argument of S/T/X/H commands
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
        /// Only the cases whose name contains this text
        #[arg(long)]
        filter: Option<String>,
        /// `json` adds one JSON object per case (name, result, reason)
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
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
        #[arg(long, default_value_t = 4)]
        writers: usize,
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
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Hostile input for a while; the devices must survive and still work
    Fuzz {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Fixed seeds reproduce the same operation sequence
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// (Linux, root) make the k-th allocation fail, k swept over a workload: nothing lost, corrupt or leaked
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
    /// `cargo xtask qemu`)
    #[cfg(target_os = "linux")]
    OpenLoop {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
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
    /// A plain file and plain memory over bench's two working sets (the scaling reference)
    ScaleReference {
        #[arg(long)]
        baseline_dir: Option<PathBuf>,
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = backend::child_main(&args) {
        return ExitCode::from(code);
    }
    if let Some(r) = internal(&args) {
        return finish(r);
    }
    let cli = Cli::parse();
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

fn target(name: Option<&str>) -> Result<&'static dyn Target, String> {
    let name = name.unwrap_or_else(|| backend::default_target());
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
    let t = target(cli.target.as_deref())?;
    scull_tool::hint::preflight(t)?;
    match cli.cmd {
        Command::Write { dev, text, offset } => cmd_write(t, dev, text.as_bytes(), offset)?,
        Command::Read { dev, offset, len } => cmd_read(t, dev, offset, len as usize)?,
        Command::Cat { dev } => cmd_cat(t, dev)?,
        Command::Ioctl { name, value } => cmd_ioctl(t, name, value.unwrap_or(0))?,
        Command::Stats => print!("{}", stats(t)?),
        Command::PipeDemo => pipe_demo(t)?,
        Command::Demo => demo(t)?,
        Command::Conformance { filter, format } => {
            let s = scull_tool::conformance::run_with(t, filter.as_deref(), format == Format::Json);
            return Ok(checked(s.failed == 0));
        }
        Command::Bench { size, scale_size, baseline_dir, reference } => {
            let o = scull_tool::bench::Options {
                reference,
                mib: whole_mib("--size", size).map_err(usage)?,
                scale_mib: whole_mib("--scale-size", scale_size).map_err(usage)?,
                baseline_dir,
            };
            scull_tool::bench::run(t, &o)?;
        }
        Command::Stress { writers, readers, seconds, processes, pipe, slots, seed } => {
            let o = scull_tool::stress::Options { writers, readers, seconds, processes, pipe, slots, seed };
            return Ok(checked(scull_tool::stress::run(t, &o)?));
        }
        Command::Fuzz { seconds, seed } => scull_tool::fuzz::run(t, &scull_tool::fuzz::Options { seconds, seed })?,
        #[cfg(target_os = "linux")]
        Command::FaultSweep { max_k, injector } => {
            use scull_tool::backend::linux::fault_sweep::{self, Injector};
            let inj = match injector {
                InjectorArg::Module => Injector::Module,
                InjectorArg::Failslab => Injector::Failslab,
            };
            return Ok(checked(fault_sweep::run(max_k, inj)?));
        }
        #[cfg(target_os = "linux")]
        Command::OpenLoop { paths, until, pause, seed } => {
            let (opened, failed) = open_loop(&paths, &until, pause, seed);
            println!("opened={opened} failed={failed}");
        }
        Command::ScaleReference { baseline_dir, scale_size } => scull_tool::bench::scale_reference(
            &baseline_dir.unwrap_or_else(std::env::temp_dir),
            whole_mib("--scale-size", scale_size).map_err(usage)?,
        )?,
    }
    Ok(ExitCode::SUCCESS)
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

/// A usage error found after parsing: print it as clap would and exit 2.
fn usage(msg: String) -> String {
    eprintln!("scull-tool: {msg}");
    std::process::exit(USAGE.into());
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
    let mut name = String::new();
    let _ = d.linux_name(&mut name);
    println!("wrote {} bytes to {name}", data.len());
    Ok(())
}

fn cmd_read(t: &dyn Target, d: Dev, offset: Option<i64>, len: usize) -> Result<(), String> {
    let mut h = open(t, d, OpenOpts::R)?;
    if let Some(off) = offset {
        h.seek(Whence::Set, off).map_err(e("seek"))?;
    }
    let mut buf = vec![0u8; len];
    let n = h.read(&mut buf).map_err(e("read"))?;
    println!("{}", String::from_utf8_lossy(&buf[..n]));
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
        use std::io::Write;
        std::io::stdout().write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn cmd_ioctl(t: &dyn Target, cmd: Cmd, value: i32) -> Result<(), String> {
    // A command that changes state needs a handle with write access on
    // Windows (its CTL_CODE carries FILE_WRITE_ACCESS).
    let o = if cmd.changes_state() { OpenOpts::RW } else { OpenOpts::R };
    let mut h = open(t, Dev::Scull(0), o)?;
    if cmd == Cmd::Stats {
        print!("{}", h.stats().map_err(e("stats"))?);
        return Ok(());
    }
    let r = h.ioctl(cmd, value).map_err(e(cmd.name()))?;
    println!("{} = {r}", cmd.name());
    Ok(())
}

fn stats(t: &dyn Target) -> Result<String, String> {
    open(t, Dev::Scull(0), OpenOpts::R)?.stats().map_err(e("stats"))
}

fn pipe_demo(t: &dyn Target) -> Result<(), String> {
    println!("pipe-demo: a reader blocks on an empty scullpipe0; a writer arrives 500 ms later");
    let mut r = open(t, Dev::Pipe(0), OpenOpts::R)?;
    let started = Instant::now();
    let w = t
        .spawn_writer(Dev::Pipe(0), b"hello through the pipe".to_vec(), Duration::from_millis(500))
        .map_err(e("spawn writer"))?;
    let mut buf = [0u8; 64];
    let n = r.read(&mut buf).map_err(e("read"))?;
    println!(
        "pipe-demo: reader woke after {} ms with {n} bytes: {:?}",
        started.elapsed().as_millis(),
        String::from_utf8_lossy(&buf[..n])
    );
    w.join().map_err(e("writer"))?;
    Ok(())
}

fn demo(t: &dyn Target) -> Result<(), String> {
    println!("== demo on target `{}`", t.name());
    println!("-- write 10000 bytes to scull0 (spans three 4000-byte quanta) and read them back");
    let data: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut h = open(t, Dev::Scull(0), OpenOpts::TRUNC)?;
    let n = h.write(&data).map_err(e("write"))?;
    drop(h);
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    h.seek(Whence::Set, 3995).map_err(e("seek"))?;
    let mut buf = [0u8; 10];
    let m = h.read(&mut buf).map_err(e("read"))?;
    println!("wrote {n} bytes; read {m} bytes across the quantum boundary at 3995: {:?}", String::from_utf8_lossy(&buf[..m]));
    let end = h.seek(Whence::End, 0).map_err(e("seek"))?;
    println!("size (SEEK_END) = {end}");
    println!("-- ioctl round trip");
    let q = h.ioctl(Cmd::QQuantum, 0).map_err(e("QQUANTUM"))?;
    println!("SCULL_IOCQQUANTUM = {q}");
    match h.ioctl(Cmd::XQuantum, 1000) {
        Ok(old) => {
            let now = h.ioctl(Cmd::QQuantum, 0).map_err(e("QQUANTUM"))?;
            println!("SCULL_IOCXQUANTUM 1000 -> old {old}, now {now}");
            h.ioctl(Cmd::Reset, 0).map_err(e("RESET"))?;
            println!("SCULL_IOCRESET -> quantum {}", h.ioctl(Cmd::QQuantum, 0).map_err(e("QQUANTUM"))?);
        }
        Err(err) => println!("SCULL_IOCXQUANTUM refused: {err} (needs privilege)"),
    }
    println!("-- scullmem / scullpipe report (STATS)");
    print!("{}", h.stats().map_err(e("stats"))?);
    drop(h);
    pipe_demo(t)?;
    drop(open(t, Dev::Scull(0), OpenOpts::TRUNC)?);
    println!("== demo done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
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

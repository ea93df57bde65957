//! scull-tool: drive scull devices from user mode.
//!
//! ```text
//! scull-tool [--target T] <command> ...
//!   write <dev> <text> [--offset N]   write text (e.g. scull0, scullpipe0)
//!   read <dev> [--offset N] [--len N] read and print
//!   cat <dev>                         read from 0 to the end
//!   ioctl <name> [value]              run a scull ioctl on scull0 (e.g. qquantum, tquantum 64)
//!   stats                             print the scullmem/scullpipe report
//!   pipe-demo                         a blocked reader woken by a writer
//!   demo                              all of the above, on one device set
//!   conformance [--filter S]          the conformance suite
//!   bench [--mib N] [--scale-mib N] [--baseline-dir D] [--reference]
//!                                     throughput vs tmpfs, pipe(2); scaling
//!   stress [--writers N] [--readers M] [--seconds S] [--processes] [--seed X]
//!                                     concurrent pipe and store traffic, every record checked
//!   fuzz [--seconds S] [--seed X]     hostile input; the devices must survive
//!   fault-sweep [--max-k N] [--injector module|failslab]
//!                                     (Linux, root) the k-th allocation fails, k swept over a
//!                                     workload: scull.ko's scull_fail_at, or the kernel's failslab
//!                                     through /proc/thread-self/fail-nth
//!   scale-reference [--baseline-dir D] [--scale-mib N]
//!                                     (Linux) tmpfs and plain-memory 256M-vs-1M, for bench's scaling
//! ```
//! Targets: `model` (in-process host model), plus the kernels this build
//! supports (`windows`/`wine` on Windows, `linux`/`qemu` on Linux).

use scull_core::devices::Dev;
use scull_core::ioctl::Cmd;
use scull_core::store::Whence;
use scull_tool::backend::{self, Handle, OpenOpts, Target};
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Args {
    words: Vec<String>,
    target: Option<String>,
    offset: Option<i64>,
    len: Option<usize>,
    filter: Option<String>,
    processes: bool,
    reference: bool,
    opts: std::collections::BTreeMap<String, String>,
}

impl Args {
    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.opts.get(key) {
            Some(v) => v.parse().map_err(|_| format!("--{key}: bad value `{v}`")),
            None => Ok(default),
        }
    }
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        words: Vec::new(),
        target: None,
        offset: None,
        len: None,
        filter: None,
        processes: false,
        reference: false,
        opts: Default::default(),
    };
    while let Some(w) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match w.as_str() {
            "--target" => a.target = Some(val("--target")?),
            "--offset" => a.offset = Some(val("--offset")?.parse().map_err(|e| format!("--offset: {e}"))?),
            "--len" => a.len = Some(val("--len")?.parse().map_err(|e| format!("--len: {e}"))?),
            "--filter" => a.filter = Some(val("--filter")?),
            "--processes" => a.processes = true,
            "--reference" => a.reference = true,
            "--mib" | "--scale-mib" | "--baseline-dir" | "--writers" | "--readers" | "--seconds" | "--seed" | "--slots" | "--pipe" | "--max-k" | "--injector" => {
                let v = val(&w)?;
                a.opts.insert(w[2..].to_string(), v);
            }
            _ => a.words.push(w),
        }
    }
    Ok(a)
}

fn dev(name: &str) -> Result<Dev, String> {
    Dev::parse(name).ok_or_else(|| format!("unknown device `{name}` (scull0, scullpipe0, scullsingle, sculluid, scullwuid, scullpriv)"))
}

fn e(what: &str) -> impl Fn(scull_core::Error) -> String + '_ {
    move |err| format!("{what}: {err}")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = backend::child_main(&args) {
        return ExitCode::from(code);
    }
    match run(args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("scull-tool: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode, String> {
    let a = parse(args.into_iter())?;
    let name = a.target.clone().unwrap_or_else(|| backend::default_target().to_string());
    let w: Vec<&str> = a.words.iter().map(String::as_str).collect();
    if let ["__bench-pipe2-writer", n] = w.as_slice() {
        scull_tool::bench::pipe_writer_child(None, n.parse().map_err(|_| "bytes")?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let t = backend::target_by_name(&name).ok_or_else(|| format!("target `{name}` is not available in this build"))?;
    // Workers on other threads need a target that lives as long as the process.
    let t: &'static dyn Target = Box::leak(t);
    if let Some(r) = scull_tool::stress::child(t, &w) {
        r?;
        return Ok(ExitCode::SUCCESS);
    }
    match w.as_slice() {
        ["__bench-pipe-writer", n] => scull_tool::bench::pipe_writer_child(Some(t), n.parse().map_err(|_| "bytes")?)?,
        ["bench"] => {
            let o = scull_tool::bench::Options {
                reference: a.reference,
                mib: a.num("mib", 64)?,
                scale_mib: a.num("scale-mib", 256)?,
                baseline_dir: a.opts.get("baseline-dir").map(std::path::PathBuf::from),
            };
            scull_tool::bench::run(t, &o)?;
        }
        ["stress"] => {
            let o = scull_tool::stress::Options {
                writers: a.num("writers", 4)?,
                readers: a.num("readers", 4)?,
                seconds: a.num("seconds", 10.0)?,
                processes: a.processes,
                pipe: a.num("pipe", 0)?,
                slots: a.num("slots", 1024)?,
                seed: a.num("seed", 1)?,
            };
            if !scull_tool::stress::run(t, &o)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        ["fuzz"] => {
            let o = scull_tool::fuzz::Options { seconds: a.num("seconds", 10.0)?, seed: a.num("seed", 1)? };
            scull_tool::fuzz::run(t, &o)?;
        }
        #[cfg(target_os = "linux")]
        ["fault-sweep"] => {
            use scull_tool::backend::linux::fault_sweep::{self, Injector};
            let inj = match a.opts.get("injector").map(String::as_str) {
                None | Some("module") => Injector::Module,
                Some("failslab") => Injector::Failslab,
                Some(o) => return Err(format!("--injector: `{o}` (module or failslab)")),
            };
            if !fault_sweep::run(a.num("max-k", 2000)?, inj)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        ["scale-reference"] => scull_tool::bench::scale_reference(
            &a.opts.get("baseline-dir").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir),
            a.num("scale-mib", 256)?,
        )?,
        ["conformance"] => {
            let s = scull_tool::conformance::run(t, a.filter.as_deref());
            return Ok(if s.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        ["write", d, text] => cmd_write(t, dev(d)?, text.as_bytes(), a.offset)?,
        ["read", d] => cmd_read(t, dev(d)?, a.offset, a.len.unwrap_or(256))?,
        ["cat", d] => cmd_cat(t, dev(d)?)?,
        ["ioctl", c] => cmd_ioctl(t, c, 0)?,
        ["ioctl", c, v] => cmd_ioctl(t, c, v.parse().map_err(|e| format!("value: {e}"))?)?,
        ["stats"] => print!("{}", stats(t)?),
        ["pipe-demo"] => pipe_demo(t)?,
        ["demo"] => demo(t)?,
        _ => return Err(format!("usage: scull-tool [--target T] <conformance|write|read|cat|ioctl|stats|pipe-demo|demo> ...\ngot: {w:?}")),
    }
    Ok(ExitCode::SUCCESS)
}

fn open(t: &dyn Target, d: Dev, o: OpenOpts) -> Result<Box<dyn Handle>, String> {
    t.open(d, o).map_err(|err| format!("open {d:?}: {err}"))
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
    println!("wrote {} bytes to {d:?}", data.len());
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

fn cmd_ioctl(t: &dyn Target, c: &str, value: i32) -> Result<(), String> {
    let cmd = Cmd::parse(c).ok_or_else(|| format!("unknown ioctl `{c}`"))?;
    let mut h = open(t, Dev::Scull(0), OpenOpts::R)?;
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
    let mut h = open(t, Dev::Scull(0), OpenOpts::R)?;
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

//! `scull-tool bench`: throughput of the scull devices against the natural
//! baselines, measured side by side in one run. Prints `ratio NAME = X` lines
//! and the MB/s each ratio came from. Never a pass/fail test.
//!
//! - scull_vs_tmpfs_write / _read: sequential 64 MiB through `scull0` against
//!   a file in a tmpfs directory (`/dev/shm` when present, else the temp
//!   directory), 64 KiB buffers.
//! - pipe_vs_pipe2: 64 MiB from a writer to a reader through `scullpipe0`
//!   (buffer set to 64 KiB) against an OS pipe of the default size (64 KiB on
//!   Linux); writer and reader are separate processes when the target allows.
//! - scale_256m_vs_1m: `scull0` write+read throughput of one 256 MiB file
//!   against a 1 MiB file (best of several).

use crate::backend::{OpenOpts, Target};
use scull_core::devices::Dev;
use scull_core::ioctl::Cmd;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const BUF: usize = 64 * 1024;

/// What the baselines are on this OS (the ratio names stay as defined above).
const FILE_LABEL: &str = if cfg!(windows) { "plain file" } else { "tmpfs" };
const PIPE_LABEL: &str = if cfg!(windows) { "anonymous pipe" } else { "pipe(2)" };

pub struct Options {
    /// Reference figures only (e.g. under Wine): print `reference NAME = X`
    /// instead of `ratio NAME = X`, so they are never read as the goals' figures.
    pub reference: bool,
    pub mib: usize,
    pub scale_mib: usize,
    pub baseline_dir: Option<PathBuf>,
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6
}

fn fill(buf: &mut [u8], seed: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i.wrapping_mul(131) ^ seed) as u8;
    }
}

/// Writes then reads `bytes` through `scull0`; returns (write, read) durations.
fn scull_io(t: &dyn Target, bytes: usize) -> Result<(Duration, Duration), String> {
    let mut buf = vec![0u8; BUF];
    fill(&mut buf, 1);
    let mut h = t.open(Dev::Scull(0), OpenOpts::TRUNC).map_err(|e| format!("open scull0: {e}"))?;
    let start = Instant::now();
    let mut done = 0;
    while done < bytes {
        let n = (bytes - done).min(BUF);
        done += h.write(&buf[..n]).map_err(|e| format!("write scull0: {e}"))?;
    }
    let w = start.elapsed();
    drop(h);
    let mut h = t.open(Dev::Scull(0), OpenOpts::R).map_err(|e| format!("open scull0: {e}"))?;
    let start = Instant::now();
    let mut done = 0;
    while done < bytes {
        let n = h.read(&mut buf).map_err(|e| format!("read scull0: {e}"))?;
        if n == 0 {
            return Err(format!("scull0 ended after {done} of {bytes} bytes"));
        }
        done += n;
    }
    let r = start.elapsed();
    drop(h);
    drop(t.open(Dev::Scull(0), OpenOpts::TRUNC).map_err(|e| format!("trim scull0: {e}"))?);
    Ok((w, r))
}

fn file_io(dir: &std::path::Path, bytes: usize) -> Result<(Duration, Duration), String> {
    let path = dir.join(format!("scull-bench-{}", std::process::id()));
    let mut buf = vec![0u8; BUF];
    fill(&mut buf, 1);
    let start = Instant::now();
    let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut done = 0;
    while done < bytes {
        let n = (bytes - done).min(BUF);
        f.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        done += n;
    }
    drop(f);
    let w = start.elapsed();
    let start = Instant::now();
    let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
    let mut done = 0;
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        done += n;
    }
    let r = start.elapsed();
    let _ = std::fs::remove_file(&path);
    if done != bytes {
        return Err(format!("baseline file read {done} of {bytes}"));
    }
    Ok((w, r))
}

fn default_baseline_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Child side of the pipe benchmarks: write `bytes` to `dev` (or to stdout
/// for the OS pipe) in 64 KiB writes.
pub fn pipe_writer_child(t: Option<&dyn Target>, bytes: usize) -> Result<(), String> {
    let mut buf = vec![0u8; BUF];
    fill(&mut buf, 2);
    match t {
        Some(t) => {
            let mut h = t.open(Dev::Pipe(0), OpenOpts::W).map_err(|e| format!("open scullpipe0: {e}"))?;
            let mut done = 0;
            while done < bytes {
                let n = (bytes - done).min(BUF);
                done += h.write(&buf[..n]).map_err(|e| format!("write scullpipe0: {e}"))?;
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            let mut done = 0;
            while done < bytes {
                let n = (bytes - done).min(BUF);
                out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                done += n;
            }
            out.flush().map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn self_command(args: &[&str]) -> Result<std::process::Command, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut c = std::process::Command::new(exe);
    c.args(args);
    Ok(c)
}

fn scull_pipe(t: &dyn Target, bytes: usize) -> Result<Duration, String> {
    let mut ctl = t.open(Dev::Scull(0), OpenOpts::R).map_err(|e| format!("open: {e}"))?;
    ctl.ioctl(Cmd::PTSize, BUF as i32).map_err(|e| format!("P_IOCTSIZE: {e}"))?;
    let mut r = t.open(Dev::Pipe(0), OpenOpts::R).map_err(|e| format!("open scullpipe0: {e}"))?;
    let mut buf = vec![0u8; BUF];
    let start = Instant::now();
    let n_str = bytes.to_string();
    let mut child = None;
    let mut thread = None;
    if t.caps().processes {
        child = Some(
            self_command(&["--target", t.name(), "__bench-pipe-writer", &n_str])?
                .spawn()
                .map_err(|e| format!("spawn writer: {e}"))?,
        );
    } else {
        // In-process targets: a thread.
        let w = t.open(Dev::Pipe(0), OpenOpts::W).map_err(|e| format!("open scullpipe0: {e}"))?;
        thread = Some(std::thread::spawn(move || {
            let mut w = w;
            let mut b = vec![0u8; BUF];
            fill(&mut b, 2);
            let mut done = 0;
            while done < bytes {
                let n = (bytes - done).min(BUF);
                done += w.write(&b[..n]).map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    let mut done = 0;
    while done < bytes {
        done += r.read(&mut buf).map_err(|e| format!("read scullpipe0: {e}"))?;
    }
    let d = start.elapsed();
    if let Some(mut c) = child {
        let st = c.wait().map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("pipe writer exited {st}"));
        }
    }
    if let Some(th) = thread {
        th.join().map_err(|_| "writer panicked".to_string())??;
    }
    drop(r);
    ctl.ioctl(Cmd::PTSize, scull_core::geometry::DEFAULT_P_BUFFER).map_err(|e| e.to_string())?;
    Ok(d)
}

fn os_pipe(bytes: usize) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = self_command(&["__bench-pipe2-writer", &bytes.to_string()])?
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let mut out = child.stdout.take().ok_or("no pipe")?;
    let mut buf = vec![0u8; BUF];
    let mut done = 0;
    loop {
        let n = out.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        done += n;
    }
    let d = start.elapsed();
    child.wait().map_err(|e| e.to_string())?;
    if done != bytes {
        return Err(format!("pipe(2) moved {done} of {bytes}"));
    }
    Ok(d)
}

pub fn run(t: &dyn Target, o: &Options) -> Result<(), String> {
    let tag = if o.reference { "reference" } else { "ratio" };
    let bytes = o.mib << 20;
    let dir = o.baseline_dir.clone().unwrap_or_else(default_baseline_dir);
    println!("bench on target `{}`: {} MiB, {} KiB buffers, baseline dir {}", t.name(), o.mib, BUF >> 10, dir.display());

    let (sw, sr) = scull_io(t, bytes)?;
    let (fw, fr) = file_io(&dir, bytes)?;
    let (sw, sr, fw, fr) = (mbps(bytes, sw), mbps(bytes, sr), mbps(bytes, fw), mbps(bytes, fr));
    println!("scull0 write {sw:.1} MB/s, {FILE_LABEL} write {fw:.1} MB/s");
    println!("{tag} scull_vs_tmpfs_write = {:.2}", sw / fw);
    println!("scull0 read {sr:.1} MB/s, {FILE_LABEL} read {fr:.1} MB/s");
    println!("{tag} scull_vs_tmpfs_read = {:.2}", sr / fr);

    let sp = mbps(bytes, scull_pipe(t, bytes)?);
    let op = mbps(bytes, os_pipe(bytes)?);
    println!("scullpipe0 {sp:.1} MB/s, {PIPE_LABEL} {op:.1} MB/s ({} writer)", if t.caps().processes { "process" } else { "thread" });
    println!("{tag} pipe_vs_pipe2 = {:.2}", sp / op);

    let big = o.scale_mib << 20;
    let (bw, br) = scull_io(t, big)?;
    let big_rate = mbps(2 * big, bw + br);
    let mut small_best = 0f64;
    for _ in 0..8 {
        let (w, r) = scull_io(t, 1 << 20)?;
        small_best = small_best.max(mbps(2 << 20, w + r));
    }
    println!("scull0 {} MiB write+read {big_rate:.1} MB/s, 1 MiB write+read {small_best:.1} MB/s (best of 8)", o.scale_mib);
    println!("{tag} scale_256m_vs_1m = {:.2}", big_rate / small_best);
    Ok(())
}

/// `scull-tool scale-reference`: how the machine itself scales from a 1 MiB to
/// a `big_mib` working set, measured the way [`run`] measures scull0 (64 KiB
/// writes then reads, one big run, best of 8 small runs), for a file in `dir`
/// and for a plain user-space buffer. Reference figures only: they tell what
/// part of `scale_256m_vs_1m` is the memory hierarchy (under QEMU TCG, also its
/// software TLB) rather than the driver.
pub fn scale_reference(dir: &std::path::Path, big_mib: usize) -> Result<(), String> {
    fn memory_once(big: &mut [u8]) -> Duration {
        let src = vec![0x5Au8; BUF];
        let mut dst = vec![0u8; BUF];
        let start = Instant::now();
        for c in big.chunks_mut(BUF) {
            c.copy_from_slice(&src[..c.len()]);
        }
        for c in big.chunks(BUF) {
            dst[..c.len()].copy_from_slice(c);
            std::hint::black_box(&dst);
        }
        start.elapsed()
    }
    fn report(name: &str, big_mib: usize, big: f64, small: f64) {
        println!("reference {name}: {big_mib} MiB write+read {big:.1} MB/s, 1 MiB write+read {small:.1} MB/s (best of 8)");
        println!("reference {name}_256m_vs_1m = {:.2}", big / small);
    }
    let big = big_mib << 20;
    let (w, r) = file_io(dir, big)?;
    let f_big = mbps(2 * big, w + r);
    let mut f_small = 0f64;
    for _ in 0..8 {
        let (w, r) = file_io(dir, 1 << 20)?;
        f_small = f_small.max(mbps(2 << 20, w + r));
    }
    report(if cfg!(windows) { "file" } else { "tmpfs" }, big_mib, f_big, f_small);
    let mut buf = vec![1u8; big];
    let m_big = mbps(2 * big, memory_once(&mut buf));
    drop(buf);
    let mut small = vec![1u8; 1 << 20];
    let mut m_small = 0f64;
    for _ in 0..8 {
        m_small = m_small.max(mbps(2 << 20, memory_once(&mut small)));
    }
    report("memory", big_mib, m_big, m_small);
    Ok(())
}

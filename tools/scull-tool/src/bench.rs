//! `scull-tool bench`: throughput of the scull devices against the natural
//! baselines, measured side by side in one run. Prints `ratio NAME = X` lines
//! and the MB/s each ratio came from. Never a pass/fail test.
//!
//! - scull_vs_tmpfs_write / _read: sequential 64 MiB through `scull0` against
//!   a file in a tmpfs directory (`/dev/shm` when present, else the temp
//!   directory), 64 KiB buffers; best of 15 alternating rounds (each round's
//!   figures and the median of the rounds' own ratios print as `info:`).
//! - pipe_vs_pipe2: 64 MiB from a writer to a reader through `scullpipe0`
//!   (buffer set to 64 KiB) against an OS pipe of the default size (64 KiB on
//!   Linux); writer and reader are separate processes when the target allows.
//!   Best of 3 alternating rounds.
//! - scale_256m_vs_1m: `scull0` write+read throughput of one 256 MiB file
//!   against a 1 MiB file (best of several).
//! - scull_vs_memory: `scull0`'s 256 MiB overwrite (quanta already
//!   allocated) + read against the same 64 KiB copies into and out of an
//!   already-touched user-space buffer, in the same process: the copy path.
//! - scull_vs_fresh_memory: `scull0`'s 256 MiB fresh write (after a trim) +
//!   read against the same copies into and out of a newly mmap'd anonymous
//!   region (page faults and the kernel's zeroing included), unmapped after
//!   each round. Both best of 3 alternating rounds.
//! - scale_vs_memory: scull0's 256M/1M against plain memory's 256M/1M.
//! - On the `ntsim` target instead (scull.sys, see [`run_wdm`]):
//!   wdm_vs_memcpy (fresh write + read against the fresh mapping),
//!   wdm_scale_256m_vs_1m and the null ioctl round trip.
//!
//! Also printed, for docs/performance.md: the fresh write, overwrite (a
//! second write over allocated quanta) and read rates of each size, and the
//! rate of null ioctl round trips (SCULL_IOCQQUANTUM), the per-call cost that
//! bounds small transfers (under Wine, the wineserver round trip per IRP).

use crate::backend::{OpenOpts, Target};
use scull_core::devices::Dev;
use scull_core::ioctl::Cmd;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const BUF: usize = 64 * 1024;

/// Rounds of the big measurements, alternating scull0 and its baseline, best
/// of each: a load burst on a shared machine then spoils a round, not a ratio.
const ROUNDS: usize = 3;

/// Rounds of the scull0-against-file comparison (64 MiB each way, well under
/// a second a round). Under QEMU TCG on this shared machine both sides' speed
/// moves by 2x in phases lasting seconds; with 5 rounds one side sometimes
/// saw only slow phases (docs/performance.md).
const FILE_ROUNDS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

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

/// Writes `bytes` to `scull0` from its start through a handle opened with `o`.
fn scull_write(t: &dyn Target, o: OpenOpts, buf: &[u8], bytes: usize) -> Result<Duration, String> {
    let mut h = t.open(Dev::Scull(0), o).map_err(|e| format!("open scull0: {e}"))?;
    let start = Instant::now();
    let mut done = 0;
    while done < bytes {
        let n = (bytes - done).min(BUF);
        done += h.write(&buf[..n]).map_err(|e| format!("write scull0: {e}"))?;
    }
    Ok(start.elapsed())
}

/// Writes then reads `bytes` through `scull0`; returns (write, read) durations.
fn scull_io(t: &dyn Target, bytes: usize) -> Result<(Duration, Duration), String> {
    let p = scull_phases(t, bytes, false)?;
    Ok((p.fresh, p.read))
}

/// The phases of one scull0 run: a fresh write (after the trim), optionally an
/// overwrite of the same bytes (quanta already allocated), then the read.
#[derive(Clone, Copy)]
struct Phases {
    fresh: Duration,
    over: Duration,
    read: Duration,
}

fn scull_phases(t: &dyn Target, bytes: usize, overwrite: bool) -> Result<Phases, String> {
    let mut buf = vec![0u8; BUF];
    fill(&mut buf, 1);
    let w = scull_write(t, OpenOpts::TRUNC, &buf, bytes)?;
    // Read-write opens never trim, on either OS.
    let over = if overwrite { scull_write(t, OpenOpts::RW, &buf, bytes)? } else { Duration::ZERO };
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
    Ok(Phases { fresh: w, over, read: r })
}

/// 64 KiB writes filling `big` from a source buffer, then 64 KiB reads out of
/// it: what scull0's write+read does, minus the driver. `big` is already
/// touched (its pages exist), as an allocated scull0 is not.
fn memory_once(big: &mut [u8]) -> (Duration, Duration) {
    let src = vec![0x5Au8; BUF];
    let mut dst = vec![0u8; BUF];
    let start = Instant::now();
    for c in big.chunks_mut(BUF) {
        c.copy_from_slice(&src[..c.len()]);
    }
    let w = start.elapsed();
    let start = Instant::now();
    for c in big.chunks(BUF) {
        dst[..c.len()].copy_from_slice(c);
        std::hint::black_box(&dst);
    }
    (w, start.elapsed())
}

/// Fresh memory, written and read as [`memory_once`] does: a new private
/// anonymous mapping whose every page faults in and is zeroed by the kernel
/// on first write (the mapping call counts as writing), unmapped afterwards.
fn fresh_memory_once(bytes: usize) -> Result<(Duration, Duration), String> {
    let start = Instant::now();
    let mut m = FreshMap::new(bytes)?;
    let setup = start.elapsed();
    let (w, r) = memory_once(m.bytes());
    Ok((setup + w, r))
}

/// A private anonymous mapping, unmapped on drop (elsewhere than Linux, a
/// zeroed heap block of that size, which comes from the OS fresh too).
struct FreshMap {
    #[cfg(target_os = "linux")]
    p: std::ptr::NonNull<u8>,
    #[cfg(target_os = "linux")]
    len: usize,
    #[cfg(not(target_os = "linux"))]
    v: Vec<u8>,
}

impl FreshMap {
    #[cfg(target_os = "linux")]
    fn new(len: usize) -> Result<Self, String> {
        // SAFETY: a new mapping at an address the kernel picks; no memory
        // already in use changes.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap of {len} bytes: {}", std::io::Error::last_os_error()));
        }
        let p = std::ptr::NonNull::new(p.cast()).ok_or("mmap returned null")?;
        Ok(Self { p, len })
    }

    #[cfg(target_os = "linux")]
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `len` readable, writable bytes mapped by `new`, zero-filled
        // (so initialised), owned by `self` until drop; the borrow of `self`
        // keeps the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.p.as_ptr(), self.len) }
    }

    #[cfg(not(target_os = "linux"))]
    fn new(len: usize) -> Result<Self, String> {
        Ok(Self { v: vec![0u8; len] })
    }

    #[cfg(not(target_os = "linux"))]
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.v
    }
}

#[cfg(target_os = "linux")]
impl Drop for FreshMap {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made; no slice of it outlives `self`.
        unsafe { libc::munmap(self.p.as_ptr().cast(), self.len) };
    }
}

/// Plain memory, measured as `scale-reference` measures tmpfs: one `big`-byte
/// run and the best of 8 runs over 1 MiB. Returns write+read MB/s (big, small).
fn memory_scale(big: usize) -> (f64, f64) {
    let mut buf = vec![1u8; big];
    let (w, r) = memory_once(&mut buf);
    drop(buf);
    (mbps(2 * big, w + r), memory_small())
}

/// Plain memory's 1 MiB write+read MB/s, best of 8.
fn memory_small() -> f64 {
    let mut small = vec![1u8; 1 << 20];
    let mut best = 0f64;
    for _ in 0..8 {
        let (w, r) = memory_once(&mut small);
        best = best.max(mbps(2 << 20, w + r));
    }
    best
}

/// Seek-to-0 plus 1-byte read pairs per second, on scull0 and on a file in
/// `dir`: the per-call cost of the driver path against the OS's own file path.
fn small_read_rates(t: &dyn Target, dir: &std::path::Path, calls: usize) -> Result<(f64, f64), String> {
    use std::io::Seek;
    let mut w = t.open(Dev::Scull(0), OpenOpts::TRUNC).map_err(|e| format!("open scull0: {e}"))?;
    w.write(b"x").map_err(|e| format!("write scull0: {e}"))?;
    drop(w);
    let mut h = t.open(Dev::Scull(0), OpenOpts::R).map_err(|e| format!("open scull0: {e}"))?;
    let mut b = [0u8; 1];
    let start = Instant::now();
    for _ in 0..calls {
        h.seek(scull_core::store::Whence::Set, 0).map_err(|e| format!("seek scull0: {e}"))?;
        h.read(&mut b).map_err(|e| format!("read scull0: {e}"))?;
    }
    let scull = calls as f64 / start.elapsed().as_secs_f64().max(1e-9);
    drop(h);
    drop(t.open(Dev::Scull(0), OpenOpts::TRUNC).map_err(|e| format!("trim scull0: {e}"))?);
    let path = dir.join(format!("scull-bench-small-{}", std::process::id()));
    std::fs::write(&path, b"x").map_err(|e| format!("{}: {e}", path.display()))?;
    let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
    let start = Instant::now();
    for _ in 0..calls {
        f.seek(std::io::SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        f.read(&mut b).map_err(|e| e.to_string())?;
    }
    let file = calls as f64 / start.elapsed().as_secs_f64().max(1e-9);
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok((scull, file))
}

/// Null ioctl round trips per second (SCULL_IOCQQUANTUM: no data, one value
/// back), over about `calls` calls.
fn ioctl_rate(t: &dyn Target, calls: usize) -> Result<f64, String> {
    let mut h = t.open(Dev::Scull(0), OpenOpts::R).map_err(|e| format!("open scull0: {e}"))?;
    let start = Instant::now();
    for _ in 0..calls {
        h.ioctl(Cmd::QQuantum, 0).map_err(|e| format!("SCULL_IOCQQUANTUM: {e}"))?;
    }
    Ok(calls as f64 / start.elapsed().as_secs_f64().max(1e-9))
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
    let mut ctl = t.open(Dev::Scull(0), OpenOpts::RW).map_err(|e| format!("open: {e}"))?;
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

/// The best of alternating rounds at the big size: scull0's phases (best by
/// fresh write + read), its best overwrite + read, plain memory in `touched`
/// (when given) and fresh memory, each (write, read).
struct Big {
    scull: Phases,
    over_read: Duration,
    touched: (Duration, Duration),
    fresh_mem: (Duration, Duration),
}

fn big_rounds(t: &dyn Target, mib: usize, overwrite: bool, mut touched: Option<&mut [u8]>) -> Result<Big, String> {
    let big = mib << 20;
    let sum = |d: (Duration, Duration)| d.0 + d.1;
    let mut b = Big {
        scull: Phases { fresh: Duration::MAX, over: Duration::MAX, read: Duration::MAX },
        over_read: Duration::MAX,
        touched: (Duration::MAX, Duration::ZERO),
        fresh_mem: (Duration::MAX, Duration::ZERO),
    };
    for i in 0..ROUNDS {
        let p = scull_phases(t, big, overwrite)?;
        let m = touched.as_deref_mut().map(memory_once);
        let f = fresh_memory_once(big)?;
        let mem = m.map(|m| format!(", memory write {:.1} read {:.1}", mbps(big, m.0), mbps(big, m.1))).unwrap_or_default();
        let over = if overwrite { format!(" overwrite {:.1}", mbps(big, p.over)) } else { String::new() };
        crate::outln!(
            "info: {mib} MiB round {i}: scull0 fresh {:.1}{over} read {:.1}{mem}, fresh memory write {:.1} read {:.1} MB/s",
            mbps(big, p.fresh),
            mbps(big, p.read),
            mbps(big, f.0),
            mbps(big, f.1)
        );
        if p.fresh.saturating_add(p.read) < b.scull.fresh.saturating_add(b.scull.read) {
            b.scull = p;
        }
        b.over_read = b.over_read.min(p.over + p.read);
        if let Some(m) = m.filter(|&m| sum(m) < sum(b.touched)) {
            b.touched = m;
        }
        if sum(f) < sum(b.fresh_mem) {
            b.fresh_mem = f;
        }
    }
    Ok(b)
}

/// scull0's 1 MiB write+read MB/s and its fastest phases, best of 8 each.
fn small_rounds(t: &dyn Target, overwrite: bool) -> Result<(f64, Phases), String> {
    let mut best = 0f64;
    let mut sp = Phases { fresh: Duration::MAX, over: Duration::MAX, read: Duration::MAX };
    for _ in 0..8 {
        let p = scull_phases(t, 1 << 20, overwrite)?;
        best = best.max(mbps(2 << 20, p.fresh + p.read));
        sp = Phases { fresh: sp.fresh.min(p.fresh), over: sp.over.min(p.over), read: sp.read.min(p.read) };
    }
    Ok((best, sp))
}

fn print_ioctl_rate(t: &dyn Target) -> Result<f64, String> {
    let rate = ioctl_rate(t, 20_000)?;
    crate::outln!(
        "null ioctl (SCULL_IOCQQUANTUM) round trips {rate:.0}/s = {:.2} us each; per 64 KiB call that alone caps a stream at {:.0} MB/s",
        1e6 / rate,
        rate * BUF as f64 / 1e6
    );
    Ok(rate)
}

/// ntsim's special pool (a guarded mapping per pool block, fill patterns)
/// on or off: off, pool is the ordinary heap, as without Driver Verifier.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn special_pool(on: bool) {
    ::ntsim::ddi::set_special_pool(on);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn special_pool(_on: bool) {}

/// The `ntsim` target: scull.sys's own figures, the driver and ntsim's
/// I/O manager and Win32 layer in this process, with ntsim's special pool
/// off (its per-block mappings would be most of the time; one set of rounds
/// with it prints as `info:`). The file and pipe comparisons are left out:
/// against the Linux kernel's tmpfs and pipe(2) they say nothing about the
/// driver.
fn run_wdm(t: &dyn Target, o: &Options, tag: &str) -> Result<(), String> {
    crate::outln!("bench on target `{}`: scull.sys through ntsim's Win32 layer, {} MiB, {} KiB calls", t.name(), o.scale_mib, BUF >> 10);
    let _bar = crate::progress::Progress::start("bench", crate::progress::Goal::Open, "");
    let big = o.scale_mib << 20;
    let rate = |b: &Big| (mbps(2 * big, b.scull.fresh + b.scull.read), mbps(2 * big, b.fresh_mem.0 + b.fresh_mem.1));
    let (s, m) = rate(&big_rounds(t, o.scale_mib, false, None)?);
    crate::outln!("info: with ntsim's special pool: wdm_vs_memcpy = {:.2} ({s:.1} / {m:.1} MB/s)", s / m);
    special_pool(false);
    let r = wdm_figures(t, o, tag);
    special_pool(true);
    r
}

fn wdm_figures(t: &dyn Target, o: &Options, tag: &str) -> Result<(), String> {
    let big = o.scale_mib << 20;
    let b = big_rounds(t, o.scale_mib, false, None)?;
    let rate = mbps(2 * big, b.scull.fresh + b.scull.read);
    let m_rate = mbps(2 * big, b.fresh_mem.0 + b.fresh_mem.1);
    crate::outln!("scull0 {} MiB write {:.1} read {:.1} MB/s; memcpy into a fresh mapping {:.1} and back {:.1} MB/s (best of {ROUNDS}, special pool off)", o.scale_mib, mbps(big, b.scull.fresh), mbps(big, b.scull.read), mbps(big, b.fresh_mem.0), mbps(big, b.fresh_mem.1));
    crate::outln!("{tag} wdm_vs_memcpy = {:.2} ({rate:.1} / {m_rate:.1} MB/s)", rate / m_rate);
    let (small, _) = small_rounds(t, false)?;
    crate::outln!("{tag} wdm_scale_256m_vs_1m = {:.2} ({rate:.1} / {small:.1} MB/s, 1 MiB best of 8)", rate / small);
    let ioctl = ioctl_rate(t, 20_000)?;
    crate::outln!("wdm null ioctl round trip = {:.2} us ({ioctl:.0}/s)", 1e6 / ioctl);
    Ok(())
}

pub fn run(t: &dyn Target, o: &Options) -> Result<(), String> {
    let tag = if o.reference { "reference" } else { "ratio" };
    if t.name() == "ntsim" {
        return run_wdm(t, o, tag);
    }
    let bytes = o.mib << 20;
    let dir = o.baseline_dir.clone().unwrap_or_else(default_baseline_dir);
    crate::outln!("bench on target `{}`: {} MiB, {} KiB buffers, baseline dir {}", t.name(), o.mib, BUF >> 10, dir.display());

    // Progress on stderr while the measurements run (a spinner, or a line every 10 s).
    let _bar = crate::progress::Progress::start("bench", crate::progress::Goal::Open, "");
    // Each round's [scull0 write, scull0 read, file write, file read] MB/s.
    let mut rounds: Vec<[f64; 4]> = Vec::new();
    for i in 0..FILE_ROUNDS {
        // Alternate which side goes first, so neither always runs on the
        // pages (and in the cache state) the other just left.
        let (s, f) = if i % 2 == 0 {
            let s = scull_io(t, bytes)?;
            (s, file_io(&dir, bytes)?)
        } else {
            let f = file_io(&dir, bytes)?;
            (scull_io(t, bytes)?, f)
        };
        let r = [s.0, s.1, f.0, f.1].map(|d| mbps(bytes, d));
        crate::outln!("info: round {i}: scull0 write {:.1} read {:.1}, {FILE_LABEL} write {:.1} read {:.1} MB/s", r[0], r[1], r[2], r[3]);
        rounds.push(r);
    }
    let median_ratio = |a: usize, b: usize| median(rounds.iter().map(|r| r[a] / r[b]).collect());
    crate::outln!("info: median of the {FILE_ROUNDS} rounds' own ratios: write {:.2}, read {:.2}", median_ratio(0, 2), median_ratio(1, 3));
    let best = |k: usize| rounds.iter().map(|r| r[k]).fold(0f64, f64::max);
    let (sw, sr, fw, fr) = (best(0), best(1), best(2), best(3));
    crate::outln!("scull0 write {sw:.1} MB/s, {FILE_LABEL} write {fw:.1} MB/s (best of {FILE_ROUNDS} alternating rounds)");
    crate::outln!("{tag} scull_vs_tmpfs_write = {:.2}", sw / fw);
    crate::outln!("scull0 read {sr:.1} MB/s, {FILE_LABEL} read {fr:.1} MB/s");
    crate::outln!("{tag} scull_vs_tmpfs_read = {:.2}", sr / fr);

    let (mut sp, mut op) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        sp = sp.min(scull_pipe(t, bytes)?);
        op = op.min(os_pipe(bytes)?);
    }
    let (sp, op) = (mbps(bytes, sp), mbps(bytes, op));
    crate::outln!("scullpipe0 {sp:.1} MB/s, {PIPE_LABEL} {op:.1} MB/s ({} writer)", if t.caps().processes { "process" } else { "thread" });
    crate::outln!("{tag} pipe_vs_pipe2 = {:.2}", sp / op);

    let big = o.scale_mib << 20;
    // Alternating rounds of scull0 and plain memory at the big size (the
    // touched buffer stays touched across rounds).
    let mut mem_buf = vec![1u8; big];
    let b = big_rounds(t, o.scale_mib, true, Some(&mut mem_buf))?;
    drop(mem_buf);
    let big_rate = mbps(2 * big, b.scull.fresh + b.scull.read);
    let (small_best, sp) = small_rounds(t, true)?;
    crate::outln!("scull0 {} MiB write+read {big_rate:.1} MB/s (best of {ROUNDS}), 1 MiB write+read {small_best:.1} MB/s (best of 8)", o.scale_mib);
    crate::outln!("{tag} scale_256m_vs_1m = {:.2}", big_rate / small_best);
    for (name, bytes, p) in [(format!("{} MiB", o.scale_mib), big, b.scull), ("1 MiB (best of 8 each)".to_string(), 1 << 20, sp)] {
        crate::outln!(
            "scull0 {name}: fresh write {:.1} MB/s, overwrite {:.1} MB/s, read {:.1} MB/s",
            mbps(bytes, p.fresh),
            mbps(bytes, p.over),
            mbps(bytes, p.read)
        );
    }

    let (mw, mr) = b.touched;
    let (m_big, m_small) = (mbps(2 * big, mw + mr), memory_small());
    crate::outln!("memory {} MiB write+read {m_big:.1} MB/s (write {:.1}, read {:.1}), 1 MiB write+read {m_small:.1} MB/s (best of 8)", o.scale_mib, mbps(big, mw), mbps(big, mr));
    let over_rate = mbps(2 * big, b.over_read);
    crate::outln!("{tag} scull_vs_memory = {:.2} (overwrite+read {over_rate:.1} / {m_big:.1} MB/s: quanta and user pages already there)", over_rate / m_big);
    let fm_rate = mbps(2 * big, b.fresh_mem.0 + b.fresh_mem.1);
    crate::outln!("{tag} scull_vs_fresh_memory = {:.2} (fresh write+read {big_rate:.1} / {fm_rate:.1} MB/s: memory newly mapped, faulted in, unmapped after each round)", big_rate / fm_rate);
    crate::outln!("{tag} scale_vs_memory = {:.2} (scull0 {:.2} = {big_rate:.1} / {small_best:.1} MB/s, memory {:.2} = {m_big:.1} / {m_small:.1} MB/s)", (big_rate / small_best) / (m_big / m_small), big_rate / small_best, m_big / m_small);

    print_ioctl_rate(t)?;
    let (scull_small, file_small) = small_read_rates(t, &dir, 20_000)?;
    crate::outln!("1-byte seek+read round trips: scull0 {scull_small:.0}/s, {FILE_LABEL} {file_small:.0}/s");
    Ok(())
}

/// `scull-tool scale-reference`: how the machine itself scales from a 1 MiB to
/// a `big_mib` working set, measured the way [`run`] measures scull0 (64 KiB
/// writes then reads, one big run, best of 8 small runs), for a file in `dir`
/// and for a plain user-space buffer. Reference figures only: they tell what
/// part of `scale_256m_vs_1m` is the memory hierarchy (under QEMU TCG, also its
/// software TLB) rather than the driver.
pub fn scale_reference(dir: &std::path::Path, big_mib: usize) -> Result<(), String> {
    fn report(name: &str, big_mib: usize, big: f64, small: f64) {
        crate::outln!("reference {name}: {big_mib} MiB write+read {big:.1} MB/s, 1 MiB write+read {small:.1} MB/s (best of 8)");
        crate::outln!("reference {name}_256m_vs_1m = {:.2}", big / small);
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
    let (m_big, m_small) = memory_scale(big);
    report("memory", big_mib, m_big, m_small);
    Ok(())
}

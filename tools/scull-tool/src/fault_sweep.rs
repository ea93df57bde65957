//! `scull-tool fault-sweep`: the module's debug fault injection
//! (`/sys/module/scull/parameters/scull_fail_at`, a countdown to the
//! allocation that fails) swept over a workload, k = 1, 2, ... until the
//! workload makes fewer than k allocations. After each run: the injected
//! failure reached user space exactly once (ENOMEM, or a short write count),
//! a failed call changed nothing (size unchanged, pipe still closed),
//! every acknowledged byte reads back intact, and after trimming the
//! outstanding-allocation counter is back at its baseline.

use crate::backend::linux::sys;
use crate::backend::OpenOpts;
use scull_core::devices::Dev;
use scull_core::ioctl::{Cmd, LINUX_STATS_SIZE};
use scull_core::store::Whence;
use scull_core::Error;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

const PARAMS: &str = "/sys/module/scull/parameters";
const FAILSLAB: &str = "/sys/kernel/debug/failslab";

/// What makes the k-th allocation fail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Injector {
    /// scull.ko's own countdown, `scull_fail_at`: the k-th allocation the
    /// module makes fails, and the module counts it in `scull_faults`.
    Module,
    /// The kernel's failslab, armed through this thread's
    /// `/proc/thread-self/fail-nth`: the k-th slab allocation made by this
    /// thread's system calls fails, wherever it is (scull, the VFS's
    /// `struct file`, seq_file buffers, kmemleak's own metadata, which
    /// falls back to its pool silently). Other tasks are never affected.
    Failslab,
}

impl Injector {
    fn label(self) -> &'static str {
        match self {
            Injector::Module => "fault-sweep",
            Injector::Failslab => "failslab-sweep",
        }
    }
}

/// An armed injector: `arm(k)`, run, then `disarm()` says whether the
/// fault was consumed.
enum Arming {
    Module,
    /// The open `fail-nth` file of the sweeping thread.
    Failslab(std::fs::File),
}

impl Arming {
    fn new(inj: Injector) -> Result<Self, String> {
        Ok(match inj {
            Injector::Module => Arming::Module,
            Injector::Failslab => {
                // GFP_KERNEL allocations may sleep; failslab skips them
                // unless told otherwise. No stack dumps: the harness fails
                // a run on any Call Trace.
                for (f, v) in [("ignore-gfp-wait", "N"), ("verbose", "0")] {
                    let p = format!("{FAILSLAB}/{f}");
                    std::fs::write(&p, v).map_err(|e| format!("write {p}: {e} (a kernel with CONFIG_FAILSLAB and debugfs mounted?)"))?;
                }
                let p = "/proc/thread-self/fail-nth";
                let f = std::fs::OpenOptions::new().read(true).write(true).open(p).map_err(|e| format!("{p}: {e} (CONFIG_FAULT_INJECTION?)"))?;
                Arming::Failslab(f)
            }
        })
    }

    fn arm(&self, k: u32) -> Result<(), String> {
        match self {
            Arming::Module => set_param("scull_fail_at", k),
            Arming::Failslab(f) => f.write_at(format!("{k}").as_bytes(), 0).map(drop).map_err(|e| format!("fail-nth: {e}")),
        }
    }

    /// Disarms; true when the armed fault was consumed.
    fn disarm(&self) -> Result<bool, String> {
        let left = match self {
            Arming::Module => param("scull_fail_at")?,
            Arming::Failslab(f) => {
                let mut b = [0u8; 16];
                let n = f.read_at(&mut b, 0).map_err(|e| format!("fail-nth: {e}"))?;
                String::from_utf8_lossy(&b[..n]).trim().parse::<i64>().map_err(|e| format!("fail-nth: {e}"))?
            }
        };
        self.arm(0)?;
        Ok(left == 0)
    }
}
/// The store and pipe the workload uses.
const STORE: Dev = Dev::Scull(1);
const PIPE: Dev = Dev::Pipe(1);

fn param(name: &str) -> Result<i64, String> {
    let p = format!("{PARAMS}/{name}");
    let s = std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"))?;
    s.trim().parse().map_err(|e| format!("{p}: {s:?}: {e}"))
}

fn set_param(name: &str, v: u32) -> Result<(), String> {
    let p = format!("{PARAMS}/{name}");
    std::fs::write(&p, format!("{v}\n")).map_err(|e| format!("write {p}: {e}"))
}

/// What one run saw.
#[derive(Default)]
struct Seen {
    enomem: u32,
    short: u32,
    problems: Vec<String>,
}

fn size(fd: i32) -> Result<u64, String> {
    sys::seek(fd, Whence::End, 0).map_err(|e| format!("SEEK_END: {e}"))
}

fn pattern(off: u64, len: usize, k: u32) -> Vec<u8> {
    (0..len as u64).map(|i| ((off + i).wrapping_mul(2654435761) >> 13) as u8 ^ k as u8).collect()
}

/// Writes `data` at `off`, retrying after ENOMEM and continuing after a
/// short count; checks that a failed write left the size as it was and a
/// short one covered what it acknowledged.
fn write_all(fd: i32, off: u64, data: &[u8], seen: &mut Seen) -> Result<(), String> {
    let mut at = 0usize;
    let mut tries = 0;
    while at < data.len() {
        tries += 1;
        if tries > 10 {
            return Err(format!("write at {off}: no progress after {tries} tries"));
        }
        let pos = off + at as u64;
        let before = size(fd)?;
        sys::seek(fd, Whence::Set, pos as i64).map_err(|e| format!("seek: {e}"))?;
        match sys::write(fd, &data[at..]) {
            Ok(n) => {
                if n < data.len() - at {
                    seen.short += 1;
                    let after = size(fd)?;
                    if after < pos + n as u64 {
                        seen.problems.push(format!("short write of {n} at {pos}: size {after} does not cover it"));
                    }
                }
                at += n;
            }
            Err(Error::NoMemory) => {
                seen.enomem += 1;
                let after = size(fd)?;
                if after != before {
                    seen.problems.push(format!("ENOMEM write at {pos}: size changed {before} -> {after}"));
                }
            }
            Err(e) => return Err(format!("write at {pos}: {e} (only ENOMEM or a short count may come of a failed allocation)")),
        }
    }
    Ok(())
}

fn read_back(fd: i32, off: u64, want: &[u8]) -> Result<bool, String> {
    sys::seek(fd, Whence::Set, off as i64).map_err(|e| format!("seek: {e}"))?;
    let mut got = vec![0u8; want.len()];
    let mut at = 0;
    while at < got.len() {
        let n = sys::read(fd, &mut got[at..]).map_err(|e| format!("read at {}: {e}", off + at as u64))?;
        if n == 0 {
            break;
        }
        at += n;
    }
    Ok(at == want.len() && got == want)
}

/// One run of the workload with the fault armed at `k`.
fn workload(k: u32, quantum: u64, qset: u64) -> Result<Seen, String> {
    let mut seen = Seen::default();
    let qbytes = quantum * qset;
    // Pieces: the start (several quanta), across a qset boundary, far away
    // (a new sparse qset), and an overwrite that needs no allocation.
    let pieces = [
        (0u64, (2 * quantum + 1) as usize),
        (qbytes - 2 * quantum - 100, (5 * quantum + 200) as usize),
        (3 * qbytes - 7, (2 * qbytes + quantum) as usize),
        (10 * qbytes + 17, (3 * quantum) as usize),
        (quantum / 2, quantum as usize),
    ];
    let opts = OpenOpts { read: true, write: true, nonblock: false, truncate: true };
    // Under failslab the open itself may fail (the VFS allocates a file).
    let fd = loop {
        match sys::open(STORE, opts) {
            Ok(fd) => break fd,
            Err(Error::NoMemory) if seen.enomem + seen.short < 8 => seen.enomem += 1,
            Err(e) => return Err(format!("open {STORE:?}: {e}")),
        }
    };
    let fd = fd.as_raw_fd();
    let mut shadow: Vec<(u64, Vec<u8>)> = Vec::new();
    for (i, &(off, len)) in pieces.iter().enumerate() {
        let data = pattern(off, len, k + i as u32);
        write_all(fd, off, &data, &mut seen)?;
        // A later piece overwrites earlier bytes: keep the shadow exact.
        for (o, d) in shadow.iter_mut() {
            for (j, b) in d.iter_mut().enumerate() {
                let p = *o + j as u64;
                if p >= off && p < off + len as u64 {
                    *b = data[(p - off) as usize];
                }
            }
        }
        shadow.push((off, data));
    }
    for (off, want) in &shadow {
        if !read_back(fd, *off, want)? {
            seen.problems.push(format!("k={k}: acknowledged bytes at {off}..{} lost or corrupt", off + want.len() as u64));
        }
    }
    let end = pieces.iter().map(|(o, l)| o + *l as u64).max().unwrap_or(0);
    let sz = size(fd)?;
    if sz != end {
        seen.problems.push(format!("k={k}: size {sz}, expected {end}"));
    }
    // STATS allocates its text buffer.
    loop {
        match sys::ioctl_raw(fd, Cmd::Stats.linux_code(), &[], LINUX_STATS_SIZE as usize) {
            Ok(_) => break,
            Err(Error::NoMemory) if seen.enomem + seen.short < 8 => seen.enomem += 1,
            Err(e) => return Err(format!("STATS: {e}")),
        }
    }
    // The pipe's buffer is allocated by the first open.
    let p = loop {
        match sys::open(PIPE, OpenOpts::RW.nonblocking()) {
            Ok(p) => break p,
            Err(Error::NoMemory) if seen.enomem + seen.short < 8 => {
                seen.enomem += 1;
                let rep = std::fs::read_to_string("/proc/scullpipe").unwrap_or_default();
                let line = rep.lines().find(|l| l.starts_with("scullpipe1 ")).unwrap_or("");
                if scull_core::report::field(line, "buffer") != Some("0") {
                    seen.problems.push(format!("k={k}: a failed pipe open left a buffer: {line}"));
                }
            }
            Err(e) => return Err(format!("open {PIPE:?}: {e}")),
        }
    };
    let msg = format!("fault sweep k={k}");
    let n = sys::write(p.as_raw_fd(), msg.as_bytes()).map_err(|e| format!("pipe write: {e}"))?;
    let mut b = [0u8; 64];
    let m = sys::read(p.as_raw_fd(), &mut b).map_err(|e| format!("pipe read: {e}"))?;
    if n != msg.len() || &b[..m] != msg.as_bytes() {
        seen.problems.push(format!("k={k}: pipe round trip {:?}", String::from_utf8_lossy(&b[..m])));
    }
    Ok(seen)
}

fn trim() -> Result<(), String> {
    drop(sys::open(STORE, OpenOpts::TRUNC).map_err(|e| format!("trim {STORE:?}: {e}"))?);
    Ok(())
}

/// The sweep's geometry: small, so the workload makes many allocations.
const QUANTUM: i32 = 512;
const QSET: i32 = 16;

fn geometry(q: i32, s: i32) -> Result<(i32, i32), String> {
    let fd = sys::open(STORE, OpenOpts::R).map_err(|e| format!("open: {e}"))?;
    let fd = fd.as_raw_fd();
    let old_q = sys::ioctl(fd, Cmd::QQuantum, 0).map_err(|e| format!("QQUANTUM: {e}"))?;
    let old_s = sys::ioctl(fd, Cmd::QQset, 0).map_err(|e| format!("QQSET: {e}"))?;
    sys::ioctl(fd, Cmd::TQuantum, q).map_err(|e| format!("TQUANTUM: {e}"))?;
    sys::ioctl(fd, Cmd::TQset, s).map_err(|e| format!("TQSET: {e}"))?;
    Ok((old_q, old_s))
}

/// Runs the sweep; Ok(true) when every check held.
pub fn run(max_k: u32, inj: Injector) -> Result<bool, String> {
    set_param("scull_fail_at", 0)?;
    let (old_q, old_s) = geometry(QUANTUM, QSET)?;
    let r = Arming::new(inj).and_then(|a| sweep(max_k, inj, &a));
    geometry(old_q, old_s)?;
    trim()?;
    r
}

fn sweep(max_k: u32, inj: Injector, arming: &Arming) -> Result<bool, String> {
    let label = inj.label();
    trim()?;
    if inj == Injector::Failslab {
        // One unarmed run first, so this process's own heap has grown to
        // its working size before slab allocations start failing.
        let warm = workload(0, QUANTUM as u64, QSET as u64)?;
        trim()?;
        if !warm.problems.is_empty() || warm.enomem + warm.short != 0 {
            return Err(format!("{label}: the unarmed run failed: {:?}", warm.problems));
        }
    }
    let baseline = param("scull_outstanding")?;
    let faults0 = param("scull_faults")?;
    let (quantum, qset) = (QUANTUM as u64, QSET as u64);
    crate::outln!("{label}: quantum={quantum} qset={qset}, outstanding allocations at baseline: {baseline}");
    let mut problems: Vec<String> = Vec::new();
    let (mut injected, mut enomem, mut short, mut leaks, mut silent) = (0u32, 0u32, 0u32, 0u32, 0u32);
    let mut k = 1;
    let mut exhausted = false;
    // No progress ticker under failslab: its thread's allocations would
    // make this thread's heap grow (mmap) while a fault is armed, and a
    // failed mmap aborts the tool instead of testing the module.
    let bar = (inj == Injector::Module).then(|| crate::progress::Progress::start(label, crate::progress::Goal::Open, "faults injected"));
    while k <= max_k {
        if let Some(b) = &bar {
            b.set(u64::from(k - 1));
        }
        arming.arm(k)?;
        let seen = workload(k, quantum, qset);
        let consumed = arming.disarm()?;
        let seen = seen?;
        trim()?;
        let out = param("scull_outstanding")?;
        if out != baseline {
            leaks += 1;
            problems.push(format!("k={k}: {out} allocations outstanding after trim (baseline {baseline})"));
        }
        problems.extend(seen.problems);
        enomem += seen.enomem;
        short += seen.short;
        if !consumed {
            // Fewer than k allocations in the workload: the sweep is complete.
            if seen.enomem + seen.short != 0 {
                problems.push(format!("k={k}: the fault was not consumed, yet {} failures were seen", seen.enomem + seen.short));
            }
            exhausted = true;
            break;
        }
        injected += 1;
        let surfaced = seen.enomem + seen.short;
        // The module reports every failure it makes. A failed slab
        // allocation may also be absorbed inside the kernel (kmemleak's
        // metadata pool, a retry), but never reported twice.
        let expected = match inj {
            Injector::Module => surfaced == 1,
            Injector::Failslab => surfaced <= 1,
        };
        if surfaced == 0 {
            silent += 1;
        }
        if !expected {
            problems.push(format!("k={k}: one allocation failed but user space saw {} ENOMEM and {} short counts", seen.enomem, seen.short));
        }
        k += 1;
    }
    drop(bar);
    let faults = param("scull_faults")? - faults0;
    let want_faults = if inj == Injector::Module { injected as i64 } else { 0 };
    if faults != want_faults {
        problems.push(format!("scull_faults rose by {faults}, expected {want_faults} ({injected} faults injected by {inj:?})"));
    }
    if injected < 10 {
        problems.push(format!("only {injected} faults were injected: the workload or the injection is broken"));
    }
    if !exhausted {
        problems.push(format!("the workload still allocated at k={max_k}: raise --max-k"));
    }
    for p in &problems {
        crate::outln!("{label}: FAIL {p}");
    }
    crate::outln!(
        "{label}: k=1..{injected}: {injected} allocations failed, user space saw {enomem} ENOMEM and {short} short writes ({silent} absorbed in the kernel); k={}: no allocation left to fail; {} problems, {leaks} leaks",
        injected + 1,
        problems.len()
    );
    let ok = problems.is_empty();
    crate::outln!("{label}: {}", if ok { "0 lost, 0 corrupt, 0 leaked" } else { "FAILED" });
    Ok(ok)
}

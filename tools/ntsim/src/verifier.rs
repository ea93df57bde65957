//! The verifier's bookkeeping: every check by name with how many times it
//! ran and stopped, the lock-order graph (Driver Verifier's deadlock
//! detection), the time each thread spends at DISPATCH_LEVEL (a DPC
//! watchdog), contention counters and seeded yields at DDI boundaries.
//!
//! A check runs where its rule applies (`Check::test`) and stops the run
//! with the Windows bugcheck name (`Check::stop`); the stop line ends with
//! `[check <id>]`, so a planted bug can be shown to be caught by the check
//! meant for it. `NTSIM_DISABLE_CHECK=<id>[,<id>]` turns checks off (to
//! show that a planted bug is then missed). With `NTSIM_REPORT=<file>`,
//! the counts are appended to the file when the process exits.

use crate::kernel::bugcheck;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One named check.
pub struct Check {
    pub id: &'static str,
    ran: AtomicU64,
    stops: AtomicU64,
}

impl Check {
    const fn new(id: &'static str) -> Check {
        Check {
            id,
            ran: AtomicU64::new(0),
            stops: AtomicU64::new(0),
        }
    }

    /// Counts one run of the check; true when `bad` and the check is on.
    #[inline]
    pub fn test(&self, bad: bool) -> bool {
        self.ran.fetch_add(1, Ordering::Relaxed);
        bad && !disabled(self.id)
    }

    /// Stops the run: the bugcheck, naming this check.
    pub fn stop(&self, name: &str, code: u32, params: [usize; 4], what: &str) -> ! {
        self.stops.fetch_add(1, Ordering::Relaxed);
        bugcheck(name, code, params, &format!("{what} [check {}]", self.id))
    }

    pub fn ran(&self) -> u64 {
        self.ran.load(Ordering::Relaxed)
    }
}

macro_rules! checks {
    ($($name:ident = $id:literal),* $(,)?) => {
        $(pub static $name: Check = Check::new($id);)*
        /// Every check, in report order.
        pub static ALL: &[&Check] = &[$(&$name),*];
    };
}

checks! {
    IRQL_DDI = "irql.ddi",
    IRQL_LOWER = "irql.lower",
    IRQL_RETURN = "irql.return",
    DPC_WATCHDOG = "irql.dpc_watchdog",
    SPIN_OWNER = "spin.owner",
    SPIN_RETURN = "spin.return",
    CRITICAL_REGION = "critical.balance",
    SEM_LIMIT = "sem.limit",
    LOCK_ORDER = "deadlock.lock_order",
    POOL_SPECIAL = "pool.special",
    POOL_TAG = "pool.tag",
    POOL_FREE = "pool.free",
    POOL_UNLOAD = "pool.unload",
    IO_COMPLETE_ONCE = "io.complete_once",
    IO_COMPLETE_UNLOCKED = "io.complete_unlocked",
    IO_CANCEL_ROUTINE = "io.cancel_routine",
    IO_PENDING = "io.pending",
    IO_STATUS = "io.status",
    IO_INFORMATION = "io.information",
    IO_CLEANUP_DRAIN = "io.cleanup_drain",
    IO_CLEANUP_CLOSE = "io.cleanup_close",
    IO_CANCEL_LOCK = "io.cancel_lock",
    UNLOAD_PENDING = "unload.pending",
    ENTRY_FAILED_CLEAN = "entry.failed_clean",
    HANDLE_KERNEL = "handle.kernel",
    OBJECT_KNOWN = "object.known",
}

fn disabled(id: &str) -> bool {
    static OFF: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    OFF.get_or_init(|| {
        std::env::var("NTSIM_DISABLE_CHECK")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .iter()
    .any(|s| s == id)
}

// ---------------------------------------------------------------- contention, yields

pub static SPIN_CONTENDED: AtomicU64 = AtomicU64::new(0);
pub static SEM_CONTENDED: AtomicU64 = AtomicU64::new(0);
pub static YIELDS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// At a DDI boundary: with `NTSIM_YIELD_SEED` set, this thread yields its
/// processor at random (one call in four, a per-thread sequence from the
/// seed), so threads interleave where they rarely would.
pub fn maybe_yield() {
    static SEED: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let Some(seed) = *SEED.get_or_init(|| {
        std::env::var("NTSIM_YIELD_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
    }) else {
        return;
    };
    let r = RNG.with(|c| {
        let mut x = c.get();
        if x == 0 {
            x = seed ^ (crate::kernel::thread_id() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        x
    });
    if r & 3 == 0 {
        YIELDS.fetch_add(1, Ordering::Relaxed);
        std::thread::yield_now();
    }
}

// ---------------------------------------------------------------- DPC watchdog

/// The longest a thread may stay at DISPATCH_LEVEL or above, in thread CPU
/// time (see docs/ntsim.md for the choice).
pub const DPC_BOUND_NS: u64 = 1_000_000;
static DPC_MAX_NS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// CPU time when this thread rose to DISPATCH_LEVEL, and time spent
    /// spinning for locks since (not the holder's work).
    static DPC_START: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// This thread's CPU time in nanoseconds (preemption does not count: ntsim
/// cannot stop Linux from descheduling a thread "at DISPATCH_LEVEL").
pub fn cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The IRQL changes from `old` to `new` on this thread.
pub fn irql_changed(old: u8, new: u8) {
    const D: u8 = crate::kernel::DISPATCH_LEVEL;
    if old < D && new >= D {
        DPC_START.with(|c| c.set((cpu_ns(), 0)));
    } else if old >= D && new < D {
        let (start, spun) = DPC_START.with(|c| c.get());
        let t = cpu_ns().saturating_sub(start).saturating_sub(spun);
        DPC_MAX_NS.fetch_max(t, Ordering::Relaxed);
        if DPC_WATCHDOG.test(t > DPC_BOUND_NS) {
            DPC_WATCHDOG.stop(
                "DPC_WATCHDOG_VIOLATION",
                0x133,
                [0, (t / 1000) as usize, (DPC_BOUND_NS / 1000) as usize, 0],
                &format!(
                    "{} us of CPU time at DISPATCH_LEVEL (bound {} us)",
                    t / 1000,
                    DPC_BOUND_NS / 1000
                ),
            );
        }
    }
}

/// Time spent spinning for a lock at DISPATCH_LEVEL (not counted as work).
pub fn spun(ns: u64) {
    DPC_START.with(|c| {
        let (s, n) = c.get();
        c.set((s, n + ns));
    });
}

// ---------------------------------------------------------------- lock order

thread_local! {
    /// Locks (spin locks, and semaphores used as mutexes) this thread holds, in order.
    static ORDER: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// held -> acquired edges seen on any thread.
static GRAPH: Mutex<Option<HashMap<usize, HashSet<usize>>>> = Mutex::new(None);

fn reaches(g: &HashMap<usize, HashSet<usize>>, from: usize, to: usize) -> bool {
    let mut seen = HashSet::new();
    let mut stack = vec![from];
    while let Some(n) = stack.pop() {
        if n == to {
            return true;
        }
        if seen.insert(n) {
            stack.extend(g.get(&n).into_iter().flatten().copied());
        }
    }
    false
}

/// This thread is about to acquire `lock` (`what`: the DDI): adds the
/// edges from every lock it holds, and stops the run when one closes a
/// cycle (two threads taking the same locks in opposite orders can
/// deadlock, whether or not they did this time).
pub fn acquiring(lock: usize, what: &str) {
    let held = ORDER.with(|o| o.borrow().clone());
    let mut g = GRAPH.lock().unwrap();
    let g = g.get_or_insert_with(HashMap::new);
    let cycle = held.iter().copied().find(|&h| {
        h != lock && !g.get(&h).is_some_and(|s| s.contains(&lock)) && reaches(g, lock, h)
    });
    if LOCK_ORDER.test(cycle.is_some()) {
        let h = cycle.unwrap_or_default();
        LOCK_ORDER.stop(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            0xC4,
            [0x1001, lock, h, 0],
            &format!("deadlock detection: {what} takes lock {lock:#x} while holding {h:#x}, and another path took them in the opposite order"),
        );
    }
    for h in held.into_iter().filter(|&h| h != lock) {
        g.entry(h).or_default().insert(lock);
    }
}

pub fn acquired(lock: usize) {
    ORDER.with(|o| o.borrow_mut().push(lock));
}

pub fn released(lock: usize) {
    ORDER.with(|o| {
        let mut o = o.borrow_mut();
        if let Some(i) = o.iter().rposition(|&l| l == lock) {
            o.remove(i);
        }
    });
}

/// Memory at [base, base+len) was freed: locks in it are gone.
pub fn forget_range(base: usize, len: usize) {
    let mut g = GRAPH.lock().unwrap();
    if let Some(g) = g.as_mut() {
        let gone = |a: &usize| *a >= base && *a < base + len;
        g.retain(|k, _| !gone(k));
        for s in g.values_mut() {
            s.retain(|a| !gone(a));
        }
    }
}

/// A new run: no edges.
pub fn reset() {
    *GRAPH.lock().unwrap() = None;
}

// ---------------------------------------------------------------- the report

/// The report: every check with its counts, the contention and the
/// longest time at DISPATCH_LEVEL.
pub fn report() -> Vec<String> {
    let mut v: Vec<String> = ALL
        .iter()
        .map(|c| {
            format!(
                "check {} ran {} times, {} stops",
                c.id,
                c.ran(),
                c.stops.load(Ordering::Relaxed)
            )
        })
        .collect();
    v.push(format!(
        "contention {} spin {} semaphore {} yields",
        SPIN_CONTENDED.load(Ordering::Relaxed),
        SEM_CONTENDED.load(Ordering::Relaxed),
        YIELDS.load(Ordering::Relaxed)
    ));
    v.push(format!(
        "dispatch_level max {} us bound {} us",
        DPC_MAX_NS.load(Ordering::Relaxed) / 1000,
        DPC_BOUND_NS / 1000
    ));
    v
}

extern "C" fn write_report() {
    if let Some(path) = std::env::var_os("NTSIM_REPORT") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{}", report().join("\n"));
        }
    }
}

/// With `NTSIM_REPORT` set, appends [`report`] to that file at process exit.
pub fn report_at_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that takes no arguments and returns.
        unsafe { libc::atexit(write_report) };
    });
}

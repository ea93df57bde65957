//! Store geometry (quantum and qset sizes, and the size cap), pipe buffer
//! size, and the global defaults that LDD3 keeps in module parameters and that
//! the ioctls change.

use core::num::NonZeroU64;

use crate::devices::Table;
use crate::error::{Error, Result};
use crate::sync::{AtomicI32, AtomicU64, Ordering};

/// LDD3's defaults.
pub const DEFAULT_QUANTUM: i32 = 4000;
pub const DEFAULT_QSET: i32 = 1000;
pub const DEFAULT_P_BUFFER: i32 = 4000;
pub const DEFAULT_NR_DEVS: i32 = 4;
pub const DEFAULT_P_NR_DEVS: i32 = 4;

/// Largest quantum: 4 MiB, the largest block `kmalloc` hands out by default and a
/// sane ceiling for one non-paged pool allocation.
pub const MAX_QUANTUM: i32 = 4 << 20;
/// Largest qset: its slot array (one pointer per quantum) stays within 4 MiB
/// on 64-bit kernels, the same ceiling as a quantum.
pub const MAX_QSET: i32 = 1 << 19;
/// Largest pipe buffer, for the same reason as the quantum.
pub const MAX_P_BUFFER: i32 = 4 << 20;
/// Smallest pipe buffer: the ring keeps one slot free, so 2 bytes hold 1.
pub const MIN_P_BUFFER: i32 = 2;
/// Upper bound on device counts accepted from parameters.
pub const MAX_NR_DEVS: i32 = 64;

/// The largest byte offset plus one that a scull device can hold (`loff_t` max).
pub const MAX_SIZE: u64 = i64::MAX as u64;

/// Default per-device size cap (`scull_max_size`): 512 MiB, twice what the
/// benchmark's scaling step stores in one device. A write at or past the cap
/// is `FileTooBig`; one that crosses it is cut short at the cap (as POSIX
/// writes are at RLIMIT_FSIZE). LDD3 had no cap: any user of the 0666 nodes
/// could fill kernel memory.
pub const DEFAULT_MAX_SIZE: u64 = 512 << 20;

/// Validates a `scull_max_size` value: 1 byte up to [`MAX_SIZE`] (0 would be
/// a device that holds nothing, so it is refused rather than meaning
/// "unbounded").
pub fn max_size(size: u64) -> Result<u64> {
    if size == 0 || size > MAX_SIZE {
        return Err(Error::Invalid);
    }
    Ok(size)
}

/// A validated (quantum, qset) pair and the size cap that goes with it.
///
/// Both are positive, `quantum <= MAX_QUANTUM`, `qset <= MAX_QSET` (each is
/// one kernel allocation), and `quantum * qset` fits in an `i32`, which is the
/// type LDD3 computes `itemsize` in: products that would overflow it are
/// rejected instead of silently wrapping. The cap (`scull_max_size`) rides
/// along so that every store created or trimmed from [`Params::geometry`]
/// gets it; it is a load-time value, never changed by an ioctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    quantum: u32,
    qset: u32,
    max_size: u64,
}

impl Geometry {
    pub const DEFAULT: Geometry =
        Geometry { quantum: DEFAULT_QUANTUM as u32, qset: DEFAULT_QSET as u32, max_size: DEFAULT_MAX_SIZE };

    /// Validates a geometry.
    pub fn new(quantum: i64, qset: i64) -> Result<Geometry> {
        if quantum <= 0 || qset <= 0 || quantum > MAX_QUANTUM as i64 || qset > MAX_QSET as i64 {
            return Err(Error::Invalid);
        }
        match quantum.checked_mul(qset) {
            Some(span) if span <= i32::MAX as i64 => {
                Ok(Geometry { quantum: quantum as u32, qset: qset as u32, max_size: DEFAULT_MAX_SIZE })
            }
            _ => Err(Error::Invalid),
        }
    }

    /// The same geometry with another size cap (validated by [`max_size`]).
    pub fn with_max_size(self, size: u64) -> Result<Geometry> {
        Ok(Geometry { max_size: max_size(size)?, ..self })
    }

    /// One past the largest byte offset a store with this geometry holds.
    pub const fn max_size(self) -> u64 {
        self.max_size
    }

    /// Bytes per quantum.
    pub const fn quantum(self) -> usize {
        self.quantum as usize
    }

    /// Quanta per qset.
    pub const fn qset(self) -> usize {
        self.qset as usize
    }

    /// Bytes covered by one qset.
    pub const fn span(self) -> u64 {
        self.quantum as u64 * self.qset as u64
    }

    /// Where byte `pos` lives: (qset index, slot in that qset, offset in the quantum).
    pub fn locate(self, pos: u64) -> (u64, usize, usize) {
        // Both are at least 1 ([`Geometry::new`]). Dividing by NonZeroU64 has
        // no division-by-zero panic path: in the kernel build objtool reported
        // that path's call as falling through into the next function.
        let quantum = NonZeroU64::new(u64::from(self.quantum)).unwrap_or(NonZeroU64::MIN);
        let qset = NonZeroU64::new(u64::from(self.qset)).unwrap_or(NonZeroU64::MIN);
        // Two u32 factors: the product cannot saturate.
        let span = quantum.saturating_mul(qset);
        let rest = pos % span;
        (pos / span, (rest / quantum) as usize, (rest % quantum) as usize)
    }

    fn pack(self) -> u64 {
        ((self.quantum as u64) << 32) | self.qset as u64
    }

    /// The pair only: the cap is kept apart (see [`Params`]).
    fn unpack(v: u64, max_size: u64) -> Geometry {
        Geometry { quantum: (v >> 32) as u32, qset: v as u32, max_size }
    }
}

impl Default for Geometry {
    fn default() -> Self {
        Geometry::DEFAULT
    }
}

/// Validates a pipe buffer size in bytes.
pub fn pipe_buffer_size(size: i64) -> Result<usize> {
    if size < MIN_P_BUFFER as i64 || size > MAX_P_BUFFER as i64 {
        return Err(Error::Invalid);
    }
    Ok(size as usize)
}

/// Validates a device count parameter (0 is allowed: no devices of that kind).
pub fn nr_devs(n: i64) -> Result<usize> {
    if n < 0 || n > MAX_NR_DEVS as i64 {
        return Err(Error::Invalid);
    }
    Ok(n as usize)
}

/// The global defaults: LDD3's `scull_quantum`, `scull_qset` and
/// `scull_p_buffer`. Devices pick the geometry up when they are trimmed, pipes
/// pick the buffer size up when their buffer is next allocated.
///
/// Quantum and qset live in one atomic so that a reader always sees a pair that
/// was validated together. The size cap is set once at load (module parameter
/// / registry value `scull_max_size`) and never changes after.
#[derive(Debug)]
pub struct Params {
    geometry: AtomicU64,
    p_buffer: AtomicI32,
    max_size: AtomicU64,
}

impl Params {
    /// Parameters with LDD3's defaults.
    #[cfg(not(loom))]
    pub const fn new() -> Params {
        Params {
            geometry: AtomicU64::new(((DEFAULT_QUANTUM as u64) << 32) | DEFAULT_QSET as u64),
            p_buffer: AtomicI32::new(DEFAULT_P_BUFFER),
            max_size: AtomicU64::new(DEFAULT_MAX_SIZE),
        }
    }

    /// Parameters with LDD3's defaults.
    #[cfg(loom)]
    pub fn new() -> Params {
        Params {
            geometry: AtomicU64::new(((DEFAULT_QUANTUM as u64) << 32) | DEFAULT_QSET as u64),
            p_buffer: AtomicI32::new(DEFAULT_P_BUFFER),
            max_size: AtomicU64::new(DEFAULT_MAX_SIZE),
        }
    }

    /// Load-time parameters (module parameters / registry values), validated.
    pub fn with(quantum: i64, qset: i64, p_buffer: i64) -> Result<Params> {
        let g = Geometry::new(quantum, qset)?;
        let p = pipe_buffer_size(p_buffer)?;
        let params = Params::new();
        params.geometry.store(g.pack(), Ordering::Relaxed);
        params.p_buffer.store(p as i32, Ordering::Relaxed);
        Ok(params)
    }

    /// Sets the load-time size cap (`scull_max_size`), validated. Call it
    /// before the first device exists: stores take the cap when they are
    /// created or trimmed.
    pub fn set_max_size(&self, size: u64) -> Result<()> {
        self.max_size.store(max_size(size)?, Ordering::Release);
        Ok(())
    }

    /// The per-device size cap.
    pub fn max_size(&self) -> u64 {
        self.max_size.load(Ordering::Acquire)
    }

    /// The current default geometry (with the size cap).
    pub fn geometry(&self) -> Geometry {
        Geometry::unpack(self.geometry.load(Ordering::Acquire), self.max_size())
    }

    pub fn quantum(&self) -> i32 {
        self.geometry().quantum as i32
    }

    pub fn qset(&self) -> i32 {
        self.geometry().qset as i32
    }

    pub fn p_buffer(&self) -> i32 {
        self.p_buffer.load(Ordering::Acquire)
    }

    /// Atomically replaces the geometry with `f(current)`, returning the old one.
    pub fn update_geometry(&self, f: impl Fn(Geometry) -> Result<Geometry>) -> Result<Geometry> {
        let mut cur = self.geometry.load(Ordering::Acquire);
        loop {
            let old = Geometry::unpack(cur, self.max_size());
            let new = f(old)?;
            match self.geometry.compare_exchange_weak(cur, new.pack(), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(old),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Sets the quantum, keeping qset; returns the old quantum.
    pub fn set_quantum(&self, quantum: i64) -> Result<i32> {
        self.update_geometry(|g| Geometry::new(quantum, g.qset as i64)).map(|g| g.quantum as i32)
    }

    /// Sets the qset, keeping the quantum; returns the old qset.
    pub fn set_qset(&self, qset: i64) -> Result<i32> {
        self.update_geometry(|g| Geometry::new(g.quantum as i64, qset)).map(|g| g.qset as i32)
    }

    /// Restores LDD3's default quantum and qset (not the pipe size, as LDD3).
    pub fn reset(&self) {
        self.geometry.store(Geometry::DEFAULT.pack(), Ordering::Release);
    }

    /// Sets the pipe buffer size used for the next allocation; returns the old one.
    pub fn set_p_buffer(&self, size: i64) -> Result<i32> {
        let s = pipe_buffer_size(size)? as i32;
        Ok(self.p_buffer.swap(s, Ordering::AcqRel))
    }
}

impl Default for Params {
    fn default() -> Self {
        Params::new()
    }
}

/// A refused load parameter: its name and the value given. Both kernels
/// log the refusal with this text (`Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadParam {
    pub name: &'static str,
    pub value: i128,
}

impl core::fmt::Display for BadParam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "bad parameter {}={}; not loading", self.name, self.value)
    }
}

/// The load parameters as given (module parameters on Linux, registry
/// values on Windows); `None` keeps LDD3's default.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadParams {
    pub quantum: Option<i64>,
    pub qset: Option<i64>,
    pub p_buffer: Option<i64>,
    pub nr_devs: Option<i64>,
    pub p_nr_devs: Option<i64>,
    pub max_size: Option<u64>,
    /// `scull_max_total`: the store bytes of all devices together (the
    /// Windows driver's budget; Linux charges quanta to the writer's memory
    /// cgroup instead and leaves it `None`).
    pub max_total: Option<u64>,
}

impl LoadParams {
    /// Checks every value, naming the first bad one, and only then installs
    /// them in `params` (still untouched on error). Returns the device table.
    pub fn apply(&self, params: &Params) -> core::result::Result<Table, BadParam> {
        let bad = |name, value: i128| move |_| BadParam { name, value };
        let q = self.quantum.unwrap_or(DEFAULT_QUANTUM as i64);
        let s = self.qset.unwrap_or(DEFAULT_QSET as i64);
        Geometry::new(q, 1).map_err(bad("scull_quantum", q.into()))?;
        Geometry::new(1, s).map_err(bad("scull_qset", s.into()))?;
        let g = Geometry::new(q, s).map_err(bad("scull_quantum*scull_qset", i128::from(q) * i128::from(s)))?;
        let b = self.p_buffer.unwrap_or(DEFAULT_P_BUFFER as i64);
        pipe_buffer_size(b).map_err(bad("scull_p_buffer", b.into()))?;
        let n = self.nr_devs.unwrap_or(DEFAULT_NR_DEVS as i64);
        let scull = nr_devs(n).map_err(bad("scull_nr_devs", n.into()))? as u8;
        let n = self.p_nr_devs.unwrap_or(DEFAULT_P_NR_DEVS as i64);
        let pipes = nr_devs(n).map_err(bad("scull_p_nr_devs", n.into()))? as u8;
        let m = self.max_size.unwrap_or(DEFAULT_MAX_SIZE);
        let t = self.max_total();
        crate::budget::max_total(t).map_err(bad("scull_max_total", t.into()))?;
        params.set_max_size(m).map_err(bad("scull_max_size", m.into()))?;
        params.geometry.store(g.pack(), Ordering::Release);
        params.p_buffer.store(b as i32, Ordering::Release);
        Ok(Table { scull, pipes })
    }

    /// The budget `apply` checked: `scull_max_total`, else the default.
    pub fn max_total(&self) -> u64 {
        self.max_total.unwrap_or(crate::budget::DEFAULT_MAX_TOTAL)
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;

    #[test]
    fn load_params_name_the_bad_one_and_touch_nothing() {
        let p = Params::new();
        let cases: [(LoadParams, &str); 8] = [
            (LoadParams { quantum: Some(0), ..Default::default() }, "bad parameter scull_quantum=0; not loading"),
            (LoadParams { qset: Some(-1), ..Default::default() }, "bad parameter scull_qset=-1; not loading"),
            (
                LoadParams { quantum: Some(4_000_000), qset: Some(1000), ..Default::default() },
                "bad parameter scull_quantum*scull_qset=4000000000; not loading",
            ),
            (LoadParams { p_buffer: Some(1), ..Default::default() }, "bad parameter scull_p_buffer=1; not loading"),
            (LoadParams { nr_devs: Some(65), ..Default::default() }, "bad parameter scull_nr_devs=65; not loading"),
            (LoadParams { p_nr_devs: Some(-1), ..Default::default() }, "bad parameter scull_p_nr_devs=-1; not loading"),
            (
                LoadParams { max_size: Some(0), p_buffer: Some(64), ..Default::default() },
                "bad parameter scull_max_size=0; not loading",
            ),
            (LoadParams { max_total: Some(0), ..Default::default() }, "bad parameter scull_max_total=0; not loading"),
        ];
        for (lp, want) in cases {
            let e = lp.apply(&p).unwrap_err();
            assert_eq!(std::format!("{e}"), want);
            assert_eq!((p.quantum(), p.p_buffer(), p.max_size()), (DEFAULT_QUANTUM, DEFAULT_P_BUFFER, DEFAULT_MAX_SIZE));
        }
        let lp = LoadParams { quantum: Some(1000), qset: Some(50), p_buffer: Some(64), nr_devs: Some(2), p_nr_devs: Some(0), max_size: Some(1 << 20), max_total: None };
        assert_eq!(lp.apply(&p), Ok(Table { scull: 2, pipes: 0 }));
        assert_eq!((p.quantum(), p.qset(), p.p_buffer(), p.max_size()), (1000, 50, 64, 1 << 20));
        assert_eq!(LoadParams::default().apply(&Params::new()), Ok(Table { scull: 4, pipes: 4 }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_validation() {
        assert!(Geometry::new(4000, 1000).is_ok());
        assert_eq!(Geometry::new(0, 1000), Err(Error::Invalid));
        assert_eq!(Geometry::new(4000, 0), Err(Error::Invalid));
        assert_eq!(Geometry::new(-1, 10), Err(Error::Invalid));
        assert_eq!(Geometry::new(10, -1), Err(Error::Invalid));
        assert_eq!(Geometry::new(MAX_QUANTUM as i64 + 1, 1), Err(Error::Invalid));
        // The product must fit LDD3's `int itemsize`.
        assert_eq!(Geometry::new(65536, 65536), Err(Error::Invalid));
        assert!(Geometry::new(4095, MAX_QSET as i64).is_ok());
        assert_eq!(Geometry::new(4096, MAX_QSET as i64), Err(Error::Invalid), "2^31 overflows int");
        assert_eq!(Geometry::new(1, MAX_QSET as i64 + 1), Err(Error::Invalid), "slot array too large");
        assert_eq!(Geometry::new(1, i32::MAX as i64), Err(Error::Invalid));
        assert_eq!(Geometry::new(i64::MAX, i64::MAX), Err(Error::Invalid));
    }

    #[test]
    fn locate_splits_offsets() {
        let g = Geometry::new(10, 3).unwrap();
        assert_eq!(g.span(), 30);
        assert_eq!(g.locate(0), (0, 0, 0));
        assert_eq!(g.locate(9), (0, 0, 9));
        assert_eq!(g.locate(10), (0, 1, 0));
        assert_eq!(g.locate(29), (0, 2, 9));
        assert_eq!(g.locate(30), (1, 0, 0));
        assert_eq!(g.locate(MAX_SIZE), (MAX_SIZE / 30, ((MAX_SIZE % 30) / 10) as usize, (MAX_SIZE % 10) as usize));
    }

    #[test]
    fn params_set_and_swap() {
        let p = Params::new();
        assert_eq!((p.quantum(), p.qset(), p.p_buffer()), (4000, 1000, 4000));
        assert_eq!(p.set_quantum(100), Ok(4000));
        assert_eq!(p.set_qset(7), Ok(1000));
        assert_eq!(p.geometry(), Geometry::new(100, 7).unwrap());
        assert_eq!(p.set_quantum(0), Err(Error::Invalid));
        assert_eq!(p.quantum(), 100, "a rejected value changes nothing");
        // quantum * qset overflow is checked against the current other half.
        assert_eq!(p.set_qset(i32::MAX as i64), Err(Error::Invalid));
        assert_eq!(p.set_p_buffer(1), Err(Error::Invalid));
        assert_eq!(p.set_p_buffer(64), Ok(4000));
        p.reset();
        assert_eq!((p.quantum(), p.qset(), p.p_buffer()), (4000, 1000, 64));
        assert!(Params::with(0, 1, 100).is_err());
        assert!(Params::with(16, 4, 1).is_err());
        let q = Params::with(16, 4, 100).unwrap();
        assert_eq!((q.quantum(), q.qset(), q.p_buffer()), (16, 4, 100));
        assert_eq!(nr_devs(-1), Err(Error::Invalid));
        assert_eq!(nr_devs(0), Ok(0));
        assert_eq!(nr_devs(65), Err(Error::Invalid));
    }

    #[test]
    fn max_size_is_validated_and_rides_with_the_geometry() {
        let p = Params::new();
        assert_eq!(p.max_size(), DEFAULT_MAX_SIZE);
        const { assert!(DEFAULT_MAX_SIZE >= 256 << 20, "the benchmark stores 256 MiB in one device") };
        assert_eq!(p.geometry().max_size(), DEFAULT_MAX_SIZE);
        assert_eq!(p.set_max_size(0), Err(Error::Invalid));
        assert_eq!(p.set_max_size(MAX_SIZE + 1), Err(Error::Invalid));
        assert_eq!(p.max_size(), DEFAULT_MAX_SIZE, "a rejected value changes nothing");
        p.set_max_size(12345).unwrap();
        assert_eq!(p.geometry().max_size(), 12345);
        // Geometry ioctls keep the cap.
        p.set_quantum(10).unwrap();
        assert_eq!(p.geometry().max_size(), 12345);
        p.reset();
        assert_eq!(p.geometry().max_size(), 12345, "RESET restores quantum and qset, not the load-time cap");
        assert_eq!(Geometry::DEFAULT.with_max_size(7).unwrap().max_size(), 7);
        assert_eq!(Geometry::DEFAULT.with_max_size(0), Err(Error::Invalid));
        assert_eq!(max_size(MAX_SIZE), Ok(MAX_SIZE));
    }
}

#[cfg(test)]
mod concurrency_tests {
    use super::*;
    extern crate std;
    use std::sync::Arc;

    #[test]
    fn pipe_size_bounds() {
        assert_eq!(pipe_buffer_size(1), Err(Error::Invalid));
        assert_eq!(pipe_buffer_size(2), Ok(2));
        assert_eq!(pipe_buffer_size(MAX_P_BUFFER as i64), Ok(MAX_P_BUFFER as usize));
        assert_eq!(pipe_buffer_size(MAX_P_BUFFER as i64 + 1), Err(Error::Invalid));
        assert_eq!(Geometry::default(), Geometry::DEFAULT);
        assert_eq!(Geometry::DEFAULT.span(), 4_000_000);
    }

    /// Racing quantum and qset updates never publish a pair whose product
    /// overflows: each update validates against the pair it replaces.
    #[test]
    #[cfg(not(loom))]
    fn racing_updates_keep_the_pair_valid() {
        let p = Arc::new(Params::new());
        let mut threads = std::vec::Vec::new();
        for t in 0..4 {
            let p = p.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0..2000i64 {
                    let v = if (i + t) % 2 == 0 { 65536 } else { 3 };
                    if t % 2 == 0 {
                        let _ = p.set_quantum(v);
                    } else {
                        let _ = p.set_qset(v);
                    }
                    let g = p.geometry();
                    assert!(g.span() <= i32::MAX as u64, "invalid pair published: {g:?}");
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
    }
}

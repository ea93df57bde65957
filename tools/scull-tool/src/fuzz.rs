//! `scull-tool fuzz --seconds S --seed X`: hostile input from user space.
//!
//! Random ioctl codes (valid ones and their neighbours), wrong buffer sizes
//! (0 to 1 MiB), huge and negative seeks, zero-length and huge reads and
//! writes at random offsets, set_len to absurd sizes, open/close races on
//! scullsingle, cancel races on blocked pipe reads, and, where the target can
//! express them, invalid user pointers (`Target::fuzz_bad_pointers`). Pipe
//! handles are non-blocking so nothing waits forever.
//!
//! Every call may fail, but only with a scull error; afterwards the devices
//! must still work (a round trip on scull0 and scullpipe0) and hold no
//! blocked callers. The harness then checks the kernel log and leak counter.

use crate::rng::Rng;
use crate::backend::{Handle, OpenOpts, Target};
use crate::progress::{Goal, Progress};
use scull_core::devices::Dev;
use scull_core::ioctl::{ctl_code, ioc, Cmd};
use scull_core::store::Whence;
use scull_core::Error;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub struct Options {
    pub seconds: f64,
    pub seed: u64,
}

#[derive(Default)]
struct Tally {
    ops: u64,
    errors: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn note<T>(&mut self, r: Result<T, Error>) {
        self.ops += 1;
        if let Err(e) = r {
            *self.errors.entry(e.name()).or_default() += 1;
        }
    }
}

fn random_code(t: &dyn Target, rng: &mut Rng) -> u32 {
    let cmd = *rng.pick(&Cmd::ALL);
    let linux = t.caps().linux_abi;
    let base = if linux { cmd.linux_code() } else { cmd.windows_code() };
    match rng.below(6) {
        0 => base,
        1 => base ^ (1 << rng.below(32)),
        2 => base.wrapping_add(4),
        3 => base.wrapping_sub(4),
        4 if linux => ioc(rng.below(4) as u32, b'k', rng.below(32) as u32, rng.below(0x4000) as u32),
        4 => ctl_code(0x8000 + rng.below(3) as u32, 0x7fc + rng.below(0x50) as u32, rng.below(4) as u32, rng.below(4) as u32),
        _ => rng.next_u64() as u32,
    }
}

fn random_len(rng: &mut Rng) -> usize {
    *rng.pick(&[0usize, 1, 3, 4, 5, 8, 4095, 4096, 65536, 1 << 20])
}

fn random_offset(rng: &mut Rng) -> i64 {
    let r = rng.next_u64() as i64;
    *rng.pick(&[0i64, 1, -1, 3999, 4000, 4001, 4_000_000, i64::MAX, i64::MAX - 1, i64::MIN, 1 << 40, r])
}

fn random_dev(t: &dyn Target, rng: &mut Rng) -> (Dev, OpenOpts) {
    let c = t.caps();
    let o = *rng.pick(&[OpenOpts::R, OpenOpts::W, OpenOpts::RW, OpenOpts::TRUNC]);
    match rng.below(6) {
        0..=2 => (Dev::Scull(rng.below(c.nr_devs.max(1) as u64 + 1) as u8), o),
        3 => (Dev::Pipe(rng.below(c.p_nr_devs.max(1) as u64 + 1) as u8), o.nonblocking()),
        4 => (Dev::Single, o),
        _ => (Dev::Uid, o),
    }
}

fn one_op(t: &dyn Target, h: &mut dyn Handle, rng: &mut Rng, tally: &mut Tally) {
    match rng.below(8) {
        0 => {
            let code = random_code(t, rng);
            let input = vec![rng.next_u64() as u8; random_len(rng)];
            let out = random_len(rng);
            tally.note(h.ioctl_raw(code, &input, out));
        }
        1 => {
            // Typed commands with hostile values (privileged ones may apply).
            let cmd = *rng.pick(&Cmd::ALL);
            let r = rng.next_u64() as i32;
            let v = *rng.pick(&[0, -1, 1, i32::MAX, i32::MIN, 65536, r]);
            tally.note(h.ioctl(cmd, v));
        }
        2 => {
            let w = *rng.pick(&[Whence::Set, Whence::Cur, Whence::End]);
            tally.note(h.seek(w, random_offset(rng)));
        }
        3 => {
            let mut buf = vec![0u8; random_len(rng)];
            tally.note(h.read(&mut buf));
        }
        4 => {
            let buf = vec![0x5Au8; random_len(rng).min(64 * 1024)];
            tally.note(h.write(&buf));
        }
        5 => {
            let r = rng.below(1 << 30);
            let len = *rng.pick(&[0u64, 1, 4000, 1 << 20, i64::MAX as u64, u64::MAX, r]);
            tally.note(h.set_len(len));
        }
        6 => tally.note(h.poll()),
        _ => tally.note(h.stats()),
    }
}

/// Sanity after the storm: the devices still work and nobody is stuck.
fn still_works(t: &dyn Target) -> Result<(), String> {
    let mut c = t.open(Dev::Scull(0), OpenOpts::RW).map_err(|e| format!("open: {e}"))?;
    c.ioctl(Cmd::Reset, 0).map_err(|e| format!("RESET: {e}"))?;
    c.ioctl(Cmd::PTSize, scull_core::geometry::DEFAULT_P_BUFFER).map_err(|e| format!("P_IOCTSIZE: {e}"))?;
    drop(c);
    drop(t.open(Dev::Scull(0), OpenOpts::TRUNC).map_err(|e| format!("trim: {e}"))?);
    let mut h = t.open(Dev::Scull(0), OpenOpts::RW).map_err(|e| format!("open: {e}"))?;
    h.write(b"after fuzz").map_err(|e| format!("write: {e}"))?;
    h.seek(Whence::Set, 0).map_err(|e| format!("seek: {e}"))?;
    let mut b = [0u8; 32];
    let n = h.read(&mut b).map_err(|e| format!("read: {e}"))?;
    if &b[..n] != b"after fuzz" {
        return Err(format!("scull0 round trip after fuzz: {:?}", &b[..n]));
    }
    let mut p = t.open(Dev::Pipe(0), OpenOpts::RW.nonblocking()).map_err(|e| format!("open pipe: {e}"))?;
    // Drain whatever the fuzzer left, then a round trip.
    while p.read(&mut [0u8; 4096]).is_ok() {}
    p.write(b"pipe ok").map_err(|e| format!("pipe write: {e}"))?;
    let n = p.read(&mut b).map_err(|e| format!("pipe read: {e}"))?;
    if &b[..n] != b"pipe ok" {
        return Err(format!("scullpipe0 round trip after fuzz: {:?}", &b[..n]));
    }
    let text = h.stats().map_err(|e| format!("stats: {e}"))?;
    for l in text.lines().filter(|l| l.starts_with("scullpipe") && !l.starts_with("scullpipe v")) {
        for k in ["waiting_readers", "waiting_writers"] {
            if scull_core::report::field(l, k) != Some("0") {
                return Err(format!("blocked callers left after fuzz: {l}"));
            }
        }
    }
    drop(h);
    for n in 0..t.caps().nr_devs {
        let _ = t.open(Dev::Scull(n), OpenOpts::TRUNC);
    }
    Ok(())
}

pub fn run(t: &'static dyn Target, o: &Options) -> Result<(), String> {
    crate::outln!("fuzz on `{}`: seed {} for {:.0} s", t.name(), o.seed, o.seconds);
    let mut rng = Rng::new(o.seed);
    let mut tally = Tally::default();
    let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
    let mut handles: Vec<Box<dyn Handle>> = Vec::new();
    let mut round = 0u64;
    let mut bad_pointer_ops = None;
    let bar = Progress::start("fuzz", Goal::Seconds(o.seconds), "ops");
    while Instant::now() < deadline {
        round += 1;
        bar.set(tally.ops);
        // Open/close churn.
        if handles.len() < 6 || rng.chance(20) {
            let (d, opts) = random_dev(t, &mut rng);
            match t.open(d, opts) {
                Ok(h) => handles.push(h),
                Err(e) => tally.note::<()>(Err(e)),
            }
        }
        if !handles.is_empty() && rng.chance(15) {
            let i = rng.below(handles.len() as u64) as usize;
            handles.swap_remove(i);
        }
        for _ in 0..20 {
            if handles.is_empty() {
                break;
            }
            let i = rng.below(handles.len() as u64) as usize;
            one_op(t, &mut *handles[i], &mut rng, &mut tally);
        }
        // Races: openers of scullsingle on several threads at once.
        if rng.chance(5) {
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..10 {
                            if let Ok(h) = t.open(Dev::Single, OpenOpts::R) {
                                drop(h);
                            }
                        }
                    });
                }
            });
            tally.ops += 40;
        }
        // Cancel races on blocked pipe reads.
        if t.caps().cancel && rng.chance(5) {
            let pipe = Dev::Pipe(rng.below(t.caps().p_nr_devs.max(1) as u64) as u8);
            if let Ok(mut p) = t.read_cancellable(pipe, 64) {
                if rng.chance(50) {
                    std::thread::sleep(Duration::from_millis(rng.below(20)));
                }
                let _ = p.cancel(rng.chance(50));
                let r = p.wait(Duration::from_secs(10));
                if matches!(r, Err(Error::WouldBlock)) {
                    return Err("a cancelled read did not complete within 10 s".into());
                }
                tally.ops += 1;
            }
        }
        if let Some(r) = t.fuzz_bad_pointers(&mut rng, 10) {
            let n = r?;
            *bad_pointer_ops.get_or_insert(0) += n;
        }
        // Keep memory bounded: trim the store devices now and then.
        if round % 10 == 0 {
            handles.clear();
            for n in 0..t.caps().nr_devs {
                let _ = t.open(Dev::Scull(n), OpenOpts::TRUNC);
            }
        }
    }
    drop(bar);
    handles.clear();
    still_works(t)?;
    let errs: Vec<String> = tally.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
    crate::outln!("fuzz: {} operations, errors returned: {}", tally.ops, errs.join(" "));
    match bad_pointer_ops {
        Some(n) => crate::outln!("fuzz: {n} invalid-pointer system calls, all refused with EFAULT"),
        None => crate::outln!("fuzz: invalid user pointers: not expressible on this target"),
    }
    crate::outln!("fuzz: devices still work after seed {}", o.seed);
    Ok(())
}

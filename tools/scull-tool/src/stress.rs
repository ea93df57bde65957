//! `scull-tool stress`: hostile concurrency with every byte accounted for.
//!
//! Pipe: N writers each send 64-byte records tagged (writer, seq, crc) into one
//! scullpipe; M readers each read one record per call. Writes of 64 bytes are
//! atomic (scull-core's PIPE_ATOMIC) and a read asking for one record gets
//! exactly one, so every read must return a whole, valid record. Each reader
//! checks that a writer's sequence numbers only increase (order per writer)
//! and reports per-writer count, sum and sum of squares of the sequence
//! numbers; the parent checks that the readers together got every record
//! exactly once. After the writers stop, the parent sends one END record per
//! reader.
//!
//! Store: writers own disjoint 64-byte slots of scull0 and rewrite them with
//! increasing versions at random; readers read random slots and verify each
//! record's checksum (a torn record means a missing lock). At the end every
//! slot must hold its owner's last version (no lost update).
//!
//! Workers are threads, or separate processes of this tool (`--processes`).

use crate::rng::{crc32, Rng};
use crate::backend::{OpenOpts, Target};
use scull_core::devices::Dev;
use scull_core::store::Whence;
use std::collections::BTreeMap;
use crate::progress::{Goal, Progress};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const RECORD: usize = 64;
const MAGIC: u16 = 0x5C01;
const END: u16 = 0xFFFF;

#[derive(Debug, Clone)]
pub struct Options {
    pub writers: usize,
    pub readers: usize,
    pub seconds: f64,
    pub processes: bool,
    pub pipe: u8,
    pub slots: usize,
    pub seed: u64,
}

fn record(writer: u16, seq: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    r[2..4].copy_from_slice(&writer.to_le_bytes());
    r[4..12].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in r[12..60].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(7).wrapping_add(i as u8) ^ writer as u8;
    }
    let c = crc32(&r[..60]);
    r[60..].copy_from_slice(&c.to_le_bytes());
    r
}

/// (writer, seq) of a valid record.
fn parse(r: &[u8]) -> Option<(u16, u64)> {
    if r.len() != RECORD || u16::from_le_bytes([r[0], r[1]]) != MAGIC {
        return None;
    }
    if crc32(&r[..60]).to_le_bytes() != r[60..64] {
        return None;
    }
    Some((u16::from_le_bytes([r[2], r[3]]), u64::from_le_bytes(r[4..12].try_into().ok()?)))
}

// ------------------------------------------------------------------ pipe

/// What one reader saw.
#[derive(Debug, Default, Clone)]
pub struct ReaderReport {
    /// writer -> (count, sum, sum of squares)
    pub per_writer: BTreeMap<u16, (u64, u128, u128)>,
    pub torn: u64,
    pub corrupt: u64,
    pub misordered: u64,
}

impl ReaderReport {
    fn lines(&self) -> String {
        let mut s = String::new();
        for (w, (c, sum, sq)) in &self.per_writer {
            s += &format!("R {w} {c} {sum} {sq}\n");
        }
        s += &format!("T {} {} {}\n", self.torn, self.corrupt, self.misordered);
        s
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut r = ReaderReport::default();
        let mut saw_t = false;
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u128>().ok()).ok_or_else(|| format!("bad line {l:?}"));
            match f.first() {
                Some(&"R") => {
                    r.per_writer.insert(n(1)? as u16, (n(2)? as u64, n(3)?, n(4)?));
                }
                Some(&"T") => {
                    (r.torn, r.corrupt, r.misordered) = (n(1)? as u64, n(2)? as u64, n(3)? as u64);
                    saw_t = true;
                }
                _ => {}
            }
        }
        if saw_t {
            Ok(r)
        } else {
            Err(format!("reader output incomplete: {text:?}"))
        }
    }
}

/// Writes records as `writer` until `seconds` pass; returns how many.
pub fn pipe_writer(t: &dyn Target, pipe: u8, writer: u16, seconds: f64, progress: &AtomicU64) -> Result<u64, String> {
    let mut h = t.open(Dev::Pipe(pipe), OpenOpts::W).map_err(|e| format!("writer {writer}: open: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let r = record(writer, seq);
        let n = h.write(&r).map_err(|e| format!("writer {writer}: write: {e}"))?;
        if n != RECORD {
            return Err(format!("writer {writer}: a {RECORD}-byte write was split ({n})"));
        }
        seq += 1;
        progress.fetch_add(1, Ordering::Relaxed);
    }
    Ok(seq)
}

/// Reads records until an END record.
pub fn pipe_reader(t: &dyn Target, pipe: u8) -> Result<ReaderReport, String> {
    let mut h = t.open(Dev::Pipe(pipe), OpenOpts::R).map_err(|e| format!("reader: open: {e}"))?;
    let mut rep = ReaderReport::default();
    let mut last: BTreeMap<u16, u64> = BTreeMap::new();
    let mut buf = [0u8; RECORD];
    loop {
        let n = h.read(&mut buf).map_err(|e| format!("reader: read: {e}"))?;
        if n != RECORD {
            rep.torn += 1;
            continue;
        }
        match parse(&buf) {
            None => rep.corrupt += 1,
            Some((END, _)) => return Ok(rep),
            Some((w, seq)) => {
                if last.get(&w).is_some_and(|&l| seq <= l) {
                    rep.misordered += 1;
                }
                last.insert(w, seq);
                let e = rep.per_writer.entry(w).or_default();
                e.0 += 1;
                e.1 += seq as u128;
                e.2 += (seq as u128) * (seq as u128);
            }
        }
    }
}

fn self_cmd(t: &dyn Target, args: &[String]) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut c = Command::new(exe);
    c.arg("--target").arg(t.name()).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
    Ok(c)
}

/// A worker: a thread or a child process of this tool printing its result.
enum Worker<T> {
    Thread(std::thread::JoinHandle<Result<T, String>>),
    Process(std::process::Child, fn(&str) -> Result<T, String>),
}

impl<T> Worker<T> {
    fn join(self) -> Result<T, String> {
        match self {
            Worker::Thread(h) => h.join().map_err(|_| "worker panicked".to_string())?,
            Worker::Process(c, parse) => {
                let out = c.wait_with_output().map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&out.stdout);
                if !out.status.success() {
                    return Err(format!("worker exited {}: {text}", out.status));
                }
                parse(&text)
            }
        }
    }
}

pub struct PipeSummary {
    pub records: u64,
    pub bytes: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub torn: u64,
    pub corrupt: u64,
    pub misordered: u64,
}

pub fn run_pipe(t: &'static dyn Target, o: &Options) -> Result<PipeSummary, String> {
    // Records are counted only by thread workers (child processes report at
    // the end), so with processes the progress shows time only.
    let bar = Progress::start("stress pipe", Goal::Seconds(o.seconds), if o.processes { "" } else { "records" });
    let progress = bar.counter().clone();
    let mut readers = Vec::new();
    for _ in 0..o.readers {
        readers.push(if o.processes {
            Worker::Process(
                self_cmd(t, &["__stress-pipe-reader".into(), o.pipe.to_string()])?.spawn().map_err(|e| e.to_string())?,
                ReaderReport::parse as fn(&str) -> _,
            )
        } else {
            let pipe = o.pipe;
            Worker::Thread(std::thread::spawn(move || pipe_reader(t, pipe)))
        });
    }
    let mut writers = Vec::new();
    for w in 0..o.writers {
        writers.push(if o.processes {
            Worker::Process(
                self_cmd(t, &["__stress-pipe-writer".into(), o.pipe.to_string(), w.to_string(), o.seconds.to_string()])?
                    .spawn()
                    .map_err(|e| e.to_string())?,
                (|s: &str| s.trim().parse::<u64>().map_err(|e| format!("writer output {s:?}: {e}"))) as fn(&str) -> _,
            )
        } else {
            let (pipe, secs, p) = (o.pipe, o.seconds, progress.clone());
            Worker::Thread(std::thread::spawn(move || pipe_writer(t, pipe, w as u16, secs, &p)))
        });
    }
    let mut written = BTreeMap::new();
    let mut first_err = None;
    for (w, h) in writers.into_iter().enumerate() {
        match h.join() {
            Ok(n) => {
                written.insert(w as u16, n);
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    // One END per reader: they all precede nothing but each other.
    let mut end = t.open(Dev::Pipe(o.pipe), OpenOpts::W).map_err(|e| format!("open for END: {e}"))?;
    for _ in 0..o.readers {
        end.write(&record(END, 0)).map_err(|e| format!("END: {e}"))?;
    }
    let mut total = ReaderReport::default();
    for h in readers {
        match h.join() {
            Ok(r) => {
                total.torn += r.torn;
                total.corrupt += r.corrupt;
                total.misordered += r.misordered;
                for (w, (c, s, q)) in r.per_writer {
                    let e = total.per_writer.entry(w).or_default();
                    e.0 += c;
                    e.1 += s;
                    e.2 += q;
                }
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    drop(end);
    drop(bar);
    if let Some(e) = first_err {
        return Err(e);
    }
    let (mut lost, mut dup, mut records) = (0u64, 0u64, 0u64);
    for (w, n) in &written {
        records += n;
        let n128 = *n as u128;
        let want_sum = n128 * n128.saturating_sub(1) / 2;
        let want_sq = if n128 == 0 { 0 } else { (n128 - 1) * n128 * (2 * n128 - 1) / 6 };
        let (c, s, q) = total.per_writer.get(w).copied().unwrap_or_default();
        if c < *n {
            lost += n - c;
        } else if c > *n {
            dup += c - n;
        } else if s != want_sum || q != want_sq {
            // Same count, different set: at least one lost and one duplicated.
            lost += 1;
            dup += 1;
        }
    }
    for w in total.per_writer.keys() {
        if !written.contains_key(w) {
            dup += total.per_writer[w].0;
        }
    }
    Ok(PipeSummary {
        records,
        bytes: records * RECORD as u64,
        lost,
        duplicated: dup,
        torn: total.torn,
        corrupt: total.corrupt,
        misordered: total.misordered,
    })
}

// ------------------------------------------------------------------ store

fn slot_record(slot: u32, version: u64, writer: u16) -> [u8; RECORD] {
    let mut r = record(writer, version);
    r[12..16].copy_from_slice(&slot.to_le_bytes());
    let c = crc32(&r[..60]);
    r[60..].copy_from_slice(&c.to_le_bytes());
    r
}

fn parse_slot(r: &[u8]) -> Option<(u32, u64, u16)> {
    let (w, v) = parse(r)?;
    Some((u32::from_le_bytes(r[12..16].try_into().ok()?), v, w))
}

/// Rewrites random owned slots; returns the last version written per slot.
pub fn store_writer(t: &dyn Target, id: usize, writers: usize, slots: usize, seconds: f64, seed: u64) -> Result<BTreeMap<u32, u64>, String> {
    let mut h = t.open(Dev::Scull(0), OpenOpts::RW).map_err(|e| format!("store writer {id}: open: {e}"))?;
    let owned: Vec<u32> = (0..slots as u32).filter(|s| *s as usize % writers == id).collect();
    let mut versions = BTreeMap::new();
    let mut rng = Rng::new(seed ^ id as u64);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline && !owned.is_empty() {
        let slot = *rng.pick(&owned);
        let v = versions.get(&slot).map_or(1, |v| v + 1);
        h.seek(Whence::Set, slot as i64 * RECORD as i64).map_err(|e| format!("seek: {e}"))?;
        let n = h.write(&slot_record(slot, v, id as u16)).map_err(|e| format!("write: {e}"))?;
        if n != RECORD {
            return Err(format!("store write returned {n}"));
        }
        versions.insert(slot, v);
    }
    Ok(versions)
}

/// Reads random slots and verifies them; returns (checked, corrupt).
pub fn store_reader(t: &dyn Target, slots: usize, seconds: f64, seed: u64) -> Result<(u64, u64), String> {
    let mut h = t.open(Dev::Scull(0), OpenOpts::R).map_err(|e| format!("store reader: open: {e}"))?;
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut checked, mut corrupt) = (0, 0);
    let mut buf = [0u8; RECORD];
    while Instant::now() < deadline {
        let slot = rng.below(slots as u64) as u32;
        h.seek(Whence::Set, slot as i64 * RECORD as i64).map_err(|e| format!("seek: {e}"))?;
        let n = h.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 || buf.iter().all(|&b| b == 0) {
            continue; // not written yet (a hole or a zeroed quantum)
        }
        checked += 1;
        match parse_slot(&buf[..n]) {
            Some((s, _, _)) if s == slot => {}
            _ => corrupt += 1,
        }
    }
    Ok((checked, corrupt))
}

pub struct StoreSummary {
    pub checked: u64,
    pub corrupt: u64,
    pub lost_updates: u64,
    pub writes: u64,
}

pub fn run_store(t: &'static dyn Target, o: &Options) -> Result<StoreSummary, String> {
    let _bar = Progress::start("stress store", Goal::Seconds(o.seconds), "");
    drop(t.open(Dev::Scull(0), OpenOpts::TRUNC).map_err(|e| format!("trim: {e}"))?);
    let parse_versions = |s: &str| -> Result<BTreeMap<u32, u64>, String> {
        s.lines()
            .filter_map(|l| l.strip_prefix("S "))
            .map(|l| {
                let mut it = l.split_whitespace().map(|v| v.parse::<u64>());
                match (it.next(), it.next()) {
                    (Some(Ok(s)), Some(Ok(v))) => Ok((s as u32, v)),
                    _ => Err(format!("bad line {l:?}")),
                }
            })
            .collect()
    };
    let parse_checked = |s: &str| -> Result<(u64, u64), String> {
        let l = s.lines().find_map(|l| l.strip_prefix("C ")).ok_or_else(|| format!("reader output {s:?}"))?;
        let v: Vec<u64> = l.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if v.len() == 2 {
            Ok((v[0], v[1]))
        } else {
            Err(format!("bad line {l:?}"))
        }
    };
    let mut writers = Vec::new();
    for w in 0..o.writers {
        let args = vec![
            "__stress-store-writer".into(),
            w.to_string(),
            o.writers.to_string(),
            o.slots.to_string(),
            o.seconds.to_string(),
            o.seed.to_string(),
        ];
        writers.push(if o.processes {
            Worker::Process(self_cmd(t, &args)?.spawn().map_err(|e| e.to_string())?, parse_versions as fn(&str) -> _)
        } else {
            let (n, slots, secs, seed) = (o.writers, o.slots, o.seconds, o.seed);
            Worker::Thread(std::thread::spawn(move || store_writer(t, w, n, slots, secs, seed)))
        });
    }
    let mut readers = Vec::new();
    for r in 0..o.readers {
        let seed = o.seed.wrapping_add(1000 + r as u64);
        readers.push(if o.processes {
            let args = vec!["__stress-store-reader".into(), o.slots.to_string(), o.seconds.to_string(), seed.to_string()];
            Worker::Process(self_cmd(t, &args)?.spawn().map_err(|e| e.to_string())?, parse_checked as fn(&str) -> _)
        } else {
            let (slots, secs) = (o.slots, o.seconds);
            Worker::Thread(std::thread::spawn(move || store_reader(t, slots, secs, seed)))
        });
    }
    let mut last = BTreeMap::new();
    let mut first_err = None;
    for w in writers {
        match w.join() {
            Ok(v) => last.extend(v),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    let (mut checked, mut corrupt) = (0, 0);
    for r in readers {
        match r.join() {
            Ok((c, k)) => {
                checked += c;
                corrupt += k;
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // Every slot holds its owner's last version.
    let mut h = t.open(Dev::Scull(0), OpenOpts::R).map_err(|e| format!("open: {e}"))?;
    let mut lost = 0;
    let mut buf = [0u8; RECORD];
    for (slot, v) in &last {
        h.seek(Whence::Set, *slot as i64 * RECORD as i64).map_err(|e| format!("seek: {e}"))?;
        let n = h.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        match parse_slot(&buf[..n]) {
            Some((s, got, _)) if s == *slot && got == *v => {}
            _ => lost += 1,
        }
    }
    drop(h);
    drop(t.open(Dev::Scull(0), OpenOpts::TRUNC).map_err(|e| format!("trim: {e}"))?);
    Ok(StoreSummary { checked, corrupt, lost_updates: lost, writes: last.values().sum() })
}

/// The hidden child entry points. Returns Some(exit code) if `args` named one.
pub fn child(t: &dyn Target, args: &[&str]) -> Option<Result<(), String>> {
    let num = |i: usize| args.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Some(match *args.first()? {
        "__stress-pipe-writer" => {
            pipe_writer(t, num(1) as u8, num(2) as u16, num(3), &AtomicU64::new(0)).map(|n| crate::outln!("{n}"))
        }
        "__stress-pipe-reader" => pipe_reader(t, num(1) as u8).map(|r| crate::out!("{}", r.lines())),
        "__stress-store-writer" => store_writer(t, num(1) as usize, num(2) as usize, num(3) as usize, num(4), num(5) as u64).map(|v| {
            for (s, ver) in v {
                crate::outln!("S {s} {ver}");
            }
        }),
        "__stress-store-reader" => store_reader(t, num(1) as usize, num(2), num(3) as u64).map(|(c, k)| crate::outln!("C {c} {k}")),
        _ => return None,
    })
}

/// Runs both stress parts and prints the report. Ok(true) when nothing was lost.
pub fn run(t: &'static dyn Target, o: &Options) -> Result<bool, String> {
    crate::outln!(
        "stress on `{}`: {} writers, {} readers ({}), {:.0} s each part, seed {}",
        t.name(),
        o.writers,
        o.readers,
        if o.processes { "processes" } else { "threads" },
        o.seconds,
        o.seed
    );
    let p = run_pipe(t, o)?;
    crate::outln!(
        "stress pipe: records={} bytes={} lost={} duplicated={} torn={} corrupt={} misordered={}",
        p.records, p.bytes, p.lost, p.duplicated, p.torn, p.corrupt, p.misordered
    );
    let s = run_store(t, o)?;
    crate::outln!(
        "stress store: writes={} checked={} corrupt={} lost_updates={}",
        s.writes, s.checked, s.corrupt, s.lost_updates
    );
    let clean = p.lost + p.duplicated + p.torn + p.corrupt + p.misordered + s.corrupt + s.lost_updates == 0 && p.records > 0;
    crate::outln!("stress: {}", if clean { "0 lost, 0 corrupt" } else { "FAILED" });
    Ok(clean)
}

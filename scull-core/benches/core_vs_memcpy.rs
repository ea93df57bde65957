//! Sequential write then read of 1 MiB and 256 MiB through the quantum store
//! (64 KiB calls, default 4000-byte quanta, host platform), against memcpy of
//! the same bytes into a freshly allocated buffer and back out. Prints
//! throughputs and the ratios measured in this one run:
//!   ratio core_vs_memcpy = store throughput / memcpy throughput (256 MiB)
//!   ratio core_scale_256m_vs_1m = store throughput of one 256 MiB file / of
//!     256 files of 1 MiB each (the same 256 MiB of fresh memory, so the ratio
//!     shows how the store scales with file size, not cache vs DRAM)
//!   ratio core_hot_vs_memcpy = overwriting an already-allocated,
//!     cache-resident 1 MiB store and reading it back / memcpy of the same
//!     bytes into an already-allocated 1 MiB buffer and back out (the copy
//!     path alone: no allocation, no DRAM)
//! Goals: core_vs_memcpy >= 0.5, core_scale_256m_vs_1m >= 0.9,
//! core_hot_vs_memcpy >= 0.5. Not a test. The fresh 1 MiB figure (a new store
//! each time, so it includes allocating and freeing 263 quanta) is printed
//! alongside.

use scull_core::geometry::Geometry;
use scull_core::host::HostPlatform;
use scull_core::store::Store;
use std::hint::black_box;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;

fn best_of(reps: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..reps).map(|_| f()).min().unwrap()
}

fn store_round_trip(src: &[u8], out: &mut [u8]) -> Duration {
    let platform = HostPlatform::new();
    let mut s = Store::new(platform, Geometry::DEFAULT);
    let t = Instant::now();
    for (i, c) in src.chunks(CHUNK).enumerate() {
        let n = s.write((i * CHUNK) as u64, c).unwrap();
        assert_eq!(n, c.len());
    }
    for (i, c) in out.chunks_mut(CHUNK).enumerate() {
        let n = s.read((i * CHUNK) as u64, c).unwrap();
        assert_eq!(n, c.len());
    }
    let d = t.elapsed();
    black_box(&out);
    drop(s);
    d
}

/// 256 separate 1 MiB files: all written, then all read (as the big file is).
fn store_many_small(src: &[u8], out: &mut [u8], file: usize) -> Duration {
    let mut stores = Vec::new();
    let t = Instant::now();
    for src in src.chunks(file) {
        let mut s = Store::new(HostPlatform::new(), Geometry::DEFAULT);
        for (i, c) in src.chunks(CHUNK).enumerate() {
            assert_eq!(s.write((i * CHUNK) as u64, c).unwrap(), c.len());
        }
        stores.push(s);
    }
    for (s, out) in stores.iter_mut().zip(out.chunks_mut(file)) {
        for (i, c) in out.chunks_mut(CHUNK).enumerate() {
            assert_eq!(s.read((i * CHUNK) as u64, c).unwrap(), c.len());
        }
    }
    let d = t.elapsed();
    black_box(&out);
    drop(stores);
    d
}

/// Overwrites the already-written store `s` with `src` and reads it back.
fn store_hot(s: &mut Store<HostPlatform>, src: &[u8], out: &mut [u8]) -> Duration {
    let t = Instant::now();
    for (i, c) in src.chunks(CHUNK).enumerate() {
        assert_eq!(s.write((i * CHUNK) as u64, c).unwrap(), c.len());
    }
    for (i, c) in out.chunks_mut(CHUNK).enumerate() {
        assert_eq!(s.read((i * CHUNK) as u64, c).unwrap(), c.len());
    }
    let d = t.elapsed();
    black_box(&out);
    d
}

/// memcpy into the already-allocated `dst` and back out.
fn memcpy_hot(dst: &mut [u8], src: &[u8], out: &mut [u8]) -> Duration {
    let t = Instant::now();
    for (d, c) in dst.chunks_mut(CHUNK).zip(src.chunks(CHUNK)) {
        d.copy_from_slice(black_box(c));
    }
    for (o, c) in out.chunks_mut(CHUNK).zip(dst.chunks(CHUNK)) {
        o.copy_from_slice(black_box(c));
    }
    let d = t.elapsed();
    black_box(&out);
    d
}

fn memcpy_round_trip(src: &[u8], out: &mut [u8]) -> Duration {
    let t = Instant::now();
    let mut dst = vec![0u8; src.len()];
    for (d, c) in dst.chunks_mut(CHUNK).zip(src.chunks(CHUNK)) {
        d.copy_from_slice(c);
    }
    for (o, c) in out.chunks_mut(CHUNK).zip(dst.chunks(CHUNK)) {
        o.copy_from_slice(c);
    }
    let d = t.elapsed();
    black_box(&out);
    drop(dst);
    d
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// `cargo bench ... -- profile fresh|hot|memcpy`: only 64 rounds of one 1 MiB
/// workload, no timing, for `valgrind --tool=callgrind` (instruction counts do
/// not depend on the machine's load). See docs/performance.md.
fn profile(what: &str) {
    let size = 1usize << 20;
    let src: Vec<u8> = (0..size).map(|i| (i * 13 + 5) as u8).collect();
    let mut out = vec![0u8; size];
    let mut s = Store::new(HostPlatform::new(), Geometry::DEFAULT);
    assert_eq!(s.write(0, &src).unwrap(), size);
    let mut dst = vec![1u8; size];
    for _ in 0..64 {
        match what {
            "fresh" => drop(store_round_trip(&src, &mut out)),
            "hot" => drop(store_hot(&mut s, &src, &mut out)),
            "memcpy" => drop(memcpy_hot(&mut dst, &src, &mut out)),
            _ => panic!("profile fresh|hot|memcpy"),
        }
    }
    assert!(out == src);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "profile") {
        return profile(args.get(at + 1).map(String::as_str).unwrap_or(""));
    }
    let mut results = Vec::new();
    for (size, reps) in [(1usize << 20, 200), (256usize << 20, 5)] {
        let src: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        let mut out = vec![0u8; size];
        let store = best_of(reps, || store_round_trip(&src, &mut out));
        assert!(out == src, "store round trip corrupted data");
        let memcpy = best_of(reps, || memcpy_round_trip(&src, &mut out));
        let (s, m) = (mbps(2 * size, store), mbps(2 * size, memcpy));
        println!("{:>4} MiB: store write+read {:8.0} MB/s   memcpy {:8.0} MB/s   (best of {reps})", size >> 20, s, m);
        results.push((s, m));
    }
    // Cache-hot overwrite: one allocated 1 MiB store, written again and
    // again; memcpy into one allocated buffer. Interleaved rounds, best of each.
    let size = 1usize << 20;
    let src: Vec<u8> = (0..size).map(|i| (i * 13 + 5) as u8).collect();
    let mut out = vec![0u8; size];
    let mut s = Store::new(HostPlatform::new(), Geometry::DEFAULT);
    assert_eq!(s.write(0, &vec![1u8; size]).unwrap(), size);
    let mut dst = vec![1u8; size];
    let (mut hot_store, mut hot_memcpy) = (Duration::MAX, Duration::MAX);
    for _ in 0..10 {
        hot_store = hot_store.min(best_of(50, || store_hot(&mut s, &src, &mut out)));
        hot_memcpy = hot_memcpy.min(best_of(50, || memcpy_hot(&mut dst, &src, &mut out)));
    }
    assert!(out == src, "hot round trip corrupted data");
    let (hs, hm) = (mbps(2 * size, hot_store), mbps(2 * size, hot_memcpy));
    println!("   1 MiB overwrite (allocated, cache-hot): store write+read {hs:8.0} MB/s   memcpy {hm:8.0} MB/s   (best of 500)");
    drop(s);

    let size = 256usize << 20;
    let src: Vec<u8> = (0..size).map(|i| (i * 17 + 3) as u8).collect();
    let mut out = vec![0u8; size];
    let small = best_of(5, || store_many_small(&src, &mut out, 1 << 20));
    assert!(out == src, "1 MiB files corrupted data");
    let s1 = mbps(2 * size, small);
    println!("256 x 1 MiB files: store write+read {:8.0} MB/s   (best of 5)", s1);
    let (fresh, fresh_m) = results[0];
    let (s256, m256) = results[1];
    println!("info: fresh 1 MiB store / memcpy into a new buffer = {:.2} ({fresh:.0} / {fresh_m:.0} MB/s)", fresh / fresh_m);
    println!("info: fresh 1 MiB / 256 MiB = {:.2} (cache vs DRAM, not the store)", fresh / s256);
    println!("ratio core_hot_vs_memcpy = {:.2} ({hs:.0} / {hm:.0} MB/s; a fresh 1 MiB store: {fresh:.0} MB/s, {:.2} of memcpy into a new buffer)", hs / hm, fresh / fresh_m);
    println!("ratio core_vs_memcpy = {:.2} ({s256:.0} / {m256:.0} MB/s)", s256 / m256);
    println!("ratio core_scale_256m_vs_1m = {:.2} ({s256:.0} / {s1:.0} MB/s)", s256 / s1);
}

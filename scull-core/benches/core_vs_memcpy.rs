//! Sequential write then read of 1 MiB and 256 MiB through the quantum store
//! (64 KiB calls, default 4000-byte quanta, host platform), against memcpy of
//! the same bytes into a freshly allocated buffer and back out. Prints
//! throughputs and the ratios measured in this one run:
//!   ratio core_vs_memcpy = store throughput / memcpy throughput (256 MiB)
//!   ratio core_scale_256m_vs_1m = store throughput of one 256 MiB file / of
//!     256 files of 1 MiB each (the same 256 MiB of fresh memory, so the ratio
//!     shows how the store scales with file size, not cache vs DRAM)
//! Goals: core_vs_memcpy >= 0.5, core_scale_256m_vs_1m >= 0.9. Not a test.
//! The cache-hot 1 MiB figure (one 1 MiB file, repeated) is printed for
//! information.

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

fn main() {
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
    let size = 256usize << 20;
    let src: Vec<u8> = (0..size).map(|i| (i * 17 + 3) as u8).collect();
    let mut out = vec![0u8; size];
    let small = best_of(5, || store_many_small(&src, &mut out, 1 << 20));
    assert!(out == src, "1 MiB files corrupted data");
    let s1 = mbps(2 * size, small);
    println!("256 x 1 MiB files: store write+read {:8.0} MB/s   (best of 5)", s1);
    let (hot, _) = results[0];
    let (s256, m256) = results[1];
    println!("info: cache-hot 1 MiB / 256 MiB = {:.2} (cache vs DRAM, not the store)", hot / s256);
    println!("ratio core_vs_memcpy = {:.2}", s256 / m256);
    println!("ratio core_scale_256m_vs_1m = {:.2}", s256 / s1);
}

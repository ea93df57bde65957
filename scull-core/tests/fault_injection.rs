//! Fault injection: for every k, fail the k-th allocation of a workload and
//! check that nothing written before is lost, that the error is NoMemory (or
//! a short count), and that nothing leaks.

use scull_core::geometry::Geometry;
use scull_core::host::HostPlatform;
use scull_core::pipe::Pipe;
use scull_core::store::Store;
use scull_core::Error;

/// A workload of writes that together allocate many qsets and quanta.
fn workload() -> Vec<(u64, Vec<u8>)> {
    let mut w = Vec::new();
    for i in 0..12u64 {
        let len = (i * 7 % 23 + 1) as usize;
        let pos = (i * 37) % 200;
        w.push((pos, (0..len).map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8)).collect()));
    }
    w.push((1000, vec![9; 40]));
    w
}

#[test]
fn store_survives_failure_at_every_allocation() {
    // Count the allocations of a clean run first.
    let clean = HostPlatform::new();
    {
        let mut s = Store::new(clean.clone(), Geometry::new(8, 3).unwrap());
        for (p, d) in workload() {
            s.write(p, &d).unwrap();
        }
    }
    let total = clean.stats().allocations();
    assert!(total > 10, "workload allocates ({total})");

    for k in 1..=total {
        let platform = HostPlatform::new();
        let mut s = Store::new(platform.clone(), Geometry::new(8, 3).unwrap());
        // The reference holds what the store acknowledged.
        let mut reference: Vec<u8> = Vec::new();
        let mut size = 0u64;
        platform.stats().fail_after(k);
        let mut saw_failure = false;
        for (p, d) in workload() {
            match s.write(p, &d) {
                Ok(n) => {
                    if n < d.len() {
                        saw_failure = true;
                    }
                    let end = p as usize + n;
                    if reference.len() < end {
                        reference.resize(end, 0);
                    }
                    reference[p as usize..end].copy_from_slice(&d[..n]);
                    if n > 0 {
                        size = size.max(end as u64);
                    }
                }
                Err(e) => {
                    assert_eq!(e, Error::NoMemory, "k={k}");
                    saw_failure = true;
                }
            }
            assert_eq!(s.size(), size, "k={k}: size is what was acknowledged");
        }
        assert!(saw_failure, "k={k}: the injected failure was reported");
        // Every acknowledged byte is there (holes read short, never wrong).
        let mut at = 0u64;
        while at < size {
            let mut buf = vec![0u8; 64];
            let n = s.read(at, &mut buf).unwrap();
            if n == 0 {
                // A hole: the reference must have zeros there (never written).
                assert_eq!(reference[at as usize], 0, "k={k}: lost byte at {at}");
                at += 1;
                continue;
            }
            assert_eq!(&buf[..n], &reference[at as usize..at as usize + n], "k={k} at {at}");
            at += n as u64;
        }
        s.trim(Geometry::DEFAULT);
        assert_eq!(platform.stats().outstanding(), 0, "k={k}: leak after trim");
        drop(s);
        assert_eq!(platform.stats().outstanding(), 0, "k={k}: leak after drop");
    }
}

#[test]
fn pipe_open_failure_at_every_allocation() {
    for k in 1..=2 {
        let platform = HostPlatform::new();
        let mut pipe: Pipe<HostPlatform> = Pipe::new();
        platform.stats().fail_after(k);
        let first = pipe.open(&platform, true, true, 32);
        let second = pipe.open(&platform, true, true, 32);
        if k == 1 {
            assert_eq!(first, Err(Error::NoMemory));
            assert_eq!(second, Ok(()));
            assert_eq!((pipe.readers(), pipe.writers()), (1, 1));
        } else {
            assert_eq!(first, Ok(()));
            assert_eq!(second, Ok(()), "already allocated: no new allocation");
        }
        assert_eq!(pipe.write(b"hello"), Ok(5));
        while pipe.readers() > 0 {
            pipe.release(true, true);
        }
        assert_eq!(platform.stats().outstanding(), 0, "k={k}");
    }
}

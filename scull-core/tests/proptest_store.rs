//! Random operation sequences on the quantum store against a plain `Vec<u8>`
//! reference (plus the set of allocated quanta, which decides where holes
//! are), across random geometries and size caps (`scull_max_size`).

use proptest::prelude::*;
use scull_core::geometry::Geometry;
use scull_core::host::HostPlatform;
use scull_core::store::{seek, Store, Whence};
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    Read(u64, usize),
    SetLen(u64),
    Trim,
    Seek(u8, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..300, prop::collection::vec(any::<u8>(), 0..80)).prop_map(|(p, d)| Op::Write(p, d)),
        4 => (0u64..320, 0usize..120).prop_map(|(p, n)| Op::Read(p, n)),
        1 => (0u64..300).prop_map(Op::SetLen),
        1 => Just(Op::Trim),
        1 => (0u8..3, -50i64..350).prop_map(|(w, o)| Op::Seek(w, o)),
    ]
}

/// The reference: contents, size, and which quanta exist.
struct Reference {
    data: Vec<u8>,
    size: u64,
    quanta: BTreeSet<u64>,
    quantum: u64,
    max_size: u64,
}

impl Reference {
    fn new(quantum: u64, max_size: u64) -> Reference {
        Reference { data: Vec::new(), size: 0, quanta: BTreeSet::new(), quantum, max_size }
    }

    /// The cap's rule: nothing at or past it, a crossing write cut short.
    fn write(&mut self, pos: u64, d: &[u8]) -> Result<usize, scull_core::Error> {
        if d.is_empty() {
            return Ok(0);
        }
        if pos >= self.max_size {
            return Err(scull_core::Error::FileTooBig);
        }
        let d = &d[..d.len().min((self.max_size - pos) as usize)];
        let end = pos + d.len() as u64;
        if self.data.len() < end as usize {
            self.data.resize(end as usize, 0);
        }
        self.data[pos as usize..end as usize].copy_from_slice(d);
        for q in pos / self.quantum..=(end - 1) / self.quantum {
            self.quanta.insert(q);
        }
        self.size = self.size.max(end);
        Ok(d.len())
    }

    fn read(&self, pos: u64, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = pos;
        let end = (pos + n as u64).min(self.size);
        while at < end {
            if !self.quanta.contains(&(at / self.quantum)) {
                break;
            }
            out.push(self.data.get(at as usize).copied().unwrap_or(0));
            at += 1;
        }
        out
    }

    fn set_len(&mut self, len: u64) -> Result<(), scull_core::Error> {
        if len > self.max_size {
            return Err(scull_core::Error::FileTooBig);
        }
        if len < self.size {
            let q = self.quantum;
            self.quanta.retain(|&i| i * q < len);
            for b in self.data.iter_mut().skip(len as usize) {
                *b = 0;
            }
        }
        self.size = len;
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_reference(quantum in 1i64..24, qset in 1i64..6, max_size in 1u64..400, ops in prop::collection::vec(op(), 1..60)) {
        let geom = Geometry::new(quantum, qset).unwrap().with_max_size(max_size).unwrap();
        let platform = HostPlatform::new();
        let mut s = Store::new(platform.clone(), geom);
        let mut r = Reference::new(quantum as u64, max_size);
        let mut pos = 0u64;
        for op in ops {
            match op {
                Op::Write(p, d) => {
                    prop_assert_eq!(s.write(p, &d), r.write(p, &d));
                }
                Op::Read(p, n) => {
                    let mut buf = vec![0xAAu8; n];
                    let got = s.read(p, &mut buf).unwrap();
                    prop_assert_eq!(&buf[..got], &r.read(p, n)[..]);
                    prop_assert!(buf[got..].iter().all(|&b| b == 0xAA), "read wrote past its count");
                }
                Op::SetLen(l) => {
                    prop_assert_eq!(s.set_len(l), r.set_len(l));
                }
                Op::Trim => {
                    s.trim(geom);
                    r = Reference::new(quantum as u64, max_size);
                }
                Op::Seek(w, o) => {
                    let whence = Whence::from_raw(w as u32).unwrap();
                    let base: i64 = match whence { Whence::Set => 0, Whence::Cur => pos as i64, Whence::End => r.size as i64 };
                    let expect = if base + o >= 0 { Ok((base + o) as u64) } else { Err(scull_core::Error::Invalid) };
                    let got = seek(pos, s.size(), whence, o);
                    prop_assert_eq!(got, expect);
                    if let Ok(p) = got { pos = p; }
                }
            }
            prop_assert_eq!(s.size(), r.size);
            prop_assert!(s.size() <= max_size, "the size never passes the cap");
            let st = s.stats();
            prop_assert_eq!(st.quanta, r.quanta.len(), "allocated quanta match the reference");
            prop_assert!(st.qsets <= st.quanta.max(1) * 1 + st.qsets, "sanity");
        }
        drop(s);
        prop_assert_eq!(platform.stats().outstanding(), 0, "everything freed");
    }

    #[test]
    fn ring_matches_vecdeque(cap in 2usize..40, ops in prop::collection::vec((any::<bool>(), 0usize..50), 1..200)) {
        use scull_core::pipe::Ring;
        use std::collections::VecDeque;
        let mut ring = Ring::new(vec![0u8; cap]).unwrap();
        let mut reference = VecDeque::new();
        let mut counter = 0u8;
        for (is_write, n) in ops {
            if is_write {
                let data: Vec<u8> = (0..n).map(|_| { counter = counter.wrapping_add(1); counter }).collect();
                let w = ring.write(&data);
                prop_assert_eq!(w, n.min(cap - 1 - reference.len()));
                reference.extend(&data[..w]);
            } else {
                let mut out = vec![0u8; n];
                let got = ring.read(&mut out);
                prop_assert_eq!(got, n.min(reference.len()));
                let expect: Vec<u8> = reference.drain(..got).collect();
                prop_assert_eq!(&out[..got], &expect[..]);
            }
            prop_assert_eq!(ring.readable(), reference.len());
            prop_assert_eq!(ring.readable() + ring.writable(), cap - 1);
        }
    }
}

proptest! {
    /// Geometry validation is exactly: positive, quantum <= 4 MiB, qset <= 2^19, product fits an i32.
    #[test]
    fn geometry_validation_matches_arithmetic(q in -10i64..(5 << 20), s in -10i64..(1 << 22)) {
        let valid = q > 0 && s > 0 && q <= (4 << 20) && s <= (1 << 19) && (q as i128 * s as i128) <= i32::MAX as i128;
        prop_assert_eq!(Geometry::new(q, s).is_ok(), valid);
    }

    /// The pipe state machine (open/release/read/write) against a VecDeque,
    /// including the buffer's lifetime: freed with the last handle.
    #[test]
    fn pipe_matches_reference(ops in prop::collection::vec((0u8..5, 0usize..40), 1..150)) {
        use scull_core::pipe::Pipe;
        use std::collections::VecDeque;
        let platform = HostPlatform::new();
        let mut pipe: Pipe<HostPlatform> = Pipe::new();
        let mut reference: VecDeque<u8> = VecDeque::new();
        let mut open = 0u32;
        let mut cap = 0usize;
        let mut next = 0u8;
        for (op, n) in ops {
            match op {
                0 => {
                    if open == 0 { cap = n.max(2); }
                    pipe.open(&platform, true, true, n.max(2)).unwrap();
                    open += 1;
                }
                1 if open > 0 => {
                    pipe.release(true, true);
                    open -= 1;
                    if open == 0 { reference.clear(); }
                }
                2 if open > 0 => {
                    let data: Vec<u8> = (0..n).map(|_| { next = next.wrapping_add(1); next }).collect();
                    let free = cap - 1 - reference.len();
                    let atomic = n <= scull_core::pipe::PIPE_ATOMIC.min(cap - 1);
                    match pipe.write(&data) {
                        Ok(w) => {
                            prop_assert_eq!(w, n.min(free));
                            prop_assert!(!atomic || w == n, "an atomic write was split");
                            reference.extend(&data[..w]);
                        }
                        Err(e) => {
                            prop_assert_eq!(e, scull_core::Error::WouldBlock);
                            prop_assert!(n > 0 && (free == 0 || (atomic && free < n)));
                        }
                    }
                }
                _ if open > 0 => {
                    let mut out = vec![0u8; n];
                    match pipe.read(&mut out) {
                        Ok(r) => {
                            prop_assert_eq!(r, n.min(reference.len()));
                            let want: Vec<u8> = reference.drain(..r).collect();
                            prop_assert_eq!(&out[..r], &want[..]);
                        }
                        Err(e) => { prop_assert_eq!(e, scull_core::Error::WouldBlock); prop_assert!(reference.is_empty() && n > 0); }
                    }
                }
                _ => {
                    prop_assert_eq!(pipe.write(b"x"), Err(scull_core::Error::NoDevice));
                }
            }
            prop_assert_eq!(pipe.readable(), !reference.is_empty());
            prop_assert_eq!(platform.stats().outstanding(), usize::from(open > 0));
        }
    }
}

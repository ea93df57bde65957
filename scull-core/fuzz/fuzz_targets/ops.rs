//! Interprets fuzz input as a sequence of scull operations (store I/O, seeks,
//! set_len, trims with random geometries, pipe traffic, raw ioctl codes with
//! random values and privilege, injected allocation failures) and checks the
//! invariants after each: no panic, stored bytes match a shadow copy wherever
//! the store reports data, nothing leaks after the final trim.
//!
//! Run: `cd scull-core && cargo +nightly fuzz run ops` (not part of CI).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scull_core::geometry::{Geometry, Params};
use scull_core::host::HostPlatform;
use scull_core::ioctl::{execute, Cmd};
use scull_core::pipe::Pipe;
use scull_core::store::{seek, Store, Whence};
use scull_core::Error;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([self.byte()?, self.byte()?, self.byte()?, self.byte()?]))
    }
    fn u64(&mut self) -> Option<u64> {
        Some((self.u32()? as u64) << 32 | self.u32()? as u64)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let platform = HostPlatform::new();
    let params = Params::new();
    let mut store = Store::new(platform.clone(), Geometry::new(7, 3).unwrap());
    let mut shadow: Vec<u8> = Vec::new(); // bytes the store acknowledged, below 1 MiB
    let mut pipe: Pipe<HostPlatform> = Pipe::new();
    let mut pos = 0u64;
    while let Some(op) = inp.byte() {
        match op % 9 {
            0 => {
                let len = inp.byte().unwrap_or(0) as usize;
                let at = if inp.byte().unwrap_or(0) & 1 == 0 { pos % 4096 } else { inp.u64().unwrap_or(0) };
                let bytes: Vec<u8> = (0..len).map(|i| (i as u8) ^ op).collect();
                match store.write(at, &bytes) {
                    Ok(n) => {
                        assert!(n <= len);
                        if at < (1 << 20) {
                            let end = at as usize + n;
                            if shadow.len() < end {
                                shadow.resize(end, 0);
                            }
                            shadow[at as usize..end].copy_from_slice(&bytes[..n]);
                        }
                    }
                    Err(e) => assert!(matches!(e, Error::NoMemory | Error::FileTooBig), "{e:?}"),
                }
            }
            1 => {
                let at = (inp.u32().unwrap_or(0) % 8192) as u64;
                let mut buf = vec![0u8; inp.byte().unwrap_or(0) as usize];
                let n = store.read(at, &mut buf).unwrap();
                for (i, b) in buf[..n].iter().enumerate() {
                    let want = shadow.get(at as usize + i).copied().unwrap_or(0);
                    assert_eq!(*b, want, "byte {} differs", at as usize + i);
                }
            }
            2 => {
                let w = inp.byte().unwrap_or(0) as u32 % 4;
                let off = inp.u64().unwrap_or(0) as i64;
                match Whence::from_raw(w) {
                    Ok(wh) => {
                        if let Ok(p) = seek(pos, store.size(), wh, off) {
                            assert!(p <= i64::MAX as u64);
                            pos = p;
                        }
                    }
                    Err(e) => assert_eq!(e, Error::Invalid),
                }
            }
            3 => {
                let len = (inp.u32().unwrap_or(0) % 8192) as u64;
                store.set_len(len).unwrap();
                if (len as usize) < shadow.len() {
                    shadow.truncate(len as usize);
                }
            }
            4 => {
                let q = inp.byte().unwrap_or(1) as i64 - 8;
                let s = inp.byte().unwrap_or(1) as i64 - 8;
                let g = Geometry::new(q, s).unwrap_or(Geometry::new(5, 2).unwrap());
                store.trim(g);
                shadow.clear();
                assert_eq!(platform.stats().outstanding(), pipe_blocks(&pipe));
            }
            5 => {
                let code = inp.u32().unwrap_or(0);
                let value = inp.u32().unwrap_or(0) as i32;
                let privileged = inp.byte().unwrap_or(0) & 1 == 1;
                let cmd = if code & 1 == 0 { Cmd::from_windows_code(code) } else { Cmd::from_linux_code(code) };
                if let Ok(cmd) = cmd {
                    let before = params.geometry();
                    match execute(&params, cmd, value, privileged) {
                        Ok(_) => {}
                        Err(Error::Perm) => assert_eq!(params.geometry(), before),
                        Err(Error::Invalid) => assert_eq!(params.geometry(), before),
                        Err(e) => panic!("{e:?}"),
                    }
                    let g = params.geometry();
                    assert!(g.span() <= i32::MAX as u64 && g.quantum() > 0 && g.qset() > 0);
                }
            }
            6 => {
                let size = inp.byte().unwrap_or(0) as usize;
                if pipe.readers() < 4 {
                    let _ = pipe.open(&platform, true, true, size);
                } else {
                    pipe.release(true, true);
                }
            }
            7 => {
                let n = inp.byte().unwrap_or(0) as usize;
                let _ = pipe.write(&vec![op; n]);
                let mut out = vec![0u8; inp.byte().unwrap_or(0) as usize];
                match pipe.read(&mut out) {
                    Ok(k) => assert!(k <= out.len()),
                    Err(e) => assert!(matches!(e, Error::WouldBlock | Error::NoDevice), "{e:?}"),
                }
            }
            _ => platform.stats().fail_after(inp.byte().unwrap_or(0) as u64 % 8),
        }
    }
    platform.stats().fail_after(0);
    store.trim(Geometry::DEFAULT);
    while pipe.readers() > 0 {
        pipe.release(true, true);
    }
    drop(store);
    assert_eq!(platform.stats().outstanding(), 0, "leak");
});

fn pipe_blocks(p: &Pipe<HostPlatform>) -> usize {
    usize::from(p.stats().buffer > 0)
}

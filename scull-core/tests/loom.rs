//! loom models of the pipe and the access policies, locked the way the host
//! model device locks them (a mutex around the state, a condition variable
//! for blocked callers). Run with `RUSTFLAGS="--cfg loom"` (cargo xtask test
//! does).
#![cfg(loom)]

use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use scull_core::access::{Caller, SingleOpen, WaitUid};
use scull_core::host::HostPlatform;
use scull_core::pipe::Pipe;
use scull_core::Error;

/// A blocked reader is woken by a writer and gets the bytes in order.
#[test]
fn pipe_reader_woken_by_writer() {
    loom::model(|| {
        let platform = HostPlatform::new();
        let mut pipe: Pipe<HostPlatform> = Pipe::new();
        pipe.open(&platform, true, true, 4).unwrap();
        let shared = Arc::new((Mutex::new(pipe), Condvar::new(), Condvar::new()));

        let w = shared.clone();
        let writer = thread::spawn(move || {
            let data = b"abcde";
            let mut sent = 0;
            let (m, readable, writable) = &*w;
            let mut p = m.lock().unwrap();
            while sent < data.len() {
                match p.write(&data[sent..]) {
                    Ok(n) => {
                        sent += n;
                        readable.notify_all();
                    }
                    Err(Error::WouldBlock) => p = writable.wait(p).unwrap(),
                    Err(e) => panic!("{e}"),
                }
            }
        });

        let (m, readable, writable) = &*shared;
        let mut got = Vec::new();
        let mut p = m.lock().unwrap();
        while got.len() < 5 {
            let mut buf = [0u8; 5];
            match p.read(&mut buf) {
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    writable.notify_all();
                }
                Err(Error::WouldBlock) => p = readable.wait(p).unwrap(),
                Err(e) => panic!("{e}"),
            }
        }
        drop(p);
        writer.join().unwrap();
        assert_eq!(got, b"abcde");
    });
}

/// Two racing opens of scullsingle: exactly one wins.
#[test]
fn single_open_race() {
    loom::model(|| {
        let s = Arc::new(SingleOpen::new());
        let s2 = s.clone();
        let t = thread::spawn(move || s2.open().is_ok());
        let mine = s.open().is_ok();
        let theirs = t.join().unwrap();
        assert!(mine ^ theirs, "exactly one open succeeds");
        s.release();
        assert!(s.open().is_ok());
    });
}

/// scullwuid: another user blocks until the owner's last close wakes it.
#[test]
fn wait_uid_waiter_proceeds_after_last_close() {
    loom::model(|| {
        let shared = Arc::new((Mutex::new(WaitUid::<u32>::new()), Condvar::new()));
        let owner = Caller::new(1000, false);
        let other = Caller::new(1001, false);
        shared.0.lock().unwrap().open(&owner).unwrap();

        let s2 = shared.clone();
        let waiter = thread::spawn(move || {
            let (m, cv) = &*s2;
            let mut w = m.lock().unwrap();
            loop {
                match w.open(&other) {
                    Ok(()) => return w.state().owner(),
                    Err(Error::WouldBlock) => w = cv.wait(w).unwrap(),
                    Err(e) => panic!("{e}"),
                }
            }
        });

        let (m, cv) = &*shared;
        let mut w = m.lock().unwrap();
        if w.release() {
            cv.notify_all();
        }
        drop(w);
        assert_eq!(waiter.join().unwrap(), Some(1001));
    });
}

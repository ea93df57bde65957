//! Windows-only cases (the `windows`, `wine` and `ntsim` targets): the
//! DeviceIoControl-level ABI, cancellation and handle close with pended
//! IRPs, the bridge IOCTLs.

use super::check::{case, check, expect_err, ok, open_modes, stats_field, R};
use super::Case;
use crate::backend::windows::{device_io_control_more, open_raw, proxy, test_op, wide, wine, Owned, TEST_OP_QUERY, WIN_IOCTL_TEST};
use crate::backend::{Caps, OpenOpts, Target, Who};
use crate::win32::CreateFileW;
use scull_core::devices::Dev;
use scull_core::ioctl::{self, Cmd};
use scull_core::report::field;
use scull_core::store::Whence;
use scull_core::Error;
use std::ptr::null_mut;
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::{GENERIC_READ, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{FILE_SHARE_READ, OPEN_EXISTING};

/// The driver's outstanding pool blocks: the test build's test IOCTL, or
/// under ntsim the kernel's own pool accounting (no driver help needed).
fn outstanding_blocks(t: &dyn Target) -> Result<u64, Error> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if t.name() == "ntsim" {
        return Ok(crate::backend::windows::ntsim::outstanding_blocks());
    }
    test_op(t.name() == "wine", TEST_OP_QUERY, 0).map(|r| r.outstanding as u64)
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The cases every Windows target runs (`ntsim` without the bridge ones).
pub fn cases() -> Vec<Case> {
    vec![
        case!("win_", pended_read_counted_then_cancelled),
        case!("win_", cancelioex_leaves_other_reads_queued),
        case!("win_", close_with_two_pended_reads),
        case!("win_", pended_read_completed_by_child_process),
        case!("win_", bad_ioctl_codes),
        case!("win_", short_buffers_every_command),
        case!("win_", stats_short_buffer_more_data),
        Case { name: "win_bridge_ioctls_validate", needs: bridge, run: bridge_ioctls_validate },
        Case { name: "win_bridge_read_handle_cannot_change_data", needs: bridge, run: bridge_read_handle_cannot_change_data },
        Case { name: "win_release_build_has_no_bridge", needs: release_build, run: release_build_has_no_bridge },
        case!("win_", vendor_codes_outside_the_commands_are_unknown),
        Case { name: "win_eof_and_set_len_through_driver", needs: open_modes, run: eof_and_set_len_through_driver },
        case!("win_", unknown_path_suffix_refused),
        Case { name: "win_scullpriv_per_process", needs: open_modes, run: scullpriv_per_process },
        Case { name: "win_wuid_pended_create_completed_by_owner_close", needs: second_user, run: wuid_pend },
        Case { name: "win_wuid_pended_create_cancelled", needs: second_user, run: wuid_cancel_pended },
        Case { name: "win_wuid_cancel_races_owner_close", needs: second_user, run: wuid_cancel_races_owner_close },
    ]
}

/// A pended IRP_MJ_CREATE needs an opener with another identity: the
/// driver's test identity mode (`scull_test_identity=1`) gives each
/// process its own, and `Who::Other` is a child process (see [`proxy`]).
/// Under Wine, which does not wait for IRP_MJ_CREATE, the wait shows in
/// the bridge call that follows CreateFile.
fn second_user(c: &Caps) -> Option<&'static str> {
    (!c.other_user).then_some("needs a second identity (load the driver with scull_test_identity=1)")
}

/// The bridge cases: under Wine only the test build has the bridge; a
/// native Windows target never uses it.
fn bridge(_: &Caps) -> Option<&'static str> {
    (!wine::has_bridge()).then_some("needs the test build's bridge IOCTLs (cargo xtask wdm --test-build)")
}

fn release_build(_: &Caps) -> Option<&'static str> {
    wine::has_bridge().then_some("the loaded scull.sys is the test build (it has the bridge)")
}

/// The release scull.sys: every bridge code and the test IOCTL, with
/// well-sized buffers, on read-only, write-only and read-write handles of
/// a store and a pipe, is ERROR_INVALID_FUNCTION (an unknown IOCTL).
fn release_build_has_no_bridge(t: &dyn Target) -> R {
    let codes = ioctl::WIN_BRIDGE_CODES.into_iter().chain([WIN_IOCTL_TEST]);
    for code in codes {
        for dev in [Dev::Scull(0), Dev::Pipe(0)] {
            for o in [OpenOpts::R, OpenOpts::W, OpenOpts::RW] {
                // A FILE_WRITE_ACCESS code on a read-only handle stops in the
                // I/O manager (ERROR_ACCESS_DENIED) before any driver.
                if ioctl::ctl_access(code) & ioctl::WIN_FILE_WRITE_ACCESS != 0 && !o.write {
                    continue;
                }
                let mut h = ok(t.open(dev, o), "open")?;
                let input = [0u8; 8];
                expect_err(h.ioctl_raw(code, &input, 32), &[Error::NotTty], &format!("code {code:#x} on {dev:?} {o:?}"))?;
            }
        }
    }
    Ok(())
}

/// Every vendor code (device type 0x8000, functions 0x800..0x8ff, every
/// method and access level) other than scull's 16 commands (and, in the
/// test build, its bridge and test codes) is ERROR_INVALID_FUNCTION.
fn vendor_codes_outside_the_commands_are_unknown(t: &dyn Target) -> R {
    let mut h = ok(t.open(Dev::Scull(0), OpenOpts::RW), "open")?;
    let mut known: Vec<u32> = Cmd::ALL.iter().map(|c| c.windows_code()).collect();
    if wine::has_bridge() {
        known.extend(ioctl::WIN_BRIDGE_CODES);
        known.push(WIN_IOCTL_TEST);
    }
    let mut n = 0;
    for function in 0x800..0x900 {
        for method in 0..4 {
            for access in 0..4 {
                let code = ioctl::ctl_code(ioctl::WIN_DEVICE_TYPE, function, method, access);
                if known.contains(&code) {
                    continue;
                }
                // METHOD_NEITHER/direct with small buffers: the driver must
                // refuse without touching them.
                expect_err(h.ioctl_raw(code, &[0; 8], 8), &[Error::NotTty], &format!("code {code:#x}"))?;
                n += 1;
            }
        }
    }
    check!(n == 4096 - known.len(), "swept {n} codes");
    Ok(())
}

/// A handle opened for reading only must not change data through the
/// bridge: truncation on the FILE_ANY_ACCESS code is refused by the
/// driver, and the FILE_WRITE_ACCESS codes (OPEN_FLAGS_WRITE, SET_EOF)
/// by the I/O manager (ERROR_ACCESS_DENIED), as SetEndOfFile would be.
fn bridge_read_handle_cannot_change_data(t: &dyn Target) -> R {
    let mut w = ok(t.open(Dev::Scull(1), OpenOpts::TRUNC), "open for writing")?;
    check!(ok(w.write(b"keep me"), "write")? == 7, "write");
    drop(w);
    let mut r = ok(t.open(Dev::Scull(1), OpenOpts::R), "open read-only")?;
    let trunc = ioctl::WIN_OPEN_TRUNCATE.to_le_bytes();
    expect_err(r.ioctl_raw(ioctl::WIN_IOCTL_OPEN_FLAGS, &trunc, 0), &[Error::Perm], "OPEN_FLAGS(TRUNCATE) on a read-only handle")?;
    expect_err(r.ioctl_raw(ioctl::WIN_IOCTL_OPEN_FLAGS_WRITE, &trunc, 0), &[Error::Perm], "OPEN_FLAGS_WRITE(TRUNCATE) on a read-only handle")?;
    expect_err(r.ioctl_raw(ioctl::WIN_IOCTL_SET_EOF, &0i64.to_le_bytes(), 0), &[Error::Perm], "SET_EOF(0) on a read-only handle")?;
    let mut b = [0u8; 16];
    let n = ok(r.read(&mut b), "read")?;
    check!(&b[..n] == b"keep me", "the store after the refused calls holds {:?}", &b[..n]);
    let size = stats_field(t, "scull1", "size")?;
    check!(size == "7", "scull1 size={size}");
    Ok(())
}

/// A pended scullwuid open whose waiting (bridge) call is cancelled
/// while the owner's last close grants it. Either outcome is fine (the
/// open is granted, or cancelled), but afterwards the device must be
/// free: nobody may keep it owned after closing.
fn wuid_cancel_races_owner_close(t: &dyn Target) -> R {
    let wine = t.name() == "wine";
    let (mut granted, mut cancelled) = (0, 0);
    for round in 0..12u32 {
        let owner = ok(t.open(Dev::Wuid, OpenOpts::RW), "owner opens scullwuid")?;
        let mut p = ok(proxy::Proxy::spawn(wine, Dev::Wuid, OpenOpts::R), "spawn the other user")?;
        match p.opened(Duration::from_millis(400)) {
            Err(Error::WouldBlock) => {}
            other => return Err(format!("round {round}: the other user's open did not wait: {other:?}")),
        }
        // Close and cancel as close together as two threads get them.
        let gate = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                gate.wait();
                if round % 2 == 1 {
                    std::thread::sleep(Duration::from_micros(200 * (round as u64 % 5)));
                }
                drop(owner);
            });
            gate.wait();
            let _ = p.cancel_open();
        });
        match p.opened(Duration::from_secs(10)) {
            Ok(()) => granted += 1,
            Err(Error::Interrupted) => cancelled += 1,
            // The child exits on a cancel that finds its open finished
            // (or, natively, still in CreateFile): its handle closes.
            Err(Error::Invalid) => cancelled += 1,
            other => return Err(format!("round {round}: the raced open ended {other:?}")),
        }
        drop(p);
        // Free for a third user, without waiting.
        let started = Instant::now();
        let mut q = ok(proxy::Proxy::spawn(wine, Dev::Wuid, OpenOpts::R), "spawn a third user")?;
        match q.opened(Duration::from_secs(5)) {
            Ok(()) => {}
            other => return Err(format!("round {round}: scullwuid stayed owned after the raced open closed: {other:?} after {:?}", started.elapsed())),
        }
        drop(q);
    }
    // stderr: stdout holds only the suite's own lines (with `--format json`,
    // one JSON object per case), which harnesses parse.
    eprintln!("  wuid cancel/close race: {granted} granted, {cancelled} cancelled");
    Ok(())
}

fn wuid_cancel_pended(t: &dyn Target) -> R {
    let wine = t.name() == "wine";
    let owner = ok(t.open(Dev::Wuid, OpenOpts::RW), "owner opens scullwuid")?;
    let base = ok(outstanding_blocks(t), "outstanding blocks")?;
    let mut p = ok(proxy::Proxy::spawn(wine, Dev::Wuid, OpenOpts::R), "spawn the other user")?;
    match p.opened(Duration::from_millis(700)) {
        Err(Error::WouldBlock) => {}
        other => return Err(format!("the other user's open did not wait: {other:?}")),
    }
    ok(p.cancel_open(), "send cancel")?;
    match p.opened(Duration::from_secs(10)) {
        Err(Error::Interrupted) => {}
        // Real Windows: CreateFile itself blocks; the child exits to cancel it.
        Err(Error::Invalid) if !wine => {}
        other => return Err(format!("the cancelled open: {other:?}, want ERROR_OPERATION_ABORTED")),
    }
    drop(p);
    let now = ok(outstanding_blocks(t), "outstanding blocks")?;
    check!(now == base, "the waiter's record leaked: {} blocks, {} before", now, base);
    drop(owner);
    // The cancelled waiter was not admitted: the device is free for anyone.
    let started = Instant::now();
    let q = ok(t.open_as(Who::Other, Dev::Wuid, OpenOpts::R), "another user opens the freed scullwuid")?;
    check!(started.elapsed() < Duration::from_secs(5), "the freed device made a new user wait");
    drop(q);
    drop(ok(t.open(Dev::Wuid, OpenOpts::R), "the first user reopens")?);
    Ok(())
}

fn wuid_pend(t: &dyn Target) -> R {
    let owner = ok(t.open(Dev::Wuid, OpenOpts::RW), "owner opens scullwuid")?;
    let started = Instant::now();
    let r = std::thread::scope(|s| {
        let waiter = s.spawn(|| t.open_as(Who::Other, Dev::Wuid, OpenOpts::R).map(drop));
        std::thread::sleep(Duration::from_millis(300));
        drop(owner);
        waiter.join()
    });
    let r = r.map_err(|_| "waiter panicked".to_string())?;
    ok(r, "the other user's open, completed by the owner's last close")?;
    check!(started.elapsed() >= Duration::from_millis(250), "the other user's open did not wait");
    Ok(())
}

fn pended_read_counted_then_cancelled(t: &dyn Target) -> R {
    let mut p = ok(t.read_cancellable(Dev::Pipe(1), 8), "pend a read")?;
    check!(
        wait_until(|| stats_field(t, "scullpipe1", "waiting_readers").as_deref() == Ok("1")),
        "the pended read is not counted: {:?}",
        stats_field(t, "scullpipe1", "waiting_readers")
    );
    check!(!p.is_done(), "a read on an empty pipe completed");
    ok(p.cancel(false), "CancelIoEx")?;
    expect_err(p.wait(Duration::from_secs(10)), &[Error::Interrupted], "cancelled read")?;
    let w = stats_field(t, "scullpipe1", "waiting_readers")?;
    check!(w == "0", "waiting_readers={w} after CancelIoEx");
    Ok(())
}

fn cancelioex_leaves_other_reads_queued(t: &dyn Target) -> R {
    let mut a = ok(t.read_cancellable(Dev::Pipe(2), 4), "read a")?;
    let b = ok(t.read_cancellable(Dev::Pipe(2), 4), "read b")?;
    check!(
        wait_until(|| stats_field(t, "scullpipe2", "waiting_readers").as_deref() == Ok("2")),
        "two pended reads expected: {:?}",
        stats_field(t, "scullpipe2", "waiting_readers")
    );
    ok(a.cancel(false), "cancel a")?;
    expect_err(a.wait(Duration::from_secs(10)), &[Error::Interrupted], "read a")?;
    let mut w = ok(t.open(Dev::Pipe(2), OpenOpts::W), "writer")?;
    check!(ok(w.write(b"left"), "write")? == 4, "write count");
    let got = ok(b.wait(Duration::from_secs(10)), "read b completes")?;
    check!(got == b"left", "read b got {got:?}");
    Ok(())
}

fn close_with_two_pended_reads(t: &dyn Target) -> R {
    let mut a = ok(t.read_cancellable(Dev::Pipe(3), 4), "read a")?;
    let mut b = ok(t.read_cancellable(Dev::Pipe(3), 4), "read b")?;
    check!(
        wait_until(|| stats_field(t, "scullpipe3", "waiting_readers").as_deref() == Ok("2")),
        "two pended reads expected"
    );
    ok(a.cancel(true), "close a")?;
    ok(b.cancel(true), "close b")?;
    expect_err(a.wait(Duration::from_secs(10)), &[Error::Interrupted], "read a")?;
    expect_err(b.wait(Duration::from_secs(10)), &[Error::Interrupted], "read b")?;
    check!(
        wait_until(|| stats_field(t, "scullpipe3", "readers").as_deref() == Ok("0")),
        "the closed handles still count as readers: {:?}",
        stats_field(t, "scullpipe3", "readers")
    );
    let w = stats_field(t, "scullpipe3", "waiting_readers")?;
    check!(w == "0", "waiting_readers={w}");
    let b = stats_field(t, "scullpipe3", "buffer")?;
    check!(b == "0", "the last close must free the pipe buffer, buffer={b}");
    Ok(())
}

fn pended_read_completed_by_child_process(t: &dyn Target) -> R {
    check!(t.caps().processes, "this target runs writers in threads");
    let p = ok(t.read_cancellable(Dev::Pipe(0), 5), "pend a read")?;
    let w = ok(t.spawn_writer(Dev::Pipe(0), b"child".to_vec(), Duration::from_millis(200)), "spawn")?;
    let got = ok(p.wait(Duration::from_secs(20)), "read completed by the child's write")?;
    check!(ok(w.join(), "child")? == 5, "child count");
    check!(got == b"child", "{got:?}");
    Ok(())
}

fn bad_ioctl_codes(t: &dyn Target) -> R {
    let mut h = ok(t.open(Dev::Scull(0), OpenOpts::R), "open")?;
    let q = Cmd::QQuantum.windows_code();
    let bad = [
        q | 3,                                            // METHOD_NEITHER
        q | (1 << 14),                                    // FILE_READ_ACCESS
        (q & 0xffff) | (0x22 << 16),                      // FILE_DEVICE_UNKNOWN
        ioctl::ctl_code(0x8000, 0x800 + 16, 0, 0),        // past MAXNR
        ioctl::ctl_code(0x8000, 0x7ff, 0, 0),             // below the base
        0,
    ];
    for code in bad {
        expect_err(h.ioctl_raw(code, &[0; 4], 4), &[Error::NotTty], &format!("code {code:#x}"))?;
    }
    Ok(())
}

fn short_buffers_every_command(t: &dyn Target) -> R {
    let mut h = ok(t.open(Dev::Scull(0), OpenOpts::RW), "open")?;
    for cmd in Cmd::ALL {
        if cmd == Cmd::Stats {
            expect_err(h.ioctl_raw(cmd.windows_code(), &[], 0), &[Error::BufferTooSmall], "STATS, no output buffer")?;
            continue;
        }
        if cmd.windows_in_len() > 0 {
            let out = cmd.windows_out_len();
            expect_err(h.ioctl_raw(cmd.windows_code(), &[0; 3], out), &[Error::BufferTooSmall], &format!("{cmd:?} 3-byte input"))?;
        }
        if cmd.windows_out_len() > 0 {
            let inp = vec![0u8; cmd.windows_in_len()];
            expect_err(h.ioctl_raw(cmd.windows_code(), &inp, 3), &[Error::BufferTooSmall], &format!("{cmd:?} 3-byte output"))?;
        }
    }
    check!(ok(h.ioctl(Cmd::QQuantum, 0), "QQUANTUM")? == scull_core::geometry::DEFAULT_QUANTUM, "a short buffer changed a value");
    Ok(())
}

fn stats_short_buffer_more_data(t: &dyn Target) -> R {
    let mut h = ok(t.open(Dev::Scull(0), OpenOpts::R), "open")?;
    let full = ok(h.stats(), "stats")?;
    check!(full.len() > 20, "report too short: {full}");
    let wh = open_raw(Dev::Scull(0), OpenOpts::R, t.name() == "wine", false).map_err(|e| e.to_string())?;
    match device_io_control_more(wh.0, Cmd::Stats.windows_code(), &[], 10) {
        Err((Error::BufferTooSmall, part)) => {
            check!(part.len() == 10 && full.as_bytes().starts_with(&part), "partial report {part:?}");
        }
        other => return Err(format!("10-byte STATS: {other:?}, want ERROR_MORE_DATA with 10 bytes")),
    }
    Ok(())
}

fn bridge_ioctls_validate(t: &dyn Target) -> R {
    let mut h = ok(t.open(Dev::Scull(2), OpenOpts::RW), "open")?;
    expect_err(h.ioctl_raw(ioctl::WIN_IOCTL_OPEN_FLAGS, &[0; 2], 0), &[Error::BufferTooSmall], "OPEN_FLAGS 2 bytes")?;
    expect_err(h.ioctl_raw(ioctl::WIN_IOCTL_OPEN_FLAGS, &8u32.to_le_bytes(), 0), &[Error::Invalid], "OPEN_FLAGS unknown bit")?;
    expect_err(h.ioctl_raw(ioctl::WIN_IOCTL_GET_EOF, &[], 4), &[Error::BufferTooSmall], "GET_EOF 4 bytes")?;
    expect_err(h.ioctl_raw(ioctl::WIN_IOCTL_SET_EOF, &[0; 4], 0), &[Error::BufferTooSmall], "SET_EOF 4 bytes")?;
    expect_err(h.ioctl_raw(ioctl::WIN_IOCTL_SET_EOF, &(-1i64).to_le_bytes(), 0), &[Error::Invalid], "SET_EOF -1")?;
    let mut p = ok(t.open(Dev::Pipe(0), OpenOpts::R), "open pipe")?;
    expect_err(p.ioctl_raw(ioctl::WIN_IOCTL_GET_EOF, &[], 8), &[Error::NotSeekable], "GET_EOF on a pipe")?;
    Ok(())
}

fn eof_and_set_len_through_driver(t: &dyn Target) -> R {
    let mut h = ok(t.open(Dev::Scull(3), OpenOpts { truncate: true, read: true, ..OpenOpts::W }), "open")?;
    check!(ok(h.write(b"0123456789"), "write")? == 10, "write");
    check!(ok(h.seek(Whence::End, -4), "seek end-4")? == 6, "end-4");
    let mut b = [0u8; 8];
    check!(ok(h.read(&mut b), "read")? == 4 && &b[..4] == b"6789", "{b:?}");
    ok(h.set_len(3), "set_len 3")?;
    check!(ok(h.seek(Whence::End, 0), "seek end")? == 3, "size after set_len");
    let size = stats_field(t, "scull3", "size")?;
    check!(size == "3", "report size={size}");
    Ok(())
}

fn unknown_path_suffix_refused(_t: &dyn Target) -> R {
    let p = wide(r"\\.\Scull0\no-such-suffix");
    // SAFETY: a NUL-terminated path.
    let h = unsafe { CreateFileW(p.as_ptr(), GENERIC_READ, FILE_SHARE_READ, null_mut(), OPEN_EXISTING, 0, null_mut()) };
    if h != INVALID_HANDLE_VALUE {
        drop(Owned(h));
        return Err("a path with an unknown suffix opened".into());
    }
    Ok(())
}

fn scullpriv_per_process(t: &dyn Target) -> R {
    // A private device per process: what this process writes, a child
    // process (another key) does not see in its own device.
    let mut h = ok(t.open(Dev::Priv, OpenOpts { truncate: true, read: true, ..OpenOpts::W }), "open scullpriv")?;
    check!(ok(h.write(b"mine"), "write")? == 4, "write");
    let w = ok(t.spawn_writer(Dev::Priv, b"theirs!".to_vec(), Duration::ZERO), "child writes its own scullpriv")?;
    check!(ok(w.join(), "child")? == 7, "child count");
    ok(h.seek(Whence::Set, 0), "rewind")?;
    let mut b = [0u8; 16];
    let n = ok(h.read(&mut b), "read")?;
    check!(&b[..n] == b"mine", "this process's scullpriv holds {:?}", &b[..n]);
    let mut c = ok(t.open(Dev::Scull(0), OpenOpts::R), "open scull0")?;
    let text = ok(c.stats(), "stats")?;
    let privs: Vec<&str> = text.lines().filter(|l| l.starts_with("scullpriv.")).collect();
    check!(privs.len() >= 2, "two scullpriv instances expected:\n{text}");
    check!(privs.iter().any(|l| field(l, "size") == Some("7")), "the child's instance (size=7) is missing:\n{text}");
    Ok(())
}

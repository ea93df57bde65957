//! The common conformance cases. Each is black-box: it only opens devices and
//! calls read/write/seek/ioctl through the target. Defaults are restored after
//! every case by [`restore`].

use super::check::*;
use super::Case;
use crate::backend::{Handle, OpenOpts, Target, Who};
use scull_core::devices::Dev;
use scull_core::geometry::{DEFAULT_P_BUFFER, DEFAULT_QSET, DEFAULT_QUANTUM};
use scull_core::ioctl::Cmd;
use scull_core::report::field;
use scull_core::store::Whence;
use scull_core::Error;
use std::time::{Duration, Instant};

/// Restores LDD3 defaults and trims the scull devices. Run after every case.
/// RESET and P_IOCTSIZE change state: on Windows their codes require write
/// access (FILE_WRITE_ACCESS), so the control handle is read-write (which
/// trims nothing on any target).
pub fn restore(t: &dyn Target) {
    if let Ok(mut h) = t.open(Dev::Scull(0), OpenOpts::RW) {
        let _ = h.ioctl(Cmd::Reset, 0);
        let _ = h.ioctl(Cmd::PTSize, DEFAULT_P_BUFFER);
    }
    for n in 0..t.caps().nr_devs {
        let _ = t.open(Dev::Scull(n), OpenOpts::TRUNC);
    }
}

pub fn all() -> Vec<Case> {
    vec![
        case!(store_write_read_roundtrip, open_modes),
        case!(store_one_call_spans_quanta, always),
        case!(store_quantum_boundary_reads, always),
        case!(store_read_clamps_to_size, open_modes),
        case!(store_no_stale_bytes, open_modes),
        case!(store_holes_read_short, open_modes),
        case!(store_trim_on_truncating_open, open_modes),
        case!(store_read_write_open_keeps_data, open_modes),
        case!(store_devices_are_independent, open_modes),
        case!(store_zero_length_io, open_modes),
        case!(store_eof_reads_zero, open_modes),
        case!(seek_set_cur_end, open_modes),
        case!(seek_negative_is_invalid, open_modes),
        case!(seek_past_end_then_write_makes_hole, open_modes),
        case!(set_len_shrinks_and_extends_with_zeros, set_len),
        case!(huge_offsets_are_refused_cleanly, open_modes),
        case!(size_cap_cuts_short_then_refuses, open_modes),
        case!(missing_device_fails_to_open, always),
        case!(ioctl_query_defaults, always),
        case!(ioctl_set_and_tell_quantum, privileged),
        case!(ioctl_set_and_tell_qset, privileged),
        case!(ioctl_exchange_and_shift, privileged),
        case!(ioctl_reset_restores_defaults, privileged),
        case!(ioctl_geometry_applies_after_trim, privileged_open_modes),
        case!(ioctl_rejects_bad_geometry, privileged),
        case!(ioctl_privileged_commands_refused, other_user),
        case!(ioctl_unknown_codes_are_not_tty, always),
        case!(ioctl_short_buffers, windows_abi),
        case!(ioctl_pipe_size, always),
        case!(stats_report_format, open_modes),
        case!(pipe_fifo_order, always),
        case!(pipe_partial_write_when_nearly_full, open_modes),
        case!(pipe_nonblocking_read_empty, open_modes),
        case!(pipe_nonblocking_write_full, open_modes),
        case!(pipe_small_writes_are_atomic, open_modes),
        case!(pipe_blocked_reader_woken_by_writer, always),
        case!(pipe_blocked_writer_woken_by_reader, open_modes),
        case!(pipe_zero_length_read_does_not_block, always),
        case!(pipe_not_seekable, pipe_seek),
        case!(pipe_data_survives_another_open, open_modes),
        case!(pipe_last_close_frees_buffer, open_modes),
        case!(pipe_large_transfer_through_small_buffer, always),
        case!(pipe_devices_are_independent, open_modes),
        case!(pipe_cancel_blocked_read, cancel),
        case!(pipe_close_with_blocked_read, cancel),
        case!(pipe_poll_readiness, poll),
        case!(single_second_open_busy, open_modes),
        case!(single_is_a_store, open_modes),
        case!(uid_same_user_reopens, always),
        case!(uid_other_user_busy, other_user),
        case!(wuid_other_user_waits_then_proceeds, other_user),
        case!(wuid_nonblocking_other_user_eagain, other_user_open_modes),
        case!(priv_private_per_key, priv_dev_open_modes),
        case!(open_close_cycles_leave_no_state, always),
    ]
}

// ---------------------------------------------------------------- store

fn store_write_read_roundtrip(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(0))?;
    write_all(&mut *h, b"hello, scull")?;
    ok(h.seek(Whence::Set, 0), "seek")?;
    let got = read_n(&mut *h, 100)?;
    check!(got == b"hello, scull", "read back {:?}", String::from_utf8_lossy(&got));
    Ok(())
}

fn store_one_call_spans_quanta(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(0))?;
    let data = pattern(3 * DEFAULT_QUANTUM as usize + 123, 1);
    let n = ok(h.write(&data), "write")?;
    check!(n == data.len(), "one write of {} bytes returned {n} (must span quanta)", data.len());
    ok(h.seek(Whence::Set, 0), "seek")?;
    let got = read_n(&mut *h, data.len())?;
    check!(got.len() == data.len(), "one read returned {} of {}", got.len(), data.len());
    check!(got == data, "contents differ");
    Ok(())
}

fn store_quantum_boundary_reads(t: &dyn Target) -> R {
    let q = DEFAULT_QUANTUM as i64;
    let mut h = fresh(t, Dev::Scull(0))?;
    let data = pattern(3 * q as usize, 2);
    write_all(&mut *h, &data)?;
    for (at, len) in [(q - 1, 2usize), (q - 10, 20), (2 * q - 1, 1), (2 * q, 1), (q - 1, q as usize + 2)] {
        ok(h.seek(Whence::Set, at), "seek")?;
        let got = read_n(&mut *h, len)?;
        check!(got == data[at as usize..at as usize + len], "read {len} at {at} differs");
    }
    Ok(())
}

fn store_read_clamps_to_size(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(1))?;
    write_all(&mut *h, &pattern(100, 3))?;
    ok(h.seek(Whence::Set, 60), "seek")?;
    let got = read_n(&mut *h, 1000)?;
    check!(got.len() == 40, "read past the end returned {} bytes, want 40", got.len());
    Ok(())
}

fn store_no_stale_bytes(t: &dyn Target) -> R {
    // Fill a quantum with non-zero bytes, trim, then write one byte: the rest
    // of the new quantum must read as zeros, never the old bytes.
    let mut h = fresh(t, Dev::Scull(0))?;
    write_all(&mut *h, &vec![0xA5u8; DEFAULT_QUANTUM as usize])?;
    drop(h);
    let mut h = fresh(t, Dev::Scull(0))?;
    write_all(&mut *h, b"x")?;
    ok(h.seek(Whence::Set, 200), "seek")?;
    write_all(&mut *h, b"y")?;
    ok(h.seek(Whence::Set, 0), "seek")?;
    let got = read_n(&mut *h, 201)?;
    check!(got.len() == 201, "read {} bytes, want 201", got.len());
    check!(got[0] == b'x' && got[200] == b'y', "ends wrong");
    check!(got[1..200].iter().all(|&b| b == 0), "unwritten bytes are not zero: stale memory visible");
    Ok(())
}

fn store_holes_read_short(t: &dyn Target) -> R {
    let q = DEFAULT_QUANTUM as i64;
    let mut h = fresh(t, Dev::Scull(2))?;
    write_all(&mut *h, b"a")?;
    ok(h.seek(Whence::Set, 2 * q + 5), "seek")?;
    write_all(&mut *h, b"b")?;
    let end = ok(h.seek(Whence::End, 0), "seek end")?;
    check!(end == 2 * q as u64 + 6, "size {end}");
    ok(h.seek(Whence::Set, 0), "seek")?;
    let got = read_n(&mut *h, end as usize)?;
    check!(got.len() == q as usize, "read from 0 stops at the hole after quantum 0: got {} bytes", got.len());
    ok(h.seek(Whence::Set, q + 3), "seek")?;
    let got = read_n(&mut *h, 10)?;
    check!(got.is_empty(), "reading inside a hole returned {} bytes", got.len());
    ok(h.seek(Whence::Set, 2 * q), "seek")?;
    let got = read_n(&mut *h, 10)?;
    check!(got == b"\0\0\0\0\0b", "quantum 2 reads {got:?}");
    Ok(())
}

fn store_trim_on_truncating_open(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(0))?;
    write_all(&mut *h, &pattern(5000, 4))?;
    drop(h);
    drop(open(t, Dev::Scull(0), OpenOpts::TRUNC)?);
    let mut h = open(t, Dev::Scull(0), OpenOpts::R)?;
    let end = ok(h.seek(Whence::End, 0), "seek end")?;
    check!(end == 0, "size after a truncating open is {end}");
    let line = stats_line(&ok(h.stats(), "stats")?, "scull0")?;
    check!(field(&line, "quanta") == Some("0"), "memory not freed: {line}");
    Ok(())
}

fn store_read_write_open_keeps_data(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(0))?;
    write_all(&mut *h, b"keep me")?;
    drop(h);
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    let got = read_n(&mut *h, 100)?;
    check!(got == b"keep me", "data after a read-write open: {got:?}");
    drop(h);
    let mut h = open(t, Dev::Scull(0), OpenOpts::R)?;
    check!(read_n(&mut *h, 100)? == b"keep me", "data after a read-only open");
    Ok(())
}

fn store_devices_are_independent(t: &dyn Target) -> R {
    let n = t.caps().nr_devs;
    check!(n >= 2, "need 2 scull devices, target has {n}");
    let mut hs = Vec::new();
    for d in 0..n {
        let mut h = fresh(t, Dev::Scull(d))?;
        write_all(&mut *h, format!("device {d}").as_bytes())?;
        hs.push(h);
    }
    for (d, h) in hs.iter_mut().enumerate() {
        ok(h.seek(Whence::Set, 0), "seek")?;
        let got = read_n(&mut **h, 100)?;
        check!(got == format!("device {d}").as_bytes(), "scull{d} holds {:?}", String::from_utf8_lossy(&got));
    }
    Ok(())
}

fn store_zero_length_io(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(0))?;
    check!(ok(h.write(&[]), "write 0")? == 0, "zero write");
    check!(ok(h.read(&mut []), "read 0")? == 0, "zero read");
    check!(ok(h.seek(Whence::End, 0), "seek")? == 0, "a zero write moved the end");
    Ok(())
}

fn store_eof_reads_zero(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(0))?;
    write_all(&mut *h, b"abc")?;
    check!(read_n(&mut *h, 10)?.is_empty(), "read at EOF returned data");
    ok(h.seek(Whence::Set, 1000), "seek")?;
    check!(read_n(&mut *h, 10)?.is_empty(), "read past EOF returned data");
    Ok(())
}

fn seek_set_cur_end(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(0))?;
    let data = pattern(100, 5);
    write_all(&mut *h, &data)?;
    check!(ok(h.seek(Whence::End, 0), "end")? == 100, "SEEK_END");
    check!(ok(h.seek(Whence::Cur, -10), "cur")? == 90, "SEEK_CUR -10");
    check!(read_n(&mut *h, 5)? == data[90..95], "read after SEEK_CUR");
    check!(ok(h.seek(Whence::Set, 5), "set")? == 5, "SEEK_SET");
    check!(read_n(&mut *h, 5)? == data[5..10], "read after SEEK_SET");
    check!(ok(h.seek(Whence::End, -1), "end-1")? == 99, "SEEK_END -1");
    check!(ok(h.seek(Whence::Cur, 0), "cur 0")? == 99, "SEEK_CUR 0 reports the position");
    Ok(())
}

fn seek_negative_is_invalid(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(0))?;
    write_all(&mut *h, b"0123456789")?;
    ok(h.seek(Whence::Set, 4), "seek")?;
    expect_err(h.seek(Whence::Set, -1), &[Error::Invalid], "SEEK_SET -1")?;
    expect_err(h.seek(Whence::Cur, -5), &[Error::Invalid], "SEEK_CUR before 0")?;
    expect_err(h.seek(Whence::End, -11), &[Error::Invalid], "SEEK_END before 0")?;
    check!(read_n(&mut *h, 2)? == b"45", "a refused seek moved the position");
    Ok(())
}

fn seek_past_end_then_write_makes_hole(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(3))?;
    check!(ok(h.seek(Whence::Set, 10_000), "seek")? == 10_000, "seek beyond the end");
    write_all(&mut *h, b"z")?;
    check!(ok(h.seek(Whence::End, 0), "end")? == 10_001, "size after write past the end");
    ok(h.seek(Whence::Set, 0), "seek")?;
    check!(read_n(&mut *h, 100)?.is_empty(), "the hole at 0 reads as 0 bytes");
    ok(h.seek(Whence::Set, 10_000), "seek")?;
    check!(read_n(&mut *h, 100)? == b"z", "data after the hole");
    Ok(())
}

fn set_len_shrinks_and_extends_with_zeros(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(0))?;
    let data = pattern(9000, 6);
    write_all(&mut *h, &data)?;
    ok(h.set_len(100), "set_len 100")?;
    check!(ok(h.seek(Whence::End, 0), "end")? == 100, "size after shrink");
    let line = stats_line(&ok(h.stats(), "stats")?, "scull0")?;
    check!(field(&line, "quanta") == Some("1"), "quanta past the end not freed: {line}");
    ok(h.set_len(5000), "set_len 5000")?;
    check!(ok(h.seek(Whence::End, 0), "end")? == 5000, "size after extend");
    ok(h.seek(Whence::Set, 0), "seek")?;
    let got = read_n(&mut *h, 5000)?;
    check!(got.len() == DEFAULT_QUANTUM as usize, "read stops at the hole after quantum 0: {} bytes", got.len());
    check!(got[..100] == data[..100], "kept bytes changed");
    check!(got[100..].iter().all(|&b| b == 0), "old bytes reappeared after shrink+extend");
    Ok(())
}

fn huge_offsets_are_refused_cleanly(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(0))?;
    write_all(&mut *h, b"safe")?;
    let max = i64::MAX;
    check!(ok(h.seek(Whence::Set, max - 1), "seek max-1")? == (max - 1) as u64, "seek to the last offset");
    // Far past the size cap: EFBIG from scull (Linux's VFS may say EINVAL first).
    expect_err(h.write(b"!"), &[Error::FileTooBig, Error::Invalid], "write at the last offset")?;
    check!(ok(h.seek(Whence::Set, max), "seek max")? == max as u64, "seek to the maximum");
    expect_err(h.write(b"?"), &[Error::FileTooBig, Error::Invalid], "write at the maximum offset")?;
    expect_err(h.seek(Whence::Cur, 1), &[Error::Invalid], "seek beyond the maximum")?;
    check!(ok(h.seek(Whence::End, 0), "end")? == 4, "refused writes moved the end");
    ok(h.seek(Whence::Set, 0), "seek")?;
    let got = read_n(&mut *h, 10)?;
    check!(got == b"safe", "earlier data lost or stale: {got:?}");
    let line = stats_line(&ok(h.stats(), "stats")?, "scull0")?;
    check!(field(&line, "qsets") == Some("1") && field(&line, "quanta") == Some("1"), "a refused write allocated: {line}");
    Ok(())
}

/// The per-device size cap (`scull_max_size`) from the report header.
fn max_size(h: &mut dyn Handle) -> Result<u64, String> {
    let text = ok(h.stats(), "stats")?;
    let head = text.lines().next().unwrap_or("");
    field(head, "max_size").and_then(|v| v.parse().ok()).ok_or_else(|| format!("no max_size= in the report header: {head}"))
}

/// `scull_max_size`: a write crossing the cap is cut short at it, one at the
/// cap is EFBIG, and nothing stored before changes. Sparse, so it is cheap
/// whatever the cap.
fn size_cap_cuts_short_then_refuses(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(1))?;
    let cap = max_size(&mut *h)?;
    check!(cap >= 8 && cap <= i64::MAX as u64, "implausible max_size {cap}");
    write_all(&mut *h, b"head")?;
    let at = cap - 3;
    check!(ok(h.seek(Whence::Set, at as i64), "seek cap-3")? == at, "seek below the cap");
    check!(ok(h.write(b"tail!!"), "write crossing the cap")? == 3, "a write crossing the cap is cut short at it");
    check!(ok(h.seek(Whence::End, 0), "end")? == cap, "the size stops at the cap");
    expect_err(h.write(b"?"), &[Error::FileTooBig], "write at the cap")?;
    ok(h.seek(Whence::Set, (cap + 1000) as i64), "seek past the cap")?;
    expect_err(h.write(b"?"), &[Error::FileTooBig], "write past the cap")?;
    check!(ok(h.seek(Whence::End, 0), "end")? == cap, "a refused write moved the end");
    ok(h.seek(Whence::Set, 0), "seek")?;
    check!(read_n(&mut *h, 4)? == b"head", "data before the cap changed");
    ok(h.seek(Whence::Set, at as i64), "seek")?;
    check!(read_n(&mut *h, 100)? == b"tai", "the cut-short write's bytes");
    Ok(())
}

fn missing_device_fails_to_open(t: &dyn Target) -> R {
    let n = t.caps().nr_devs;
    check!(t.open(Dev::Scull(n), OpenOpts::R).is_err(), "scull{n} should not exist");
    let p = t.caps().p_nr_devs;
    check!(t.open(Dev::Pipe(p), OpenOpts::R).is_err(), "scullpipe{p} should not exist");
    Ok(())
}

// ---------------------------------------------------------------- ioctl

fn ioctl_query_defaults(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    ok(h.ioctl(Cmd::Reset, 0), "RESET")?;
    ok(h.ioctl(Cmd::PTSize, DEFAULT_P_BUFFER), "P_IOCTSIZE")?;
    check!(ok(h.ioctl(Cmd::QQuantum, 0), "QQUANTUM")? == DEFAULT_QUANTUM, "QQUANTUM");
    check!(ok(h.ioctl(Cmd::QQset, 0), "QQSET")? == DEFAULT_QSET, "QQSET");
    check!(ok(h.ioctl(Cmd::GQuantum, 0), "GQUANTUM")? == DEFAULT_QUANTUM, "GQUANTUM");
    check!(ok(h.ioctl(Cmd::GQset, 0), "GQSET")? == DEFAULT_QSET, "GQSET");
    check!(ok(h.ioctl(Cmd::PQSize, 0), "P_IOCQSIZE")? == DEFAULT_P_BUFFER, "P_IOCQSIZE");
    Ok(())
}

fn ioctl_set_and_tell_quantum(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    ok(h.ioctl(Cmd::SQuantum, 1234), "SQUANTUM")?;
    check!(ok(h.ioctl(Cmd::QQuantum, 0), "Q")? == 1234, "SQUANTUM then QQUANTUM");
    ok(h.ioctl(Cmd::TQuantum, 2345), "TQUANTUM")?;
    check!(ok(h.ioctl(Cmd::GQuantum, 0), "G")? == 2345, "TQUANTUM then GQUANTUM");
    Ok(())
}

fn ioctl_set_and_tell_qset(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    ok(h.ioctl(Cmd::SQset, 77), "SQSET")?;
    check!(ok(h.ioctl(Cmd::QQset, 0), "Q")? == 77, "SQSET then QQSET");
    ok(h.ioctl(Cmd::TQset, 88), "TQSET")?;
    check!(ok(h.ioctl(Cmd::GQset, 0), "G")? == 88, "TQSET then GQSET");
    Ok(())
}

fn ioctl_exchange_and_shift(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    ok(h.ioctl(Cmd::Reset, 0), "RESET")?;
    check!(ok(h.ioctl(Cmd::XQuantum, 300), "X")? == DEFAULT_QUANTUM, "XQUANTUM returns the old value");
    check!(ok(h.ioctl(Cmd::HQuantum, 400), "H")? == 300, "HQUANTUM returns the old value");
    check!(ok(h.ioctl(Cmd::QQuantum, 0), "Q")? == 400, "quantum after H");
    check!(ok(h.ioctl(Cmd::XQset, 30), "X")? == DEFAULT_QSET, "XQSET returns the old value");
    check!(ok(h.ioctl(Cmd::HQset, 40), "H")? == 30, "HQSET returns the old value");
    check!(ok(h.ioctl(Cmd::QQset, 0), "Q")? == 40, "qset after H");
    Ok(())
}

fn ioctl_reset_restores_defaults(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    ok(h.ioctl(Cmd::TQuantum, 10), "T")?;
    ok(h.ioctl(Cmd::TQset, 10), "T")?;
    ok(h.ioctl(Cmd::Reset, 0), "RESET")?;
    check!(ok(h.ioctl(Cmd::QQuantum, 0), "Q")? == DEFAULT_QUANTUM, "quantum after RESET");
    check!(ok(h.ioctl(Cmd::QQset, 0), "Q")? == DEFAULT_QSET, "qset after RESET");
    Ok(())
}

fn ioctl_geometry_applies_after_trim(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(1))?;
    write_all(&mut *h, &pattern(200, 7))?;
    ok(h.ioctl(Cmd::TQuantum, 64), "T")?;
    ok(h.ioctl(Cmd::TQset, 2), "T")?;
    let line = stats_line(&ok(h.stats(), "stats")?, "scull1")?;
    check!(field(&line, "quantum") == Some(&DEFAULT_QUANTUM.to_string()), "geometry changed before the trim: {line}");
    drop(h);
    let mut h = fresh(t, Dev::Scull(1))?;
    let data = pattern(200, 8);
    write_all(&mut *h, &data)?;
    let line = stats_line(&ok(h.stats(), "stats")?, "scull1")?;
    check!(field(&line, "quantum") == Some("64"), "quantum after trim: {line}");
    check!(field(&line, "quanta") == Some("4"), "200 bytes in 64-byte quanta: {line}");
    check!(field(&line, "qsets") == Some("2"), "4 quanta in 2-quantum qsets: {line}");
    ok(h.seek(Whence::Set, 60), "seek")?;
    check!(read_n(&mut *h, 10)? == data[60..70], "read across a 64-byte quantum");
    Ok(())
}

fn ioctl_rejects_bad_geometry(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    ok(h.ioctl(Cmd::Reset, 0), "RESET")?;
    expect_err(h.ioctl(Cmd::TQuantum, 0), &[Error::Invalid], "zero quantum")?;
    expect_err(h.ioctl(Cmd::SQuantum, -4), &[Error::Invalid], "negative quantum")?;
    expect_err(h.ioctl(Cmd::TQset, 0), &[Error::Invalid], "zero qset")?;
    expect_err(h.ioctl(Cmd::HQset, -1), &[Error::Invalid], "negative qset")?;
    ok(h.ioctl(Cmd::TQuantum, 65536), "T 65536")?;
    expect_err(h.ioctl(Cmd::TQset, 65536), &[Error::Invalid], "quantum*qset overflowing int")?;
    expect_err(h.ioctl(Cmd::XQuantum, i32::MAX), &[Error::Invalid], "huge quantum")?;
    ok(h.ioctl(Cmd::TQuantum, 1), "T 1")?;
    expect_err(h.ioctl(Cmd::TQset, i32::MAX), &[Error::Invalid], "a qset whose slot array is 16 GiB")?;
    ok(h.ioctl(Cmd::TQuantum, 65536), "T 65536")?;
    check!(ok(h.ioctl(Cmd::QQuantum, 0), "Q")? == 65536, "a refused value changed the quantum");
    check!(ok(h.ioctl(Cmd::QQset, 0), "Q")? == DEFAULT_QSET, "a refused value changed the qset");
    Ok(())
}

fn ioctl_privileged_commands_refused(t: &dyn Target) -> R {
    let mut me = open(t, Dev::Scull(0), OpenOpts::RW)?;
    ok(me.ioctl(Cmd::Reset, 0), "RESET")?;
    let mut h = ok(t.open_as(Who::Other, Dev::Scull(0), OpenOpts::RW), "open as other")?;
    for cmd in Cmd::ALL.into_iter().filter(|c| c.needs_privilege()) {
        expect_err(h.ioctl(cmd, 100), &[Error::Perm], cmd.name())?;
    }
    check!(ok(h.ioctl(Cmd::QQuantum, 0), "Q as other")? == DEFAULT_QUANTUM, "queries are allowed and nothing changed");
    check!(ok(h.ioctl(Cmd::GQset, 0), "G as other")? == DEFAULT_QSET, "qset unchanged");
    Ok(())
}

fn ioctl_unknown_codes_are_not_tty(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    let base = raw_code(t, Cmd::Reset);
    let linux = t.caps().linux_abi;
    let mut bad: Vec<u32> = Vec::new();
    if linux {
        bad.extend([
            scull_core::ioctl::ioc(0, b'k', 16, 0),
            scull_core::ioctl::ioc(0, b'j', 0, 0),
            Cmd::GQuantum.linux_code() ^ (1 << 17), // wrong size
        ]);
    } else {
        bad.extend([
            Cmd::Stats.windows_code() + 4,             // function 0x810
            base - 4,                                  // function 0x7ff
            scull_core::ioctl::ctl_code(0x8001, 0x800, 0, 0), // wrong device type
            Cmd::QQuantum.windows_code() | 3,          // METHOD_NEITHER
            0x0022_0000,
        ]);
    }
    for code in bad {
        expect_err(h.ioctl_raw(code, &[0; 4], 4), &[Error::NotTty], &format!("code {code:#x}"))?;
    }
    Ok(())
}

fn ioctl_short_buffers(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    expect_err(h.ioctl_raw(Cmd::TQuantum.windows_code(), &[1, 0], 0), &[Error::BufferTooSmall], "2-byte input")?;
    expect_err(h.ioctl_raw(Cmd::QQuantum.windows_code(), &[], 2), &[Error::BufferTooSmall], "2-byte output")?;
    expect_err(h.ioctl_raw(Cmd::XQset.windows_code(), &[1, 0, 0, 0], 3), &[Error::BufferTooSmall], "3-byte output")?;
    expect_err(h.ioctl_raw(Cmd::Stats.windows_code(), &[], 8), &[Error::BufferTooSmall], "8-byte report buffer")?;
    let out = ok(h.ioctl_raw(Cmd::QQset.windows_code(), &[], 4), "4-byte output")?;
    check!(out == DEFAULT_QSET.to_le_bytes(), "QQSET bytes {out:?}");
    check!(ok(h.ioctl(Cmd::QQuantum, 0), "Q")? == DEFAULT_QUANTUM, "nothing changed");
    Ok(())
}

fn ioctl_pipe_size(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Scull(0), OpenOpts::RW)?;
    ok(h.ioctl(Cmd::PTSize, 64), "P_IOCTSIZE")?;
    check!(ok(h.ioctl(Cmd::PQSize, 0), "P_IOCQSIZE")? == 64, "size");
    expect_err(h.ioctl(Cmd::PTSize, 1), &[Error::Invalid], "1-byte pipe")?;
    expect_err(h.ioctl(Cmd::PTSize, -64), &[Error::Invalid], "negative pipe")?;
    check!(ok(h.ioctl(Cmd::PQSize, 0), "Q")? == 64, "refused size changed it");
    // The new size applies when the buffer is next allocated.
    let mut p = open(t, Dev::Pipe(2), OpenOpts::RW.nonblocking())?;
    let n = ok(p.write(&[7u8; 200]), "write")?;
    check!(n == 63, "a 64-byte pipe holds 63 bytes, wrote {n}");
    let line = stats_line(&ok(h.stats(), "stats")?, "scullpipe2")?;
    check!(field(&line, "buffer") == Some("64"), "{line}");
    ok(h.ioctl(Cmd::PTSize, 128), "P_IOCTSIZE while open")?;
    let line = stats_line(&ok(h.stats(), "stats")?, "scullpipe2")?;
    check!(field(&line, "buffer") == Some("64"), "an open pipe's buffer must not change size: {line}");
    Ok(())
}

fn stats_report_format(t: &dyn Target) -> R {
    let mut h = fresh(t, Dev::Scull(1))?;
    write_all(&mut *h, &pattern(5000, 9))?;
    let text = ok(h.stats(), "stats")?;
    check!(text.lines().next().is_some_and(|l| l.starts_with("scullmem v1 ")), "first line: {text}");
    check!(text.lines().any(|l| l.starts_with("scullpipe v1 ")), "pipe header missing: {text}");
    let line = stats_line(&text, "scull1")?;
    check!(field(&line, "size") == Some("5000"), "{line}");
    check!(field(&line, "quanta") == Some("2"), "{line}");
    check!(field(&line, "qsets") == Some("1"), "{line}");
    for n in 0..t.caps().p_nr_devs {
        stats_line(&text, &format!("scullpipe{n}"))?;
    }
    check!(!text.contains("0x") && !text.contains("ffff"), "report must not print addresses");
    Ok(())
}

// ---------------------------------------------------------------- pipe

fn pipe_fifo_order(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Pipe(0), OpenOpts::RW)?;
    write_all(&mut *h, b"abc")?;
    write_all(&mut *h, b"def")?;
    let got = read_exact(&mut *h, 6)?;
    check!(got == b"abcdef", "{got:?}");
    Ok(())
}

fn pipe_partial_write_when_nearly_full(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Pipe(0), OpenOpts::RW.nonblocking())?;
    let cap = DEFAULT_P_BUFFER as usize - 1;
    let n = ok(h.write(&pattern(cap + 1000, 1)), "write")?;
    check!(n == cap, "write into an empty {}-byte pipe returned {n}, want {cap}", DEFAULT_P_BUFFER);
    let got = read_exact(&mut *h, cap)?;
    check!(got == pattern(cap + 1000, 1)[..cap], "contents");
    Ok(())
}

fn pipe_nonblocking_read_empty(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Pipe(1), OpenOpts::R.nonblocking())?;
    expect_err(h.read(&mut [0u8; 16]), &[Error::WouldBlock], "read from an empty non-blocking pipe")?;
    Ok(())
}

fn pipe_nonblocking_write_full(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Pipe(1), OpenOpts::RW.nonblocking())?;
    let mut filled = 0;
    loop {
        match h.write(&[1u8; 1000]) {
            Ok(n) => filled += n,
            Err(Error::WouldBlock) => break,
            Err(e) => return Err(format!("write: {e}")),
        }
        check!(filled < 100_000, "pipe never filled");
    }
    check!(filled == DEFAULT_P_BUFFER as usize - 1, "filled {filled}");
    expect_err(h.write(b"x"), &[Error::WouldBlock], "write to a full pipe")?;
    check!(read_exact(&mut *h, filled)?.len() == filled, "drain");
    Ok(())
}

fn pipe_small_writes_are_atomic(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Pipe(2), OpenOpts::RW.nonblocking())?;
    let cap = DEFAULT_P_BUFFER as usize - 1;
    check!(ok(h.write(&vec![1u8; cap - 3]), "fill")? == cap - 3, "fill");
    expect_err(h.write(&[2u8; 10]), &[Error::WouldBlock], "a 10-byte write with 3 bytes free (must not be split)")?;
    check!(ok(h.write(&[3u8; 3]), "3 bytes")? == 3, "a write that fits");
    let got = read_exact(&mut *h, cap)?;
    check!(got[cap - 3..] == [3u8; 3] && !got.contains(&2), "a refused atomic write left bytes behind");
    Ok(())
}

fn pipe_blocked_reader_woken_by_writer(t: &dyn Target) -> R {
    let mut r = open(t, Dev::Pipe(0), OpenOpts::R)?;
    let started = Instant::now();
    let w = ok(t.spawn_writer(Dev::Pipe(0), b"wake up".to_vec(), Duration::from_millis(300)), "spawn writer")?;
    let got = read_exact(&mut *r, 7)?;
    let waited = started.elapsed();
    check!(got == b"wake up", "{got:?}");
    check!(ok(w.join(), "writer")? == 7, "writer count");
    check!(waited >= Duration::from_millis(250), "the read returned after {waited:?}: it did not block");
    Ok(())
}

fn pipe_blocked_writer_woken_by_reader(t: &dyn Target) -> R {
    let mut fill = open(t, Dev::Pipe(3), OpenOpts::RW.nonblocking())?;
    let cap = DEFAULT_P_BUFFER as usize - 1;
    check!(ok(fill.write(&vec![b'a'; cap]), "fill")? == cap, "fill");
    let mut w = open(t, Dev::Pipe(3), OpenOpts::W)?;
    // Timed from before the spawn: a thread that starts late on a loaded
    // machine must not make a write that did block look too short.
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let r = w.write(b"tail");
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    check!(!writer.is_finished(), "a write to a full pipe did not block");
    check!(read_exact(&mut *fill, 100)? == vec![b'a'; 100], "drain");
    let (r, waited) = writer.join().map_err(|_| "writer thread panicked".to_string())?;
    check!(ok(r, "blocked write")? == 4, "blocked write count");
    check!(waited >= Duration::from_millis(250), "writer waited {waited:?}");
    let rest = read_exact(&mut *fill, cap - 100 + 4)?;
    check!(rest.ends_with(b"tail"), "the blocked writer's bytes come last");
    Ok(())
}

fn pipe_zero_length_read_does_not_block(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Pipe(0), OpenOpts::R)?;
    let started = Instant::now();
    check!(ok(h.read(&mut []), "read 0")? == 0, "zero read");
    check!(started.elapsed() < Duration::from_secs(2), "a zero-length read blocked");
    Ok(())
}

fn pipe_not_seekable(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Pipe(0), OpenOpts::RW)?;
    expect_err(h.seek(Whence::Set, 0), &[Error::NotSeekable], "seek on a pipe")?;
    Ok(())
}

fn pipe_data_survives_another_open(t: &dyn Target) -> R {
    let mut w = open(t, Dev::Pipe(2), OpenOpts::W)?;
    write_all(&mut *w, b"queued")?;
    let mut r = open(t, Dev::Pipe(2), OpenOpts::R.nonblocking())?;
    check!(read_exact(&mut *r, 6)? == b"queued", "opening a reader discarded unread data");
    Ok(())
}

fn pipe_last_close_frees_buffer(t: &dyn Target) -> R {
    let mut w = open(t, Dev::Pipe(2), OpenOpts::W)?;
    write_all(&mut *w, b"dropped")?;
    drop(w);
    let mut r = open(t, Dev::Pipe(2), OpenOpts::R.nonblocking())?;
    expect_err(r.read(&mut [0u8; 16]), &[Error::WouldBlock], "data after the last close (LDD3 frees the buffer)")?;
    drop(r);
    let line = stats_line(&stats(t)?, "scullpipe2")?;
    check!(field(&line, "buffer") == Some("0"), "buffer still allocated with no handle open: {line}");
    Ok(())
}

fn pipe_large_transfer_through_small_buffer(t: &dyn Target) -> R {
    let mut c = open(t, Dev::Scull(0), OpenOpts::RW)?;
    ok(c.ioctl(Cmd::PTSize, 97), "P_IOCTSIZE")?;
    let mut r = open(t, Dev::Pipe(1), OpenOpts::R)?;
    let data = pattern(64 * 1024 + 13, 11);
    let w = ok(t.spawn_writer(Dev::Pipe(1), data.clone(), Duration::from_millis(0)), "spawn writer")?;
    let got = read_exact(&mut *r, data.len())?;
    check!(ok(w.join(), "writer")? == data.len(), "writer count");
    check!(got == data, "bytes out of order or lost through a 97-byte ring");
    Ok(())
}

fn pipe_devices_are_independent(t: &dyn Target) -> R {
    let mut a = open(t, Dev::Pipe(0), OpenOpts::RW.nonblocking())?;
    let mut b = open(t, Dev::Pipe(1), OpenOpts::RW.nonblocking())?;
    write_all(&mut *a, b"for a")?;
    expect_err(b.read(&mut [0u8; 8]), &[Error::WouldBlock], "pipe 1 saw pipe 0's data")?;
    check!(read_exact(&mut *a, 5)? == b"for a", "pipe 0");
    Ok(())
}

fn pipe_cancel_blocked_read(t: &dyn Target) -> R {
    let mut p = ok(t.read_cancellable(Dev::Pipe(3), 16), "start read")?;
    std::thread::sleep(Duration::from_millis(300));
    check!(!p.is_done(), "a read on an empty pipe completed");
    ok(p.cancel(false), "cancel")?;
    expect_err(p.wait(Duration::from_secs(10)), &[Error::Interrupted], "cancelled read")?;
    // The pipe still works afterwards.
    let mut h = open(t, Dev::Pipe(3), OpenOpts::RW.nonblocking())?;
    write_all(&mut *h, b"ok")?;
    check!(read_exact(&mut *h, 2)? == b"ok", "pipe after cancel");
    Ok(())
}

fn pipe_close_with_blocked_read(t: &dyn Target) -> R {
    let mut p = ok(t.read_cancellable(Dev::Pipe(2), 16), "start read")?;
    std::thread::sleep(Duration::from_millis(200));
    check!(!p.is_done(), "a read on an empty pipe completed");
    ok(p.cancel(true), "close")?;
    expect_err(p.wait(Duration::from_secs(10)), &[Error::Interrupted], "read whose handle closed")?;
    let line = stats_line(&stats(t)?, "scullpipe2")?;
    check!(field(&line, "waiting_readers") == Some("0"), "a blocked reader is left behind: {line}");
    Ok(())
}

fn pipe_poll_readiness(t: &dyn Target) -> R {
    let mut h = open(t, Dev::Pipe(0), OpenOpts::RW.nonblocking())?;
    let r = ok(h.poll(), "poll")?;
    check!(!r.readable && r.writable, "empty pipe: {r:?}");
    write_all(&mut *h, &vec![0u8; DEFAULT_P_BUFFER as usize - 1])?;
    let r = ok(h.poll(), "poll")?;
    check!(r.readable && !r.writable, "full pipe: {r:?}");
    read_exact(&mut *h, 10)?;
    let r = ok(h.poll(), "poll")?;
    check!(r.readable && r.writable, "partly full pipe: {r:?}");
    Ok(())
}

// ---------------------------------------------------------------- access

fn single_second_open_busy(t: &dyn Target) -> R {
    let first = open(t, Dev::Single, OpenOpts::RW)?;
    expect_err(t.open(Dev::Single, OpenOpts::R).map(drop), &[Error::Busy], "second open of scullsingle")?;
    drop(first);
    drop(open(t, Dev::Single, OpenOpts::R)?);
    Ok(())
}

fn single_is_a_store(t: &dyn Target) -> R {
    drop(open(t, Dev::Single, OpenOpts::TRUNC)?);
    let mut h = open(t, Dev::Single, OpenOpts::RW)?;
    write_all(&mut *h, b"single")?;
    ok(h.seek(Whence::Set, 0), "seek")?;
    check!(read_n(&mut *h, 10)? == b"single", "scullsingle contents");
    Ok(())
}

fn uid_same_user_reopens(t: &dyn Target) -> R {
    let a = open(t, Dev::Uid, OpenOpts::R)?;
    let b = open(t, Dev::Uid, OpenOpts::R)?;
    drop((a, b));
    Ok(())
}

fn uid_other_user_busy(t: &dyn Target) -> R {
    let mine = open(t, Dev::Uid, OpenOpts::R)?;
    expect_err(t.open_as(Who::Other, Dev::Uid, OpenOpts::R).map(drop), &[Error::Busy], "sculluid held by another user")?;
    drop(mine);
    let theirs = ok(t.open_as(Who::Other, Dev::Uid, OpenOpts::R), "open as other once free")?;
    if t.caps().privileged {
        // CAP_DAC_OVERRIDE / an administrator overrides the owner check.
        drop(ok(t.open(Dev::Uid, OpenOpts::R), "privileged override")?);
    }
    drop(theirs);
    Ok(())
}

fn wuid_other_user_waits_then_proceeds(t: &dyn Target) -> R {
    let mine = open(t, Dev::Wuid, OpenOpts::R)?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Timed from before the spawn (see pipe_blocked_writer_woken_by_reader).
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let r = t.open_as(Who::Other, Dev::Wuid, OpenOpts::R).map(drop);
            let _ = tx.send((r, started.elapsed()));
        });
        std::thread::sleep(Duration::from_millis(300));
        let early = rx.try_recv().ok();
        drop(mine);
        let (r, waited) = rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "the waiting open never completed".to_string())?;
        check!(early.is_none(), "the other user's open did not block: {early:?}");
        ok(r, "blocked open")?;
        check!(waited >= Duration::from_millis(250), "waited only {waited:?}");
        Ok(())
    })
}

fn wuid_nonblocking_other_user_eagain(t: &dyn Target) -> R {
    let mine = open(t, Dev::Wuid, OpenOpts::R)?;
    expect_err(t.open_as(Who::Other, Dev::Wuid, OpenOpts::R.nonblocking()).map(drop), &[Error::WouldBlock], "non-blocking scullwuid open")?;
    drop(mine);
    Ok(())
}

fn priv_private_per_key(t: &dyn Target) -> R {
    drop(open(t, Dev::Priv, OpenOpts::TRUNC)?);
    let mut h = open(t, Dev::Priv, OpenOpts::RW)?;
    write_all(&mut *h, b"mine")?;
    drop(h);
    let mut h = open(t, Dev::Priv, OpenOpts::R)?;
    check!(read_n(&mut *h, 10)? == b"mine", "same key sees its data");
    if t.caps().other_user {
        let mut o = ok(t.open_as(Who::Other, Dev::Priv, OpenOpts::R), "open as other")?;
        check!(read_n(&mut *o, 10)?.is_empty(), "another key sees this key's data");
    }
    Ok(())
}

fn open_close_cycles_leave_no_state(t: &dyn Target) -> R {
    for i in 0..200u32 {
        let mut h = open(t, Dev::Pipe(0), if i % 2 == 0 { OpenOpts::RW } else { OpenOpts::R.nonblocking() })?;
        if i % 3 == 0 {
            let _ = h.write(&i.to_le_bytes());
        }
        drop(h);
        drop(open(t, Dev::Single, OpenOpts::R)?);
    }
    let line = stats_line(&stats(t)?, "scullpipe0")?;
    check!(field(&line, "readers") == Some("0") && field(&line, "writers") == Some("0"), "{line}");
    check!(field(&line, "buffer") == Some("0"), "{line}");
    Ok(())
}

//! Windows-only harness commands that `cargo xtask wine` runs (target first):
//! - `win-test <wine|windows> query | fail-at K`: the test IOCTL; prints
//!   `modes=M outstanding=N allocs=A injected=I`.
//! - `win-pend-read <wine|windows> <dev>`: opens `dev` for reading, prints
//!   `pending`, blocks in ReadFile, then prints `read ended: ok N` or
//!   `read ended: error WIN32` (for unloading with an IRP pended).
//! - `win-fault-sweep <wine|windows> [max_k]`: the fault-injection sweep
//!   (driver loaded with `scull_fail_at`), see [`fault_sweep`].

use super::*;

fn wine_arg(args: &[String]) -> bool {
    args.first().map(String::as_str) == Some("wine")
}

pub fn test_cmd(args: &[String]) -> u8 {
    let wine = wine_arg(args);
    let (op, arg) = match (args.get(1).map(String::as_str), args.get(2).and_then(|s| s.parse::<i32>().ok())) {
        (Some("query"), _) => (TEST_OP_QUERY, 0),
        (Some("fail-at"), Some(k)) => (TEST_OP_FAIL_AT, k),
        _ => {
            eprintln!("usage: win-test <wine|windows> query | fail-at K");
            return 2;
        }
    };
    match test_op(wine, op, arg) {
        Ok(r) => {
            println!("modes={} outstanding={} allocs={} injected={}", r.modes, r.outstanding, r.allocs, r.injected);
            0
        }
        Err(e) => {
            println!("error {} ({e})", e.win32());
            1
        }
    }
}

pub fn pend_read(args: &[String]) -> u8 {
    let wine = wine_arg(args);
    let Some(dev) = args.get(1).and_then(|s| Dev::parse(s)) else {
        eprintln!("usage: win-pend-read <wine|windows> <dev>");
        return 2;
    };
    let mut h = match open_raw(dev, OpenOpts::R, wine, false) {
        Ok(h) => WinHandle { h, dev, wine, pos: 0 },
        Err(e) => {
            println!("open failed: error {}", e.win32());
            return 1;
        }
    };
    println!("pending");
    let _ = std::io::stdout().flush();
    let mut b = [0u8; 64];
    match h.read(&mut b) {
        Ok(n) => println!("read ended: ok {n}"),
        // SAFETY: reads the thread's last error, set by the failed ReadFile.
        Err(_) => println!("read ended: error {}", unsafe { GetLastError() }),
    }
    let _ = std::io::stdout().flush();
    0
}

/// Bytes the driver acknowledged at an offset of scull1.
struct Acked {
    off: u64,
    data: Vec<u8>,
}

#[derive(Default)]
struct Outcome {
    nomem: u32,
    short: u32,
}

fn pattern(k: i32, rec: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (k as usize * 31 + rec * 7 + j) as u8 | 1).collect()
}

/// One workload run while the k-th allocation fails. A contract breach
/// (an error other than NoMemory, a count larger than asked) is `Err`.
fn workload(wine: bool, k: i32, acked: &mut Vec<Acked>, o: &mut Outcome) -> Result<(), String> {
    let mut note = |r: Result<usize, Error>, want: usize, what: &str| -> Result<usize, String> {
        match r {
            Ok(n) if n > want => Err(format!("{what}: {n} bytes acknowledged, {want} asked")),
            Ok(n) => {
                if n < want {
                    o.short += 1;
                }
                Ok(n)
            }
            Err(Error::NoMemory) => {
                o.nomem += 1;
                Ok(0)
            }
            Err(e) => Err(format!("{what}: {e} (want success, a short count or NoMemory)")),
        }
    };
    // Store: records that span quanta (4000) and a far one (a new qset).
    let dev = Dev::Scull(1);
    let mut h = match open_raw(dev, OpenOpts::RW, wine, false) {
        Ok(h) => WinHandle { h, dev, wine, pos: 0 },
        Err(e) => {
            note(Err(e), 0, "open scull1")?;
            return Ok(());
        }
    };
    let recs: [(u64, usize); 5] = [(0, 3000), (3000, 3000), (6000, 5000), (11_000, 2000), (8_000_000 + 5, 300)];
    for (i, &(off, len)) in recs.iter().enumerate() {
        let data = pattern(k, i, len);
        h.seek(Whence::Set, off as i64).map_err(|e| format!("seek: {e}"))?;
        let n = note(h.write(&data), len, &format!("write record {i}"))?;
        if n > 0 {
            acked.push(Acked { off, data: data[..n].to_vec() });
        }
    }
    drop(h);
    // Pipe: the first open allocates the buffer.
    let dev = Dev::Pipe(1);
    match open_raw(dev, OpenOpts::RW, wine, false) {
        Ok(p) => {
            let mut p = WinHandle { h: p, dev, wine, pos: 0 };
            let data = pattern(k, 99, 100);
            let n = note(p.write(&data), 100, "pipe write")?;
            let mut b = vec![0u8; 200];
            let got = if n > 0 { p.read(&mut b).map_err(|e| format!("pipe read: {e}"))? } else { 0 };
            if b[..got] != data[..n] {
                return Err(format!("pipe: read back {got} bytes that differ from the {n} acknowledged"));
            }
        }
        Err(e) => {
            note(Err(e), 0, "open scullpipe1")?;
        }
    }
    Ok(())
}

fn verify(wine: bool, acked: &[Acked]) -> Result<(), String> {
    let dev = Dev::Scull(1);
    let mut h = WinHandle { h: open_raw(dev, OpenOpts::R, wine, false).map_err(|e| format!("reopen: {e}"))?, dev, wine, pos: 0 };
    let size = h.seek(Whence::End, 0).map_err(|e| format!("size: {e}"))?;
    for a in acked {
        let end = a.off + a.data.len() as u64;
        if size < end {
            return Err(format!("size {size} < end {end} of acknowledged bytes"));
        }
        h.seek(Whence::Set, a.off as i64).map_err(|e| format!("seek: {e}"))?;
        let mut b = vec![0u8; a.data.len()];
        let mut got = 0;
        while got < b.len() {
            match h.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(format!("read back at {}: {e}", a.off)),
            }
        }
        if b[..got] != a.data[..] {
            return Err(format!("acknowledged bytes at {} ({} bytes) read back different", a.off, a.data.len()));
        }
    }
    Ok(())
}

/// For k = 1, 2, ...: arm "the k-th allocation fails", run the workload,
/// disarm, check every acknowledged byte, trim, and check the outstanding
/// block count is back at its baseline. Ends at the first k the workload
/// never reaches (no failure injected), or at max_k. Exit 0 when every
/// run kept the contract and at least one failure was injected.
pub fn fault_sweep(args: &[String]) -> u8 {
    let wine = wine_arg(args);
    let max_k: i32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let q = |op, arg| test_op(wine, op, arg);
    match q(TEST_OP_QUERY, 0) {
        Ok(r) if r.modes & MODE_FAULTS != 0 => {}
        other => {
            println!("FAIL fault sweep: the driver has no fault injection (load it with scull_fail_at): {other:?}");
            return 1;
        }
    }
    let _ = open_raw(Dev::Scull(1), OpenOpts::TRUNC, wine, false);
    let (mut runs, mut injected, mut nomem, mut short) = (0, 0u64, 0, 0);
    let mut reached_end = false;
    for k in 1..=max_k {
        let before = match q(TEST_OP_QUERY, 0) {
            Ok(r) => r,
            Err(e) => {
                println!("FAIL fault k={k}: query: {e}");
                return 1;
            }
        };
        if let Err(e) = q(TEST_OP_FAIL_AT, k) {
            println!("FAIL fault k={k}: arm: {e}");
            return 1;
        }
        let mut acked = Vec::new();
        let mut o = Outcome::default();
        let r = workload(wine, k, &mut acked, &mut o);
        let disarm = q(TEST_OP_FAIL_AT, 0);
        let r = r.and_then(|_| disarm.map(drop).map_err(|e| format!("disarm: {e}"))).and_then(|_| verify(wine, &acked));
        let _ = open_raw(Dev::Scull(1), OpenOpts::TRUNC, wine, false);
        let after = match q(TEST_OP_QUERY, 0) {
            Ok(a) => a,
            Err(e) => {
                println!("FAIL fault k={k}: query: {e}");
                return 1;
            }
        };
        runs += 1;
        let hit = after.injected - before.injected;
        injected += hit;
        nomem += o.nomem;
        short += o.short;
        let bytes: usize = acked.iter().map(|a| a.data.len()).sum();
        println!(
            "fault k={k}: injected={hit} nomem={} short={} acknowledged={bytes} B, outstanding {} -> {}",
            o.nomem, o.short, before.outstanding, after.outstanding
        );
        if let Err(msg) = r {
            println!("FAIL fault k={k}: {msg}");
            return 1;
        }
        if after.outstanding != before.outstanding {
            println!("FAIL fault k={k}: outstanding blocks {} after trim, {} before", after.outstanding, before.outstanding);
            return 1;
        }
        if hit > 0 && o.nomem + o.short == 0 {
            println!("FAIL fault k={k}: an allocation failed but no request reported it");
            return 1;
        }
        if hit == 0 {
            reached_end = true;
            break;
        }
    }
    if !reached_end || injected == 0 {
        println!("FAIL fault sweep: injected={injected} over {runs} runs; the workload never ran clean before k={max_k}");
        return 1;
    }
    println!(
        "fault sweep: {runs} runs (k=1..{runs}), {injected} injected failures, {nomem} NoMemory errors, {short} short counts, 0 corrupted, outstanding back to baseline after every trim"
    );
    0
}

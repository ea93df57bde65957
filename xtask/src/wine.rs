//! `cargo xtask wine`: loads scull.sys in Wine and runs the conformance suite
//! through real Win32 I/O (scull-tool.exe, the Windows build of the tool).
//!
//! Steps, each Wine command under `timeout` so that a hang fails instead of
//! stalling CI:
//! 1. apt: wine64, mingw-w64 (gcc, headers), clang/libclang, lld; rustup
//!    targets x86_64-pc-windows-msvc and -gnu (idempotent).
//! 2. `cargo xtask wdm` (scull.sys) and scull-tool.exe (x86_64-pc-windows-gnu).
//! 3. A tiny `bcryptprimitives.dll` exporting `ProcessPrng` (over
//!    advapi32!SystemFunction036), built with mingw: Rust's std imports
//!    ProcessPrng, which Wine 8 lacks. It sits next to scull-tool.exe.
//! 4. A fresh private prefix under `target/wine/prefix` (never ~/.wine).
//! 5. `sc create scull type= kernel start= demand binPath= C:\scull\scull.sys`,
//!    `sc start scull`, `scull-tool.exe conformance --target wine`,
//!    `sc stop scull`, `sc delete scull`, then `wineserver -k`.
//! 6. The driver's DbgPrint lines (channel warn+debugstr) land in
//!    `target/wine/wine.log`; the unload line must report 0 outstanding
//!    'lucS' blocks. That check is one more case in the tally.
//!
//! The last line printed is `wine: N passed, M failed, K skipped`; any
//! failure makes the command exit non-zero.

use crate::util::{apt_install, run, rustup_targets, step, target_dir, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOOL_TARGET: &str = "x86_64-pc-windows-gnu";
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc-posix";
const WINE64: &str = "/usr/lib/wine/wine64";
const WINESERVER: &str = "/usr/lib/wine/wineserver";

const APT: &[&str] = &["wine64", "wine", "gcc-mingw-w64-x86-64-posix", "mingw-w64-x86-64-dev"];

/// ProcessPrng for Wine 8 (see the module docs).
const PRNG_C: &str = r#"/* bcryptprimitives!ProcessPrng for Wine 8, which lacks it. */
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len)
    {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
"#;
const PRNG_DEF: &str = "LIBRARY bcryptprimitives.dll\nEXPORTS\n    ProcessPrng\n";

struct Wine {
    dir: PathBuf,
    prefix: PathBuf,
    log: PathBuf,
}

impl Wine {
    fn new() -> Self {
        let dir = target_dir().join("wine");
        Wine { prefix: dir.join("prefix"), log: dir.join("wine.log"), dir }
    }

    fn drive_c(&self) -> PathBuf {
        self.prefix.join("drive_c")
    }

    /// A command with the prefix's environment, under `timeout`.
    fn cmd(&self, secs: u32, program: &str) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", &secs.to_string(), program])
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all,warn+debugstr")
            // No Mono/Gecko prompts; no interactive debugger on a crash.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=;winedbg.exe=d")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        c
    }

    /// Runs a Wine command with its stdout and stderr (and with them the
    /// output of the services it starts: the driver's DbgPrint lines)
    /// appended to the log.
    fn wine(&self, secs: u32, args: &[&str]) -> Result<bool> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let out = log.try_clone().map_err(|e| e.to_string())?;
        let mut c = self.cmd(secs, WINE64);
        c.args(args).stdout(Stdio::from(out)).stderr(Stdio::from(log));
        eprintln!("+ wine {}", args.join(" "));
        let st = c.status().map_err(|e| format!("wine {}: {e}", args.join(" ")))?;
        if st.code() == Some(124) || st.code() == Some(137) {
            return Err(format!("wine {}: timed out after {secs} s", args.join(" ")));
        }
        Ok(st.success())
    }

    fn kill_server(&self) {
        let _ = self.cmd(30, WINESERVER).arg("-k").status();
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the log holds a line containing `needle`; returns it.
    fn wait_log(&self, needle: &str, secs: u64) -> Option<String> {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self.log_text().lines().find(|l| l.contains(needle)) {
                return Some(l.to_string());
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Installs what the Wine run needs (idempotent).
pub fn deps() -> Result {
    crate::wdm::deps()?;
    apt_install(APT)?;
    rustup_targets(&[TOOL_TARGET])
}

/// Builds scull-tool.exe for Windows; returns its path.
fn build_tool() -> Result<PathBuf> {
    step("wine: cargo build scull-tool (x86_64-pc-windows-gnu)");
    run(crate::util::cargo()
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER", MINGW_GCC)
        .args(["build", "--release", "-p", "scull-tool", "--target", TOOL_TARGET]))?;
    Ok(target_dir().join(TOOL_TARGET).join("release").join("scull-tool.exe"))
}

fn build_prng(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("prng");
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    std::fs::write(src.join("prng.c"), PRNG_C).map_err(|e| e.to_string())?;
    std::fs::write(src.join("prng.def"), PRNG_DEF).map_err(|e| e.to_string())?;
    let dll = src.join("bcryptprimitives.dll");
    run(Command::new(MINGW_GCC)
        .current_dir(&src)
        .args(["-O2", "-shared", "-o", "bcryptprimitives.dll", "prng.c", "prng.def", "-ladvapi32"]))?;
    Ok(dll)
}

fn copy(from: &Path, to: &Path) -> Result {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}

/// Everything up to a running driver; returns the Wine handle.
fn setup() -> Result<Wine> {
    deps()?;
    let sys = crate::wdm::build()?;
    let tool = build_tool()?;
    let w = Wine::new();
    step(&format!("wine: fresh prefix {}", w.prefix.display()));
    w.kill_server();
    if w.prefix.exists() {
        std::fs::remove_dir_all(&w.prefix).map_err(|e| format!("rm {}: {e}", w.prefix.display()))?;
    }
    std::fs::create_dir_all(&w.dir).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&w.log);
    let prng = build_prng(&w.dir)?;
    // Keep wineserver (and services.exe with the driver) alive between commands.
    let _ = w.cmd(30, WINESERVER).arg("-p60").status();
    if !w.wine(180, &["wineboot", "-i"])? {
        return Err("wineboot -i failed".into());
    }
    let dest = w.drive_c().join("scull");
    std::fs::create_dir_all(&dest).map_err(|e| e.to_string())?;
    copy(&sys, &dest.join("scull.sys"))?;
    copy(&tool, &dest.join("scull-tool.exe"))?;
    copy(&prng, &dest.join("bcryptprimitives.dll"))?;

    step("wine: sc create / sc start scull");
    if !w.wine(60, &["sc", "create", "scull", "type=", "kernel", "start=", "demand", "binPath=", r"C:\scull\scull.sys"])? {
        return Err(format!("sc create failed; see {}", w.log.display()));
    }
    let started = w.wine(90, &["sc", "start", "scull"])?;
    let loaded = w.wait_log("scull: loaded:", 30);
    if !started && loaded.is_none() {
        // services.exe may still be starting on a fresh prefix; one retry.
        eprintln!("wine: sc start did not report success; retrying with net start");
        w.wine(90, &["net", "start", "scull"])?;
    }
    match w.wait_log("scull: loaded:", 30) {
        Some(l) => eprintln!("wine: {}", l.split("scull: ").nth(1).unwrap_or(&l)),
        None => return Err(format!("the driver did not load (no `scull: loaded:` line in {})", w.log.display())),
    }
    Ok(w)
}

/// Stops and deletes the service; returns the unload line's block count.
fn teardown(w: &Wine) -> Result<Option<i64>> {
    step("wine: sc stop / sc delete scull");
    let stopped = w.wine(60, &["sc", "stop", "scull"]);
    let line = w.wait_log("outstanding 'lucS' blocks:", 30);
    let _ = w.wine(60, &["sc", "delete", "scull"]);
    w.kill_server();
    stopped?;
    Ok(line.and_then(|l| l.rsplit(':').next().and_then(|n| n.trim().parse().ok())))
}

/// Parses `wine: N passed, M failed, K skipped`.
fn tally(line: &str) -> Option<(usize, usize, usize)> {
    let rest = line.strip_prefix("wine: ")?;
    let mut n = [0usize; 3];
    for (i, part) in rest.split(", ").enumerate().take(3) {
        n[i] = part.split_whitespace().next()?.parse().ok()?;
    }
    Some((n[0], n[1], n[2]))
}

/// Runs a scull-tool.exe command under Wine, echoing and returning stdout.
fn tool(w: &Wine, secs: u32, args: &[&str]) -> Result<(bool, Vec<String>)> {
    let mut c = w.cmd(secs, WINE64);
    c.arg(r"C:\scull\scull-tool.exe").args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
    eprintln!("+ wine scull-tool.exe {}", args.join(" "));
    let mut child = c.spawn().map_err(|e| format!("scull-tool.exe: {e}"))?;
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
            println!("{l}");
            let _ = std::io::stdout().flush();
            lines.push(l);
        }
    }
    let st = child.wait().map_err(|e| e.to_string())?;
    if st.code() == Some(124) || st.code() == Some(137) {
        return Err(format!("scull-tool.exe {}: timed out after {secs} s", args.join(" ")));
    }
    Ok((st.success(), lines))
}

/// `cargo xtask wine`: the conformance suite against scull.sys in Wine.
/// `cargo xtask wine demo`: the demo instead.
pub fn run_suite(args: &[String]) -> Result {
    if args.first().map(String::as_str) == Some("demo") {
        return demo();
    }
    let started = Instant::now();
    let w = match setup() {
        Ok(w) => w,
        Err(e) => {
            Wine::new().kill_server();
            println!("FAIL setup: {e}");
            println!("wine: 0 passed, 1 failed");
            return Err(e);
        }
    };
    step("wine: scull-tool.exe conformance --target wine");
    let suite = tool(&w, 900, &["conformance", "--target", "wine"]);
    let leaks = teardown(&w);
    let (ok, lines) = suite?;
    let (mut passed, mut failed, skipped) = match lines.iter().rev().find_map(|l| tally(l)) {
        Some(t) => t,
        None => {
            println!("wine: 0 passed, 1 failed");
            return Err("the suite printed no closing line".into());
        }
    };
    if !ok && failed == 0 {
        failed += 1;
        println!("FAIL scull-tool.exe exited with failure");
    }
    match leaks? {
        Some(0) => {
            passed += 1;
            println!("ok   unload_reports_zero_outstanding_blocks");
        }
        Some(n) => {
            failed += 1;
            println!("FAIL unload_reports_zero_outstanding_blocks: {n} 'lucS' blocks outstanding at unload");
        }
        None => {
            failed += 1;
            println!("FAIL unload_reports_zero_outstanding_blocks: no unload line in {}", w.log.display());
        }
    }
    eprintln!("wine: log {}; {:.0} s", w.log.display(), started.elapsed().as_secs_f64());
    println!("wine: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        return Err(format!("{failed} failed"));
    }
    Ok(())
}

/// The demo under Wine: a write/read, an ioctl and the stats text, through
/// scull.sys (for `cargo xtask demo`).
pub fn demo() -> Result {
    let w = setup().inspect_err(|_| Wine::new().kill_server())?;
    step("demo: scull.sys under Wine");
    let mut all_ok = true;
    for args in [
        &["--target", "wine", "write", "scull0", "hello from scull.sys"][..],
        &["--target", "wine", "read", "scull0"][..],
        &["--target", "wine", "ioctl", "qquantum"][..],
        &["--target", "wine", "stats"][..],
        &["--target", "wine", "pipe-demo"][..],
    ] {
        let (ok, _) = tool(&w, 120, args)?;
        all_ok &= ok;
    }
    let leaks = teardown(&w)?;
    match leaks {
        Some(n) => println!("demo (wine): unload reports {n} outstanding 'lucS' blocks"),
        None => println!("demo (wine): no unload line in {}", w.log.display()),
    }
    if !all_ok || leaks != Some(0) {
        return Err("the Wine demo failed".into());
    }
    Ok(())
}

//! `cargo xtask wine`: loads scull.sys in Wine and runs the conformance suite
//! through real Win32 I/O (scull-tool.exe, the Windows build of the tool).
//!
//! Steps, each Wine command under `timeout` so that a hang fails instead of
//! stalling CI:
//! 1. apt: wine64, mingw-w64 (gcc, headers), clang/libclang, lld; rustup
//!    targets x86_64-pc-windows-msvc and -gnu (idempotent).
//! 2. `cargo xtask wdm` (the release scull.sys), `cargo xtask wdm
//!    --test-build` (the test build: Wine bridge and test switches) and
//!    scull-tool.exe (x86_64-pc-windows-gnu).
//! 3. A tiny `bcryptprimitives.dll` exporting `ProcessPrng` (over
//!    advapi32!SystemFunction036), built with mingw: Rust's std imports
//!    ProcessPrng, which Wine 8 lacks. It sits next to scull-tool.exe.
//! 4. A fresh private prefix under `target/wine/prefix` (never ~/.wine).
//! 5. `sc create scull type= kernel start= demand binPath= C:\scull\scull.sys`
//!    (the release build; the test build is `C:\scull\test\scull.sys`, chosen
//!    by the service's ImagePath), then four loads (`sc start` ... `sc stop`),
//!    see [`body`]: the release build (every conformance case Wine can
//!    express without the bridge, the release-only checks, unload with a
//!    pended read); the test build (the cases the release run skipped,
//!    stress, fixed-seed fuzz); the test build with `scull_test_identity=1` +
//!    `scull_fail_at=0` (identity cases with a second identity, the
//!    cancel/close race on scullwuid, fault-injection sweep); the release
//!    build with the ACL value (a bad SDDL refuses to load and asks for an
//!    event-log entry, the relaxed one applies). Then `sc delete scull` and
//!    `wineserver -k`.
//! 6. The driver's DbgPrint lines (channel warn+debugstr) land in
//!    `target/wine/wine.log`; every unload line must report 0 outstanding
//!    'lucS' blocks, and no Wine process may have crashed. Each is a case.
//!
//! Conformance runs are read from `conformance --format json` (one object
//! per case, see [`conformance`]); their human lines are printed from it. A
//! run whose output is not one whole run (a line that is not a case object,
//! no closing line, counts that differ from the objects') is a failed case.
//!
//! The last line printed is `wine: N passed, M failed, K skipped (release
//! R, test-build T; H harness retries)` (R and T: the passed cases of each
//! build; H: the retries the harness made); any failure makes the command
//! exit non-zero.

use crate::util::{apt_install, parse_case, parse_conformance_json, run, rustup_targets, step, target_dir, Outcome, Result, SuiteRun};
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

/// WINEDEBUG of every Wine command: the driver's DbgPrint lines
/// (warn+debugstr); ntoskrnl's errors (a KeBugCheckEx); sc.exe's and
/// services.exe's errors, so a refused `sc stop` or `sc start` logs its Win32
/// error (`err:sc:... failed to stop service 1062`) instead of failing
/// silently. `XTASK_WINEDEBUG` appends channels, e.g. `+winedevice,+service`
/// to trace service control and unload.
fn winedebug() -> String {
    let base = "-all,warn+debugstr,err+ntoskrnl,err+sc,err+service";
    match std::env::var("XTASK_WINEDEBUG") {
        Ok(extra) if !extra.is_empty() => format!("{base},{extra}"),
        _ => base.to_string(),
    }
}

/// Retries the harness made (each printed when it fires); the closing line
/// counts them, so a growing count shows.
static RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn retried(what: &str) {
    RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    eprintln!("wine: retry: {what}");
}

struct Wine {
    dir: PathBuf,
    prefix: PathBuf,
    log: PathBuf,
    /// services.exe's pid when the running load started.
    services: std::cell::Cell<Option<u32>>,
}

impl Wine {
    fn new() -> Self {
        let dir = target_dir().join("wine");
        Wine { prefix: dir.join("prefix"), log: dir.join("wine.log"), dir, services: std::cell::Cell::new(None) }
    }

    fn drive_c(&self) -> PathBuf {
        self.prefix.join("drive_c")
    }

    /// A command with the prefix's environment, under `timeout`.
    fn cmd(&self, secs: u32, program: &str) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", &secs.to_string(), program])
            .env("WINEPREFIX", &self.prefix)
            // err+ntoskrnl: a KeBugCheckEx (which Wine turns into a silent
            // ExitProcess of winedevice) is logged and counted as a crash.
            .env("WINEDEBUG", winedebug())
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
        crate::util::note(&format!("+ wine {}", args.join(" ")));
        let st = c.status().map_err(|e| format!("wine {}: {e}", args.join(" ")))?;
        if st.code() == Some(124) || st.code() == Some(137) {
            return Err(format!("wine {}: timed out after {secs} s", args.join(" ")));
        }
        Ok(st.success())
    }

    fn kill_server(&self) {
        // Quiet: with no prefix yet it only says it cannot chdir there.
        let _ = self.cmd(30, WINESERVER).arg("-k").stderr(Stdio::null()).status();
    }

    /// Ends this prefix's wineserver (and with it services.exe and every
    /// winedevice.exe) and starts a fresh persistent one: each load runs on
    /// its own server, so nothing a load leaves in services.exe or a
    /// winedevice process can reach the next load.
    fn fresh_server(&self, load: usize) {
        self.kill_server();
        let _ = self.cmd(60, WINESERVER).arg("-w").stderr(Stdio::null()).status();
        self.start_server();
        append_log(&self.log, &format!("=== xtask: load {load} on a fresh wineserver"));
    }

    /// Starts this prefix's wineserver with no idle timeout (`-p`): by
    /// default a wineserver shuts down its system processes (services.exe,
    /// winedevice.exe with the driver in it, killed without DriverUnload)
    /// once no user process has run for its persistence time, and the next
    /// command then starts a server that does so whenever none runs (Debian's
    /// wrapper passes `-p0`). The harness ends it itself (`wineserver -k`).
    /// The prefix directory must exist: wineserver refuses to start without it.
    fn start_server(&self) {
        let _ = self.cmd(30, WINESERVER).arg("-p").stderr(Stdio::null()).status();
    }

    /// The pid of this prefix's services.exe, if one runs.
    fn services_pid(&self) -> Option<u32> {
        self.pid_of("services.exe")
    }

    /// The pid of a process of this prefix (matched by WINEPREFIX in its
    /// environment: other prefixes may run beside it) whose command line
    /// contains `exe`.
    fn pid_of(&self, exe: &str) -> Option<u32> {
        let want = format!("WINEPREFIX={}", self.prefix.display());
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            if !String::from_utf8_lossy(&cmd).contains(exe) {
                return None;
            }
            let env = std::fs::read(e.path().join("environ")).ok()?;
            env.split(|&b| b == 0).any(|v| v == want.as_bytes()).then_some(pid)
        })
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the log holds a line containing `needle`; returns it.
    fn wait_log(&self, needle: &str, secs: u64) -> Option<String> {
        self.wait_log_nth(needle, 1, secs)
    }

    /// Waits until the log, from byte `from` on, holds a line containing `needle`.
    fn wait_log_after(&self, needle: &str, from: usize, secs: u64) -> Option<String> {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self.log_text();
            if let Some(l) = text.get(from..).unwrap_or("").lines().find(|l| l.contains(needle)) {
                return Some(l.to_string());
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the log holds `n` lines containing `needle`; returns the n-th.
    fn wait_log_nth(&self, needle: &str, n: usize, secs: u64) -> Option<String> {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self.log_text().lines().filter(|l| l.contains(needle)).nth(n - 1) {
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
    let test_sys = crate::wdm::build_variant(true)?;
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
    std::fs::create_dir_all(&w.prefix).map_err(|e| format!("mkdir {}: {e}", w.prefix.display()))?;
    w.start_server();
    if !w.wine(180, &["wineboot", "-i"])? {
        return Err("wineboot -i failed".into());
    }
    // services.exe gives a service process `ServicesPipeTimeout` ms (Wine's
    // default: 10 s, read as REG_SZ when services.exe starts) to connect,
    // then terminates it. On a loaded machine winedevice.exe can take longer
    // to start, so `sc start` failed and the killed winedevice took the
    // driver's devices with it (later opens failed with error 87, unload
    // lines went missing). Give it 120 s, then restart the server so that
    // services.exe reads the value.
    let control = r"HKLM\System\CurrentControlSet\Control";
    reg_add(&w, control, "ServicesPipeTimeout", "REG_SZ", "120000")?;
    w.kill_server();
    let _ = w.cmd(60, WINESERVER).arg("-w").stderr(Stdio::null()).status();
    w.start_server();
    let dest = w.drive_c().join("scull");
    std::fs::create_dir_all(&dest).map_err(|e| e.to_string())?;
    copy(&sys, &dest.join("scull.sys"))?;
    std::fs::create_dir_all(dest.join("test")).map_err(|e| e.to_string())?;
    copy(&test_sys, &dest.join("test").join("scull.sys"))?;
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
        retried("sc start did not report success and no `loaded:` line came; net start");
        w.wine(90, &["net", "start", "scull"])?;
    }
    match w.wait_log("scull: loaded:", 30) {
        Some(l) => {
            eprintln!("wine: {}", l.split("scull: ").nth(1).unwrap_or(&l));
            w.services.set(w.services_pid());
        }
        None => return Err(format!("the driver did not load (no `scull: loaded:` line in {})", w.log.display())),
    }
    Ok(w)
}

/// Stops and deletes the service; returns the unload line's block count.
fn teardown(w: &Wine) -> Result<Option<i64>> {
    let n = stop(w, 1);
    step("wine: sc delete scull");
    let _ = w.wine(60, &["sc", "delete", "scull"]);
    w.kill_server();
    n
}

/// `sc stop scull`; returns the block count of the unload line it printed
/// (looked for after the stop only, so a load that died without one costs
/// its own case, not the later loads').
///
/// Under Wine 8, winedevice.exe runs DriverUnload synchronously on its
/// service-control thread, and services.exe answers `sc stop` only when that
/// control returns (or after ServicesPipeTimeout), so a stop that returns
/// has either run DriverUnload to its end or been refused before it was
/// sent. Both lines of the driver (`unload: entered`, then the outstanding
/// count) and the STOPPED state are required; anything else is reported with
/// the evidence (sc's Win32 error, the service state, every Wine thread's
/// backtrace) and fails the load's case. The next load starts on a fresh
/// wineserver, so it cannot inherit a stuck service.
fn stop(w: &Wine, load: usize) -> Result<Option<i64>> {
    step("wine: sc stop scull");
    let from = w.log_text().len();
    // The services.exe the load started with must still be the one: if the
    // wineserver shut its system processes down, winedevice.exe died with
    // the driver in it (no DriverUnload) and a new services.exe knows the
    // service only as STOPPED.
    let services = w.services_pid();
    let restarted = services != w.services.get();
    let stopped = w.wine(60, &["sc", "stop", "scull"]);
    let line = w.wait_log_after("unload: outstanding 'lucS' blocks:", from, 30);
    let entered = w.wait_log_after("scull: unload: entered", from, 0).is_some();
    let refused = w.wait_log_after("failed to stop service", from, 0);
    let state = service_state(w);
    if line.is_none() || !entered || state.as_deref() != Some("STOPPED") || restarted {
        diagnose_stop(w, load, entered, line.is_some(), refused.as_deref(), state.as_deref());
        if restarted {
            eprintln!(
                "wine: load {load}: services.exe is not the one the load started with ({:?} then, {:?} at the stop): the wineserver shut down its system processes during the load",
                w.services.get(),
                services
            );
        }
        stopped?;
        return Err(format!(
            "load {load}: sc stop: {}DriverUnload {}, service state {}{}",
            if restarted { "services.exe restarted during the load; " } else { "" },
            match (entered, line.is_some()) {
                (true, true) => "ran",
                (true, false) => "was entered but did not finish",
                _ => "was never entered",
            },
            state.as_deref().unwrap_or("unknown"),
            refused.map(|l| format!(", sc: {}", l.trim())).unwrap_or_default()
        ));
    }
    stopped?;
    Ok(line.and_then(|l| l.rsplit(':').next().and_then(|n| n.trim().parse().ok())))
}

/// The scull service's state as `sc query` prints it (STOPPED, RUNNING,
/// STOP_PENDING, ...), or None when sc could not say.
fn service_state(w: &Wine) -> Option<String> {
    let out = w.cmd(60, WINE64).args(["sc", "query", "scull"]).stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    append_log(&w.log, &text);
    text.lines().find(|l| l.trim_start().starts_with("STATE")).and_then(|l| l.split_whitespace().last()).map(str::to_string)
}

/// A stop without both unload lines or without the STOPPED state: says
/// which, whether winedevice.exe is alive, and writes every Wine thread's
/// backtrace (`winedbg --command "bt all"`) and the Wine processes' threads
/// with their kernel wait channels to `target/wine/stop-load<N>.txt`.
fn diagnose_stop(w: &Wine, load: usize, entered: bool, finished: bool, refused: Option<&str>, state: Option<&str>) {
    let dump = w.dir.join(format!("stop-load{load}.txt"));
    let ps = Command::new("ps").args(["-eLo", "pid,tid,stat,wchan:32,etime,args"]).output();
    let ps = ps.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let wine_ps: Vec<&str> = ps.lines().filter(|l| l.contains(".exe") || l.contains("wineserver")).collect();
    let device_alive = w.pid_of("winedevice.exe").is_some();
    let bt = w.cmd(90, WINE64).args(["winedbg", "--command", "bt all"]).stdin(Stdio::null()).output();
    let bt = bt.map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)).unwrap_or_else(|e| e.to_string());
    let _ = std::fs::write(&dump, format!("== ps (Wine threads)\n{}\n== winedbg bt all\n{bt}\n", wine_ps.join("\n")));
    eprintln!(
        "wine: load {load}: sc stop: DriverUnload {}; service state {}; sc: {}; winedevice.exe {}; backtraces in {}",
        match (entered, finished) {
            (true, true) => "entered and finished",
            (true, false) => "entered, not finished",
            (false, true) => "finished without its entry line",
            (false, false) => "never entered",
        },
        state.unwrap_or("unknown"),
        refused.map(str::trim).unwrap_or("no error printed"),
        if device_alive { "alive" } else { "not running" },
        dump.display()
    );
    for l in bt.lines().filter(|l| l.contains("scull") || l.contains("Backtracing for thread")) {
        eprintln!("wine:   {l}");
    }
}

/// Appends a line of the harness's own to the log (a load boundary, sc's output).
fn append_log(log: &Path, text: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(f, "{}", text.trim_end());
    }
}

/// Points the service at the release (`C:\scull\scull.sys`) or the test
/// build (`C:\scull\test\scull.sys`) for its next start.
fn use_build(w: &Wine, test: bool) -> Result {
    let key = r"HKLM\System\CurrentControlSet\Services\scull";
    let path = if test { r"C:\scull\test\scull.sys" } else { r"C:\scull\scull.sys" };
    reg_add(w, key, "ImagePath", "REG_EXPAND_SZ", path)
}

/// `wine reg add KEY /v NAME /t TYPE /d VALUE /f`, tried up to 3 times: it is
/// idempotent, and once (a CI run on 2026-12-02, right after `sc stop`) Wine
/// failed to start reg.exe at all ("Application could not be started ...
/// ShellExecuteEx failed: Internal error"), which is Wine's launcher, not
/// the driver. Each retry is reported.
fn reg_add(w: &Wine, key: &str, name: &str, ty: &str, value: &str) -> Result {
    for attempt in 1..=3 {
        if w.wine(60, &["reg", "add", key, "/v", name, "/t", ty, "/d", value, "/f"])? {
            return Ok(());
        }
        if attempt < 3 {
            retried(&format!("reg add {name} failed (attempt {attempt} of 3; {})", w.log.display()));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Err(format!("reg add {name} failed 3 times (see {})", w.log.display()))
}

/// Sets REG_DWORD `name` under the service's Parameters key.
fn set_param(w: &Wine, name: &str, value: u32) -> Result {
    let key = r"HKLM\System\CurrentControlSet\Services\scull\Parameters";
    reg_add(w, key, name, "REG_DWORD", &value.to_string())
}

/// `sc start scull` for the `load`-th time; waits for its `loaded:` line.
fn start(w: &Wine, load: usize) -> Result {
    step("wine: sc start scull");
    let _ = w.wine(90, &["sc", "start", "scull"])?;
    match w.wait_log_nth("scull: loaded:", load, 30) {
        Some(l) => {
            eprintln!("wine: {}", l.split("scull: ").nth(1).unwrap_or(&l));
            w.services.set(w.services_pid());
            Ok(())
        }
        None => Err(format!("load {load}: no `scull: loaded:` line in {}", w.log.display())),
    }
}

/// Lines of the log that show a crash in a Wine process (winedevice runs the driver).
fn crash_lines(w: &Wine) -> Vec<String> {
    w.log_text()
        .lines()
        .filter(|l| l.contains("Unhandled exception") || l.contains("KeBugCheck") || l.contains("Unhandled page fault") || l.contains("err:seh") || l.contains("winedevice") && l.contains("err:"))
        .map(str::to_string)
        .collect()
}

/// Runs `scull-tool.exe conformance --target wine --format json` with
/// `args` after it; returns its exit status and the run read from its JSON
/// (an error when the output is not one whole, consistent run). Each case's
/// human line is printed from its object as it comes; scull-tool's own copy
/// of those lines (on stderr) is dropped, its other stderr lines pass.
fn conformance(w: &Wine, secs: u32, args: &[&str]) -> Result<(bool, Result<SuiteRun>)> {
    let mut all = vec!["conformance", "--target", "wine", "--format", "json"];
    all.extend_from_slice(args);
    let show = |l: &str| match parse_case(l) {
        Ok(c) => println!("{}", c.human()),
        Err(_) => println!("{l}"),
    };
    let (ok, lines) = run_tool(w, secs, &all, Some(is_case_line), &show)?;
    Ok((ok, parse_conformance_json("wine", &lines)))
}

/// Runs a scull-tool.exe command under Wine, echoing and returning stdout.
fn tool(w: &Wine, secs: u32, args: &[&str]) -> Result<(bool, Vec<String>)> {
    run_tool(w, secs, args, None, &|l| println!("{l}"))
}

/// A case's human line as scull-tool prints it (`ok   `, `FAIL `, `skip `).
fn is_case_line(l: &str) -> bool {
    ["ok   ", "FAIL ", "skip "].iter().any(|p| l.starts_with(p))
}

/// Runs a scull-tool.exe command under Wine and returns its stdout lines,
/// each shown through `show` as it comes. Its stderr is ours, less the lines
/// `hide` matches.
fn run_tool(w: &Wine, secs: u32, args: &[&str], hide: Option<fn(&str) -> bool>, show: &dyn Fn(&str)) -> Result<(bool, Vec<String>)> {
    let mut c = w.cmd(secs, WINE64);
    let stderr = if hide.is_some() { Stdio::piped() } else { Stdio::inherit() };
    c.arg(r"C:\scull\scull-tool.exe").args(args).stdout(Stdio::piped()).stderr(stderr);
    crate::util::note(&format!("+ wine scull-tool.exe {}", args.join(" ")));
    let mut child = c.spawn().map_err(|e| format!("scull-tool.exe: {e}"))?;
    // Not joined unconditionally: a child process the tool started may hold
    // its stderr open after it exits.
    let errs = child.stderr.take().zip(hide).map(|(err, hide)| {
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(|l| l.ok()).filter(|l| !hide(l)) {
                eprintln!("{l}");
            }
        })
    });
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
            show(&l);
            let _ = std::io::stdout().flush();
            lines.push(l);
        }
    }
    let st = child.wait().map_err(|e| e.to_string())?;
    if let Some(errs) = errs {
        let end = Instant::now() + Duration::from_secs(5);
        while !errs.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if st.code() == Some(124) || st.code() == Some(137) {
        return Err(format!("scull-tool.exe {}: timed out after {secs} s", args.join(" ")));
    }
    Ok((st.success(), lines))
}

/// The fixed fuzz seed of `cargo xtask wine` (printed by the fuzzer).
const FUZZ_SEED: &str = "20261121";

/// Cases counted in the closing line.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
    /// Passed cases run on the release build and on the test build.
    release: usize,
    test_build: usize,
    /// Which build the running cases count for.
    on_test_build: bool,
}

impl Tally {
    fn case(&mut self, name: &str, r: std::result::Result<(), String>) {
        match r {
            Ok(()) => {
                self.passed += 1;
                self.count_build(1);
                println!("ok   {name}");
            }
            Err(msg) => {
                self.failed += 1;
                println!("FAIL {name}: {msg}");
            }
        }
    }

    fn count_build(&mut self, n: usize) {
        if self.on_test_build {
            self.test_build += n;
        } else {
            self.release += n;
        }
    }

    /// Adds the cases of a conformance run ([`conformance`]); a run that
    /// could not be read, or a failed exit with no failed case, is a failed
    /// case `what`. Returns the run's passed, failed and skipped counts.
    fn suite(&mut self, what: &str, ok: bool, run: &Result<SuiteRun>) -> (usize, usize, usize) {
        match run {
            Ok(r) => {
                self.passed += r.passed;
                self.count_build(r.passed);
                self.failed += r.failed;
                self.skipped += r.skipped;
                if r.failed > 0 {
                    eprintln!("wine: {what}: failed: {}", r.names(|o| matches!(o, Outcome::Fail(_))).join(", "));
                } else if !ok {
                    self.case(what, Err("scull-tool.exe exited with failure".into()));
                }
                (r.passed, r.failed, r.skipped)
            }
            Err(e) => {
                self.case(what, Err(e.clone()));
                (0, 1, 0)
            }
        }
    }
}

/// `cargo xtask wine`: scull.sys in Wine, the four loads of the module docs
/// (see [`body`]).
///
/// `cargo xtask wine demo`: the demo instead; `cargo xtask wine bench`:
/// reference figures (scull0 against a plain file in the prefix).
pub fn run_suite(args: &[String]) -> Result {
    match args.first().map(String::as_str) {
        Some("demo") => return demo(),
        Some("bench") => return bench(),
        _ => {}
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
    let mut t = Tally::default();
    if let Err(e) = body(&w, &mut t) {
        t.case("harness", Err(e));
    }
    let _ = w.wine(60, &["sc", "delete", "scull"]);
    w.kill_server();
    eprintln!("wine: log {}; {:.0} s", w.log.display(), started.elapsed().as_secs_f64());
    let retries = RETRIES.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "wine: {} passed, {} failed, {} skipped (release {}, test-build {}; {retries} harness retries)",
        t.passed, t.failed, t.skipped, t.release, t.test_build
    );
    if t.failed > 0 {
        return Err(format!("{} failed", t.failed));
    }
    Ok(())
}

fn leak_case(t: &mut Tally, name: &str, w: &Wine, leaks: Result<Option<i64>>) {
    t.case(
        name,
        match leaks {
            Ok(Some(0)) => Ok(()),
            Ok(Some(n)) => Err(format!("{n} 'lucS' blocks outstanding at unload")),
            Ok(None) => Err(format!("no unload line in {}", w.log.display())),
            Err(e) => Err(e),
        },
    );
}

fn no_crash(w: &Wine) -> std::result::Result<(), String> {
    let c = crash_lines(w);
    if c.is_empty() {
        Ok(())
    } else {
        Err(format!("{} crash line(s) in the log, first: {}", c.len(), c[0]))
    }
}

fn body(w: &Wine, t: &mut Tally) -> Result {
    // ---- load 1: the release build, defaults.
    let announced = w.wait_log_nth("scull: release build: no bridge IOCTLs, no test switches", 1, 5).is_some();
    t.case("release_build_announced_at_load", if announced { Ok(()) } else { Err("no `release build` line at load 1".into()) });
    step("wine: scull-tool.exe conformance --target wine --format json (release scull.sys: every case without the bridge)");
    let (ok, run) = conformance(w, 600, &[])?;
    let skipped = run.as_ref().map(|r| r.names(|o| matches!(o, Outcome::Skip(_)))).unwrap_or_default();
    let (p, f, k) = t.suite("conformance (release)", ok, &run);
    // The skipped cases run again on the test build: not counted as skipped here.
    t.skipped -= k;
    // The release build must refuse every bridge code (ERROR_INVALID_FUNCTION).
    let ran = |name: &str| run.as_ref().is_ok_and(|r| r.passed(name));
    t.case(
        "release_refuses_bridge_and_test_ioctls",
        if ran("win_release_build_has_no_bridge") && ran("win_vendor_codes_outside_the_commands_are_unknown") {
            Ok(())
        } else {
            Err("win_release_build_has_no_bridge / win_vendor_codes_outside_the_commands_are_unknown did not pass on the release build".into())
        },
    );
    if p == 0 || f > 0 {
        eprintln!("wine: release conformance: {p} passed, {f} failed");
    }

    step("wine: sc stop while a read is pended on scullpipe0 (release build)");
    let pended = pend_read_then_stop(w, 1)?;
    t.case("unload_completes_pended_read", pended.0);
    leak_case(t, "unload_reports_zero_outstanding_blocks", w, Ok(pended.1));
    t.case("winedevice_alive_after_load_1", no_crash(w));

    // ---- load 2: the test build, defaults: what the release run skipped,
    // then stress and fuzz (they trim and open non-blocking).
    t.on_test_build = true;
    w.fresh_server(2);
    use_build(w, true)?;
    start(w, 2)?;
    if skipped.is_empty() {
        t.case("release_run_skipped_cases", Err("the release run skipped nothing: is the loaded scull.sys the test build?".into()))
    } else {
        let list = skipped.join(",");
        step(&format!("wine: conformance --format json --filter <{} cases the release build skipped> (test build)", skipped.len()));
        let (ok, run) = conformance(w, 600, &["--filter", &list])?;
        t.suite("conformance (test build)", ok, &run);
    }

    step("wine: scull-tool.exe stress --target wine --writers 8 --readers 8 --seconds 30");
    let (ok, lines) = tool(w, 200, &["--target", "wine", "stress", "--writers", "8", "--readers", "8", "--seconds", "30"])?;
    t.case(
        "stress_8_writers_8_readers_threads",
        if ok && lines.iter().any(|l| l == "stress: 0 lost, 0 corrupt") { Ok(()) } else { Err("see the stress report above".into()) },
    );

    step(&format!("wine: scull-tool.exe fuzz --target wine --seconds 60 --seed {FUZZ_SEED}"));
    let (ok, lines) = tool(w, 200, &["--target", "wine", "fuzz", "--seconds", "60", "--seed", FUZZ_SEED])?;
    let survived = lines.iter().any(|l| l.starts_with("fuzz: devices still work"));
    t.case(
        &format!("fuzz_60s_seed_{FUZZ_SEED}"),
        if ok && survived { no_crash(w) } else { Err("the fuzzer failed (see above)".into()) },
    );
    let leaks = stop(w, 2);
    leak_case(t, "unload_reports_zero_outstanding_blocks_test_build", w, leaks);
    t.case("winedevice_alive_after_load_2", no_crash(w));

    // ---- load 3: the test build with test identity mode and fault injection.
    w.fresh_server(3);
    set_param(w, "scull_test_identity", 1)?;
    set_param(w, "scull_fail_at", 0)?;
    set_param(w, "scull_debug_level", 3)?;
    let quiet_log = w.log_text();
    start(w, 3)?;
    let mode = w.wait_log_nth("test identity mode (scull_test_identity):", 2, 5).unwrap_or_default();
    t.case(
        "test_modes_announced_at_load",
        if mode.contains("test identity mode (scull_test_identity): ON") && mode.contains("fault injection (scull_fail_at): ON") {
            Ok(())
        } else {
            Err(format!("load line: {mode:?}"))
        },
    );
    for filter in ["uid", "privileged_commands_refused", "priv_private_per_key"] {
        step(&format!("wine: identity pass: conformance --format json --filter {filter} (scull_test_identity=1)"));
        let (ok, run) = conformance(w, 300, &["--filter", filter])?;
        let (p, _, k) = t.suite(&format!("identity pass {filter}"), ok, &run);
        if k > 0 || p == 0 {
            t.case(&format!("identity_pass_{filter}_runs_every_case"), Err(format!("{p} passed, {k} skipped: test identity mode not in effect?")));
        }
    }
    step("wine: fault-injection sweep (scull_fail_at)");
    let (ok, lines) = tool(w, 300, &["win-fault-sweep", "wine", "100"])?;
    t.case(
        "fault_injection_sweep",
        if ok && lines.iter().any(|l| l.starts_with("fault sweep:")) { Ok(()) } else { Err("see the sweep above".into()) },
    );
    let leaks = stop(w, 3);
    leak_case(t, "unload_reports_zero_outstanding_blocks_test_mode", w, leaks);
    // DbgPrintEx levels: Wine prints the level as a mask (error 1, warning 2,
    // trace 4, info 8). Loads 1-2 (scull_debug_level absent) format no trace
    // or info line; load 3 (scull_debug_level=3) does, at those levels.
    let load3_log = w.log_text();
    let load3_log = &load3_log[quiet_log.len().min(load3_log.len())..];
    let at = |text: &str, mask: &str, what: &str| text.lines().any(|l| l.contains(&format!(":{mask}: scull: {what}")));
    let quiet = !quiet_log.lines().any(|l| l.contains(":00000004: scull:") || l.contains(":00000008: scull:"));
    let levels3 = at(load3_log, "00000004", "open scull0")
        && at(load3_log, "00000008", "ioctl ")
        && at(load3_log, "00000002", "fault injection: allocation")
        && at(load3_log, "00000001", "unload: outstanding");
    t.case(
        "dbgprintex_levels",
        if quiet && levels3 { Ok(()) } else { Err(format!("loads 1-2 without trace/info lines: {quiet}; load 3 error/warning/trace/info lines at their levels: {levels3}")) },
    );
    set_param(w, "scull_debug_level", 1)?;
    t.case("winedevice_alive_after_load_3", no_crash(w));

    // ---- the device ACL value, on the release build (Wine does not enforce
    // DACLs on devices: the driver's SetSecurity + read-back is what shows).
    // The test switches stay in the registry: the release build ignores them.
    t.on_test_build = false;
    w.fresh_server(4);
    use_build(w, false)?;
    set_param_sz(w, "scull_sddl", "D:P(A;;GA;;;SY)(A;;GA;;;XX)")?;
    let _ = w.wine(60, &["sc", "start", "scull"]);
    let refused = w.wait_log("bad registry parameter scull_sddl", 10).is_some();
    let loaded4 = w.wait_log_nth("scull: loaded:", 4, 1).is_some();
    t.case(
        "acl_unknown_sddl_sid_refuses_to_load",
        if refused && !loaded4 { Ok(()) } else { Err(format!("refusal line: {refused}, loaded anyway: {loaded4}")) },
    );
    t.case("refused_load_asks_for_an_event_log_entry", refused_load_event_log(w));
    const RELAXED: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;AU)";
    set_param_sz(w, "scull_sddl", RELAXED)?;
    start(w, 4)?;
    let line = w.wait_log_nth("device ACL (", 4, 5).unwrap_or_default();
    let (ok, out) = tool(w, 60, &["--target", "wine", "write", "scull0", "acl"])?;
    t.case(
        "acl_relaxed_sddl_applied_and_read_back",
        if line.ends_with(&format!("device ACL (scull_sddl): {RELAXED}")) && ok && out.iter().any(|l| l.starts_with("wrote 3 bytes")) {
            Ok(())
        } else {
            Err(format!("ACL line {line:?}, write ok={ok}"))
        },
    );
    let ignored = w.wait_log("scull_test_identity/scull_fail_at are test-build switches; ignored by this release build", 5).is_some();
    let (_, out) = tool(w, 60, &["win-test", "wine", "query"])?;
    t.case(
        "release_build_ignores_test_switches",
        if ignored && out.iter().any(|l| l.starts_with("error 1 ")) { Ok(()) } else { Err(format!("ignored line: {ignored}; win-test query: {out:?}")) },
    );
    let leaks = stop(w, 4);
    leak_case(t, "unload_reports_zero_outstanding_blocks_relaxed_acl", w, leaks);
    t.case("winedevice_alive_after_load_4", no_crash(w));
    Ok(())
}

/// DriverEntry's refusal of `scull_sddl` calls IoAllocateErrorLogEntry, then
/// fails the load cleanly. Wine 8's
/// IoAllocateErrorLogEntry is a stub that returns NULL (with
/// WINEDEBUG=fixme+ntoskrnl it prints `fixme:ntoskrnl:IoAllocateErrorLogEntry
/// stub: <driver>, 70`), so the driver's own line says no entry was written;
/// on Windows it says the entry was written.
fn refused_load_event_log(w: &Wine) -> std::result::Result<(), String> {
    let Some(line) = w.wait_log("scull: event log: ", 5) else {
        return Err("no `event log:` line after the refused load: the error-log entry was never asked for".into());
    };
    let called = line.contains("IoAllocateErrorLogEntry returned NULL") || line.contains("wrote IO_ERR_CONFIGURATION_ERROR");
    if called && line.contains("scull_sddl") {
        Ok(())
    } else {
        Err(format!("unexpected event-log line {line:?}"))
    }
}

/// Sets REG_SZ `name` under the service's Parameters key.
fn set_param_sz(w: &Wine, name: &str, value: &str) -> Result {
    let key = r"HKLM\System\CurrentControlSet\Services\scull\Parameters";
    reg_add(w, key, name, "REG_SZ", value)
}

/// Starts `win-pend-read` on scullpipe0, waits until its read is pended in
/// the driver, then `sc stop`s the driver. Returns whether the read ended
/// cancelled (ERROR_OPERATION_ABORTED) and the unload's block count.
fn pend_read_then_stop(w: &Wine, load: usize) -> Result<(std::result::Result<(), String>, Option<i64>)> {
    use std::sync::mpsc;
    let mut c = w.cmd(90, WINE64);
    c.args([r"C:\scull\scull-tool.exe", "win-pend-read", "wine", "scullpipe0"]).stdout(Stdio::piped()).stderr(Stdio::inherit());
    crate::util::note("+ wine scull-tool.exe win-pend-read wine scullpipe0 (background)");
    let mut child = c.spawn().map_err(|e| format!("win-pend-read: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
            println!("  pend-read: {l}");
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    if first != "pending" {
        let _ = child.kill();
        let _ = child.wait();
        return Ok((Err(format!("win-pend-read did not start: {first:?}")), stop(w, load)?));
    }
    // The read is issued right after `pending`; give it time to reach the driver.
    std::thread::sleep(Duration::from_millis(1500));
    let leaks = stop(w, load)?;
    let end = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let _ = child.wait();
    let r = if end == "read ended: error 995" {
        Ok(())
    } else {
        Err(format!("after sc stop the pended read ended with {end:?}, want `read ended: error 995` (ERROR_OPERATION_ABORTED)"))
    };
    Ok((r, leaks))
}

/// `cargo xtask wine bench`: scull-tool bench against scull0 and a plain file
/// in the prefix (C:\scull\bench). Reference figures only, never pass/fail.
pub fn bench() -> Result {
    let w = setup().inspect_err(|_| Wine::new().kill_server())?;
    std::fs::create_dir_all(w.drive_c().join("scull").join("bench")).map_err(|e| e.to_string())?;
    step("wine: scull-tool.exe bench --target wine (reference figures, not pass/fail)");
    let r = tool(&w, 900, &["--target", "wine", "bench", "--reference", "--size", "64M", "--scale-size", "256M", "--baseline-dir", r"C:\scull\bench"]);
    let leaks = teardown(&w);
    let (ok, _) = r?;
    println!("wine bench: unload reports {:?} outstanding 'lucS' blocks", leaks?);
    if !ok {
        return Err("bench failed".into());
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
        println!("$ scull-tool.exe {}", args.join(" "));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str]) -> Result<SuiteRun> {
        parse_conformance_json("wine", &lines.iter().map(|l| l.to_string()).collect::<Vec<_>>())
    }

    const A: &str = r#"{"ms":1,"name":"a","reason":null,"result":"pass"}"#;

    #[test]
    fn failed_cut_short_or_failing_runs_count_as_failures() {
        let mut t = Tally::default();
        let failing = run(&[A, r#"{"ms":2,"name":"b","reason":"short read","result":"fail"}"#, "wine: 1 passed, 1 failed, 0 skipped"]);
        assert_eq!(t.suite("failing", false, &failing), (1, 1, 0));
        assert_eq!((t.passed, t.failed), (1, 1));
        // The tool died mid-object: the whole run is one failed case.
        assert_eq!(t.suite("cut short", false, &run(&[A, r#"{"ms":2,"na"#])), (0, 1, 0));
        assert_eq!((t.passed, t.failed), (1, 2));
        // Every case passed, but the tool exited with failure.
        assert_eq!(t.suite("exit", false, &run(&[A, "wine: 1 passed, 0 failed, 0 skipped"])), (1, 0, 0));
        assert_eq!((t.passed, t.failed), (2, 3));
    }
}

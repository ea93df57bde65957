//! Shared helpers for xtask: running commands, idempotent installs, paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub type Result<T = ()> = std::result::Result<T, String>;

/// The repository root (the parent of xtask/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repo").to_path_buf()
}

/// `target/` of the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// `~/.cache/scull-rs` (created).
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"));
    let d = base.join("scull-rs");
    let _ = std::fs::create_dir_all(&d);
    d
}

// ---- Steps, logs and progress -------------------------------------------
//
// A step is one line on stderr when it ends: `==> what: ok (3.2 s)` or
// `==> what: FAILED (3.2 s)`. Commands run inside it (`run`, `output`,
// `show`) write their output to `target/logs/<step>.log`, not the terminal;
// only result lines on their stdout (`test result:`, `N passed, M failed` closing lines,
// `FAIL` cases, `ratio`/`reference` figures, stress/fuzz summaries) are
// echoed to stdout, where CI reads them. When the step fails, its log's
// path and last 30 lines are printed. `-v` (or XTASK_VERBOSE=1) streams
// everything instead. While a command runs, a spinner shows the step on a
// terminal; otherwise a line every 10 s says it is still running.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// `-v`: stream every command's output instead of logging it.
pub fn set_verbose(v: bool) {
    VERBOSE.store(v, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed) || std::env::var_os("XTASK_VERBOSE").is_some_and(|v| v != "0")
}

struct Step {
    what: String,
    started: Instant,
    log: PathBuf,
}

static STEP: Mutex<Option<Step>> = Mutex::new(None);
/// Logs already started by this run (a repeated step appends to its log).
static LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// `target/logs/`.
pub fn logs_dir() -> PathBuf {
    target_dir().join("logs")
}

/// The log file name of a step: its words, lower case, joined by `-`.
fn slug(what: &str) -> String {
    let mut s = String::new();
    for w in what.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
        if !s.is_empty() {
            s.push('-');
        }
        s.push_str(&w.to_ascii_lowercase());
        if s.len() > 60 {
            break;
        }
    }
    if s.is_empty() {
        s.push_str("step");
    }
    s
}

fn format_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", s as u64 / 60, s as u64 % 60)
    }
}

/// Starts a step (and ends the previous one as ok).
pub fn step(msg: &str) {
    end_step(true);
    let log = logs_dir().join(format!("{}.log", slug(msg)));
    let _ = std::fs::create_dir_all(logs_dir());
    let mut started = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    if !started.contains(&log) {
        let _ = std::fs::write(&log, b"");
        started.push(log.clone());
    }
    if verbose() {
        eprintln!("\n==> {msg}");
    }
    *STEP.lock().unwrap_or_else(|e| e.into_inner()) = Some(Step { what: msg.to_string(), started: Instant::now(), log });
}

/// A heading over the steps that follow (e.g. `demo: scull.sys under
/// Wine`): ends the current step and prints the heading line; it is not a
/// step itself.
pub fn section(msg: &str) {
    end_step(true);
    eprintln!("\n== {msg}");
}

/// Ends the current step, if any, with its one line; on failure also the
/// log's path and its last 30 lines.
pub fn end_step(ok: bool) {
    let Some(s) = STEP.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
    let took = format_secs(s.started.elapsed());
    if ok {
        eprintln!("==> {}: ok ({took})", s.what);
        return;
    }
    eprintln!("==> {}: FAILED ({took})", s.what);
    let text = std::fs::read(&s.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    if !text.trim().is_empty() {
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- last {} lines of {}:", lines.len().min(30), s.log.display());
        for l in &lines[lines.len().saturating_sub(30)..] {
            eprintln!("    {l}");
        }
        eprintln!("--- full log: {}", s.log.display());
    }
}

/// The current step's log (a catch-all when no step has begun).
fn current_log() -> PathBuf {
    if let Some(s) = STEP.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return s.log.clone();
    }
    let _ = std::fs::create_dir_all(logs_dir());
    logs_dir().join("xtask.log")
}

fn current_what() -> String {
    STEP.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|s| s.what.clone()).unwrap_or_else(|| "xtask".into())
}

fn append(log: &Path, text: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(f, "{text}");
    }
}

/// A detail of the current step: into its log (and stderr with `-v`).
pub fn note(msg: &str) {
    if verbose() {
        eprintln!("{msg}");
    }
    append(&current_log(), msg);
}

/// A line the harnesses or CI read: passed through to stdout.
pub fn is_result_line(l: &str) -> bool {
    let t = l.trim_start();
    if t.starts_with("test result:") || t.starts_with("FAIL ") || t.starts_with("ratio ") || t.starts_with("reference ") {
        return true;
    }
    if ["stress: ", "fuzz: ", "fault-sweep: "].iter().any(|p| t.starts_with(p)) {
        return true;
    }
    // `<name>: N passed, M failed[, K skipped]`
    match t.split_once(": ") {
        Some((name, rest)) => {
            !name.contains(' ')
                && rest.split_whitespace().next().is_some_and(|n| n.parse::<u64>().is_ok())
                && rest.contains(" passed, ")
                && rest.contains(" failed")
        }
        None => false,
    }
}

/// Shows that the current step is alive while `f` runs: a spinner on a
/// terminal, a line every 10 s otherwise (nothing with `-v`, which streams).
pub fn progress<T>(f: impl FnOnce() -> T) -> T {
    let ticker = Ticker::start();
    let r = f();
    drop(ticker);
    r
}

struct Ticker {
    done: Arc<AtomicBool>,
    bar: Option<ProgressBar>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start() -> Ticker {
        let done = Arc::new(AtomicBool::new(false));
        if verbose() {
            return Ticker { done, bar: None, thread: None };
        }
        let what = current_what();
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template("==> {msg} {spinner} {elapsed}").expect("a valid template"));
            bar.set_message(what);
            bar.enable_steady_tick(Duration::from_millis(200));
            return Ticker { done, bar: Some(bar), thread: None };
        }
        let d = done.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut next = Duration::from_secs(10);
            while !d.load(Ordering::Relaxed) {
                if t0.elapsed() >= next {
                    eprintln!("    ... {what}: {:.0} s", t0.elapsed().as_secs_f64());
                    next += Duration::from_secs(10);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Ticker { done, bar: None, thread: Some(thread) }
    }

    /// Prints a result line to stdout without tearing the spinner.
    fn println(&self, l: &str) {
        let out = || {
            println!("{l}");
            let _ = std::io::stdout().flush();
        };
        match &self.bar {
            Some(b) => b.suspend(out),
            None => out(),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// What a command's stdout does: logged (result lines echoed), passed
/// through to our stdout, or captured and returned.
#[derive(Clone, Copy, PartialEq)]
enum Out {
    Log,
    Show,
    Capture,
}

/// Runs `cmd` under the current step: output to the step's log, result lines
/// (and with `Show` every stdout line) to stdout; `-v` streams it all.
fn exec(cmd: &mut Command, out: Out) -> Result<String> {
    let d = describe(cmd);
    let log = current_log();
    note(&format!("+ {d}"));
    if verbose() {
        if out == Out::Capture {
            let o = cmd.stderr(Stdio::inherit()).output().map_err(|e| format!("cannot run `{d}`: {e}"))?;
            return if o.status.success() {
                Ok(String::from_utf8_lossy(&o.stdout).into_owned())
            } else {
                Err(format!("`{d}` failed: {}", o.status))
            };
        }
        let st = cmd.status().map_err(|e| format!("cannot run `{d}`: {e}"))?;
        return if st.success() { Ok(String::new()) } else { Err(format!("`{d}` failed: {}", st)) };
    }
    let ticker = Arc::new(Ticker::start());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{d}`: {e}"))?;
    let file = Arc::new(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(|e| format!("{}: {e}", log.display()))?));
    let pump = |r: Box<dyn std::io::Read + Send>, is_stdout: bool| {
        let (file, ticker) = (file.clone(), ticker.clone());
        std::thread::spawn(move || {
            let mut captured = String::new();
            for l in BufReader::new(r).lines().map_while(|l| l.ok()) {
                if let Ok(mut f) = file.lock() {
                    let _ = writeln!(f, "{l}");
                }
                if is_stdout && out == Out::Capture {
                    captured.push_str(&l);
                    captured.push('\n');
                } else if is_stdout && (out == Out::Show || is_result_line(&l)) {
                    // Only stdout: progress lines on stderr (`fuzz: 10 s of
                    // 10 s, ...`) look like summaries but are not results.
                    ticker.println(&l);
                }
            }
            captured
        })
    };
    let so = pump(Box::new(child.stdout.take().expect("piped")), true);
    let se = pump(Box::new(child.stderr.take().expect("piped")), false);
    let st = child.wait().map_err(|e| format!("`{d}`: {e}"))?;
    let captured = so.join().unwrap_or_default();
    let _ = se.join();
    drop(ticker);
    if st.success() {
        Ok(captured)
    } else {
        append(&log, &format!("`{d}` failed: {st}"));
        Err(format!("`{d}` failed: {st} (log: {})", log.display()))
    }
}

/// Runs a command; its output goes to the step's log (result lines to
/// stdout). Fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result {
    exec(cmd, Out::Log).map(drop)
}

/// Runs a bash script (`-euo pipefail`) like [`run`].
pub fn sh(script: &str) -> Result {
    run(Command::new("bash").args(["-euo", "pipefail", "-c", script]))
}

/// Runs a command whose stdout is the point (a demo): stdout passes through,
/// stderr goes to the step's log. Fails on a non-zero exit.
pub fn show(cmd: &mut Command) -> Result {
    exec(cmd, Out::Show).map(drop)
}

/// Runs a command and returns its stdout (stderr to the step's log); fails
/// on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    exec(cmd, Out::Capture)
}

/// Installs Debian packages that are not installed yet (idempotent).
pub fn apt_install(pkgs: &[&str]) -> Result {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("apt-get install {}", missing.join(" ")));
    let stamp = cache_dir().join("apt-updated");
    let fresh = stamp
        .metadata()
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().map(|e| e.as_secs() < 6 * 3600).unwrap_or(false))
        .unwrap_or(false);
    if !fresh {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        let _ = std::fs::write(&stamp, b"");
    }
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

/// Adds rustup targets that are not installed yet (idempotent).
pub fn rustup_targets(targets: &[&str]) -> Result {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    let missing: Vec<&str> = targets.iter().copied().filter(|t| !installed.lines().any(|l| l.trim() == *t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add"]).args(&missing))
}

/// `cargo` as invoked by the user.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

// ---- Conformance runs read as JSON ---------------------------------------
//
// `scull-tool conformance --format json` prints one JSON object per case on
// stdout (`{"name", "result": "pass"|"fail"|"skip", "reason", "ms"}`), then
// the closing line `<target>: N passed, M failed, K skipped`, last.

/// What one case concluded, with the reason of a failure or a skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// One case of a conformance run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub name: String,
    pub outcome: Outcome,
    pub ms: u64,
}

impl CaseResult {
    /// The line scull-tool prints for the case without `--format json`.
    pub fn human(&self) -> String {
        match &self.outcome {
            Outcome::Pass => format!("ok   {} ({} ms)", self.name, self.ms),
            Outcome::Fail(why) => format!("FAIL {}: {why}", self.name),
            Outcome::Skip(why) => format!("skip {}: {why}", self.name),
        }
    }
}

/// Parses one case object (one stdout line of `conformance --format json`).
pub fn parse_case(line: &str) -> Result<CaseResult> {
    let bad = |why: &str| format!("not a conformance case object ({why}): {line:?}");
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
    let name = v.get("name").and_then(|n| n.as_str()).filter(|n| !n.is_empty()).ok_or_else(|| bad("no name"))?;
    let ms = v.get("ms").and_then(|m| m.as_u64()).ok_or_else(|| bad("no ms"))?;
    let reason = v.get("reason").and_then(|r| r.as_str()).map(str::to_string);
    let outcome = match (v.get("result").and_then(|r| r.as_str()), reason) {
        (Some("pass"), None) => Outcome::Pass,
        (Some("fail"), Some(why)) => Outcome::Fail(why),
        (Some("skip"), Some(why)) => Outcome::Skip(why),
        _ => return Err(bad("result is not pass with no reason, or fail or skip with one")),
    };
    Ok(CaseResult { name: name.to_string(), outcome, ms })
}

/// A whole conformance run: its cases and their counts.
#[derive(Debug, Default)]
pub struct SuiteRun {
    pub cases: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl SuiteRun {
    /// Whether the case `name` ran and passed.
    pub fn passed(&self, name: &str) -> bool {
        self.cases.iter().any(|c| c.name == name && c.outcome == Outcome::Pass)
    }

    /// The names of the cases that concluded like `is`.
    pub fn names(&self, is: fn(&Outcome) -> bool) -> Vec<String> {
        self.cases.iter().filter(|c| is(&c.outcome)).map(|c| c.name.clone()).collect()
    }
}

/// Parses the stdout of `scull-tool --target <target> conformance --format
/// json`: every line a case object but the last, which is the closing line
/// with the objects' own counts. Anything else is an error: a line that is
/// not a case object, a case named twice, no closing line (a run cut short)
/// or one whose counts differ from the objects'.
pub fn parse_conformance_json(target: &str, lines: &[String]) -> Result<SuiteRun> {
    let Some((closing, objects)) = lines.split_last() else {
        return Err(format!("{target} conformance printed nothing"));
    };
    let mut run = SuiteRun::default();
    for l in objects {
        let c = parse_case(l)?;
        if run.cases.iter().any(|seen| seen.name == c.name) {
            return Err(format!("case {} reported twice", c.name));
        }
        match c.outcome {
            Outcome::Pass => run.passed += 1,
            Outcome::Fail(_) => run.failed += 1,
            Outcome::Skip(_) => run.skipped += 1,
        }
        run.cases.push(c);
    }
    let counts = closing_counts(target, closing)
        .ok_or_else(|| format!("{target} conformance: the last line is not `{target}: N passed, M failed, K skipped` (cut short?): {closing:?}"))?;
    let seen = (run.passed, run.failed, run.skipped);
    if counts != seen {
        return Err(format!(
            "{target} conformance: the closing line counts {} passed, {} failed, {} skipped; the case objects {} passed, {} failed, {} skipped",
            counts.0, counts.1, counts.2, seen.0, seen.1, seen.2
        ));
    }
    Ok(run)
}

/// The counts of the closing line `<target>: N passed, M failed, K skipped`.
fn closing_counts(target: &str, line: &str) -> Option<(usize, usize, usize)> {
    let mut parts = line.strip_prefix(target)?.strip_prefix(": ")?.split(", ");
    let mut n = [0; 3];
    for (slot, word) in n.iter_mut().zip(["passed", "failed", "skipped"]) {
        let (count, w) = parts.next()?.split_once(' ')?;
        if w != word {
            return None;
        }
        *slot = count.parse().ok()?;
    }
    parts.next().is_none().then_some((n[0], n[1], n[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_reach_stdout() {
        for l in [
            "test result: ok. 3 passed; 0 failed; 0 ignored",
            "model: 53 passed, 0 failed, 0 skipped",
            "wine: 80 passed, 0 failed, 8 skipped",
            "qemu: 81 passed, 0 failed",
            "FAIL seek_set_cur_end: SEEK_END",
            "ratio core_vs_memcpy = 0.98",
            "reference scull_vs_tmpfs_write = 0.07",
            "stress: 0 lost, 0 corrupt",
        ] {
            assert!(is_result_line(l), "{l}");
        }
        for l in ["   Compiling scull-core v0.1.0", "test store::tests::x ... ok", "Setting up wine64 (8.0)", "ok   seek_set_cur_end (3 ms)", "model: the device"] {
            assert!(!is_result_line(l), "{l}");
        }
    }

    /// Lines as `scull-tool --target wine conformance --format json` prints them.
    fn doc(cases: &[&str], closing: &str) -> Vec<String> {
        cases.iter().chain([&closing]).map(|l| l.to_string()).collect()
    }

    const PASS: &str = r#"{"ms":3,"name":"store_write_read_roundtrip","reason":null,"result":"pass"}"#;
    const SKIP: &str = r#"{"ms":0,"name":"poll","reason":"no poll on Windows","result":"skip"}"#;
    const FAIL: &str = r#"{"ms":12,"name":"seek_set_cur_end","reason":"SEEK_END: got 0, want 4000","result":"fail"}"#;

    #[test]
    fn conformance_json_counts_every_case() {
        let run = parse_conformance_json("wine", &doc(&[PASS, SKIP], "wine: 1 passed, 0 failed, 1 skipped")).unwrap();
        assert_eq!((run.passed, run.failed, run.skipped), (1, 0, 1));
        assert!(run.passed("store_write_read_roundtrip") && !run.passed("poll"));
        assert_eq!(run.names(|o| matches!(o, Outcome::Skip(_))), ["poll"]);
        let human: Vec<String> = run.cases.iter().map(CaseResult::human).collect();
        assert_eq!(human, ["ok   store_write_read_roundtrip (3 ms)", "skip poll: no poll on Windows"]);
    }

    #[test]
    fn conformance_json_reports_a_failing_case() {
        let run = parse_conformance_json("wine", &doc(&[PASS, FAIL], "wine: 1 passed, 1 failed, 0 skipped")).unwrap();
        assert_eq!((run.passed, run.failed, run.skipped), (1, 1, 0));
        assert_eq!(run.names(|o| matches!(o, Outcome::Fail(_))), ["seek_set_cur_end"]);
        assert_eq!(run.cases[1].human(), "FAIL seek_set_cur_end: SEEK_END: got 0, want 4000");
    }

    #[test]
    fn conformance_json_refuses_a_truncated_or_inconsistent_run() {
        let err = |lines: Vec<String>| parse_conformance_json("wine", &lines).unwrap_err();
        // Cut short: no closing line, or a half-written object.
        assert!(err(doc(&[PASS], SKIP)).contains("the last line is not"));
        assert!(err(doc(&[PASS], &SKIP[..20])).contains("the last line is not"));
        assert!(err(doc(&[&PASS[..30]], "wine: 1 passed, 0 failed, 0 skipped")).contains("not a conformance case object"));
        assert!(err(Vec::new()).contains("printed nothing"));
        // The closing line's counts must be the objects'.
        assert!(err(doc(&[PASS, FAIL], "wine: 2 passed, 0 failed, 0 skipped")).contains("the case objects 1 passed, 1 failed"));
        assert!(err(doc(&[PASS], "wine: 1 passed, 0 failed, 0 skipped, 3 lost")).contains("the last line is not"));
        assert!(err(doc(&[PASS], "qemu: 1 passed, 0 failed, 0 skipped")).contains("the last line is not"));
        // Human lines, unknown results, a missing reason, a case twice.
        assert!(err(doc(&["ok   store_write_read_roundtrip (3 ms)"], "wine: 1 passed, 0 failed, 0 skipped")).contains("not a conformance case object"));
        assert!(err(doc(&[&PASS.replace("\"pass\"", "\"ok\"")], "wine: 1 passed, 0 failed, 0 skipped")).contains("result is not"));
        assert!(err(doc(&[&FAIL.replace("\"SEEK_END: got 0, want 4000\"", "null")], "wine: 0 passed, 1 failed, 0 skipped")).contains("result is not"));
        assert!(err(doc(&[PASS, PASS], "wine: 2 passed, 0 failed, 0 skipped")).contains("reported twice"));
    }

    #[test]
    fn step_logs_are_named_after_the_step() {
        assert_eq!(slug("host: cargo test (workspace)"), "host-cargo-test-workspace");
        assert_eq!(slug("kmod: debootstrap trixie (minbase)"), "kmod-debootstrap-trixie-minbase");
    }
}

//! `cargo xtask ntsim`: the release scull.sys under ntsim (tools/ntsim), a
//! miniature NT kernel and I/O manager that loads the driver image into a
//! Linux process (docs/ntsim.md). Builds the release driver
//! (`crate::wdm::build`) and scull-tool, then runs against it:
//! - the conformance suite (`scull-tool --target ntsim conformance`):
//!   the common cases, the Windows cases and the ntsim cases, with
//!   CreateFileW's TRUNCATE_EXISTING as Windows sends it;
//! - the truncation cases again with ReactOS's TRUNCATE_EXISTING
//!   (FILE_OVERWRITE, `NTSIM_TRUNCATE=reactos`), so the driver meets both;
//! - stress (8 writers, 8 readers, stores and pipes) and fuzz (fixed seed).
//!
//! Prints `ntsim: loaded target/wdm/scull.sys sha256=<hex>` once (every run
//! must report the same hash, and it must be the file's) and, last,
//! `ntsim: N passed, M failed, K skipped`. Skips are the suite's, each
//! with its reason. Conformance runs are read from `--format json`
//! (`crate::util::parse_conformance_json`): a run that crashed, was cut
//! short or exited with failure and no failed case is a failed case.

use crate::util::{cargo, note, parse_conformance_json, root, step, target_dir, Outcome, Result, SuiteRun};
use std::path::Path;
use std::process::Command;

/// The cases re-run with ReactOS's TRUNCATE_EXISTING.
const REACTOS_FILTER: &str = "trunc,trim,set_len,store_write_read_roundtrip,single_is_a_store,priv_private_per_key";

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
    shas: Vec<String>,
}

impl Tally {
    fn case(&mut self, name: &str, ok: bool, msg: &str) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            println!("FAIL {name}: {msg}");
        }
    }

    /// Adds a conformance run's cases, each named with `prefix`, and prints
    /// its failed and skipped cases and ntsim's `ntsim-verifier:` lines. A
    /// run that could not be read (a crash, output cut short) is one failed
    /// case, whatever it printed before; so is a failed exit with no failed
    /// case.
    fn suite(&mut self, prefix: &str, c: &Conformance) {
        c.notes.iter().filter(|l| l.starts_with("ntsim-verifier: ")).for_each(|l| println!("{l}"));
        let Ok(run) = &c.run else {
            let why = c.run.as_ref().err().map_or("", String::as_str);
            let stop = c.notes.iter().find(|l| l.starts_with("ntsim: BUGCHECK "));
            let msg = format!("scull-tool ended with {}: {}", c.tool.status, stop.map_or(why, String::as_str));
            return self.case(&format!("{prefix}conformance"), false, &msg);
        };
        for case in &run.cases {
            match &case.outcome {
                Outcome::Pass => self.passed += 1,
                Outcome::Fail(why) => self.case(&format!("{prefix}{}", case.name), false, why),
                Outcome::Skip(why) => {
                    self.skipped += 1;
                    println!("skip {prefix}{}: {why}", case.name);
                }
            }
        }
        if run.failed == 0 && !c.tool.status.success() {
            self.case(&format!("{prefix}conformance"), false, &format!("no case failed, but scull-tool ended with {}", c.tool.status));
        }
    }

    fn loaded(&mut self, out: &str) {
        for l in out.lines() {
            if let Some(sha) = l.strip_prefix("ntsim: loaded ").and_then(|r| r.split_once(" sha256=")).map(|(_, s)| s.trim()) {
                self.shas.push(sha.to_string());
            }
        }
    }
}

/// A finished scull-tool run: its stdout, its stderr (both also in the
/// step's log) and its exit status.
struct ToolRun {
    out: String,
    err: String,
    status: std::process::ExitStatus,
}

impl ToolRun {
    /// Stdout then stderr.
    fn text(&self) -> String {
        format!("{}{}", self.out, self.err)
    }
}

/// Runs scull-tool against ntsim.
fn tool(tool: &Path, sys: &Path, env: &[(&str, &str)], args: &[&str]) -> Result<ToolRun> {
    let mut c = Command::new(tool);
    c.current_dir(root()).env("SCULL_SYS", sys).args(["--target", "ntsim"]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    note(&format!("$ {} {}", env.iter().map(|(k, v)| format!("{k}={v} ")).collect::<String>(), args.join(" ")));
    let o = c.output().map_err(|e| format!("{}: {e}", tool.display()))?;
    let r = ToolRun { out: String::from_utf8_lossy(&o.stdout).into_owned(), err: String::from_utf8_lossy(&o.stderr).into_owned(), status: o.status };
    for l in r.text().lines() {
        note(l);
    }
    Ok(r)
}

/// A `conformance --format json` run: the tool's output, the lines ntsim
/// itself printed on stdout among the case objects (`ntsim-verifier:`
/// figures, a `ntsim: BUGCHECK` stop), and the run read from the rest.
struct Conformance {
    tool: ToolRun,
    notes: Vec<String>,
    run: Result<SuiteRun>,
}

impl Conformance {
    fn read(tool: ToolRun) -> Conformance {
        let (notes, objects): (Vec<String>, Vec<String>) =
            tool.out.lines().map(str::to_string).partition(|l| l.starts_with("ntsim-verifier: ") || l.starts_with("ntsim: BUGCHECK "));
        let run = parse_conformance_json("ntsim", &objects);
        Conformance { tool, notes, run }
    }
}

/// Runs `scull-tool --target ntsim conformance --format json` with `args`
/// after it.
fn conformance(exe: &Path, sys: &Path, env: &[(&str, &str)], args: &[&str]) -> Result<Conformance> {
    let all: Vec<&str> = ["conformance", "--format", "json"].iter().chain(args).copied().collect();
    Ok(Conformance::read(tool(exe, sys, env, &all)?))
}

fn sha256_of(p: &Path) -> Result<String> {
    let o = Command::new("sha256sum").arg(p).output().map_err(|e| format!("sha256sum: {e}"))?;
    Ok(String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or("").to_string())
}

pub fn run(args: &[String]) -> Result {
    if let Some(a) = args.first() {
        return Err(format!("ntsim: unknown argument `{a}` (it takes none)"));
    }
    let sys = crate::wdm::build()?;
    step("ntsim: cargo build -p scull-tool");
    crate::util::run(cargo().args(["build", "--quiet", "-p", "scull-tool"]))?;
    let exe = target_dir().join("debug").join("scull-tool");
    let mut t = Tally::default();
    // Every ntsim process of the suite, stress and fuzz appends its check counts here.
    let report = target_dir().join("ntsim-verifier.txt");
    let _ = std::fs::remove_file(&report);
    std::env::set_var("NTSIM_REPORT", &report);

    step("ntsim: conformance suite on the release scull.sys (Windows' kernel32 semantics)");
    let c = conformance(&exe, &sys, &[], &[])?;
    t.loaded(&c.tool.err);
    t.suite("", &c);
    step("ntsim: the truncation cases with ReactOS's TRUNCATE_EXISTING (FILE_OVERWRITE)");
    let c = conformance(&exe, &sys, &[("NTSIM_TRUNCATE", "reactos")], &["--filter", REACTOS_FILTER])?;
    t.loaded(&c.tool.err);
    t.suite("reactos:", &c);
    // Stress and fuzz trim with truncating opens: under both TRUNCATE_EXISTING forms.
    for (prefix, env) in [("", &[][..]), ("reactos:", &[("NTSIM_TRUNCATE", "reactos")][..])] {
        step(&format!("ntsim: {prefix}stress, 8 writers and 8 readers on stores and pipes, 3 s, seeded yields at DDI boundaries"));
        let yenv: Vec<(&str, &str)> = env.iter().copied().chain([("NTSIM_YIELD_SEED", "20261204")]).collect();
        let r = tool(&exe, &sys, &yenv, &["stress", "--writers", "8", "--readers", "8", "--seconds", "3", "--seed", "20261204"])?;
        let (out, ok) = (r.text(), r.status.success());
        t.loaded(&out);
        let line = out.lines().find(|l| l.starts_with("stress: ")).or_else(|| out.lines().find(|l| l.starts_with("scull-tool: "))).unwrap_or("no result line");
        t.case(&format!("{prefix}stress"), ok && line == "stress: 0 lost, 0 corrupt", line);
        step(&format!("ntsim: {prefix}fuzz, fixed seed, 5 s"));
        let r = tool(&exe, &sys, env, &["fuzz", "--seconds", "5", "--seed", "20261121"])?;
        let (out, ok) = (r.text(), r.status.success());
        t.loaded(&out);
        let line = out.lines().rev().find(|l| l.starts_with("fuzz: ") || l.starts_with("scull-tool: ")).unwrap_or("no result line");
        t.case(&format!("{prefix}fuzz"), ok, line);
    }
    crate::util::end_step(true);
    std::env::remove_var("NTSIM_REPORT");
    verifier_report(&report, &mut t)?;
    planted(&exe, &mut t)?;
    crate::util::end_step(true);

    let file_sha = sha256_of(&sys)?;
    let rel = sys.strip_prefix(root()).unwrap_or(&sys).display().to_string();
    if t.shas.is_empty() || t.shas.iter().any(|s| *s != file_sha) {
        t.failed += 1;
        println!("FAIL sha256: the runs loaded {:?}, the file is {file_sha}", t.shas);
    }
    println!("ntsim: loaded {rel} sha256={file_sha}");
    println!("ntsim: {} passed, {} failed, {} skipped", t.passed, t.failed, t.skipped);
    if t.failed > 0 {
        return Err(format!("{} ntsim case(s) failed", t.failed));
    }
    Ok(())
}

// ---------------------------------------------------------------- the verifier

/// Sums the check counts every ntsim process appended to `report`
/// (`NTSIM_REPORT`); prints one line per check. Fails when any check
/// stopped a run that was meant to pass, or never ran.
fn verifier_report(report: &Path, t: &mut Tally) -> Result {
    let text = std::fs::read_to_string(report).map_err(|e| format!("{}: {e}", report.display()))?;
    let mut sums: Vec<(String, u64, u64)> = Vec::new();
    let (mut contention, mut dpc_max) = ([0u64; 3], 0u64);
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["check", id, "ran", n, "times,", s, "stops"] => {
                let (n, s) = (n.parse().unwrap_or(0), s.parse().unwrap_or(0));
                match sums.iter_mut().find(|x| x.0 == *id) {
                    Some(x) => (x.1, x.2) = (x.1 + n, x.2 + s),
                    None => sums.push((id.to_string(), n, s)),
                }
            }
            ["contention", a, "spin", b, "semaphore", c, "yields"] => {
                for (i, v) in [a, b, c].iter().enumerate() {
                    contention[i] += v.parse::<u64>().unwrap_or(0);
                }
            }
            ["dispatch_level", "max", us, ..] => dpc_max = dpc_max.max(us.parse().unwrap_or(0)),
            _ => {}
        }
    }
    for (id, n, s) in &sums {
        println!("ntsim-verifier: check {id} ran {n} times, {s} stops");
        t.case(&format!("verifier {id}"), *s == 0, &format!("{s} stops on the release binary"));
    }
    println!("ntsim-verifier: contention: {} contended spin lock acquisitions, {} contended semaphore waits, {} injected yields", contention[0], contention[1], contention[2]);
    println!("ntsim-verifier: longest time at DISPATCH_LEVEL {dpc_max} us of CPU time (bound 1000 us)");
    Ok(())
}

/// A planted bug in scull-wdm, applied to a scratch copy at build time:
/// `snippet` in `file` (under the scratch root: scull-wdm/... or
/// scull-core/...) becomes `with`. Caught when the run stops with
/// `Stop(bugcheck, check)`, or when the named conformance case fails.
struct Mutant {
    name: &'static str,
    file: &'static str,
    snippet: &'static str,
    with: &'static str,
    caught: Caught,
    /// The conformance cases run against it.
    filter: &'static str,
}

enum Caught {
    Stop(&'static str, &'static str),
    CaseFails(&'static str),
}

const MUTANTS: &[Mutant] = &[
    Mutant {
        name: "role-from-requested-not-granted",
        file: "scull-wdm/src/access.rs",
        snippet: "nt::role_from_granted(granted)",
        with: "nt::role_from_granted(None)",
        caught: Caught::CaseFails("ntsim_pipe_role_is_the_granted_access"),
        filter: "ntsim_pipe_role_is_the_granted_access",
    },
    Mutant {
        name: "file-allocation-information-refused",
        file: "scull-core/src/nt.rs",
        snippet: "FILE_ALLOCATION_INFORMATION => return len().map(SetInformation::Allocation),",
        with: "FILE_ALLOCATION_INFORMATION => return Err(Error::Invalid.ntstatus()),",
        caught: Caught::CaseFails("ntsim_truncate_existing_opens_and_trims"),
        filter: "ntsim_truncate_existing_opens_and_trims",
    },
    Mutant {
        name: "trim-without-write-access",
        file: "scull-wdm/src/access.rs",
        snippet: "nt::create_action(options, granted)",
        with: "nt::create_action(options, None)",
        caught: Caught::CaseFails("ntsim_read_only_create_always_refused"),
        filter: "ntsim_read_only_create_always_refused",
    },
    Mutant {
        name: "each-device-ready-as-created",
        file: "scull-core/src/nt.rs",
        snippet: "    (0..n).try_for_each(&mut create)?;\n    (0..n).try_for_each(&mut link)?;\n    (0..n).for_each(&mut ready);",
        with: "    (0..n).try_for_each(|i| { create(i)?; link(i)?; ready(i); Ok(()) })?;",
        caught: Caught::CaseFails("ntsim_no_open_while_driver_entry_runs"),
        filter: "ntsim_no_open_while_driver_entry_runs",
    },
    Mutant {
        name: "ioctl-judged-by-process-token",
        file: "scull-wdm/src/ident.rs",
        snippet: "TokenChoice::Effective => open_effective_token(irp)?,",
        with: "TokenChoice::Effective => (open_process_token(irp)?, true),",
        caught: Caught::CaseFails("ntsim_impersonating_admin_service_privileged_ioctl_refused"),
        filter: "ntsim_impersonating_admin_service_privileged_ioctl_refused",
    },
    Mutant {
        name: "pending-without-iomarkirppending",
        file: "scull-wdm/src/irpq.rs",
        snippet: "unsafe { IoMarkIrpPending(irp) };",
        with: "",
        caught: Caught::Stop("DRIVER_VERIFIER_IOMANAGER_VIOLATION", "io.pending"),
        filter: "",
    },
    Mutant {
        name: "cancel-routine-not-cleared",
        file: "scull-wdm/src/irpq.rs",
        snippet: "let ours = unsafe { IoSetCancelRoutine(irp, None) }.is_some();",
        with: "let ours = true;",
        caught: Caught::Stop("CANCEL_STATE_IN_COMPLETED_IRP", "io.cancel_routine"),
        filter: "",
    },
    Mutant {
        name: "semaphore-released-twice",
        file: "scull-wdm/src/sync.rs",
        snippet: "KeReleaseSemaphore(self.lock.sem.get(), 0, 1, 0);",
        with: "KeReleaseSemaphore(self.lock.sem.get(), 0, 1, 0); KeReleaseSemaphore(self.lock.sem.get(), 0, 1, 0);",
        caught: Caught::Stop("KMODE_EXCEPTION_NOT_HANDLED", "sem.limit"),
        filter: "",
    },
    Mutant {
        name: "free-with-another-tag",
        file: "scull-wdm/src/pool.rs",
        snippet: "ExFreePoolWithTag(p.as_ptr().cast(), TAG)",
        with: "ExFreePoolWithTag(p.as_ptr().cast(), TAG ^ 0x20)",
        caught: Caught::Stop("BAD_POOL_CALLER", "pool.tag"),
        filter: "",
    },
    Mutant {
        name: "free-forgotten",
        file: "scull-wdm/src/pool.rs",
        snippet: "unsafe { ExFreePoolWithTag(p.as_ptr().cast(), TAG) }",
        with: "let _ = p;",
        caught: Caught::Stop("DRIVER_VERIFIER_DETECTED_VIOLATION", "pool.unload"),
        filter: "",
    },
];

/// The scratch workspace: scull-core and scull-wdm copied under
/// target/ntsim-mutants/src (with a workspace manifest scull-core inherits
/// from), one target dir for every mutant, built binaries cached by a hash
/// of the sources and the mutant.
fn mutants_root() -> std::path::PathBuf {
    target_dir().join("ntsim-mutants")
}

fn source_files() -> Result<Vec<std::path::PathBuf>> {
    let mut v = Vec::new();
    for top in ["scull-wdm", "scull-core"] {
        let mut stack = vec![root().join(top)];
        while let Some(d) = stack.pop() {
            let rd = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            for e in rd.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().to_string();
                if p.is_dir() {
                    if !["fuzz", "target"].contains(&name.as_str()) {
                        stack.push(p);
                    }
                } else {
                    v.push(p);
                }
            }
        }
    }
    v.sort();
    Ok(v)
}

/// Builds (or takes from the cache) the mutant's scull.sys.
fn build_mutant(m: &Mutant, files: &[std::path::PathBuf], key_base: u64) -> Result<std::path::PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key_base, m.file, m.snippet, m.with).hash(&mut h);
    let cached = mutants_root().join("cache").join(format!("{}-{:016x}.sys", m.name, h.finish()));
    if cached.exists() {
        return Ok(cached);
    }
    let src = mutants_root().join("src");
    for f in files {
        let rel = f.strip_prefix(root()).unwrap();
        let to = src.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).map_err(|e| e.to_string())?;
        // Unchanged files keep their mtime, so cargo rebuilds only what the mutant touches
        // (a file a failed build left mutated differs, so it is copied back).
        let same = std::fs::read(&to).ok() == std::fs::read(f).ok();
        if !same {
            std::fs::copy(f, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
    }
    // The root manifest's [workspace.package] (scull-core inherits from it).
    let ws = std::fs::read_to_string(root().join("Cargo.toml")).map_err(|e| e.to_string())?;
    let pkg = ws.split("\n[").find(|s| s.starts_with("workspace.package]")).unwrap_or("workspace.package]");
    write_if_changed(&src.join("Cargo.toml"), &format!("[workspace]\nresolver = \"2\"\nmembers = [\"scull-core\"]\nexclude = [\"scull-wdm\"]\n\n[{pkg}\n"))?;
    let file = src.join(m.file);
    let text = std::fs::read_to_string(&file).map_err(|e| format!("mutant {}: {}: {e}", m.name, file.display()))?;
    if text.matches(m.snippet).count() != 1 {
        return Err(format!(
            "MUTANT {} CANNOT BE APPLIED: its snippet occurs {} times (want once) in {}: {:?} (re-anchor it in xtask/src/ntsim.rs)",
            m.name,
            text.matches(m.snippet).count(),
            m.file,
            m.snippet
        ));
    }
    std::fs::write(&file, text.replacen(m.snippet, m.with, 1)).map_err(|e| e.to_string())?;
    let tgt = mutants_root().join("target");
    if !tgt.exists() {
        // Seed with the release build's dependencies: only scull-core and scull-wdm recompile.
        crate::util::run(Command::new("cp").arg("-a").arg(target_dir().join("scull-wdm")).arg(&tgt))?;
    }
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(src.join("scull-wdm"))
        .env("CARGO_TARGET_DIR", &tgt)
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER", "rust-lld")
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_RUSTFLAGS", "-C linker-flavor=lld-link -C target-feature=+crt-static")
        .args(["build", "--quiet", "--release", "--no-default-features", "--features", "mingw", "--target", crate::wdm::DRIVER_TARGET]);
    crate::util::run(&mut c).map_err(|e| format!("mutant {}: build failed: {e}", m.name))?;
    std::fs::create_dir_all(cached.parent().unwrap()).map_err(|e| e.to_string())?;
    std::fs::copy(tgt.join(crate::wdm::DRIVER_TARGET).join("release").join("scull.dll"), &cached).map_err(|e| e.to_string())?;
    // Put the file back for the next mutant.
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    Ok(cached)
}

fn write_if_changed(p: &Path, text: &str) -> Result {
    if std::fs::read_to_string(p).ok().as_deref() != Some(text) {
        std::fs::create_dir_all(p.parent().unwrap()).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// The planted bugs: the small bad drivers of ntsim's tests (each test
/// asserts its bugcheck and check), then the scull-wdm mutants. Prints one
/// line per bug; a miss, or a catch by another check, fails the run.
fn planted(exe: &Path, t: &mut Tally) -> Result {
    step("ntsim: planted bugs in small drivers (cargo test -p ntsim --test io planted_)");
    let o = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args(["test", "-p", "ntsim", "--test", "io", "--", "planted_", "--test-threads=2"])
        .output()
        .map_err(|e| format!("cargo test: {e}"))?;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (mut k, mut caught) = (0, 0);
    out.lines().for_each(note);
    // Each planted test's bugcheck and check, as its `stops!` line states them.
    let src = std::fs::read_to_string(root().join("tools/ntsim/tests/io.rs")).unwrap_or_default();
    let flat = src.split_whitespace().collect::<Vec<_>>().join(" ");
    let expect = |name: &str| {
        let at = flat.find(&format!("stops!( planted_{name}, ")).or_else(|| flat.find(&format!("stops!(planted_{name}, ")))?;
        let q: Vec<&str> = flat[at..].split('"').take(4).collect();
        (q.len() == 4).then(|| format!("{} ({})", q[3], q[1]))
    };
    // Test lines up to the failures section (a failure's message quotes its child's own test line).
    for l in out.lines().take_while(|l| *l != "failures:") {
        if let Some(rest) = l.strip_prefix("test planted_") {
            let (name, res) = rest.split_once(" ... ").unwrap_or((rest, ""));
            k += 1;
            let ok = res == "ok";
            caught += ok as usize;
            let by = expect(name).unwrap_or_else(|| "its check".into());
            println!("ntsim-verifier: planted {name}: {}", if ok { format!("caught by {by}") } else { format!("MISSED (want {by})") });
            t.case(&format!("planted {name}"), ok, "missed, or caught by another check");
        }
    }
    if k == 0 {
        t.case("planted tests", false, &format!("no planted_ test ran: {}", String::from_utf8_lossy(&o.stderr)));
    }
    let files = source_files()?;
    let key_base = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for f in &files {
            f.hash(&mut h);
            std::fs::read(f).map_err(|e| e.to_string())?.hash(&mut h);
        }
        h.finish()
    };
    for m in MUTANTS {
        step(&format!("ntsim: scull-wdm mutant {}", m.name));
        k += 1;
        let sys = match build_mutant(m, &files, key_base) {
            Ok(p) => p,
            Err(e) => {
                println!("ntsim-verifier: {e}");
                t.case(&format!("mutant {}", m.name), false, &e);
                continue;
            }
        };
        let args: Vec<&str> = if m.filter.is_empty() { vec![] } else { vec!["--filter", m.filter] };
        let c = conformance(exe, &sys, &[], &args)?;
        let text = c.tool.text();
        let stop = text.lines().find(|l| l.starts_with("ntsim: BUGCHECK "));
        let (ok, how) = match (&m.caught, stop) {
            (Caught::Stop(bc, id), Some(l)) => {
                let ok = l.contains(&format!("BUGCHECK {bc} (")) && l.contains(&format!("[check {id}]"));
                (ok, if ok { format!("caught by {id} ({bc})") } else { format!("MISSED: stopped by another check: {l}") })
            }
            (Caught::Stop(bc, id), None) => (false, format!("MISSED: no {bc} from {id}")),
            (Caught::CaseFails(case), stop) => {
                let outcome = c.run.as_ref().map(|r| r.cases.iter().find(|x| x.name == *case).map(|x| &x.outcome));
                let ok = matches!(outcome, Ok(Some(Outcome::Fail(_))));
                (ok, match (outcome, stop) {
                    (Ok(Some(Outcome::Fail(_))), _) => format!("caught by case {case}"),
                    (_, Some(l)) => format!("MISSED: {case} did not fail; the run stopped: {l}"),
                    (Ok(Some(Outcome::Pass)), None) => format!("MISSED: {case} passed"),
                    (Ok(Some(Outcome::Skip(why))), None) => format!("MISSED: {case} skipped: {why}"),
                    (Ok(None), None) => format!("MISSED: {case} did not run"),
                    (Err(e), None) => format!("MISSED: the run could not be read ({}): {e}", c.tool.status),
                })
            }
        };
        caught += ok as usize;
        println!("ntsim-verifier: mutant {}: {how}", m.name);
        t.case(&format!("mutant {}", m.name), ok, &how);
    }
    println!("ntsim-verifier: {caught} of {k} planted bugs caught");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// Stdout of `conformance --format json` on ntsim: case objects, a
    /// sweep's verifier line among them, the closing line.
    const OUT: &str = concat!(
        r#"{"ms":3,"name":"store_write_read_roundtrip","reason":null,"result":"pass"}"#,
        "\n",
        "ntsim-verifier: DriverEntry sweep: 9 allocation failures and 4 IoCreateDevice failures, each refused cleanly\n",
        r#"{"ms":0,"name":"poll","reason":"no poll on Windows","result":"skip"}"#,
        "\n",
        r#"{"ms":41,"name":"ntsim_driver_entry_sweep","reason":null,"result":"pass"}"#,
        "\n",
        "ntsim: 2 passed, 0 failed, 1 skipped\n",
    );

    /// The run read from `out`, the tool having exited with `raw` (a wait status).
    fn read(out: &str, raw: i32) -> Conformance {
        let status = std::process::ExitStatus::from_raw(raw);
        Conformance::read(ToolRun { out: out.to_string(), err: String::new(), status })
    }

    fn tally(c: &Conformance) -> (usize, usize, usize) {
        let mut t = Tally::default();
        t.suite("", c);
        (t.passed, t.failed, t.skipped)
    }

    #[test]
    fn a_whole_run_counts_its_cases_and_keeps_the_verifier_lines() {
        let c = read(OUT, 0);
        assert_eq!(tally(&c), (2, 0, 1));
        assert_eq!(c.notes.len(), 1);
        assert!(c.notes[0].starts_with("ntsim-verifier: DriverEntry sweep"));
    }

    #[test]
    fn a_run_cut_short_anywhere_is_one_failure() {
        // scull-tool killed after any byte of its output: at a line's end or inside one.
        for cut in 0..OUT.len() - 1 {
            let c = read(&OUT[..cut], 9);
            assert_eq!(tally(&c), (0, 1, 0), "cut after {cut} bytes: {:?}", &OUT[..cut]);
        }
        // The same output with a clean exit: still cut short.
        let (_, closing) = OUT.trim_end().rsplit_once('\n').unwrap();
        assert_eq!(tally(&read(&OUT[..OUT.len() - closing.len() - 1], 0)), (0, 1, 0));
    }

    #[test]
    fn a_failed_exit_fails_the_run() {
        // No case failed, but the tool did not exit 0.
        assert_eq!(tally(&read(OUT, 1 << 8)), (2, 1, 1));
        // A failing case and the failed exit it causes: one failure.
        let failing = OUT.replace(r#""reason":null,"result":"pass"}"#, r#""reason":"short read","result":"fail"}"#).replace("2 passed, 0 failed", "0 passed, 2 failed");
        assert_eq!(tally(&read(&failing, 1 << 8)), (0, 2, 1));
    }

    #[test]
    fn a_bugcheck_is_a_failure_that_names_the_stop() {
        let stop = "ntsim: BUGCHECK BAD_POOL_CALLER (0xc2) params 0x7 0x0 0x0 0x0: freed with another tag [check pool.tag]";
        let first = OUT.split_inclusive('\n').next().unwrap();
        let c = read(&format!("{first}{stop}\n"), 3 << 8);
        assert_eq!(tally(&c), (0, 1, 0));
        assert_eq!(c.notes, [stop]);
    }
}

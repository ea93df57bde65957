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
//! with its reason.

use crate::util::{cargo, note, root, step, target_dir, Result};
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

    /// Reads a scull-tool run's output: case lines and the loaded line.
    fn suite(&mut self, prefix: &str, out: &str) {
        for l in out.lines() {
            if let Some(rest) = l.strip_prefix("ok   ") {
                let name = rest.split(" (").next().unwrap_or(rest);
                self.case(&format!("{prefix}{name}"), true, "");
            } else if let Some(rest) = l.strip_prefix("FAIL ") {
                let (name, msg) = rest.split_once(": ").unwrap_or((rest, ""));
                self.case(&format!("{prefix}{name}"), false, msg);
            } else if let Some(rest) = l.strip_prefix("skip ") {
                self.skipped += 1;
                println!("skip {prefix}{rest}");
            }
        }
        self.loaded(out);
    }

    fn loaded(&mut self, out: &str) {
        for l in out.lines() {
            if let Some(sha) = l.strip_prefix("ntsim: loaded ").and_then(|r| r.split_once(" sha256=")).map(|(_, s)| s.trim()) {
                self.shas.push(sha.to_string());
            }
        }
    }
}

/// Runs scull-tool against ntsim; its stdout and stderr (both into the
/// step's log) and whether it exited 0.
fn tool(tool: &Path, sys: &Path, env: &[(&str, &str)], args: &[&str]) -> Result<(String, bool)> {
    let mut c = Command::new(tool);
    c.current_dir(root()).env("SCULL_SYS", sys).args(["--target", "ntsim"]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    note(&format!("$ {} {}", env.iter().map(|(k, v)| format!("{k}={v} ")).collect::<String>(), args.join(" ")));
    let o = c.output().map_err(|e| format!("{}: {e}", tool.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    for l in text.lines() {
        note(l);
    }
    Ok((text, o.status.success()))
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

    step("ntsim: conformance suite on the release scull.sys (Windows' kernel32 semantics)");
    let (out, _) = tool(&exe, &sys, &[], &["conformance"])?;
    t.suite("", &out);
    step("ntsim: the truncation cases with ReactOS's TRUNCATE_EXISTING (FILE_OVERWRITE)");
    let (out, _) = tool(&exe, &sys, &[("NTSIM_TRUNCATE", "reactos")], &["conformance", "--filter", REACTOS_FILTER])?;
    t.suite("reactos:", &out);
    // Stress and fuzz trim with truncating opens: under both TRUNCATE_EXISTING forms.
    for (prefix, env) in [("", &[][..]), ("reactos:", &[("NTSIM_TRUNCATE", "reactos")][..])] {
        step(&format!("ntsim: {prefix}stress, 8 writers and 8 readers on stores and pipes, 3 s"));
        let (out, ok) = tool(&exe, &sys, env, &["stress", "--writers", "8", "--readers", "8", "--seconds", "3", "--seed", "20261204"])?;
        t.loaded(&out);
        let line = out.lines().find(|l| l.starts_with("stress: ")).or_else(|| out.lines().find(|l| l.starts_with("scull-tool: "))).unwrap_or("no result line");
        t.case(&format!("{prefix}stress"), ok && line == "stress: 0 lost, 0 corrupt", line);
        step(&format!("ntsim: {prefix}fuzz, fixed seed, 5 s"));
        let (out, ok) = tool(&exe, &sys, env, &["fuzz", "--seconds", "5", "--seed", "20261121"])?;
        t.loaded(&out);
        let line = out.lines().rev().find(|l| l.starts_with("fuzz: ") || l.starts_with("scull-tool: ")).unwrap_or("no result line");
        t.case(&format!("{prefix}fuzz"), ok, line);
    }
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

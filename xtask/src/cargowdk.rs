//! The layout `cargo wdk build` needs in scull-wdm/, checked on any host.
//!
//! cargo-wdk (crates.io, windows-drivers-rs's `cargo wdk build`) builds only
//! on Windows, so this check reads the same inputs it reads and compares them
//! with what cargo-wdk 0.2.0 does with them (its source, read for this):
//!
//! - `BuildAction::run_from_workspace_root` (src/actions/build/mod.rs): runs
//!   `cargo metadata` in the directory it was started in; at a workspace root
//!   it builds and packages every workspace package;
//! - `BuildAction::build_and_package`: packages a package only if it has
//!   `[package.metadata.wdk]` and a cdylib target, and parses the WDK
//!   configuration with wdk-build 0.6's `metadata::Wdk` (one `driver-model`
//!   table, unknown keys refused; `driver-type = "WDM"` makes a `.sys`);
//! - `PackageTask::new` (src/actions/build/package_task.rs): every name is
//!   the package name with `-` made `_`: `<crate dir>/<name>.inx`,
//!   `<target dir>/<name>.dll` renamed to `<name>.sys`, `<name>.pdb`, and the
//!   package `<target dir>/<name>_package/` with `<name>.inf` and `<name>.cat`
//!   (stampinf `-c <name>.cat`, inf2cat, infverif, signtool);
//! - `BuildTask::run` (src/actions/build/build_task.rs): `cargo build -p
//!   <name>` in the crate directory with no rustflags of its own, so the
//!   static CRT that wdk-build's build script requires must come from the
//!   crate's `.cargo/config.toml`.
//!
//! wdk-build's cargo-make flow (Makefile.toml) names its files after
//! CARGO_MAKE_CRATE_FS_NAME, which cargo-make derives from the same package
//! name, and copies the same `<crate dir>/<name>.inx`: the check also makes
//! sure scull-wdm/Makefile.toml overrides neither, so that one `.inx` serves
//! both tools.
//!
//! `cargo xtask inf-check` and `cargo xtask wdk-check` run it; it prints one
//! line per convention and fails naming each one that does not hold.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{root, Result};

/// The driver's name: scull.sys, the `scull` service. cargo-wdk derives every
/// file name from the package name, so the package is named this.
pub const DRIVER: &str = "scull";

/// The driver crate's directory (its own Cargo workspace).
pub fn crate_dir() -> PathBuf {
    root().join("scull-wdm")
}

/// The INF template, where cargo-wdk and wdk-build look for it.
pub fn inx_path() -> PathBuf {
    crate_dir().join(format!("{DRIVER}.inx"))
}

/// What the check reads from a repository tree.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The repository root.
    pub root: PathBuf,
    /// The driver crate's directory.
    pub crate_dir: PathBuf,
    /// `cargo metadata --no-deps` run in the crate directory, as cargo-wdk does.
    pub metadata: Json,
    /// Every `*.inx` in the tree (outside `target/` and `.git/`).
    pub inx_files: Vec<PathBuf>,
    /// The crate's `.cargo/config.toml`, if present.
    pub cargo_config: Option<String>,
    /// The crate's `Makefile.toml`, if present.
    pub makefile: Option<String>,
}

impl Facts {
    pub fn gather(root: &Path) -> Result<Facts> {
        let crate_dir = root.join("scull-wdm");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .current_dir(&crate_dir)
            .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
            .output()
            .map_err(|e| format!("cannot run `{cargo} metadata` in {}: {e}", crate_dir.display()))?;
        if !out.status.success() {
            return Err(format!(
                "`cargo metadata` in {} failed: {}\n{}",
                crate_dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8(out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
        let mut inx_files = Vec::new();
        find_inx(root, &mut inx_files)?;
        inx_files.sort();
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        Ok(Facts {
            root: root.to_path_buf(),
            metadata: Json::parse(&text)?,
            inx_files,
            cargo_config: read(crate_dir.join(".cargo").join("config.toml")),
            makefile: read(crate_dir.join("Makefile.toml")),
            crate_dir,
        })
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root).unwrap_or(p).display().to_string()
    }
}

fn find_inx(dir: &Path, out: &mut Vec<PathBuf>) -> Result {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            if name != "target" && name != ".git" {
                find_inx(&p, out)?;
            }
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("inx")) {
            out.push(p);
        }
    }
    Ok(())
}

/// One convention: what was checked, and why it does not hold (None: it holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: String,
    pub problem: Option<String>,
}

fn check(what: impl Into<String>, problem: Option<String>) -> Check {
    Check { what: what.into(), problem }
}

/// Every convention, in order.
pub fn evaluate(f: &Facts) -> Vec<Check> {
    let mut c = Vec::new();
    let m = &f.metadata;
    let crate_rel = f.rel(&f.crate_dir);

    let root = m.get("workspace_root").and_then(Json::str).map(PathBuf::from);
    let is_root = root.as_deref().is_some_and(|r| same_path(r, &f.crate_dir));
    c.push(check(
        format!("{crate_rel} is a Cargo workspace root of its own (`cargo wdk build` there packages its packages)"),
        (!is_root).then(|| format!("cargo metadata gives workspace_root {root:?}: keep `[workspace]` in {crate_rel}/Cargo.toml")),
    ));

    let packages = m.get("packages").map(Json::arr).unwrap_or_default();
    let [pkg] = packages else {
        c.push(check(
            format!("one package in {crate_rel}"),
            Some(format!("cargo metadata lists {} packages; cargo-wdk would package each", packages.len())),
        ));
        return c;
    };
    let name = pkg.get("name").and_then(Json::str).unwrap_or("");
    let fs_name = name.replace('-', "_");
    c.push(check(
        format!("package name `{DRIVER}`: cargo-wdk names {DRIVER}.inx, {DRIVER}.dll -> {DRIVER}.sys, {DRIVER}.pdb, {DRIVER}.cat and {DRIVER}_package/ after it"),
        (fs_name != DRIVER).then(|| {
            format!("the package is `{name}`, so cargo-wdk would look for {fs_name}.inx and {fs_name}.dll and make {fs_name}.sys; the driver is {DRIVER}.sys")
        }),
    ));

    let wdk = pkg.get("metadata").and_then(|x| x.get("wdk"));
    let expected = Json::Obj(vec![("driver-model".into(), Json::Obj(vec![("driver-type".into(), Json::Str("WDM".into()))]))]);
    c.push(check(
        "[package.metadata.wdk.driver-model] is exactly `driver-type = \"WDM\"` (wdk-build's metadata::Wdk refuses unknown keys)",
        (wdk != Some(&expected)).then(|| format!("package.metadata.wdk is {}", wdk.map_or("missing".to_string(), Json::to_string))),
    ));

    let targets = pkg.get("targets").map(Json::arr).unwrap_or_default();
    let has = |t: &Json, key: &str, v: &str| t.get(key).map(Json::arr).unwrap_or_default().iter().any(|x| x.str() == Some(v));
    let cdylibs: Vec<&Json> = targets.iter().filter(|t| has(t, "kind", "cdylib")).collect();
    let lib_problem = match cdylibs.as_slice() {
        [] => Some("no cdylib target: cargo-wdk builds the crate but makes no package".to_string()),
        [t] if !has(t, "crate_types", "cdylib") => Some("the lib target's crate_types lack cdylib".to_string()),
        [t] if t.get("name").and_then(Json::str) != Some(&fs_name) => Some(format!(
            "the lib target is `{}`; cargo-wdk renames <target dir>/{fs_name}.dll, so [lib] name must be `{fs_name}`",
            t.get("name").and_then(Json::str).unwrap_or("")
        )),
        [_] => None,
        more => Some(format!("{} cdylib targets", more.len())),
    };
    c.push(check(format!("[lib] name `{fs_name}`, crate-type cdylib"), lib_problem));

    let default = pkg.get("features").and_then(|x| x.get("default")).map(Json::arr).unwrap_or_default();
    c.push(check(
        "default features include `wdk` (cargo-wdk builds with the default features: the wdk-sys path and wdk-build's build script)",
        (!default.iter().any(|x| x.str() == Some("wdk"))).then(|| format!("default = {}", Json::Arr(default.to_vec()))),
    ));

    let manifest_dir = pkg.get("manifest_path").and_then(Json::str).and_then(|p| Path::new(p).parent()).map(Path::to_path_buf);
    let inx = manifest_dir.unwrap_or_else(|| f.crate_dir.clone()).join(format!("{fs_name}.inx"));
    let inx_rel = f.rel(&inx);
    let others: Vec<String> = f.inx_files.iter().filter(|p| !same_path(p, &inx)).map(|p| f.rel(p)).collect();
    let here = f.inx_files.iter().any(|p| same_path(p, &inx));
    let inx_problem = match (here, others.is_empty()) {
        (true, true) => None,
        (false, _) => Some(format!(
            "{inx_rel} is missing (cargo-wdk's PackageTask stops with MissingInxSrcFile){}",
            if others.is_empty() { String::new() } else { format!("; .inx files found: {}", others.join(", ")) }
        )),
        (true, false) => Some(format!("other .inx files: {}; keep one template, {inx_rel}", others.join(", "))),
    };
    c.push(check(format!("{inx_rel} exists and is the only .inx in the tree"), inx_problem));

    if here {
        let text = std::fs::read_to_string(&inx).unwrap_or_default();
        let inf = crate::inf::Inf::parse(&text);
        let cat = inf.section("Version").and_then(|s| s.value("CatalogFile")).map(|v| inf.expand(v));
        let sys = format!("{fs_name}.sys");
        let lists_sys = inf.section("SourceDisksFiles").is_some_and(|s| s.entries.iter().any(|e| e.key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(&sys))));
        let mut why = Vec::new();
        if cat.as_deref().is_none_or(|c| !c.eq_ignore_ascii_case(&format!("{fs_name}.cat"))) {
            why.push(format!("[Version] CatalogFile is {cat:?}, stampinf sets {fs_name}.cat"));
        }
        if !lists_sys {
            why.push(format!("[SourceDisksFiles] does not list {sys}, the binary cargo-wdk puts in the package"));
        }
        c.push(check(
            format!("{inx_rel} names the package's files: {fs_name}.sys, {fs_name}.cat"),
            (!why.is_empty()).then(|| why.join("; ")),
        ));
    }

    let config_rel = format!("{crate_rel}/.cargo/config.toml");
    let crt = match &f.cargo_config {
        None => Some(format!("{config_rel} is missing")),
        Some(t) if !toml_section_lines(t, "build").any(|l| l.starts_with("rustflags") && l.contains("target-feature=+crt-static")) => {
            Some(format!("{config_rel} has no [build] rustflags with `-C target-feature=+crt-static`"))
        }
        Some(_) => None,
    };
    c.push(check(
        format!("{config_rel}: [build] rustflags `-C target-feature=+crt-static` (wdk-build refuses a dynamic CRT; cargo-wdk adds no flags)"),
        crt,
    ));

    let make_rel = format!("{crate_rel}/Makefile.toml");
    let make_problem = match &f.makefile {
        None => Some(format!("{make_rel} is missing")),
        Some(t) => {
            let lines: Vec<&str> = t.lines().map(str::trim).collect();
            let mut why = Vec::new();
            if lines.iter().any(|l| l.starts_with("CARGO_MAKE_CRATE_FS_NAME")) {
                why.push("it sets CARGO_MAKE_CRATE_FS_NAME".to_string());
            }
            if lines.iter().any(|l| l.starts_with("[tasks.copy-inx-to-output")) {
                why.push("it replaces wdk-build's copy-inx-to-output".to_string());
            }
            (!why.is_empty()).then(|| format!("{}: cargo-make must take the names from the package, as cargo-wdk does", why.join(" and ")))
        }
    };
    c.push(check(format!("{make_rel} leaves the file names to the package name (cargo-make reads the same .inx)"), make_problem));
    c
}

/// The lines of `[name]` in a TOML file, trimmed (comments and blank lines dropped).
fn toml_section_lines<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let mut inside = false;
    text.lines().map(str::trim).filter(move |l| {
        if l.starts_with('[') {
            inside = l.trim_start_matches('[').trim_end_matches(']').trim() == name;
            return false;
        }
        inside && !l.is_empty() && !l.starts_with('#')
    })
}

/// The same file or directory (symlinks resolved when both exist).
fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Checks the repository this xtask belongs to: prints one line per
/// convention and a closing `cargo-wdk layout:` line; fails if any breaks.
pub fn run() -> Result {
    let facts = Facts::gather(&root())?;
    report(&evaluate(&facts))
}

fn report(checks: &[Check]) -> Result {
    for ch in checks {
        match &ch.problem {
            None => println!("cargo-wdk: ok    {}", ch.what),
            Some(p) => println!("cargo-wdk: FAIL  {}\n                 {p}", ch.what),
        }
    }
    let failed: Vec<&Check> = checks.iter().filter(|c| c.problem.is_some()).collect();
    if failed.is_empty() {
        println!("cargo-wdk layout: ok ({} checks: package {DRIVER}, WDM, cdylib, scull-wdm/{DRIVER}.inx)", checks.len());
        Ok(())
    } else {
        println!("cargo-wdk layout: {} of {} checks failed", failed.len(), checks.len());
        Err(format!(
            "the driver crate no longer has the layout `cargo wdk build` needs: {}",
            failed.iter().map(|c| c.problem.as_deref().unwrap_or("")).collect::<Vec<_>>().join("; ")
        ))
    }
}

// ---- A small JSON reader (cargo metadata's output) ------------------------

/// A JSON value; object members keep their order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number as written.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(text: &str) -> Result<Json> {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("JSON: trailing text at byte {}", p.i));
        }
        Ok(v)
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of an array (none for anything else).
    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Json::Null => write!(f, "null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(n) => write!(f, "{n}"),
            Json::Str(s) => write_str(f, s),
            Json::Arr(a) => {
                write!(f, "[")?;
                for (i, v) in a.iter().enumerate() {
                    write!(f, "{}{v}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, "]")
            }
            Json::Obj(m) => {
                write!(f, "{{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    write!(f, "{}", if i > 0 { ", " } else { "" })?;
                    write_str(f, k)?;
                    write!(f, ": {v}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

/// A JSON string literal.
fn write_str(f: &mut std::fmt::Formatter<'_>, s: &str) -> std::fmt::Result {
    write!(f, "\"")?;
    for c in s.chars() {
        match c {
            '"' => write!(f, "\\\"")?,
            '\\' => write!(f, "\\\\")?,
            '\n' => write!(f, "\\n")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    write!(f, "\"")
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T> {
        Err(format!("JSON: {what} at byte {}", self.i))
    }

    fn eat(&mut self, b: u8) -> Result {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected `{}`", b as char))
        }
    }

    fn value(&mut self) -> Result<Json> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    m.push((k, self.value()?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return self.err("expected `,` or `}`"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(a));
                        }
                        _ => return self.err("expected `,` or `]`"),
                    }
                }
            }
            Some(b'"') => self.string().map(Json::Str),
            Some(_) => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b)) {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"null" => Ok(Json::Null),
                    b"true" => Ok(Json::Bool(true)),
                    b"false" => Ok(Json::Bool(false)),
                    n if !n.is_empty() && (n[0] == b'-' || n[0].is_ascii_digit()) => {
                        Ok(Json::Num(String::from_utf8_lossy(n).into_owned()))
                    }
                    _ => {
                        self.i = start;
                        self.err("unexpected value")
                    }
                }
            }
            None => self.err("unexpected end"),
        }
    }

    fn string(&mut self) -> Result<String> {
        if self.s.get(self.i) != Some(&b'"') {
            return self.err("expected a string");
        }
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return String::from_utf8(out).map_err(|e| format!("JSON: {e}"));
                }
                Some(b'\\') => {
                    let esc = self.s.get(self.i + 1).copied();
                    self.i += 2;
                    let c = match esc {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let hex = |p: &Self, at: usize| {
                                p.s.get(at..at + 4)
                                    .and_then(|h| std::str::from_utf8(h).ok())
                                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                            };
                            let Some(mut cp) = hex(self, self.i) else { return self.err("bad \\u escape") };
                            self.i += 4;
                            // A surrogate pair: \uD8xx\uDCxx.
                            if (0xd800..0xdc00).contains(&cp) && self.s.get(self.i..self.i + 2) == Some(b"\\u") {
                                if let Some(lo) = hex(self, self.i + 2).filter(|lo| (0xdc00..0xe000).contains(lo)) {
                                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                                    self.i += 6;
                                }
                            }
                            char::from_u32(cp).unwrap_or('\u{fffd}')
                        }
                        _ => return self.err("bad escape"),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(&b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real() -> Facts {
        Facts::gather(&root()).expect("the tree's facts")
    }

    fn problems(f: &Facts) -> Vec<String> {
        evaluate(f).into_iter().filter_map(|c| c.problem).collect()
    }

    fn has(f: &Facts, needle: &str) -> bool {
        let p = problems(f);
        assert!(p.iter().any(|x| x.contains(needle)), "no problem mentions `{needle}`: {p:#?}");
        true
    }

    /// The metadata with one JSON text substitution, which must apply once.
    fn with_metadata(f: &Facts, from: &str, to: &str) -> Facts {
        let text = f.metadata.to_string();
        assert_eq!(text.matches(from).count(), 1, "`{from}` must occur once in {text}");
        Facts { metadata: Json::parse(&text.replacen(from, to, 1)).unwrap(), ..f.clone() }
    }

    #[test]
    fn the_tree_has_the_layout() {
        let f = real();
        let checks = evaluate(&f);
        assert!(checks.len() >= 9, "{checks:#?}");
        assert!(checks.iter().all(|c| c.problem.is_none()), "{checks:#?}");
        assert_eq!(f.inx_files, vec![inx_path()]);
    }

    #[test]
    fn catches_a_package_named_after_the_directory() {
        let f = with_metadata(&real(), "\"name\": \"scull\", \"version\"", "\"name\": \"scull-wdm\", \"version\"");
        assert!(has(&f, "the package is `scull-wdm`, so cargo-wdk would look for scull_wdm.inx"));
        assert!(has(&f, "scull_wdm.inx is missing"));
        assert!(has(&f, "[lib] name must be `scull_wdm`"));
    }

    #[test]
    fn catches_metadata_mistakes() {
        let f = with_metadata(&real(), "\"driver-type\": \"WDM\"", "\"driver-type\": \"KMDF\"");
        assert!(has(&f, "package.metadata.wdk is {\"driver-model\": {\"driver-type\": \"KMDF\"}}"));
        let f = with_metadata(&real(), "\"driver-type\": \"WDM\"}", "\"driver-type\": \"WDM\", \"extra\": 1}");
        assert!(has(&f, "package.metadata.wdk is"));
        let f = with_metadata(&real(), "\"default\": [\"wdk\"]", "\"default\": []");
        assert!(has(&f, "default = []"));
    }

    #[test]
    fn catches_a_non_cdylib_and_a_workspace_member() {
        let f = with_metadata(&real(), "\"kind\": [\"cdylib\"]", "\"kind\": [\"lib\"]");
        assert!(has(&f, "no cdylib target"));
        let mut f = real();
        f.crate_dir = f.root.clone();
        assert!(has(&f, "keep `[workspace]`"));
    }

    #[test]
    fn catches_a_moved_or_duplicated_inx() {
        let real = real();
        let moved = Facts { inx_files: vec![real.root.join("inf").join("scull.inx")], ..real.clone() };
        assert!(has(&moved, "scull-wdm/scull.inx is missing (cargo-wdk's PackageTask stops with MissingInxSrcFile); .inx files found: inf/scull.inx"));
        let twice = Facts { inx_files: vec![real.root.join("inf").join("scull.inx"), inx_path()], ..real };
        assert!(has(&twice, "other .inx files: inf/scull.inx"));
    }

    #[test]
    fn catches_cargo_config_and_makefile_mistakes() {
        let real = real();
        let f = Facts { cargo_config: None, ..real.clone() };
        assert!(has(&f, ".cargo/config.toml is missing"));
        let f = Facts { cargo_config: Some("[target.x]\nrustflags = [\"-C\", \"target-feature=+crt-static\"]\n".into()), ..real.clone() };
        assert!(has(&f, "has no [build] rustflags"));
        let mk = real.makefile.clone().unwrap();
        let f = Facts { makefile: Some(format!("{mk}\n[env]\nCARGO_MAKE_CRATE_FS_NAME = \"scull\"\n")), ..real.clone() };
        assert!(has(&f, "it sets CARGO_MAKE_CRATE_FS_NAME"));
        let f = Facts { makefile: Some(format!("{mk}\n[tasks.copy-inx-to-output]\nclear = true\n")), ..real };
        assert!(has(&f, "it replaces wdk-build's copy-inx-to-output"));
    }

    #[test]
    fn json_reader() {
        let v = Json::parse(r#" {"a": [1, -2.5e3, true, false, null], "b": {"c": "x\"\\\/\n\u00e9\ud83d\ude00"}, "d": {}, "e": []} "#).unwrap();
        assert_eq!(v.get("a").unwrap().arr().len(), 5);
        assert_eq!(v.get("a").unwrap().arr()[1], Json::Num("-2.5e3".into()));
        assert_eq!(v.get("b").and_then(|b| b.get("c")).and_then(Json::str), Some("x\"\\/\né😀"));
        assert_eq!(Json::parse(&v.to_string()).unwrap(), v);
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "\"open", "tru", "{} x"] {
            assert!(Json::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}

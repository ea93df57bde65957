//! The module graphs of scull-wdm, scull-tool and xtask: which top-level
//! module refers to which, and the check that no graph has a cycle.
//! `cargo xtask wdm` and `cargo xtask wdk-check` run it before building.
//!
//! A module is a file `src/<name>.rs` with the files under `src/<name>/`;
//! the crate roots (`lib.rs`, `main.rs`) that declare them are not one.
//! Module `a` refers to `b` when its text (comments left out) names
//! `crate::b` (also in `use crate::{.., b, ..}` lists and macros'
//! `$crate::b`) or calls a macro that `b` defines and `a` does not
//! (`kprint!` is `log`'s). Code under any `cfg` counts, so the graph covers
//! every feature set. `super::` paths stay inside a module and are not read.

use crate::util::{root, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// `text` without `//` comments (line and doc comments; string literals
/// holding `//` are not in scull-wdm's module references).
fn strip_comments(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The modules `text` refers to through `crate::` paths.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(list) = after.strip_prefix('{') {
            // A `use crate::{a, b::c, d::{e, f}}` list: the first name of
            // each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (k, c) in list.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident_at(&list[k..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(after);
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
        rest = after;
    }
    out
}

/// The `macro_rules!` names `text` defines.
fn macros_defined(text: &str) -> Vec<String> {
    text.match_indices("macro_rules!")
        .map(|(i, m)| ident_at(text[i + m.len()..].trim_start()).to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Whether `text` calls the macro `m` (`m!` not preceded by an identifier
/// character).
fn calls_macro(text: &str, m: &str) -> bool {
    text.match_indices(&format!("{m}!")).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The graph of modules given as (name, source text).
pub fn graph(files: &[(String, String)]) -> Graph {
    let texts: Vec<(String, String)> = files.iter().map(|(n, t)| (n.clone(), strip_comments(t))).collect();
    let names: BTreeSet<&str> = texts.iter().map(|(n, _)| n.as_str()).collect();
    let macros: Vec<(String, String)> =
        texts.iter().flat_map(|(n, t)| macros_defined(t).into_iter().map(move |m| (m, n.clone()))).collect();
    let mut g = Graph::new();
    for (name, text) in &texts {
        let mut deps: BTreeSet<String> =
            crate_refs(text).into_iter().filter(|d| names.contains(d.as_str()) && d != name).collect();
        let own = macros_defined(text);
        for (m, owner) in &macros {
            if owner != name && !own.contains(m) && calls_macro(text, m) {
                deps.insert(owner.clone());
            }
        }
        g.insert(name.clone(), deps);
    }
    g
}

/// A cycle of `g` (its modules in order, the first repeated at the end), if any.
pub fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    // Depth-first search; `path` is the current chain of modules being visited.
    fn visit(g: &Graph, n: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, d, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

/// The crates whose module graphs are checked: (name, source directory
/// under the repository root).
const CRATES: [(&str, &str); 3] = [("scull-wdm", "scull-wdm/src"), ("scull-tool", "tools/scull-tool/src"), ("xtask", "xtask/src")];

/// The text of `dir`'s `.rs` files, recursively, appended to `out`.
fn read_tree(dir: &std::path::Path, out: &mut String) -> Result {
    let mut entries: Vec<_> = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            read_tree(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?);
            out.push('\n');
        }
    }
    Ok(())
}

/// The top-level modules of the crate in `src` (relative to the repository
/// root) and their source: `<name>.rs` and everything under `<name>/`.
fn sources(src: &str) -> Result<Vec<(String, String)>> {
    let dir = root().join(src);
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for e in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten() {
        let p = e.path();
        let Some(stem) = p.file_stem().and_then(|s| s.to_str()) else { continue };
        let text = files.entry(stem.to_string()).or_default();
        if p.is_dir() {
            read_tree(&p, text)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            text.push_str(&fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?);
        }
    }
    Ok(files.into_iter().filter(|(n, t)| n != "lib" && n != "main" && !t.is_empty()).collect())
}

/// Fails when the modules of `name`'s crate (in `src`) refer to each other
/// in a cycle.
fn check_crate(name: &str, src: &str) -> Result {
    let g = graph(&sources(src)?);
    if let Some(c) = find_cycle(&g) {
        return Err(format!("{name}: module import cycle {}", c.join(" -> ")));
    }
    eprintln!("{name}: module graph acyclic ({} modules, {} edges)", g.len(), g.values().map(|d| d.len()).sum::<usize>());
    Ok(())
}

/// Fails when the modules of scull-wdm, scull-tool or xtask refer to each
/// other in a cycle.
pub fn check() -> Result {
    CRATES.iter().try_for_each(|(name, src)| check_crate(name, src))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect()
    }

    #[test]
    fn references() {
        let g = graph(&files(&[
            ("a", "use crate::ddk::*;\nuse crate::{b, c::X};\n// crate::d in a comment\nfn f() { kprint!(\"x\"); crate::e::g(); }\nfn h() { flat!(); }"),
            ("b", ""),
            ("c", ""),
            ("d", ""),
            ("e", ""),
            ("ddk", ""),
            ("log", "macro_rules! kprint { () => { $crate::ddk::x() } }"),
            ("oracle", "macro_rules! at { () => {} }"),
        ]));
        let a: Vec<&str> = g["a"].iter().map(|s| s.as_str()).collect();
        assert_eq!(a, ["b", "c", "ddk", "e", "log"]);
        assert_eq!(g["log"].iter().collect::<Vec<_>>(), ["ddk"]);
    }

    #[test]
    fn cycle_found() {
        let g = graph(&files(&[
            ("access", "use crate::bridge::refuse;"),
            ("bridge", "use crate::dev::Waiter;"),
            ("dev", "use crate::{ident, access::take_waiter};"),
            ("ident", ""),
        ]));
        assert_eq!(find_cycle(&g).unwrap(), ["access", "bridge", "dev", "access"]);
    }

    /// The real trees; `cargo test -p xtask` prints their graphs with --nocapture.
    #[test]
    fn real_crates_are_acyclic() {
        for (name, src) in CRATES {
            for (m, deps) in graph(&sources(src).unwrap()) {
                println!("{name} {m}: {}", deps.into_iter().collect::<Vec<_>>().join(" "));
            }
        }
        check().unwrap();
    }

    #[test]
    fn acyclic() {
        let g = graph(&files(&[("dispatch", "use crate::{access, irp};"), ("access", "use crate::irp::finish;"), ("irp", "")]));
        assert_eq!(find_cycle(&g), None);
    }
}

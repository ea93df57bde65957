//! `cargo xtask inf-check`: a small INF reader and the checks that
//! `scull-wdm/scull.inx` must pass on any host. Without a FILE argument it
//! first checks the layout `cargo wdk build` needs (xtask/src/cargowdk.rs),
//! which puts the template there.
//!
//! This is not infverif. It reads the INF grammar far enough to check the
//! structure this project relies on: a primitive (DefaultInstall-based)
//! legacy kernel service, files in the driver store (DIRID 13), service-relative
//! registry values under `Parameters`, every `%token%` defined, and the default
//! device ACL. infverif /w still runs in `cargo make` on Windows.
//!
//! Grammar handled (see "General Syntax Rules for INF Files"):
//! - `[section]` headers; names compare case-insensitively;
//! - `;` starts a comment, except inside a double-quoted string;
//! - `""` inside a quoted string is a literal quote;
//! - a backslash that ends a line (after the comment and trailing blanks are
//!   removed) joins the next line to it;
//! - an entry is `key = value` (the first `=` outside quotes) or a bare value;
//!   values are comma-separated fields;
//! - `%token%` expands from `[Strings]`; `%13%`-style DIRIDs and `%%` are not
//!   string tokens.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::util::Result;

/// One logical line of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, if the line has an `=` outside quotes.
    pub key: Option<String>,
    /// The raw value text (everything after `=`, or the whole line), trimmed.
    pub value: String,
    /// 1-based line number where the logical line starts.
    pub line: usize,
}

impl Entry {
    /// The value split into fields at commas outside quotes, each trimmed and
    /// unquoted. Empty fields stay as empty strings.
    pub fn fields(&self) -> Vec<String> {
        split_fields(&self.value)
    }

    fn key_is(&self, k: &str) -> bool {
        self.key.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(k))
    }
}

#[derive(Debug, Clone)]
pub struct Section {
    /// The name as written.
    pub name: String,
    pub line: usize,
    pub entries: Vec<Entry>,
}

impl Section {
    /// The values of every entry whose key is `key` (case-insensitive).
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| e.key_is(key))
    }

    /// The value of the single entry `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|e| e.key_is(key)).map(|e| e.value.as_str())
    }
}

/// A parsed INF file.
#[derive(Debug, Clone, Default)]
pub struct Inf {
    pub sections: Vec<Section>,
    /// Syntax problems found while reading (unterminated quotes, text before
    /// the first section, unterminated section headers).
    pub syntax: Vec<Finding>,
}

impl Inf {
    /// Reads INF text (ANSI/UTF-8; a UTF-8 BOM is skipped).
    pub fn parse(text: &str) -> Inf {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut inf = Inf::default();
        let mut pending: Option<(String, usize)> = None;
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let (code, unterminated) = strip_comment(raw);
            if unterminated {
                inf.syntax.push(Finding::error(lineno, "unterminated quoted string"));
            }
            let code = code.trim_end();
            let (joined, start) = match pending.take() {
                Some((mut acc, start)) => {
                    acc.push_str(code.trim_start());
                    (acc, start)
                }
                None => (code.to_string(), lineno),
            };
            if let Some(stripped) = joined.strip_suffix('\\') {
                pending = Some((stripped.to_string(), start));
                continue;
            }
            inf.push_line(joined.trim(), start);
        }
        if let Some((acc, start)) = pending {
            inf.syntax.push(Finding::warning(start, "line continuation at end of file"));
            inf.push_line(acc.trim(), start);
        }
        inf
    }

    fn push_line(&mut self, line: &str, lineno: usize) {
        if line.is_empty() {
            return;
        }
        if let Some(rest) = line.strip_prefix('[') {
            match rest.find(']') {
                Some(end) => {
                    self.sections.push(Section { name: rest[..end].trim().to_string(), line: lineno, entries: Vec::new() });
                }
                None => self.syntax.push(Finding::error(lineno, "section header without `]`")),
            }
            return;
        }
        let Some(section) = self.sections.last_mut() else {
            self.syntax.push(Finding::error(lineno, "text before the first section"));
            return;
        };
        let entry = match find_outside_quotes(line, '=') {
            Some(eq) => Entry { key: Some(line[..eq].trim().to_string()), value: line[eq + 1..].trim().to_string(), line: lineno },
            None => Entry { key: None, value: line.to_string(), line: lineno },
        };
        section.entries.push(entry);
    }

    /// Every section with this name (case-insensitive).
    pub fn sections_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections.iter().filter(move |s| s.name.eq_ignore_ascii_case(name))
    }

    /// The first section with this name (case-insensitive).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// `[Strings]` as a map from lower-case key to unquoted value.
    pub fn strings(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for s in self.sections_named("Strings") {
            for e in &s.entries {
                if let Some(k) = &e.key {
                    m.insert(k.to_ascii_lowercase(), unquote(&e.value));
                }
            }
        }
        m
    }

    /// Expands `%token%` from `[Strings]`; numeric tokens (DIRIDs) and `%%`
    /// stay as written. Unknown tokens stay as written too.
    pub fn expand(&self, s: &str) -> String {
        let strings = self.strings();
        let mut out = String::new();
        let mut rest = s;
        while let Some(p) = rest.find('%') {
            out.push_str(&rest[..p]);
            let after = &rest[p + 1..];
            match after.find('%') {
                Some(q) => {
                    let tok = &after[..q];
                    match strings.get(&tok.to_ascii_lowercase()) {
                        Some(v) if !tok.is_empty() => out.push_str(v),
                        _ => {
                            out.push('%');
                            out.push_str(tok);
                            out.push('%');
                        }
                    }
                    rest = &after[q + 1..];
                }
                None => {
                    out.push_str(&rest[p..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Removes a `;` comment (outside quotes). Returns the code and whether a
/// quoted string was left open.
fn strip_comment(line: &str) -> (&str, bool) {
    let mut in_quotes = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes, // `""` toggles twice: stays inside
            ';' if !in_quotes => return (&line[..i], false),
            _ => {}
        }
    }
    (line, in_quotes)
}

fn find_outside_quotes(s: &str, needle: char) -> Option<usize> {
    let mut in_quotes = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == needle && !in_quotes {
            return Some(i);
        }
    }
    None
}

fn split_fields(s: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    for c in s.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                cur.push(c);
            }
            ',' if !in_quotes => {
                fields.push(unquote(cur.trim()));
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    fields.push(unquote(cur.trim()));
    fields
}

/// Removes the quotes of a quoted INF string (`"a""b"` -> `a"b`), and of
/// quoted runs inside a field (`"Parameters\"%X%` -> `Parameters\%X%`).
fn unquote(s: &str) -> String {
    let s = s.trim();
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        if c == '"' {
            if in_quotes && chars.peek() == Some(&'"') {
                out.push('"');
                chars.next();
            } else {
                in_quotes = !in_quotes;
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub line: usize,
    pub message: String,
}

impl Finding {
    fn error(line: usize, message: impl Into<String>) -> Finding {
        Finding { severity: Severity::Error, line, message: message.into() }
    }
    fn warning(line: usize, message: impl Into<String>) -> Finding {
        Finding { severity: Severity::Warning, line, message: message.into() }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "line {}: {sev}: {}", self.line, self.message)
    }
}

/// The registry values the driver reads from `Services\scull\Parameters`,
/// with the INF flags their type needs (REG_DWORD or REG_SZ).
pub const PARAMETERS: &[(&str, u32)] = &[
    ("scull_quantum", 0x0001_0001),
    ("scull_qset", 0x0001_0001),
    ("scull_nr_devs", 0x0001_0001),
    ("scull_p_buffer", 0x0001_0001),
    ("scull_p_nr_devs", 0x0001_0001),
    ("scull_sddl", 0x0000_0000),
];

/// The default device ACL: GENERIC_ALL for SYSTEM and Administrators only.
pub const SDDL_ADMINS_ONLY: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)";

/// The service name the scripts and README use.
pub const SERVICE: &str = "scull";
pub const DRIVER_FILE: &str = "scull.sys";

/// Is `name` an architecture-decorated install section name of `base`
/// (`DefaultInstall.NTamd64`, `DefaultInstall.NT$ARCH$.10.0...16299`), and
/// not a `.Services` section?
fn is_decorated(name: &str, base: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix(&format!("{}.nt", base.to_ascii_lowercase())) else {
        return false;
    };
    !rest.is_empty() && !lower.ends_with(".services")
}

/// Runs every check. An empty result, or warnings only, is a pass.
pub fn check(inf: &Inf) -> Vec<Finding> {
    let mut f = inf.syntax.clone();
    let strings = inf.strings();

    // Duplicate sections (infverif 1209).
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for s in &inf.sections {
        if let Some(first) = seen.insert(s.name.to_ascii_lowercase(), s.line) {
            f.push(Finding::error(s.line, format!("section [{}] defined again (first on line {first})", s.name)));
        }
    }

    // Every %token% defined in [Strings].
    for s in &inf.sections {
        if s.name.eq_ignore_ascii_case("Strings") {
            continue;
        }
        for e in &s.entries {
            for tok in tokens(&e.value).chain(e.key.as_deref().map(tokens).into_iter().flatten()) {
                if !strings.contains_key(&tok.to_ascii_lowercase()) {
                    f.push(Finding::error(e.line, format!("string token %{tok}% not defined in [Strings]")));
                }
            }
        }
    }

    check_version(inf, &mut f);
    check_primitive(inf, &mut f);
    f.sort_by(|a, b| a.line.cmp(&b.line).then(b.severity.cmp(&a.severity)));
    f
}

/// `%name%` tokens that are string keys (not DIRIDs, not `%%`). In a split
/// on `%`, the tokens are the odd-indexed pieces.
fn tokens(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split('%')
        .enumerate()
        .filter(|(i, p)| i % 2 == 1 && !p.is_empty() && !p.chars().all(|c| c.is_ascii_digit()))
        .map(|(_, p)| p.to_string())
}

fn check_version(inf: &Inf, f: &mut Vec<Finding>) {
    let Some(v) = inf.section("Version") else {
        f.push(Finding::error(1, "missing [Version] section"));
        return;
    };
    let at = v.line;
    match v.value("Signature").map(unquote) {
        Some(s) if s.eq_ignore_ascii_case("$WINDOWS NT$") => {}
        Some(s) => f.push(Finding::error(at, format!("[Version] Signature is `{s}`, expected \"$WINDOWS NT$\""))),
        None => f.push(Finding::error(at, "[Version] has no Signature")),
    }
    for key in ["Class", "ClassGuid", "Provider", "CatalogFile", "PnpLockdown"] {
        if v.value(key).is_none_or(|x| x.is_empty()) {
            f.push(Finding::error(at, format!("[Version] {key} is missing or empty")));
        }
    }
    if v.value("DriverVer").is_none() {
        f.push(Finding::error(at, "[Version] has no DriverVer (stampinf fills it in, but the key must exist)"));
    }
    if let Some(g) = v.value("ClassGuid") {
        if !is_guid(g) {
            f.push(Finding::error(at, format!("[Version] ClassGuid `{g}` is not {{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}}")));
        }
    }
    if let Some(p) = v.value("Provider") {
        if inf.expand(p).trim().to_ascii_lowercase().starts_with("microsoft") {
            f.push(Finding::error(at, "[Version] Provider must not be Microsoft"));
        }
    }
    if let Some(c) = v.value("CatalogFile") {
        if !c.is_empty() && !unquote(c).to_ascii_lowercase().ends_with(".cat") {
            f.push(Finding::error(at, format!("[Version] CatalogFile `{c}` is not a .cat file name")));
        }
    }
    if let Some(p) = v.value("PnpLockdown") {
        if parse_num(p) != Some(1) {
            f.push(Finding::error(at, format!("[Version] PnpLockdown is `{p}`, expected 1")));
        }
    }
}

fn is_guid(s: &str) -> bool {
    let s = s.trim();
    let Some(inner) = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) else {
        return false;
    };
    let groups: Vec<&str> = inner.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn check_primitive(inf: &Inf, f: &mut Vec<Finding>) {
    if let Some(m) = inf.section("Manufacturer") {
        f.push(Finding::error(m.line, "a primitive driver INF must not have a [Manufacturer] section"));
    }
    for s in &inf.sections {
        let lower = s.name.to_ascii_lowercase();
        if lower == "defaultinstall" || lower == "defaultinstall.services" {
            f.push(Finding::error(s.line, format!("[{}] must be architecture decorated (DefaultInstall.NT$ARCH$)", s.name)));
        }
        if lower.starts_with("defaultuninstall") && !lower.ends_with(".services") {
            let legacy = s.value("LegacyUninstall").and_then(parse_num) == Some(1);
            if !legacy {
                f.push(Finding::error(s.line, format!("[{}] is not allowed in a primitive driver INF unless LegacyUninstall=1", s.name)));
            }
        }
    }
    let installs: Vec<&Section> = inf.sections.iter().filter(|s| is_decorated(&s.name, "DefaultInstall")).collect();
    if installs.is_empty() {
        f.push(Finding::error(1, "no architecture-decorated [DefaultInstall.NT...] section"));
    }
    for ins in installs {
        check_install(inf, ins, f);
    }
}

fn check_install(inf: &Inf, ins: &Section, f: &mut Vec<Finding>) {
    // Files: CopyFiles -> file list -> SourceDisksFiles, destination DIRID 13.
    let mut copied: Vec<String> = Vec::new();
    let copy: Vec<&Entry> = ins.values("CopyFiles").collect();
    if copy.is_empty() {
        f.push(Finding::error(ins.line, format!("[{}] has no CopyFiles", ins.name)));
    }
    for e in copy {
        for list in e.fields().into_iter().filter(|x| !x.is_empty()) {
            if let Some(file) = list.strip_prefix('@') {
                copied.push(file.to_ascii_lowercase());
                check_dest(inf, None, e.line, f);
                continue;
            }
            match inf.section(&list) {
                None => f.push(Finding::error(e.line, format!("CopyFiles section [{list}] not found"))),
                Some(sec) => {
                    for fe in &sec.entries {
                        let name = fe.fields().first().cloned().unwrap_or_default();
                        copied.push(name.to_ascii_lowercase());
                    }
                    check_dest(inf, Some(&list), e.line, f);
                }
            }
        }
    }
    let source: Vec<String> = inf
        .sections
        .iter()
        .filter(|s| s.name.to_ascii_lowercase().starts_with("sourcedisksfiles"))
        .flat_map(|s| s.entries.iter().filter_map(|e| e.key.clone()))
        .map(|k| k.to_ascii_lowercase())
        .collect();
    for c in &copied {
        if !source.contains(c) {
            f.push(Finding::error(ins.line, format!("copied file `{c}` is not listed in [SourceDisksFiles]")));
        }
    }
    if !copied.iter().any(|c| c == DRIVER_FILE) {
        f.push(Finding::error(ins.line, format!("[{}] does not copy {DRIVER_FILE}", ins.name)));
    }

    // Services.
    let svc_name = format!("{}.Services", ins.name);
    let Some(svc) = inf.section(&svc_name) else {
        f.push(Finding::error(ins.line, format!("missing [{svc_name}] section")));
        return;
    };
    let adds: Vec<&Entry> = svc.values("AddService").collect();
    if adds.is_empty() {
        f.push(Finding::error(svc.line, format!("[{svc_name}] has no AddService directive")));
        return;
    }
    let mut found = false;
    for a in adds {
        let fields = a.fields();
        let name = inf.expand(fields.first().map(String::as_str).unwrap_or(""));
        if !name.eq_ignore_ascii_case(SERVICE) {
            continue;
        }
        found = true;
        match fields.get(2).filter(|s| !s.is_empty()) {
            None => f.push(Finding::error(a.line, "AddService for scull names no service-install section")),
            Some(sec) => match inf.section(sec) {
                None => f.push(Finding::error(a.line, format!("service-install section [{sec}] not found"))),
                Some(s) => check_service(inf, s, &copied, f),
            },
        }
        check_event_log(inf, a, &fields, f);
    }
    if !found {
        f.push(Finding::error(svc.line, format!("[{svc_name}] has no AddService for the `{SERVICE}` service")));
    }
}

/// The message file of the generic I/O error-log messages (IO_ERR_*), as an
/// INF writes it (`%%` is a literal `%`).
pub const IO_LOG_MSG: &str = "%%SystemRoot%%\\System32\\IoLogMsg.dll";

/// AddService's event-log fields: the driver writes IO_ERR_* error-log
/// entries when it refuses to load (scull-wdm/src/evlog.rs), so the service
/// must be an event source of the System log (field 5 empty or `System`,
/// field 6 empty or the service name) whose install section sets, under HKR
/// (the source's key), EventMessageFile = IoLogMsg.dll (REG_EXPAND_SZ) and a
/// TypesSupported (REG_DWORD) that includes errors (bit 0x1).
fn check_event_log(inf: &Inf, add: &Entry, fields: &[String], f: &mut Vec<Finding>) {
    let Some(sec) = fields.get(3).filter(|s| !s.is_empty()) else {
        f.push(Finding::error(add.line, "AddService for scull names no event-log install section (field 4)"));
        return;
    };
    if let Some(log) = fields.get(4).filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("System")) {
        f.push(Finding::error(add.line, format!("event log type `{log}`: the driver's entries go to the System log")));
    }
    if let Some(name) = fields.get(5).filter(|s| !s.is_empty() && !inf.expand(s).eq_ignore_ascii_case(SERVICE)) {
        f.push(Finding::error(add.line, format!("event source `{name}`: IoWriteErrorLogEntry logs under the driver's name `{SERVICE}`")));
    }
    let Some(install) = inf.section(sec) else {
        f.push(Finding::error(add.line, format!("event-log install section [{sec}] not found")));
        return;
    };
    let mut message_file = false;
    let mut types = false;
    for list in install.values("AddReg").flat_map(|a| a.fields()).filter(|x| !x.is_empty()) {
        let Some(reg) = inf.section(&list) else {
            f.push(Finding::error(install.line, format!("AddReg section [{list}] not found")));
            continue;
        };
        for e in &reg.entries {
            let raw = match &e.key {
                Some(k) => format!("{k}={}", e.value),
                None => e.value.clone(),
            };
            let fl = split_fields(&raw);
            let get = |i: usize| fl.get(i).cloned().unwrap_or_default();
            if !get(0).eq_ignore_ascii_case("HKR") || !get(1).is_empty() {
                f.push(Finding::error(e.line, format!("event-source value `{raw}` must be HKR,, (the source's own key)")));
                continue;
            }
            let flags = parse_num(&get(3)).unwrap_or(0);
            match get(2).to_ascii_lowercase().as_str() {
                "eventmessagefile" => {
                    let v = inf.expand(&get(4));
                    if flags & 0xffff_fffd != 0x0002_0000 || !v.eq_ignore_ascii_case(IO_LOG_MSG) {
                        f.push(Finding::error(e.line, format!("EventMessageFile must be REG_EXPAND_SZ (0x00020000) `{IO_LOG_MSG}`, is {flags:#010x} `{v}`")));
                    }
                    message_file = true;
                }
                "typessupported" => {
                    if flags & 0xffff_fffd != 0x0001_0001 || parse_num(&get(4)).is_none_or(|t| t & 1 == 0) {
                        f.push(Finding::error(e.line, "TypesSupported must be a REG_DWORD that includes EVENTLOG_ERROR_TYPE (1)"));
                    }
                    types = true;
                }
                _ => {}
            }
        }
    }
    if !message_file {
        f.push(Finding::error(install.line, format!("[{sec}] sets no EventMessageFile")));
    }
    if !types {
        f.push(Finding::error(install.line, format!("[{sec}] sets no TypesSupported")));
    }
}

/// The DIRID a file list section is copied to must be 13 (driver store).
fn check_dest(inf: &Inf, list: Option<&str>, line: usize, f: &mut Vec<Finding>) {
    let Some(dd) = inf.section("DestinationDirs") else {
        f.push(Finding::error(line, "missing [DestinationDirs] section"));
        return;
    };
    let v = list.and_then(|l| dd.value(l)).or_else(|| dd.value("DefaultDestDir"));
    let dirid = v.map(|v| split_fields(v)[0].clone());
    if dirid.as_deref() != Some("13") {
        let what = list.unwrap_or("@file");
        f.push(Finding::error(
            line,
            format!("destination of [{what}] is {}, expected DIRID 13 (driver store)", dirid.as_deref().unwrap_or("not set")),
        ));
    }
}

fn check_service(inf: &Inf, s: &Section, copied: &[String], f: &mut Vec<Finding>) {
    let num = |key: &str| s.value(key).and_then(parse_num);
    for (key, want, what) in [("ServiceType", 1, "SERVICE_KERNEL_DRIVER"), ("StartType", 3, "SERVICE_DEMAND_START")] {
        match (s.value(key), num(key)) {
            (None, _) => f.push(Finding::error(s.line, format!("[{}] has no {key}", s.name))),
            (Some(v), n) if n != Some(want) => {
                f.push(Finding::error(s.line, format!("[{}] {key} is `{v}`, expected {want} ({what})", s.name)))
            }
            _ => {}
        }
    }
    match num("ErrorControl") {
        Some(0..=3) => {}
        _ => f.push(Finding::error(s.line, format!("[{}] ErrorControl missing or not 0-3", s.name))),
    }
    match s.value("ServiceBinary") {
        None => f.push(Finding::error(s.line, format!("[{}] has no ServiceBinary", s.name))),
        Some(b) => {
            let b = unquote(b);
            match b.strip_prefix("%13%\\") {
                Some(file) if copied.contains(&inf.expand(file).to_ascii_lowercase()) => {}
                Some(file) => f.push(Finding::error(s.line, format!("ServiceBinary `{file}` is not a file this INF copies"))),
                None => f.push(Finding::error(s.line, format!("ServiceBinary `{b}` must be %13%\\<file> (driver store)"))),
            }
        }
    }
    // Registry: HKR (the service key), under Parameters; the driver's values.
    let mut values: BTreeMap<String, (u32, String, usize)> = BTreeMap::new();
    for a in s.values("AddReg") {
        for list in a.fields().into_iter().filter(|x| !x.is_empty()) {
            let Some(sec) = inf.section(&list) else {
                f.push(Finding::error(a.line, format!("AddReg section [{list}] not found")));
                continue;
            };
            for e in &sec.entries {
                let raw = match &e.key {
                    Some(k) => format!("{k}={}", e.value),
                    None => e.value.clone(),
                };
                let fl = split_fields(&raw);
                let get = |i: usize| fl.get(i).cloned().unwrap_or_default();
                if !get(0).eq_ignore_ascii_case("HKR") {
                    f.push(Finding::error(e.line, format!("registry root `{}` is not HKR (driver package isolation)", get(0))));
                    continue;
                }
                let subkey = inf.expand(&get(1));
                let first = subkey.split('\\').next().unwrap_or("");
                if !first.eq_ignore_ascii_case("Parameters") {
                    f.push(Finding::error(e.line, format!("service registry key `{subkey}` must be under Parameters")));
                    continue;
                }
                if subkey.eq_ignore_ascii_case("Parameters") {
                    let flags = parse_num(&get(3)).unwrap_or(0) as u32;
                    values.insert(inf.expand(&get(2)).to_ascii_lowercase(), (flags, inf.expand(&get(4)), e.line));
                }
            }
        }
    }
    for (name, flags) in PARAMETERS {
        match values.get(*name) {
            None => f.push(Finding::error(s.line, format!("registry value Parameters\\{name} is not set"))),
            Some((fl, _, line)) if fl & 0xffff_fffd != *flags => {
                f.push(Finding::error(*line, format!("Parameters\\{name} has flags {fl:#010x}, expected {flags:#010x}")))
            }
            Some((_, v, line)) if *flags == 0x0001_0001 && parse_num(v).is_none() => {
                f.push(Finding::error(*line, format!("Parameters\\{name} = `{v}` is not a number")))
            }
            _ => {}
        }
    }
    if let Some((_, sddl, line)) = values.get("scull_sddl") {
        if sddl != SDDL_ADMINS_ONLY {
            f.push(Finding::error(*line, format!("default device ACL is `{sddl}`, expected `{SDDL_ADMINS_ONLY}` (SYSTEM and Administrators only)")));
        }
    }
}

pub fn check_file(path: &Path) -> Result<Vec<Finding>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(check(&Inf::parse(&text)))
}

/// `cargo xtask inf-check [FILE]`: prints the findings for `path`; fails on
/// any error. main.rs runs the cargo-wdk layout check first when no FILE is
/// given, and passes `cargowdk::inx_path()`.
pub fn run(path: &Path) -> Result {
    let findings = check_file(path)?;
    for x in &findings {
        println!("{}:{x}", path.display());
    }
    let errors = findings.iter().filter(|x| x.severity == Severity::Error).count();
    let warnings = findings.len() - errors;
    println!("inf-check: {}: {errors} errors, {warnings} warnings", path.display());
    if errors > 0 {
        return Err(format!("{errors} errors in {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scull-wdm/scull.inx")).expect("scull-wdm/scull.inx is readable")
    }

    fn errors(text: &str) -> Vec<Finding> {
        check(&Inf::parse(text)).into_iter().filter(|f| f.severity == Severity::Error).collect()
    }

    fn has(findings: &[Finding], needle: &str) -> bool {
        findings.iter().any(|f| f.message.contains(needle))
    }

    /// Replaces exactly one occurrence, so a test cannot silently mutate nothing.
    fn mutate(text: &str, from: &str, to: &str) -> String {
        assert_eq!(text.matches(from).count(), 1, "`{from}` must occur once in scull.inx");
        text.replacen(from, to, 1)
    }

    #[test]
    fn real_inx_passes() {
        let f = check(&Inf::parse(&real()));
        assert!(f.is_empty(), "findings: {f:#?}");
    }

    #[test]
    fn real_inx_has_the_required_sections_and_keys() {
        let inf = Inf::parse(&real());
        for s in ["Version", "DestinationDirs", "SourceDisksNames", "SourceDisksFiles", "Strings"] {
            assert!(inf.section(s).is_some(), "[{s}] missing");
        }
        let install = inf.sections.iter().find(|s| is_decorated(&s.name, "DefaultInstall")).expect("DefaultInstall.NT*");
        assert!(install.name.starts_with("DefaultInstall.NT$ARCH$"));
        let svc = inf.section(&format!("{}.Services", install.name)).expect(".Services");
        let add = svc.values("AddService").next().expect("AddService").fields();
        assert_eq!(add[0], "scull");
        let service = inf.section(&add[2]).expect("service-install section");
        assert_eq!(service.value("ServiceType").and_then(parse_num), Some(1));
        assert_eq!(service.value("StartType").and_then(parse_num), Some(3));
        assert_eq!(service.value("ErrorControl").and_then(parse_num), Some(1));
        assert_eq!(inf.section("Version").unwrap().value("PnpLockdown"), Some("1"));
        assert_eq!(inf.expand("%SddlAdminsOnly%"), SDDL_ADMINS_ONLY);
    }

    #[test]
    fn catches_missing_addservice() {
        let text = mutate(&real(), "AddService = scull,,Scull.Service", "");
        let e = errors(&text);
        assert!(has(&e, "has no AddService"), "{e:#?}");
    }

    #[test]
    fn catches_addservice_for_another_service() {
        let text = mutate(&real(), "AddService = scull,,Scull.Service", "AddService = other,,Scull.Service");
        assert!(has(&errors(&text), "no AddService for the `scull` service"));
    }

    #[test]
    fn catches_wrong_service_type() {
        // 2 = SERVICE_FILE_SYSTEM_DRIVER
        let text = mutate(&real(), "ServiceType   = 1 ", "ServiceType   = 2 ");
        let e = errors(&text);
        assert!(has(&e, "ServiceType is `2`, expected 1"), "{e:#?}");
        let text = mutate(&real(), "ServiceType   = 1 ", "ServiceType   = 0x10 ");
        assert!(has(&errors(&text), "ServiceType is `0x10`"));
    }

    #[test]
    fn catches_wrong_start_type_and_missing_pnplockdown() {
        let text = mutate(&real(), "StartType     = 3 ", "StartType     = 2 ");
        assert!(has(&errors(&text), "StartType is `2`, expected 3"));
        let text = mutate(&real(), "PnpLockdown = 1", "");
        assert!(has(&errors(&text), "PnpLockdown is missing"));
    }

    #[test]
    fn catches_non_primitive_layouts() {
        let text = mutate(&real(), "[DefaultInstall.NT$ARCH$.10.0...16299]", "[DefaultInstall]");
        let e = errors(&text);
        assert!(has(&e, "must be architecture decorated"), "{e:#?}");
        assert!(has(&e, "no architecture-decorated"), "{e:#?}");
        let text = format!("{}\n[Manufacturer]\n%ProviderName% = Models,NT$ARCH$\n", real());
        assert!(has(&errors(&text), "[Manufacturer]"));
        let text = format!("{}\n[DefaultUninstall.NT$ARCH$]\nDelFiles = Scull.DriverFiles\n", real());
        assert!(has(&errors(&text), "LegacyUninstall=1"));
    }

    #[test]
    fn catches_isolation_breaks() {
        let text = mutate(&real(), "ServiceBinary = %13%\\scull.sys", "ServiceBinary = %12%\\scull.sys");
        assert!(has(&errors(&text), "must be %13%"));
        let text = mutate(&real(), "DefaultDestDir   = 13", "DefaultDestDir   = 12");
        let text = mutate(&text, "Scull.DriverFiles = 13", "Scull.DriverFiles = 12");
        assert!(has(&errors(&text), "expected DIRID 13"));
        let text = mutate(&real(), "HKR,Parameters,scull_qset,", "HKR,,scull_qset,");
        let e = errors(&text);
        assert!(has(&e, "must be under Parameters"), "{e:#?}");
        assert!(has(&e, "Parameters\\scull_qset is not set"), "{e:#?}");
        let text = mutate(&real(), "HKR,Parameters,scull_nr_devs,", "HKLM,Parameters,scull_nr_devs,");
        assert!(has(&errors(&text), "is not HKR"));
    }

    #[test]
    fn catches_parameter_and_acl_mistakes() {
        let text = mutate(&real(), "scull_p_buffer,0x00010001", "scull_p_buffer,0x00000000");
        assert!(has(&errors(&text), "scull_p_buffer has flags"));
        let text = mutate(&real(), "\"D:P(A;;GA;;;SY)(A;;GA;;;BA)\"", "\"D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;WD)\"");
        assert!(has(&errors(&text), "default device ACL"));
        let text = mutate(&real(), "ProviderName       = \"scull-rs\"", "");
        assert!(has(&errors(&text), "%ProviderName% not defined"));
    }

    #[test]
    fn catches_event_log_mistakes() {
        let text = mutate(&real(), ",Scull.EventLog,System,scull", "");
        assert!(has(&errors(&text), "names no event-log install section"));
        let text = mutate(&real(), ",Scull.EventLog,System,scull", ",Scull.EventLog,Application,scull");
        assert!(has(&errors(&text), "event log type `Application`"));
        let text = mutate(&real(), ",Scull.EventLog,System,scull", ",Scull.EventLog,System,other");
        assert!(has(&errors(&text), "event source `other`"));
        let text = mutate(&real(), "\\System32\\IoLogMsg.dll", "\\System32\\scull.sys");
        assert!(has(&errors(&text), "EventMessageFile must be"));
        let text = mutate(&real(), "EventMessageFile,0x00020000", "EventMessageFile,0x00000000");
        assert!(has(&errors(&text), "EventMessageFile must be"));
        let text = mutate(&real(), "HKR,,TypesSupported,0x00010001,7", "");
        assert!(has(&errors(&text), "sets no TypesSupported"));
        let text = mutate(&real(), "HKR,,TypesSupported,0x00010001,7", "HKR,,TypesSupported,0x00010001,6");
        assert!(has(&errors(&text), "EVENTLOG_ERROR_TYPE"));
        let text = mutate(&real(), "HKR,,EventMessageFile", "HKLM,,EventMessageFile");
        assert!(has(&errors(&text), "must be HKR,,"));
    }

    #[test]
    fn parser_grammar() {
        let inf = Inf::parse(
            "; header comment\n\
             [A]\n\
             key = \"x;y\" ; comment\n\
             Multi = one,\\\n   two ; continued\n\
             HKR,\"Parameters\\Sub\",\"a\"\"b\",0,\"v,w\"\n\
             bare.sys\n\
             [ b ]\n\
             k=%S%\\%13%\\f\n\
             [Strings]\n\
             S = \"exp\"\n",
        );
        assert!(inf.syntax.is_empty(), "{:?}", inf.syntax);
        let a = inf.section("a").unwrap();
        assert_eq!(a.value("KEY"), Some("\"x;y\""));
        assert_eq!(a.values("multi").next().unwrap().fields(), vec!["one", "two"]);
        assert_eq!(a.values("multi").next().unwrap().line, 4);
        let reg = &a.entries[2];
        assert_eq!(reg.key, None);
        assert_eq!(reg.fields(), vec!["HKR", "Parameters\\Sub", "a\"b", "0", "v,w"]);
        assert_eq!(a.entries[3].value, "bare.sys");
        assert_eq!(inf.expand(inf.section("B").unwrap().value("k").unwrap()), "exp\\%13%\\f");
        let bad = Inf::parse("x = 1\n[V]\nk = \"open\n[W\n");
        assert_eq!(bad.syntax.len(), 3, "{:?}", bad.syntax);
    }

    #[test]
    fn duplicate_sections_are_errors() {
        let text = format!("{}\n[Strings]\nOther = \"x\"\n", real());
        assert!(has(&errors(&text), "defined again"));
    }
}

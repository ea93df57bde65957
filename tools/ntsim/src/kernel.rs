//! The kernel: executive state (pool, object namespace, handles, registry,
//! event log, processes and tokens), the per-thread IRQL, dispatcher objects
//! and spin locks, and the verifier stop. The DDIs the driver imports are in
//! [`crate::ddi`]; this module holds the state they share and the API the
//! harness uses to seed and inspect it.
//!
//! Global state is one mutex ([`state`]): ntsim runs one driver at a time in
//! a process (tests that load drivers serialise on [`exclusive`]). The
//! mutex is never held while driver code runs.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// IRQL levels (wdm.h).
pub const PASSIVE_LEVEL: u8 = 0;
pub const APC_LEVEL: u8 = 1;
pub const DISPATCH_LEVEL: u8 = 2;
pub const HIGH_LEVEL: u8 = 15;

thread_local! {
    static IRQL: Cell<u8> = const { Cell::new(PASSIVE_LEVEL) };
    /// KeEnterCriticalRegion nesting (KTHREAD.KernelApcDisable, negated).
    static CRITICAL: Cell<i32> = const { Cell::new(0) };
    /// Spin locks this thread holds (addresses), for the verifier.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    static CURRENT_PROCESS: RefCell<Option<Arc<Process>>> = const { RefCell::new(None) };
    static IMPERSONATION: RefCell<Option<Arc<Token>>> = const { RefCell::new(None) };
    static THREAD_ID: Cell<usize> = const { Cell::new(0) };
}

static NEXT_TID: AtomicU32 = AtomicU32::new(1);

/// A small per-thread id (never 0), the owner value of a held spin lock.
pub fn thread_id() -> usize {
    THREAD_ID.with(|t| {
        if t.get() == 0 {
            t.set(NEXT_TID.fetch_add(1, Ordering::Relaxed) as usize);
        }
        t.get()
    })
}

pub fn irql() -> u8 {
    IRQL.with(|c| c.get())
}

pub fn set_irql(v: u8) {
    let old = IRQL.with(|c| c.replace(v));
    crate::verifier::irql_changed(old, v);
}

pub fn critical_depth() -> i32 {
    CRITICAL.with(|c| c.get())
}

pub fn add_critical(d: i32) -> i32 {
    CRITICAL.with(|c| {
        c.set(c.get() + d);
        c.get()
    })
}

pub fn held_locks() -> Vec<usize> {
    HELD.with(|h| h.borrow().clone())
}

pub fn hold(lock: usize) {
    HELD.with(|h| h.borrow_mut().push(lock))
}

pub fn unhold(lock: usize) -> bool {
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        match h.iter().rposition(|&l| l == lock) {
            Some(i) => {
                h.remove(i);
                true
            }
            None => false,
        }
    })
}

// ---------------------------------------------------------------- bugchecks

/// How a verifier stop ends the run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StopMode {
    /// Print the stop and exit the process with status 3 (the default: no
    /// driver code may run after a bugcheck).
    Exit,
}

/// Stops the run: the Windows bugcheck `name` (`code`), with its
/// parameters and what ntsim saw. Never returns.
pub fn bugcheck(name: &str, code: u32, params: [usize; 4], what: &str) -> ! {
    let line = format!(
        "ntsim: BUGCHECK {name} ({code:#x}) params {:#x} {:#x} {:#x} {:#x}: {what}",
        params[0], params[1], params[2], params[3]
    );
    eprintln!("{line}");
    println!("{line}");
    let tail = dbg_tail(20);
    if !tail.is_empty() {
        eprintln!(
            "ntsim: the driver's last DbgPrint lines:\n{}",
            tail.join("\n")
        );
    }
    std::process::exit(3)
}

/// A DDI called above its documented IRQL: Driver Verifier's
/// DRIVER_VERIFIER_DETECTED_VIOLATION (0xC4) family.
pub fn check_irql(ddi: &str, max: u8) {
    crate::verifier::maybe_yield();
    let now = irql();
    if crate::verifier::IRQL_DDI.test(now > max) {
        crate::verifier::IRQL_DDI.stop(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            0xC4,
            [0x3E, now as usize, max as usize, 0],
            &format!("{ddi} called at IRQL {now}; its documentation allows IRQL <= {max}"),
        );
    }
}

// ---------------------------------------------------------------- tokens, processes

/// A SID as bytes (revision, count, authority, sub-authorities).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Sid(pub Vec<u8>);

impl Sid {
    /// `S-1-<authority>-<subs...>`.
    pub fn new(authority: u8, subs: &[u32]) -> Sid {
        let mut b = vec![1, subs.len() as u8, 0, 0, 0, 0, 0, authority];
        for s in subs {
            b.extend_from_slice(&s.to_le_bytes());
        }
        Sid(b)
    }

    /// Parses `S-1-5-32-544`.
    pub fn parse(s: &str) -> Option<Sid> {
        let mut it = s.strip_prefix("S-1-")?.split('-');
        let auth: u8 = it.next()?.parse().ok()?;
        let subs: Option<Vec<u32>> = it.map(|x| x.parse().ok()).collect();
        Some(Sid::new(auth, &subs?))
    }

    pub fn system() -> Sid {
        Sid::new(5, &[18])
    }
    pub fn administrators() -> Sid {
        Sid::new(5, &[32, 544])
    }
    pub fn users() -> Sid {
        Sid::new(5, &[32, 545])
    }
    pub fn everyone() -> Sid {
        Sid::new(1, &[0])
    }
    pub fn authenticated_users() -> Sid {
        Sid::new(5, &[11])
    }
    pub fn interactive() -> Sid {
        Sid::new(5, &[4])
    }
    /// A local account: `S-1-5-21-1000-2000-3000-<rid>`.
    pub fn account(rid: u32) -> Sid {
        Sid::new(5, &[21, 1000, 2000, 3000, rid])
    }
}

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S-{}-{}", self.0[0], self.0[7])?;
        for c in self.0[8..].chunks(4) {
            write!(f, "-{}", u32::from_le_bytes(c.try_into().unwrap()))?;
        }
        Ok(())
    }
}

pub const SE_GROUP_MANDATORY: u32 = 0x1;
pub const SE_GROUP_ENABLED_BY_DEFAULT: u32 = 0x2;
pub const SE_GROUP_ENABLED: u32 = 0x4;
pub const SE_GROUP_OWNER: u32 = 0x8;
pub const SE_GROUP_USE_FOR_DENY_ONLY: u32 = 0x10;

/// A token: its user and groups (with SE_GROUP_* attributes).
#[derive(Debug)]
pub struct Token {
    pub name: String,
    pub user: Sid,
    pub groups: Vec<(Sid, u32)>,
}

impl Token {
    const ON: u32 = SE_GROUP_MANDATORY | SE_GROUP_ENABLED_BY_DEFAULT | SE_GROUP_ENABLED;

    /// LocalSystem: user S-1-5-18, Administrators (enabled, owner), Everyone, Authenticated Users.
    pub fn system() -> Arc<Token> {
        Arc::new(Token {
            name: "SYSTEM".into(),
            user: Sid::system(),
            groups: vec![
                (Sid::administrators(), Self::ON | SE_GROUP_OWNER),
                (Sid::everyone(), Self::ON),
                (Sid::authenticated_users(), Self::ON),
            ],
        })
    }

    /// An elevated administrator (Administrators enabled).
    pub fn admin(name: &str, rid: u32) -> Arc<Token> {
        Arc::new(Token {
            name: name.into(),
            user: Sid::account(rid),
            groups: vec![
                (Sid::administrators(), Self::ON | SE_GROUP_OWNER),
                (Sid::users(), Self::ON),
                (Sid::everyone(), Self::ON),
                (Sid::interactive(), Self::ON),
                (Sid::authenticated_users(), Self::ON),
            ],
        })
    }

    /// A filtered (UAC, not elevated) administrator: Administrators deny-only.
    pub fn filtered_admin(name: &str, rid: u32) -> Arc<Token> {
        Arc::new(Token {
            name: name.into(),
            user: Sid::account(rid),
            groups: vec![
                (Sid::administrators(), SE_GROUP_USE_FOR_DENY_ONLY),
                (Sid::users(), Self::ON),
                (Sid::everyone(), Self::ON),
                (Sid::interactive(), Self::ON),
                (Sid::authenticated_users(), Self::ON),
            ],
        })
    }

    /// A plain user: Users, Everyone, Interactive, Authenticated Users.
    pub fn user(name: &str, rid: u32) -> Arc<Token> {
        Arc::new(Token {
            name: name.into(),
            user: Sid::account(rid),
            groups: vec![
                (Sid::users(), Self::ON),
                (Sid::everyone(), Self::ON),
                (Sid::interactive(), Self::ON),
                (Sid::authenticated_users(), Self::ON),
            ],
        })
    }

    /// Whether `sid` is this token's user or one of its groups; deny-only
    /// groups match only when `for_deny` (SeAccessCheck's rule).
    pub fn matches(&self, sid: &Sid, for_deny: bool) -> bool {
        if &self.user == sid {
            return true;
        }
        self.groups.iter().any(|(g, a)| {
            g == sid
                && (a & SE_GROUP_ENABLED != 0 || (for_deny && a & SE_GROUP_USE_FOR_DENY_ONLY != 0))
        })
    }
}

/// A process: its id and primary token. Its address is the PEPROCESS
/// the driver sees (opaque to drivers).
#[derive(Debug)]
pub struct Process {
    pub pid: usize,
    pub name: String,
    pub token: Arc<Token>,
    /// Set when the process has exited (its id may be reused).
    pub exited: std::sync::atomic::AtomicBool,
}

static NEXT_PID: Mutex<usize> = Mutex::new(1000);

impl Process {
    /// A new process with `token`; ids advance by 4 as Windows' do.
    pub fn new(name: &str, token: Arc<Token>) -> Arc<Process> {
        let pid = {
            let mut n = NEXT_PID.lock().unwrap();
            *n += 4;
            *n
        };
        Self::with_pid(name, token, pid)
    }

    /// A process with a chosen id (to simulate id reuse after an exit).
    pub fn with_pid(name: &str, token: Arc<Token>, pid: usize) -> Arc<Process> {
        let p = Arc::new(Process {
            pid,
            name: name.into(),
            token,
            exited: false.into(),
        });
        let mut s = state();
        s.objects
            .insert(Arc::as_ptr(&p) as usize, Obj::Process(p.clone()));
        s.objects
            .insert(Arc::as_ptr(&p.token) as usize, Obj::Token(p.token.clone()));
        p
    }
}

impl Process {
    /// The process exits: waits on it are satisfied. Its id stays taken
    /// while any kernel handle holds its object (NT frees an id only when
    /// the process object goes).
    pub fn exit(&self) {
        self.exited.store(true, Ordering::SeqCst);
    }

    /// A new process that reuses `pid`, as Windows reuses the id of an
    /// exited process whose object is gone; None while the id is taken
    /// (a live process, or an exited one a kernel handle still holds).
    pub fn reuse_pid(name: &str, token: Arc<Token>, pid: usize) -> Option<Arc<Process>> {
        {
            let mut s = state();
            if pid_taken(&s, pid) {
                return None;
            }
            // The dead process objects with this id are gone.
            s.objects
                .retain(|_, o| !matches!(o, Obj::Process(p) if p.pid == pid));
        }
        Some(Self::with_pid(name, token, pid))
    }
}

fn pid_taken(s: &State, pid: usize) -> bool {
    s.objects.values().any(|o| match o {
        Obj::Process(p) if p.pid == pid => {
            !p.exited.load(Ordering::SeqCst)
                || s.handles.values().any(
                    |h| matches!(h, KHandle::Object { ptr, .. } if *ptr == Arc::as_ptr(p) as usize),
                )
        }
        _ => false,
    })
}

/// The process object an id names (a live process, or an exited one still held).
pub fn process_by_id(pid: usize) -> Option<Arc<Process>> {
    let s = state();
    if !pid_taken(&s, pid) {
        return None;
    }
    s.objects.values().find_map(|o| match o {
        Obj::Process(p) if p.pid == pid => Some(p.clone()),
        _ => None,
    })
}

/// The System process (DriverEntry, DriverUnload and the harness's own
/// threads unless they choose another).
pub fn system_process() -> Arc<Process> {
    static SYSTEM: std::sync::OnceLock<Arc<Process>> = std::sync::OnceLock::new();
    SYSTEM
        .get_or_init(|| Process::with_pid("System", Token::system(), 4))
        .clone()
}

static DEFAULT_PROCESS: Mutex<Option<Arc<Process>>> = Mutex::new(None);

/// The process of threads that did not choose one (initially System).
pub fn set_default_process(p: Option<Arc<Process>>) {
    *DEFAULT_PROCESS.lock().unwrap() = p;
}

/// The current thread's process.
pub fn current_process() -> Arc<Process> {
    CURRENT_PROCESS
        .with(|c| c.borrow().clone())
        .or_else(|| DEFAULT_PROCESS.lock().unwrap().clone())
        .unwrap_or_else(system_process)
}

/// The current thread's impersonation token, if any.
pub fn impersonation() -> Option<Arc<Token>> {
    IMPERSONATION.with(|c| c.borrow().clone())
}

/// Runs `f` on this thread as a thread of process `p`.
pub fn as_process<R>(p: &Arc<Process>, f: impl FnOnce() -> R) -> R {
    let old = CURRENT_PROCESS.with(|c| c.replace(Some(p.clone())));
    let r = f();
    CURRENT_PROCESS.with(|c| *c.borrow_mut() = old);
    r
}

/// Makes this thread a thread of `p` from now on.
pub fn enter_process(p: &Arc<Process>) {
    CURRENT_PROCESS.with(|c| *c.borrow_mut() = Some(p.clone()));
}

/// Runs `f` while this thread impersonates `client` (SecurityImpersonation).
pub fn impersonating<R>(client: &Arc<Token>, f: impl FnOnce() -> R) -> R {
    {
        let mut s = state();
        s.objects
            .insert(Arc::as_ptr(client) as usize, Obj::Token(client.clone()));
    }
    let old = IMPERSONATION.with(|c| c.replace(Some(client.clone())));
    let r = f();
    IMPERSONATION.with(|c| *c.borrow_mut() = old);
    r
}

// ---------------------------------------------------------------- objects and handles

/// What a pointer handed to the driver is.
#[derive(Clone)]
pub enum Obj {
    Process(Arc<Process>),
    Token(Arc<Token>),
    Device,
}

/// A kernel handle's target.
#[derive(Clone)]
pub enum KHandle {
    Object { ptr: usize, access: u32 },
    Key(String),
}

/// A registry value.
#[derive(Clone, Debug, PartialEq)]
pub enum RegValue {
    Dword(u32),
    Sz(String),
    Binary(u32, Vec<u8>),
}

/// One IoWriteErrorLogEntry record, decoded.
#[derive(Clone, Debug)]
pub struct EventEntry {
    /// The driver object or device object the entry was allocated for.
    pub io_object: usize,
    pub error_code: u32,
    pub unique_error_value: u32,
    pub final_status: i32,
    pub major_function: u8,
    pub event_category: u16,
    pub dump_data: Vec<u32>,
    pub strings: Vec<String>,
    /// The whole packet as the driver wrote it.
    pub raw: Vec<u8>,
}

/// One ACE of an applied DACL (generic rights already mapped).
#[derive(Clone, Debug, PartialEq)]
pub struct Ace {
    pub kind: u8,
    pub flags: u8,
    pub mask: u32,
    pub sid: Sid,
}

/// A security descriptor as the object manager keeps it.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// None: no DACL (everyone gets everything).
    pub dacl: Option<Vec<Ace>>,
    pub protected: bool,
}

#[derive(Default)]
pub struct State {
    /// Live pool blocks: address -> (tag, size, paged).
    pub pool: HashMap<usize, (u32, usize, bool)>,
    /// Their total size in bytes.
    pub pool_bytes: usize,
    /// The largest pool block allocated at DISPATCH_LEVEL or above (a big
    /// one under a spin lock is a DPC-watchdog hazard).
    pub dispatch_alloc_max: usize,
    pub pool_allocs: u64,
    /// Fail the k-th allocation from now (low-resources simulation); 0 = off.
    pub pool_fail_at: u64,
    pub objects: HashMap<usize, Obj>,
    pub handles: HashMap<usize, KHandle>,
    pub next_handle: usize,
    /// `\Device\X` (lower case) -> device object.
    pub devices: BTreeMap<String, usize>,
    /// `\??\X` (lower case) -> target path as given.
    pub links: BTreeMap<String, String>,
    /// Security of objects (devices) by address.
    pub security: HashMap<usize, Security>,
    /// Registry: lower-case key path -> values (lower-case name -> value).
    pub registry: BTreeMap<String, BTreeMap<String, RegValue>>,
    pub eventlog: Vec<EventEntry>,
    /// Error-log packets allocated and not yet written.
    pub errlog_pending: HashMap<usize, usize>,
    pub dbg: Vec<String>,
    /// Print DbgPrint lines as they come.
    pub echo: bool,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

pub struct StateGuard(MutexGuard<'static, Option<State>>);

impl std::ops::Deref for StateGuard {
    type Target = State;
    fn deref(&self) -> &State {
        self.0.as_ref().unwrap()
    }
}
impl std::ops::DerefMut for StateGuard {
    fn deref_mut(&mut self) -> &mut State {
        self.0.as_mut().unwrap()
    }
}

/// The kernel's state (locked).
pub fn state() -> StateGuard {
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if g.is_none() {
        install_fault_handler();
        *g = Some(State {
            next_handle: 0x1000,
            ..Default::default()
        });
    }
    StateGuard(g)
}

/// Serialises users of the one kernel in this process (tests).
pub fn exclusive() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    pub fn new_handle(&mut self, h: KHandle) -> usize {
        self.next_handle += 4;
        let v = self.next_handle;
        self.handles.insert(v, h);
        v
    }
}

/// Drops what a previous driver left in the namespace, the registry and
/// the logs (a new run).
pub fn reset() {
    let mut s = state();
    let keep: HashMap<usize, Obj> = s
        .objects
        .drain()
        .filter(|(_, o)| !matches!(o, Obj::Device))
        .collect();
    *s = State {
        next_handle: 0x1000,
        objects: keep,
        echo: s.echo,
        ..Default::default()
    };
    crate::verifier::reset();
}

// ---------------------------------------------------------------- registry, logs

/// Sets a registry value (`key` like `\Registry\Machine\System\...`).
pub fn reg_set(key: &str, name: &str, v: RegValue) {
    state()
        .registry
        .entry(key.to_lowercase())
        .or_default()
        .insert(name.to_lowercase(), v);
}

/// Creates a key with no values.
pub fn reg_create(key: &str) {
    state().registry.entry(key.to_lowercase()).or_default();
}

pub fn eventlog() -> Vec<EventEntry> {
    state().eventlog.clone()
}

pub fn dbg_lines() -> Vec<String> {
    state().dbg.clone()
}

pub fn set_echo(on: bool) {
    state().echo = on;
}

fn dbg_tail(n: usize) -> Vec<String> {
    match STATE.try_lock() {
        Ok(g) => g
            .as_ref()
            .map(|s| s.dbg.iter().rev().take(n).rev().cloned().collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Outstanding pool blocks per tag (tag as its four characters, in memory order).
pub fn pool_outstanding() -> BTreeMap<String, usize> {
    let s = state();
    let mut m = BTreeMap::new();
    for (tag, ..) in s.pool.values() {
        *m.entry(tag_str(*tag)).or_insert(0) += 1;
    }
    m
}

/// Bytes in outstanding pool blocks (paged and nonpaged).
pub fn pool_outstanding_bytes() -> usize {
    state().pool_bytes
}

/// Fails the k-th pool allocation from now (k >= 1); 0 turns it off.
pub fn pool_fail_at(k: u64) {
    state().pool_fail_at = k;
}

/// Whether an armed pool failure has not happened yet.
pub fn pool_fail_armed() -> bool {
    state().pool_fail_at > 0
}

pub fn tag_str(tag: u32) -> String {
    tag.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect()
}

// ---------------------------------------------------------------- dispatcher

/// The dispatcher lock: every dispatcher object's signal state changes
/// under it, and waiters sleep on its condition variable (NT's dispatcher
/// database lock, in miniature). Waits really block.
pub static DISPATCHER: Mutex<()> = Mutex::new(());
pub static DISPATCHER_CV: Condvar = Condvar::new();

/// A Win32 event (CreateEventW), signalled by I/O completion.
#[derive(Default)]
pub struct Event {
    pub signalled: Mutex<bool>,
    pub cv: Condvar,
    pub manual: bool,
}

impl Event {
    pub fn set(&self) {
        *self.signalled.lock().unwrap() = true;
        self.cv.notify_all();
    }
    pub fn reset(&self) {
        *self.signalled.lock().unwrap() = false;
    }
    /// Waits up to `ms` (u32::MAX: forever); true when signalled.
    pub fn wait(&self, ms: u32) -> bool {
        let mut g = self.signalled.lock().unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
        while !*g {
            if ms == u32::MAX {
                g = self.cv.wait(g).unwrap();
            } else {
                let now = std::time::Instant::now();
                if now >= end {
                    return false;
                }
                g = self.cv.wait_timeout(g, end - now).unwrap().0;
            }
        }
        if !self.manual {
            *g = false;
        }
        true
    }
}

// ---------------------------------------------------------------- faults

/// The driver image's range, for telling a fault in driver code from one in ntsim.
pub static IMAGE_RANGE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub static IMAGE_BASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Writes `v` as 16 hex digits into `out` (async-signal-safe).
fn hex16(v: usize, out: &mut [u8]) {
    for (i, o) in out.iter_mut().enumerate().take(16) {
        let d = (v >> (60 - 4 * i)) & 0xf;
        *o = b"0123456789abcdef"[d];
    }
}

extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Only async-signal-safe work: a fixed buffer, write(2), _exit(2).
    let mut line = *b"ntsim: BUGCHECK PAGE_FAULT_IN_NONPAGED_AREA (0x50) params 0x................ rip 0x................ (driver+0x................): invalid memory access [check pool.special]\n";
    // SAFETY: the kernel passes a valid siginfo and ucontext to an SA_SIGINFO handler.
    let (addr, rip) = unsafe {
        let a = (*info).si_addr() as usize;
        let uc = ctx as *const libc::ucontext_t;
        (a, (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as usize)
    };
    let base = IMAGE_BASE.load(Ordering::Relaxed);
    let size = IMAGE_RANGE.load(Ordering::Relaxed) as usize;
    fn find(hay: &[u8], pat: &[u8]) -> Option<usize> {
        hay.windows(pat.len()).position(|w| w == pat)
    }
    if let Some(i) = find(&line, b"params 0x") {
        hex16(addr, &mut line[i + 9..i + 25]);
    }
    if let Some(i) = find(&line, b"rip 0x") {
        hex16(rip, &mut line[i + 6..i + 22]);
    }
    if let Some(i) = find(&line, b"driver+0x") {
        let off = if base != 0 && rip >= base && rip < base + size {
            rip - base
        } else {
            usize::MAX
        };
        hex16(off, &mut line[i + 9..i + 25]);
    }
    let _ = sig;
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::write(1, line.as_ptr().cast(), line.len());
        libc::_exit(3);
    }
}

/// Makes a memory fault (in the driver or ntsim) stop the run as a
/// bugcheck naming the address and whether the faulting code is the
/// driver's (driver+offset; all f: not the driver).
pub fn install_fault_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with our SA_SIGINFO handler; SIGSEGV
        // and SIGBUS only (the Rust runtime's own stack-overflow handler is
        // replaced: a driver overflowing its stack is reported the same way).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fault as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

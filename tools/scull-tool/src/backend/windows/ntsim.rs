//! The `ntsim` target (Linux builds): this backend's Win32 calls go to
//! ntsim's Win32 layer (see `crate::win32`), against the *release*
//! scull.sys (`target/wdm/scull.sys`, or `SCULL_SYS`) that ntsim loads into
//! this process at start. What needs processes on Windows runs here as
//! threads that are other NT processes to the driver (their own process
//! objects and ids): the suite's identity is an elevated administrator's
//! process, `Who::Other` a process with a plain user's token, each spawned
//! writer a new process with the suite's token.
//!
//! The registry is seeded with the service's Parameters key, and
//! `scull_sddl` gives authenticated users read and write (as an
//! administrator would set it for a second user), so the plain user can
//! open the devices and the driver's own policies decide.

use super::*;
use ::ntsim::kernel::{self, Process, RegValue, Token};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

pub const SERVICE: &str = "scull";
pub const PARAMS_KEY: &str = "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\scull\\Parameters";
/// The device ACL the suite loads with: SYSTEM and Administrators all
/// access, authenticated users read and write.
pub const SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;AU)";

pub struct Env {
    pub path: PathBuf,
    pub me: Arc<Process>,
    pub admin: Arc<Token>,
    pub user: Arc<Token>,
}

static ENV: OnceLock<Env> = OnceLock::new();
/// The loaded driver (taken by `unload` and by cases that unload it themselves).
pub(crate) static DRIVER: Mutex<Option<Arc<::ntsim::io::Driver>>> = Mutex::new(None);

pub fn env() -> &'static Env {
    ENV.get().expect("ntsim not started")
}

/// The driver image: `SCULL_SYS`, else `target/wdm/scull.sys` above the
/// working directory or beside this executable's target directory.
pub fn driver_path() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("SCULL_SYS") {
        return Ok(PathBuf::from(p));
    }
    let mut starts = vec![std::env::current_dir().map_err(|e| e.to_string())?];
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for s in starts {
        for dir in s.ancestors() {
            let p = dir.join("target/wdm/scull.sys");
            if p.exists() {
                return Ok(p);
            }
            if dir.file_name().is_some_and(|n| n == "target") && dir.join("wdm/scull.sys").exists() {
                return Ok(dir.join("wdm/scull.sys"));
            }
        }
    }
    Err("no target/wdm/scull.sys (run `cargo xtask wdm`, or set SCULL_SYS)".into())
}

/// Seeds the registry with the service's parameters (`extra` on top of the suite's ACL).
pub fn seed_registry(extra: &[(&str, RegValue)]) {
    kernel::reg_create(PARAMS_KEY);
    kernel::reg_set(PARAMS_KEY, "scull_sddl", RegValue::Sz(SDDL.into()));
    for (n, v) in extra {
        kernel::reg_set(PARAMS_KEY, n, v.clone());
    }
}

/// Loads the driver (DriverEntry in the System process).
pub fn load() -> Result<Arc<::ntsim::io::Driver>, String> {
    let path = &env().path;
    let d = ::ntsim::io::load(path, SERVICE).map_err(|e| match e {
        ::ntsim::io::LoadError::Image(m) => m,
        ::ntsim::io::LoadError::Entry(st) => format!("DriverEntry failed: {st:#x}"),
    })?;
    *DRIVER.lock().unwrap() = Some(d.clone());
    Ok(d)
}

/// Asks for unload; returns what ntsim found left (empty: balanced).
pub fn unload() -> Result<Vec<String>, String> {
    let d = DRIVER.lock().unwrap().take().ok_or("no driver loaded")?;
    if !::ntsim::io::request_unload(&d) {
        // Windows runs DriverUnload at the last file object's IRP_MJ_CLOSE.
        // With every handle closed, that close can still be on its way: the
        // I/O manager defers a file object's last dereference to a worker
        // when an IRP completes inside the driver (IRP_MJ_CLEANUP completing
        // pended reads) or at raised IRQL. Wait for it, within a bound.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while d.unload_report.lock().unwrap().is_none() {
            if std::time::Instant::now() >= until {
                return Err("DriverUnload deferred: files are still open".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let left = d.unload_report.lock().unwrap().clone().unwrap_or_default();
    Ok(left)
}

/// Starts the target: tokens and processes, registry, the driver.
pub fn start() -> Result<(), String> {
    if ENV.get().is_some() {
        return Ok(());
    }
    kernel::set_echo(std::env::var_os("NTSIM_ECHO").is_some());
    // NTSIM_TRUNCATE=reactos: TRUNCATE_EXISTING as ReactOS's kernel32 sends it.
    if std::env::var("NTSIM_TRUNCATE").as_deref() == Ok("reactos") {
        ::ntsim::win32::set_truncate_mode(::ntsim::win32::TruncateMode::ReactOs);
    }
    let path = driver_path()?;
    let admin = Token::admin("admin", 500);
    let user = Token::user("bob", 1001);
    let me = Process::new("scull-tool.exe", admin.clone());
    kernel::set_default_process(Some(me.clone()));
    let _ = ENV.set(Env { path: path.clone(), me, admin, user });
    seed_registry(&[]);
    let d = load()?;
    eprintln!("ntsim: loaded {} sha256={}", path.display(), d.sha256);
    Ok(())
}

/// A writer in another process (a thread with its own process object and
/// the suite's token).
struct ThreadWriter(std::thread::JoinHandle<Result<usize, Error>>);

impl Join for ThreadWriter {
    fn join(self: Box<Self>) -> Result<usize, Error> {
        self.0.join().map_err(|_| Error::Invalid)?
    }
}

pub fn spawn_writer(dev: Dev, data: Vec<u8>, delay: Duration) -> Result<Box<dyn Join>, Error> {
    let p = Process::new("writer.exe", env().admin.clone());
    let t = std::thread::spawn(move || {
        kernel::enter_process(&p);
        std::thread::sleep(delay);
        let h = open_raw(dev, OpenOpts::W, false, false)?;
        let mut h = WinHandle { h, dev, wine: false, pos: 0 };
        let mut done = 0;
        while done < data.len() {
            match h.write(&data[done..])? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    });
    Ok(Box::new(ThreadWriter(t)))
}

/// The proxy's peer: a thread that is another process with the plain user's token.
pub struct ProxyThread {
    process: Arc<Process>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl ProxyThread {
    /// Waits for the thread to end; past `t`, ends its process's I/O (as
    /// killing the process would) and waits again.
    pub fn finish(&mut self, t: Duration) {
        let Some(j) = self.join.take() else { return };
        let end = Instant::now() + t;
        while !j.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !j.is_finished() {
            ::ntsim::io::cancel_process_io(&self.process);
        }
        let _ = j.join();
    }
}

/// The proxy's input: lines to the thread; `cancel` acts at once, as the
/// Windows child's input thread does: CancelIoEx on the opening handle,
/// or, while CreateFile itself waits, the process's exit (its I/O cancelled).
struct LineTx {
    tx: Option<Sender<String>>,
    buf: Vec<u8>,
    process: Arc<Process>,
}

impl Write for LineTx {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        while let Some(i) = self.buf.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            if line == "cancel" {
                ::ntsim::io::cancel_process_io(&self.process);
                continue;
            }
            if let Some(tx) = &self.tx {
                if tx.send(line).is_err() {
                    self.tx = None;
                }
            }
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A proxy's peer, its input and its answer lines.
pub type ProxyParts = (ProxyThread, Box<dyn Write + Send>, Receiver<String>);

pub fn spawn_proxy(dev: Dev, o: OpenOpts) -> Result<ProxyParts, Error> {
    let process = Process::new("scull-tool.exe (bob)", env().user.clone());
    let (in_tx, in_rx) = std::sync::mpsc::channel::<String>();
    let (out_tx, lines) = std::sync::mpsc::channel::<String>();
    let p = process.clone();
    let join = std::thread::spawn(move || {
        kernel::enter_process(&p);
        let h = match create_raw(dev, o, false, false) {
            Ok(h) => h,
            Err(e) => {
                let _ = out_tx.send(proxy::answer(Err(e)));
                return;
            }
        };
        let _ = out_tx.send(proxy::answer(Ok(String::new())));
        let mut h = WinHandle { h, dev, wine: false, pos: 0 };
        for line in in_rx {
            if out_tx.send(proxy::answer(proxy::exec(&mut h, &line))).is_err() {
                break;
            }
        }
    });
    let tx = LineTx { tx: Some(in_tx), buf: Vec::new(), process: process.clone() };
    Ok((ProxyThread { process, join: Some(join) }, Box::new(tx), lines))
}

/// scull.sys's pool tag ('lucS' as the driver writes it, "Scul" in memory).
pub const POOL_TAG: u32 = u32::from_le_bytes(*b"Scul");

/// Outstanding pool blocks with scull's tag, from ntsim's pool accounting.
pub fn outstanding_blocks() -> u64 {
    kernel::state().pool.values().filter(|(t, ..)| *t == POOL_TAG).count() as u64
}

//! `Who::Other` under test identity mode: a child process of this tool that
//! gives up the administrator override (`TEST_OP_DEMOTE`), opens one device
//! and then runs the parent's requests on that handle, one line each:
//! `read N`, `write HEX`, `seek s|c|e OFF`, `setlen N`, `ioctl CODE VALUE`,
//! `raw CODE HEX|- OUTLEN`, `stats`; answers `ok [VALUE]` or `error WIN32`.
//! The first answer is the open's. `cancel` (while the open waits) cancels
//! the pending open: CancelIoEx on the handle (wine: the bridge call waits),
//! or, where CreateFile itself blocks (windows), the process exits, which
//! cancels its I/O. End of input closes the handle and ends the child.

use super::*;
#[cfg(windows)]
use std::io::BufRead;
#[cfg(windows)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// The other side of a proxy: a child process (Windows), or on ntsim a
/// thread running as another NT process with a plain user's token.
#[cfg(windows)]
type Peer = Child;
#[cfg(not(windows))]
type Peer = super::ntsim::ProxyThread;

pub fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

pub struct Proxy {
    child: Peer,
    stdin: Option<Box<dyn Write + Send>>,
    lines: mpsc::Receiver<String>,
    /// The open's outcome once the child reported it.
    pub open: Option<Result<(), Error>>,
}

fn parse_reply(l: &str) -> Result<String, Error> {
    if let Some(rest) = l.strip_prefix("ok") {
        return Ok(rest.trim().to_string());
    }
    let code = l.strip_prefix("error ").and_then(|c| c.trim().parse::<u32>().ok());
    Err(code.map(map).unwrap_or(Error::Invalid))
}

impl Proxy {
    #[cfg(not(windows))]
    pub fn spawn(_wine: bool, dev: Dev, o: OpenOpts) -> Result<Proxy, Error> {
        let (child, stdin, lines) = super::ntsim::spawn_proxy(dev, o)?;
        Ok(Proxy { child, stdin: Some(stdin), lines, open: None })
    }

    #[cfg(windows)]
    pub fn spawn(wine: bool, dev: Dev, o: OpenOpts) -> Result<Proxy, Error> {
        let exe = std::env::current_exe().map_err(|_| Error::Invalid)?;
        let mut name = String::new();
        let _ = dev.windows_name(&mut name);
        let bits = u8::from(o.read) | (u8::from(o.write) << 1) | (u8::from(o.nonblock) << 2) | (u8::from(o.truncate) << 3);
        let mut child = Command::new(exe)
            .args([CHILD_PROXY, if wine { "wine" } else { "windows" }, &name, &bits.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|_| Error::Invalid)?;
        let stdin = child.stdin.take().map(|s| Box::new(s) as Box<dyn Write + Send>);
        let out = child.stdout.take().ok_or(Error::Invalid)?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Proxy { child, stdin, lines, open: None })
    }

    /// The open's outcome, waiting up to `timeout`; `Err(WouldBlock)`
    /// while it is still pending (then `open` is still None).
    pub fn opened(&mut self, timeout: Duration) -> Result<(), Error> {
        if let Some(r) = self.open {
            return r;
        }
        match self.lines.recv_timeout(timeout) {
            Ok(l) => {
                let r = parse_reply(&l).map(drop);
                self.open = Some(r);
                r
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::WouldBlock),
            Err(_) => {
                self.open = Some(Err(Error::Invalid));
                Err(Error::Invalid)
            }
        }
    }

    /// Asks the child to cancel its pending open.
    pub fn cancel_open(&mut self) -> Result<(), Error> {
        self.send("cancel")
    }

    fn send(&mut self, line: &str) -> Result<(), Error> {
        let s = self.stdin.as_mut().ok_or(Error::Invalid)?;
        writeln!(s, "{line}").and_then(|_| s.flush()).map_err(|_| Error::Invalid)
    }

    fn request(&mut self, line: &str) -> Result<String, Error> {
        if self.opened(Duration::from_secs(60)).is_err() && self.open.is_none() {
            return Err(Error::Invalid);
        }
        self.opened(Duration::ZERO)?;
        self.send(line)?;
        let l = self.lines.recv_timeout(Duration::from_secs(60)).map_err(|_| Error::Invalid)?;
        parse_reply(&l)
    }
}

#[cfg(not(windows))]
impl Drop for Proxy {
    fn drop(&mut self) {
        // End of input: the thread closes its handle and ends; wait for it.
        self.stdin = None;
        self.child.finish(Duration::from_secs(20));
    }
}

#[cfg(windows)]
impl Drop for Proxy {
    fn drop(&mut self) {
        // End of input: the child closes its handle and exits. Wait for
        // that, so that the close has happened when the drop returns.
        self.stdin = None;
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Handle for Proxy {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let got = unhex(&self.request(&format!("read {}", buf.len()))?).ok_or(Error::Invalid)?;
        let n = got.len().min(buf.len());
        buf[..n].copy_from_slice(&got[..n]);
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        self.request(&format!("write {}", hex(buf)))?.parse().map_err(|_| Error::Invalid)
    }

    fn seek(&mut self, whence: Whence, off: i64) -> Result<u64, Error> {
        let w = match whence {
            Whence::Set => "s",
            Whence::Cur => "c",
            Whence::End => "e",
        };
        self.request(&format!("seek {w} {off}"))?.parse().map_err(|_| Error::Invalid)
    }

    fn set_len(&mut self, len: u64) -> Result<(), Error> {
        self.request(&format!("setlen {len}")).map(drop)
    }

    fn ioctl(&mut self, cmd: Cmd, value: i32) -> Result<i32, Error> {
        self.request(&format!("ioctl {} {value}", cmd.windows_code()))?.parse().map_err(|_| Error::Invalid)
    }

    fn ioctl_raw(&mut self, code: u32, input: &[u8], out_len: usize) -> Result<Vec<u8>, Error> {
        unhex(&self.request(&format!("raw {code} {} {out_len}", hex(input)))?).ok_or(Error::Invalid)
    }

    fn stats(&mut self) -> Result<String, Error> {
        let b = unhex(&self.request("stats")?).ok_or(Error::Invalid)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
}

/// The handle value, for a `cancel` from the input thread.
#[cfg(windows)]
static OPENING: AtomicUsize = AtomicUsize::new(0);

/// One answer line.
pub(super) fn answer(r: Result<String, Error>) -> String {
    match r {
        Ok(v) if v.is_empty() => "ok".into(),
        Ok(v) => format!("ok {v}"),
        Err(e) => format!("error {}", e.win32()),
    }
}

#[cfg(windows)]
fn reply(r: Result<String, Error>) {
    println!("{}", answer(r));
    let _ = std::io::stdout().flush();
}

pub(super) fn exec(h: &mut WinHandle, line: &str) -> Result<String, Error> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| w.get(i).and_then(|s| s.parse::<i64>().ok()).ok_or(Error::Invalid);
    match w.first().copied() {
        Some("read") => {
            let mut b = vec![0u8; num(1)? as usize];
            let n = h.read(&mut b)?;
            Ok(hex(&b[..n]))
        }
        Some("write") => h.write(&unhex(w.get(1).ok_or(Error::Invalid)?).ok_or(Error::Invalid)?).map(|n| n.to_string()),
        Some("seek") => {
            let wh = match w.get(1).copied() {
                Some("s") => Whence::Set,
                Some("c") => Whence::Cur,
                Some("e") => Whence::End,
                _ => return Err(Error::Invalid),
            };
            h.seek(wh, num(2)?).map(|p| p.to_string())
        }
        Some("setlen") => h.set_len(num(1)? as u64).map(|_| String::new()),
        Some("ioctl") => {
            let cmd = Cmd::from_windows_code(num(1)? as u32)?;
            h.ioctl(cmd, num(2)? as i32).map(|v| v.to_string())
        }
        Some("raw") => {
            let input = unhex(w.get(2).ok_or(Error::Invalid)?).ok_or(Error::Invalid)?;
            h.ioctl_raw(num(1)? as u32, &input, num(3)? as usize).map(|b| hex(&b))
        }
        Some("stats") => h.stats().map(|t| hex(t.as_bytes())),
        _ => Err(Error::Invalid),
    }
}

/// `__scull_child_proxy <wine|windows> <Dev> <bits>`.
#[cfg(windows)]
pub fn child(args: &[String]) -> u8 {
    let wine = args.first().map(String::as_str) == Some("wine");
    let dev = args.get(1).and_then(|s| Dev::parse(s));
    let bits: u8 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let Some(dev) = dev else {
        reply(Err(Error::Invalid));
        return 1;
    };
    let o = OpenOpts { read: bits & 1 != 0, write: bits & 2 != 0, nonblock: bits & 4 != 0, truncate: bits & 8 != 0 };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::stdin().lock().lines().map_while(|l| l.ok()) {
            if l.trim() == "cancel" {
                let h = OPENING.load(Ordering::SeqCst);
                if h == 0 {
                    // CreateFile itself is blocked (an I/O manager that
                    // waits for IRP_MJ_CREATE): exiting cancels it.
                    std::process::exit(3);
                }
                // SAFETY: the handle stays open until the open has finished
                // and OPENING is cleared.
                unsafe { CancelIoEx(h as HANDLE, null_mut()) };
                continue;
            }
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // Another user: no administrator override for this process.
    if let Err(e) = test_op(wine, TEST_OP_DEMOTE, 0) {
        reply(Err(e));
        return 1;
    }
    let h = match create_raw(dev, o, wine, false) {
        Ok(h) => h,
        Err(e) => {
            reply(Err(e));
            return 1;
        }
    };
    OPENING.store(h.0 as usize, Ordering::SeqCst);
    let r = if wine && wine::has_bridge() { wine::send_open_flags(&h, o) } else { Ok(()) };
    OPENING.store(0, Ordering::SeqCst);
    if let Err(e) = r {
        reply(Err(e));
        return 1;
    }
    reply(Ok(String::new()));
    let mut h = WinHandle { h, dev, wine, pos: 0 };
    for line in rx {
        reply(exec(&mut h, &line));
    }
    0
}

//! Progress of the long commands (stress, fuzz, fault-sweep, bench) on
//! stderr: an indicatif bar when stderr is a terminal that can move its
//! cursor, otherwise one plain line every [`PLAIN_EVERY`] (CI logs, and the
//! QEMU guest, whose serial console is a tty but runs with `TERM=dumb`), so
//! stdout keeps only the results the harnesses parse.
//!
//! A [`Progress`] is either timed (the task runs for a fixed number of
//! seconds: the bar shows time, the message a count) or counted (a known
//! number of steps). Tasks add to [`Progress::counter`]; a ticker thread
//! draws, so workers never wait for the terminal. Dropping it clears the bar.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The interval of the plain lines when stderr is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// What the task's length is measured in.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// Runs this many seconds; the counter counts `unit`s done meanwhile.
    Seconds(f64),
    /// This many steps; the counter is the steps done.
    Steps(u64),
    /// An unknown number of steps (a spinner on a terminal).
    Open,
}

pub struct Progress {
    counter: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `label`'s progress towards `goal`; `unit` names what
    /// the counter counts (`records`, `ops`, ...; empty: a timed task that
    /// counts nothing).
    pub fn start(label: &str, goal: Goal, unit: &'static str) -> Progress {
        let term = std::env::var("TERM").ok();
        Progress::with(label, goal, unit, wants_bar(std::io::stderr().is_terminal(), term.as_deref()))
    }

    fn with(label: &str, goal: Goal, unit: &'static str, terminal: bool) -> Progress {
        let counter = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (c, d, label) = (counter.clone(), done.clone(), label.to_string());
        let ticker = std::thread::spawn(move || {
            if terminal {
                draw_bar(&label, goal, unit, &c, &d)
            } else {
                plain_lines(&label, goal, unit, &c, &d)
            }
        });
        Progress { counter, done, ticker: Some(ticker) }
    }

    /// What the task adds to (shared with worker threads).
    pub fn counter(&self) -> &Arc<AtomicU64> {
        &self.counter
    }

    /// One more unit done.
    pub fn inc(&self) {
        self.counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The count is now `n`.
    pub fn set(&self, n: u64) {
        self.counter.store(n, Ordering::Relaxed);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// A bar redraws its line in place, so it needs a tty whose terminal moves
/// the cursor: `TERM=dumb` (the usual name of one that cannot, and what the
/// QEMU guest sets for its serial console) or no TERM at all get plain lines.
fn wants_bar(stderr_is_tty: bool, term: Option<&str>) -> bool {
    stderr_is_tty && !matches!(term, None | Some("" | "dumb"))
}

/// Sleeps up to `d`, returning early (true) once `done` is set.
fn wait(done: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if done.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(d));
    }
    done.load(Ordering::Relaxed)
}

fn draw_bar(label: &str, goal: Goal, unit: &str, counter: &AtomicU64, done: &AtomicBool) {
    let (len, template) = match goal {
        Goal::Seconds(s) => ((s * 10.0).max(1.0) as u64, "{prefix} [{bar:30}] {elapsed}/{msg}"),
        Goal::Steps(n) => (n.max(1), "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})"),
        Goal::Open if unit.is_empty() => (0, "{prefix} {spinner} {elapsed}"),
        Goal::Open => (0, "{prefix} {spinner} {pos} {msg} ({elapsed})"),
    };
    let bar = ProgressBar::with_draw_target((len > 0).then_some(len), ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("#>-"));
    bar.set_prefix(label.to_string());
    let start = Instant::now();
    loop {
        let n = counter.load(Ordering::Relaxed);
        match goal {
            Goal::Seconds(s) => {
                bar.set_position(((start.elapsed().as_secs_f64() * 10.0) as u64).min(len));
                bar.set_message(format!("{s:.0}s{}", count(n, unit)));
            }
            Goal::Steps(_) => {
                bar.set_position(n.min(len));
                bar.set_message(unit.to_string());
            }
            Goal::Open => {
                bar.set_position(n);
                bar.set_message(unit.to_string());
                bar.tick();
            }
        }
        if wait(done, Duration::from_millis(200)) {
            break;
        }
    }
    bar.finish_and_clear();
}

/// ` N unit`, or nothing for a task that counts nothing (`unit` empty).
fn count(n: u64, unit: &str) -> String {
    if unit.is_empty() {
        String::new()
    } else {
        format!(" {n} {unit}")
    }
}

/// The plain line for a count `n` after `elapsed`.
fn plain_line(label: &str, goal: Goal, unit: &str, n: u64, elapsed: Duration) -> String {
    let e = elapsed.as_secs_f64();
    match goal {
        Goal::Seconds(s) => format!("{label}: {e:.0} s of {s:.0} s{}", count(n, unit).replacen(' ', ", ", 1)),
        Goal::Steps(total) => format!("{label}: {n}/{total} {unit} after {e:.0} s"),
        Goal::Open if unit.is_empty() => format!("{label}: running, {e:.0} s"),
        Goal::Open => format!("{label}: {n} {unit} after {e:.0} s"),
    }
}

fn plain_lines(label: &str, goal: Goal, unit: &str, counter: &AtomicU64, done: &AtomicBool) {
    let start = Instant::now();
    while !wait(done, PLAIN_EVERY) {
        eprintln!("{}", plain_line(label, goal, unit, counter.load(Ordering::Relaxed), start.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_where_the_task_is() {
        assert_eq!(plain_line("stress pipe", Goal::Seconds(30.0), "records", 7, Duration::from_secs(10)), "stress pipe: 10 s of 30 s, 7 records");
        assert_eq!(plain_line("stress store", Goal::Seconds(30.0), "", 0, Duration::from_secs(20)), "stress store: 20 s of 30 s");
        assert_eq!(plain_line("fault-sweep", Goal::Open, "faults", 3, Duration::from_secs(20)), "fault-sweep: 3 faults after 20 s");
        assert_eq!(plain_line("bench", Goal::Open, "", 0, Duration::from_secs(20)), "bench: running, 20 s");
        assert_eq!(plain_line("cases", Goal::Steps(13), "cases", 3, Duration::from_secs(20)), "cases: 3/13 cases after 20 s");
    }

    #[test]
    fn bars_only_on_a_tty_that_moves_its_cursor() {
        assert!(wants_bar(true, Some("xterm-256color")));
        assert!(wants_bar(true, Some("linux")));
        assert!(!wants_bar(true, Some("dumb")), "the QEMU guest's serial console");
        assert!(!wants_bar(true, None));
        assert!(!wants_bar(true, Some("")));
        assert!(!wants_bar(false, Some("xterm")), "a pipe or a CI log");
    }

    #[test]
    fn drop_stops_the_ticker_at_once() {
        let started = Instant::now();
        let p = Progress::with("t", Goal::Seconds(100.0), "ops", false);
        p.inc();
        p.set(5);
        assert_eq!(p.counter().load(Ordering::Relaxed), 5);
        drop(p);
        assert!(started.elapsed() < PLAIN_EVERY, "the ticker ended when the task did");
    }
}

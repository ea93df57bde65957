//! `cargo xtask qemu [--bench | --demo]`: boots Debian's 7.3.4 kernel (TCG)
//! with a busybox initramfs holding scull.ko and a static scull-tool.
//!
//! - Test mode (no option): loads the module with non-default parameters,
//!   checks them in /sys/module/scull/parameters, runs the conformance suite
//!   (with the Linux-only userfaultfd case), reads the /proc reports, then in
//!   the same boot `scull-tool stress --processes` (8 + 8 processes, 30 s per
//!   part), `scull-tool fuzz` (60 s, fixed seed, invalid user pointers
//!   included), `scull-tool fault-sweep` (the module's `scull_fail_at`
//!   countdown swept over a workload) and the open-versus-rmmod race loop
//!   (`race_loop!`); checks that rmmod is refused while a device is open,
//!   unloads, and checks the outstanding-allocation line and the kernel log.
//! - `--bench`: default parameters, 1.5 GiB of guest memory, a tmpfs
//!   baseline; prints `scull-tool bench`'s ratio and MB/s lines.
//! - `--demo`: runs `scull-tool demo` in the guest and prints it.
//! - `--debug-kernel`: the test mode's script on the debug kernel
//!   ([`crate::kdebug`]: KASAN, lockdep, kmemleak, failslab) with 2 vCPUs and
//!   2 GiB, plus a failslab-driven fault sweep and a kmemleak scan after
//!   unload; the console must show the checkers initialised and none of
//!   their reports. Its last line is `qemu-debug: N passed, M failed`.
//!
//! The last line printed is `qemu: N passed, M failed`: the suite's cases plus
//! the harness's own checks.

use std::process::Command;
use std::time::Instant;

use crate::{kdebug, kmod};
use crate::util::{self, apt_install, cargo, root, rustup_targets, sh, step, target_dir, Result};

const MUSL: &str = "x86_64-unknown-linux-musl";

/// Mounts and a console-friendly PATH: the start of every guest script.
const PRELUDE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
# The serial console is a tty that cannot redraw a line: plain progress lines.
export TERM=dumb
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
"#;

/// Kernel complaints anywhere in the log (the console shows only messages
/// below KERN_WARNING at loglevel=4, so every guest script ends with this).
const DMESG_SCAN: &str = r#"echo "== kernel log"
echo "HARNESS kernel-complaints $(dmesg | grep -cE 'Oops|BUG:|WARNING:|Kernel panic|Call Trace|refcount_t|UBSAN|KASAN|hung_task')"
dmesg | grep -E 'scull:'
dmesg | grep -A 30 -E 'Oops|BUG:|WARNING:|Kernel panic|refcount_t|UBSAN|KASAN|hung_task'
echo "HARNESS end"
poweroff -f
"#;

/// Test mode: conformance, stress, fuzz, fault sweep, unload.
/// The test boot's load parameters: all non-default, so sysfs and the
/// reports show load-time values (the race loop reloads with them too).
macro_rules! test_params {
    () => {
        "scull_quantum=1000 scull_qset=50 scull_p_buffer=1024 scull_nr_devs=4 scull_p_nr_devs=4 scull_max_size=67108864"
    };
}
const TEST_PARAMS: &str = test_params!();

/// Guest fragment: mode and value of every parameter LDD3 shows in sysfs
/// (plus scull_max_size); checked by [`check_sysfs`].
macro_rules! sysfs_params {
    () => {
        r#"echo "== /sys/module/scull/parameters"
for p in scull_major scull_minor scull_nr_devs scull_quantum scull_qset scull_p_nr_devs scull_p_buffer scull_max_size; do
  echo "HARNESS sysparam $p $(stat -c %a /sys/module/scull/parameters/$p 2>&1) $(cat /sys/module/scull/parameters/$p 2>&1)"
done
echo "HARNESS sysfs-quantum $(cat /sys/module/scull/parameters/scull_quantum)"
"#
    };
}

/// Guest fragment: the open-versus-rmmod race (an open that reaches the
/// cdev while rmmod frees it, caught by KASAN without `cdev.owner`). Openers
/// (`scull-tool open-loop`: open(2) and close(2), each pair followed by a
/// random pause averaging 8 times what the pair took, so that rmmod finds
/// the module unused often enough; see `open_loop`) loop on
/// their own device nodes in /tmp (mknod'd with the devices' numbers after
/// each load, so they survive the devtmpfs node removal that module exit does
/// before cdev_del, and every open during the unload reaches chrdev_open),
/// while the script unloads and reloads the module (at most 100 unloads or
/// 60 s, times $SLOW). With more than one vCPU the six openers share CPU 0
/// and the unloader has CPU 1 to itself: on the preemptible debug kernel an
/// opener loses CPU 0 at arbitrary points, so one that has taken its cdev
/// reference but not yet read `cdev->ops` can stay off the CPU while the
/// whole of module exit runs. Without `cdev.owner` that opener then reads
/// (and puts) the freed cdev, which KASAN reports; with it, cdev_get fails
/// once the module is going and the open gets ENXIO; and an open file holds
/// two module references instead of one, which the fragment checks directly.
/// busybox rmmod does not wait: a module in use fails with EBUSY, which is
/// counted. Ends with the module loaded
/// again with the test parameters; checked by [`check_race`] and by the
/// kernel-log scan.
macro_rules! race_loop {
    () => {
        concat!(
            r#"echo "== open vs rmmod race"
rm -f /tmp/race.stop /tmp/race.n.*
race_nodes() {
  for d in scull0 scull1 scullpipe0 sculluid; do
    set -- $(stat -c '%t %T' /dev/$d)
    rm -f /tmp/race.$d && mknod /tmp/race.$d c $((0x$1)) $((0x$2))
  done
}
race_nodes
exec 3</tmp/race.scull0
echo "HARNESS race-refcnt $(cat /sys/module/scull/refcnt)"
exec 3<&-
cpus=$(grep -c ^processor /proc/cpuinfo)
if [ $cpus -gt 1 ]; then on_openers="taskset 1"; unloader=2; else on_openers=""; unloader=1; fi
j=0
for d in scull0 scull1 scullpipe0 sculluid scull0 scullpipe0; do
  j=$((j+1))
  $on_openers /scull-tool open-loop /tmp/race.$d --until /tmp/race.stop --pause 8 --seed $j > /tmp/race.n.$j 2>/dev/null &
done
taskset -p $unloader $$ >/dev/null
unloads=0; busy=0; i=0; t0=$(date +%s)
while [ $unloads -lt 100 ] && [ $(( $(date +%s) - t0 )) -lt $((60*SLOW)) ]; do
  i=$((i+1))
  if rmmod scull 2>/dev/null; then
    unloads=$((unloads+1))
    insmod /scull.ko "#,
            test_params!(),
            r#" || { echo "HARNESS race-insmod-failed round $i"; break; }
    race_nodes
  else
    busy=$((busy+1))
  fi
done
touch /tmp/race.stop
wait
taskset -p $(printf '%x' $(( (1 << cpus) - 1 ))) $$ >/dev/null
grep -q '^scull ' /proc/modules || insmod /scull.ko "#,
            test_params!(),
            r#"
echo "HARNESS race rounds=$i unloads=$unloads busy=$busy cpus=$cpus opens=$(cat /tmp/race.n.* | tr '
' ' ')"
echo "HARNESS race-loaded $(grep -c '^scull ' /proc/modules)"
sleep 1
echo race > /dev/scull0 && echo "HARNESS race-after $(cat /dev/scull0)"
"#
        )
    };
}

/// Test mode: bad parameters, load, sysfs, conformance, stress, fuzz, fault
/// sweep, the open-vs-rmmod race (the debug boot runs it too).
const TEST: &str = concat!(
    r#"echo "== insmod with invalid parameters (must be refused)"
insmod /scull.ko scull_quantum=0
echo "HARNESS badparam-quantum rc=$?"
echo "HARNESS badparam-text $(dmesg | grep -m1 -o 'scull: bad parameter .*')"
insmod /scull.ko scull_qset=1000 scull_quantum=4000000
echo "HARNESS badparam-product rc=$?"
insmod /scull.ko scull_p_buffer=1
echo "HARNESS badparam-pbuffer rc=$?"
insmod /scull.ko scull_max_size=0
echo "HARNESS badparam-maxsize rc=$?"
echo "HARNESS badparam-loaded $(grep -c '^scull ' /proc/modules)"
echo "== insmod"
insmod /scull.ko "#,
    test_params!(),
    r#"
echo "HARNESS insmod rc=$?"
sleep 1
echo "HARNESS nodes $(ls /dev | grep -c '^scull')"
ls -l /dev/scull*
echo "HARNESS params $(cat /proc/scullmem | head -1)"
echo "HARNESS sysfs $(cd /sys/module/scull/parameters && ls | tr '\n' ' ')"
"#,
    sysfs_params!(),
    r#"echo "== conformance"
setsid cttyhack timeout $((360*SLOW)) /scull-tool conformance --target qemu
echo "HARNESS conformance rc=$?"
echo "== reports"
cat /proc/scullmem /proc/scullseq /proc/scullpipe
echo "HARNESS reports rc=$?"
echo "== stress"
timeout $((150*SLOW)) /scull-tool --target qemu stress --processes --writers 8 --readers 8 --seconds 30 --seed 20261121 2>/tmp/stress.err
echo "HARNESS stress rc=$?"
tr '\r' '\n' </tmp/stress.err | grep -v '^stress .*records$' | tail -20
echo "== fuzz"
timeout $((150*SLOW)) /scull-tool --target qemu fuzz --seconds 60 --seed 20261121
echo "HARNESS fuzz rc=$?"
echo "== fault sweep"
timeout $((120*SLOW)) /scull-tool --target qemu fault-sweep
echo "HARNESS fault-sweep rc=$?"
echo "HARNESS faults-armed $(cat /sys/module/scull/parameters/scull_fail_at)"
"#,
    race_loop!()
);

/// Test mode, last: rmmod refused while open, trim, unload.
const UNLOAD: &str = r#"echo "== rmmod"
exec 3</dev/scull0
rmmod scull
echo "HARNESS rmmod-while-open rc=$?"
exec 3<&-
for d in scull0 scull1 scull2 scull3 scullsingle sculluid scullwuid; do : > /dev/$d; done
setsid cttyhack sh -c ': > /dev/scullpriv'
echo "HARNESS outstanding-after-trim $(cat /sys/module/scull/parameters/scull_outstanding)"
rmmod scull
echo "HARNESS rmmod rc=$?"
"#;

/// Debug kernel, first: debugfs, and kmemleak's boot-time suspects cleared
/// (objects are reported once 5 s old, hence the pause before the scan).
const DEBUG_START: &str = r#"mount -t debugfs debugfs /sys/kernel/debug
echo "== kmemleak: clearing boot-time suspects"
sleep 6
echo scan > /sys/kernel/debug/kmemleak && echo clear > /sys/kernel/debug/kmemleak
echo "HARNESS kmemleak-clear rc=$?"
"#;

/// Debug kernel, before unload: the kernel's failslab drives the fault sweep.
const DEBUG_FAILSLAB: &str = r#"echo "== failslab sweep"
timeout $((120*SLOW)) /scull-tool --target qemu fault-sweep --injector failslab --max-k 5000
echo "HARNESS failslab-sweep rc=$?"
echo "HARNESS failslab-faults $(cat /sys/module/scull/parameters/scull_faults)"
"#;

/// Debug kernel, after unload: kmemleak scans (twice, 5 s apart, as its
/// documentation advises), the report, lockdep still on, the whole log.
const DEBUG_END: &str = r#"echo "== kmemleak scan"
sleep 6
echo scan > /sys/kernel/debug/kmemleak
sleep 6
echo scan > /sys/kernel/debug/kmemleak
echo "HARNESS kmemleak-scan rc=$?"
echo "== kmemleak report"
cat /sys/kernel/debug/kmemleak
echo "== kmemleak end"
echo "HARNESS kmemleak-objects $(grep -c 'unreferenced object' /sys/kernel/debug/kmemleak)"
echo "HARNESS kmemleak-scull $(grep -c scull /sys/kernel/debug/kmemleak)"
echo "HARNESS lockdep $(grep -E '^ *debug_locks:' /proc/lockdep_stats | tr -s ' ')"
echo "== dmesg"
dmesg
echo "== dmesg end"
"#;

/// Bench mode: LDD3's default geometry, a tmpfs baseline.
const BENCH: &str = r#"echo "== insmod (default parameters)"
insmod /scull.ko
echo "HARNESS insmod rc=$?"
mkdir -p /bench && mount -t tmpfs -o size=320m tmpfs /bench
echo "HARNESS tmpfs rc=$?"
echo "== bench"
timeout 1500 /scull-tool --target qemu bench --baseline-dir /bench 2>/tmp/bench.err
echo "HARNESS bench rc=$?"
tr '\r' '\n' </tmp/bench.err | grep -iE 'error|panic' | tail -5
timeout 600 /scull-tool --target qemu scale-reference --baseline-dir /bench
echo "HARNESS scale-reference rc=$?"
echo "== default-geometry data checks (page-backed quanta)"
dd if=/scull-tool of=/dev/scull0 bs=65536 2>/dev/null && cmp /scull-tool /dev/scull0
echo "HARNESS page-quanta-cmp rc=$?"
timeout 120 /scull-tool --target qemu stress --processes --writers 4 --readers 4 --seconds 10 --seed 20261201 2>/tmp/stress.err
echo "HARNESS page-quanta-stress rc=$?"
tr '\r' '\n' </tmp/stress.err | grep -v '^stress .*records$' | tail -5
umount /bench
rmmod scull
echo "HARNESS rmmod rc=$?"
"#;

/// Demo mode.
const DEMO: &str = r#"echo "== insmod (default parameters)"
insmod /scull.ko
echo "HARNESS insmod rc=$?"
echo "== demo"
setsid cttyhack timeout 120 /scull-tool --target qemu demo
echo "HARNESS demo rc=$?"
echo "== demo end"
rmmod scull
echo "HARNESS rmmod rc=$?"
"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Test,
    Debug,
    Bench,
    Demo,
}

/// The kernel a mode boots, and what differs with it.
struct Kernel {
    image: std::path::PathBuf,
    ko: std::path::PathBuf,
    name: &'static str,
    /// modinfo's vermagic starts with this.
    vermagic: String,
    smp: u32,
    /// Factor on the guest script's timeouts (`$SLOW`).
    slow: u32,
    /// Console log level and friends.
    append: &'static str,
}

fn kernel(mode: Mode) -> Result<Kernel> {
    Ok(if mode == Mode::Debug {
        let (image, ko) = kdebug::build()?;
        Kernel {
            image,
            ko,
            name: "the debug 7.3.4 kernel",
            vermagic: format!("{} SMP ", kdebug::KREL),
            smp: 2,
            // KASAN and lockdep on TCG with two busy host cores.
            slow: 4,
            // loglevel=5: the checkers' reports (KERN_ERR, KERN_WARNING) are on
            // the console as they happen. TCG vCPUs on busy host cores stall
            // long enough for RCU's 21 s stall warning: give it the maximum.
            append: "loglevel=5 rcupdate.rcu_cpu_stall_timeout=300",
        }
    } else {
        Kernel {
            ko: kmod::build()?,
            image: kmod::vmlinuz()?,
            name: "Debian's 7.3.4 kernel",
            vermagic: format!("{} ", kmod::KREL),
            smp: 1,
            slow: 1,
            append: "loglevel=4",
        }
    })
}

/// Checks counted toward the closing `qemu: N passed, M failed` line.
struct Checks {
    pass: usize,
    fail: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.pass += 1;
            println!("ok   harness: {what}");
        } else {
            self.fail += 1;
            println!("FAIL harness: {what}");
        }
    }
}

/// `HARNESS key...` value from the console.
fn harness(console: &str, key: &str) -> Option<String> {
    console.lines().find_map(|l| l.trim_end().strip_prefix(&format!("HARNESS {key}")).map(str::trim).map(str::to_owned))
}

/// Builds scull.ko and the static tool, packs the initramfs with `script`
/// as /init, boots, and returns the console text.
fn boot(mode: Mode, script: &str, mem_mib: u32, timeout_s: u32, checks: &mut Checks) -> Result<String> {
    apt_install(&["qemu-system-x86", "busybox-static", "cpio", "gzip"])?;
    rustup_targets(&[MUSL])?;
    let k = kernel(mode)?;
    let ko = &k.ko;

    if matches!(mode, Mode::Test | Mode::Debug) {
        let info = kmod::modinfo(ko)?;
        print!("{info}");
        let params = ["scull_major", "scull_minor", "scull_nr_devs", "scull_quantum", "scull_qset", "scull_p_nr_devs", "scull_p_buffer", "scull_max_size"];
        let has = |p: &str| info.lines().any(|l| l.starts_with("parm:") && l.contains(&format!("{p}:")));
        checks.check(params.iter().all(|p| has(p)), "modinfo lists the 7 LDD3 parameters and scull_max_size");
        checks.check(["scull_fail_at", "scull_faults", "scull_outstanding"].iter().all(|p| has(p)), "modinfo lists the fault-injection and counter parameters");
        checks.check(info.contains(&format!("vermagic:       {}", k.vermagic)), &format!("vermagic is {}", k.vermagic.trim_end()));
    }

    step("qemu: static scull-tool (musl)");
    util::run(cargo().args(["build", "--release", "-p", "scull-tool", "--target", MUSL]))?;
    let tool = target_dir().join(MUSL).join("release/scull-tool");

    step("qemu: initramfs");
    let q = target_dir().join("qemu");
    let ir = q.join("initramfs");
    if ir.exists() {
        std::fs::remove_dir_all(&ir).map_err(|e| e.to_string())?;
    }
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(ir.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::copy("/bin/busybox", ir.join("bin/busybox")).map_err(|e| format!("busybox: {e}"))?;
    std::fs::copy(ko, ir.join("scull.ko")).map_err(|e| e.to_string())?;
    std::fs::copy(&tool, ir.join("scull-tool")).map_err(|e| e.to_string())?;
    std::fs::write(ir.join("init"), format!("{PRELUDE}SLOW={}\n{script}{DMESG_SCAN}", k.slow)).map_err(|e| e.to_string())?;
    std::fs::write(ir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\nother:x:1001:1001:other:/:/bin/sh\n").map_err(|e| e.to_string())?;
    sh(&format!("chmod 755 {0}/init {0}/bin/busybox {0}/scull-tool && cd {0} && find . | cpio -o -H newc --quiet | gzip -1 > {1}/initrd.gz", ir.display(), q.display()))?;

    step(&format!("qemu: booting {} (TCG, {} vCPU, {mem_mib} MiB, at most {timeout_s} s)", k.name, k.smp));
    let log = q.join(match mode {
        Mode::Test => "console.log",
        Mode::Debug => "debug-console.log",
        Mode::Bench => "bench-console.log",
        Mode::Demo => "demo-console.log",
    });
    let t0 = Instant::now();
    let mut cmd = Command::new("timeout");
    cmd.args([&timeout_s.to_string(), "qemu-system-x86_64", "-accel", "tcg", "-m", &mem_mib.to_string(), "-smp", &k.smp.to_string(), "-nographic", "-no-reboot"]);
    if mode == Mode::Bench {
        // Touch all guest RAM up front: otherwise the first guest write to each
        // page costs a host page fault, which the first big run pays and the
        // later ones do not.
        cmd.arg("-mem-prealloc");
    }
    let status = crate::util::progress(|| cmd
        .arg("-kernel")
        .arg(&k.image)
        .arg("-initrd")
        .arg(q.join("initrd.gz"))
        .args(["-append", &format!("console=ttyS0 panic=-1 quiet {} rdinit=/init", k.append)])
        .stdin(std::process::Stdio::null())
        .output())
        .map_err(|e| format!("qemu: {e}"))?;
    let console = String::from_utf8_lossy(&status.stdout).into_owned();
    std::fs::write(&log, &console).map_err(|e| e.to_string())?;
    if matches!(mode, Mode::Test | Mode::Debug) {
        print!("{console}");
    }
    eprintln!("qemu: guest ran {:.0} s; console log in {} ({:?})", t0.elapsed().as_secs_f64(), log.display(), status.status);

    checks.check(harness(&console, "insmod rc=").as_deref() == Some("0"), "insmod");
    checks.check(harness(&console, "rmmod rc=").as_deref() == Some("0"), "rmmod");
    checks.check(console.contains("scull: unloaded, 0 allocations outstanding"), "0 outstanding allocations at unload");
    checks.check(harness(&console, "end").is_some(), "the guest ran to the end");
    let bad: Vec<&str> = console
        .lines()
        .filter(|l| !l.contains("HARNESS") && ["Oops", "BUG:", "WARNING:", "Kernel panic", "Call Trace"].iter().any(|p| l.contains(p)))
        .collect();
    checks.check(bad.is_empty(), &format!("no Oops/BUG/WARNING/panic on the console {bad:?}"));
    checks.check(harness(&console, "kernel-complaints").as_deref() == Some("0"), "dmesg has no Oops/BUG/WARNING/Call Trace/refcount/UBSAN/hung task");
    Ok(console)
}

/// `cargo xtask qemu [--bench | --demo | --debug-kernel]`.
pub fn run(args: &[String]) -> Result {
    let mode = match args.first().map(String::as_str) {
        None | Some("--test") => Mode::Test,
        Some("--debug-kernel") if args.get(1).map(String::as_str) == Some("--race") => return race_only(),
        Some("--debug-kernel") => Mode::Debug,
        Some("--bench") => Mode::Bench,
        Some("--demo") => Mode::Demo,
        Some(other) => return Err(format!("qemu: unknown option `{other}` (--bench, --demo, --debug-kernel [--race], or nothing for the tests)")),
    };
    let t0 = Instant::now();
    let mut c = Checks { pass: 0, fail: 0 };
    match mode {
        Mode::Test => test(&mut c)?,
        Mode::Debug => debug(&mut c)?,
        Mode::Bench => bench(&mut c)?,
        Mode::Demo => demo(&mut c)?,
    }
    let _ = root();
    let name = if mode == Mode::Debug { "qemu-debug" } else { "qemu" };
    crate::util::note(&format!("{name}: {:.0} s in all", t0.elapsed().as_secs_f64()));
    println!("{name}: {} passed, {} failed", c.pass, c.fail);
    if c.fail == 0 {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

fn test(c: &mut Checks) -> Result {
    let console = boot(Mode::Test, &format!("{TEST}{UNLOAD}"), 1024, 480, c)?;
    test_checks(c, &console);
    Ok(())
}

/// `qemu --debug-kernel --race`: only the open-versus-rmmod race loop on the
/// debug kernel (two minutes instead of ten), then the checkers' verdicts;
/// for reproducing the use-after-free with `cdev.owner` unset (docs/linux.md).
fn race_only() -> Result {
    let script = concat!(
        r#"mount -t debugfs debugfs /sys/kernel/debug
echo "== insmod"
insmod /scull.ko "#,
        test_params!(),
        r#"
echo "HARNESS insmod rc=$?"
"#,
        race_loop!(),
        r#"rmmod scull
echo "HARNESS rmmod rc=$?"
echo "HARNESS lockdep $(grep -E '^ *debug_locks:' /proc/lockdep_stats | tr -s ' ')"
echo "== dmesg"
dmesg
echo "== dmesg end"
"#
    );
    let mut c = Checks { pass: 0, fail: 0 };
    let console = boot(Mode::Debug, script, 2048, 900, &mut c)?;
    check_race(&console, &mut c);
    c.check(console.contains("KernelAddressSanitizer initialized (generic)"), "KASAN (generic) initialised (boot log)");
    c.check(harness(&console, "lockdep").as_deref() == Some("debug_locks: 1"), "lockdep still on at the end (no splat switched it off)");
    check_reports(&console, &mut c);
    println!("qemu-debug-race: {} passed, {} failed", c.pass, c.fail);
    if c.fail == 0 {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

/// What a kernel checker prints when it finds something, by checker.
const REPORTS: &[(&str, &[&str])] = &[
    ("KASAN", &["BUG: KASAN", "KASAN:"]),
    ("lockdep", &["possible circular locking", "WARNING: possible", "inconsistent lock state", "possible recursive locking", "DEBUG_LOCKS_WARN_ON", "lockdep is turned off", "suspicious RCU usage"]),
    ("DEBUG_ATOMIC_SLEEP", &["sleeping function called from invalid context", "BUG: scheduling while atomic"]),
    ("kmemleak", &["unreferenced object", "kmemleak: Kernel memory leak detector disabled"]),
    ("DEBUG_LIST", &["list_add corruption", "list_del corruption"]),
    ("hung task / RCU stall", &["blocked for more than", "rcu_preempt detected stalls", "self-detected stall"]),
    ("WARN/BUG/Oops", &["WARNING:", "BUG:", "Oops", "Call Trace", "Kernel panic", "refcount_t", "UBSAN"]),
];

/// No line of any checker's report on the console.
fn check_reports(console: &str, c: &mut Checks) {
    for (checker, pats) in REPORTS {
        let hits: Vec<&str> = console.lines().filter(|l| !l.contains("HARNESS") && pats.iter().any(|p| l.contains(p))).take(5).collect();
        c.check(hits.is_empty(), &format!("no {checker} report on the console {hits:?}"));
    }
}

/// The debug kernel: the test script plus failslab, kmemleak and the log.
fn debug(c: &mut Checks) -> Result {
    let script = format!("{DEBUG_START}{TEST}{DEBUG_FAILSLAB}{UNLOAD}{DEBUG_END}");
    let console = boot(Mode::Debug, &script, 2048, 3000, c)?;
    test_checks(c, &console);
    let h = |k: &str| harness(&console, k);
    c.check(console.contains("KernelAddressSanitizer initialized (generic)"), "KASAN (generic) initialised (boot log)");
    c.check(console.contains("Lock dependency validator"), "lockdep initialised (boot log)");
    c.check(console.contains("kmemleak: Kernel memory leak detector initialized"), "kmemleak initialised (boot log)");
    c.check(h("kmemleak-clear rc=").as_deref() == Some("0"), "kmemleak: boot-time suspects scanned and cleared before insmod");
    c.check(
        h("failslab-sweep rc=").as_deref() == Some("0") && console.lines().any(|l| l.trim_end() == "failslab-sweep: 0 lost, 0 corrupt, 0 leaked"),
        "failslab sweep (the k-th slab allocation of the tool's syscalls fails): 0 lost, 0 corrupt, 0 leaked",
    );
    c.check(h("kmemleak-scan rc=").as_deref() == Some("0"), "kmemleak scans ran after unload");
    c.check(h("kmemleak-objects").as_deref() == Some("0"), "kmemleak reports no unreferenced object");
    c.check(h("kmemleak-scull").as_deref() == Some("0"), "kmemleak's report does not mention scull");
    c.check(h("lockdep").as_deref() == Some("debug_locks: 1"), "lockdep still on at the end (no splat switched it off)");
    check_reports(&console, c);
    Ok(())
}

/// The test script's checks (the stock and the debug kernel run it alike).
fn test_checks(c: &mut Checks, console: &str) {
    let h = |k: &str| harness(console, k);
    c.check(
        ["badparam-quantum rc=", "badparam-product rc=", "badparam-pbuffer rc=", "badparam-maxsize rc="].iter().all(|k| h(k).is_some_and(|v| v != "0"))
            && h("badparam-loaded").as_deref() == Some("0"),
        "insmod refuses quantum=0, a quantum*qset overflowing int, a 1-byte pipe and scull_max_size=0",
    );
    // scull-core's text, the same line scull.sys logs for the registry value (ntsim checks that side).
    c.check(
        h("badparam-text").as_deref() == Some("scull: bad parameter scull_quantum=0; not loading"),
        "the refused insmod names the bad parameter",
    );
    check_sysfs(console, c);
    check_race(console, c);
    c.check(h("nodes").and_then(|n| n.parse::<u32>().ok()) == Some(12), "devtmpfs made the 12 /dev/scull* nodes");
    c.check(h("params").as_deref() == Some("scullmem v1 quantum=1000 qset=50 max_size=67108864"), "module parameters in effect (/proc/scullmem header)");
    c.check(
        h("sysfs").is_some_and(|s| ["scull_fail_at", "scull_faults", "scull_outstanding"].iter().all(|p| s.split(' ').any(|w| w == *p))),
        "scull_fail_at, scull_faults and scull_outstanding are in /sys/module/scull/parameters",
    );
    c.check(h("reports rc=").as_deref() == Some("0"), "reports readable");
    c.check(console.contains("scullpipe v1 buffer="), "the /proc/scullpipe report");
    c.check(h("stress rc=").as_deref() == Some("0") && console.lines().any(|l| l.trim_end() == "stress: 0 lost, 0 corrupt"), "stress (8 writer + 8 reader processes, 30 s per part): 0 lost, 0 corrupt");
    c.check(
        h("fuzz rc=").as_deref() == Some("0") && console.contains("fuzz: devices still work after seed 20261121") && console.contains("all refused with EFAULT"),
        "fuzz (60 s, seed 20261121, invalid user pointers included): the devices still work",
    );
    c.check(h("fault-sweep rc=").as_deref() == Some("0") && console.lines().any(|l| l.trim_end() == "fault-sweep: 0 lost, 0 corrupt, 0 leaked"), "fault sweep: ENOMEM or short counts only, 0 lost, 0 corrupt, 0 leaked");
    c.check(h("faults-armed").as_deref() == Some("0"), "fault injection disarmed after the sweep");
    c.check(h("rmmod-while-open rc=").is_some_and(|v| v != "0"), "rmmod refused while /dev/scull0 is open");
    c.check(h("outstanding-after-trim").as_deref() == Some("0"), "scull_outstanding is 0 once every device is trimmed (before unload)");
    c.check(h("conformance rc=").as_deref() == Some("0"), "conformance suite exit status");

    // The suite's own closing line: `qemu: N passed, M failed, K skipped`.
    let suite = console.lines().rev().find_map(|l| {
        let l = l.trim_end();
        let rest = l.strip_prefix("qemu: ")?;
        let nums: Vec<usize> = rest.split(", ").filter_map(|p| p.split(' ').next()?.parse().ok()).collect();
        (nums.len() == 3).then(|| (nums[0], nums[1], nums[2]))
    });
    match suite {
        Some((p, f, s)) => {
            eprintln!("suite: {p} passed, {f} failed, {s} skipped");
            c.pass += p;
            c.fail += f;
        }
        None => c.check(false, "the conformance summary line in the console"),
    }
}

/// The sysfs fragment: each parameter is 0444 and shows its load-time value
/// (`TEST_PARAMS`, or 0 for scull_major and scull_minor).
fn check_sysfs(console: &str, c: &mut Checks) {
    let given = |p: &str| TEST_PARAMS.split(' ').find_map(|kv| kv.strip_prefix(p)?.strip_prefix('=')).unwrap_or("0");
    let mut wrong = Vec::new();
    for p in ["scull_major", "scull_minor", "scull_nr_devs", "scull_quantum", "scull_qset", "scull_p_nr_devs", "scull_p_buffer", "scull_max_size"] {
        let want = format!("444 {}", given(p));
        let got = harness(console, &format!("sysparam {p} "));
        if got.as_deref() != Some(want.as_str()) {
            wrong.push(format!("{p}: {got:?}, want {want:?}"));
        }
    }
    c.check(wrong.is_empty(), &format!("/sys/module/scull/parameters: the 8 parameters are 0444 with their load-time values {wrong:?}"));
    c.check(harness(console, "sysfs-quantum").as_deref() == Some("1000"), "cat /sys/module/scull/parameters/scull_quantum prints the load-time 1000");
}

/// The race fragment: the module was unloaded at least 5 times while the
/// openers ran, every reload worked, and the devices work after it.
fn check_race(console: &str, c: &mut Checks) {
    let line = harness(console, "race ").unwrap_or_default();
    let unloads = line.split(' ').find_map(|kv| kv.strip_prefix("unloads=")?.parse::<u32>().ok()).unwrap_or(0);
    c.check(
        unloads >= 5 && harness(console, "race-insmod-failed").is_none() && harness(console, "race-loaded").as_deref() == Some("1"),
        &format!("open vs rmmod race: unloaded and reloaded under concurrent opens ({line})"),
    );
    c.check(harness(console, "race-after").as_deref() == Some("race"), "the devices work after the race loop");
    // An open file pins the module twice: through its file_operations and,
    // since `cdev.owner` is set (the open-versus-rmmod fix), through the cdev it holds.
    c.check(
        harness(console, "race-refcnt").as_deref() == Some("2"),
        &format!("one open file holds 2 module references, the fops' and the cdev's (refcnt {:?})", harness(console, "race-refcnt")),
    );
}

fn section<'a>(console: &'a str, from: &str, to: &str) -> Vec<&'a str> {
    console
        .lines()
        .skip_while(|l| !l.starts_with(from))
        .skip(1)
        .take_while(|l| !l.starts_with(to))
        .filter(|l| !l.starts_with("HARNESS"))
        .collect()
}

fn bench(c: &mut Checks) -> Result {
    // 256 MiB in scull0 at the scaling step, 64 MiB in the tmpfs, the guest.
    let console = boot(Mode::Bench, BENCH, 1536, 1800, c)?;
    c.check(harness(&console, "tmpfs rc=").as_deref() == Some("0"), "tmpfs mounted for the baseline");
    c.check(harness(&console, "bench rc=").as_deref() == Some("0"), "scull-tool bench exit status");
    // LDD3's default geometry puts quanta and pipe buffers on whole pages
    // (scull-linux/kmem.rs), which the test boot's geometry does not reach.
    c.check(harness(&console, "page-quanta-cmp rc=").as_deref() == Some("0"), "a file written to scull0 with default geometry reads back equal");
    c.check(harness(&console, "page-quanta-stress rc=").as_deref() == Some("0"), "stress with default geometry: nothing lost or corrupt");
    println!("== scull-tool bench in the QEMU guest (TCG, 1 vCPU; kernel 7.3.4; scull.ko with LDD3's default quantum 4000, qset 1000)");
    for l in section(&console, "== bench", "== kernel log") {
        println!("{}", l.trim_end());
    }
    for n in ["scull_vs_tmpfs_write", "scull_vs_tmpfs_read", "pipe_vs_pipe2", "scale_256m_vs_1m", "scull_vs_memory", "scull_vs_fresh_memory", "scale_vs_memory"] {
        c.check(console.lines().any(|l| l.starts_with(&format!("ratio {n} = "))), &format!("ratio {n} printed"));
    }
    Ok(())
}

fn demo(c: &mut Checks) -> Result {
    let console = boot(Mode::Demo, DEMO, 512, 300, c)?;
    c.check(harness(&console, "demo rc=").as_deref() == Some("0"), "scull-tool demo exit status");
    println!("== scull-tool demo --target qemu (in the QEMU guest)");
    for l in section(&console, "== demo", "== demo end") {
        println!("{}", l.trim_end());
    }
    Ok(())
}

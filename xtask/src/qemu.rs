//! `cargo xtask qemu`: boots Debian's 7.3.4 kernel (TCG) with a busybox
//! initramfs holding scull.ko and a static scull-tool, loads the module with
//! non-default parameters, runs the conformance suite, reads the /proc
//! reports, unloads and checks the outstanding-allocation line.
//!
//! The last line printed is `qemu: N passed, M failed`: the suite's cases plus
//! the harness's own checks (modinfo, insmod, nodes, reports, rmmod, 0
//! outstanding, a console free of Oops/BUG/WARNING/panic).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::kmod;
use crate::util::{apt_install, cargo, root, run, rustup_targets, step, target_dir, Result};

const MUSL: &str = "x86_64-unknown-linux-musl";

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
echo "== insmod"
insmod /scull.ko scull_quantum=1000 scull_qset=50 scull_p_buffer=1024 scull_nr_devs=4 scull_p_nr_devs=4
echo "HARNESS insmod rc=$?"
sleep 1
echo "HARNESS nodes $(ls /dev | grep -c '^scull')"
ls -l /dev/scull*
echo "HARNESS params $(cat /proc/scullmem | head -1)"
echo "== conformance"
setsid cttyhack timeout 360 /scull-tool conformance --target qemu
echo "HARNESS conformance rc=$?"
echo "== reports"
cat /proc/scullmem /proc/scullseq /proc/scullpipe
echo "HARNESS reports rc=$?"
echo "== rmmod"
rmmod scull
echo "HARNESS rmmod rc=$?"
dmesg | grep 'scull:'
echo "HARNESS end"
poweroff -f
"#;

fn sh(script: &str) -> Result {
    run(Command::new("bash").args(["-euo", "pipefail", "-c", script]))
}

pub fn qemu(_args: &[String]) -> Result {
    let t0 = Instant::now();
    apt_install(&["qemu-system-x86", "busybox-static", "cpio", "gzip"])?;
    rustup_targets(&[MUSL])?;
    let ko = kmod::build()?;
    let vmlinuz = kmod::vmlinuz()?;

    let mut pass = 0usize;
    let mut fail = 0usize;
    let mut check = |ok: bool, what: &str| {
        if ok {
            pass += 1;
            println!("ok   harness: {what}");
        } else {
            fail += 1;
            println!("FAIL harness: {what}");
        }
    };

    // modinfo runs in the chroot (kmod is installed there).
    let cr = kmod::chroot();
    std::fs::copy(&ko, cr.join("build/scull.ko")).map_err(|e| format!("copy: {e}"))?;
    let info = Command::new("chroot")
        .arg(&cr)
        .args(["/usr/sbin/modinfo", "/build/scull.ko"])
        .output()
        .map_err(|e| format!("modinfo: {e}"))?;
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    print!("{info}");
    let params = ["scull_major", "scull_minor", "scull_nr_devs", "scull_quantum", "scull_qset", "scull_p_nr_devs", "scull_p_buffer"];
    check(params.iter().all(|p| info.lines().any(|l| l.starts_with("parm:") && l.contains(&format!("{p}:")))), "modinfo lists the 7 LDD3 parameters");
    check(info.contains("vermagic:       7.3.4+deb13-amd64 "), "vermagic is 7.3.4+deb13-amd64");

    step("qemu: static scull-tool (musl)");
    run(cargo().args(["build", "--release", "-p", "scull-tool", "--target", MUSL]))?;
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
    std::fs::copy(&ko, ir.join("scull.ko")).map_err(|e| e.to_string())?;
    std::fs::copy(&tool, ir.join("scull-tool")).map_err(|e| e.to_string())?;
    std::fs::write(ir.join("init"), INIT).map_err(|e| e.to_string())?;
    std::fs::write(ir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\nother:x:1001:1001:other:/:/bin/sh\n").map_err(|e| e.to_string())?;
    sh(&format!("chmod 755 {0}/init {0}/bin/busybox {0}/scull-tool && cd {0} && find . | cpio -o -H newc --quiet | gzip -1 > {1}/initrd.gz", ir.display(), q.display()))?;

    step("qemu: booting Debian's 7.3.4 kernel (TCG)");
    let log = q.join("console.log");
    let status = Command::new("timeout")
        .args(["420", "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(q.join("initrd.gz"))
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("qemu: {e}"))?;
    let console = String::from_utf8_lossy(&status.stdout).into_owned();
    std::fs::write(&log, &console).map_err(|e| e.to_string())?;
    print!("{console}");
    eprintln!("qemu: console log in {} ({:?})", log.display(), status.status);

    let harness = |key: &str| console.lines().find_map(|l| l.trim_end().strip_prefix(&format!("HARNESS {key}")).map(str::trim).map(str::to_owned));
    check(harness("insmod rc=").as_deref() == Some("0"), "insmod with non-default parameters");
    check(harness("nodes").and_then(|n| n.parse::<u32>().ok()) == Some(12), "devtmpfs made the 12 /dev/scull* nodes");
    check(harness("params").as_deref() == Some("scullmem v1 quantum=1000 qset=50"), "module parameters in effect (/proc/scullmem header)");
    check(harness("reports rc=").as_deref() == Some("0"), "reports readable");
    check(console.contains("scullpipe v1 buffer="), "the /proc/scullpipe report");
    check(harness("rmmod rc=").as_deref() == Some("0"), "rmmod");
    check(console.contains("scull: unloaded, 0 allocations outstanding"), "0 outstanding allocations at unload");
    check(harness("end").is_some(), "the guest ran to the end");
    let bad: Vec<&str> = console
        .lines()
        .filter(|l| ["Oops", "BUG:", "WARNING:", "Kernel panic"].iter().any(|p| l.contains(p)))
        .collect();
    check(bad.is_empty(), &format!("no Oops/BUG/WARNING/panic on the console {bad:?}"));

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
            pass += p;
            fail += f;
        }
        None => {
            fail += 1;
            println!("FAIL harness: no conformance summary line in the console");
        }
    }
    let _ = root();
    eprintln!("qemu: {:.0} s in all", t0.elapsed().as_secs_f64());
    println!("qemu: {pass} passed, {fail} failed");
    if fail == 0 && Path::new(&log).exists() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

//! `cargo xtask <command>`: the project's automation. See README.md and docs/testing.md.

mod host;
mod inf;
mod kdebug;
mod kmod;
mod qemu;
mod util;
mod wdm;
mod wine;

use util::{step, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

  demo        run the demo end to end (model device)
  test        run every test (unit, property, fault injection, loom, conformance
              on the model, scull.sys under Wine, the Linux module in QEMU on
              Debian's kernel and on the debug kernel)
  bench-core  scull-core store vs memcpy benchmark (prints ratio lines)
  bench       every benchmark (core, and the devices on each target)
  conformance run the conformance suite against the host model
  wdm         cross-build scull.sys (+ scull.pdb) into target/wdm/
  wine        load scull.sys in Wine and run the conformance suite there (`wine demo`: the demo)
  inf-check   check inf/scull.inx (sections, keys, isolation rules) [FILE]
  kmod        build scull.ko for Debian's 7.3.4 kernel (trixie chroot, cached)
              (`kmod --debug-kernel`: the KASAN/lockdep/kmemleak kernel and scull.ko for it)
  qemu        boot Debian's 7.3.4 kernel in QEMU and run the suite against scull.ko
              (`qemu --debug-kernel`: the same on the debug kernel, 2 vCPUs, failslab, kmemleak)
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("help");
    let rest = if args.is_empty() { &[][..] } else { &args[1..] };
    let r: Result = match cmd {
        "demo" => demo(rest),
        "test" => test(rest),
        "bench-core" => host::bench_core(),
        "bench" => bench(rest),
        "conformance" => host::conformance(),
        "wdm" => wdm::run(rest),
        "wine" => wine::run_suite(rest),
        "inf-check" => inf::main(rest),
        "kmod" => kmod::kmod(rest),
        "qemu" => qemu::qemu(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    if let Err(e) = r {
        eprintln!("xtask {cmd}: error: {e}");
        std::process::exit(1);
    }
}

fn demo(_args: &[String]) -> Result {
    host::demo()?;
    step("demo: scull.sys under Wine");
    wine::demo()?;
    step("demo: scull.ko in QEMU");
    qemu::qemu(&["--demo".into()])
}

fn bench(_args: &[String]) -> Result {
    host::bench_core()?;
    step("bench: the Linux module in QEMU");
    qemu::qemu(&["--bench".into()])?;
    step("bench: scull.sys under Wine (reference figures only)");
    wine::bench()
}

fn test(_args: &[String]) -> Result {
    host::test()?;
    step("test: the Windows driver under Wine");
    wine::run_suite(&[])?;
    step("test: the Linux module in QEMU");
    qemu::qemu(&[])?;
    step("test: the Linux module in QEMU on the debug kernel (KASAN, lockdep, kmemleak, failslab; 2 vCPUs)");
    qemu::qemu(&["--debug-kernel".into()])
}

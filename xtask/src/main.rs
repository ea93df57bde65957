//! `cargo xtask <command>`: the project's automation. See README.md and docs/testing.md.

mod cargowdk;
mod host;
mod inf;
mod kdebug;
mod kmod;
mod ntsim;
mod qemu;
mod util;
mod wdkcheck;
mod wdm;
mod wine;

use util::Result;

const USAGE: &str = "\
usage: cargo xtask [-v] <command>

  -v, --verbose  stream every command's output (default: one line per step,
                 the output in target/logs/<step>.log, shown when it fails)

  demo        run the demo end to end (model device)
  test        run every test (unit, property, fault injection, loom, conformance
              on the model, scull.sys under Wine, the Linux module in QEMU on
              Debian's kernel and on the debug kernel)
  bench-core  scull-core store vs memcpy benchmark (prints ratio lines)
  bench       every benchmark (core, and the devices on each target)
  conformance run the conformance suite against the host model
  wdm         cross-build scull.sys (+ scull.pdb) into target/wdm/
  wdk-check   build, clippy and link the wdk-sys path of scull.sys on Linux (patched
              wdk-build copy, mingw-w64 headers as the WDK); last line: wdk-check: ok
  wine        load scull.sys in Wine and run the conformance suite there (`wine demo`: the demo)
  ntsim       load the release scull.sys under ntsim (a miniature NT kernel in a Linux
              process) and run the suite, stress and fuzz there
  inf-check   check scull-wdm/scull.inx (sections, keys, isolation rules) [FILE];
              without FILE also the layout `cargo wdk build` needs (names, metadata)
  kmod        build scull.ko for Debian's 7.3.4 kernel (trixie chroot, cached)
              (`kmod --debug-kernel`: the KASAN/lockdep/kmemleak kernel and scull.ko for it)
  qemu        boot Debian's 7.3.4 kernel in QEMU and run the suite against scull.ko
              (`qemu --debug-kernel`: the same on the debug kernel, 2 vCPUs, failslab, kmemleak;
              `qemu --debug-kernel --race`: only the open-versus-rmmod race loop there)
";

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "-v" || a == "--verbose") {
        args.remove(i);
        util::set_verbose(true);
    }
    let cmd = args.first().map(String::as_str).unwrap_or("help");
    let rest = if args.is_empty() { &[][..] } else { &args[1..] };
    let r: Result = match cmd {
        "demo" => demo(rest),
        "test" => test(rest),
        "bench-core" => host::bench_core(),
        "bench" => bench(rest),
        "conformance" => host::conformance(),
        "wdm" => wdm::run(rest),
        "wdk-check" => wdkcheck::run_check(rest),
        "wine" => wine::run_suite(rest),
        "ntsim" => ntsim::run(rest),
        "inf-check" => inf::main(rest),
        "kmod" => kmod::kmod(rest),
        "qemu" => qemu::qemu(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    util::end_step(r.is_ok());
    if let Err(e) = r {
        eprintln!("xtask {cmd}: error: {e}");
        std::process::exit(1);
    }
}

fn demo(_args: &[String]) -> Result {
    util::section("demo: the model device (scull-core on the host, no driver)");
    host::demo()?;
    util::section("demo: scull.sys under Wine");
    wine::demo()?;
    util::section("demo: scull.ko in QEMU");
    qemu::qemu(&["--demo".into()])
}

fn bench(_args: &[String]) -> Result {
    host::bench_core()?;
    util::section("bench: the Linux module in QEMU");
    qemu::qemu(&["--bench".into()])?;
    util::section("bench: scull.sys under Wine (reference figures only)");
    wine::bench()
}

fn test(_args: &[String]) -> Result {
    host::test()?;
    util::section("test: the wdk-sys path of the Windows driver (wdk-check)");
    wdkcheck::run_check(&[])?;
    util::section("test: the release Windows driver under ntsim (a native I/O manager in a Linux process)");
    ntsim::run(&[])?;
    util::section("test: the Windows driver under Wine");
    wine::run_suite(&[])?;
    util::section("test: the Linux module in QEMU");
    qemu::qemu(&[])?;
    util::section("test: the Linux module in QEMU on the debug kernel (KASAN, lockdep, kmemleak, failslab; 2 vCPUs)");
    qemu::qemu(&["--debug-kernel".into()])
}

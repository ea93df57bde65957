//! `cargo xtask <command>`: the project's automation. See README.md and docs/testing.md.

mod cargowdk;
mod chroot;
mod host;
mod inf;
mod kdebug;
mod kmod;
mod modgraph;
mod ntsim;
mod ntsim_bench;
mod qemu;
mod util;
mod wdkcheck;
mod wdm;
mod wine;

use util::Result;

const USAGE: &str = "\
usage: cargo xtask [-v] <command> [arguments]

  -v, --verbose  stream every command's output (default: one line per step,
                 the output in target/logs/<step>.log, shown when it fails)

  demo        the story end to end: the model device, scull.sys under Wine,
              scull.ko in QEMU
  test        run every test (unit, property, fault injection, loom, conformance
              on the model, scull.sys under Wine, the Linux module in QEMU on
              Debian's kernel and on the debug kernel)
  bench-core  scull-core store vs memcpy benchmark (prints ratio lines)
  bench       every benchmark (bench-core, scull.ko in QEMU, scull.sys under ntsim
              and under Wine)
  conformance run the conformance suite against the host model
  wdm         cross-build scull.sys (+ scull.pdb) into target/wdm/
              (`wdm --test-build`: the test build, with the Wine bridge and the
              test switches, into target/wdm-test/)
  wdk-check   build, clippy and link the wdk-sys path of scull.sys on Linux (patched
              wdk-build copy, mingw-w64 headers as the WDK); last line: wdk-check: ok
  wine        load scull.sys in Wine and run the conformance suite there
              (`wine demo`: the demo; `wine bench`: scull-tool bench, reference figures)
  ntsim       load the release scull.sys under ntsim (a miniature NT kernel in a Linux
              process) and run the suite, stress and fuzz there
  inf-check   check scull-wdm/scull.inx (sections, keys, isolation rules) [FILE];
              without FILE also the layout `cargo wdk build` needs (names, metadata)
  kmod        build scull.ko for Debian's 7.3.4 kernel (trixie chroot, cached)
              (`kmod --debug-kernel`: the KASAN/lockdep/kmemleak kernel and scull.ko for it)
  qemu        boot Debian's 7.3.4 kernel in QEMU and run the suite against scull.ko
              (`qemu --bench`: scull-tool bench in the guest; `qemu --demo`: the demo
              in the guest; `qemu --debug-kernel`: the tests on the debug kernel, 2 vCPUs,
              failslab, kmemleak; `qemu --debug-kernel --race`: only the
              open-versus-rmmod race loop there)
";

/// The argument lists each command accepts; any other is refused with the
/// usage before anything runs. A command not listed checks its own.
fn args_ok(cmd: &str, rest: &[&str]) -> bool {
    match cmd {
        "demo" | "test" | "bench-core" | "bench" | "conformance" | "wdk-check" | "ntsim" | "help" | "-h" | "--help" => rest.is_empty(),
        "wdm" => matches!(rest, [] | ["--test-build"]),
        "wine" => matches!(rest, [] | ["demo" | "bench"]),
        "inf-check" => matches!(rest, [] | [_]) && !rest.iter().any(|a| a.starts_with('-')),
        "kmod" => matches!(rest, [] | ["--debug-kernel"]),
        "qemu" => matches!(rest, [] | ["--test" | "--bench" | "--demo" | "--debug-kernel"] | ["--debug-kernel", "--race"]),
        _ => true,
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "-v" || a == "--verbose") {
        args.remove(i);
        util::set_verbose(true);
    }
    let cmd = args.first().map(String::as_str).unwrap_or("help");
    let rest = if args.is_empty() { &[][..] } else { &args[1..] };
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    if !args_ok(cmd, &words) {
        eprint!("xtask {cmd}: unexpected arguments: {}\n{USAGE}", words.join(" "));
        std::process::exit(2);
    }
    let r: Result = match cmd {
        "demo" => demo(rest),
        "test" => test(rest),
        "bench-core" => host::bench_core(),
        "bench" => bench(rest),
        "conformance" => host::conformance(),
        "wdm" => wdm::run(rest),
        "wdk-check" => wdkcheck::run(rest),
        "wine" => wine::run_suite(rest),
        "ntsim" => ntsim::run(rest),
        "inf-check" => match rest.first() {
            Some(file) => inf::run(std::path::Path::new(file)),
            None => cargowdk::run().and_then(|()| inf::run(&cargowdk::inx_path())),
        },
        "kmod" if rest.is_empty() => kmod::run(),
        "kmod" => kdebug::run(),
        "qemu" => qemu::run(rest),
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
    qemu::run(&["--demo".into()])
}

fn bench(_args: &[String]) -> Result {
    host::bench_core()?;
    util::section("bench: the Linux module in QEMU");
    qemu::run(&["--bench".into()])?;
    util::section("bench: scull.sys through ntsim (the driver and a minimal I/O manager in one process)");
    ntsim_bench::bench()?;
    util::section("bench: scull.sys under Wine (reference figures only)");
    wine::bench()
}

fn test(_args: &[String]) -> Result {
    host::test()?;
    util::section("test: the wdk-sys path of the Windows driver (wdk-check)");
    wdkcheck::run(&[])?;
    util::section("test: the release Windows driver under ntsim (a native I/O manager in a Linux process)");
    ntsim::run(&[])?;
    util::section("test: the Windows driver under Wine");
    wine::run_suite(&[])?;
    util::section("test: the Linux module in QEMU");
    qemu::run(&[])?;
    util::section("test: the Linux module in QEMU on the debug kernel (KASAN, lockdep, kmemleak, failslab; 2 vCPUs)");
    qemu::run(&["--debug-kernel".into()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_arguments_are_refused_and_the_usage_names_every_form() {
        for (cmd, rest) in [("wine", &["--bogus"][..]), ("qemu", &["--nope"]), ("demo", &["x"]), ("kmod", &["--debug-kernel", "x"]), ("wdm", &["--test"])] {
            assert!(!args_ok(cmd, rest), "{cmd} {rest:?} accepted");
        }
        for (cmd, rest) in [("wine", &["demo"][..]), ("wine", &["bench"]), ("qemu", &["--bench"]), ("qemu", &["--demo"]), ("qemu", &["--debug-kernel", "--race"]), ("wdm", &["--test-build"]), ("kmod", &["--debug-kernel"]), ("inf-check", &["scull-wdm/scull.inx"])] {
            assert!(args_ok(cmd, rest), "{cmd} {rest:?} refused");
            assert!(USAGE.contains(&format!("`{cmd} {}", rest.join(" "))) || cmd == "inf-check", "usage omits `{cmd} {rest:?}`");
        }
        assert!(USAGE.contains("Wine") && USAGE.contains("QEMU") && USAGE.lines().any(|l| l.trim_start().starts_with("demo ") && l.contains("model")));
    }
}

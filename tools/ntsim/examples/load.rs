//! `cargo run -p ntsim --example load -- DRIVER.sys [SERVICE]`: loads any
//! WDM driver image, runs DriverEntry, lists its devices and links, asks
//! for unload and reports what was left. Prints the DbgPrint lines.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("ntsim runs on Linux x86_64 only");
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: load DRIVER.sys [SERVICE]");
        std::process::exit(2);
    };
    let service = args.get(1).cloned().unwrap_or_else(|| "driver".into());
    ntsim::kernel::set_echo(true);
    ntsim::kernel::reg_create(&format!(
        "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\{service}\\Parameters"
    ));
    let d = match ntsim::io::load(std::path::Path::new(path), &service) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("load failed: {e:?}");
            std::process::exit(1);
        }
    };
    println!("loaded {path} sha256={}", d.sha256);
    {
        let s = ntsim::kernel::state();
        for (n, _) in s.devices.iter() {
            println!("device {n}");
        }
        for (l, t) in s.links.iter() {
            println!("link {l} -> {t}");
        }
    }
    println!("pool outstanding: {:?}", ntsim::kernel::pool_outstanding());
    let ran = ntsim::io::request_unload(&d);
    println!(
        "unloaded: {ran}; left: {:?}",
        d.unload_report.lock().unwrap()
    );
}

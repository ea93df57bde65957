//! Build script of scull.sys.
//!
//! - `wdk` feature (the default; a Windows host, or `cargo xtask wdk-check`
//!   on Linux): wdk-build configures the link exactly as for Microsoft's
//!   samples.
//! - `mingw` feature (`--no-default-features --features mingw`, what
//!   `cargo xtask wdm` builds on Linux): bindgen over the mingw-w64 DDK
//!   headers, configured so that the names match wdk-sys (module-constant
//!   enums, NTSTATUS-typed STATUS_* values), and the kernel-driver link flags
//!   for rust-lld in lld-link mode.

#[cfg(all(feature = "wdk", feature = "mingw"))]
compile_error!("features `wdk` and `mingw` are exclusive: `mingw` needs --no-default-features (cargo xtask wdm passes it)");

#[cfg(feature = "wdk")]
fn main() -> Result<(), wdk_build::ConfigError> {
    wdk_build::configure_wdk_binary_build()
}

#[cfg(not(any(feature = "wdk", feature = "mingw")))]
fn main() {
    panic!("scull-wdm: enable the `wdk` (default) or the `mingw` (Linux, cargo xtask wdm) feature");
}

#[cfg(all(feature = "mingw", not(feature = "wdk")))]
fn main() {
    mingw::main()
}

#[cfg(all(feature = "mingw", not(feature = "wdk")))]
mod mingw {
    use std::env;
    use std::fs;
    use std::path::{Path, PathBuf};

    /// Where Debian's mingw-w64-x86-64-dev puts the headers.
    const DEFAULT_SYSROOT: &str = "/usr/x86_64-w64-mingw32";

    pub fn main() {
        let target = env::var("TARGET").unwrap_or_default();
        if target != "x86_64-pc-windows-msvc" {
            panic!("scull-wdm builds for x86_64-pc-windows-msvc only (got `{target}`); use `cargo xtask wdm`");
        }
        println!("cargo:rerun-if-changed=build.rs");
        println!("cargo:rerun-if-env-changed=SCULL_MINGW_SYSROOT");
        let sysroot = env::var("SCULL_MINGW_SYSROOT").unwrap_or_else(|_| DEFAULT_SYSROOT.into());
        let include = Path::new(&sysroot).join("include");
        if !include.join("ddk").join("ntifs.h").exists() {
            panic!("{}/ddk/ntifs.h not found: apt-get install mingw-w64-x86-64-dev", include.display());
        }
        link_flags();
        bindings(&include);
    }

    /// A kernel-mode image: native subsystem, DriverEntry, no CRT, a PDB.
    fn link_flags() {
        for arg in [
            "/DRIVER",
            "/SUBSYSTEM:NATIVE,10.0",
            "/ENTRY:DriverEntry",
            "/NODEFAULTLIB",
            "/DEBUG:FULL",
            // The debug directory names the PDB as it is shipped, next to scull.sys.
            "/PDBALTPATH:scull.pdb",
            "/OPT:REF,ICF",
            "/INCREMENTAL:NO",
        ] {
            println!("cargo:rustc-cdylib-link-arg={arg}");
        }
    }

    fn bindings(include: &Path) {
        let out = PathBuf::from(env::var("OUT_DIR").unwrap());
        let wrapper = out.join("wrapper.h");
        fs::write(&wrapper, "#include <ntifs.h>\n").unwrap();
        let mut b = bindgen::Builder::default()
            .header(wrapper.to_str().unwrap())
            .use_core()
            .derive_default(true)
            .generate_cstr(true)
            .detect_include_paths(false)
            .default_enum_style(bindgen::EnumVariation::ModuleConsts)
            .clang_macro_fallback()
            .clang_macro_fallback_build_dir(&out)
            .layout_tests(false)
            .merge_extern_blocks(true)
            .must_use_type("NTSTATUS")
            .parse_callbacks(Box::new(Callbacks))
            // The deprecated pool allocators are blocklisted by wdk-sys too;
            // ddk.rs declares the two the driver uses.
            .blocklist_item("ExAllocatePoolWithTag")
            .blocklist_item("ExAllocatePoolWithQuotaTag")
            .blocklist_item("ExAllocatePoolWithTagPriority")
            .blocklist_item("ExAllocatePool")
            // clang AMX intrinsics types: packed and aligned at once, which Rust rejects.
            .blocklist_item(".*tile1024i.*")
            .clang_arg("--target=x86_64-w64-mingw32")
            .clang_arg("-fno-builtin")
            .clang_arg(format!("-I{}", include.display()))
            .clang_arg(format!("-I{}", include.join("ddk").display()))
            .clang_args(["-D_AMD64_", "-D_WIN64", "-D_KERNEL_MODE", "-DNTDDI_VERSION=0x0A000000", "-D_WIN32_WINNT=0x0A00"]);
        if let Some(dir) = clang_resource_include() {
            b = b.clang_arg(format!("-isystem{}", dir.display()));
        }
        let text = b.generate().expect("bindgen over <ntifs.h> failed").to_string();
        // Every function is an import of ntoskrnl.exe, bound by rustc itself
        // (raw-dylib): no import library is needed.
        let linked = text.replace(
            "unsafe extern \"C\" {",
            "#[link(name = \"ntoskrnl.exe\", kind = \"raw-dylib\", modifiers = \"+verbatim\")]\nunsafe extern \"C\" {",
        );
        fs::write(out.join("ddk_bindings.rs"), linked).unwrap();
    }

    /// clang's own headers (stddef.h...), for when only libclang is installed.
    fn clang_resource_include() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib").ok()?.flatten().map(|e| e.path()).collect();
        dirs.sort();
        dirs.into_iter()
            .rev()
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("llvm-")))
            .filter_map(|p| fs::read_dir(p.join("lib/clang")).ok())
            .flat_map(|rd| rd.flatten().map(|e| e.path().join("include")))
            .find(|p| p.join("stddef.h").exists())
    }

    /// STATUS_* are `((NTSTATUS)0x...L)` casts: type them NTSTATUS as wdk-sys does.
    #[derive(Debug)]
    struct Callbacks;

    impl bindgen::callbacks::ParseCallbacks for Callbacks {
        fn int_macro(&self, name: &str, _value: i64) -> Option<bindgen::callbacks::IntKind> {
            if name.starts_with("STATUS_") {
                Some(bindgen::callbacks::IntKind::Custom { name: "NTSTATUS", is_signed: true })
            } else {
                None
            }
        }
    }
}

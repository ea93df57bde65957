//! Builds src/varargs.c: DbgPrint/DbgPrintEx are C-variadic with the
//! Microsoft x64 convention, which Rust cannot define (stable Rust has no
//! `extern "win64"` C-variadic definitions); clang/gcc can, with
//! `__attribute__((ms_abi))` and `__builtin_ms_va_list`.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rerun-if-changed=src/varargs.c");
    cc::Build::new()
        .file("src/varargs.c")
        .warnings(true)
        .compile("ntsim_varargs");
}

/*
 * scull-rs `cargo xtask wdk-check`: mingw-w64 ships no <ntstrsafe.h>, one of
 * the three headers wdk-build hands bindgen on the WDM path. scull.sys calls
 * none of the RtlString* functions, so the check's content root has this
 * empty stand-in (wdk-sys then has no RtlString* bindings in this check).
 */

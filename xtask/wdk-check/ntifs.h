/*
 * scull-rs `cargo xtask wdk-check`: <ntifs.h> of the WDKContentRoot that the
 * check lays out over mingw-w64's headers (copied to Include/<ver>/km/crt/,
 * which wdk-build puts first on bindgen's include path).
 *
 * It includes mingw-w64's own <ntifs.h>, then declares what mingw-w64 10's
 * DDK headers lack and wdk-sys or its users need. Each line follows the
 * WDK's documented declaration (facts, see the Windows docs page):
 * - POOL_FLAGS: the 64-bit flags type of ExAllocatePool2 (wdk-sys's
 *   constants.rs defines the POOL_FLAG_* values on this type itself);
 * - ExAllocatePool2: what wdk-alloc's global allocator calls.
 */
#include_next <ntifs.h>

#ifndef SCULL_WDK_CHECK_SHIM
#define SCULL_WDK_CHECK_SHIM
typedef ULONG64 POOL_FLAGS;
NTKERNELAPI PVOID NTAPI ExAllocatePool2(POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag);
#endif

<#
.SYNOPSIS
    The Windows test VM self-check of scull.sys: test signing, Driver
    Verifier, install, the conformance suite, stress, fuzz, uninstall, and
    one result line.

.DESCRIPTION
    NOT RUN BY THIS PROJECT: scull-rs's CI is Linux only (Wine and QEMU), so
    this script has never been executed on Windows. It was written to the
    documented behaviour of bcdedit, verifier, sc.exe and
    NtQuerySystemInformation, and reviewed, not tested. Run it in a test VM
    you can throw away, never on a machine you care about.

    Run it from an elevated PowerShell in the package folder that
    `cargo make package --release` produced (scull.sys, scull.inf, scull.cat,
    scull-tool.exe, WDRLocalTestCert.cer, install.ps1, uninstall.ps1,
    scull-common.ps1 and this script). It runs twice, with a reboot between:

    First run (prepare):
    1. Turns test signing on (`bcdedit /set testsigning on`) unless it is on.
    2. Installs the release package with install.ps1 if this boot already has
       test signing (otherwise the second run installs it).
    3. Turns Driver Verifier on for scull.sys with the standard flags
       (`verifier /standard /driver scull.sys`: special pool, pool tracking,
       IRQL checking, I/O verification, deadlock detection, DMA checks,
       security checks, miscellaneous checks, DDI compliance checking).
    4. Says that a reboot is needed, and exits with code 3010.

    Second run (after the reboot):
    5. Installs (or reinstalls) and starts the driver with install.ps1; it
       now runs under the verifier. A verifier violation bugchecks the VM:
       the crash dump then names the rule (`!analyze -v`).
    6. Runs `scull-tool.exe --target windows conformance`, then
       `stress --writers 8 --readers 8 --seconds 30` and
       `fuzz --seconds 60 --seed 20261121`.
    7. Reads Driver Verifier's state for scull.sys (`verifier /querysettings`
       and its pool counters from `verifier /query`) while the driver is loaded.
    8. Uninstalls with uninstall.ps1 (DriverUnload runs), then counts the
       outstanding pool blocks with scull's tag 'lucS' ("Scul" in the pool
       tag list) through NtQuerySystemInformation(SystemPoolTagInformation),
       as poolmon does: it must be 0.
    9. Prints `windows: N passed, M failed` (the conformance cases, plus
       stress, fuzz, verifier active and zero outstanding blocks), then the
       verifier state and the outstanding count. Exit code 0 only when M is 0.

    Driver Verifier stays on for scull.sys afterwards; -ResetVerifier turns it
    off (`verifier /reset`, a reboot) instead of running the check. Test
    signing stays on; `bcdedit /set testsigning off` and a reboot turn it off.

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File .\vm-selfcheck.ps1
    # reboot when told, then the same command again
.EXAMPLE
    powershell -ExecutionPolicy Bypass -File .\vm-selfcheck.ps1 -ResetVerifier
#>
[CmdletBinding()]
param(
    # Folder holding scull.sys, scull-tool.exe and the install scripts.
    [string]$Package = $PSScriptRoot,
    # Turn Driver Verifier off again (verifier /reset) and exit.
    [switch]$ResetVerifier
)

Set-StrictMode -Version 3
$ErrorActionPreference = 'Stop'

$Service = 'scull'
$Driver = 'scull.sys'
$ScriptName = 'vm-selfcheck.ps1'
. (Join-Path $PSScriptRoot 'scull-common.ps1')

# The pool tag as ExAllocatePoolWithTag receives it: the ULONG 'lucS',
# bytes "Scul" in memory (pool.rs TAG).
$PoolTag = [BitConverter]::ToUInt32([Text.Encoding]::ASCII.GetBytes('Scul'), 0)

Add-Type -TypeDefinition @'
using System;
using System.Runtime.InteropServices;

public static class ScullPoolTags
{
    [DllImport("ntdll.dll")]
    static extern int NtQuerySystemInformation(int infoClass, IntPtr info, int length, out int returned);

    const int SystemPoolTagInformation = 22;
    const int StatusInfoLengthMismatch = unchecked((int)0xC0000004);

    // Outstanding blocks (allocations minus frees, paged and nonpaged) with
    // this tag; -1 when the query fails. x64 layout of SYSTEM_POOLTAG:
    // Tag, PagedAllocs, PagedFrees, (pad), PagedUsed (8), NonPagedAllocs,
    // NonPagedFrees, NonPagedUsed (8): 40 bytes; the array starts at 8.
    public static long Outstanding(uint tag)
    {
        int size = 1 << 20;
        for (int attempt = 0; attempt < 8; attempt++)
        {
            IntPtr buf = Marshal.AllocHGlobal(size);
            try
            {
                int returned;
                int st = NtQuerySystemInformation(SystemPoolTagInformation, buf, size, out returned);
                if (st == StatusInfoLengthMismatch)
                {
                    size = Math.Max(size * 2, returned + 4096);
                    continue;
                }
                if (st < 0) return -1;
                int count = Marshal.ReadInt32(buf);
                long outstanding = 0;
                for (int i = 0; i < count; i++)
                {
                    IntPtr e = IntPtr.Add(buf, 8 + i * 40);
                    if ((uint)Marshal.ReadInt32(e) != tag) continue;
                    outstanding += (uint)Marshal.ReadInt32(e, 4) - (long)(uint)Marshal.ReadInt32(e, 8);
                    outstanding += (uint)Marshal.ReadInt32(e, 24) - (long)(uint)Marshal.ReadInt32(e, 28);
                }
                return outstanding;
            }
            finally
            {
                Marshal.FreeHGlobal(buf);
            }
        }
        return -1;
    }
}
'@

function Test-Admin {
    $principal = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
    return $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
}

# Test signing in the boot that is running now.
function Test-TestSigningActive {
    $opts = (Get-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control' -Name SystemStartOptions).SystemStartOptions
    return ($opts -match 'TESTSIGNING')
}

# Test signing in the boot entry (what the next boot will have).
function Test-TestSigningConfigured {
    $entry = & bcdedit.exe /enum '{current}' | Out-String
    return ($entry -match '(?im)^\s*testsigning\s+Yes')
}

# Driver Verifier's configured settings name scull.sys (verifier /querysettings).
function Test-VerifierConfigured {
    $q = & verifier.exe /querysettings | Out-String
    return ($q -match "(?i)\b$([regex]::Escape($Driver))\b")
}

# Verifier's runtime view of scull.sys: "active" when the loaded driver is
# verified, with its current pool allocation counters if shown.
function Get-VerifierState {
    $q = & verifier.exe /query | Out-String
    if ($q -notmatch "(?i)Name:\s*$([regex]::Escape($Driver))") {
        return @{ Active = $false; Text = 'not verifying scull.sys (is the driver loaded, and was the VM rebooted after verifier /standard?)' }
    }
    $block = ($q -split "(?i)(?=Name:\s)") | Where-Object { $_ -match "(?i)Name:\s*$([regex]::Escape($Driver))" } | Select-Object -First 1
    $pool = ($block -split "`r?`n" | Where-Object { $_ -match '(?i)Current(NonPaged|Paged)PoolAllocations' } | ForEach-Object { $_.Trim() }) -join ', '
    if (-not $pool) { $pool = 'pool counters not shown' }
    return @{ Active = $true; Text = "active for scull.sys (standard flags); $pool" }
}

# Runs scull-tool.exe with the given arguments; returns its exit code and output lines.
# Its stderr is part of the output: with 'Stop', Windows PowerShell 5.1 would
# turn the first stderr line of a native command into a terminating error.
function Invoke-ScullTool([string[]]$Arguments) {
    $ErrorActionPreference = 'Continue'
    $exe = Join-Path $Package 'scull-tool.exe'
    Write-Host "> scull-tool.exe $($Arguments -join ' ')"
    $lines = @(& $exe @Arguments 2>&1 | ForEach-Object { "$_" })
    $code = $LASTEXITCODE
    foreach ($l in $lines) { Write-Host $l }
    return @{ Code = $code; Lines = $lines }
}

# Runs install.ps1 or uninstall.ps1 of the package in a child PowerShell.
function Invoke-Script([string]$Name, [string[]]$Arguments = @()) {
    $path = Join-Path $Package $Name
    & powershell.exe -NoProfile -ExecutionPolicy Bypass -File $path @Arguments
    if ($LASTEXITCODE -ne 0) { Fail "$Name failed with exit code $LASTEXITCODE" }
}

# verifier.exe's exit codes are not documented; its settings are checked instead.
function Set-Verifier([string[]]$Arguments, [bool]$WantScull) {
    $ErrorActionPreference = 'Continue'
    Write-Host "> verifier.exe $($Arguments -join ' ')"
    $out = & verifier.exe @Arguments 2>&1 | Out-String
    if ($out.Trim()) { Write-Host $out.TrimEnd() }
    if ((Test-VerifierConfigured) -ne $WantScull) {
        Fail "verifier.exe $($Arguments -join ' ') did not change the settings (exit code $LASTEXITCODE); see 'verifier /querysettings'"
    }
}

try {
    if (-not (Test-Admin)) { Fail 'run this script from an elevated PowerShell (Run as Administrator)' }
    $Package = (Resolve-Path -LiteralPath $Package).Path
    foreach ($f in @('scull.sys', 'scull-tool.exe', 'install.ps1', 'uninstall.ps1')) {
        if (-not (Test-Path -LiteralPath (Join-Path $Package $f))) {
            Fail "$f not found in $Package (run this script in the package folder of 'cargo make package --release')"
        }
    }

    if ($ResetVerifier) {
        Set-Verifier @('/reset') $false
        Write-Host "${ScriptName}: Driver Verifier settings cleared; reboot to finish (shutdown /r /t 0)"
        exit 3010
    }

    # ---- First run: test signing and Driver Verifier, then a reboot.
    $signingNow = Test-TestSigningActive
    $verifierSet = Test-VerifierConfigured
    if (-not $signingNow -or -not $verifierSet) {
        if (-not $signingNow -and -not (Test-TestSigningConfigured)) {
            Invoke-Native 'bcdedit.exe' @('/set', 'testsigning', 'on') | Out-Null
            Write-Host 'test signing: turned on for the next boot (if bcdedit said the value is protected by Secure Boot policy, turn Secure Boot off in the VM settings and run again)'
        }
        if ($signingNow) {
            Invoke-Script 'install.ps1' @('-Package', $Package)
        } else {
            Write-Host 'install: after the reboot (this boot does not have test signing, so Windows would refuse scull.sys)'
        }
        Set-Verifier @('/standard', '/driver', $Driver) $true
        Write-Host ''
        Write-Host "${ScriptName}: REBOOT NEEDED. Test signing and Driver Verifier (standard flags, $Driver) take effect at the next boot."
        Write-Host "    shutdown /r /t 0"
        Write-Host "Then run the same command again: powershell -ExecutionPolicy Bypass -File `"$PSCommandPath`""
        exit 3010
    }

    # ---- Second run: install under the verifier, the runs, uninstall.
    Write-Host 'test signing: on; Driver Verifier: configured for scull.sys'
    Invoke-Script 'install.ps1' @('-Package', $Package)

    $passed = 0
    $failed = 0
    $failures = New-Object System.Collections.Generic.List[string]
    function Count([bool]$Ok, [string]$What) {
        if ($Ok) { $script:passed++ } else { $script:failed++; $script:failures.Add($What) }
    }

    $conf = Invoke-ScullTool @('--target', 'windows', 'conformance')
    $closing = $conf.Lines | Where-Object { $_ -match '^windows: (\d+) passed, (\d+) failed' } | Select-Object -Last 1
    if ($closing -and $closing -match '^windows: (\d+) passed, (\d+) failed') {
        $passed += [int]$Matches[1]
        $failed += [int]$Matches[2]
        if ([int]$Matches[2] -gt 0) { $failures.Add("conformance: $closing") }
    } else {
        Count $false "conformance: no closing line (exit code $($conf.Code))"
    }

    $stress = Invoke-ScullTool @('--target', 'windows', 'stress', '--writers', '8', '--readers', '8', '--seconds', '30')
    Count ($stress.Code -eq 0 -and ($stress.Lines -match '^stress: 0 lost, 0 corrupt')) "stress (exit code $($stress.Code))"

    $fuzz = Invoke-ScullTool @('--target', 'windows', 'fuzz', '--seconds', '60', '--seed', '20261121')
    Count ($fuzz.Code -eq 0 -and ($fuzz.Lines -match '^fuzz: devices still work')) "fuzz (exit code $($fuzz.Code))"

    $verifier = Get-VerifierState
    Count $verifier.Active 'Driver Verifier was not verifying scull.sys during the runs'

    Invoke-Script 'uninstall.ps1' @()
    $outstanding = [ScullPoolTags]::Outstanding($PoolTag)
    Count ($outstanding -eq 0) "outstanding 'lucS' pool blocks after unload: $outstanding"

    Write-Host ''
    foreach ($f in $failures) { Write-Host "FAILED: $f" -ForegroundColor Red }
    Write-Host "verifier: $($verifier.Text)"
    $shown = if ($outstanding -lt 0) { 'unknown (NtQuerySystemInformation failed)' } else { "$outstanding" }
    Write-Host "pool tag 'lucS' (Scul): outstanding blocks after unload: $shown"
    Write-Host "windows: $passed passed, $failed failed"
    if ($failed -eq 0) { exit 0 } else { exit 1 }
} catch {
    Fail $_.Exception.Message
}

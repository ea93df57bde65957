<#
.SYNOPSIS
    Installs and starts scull.sys in a Windows test VM. Idempotent.

.DESCRIPTION
    Run from an elevated PowerShell, in the package folder that `cargo make`
    produced (scull.sys, scull.pdb, scull.inf, scull.cat, scull-tool.exe,
    WDRLocalTestCert.cer, install.ps1, uninstall.ps1).

    1. Checks that it runs as Administrator and that the running system was
       booted with test signing on.
    2. Imports WDRLocalTestCert.cer (if present) into the machine's Root and
       TrustedPublisher stores, so the test-signed catalog is trusted.
    3. Stops the service if it is running (so a rebuilt scull.sys is loaded).
    4. Mode Sc (default): `sc.exe create scull type= kernel start= demand
       binPath= <package>\scull.sys`, or `sc.exe config` if it exists.
       Mode Inf: `pnputil /add-driver scull.inf /install` (primitive INF).
    5. Writes the device ACL (Parameters\scull_sddl): SYSTEM and
       Administrators only, or with -RelaxedAcl also Authenticated Users
       (read/write), for the ScullUid/ScullWuid demos. Registers scull as an
       event source of the System log (EventMessageFile IoLogMsg.dll), where
       the driver reports a registry value it refuses.
    6. `sc.exe start scull` and checks that the service is RUNNING.

    Any failure prints "install.ps1: error: ..." and exits with code 1.

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File .\install.ps1
.EXAMPLE
    powershell -ExecutionPolicy Bypass -File .\install.ps1 -Mode Inf -RelaxedAcl
#>
[CmdletBinding()]
param(
    # Folder holding scull.sys (and scull.inf for -Mode Inf).
    [string]$Package = $PSScriptRoot,
    # Sc: create the service with sc.exe. Inf: install the INF with pnputil.
    [ValidateSet('Sc', 'Inf')]
    [string]$Mode = 'Sc',
    # Let every authenticated user open the devices (uid-device demos).
    [switch]$RelaxedAcl
)

Set-StrictMode -Version 3
$ErrorActionPreference = 'Stop'

$Service = 'scull'
$ParamsKey = "HKLM:\SYSTEM\CurrentControlSet\Services\$Service\Parameters"
$EventKey = "HKLM:\SYSTEM\CurrentControlSet\Services\EventLog\System\$Service"
$SddlAdminsOnly = 'D:P(A;;GA;;;SY)(A;;GA;;;BA)'
$SddlRelaxed = 'D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;AU)'

$ScriptName = 'install.ps1'
. (Join-Path $PSScriptRoot 'scull-common.ps1')

function Stop-ScullService {
    $svc = Get-Service -Name $Service -ErrorAction SilentlyContinue
    if ($null -eq $svc -or $svc.Status -eq 'Stopped') { return }
    Invoke-Native 'sc.exe' @('stop', $Service) -Ok @(0, 1062) | Out-Null
    try {
        $svc.WaitForStatus('Stopped', [TimeSpan]::FromSeconds(30))
    } catch {
        Fail "service $Service did not stop within 30 s (a handle to a device may still be open, e.g. a pended read in scull-tool)"
    }
    $svc.Dispose()
}

try {
    # 1. Administrator and test signing.
    $principal = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        Fail 'run this script from an elevated PowerShell (Run as Administrator)'
    }
    $startOptions = (Get-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control' -Name SystemStartOptions).SystemStartOptions
    if ($startOptions -notmatch 'TESTSIGNING') {
        Fail ("test signing is not active in this boot, so Windows will refuse the test-signed scull.sys " +
              "(error 577). Run 'bcdedit /set testsigning on' as Administrator and reboot. " +
              "If bcdedit reports that the value is protected by Secure Boot policy, turn Secure Boot off " +
              "in the VM's firmware settings first.")
    }
    Write-Host 'test signing: on'

    $Package = (Resolve-Path -LiteralPath $Package).Path
    $sys = Join-Path $Package 'scull.sys'
    if (-not (Test-Path -LiteralPath $sys)) { Fail "$sys not found (use -Package <folder of the cargo make package>)" }

    # 2. Trust the test certificate (idempotent: certutil replaces an existing copy).
    $cer = Join-Path $Package 'WDRLocalTestCert.cer'
    if (Test-Path -LiteralPath $cer) {
        Invoke-Native 'certutil.exe' @('-f', '-addstore', 'Root', $cer) | Out-Null
        Invoke-Native 'certutil.exe' @('-f', '-addstore', 'TrustedPublisher', $cer) | Out-Null
    } else {
        Write-Host "note: $cer not found; the signing certificate must already be trusted"
    }

    # 3. Stop a running instance.
    Stop-ScullService

    # 4. Register the service.
    if ($Mode -eq 'Sc') {
        if (Test-ServiceExists) {
            Invoke-Native 'sc.exe' @('config', $Service, 'type=', 'kernel', 'start=', 'demand', 'binPath=', $sys) | Out-Null
        } else {
            Invoke-Native 'sc.exe' @('create', $Service, 'type=', 'kernel', 'start=', 'demand', 'binPath=', $sys,
                'DisplayName=', 'scull (LDD3 scull in Rust)') | Out-Null
        }
    } else {
        $inf = Join-Path $Package 'scull.inf'
        if (-not (Test-Path -LiteralPath $inf)) { Fail "$inf not found" }
        # 259 (ERROR_NO_MORE_ITEMS): added, but no device to install on; normal for a primitive INF.
        Invoke-Native 'pnputil.exe' @('/add-driver', $inf, '/install') -Ok @(0, 259, 3010) | Out-Null
        if (-not (Test-ServiceExists)) {
            Fail 'pnputil added scull.inf but the scull service does not exist (see C:\Windows\INF\setupapi.dev.log)'
        }
    }

    # 5. Device ACL, read by the driver when it creates its devices.
    $sddl = if ($RelaxedAcl) { $SddlRelaxed } else { $SddlAdminsOnly }
    if (-not (Test-Path $ParamsKey)) { New-Item -Path $ParamsKey -Force | Out-Null }
    New-ItemProperty -Path $ParamsKey -Name 'scull_sddl' -PropertyType String -Value $sddl -Force | Out-Null
    Write-Host "device ACL (Parameters\scull_sddl): $sddl"

    # 5b. The System log's event source (the INF's Scull.EventLog section does
    # the same): a registry value DriverEntry refuses is logged with the
    # generic I/O messages of IoLogMsg.dll.
    if (-not (Test-Path $EventKey)) { New-Item -Path $EventKey -Force | Out-Null }
    New-ItemProperty -Path $EventKey -Name 'EventMessageFile' -PropertyType ExpandString -Value '%SystemRoot%\System32\IoLogMsg.dll' -Force | Out-Null
    New-ItemProperty -Path $EventKey -Name 'TypesSupported' -PropertyType DWord -Value 7 -Force | Out-Null
    Write-Host "event source: System log, $Service (IoLogMsg.dll)"

    # 6. Start and verify.
    Invoke-Native 'sc.exe' @('start', $Service) | Out-Null
    $svc = Get-Service -Name $Service
    try {
        $svc.WaitForStatus('Running', [TimeSpan]::FromSeconds(30))
    } catch {
        Fail "service $Service did not reach RUNNING (state: $($svc.Status)); see the DbgPrint output"
    }
    Write-Host "install.ps1: $Service is RUNNING (mode $Mode). Try: .\scull-tool.exe conformance --target windows"
    exit 0
} catch {
    Fail $_.Exception.Message
}

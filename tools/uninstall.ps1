<#
.SYNOPSIS
    Stops and removes scull.sys from a Windows test VM. Idempotent.

.DESCRIPTION
    Run from an elevated PowerShell. Works for both install modes:
    1. `sc.exe stop scull` if the service is running (DriverUnload runs; its
       DbgPrint reports the outstanding 'lucS' pool blocks, which must be 0).
    2. Removes every scull.inf package from the driver store
       (`pnputil /delete-driver oemNN.inf /uninstall`), if one was added.
    3. `sc.exe delete scull` if the service still exists.
    4. Removes the System log's `scull` event source.
    Running it again when nothing is installed succeeds and changes nothing.
    The test certificate stays trusted; remove it with certlm.msc if wanted.

    Any failure prints "uninstall.ps1: error: ..." and exits with code 1.

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File .\uninstall.ps1
#>
[CmdletBinding()]
param()

Set-StrictMode -Version 3
$ErrorActionPreference = 'Stop'

$Service = 'scull'

$ScriptName = 'uninstall.ps1'
. (Join-Path $PSScriptRoot 'scull-common.ps1')

try {
    $principal = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        Fail 'run this script from an elevated PowerShell (Run as Administrator)'
    }

    # 1. Stop.
    $svc = Get-Service -Name $Service -ErrorAction SilentlyContinue
    if ($null -ne $svc -and $svc.Status -ne 'Stopped') {
        Invoke-Native 'sc.exe' @('stop', $Service) -Ok @(0, 1062) | Out-Null
        try {
            $svc.WaitForStatus('Stopped', [TimeSpan]::FromSeconds(30))
        } catch {
            Fail "service $Service did not stop within 30 s: close every program holding a \\.\Scull* handle and run again"
        }
    }
    # Our own open service handle would keep a deleted service alive.
    if ($null -ne $svc) { $svc.Dispose() }

    # 2. Driver store packages whose original INF is scull.inf.
    $published = @(Get-WindowsDriver -Online |
        Where-Object { (Split-Path -Leaf $_.OriginalFileName) -ieq 'scull.inf' } |
        ForEach-Object { $_.Driver })
    foreach ($oem in $published) {
        Invoke-Native 'pnputil.exe' @('/delete-driver', $oem, '/uninstall', '/force') -Ok @(0, 3010) | Out-Null
    }

    # 3. The service (left behind by sc.exe create, or by an INF install).
    if (Test-ServiceExists) {
        Invoke-Native 'sc.exe' @('delete', $Service) -Ok @(0, 1060) | Out-Null
    }
    # 4. The event source install.ps1 (or the INF) registered.
    $eventKey = "HKLM:\SYSTEM\CurrentControlSet\Services\EventLog\System\$Service"
    if (Test-Path $eventKey) { Remove-Item -Path $eventKey -Recurse -Force }
    if (Test-ServiceExists) {
        Write-Host "note: $Service is marked for deletion and disappears when the last handle to it closes (services.msc, Event Viewer)"
    }
    Write-Host "uninstall.ps1: $Service removed"
    exit 0
} catch {
    Fail $_.Exception.Message
}

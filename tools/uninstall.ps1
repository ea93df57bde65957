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

$Win32Errors = @{
    5    = 'ERROR_ACCESS_DENIED: run from an elevated (Administrator) PowerShell'
    1051 = 'ERROR_DEPENDENT_SERVICES_RUNNING'
    1052 = 'ERROR_INVALID_SERVICE_CONTROL: the driver has no DriverUnload routine and cannot stop'
    1060 = 'ERROR_SERVICE_DOES_NOT_EXIST'
    1061 = 'ERROR_SERVICE_CANNOT_ACCEPT_CTRL: the service is starting or stopping; retry'
    1062 = 'ERROR_SERVICE_NOT_ACTIVE'
    1072 = 'ERROR_SERVICE_MARKED_FOR_DELETE: close services.msc and other handles to the service, or reboot'
    3010 = 'ERROR_SUCCESS_REBOOT_REQUIRED'
}

function Fail([string]$Message) {
    Write-Host "uninstall.ps1: error: $Message" -ForegroundColor Red
    exit 1
}

function Describe([int]$Code) {
    if ($Win32Errors.ContainsKey($Code)) { return "$Code ($($Win32Errors[$Code]))" }
    return "$Code"
}

function Invoke-Native([string]$Exe, [string[]]$Arguments, [int[]]$Ok = @(0)) {
    Write-Host "> $Exe $($Arguments -join ' ')"
    $out = & $Exe @Arguments 2>&1 | Out-String
    $code = $LASTEXITCODE
    if ($out.Trim()) { Write-Host $out.TrimEnd() }
    if ($Ok -notcontains $code) {
        Fail "$Exe $($Arguments -join ' ') failed with exit code $(Describe $code)"
    }
    return $code
}

function Test-ServiceExists {
    & sc.exe query $Service *> $null
    return ($LASTEXITCODE -ne 1060)
}

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
    if (Test-ServiceExists) {
        Write-Host "note: $Service is marked for deletion and disappears when the last handle to it closes (services.msc, Event Viewer)"
    }
    Write-Host "uninstall.ps1: $Service removed"
    exit 0
} catch {
    Fail $_.Exception.Message
}

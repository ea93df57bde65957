# Shared by install.ps1 and uninstall.ps1 (dot-sourced). The caller sets
# $ScriptName and $Service first.

# Win32 errors that sc.exe and pnputil return as exit codes.
$Win32Errors = @{
    2    = 'ERROR_FILE_NOT_FOUND: the binPath does not name an existing file'
    5    = 'ERROR_ACCESS_DENIED: run from an elevated (Administrator) PowerShell'
    87   = 'ERROR_INVALID_PARAMETER: check the sc.exe arguments (a space is needed after "type=", "binPath=")'
    577  = 'ERROR_INVALID_IMAGE_HASH: Windows cannot verify the signature; enable test signing and reboot, or the file is unsigned'
    1051 = 'ERROR_DEPENDENT_SERVICES_RUNNING'
    1052 = 'ERROR_INVALID_SERVICE_CONTROL: the driver has no DriverUnload routine and cannot stop'
    1056 = 'ERROR_SERVICE_ALREADY_RUNNING'
    1058 = 'ERROR_SERVICE_DISABLED: the service start type is Disabled'
    1060 = 'ERROR_SERVICE_DOES_NOT_EXIST: the service is not installed'
    1061 = 'ERROR_SERVICE_CANNOT_ACCEPT_CTRL: the service is starting or stopping; retry'
    1062 = 'ERROR_SERVICE_NOT_ACTIVE'
    1072 = 'ERROR_SERVICE_MARKED_FOR_DELETE: close every handle to the service (services.msc, sc.exe) or reboot'
    1073 = 'ERROR_SERVICE_EXISTS'
    1275 = 'ERROR_DRIVER_BLOCKED: blocked by policy (HVCI/Memory integrity, driver block list, or Secure Boot without test signing)'
    3010 = 'ERROR_SUCCESS_REBOOT_REQUIRED'
}

function Fail([string]$Message) {
    Write-Host "${ScriptName}: error: $Message" -ForegroundColor Red
    exit 1
}

function Describe([int]$Code) {
    if ($Win32Errors.ContainsKey($Code)) { return "$Code ($($Win32Errors[$Code]))" }
    return "$Code"
}

# Runs a native tool; fails unless its exit code is one of $Ok.
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

# Install the GUARDiA agent as a Windows service with NSSM (https://nssm.cc), as the operations team already does.
# Run in an elevated PowerShell from the agent's folder (agent.toml, runbooks\, runbooks.lock, keys\, known_hosts),
# after `py -3.11 -m venv .venv; .venv\Scripts\pip install .` there.
#
#   .\deploy\install-windows-service.ps1 -Nssm C:\tools\nssm.exe
#
# Secrets are set as the service's environment (stored by NSSM in the service's registry key, readable only by
# administrators and SYSTEM). The script prompts for them; nothing is written to a file.
param(
    [string]$Nssm = "nssm.exe",
    [string]$Name = "GuardiaAgent",
    [string]$AgentHome = (Get-Location).Path
)
$ErrorActionPreference = "Stop"

$agent = Join-Path $AgentHome ".venv\Scripts\agent.exe"
if (-not (Test-Path $agent)) { throw "no $agent: create the venv and install the agent first" }
& $agent -c (Join-Path $AgentHome "agent.toml") config check
if ($LASTEXITCODE -ne 0) { throw "agent config check failed; fix the config first" }

$url = Read-Host "EXTERNAL_WS_URL (wss://...)"
$token = Read-Host "AGENT_RELAY_TOKEN" -AsSecureString
$dbPassword = Read-Host "DB_PASSWORD (empty if no DB checks)" -AsSecureString
function Plain($secure) { [Runtime.InteropServices.Marshal]::PtrToStringAuto([Runtime.InteropServices.Marshal]::SecureStringToBSTR($secure)) }

& $Nssm install $Name $agent "-c" "`"$AgentHome\agent.toml`"" "run" "--log-json"
& $Nssm set $Name AppDirectory $AgentHome
& $Nssm set $Name DisplayName "GUARDiA agent"
& $Nssm set $Name Description "Sandboxed runbook executor: dials out to the relay, runs only approved runbooks."
& $Nssm set $Name Start SERVICE_AUTO_START
& $Nssm set $Name AppEnvironmentExtra "EXTERNAL_WS_URL=$url" "AGENT_RELAY_TOKEN=$(Plain $token)" "DB_PASSWORD=$(Plain $dbPassword)"
# Logs: stdout/stderr to files, rotated by NSSM (10 MB, also daily), on top of the agent's own JSON lines.
New-Item -ItemType Directory -Force -Path (Join-Path $AgentHome "var\log") | Out-Null
& $Nssm set $Name AppStdout (Join-Path $AgentHome "var\log\agent.out.log")
& $Nssm set $Name AppStderr (Join-Path $AgentHome "var\log\agent.err.log")
& $Nssm set $Name AppRotateFiles 1
& $Nssm set $Name AppRotateOnline 1
& $Nssm set $Name AppRotateSeconds 86400
& $Nssm set $Name AppRotateBytes 10485760
# Restart on failure after 5 s; stop gracefully (Ctrl-C to the console = SIGINT) and wait up to 60 s.
& $Nssm set $Name AppExit Default Restart
& $Nssm set $Name AppRestartDelay 5000
& $Nssm set $Name AppStopMethodSkip 6
& $Nssm set $Name AppStopMethodConsole 60000
& $Nssm start $Name
Write-Host "installed and started $Name; status: $Nssm status $Name; logs in $AgentHome\var\log"

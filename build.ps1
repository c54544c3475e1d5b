# Bootstrap for Windows: restores the local tools (Cake) and runs a build target.
#   ./build.ps1 --target=Demo      run the demo
#   ./build.ps1 --target=Test      run the tests (last line: N passed, N failed, N skipped)
$ErrorActionPreference = 'Stop'
Set-Location $PSScriptRoot
$env:DOTNET_CLI_TELEMETRY_OPTOUT = '1'
$env:DOTNET_NOLOGO = '1'
dotnet tool restore | Out-Null
$summary = 'artifacts/test-summary.txt'
if (Test-Path $summary) { Remove-Item $summary }
dotnet cake build.cake @args
$status = $LASTEXITCODE
if (Test-Path $summary) { Get-Content $summary }
exit $status

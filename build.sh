#!/usr/bin/env bash
# Bootstrap: restores the local tools (Cake) and runs a build target.
#   ./build.sh --target=Demo      run the demo
#   ./build.sh --target=Test      run the tests (last line: N passed, N failed, N skipped)
# Other targets: Build, Bench, BenchTorch (the CPU against libtorch), Pack, GpuBundle, Clean.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
dotnet tool restore >/dev/null
summary=artifacts/test-summary.txt
rm -f "$summary"
status=0
dotnet cake build.cake "$@" || status=$?
# Cake prints its task table last; the test count must be the final line, so repeat it here.
if [ -f "$summary" ]; then
  cat "$summary"
fi
exit $status

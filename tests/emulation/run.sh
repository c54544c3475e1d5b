#!/usr/bin/env bash
# Runs the CUDA kernels on the CPU under the emulation of cuda_shim.h (and mma_shim.h for the tensor-core kernels) against
# double-precision references: every tests/emulation/*_harness.cpp, each of which includes the kernel files it tests
# (cuda/<name>.cu, turned into <name>.emu.cpp here) and runs them in bf16 and fp16 (and fp32 where the kernel has it).
# No GPU needed. Each harness prints its checks and ends with "N failing".
# Usage: tests/emulation/run.sh [harness…]   (names without _harness.cpp; default: all). Needs g++ with C++20 on x86-64.
# Every case runs in every type it lists. Compiled harnesses are kept in artifacts/emulation, keyed by a hash of their
# sources, so an unchanged harness is not compiled again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cache="$root/artifacts/emulation"
mkdir -p "$cache"

# The kernels and headers as host C++: extern shared memory becomes the emulation's (poisoned) host array; each static
# __shared__ array is registered so it is poisoned before each block; common.cuh and mma.cuh give way to the shims.
to_host() {
  sed -e 's/extern __shared__ float \([a-z_]*\)\[\];/float* \1 = g_dynamic_smem;/' \
      -e 's/^\([[:space:]]*__shared__ [A-Za-z_0-9]* \([A-Za-z_0-9]*\)\[[^;]*;\)/\1 EMU_SHARED(\2);/' \
      -e '/#include "common.cuh"/d' -e '/#include "mma.cuh"/d' "$1"
}
for kernel in "$root"/cuda/*.cu; do
  to_host "$kernel" > "$work/$(basename "$kernel" .cu).emu.cpp"
done
for header in "$root"/cuda/include/*.cuh; do
  case "$(basename "$header")" in common.cuh|mma.cuh) continue ;; esac
  to_host "$header" > "$work/$(basename "$header")"
done

if [ $# -gt 0 ]; then
  harnesses=("$@")
else
  harnesses=()
  for h in "$here"/*_harness.cpp; do harnesses+=("$(basename "$h" _harness.cpp)"); done
fi
options=(-std=c++20 -O1 -Wno-unknown-pragmas)
flags=("${options[@]}" -I "$work" -I "$here")

# Compile (two at a time), reusing a binary whose sources are unchanged. The key leaves out the include paths: $work is a
# fresh temporary folder each run, and with it in the key no binary was ever reused.
key_of() {
  { cat "$here/${1}_harness.cpp" "$here"/*.h "$work"/*.emu.cpp "$work"/*.cuh; echo "${options[*]}"; g++ --version | head -1; } | sha256sum | cut -c1-16
}
compile() {
  local name="$1" key
  key=$(key_of "$name")
  if [ ! -x "$cache/$name-$key" ]; then
    rm -f "$cache/$name"-*
    g++ "${flags[@]}" -include emu_common.h -Winvalid-pch -o "$cache/$name-$key.tmp" "$here/${name}_harness.cpp" || return 1
    mv "$cache/$name-$key.tmp" "$cache/$name-$key"
  fi
  ln -sf "$cache/$name-$key" "$work/$name"
}
# Every harness starts with the shim and the checks (about 2 s of parsing each): when any harness needs compiling, they are
# compiled once into a precompiled header that each compile then loads (same options, so g++ accepts it).
printf '#include "cuda_shim.h"\n#include "bf16_check.h"\n' > "$work/emu_common.h"
for name in "${harnesses[@]}"; do
  if [ -f "$here/${name}_harness.cpp" ] && [ ! -x "$cache/$name-$(key_of "$name")" ]; then
    g++ "${flags[@]}" -x c++-header -o "$work/emu_common.h.gch" "$work/emu_common.h"
    break
  fi
done
for name in "${harnesses[@]}"; do
  [ -f "$here/${name}_harness.cpp" ] || { echo "no harness tests/emulation/${name}_harness.cpp" >&2; exit 2; }
done
jobs_max=${EMU_JOBS:-2}
# Runs "$@" in the background, at most $jobs_max at a time; `wait_all` collects the statuses.
failed_jobs=0
spawn() {
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || failed_jobs=$((failed_jobs + 1)); done
  "$@" &
}
wait_all() { while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed_jobs=$((failed_jobs + 1)); done; wait || true; }

for name in "${harnesses[@]}"; do spawn compile "$name"; done
wait_all
[ "$failed_jobs" -eq 0 ] || { echo "compiling the harnesses failed" >&2; exit 1; }

# Run (each harness is one OS thread, so two at a time), then print the outputs in order.
run_one() { "$work/$1" > "$work/$1.out" 2>&1; echo $? > "$work/$1.rc"; }
for name in "${harnesses[@]}"; do spawn run_one "$name"; done
wait_all
status=0
for name in "${harnesses[@]}"; do
  echo "== harness $name"
  cat "$work/$name.out"
  rc=$(cat "$work/$name.rc" 2>/dev/null || echo 1)
  if [ "$rc" != 0 ]; then echo "harness $name exited $rc"; status=1; fi
done
exit $status

#!/usr/bin/env bash
# Runs cuda/attention.cu on the CPU under the thread-level emulation of cuda_shim.h and compares forward (incl. split-KV
# and combine) and backward (dq, dk, dv, dbias) with a double-precision reference. No GPU needed; about 2 minutes.
# Usage: tests/emulation/run.sh    (needs g++ with C++20)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sed -e 's/extern __shared__ float smem\[\];/float* smem = g_dynamic_smem;/' -e '/#include "common.cuh"/d' \
  "$here/../../cuda/attention.cu" > "$work/attention.emu.cpp"
g++ -std=c++20 -O1 -pthread -I "$work" -o "$work/attention_harness" "$here/attention_harness.cpp"
"$work/attention_harness"

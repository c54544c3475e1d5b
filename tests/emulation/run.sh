#!/usr/bin/env bash
# Runs the softmax-attention kernels on the CPU under the thread-level emulation of cuda_shim.h (and mma_shim.h for the
# tensor-core kernels) against double-precision references: cuda/attention.cu forward (incl. split-KV and combine) and
# backward (dq, dk, dv, dbias) in fp32, bf16 and fp16; cuda/attention_mma.cu forward and backward (and a NaN query row),
# cuda/lightning_mma.cu (the Lightning-2 recurrence, forward and reverse/accumulating sweeps, and a long sequence whose
# state passes fp16's range), cuda/attention_decode.cu with the combine, cuda/tpa_decode.cu's all-heads kernel and
# cuda/latent_attention_mma.cu (MLA's decode on tensor cores) in bf16 and fp16. No GPU needed; several minutes.
# Usage: tests/emulation/run.sh    (needs g++ with C++20). By default (the test suite's run) the cases take the types in turn
# and the heavy decode cases are left out, so it takes about three minutes on two cores; EMU_FULL=1 runs every case in
# every type (.ci/run does, after the test suite; about fifteen minutes).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for kernel in attention attention_mma attention_decode lightning_mma tpa_decode latent_attention latent_attention_mma; do
  sed -e 's/extern __shared__ float \([a-z_]*\)\[\];/float* \1 = g_dynamic_smem;/' -e '/#include "common.cuh"/d' -e '/#include "mma.cuh"/d' \
    "$here/../../cuda/$kernel.cu" > "$work/$kernel.emu.cpp"
done
# Headers that include common.cuh themselves: a copy without it, found first (next to the .emu.cpp files).
sed -e '/#include "common.cuh"/d' "$here/../../cuda/include/split_kv.cuh" > "$work/split_kv.cuh"
g++ -std=c++20 -O1 -pthread -I "$work" -I "$here/../../cuda/include" -o "$work/attention_harness" "$here/attention_harness.cpp"
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$work" -I "$here/../../cuda/include" -o "$work/attention_mma_harness" "$here/attention_mma_harness.cpp"
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$work" -I "$here/../../cuda/include" -o "$work/lightning_mma_harness" "$here/lightning_mma_harness.cpp"
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$work" -I "$here/../../cuda/include" -o "$work/attention_decode_harness" "$here/attention_decode_harness.cpp"
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$work" -I "$here/../../cuda/include" -o "$work/tpa_decode_harness" "$here/tpa_decode_harness.cpp"
g++ -std=c++20 -O1 -pthread -Wno-unknown-pragmas -I "$work" -I "$here/../../cuda/include" -o "$work/latent_attention_mma_harness" "$here/latent_attention_mma_harness.cpp"
status=0
"$work/attention_harness" || status=1
"$work/attention_mma_harness" || status=1
"$work/lightning_mma_harness" || status=1
"$work/attention_decode_harness" || status=1
"$work/tpa_decode_harness" || status=1
"$work/latent_attention_mma_harness" || status=1
exit $status

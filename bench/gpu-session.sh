#!/usr/bin/env bash
# One GPU-host session step, run from the repository root with the GPU bundle carried (./build.sh --target=GpuBundle
# builds artifacts/gpu-bundle and artifacts/attention-native-gpu-bundle.tar.xz; carry the archive, it is unpacked here). Logs and results go to $OUT (the device tool's output folder) or ./gpu-out.
#   bench/gpu-session.sh probe                  nvidia-smi, CUDA libraries, attn info
#   bench/gpu-session.sh tests [filter]         Gpu tests (default: all of them); parity-<device>-<date>.json into $OUT
#   bench/gpu-session.sh memcheck|racecheck [filter]
#                                               the Gpu tests under compute-sanitizer (default filter: the op tests)
#   bench/gpu-session.sh bench [--quick]        the PyTorch peers (bench/peers/torch_peers.py), then attn bench --sweep
#                                               joined with them: <device>-<date>.json/.md/.svg into $OUT; then the serving
#                                               trace (as the serving step)
#   bench/gpu-session.sh vision                 attn bench --vision on CUDA: the 2-D agent/flatten forms at the papers'
#                                               stage-1 shapes beside the 1-D forms and softmax; <device>-<date>-vision.json/.md
#   bench/gpu-session.sh serving [--quick]      attn bench --serving on CUDA in bf16, every causal variant (gqa and mla
#                                               first): the full trace (64 sequences, prompts 128–8k, 256 generated each),
#                                               --quick a reduced one; <device>-<date>-serving.json/.md into $OUT
set -uo pipefail
# The serving trace: full by default, reduced with --quick (16 sequences, prompts 128–2k, 64 generated, a 16k-token pool).
serving() {
  local quick=()
  if [ "${1:-}" = "--quick" ]; then quick=(--sequences 16 --prompt-max 2048 --generate 64 --token-budget 16384); fi
  "$run" attn bench --serving --backend cuda --dtype bf16 --variant gqa mla mha mqa tpa mfa sas transnormer "${quick[@]}" --results "$out" > "$out/serving.log" 2>&1
  local code=$?
  tail -20 "$out/serving.log"
  return $code
}
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
bundle="${GPU_BUNDLE:-artifacts/gpu-bundle}"
run="$bundle/run.sh"
if [ ! -x "$run" ] && [ -f artifacts/attention-native-gpu-bundle.tar.xz ]; then
  tar -C artifacts -xJf artifacts/attention-native-gpu-bundle.tar.xz
fi
export ATTENTION_NATIVE_RESULTS_DIR="$out" ATTENTION_NATIVE_CACHE="${ATTENTION_NATIVE_CACHE:-/tmp/attention-native-kernel-cache}"
step="${1:-probe}"
shift || true
case "$step" in
  probe)
    { nvidia-smi; echo; ldconfig -p | grep -E 'libcuda\.|libnvrtc|libcublas'; find / -name 'libnvrtc.so*' -o -name 'libcublas.so*' -o -name compute-sanitizer 2>/dev/null | grep -v proc | head -20; } > "$out/probe.txt" 2>&1
    "$run" attn info > "$out/info.txt" 2>&1
    cat "$out/probe.txt" "$out/info.txt"
    ;;
  tests)
    export ATTENTION_NATIVE_PARITY_LOG="$out/parity.tsv"
    "$run" test --filter "${1:-TestCategory=Gpu}" > "$out/gpu-tests.log" 2>&1
    code=$?
    grep -E '^\s*failed |Assert|max \|gpu' "$out/gpu-tests.log" | head -40
    tail -1 "$out/gpu-tests.log"
    exit $code
    ;;
  memcheck|racecheck)
    "$run" sanitize "$step" --filter "${1:-FullyQualifiedName~GpuLayerOpTests|FullyQualifiedName~GpuAttentionTests|FullyQualifiedName~GpuDecodeTests|FullyQualifiedName~GpuLinearAttentionTests}" > "$out/$step.log" 2>&1
    code=$?
    grep -E '(ERROR|RACECHECK) SUMMARY|passed, ' "$out/$step.log" | tail -3
    exit $code
    ;;
  bench)
    python="${PYTHON:-$(command -v /opt/torch/.venv/bin/python3 python3 | head -1)}"
    lengths=()
    if [ "${1:-}" = "--quick" ]; then lengths=(--lengths 512 1024); fi
    "$python" bench/peers/torch_peers.py --out "$out/peers.json" "${lengths[@]}" > "$out/peers.log" 2>&1 || echo "torch_peers.py failed: see peers.log"
    peers=()
    if [ -s "$out/peers.json" ]; then peers=(--peers "$out/peers.json"); fi
    "$run" attn bench --sweep --repeats 10 "${lengths[@]}" "${peers[@]}" --results "$out" > "$out/bench.log" 2>&1
    code=$?
    tail -60 "$out/bench.log"
    serving "${1:-}"
    serving_code=$?
    [ $code -ne 0 ] && exit $code
    exit $serving_code
    ;;
  serving)
    serving "${1:-}"
    exit $?
    ;;
  vision)
    "$run" attn bench --vision --backend cuda --repeats 10 --results "$out" > "$out/vision.log" 2>&1
    code=$?
    tail -20 "$out/vision.log"
    exit $code
    ;;
  *)
    echo "usage: $0 probe | tests [filter] | memcheck|racecheck [filter] | bench [--quick] | vision | serving [--quick]" >&2
    exit 2
    ;;
esac

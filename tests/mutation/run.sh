#!/usr/bin/env bash
# Mutation gate: plants each mutant of tests/mutation/mutants.txt, one at a time, in a scratch copy of the working tree
# (C# ops and variants, CUDA kernels), runs the part of the suite that should catch it, and fails unless every mutant
# is killed. A C# mutant is killed when its NUnit filter's tests fail (the test project is rebuilt incrementally first);
# a CUDA mutant when its emulation harness (tests/emulation) reports a failing check. A mutant that does not compile, a
# filter that selects no test, or a `from` text that does not occur exactly once is an error of the gate, not a kill.
# Prints one line per mutant (killed / SURVIVED, seconds) and last `mutants killed N/N`. Exit 0 only when all are killed.
#
# Usage: tests/mutation/run.sh [id …]     (no ids: every mutant; needs the .NET SDK and g++ with C++20 on x86-64)
# To add a mutant: append a stanza to tests/mutation/mutants.txt (id, what, file, from, to, and tests or emu; the file's
# header explains each key), then run `tests/mutation/run.sh <id>` and check it is killed, and
# `MUTATION_CLEAN=1 tests/mutation/run.sh <id>` (the same run on the unmutated code) and check it SURVIVES there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
list="${MUTATION_LIST:-$root/tests/mutation/mutants.txt}" # MUTATION_LIST: another list (to try the gate itself)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
per_mutant_limit=${MUTATION_TIMEOUT:-600} # seconds; a run past it (a hang) counts as a kill

die() { echo "mutation gate error: $*" >&2; exit 2; }

# ---- the mutant list ------------------------------------------------------------------------------------------------
ids=() ; declare -A M
parse() {
  local line key value n=0 id=""
  local -A seen=()
  finish() {
    [ -z "$id" ] && return 0
    local k
    for k in what file from to; do [ -n "${M[$id.$k]:-}" ] || die "mutant $id: no '$k'"; done
    [ -n "${M[$id.tests]:-}${M[$id.emu]:-}" ] || die "mutant $id: neither 'tests' nor 'emu'"
    id=""
  }
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    case "$line" in
      '#'*) continue ;;
      '') finish; continue ;;
    esac
    key=${line%%:*}
    [ "$key" != "$line" ] || die "$list:$n: expected 'key: value'"
    value=${line#*:}; value=${value# }
    if [ "$key" = id ]; then
      finish
      id=$value
      [ -z "${seen[$id]:-}" ] || die "$list:$n: duplicate id $id"
      seen[$id]=1; ids+=("$id")
    else
      [ -n "$id" ] || die "$list:$n: '$key' before any 'id'"
      case "$key" in what|file|from|to|tests|emu|env) M[$id.$key]=$value ;; *) die "$list:$n: unknown key '$key'" ;; esac
    fi
  done < "$list"
  finish
}

# \n → line break, \\ → backslash.
unescape() {
  local s=${1//\\\\/$'\x01'}
  s=${s//\\n/$'\n'}
  printf '%s' "${s//$'\x01'/\\}"
}

# Replaces the single occurrence of $2 with $3 in file $1 (the gate fails if it occurs zero or several times).
apply() {
  local file=$1 from=$2 to=$3 content rest count
  [ -f "$file" ] || die "no file $file"
  content=$(cat "$file"; printf x); content=${content%x}
  rest=${content//"$from"/}
  count=$(( (${#content} - ${#rest}) / ${#from} ))
  [ "$count" -eq 1 ] || die "'$from' occurs $count times in ${file#"$scratch"/} (must be exactly once)"
  printf '%s' "${content/"$from"/"$to"}" > "$file"
}

# ---- the scratch copy -----------------------------------------------------------------------------------------------
scratch=""
cleanup() { if [ -n "$scratch" ]; then rm -rf "$scratch"; fi; }
trap cleanup EXIT

make_scratch() {
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/attn-mutation.XXXXXX")"
  # The working tree as it is (tracked and untracked files that git does not ignore), without build outputs; outside a
  # git checkout, everything but bin, obj, artifacts and .git.
  if git -C "$root" -c safe.directory="$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$root" && git -c safe.directory="$root" ls-files -z -co --exclude-standard |
      tar -cf - --null --no-recursion --ignore-failed-read -T - 2>/dev/null) | tar -xf - -C "$scratch"
  else
    (cd "$root" && tar -cf - --exclude=./.git --exclude=bin --exclude=obj --exclude=./artifacts .) | tar -xf - -C "$scratch"
  fi
  [ -f "$scratch/Attention.Native.sln" ] || die "scratch copy failed"
  # libtorch's glue as tests/torchsharp/prepare.sh left it (the README's test command prepares it): without it the torch
  # reference tests skip, and a mutant only they can catch would survive.
  if [ -d "$root/artifacts/torchsharp-native" ]; then
    mkdir -p "$scratch/artifacts"
    ln -s "$root/artifacts/torchsharp-native" "$scratch/artifacts/torchsharp-native"
  fi
}

# ---- C#: incremental rebuild and an NUnit filter ---------------------------------------------------------------------
# Analyzers and warnings-as-errors are off in the scratch build: a mutant may leave a variable unused, and a style rule
# is not what the gate measures. Only the test project (and what it references) is built.
tests_dir=tests/Attention.Native.Tests
built=0
dotnet_build() {
  dotnet build "$scratch/$tests_dir" -c Release -nologo -v:q "$@" \
    -p:RunAnalyzers=false -p:EnforceCodeStyleInBuild=false -p:TreatWarningsAsErrors=false -p:GenerateDocumentationFile=false
}

# Runs filter $1: 0 when every selected test passed, 1 when one failed (or the run crashed), 2 when the filter selected none.
run_tests() {
  local filter=$1 out code=0
  out=$(timeout "$per_mutant_limit" dotnet "$scratch/$tests_dir/bin/Release/net10.0/Attention.Native.Tests.dll" --no-ansi --progress off \
    --filter "$filter" --results-directory "$scratch/artifacts/TestResults" 2>&1) || code=$?
  last_output=$out
  case $code in
    0) return 0 ;;
    8) return 2 ;; # Microsoft.Testing.Platform: zero tests ran
    *) return 1 ;;
  esac
}

# ---- CUDA: one emulation harness -------------------------------------------------------------------------------------
# Isolated here so it can follow tests/emulation/run.sh, which takes harness names (`run.sh [harness…]`) and compiles
# the kernels it includes from the scratch copy's cuda/ (its binary cache, artifacts/emulation, lies in the scratch copy
# too, keyed by the sources' hash, so every mutant is compiled afresh). Returns 0 when the harness passes, 1 when a
# check fails (or it crashes or hangs), 2 when it does not compile.
run_emulation() {
  local harness=$1 out code=0
  [ -f "$scratch/tests/emulation/${harness}_harness.cpp" ] || die "no emulation harness tests/emulation/${harness}_harness.cpp"
  out=$(timeout "$per_mutant_limit" bash "$scratch/tests/emulation/run.sh" "$harness" 2>&1) || code=$?
  last_output=$out
  if [ "$code" -eq 0 ]; then
    return 0
  elif grep -qE ': (fatal )?error:|compiling the harnesses failed' <<< "$out"; then
    # (g++'s diagnostics are looked for too: run.sh may go on to run a harness whose compilation failed.)
    return 2
  fi
  return 1
}

# ---- the gate -------------------------------------------------------------------------------------------------------
parse
selected=("$@")
if [ ${#selected[@]} -eq 0 ]; then selected=("${ids[@]}"); fi
for id in "${selected[@]}"; do [ -n "${M[$id.file]:-}" ] || die "no mutant '$id' in $list"; done

make_scratch
start=$SECONDS
need_build=0
for id in "${selected[@]}"; do [ -n "${M[$id.tests]:-}" ] && need_build=1; done
if [ "$need_build" -eq 1 ]; then
  t0=$SECONDS
  out=$(dotnet_build 2>&1) || { echo "$out" | tail -30; die "the clean scratch copy does not build"; }
  echo "clean build of the scratch copy: $((SECONDS - t0)) s"
fi

killed=0 total=0
for id in "${selected[@]}"; do
  total=$((total + 1))
  file="$scratch/${M[$id.file]}"
  from=$(unescape "${M[$id.from]}"); to=$(unescape "${M[$id.to]}")
  cp "$file" "$scratch/.original"
  apply "$file" "$from" "$to"
  # MUTATION_CLEAN=1: the same runs on the unmutated code (each must pass: a check of the gate itself).
  if [ "${MUTATION_CLEAN:-0}" = 1 ]; then cp "$scratch/.original" "$file"; fi
  t0=$SECONDS
  verdict="" last_output=""
  (
    # The extra environment of this mutant only.
    if [ -n "${M[$id.env]:-}" ]; then for kv in ${M[$id.env]}; do export "${kv?}"; done; fi
    result=0
    if [ -n "${M[$id.tests]:-}" ]; then
      out=$(dotnet_build --no-restore 2>&1) || { echo "$out" | grep -E 'error' | head -10 >&2; exit 3; }
      run_tests "${M[$id.tests]}" || result=$?
      [ "$result" -eq 2 ] && { echo "filter '${M[$id.tests]}' selected no test" >&2; exit 3; }
      [ "$result" -eq 1 ] && exit 1
    fi
    if [ -n "${M[$id.emu]:-}" ]; then
      result=0
      run_emulation "${M[$id.emu]}" || result=$?
      [ "$result" -eq 2 ] && { echo "$last_output" | grep -E 'error' | head -10 >&2; exit 3; }
      [ "$result" -eq 1 ] && exit 1
    fi
    exit 0
  ) && code=0 || code=$?
  cp "$scratch/.original" "$file"
  case $code in
    1) verdict=killed; killed=$((killed + 1)) ;;
    0) verdict=SURVIVED ;;
    *) die "mutant $id does not build or selects no test (an error of the gate, not a kill)" ;;
  esac
  printf '%-34s %-8s %4d s  %s\n' "$id" "$verdict" "$((SECONDS - t0))" "${M[$id.what]}"
done
echo "total $((SECONDS - start)) s"
echo "mutants killed $killed/$total"
[ "$killed" -eq "$total" ]

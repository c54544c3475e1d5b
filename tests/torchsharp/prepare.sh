#!/usr/bin/env bash
# Makes TorchSharp's native library loadable for the torch reference tests (tests/Attention.Native.Tests/TorchReference)
# on a system whose libstdc++ is older than the one it was built against, without changing any file of the NuGet cache.
#
# TorchSharp-cpu 0.107.0's libLibTorchSharp.so needs the symbol version GLIBCXX_3.4.32 (GCC 13's libstdc++); Debian 12 has
# GLIBCXX_3.4.30, so the loader refuses the library as shipped. Only one symbol carries that version,
# std::ios_base_library_init, which <iostream> names without calling (the library has no relocation against it, so it is
# never resolved). This script:
#   1. finds the restored TorchSharp and libtorch-cpu-linux-x64 packages through the test project's obj/project.assets.json
#      (restoring the project first if needed);
#   2. if the shipped library loads as it is (ldd finds every library and version), removes any earlier copy and stops;
#   3. otherwise copies it to artifacts/torchsharp-native/libLibTorchSharp.so and, in that copy only, marks the needed
#      version GLIBCXX_3.4.32 weak (weaken_version.py: two bytes, its vna_flags; it refuses unless the only symbol of that
#      version is std::ios_base_library_init and no relocation refers to it). `patchelf --clear-symbol-version` is not
#      enough: it unversions the symbol but leaves the needed-version entry, which glibc checks all the same;
#   4. checks with ldd that the copy now loads, and writes artifacts/torchsharp-native/source.txt (the SHA-256 and path of
#      the file it was copied from), by which the tests know the copy belongs to the TorchSharp they run with.
# The tests load that copy in place of the shipped one (TorchReference/TorchRuntime.cs); without it they skip with the reason.
# Exit 0 with a line saying what it did; non-zero only on a usage error (a missing tool or package is reported, exit 0,
# and the tests then skip).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
project="$root/tests/Attention.Native.Tests"
out="$root/artifacts/torchsharp-native"
say() { echo "torchsharp/prepare: $*"; }

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  say "not Linux x64: nothing to prepare (TorchSharp loads its own native library)"
  exit 0
fi
for tool in python3 ldd; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    say "no $tool: not prepared (the torch reference tests will skip)"
    exit 0
  fi
done
assets="$project/obj/project.assets.json"
if [ ! -f "$assets" ]; then
  dotnet restore "$project" -v:q >/dev/null
fi
# The packages' folders: packageFolders (the NuGet cache in use) joined with each library's path.
torchsharp=- libtorch=-
read -r torchsharp libtorch < <(python3 - "$assets" <<'EOF'
import json, os, sys
assets = json.load(open(sys.argv[1]))
folders = list(assets.get("packageFolders", {}))
def find(prefix):
    for name, library in assets.get("libraries", {}).items():
        if name.lower().startswith(prefix):
            for folder in folders:
                path = os.path.join(folder, library["path"])
                if os.path.isdir(path):
                    return path
    return "-"
print(find("torchsharp/"), find("libtorch-cpu-linux-x64/"))
EOF
) || true
shipped="$torchsharp/runtimes/linux-x64/native/libLibTorchSharp.so"
libtorch_dir="$libtorch/runtimes/linux-x64/native"
if [ ! -f "$shipped" ] || [ ! -d "$libtorch_dir" ]; then
  say "TorchSharp or libtorch-cpu-linux-x64 is not restored ($assets): not prepared (the torch reference tests will skip)"
  exit 0
fi

# Lines of ldd that mean the library cannot load (a missing library or a missing version that is not weak).
problems() { LD_LIBRARY_PATH="$libtorch_dir" ldd "$1" 2>&1 | grep -E 'not found' | grep -v 'weak version' || true; }

refused="$(problems "$shipped")"
if [ -z "$refused" ]; then
  rm -rf "$out"
  say "$shipped loads as shipped: nothing to prepare"
  exit 0
fi
mkdir -p "$out"
rm -f "$out/libLibTorchSharp.so" "$out/source.txt"
cp "$shipped" "$out/libLibTorchSharp.so.tmp"
chmod u+w "$out/libLibTorchSharp.so.tmp"
if ! python3 "$root/tests/torchsharp/weaken_version.py" "$out/libLibTorchSharp.so.tmp" GLIBCXX_3.4.32 _ZSt21ios_base_library_initv; then
  rm -f "$out/libLibTorchSharp.so.tmp"
  say "the shipped library cannot load ($refused) and is not the case this script mends: not prepared"
  exit 0
fi
left="$(problems "$out/libLibTorchSharp.so.tmp")"
if [ -n "$left" ]; then
  rm -f "$out/libLibTorchSharp.so.tmp"
  say "the mended copy still cannot load ($left): not prepared"
  exit 0
fi
mv "$out/libLibTorchSharp.so.tmp" "$out/libLibTorchSharp.so"
echo "$(sha256sum "$shipped" | cut -d' ' -f1) $shipped" > "$out/source.txt"
say "$out/libLibTorchSharp.so: a copy of $shipped with its needed version GLIBCXX_3.4.32 marked weak (the NuGet cache is unchanged)"

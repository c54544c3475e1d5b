#!/usr/bin/env python3
"""Marks one needed symbol version of an ELF64 shared library weak (VER_FLG_WEAK), in place, after checking that no
relocation can need it.

Usage: weaken_version.py LIBRARY VERSION [SYMBOL …]

glibc refuses to load a library that needs a version its dependency lacks (`version 'GLIBCXX_3.4.32' not found`), whether
or not anything is bound to it; for a version whose needed entry is flagged weak it only notes the absence and loads.
That is safe only when nothing will be looked up under that version, so the script first checks that the symbols
carrying VERSION are exactly the SYMBOLs given and that no relocation refers to any of them (an undefined symbol that no
relocation names is never resolved), and refuses otherwise. It changes the two-byte vna_flags field of the entry and
nothing else. Exit 0: patched (or already weak); 1: refused, with the reason on stderr.
"""
import struct
import sys

SHT_DYNSYM, SHT_RELA, SHT_REL = 11, 4, 9
SHT_GNU_VERNEED, SHT_GNU_VERSYM = 0x6FFFFFFE, 0x6FFFFFFF
VER_FLG_WEAK = 0x2


def refuse(message):
    print(f"weaken_version: {message}", file=sys.stderr)
    sys.exit(1)


def cstring(data, offset):
    return bytes(data[offset:data.index(b"\0", offset)]).decode()


def main():
    if len(sys.argv) < 3:
        refuse("usage: weaken_version.py LIBRARY VERSION [SYMBOL …]")
    path, version, allowed = sys.argv[1], sys.argv[2], set(sys.argv[3:])
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        refuse(f"{path}: not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    # (sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign, sh_entsize)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    def of_type(kind):
        return [s for s in sections if s[1] == kind]

    # The needed entry (vernaux) named VERSION: its offset and its version index (vna_other).
    entries = []
    for verneed in of_type(SHT_GNU_VERNEED):
        strings, position = sections[verneed[6]][4], verneed[4]
        for _ in range(verneed[7]):
            _, count, _, aux, following = struct.unpack_from("<HHIII", data, position)
            at = position + aux
            for _ in range(count):
                _, flags, index, name, step = struct.unpack_from("<IHHII", data, at)
                if cstring(data, strings + name) == version:
                    entries.append((at, flags, index))
                at += step
            position += following
    if len(entries) != 1:
        refuse(f"{path}: expected one needed version {version}, found {len(entries)}")
    at, flags, index = entries[0]

    # The dynamic symbols whose version index is that entry's (the hidden bit 0x8000 aside).
    dynsym, versym = of_type(SHT_DYNSYM), of_type(SHT_GNU_VERSYM)
    if len(dynsym) != 1 or len(versym) != 1:
        refuse(f"{path}: expected one .dynsym and one .gnu.version section")
    dynsym, versym = dynsym[0], versym[0]
    strings, count = sections[dynsym[6]][4], dynsym[5] // 24
    carriers = {}
    for i in range(count):
        (symbol_version,) = struct.unpack_from("<H", data, versym[4] + 2 * i)
        if symbol_version & 0x7FFF == index:
            (name,) = struct.unpack_from("<I", data, dynsym[4] + 24 * i)
            carriers[i] = cstring(data, strings + name)
    unexpected = sorted(set(carriers.values()) - allowed)
    if unexpected:
        refuse(f"{path}: {version} is needed by symbols other than {sorted(allowed)}: {unexpected}")

    # No relocation against those symbols: nothing is ever resolved under the version.
    for relocations in of_type(SHT_RELA) + of_type(SHT_REL):
        if relocations[6] >= len(sections) or sections[relocations[6]] is not dynsym:
            continue
        size = 24 if relocations[1] == SHT_RELA else 16
        for r in range(relocations[5] // size):
            (info,) = struct.unpack_from("<Q", data, relocations[4] + size * r + 8)
            if info >> 32 in carriers:
                refuse(f"{path}: a relocation refers to {carriers[info >> 32]} (version {version}); it would be resolved")

    if flags & VER_FLG_WEAK:
        print(f"weaken_version: {version} is already weak in {path}")
        return
    struct.pack_into("<H", data, at + 4, flags | VER_FLG_WEAK)
    with open(path, "r+b") as f:
        f.seek(at + 4)
        f.write(data[at + 4:at + 6])
    print(f"weaken_version: {path}: needed version {version} (index {index}, symbols {sorted(set(carriers.values()))}) marked weak")


main()

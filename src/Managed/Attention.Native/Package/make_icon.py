#!/usr/bin/env python3
"""Draws the package icon, icon.png (128x128 RGBA): a causal attention map, brighter towards the diagonal, on a rounded
dark square. Standard library only (a minimal PNG writer), so it runs anywhere python3 does:
    python3 src/Managed/Attention.Native/Package/make_icon.py
The output is deterministic: rerunning it gives the same bytes."""
import math
import os
import struct
import zlib

SIZE = 128
CELLS = 6          # attention map of 6 queries x 6 keys
MARGIN = 18        # from the icon's edge to the map
GAP = 3            # between cells
RADIUS = 22        # corner radius of the background square
BACKGROUND = (24, 28, 52)
DIM = (44, 50, 84)             # masked (future) keys
LOW, HIGH = (40, 120, 200), (120, 230, 170)   # weight colour from small to large


def coverage(x, y):
    """Fraction of pixel (x, y) inside the rounded square, sampled 4x4 for smooth corners."""
    inside = 0
    for sy in range(4):
        for sx in range(4):
            px, py = x + (sx + 0.5) / 4, y + (sy + 0.5) / 4
            cx = min(max(px, RADIUS), SIZE - RADIUS)
            cy = min(max(py, RADIUS), SIZE - RADIUS)
            inside += (px - cx) ** 2 + (py - cy) ** 2 <= RADIUS ** 2
    return inside / 16


def pixel(x, y):
    alpha = coverage(x, y)
    if alpha == 0:
        return (0, 0, 0, 0)
    colour = BACKGROUND
    cell = (SIZE - 2 * MARGIN + GAP) / CELLS
    i, j = (y - MARGIN) / cell, (x - MARGIN) / cell
    if 0 <= i < CELLS and 0 <= j < CELLS and (y - MARGIN) % cell < cell - GAP and (x - MARGIN) % cell < cell - GAP:
        q, k = int(i), int(j)
        if k > q:
            colour = DIM
        else:
            # a softmax row over the visible keys, recency-weighted: the diagonal is the largest weight
            weights = [math.exp(0.9 * (t - q)) for t in range(q + 1)]
            w = weights[k] / max(weights)
            colour = tuple(round(lo + (hi - lo) * w) for lo, hi in zip(LOW, HIGH))
    return colour + (round(255 * alpha),)


def png(width, height, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + bytes(v for p in row for v in p) for row in rows)
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


if __name__ == "__main__":
    rows = [[pixel(x, y) for x in range(SIZE)] for y in range(SIZE)]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "icon.png")
    with open(out, "wb") as f:
        f.write(png(SIZE, SIZE, rows))
    print(out)

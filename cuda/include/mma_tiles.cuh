// Attention.Native: swizzled 16-bit shared tiles and the mma fragments read from them, shared by the tensor-core kernels.
// Built only on the API of mma.cuh (ldmatrix_x4, ldmatrix_x4_trans, pack2, the frag types), which the including file
// provides: kernels include mma.cuh first; tests/emulation provides mma_shim.h instead, so this header stays plain C++.
#pragma once

// Element offset of (row, 8-wide chunk) in a swizzled tile of W 16-bit columns (a multiple of 64, or 32): 16-byte chunk c
// of row r is stored at c ^ (r % 8), so ldmatrix's eight row reads of one chunk column hit eight different bank groups.
// Rows of 32 columns (four chunks, two rows to a 128-byte line) store chunk c at c ^ ((r / 2) % 4), for the same reason.
template <int W>
__device__ __forceinline__ int swizzled(int row, int chunk)
{
    // c ^ key permutes chunks only within an aligned group of 8 (4 for 32 columns): any other width would send chunks
    // past the end of the row, onto the next one.
    static_assert(W == 32 || (W >= 64 && W % 64 == 0), "swizzled tiles are 32 or a multiple of 64 16-bit columns wide");
    const int key = W >= 64 ? (row & 7) : ((row >> 1) & 3);
    return row * W + ((chunk ^ key) << 3);
}

// In every loader lane feeds the row address of row (lane % 8) of matrix (lane / 8).

// A-fragment of the warp's 16 rows (row0 + 0…15) × column block kk (16 columns) of a swizzled tile.
template <int W>
__device__ __forceinline__ void load_a(frag_a& f, const void* tile, int row0, int kk, int lane)
{
    const int mi = lane / 8, mr = lane % 8;
    ldmatrix_x4(f.r, static_cast<const unsigned short*>(tile) + swizzled<W>(row0 + (mi & 1) * 8 + mr, kk * 2 + (mi >> 1)));
}

// A-fragment of Aᵀ where the tile holds A's columns as rows: A rows m0 + 0…15 are tile columns m0…, A's k block kk is
// tile rows kk·16 + 0…15 (transposed reads).
template <int W>
__device__ __forceinline__ void load_at(frag_a& f, const void* tile, int m0, int kk, int lane)
{
    const int mi = lane / 8, mr = lane % 8;
    ldmatrix_x4_trans(f.r, static_cast<const unsigned short*>(tile) + swizzled<W>(kk * 16 + (mi >> 1) * 8 + mr, m0 / 8 + (mi & 1)));
}

// B-fragments for row blocks n and n + 1 (8 rows each) × column block kk of a swizzled tile whose rows are B's columns
// (B = tileᵀ): b0 for block n, b1 for block n + 1.
template <int W>
__device__ __forceinline__ void load_bt(frag_b& b0, frag_b& b1, const void* tile, int n, int kk, int lane)
{
    const int mi = lane / 8, mr = lane % 8;
    unsigned r[4];
    ldmatrix_x4(r, static_cast<const unsigned short*>(tile) + swizzled<W>((n + (mi >> 1)) * 8 + mr, kk * 2 + (mi & 1)));
    b0 = {{r[0], r[1]}};
    b1 = {{r[2], r[3]}};
}

// B-fragments for row block n (8 rows) × column blocks kk and kk + 1 of a swizzled tile whose rows are B's columns: b0 for
// k-step kk, b1 for k-step kk + 1 (one 8-wide B block over two k-steps, where load_bt gives two blocks over one).
template <int W>
__device__ __forceinline__ void load_bt_k2(frag_b& b0, frag_b& b1, const void* tile, int n, int kk, int lane)
{
    const int mi = lane / 8, mr = lane % 8;
    unsigned r[4];
    ldmatrix_x4(r, static_cast<const unsigned short*>(tile) + swizzled<W>(n * 8 + mr, kk * 2 + mi));
    b0 = {{r[0], r[1]}};
    b1 = {{r[2], r[3]}};
}

// B-fragments for rows kk·16 … +15 (B's k) × column blocks n and n + 1 (B's n) of a swizzled tile used as B directly.
template <int W>
__device__ __forceinline__ void load_b(frag_b& b0, frag_b& b1, const void* tile, int kk, int n, int lane)
{
    const int mi = lane / 8, mr = lane % 8;
    unsigned r[4];
    ldmatrix_x4_trans(r, static_cast<const unsigned short*>(tile) + swizzled<W>(kk * 16 + (mi & 1) * 8 + mr, n + (mi >> 1)));
    b0 = {{r[0], r[1]}};
    b1 = {{r[2], r[3]}};
}

// acc[n] += a·B for n < N: B = column blocks n0 … n0 + N − 1 of a swizzled tile of W columns used directly, its rows
// kk·16 … + 15 being the k of this step.
template <typename T, int W, int N>
__device__ __forceinline__ void mma_tile_b(frag_c (&acc)[N], const frag_a& a, const void* tile, int kk, int n0, int lane)
{
#pragma unroll
    for (int n = 0; n < N; n += 2) {
        frag_b b0, b1;
        load_b<W>(b0, b1, tile, kk, n0 + n, lane);
        mma_16816<T>(acc[n], a, b0);
        mma_16816<T>(acc[n + 1], a, b1);
    }
}

// C fragments of 16 × 8·N columns → A fragments (rounded to T): the C layout of columns 16kk…16kk+15 is the A layout.
template <typename T, int N>
__device__ __forceinline__ void c_to_a(frag_a (&a)[N / 2], const frag_c (&c)[N])
{
#pragma unroll
    for (int n = 0; n < N; ++n) {
        a[n / 2].r[(n & 1) * 2 + 0] = pack2<T>(c[n].c[0], c[n].c[1]);
        a[n / 2].r[(n & 1) * 2 + 1] = pack2<T>(c[n].c[2], c[n].c[3]);
    }
}

// C fragments of the warp's 16 rows × 8·N columns → rows row0 + 0…15, chunks c0 … c0 + N − 1 of a swizzled tile of W
// columns, rounded to T (for a product another warp, or the next step, reads back as an operand).
template <typename T, int W, int N>
__device__ __forceinline__ void store_c(void* tile, int row0, int c0, const frag_c (&c)[N], int lane)
{
    unsigned short* t = static_cast<unsigned short*>(tile);
    const int row = row0 + lane / 4, col = (lane % 4) * 2;
#pragma unroll
    for (int n = 0; n < N; ++n) {
        *reinterpret_cast<unsigned*>(t + swizzled<W>(row, c0 + n) + col) = pack2<T>(c[n].c[0], c[n].c[1]);
        *reinterpret_cast<unsigned*>(t + swizzled<W>(row + 8, c0 + n) + col) = pack2<T>(c[n].c[2], c[n].c[3]);
    }
}

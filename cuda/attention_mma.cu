// Attention.Native: softmax attention forward and backward on tensor cores (bf16/fp16 storage, fp32 accumulation; sm_80+).
// The fast path of attention.cu without a bias: forward and backward for head widths (d_qk, d_v) of (64, 64), (128, 128),
// (192, 128) and (256, 128). Same layouts, same outputs (o and the row log-sum-exp; gradients added into dq, dk, dv),
// held to the same parity tests.
//
// FlashAttention-2's schedule: a block owns 64 query rows (16 per warp, kept in registers as mma A fragments), walks the
// key tiles of 64 with an online softmax, and never writes scores out. The forward's K and V tiles are double-buffered:
// tile j + 1 streams in with cp.async while tile j is computed. Tiles past a causal row's last key are never loaded. Shared rows are swizzled (16-byte chunk c of row r stored at c ^ (r % 8)) so ldmatrix's eight
// row reads hit eight different bank groups.
// A ragged batch (attention_shape.cuh): the grids' batch index is the sequence and their tile counts the longest
// sequence's; a block past its own sequence's query (or key) tiles exits at once. Rows are addressed by packed token
// (attention_query_token, attention_key_token), so a dense batch indexes exactly as before. The forward also reads paged
// keys (attention_shape.cuh: k and v are page pools read through block tables). Every row goes through its tensor's strides
// (attention_row): any view whose last axis is contiguous, as long as its rows start on 16 bytes (the launcher checks).
#include "common.cuh"
#include "attention_shape.cuh"
#include "mma.cuh"
#include "mma_tiles.cuh"

#define MMA_WARPS 4
#define MMA_THREADS (MMA_WARPS * 32)
#define MMA_BQ (MMA_WARPS * 16) // query rows per block
#define MMA_BK 64               // keys per tile

// rows [row0, row0 + rows_in_tile) of head `head` of batch entry b of a [B, T, heads, D] tensor with rows `strides`
// (attention_shape.cuh), whose row i is token token0 + i → a swizzled shared tile; rows ≥ `rows_valid` are zero-filled.
// THREADS: the block's size. The rows may instead be any TokenKeys' (paged_keys.cuh): row i is token rows.row(i), as for the
// forward's paged keys. 16-byte copies: the launcher passes only tensors whose rows start on 16 bytes.
template <typename T, int D, int THREADS = MMA_THREADS>
__device__ __forceinline__ void load_tile(T* tile, const T* src, int rows_in_tile, int row0, int rows_valid, const TokenKeys& rows,
                                          const RowStrides& strides, int b, int head)
{
    constexpr int chunks = D / 8;
    for (int e = threadIdx.x; e < rows_in_tile * chunks; e += THREADS) {
        const int r = e / chunks, c = e % chunks, i = row0 + r;
        const bool valid = i < rows_valid;
        const T* from = src + (attention_row(strides, b, rows.row(valid ? i : 0), head) + c * 8);
        cp_async_16(tile + swizzled<D>(r, c), from, valid);
    }
}

template <typename T, int D, int THREADS = MMA_THREADS>
__device__ __forceinline__ void load_tile(T* tile, const T* src, int rows_in_tile, int row0, int rows_valid, index_t token0,
                                          const RowStrides& strides, int b, int head)
{
    load_tile<T, D, THREADS>(tile, src, rows_in_tile, row0, rows_valid, packed_rows(token0), strides, b, head);
}

// Forward. grid (ceil(Tq / 64), H, B), block MMA_THREADS, dynamic shared memory 64·(3·DQK + 2·DV)·sizeof(T) (Q; K, V twice).
// Head widths (DQK, DV): (64, 64), (128, 128), MLA's (192, 128), SAS's (256, 128).
// Block x takes query tile (tiles − 1 − x): with a causal mask the longest rows start first.
template <typename T, int DQK, int DV>
__global__ void __launch_bounds__(MMA_THREADS)
attention_forward_mma(T* __restrict__ o, float* __restrict__ lse, const T* __restrict__ q, const T* __restrict__ k,
                      const T* __restrict__ v, const AttentionShape launched)
{
    extern __shared__ float smem[];
    AttentionShape s = launched;
    T* qs = reinterpret_cast<T*>(smem);
    T* kbuf = qs + MMA_BQ * DQK;      // K tiles j even, j odd
    T* vbuf = kbuf + 2 * MMA_BK * DQK; // V tiles j even, j odd

    const int q_tiles = (s.tq + MMA_BQ - 1) / MMA_BQ;
    const int tile = q_tiles - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int g = h / (s.heads / s.kv_heads);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = tile * MMA_BQ;
    attention_sequence(s, b);
    if (row0 >= s.tq) {
        return; // past this (ragged) sequence's rows
    }
    const TokenKeys key_rows = attention_keys(launched, b); // packed tokens, or the sequence's pages
    const int keys = attention_tile_keys(s, row0, MMA_BQ);
    // Rows of this block see at least this many keys: tiles wholly below it need no mask.
    const int unmasked = attention_visible(s, row0);

    // Copy groups, two per tile: (Q and) K(j), then V(j).
    load_tile<T, DQK>(qs, q, MMA_BQ, row0, s.tq, attention_query_token(launched, b, 0), launched.strides.q, b, h);
    load_tile<T, DQK>(kbuf, k, MMA_BK, 0, keys, key_rows, launched.strides.k, b, g);
    cp_async_commit();
    load_tile<T, DV>(vbuf, v, MMA_BK, 0, keys, key_rows, launched.strides.v, b, g);
    cp_async_commit();

    // This lane's two rows (g = lane / 4 and g + 8 of the warp's 16) and their key limits.
    const int my_row = row0 + warp * 16 + lane / 4;
    const int visible[2] = {my_row < s.tq ? attention_visible(s, my_row) : keys,
                            my_row + 8 < s.tq ? attention_visible(s, my_row + 8) : keys};
    const float scale_log2 = s.scale * LOG2E; // scores in log2 units: exp2 is one instruction
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};
    frag_c acc[DV / 8];
#pragma unroll
    for (int n = 0; n < DV / 8; ++n) {
        frag_zero(acc[n]);
    }
    frag_a qf[DQK / 16];

    const int tiles = (keys + MMA_BK - 1) / MMA_BK;
    for (int j = 0; j < tiles; ++j) {
        const int kb = j * MMA_BK;
        const T* ks = kbuf + (j & 1) * MMA_BK * DQK;
        const T* vs = vbuf + (j & 1) * MMA_BK * DV;
        // Tile j + 1 into the other buffers (free: every warp finished tile j − 1 at the last barrier).
        if (j + 1 < tiles) {
            load_tile<T, DQK>(kbuf + ((j + 1) & 1) * MMA_BK * DQK, k, MMA_BK, kb + MMA_BK, keys, key_rows, launched.strides.k, b, g);
        }
        cp_async_commit(); // (possibly empty) so the group count stays uniform
        if (j + 1 < tiles) {
            load_tile<T, DV>(vbuf + ((j + 1) & 1) * MMA_BK * DV, v, MMA_BK, kb + MMA_BK, keys, key_rows, launched.strides.v, b, g);
        }
        cp_async_commit();
        cp_async_wait<3>(); // K(j) (and at j = 0, Q) has landed; V(j) and tile j + 1 may still be in flight
        __syncthreads();
        if (j == 0) {
            // Matrices: rows 0–7 / 8–15 × columns 0–7 / 8–15 of each 16×16 block → r[0..3] of the A fragment.
#pragma unroll
            for (int kk = 0; kk < DQK / 16; ++kk) {
                load_a<DQK>(qf[kk], qs, warp * 16, kk, lane);
            }
        }

        // S = Q·K(j)ᵀ for the warp's 16 rows × 64 keys. B = Kᵀ: column n of B is key n, read straight from K's rows.
        frag_c sc[MMA_BK / 8];
#pragma unroll
        for (int n = 0; n < MMA_BK / 8; ++n) {
            frag_zero(sc[n]);
        }
#pragma unroll
        for (int kk = 0; kk < DQK / 16; ++kk) {
#pragma unroll
            for (int n = 0; n < MMA_BK / 8; n += 2) {
                // Matrices: keys of block n, then n + 1; columns kk·16 + 0–7, then + 8–15.
                frag_b b0, b1;
                load_bt<DQK>(b0, b1, ks, n, kk, lane);
                mma_16816<T>(sc[n], qf[kk], b0);
                mma_16816<T>(sc[n + 1], qf[kk], b1);
            }
        }

        // Online softmax over this tile for rows g (c[0], c[1]) and g + 8 (c[2], c[3]).
        const bool mask = kb + MMA_BK > unmasked;
        float tile_max[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int n = 0; n < MMA_BK / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = kb + n * 8 + (lane % 4) * 2 + (e & 1);
                float x = sc[n].c[e] * scale_log2;
                if (mask && key >= visible[e >> 1]) {
                    x = NEG_INF;
                }
                sc[n].c[e] = x;
                tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
            }
        }
        float correction[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            // The row's 64 scores live in the 4 lanes of a quad.
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
            const float m_new = fmaxf(m[r], tile_max[r]);
            const float base = m_new == NEG_INF ? 0.0f : m_new; // nothing visible yet: keep exponents finite
            correction[r] = exp2f(m[r] - base);
            m[r] = m_new;
            l[r] *= correction[r];
        }
#pragma unroll
        for (int n = 0; n < DV / 8; ++n) {
            acc[n].c[0] *= correction[0];
            acc[n].c[1] *= correction[0];
            acc[n].c[2] *= correction[1];
            acc[n].c[3] *= correction[1];
        }
        // P = exp2(x − m) rounded to T, packed straight into A fragments: the C layout of S columns 16kk…16kk+15 is
        // the A layout of P's k-block kk.
        // (Packed as each probability is made: computing all of S first and converting after spills at d 128 on sm_80.)
        frag_a pf[MMA_BK / 16];
#pragma unroll
        for (int n = 0; n < MMA_BK / 8; ++n) {
            float p[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float base = m[e >> 1] == NEG_INF ? 0.0f : m[e >> 1];
                p[e] = exp2f(sc[n].c[e] - base);
            }
            l[0] += p[0] + p[1];
            l[1] += p[2] + p[3];
            pf[n / 2].r[(n & 1) * 2 + 0] = pack2<T>(p[0], p[1]);
            pf[n / 2].r[(n & 1) * 2 + 1] = pack2<T>(p[2], p[3]);
        }

        cp_async_wait<2>(); // V(j) has landed; tile j + 1 may still be in flight
        __syncthreads();
        // O += P·V(j). B = V: rows are keys, so each fragment is a transposed 8×8 read.
#pragma unroll
        for (int kk = 0; kk < MMA_BK / 16; ++kk) {
            mma_tile_b<T, DV>(acc, pf[kk], vs, kk, 0, lane);
        }
        __syncthreads(); // every warp is done with tile j: its buffers take tile j + 2
    }
    cp_async_wait<0>();

    // Row sums are spread over the quad like the scores.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = my_row + r * 8;
        if (i >= s.tq) {
            continue;
        }
        const float inv = l[r] == 0.0f ? 0.0f : 1.0f / l[r]; // a NaN sum stays NaN
        T* out = o + attention_row(launched.strides.o, b, attention_query_token(launched, b, i), h) + (lane % 4) * 2;
#pragma unroll
        for (int n = 0; n < DV / 8; ++n) {
            out[n * 8] = from_float<T>(acc[n].c[r * 2] * inv);
            out[n * 8 + 1] = from_float<T>(acc[n].c[r * 2 + 1] * inv);
        }
        if (lane % 4 == 0) {
            // Natural-log units, as attention.cu writes it: ln Σ exp(scale·s) = (m + log2 l)·ln 2. −∞ only for a row that sees
            // nothing (l = 0): a NaN row keeps its NaN.
            lse[attention_lse_row(launched, b, h, i)] = l[r] == 0.0f ? NEG_INF : (m[r] + log2f(l[r])) * 0.6931471805599453f;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Backward on tensor cores, as attention.cu's: delta = rowsum(dO ∘ O) comes from attention_backward_delta; then one
// kernel per query tile for dq and one per key tile for dk, dv (summed over the KV group's heads), each recomputing
// P = exp(scale·q·k − lse) from the saved log-sum-exp, so no atomics and no T×T buffer. Gradients are added into dq, dk,
// dv as they are (the op's contract).

// The two products each backward kernel starts from: x = A1·B1ᵀ over width D1 and y = A2·B2ᵀ over width D2, for the warp's
// 16 rows (row0…) of swizzled tiles A1, A2 against the first 8·N rows of swizzled tiles B1, B2.
template <typename T, int D1, int D2, int N>
__device__ __forceinline__ void two_products(frag_c (&x)[N], frag_c (&y)[N], const T* a1, const T* b1, const T* a2, const T* b2,
                                             int row0, int lane)
{
#pragma unroll
    for (int n = 0; n < N; ++n) {
        frag_zero(x[n]);
        frag_zero(y[n]);
    }
#pragma unroll
    for (int kk = 0; kk < (D1 > D2 ? D1 : D2) / 16; ++kk) {
        frag_a f;
        frag_b lo, hi;
        if (kk < D1 / 16) {
            load_a<D1>(f, a1, row0, kk, lane);
#pragma unroll
            for (int n = 0; n < N; n += 2) {
                load_bt<D1>(lo, hi, b1, n, kk, lane);
                mma_16816<T>(x[n], f, lo);
                mma_16816<T>(x[n + 1], f, hi);
            }
        }
        if (kk < D2 / 16) {
            load_a<D2>(f, a2, row0, kk, lane);
#pragma unroll
            for (int n = 0; n < N; n += 2) {
                load_bt<D2>(lo, hi, b2, n, kk, lane);
                mma_16816<T>(y[n], f, lo);
                mma_16816<T>(y[n + 1], f, hi);
            }
        }
    }
}

// The dq kernels' per-row terms for this lane's two query rows (i and i + 8): keys visible, lse (log2 units), delta.
// s: the block's (narrowed) shape; launched: the kernel's, which places the rows in lse and delta.
__device__ __forceinline__ void backward_row_terms(int (&visible)[2], float (&row_lse)[2], float (&row_delta)[2], const float* lse,
                                                   const float* delta, const AttentionShape& s, const AttentionShape& launched, int b,
                                                   int h, int i)
{
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = i + r * 8;
        const bool live = row < s.tq;
        visible[r] = live ? attention_visible(s, row) : 0;
        row_lse[r] = live ? lse[attention_lse_row(launched, b, h, row)] * LOG2E : 0.0f;
        row_delta[r] = live ? delta[attention_lse_row(launched, b, h, row)] : 0.0f;
    }
}

// Adds scale · (C fragments' row r of the lane: columns n·8 + 2t, + 1) into out[0 …], the lane's first column.
template <typename T, int N>
__device__ __forceinline__ void add_row(T* out, const frag_c (&acc)[N], int r, float scale)
{
#pragma unroll
    for (int n = 0; n < N; ++n) {
        out[n * 8] = from_float<T>(to_float(out[n * 8]) + acc[n].c[r * 2] * scale);
        out[n * 8 + 1] = from_float<T>(to_float(out[n * 8 + 1]) + acc[n].c[r * 2 + 1] * scale);
    }
}

// dq. grid (ceil(Tq / 64), H, B), block MMA_THREADS, dynamic shared memory 4·64·D·sizeof(T) (Q, dO, K, V tiles).
// Per key tile: S = Q·Kᵀ, P = exp(scale·S − lse), dP = dO·Vᵀ, dS = P ∘ (dP − delta), dQ += dS·K.
template <typename T, int D>
__global__ void __launch_bounds__(MMA_THREADS)
attention_backward_dq_mma(T* __restrict__ dq, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                          const T* __restrict__ d_o, const float* __restrict__ lse, const float* __restrict__ delta,
                          const AttentionShape launched)
{
    extern __shared__ float smem[];
    AttentionShape s = launched;
    T* qs = reinterpret_cast<T*>(smem);
    T* dos = qs + MMA_BQ * D;
    T* ks = dos + MMA_BQ * D;
    T* vs = ks + MMA_BK * D;

    const int q_tiles = (s.tq + MMA_BQ - 1) / MMA_BQ;
    const int tile = q_tiles - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int g = h / (s.heads / s.kv_heads);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = tile * MMA_BQ;
    attention_sequence(s, b);
    if (row0 >= s.tq) {
        return; // past this (ragged) sequence's rows
    }
    const index_t query0 = attention_query_token(launched, b, 0), key0 = attention_key_token(launched, b, 0);
    const int keys = attention_tile_keys(s, row0, MMA_BQ);
    const int unmasked = attention_visible(s, row0);
    load_tile<T, D>(qs, q, MMA_BQ, row0, s.tq, query0, launched.strides.q, b, h);
    load_tile<T, D>(dos, d_o, MMA_BQ, row0, s.tq, query0, launched.strides.d_o, b, h);
    cp_async_commit();

    const int my_row = row0 + warp * 16 + lane / 4;
    int visible[2];
    float row_lse[2], row_delta[2];
    backward_row_terms(visible, row_lse, row_delta, lse, delta, s, launched, b, h, my_row);
    const float scale_log2 = s.scale * LOG2E;
    frag_c acc[D / 8];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
        frag_zero(acc[n]);
    }

    for (int kb = 0; kb < keys; kb += MMA_BK) {
        __syncthreads(); // the previous K, V tiles are consumed
        load_tile<T, D>(ks, k, MMA_BK, kb, keys, key0, launched.strides.k, b, g);
        load_tile<T, D>(vs, v, MMA_BK, kb, keys, key0, launched.strides.v, b, g);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();

        frag_c sc[MMA_BK / 8], dp[MMA_BK / 8];
        two_products<T, D, D, MMA_BK / 8>(sc, dp, qs, ks, dos, vs, warp * 16, lane); // S = Q·Kᵀ, dP = dO·Vᵀ
        const bool mask = kb + MMA_BK > unmasked;
#pragma unroll
        for (int n = 0; n < MMA_BK / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = kb + n * 8 + (lane % 4) * 2 + (e & 1), r = e >> 1;
                const bool live = !mask || key < visible[r];
                const float p = live ? exp2f(sc[n].c[e] * scale_log2 - row_lse[r]) : 0.0f;
                sc[n].c[e] = p * (dp[n].c[e] - row_delta[r]); // dS
            }
        }
        frag_a ds[MMA_BK / 16];
        c_to_a<T, MMA_BK / 8>(ds, sc);
#pragma unroll
        for (int kk = 0; kk < MMA_BK / 16; ++kk) {
            mma_tile_b<T, D>(acc, ds[kk], ks, kk, 0, lane);
        }
    }
    cp_async_wait<0>(); // no copy may outlive the block (with no visible key the loop never waited)

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = my_row + r * 8;
        if (i >= s.tq) {
            continue;
        }
        add_row<T>(dq + attention_row(launched.strides.dq, b, attention_query_token(launched, b, i), h) + (lane % 4) * 2, acc, r, s.scale);
    }
}

#define MMA_BQ_DKV 32 // query rows per step of the dk/dv kernel (keeps its two accumulators in registers)

// A dk/dv kernel's query step: Q and dO rows i0 … i0 + 31 of head h into their tiles, their lse (log2 units) and delta
// into shared arrays; returns once all of it has landed in this thread's view (the caller's __syncthreads publishes it).
// query0: the token of the sequence's query 0; launched: the kernel's shape, which places the rows in lse and delta.
template <typename T, int DQK, int DV, int THREADS>
__device__ __forceinline__ void load_query_step(T* qs, T* dos, float* lses, float* deltas, const T* q, const T* d_o,
                                                const float* lse, const float* delta, const AttentionShape& s,
                                                const AttentionShape& launched, index_t query0, int b, int h, int i0)
{
    load_tile<T, DQK, THREADS>(qs, q, MMA_BQ_DKV, i0, s.tq, query0, launched.strides.q, b, h);
    load_tile<T, DV, THREADS>(dos, d_o, MMA_BQ_DKV, i0, s.tq, query0, launched.strides.d_o, b, h);
    cp_async_commit();
    for (int e = threadIdx.x; e < MMA_BQ_DKV; e += THREADS) {
        const int i = i0 + e;
        lses[e] = i < s.tq ? lse[attention_lse_row(launched, b, h, i)] * LOG2E : 0.0f;
        deltas[e] = i < s.tq ? delta[attention_lse_row(launched, b, h, i)] : 0.0f;
    }
    cp_async_wait<0>();
}

// dk, dv. grid (ceil(length / 64), G, B), block MMA_THREADS, dynamic shared memory 2·64·D·sizeof(T) (K, V) +
// 2·32·D·sizeof(T) (Q, dO) + 2·32 floats (lse, delta). Warp w owns keys w·16…; per head of the group and query step:
// Sᵀ = K·Qᵀ, Pᵀ = exp(scale·Sᵀ − lse), dPᵀ = V·dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ − delta), dV += Pᵀ·dO, dK += dSᵀ·Q.
template <typename T, int D>
__global__ void __launch_bounds__(MMA_THREADS)
attention_backward_dkdv_mma(T* __restrict__ dk, T* __restrict__ dv, const T* __restrict__ q, const T* __restrict__ k,
                            const T* __restrict__ v, const T* __restrict__ d_o, const float* __restrict__ lse,
                            const float* __restrict__ delta, const AttentionShape launched)
{
    extern __shared__ float smem[];
    AttentionShape s = launched;
    T* ks = reinterpret_cast<T*>(smem);
    T* vs = ks + MMA_BK * D;
    T* qs = vs + MMA_BK * D;
    T* dos = qs + MMA_BQ_DKV * D;
    float* lses = reinterpret_cast<float*>(dos + MMA_BQ_DKV * D);
    float* deltas = lses + MMA_BQ_DKV;

    const int kb = blockIdx.x * MMA_BK, g = blockIdx.y, b = blockIdx.z;
    const int group = s.heads / s.kv_heads;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    attention_sequence(s, b);
    if (kb >= s.length) {
        return; // past this (ragged) sequence's keys
    }
    load_tile<T, D>(ks, k, MMA_BK, kb, s.length, attention_key_token(launched, b, 0), launched.strides.k, b, g);
    load_tile<T, D>(vs, v, MMA_BK, kb, s.length, attention_key_token(launched, b, 0), launched.strides.v, b, g);
    cp_async_commit();
    const index_t query0 = attention_query_token(launched, b, 0);

    // Query i sees key j when j < visible(i): with a causal mask the first query that sees key kb is kb − (length − Tq).
    const int first = s.causal && kb > s.length - s.tq ? kb - (s.length - s.tq) : 0;
    const int q_begin = first / MMA_BQ_DKV * MMA_BQ_DKV;
    const int my_key = kb + warp * 16 + lane / 4; // this lane's keys: my_key and my_key + 8
    const float scale_log2 = s.scale * LOG2E;
    frag_c dk_acc[D / 8], dv_acc[D / 8];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
        frag_zero(dk_acc[n]);
        frag_zero(dv_acc[n]);
    }

    for (int hh = 0; hh < group; ++hh) {
        const int h = g * group + hh;
        for (int i0 = q_begin; i0 < s.tq; i0 += MMA_BQ_DKV) {
            __syncthreads(); // the previous Q, dO tiles are consumed
            load_query_step<T, D, D, MMA_THREADS>(qs, dos, lses, deltas, q, d_o, lse, delta, s, launched, query0, b, h, i0);
            __syncthreads();

            frag_c st[MMA_BQ_DKV / 8], dpt[MMA_BQ_DKV / 8];
            two_products<T, D, D, MMA_BQ_DKV / 8>(st, dpt, ks, qs, vs, dos, warp * 16, lane); // Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ
#pragma unroll
            for (int n = 0; n < MMA_BQ_DKV / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int col = n * 8 + (lane % 4) * 2 + (e & 1), i = i0 + col;
                    const int key = my_key + (e >> 1) * 8;
                    const bool live = i < s.tq && key < attention_visible(s, i);
                    const float p = live ? exp2f(st[n].c[e] * scale_log2 - lses[col]) : 0.0f;
                    st[n].c[e] = p;                                 // Pᵀ
                    dpt[n].c[e] = p * (dpt[n].c[e] - deltas[col]); // dSᵀ
                }
            }
            frag_a pa[MMA_BQ_DKV / 16], dsa[MMA_BQ_DKV / 16];
            c_to_a<T, MMA_BQ_DKV / 8>(pa, st);
            c_to_a<T, MMA_BQ_DKV / 8>(dsa, dpt);
#pragma unroll
            for (int kk = 0; kk < MMA_BQ_DKV / 16; ++kk) {
                mma_tile_b<T, D>(dv_acc, pa[kk], dos, kk, 0, lane);
                mma_tile_b<T, D>(dk_acc, dsa[kk], qs, kk, 0, lane);
            }
        }
    }
    cp_async_wait<0>(); // no copy may outlive the block (with no query to visit the loop never waited)

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int j = my_key + r * 8;
        if (j >= s.length) {
            continue; // keys past the valid length get no gradient
        }
        const index_t token = attention_key_token(launched, b, j);
        if (dk != nullptr) {
            add_row<T>(dk + attention_row(launched.strides.dk, b, token, g) + (lane % 4) * 2, dk_acc, r, s.scale);
        }
        if (dv != nullptr) {
            add_row<T>(dv + attention_row(launched.strides.dv, b, token, g) + (lane % 4) * 2, dv_acc, r, 1.0f);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Backward for the wide heads, (d_qk, d_v) of MLA's (192, 128) and SAS's (256, 128). A warp of the 4-warp kernels above
// would hold 16 rows of both gradients over the full width, (d_qk + d_v)/2 registers per thread for dk, dv alone: past
// the register file. Here 8 warps share a tile in two phases. Phase 1: each warp computes its quarter of the tile's
// scores and score gradients (16 rows × half the columns) and leaves P and dS in shared memory, rounded to T as the 4-warp
// kernels round them. Phase 2: each warp multiplies a 16-row band of those into half of the gradient's columns, so a
// thread accumulates a quarter of a row pair's gradient.
#define MMA_WIDE_WARPS 8
#define MMA_WIDE_THREADS (MMA_WIDE_WARPS * 32)

// dq. grid (ceil(Tq / 64), H, B), block MMA_WIDE_THREADS, dynamic shared memory 64·(2·DQK + 2·DV + 64)·sizeof(T)
// (Q, dO, K, V tiles and the dS tile). Warp w: rows (w % 4)·16…, keys (phase 1) and dq columns (phase 2) of half w / 4.
template <typename T, int DQK, int DV>
__global__ void __launch_bounds__(MMA_WIDE_THREADS)
attention_backward_dq_wide(T* __restrict__ dq, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                           const T* __restrict__ d_o, const float* __restrict__ lse, const float* __restrict__ delta,
                           const AttentionShape launched)
{
    extern __shared__ float smem[];
    AttentionShape s = launched;
    T* qs = reinterpret_cast<T*>(smem);
    T* dos = qs + MMA_BQ * DQK;
    T* ks = dos + MMA_BQ * DV;
    T* vs = ks + MMA_BK * DQK;
    T* dss = vs + MMA_BK * DV; // [64 rows][64 keys]

    const int q_tiles = (s.tq + MMA_BQ - 1) / MMA_BQ;
    const int tile = q_tiles - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int g = h / (s.heads / s.kv_heads);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int band = (warp % 4) * 16, half = warp / 4;
    const int row0 = tile * MMA_BQ;
    attention_sequence(s, b);
    if (row0 >= s.tq) {
        return; // past this (ragged) sequence's rows
    }
    const index_t query0 = attention_query_token(launched, b, 0), key0 = attention_key_token(launched, b, 0);
    const int keys = attention_tile_keys(s, row0, MMA_BQ);
    const int unmasked = attention_visible(s, row0);
    // V(j + 1) streams in during phase 2 of tile j, K(j + 1) at the tile's end.
    load_tile<T, DQK, MMA_WIDE_THREADS>(qs, q, MMA_BQ, row0, s.tq, query0, launched.strides.q, b, h);
    load_tile<T, DV, MMA_WIDE_THREADS>(dos, d_o, MMA_BQ, row0, s.tq, query0, launched.strides.d_o, b, h);
    load_tile<T, DQK, MMA_WIDE_THREADS>(ks, k, MMA_BK, 0, keys, key0, launched.strides.k, b, g);
    load_tile<T, DV, MMA_WIDE_THREADS>(vs, v, MMA_BK, 0, keys, key0, launched.strides.v, b, g);
    cp_async_commit();

    const int my_row = row0 + band + lane / 4;
    int visible[2];
    float row_lse[2], row_delta[2];
    backward_row_terms(visible, row_lse, row_delta, lse, delta, s, launched, b, h, my_row);
    const float scale_log2 = s.scale * LOG2E;
    constexpr int COLS = DQK / 2; // dq columns per warp
    frag_c acc[COLS / 8];
#pragma unroll
    for (int n = 0; n < COLS / 8; ++n) {
        frag_zero(acc[n]);
    }

    for (int kb = 0; kb < keys; kb += MMA_BK) {
        cp_async_wait<0>();
        __syncthreads(); // K(j), V(j) have landed; every warp is past its reads of the previous dS

        // Phase 1: S = Q·Kᵀ and dP = dO·Vᵀ for the band's 16 rows × keys half·32…, then dS = P ∘ (dP − delta).
        frag_c sc[MMA_BK / 16], dp[MMA_BK / 16];
        two_products<T, DQK, DV, MMA_BK / 16>(sc, dp, qs, ks + half * (MMA_BK / 2) * DQK, dos, vs + half * (MMA_BK / 2) * DV,
                                              band, lane);
        const bool mask = kb + MMA_BK > unmasked;
#pragma unroll
        for (int n = 0; n < MMA_BK / 16; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = kb + half * (MMA_BK / 2) + n * 8 + (lane % 4) * 2 + (e & 1), r = e >> 1;
                const bool live = !mask || key < visible[r];
                const float p = live ? exp2f(sc[n].c[e] * scale_log2 - row_lse[r]) : 0.0f;
                sc[n].c[e] = p * (dp[n].c[e] - row_delta[r]);
            }
        }
        store_c<T, MMA_BK>(dss, band, half * (MMA_BK / 16), sc, lane);
        __syncthreads(); // dS is complete; V(j) is consumed
        const bool more = kb + MMA_BK < keys;
        if (more) {
            load_tile<T, DV, MMA_WIDE_THREADS>(vs, v, MMA_BK, kb + MMA_BK, keys, key0, launched.strides.v, b, g);
        }
        cp_async_commit();

        // Phase 2: dQ[band, columns half·COLS…] += dS[band, all 64 keys]·K[keys, those columns].
#pragma unroll
        for (int kk = 0; kk < MMA_BK / 16; ++kk) {
            frag_a a;
            load_a<MMA_BK>(a, dss, band, kk, lane);
            mma_tile_b<T, DQK>(acc, a, ks, kk, half * (COLS / 8), lane);
        }
        __syncthreads(); // K(j) is consumed
        if (more) {
            load_tile<T, DQK, MMA_WIDE_THREADS>(ks, k, MMA_BK, kb + MMA_BK, keys, key0, launched.strides.k, b, g);
        }
        cp_async_commit();
    }
    cp_async_wait<0>(); // no copy may outlive the block (with no visible key the loop never waited)

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = my_row + r * 8;
        if (i >= s.tq) {
            continue;
        }
        add_row<T>(dq + attention_row(launched.strides.dq, b, attention_query_token(launched, b, i), h) + half * COLS + (lane % 4) * 2, acc, r,
                   s.scale);
    }
}

// dk, dv. grid (ceil(length / 64), G, B), block MMA_WIDE_THREADS, dynamic shared memory
// (64·(DQK + DV) + 32·(DQK + DV) + 2·64·32)·sizeof(T) + 2·32 floats (K, V; Q, dO; Pᵀ, dSᵀ; lse, delta).
// Warp w: keys (w % 4)·16…, queries (phase 1) and gradient columns (phase 2) of half w / 4.
template <typename T, int DQK, int DV>
__global__ void __launch_bounds__(MMA_WIDE_THREADS)
attention_backward_dkdv_wide(T* __restrict__ dk, T* __restrict__ dv, const T* __restrict__ q, const T* __restrict__ k,
                             const T* __restrict__ v, const T* __restrict__ d_o, const float* __restrict__ lse,
                             const float* __restrict__ delta, const AttentionShape launched)
{
    extern __shared__ float smem[];
    AttentionShape s = launched;
    T* ks = reinterpret_cast<T*>(smem);
    T* vs = ks + MMA_BK * DQK;
    T* qs = vs + MMA_BK * DV;
    T* dos = qs + MMA_BQ_DKV * DQK;
    T* pts = dos + MMA_BQ_DKV * DV;    // Pᵀ [64 keys][32 queries]
    T* dsts = pts + MMA_BK * MMA_BQ_DKV; // dSᵀ, the same
    float* lses = reinterpret_cast<float*>(dsts + MMA_BK * MMA_BQ_DKV);
    float* deltas = lses + MMA_BQ_DKV;

    const int kb = blockIdx.x * MMA_BK, g = blockIdx.y, b = blockIdx.z;
    const int group = s.heads / s.kv_heads;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int band = (warp % 4) * 16, half = warp / 4;
    attention_sequence(s, b);
    if (kb >= s.length) {
        return; // past this (ragged) sequence's keys
    }
    load_tile<T, DQK, MMA_WIDE_THREADS>(ks, k, MMA_BK, kb, s.length, attention_key_token(launched, b, 0), launched.strides.k, b, g);
    load_tile<T, DV, MMA_WIDE_THREADS>(vs, v, MMA_BK, kb, s.length, attention_key_token(launched, b, 0), launched.strides.v, b, g);
    cp_async_commit();
    const index_t query0 = attention_query_token(launched, b, 0);

    const int first = s.causal && kb > s.length - s.tq ? kb - (s.length - s.tq) : 0;
    const int q_begin = first / MMA_BQ_DKV * MMA_BQ_DKV;
    const int my_key = kb + band + lane / 4;
    const float scale_log2 = s.scale * LOG2E;
    constexpr int KCOLS = DQK / 2, VCOLS = DV / 2; // gradient columns per warp
    frag_c dk_acc[KCOLS / 8], dv_acc[VCOLS / 8];
#pragma unroll
    for (int n = 0; n < KCOLS / 8; ++n) {
        frag_zero(dk_acc[n]);
    }
#pragma unroll
    for (int n = 0; n < VCOLS / 8; ++n) {
        frag_zero(dv_acc[n]);
    }

    for (int hh = 0; hh < group; ++hh) {
        const int h = g * group + hh;
        for (int i0 = q_begin; i0 < s.tq; i0 += MMA_BQ_DKV) {
            __syncthreads(); // the previous Q, dO, Pᵀ, dSᵀ are consumed
            load_query_step<T, DQK, DV, MMA_WIDE_THREADS>(qs, dos, lses, deltas, q, d_o, lse, delta, s, launched, query0, b, h, i0);
            __syncthreads();

            // Phase 1: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ for the band's 16 keys × queries half·16…
            frag_c st[MMA_BQ_DKV / 16], dpt[MMA_BQ_DKV / 16];
            two_products<T, DQK, DV, MMA_BQ_DKV / 16>(st, dpt, ks, qs + half * (MMA_BQ_DKV / 2) * DQK, vs,
                                                      dos + half * (MMA_BQ_DKV / 2) * DV, band, lane);
#pragma unroll
            for (int n = 0; n < MMA_BQ_DKV / 16; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int col = half * (MMA_BQ_DKV / 2) + n * 8 + (lane % 4) * 2 + (e & 1), i = i0 + col;
                    const int key = my_key + (e >> 1) * 8;
                    const bool live = i < s.tq && key < attention_visible(s, i);
                    const float p = live ? exp2f(st[n].c[e] * scale_log2 - lses[col]) : 0.0f;
                    st[n].c[e] = p;
                    dpt[n].c[e] = p * (dpt[n].c[e] - deltas[col]);
                }
            }
            store_c<T, MMA_BQ_DKV>(pts, band, half * (MMA_BQ_DKV / 16), st, lane);
            store_c<T, MMA_BQ_DKV>(dsts, band, half * (MMA_BQ_DKV / 16), dpt, lane);
            __syncthreads();

            // Phase 2: dV[band, columns half·VCOLS…] += Pᵀ·dO, dK[band, columns half·KCOLS…] += dSᵀ·Q over all 32 queries.
#pragma unroll
            for (int kk = 0; kk < MMA_BQ_DKV / 16; ++kk) {
                frag_a pa, da;
                load_a<MMA_BQ_DKV>(pa, pts, band, kk, lane);
                load_a<MMA_BQ_DKV>(da, dsts, band, kk, lane);
                mma_tile_b<T, DV>(dv_acc, pa, dos, kk, half * (VCOLS / 8), lane);
                mma_tile_b<T, DQK>(dk_acc, da, qs, kk, half * (KCOLS / 8), lane);
            }
        }
    }
    cp_async_wait<0>(); // no copy may outlive the block (with no query to visit the loop never waited)

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int j = my_key + r * 8;
        if (j >= s.length) {
            continue; // keys past the valid length get no gradient
        }
        const index_t token = attention_key_token(launched, b, j);
        if (dk != nullptr) {
            add_row<T>(dk + attention_row(launched.strides.dk, b, token, g) + half * KCOLS + (lane % 4) * 2, dk_acc, r, s.scale);
        }
        if (dv != nullptr) {
            add_row<T>(dv + attention_row(launched.strides.dv, b, token, g) + half * VCOLS + (lane % 4) * 2, dv_acc, r, 1.0f);
        }
    }
}

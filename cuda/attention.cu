// Attention.Native: softmax attention, flash-style. Online softmax over key tiles held in shared memory; no
// T×T matrix ever reaches global memory; the backward recomputes probabilities from the saved log-sum-exp.
// fp32 arithmetic on CUDA cores for every storage type: this is the parity path. (Tensor-core kernels are the
// fast path of a later issue; they must match these.)
//
// Layouts: q [B, Tq, H, dqk], k [B, Tk, G, dqk], v [B, Tk, G, dv], o/dO [B, Tq, H, dv] and the gradients of q, k, v, each
// any view whose last axis is contiguous (rows through AttentionShape's strides: attention_shape.cuh); bias/dbias
// [H, Tq, Tk] shared by the batch and lse/delta [B, H, Tq] fp32, contiguous.
// Query i sits at position length − Tq + i; causal rows see keys j ≤ that position; keys ≥ length never count.
// A ragged batch (attention_shape.cuh; no bias): the grids' batch index is the sequence, their tile counts are planned for
// the longest sequence, and a block past its own sequence's rows (or keys) exits at once, as flash-attention's varlen does.
// The forward also reads paged keys (attention_shape.cuh: a ragged batch whose k and v are page pools); the backward does not.
// The combine and delta kernels see the packed rows as one dense sequence of N_q queries (the launcher passes that shape).
#include "common.cuh"
#include "attention_shape.cuh"

#define ATTN_WARPS 8
#define ATTN_THREADS (ATTN_WARPS * 32)
#define ATTN_ROWS 2                       // query rows per warp (forward, dq)
#define ATTN_BQ (ATTN_WARPS * ATTN_ROWS)  // query rows per block (forward, dq)
#define ATTN_BK 32                        // keys per shared tile: lane j scores key j
#define ATTN_KEYS 2                       // keys per warp (dk/dv)
#define ATTN_BKEYS (ATTN_WARPS * ATTN_KEYS)
#define ATTN_MAX_WIDTH 256
#define ATTN_COLS (ATTN_MAX_WIDTH / 32)   // output columns per lane: lane owns columns lane, lane+32, ...

// Forward. grid (q_tiles · splits, G, B) with q_tiles = ceil(Tq·group / ATTN_BQ), block ATTN_THREADS, dynamic shared
// memory (ATTN_BQ·dqk + ATTN_BK·(dqk+1) + ATTN_BK·dv) floats. A block's rows are packed (query, head) pairs of one KV
// group: packed row p is query p / group of head g·group + p % group, so the group's heads share each K/V tile and
// decode reads the cache once per group, not once per head. Warp w owns packed rows w·ATTN_ROWS…; lane j scores key j of
// each tile. With splits > 1 (decode: few query rows, long cache) block x covers keys [split·keys_per_split, +keys_per_split)
// and writes unnormalised partials (acc, running max m, sum l) that attention_combine merges.
// At least 4 blocks per SM: the 64 registers (and occupancy) of the dense kernel before ragged batches, without spills;
// left alone, ptxas takes a few more for the sequence bookkeeping and one block fewer fits.
template <typename T>
__global__ void __launch_bounds__(ATTN_THREADS, 4)
attention_forward(T* __restrict__ o, float* __restrict__ lse, float* __restrict__ partial_o, float* __restrict__ partial_ml,
                  const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ bias,
                  const AttentionShape launched, int splits, int keys_per_split)
{
    extern __shared__ float smem[];
    AttentionShape s = launched;
    const int dqk = s.dqk, dv = s.dv, kstride = dqk + 1; // padded rows: lane j reads row j without bank conflicts
    float* qs = smem;                   // [ATTN_BQ][dqk], pre-scaled
    float* ks = qs + ATTN_BQ * dqk;     // [ATTN_BK][dqk + 1]
    float* vs = ks + ATTN_BK * kstride; // [ATTN_BK][dv]

    const int group = s.heads / s.kv_heads;
    const int q_tiles = (s.tq * group + ATTN_BQ - 1) / ATTN_BQ; // the longest sequence's, ragged
    const int tile = blockIdx.x % q_tiles, split = blockIdx.x / q_tiles;
    const int g = blockIdx.y;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = tile * ATTN_BQ;
    attention_sequence(s, blockIdx.z);
    const int packed = s.tq * group;
    if (row0 >= packed) {
        return; // past this (ragged) sequence's rows: block-uniform, before any barrier
    }

    const index_t query0 = attention_query_token(launched, blockIdx.z, 0);
    for (int e = threadIdx.x; e < ATTN_BQ * dqk; e += ATTN_THREADS) {
        const int p = row0 + e / dqk, c = e % dqk, i = p / group, h = g * group + p % group;
        qs[e] = p < packed ? to_float(q[attention_row(launched.strides.q, blockIdx.z, query0 + i, h) + c]) * s.scale : 0.0f;
    }
    // The key tile's rows' first elements in k and v (tokens, or pool slots when paged): the batch and head terms folded in
    // once per key, so none of them stays live in registers across the loop.
    __shared__ index_t tile_k[ATTN_BK];
    __shared__ index_t tile_v[ATTN_BK];

    // The block's last query (packed rows are query-major) sees the most keys.
    const int last_row = (row0 + ATTN_BQ < packed ? row0 + ATTN_BQ : packed) - 1;
    const int tile_keys = attention_visible(s, last_row / group);
    const int key_begin = split * keys_per_split;
    const int key_end = key_begin + keys_per_split < tile_keys ? key_begin + keys_per_split : tile_keys;

    float m[ATTN_ROWS], l[ATTN_ROWS], acc[ATTN_ROWS][ATTN_COLS];
    int visible[ATTN_ROWS], row_query[ATTN_ROWS], row_head[ATTN_ROWS];
#pragma unroll
    for (int r = 0; r < ATTN_ROWS; ++r) {
        const int p = row0 + warp * ATTN_ROWS + r;
        row_query[r] = p / group;
        row_head[r] = g * group + p % group;
        m[r] = NEG_INF;
        l[r] = 0.0f;
        visible[r] = p < packed ? attention_visible(s, row_query[r]) : 0;
#pragma unroll
        for (int c = 0; c < ATTN_COLS; ++c) {
            acc[r][c] = 0.0f;
        }
    }

    for (int kb = key_begin; kb < key_end; kb += ATTN_BK) {
        // The tile's key rows, looked up once per key (nobody reads tile_k, tile_v past the previous tile's loads, and the
        // barrier below publishes them). From the launched shape, so nothing of it stays live across the loop.
        if (threadIdx.x < ATTN_BK && kb + (int)threadIdx.x < key_end) {
            const index_t row = attention_keys(launched, blockIdx.z).row(kb + (int)threadIdx.x);
            tile_k[threadIdx.x] = attention_row(launched.strides.k, blockIdx.z, row, g);
            tile_v[threadIdx.x] = attention_row(launched.strides.v, blockIdx.z, row, g);
        }
        __syncthreads(); // the previous tile is consumed (and, the first time, qs is written)
        for (int e = threadIdx.x; e < ATTN_BK * dqk; e += ATTN_THREADS) {
            const int jj = e / dqk, c = e % dqk, j = kb + jj;
            ks[jj * kstride + c] = j < key_end ? to_float(k[tile_k[jj] + c]) : 0.0f;
        }
        for (int e = threadIdx.x; e < ATTN_BK * dv; e += ATTN_THREADS) {
            const int jj = e / dv, c = e % dv, j = kb + jj;
            vs[e] = j < key_end ? to_float(v[tile_v[jj] + c]) : 0.0f;
        }
        __syncthreads();

        const int j = kb + lane;
#pragma unroll
        for (int r = 0; r < ATTN_ROWS; ++r) {
            const int i = row_query[r], h = row_head[r];
            const float* qr = qs + (warp * ATTN_ROWS + r) * dqk;
            const float* kr = ks + lane * kstride;
            float score = 0.0f;
            for (int c = 0; c < dqk; ++c) {
                score += qr[c] * kr[c];
            }
            const bool live = j < key_end && j < visible[r];
            if (live && bias != nullptr) {
                score += to_float(bias[((index_t)h * s.tq + i) * s.tk + j]);
            }
            score = live ? score : NEG_INF;
            const float m_new = fmaxf(m[r], warp_max(score));
            const float base = m_new == NEG_INF ? 0.0f : m_new; // nothing visible yet: keep exponents finite
            const float p = live ? expf(score - base) : 0.0f;
            const float correction = expf(m[r] - base);
            l[r] = l[r] * correction + warp_sum(p);
            m[r] = m_new;
#pragma unroll
            for (int c = 0; c < ATTN_COLS; ++c) {
                acc[r][c] *= correction;
            }
            for (int jj = 0; jj < ATTN_BK; ++jj) {
                const float pj = __shfl_sync(0xffffffffu, p, jj);
                const float* vr = vs + jj * dv;
#pragma unroll
                for (int c = 0; c < ATTN_COLS; ++c) {
                    const int col = lane + 32 * c;
                    if (col < dv) {
                        acc[r][c] += pj * vr[col];
                    }
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ATTN_ROWS; ++r) {
        const int i = row_query[r], h = row_head[r];
        if (row0 + warp * ATTN_ROWS + r >= packed) {
            continue;
        }
        // Output rows from the launched shape: nothing of the sequence's place stays live across the loop above.
        const index_t row = attention_lse_row(launched, blockIdx.z, h, i); // [B, H, Tq]
        if (splits == 1) {
            const float inverse = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
            T* orow = o + attention_row(launched.strides.o, blockIdx.z, attention_query_token(launched, blockIdx.z, i), h);
#pragma unroll
            for (int c = 0; c < ATTN_COLS; ++c) {
                const int col = lane + 32 * c;
                if (col < dv) {
                    orow[col] = from_float<T>(acc[r][c] * inverse);
                }
            }
            if (lane == 0) {
                lse[row] = m[r] + logf(l[r]);
            }
        } else {
            const index_t part = (index_t)split * attention_lse_rows(launched) + row;
#pragma unroll
            for (int c = 0; c < ATTN_COLS; ++c) {
                const int col = lane + 32 * c;
                if (col < dv) {
                    partial_o[part * dv + col] = acc[r][c];
                }
            }
            if (lane == 0) {
                partial_ml[2 * part] = m[r];
                partial_ml[2 * part + 1] = l[r];
            }
        }
    }
}

// Split-KV combine: one warp per (b, h, i). o = Σ_s e^{m_s − M} acc_s / Σ_s e^{m_s − M} l_s, lse = M + log L.
// A split that saw no key has m = −∞, l = 0 and weighs nothing. grid ceil(B·H·Tq / ATTN_WARPS), block ATTN_THREADS.
template <typename T>
__global__ void __launch_bounds__(ATTN_THREADS)
attention_combine(T* __restrict__ o, float* __restrict__ lse, const float* __restrict__ partial_o, const float* __restrict__ partial_ml,
                  AttentionShape s, int splits)
{
    const index_t rows = (index_t)s.batch * s.heads * s.tq;
    const index_t row = (index_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) {
        return;
    }
    float m_max = NEG_INF;
    for (int sp = 0; sp < splits; ++sp) {
        m_max = fmaxf(m_max, partial_ml[2 * (sp * rows + row)]);
    }
    float total = 0.0f;
    for (int sp = 0; sp < splits; ++sp) {
        const index_t part = sp * rows + row;
        total += partial_ml[2 * part + 1] * expf(partial_ml[2 * part] - m_max);
    }
    const int i = (int)(row % s.tq), h = (int)(row / s.tq % s.heads), b = (int)(row / s.tq / s.heads);
    T* orow = o + attention_row(s.strides.o, b, i, h);
    for (int col = lane; col < s.dv; col += 32) {
        float value = 0.0f;
        for (int sp = 0; sp < splits; ++sp) {
            const index_t part = sp * rows + row;
            value += partial_o[part * s.dv + col] * expf(partial_ml[2 * part] - m_max);
        }
        orow[col] = from_float<T>(value / total);
    }
    if (lane == 0) {
        lse[row] = m_max + logf(total);
    }
}

// Backward, step 1: delta[b, h, i] = dO_i · o_i (the row term of dS = P ⊙ (dP − delta)). One warp per row.
template <typename T>
__global__ void __launch_bounds__(ATTN_THREADS)
attention_backward_delta(float* __restrict__ delta, const T* __restrict__ o, const T* __restrict__ d_o, AttentionShape s)
{
    const index_t rows = (index_t)s.batch * s.heads * s.tq;
    const index_t row = (index_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) {
        return;
    }
    const int i = (int)(row % s.tq), h = (int)(row / s.tq % s.heads), b = (int)(row / s.tq / s.heads);
    const T* orow = o + attention_row(s.strides.o, b, i, h);
    const T* dorow = d_o + attention_row(s.strides.d_o, b, i, h);
    float dot = 0.0f;
    for (int col = lane; col < s.dv; col += 32) {
        dot += to_float(dorow[col]) * to_float(orow[col]);
    }
    dot = warp_sum(dot);
    if (lane == 0) {
        delta[row] = dot;
    }
}

// Backward, step 2: dq (+)= scale · dS k, and dbias (+)= Σ_b dS. Same tiling as the forward: warp w owns query rows,
// lane j handles key j of each tile. grid (q_tiles, H, B or 1): with a bias the whole batch runs inside one block in
// order, so each dbias entry has one writer and the sum is deterministic. Dynamic shared memory
// (ATTN_BQ·dqk + ATTN_BQ·dv + ATTN_BK·(dqk+1) + ATTN_BK·(dv+1)) floats.
// At least 3 blocks per SM (80 registers): at 4 (64 registers, what ptxas chose before ragged batches, spilling a little on
// sm_80) the sequence bookkeeping spills more; left alone, ptxas takes up to 98 registers on sm_90 and only 2 blocks fit.
template <typename T>
__global__ void __launch_bounds__(ATTN_THREADS, 3)
attention_backward_dq(T* dq, T* dbias, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                      const T* __restrict__ bias, const T* __restrict__ d_o, const float* __restrict__ lse,
                      const float* __restrict__ delta, const AttentionShape launched)
{
    extern __shared__ float smem[];
    AttentionShape s = launched;
    const int dqk = s.dqk, dv = s.dv, kstride = dqk + 1, vstride = dv + 1;
    float* qs = smem;                    // [ATTN_BQ][dqk], pre-scaled
    float* dos = qs + ATTN_BQ * dqk;     // [ATTN_BQ][dv]
    float* ks = dos + ATTN_BQ * dv;      // [ATTN_BK][dqk + 1]
    float* vs = ks + ATTN_BK * kstride;  // [ATTN_BK][dv + 1]

    const int h = blockIdx.y, g = h / (s.heads / s.kv_heads);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = blockIdx.x * ATTN_BQ;
    // A ragged batch has no bias: gridDim.z is its sequence count and each block runs its own sequence once.
    attention_sequence(s, blockIdx.z);
    if (row0 >= s.tq) {
        return; // past this (ragged) sequence's rows
    }
    const int tile_keys = attention_tile_keys(s, row0, ATTN_BQ);

    for (int b = blockIdx.z; b < s.batch; b += gridDim.z) {
        __syncthreads(); // the previous batch entry is done with the tiles
        const index_t query0 = attention_query_token(launched, b, 0), key0 = attention_key_token(launched, b, 0);
        for (int e = threadIdx.x; e < ATTN_BQ * dqk; e += ATTN_THREADS) {
            const int i = row0 + e / dqk, c = e % dqk;
            qs[e] = i < s.tq ? to_float(q[attention_row(launched.strides.q, b, query0 + i, h) + c]) * s.scale : 0.0f;
        }
        for (int e = threadIdx.x; e < ATTN_BQ * dv; e += ATTN_THREADS) {
            const int i = row0 + e / dv, c = e % dv;
            dos[e] = i < s.tq ? to_float(d_o[attention_row(launched.strides.d_o, b, query0 + i, h) + c]) : 0.0f;
        }
        float row_lse[ATTN_ROWS], row_delta[ATTN_ROWS], acc[ATTN_ROWS][ATTN_COLS];
        int visible[ATTN_ROWS];
#pragma unroll
        for (int r = 0; r < ATTN_ROWS; ++r) {
            const int i = row0 + warp * ATTN_ROWS + r;
            const index_t row = attention_lse_row(launched, b, h, i);
            visible[r] = i < s.tq ? attention_visible(s, i) : 0;
            row_lse[r] = i < s.tq ? lse[row] : 0.0f;
            row_delta[r] = i < s.tq ? delta[row] : 0.0f;
#pragma unroll
            for (int c = 0; c < ATTN_COLS; ++c) {
                acc[r][c] = 0.0f;
            }
        }

        for (int kb = 0; kb < tile_keys; kb += ATTN_BK) {
            __syncthreads();
            for (int e = threadIdx.x; e < ATTN_BK * dqk; e += ATTN_THREADS) {
                const int jj = e / dqk, c = e % dqk, j = kb + jj;
                ks[jj * kstride + c] = j < tile_keys ? to_float(k[attention_row(launched.strides.k, b, key0 + j, g) + c]) : 0.0f;
            }
            for (int e = threadIdx.x; e < ATTN_BK * dv; e += ATTN_THREADS) {
                const int jj = e / dv, c = e % dv, j = kb + jj;
                vs[jj * vstride + c] = j < tile_keys ? to_float(v[attention_row(launched.strides.v, b, key0 + j, g) + c]) : 0.0f;
            }
            __syncthreads();

            const int j = kb + lane;
#pragma unroll
            for (int r = 0; r < ATTN_ROWS; ++r) {
                const int i = row0 + warp * ATTN_ROWS + r;
                const float* qr = qs + (warp * ATTN_ROWS + r) * dqk;
                const float* dor = dos + (warp * ATTN_ROWS + r) * dv;
                const float* kr = ks + lane * kstride;
                const float* vr = vs + lane * vstride;
                float score = 0.0f, dp = 0.0f;
                for (int c = 0; c < dqk; ++c) {
                    score += qr[c] * kr[c];
                }
                for (int c = 0; c < dv; ++c) {
                    dp += dor[c] * vr[c];
                }
                const bool live = j < visible[r];
                float ds = 0.0f;
                if (live) {
                    const index_t bias_at = ((index_t)h * s.tq + i) * s.tk + j;
                    if (bias != nullptr) {
                        score += to_float(bias[bias_at]);
                    }
                    ds = expf(score - row_lse[r]) * (dp - row_delta[r]);
                    if (dbias != nullptr) {
                        dbias[bias_at] = from_float<T>(to_float(dbias[bias_at]) + ds);
                    }
                }
                for (int jj = 0; jj < ATTN_BK; ++jj) {
                    const float dsj = __shfl_sync(0xffffffffu, ds, jj);
                    const float* kj = ks + jj * kstride;
#pragma unroll
                    for (int c = 0; c < ATTN_COLS; ++c) {
                        const int col = lane + 32 * c;
                        if (col < dqk) {
                            acc[r][c] += dsj * kj[col];
                        }
                    }
                }
            }
        }

        if (dq != nullptr) {
#pragma unroll
            for (int r = 0; r < ATTN_ROWS; ++r) {
                const int i = row0 + warp * ATTN_ROWS + r;
                if (i >= s.tq) {
                    continue;
                }
                T* dqr = dq + attention_row(launched.strides.dq, b, attention_query_token(launched, b, i), h);
#pragma unroll
                for (int c = 0; c < ATTN_COLS; ++c) {
                    const int col = lane + 32 * c;
                    if (col < dqk) {
                        dqr[col] = from_float<T>(to_float(dqr[col]) + s.scale * acc[r][c]);
                    }
                }
            }
        }
    }
}

// Backward, step 3: dk (+)= scale · dSᵀ q and dv (+)= Pᵀ dO, summed over the query heads sharing the KV head in a fixed
// order (no atomics: each key row has one owner block). grid (ceil(length / ATTN_BKEYS), G, B); warp w owns keys
// w·ATTN_KEYS…; lane l handles query row l of each 32-row tile. Dynamic shared memory
// (ATTN_BKEYS·dqk + ATTN_BKEYS·dv + 32·(dqk+1) + 32·(dv+1) + 64) floats.
// At least 3 blocks per SM: the 80 registers of the dense kernel before ragged batches (left alone, ptxas takes 125).
template <typename T>
__global__ void __launch_bounds__(ATTN_THREADS, 3)
attention_backward_dkdv(T* dk, T* dv_out, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                        const T* __restrict__ bias, const T* __restrict__ d_o, const float* __restrict__ lse,
                        const float* __restrict__ delta, const AttentionShape launched)
{
    extern __shared__ float smem[];
    AttentionShape s = launched;
    const int dqk = s.dqk, dv = s.dv, qstride = dqk + 1, ostride = dv + 1;
    float* kts = smem;                      // [ATTN_BKEYS][dqk]
    float* vts = kts + ATTN_BKEYS * dqk;    // [ATTN_BKEYS][dv]
    float* qs = vts + ATTN_BKEYS * dv;      // [32][dqk + 1]
    float* dos = qs + 32 * qstride;         // [32][dv + 1]
    float* lses = dos + 32 * ostride;       // [32]
    float* deltas = lses + 32;              // [32]

    const int g = blockIdx.y, group = s.heads / s.kv_heads;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int key0 = blockIdx.x * ATTN_BKEYS;
    attention_sequence(s, blockIdx.z);
    if (key0 >= s.length) {
        return; // past this (ragged) sequence's keys
    }
    const int b = blockIdx.z;
    const index_t ktoken0 = attention_key_token(launched, b, 0), qtoken0 = attention_query_token(launched, b, 0);

    for (int e = threadIdx.x; e < ATTN_BKEYS * dqk; e += ATTN_THREADS) {
        const int j = key0 + e / dqk, c = e % dqk;
        kts[e] = j < s.length ? to_float(k[attention_row(launched.strides.k, b, ktoken0 + j, g) + c]) : 0.0f;
    }
    for (int e = threadIdx.x; e < ATTN_BKEYS * dv; e += ATTN_THREADS) {
        const int j = key0 + e / dv, c = e % dv;
        vts[e] = j < s.length ? to_float(v[attention_row(launched.strides.v, b, ktoken0 + j, g) + c]) : 0.0f;
    }

    float dk_acc[ATTN_KEYS][ATTN_COLS], dv_acc[ATTN_KEYS][ATTN_COLS];
#pragma unroll
    for (int kk = 0; kk < ATTN_KEYS; ++kk) {
#pragma unroll
        for (int c = 0; c < ATTN_COLS; ++c) {
            dk_acc[kk][c] = 0.0f;
            dv_acc[kk][c] = 0.0f;
        }
    }

    // Causal: the first query row that sees key0 is i = key0 − (length − Tq).
    int first_row = s.causal ? key0 - (s.length - s.tq) : 0;
    first_row = first_row < 0 ? 0 : first_row / 32 * 32;

    for (int hh = 0; hh < group; ++hh) {
        const int h = g * group + hh;
        for (int i0 = first_row; i0 < s.tq; i0 += 32) {
            __syncthreads(); // previous row tile consumed (and, the first time, the key tile is written)
            for (int e = threadIdx.x; e < 32 * dqk; e += ATTN_THREADS) {
                const int i = i0 + e / dqk, c = e % dqk;
                qs[(e / dqk) * qstride + c] = i < s.tq ? to_float(q[attention_row(launched.strides.q, b, qtoken0 + i, h) + c]) : 0.0f;
            }
            for (int e = threadIdx.x; e < 32 * dv; e += ATTN_THREADS) {
                const int i = i0 + e / dv, c = e % dv;
                dos[(e / dv) * ostride + c] = i < s.tq ? to_float(d_o[attention_row(launched.strides.d_o, b, qtoken0 + i, h) + c]) : 0.0f;
            }
            if (threadIdx.x < 32) {
                const int i = i0 + threadIdx.x;
                const index_t row = attention_lse_row(launched, b, h, i);
                lses[threadIdx.x] = i < s.tq ? lse[row] : 0.0f;
                deltas[threadIdx.x] = i < s.tq ? delta[row] : 0.0f;
            }
            __syncthreads();

            const int i = i0 + lane;
            const bool row_valid = i < s.tq;
            const int visible = row_valid ? attention_visible(s, i) : 0;
            const float* qr = qs + lane * qstride;
            const float* dor = dos + lane * ostride;
#pragma unroll
            for (int kk = 0; kk < ATTN_KEYS; ++kk) {
                const int key = warp * ATTN_KEYS + kk, j = key0 + key;
                if (j >= s.length) {
                    continue; // warp-uniform
                }
                const float* kr = kts + key * dqk;
                const float* vr = vts + key * dv;
                float score = 0.0f, dp = 0.0f;
                for (int c = 0; c < dqk; ++c) {
                    score += qr[c] * kr[c];
                }
                for (int c = 0; c < dv; ++c) {
                    dp += dor[c] * vr[c];
                }
                float p = 0.0f, ds = 0.0f;
                if (j < visible) {
                    score *= s.scale;
                    if (bias != nullptr) {
                        score += to_float(bias[((index_t)h * s.tq + i) * s.tk + j]);
                    }
                    p = expf(score - lses[lane]);
                    ds = p * (dp - deltas[lane]);
                }
                for (int ll = 0; ll < 32; ++ll) {
                    const float pl = __shfl_sync(0xffffffffu, p, ll);
                    const float dsl = __shfl_sync(0xffffffffu, ds, ll);
                    const float* ql = qs + ll * qstride;
                    const float* dol = dos + ll * ostride;
#pragma unroll
                    for (int c = 0; c < ATTN_COLS; ++c) {
                        const int col = lane + 32 * c;
                        if (col < dqk) {
                            dk_acc[kk][c] += dsl * ql[col];
                        }
                        if (col < dv) {
                            dv_acc[kk][c] += pl * dol[col];
                        }
                    }
                }
            }
        }
    }

#pragma unroll
    for (int kk = 0; kk < ATTN_KEYS; ++kk) {
        const int j = key0 + warp * ATTN_KEYS + kk;
        if (j >= s.length) {
            continue;
        }
        const index_t token = attention_key_token(launched, b, j);
        const index_t dk_at = attention_row(launched.strides.dk, b, token, g), dv_at = attention_row(launched.strides.dv, b, token, g);
#pragma unroll
        for (int c = 0; c < ATTN_COLS; ++c) {
            const int col = lane + 32 * c;
            if (dk != nullptr && col < dqk) {
                T* target = dk + dk_at + col;
                *target = from_float<T>(to_float(*target) + s.scale * dk_acc[kk][c]);
            }
            if (dv_out != nullptr && col < dv) {
                T* target = dv_out + dv_at + col;
                *target = from_float<T>(to_float(*target) + dv_acc[kk][c]);
            }
        }
    }
}

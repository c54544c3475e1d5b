// Attention.Native: the Lightning Attention-2 recurrence of lightning.cu on tensor cores (bf16/fp16 storage, fp32
// accumulation and fp32 state, stored in fp32; sm_80+), for inner widths 64 and 128 and output widths that are multiples
// of 64. Same arguments and results as lightning_forward (state_mode included, lightning_state.cuh), so it serves the
// forward and the three backward sweeps alike:
//   out_a (+)= λ^(a+1) a_a·S + Σ_{c≤a} λ^(a−c) (a_a·b_c) c_c,    S ← λ^n S + Σ_c λ^(n−1−c) b_cᵀ c_c
// over blocks of 64 tokens (in sweep order; reverse runs T−1 … 0); a ragged batch is the same launch over its sequences, as
// in lightning.cu (lightning_rows). Per block, four products on mma.sync: the intra scores
// A·Bᵀ (16 rows × 64 per warp), the inter term A·S against a 16-bit copy of the state (scaled by a power of two), the
// masked scores times C, and the state update (λ-scaled B)ᵀ·C into the fp32 state each warp keeps in registers (its
// INNER/4 rows × 64 columns).
#include "common.cuh"
#include "mma.cuh"
#include "mma_tiles.cuh"
#include "lightning_decay.cuh"
#include "lightning_state.cuh"

#define LMMA_BT 64      // tokens per block
#define LMMA_DV 64      // output (and state) columns per thread block
#define LMMA_THREADS 128

// Rows of one block (token t0 + r in sweep order) of a sequence of `length` tokens from row `first` along the token axis of
// a [B, T, H, width] tensor, columns col0 … col0 + COLS − 1 → a swizzled tile; rows ≥ n are zero.
template <typename T, int COLS>
__device__ __forceinline__ void lmma_load(T* tile, const T* src, int n, int t0, index_t first, int length, int reverse, int heads, int h,
                                          int width, int col0)
{
    constexpr int chunks = COLS / 8;
    for (int e = threadIdx.x; e < LMMA_BT * chunks; e += LMMA_THREADS) {
        const int r = e / chunks, c = e % chunks;
        const bool valid = r < n;
        const int t = valid ? (reverse ? length - 1 - (t0 + r) : t0 + r) : 0;
        cp_async_16(tile + swizzled<COLS>(r, c), src + ((first + t) * heads + h) * width + col0 + c * 8, valid);
    }
}

// The 16-bit copy of the state is S·2^k, k chosen per block so that max|S|·2^k lies in [2^14, 2^15): the state grows to
// ~|b||c|/(1 − λ), past fp16's 65,504 for λ near 1, and a power of two changes no bit of any value in range (in bf16 as
// well), where clamping or a bf16 copy for fp16 storage would lose accuracy. The inter term is undone in fp32.

// max|x| over the warp's state fragments (NaN ignored: it stays in the state and reaches the outputs as it should).
template <int M>
__device__ __forceinline__ float lmma_state_max(const frag_c (&st)[M][LMMA_DV / 8])
{
    float m = 0.0f;
#pragma unroll
    for (int i = 0; i < M; ++i) {
#pragma unroll
        for (int n = 0; n < LMMA_DV / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                m = fmaxf(m, fabsf(st[i][n].c[e]));
            }
        }
    }
    return warp_max(m);
}

// k for the largest magnitude `max_abs`: 14 − its binary exponent, clamped so 2^k and 2^−k are normal floats.
__device__ __forceinline__ int lmma_state_exponent(float max_abs)
{
    const int k = 141 - (int)((__float_as_uint(max_abs) >> 23) & 0xffu); // 14 − (biased exponent − 127)
    return k < -126 ? -126 : (k > 126 ? 126 : k);
}

// grid (B · heads_in_group, width / 64), block LMMA_THREADS, dynamic shared memory
// (2·64·INNER + 64·64 + INNER·64)·sizeof(T) + 65 floats. inner = INNER (the a/b width), width = c's width. seq_offsets and
// state_rows: a ragged batch (B = the sequence count), or null for the dense layout (lightning_rows).
template <typename T, int INNER>
__global__ void __launch_bounds__(LMMA_THREADS)
lightning_forward_mma(T* out, float* final_state, const float* initial_state, const T* __restrict__ a, const T* __restrict__ bm,
                      const T* __restrict__ cm, LightningDecay decay, int head_offset, int heads_in_group, int seq, int heads,
                      int inner, int width, int reverse, int accumulate, int state_mode, const int* __restrict__ seq_offsets,
                      const int* __restrict__ state_rows)
{
    extern __shared__ float smem[];
    T* as = reinterpret_cast<T*>(smem);  // [64][INNER]
    T* bs = as + LMMA_BT * INNER;         // [64][INNER]; scaled in place to λ^(n−1−c) b_c for the state update
    T* cs = bs + LMMA_BT * INNER;         // [64][64]
    T* ss = cs + LMMA_BT * LMMA_DV;       // [INNER][64], the state rounded to T for the inter product
    float* powers = reinterpret_cast<float*>(ss + INNER * LMMA_DV); // λ^0 … λ^64
    __shared__ float state_max[LMMA_THREADS / 32];                   // per warp, for the block's 2^k

    constexpr int M = INNER / 64; // 16-row blocks of state rows per warp
    const int bb = blockIdx.x / heads_in_group, hg = blockIdx.x % heads_in_group, h = head_offset + hg;
    const int j0 = blockIdx.y * LMMA_DV;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
    const LightningRows rows = lightning_rows(bb, seq, seq_offsets, state_rows);
    const int length = rows.length;
    const index_t state_base = ((index_t)rows.state * heads + h) * inner * width;
    if (threadIdx.x <= LMMA_BT) {
        powers[threadIdx.x] = (float)pow(decay.lambda[hg], (double)threadIdx.x);
    }

    // The state rows of this warp: warp·INNER/4 + m·16 + (g, g + 8); columns n·8 + 2t, + 1.
    frag_c st[M][LMMA_DV / 8];
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int n = 0; n < LMMA_DV / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = warp * (INNER / 4) + m * 16 + gq + (e >> 1) * 8, col = n * 8 + tq * 2 + (e & 1);
                st[m][n].c[e] = initial_state != nullptr ? initial_state[state_base + lightning_state_offset(state_mode, row, j0 + col, inner, width)] : 0.0f;
            }
        }
    }

    // 1 while the initial state still enters one power of λ early (LIGHTNING_STATE_AT_FIRST), i.e. until the first block.
    int shift = (state_mode & LIGHTNING_STATE_AT_FIRST) != 0 ? 1 : 0;
    float mx = lmma_state_max(st);
    if (lane == 0) {
        state_max[warp] = mx;
    }
    __syncthreads();

    for (int t0 = 0; t0 < length; t0 += LMMA_BT) {
        const int n = length - t0 < LMMA_BT ? length - t0 : LMMA_BT;
        // The state copy, S·2^k, for this block's inter product (every warp is past its reads of the previous copy).
        mx = fmaxf(fmaxf(state_max[0], state_max[1]), fmaxf(state_max[2], state_max[3])); // the 4 warps' maxima
        const int k = lmma_state_exponent(mx);
        const float scale = __uint_as_float((unsigned)(k + 127) << 23), unscale = __uint_as_float((unsigned)(127 - k) << 23);
#pragma unroll
        for (int m = 0; m < M; ++m) {
            frag_c scaled[LMMA_DV / 8];
#pragma unroll
            for (int nb = 0; nb < LMMA_DV / 8; ++nb) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    scaled[nb].c[e] = st[m][nb].c[e] * scale;
                }
            }
            store_c<T, LMMA_DV>(ss, warp * (INNER / 4) + m * 16, 0, scaled, lane);
        }
        lmma_load<T, INNER>(as, a, n, t0, rows.first, length, reverse, heads, h, inner, 0);
        lmma_load<T, INNER>(bs, bm, n, t0, rows.first, length, reverse, heads, h, inner, 0);
        lmma_load<T, LMMA_DV>(cs, cm, n, t0, rows.first, length, reverse, heads, h, width, j0);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();

        // Intra scores of the warp's 16 rows against the block's 64 columns, decayed and masked: λ^(r−c) for c ≤ r < n.
        frag_c sc[LMMA_BT / 8], o[LMMA_DV / 8];
#pragma unroll
        for (int nb = 0; nb < LMMA_BT / 8; ++nb) {
            frag_zero(sc[nb]);
            frag_zero(o[nb]);
        }
#pragma unroll
        for (int kk = 0; kk < INNER / 16; ++kk) {
            frag_a fa;
            load_a<INNER>(fa, as, warp * 16, kk, lane);
#pragma unroll
            for (int nb = 0; nb < LMMA_BT / 8; nb += 2) {
                frag_b lo, hi;
                load_bt<INNER>(lo, hi, bs, nb, kk, lane);
                mma_16816<T>(sc[nb], fa, lo);
                mma_16816<T>(sc[nb + 1], fa, hi);
                // Inter term: a·S with B = S (rows = inner dims), columns nb, nb + 1 of the 64.
                load_b<LMMA_DV>(lo, hi, ss, kk, nb, lane);
                mma_16816<T>(o[nb], fa, lo);
                mma_16816<T>(o[nb + 1], fa, hi);
            }
        }
#pragma unroll
        for (int nb = 0; nb < LMMA_BT / 8; ++nb) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = warp * 16 + gq + (e >> 1) * 8, col = nb * 8 + tq * 2 + (e & 1);
                sc[nb].c[e] = col <= row && row < n ? sc[nb].c[e] * powers[row - col] : 0.0f;
                o[nb].c[e] *= powers[row + 1 - shift] * unscale; // row < LMMA_BT: within the table
            }
        }
        frag_a pa[LMMA_BT / 16];
        c_to_a<T, LMMA_BT / 8>(pa, sc);
#pragma unroll
        for (int kk = 0; kk < LMMA_BT / 16; ++kk) {
            mma_tile_b<T, LMMA_DV>(o, pa[kk], cs, kk, 0, lane);
        }
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int row = warp * 16 + gq + half * 8;
            if (out == nullptr || row >= n) {
                continue;
            }
            const int t = reverse ? length - 1 - (t0 + row) : t0 + row;
            T* target = out + ((rows.first + t) * heads + h) * width + j0 + tq * 2;
#pragma unroll
            for (int nb = 0; nb < LMMA_DV / 8; ++nb) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const float value = o[nb].c[half * 2 + e];
                    target[nb * 8 + e] = from_float<T>(accumulate ? to_float(target[nb * 8 + e]) + value : value);
                }
            }
        }

        __syncthreads(); // every warp is done with b and the state copy
        for (int e = threadIdx.x; e < LMMA_BT * INNER; e += LMMA_THREADS) {
            const int r = e / INNER;
            bs[e] = from_float<T>(r < n ? to_float(bs[e]) * powers[n - 1 - r] : 0.0f); // swizzling keeps rows whole
        }
        __syncthreads();
        // S ← λ^n S + (λ-scaled b)ᵀ·c: A = bᵀ, read transposed from b's rows (tokens).
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int nb = 0; nb < LMMA_DV / 8; ++nb) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    st[m][nb].c[e] *= powers[n - shift];
                }
            }
            const int dim0 = warp * (INNER / 4) + m * 16;
#pragma unroll
            for (int kk = 0; kk < LMMA_BT / 16; ++kk) {
                frag_a ft;
                load_at<INNER>(ft, bs, dim0, kk, lane);
                mma_tile_b<T, LMMA_DV>(st[m], ft, cs, kk, 0, lane);
            }
        }
        mx = lmma_state_max(st);
        if (lane == 0) {
            state_max[warp] = mx; // every thread read the previous values before the barrier after the loads
        }
        __syncthreads(); // the tiles are free for the next block, and state_max holds the new state's
        shift = 0;
    }

    if (final_state != nullptr) {
        // LIGHTNING_STATE_ADD_FINAL: the state one step past the sweep, λ·S (S itself while the initial state is pending).
        const float next = shift != 0 ? 1.0f : powers[1];
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int nb = 0; nb < LMMA_DV / 8; ++nb) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int row = warp * (INNER / 4) + m * 16 + gq + (e >> 1) * 8, col = nb * 8 + tq * 2 + (e & 1);
                    float* target = final_state + state_base + (index_t)row * width + j0 + col;
                    *target = (state_mode & LIGHTNING_STATE_ADD_FINAL) != 0 ? *target + next * st[m][nb].c[e] : st[m][nb].c[e];
                }
            }
        }
    }
}

// Attention.Native: MLA decode in the absorbed form on tensor cores (bf16/fp16 cache, fp32 accumulation; sm_80+). The
// fast path of latent_attention.cu's split kernel for DeepSeek's widths (latent 512, rope 64): MQA over the cached latent
// in which every head of a query token scores the same cache rows, so the heads are the 16 rows of one mma tile. On CUDA
// cores each cache row costs 16 heads × 2 × (576 + 512) flops per 1152 bytes, about 30 flops a byte: more than the CUDA
// cores keep up with at HBM speed; on tensor cores the step is bound by the cache read.
// Per block: one query token, 16 heads, one split of the cache in tiles of 32 rows, double-buffered with cp.async. Per tile:
// S = Q̂·Kᵀ (warp w: keys 8w…8w+7 over the full width), an online softmax per head (warp w: heads 4w…4w+3, lane = key),
// O += P·V with V = the tile's first 512 columns (warp w: output columns 128w…). Partials and their combine (with the lift
// by W_vb) are latent_attention.cu's. Paged as latent_attention_decode_split (paged_keys.cuh): a tile's rows are looked up
// a tile ahead of its load, so the copies are issued as for a dense cache.
#include "common.cuh"
#include "mma.cuh"
#include "mma_tiles.cuh"
#include "paged_keys.cuh"

#define LMLA_WARPS 4
#define LMLA_THREADS (LMLA_WARPS * 32)
#define LMLA_ROWS 16 // heads per block: one mma row tile
#define LMLA_KT 32   // cache rows per tile

// keys [s0, s0 + LMLA_KT) of the cache, row r at cache row rows[r] (keys ≥ end zero-filled) → a swizzled tile.
template <typename T, int W>
__device__ __forceinline__ void lmla_load_tile(T* tile, const T* cache, const index_t* rows, int s0, int end)
{
    constexpr int chunks = W / 8;
    for (int e = threadIdx.x; e < LMLA_KT * chunks; e += LMLA_THREADS) {
        const int r = e / chunks, c = e % chunks;
        const bool valid = s0 + r < end;
        cp_async_16(tile + swizzled<W>(r, c), cache + rows[valid ? r : 0] * W + c * 8, valid);
    }
}

// The cache rows of keys [s0, s0 + LMLA_KT) (those < end; the rest repeat key s0's) into rows[LMLA_KT]; threads 0 … 31.
__device__ __forceinline__ void lmla_tile_rows(index_t* rows, const TokenKeys& keys, int s0, int end)
{
    if (threadIdx.x < LMLA_KT) {
        const int s = s0 + (int)threadIdx.x;
        rows[threadIdx.x] = keys.row(s < end ? s : s0);
    }
}

// grid (splits, tokens, ceil(H / 16)) for the query tokens bt0 … of the B·Tq (one chunk), block LMLA_THREADS, dynamic shared
// memory (16·W + 2·32·W + 16·32)·sizeof(T) + (16·32 + 16·3)·4 bytes with W = LATENT + ROPE (and 2·32·8 bytes of static
// shared memory). Arguments as latent_attention_decode_split's (latent and rope must equal LATENT and ROPE); writes the
// same partials, and a paged block past its token's keys exits as there.
template <typename T, int LATENT, int ROPE>
__global__ void __launch_bounds__(LMLA_THREADS)
latent_attention_decode_mma(float* __restrict__ partial_o, float* __restrict__ partial_ml, const float* __restrict__ qhat,
                            const T* __restrict__ cache, int bt0, int tq, int heads, int latent, int rope, int capacity,
                            int length, float scale, int keys_per_split, PagedKeys paged)
{
    constexpr int W = LATENT + ROPE;
    constexpr int COLS = LATENT / LMLA_WARPS; // output columns per warp
    static_assert(W % 32 == 0 && COLS % 16 == 0, "widths: W a multiple of 32 (two k-steps per B load), LATENT of 64");
    extern __shared__ float smem[];
    T* qs = reinterpret_cast<T*>(smem);                         // [16][W]: Q̂ rounded to T
    T* ks = qs + LMLA_ROWS * W;                                 // [2][32][W]: cache tiles
    T* ps = ks + 2 * LMLA_KT * W;                               // [16][32]: probabilities
    float* ss = reinterpret_cast<float*>(ps + LMLA_ROWS * LMLA_KT); // [16][32]: scores
    float* run = ss + LMLA_ROWS * LMLA_KT;                      // [16][3]: running max (log2 units), sum, correction
    __shared__ index_t key_rows[2][LMLA_KT];                    // the cache rows of the tile in each buffer

    const int split = blockIdx.x, bt = bt0 + (int)blockIdx.y, h0 = blockIdx.z * LMLA_ROWS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const index_t rows = (index_t)gridDim.y * heads; // partial rows of the chunk
    const TokenKeys keys = token_keys(paged, bt, tq, capacity, length);
    if (paged_split_past_keys(paged, keys, keys_per_split)) {
        return;
    }

    const int visible = keys.visible;
    const int begin = split * keys_per_split;
    const int end = begin + keys_per_split < visible ? begin + keys_per_split : visible;
    if (begin < end) {
        lmla_tile_rows(key_rows[0], keys, begin, end);
        if (begin + LMLA_KT < end) {
            lmla_tile_rows(key_rows[1], keys, begin + LMLA_KT, end);
        }
        __syncthreads(); // the first tiles' rows are known
        lmla_load_tile<T, W>(ks, cache, key_rows[0], begin, end);
    }
    cp_async_commit();

    for (int e = threadIdx.x; e < LMLA_ROWS * W / 2; e += LMLA_THREADS) {
        const int r = e / (W / 2), col = e % (W / 2) * 2, h = h0 + r;
        const float* qr = qhat + ((index_t)blockIdx.y * heads + h) * W + col;
        const float x0 = h < heads ? qr[0] : 0.0f, x1 = h < heads ? qr[1] : 0.0f;
        *reinterpret_cast<unsigned*>(qs + swizzled<W>(r, col / 8) + col % 8) = pack2<T>(x0, x1);
    }
    if (threadIdx.x < LMLA_ROWS) {
        run[3 * threadIdx.x] = NEG_INF;
        run[3 * threadIdx.x + 1] = 0.0f;
    }
    const float scale_log2 = scale * 1.4426950408889634f;
    frag_c acc[COLS / 8];
#pragma unroll
    for (int n = 0; n < COLS / 8; ++n) {
        frag_zero(acc[n]);
    }

    int buf = 0;
    for (int s0 = begin; s0 < end; s0 += LMLA_KT, buf ^= 1) {
        if (s0 + LMLA_KT < end) {
            // The next tile, during this one; its rows were looked up during the previous tile (or before the loop).
            lmla_load_tile<T, W>(ks + (buf ^ 1) * LMLA_KT * W, cache, key_rows[buf ^ 1], s0 + LMLA_KT, end);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads(); // this tile (and Q̂, the running state) is in shared memory; every copy from key_rows[buf] is issued
        if (s0 + 2 * LMLA_KT < end) {
            lmla_tile_rows(key_rows[buf], keys, s0 + 2 * LMLA_KT, end); // read at the next tile's top, after its barriers
        }
        const T* kt = ks + buf * LMLA_KT * W;

        // S[:, 8w … 8w + 7] = Q̂·Kᵀ over the full width.
        frag_c sc;
        frag_zero(sc);
#pragma unroll 4
        for (int kk = 0; kk < W / 16; kk += 2) {
            frag_a a0, a1;
            frag_b b0, b1;
            load_a<W>(a0, qs, 0, kk, lane);
            load_a<W>(a1, qs, 0, kk + 1, lane);
            load_bt_k2<W>(b0, b1, kt, warp, kk, lane);
            mma_16816<T>(sc, a0, b0);
            mma_16816<T>(sc, a1, b1);
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            ss[(lane / 4 + (e >> 1) * 8) * LMLA_KT + warp * 8 + (lane % 4) * 2 + (e & 1)] = sc.c[e];
        }
        __syncthreads();

        // Online softmax: warp w takes heads 4w … 4w + 3, lane = key.
#pragma unroll
        for (int i = 0; i < LMLA_ROWS / LMLA_WARPS; ++i) {
            const int r = warp * (LMLA_ROWS / LMLA_WARPS) + i;
            const float x = s0 + lane < end ? ss[r * LMLA_KT + lane] * scale_log2 : NEG_INF;
            const float m_old = run[3 * r];
            const float m_new = fmaxf(m_old, warp_max(x));
            const float base_m = m_new == NEG_INF ? 0.0f : m_new;
            const float p = x == NEG_INF ? 0.0f : exp2f(x - base_m);
            const float sum = warp_sum(p);
            ps[swizzled<LMLA_KT>(r, lane / 8) + lane % 8] = from_float<T>(p);
            if (lane == 0) {
                const float correction = exp2f(m_old - base_m);
                run[3 * r] = m_new;
                run[3 * r + 1] = run[3 * r + 1] * correction + sum;
                run[3 * r + 2] = correction;
            }
        }
        __syncthreads();

        // O[:, columns of warp w] = O·correction + P·V, V = the tile's first LATENT columns.
        const float c0 = run[3 * (lane / 4) + 2], c1 = run[3 * (lane / 4 + 8) + 2];
#pragma unroll
        for (int n = 0; n < COLS / 8; ++n) {
            acc[n].c[0] *= c0;
            acc[n].c[1] *= c0;
            acc[n].c[2] *= c1;
            acc[n].c[3] *= c1;
        }
#pragma unroll
        for (int kk = 0; kk < LMLA_KT / 16; ++kk) {
            frag_a pa;
            load_a<LMLA_KT>(pa, ps, 0, kk, lane);
            mma_tile_b<T, W>(acc, pa, kt, kk, warp * (COLS / 8), lane);
        }
        __syncthreads(); // every warp is done with this tile, P and S before the next prefetch reuses the buffer
    }
    cp_async_wait<0>(); // no copy may outlive the block (an empty split never waited)

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int h = h0 + lane / 4 + r * 8;
        if (h >= heads) {
            continue;
        }
        float* out = partial_o + (split * rows + (index_t)blockIdx.y * heads + h) * LATENT + warp * COLS + (lane % 4) * 2;
#pragma unroll
        for (int n = 0; n < COLS / 8; ++n) {
            out[n * 8] = acc[n].c[r * 2];
            out[n * 8 + 1] = acc[n].c[r * 2 + 1];
        }
    }
    if (threadIdx.x < LMLA_ROWS && h0 + (int)threadIdx.x < heads) {
        const index_t part = split * rows + (index_t)blockIdx.y * heads + h0 + threadIdx.x;
        // latent_attention_decode_combine works in natural-log units.
        partial_ml[2 * part] = run[3 * threadIdx.x] == NEG_INF ? NEG_INF : run[3 * threadIdx.x] * 0.6931471805599453f;
        partial_ml[2 * part + 1] = run[3 * threadIdx.x + 1];
    }
}

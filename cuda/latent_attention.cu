// Attention.Native: MLA decode in the absorbed form (MQA over the cached latent), split-KV.
// q [B, Tq, H, dn + dr] (q_pe rotated), cache [B, Cap, dc + dr] rows [c_s | k_pe_s], kv_up = w_kv_b [H·(dn + dv), dc].
// 1. absorb: q̂ = [q_nope · W_kb_h | q_pe] (fp32); 2. split: each block scores a range of cache rows for one (b, t, h)
// and averages the latents c_s; 3. combine the splits and lift with W_vb_h to o [B, Tq, H, dv].
// Paged (PagedAttention.Latent): q [1, N_q, H, dn + dr] packs the query tokens of many sequences and the cache is a pool
// [P, page_size, dc + dr] read through block tables (paged_keys.cuh); the grid's splits are planned for the longest sequence.
#include "common.cuh"
#include "split_kv.cuh"
#include "paged_keys.cuh"

// q̂[row, c] for row = (b, t, h): c < dc: Σ_i q_nope[i] · kv_up[h·(dn+dv) + i, c]; c ≥ dc: q_pe[c − dc]. One thread per element.
template <typename T>
__global__ void latent_attention_absorb(float* __restrict__ qhat, const T* __restrict__ q, const T* __restrict__ kv_up,
                                        index_t rows, int heads, int nope, int rope, int latent, int dv)
{
    const int width = latent + rope;
    const index_t n = rows * width;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % width);
        const index_t row = e / width;
        const int h = (int)(row % heads);
        const T* qr = q + row * (nope + rope);
        float value;
        if (c < latent) {
            value = 0.0f;
            for (int i = 0; i < nope; ++i) {
                value += to_float(qr[i]) * to_float(kv_up[((index_t)h * (nope + dv) + i) * latent + c]);
            }
        } else {
            value = to_float(qr[nope + c - latent]);
        }
        qhat[e] = value;
    }
}

// grid (splits, tokens, H) for the query tokens bt0 … bt0 + tokens − 1 of the B·Tq (one chunk; qhat and the partials hold
// only this chunk's rows), block SPLIT_THREADS, dynamic shared memory (dc + dr) floats. Query t sits at position
// length − Tq + t and sees cache rows s ≤ that position; split covers rows [split·keys_per_split, +keys_per_split).
// Paged (paged.table set): the tokens are the packed N_q, each seeing its own sequence's keys; tq, capacity and length unused.
template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
latent_attention_decode_split(float* __restrict__ partial_o, float* __restrict__ partial_ml, const float* __restrict__ qhat, const T* __restrict__ cache,
                              int bt0, int tq, int heads, int latent, int rope, int capacity, int length, float scale, int keys_per_split,
                              PagedKeys paged)
{
    extern __shared__ float qs[];           // [dc + dr]
    __shared__ float scores[SPLIT_KEYS];
    __shared__ float running[3];
    __shared__ index_t key_rows[SPLIT_KEYS]; // the tile's cache rows
    const int width = latent + rope;
    const int split = blockIdx.x, bt = bt0 + (int)blockIdx.y, h = blockIdx.z;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const index_t rows = (index_t)gridDim.y * heads, row = (index_t)blockIdx.y * heads + h; // within the chunk
    const TokenKeys keys = token_keys(paged, bt, tq, capacity, length);
    if (paged_split_past_keys(paged, keys, keys_per_split)) {
        return;
    }

    float acc[SPLIT_COLS];
    const SplitRange range = split_begin(qs, qhat + row * width, width, running, acc, keys.visible, keys_per_split);
    const int begin = range.begin, end = range.end;

    for (int s0 = begin; s0 < end; s0 += SPLIT_KEYS) {
        __syncthreads(); // q̂ and the running state are written; the previous tile's probabilities and rows are consumed
        for (int jj = warp; jj < SPLIT_KEYS; jj += SPLIT_THREADS / 32) {
            const int s = s0 + jj;
            float dot = 0.0f;
            if (s < end) {
                const index_t key_row = keys.row(s);
                const T* key = cache + key_row * width;
                for (int c = lane; c < width; c += 32) {
                    dot += qs[c] * to_float(key[c]);
                }
                if (lane == 0) {
                    key_rows[jj] = key_row;
                }
            }
            dot = warp_sum(dot);
            if (lane == 0) {
                scores[jj] = s < end ? dot * scale : NEG_INF;
            }
        }
        __syncthreads();
        split_softmax_tile(scores, running);
        __syncthreads();
        const float correction = running[2];
        const int count = end - s0 < SPLIT_KEYS ? end - s0 : SPLIT_KEYS;
#pragma unroll
        for (int c = 0; c < SPLIT_COLS; ++c) {
            const int col = threadIdx.x + SPLIT_THREADS * c;
            if (col < latent) {
                float sum = acc[c] * correction;
                for (int jj = 0; jj < count; ++jj) {
                    sum += scores[jj] * to_float(cache[key_rows[jj] * width + col]);
                }
                acc[c] = sum;
            }
        }
    }
    __syncthreads();
    split_write_partial(partial_o, partial_ml, acc, running, split, rows, row, latent);
}

// grid tokens·H (one chunk; o points at the chunk's first row), block SPLIT_THREADS, dynamic shared memory dc floats:
// merge the splits into the latent average, then o[row, j] = W_vb_h[j] · average (one warp per output column). visible:
// paged, the chunk's tokens' visible keys (token_splits); nullptr dense.
template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
latent_attention_decode_combine(T* __restrict__ o, const float* __restrict__ partial_o, const float* __restrict__ partial_ml, const T* __restrict__ kv_up,
                                int heads, int nope, int latent, int dv, int splits, const int* __restrict__ visible, int keys_per_split)
{
    extern __shared__ float mixed[]; // [dc]
    const index_t rows = gridDim.x, row = blockIdx.x;
    const int h = (int)(row % heads);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    split_combine(mixed, partial_o, partial_ml, token_splits(visible, row / heads, splits, keys_per_split), rows, row, latent);
    for (int j = warp; j < dv; j += SPLIT_THREADS / 32) {
        const T* w = kv_up + ((index_t)h * (nope + dv) + nope + j) * latent;
        float dot = 0.0f;
        for (int c = lane; c < latent; c += 32) {
            dot += to_float(w[c]) * mixed[c];
        }
        dot = warp_sum(dot);
        if (lane == 0) {
            o[row * dv + j] = from_float<T>(dot);
        }
    }
}

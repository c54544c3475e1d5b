// Attention.Native: split-KV decode helpers (flash-decoding). A few query rows face a long cache, so the cache is cut
// into splits, one thread block each; a block keeps a running max m, sum l and unnormalised accumulator over its keys and
// writes them as a partial; a combine pass rescales the partials by e^{m_s − M} and normalises.
// Tiles of SPLIT_KEYS keys: scores in shared memory, then warp 0 turns them into probabilities.
#pragma once
#include "common.cuh"

#define SPLIT_THREADS 256
#define SPLIT_KEYS 32                                   // keys per tile (one warp's lanes)
#define SPLIT_MAX_WIDTH 1024                            // widest accumulated row (latent, TPA head)
#define SPLIT_COLS (SPLIT_MAX_WIDTH / SPLIT_THREADS)    // accumulator columns per thread: tid, tid + 256, ...

// A split block's start, for grid (splits, query tokens, H): copies its query row (width floats) into qs, resets the running
// state and the accumulator, and returns the key range [begin, end) of its split among the `visible` keys its query token
// sees (paged_keys.cuh).
struct SplitRange { int begin, end; };

__device__ __forceinline__ SplitRange split_begin(float* qs, const float* query, int width, float* running, float* acc,
                                                  int visible, int keys_per_split)
{
    for (int c = threadIdx.x; c < width; c += SPLIT_THREADS) {
        qs[c] = query[c];
    }
    if (threadIdx.x == 0) {
        running[0] = NEG_INF;
        running[1] = 0.0f;
        running[2] = 1.0f;
    }
#pragma unroll
    for (int c = 0; c < SPLIT_COLS; ++c) {
        acc[c] = 0.0f;
    }
    SplitRange range;
    range.begin = blockIdx.x * keys_per_split;
    range.end = range.begin + keys_per_split < visible ? range.begin + keys_per_split : visible;
    return range;
}

// Warp 0 turns the tile's scores (NEG_INF where masked) into probabilities e^{s − m_new} in place and updates
// running = {m, l, correction}. Call between two __syncthreads() from every thread.
__device__ __forceinline__ void split_softmax_tile(float* scores, float* running)
{
    if (threadIdx.x < 32) {
        const float s = scores[threadIdx.x];
        const float m_old = running[0];
        const float m_new = fmaxf(m_old, warp_max(s));
        const float base = m_new == NEG_INF ? 0.0f : m_new; // nothing visible yet: keep exponents finite
        const float p = s == NEG_INF ? 0.0f : expf(s - base);
        const float sum = warp_sum(p);
        scores[threadIdx.x] = p;
        if (threadIdx.x == 0) {
            const float correction = expf(m_old - base);
            running[1] = running[1] * correction + sum;
            running[0] = m_new;
            running[2] = correction;
        }
    }
}

// Writes one block's partial for `row`: acc (thread-owned columns) to partial_o[split, row, :width], (m, l) to partial_ml.
__device__ __forceinline__ void split_write_partial(float* partial_o, float* partial_ml, const float* acc, const float* running,
                                                    int split, index_t rows, index_t row, int width)
{
    const index_t part = split * rows + row;
#pragma unroll
    for (int c = 0; c < SPLIT_COLS; ++c) {
        const int col = threadIdx.x + SPLIT_THREADS * c;
        if (col < width) {
            partial_o[part * width + col] = acc[c];
        }
    }
    if (threadIdx.x == 0) {
        partial_ml[2 * part] = running[0];
        partial_ml[2 * part + 1] = running[1];
    }
}

// Merges the partials of `row` into out[:width] (shared memory): Σ_s e^{m_s − M} acc_s / Σ_s e^{m_s − M} l_s over its first
// `splits` splits (token_splits). Ends with __syncthreads(), so out is ready for every thread.
__device__ __forceinline__ void split_combine(float* out, const float* partial_o, const float* partial_ml, int splits, index_t rows, index_t row, int width)
{
    float m_max = NEG_INF;
    for (int s = 0; s < splits; ++s) {
        m_max = fmaxf(m_max, partial_ml[2 * (s * rows + row)]);
    }
    const float base = m_max == NEG_INF ? 0.0f : m_max;
    float total = 0.0f;
    for (int s = 0; s < splits; ++s) {
        const index_t part = s * rows + row;
        total += partial_ml[2 * part + 1] * expf(partial_ml[2 * part] - base);
    }
    const float inverse = total > 0.0f ? 1.0f / total : 0.0f;
    for (int col = threadIdx.x; col < width; col += blockDim.x) {
        float value = 0.0f;
        for (int s = 0; s < splits; ++s) {
            const index_t part = s * rows + row;
            value += partial_o[part * width + col] * expf(partial_ml[2 * part] - base);
        }
        out[col] = value * inverse;
    }
    __syncthreads();
}

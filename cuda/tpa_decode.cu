// Attention.Native: TPA decode from the cached factors, split-KV. Per query row (b, t, h) the query factors collapse to
// q̃ = Σ_r aq[h,r] bq[r,:] (so score[s] = scale Σ_u ak[s,h,u] ⟨q̃, bk[s,u,:]⟩, scale = 1/(Rq·Rk·√d)), and each cached
// value is Σ_u av[s,h,u] bv[s,u,:] (the 1/Rv is applied once at the end). k and v are never materialised.
// aq [B, Tq, H, Rq], bq [B, Tq, Rq, d]; ak [B, Cap, H, Rk], bk [B, Cap, Rk, d], av [B, Cap, H, Rv], bv [B, Cap, Rv, d].
#include "common.cuh"
#include "split_kv.cuh"

// q̃[(b,t,h), c] = Σ_r aq[b,t,h,r] · bq[b,t,r,c]. One thread per element.
template <typename T>
__global__ void tpa_decode_query(float* __restrict__ qtilde, const T* __restrict__ aq, const T* __restrict__ bq, index_t tokens, int heads, int rank, int width)
{
    const index_t n = tokens * heads * width;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % width);
        const index_t row = e / width, token = row / heads;
        float sum = 0.0f;
        for (int r = 0; r < rank; ++r) {
            sum += to_float(aq[row * rank + r]) * to_float(bq[(token * rank + r) * width + c]);
        }
        qtilde[e] = sum;
    }
}

// grid (splits, tokens, H) for the query tokens bt0 … bt0 + tokens − 1 of the B·Tq (one chunk; qtilde and the partials
// hold only this chunk's rows), block SPLIT_THREADS, dynamic shared memory d floats.
template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
tpa_decode_split(float* __restrict__ partial_o, float* __restrict__ partial_ml, const float* __restrict__ qtilde,
                 const T* __restrict__ ak, const T* __restrict__ bk, const T* __restrict__ av, const T* __restrict__ bv,
                 int bt0, int tq, int heads, int key_rank, int value_rank, int width, int capacity, int length, float scale, int keys_per_split)
{
    extern __shared__ float qs[]; // [d]
    __shared__ float scores[SPLIT_KEYS];
    __shared__ float running[3];
    const int split = blockIdx.x, bt = bt0 + (int)blockIdx.y, h = blockIdx.z;
    const int b = bt / tq, t = bt % tq;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const index_t rows = (index_t)gridDim.y * heads, row = (index_t)blockIdx.y * heads + h; // within the chunk

    float acc[SPLIT_COLS];
    const SplitRange range = split_begin(qs, qtilde + row * width, width, running, acc, t, tq, length, keys_per_split);
    const int begin = range.begin, end = range.end;

    for (int s0 = begin; s0 < end; s0 += SPLIT_KEYS) {
        __syncthreads();
        for (int jj = warp; jj < SPLIT_KEYS; jj += SPLIT_THREADS / 32) {
            const int s = s0 + jj;
            float score = 0.0f;
            if (s < end) {
                const index_t key = (index_t)b * capacity + s;
                for (int u = 0; u < key_rank; ++u) {
                    const T* bku = bk + (key * key_rank + u) * width;
                    float dot = 0.0f;
                    for (int c = lane; c < width; c += 32) {
                        dot += qs[c] * to_float(bku[c]);
                    }
                    score += to_float(ak[(key * heads + h) * key_rank + u]) * warp_sum(dot);
                }
            }
            if (lane == 0) {
                scores[jj] = s < end ? score * scale : NEG_INF;
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
            if (col < width) {
                float sum = acc[c] * correction;
                for (int jj = 0; jj < count; ++jj) {
                    const index_t key = (index_t)b * capacity + s0 + jj;
                    float value = 0.0f;
                    for (int u = 0; u < value_rank; ++u) {
                        value += to_float(av[(key * heads + h) * value_rank + u]) * to_float(bv[(key * value_rank + u) * width + col]);
                    }
                    sum += scores[jj] * value;
                }
                acc[c] = sum;
            }
        }
    }
    __syncthreads();
    split_write_partial(partial_o, partial_ml, acc, running, split, rows, row, width);
}

// grid tokens·H (one chunk; o points at the chunk's first row), block SPLIT_THREADS, dynamic shared memory d floats:
// o[row] = (1/Rv) · merged average.
template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
tpa_decode_combine(T* __restrict__ o, const float* __restrict__ partial_o, const float* __restrict__ partial_ml, int width, int value_rank, int splits)
{
    extern __shared__ float mixed[];
    const index_t rows = gridDim.x, row = blockIdx.x;
    split_combine(mixed, partial_o, partial_ml, splits, rows, row, width);
    for (int c = threadIdx.x; c < width; c += SPLIT_THREADS) {
        o[row * width + c] = from_float<T>(mixed[c] / (float)value_rank);
    }
}

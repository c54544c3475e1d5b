// Attention.Native: TPA factor contraction, forward and backward. a [B, T, H, R], f [B, T, R, d] → y [B, T, H, d],
// y[tok,h,:] = (1/R) Σ_r a[tok,h,r] · f[tok,r,:].
#include "common.cuh"

// One thread per output element.
template <typename T>
__global__ void tpa_contraction_forward(T* __restrict__ y, const T* __restrict__ a, const T* __restrict__ f, index_t tokens, int heads, int rank, int width)
{
    const index_t n = tokens * heads * width;
    const float inverse_rank = 1.0f / (float)rank;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int col = (int)(e % width);
        const index_t head = e / width, token = head / heads;
        float acc = 0.0f;
        for (int r = 0; r < rank; ++r) {
            acc += to_float(a[head * rank + r]) * to_float(f[(token * rank + r) * width + col]);
        }
        y[e] = from_float<T>(acc * inverse_rank);
    }
}

// da[tok,h,r] += (1/R) ⟨dy[tok,h,:], f[tok,r,:]⟩: one warp per (tok, h, r).
template <typename T>
__global__ void tpa_contraction_backward_a(T* __restrict__ da, const T* __restrict__ f, const T* __restrict__ dy, index_t tokens, int heads, int rank, int width)
{
    const index_t item = (index_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (item >= tokens * heads * rank) {
        return;
    }
    const int r = (int)(item % rank);
    const index_t head = item / rank, token = head / heads;
    float dot = 0.0f;
    for (int col = lane; col < width; col += 32) {
        dot += to_float(dy[head * width + col]) * to_float(f[(token * rank + r) * width + col]);
    }
    dot = warp_sum(dot);
    if (lane == 0) {
        da[item] = from_float<T>(to_float(da[item]) + dot / (float)rank);
    }
}

// df[tok,r,:] += (1/R) Σ_h a[tok,h,r] · dy[tok,h,:]: one thread per element of f.
template <typename T>
__global__ void tpa_contraction_backward_f(T* __restrict__ df, const T* __restrict__ a, const T* __restrict__ dy, index_t tokens, int heads, int rank, int width)
{
    const index_t n = tokens * rank * width;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int col = (int)(e % width), r = (int)(e / width % rank);
        const index_t token = e / width / rank;
        float acc = 0.0f;
        for (int h = 0; h < heads; ++h) {
            acc += to_float(a[(token * heads + h) * rank + r]) * to_float(dy[(token * heads + h) * width + col]);
        }
        df[e] = from_float<T>(to_float(df[e]) + acc / (float)rank);
    }
}

// Attention.Native: a contiguous transpose of rank ≤ 6 (torch.permute(x, p).contiguous()), forward and backward.
// The launcher passes the dims of the contiguous tensor written (padded in front with 1s to six axes) and, for each of its
// axes, the stride of the same axis in the contiguous tensor read (0 for a padding axis): forward writes y reading x with
// y's axis a = x's axis p[a]; backward adds into dx reading dy with the inverse permutation.

#include "common.cuh"

// The offset in the tensor read of element e of the tensor written.
__device__ __forceinline__ index_t permute_source(index_t e, int d0, int d1, int d2, int d3, int d4, int d5,
                                                  index_t s0, index_t s1, index_t s2, index_t s3, index_t s4, index_t s5)
{
    index_t offset = e % d5 * s5;
    e /= d5;
    offset += e % d4 * s4;
    e /= d4;
    offset += e % d3 * s3;
    e /= d3;
    offset += e % d2 * s2;
    e /= d2;
    offset += e % d1 * s1;
    e /= d1;
    return offset + e % d0 * s0;
}

// y[e] = x[source(e)]: one thread per output element; a copy, so every value (NaN payloads too) moves unchanged.
template <typename T>
__global__ void permute_forward(T* __restrict__ y, const T* __restrict__ x, index_t n, int d0, int d1, int d2, int d3, int d4, int d5,
                                index_t s0, index_t s1, index_t s2, index_t s3, index_t s4, index_t s5)
{
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        y[e] = x[permute_source(e, d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5)];
    }
}

// dx[e] += dy[source(e)]: one thread per element of dx, each written once, so no atomics.
template <typename T>
__global__ void permute_backward(T* __restrict__ dx, const T* __restrict__ dy, index_t n, int d0, int d1, int d2, int d3, int d4, int d5,
                                 index_t s0, index_t s1, index_t s2, index_t s3, index_t s4, index_t s5)
{
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        dx[e] = from_float<T>(to_float(dx[e]) + to_float(dy[permute_source(e, d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5)]));
    }
}

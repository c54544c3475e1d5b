// Attention.Native: AdaptiveAvgPool1d over time as PyTorch defines it, forward and backward.
// x [B, T, C] → y [B, n, C]; output i averages positions floor(i·T/n) … ceil((i+1)·T/n) − 1.
#include "common.cuh"

__device__ __forceinline__ int pool_start(int i, int time, int outputs) { return (int)((index_t)i * time / outputs); }
__device__ __forceinline__ int pool_end(int i, int time, int outputs) { return (int)(((index_t)(i + 1) * time + outputs - 1) / outputs); }

// One thread per output element.
template <typename T>
__global__ void adaptive_pool_forward(T* __restrict__ y, const T* __restrict__ x, int batch, int time, int outputs, int channels)
{
    const index_t n = (index_t)batch * outputs * channels;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % channels), i = (int)(e / channels % outputs);
        const index_t b = e / channels / outputs;
        const int start = pool_start(i, time, outputs), end = pool_end(i, time, outputs);
        float sum = 0.0f;
        for (int t = start; t < end; ++t) {
            sum += to_float(x[(b * time + t) * channels + c]);
        }
        y[e] = from_float<T>(sum * (1.0f / (float)(end - start)));
    }
}

// dx[b,t,c] += Σ over the windows i containing t of dy[b,i,c] / |window i|. One thread per input element.
template <typename T>
__global__ void adaptive_pool_backward(T* __restrict__ dx, const T* __restrict__ dy, int batch, int time, int outputs, int channels)
{
    const index_t n = (index_t)batch * time * channels;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % channels), t = (int)(e / channels % time);
        const index_t b = e / channels / time;
        const int first = (int)((index_t)t * outputs / time);
        int last = (int)(((index_t)(t + 1) * outputs + time - 1) / time - 1);
        last = last < outputs - 1 ? last : outputs - 1;
        float acc = to_float(dx[e]);
        for (int i = first; i <= last; ++i) {
            const int start = pool_start(i, time, outputs), end = pool_end(i, time, outputs);
            acc += to_float(dy[(b * outputs + i) * channels + c]) * (1.0f / (float)(end - start));
        }
        dx[e] = from_float<T>(acc);
    }
}

// Attention.Native: depthwise Conv1d over time (agent/flatten DWC), forward and backward.
// x, y [B, T, C]; weight [F, 1, k] (k odd), bias [F]; channel c uses filter c mod F; zero padding (k−1)/2.
#include "common.cuh"
#include "reduce.cuh"

// One thread per output element.
template <typename T>
__global__ void depthwise_conv_forward(T* __restrict__ y, const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                                       index_t rows, int time, int channels, int filters, int kernel)
{
    const int pad = (kernel - 1) / 2;
    const index_t n = rows * channels;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % channels), f = c % filters;
        const index_t row = e / channels;
        const int t = (int)(row % time);
        float acc = bias != nullptr ? to_float(bias[f]) : 0.0f;
        for (int j = 0; j < kernel; ++j) {
            const int source = t + j - pad;
            if (source >= 0 && source < time) {
                acc += to_float(weight[f * kernel + j]) * to_float(x[(row + source - t) * channels + c]);
            }
        }
        y[e] = from_float<T>(acc);
    }
}

// dx[b,s,c] += Σ_j w[f,j] · dy[b, s − j + pad, c]. One thread per element.
template <typename T>
__global__ void depthwise_conv_backward(T* __restrict__ dx, const T* __restrict__ weight, const T* __restrict__ dy,
                                        index_t rows, int time, int channels, int filters, int kernel)
{
    const int pad = (kernel - 1) / 2;
    const index_t n = rows * channels;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % channels), f = c % filters;
        const index_t row = e / channels;
        const int s = (int)(row % time);
        float acc = to_float(dx[e]);
        for (int j = 0; j < kernel; ++j) {
            const int t = s - j + pad;
            if (t >= 0 && t < time) {
                acc += to_float(weight[f * kernel + j]) * to_float(dy[(row + t - s) * channels + c]);
            }
        }
        dx[e] = from_float<T>(acc);
    }
}

// dweight/dbias stage 1: columns (j, c) for j < k are dy[row, c] · x[row + j − pad, c]; column (k, c) is dy[row, c].
// partial is [chunks, (k + 1)·C].
template <typename T>
__global__ void depthwise_conv_params_backward_partials(float* __restrict__ partial, const T* __restrict__ x, const T* __restrict__ dy,
                                                        index_t rows, int time, int channels, int kernel, index_t rows_per_chunk)
{
    const int pad = (kernel - 1) / 2;
    column_sum_partials(partial, rows, (kernel + 1) * channels, rows_per_chunk, [=](index_t row, int col) {
        const int j = col / channels, c = col % channels;
        const float g = to_float(dy[row * channels + c]);
        if (j == kernel) {
            return g;
        }
        const int t = (int)(row % time), source = t + j - pad;
        return source >= 0 && source < time ? g * to_float(x[(row + source - t) * channels + c]) : 0.0f;
    });
}

// Stage 2, one thread per (f, j ≤ k): Σ over chunks and over the channels c ≡ f (mod F), in a fixed order;
// j < k adds into dweight[f, 0, j], j = k into dbias[f].
template <typename T>
__global__ void depthwise_conv_params_backward_finalize(T* __restrict__ dweight, T* __restrict__ dbias, const float* __restrict__ partial,
                                                        int chunks, int channels, int filters, int kernel)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= filters * (kernel + 1)) {
        return;
    }
    const int f = e / (kernel + 1), j = e % (kernel + 1);
    T* target = j < kernel ? (dweight != nullptr ? dweight + f * kernel + j : nullptr) : (dbias != nullptr ? dbias + f : nullptr);
    if (target == nullptr) {
        return;
    }
    const int width = (kernel + 1) * channels;
    float total = 0.0f;
    for (int chunk = 0; chunk < chunks; ++chunk) {
        for (int c = f; c < channels; c += filters) {
            total += partial[(index_t)chunk * width + j * channels + c];
        }
    }
    *target = from_float<T>(to_float(*target) + total);
}

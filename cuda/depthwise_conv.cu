// Attention.Native: depthwise convolution over a channels-last token grid (agent/flatten DWC), forward and backward.
// x, y [B, H, W, C] as token rows (b·H + i)·W + j; weight [F, 1, kh, kw] (kh, kw odd), bias [F]; channel c uses filter
// c mod F; zero padding (kh−1)/2, (kw−1)/2. The 1-D form [B, T, C] with weight [F, 1, k] runs as H = 1, W = T, kh = 1.
#include "common.cuh"
#include "reduce.cuh"

// Image row and column of token `row` (no division for the 1-D form's single image row).
__device__ __forceinline__ void depthwise_conv_position(index_t row, int height, int width, int& i, int& j)
{
    const index_t line = row / width;
    j = (int)(row - line * width);
    i = height == 1 ? 0 : (int)(line % height);
}

// One thread per output element.
template <typename T>
__global__ void depthwise_conv_forward(T* __restrict__ y, const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                                       index_t rows, int height, int width, int channels, int filters, int kernel_h, int kernel_w)
{
    const int pad_h = (kernel_h - 1) / 2, pad_w = (kernel_w - 1) / 2;
    const index_t n = rows * channels;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % channels), f = c % filters;
        const index_t row = e / channels;
        int i, j;
        depthwise_conv_position(row, height, width, i, j);
        float acc = bias != nullptr ? to_float(bias[f]) : 0.0f;
        const T* w = weight + (index_t)f * kernel_h * kernel_w;
        for (int u = 0; u < kernel_h; ++u) {
            const int si = i + u - pad_h;
            if (si < 0 || si >= height) {
                continue;
            }
            const index_t line = row + (index_t)(u - pad_h) * width;
            for (int v = 0; v < kernel_w; ++v) {
                const int sj = j + v - pad_w;
                if (sj >= 0 && sj < width) {
                    acc += to_float(w[u * kernel_w + v]) * to_float(x[(line + v - pad_w) * channels + c]);
                }
            }
        }
        y[e] = from_float<T>(acc);
    }
}

// dx[b,si,sj,c] += Σ_{u,v} w[f,u,v] · dy[b, si − u + pad_h, sj − v + pad_w, c]. One thread per element.
template <typename T>
__global__ void depthwise_conv_backward(T* __restrict__ dx, const T* __restrict__ weight, const T* __restrict__ dy,
                                        index_t rows, int height, int width, int channels, int filters, int kernel_h, int kernel_w)
{
    const int pad_h = (kernel_h - 1) / 2, pad_w = (kernel_w - 1) / 2;
    const index_t n = rows * channels;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % channels), f = c % filters;
        const index_t row = e / channels;
        int si, sj;
        depthwise_conv_position(row, height, width, si, sj);
        float acc = to_float(dx[e]);
        const T* w = weight + (index_t)f * kernel_h * kernel_w;
        for (int u = 0; u < kernel_h; ++u) {
            const int i = si - u + pad_h;
            if (i < 0 || i >= height) {
                continue;
            }
            const index_t line = row + (index_t)(pad_h - u) * width;
            for (int v = 0; v < kernel_w; ++v) {
                const int j = sj - v + pad_w;
                if (j >= 0 && j < width) {
                    acc += to_float(w[u * kernel_w + v]) * to_float(dy[(line + pad_w - v) * channels + c]);
                }
            }
        }
        dx[e] = from_float<T>(acc);
    }
}

// dweight/dbias stage 1: columns (tap, c) for tap = u·kw + v < kh·kw are dy[row, c] · x[token (i + u − pad_h, j + v − pad_w), c]
// (0 outside the image); column (kh·kw, c) is dy[row, c]. partial is [chunks, (kh·kw + 1)·C].
template <typename T>
__global__ void depthwise_conv_params_backward_partials(float* __restrict__ partial, const T* __restrict__ x, const T* __restrict__ dy,
                                                        index_t rows, int height, int width, int channels, int kernel_h, int kernel_w,
                                                        index_t rows_per_chunk)
{
    const int pad_h = (kernel_h - 1) / 2, pad_w = (kernel_w - 1) / 2, taps = kernel_h * kernel_w;
    column_sum_partials(partial, rows, (taps + 1) * channels, rows_per_chunk, [=](index_t row, int col) {
        const int tap = col / channels, c = col % channels;
        const float g = to_float(dy[row * channels + c]);
        if (tap == taps) {
            return g;
        }
        const int du = tap / kernel_w - pad_h, dv = tap % kernel_w - pad_w;
        int i, j;
        depthwise_conv_position(row, height, width, i, j);
        const bool inside = i + du >= 0 && i + du < height && j + dv >= 0 && j + dv < width;
        return inside ? g * to_float(x[(row + (index_t)du * width + dv) * channels + c]) : 0.0f;
    });
}

// Stage 2, one thread per (f, tap ≤ kh·kw): Σ over chunks and over the channels c ≡ f (mod F), in a fixed order;
// tap < kh·kw adds into dweight[f, 0, u, v] (tap = u·kw + v), tap = kh·kw into dbias[f].
template <typename T>
__global__ void depthwise_conv_params_backward_finalize(T* __restrict__ dweight, T* __restrict__ dbias, const float* __restrict__ partial,
                                                        int chunks, int channels, int filters, int taps)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= filters * (taps + 1)) {
        return;
    }
    const int f = e / (taps + 1), tap = e % (taps + 1);
    T* target = tap < taps ? (dweight != nullptr ? dweight + f * taps + tap : nullptr) : (dbias != nullptr ? dbias + f : nullptr);
    if (target == nullptr) {
        return;
    }
    const int width = (taps + 1) * channels;
    float total = 0.0f;
    for (int chunk = 0; chunk < chunks; ++chunk) {
        for (int c = f; c < channels; c += filters) {
            total += partial[(index_t)chunk * width + tap * channels + c];
        }
    }
    *target = from_float<T>(to_float(*target) + total);
}

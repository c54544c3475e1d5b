// Attention.Native: SAS's convolution across heads, forward and backward: a Conv1d whose channels are the heads and
// whose length is the per-head feature axis. x [N, Cin, L], weight [Cout, Cin, k] (k odd), bias [Cout], y [N, Cout, L],
// y[n,c,l] = bias[c] + Σ_{c',j} w[c,c',j] · x[n, c', l + j − (k−1)/2] with zero padding.
#include "common.cuh"
#include "reduce.cuh"

// One thread per output element.
template <typename T>
__global__ void head_conv_forward(T* __restrict__ y, const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                                  index_t count, int in_channels, int out_channels, int length, int kernel)
{
    const int pad = (kernel - 1) / 2;
    const index_t n = count * out_channels * length;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int l = (int)(e % length), c = (int)(e / length % out_channels);
        const index_t item = e / length / out_channels;
        float acc = bias != nullptr ? to_float(bias[c]) : 0.0f;
        for (int ci = 0; ci < in_channels; ++ci) {
            const T* xr = x + (item * in_channels + ci) * length;
            for (int j = 0; j < kernel; ++j) {
                const int source = l + j - pad;
                if (source >= 0 && source < length) {
                    acc += to_float(weight[((index_t)c * in_channels + ci) * kernel + j]) * to_float(xr[source]);
                }
            }
        }
        y[e] = from_float<T>(acc);
    }
}

// dx[n,c',s] += Σ_{c,j} w[c,c',j] · dy[n, c, s − j + pad]. One thread per input element.
template <typename T>
__global__ void head_conv_backward(T* __restrict__ dx, const T* __restrict__ weight, const T* __restrict__ dy,
                                   index_t count, int in_channels, int out_channels, int length, int kernel)
{
    const int pad = (kernel - 1) / 2;
    const index_t n = count * in_channels * length;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int s = (int)(e % length), ci = (int)(e / length % in_channels);
        const index_t item = e / length / in_channels;
        float acc = to_float(dx[e]);
        for (int c = 0; c < out_channels; ++c) {
            const T* dyr = dy + (item * out_channels + c) * length;
            for (int j = 0; j < kernel; ++j) {
                const int l = s - j + pad;
                if (l >= 0 && l < length) {
                    acc += to_float(weight[((index_t)c * in_channels + ci) * kernel + j]) * to_float(dyr[l]);
                }
            }
        }
        dx[e] = from_float<T>(acc);
    }
}

// dweight/dbias stage 1 over rows n: column (c·Cin + c')·k + j is Σ_l dy[n,c,l] · x[n,c',l+j−pad]; the Cout columns after
// them are Σ_l dy[n,c,l]. partial is [chunks, Cout·Cin·k + Cout].
template <typename T>
__global__ void head_conv_params_backward_partials(float* __restrict__ partial, const T* __restrict__ x, const T* __restrict__ dy,
                                                   index_t count, int in_channels, int out_channels, int length, int kernel, index_t rows_per_chunk)
{
    const int pad = (kernel - 1) / 2;
    const int weights = out_channels * in_channels * kernel;
    column_sum_partials(partial, count, weights + out_channels, rows_per_chunk, [=](index_t item, int col) {
        float sum = 0.0f;
        if (col >= weights) {
            const T* dyr = dy + (item * out_channels + (col - weights)) * length;
            for (int l = 0; l < length; ++l) {
                sum += to_float(dyr[l]);
            }
            return sum;
        }
        const int j = col % kernel, ci = col / kernel % in_channels, c = col / kernel / in_channels;
        const T* dyr = dy + (item * out_channels + c) * length;
        const T* xr = x + (item * in_channels + ci) * length;
        const int shift = j - pad;
        for (int l = 0; l < length; ++l) {
            const int source = l + shift;
            if (source >= 0 && source < length) {
                sum += to_float(dyr[l]) * to_float(xr[source]);
            }
        }
        return sum;
    });
}

// Stage 2: out[i] += Σ_chunks partial[chunk, offset + i] for i < count (dweight: offset 0; dbias: offset Cout·Cin·k).
template <typename T>
__global__ void head_conv_params_backward_finalize(T* __restrict__ out, const float* __restrict__ partial, int chunks, int stride, int offset, int count)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) {
        return;
    }
    float total = 0.0f;
    for (int chunk = 0; chunk < chunks; ++chunk) {
        total += partial[(index_t)chunk * stride + offset + i];
    }
    out[i] = from_float<T>(to_float(out[i]) + total);
}

// Attention.Native: RMSNorm / SRMSNorm (no gain), forward and backward.
#include "common.cuh"
#include "reduce.cuh"

// One warp per row: rows are short (d_c = 512, d_model up to a few thousand) and a warp reduces without
// block-level synchronisation. Each lane reads and writes the same columns, so y == x is safe.
template <typename T>
__global__ void rmsnorm_forward(T* y, const T* x, const T* __restrict__ gain, index_t rows, int n, float epsilon)
{
    const index_t row = (index_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) {
        return;
    }
    const T* xr = x + row * n;
    T* yr = y + row * n;
    float sum_squares = 0.0f;
    for (int c = lane; c < n; c += 32) {
        const float v = to_float(xr[c]);
        sum_squares += v * v;
    }
    sum_squares = warp_sum(sum_squares);
    const float r = 1.0f / sqrtf(sum_squares / (float)n + epsilon);
    for (int c = lane; c < n; c += 32) {
        float v = to_float(xr[c]) * r;
        if (gain != nullptr) {
            v *= to_float(gain[c]);
        }
        yr[c] = from_float<T>(v);
    }
}

// dx = r·g⊙dy − r³·x·mean(g⊙dy⊙x), recomputing r from x. Writes r per row for the gain gradient.
template <typename T>
__global__ void rmsnorm_backward(T* __restrict__ dx, float* __restrict__ inverse_rms, const T* __restrict__ x,
                                 const T* __restrict__ gain, const T* __restrict__ dy, index_t rows, int n,
                                 float epsilon, int accumulate)
{
    const index_t row = (index_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) {
        return;
    }
    const T* xr = x + row * n;
    const T* dyr = dy + row * n;
    T* dxr = dx + row * n;
    float sum_squares = 0.0f, dot = 0.0f;
    for (int c = lane; c < n; c += 32) {
        const float v = to_float(xr[c]);
        const float g = gain != nullptr ? to_float(gain[c]) : 1.0f;
        sum_squares += v * v;
        dot += g * to_float(dyr[c]) * v;
    }
    sum_squares = warp_sum(sum_squares);
    dot = warp_sum(dot);
    const float r = 1.0f / sqrtf(sum_squares / (float)n + epsilon);
    const float coefficient = r * r * r * dot / (float)n;
    for (int c = lane; c < n; c += 32) {
        const float g = gain != nullptr ? to_float(gain[c]) : 1.0f;
        float v = r * g * to_float(dyr[c]) - coefficient * to_float(xr[c]);
        if (accumulate) {
            v += to_float(dxr[c]);
        }
        dxr[c] = from_float<T>(v);
    }
    if (lane == 0 && inverse_rms != nullptr) {
        inverse_rms[row] = r;
    }
}

// dgain, stage 1: partial[chunk, col] = sum over the chunk's rows of dy·x·r.
template <typename T>
__global__ void rmsnorm_gain_backward_partials(float* __restrict__ partial, const T* __restrict__ x, const T* __restrict__ dy,
                                               const float* __restrict__ inverse_rms, index_t rows, int n, index_t rows_per_chunk)
{
    column_sum_partials(partial, rows, n, rows_per_chunk,
        [=](index_t row, int col) { return to_float(dy[row * n + col]) * to_float(x[row * n + col]) * inverse_rms[row]; });
}

// dgain, stage 2: dgain (+)= sum of the partials.
template <typename T>
__global__ void rmsnorm_gain_backward_finalize(T* __restrict__ dgain, const float* __restrict__ partial, int chunks, int n, int accumulate)
{
    column_sum_finalize(dgain, partial, chunks, n, accumulate);
}

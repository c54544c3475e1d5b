// Attention.Native: FLatten's focusing map, forward and backward, per row of C channels:
// u = (ReLU(x) + ε) / softplus(scale), ŵ = u^p / ‖u^p‖, y = ‖u‖ · ŵ.
// Backward with s = dy·ŵ, n = ‖u‖: du = s·u/n + p·n·ŵ⊙(dy − s·ŵ)/u; dx += du / softplus(scale) where x > 0;
// dscale −= Σ_rows du⊙u · sigmoid(scale)/softplus(scale).
#include "common.cuh"
#include "reduce.cuh"

#define FOCUS_EPSILON 1e-6f

__device__ __forceinline__ float focus_softplus(float s) { return fmaxf(s, 0.0f) + log1pf(expf(-fabsf(s))); }

__device__ __forceinline__ float focus_sigmoid(float s)
{
    const float e = expf(-fabsf(s));
    return s >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

template <typename T>
__device__ __forceinline__ float focus_u(const T* xr, const T* scale, int c)
{
    return (fmaxf(to_float(xr[c]), 0.0f) + FOCUS_EPSILON) / focus_softplus(to_float(scale[c]));
}

// Per-row statistics one warp computes: n = ‖u‖, the largest u (powers of u/max stay ≤ 1), and ‖(u/max)^p‖.
struct FocusStats { float norm, largest, power_norm; };

template <typename T>
__device__ __forceinline__ FocusStats focus_stats(const T* xr, const T* scale, int channels, float p, int lane)
{
    float sum_squares = 0.0f, largest = 0.0f;
    for (int c = lane; c < channels; c += 32) {
        const float u = focus_u(xr, scale, c);
        sum_squares += u * u;
        largest = fmaxf(largest, u);
    }
    sum_squares = warp_sum(sum_squares);
    largest = warp_max(largest);
    float power_squares = 0.0f;
    for (int c = lane; c < channels; c += 32) {
        const float w = powf(focus_u(xr, scale, c) / largest, p);
        power_squares += w * w;
    }
    power_squares = warp_sum(power_squares);
    FocusStats stats = { sqrtf(sum_squares), largest, sqrtf(power_squares) };
    return stats;
}

// One warp per row; y may be x: the statistics are complete before any lane writes, and each lane rewrites only its own columns.
template <typename T>
__global__ void focusing_map_forward(T* y, const T* x, const T* __restrict__ scale, index_t rows, int channels, float p)
{
    const index_t row = (index_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) {
        return;
    }
    const T* xr = x + row * channels;
    const FocusStats st = focus_stats(xr, scale, channels, p, lane);
    T* yr = y + row * channels;
    for (int c = lane; c < channels; c += 32) {
        const float w = powf(focus_u(xr, scale, c) / st.largest, p) / st.power_norm;
        yr[c] = from_float<T>(st.norm * w);
    }
}

template <typename T>
__device__ __forceinline__ float focus_du(const T* xr, const T* scale, const T* dyr, int c, float p, FocusStats st, float s)
{
    const float u = focus_u(xr, scale, c);
    const float w = powf(u / st.largest, p) / st.power_norm;
    return s * u / st.norm + p * st.norm * w * (to_float(dyr[c]) - s * w) / u;
}

// One warp per row: dx += du / softplus(scale) where x > 0; writes the row's (n, largest, ‖·‖, s) for the dscale sums.
template <typename T>
__global__ void focusing_map_backward(T* __restrict__ dx, float* __restrict__ row_stats, const T* __restrict__ x, const T* __restrict__ scale,
                                      const T* __restrict__ dy, index_t rows, int channels, float p)
{
    const index_t row = (index_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) {
        return;
    }
    const T* xr = x + row * channels;
    const T* dyr = dy + row * channels;
    const FocusStats st = focus_stats(xr, scale, channels, p, lane);
    float s = 0.0f;
    for (int c = lane; c < channels; c += 32) {
        s += to_float(dyr[c]) * powf(focus_u(xr, scale, c) / st.largest, p) / st.power_norm;
    }
    s = warp_sum(s);
    if (dx != nullptr) {
        T* dxr = dx + row * channels;
        for (int c = lane; c < channels; c += 32) {
            if (to_float(xr[c]) > 0.0f) {
                dxr[c] = from_float<T>(to_float(dxr[c]) + focus_du(xr, scale, dyr, c, p, st, s) / focus_softplus(to_float(scale[c])));
            }
        }
    }
    if (row_stats != nullptr && lane == 0) {
        row_stats[4 * row] = st.norm;
        row_stats[4 * row + 1] = st.largest;
        row_stats[4 * row + 2] = st.power_norm;
        row_stats[4 * row + 3] = s;
    }
}

// dscale stage 1: partial[chunk, c] = Σ_rows du ⊙ u.
template <typename T>
__global__ void focusing_map_scale_backward_partials(float* __restrict__ partial, const T* __restrict__ x, const T* __restrict__ scale, const T* __restrict__ dy,
                                                     const float* __restrict__ row_stats, index_t rows, int channels, float p, index_t rows_per_chunk)
{
    column_sum_partials(partial, rows, channels, rows_per_chunk, [=](index_t row, int c) {
        const FocusStats st = { row_stats[4 * row], row_stats[4 * row + 1], row_stats[4 * row + 2] };
        const T* xr = x + row * channels;
        return focus_du(xr, scale, dy + row * channels, c, p, st, row_stats[4 * row + 3]) * focus_u(xr, scale, c);
    });
}

// dscale stage 2: dscale[c] −= Σ partials · sigmoid(scale)/softplus(scale).
template <typename T>
__global__ void focusing_map_scale_backward_finalize(T* __restrict__ dscale, const float* __restrict__ partial, const T* __restrict__ scale, int chunks, int channels)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= channels) {
        return;
    }
    float total = 0.0f;
    for (int k = 0; k < chunks; ++k) {
        total += partial[(index_t)k * channels + c];
    }
    const float s = to_float(scale[c]);
    dscale[c] = from_float<T>(to_float(dscale[c]) - total * focus_sigmoid(s) / focus_softplus(s));
}

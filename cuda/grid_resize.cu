// Attention.Native: bilinear resizing of token grids as PyTorch's F.interpolate(mode='bilinear', align_corners=False)
// defines it (no antialias), forward and backward. x [B, in_h·in_w, C] (token i·in_w + j) → y [B, out_h·out_w, C].
// Per axis, output o reads src = (in/out)·(o + 0.5) − 0.5 clamped at 0, i0 = ⌊src⌋, i1 = min(i0 + 1, in − 1), λ = src − i0,
// computed in float as PyTorch's CUDA kernel does; the two axes multiply.
#include "common.cuh"

struct grid_tap { int i0, i1; float lambda; };

__device__ __forceinline__ grid_tap grid_source(int o, int in, float scale)
{
    float src = scale * ((float)o + 0.5f) - 0.5f;
    src = src > 0.0f ? src : 0.0f;
    int i0 = (int)src; // src ≥ 0: truncation is the floor
    i0 = i0 < in - 1 ? i0 : in - 1;
    grid_tap t;
    t.i0 = i0;
    t.i1 = i0 + 1 < in ? i0 + 1 : in - 1;
    t.lambda = src - (float)i0;
    return t;
}

// The weight with which output o reads input s along an axis: 1 − λ as i0, λ as i1, both when i0 = i1 at the far edge.
__device__ __forceinline__ float grid_weight(int o, int s, int in, float scale)
{
    const grid_tap t = grid_source(o, in, scale);
    return (t.i0 == s ? 1.0f - t.lambda : 0.0f) + (t.i1 == s ? t.lambda : 0.0f);
}

// The outputs [first, last] that read input s along an axis. Output o reads s iff i0(o) ∈ {s − 1, s}, and i0 does not
// decrease with o (in float too), so they are a contiguous range: estimated from the inverse map o ≈ (src + 0.5)·out/in −
// 0.5, then moved until exact. Empty when last < first.
__device__ __forceinline__ void grid_readers(int s, int in, int out, float scale, int& first, int& last)
{
    const float inverse = (float)out / (float)in;
    int lo = (int)floorf(((float)s - 0.5f) * inverse - 0.5f);
    lo = lo < 0 ? 0 : (lo > out ? out : lo);
    while (lo > 0 && grid_source(lo - 1, in, scale).i0 >= s - 1) --lo;
    while (lo < out && grid_source(lo, in, scale).i0 < s - 1) ++lo;
    int hi = (int)floorf(((float)s + 1.5f) * inverse - 0.5f);
    hi = hi < -1 ? -1 : (hi > out - 1 ? out - 1 : hi);
    while (hi + 1 < out && grid_source(hi + 1, in, scale).i0 <= s) ++hi;
    while (hi >= 0 && grid_source(hi, in, scale).i0 > s) --hi;
    first = lo;
    last = hi;
}

// One thread per output element.
template <typename T>
__global__ void grid_resize_forward(T* __restrict__ y, const T* __restrict__ x, int batch, int in_h, int in_w, int out_h, int out_w, int channels)
{
    const float scale_h = (float)in_h / (float)out_h, scale_w = (float)in_w / (float)out_w;
    const index_t n = (index_t)batch * out_h * out_w * channels;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % channels);
        const index_t cell = e / channels;
        const int j = (int)(cell % out_w), i = (int)(cell / out_w % out_h);
        const index_t b = cell / out_w / out_h;
        const grid_tap r = grid_source(i, in_h, scale_h), k = grid_source(j, in_w, scale_w);
        const T* plane = x + b * in_h * in_w * channels + c;
        const index_t top = (index_t)r.i0 * in_w, bottom = (index_t)r.i1 * in_w;
        const float top_value = (1.0f - k.lambda) * to_float(plane[(top + k.i0) * channels]) + k.lambda * to_float(plane[(top + k.i1) * channels]);
        const float bottom_value = (1.0f - k.lambda) * to_float(plane[(bottom + k.i0) * channels]) + k.lambda * to_float(plane[(bottom + k.i1) * channels]);
        y[e] = from_float<T>((1.0f - r.lambda) * top_value + r.lambda * bottom_value);
    }
}

// dx[b, (s, t), c] += Σ over the outputs (i, j) that read cell (s, t) of w_h(i, s)·w_w(j, t)·dy[b, (i, j), c]. One thread per
// input element gathers from its readers, so no atomics.
template <typename T>
__global__ void grid_resize_backward(T* __restrict__ dx, const T* __restrict__ dy, int batch, int in_h, int in_w, int out_h, int out_w, int channels)
{
    const float scale_h = (float)in_h / (float)out_h, scale_w = (float)in_w / (float)out_w;
    const index_t n = (index_t)batch * in_h * in_w * channels;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % channels);
        const index_t cell = e / channels;
        const int t = (int)(cell % in_w), s = (int)(cell / in_w % in_h);
        const index_t b = cell / in_w / in_h;
        int i_first, i_last, j_first, j_last;
        grid_readers(s, in_h, out_h, scale_h, i_first, i_last);
        grid_readers(t, in_w, out_w, scale_w, j_first, j_last);
        const T* plane = dy + b * out_h * out_w * channels + c;
        float acc = 0.0f;
        for (int i = i_first; i <= i_last; ++i) {
            float row = 0.0f;
            for (int j = j_first; j <= j_last; ++j) {
                row += grid_weight(j, t, in_w, scale_w) * to_float(plane[((index_t)i * out_w + j) * channels]);
            }
            acc += grid_weight(i, s, in_h, scale_h) * row;
        }
        dx[e] = from_float<T>(to_float(dx[e]) + acc);
    }
}

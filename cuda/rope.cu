// Attention.Native: rotary position embedding (variants.md), forward and backward, with optional YaRN scaling
// ("RoPE scaling": the frequency ramp between θ⁰_j and θ⁰_j/factor over pairs low … high, and an amplitude on cos and sin).
// The backward is the transpose: the same rotation by the opposite angle, same amplitude. In place (y == x) is allowed,
// so no __restrict__. Row bt (= b·T + t) turns by position_offset + t, or by positions[bt] when positions is not null (a
// ragged batch [1, N, …]: each packed token at its own sequence's position).
#include "common.cuh"

// One block per (b, t): each thread owns coordinate pairs j, computes their angle once and rotates
// that pair in every head. Angles are in double: t·θ_j reaches 10^4 to 10^5 rad at long contexts,
// where a float angle is off by ~1e-3 rad.
template <typename T>
__device__ __forceinline__ void rope_rotate(T* y, const T* x, int seq, int heads, int width, int offset, int rotary,
                                            int interleaved, int position_offset, const int* positions, double base, int scaled,
                                            double factor, double low, double high, double amplitude, double sign)
{
    const index_t bt = blockIdx.x;
    const int half = rotary / 2;
    const double position = positions != nullptr ? (double)positions[bt] : (double)(position_offset + (int)(bt % seq));
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        double inverse_frequency = pow(base, -2.0 * (double)j / (double)rotary);
        if (scaled) {
            // RopeScaling.Interpolate: θ_j = θ⁰_j/factor · ramp_j + θ⁰_j · (1 − ramp_j).
            const double ramp = fmin(fmax(((double)j - low) / (high - low), 0.0), 1.0);
            inverse_frequency = inverse_frequency / factor * ramp + inverse_frequency * (1.0 - ramp);
        }
        double s, c;
        sincos(position * inverse_frequency, &s, &c);
        const float cf = (float)(amplitude * c);
        const float sf = (float)(amplitude * (sign * s));
        const int ia = interleaved ? offset + 2 * j : offset + j;
        const int ib = interleaved ? ia + 1 : ia + half;
        for (int h = 0; h < heads; ++h) {
            const index_t row = (bt * heads + h) * width;
            const float a = to_float(x[row + ia]);
            const float b = to_float(x[row + ib]);
            y[row + ia] = from_float<T>(a * cf - b * sf);
            y[row + ib] = from_float<T>(b * cf + a * sf);
        }
    }
    if (y != x && rotary < width) {
        for (int h = 0; h < heads; ++h) {
            const index_t row = (bt * heads + h) * width;
            for (int col = threadIdx.x; col < width; col += blockDim.x) {
                if (col < offset || col >= offset + rotary) {
                    y[row + col] = x[row + col];
                }
            }
        }
    }
}

template <typename T>
__global__ void rope_forward(T* y, const T* x, int seq, int heads, int width, int offset, int rotary,
                             int interleaved, int position_offset, const int* __restrict__ positions, double base, int scaled,
                             double factor, double low, double high, double amplitude)
{
    rope_rotate(y, x, seq, heads, width, offset, rotary, interleaved, position_offset, positions, base, scaled, factor, low,
                high, amplitude, 1.0);
}

template <typename T>
__global__ void rope_backward(T* dx, const T* dy, int seq, int heads, int width, int offset, int rotary,
                              int interleaved, int position_offset, const int* __restrict__ positions, double base, int scaled,
                              double factor, double low, double high, double amplitude)
{
    rope_rotate(dx, dy, seq, heads, width, offset, rotary, interleaved, position_offset, positions, base, scaled, factor, low,
                high, amplitude, -1.0);
}

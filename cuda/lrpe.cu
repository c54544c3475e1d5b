// Attention.Native: LRPE (TransNormerLLM), y = [x ⊙ cos(θ·p) | x ⊙ sin(θ·p)] per head, forward and backward.
// x [B, T, H, W], θ [H, W], y [B, T, H, 2W], p = position_offset + t, or positions[b·T + t] when positions is not null
// (a ragged batch [1, N, …]: each packed token at its own sequence's position). Angles in double, as the CPU reference
// (and RoPE) form them, so long positions lose no accuracy.
#include "common.cuh"
#include "reduce.cuh"

// The position of row bt = b·T + t.
__device__ __forceinline__ int lrpe_position(const int* positions, int position_offset, index_t bt, int seq)
{
    return positions != nullptr ? positions[bt] : position_offset + (int)(bt % seq);
}

// One thread per element of x.
template <typename T>
__global__ void lrpe_forward(T* __restrict__ y, const T* __restrict__ x, const T* __restrict__ theta, index_t rows, int seq, int heads, int width, int position_offset,
                             const int* __restrict__ positions)
{
    const index_t n = rows * heads * width;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int j = (int)(e % width), h = (int)(e / width % heads);
        const index_t bt = e / width / heads;
        const double angle = (double)to_float(theta[h * width + j]) * (double)lrpe_position(positions, position_offset, bt, seq);
        double s, c;
        sincos(angle, &s, &c);
        const float v = to_float(x[e]);
        T* yr = y + (bt * heads + h) * 2 * width;
        yr[j] = from_float<T>(v * (float)c);
        yr[width + j] = from_float<T>(v * (float)s);
    }
}

// dx += dy_cos ⊙ cos + dy_sin ⊙ sin.
template <typename T>
__global__ void lrpe_backward(T* __restrict__ dx, const T* __restrict__ theta, const T* __restrict__ dy, index_t rows, int seq, int heads, int width, int position_offset,
                              const int* __restrict__ positions)
{
    const index_t n = rows * heads * width;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int j = (int)(e % width), h = (int)(e / width % heads);
        const index_t bt = e / width / heads;
        const double angle = (double)to_float(theta[h * width + j]) * (double)lrpe_position(positions, position_offset, bt, seq);
        double s, c;
        sincos(angle, &s, &c);
        const T* dyr = dy + (bt * heads + h) * 2 * width;
        dx[e] = from_float<T>(to_float(dx[e]) + to_float(dyr[j]) * (float)c + to_float(dyr[width + j]) * (float)s);
    }
}

// dθ stage 1: x viewed as [B·T, H·W]; partial[chunk, col] = Σ_rows p · x ⊙ (dy_sin ⊙ cos − dy_cos ⊙ sin).
template <typename T>
__global__ void lrpe_theta_backward_partials(float* __restrict__ partial, const T* __restrict__ x, const T* __restrict__ theta, const T* __restrict__ dy,
                                             index_t rows, int seq, int heads, int width, int position_offset, const int* __restrict__ positions,
                                             index_t rows_per_chunk)
{
    const int n = heads * width;
    column_sum_partials(partial, rows, n, rows_per_chunk, [=](index_t row, int col) {
        const int h = col / width, j = col % width;
        const double position = (double)lrpe_position(positions, position_offset, row, seq);
        double s, c;
        sincos((double)to_float(theta[col]) * position, &s, &c);
        const T* dyr = dy + (row * heads + h) * 2 * width;
        return (float)position * to_float(x[row * n + col]) * (to_float(dyr[width + j]) * (float)c - to_float(dyr[j]) * (float)s);
    });
}

// dθ stage 2: dθ += Σ partials.
template <typename T>
__global__ void lrpe_theta_backward_finalize(T* __restrict__ dtheta, const float* __restrict__ partial, int chunks, int n, int accumulate)
{
    column_sum_finalize(dtheta, partial, chunks, n, accumulate);
}

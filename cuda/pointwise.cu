// Attention.Native: elementwise SiLU, ReLU, scale, broadcast add, multiply; forward and backward.
// op: 0 SiLU, 1 ReLU, 2 scale by alpha, 3 add b repeating with period (trailing broadcast), 4 multiply by b.
#include "common.cuh"
#include "reduce.cuh"

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Grid-stride over n elements; y may be a (in place).
template <typename T>
__global__ void pointwise_forward(T* y, const T* a, const T* b, index_t n, index_t period, int op, float alpha)
{
    for (index_t i = (index_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (index_t)gridDim.x * blockDim.x) {
        const float x = to_float(a[i]);
        float r;
        switch (op) {
        case 0: r = x * sigmoid(x); break;
        case 1: r = x > 0.0f ? x : 0.0f; break;
        case 2: r = alpha * x; break;
        case 3: r = x + to_float(b[i % period]); break;
        default: r = x * to_float(b[i]); break;
        }
        y[i] = from_float<T>(r);
    }
}

// da += ∂y/∂a · dy; for multiply also db += a · dy (same index, so one pass). The broadcast add's db is a column sum
// (pointwise_add_db_*).
template <typename T>
__global__ void pointwise_backward(T* da, T* db, const T* a, const T* b, const T* dy, index_t n, int op, float alpha)
{
    for (index_t i = (index_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (index_t)gridDim.x * blockDim.x) {
        const float x = to_float(a[i]), g = to_float(dy[i]);
        if (da != nullptr) {
            float d;
            switch (op) {
            case 0: { const float s = sigmoid(x); d = g * s * (1.0f + x * (1.0f - s)); break; }
            case 1: d = x > 0.0f ? g : 0.0f; break;
            case 2: d = alpha * g; break;
            case 3: d = g; break;
            default: d = g * to_float(b[i]); break;
            }
            da[i] = from_float<T>(to_float(da[i]) + d);
        }
        if (op == 4 && db != nullptr) {
            db[i] = from_float<T>(to_float(db[i]) + g * x);
        }
    }
}

// Broadcast add, db stage 1: dy viewed as [repeats, period]; partial[chunk, j] = Σ of the chunk's rows.
template <typename T>
__global__ void pointwise_add_db_partials(float* __restrict__ partial, const T* __restrict__ dy, index_t repeats, int period, index_t rows_per_chunk)
{
    column_sum_partials(partial, repeats, period, rows_per_chunk, [=](index_t row, int col) { return to_float(dy[row * period + col]); });
}

// Broadcast add, db stage 2: db += Σ partials.
template <typename T>
__global__ void pointwise_add_db_finalize(T* __restrict__ db, const float* __restrict__ partial, int chunks, int period, int accumulate)
{
    column_sum_finalize(db, partial, chunks, period, accumulate);
}

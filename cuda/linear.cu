// Attention.Native: the parts of Linear that cuBLAS does not do (the GEMMs run on cuBLAS).
#include "common.cuh"
#include "reduce.cuh"

// Forward: y[row, :] = bias. The caller then runs one GEMM with beta = 1, which adds x·wᵀ to the bias in
// fp32 and rounds once (adding the bias after the GEMM would round twice in bf16/fp16).
template <typename T>
__global__ void linear_bias_fill(T* __restrict__ y, const T* __restrict__ bias, index_t rows, int n)
{
    const index_t total = rows * n;
    for (index_t i = (index_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (index_t)gridDim.x * blockDim.x) {
        y[i] = bias[i % n];
    }
}

// Backward, stage 1: partial[chunk, col] = sum of dy[row, col] over the chunk's rows.
template <typename T>
__global__ void linear_bias_backward_partials(float* __restrict__ partial, const T* __restrict__ dy, index_t rows, int n, index_t rows_per_chunk)
{
    column_sum_partials(partial, rows, n, rows_per_chunk,
        [=](index_t row, int col) { return to_float(dy[row * n + col]); });
}

// Backward, stage 2: dbias (+)= sum of the partials.
template <typename T>
__global__ void linear_bias_backward_finalize(T* __restrict__ dbias, const float* __restrict__ partial, int chunks, int n, int accumulate)
{
    column_sum_finalize(dbias, partial, chunks, n, accumulate);
}

// Attention.Native: deterministic column sums (bias and gain gradients).
// Stage 1 writes one fp32 partial per (row chunk, column); stage 2 adds the partials in a fixed order.
// No atomics, so a gradient is bit-identical from run to run.
#pragma once
#include "common.cuh"

#define COLUMN_SUM_TILE_X 32
#define COLUMN_SUM_TILE_Y 8

// Launch: grid (ceil(n / 32), chunks), block (32, 8). partial is [chunks, n].
// value(row, col) gives the summand as a float.
template <typename F>
__device__ __forceinline__ void column_sum_partials(float* __restrict__ partial, index_t rows, int n, index_t rows_per_chunk, F value)
{
    __shared__ float tile[COLUMN_SUM_TILE_Y][COLUMN_SUM_TILE_X + 1];
    const int col = blockIdx.x * COLUMN_SUM_TILE_X + threadIdx.x;
    const index_t first = (index_t)blockIdx.y * rows_per_chunk;
    const index_t last = first + rows_per_chunk < rows ? first + rows_per_chunk : rows;
    float acc = 0.0f;
    if (col < n) {
        for (index_t row = first + threadIdx.y; row < last; row += COLUMN_SUM_TILE_Y) {
            acc += value(row, col);
        }
    }
    tile[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < n) {
        float total = 0.0f;
        for (int i = 0; i < COLUMN_SUM_TILE_Y; ++i) {
            total += tile[i][threadIdx.x];
        }
        partial[(index_t)blockIdx.y * n + col] = total;
    }
}

// Launch: grid ceil(n / 256), block 256. out[col] = (accumulate ? out[col] : 0) + sum of partials.
template <typename T>
__device__ __forceinline__ void column_sum_finalize(T* __restrict__ out, const float* __restrict__ partial, int chunks, int n, int accumulate)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= n) {
        return;
    }
    float total = 0.0f;
    for (int c = 0; c < chunks; ++c) {
        total += partial[(index_t)c * n + col];
    }
    if (accumulate) {
        total += to_float(out[col]);
    }
    out[col] = from_float<T>(total);
}

// Attention.Native: column blocks of the last axis (slices, concatenations, cache appends) and their backward.
// src is [rows, src_width]; source row r goes to destination rows r·repeat … r·repeat + repeat − 1 (row broadcast).
#include "common.cuh"

// dst[r·repeat + i, dst_offset + c] (+)= src[r, src_offset + c]. One thread per destination element.
template <typename T>
__global__ void columns_copy(T* dst, const T* src, index_t rows, int src_width, int src_offset,
                             int dst_width, int dst_offset, int width, int repeat, int accumulate)
{
    const index_t n = rows * repeat * width;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % width);
        const index_t out_row = e / width, r = out_row / repeat;
        T* to = dst + out_row * dst_width + dst_offset + c;
        const float value = to_float(src[r * src_width + src_offset + c]);
        *to = from_float<T>(accumulate ? to_float(*to) + value : value);
    }
}

// dsrc[r, src_offset + c] += Σ_i ddst[r·repeat + i, dst_offset + c], the repeats summed in order. One thread per source element.
template <typename T>
__global__ void columns_gather(T* __restrict__ dsrc, const T* __restrict__ ddst, index_t rows, int src_width, int src_offset,
                               int dst_width, int dst_offset, int width, int repeat)
{
    const index_t n = rows * width;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % width);
        const index_t r = e / width;
        float sum = to_float(dsrc[r * src_width + src_offset + c]);
        for (int i = 0; i < repeat; ++i) {
            sum += to_float(ddst[(r * repeat + i) * dst_width + dst_offset + c]);
        }
        dsrc[r * src_width + src_offset + c] = from_float<T>(sum);
    }
}

// Attention.Native: the writes of a paged cache (PagedAttention.Write and CopyPage; PageTable.cs), for rows of any dtype.
// A pool is [P, page_size, …row]: slot p·page_size + i holds one token's row. The kernels move whole rows as units U of 16, 4
// or 2 bytes (paged_unit16, unsigned int, unsigned short), the widest that the row size and the addresses allow (the host
// picks), so a 16-bit row of 8 elements is one 16-byte load and store.
#include "common.cuh"

struct alignas(16) paged_unit16 { unsigned w[4]; };

// pages[slots[t], :] = values[t, :] for the N new tokens (row_units units per row; the slots are distinct). Grid-stride over
// the N·row_units units, 256 threads a block.
template <typename U>
__global__ void paged_write(U* __restrict__ pages, const U* __restrict__ values, const int* __restrict__ slots, index_t tokens, int row_units)
{
    const index_t n = tokens * row_units;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const index_t t = e / row_units;
        pages[(index_t)slots[t] * row_units + (e - t * row_units)] = values[e];
    }
}

// pages[destination] = pages[source] (page_units units a page; source ≠ destination): copy on write of a shared page, and
// a transnormer state row cleared or forked (its state slots are the "pages"). Grid-stride, 256 threads a block.
template <typename U>
__global__ void paged_copy(U* __restrict__ pages, index_t source, index_t destination, index_t page_units)
{
    const U* from = pages + source * page_units;
    U* to = pages + destination * page_units;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < page_units; e += (index_t)gridDim.x * blockDim.x) {
        to[e] = from[e];
    }
}

// Attention.Native: where the cached rows of a decode kernel's keys lie. The dense decode ops read a cache [B, capacity, row]:
// query token bt of the B·Tq is query t = bt mod Tq of batch row b = bt / Tq, at position length − Tq + t. The paged ops
// (vLLM's PagedAttention; PageTable.cs) read a pool [P, page_size, row] through block tables: the packed query token bt
// belongs to sequence sequence[bt] and sees its keys 0 … visible[bt] − 1, key s in slot
// table[sequence·pages_per_sequence + s / page_size]·page_size + s mod page_size. Either way key s's row starts at element
// row(s)·row_width, and the rows of one page are contiguous (so 16-byte loads within a row stay whole).
#pragma once
#include "common.cuh"

// Passed by value; mirrors PagedKeys in Ops/PagedAttention/PagedAttentionCuda.cs field for field. table == nullptr: the
// dense cache (the other fields unused).
struct PagedKeys {
    const int* table;    // [sequences, pages_per_sequence]: each sequence's pages in order
    const int* sequence; // [N_q]: the sequence of each packed query token
    const int* visible;  // [N_q]: the keys each query token sees (its position + 1)
    int pages_per_sequence, page_size;
};

// One query token's keys.
struct TokenKeys {
    const int* pages; // the sequence's page list; nullptr: dense, rows first + s
    index_t first;
    int page_size;
    int visible;      // keys 0 … visible − 1 count

    // The row of key s in the cache or pool (its first element at row(s)·row_width).
    __device__ __forceinline__ index_t row(int s) const
    {
        return pages == nullptr ? first + s : (index_t)pages[s / page_size] * page_size + s % page_size;
    }
};

// Rows token0, token0 + 1, … of a packed tensor.
__device__ __forceinline__ TokenKeys packed_rows(index_t token0)
{
    TokenKeys k;
    k.pages = nullptr;
    k.first = token0;
    k.page_size = 1;
    k.visible = 0;
    return k;
}

// The keys of query token bt: dense from (Tq, capacity, length), paged from the block table.
__device__ __forceinline__ TokenKeys token_keys(const PagedKeys& paged, int bt, int tq, int capacity, int length)
{
    TokenKeys k;
    if (paged.table == nullptr) {
        const int b = bt / tq, end = length - tq + bt % tq + 1;
        k.pages = nullptr;
        k.first = (index_t)b * capacity;
        k.page_size = 1;
        k.visible = end < length ? end : length;
    } else {
        k.pages = paged.table + (index_t)paged.sequence[bt] * paged.pages_per_sequence;
        k.first = 0;
        k.page_size = paged.page_size;
        k.visible = paged.visible[bt];
    }
    return k;
}

// True for a paged split block whose split starts past its token's keys: it exits without writing a partial (the grid is
// sized for the longest sequence), and the combine merges only the splits that hold keys (token_splits).
__device__ __forceinline__ bool paged_split_past_keys(const PagedKeys& paged, const TokenKeys& keys, int keys_per_split)
{
    return paged.table != nullptr && (int)blockIdx.x * keys_per_split >= keys.visible;
}

// The splits the combine merges for a query token: every split of a dense cache (a split past a causal row's keys wrote an
// empty partial), the splits that hold the token's keys of a paged one. visible: the tokens' visible keys from the token
// given on (the chunk's first), nullptr for a dense cache.
__device__ __forceinline__ int token_splits(const int* visible, index_t token, int splits, int keys_per_split)
{
    if (visible == nullptr) {
        return splits;
    }
    const int held = (visible[token] + keys_per_split - 1) / keys_per_split;
    return held < splits ? held : splits;
}

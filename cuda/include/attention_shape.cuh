// Attention.Native: the softmax-attention problem as the kernels see it (attention.cu, attention_mma.cu, attention_decode.cu).
// Query i sits at position length − Tq + i; causal rows see keys j ≤ that position; keys ≥ length never count.
//
// A ragged batch (cu_q set): `batch` sequences packed along the token axis, q/o [1, N_q, H, d], k/v [1, N_k, G, d],
// lse [1, H, N_q]. Sequence b owns queries cu_q[b] … cu_q[b + 1] − 1 and keys cu_k[b] … cu_k[b + 1] − 1 (cu_seqlens, every
// sequence ≥ 1 token); tq, tk and length hold the longest sequence's, so a grid planned from them covers every sequence. A
// kernel keeps its shape as launched and narrows a copy to its block's sequence (attention_sequence), a dense problem of
// batch 1 from there on; rows are addressed by packed token (attention_query_token, attention_key_token) and lse row
// (attention_lse_row), which give a dense batch's indices unchanged.
//
// Strides (strides set for every call): the element distances between the rows of q, k, v, o, dO and the gradients, so a
// tensor may be any [B, T, H, d] view whose last axis is contiguous (e.g. [B, H, T, d] memory seen through Tensor.Transpose),
// read and written in place; row (b, t, h) starts at b·batch + t·token + h·head (attention_row). A contiguous tensor has
// (T·H·d, H·d, d), so one code path serves both. A ragged batch's tensors are packed and contiguous with batch stride 0: b is
// its sequence and the token is already packed (attention_query_token), so the batch term must add nothing.
//
// Paged keys (pages set; PagedAttention.Forward, the serving pools): a ragged batch whose k and v are pools
// [P, page_size, G, d] read through block tables (paged_keys.cuh): key j of sequence b lies in slot
// pages[b·pages_per_sequence + j / page_size]·page_size + j % page_size, and cu_k[b + 1] − cu_k[b] is its key count. Only the
// forward kernels read keys through attention_keys, so only they take a paged shape.
#pragma once
#include "paged_keys.cuh"

#define LOG2E 1.4426950408889634f // scores kept in log2 units, so each exponential is one exp2

// Element strides of a [B, T, H, d] tensor's rows (its last axis is contiguous). Mirrors SoftmaxAttentionCuda.Rows.
struct RowStrides {
    index_t batch;   // 0 for a ragged batch (rows by packed token)
    int token, head; // 32-bit: the launcher refuses wider ones
};

// The rows of every tensor the kernels address. Mirrors SoftmaxAttentionCuda.Strides.
struct AttentionStrides {
    RowStrides q, k, v, o, d_o, dq, dk, dv;
};

// Passed by value; mirrors SoftmaxAttentionCuda.Shape on the managed side field for field.
struct AttentionShape {
    int batch, tq, heads, dqk, tk, kv_heads, dv, length;
    float scale;
    int causal;
    const int* cu_q; // ragged batch: query offsets [batch + 1] in device memory; null for a dense batch
    const int* cu_k; // ragged batch: key offsets [batch + 1]
    const int* pages; // paged keys: block tables [batch, pages_per_sequence]; null: keys are packed tokens
    int pages_per_sequence, page_size;
    AttentionStrides strides;
};

// The first element of row (b, token, h) of a tensor with rows r. token: from attention_query_token, attention_key_token or
// a TokenKeys row (a pool slot when paged).
__device__ __forceinline__ index_t attention_row(const RowStrides& r, int b, index_t token, int h)
{
    return b * r.batch + token * r.token + (index_t)h * r.head;
}

// Number of keys query row i sees (keys 0 .. visible−1).
__device__ __forceinline__ int attention_visible(const AttentionShape& s, int i)
{
    if (!s.causal) {
        return s.length;
    }
    const int end = s.length - s.tq + i + 1;
    return end < s.length ? end : s.length;
}

// Keys any row of the query tile [row0, row0 + rows) sees.
__device__ __forceinline__ int attention_tile_keys(const AttentionShape& s, int row0, int rows)
{
    const int last = (row0 + rows < s.tq ? row0 + rows : s.tq) - 1;
    return attention_visible(s, last);
}

// Rows of lse (and of the split-KV partials): B·H·Tq, or H·N_q for a ragged batch.
__device__ __forceinline__ index_t attention_lse_rows(const AttentionShape& s)
{
    return s.cu_q == nullptr ? (index_t)s.batch * s.heads * s.tq : (index_t)s.heads * s.cu_q[s.batch];
}

// Indices from the kernel's shape as launched (not narrowed), so a kernel can work them out where it needs them instead of
// holding its sequence's place in registers across its main loop. b is the batch entry, or the sequence of a ragged batch.

// The token of query i within batch entry b: i, or its packed token in a ragged batch. Row (b, token, h) of q, o, dO
// (attention_row).
__device__ __forceinline__ index_t attention_query_token(const AttentionShape& launched, int b, int i)
{
    return (launched.cu_q == nullptr ? 0 : (index_t)launched.cu_q[b]) + i;
}

// The token of key j within batch entry b: j, or its packed token in a ragged batch. Row (b, token, g) of k, v.
__device__ __forceinline__ index_t attention_key_token(const AttentionShape& launched, int b, int j)
{
    return (launched.cu_k == nullptr ? 0 : (index_t)launched.cu_k[b]) + j;
}

// Row (h, query i) among the rows of lse, delta and the split-KV partials: [B, H, Tq], or [H, N_q] for a ragged batch.
__device__ __forceinline__ index_t attention_lse_row(const AttentionShape& launched, int b, int h, int i)
{
    if (launched.cu_q == nullptr) {
        return ((index_t)b * launched.heads + h) * launched.tq + i;
    }
    return (index_t)h * launched.cu_q[launched.batch] + launched.cu_q[b] + i;
}

// The rows of sequence b's keys in k and v (key j's row is keys.row(j); its element (c, g) at attention_row(r, b, row, g) + c):
// tokens from attention_key_token, or the pool slots of its pages.
__device__ __forceinline__ TokenKeys attention_keys(const AttentionShape& launched, int b)
{
    TokenKeys keys;
    const bool paged = launched.pages != nullptr;
    keys.pages = paged ? launched.pages + (index_t)b * launched.pages_per_sequence : nullptr;
    keys.first = paged ? 0 : attention_key_token(launched, b, 0);
    keys.page_size = paged ? launched.page_size : 1;
    keys.visible = launched.cu_k == nullptr ? launched.length : launched.cu_k[b + 1] - launched.cu_k[b];
    return keys;
}

// Narrows s to sequence b of a ragged batch: its own Tq, and Tk = length. A dense batch is left alone.
__device__ __forceinline__ void attention_sequence(AttentionShape& s, int b)
{
    if (s.cu_q != nullptr) {
        s.tq = s.cu_q[b + 1] - s.cu_q[b];
        s.tk = s.length = s.cu_k[b + 1] - s.cu_k[b];
    }
}

// Attention.Native: the softmax-attention problem as the kernels see it (attention.cu, attention_mma.cu).
// Query i sits at position length − Tq + i; causal rows see keys j ≤ that position; keys ≥ length never count.
#pragma once

#define LOG2E 1.4426950408889634f // scores kept in log2 units, so each exponential is one exp2

// Passed by value; mirrors AttentionCuda.Shape on the managed side field for field.
struct AttentionShape {
    int batch, tq, heads, dqk, tk, kv_heads, dv, length;
    float scale;
    int causal;
};

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

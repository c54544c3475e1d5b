// Attention.Native: how the Lightning kernels (lightning.cu, lightning_mma.cu) read and write their fp32 states, so one
// recurrence serves the forward and the backward with initial and final states (see LightningCuda):
//  - the dq sweep starts from S0ᵀ (its state is Σ v_sᵀ k_s): LIGHTNING_STATE_TRANSPOSED;
//  - the dv/dk sweeps start from the gradient of the final state G, which enters D_s with λ^(T−1−s), one power less than
//    an initial state: LIGHTNING_STATE_AT_FIRST (G is added with the first token's term instead of decayed once first),
//    transposed for the dk sweep (its state is Dᵀ);
//  - the dv sweep's state after its last token (time 0) is D_0, and the gradient of S0 is λ·D_0: LIGHTNING_STATE_ADD_FINAL
//    adds λ·S into final_state instead of storing S.
#pragma once

#define LIGHTNING_STATE_TRANSPOSED 1 // initial_state is stored [width][inner] (element (i, j) at j·inner + i)
#define LIGHTNING_STATE_AT_FIRST 2   // out_t' gets λ^t' a_t'·S0 (not λ^(t'+1)), and the state after t' holds λ^t' S0
#define LIGHTNING_STATE_ADD_FINAL 4  // final_state += λ·S (S alone when no token ran with AT_FIRST) instead of final_state = S

// Offset of initial-state element (row i of inner, column j of width) inside one (b, h) slice.
__device__ __forceinline__ index_t lightning_state_offset(int state_mode, int i, int j, int inner, int width)
{
    return (state_mode & LIGHTNING_STATE_TRANSPOSED) != 0 ? (index_t)j * inner + i : (index_t)i * width + j;
}

// The rows one block of a Lightning kernel works on: sequence b's first row along the token axis, its length, and its state
// row. Dense ([B, T, …], seq_offsets null): rows b·T … b·T + T − 1 and state row b. Ragged ([1, N, …], sequences packed one
// after another): rows seq_offsets[b] … seq_offsets[b + 1] − 1 and state row state_rows[b] (b itself when state_rows is null).
struct LightningRows {
    index_t first;
    int length;
    int state;
};

__device__ __forceinline__ LightningRows lightning_rows(int b, int seq, const int* seq_offsets, const int* state_rows)
{
    LightningRows rows;
    rows.first = seq_offsets != nullptr ? (index_t)seq_offsets[b] : (index_t)b * seq;
    rows.length = seq_offsets != nullptr ? seq_offsets[b + 1] - seq_offsets[b] : seq;
    rows.state = state_rows != nullptr ? state_rows[b] : b;
    return rows;
}

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

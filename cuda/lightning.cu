// Attention.Native: Lightning Attention-2 (TransNormerLLM), the chunked decayed linear attention, with the KV state
// kept on chip across blocks. Per (b, h) with λ = λ_h, blocks of LIGHTNING_BT tokens: for local rows a, c of a block of n
// tokens and S the state before it,
//   out_a = λ^(a+1) q_a·S + Σ_{c≤a} λ^(a−c) (q_a·k_c) v_c,    S ← λ^n S + Σ_c λ^(n−1−c) k_cᵀ v_c.
// One kernel serves the forward and all of the backward (see LightningCuda): dq is this recurrence over (dO, v, k) and,
// run backwards in time, dv over (k, q, dO) and dk over (v, dO, q). A single token (the decode step) has its own small
// kernel, lightning_decode_step: out = λ q·S + (q·k) v, S ← λ S + kᵀ v.
// Layouts: inputs [B, T, H, width], states [B, H, dqk, dv] in fp32 whatever the storage type T (a 16-bit state would drift
// over long decodes; TransNormerLLM keeps it in fp32 too); the output is sliced by LIGHTNING_DV columns per block (state
// columns are independent). The table λ^0 … λ^BT is computed in double from the double λ and rounded to float once, as the
// CPU reference builds its table (no power of λ is ever divided by another). A ragged batch is the same launch over its
// sequences (lightning_rows, lightning_state.cuh): inputs [1, N, H, width], each sequence its own recurrence over its packed
// rows, from and to its state row of [P, H, dqk, dv].
// lightning_mma.cu is the same recurrence on tensor cores (bf16/fp16, inner widths 64 and 128).
#include "common.cuh"
#include "lightning_decay.cuh"
#include "lightning_state.cuh"

#define LIGHTNING_BT 32      // tokens per block of the chunked algorithm
#define LIGHTNING_DV 32      // output (and state) columns per thread block
#define LIGHTNING_THREADS 256

// grid (B · heads_in_group, ceil(dv / LIGHTNING_DV)), block LIGHTNING_THREADS, dynamic shared memory
// (dqk·LIGHTNING_DV + 2·LIGHTNING_BT·(dqk+1) + LIGHTNING_BT·LIGHTNING_DV + LIGHTNING_BT·(LIGHTNING_BT+1) + LIGHTNING_BT + 1) floats.
// reverse: token t' of the sweep is T−1−t'. accumulate: out += instead of out =. out may be null (only the final state is
// wanted). state_mode: LIGHTNING_STATE_* flags (lightning_state.cuh). States may alias (read before written). seq_offsets and
// state_rows: a ragged batch (B = the sequence count; see lightning_rows), or null for the dense [B, T, …] layout.
template <typename T>
__global__ void __launch_bounds__(LIGHTNING_THREADS)
lightning_forward(T* out, float* final_state, const float* initial_state, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                  LightningDecay decay, int head_offset, int heads_in_group, int seq, int heads, int dqk, int dv, int reverse, int accumulate,
                  int state_mode, const int* __restrict__ seq_offsets, const int* __restrict__ state_rows)
{
    extern __shared__ float smem[];
    const int qstride = dqk + 1;
    float* state = smem;                                  // [dqk][LIGHTNING_DV]
    float* qs = state + dqk * LIGHTNING_DV;               // [BT][dqk + 1]
    float* ks = qs + LIGHTNING_BT * qstride;              // [BT][dqk + 1]
    float* vs = ks + LIGHTNING_BT * qstride;              // [BT][LIGHTNING_DV]
    float* scores = vs + LIGHTNING_BT * LIGHTNING_DV;     // [BT][BT + 1]
    float* powers = scores + LIGHTNING_BT * (LIGHTNING_BT + 1); // λ^0 … λ^BT

    const int b = blockIdx.x / heads_in_group, hg = blockIdx.x % heads_in_group, h = head_offset + hg;
    const int j0 = blockIdx.y * LIGHTNING_DV;
    const int width = dv - j0 < LIGHTNING_DV ? dv - j0 : LIGHTNING_DV;
    const LightningRows rows = lightning_rows(b, seq, seq_offsets, state_rows);
    const int length = rows.length;
    const index_t state_base = ((index_t)rows.state * heads + h) * dqk * dv;

    if (threadIdx.x <= LIGHTNING_BT) {
        powers[threadIdx.x] = (float)pow(decay.lambda[hg], (double)threadIdx.x);
    }
    for (int e = threadIdx.x; e < dqk * LIGHTNING_DV; e += LIGHTNING_THREADS) {
        const int i = e / LIGHTNING_DV, jj = e % LIGHTNING_DV;
        state[e] = initial_state != nullptr && jj < width ? initial_state[state_base + lightning_state_offset(state_mode, i, j0 + jj, dqk, dv)] : 0.0f;
    }
    // 1 while the initial state still enters one power of λ early (LIGHTNING_STATE_AT_FIRST), i.e. until the first block.
    int shift = (state_mode & LIGHTNING_STATE_AT_FIRST) != 0 ? 1 : 0;

    for (int t0 = 0; t0 < length; t0 += LIGHTNING_BT) {
        const int n = length - t0 < LIGHTNING_BT ? length - t0 : LIGHTNING_BT;
        __syncthreads(); // the previous block's tiles and state update are done (and, the first time, the state is loaded)
        for (int e = threadIdx.x; e < LIGHTNING_BT * dqk; e += LIGHTNING_THREADS) {
            const int a = e / dqk, i = e % dqk;
            const int t = reverse ? length - 1 - (t0 + a) : t0 + a;
            const index_t at = ((rows.first + t) * heads + h) * dqk + i;
            qs[a * qstride + i] = a < n ? to_float(q[at]) : 0.0f;
            ks[a * qstride + i] = a < n ? to_float(k[at]) : 0.0f;
        }
        for (int e = threadIdx.x; e < LIGHTNING_BT * LIGHTNING_DV; e += LIGHTNING_THREADS) {
            const int c = e / LIGHTNING_DV, jj = e % LIGHTNING_DV;
            const int t = reverse ? length - 1 - (t0 + c) : t0 + c;
            vs[e] = c < n && jj < width ? to_float(v[((rows.first + t) * heads + h) * dv + j0 + jj]) : 0.0f;
        }
        __syncthreads();
        // Intra-block scores with the decay mask: A[a][c] = λ^(a−c) q_a·k_c for c ≤ a < n.
        for (int e = threadIdx.x; e < LIGHTNING_BT * LIGHTNING_BT; e += LIGHTNING_THREADS) {
            const int a = e / LIGHTNING_BT, c = e % LIGHTNING_BT;
            float dot = 0.0f;
            if (c <= a && a < n) {
                for (int i = 0; i < dqk; ++i) {
                    dot += qs[a * qstride + i] * ks[c * qstride + i];
                }
                dot *= powers[a - c];
            }
            scores[a * (LIGHTNING_BT + 1) + c] = dot;
        }
        __syncthreads();
        // out_a = λ^(a+1) q_a·S + Σ_c A[a][c] v_c.
        for (int e = threadIdx.x; e < LIGHTNING_BT * LIGHTNING_DV; e += LIGHTNING_THREADS) {
            const int a = e / LIGHTNING_DV, jj = e % LIGHTNING_DV;
            if (out == nullptr || a >= n || jj >= width) {
                continue;
            }
            float inter = 0.0f;
            for (int i = 0; i < dqk; ++i) {
                inter += qs[a * qstride + i] * state[i * LIGHTNING_DV + jj];
            }
            float intra = 0.0f;
            for (int c = 0; c <= a; ++c) {
                intra += scores[a * (LIGHTNING_BT + 1) + c] * vs[c * LIGHTNING_DV + jj];
            }
            const int t = reverse ? length - 1 - (t0 + a) : t0 + a;
            T* target = out + ((rows.first + t) * heads + h) * dv + j0 + jj;
            const float value = powers[a + 1 - shift] * inter + intra;
            *target = from_float<T>(accumulate ? to_float(*target) + value : value);
        }
        __syncthreads(); // every read of the state is done before it advances
        // S ← λ^n S + Σ_c λ^(n−1−c) k_cᵀ v_c.
        for (int e = threadIdx.x; e < dqk * LIGHTNING_DV; e += LIGHTNING_THREADS) {
            const int i = e / LIGHTNING_DV, jj = e % LIGHTNING_DV;
            float sum = powers[n - shift] * state[e];
            for (int c = 0; c < n; ++c) {
                sum += powers[n - 1 - c] * ks[c * qstride + i] * vs[c * LIGHTNING_DV + jj];
            }
            state[e] = sum;
        }
        shift = 0;
    }
    __syncthreads();
    if (final_state != nullptr) {
        // LIGHTNING_STATE_ADD_FINAL: the state one step past the sweep, λ·S (S itself while the initial state is pending).
        const float next = shift != 0 ? 1.0f : powers[1];
        for (int e = threadIdx.x; e < dqk * LIGHTNING_DV; e += LIGHTNING_THREADS) {
            const int i = e / LIGHTNING_DV, jj = e % LIGHTNING_DV;
            if (jj < width) {
                float* target = final_state + state_base + (index_t)i * dv + j0 + jj;
                *target = (state_mode & LIGHTNING_STATE_ADD_FINAL) != 0 ? *target + next * state[e] : state[e];
            }
        }
    }
}

#define LIGHTNING_STEP_WARPS 8

// One token per (b, h) (T = 1, the decode step), S the initial state (zero when null), λ = λ_h:
//   out = λ q·S + (q·k) v,    S' = λ S + kᵀ v   (into final_state when not null).
// state_rows: the state row of each token (a ragged batch whose sequences all hold one token: [1, S, H, width], a serving
// pool's decode step), or null for row b.
// grid (B · heads_in_group, ceil(dv / 32)), block (32, LIGHTNING_STEP_WARPS): lane = state column j, warp w = state rows
// w, w + 8, …. Every state element is read and then written by the one thread that owns it, so final_state may alias
// initial_state (in-place update). The per-warp partial sums of q·S are added in warp order (deterministic).
template <typename T>
__global__ void __launch_bounds__(32 * LIGHTNING_STEP_WARPS)
lightning_decode_step(T* __restrict__ out, float* final_state, const float* initial_state, const T* __restrict__ q, const T* __restrict__ k,
                      const T* __restrict__ v, LightningDecay decay, int head_offset, int heads_in_group, int heads, int dqk, int dv,
                      const int* __restrict__ state_rows)
{
    __shared__ float partial[LIGHTNING_STEP_WARPS][32];
    const int lane = threadIdx.x, warp = threadIdx.y;
    const int b = blockIdx.x / heads_in_group, hg = blockIdx.x % heads_in_group, h = head_offset + hg;
    const int j = blockIdx.y * 32 + lane;
    const bool live = j < dv;
    const float lambda = (float)decay.lambda[hg];
    const index_t token = (index_t)b * heads + h;  // row (b, t = 0, h) of a [B, 1, H, width] tensor
    const T* qt = q + token * dqk;
    const T* kt = k + token * dqk;
    const index_t state_base = ((index_t)(state_rows != nullptr ? state_rows[b] : b) * heads + h) * dqk * dv;
    const float vj = live ? to_float(v[token * dv + j]) : 0.0f;

    float acc = 0.0f;
    if (live) {
        for (int i = warp; i < dqk; i += LIGHTNING_STEP_WARPS) {
            const index_t at = state_base + (index_t)i * dv + j;
            const float s = initial_state != nullptr ? initial_state[at] : 0.0f;
            acc += to_float(qt[i]) * s;
            if (final_state != nullptr) {
                final_state[at] = lambda * s + to_float(kt[i]) * vj;
            }
        }
    }
    partial[warp][lane] = acc;
    // q·k by warp 0 (a warp-uniform branch: all 32 lanes take part in the shuffles).
    float qk = 0.0f;
    if (warp == 0) {
        for (int i = lane; i < dqk; i += 32) {
            qk += to_float(qt[i]) * to_float(kt[i]);
        }
        qk = warp_sum(qk);
    }
    __syncthreads();
    if (warp == 0 && live) {
        float inter = 0.0f;
        for (int w = 0; w < LIGHTNING_STEP_WARPS; ++w) {
            inter += partial[w][lane];
        }
        out[token * dv + j] = from_float<T>(lambda * inter + qk * vj);
    }
}

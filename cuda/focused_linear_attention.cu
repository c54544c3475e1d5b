// Attention.Native: FLatten's non-causal linear attention, forward and backward, per (b, h), t over the Tq query tokens
// and s over the Tk key tokens: m = mean_Tk(k), kv = kᵀv / Tk, z_t = 1 / (q_t·m + 1e-6), o_t = z_t · q_t kv.
// Backward with c_t = kv·dO_t, e_t = −z_t² (q_t·c_t): dq_t += z_t c_t + e_t m; dkv = Σ_t z_t q_tᵀ dO_t, dm = Σ_t e_t q_t;
// dk_s += (dkv v_s + dm) / Tk; dv_s += k_s dkv / Tk. Sums over tokens: fixed chunks of tokens, each summed in token order,
// then the chunks in order (deterministic).
// Layouts: q [B, Tq, H, d], k [B, Tk, H, d], v [B, Tk, H, dv], o, dO [B, Tq, H, dv]; statistics [B·H, d, dv + 1] fp32
// (column dv holds the vector term). The kernels after the token sums take the sizes (batch, q_seq = Tq, k_seq = Tk,
// heads, d, dv) alike; each reads the token count of the tensors it indexes.
#include "common.cuh"

#define FLA_EPSILON 1e-6f

// Token sums in two deterministic stages (no atomics; the chunking depends on T only, never on the device):
// stage 1, partial[chunk, bh, i, j] = Σ_{t in chunk} w_t a_t[i] b_t[j] for j < dv and Σ_{t in chunk} w2_t a_t[i] for j = dv
// (a null weight is 1), one thread per element, the chunk's tokens in order; stage 2, stats = scale · Σ_chunk partial, the
// chunks in order. Forward statistics: (k, v, 1, 1, 1/Tk) over seq = Tk; backward: (q, dO, z, e, 1) over seq = Tq.
// Stage 1: grid-stride over chunks · B·H·d·(dv+1) elements; chunk c holds tokens [c·tokens_per_chunk, …) ∩ [0, seq), seq
// being the token count of a and b.
template <typename T>
__global__ void focused_linear_attention_token_partials(float* __restrict__ partial, const T* __restrict__ a, const T* __restrict__ b,
                                                        const float* __restrict__ w, const float* __restrict__ w2,
                                                        int batch, int seq, int heads, int d, int dv, int tokens_per_chunk, int chunks)
{
    const index_t per_chunk = (index_t)batch * heads * d * (dv + 1);
    const index_t n = per_chunk * chunks;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int chunk = (int)(e / per_chunk);
        const index_t f = e % per_chunk;
        const int j = (int)(f % (dv + 1)), i = (int)(f / (dv + 1) % d);
        const index_t bh = f / (dv + 1) / d;
        const int h = (int)(bh % heads), bb = (int)(bh / heads);
        const int first = chunk * tokens_per_chunk;
        const int last = seq - first < tokens_per_chunk ? seq : first + tokens_per_chunk;
        float sum = 0.0f;
        for (int t = first; t < last; ++t) {
            const index_t token = ((index_t)bb * seq + t) * heads + h;
            const float ai = to_float(a[token * d + i]);
            if (j < dv) {
                sum += (w != nullptr ? w[token] : 1.0f) * ai * to_float(b[token * dv + j]);
            } else {
                sum += (w2 != nullptr ? w2[token] : 1.0f) * ai;
            }
        }
        partial[e] = sum;
    }
}

// Stage 2: stats[f] = scale · Σ_c partial[c, f] over the chunks in order; grid-stride over per_chunk = B·H·d·(dv+1)
// elements. (T is unused: the program instantiates every kernel per storage type.)
template <typename T>
__global__ void focused_linear_attention_token_combine(float* __restrict__ stats, const float* __restrict__ partial,
                                                       index_t per_chunk, int chunks, float scale)
{
    for (index_t f = (index_t)blockIdx.x * blockDim.x + threadIdx.x; f < per_chunk; f += (index_t)gridDim.x * blockDim.x) {
        float sum = 0.0f;
        for (int c = 0; c < chunks; ++c) {
            sum += partial[(index_t)c * per_chunk + f];
        }
        stats[f] = sum * scale;
    }
}

// o_t[j] = z_t Σ_i q_t[i] kv[i][j]. One thread per output element (k_seq unused: the statistics hold the keys' part).
template <typename T>
__global__ void focused_linear_attention_forward(T* __restrict__ o, const T* __restrict__ q, const float* __restrict__ stats,
                                                 int batch, int q_seq, int k_seq, int heads, int d, int dv)
{
    const index_t n = (index_t)batch * q_seq * heads * dv;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int j = (int)(e % dv);
        const index_t token = e / dv;
        const int h = (int)(token % heads);
        const index_t bh = token / heads / q_seq * heads + h;
        const float* st = stats + bh * d * (dv + 1);
        const T* qt = q + token * d;
        float denominator = 0.0f, acc = 0.0f;
        for (int i = 0; i < d; ++i) {
            const float qi = to_float(qt[i]);
            denominator += qi * st[i * (dv + 1) + dv];
            acc += qi * st[i * (dv + 1) + j];
        }
        o[e] = from_float<T>(acc / (denominator + FLA_EPSILON));
    }
}

// Per query token and head (one warp): z_t, c_t = kv·dO_t, e_t = −z_t²(q_t·c_t); dq_t += z_t c_t + e_t m; stores z_t and
// e_t (k_seq unused).
template <typename T>
__global__ void focused_linear_attention_backward_query(T* __restrict__ dq, float* __restrict__ z_out, float* __restrict__ e_out,
                                                        const T* __restrict__ q, const T* __restrict__ d_o, const float* __restrict__ stats,
                                                        int batch, int q_seq, int k_seq, int heads, int d, int dv)
{
    const index_t token = (index_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (token >= (index_t)batch * q_seq * heads) {
        return;
    }
    const int h = (int)(token % heads);
    const index_t bh = token / heads / q_seq * heads + h;
    const float* st = stats + bh * d * (dv + 1);
    const T* qt = q + token * d;
    const T* gt = d_o + token * dv;
    float denominator = 0.0f, qc = 0.0f;
    for (int i = lane; i < d; i += 32) {
        float c = 0.0f;
        for (int j = 0; j < dv; ++j) {
            c += st[i * (dv + 1) + j] * to_float(gt[j]);
        }
        const float qi = to_float(qt[i]);
        denominator += qi * st[i * (dv + 1) + dv];
        qc += qi * c;
    }
    denominator = warp_sum(denominator);
    qc = warp_sum(qc);
    const float z = 1.0f / (denominator + FLA_EPSILON), e = -z * z * qc;
    if (dq != nullptr) {
        T* dqt = dq + token * d;
        for (int i = lane; i < d; i += 32) {
            float c = 0.0f;
            for (int j = 0; j < dv; ++j) {
                c += st[i * (dv + 1) + j] * to_float(gt[j]);
            }
            dqt[i] = from_float<T>(to_float(dqt[i]) + z * c + e * st[i * (dv + 1) + dv]);
        }
    }
    if (lane == 0) {
        z_out[token] = z;
        e_out[token] = e;
    }
}

// dk_s[i] += (Σ_j dkv[i][j] v_s[j] + dm[i]) / Tk and dv_s[j] += Σ_i k_s[i] dkv[i][j] / Tk; one thread per element of dk,
// then of dv, over the key tokens (q_seq unused: the backward statistics hold the queries' part).
template <typename T>
__global__ void focused_linear_attention_backward_key_value(T* __restrict__ dk, T* __restrict__ dv_out, const T* __restrict__ k, const T* __restrict__ v,
                                                            const float* __restrict__ grads, int batch, int q_seq, int k_seq, int heads, int d, int dv)
{
    const index_t tokens = (index_t)batch * k_seq * heads;
    const index_t key_elements = dk != nullptr ? tokens * d : 0;
    const index_t n = key_elements + (dv_out != nullptr ? tokens * dv : 0);
    const float inverse = 1.0f / (float)k_seq;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        if (e < key_elements) {
            const int i = (int)(e % d);
            const index_t token = e / d;
            const index_t bh = token / heads / k_seq * heads + token % heads;
            const float* g = grads + (bh * d + i) * (dv + 1);
            float sum = g[dv];
            for (int j = 0; j < dv; ++j) {
                sum += g[j] * to_float(v[token * dv + j]);
            }
            dk[e] = from_float<T>(to_float(dk[e]) + sum * inverse);
        } else {
            const index_t f = e - key_elements;
            const int j = (int)(f % dv);
            const index_t token = f / dv;
            const index_t bh = token / heads / k_seq * heads + token % heads;
            const float* g = grads + bh * d * (dv + 1);
            float sum = 0.0f;
            for (int i = 0; i < d; ++i) {
                sum += to_float(k[token * d + i]) * g[i * (dv + 1) + j];
            }
            dv_out[f] = from_float<T>(to_float(dv_out[f]) + sum * inverse);
        }
    }
}

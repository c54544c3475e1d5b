// Attention.Native: TPA decode from the cached factors, split-KV. Per query row (b, t, h) the query factors collapse to
// q̃ = Σ_r aq[h,r] bq[r,:] (so score[s] = scale Σ_u ak[s,h,u] ⟨q̃, bk[s,u,:]⟩, scale = 1/(Rq·Rk·√d)), and each cached
// value is Σ_u av[s,h,u] bv[s,u,:] (the 1/Rv is applied once at the end). k and v are never materialised.
// aq [B, Tq, H, Rq], bq [B, Tq, Rq, d]; ak [B, Cap, H, Rk], bk [B, Cap, Rk, d], av [B, Cap, H, Rv], bv [B, Cap, Rv, d].
// Paged (PagedAttention.Tpa): aq [1, N_q, H, Rq] and bq [1, N_q, Rq, d] pack the query tokens of many sequences and the
// factors are pools [P, page_size, …] read through block tables (paged_keys.cuh); the splits are planned for the longest one.
#include "common.cuh"
#include "split_kv.cuh"
#include "paged_keys.cuh"

// q̃[(b,t,h), c] = Σ_r aq[b,t,h,r] · bq[b,t,r,c]. One thread per element.
template <typename T>
__global__ void tpa_decode_query(float* __restrict__ qtilde, const T* __restrict__ aq, const T* __restrict__ bq, index_t tokens, int heads, int rank, int width)
{
    const index_t n = tokens * heads * width;
    for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (index_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % width);
        const index_t row = e / width, token = row / heads;
        float sum = 0.0f;
        for (int r = 0; r < rank; ++r) {
            sum += to_float(aq[row * rank + r]) * to_float(bq[(token * rank + r) * width + c]);
        }
        qtilde[e] = sum;
    }
}

// grid (splits, tokens, H) for the query tokens bt0 … bt0 + tokens − 1 of the B·Tq (one chunk; qtilde and the partials
// hold only this chunk's rows), block SPLIT_THREADS, dynamic shared memory d floats. Paged (paged.table set): the tokens are
// the packed N_q, each seeing its own sequence's keys; tq, capacity and length unused.
template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
tpa_decode_split(float* __restrict__ partial_o, float* __restrict__ partial_ml, const float* __restrict__ qtilde,
                 const T* __restrict__ ak, const T* __restrict__ bk, const T* __restrict__ av, const T* __restrict__ bv,
                 int bt0, int tq, int heads, int key_rank, int value_rank, int width, int capacity, int length, float scale, int keys_per_split,
                 PagedKeys paged)
{
    extern __shared__ float qs[]; // [d]
    __shared__ float scores[SPLIT_KEYS];
    __shared__ float running[3];
    __shared__ index_t key_rows[SPLIT_KEYS]; // the tile's cache rows
    const int split = blockIdx.x, bt = bt0 + (int)blockIdx.y, h = blockIdx.z;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const index_t rows = (index_t)gridDim.y * heads, row = (index_t)blockIdx.y * heads + h; // within the chunk
    const TokenKeys keys = token_keys(paged, bt, tq, capacity, length);
    if (paged_split_past_keys(paged, keys, keys_per_split)) {
        return;
    }

    float acc[SPLIT_COLS];
    const SplitRange range = split_begin(qs, qtilde + row * width, width, running, acc, keys.visible, keys_per_split);
    const int begin = range.begin, end = range.end;

    for (int s0 = begin; s0 < end; s0 += SPLIT_KEYS) {
        __syncthreads(); // the previous tile's probabilities and rows are consumed
        for (int jj = warp; jj < SPLIT_KEYS; jj += SPLIT_THREADS / 32) {
            const int s = s0 + jj;
            float score = 0.0f;
            if (s < end) {
                const index_t key = keys.row(s);
                if (lane == 0) {
                    key_rows[jj] = key;
                }
                for (int u = 0; u < key_rank; ++u) {
                    const T* bku = bk + (key * key_rank + u) * width;
                    float dot = 0.0f;
                    for (int c = lane; c < width; c += 32) {
                        dot += qs[c] * to_float(bku[c]);
                    }
                    score += to_float(ak[(key * heads + h) * key_rank + u]) * warp_sum(dot);
                }
            }
            if (lane == 0) {
                scores[jj] = s < end ? score * scale : NEG_INF;
            }
        }
        __syncthreads();
        split_softmax_tile(scores, running);
        __syncthreads();
        const float correction = running[2];
        const int count = end - s0 < SPLIT_KEYS ? end - s0 : SPLIT_KEYS;
#pragma unroll
        for (int c = 0; c < SPLIT_COLS; ++c) {
            const int col = threadIdx.x + SPLIT_THREADS * c;
            if (col < width) {
                float sum = acc[c] * correction;
                for (int jj = 0; jj < count; ++jj) {
                    const index_t key = key_rows[jj];
                    float value = 0.0f;
                    for (int u = 0; u < value_rank; ++u) {
                        value += to_float(av[(key * heads + h) * value_rank + u]) * to_float(bv[(key * value_rank + u) * width + col]);
                    }
                    sum += scores[jj] * value;
                }
                acc[c] = sum;
            }
        }
    }
    __syncthreads();
    split_write_partial(partial_o, partial_ml, acc, running, split, rows, row, width);
}

// ---------------------------------------------------------------------------------------------------------------------
// All heads in one block. tpa_decode_split above runs a block per head, so each block re-reads the cached B factors that
// every head shares (R·d per token, the bulk of the cache): H reads of them per step. Here a block serves every head of
// its query token, so the step reads the cache once, and the query factors never collapse: per key,
// G[r,u] = ⟨B_q[r,:], B_k[s,u,:]⟩ (R_q·R_k dot products shared by all heads), then score[h,s] = Σ_{r,u} A_q[h,r] A_k[s,h,u] G[r,u];
// the output adds P[h,s] A_v[s,h,u] B_v[s,u,:] over keys and u. Fp32 in shared memory; tiles of TPA_KT keys.
#define TPA_KT 32          // keys per tile: one per lane in the softmax
#define TPA_MAX_QRANK 16   // query rank held in registers by the G products
#define TPA_GROUPS 4       // output groups (2 heads × 4 columns) per thread: ceil(H/2)·ceil(d/4) ≤ 4·SPLIT_THREADS

struct alignas(16) tpa_chunk { unsigned w[4]; };

template <typename T> __device__ __forceinline__ float tpa_chunk_value(const tpa_chunk& c, int i);
template <> __device__ __forceinline__ float tpa_chunk_value<float>(const tpa_chunk& c, int i) { return __uint_as_float(c.w[i]); }
template <> __device__ __forceinline__ float tpa_chunk_value<bf16_t>(const tpa_chunk& c, int i)
{
    return to_float(bf16_t{(unsigned short)(c.w[i / 2] >> (16 * (i & 1)))});
}
template <> __device__ __forceinline__ float tpa_chunk_value<half_t>(const tpa_chunk& c, int i)
{
    return to_float(half_t{(unsigned short)(c.w[i / 2] >> (16 * (i & 1)))});
}

// rows × len contiguous elements of src → dst as floats with row stride `stride`; 16-byte loads where src allows them.
template <typename T>
__device__ __forceinline__ void tpa_load_rows(float* dst, int stride, const T* src, int rows, int len)
{
    constexpr int E = 16 / sizeof(T);
    const int n = rows * len;
    if ((reinterpret_cast<unsigned long long>(src) & 15) == 0 && n % E == 0) {
        const tpa_chunk* chunks = reinterpret_cast<const tpa_chunk*>(src);
#pragma unroll 2
        for (int e = threadIdx.x; e < n / E; e += SPLIT_THREADS) {
            const tpa_chunk c = chunks[e];
#pragma unroll
            for (int i = 0; i < E; ++i) {
                const int at = e * E + i;
                dst[at / len * stride + at % len] = tpa_chunk_value<T>(c, i);
            }
        }
    } else {
        for (int at = threadIdx.x; at < n; at += SPLIT_THREADS) {
            dst[at / len * stride + at % len] = to_float(src[at]);
        }
    }
}

// The blocks of `count` keys from s0, each `block` contiguous elements at row keys.row(s)·block of src (rows[j] holds key
// s0 + j's row when paged) → dst as floats, the block's rows of `len` elements at row stride `stride`, key after key; 16-byte
// loads where the blocks allow them. A dense cache's keys are one run of count·block elements.
template <typename T>
__device__ __forceinline__ void tpa_load_keys(float* dst, int stride, const T* src, const TokenKeys& keys, const index_t* rows, int s0,
                                              int count, int block, int len)
{
    if (keys.pages == nullptr) {
        tpa_load_rows(dst, stride, src + keys.row(s0) * block, count * block / len, len);
        return;
    }
    constexpr int E = 16 / sizeof(T);
    const int per_key = block / len;
    if ((reinterpret_cast<unsigned long long>(src) & 15) == 0 && block % E == 0) {
        const int chunks = block / E;
#pragma unroll 2
        for (int e = threadIdx.x; e < count * chunks; e += SPLIT_THREADS) {
            const int j = e / chunks, within = e % chunks * E;
            const tpa_chunk c = reinterpret_cast<const tpa_chunk*>(src + rows[j] * block)[within / E];
#pragma unroll
            for (int i = 0; i < E; ++i) {
                const int at = within + i;
                dst[(j * per_key + at / len) * stride + at % len] = tpa_chunk_value<T>(c, i);
            }
        }
    } else {
        for (int e = threadIdx.x; e < count * block; e += SPLIT_THREADS) {
            const int j = e / block, at = e % block;
            dst[(j * per_key + at / len) * stride + at % len] = to_float(src[rows[j] * block + at]);
        }
    }
}

// grid (splits, tokens) for the query tokens bt0 … of the B·Tq (one chunk), block SPLIT_THREADS, dynamic shared memory
// tpa_heads_shared_floats(…) floats. Writes partials for rows (token − bt0)·H + h, as tpa_decode_split does. Needs
// R_q ≤ TPA_MAX_QRANK and ceil(H/2)·ceil(d/4) ≤ TPA_GROUPS·SPLIT_THREADS (the host falls back to tpa_decode_split). Paged as
// tpa_decode_split.
template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
tpa_decode_heads(float* __restrict__ partial_o, float* __restrict__ partial_ml, const T* __restrict__ aq, const T* __restrict__ bq,
                 const T* __restrict__ ak, const T* __restrict__ bk, const T* __restrict__ av, const T* __restrict__ bv,
                 int bt0, int tq, int heads, int query_rank, int key_rank, int value_rank, int width, int capacity, int length,
                 float scale, int keys_per_split, PagedKeys paged)
{
    extern __shared__ float smem[];
    const int H = heads, d = width, rq = query_rank, rk = key_rank, rv = value_rank;
    float* bqs = smem;                         // [rq][d]
    float* aqs = bqs + rq * d;                 // [H][rq]
    float* bks = aqs + H * rq;                 // [KT][rk][d + 1]: padded, so a thread per row reads distinct banks
    float* aks = bks + TPA_KT * rk * (d + 1);  // [KT][H][rk]
    float* bvs = aks + TPA_KT * H * rk;        // [KT][rv][d]
    float* avs = bvs + TPA_KT * rv * d;        // [KT][H][rv]
    float* gq = avs + TPA_KT * H * rv;         // [4][KT·rk][rq]: quarter sums (over columns) of G
    float* ps = gq + 4 * TPA_KT * rk * rq;     // [H][KT]: scores, then probabilities
    float* run = ps + H * TPA_KT;              // [H][3]: running max (log2 units), sum, this tile's correction
    __shared__ index_t key_rows[TPA_KT];       // the tile's cache rows (paged)

    const int split = blockIdx.x, bt = bt0 + (int)blockIdx.y;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const TokenKeys keys = token_keys(paged, bt, tq, capacity, length);
    if (paged_split_past_keys(paged, keys, keys_per_split)) {
        return;
    }
    tpa_load_rows(aqs, H * rq, aq + (index_t)bt * H * rq, 1, H * rq);
    tpa_load_rows(bqs, d, bq + (index_t)bt * rq * d, rq, d);
    for (int h = threadIdx.x; h < H; h += SPLIT_THREADS) {
        run[3 * h] = NEG_INF;
        run[3 * h + 1] = 0.0f;
    }
    const int visible_end = keys.visible;
    const int begin = split * keys_per_split;
    const int end = begin + keys_per_split < visible_end ? begin + keys_per_split : visible_end;
    const float scale_log2 = scale * 1.4426950408889634f;

    // Output groups: (head pair hp, column quad cq) = (g / quads, g % quads) for g = threadIdx.x + k·SPLIT_THREADS.
    const int quads = (d + 3) / 4, groups = (H + 1) / 2 * quads;
    float acc[TPA_GROUPS][2][4];
#pragma unroll
    for (int k = 0; k < TPA_GROUPS; ++k) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                acc[k][j][i] = 0.0f;
            }
        }
    }

    for (int s0 = begin; s0 < end; s0 += TPA_KT) {
        const int count = end - s0 < TPA_KT ? end - s0 : TPA_KT;
        if (keys.pages != nullptr && (int)threadIdx.x < count) {
            key_rows[threadIdx.x] = keys.row(s0 + (int)threadIdx.x); // the previous tile's loads passed the barrier after them
        }
        __syncthreads(); // the previous tile is consumed; this tile's rows are known
        tpa_load_keys(bks, d + 1, bk, keys, key_rows, s0, count, rk * d, d);
        tpa_load_keys(aks, H * rk, ak, keys, key_rows, s0, count, H * rk, H * rk);
        tpa_load_keys(bvs, d, bv, keys, key_rows, s0, count, rv * d, d);
        tpa_load_keys(avs, H * rv, av, keys, key_rows, s0, count, H * rv, H * rv);
        __syncthreads();

        // G: item e = (quarter q, row (s, u)); consecutive threads take consecutive rows.
        const int krows = TPA_KT * rk;
        for (int e = threadIdx.x; e < 4 * krows; e += SPLIT_THREADS) {
            const int q = e / krows, row = e % krows;
            if (row >= count * rk) {
                continue;
            }
            float g[TPA_MAX_QRANK];
#pragma unroll
            for (int r = 0; r < TPA_MAX_QRANK; ++r) {
                g[r] = 0.0f;
            }
            const float* kr = bks + row * (d + 1);
            for (int c = q * d / 4; c < (q + 1) * d / 4; ++c) {
                const float x = kr[c];
#pragma unroll
                for (int r = 0; r < TPA_MAX_QRANK; ++r) {
                    if (r < rq) {
                        g[r] += bqs[r * d + c] * x;
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < TPA_MAX_QRANK; ++r) {
                if (r < rq) {
                    gq[(q * krows + row) * rq + r] = g[r];
                }
            }
        }
        __syncthreads();

        for (int e = threadIdx.x; e < H * TPA_KT; e += SPLIT_THREADS) {
            const int h = e / TPA_KT, s = e % TPA_KT;
            float score = NEG_INF;
            if (s < count) {
                score = 0.0f;
                for (int u = 0; u < rk; ++u) {
                    const int row = s * rk + u;
                    float inner = 0.0f;
                    for (int r = 0; r < rq; ++r) {
                        const float gv = gq[row * rq + r] + gq[(krows + row) * rq + r] + gq[(2 * krows + row) * rq + r] +
                                         gq[(3 * krows + row) * rq + r];
                        inner += aqs[h * rq + r] * gv;
                    }
                    score += aks[(s * H + h) * rk + u] * inner;
                }
                score *= scale_log2;
            }
            ps[h * TPA_KT + s] = score;
        }
        __syncthreads();

        // Online softmax, a warp per head: lane = key.
        for (int h = warp; h < H; h += SPLIT_THREADS / 32) {
            const float x = ps[h * TPA_KT + lane];
            const float m_old = run[3 * h];
            const float m_new = fmaxf(m_old, warp_max(x));
            const float base = m_new == NEG_INF ? 0.0f : m_new;
            const float p = x == NEG_INF ? 0.0f : exp2f(x - base);
            const float sum = warp_sum(p);
            ps[h * TPA_KT + lane] = p;
            if (lane == 0) {
                const float correction = exp2f(m_old - base);
                run[3 * h] = m_new;
                run[3 * h + 1] = run[3 * h + 1] * correction + sum;
                run[3 * h + 2] = correction;
            }
        }
        __syncthreads();

#pragma unroll
        for (int k = 0; k < TPA_GROUPS; ++k) {
            const int g = threadIdx.x + k * SPLIT_THREADS;
            if (g >= groups) {
                continue;
            }
            const int h0 = g / quads * 2, c0 = g % quads * 4;
            const bool pair = h0 + 1 < H;
            const float corr0 = run[3 * h0 + 2], corr1 = pair ? run[3 * (h0 + 1) + 2] : 0.0f;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                acc[k][0][i] *= corr0;
                acc[k][1][i] *= corr1;
            }
            for (int s = 0; s < count; ++s) {
                const float p0 = ps[h0 * TPA_KT + s], p1 = pair ? ps[(h0 + 1) * TPA_KT + s] : 0.0f;
                for (int u = 0; u < rv; ++u) {
                    const float w0 = p0 * avs[(s * H + h0) * rv + u];
                    const float w1 = pair ? p1 * avs[(s * H + h0 + 1) * rv + u] : 0.0f;
                    const float* vr = bvs + (s * rv + u) * d + c0;
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const float x = c0 + i < d ? vr[i] : 0.0f;
                        acc[k][0][i] += w0 * x;
                        acc[k][1][i] += w1 * x;
                    }
                }
            }
        }
    }
    __syncthreads(); // run[] is final

    const index_t rows = (index_t)gridDim.y * H;
#pragma unroll
    for (int k = 0; k < TPA_GROUPS; ++k) {
        const int g = threadIdx.x + k * SPLIT_THREADS;
        if (g >= groups) {
            continue;
        }
        const int h0 = g / quads * 2, c0 = g % quads * 4;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            if (h0 + j >= H) {
                continue;
            }
            const index_t part = split * rows + (index_t)blockIdx.y * H + h0 + j;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                if (c0 + i < d) {
                    partial_o[part * d + c0 + i] = acc[k][j][i];
                }
            }
        }
    }
    for (int h = threadIdx.x; h < H; h += SPLIT_THREADS) {
        const index_t part = split * rows + (index_t)blockIdx.y * H + h;
        // split_combine works in natural-log units.
        partial_ml[2 * part] = run[3 * h] == NEG_INF ? NEG_INF : run[3 * h] * 0.6931471805599453f;
        partial_ml[2 * part + 1] = run[3 * h + 1];
    }
}

// grid tokens·H (one chunk; o points at the chunk's first row), block SPLIT_THREADS, dynamic shared memory d floats:
// o[row] = (1/Rv) · merged average. visible: paged, the chunk's tokens' visible keys (token_splits); nullptr dense.
template <typename T>
__global__ void __launch_bounds__(SPLIT_THREADS)
tpa_decode_combine(T* __restrict__ o, const float* __restrict__ partial_o, const float* __restrict__ partial_ml, int width, int value_rank, int splits,
                   int heads, const int* __restrict__ visible, int keys_per_split)
{
    extern __shared__ float mixed[];
    const index_t rows = gridDim.x, row = blockIdx.x;
    split_combine(mixed, partial_o, partial_ml, token_splits(visible, row / heads, splits, keys_per_split), rows, row, width);
    for (int c = threadIdx.x; c < width; c += SPLIT_THREADS) {
        o[row * width + c] = from_float<T>(mixed[c] / (float)value_rank);
    }
}

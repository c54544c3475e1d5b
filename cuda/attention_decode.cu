// Attention.Native: softmax-attention decode at memory speed (bf16/fp16 caches, fp32 arithmetic). A decode step is a few
// query rows against a long cache: it reads every cached K and V byte once and does little arithmetic per byte, so its
// speed is the rate the cache streams from memory. Flash-decoding's plan: the cache is cut into splits, one block each,
// and attention_combine (attention.cu) merges the blocks' partials. Within a block each warp streams its own cache rows
// with 16-byte loads, several rows in flight per lane, and the rows of all the KV group's heads ("packed rows": query i of
// head g·group + r is row i·group + r) are scored against each cache row as it passes, so a group reads its cache once.
// Layouts and masking as attention.cu: q [B, Tq, H, DQK], k [B, Tk, G, DQK], v [B, Tk, G, DV], any views whose rows start on
// 16 bytes (the launcher checks; rows through attention_row); query i sits at position length − Tq + i; keys ≥ length never
// count.
// A ragged batch (attention_shape.cuh; the serving decode: one step of many sequences of different lengths): grid z is the
// sequence, the row blocks and splits are planned for the longest sequence; a block past its sequence's packed rows exits,
// one past its keys writes an empty partial (m = −∞, l = 0), which the combine weighs as nothing.
// Paged keys (the serving pools' decode; attention_shape.cuh): each key row is looked up in the sequence's block table; a
// page holds whole rows, so the 16-byte loads stay whole.
#include "common.cuh"
#include "attention_shape.cuh"

#define DEC_WARPS 4
#define DEC_THREADS (DEC_WARPS * 32)

struct alignas(16) chunk16 { unsigned w[4]; }; // eight 16-bit values: one 16-byte load

// The eight values of a chunk as floats.
template <typename T>
__device__ __forceinline__ void unpack8(float (&f)[8], const chunk16& c)
{
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        f[2 * e] = to_float(T{(unsigned short)(c.w[e] & 0xffffu)});
        f[2 * e + 1] = to_float(T{(unsigned short)(c.w[e] >> 16)});
    }
}

// grid (splits, G·ceil(rows / ROWS), B), block DEC_THREADS, for rows = Tq·(H / G) packed rows per KV head; block
// (split, g·row_blocks + rb, b) takes packed rows rb·ROWS … of KV head g (with more rows than ROWS a group's cache is read
// once per row block, mostly from L2), covers keys [split·keys_per_split, +keys_per_split) and writes, for each of its packed
// rows, the unnormalised accumulator to
// partial_o[split, row, :DV] and (running max in natural-log units, sum) to partial_ml[split, row], with row = (b·H + h)·Tq + i
// as attention_combine reads them.
// LANES lanes share a cache row (16 bytes each per chunk), so a warp holds 32 / LANES rows ("slots") at once and UNROLL of
// them per slot per step: with widths of 128 a lane has 2·UNROLL loads of 16 bytes in flight. Rows of 256 and 256 (MFA's
// one wide head) take a whole warp per row, so a lane holds 8 columns of each accumulator, as with 128 and 128; with 16
// lanes its 8 rows' accumulators (128 floats) would not fit the register cap below.
// At least 3 blocks per SM: caps registers at 170, which keeps every instantiation free of spills (left alone, ptxas
// spills a few bytes of the one-row kernel on sm_80).
template <typename T, int DQK, int DV, int ROWS>
__global__ void __launch_bounds__(DEC_THREADS, 3)
attention_decode(float* __restrict__ partial_o, float* __restrict__ partial_ml, const T* __restrict__ q, const T* __restrict__ k,
                 const T* __restrict__ v, const AttentionShape launched, int keys_per_split)
{
    constexpr int LANES = DQK % 256 == 0 && DV % 256 == 0 ? 32 : DQK % 128 == 0 && DV % 128 == 0 ? 16 : 8;
    constexpr int SLOTS = 32 / LANES;
    constexpr int KC = DQK / 8 / LANES, VC = DV / 8 / LANES; // chunks per lane of a K row, of a V row
    constexpr int UNROLL = ROWS >= 8 ? 2 : 4;                  // 8 rows' accumulators leave room for fewer rows in flight
    __shared__ float qs[ROWS][DQK];                // scaled to log2 units
    __shared__ float merged[DEC_WARPS][ROWS][DV];  // the warps' accumulators
    __shared__ float merged_ml[DEC_WARPS][ROWS][2];
    __shared__ int visible[ROWS];                  // keys each packed row sees within this split (shared: registers are at the cap)

    AttentionShape s = launched;
    const int group = s.heads / s.kv_heads, row_blocks = (s.tq * group + ROWS - 1) / ROWS; // the longest sequence's, ragged
    const int split = blockIdx.x, g = blockIdx.y / row_blocks;
    const int first = blockIdx.y % row_blocks * ROWS; // this block's packed rows: first + p for p < rows
    const int b = blockIdx.z;
    attention_sequence(s, b);
    const int packed = s.tq * group;
    if (first >= packed) {
        return; // past this (ragged) sequence's rows
    }
    const int rows = packed - first < ROWS ? packed - first : ROWS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, slot = lane / LANES, lc = lane % LANES;
    for (int e = threadIdx.x; e < ROWS * DQK; e += DEC_THREADS) {
        const int p = e / DQK, c = e % DQK, i = (first + p) / group, h = g * group + (first + p) % group;
        const index_t at = attention_row(launched.strides.q, b, attention_query_token(launched, b, i), h);
        qs[p][c] = p < rows ? to_float(q[at + c]) * (s.scale * LOG2E) : 0.0f;
    }
    const int begin = split * keys_per_split;
    const int split_end = begin + keys_per_split;
    const int last_visible = attention_visible(s, (first + rows - 1) / group);
    const int end = split_end < last_visible ? split_end : last_visible;
    if (threadIdx.x < ROWS) {
        const int p = threadIdx.x, limit = p < rows ? attention_visible(s, (first + p) / group) : 0;
        visible[p] = limit < end ? limit : end;
    }
    float m[ROWS], l[ROWS], acc[ROWS][VC * 8];
#pragma unroll
    for (int p = 0; p < ROWS; ++p) {
        m[p] = NEG_INF;
        l[p] = 0.0f;
#pragma unroll
        for (int c = 0; c < VC * 8; ++c) {
            acc[p][c] = 0.0f;
        }
    }
    __syncthreads();

    // This lane's columns: chunk c covers columns (c·LANES + lc)·8 … + 7, so a row's LANES lanes read one contiguous span.
    const index_t kstride = launched.strides.k.token, vstride = launched.strides.v.token; // rows of any view (attention_row)
    // Key j's row: first + j, or (paged) its pool slot. The first row goes into the base pointers, each key's offset from it
    // stays 32-bit, and the block table is read through the launched shape (kernel parameters, not registers): paging leaves
    // the registers of the dense kernel as they were (the 8-row instantiations sit at the cap).
    const index_t key0 = attention_keys(launched, b).first;
    const T* kbase = k + attention_row(launched.strides.k, b, key0, g) + lc * 8;
    const T* vbase = v + attention_row(launched.strides.v, b, key0, g) + lc * 8;
    constexpr int STEP = DEC_WARPS * SLOTS * UNROLL;
    for (int j0 = begin; j0 < end; j0 += STEP) {
        // Every load first, so they are all in flight together. Keys past the end re-read the last valid row
        // (in bounds, finite) and are masked below.
        int key[UNROLL];
        chunk16 kr[UNROLL][KC], vr[UNROLL][VC];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            key[u] = j0 + (warp * UNROLL + u) * SLOTS + slot;
            const int j = key[u] < end ? key[u] : end - 1;
            const int at = launched.pages == nullptr ? j
                : launched.pages[(int)blockIdx.z * launched.pages_per_sequence + j / launched.page_size] * launched.page_size + j % launched.page_size;
#pragma unroll
            for (int c = 0; c < KC; ++c) {
                kr[u][c] = *reinterpret_cast<const chunk16*>(kbase + at * kstride + c * LANES * 8);
            }
#pragma unroll
            for (int c = 0; c < VC; ++c) {
                vr[u][c] = *reinterpret_cast<const chunk16*>(vbase + at * vstride + c * LANES * 8);
            }
        }

        // Scores: the lane's partial dot products, then summed over the row's LANES lanes.
        float sc[UNROLL][ROWS];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
            for (int p = 0; p < ROWS; ++p) {
                sc[u][p] = 0.0f;
            }
        }
#pragma unroll
        for (int c = 0; c < KC; ++c) {
            float kf[UNROLL][8];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                unpack8<T>(kf[u], kr[u][c]);
            }
#pragma unroll
            for (int p = 0; p < ROWS; ++p) {
                const float* qc = &qs[p][(c * LANES + lc) * 8];
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    const float qv = qc[e];
#pragma unroll
                    for (int u = 0; u < UNROLL; ++u) {
                        sc[u][p] += qv * kf[u][e];
                    }
                }
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
            for (int p = 0; p < ROWS; ++p) {
#pragma unroll
                for (int off = 1; off < LANES; off <<= 1) {
                    sc[u][p] += __shfl_xor_sync(0xffffffffu, sc[u][p], off);
                }
            }
        }

        // Online softmax per packed row over this slot's UNROLL keys; sc becomes the probabilities.
#pragma unroll
        for (int p = 0; p < ROWS; ++p) {
            float mx = m[p];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                if (key[u] >= visible[p]) {
                    sc[u][p] = NEG_INF;
                }
                mx = fmaxf(mx, sc[u][p]);
            }
            const float base = mx == NEG_INF ? 0.0f : mx; // nothing visible yet: keep exponents finite
            const float correction = exp2f(m[p] - base);
            m[p] = mx;
            float sum = 0.0f;
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                sc[u][p] = exp2f(sc[u][p] - base);
                sum += sc[u][p];
            }
            l[p] = l[p] * correction + sum;
#pragma unroll
            for (int c = 0; c < VC * 8; ++c) {
                acc[p][c] *= correction;
            }
        }
#pragma unroll
        for (int c = 0; c < VC; ++c) {
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                float vf[8];
                unpack8<T>(vf, vr[u][c]);
#pragma unroll
                for (int p = 0; p < ROWS; ++p) {
#pragma unroll
                    for (int e = 0; e < 8; ++e) {
                        acc[p][c * 8 + e] += sc[u][p] * vf[e];
                    }
                }
            }
        }
    }

    // Merge the warp's slots (lanes lc, lc + LANES, … hold the same columns), then the block's warps.
#pragma unroll
    for (int p = 0; p < ROWS; ++p) {
        float mx = m[p];
#pragma unroll
        for (int off = LANES; off < 32; off <<= 1) {
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        }
        const float f = exp2f(m[p] - (mx == NEG_INF ? 0.0f : mx));
        float sum = l[p] * f;
#pragma unroll
        for (int off = LANES; off < 32; off <<= 1) {
            sum += __shfl_xor_sync(0xffffffffu, sum, off);
        }
#pragma unroll
        for (int c = 0; c < VC * 8; ++c) {
            float x = acc[p][c] * f;
#pragma unroll
            for (int off = LANES; off < 32; off <<= 1) {
                x += __shfl_xor_sync(0xffffffffu, x, off);
            }
            acc[p][c] = x;
        }
        if (slot == 0) {
#pragma unroll
            for (int c = 0; c < VC; ++c) {
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    merged[warp][p][(c * LANES + lc) * 8 + e] = acc[p][c * 8 + e];
                }
            }
            if (lc == 0) {
                merged_ml[warp][p][0] = mx;
                merged_ml[warp][p][1] = sum;
            }
        }
    }
    __syncthreads();

    // The partials' rows, from the launched shape (nothing of the sequence's place stays live across the loop above).
    const index_t all_rows = attention_lse_rows(launched);
    for (int e = threadIdx.x; e < rows * DV; e += DEC_THREADS) {
        const int p = e / DV, col = e % DV, i = (first + p) / group, h = g * group + (first + p) % group;
        float mx = NEG_INF;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; ++w) {
            mx = fmaxf(mx, merged_ml[w][p][0]);
        }
        const float base = mx == NEG_INF ? 0.0f : mx;
        float value = 0.0f, sum = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; ++w) {
            const float f = exp2f(merged_ml[w][p][0] - base);
            value += merged[w][p][col] * f;
            sum += merged_ml[w][p][1] * f;
        }
        const index_t part = split * all_rows + attention_lse_row(launched, b, h, i);
        partial_o[part * DV + col] = value;
        if (col == 0) {
            // attention_combine works in natural-log units: e^{s − M ln 2} = 2^{s/ln 2 − M}.
            partial_ml[2 * part] = mx == NEG_INF ? NEG_INF : mx * 0.6931471805599453f;
            partial_ml[2 * part + 1] = sum;
        }
    }
}

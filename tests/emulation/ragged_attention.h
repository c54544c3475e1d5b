// A ragged batch of softmax attention for the harnesses of cuda/attention.cu, attention_mma.cu and attention_decode.cu:
// sequences of different lengths packed along the token axis (q/o/dO [N_q, H, d], k/v [N_k, G, d], lse/delta [H, N_q]) with
// cu_seqlens offsets, random 16-bit-representable inputs, and a double-precision reference computed sequence by sequence as
// separate dense problems (query i of sequence s at position L_k(s) − L_q(s) + i; causal rows see keys up to it). The shapes
// are the ones the C# launcher (SoftmaxAttentionCuda.ShapesOf) passes: the kernels' (sequence count, the longest lengths,
// the offsets) and the dense one of the packed rows (batch 1, N_q queries) for the combine and delta kernels, both with the
// packed rows' strides (batch stride 0).
// Paged (page_size set; PagedAttention.Forward as SoftmaxAttentionCuda.Paged launches it): the same keys also lie in k and v
// pools [slots, G, d] laid out by paged_layout.h (shuffled pages, shared prefix pages, garbage in every unused slot), and
// the shape points the forward kernels at the block table.
#pragma once
#include "cuda_shim.h"
#include "bf16_check.h"
#include "paged_layout.h"
#include "strided_layout.h"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

// Lengths per sequence; lk empty: each sequence's keys are its queries' own tokens.
struct RaggedCase {
    std::vector<int> lq, lk;
    int H, G, dqk, dv;
    bool causal;
    int page_size = 0;                         // > 0: paged keys
    std::vector<std::array<int, 3>> shares{}; // paged: {a, b, n}: sequence b's first n pages are sequence a's
};

template <typename T>
struct RaggedAttention {
    RaggedCase c;
    int count = 0, nq = 0, nk = 0, max_lq = 0, max_lk = 0, group = 1;
    float scale = 1.0f;
    std::vector<int> cu_q, cu_k;
    std::vector<T> q, k, v, dO;
    std::vector<double> o_ref, lse_ref; // [N_q, H, dv], [H, N_q]
    PagedBatch paged;                   // paged: the pools' layout
    std::vector<T> k_pool, v_pool;      // paged: [slots, G, d]

    RaggedAttention(const RaggedCase& rc, unsigned seed) : c(rc)
    {
        if (c.lk.empty()) c.lk = c.lq;
        count = (int)c.lq.size();
        group = c.H / c.G;
        cu_q.assign(count + 1, 0);
        cu_k.assign(count + 1, 0);
        for (int s = 0; s < count; ++s) {
            cu_q[s + 1] = cu_q[s] + c.lq[s];
            cu_k[s + 1] = cu_k[s] + c.lk[s];
            max_lq = std::max(max_lq, c.lq[s]);
            max_lk = std::max(max_lk, c.lk[s]);
        }
        nq = cu_q[count];
        nk = cu_k[count];
        scale = 1.0f / std::sqrt((float)c.dqk);
        std::mt19937 rng(seed);
        std::normal_distribution<float> nd;
        auto vec = [&](size_t n) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng)); return x; };
        q = vec((size_t)nq * c.H * c.dqk);
        k = vec((size_t)nk * c.G * c.dqk);
        v = vec((size_t)nk * c.G * c.dv);
        dO = vec((size_t)nq * c.H * c.dv);
        if (c.page_size > 0) page(seed);
        o_ref.assign((size_t)nq * c.H * c.dv, 0.0);
        lse_ref.assign((size_t)c.H * nq, 0.0);
        for (int s = 0; s < count; ++s) for (int h = 0; h < c.H; ++h) for (int i = 0; i < c.lq[s]; ++i) {
            const auto p = probabilities(s, i, h, &lse_ref[lse_row(s, h, i)]);
            double* orow = &o_ref[query_row(s, i, h) * c.dv];
            for (size_t j = 0; j < p.size(); ++j) for (int col = 0; col < c.dv; ++col) orow[col] += p[j] * F(v, key_row(s, (int)j, h / group) * c.dv + col);
        }
    }

    // The pools: a shared page holds the same keys in both sequences (copied from a to b before the reference sees them).
    void page(unsigned seed)
    {
        for (auto [a, b, n] : c.shares) {
            const size_t rows = (size_t)n * c.page_size * c.G;
            std::copy_n(k.begin() + (size_t)cu_k[a] * c.G * c.dqk, rows * c.dqk, k.begin() + (size_t)cu_k[b] * c.G * c.dqk);
            std::copy_n(v.begin() + (size_t)cu_k[a] * c.G * c.dv, rows * c.dv, v.begin() + (size_t)cu_k[b] * c.G * c.dv);
        }
        paged = make_paged_batch(c.page_size, c.lk, c.lq, c.shares, 3, seed);
        k_pool.assign(paged.slots() * c.G * c.dqk, from_float<T>(1000.0f)); // garbage: any slot read by mistake shows
        v_pool.assign(paged.slots() * c.G * c.dv, from_float<T>(1000.0f));
        for (int s = 0; s < count; ++s) for (int j = 0; j < c.lk[s]; ++j) {
            const size_t row = paged.slot(s, j) * c.G, from = ((size_t)cu_k[s] + j) * c.G;
            std::copy_n(k.begin() + from * c.dqk, (size_t)c.G * c.dqk, k_pool.begin() + row * c.dqk);
            std::copy_n(v.begin() + from * c.dv, (size_t)c.G * c.dv, v_pool.begin() + row * c.dv);
        }
    }
    bool is_paged() const { return c.page_size > 0; }
    // What the forward kernels read keys and values from: the packed k, v, or the pools.
    const std::vector<T>& keys() const { return is_paged() ? k_pool : k; }
    const std::vector<T>& values() const { return is_paged() ? v_pool : v; }

    static double F(const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); }
    static std::vector<float> as_floats(const std::vector<T>& x)
    {
        std::vector<float> f(x.size());
        for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]);
        return f;
    }
    size_t query_row(int s, int i, int h) const { return ((size_t)cu_q[s] + i) * c.H + h; }   // of q, o, dO
    size_t key_row(int s, int j, int g) const { return ((size_t)cu_k[s] + j) * c.G + g; }     // of k, v
    size_t lse_row(int s, int h, int i) const { return (size_t)h * nq + cu_q[s] + i; }       // of lse, delta
    int visible(int s, int i) const { return c.causal ? std::min(c.lk[s], c.lk[s] - c.lq[s] + i + 1) : c.lk[s]; }

    // The scaled scores of query i of sequence s, head h, over its visible keys.
    std::vector<double> scores(int s, int i, int h) const
    {
        std::vector<double> x(visible(s, i));
        for (size_t j = 0; j < x.size(); ++j) {
            double d = 0;
            for (int col = 0; col < c.dqk; ++col) d += F(q, query_row(s, i, h) * c.dqk + col) * F(k, key_row(s, (int)j, h / group) * c.dqk + col);
            x[j] = d * scale;
        }
        return x;
    }

    std::vector<double> probabilities(int s, int i, int h, double* lse_out) const
    {
        auto p = scores(s, i, h);
        double m = -1e300, sum = 0;
        for (double x : p) m = std::max(m, x);
        for (double& x : p) { x = std::exp(x - m); sum += x; }
        for (double& x : p) x /= sum;
        if (lse_out) *lse_out = m + std::log(sum);
        return p;
    }

    // The kernels' shape: sequence count, the longest lengths, the device offsets (SoftmaxAttentionCuda.ShapesOf).
    AttentionShape shape() const
    {
        AttentionShape s{count, max_lq, c.H, c.dqk, max_lk, c.G, c.dv, max_lk, scale, c.causal ? 1 : 0, cu_q.data(), cu_k.data()};
        s.strides = packed_strides(c.H, c.G, c.dqk, c.dv);
        if (is_paged()) {
            s.pages = paged.table.data();
            s.pages_per_sequence = paged.pages_per_sequence;
            s.page_size = paged.page_size;
        }
        return s;
    }
    // The packed rows as one dense sequence: what the combine and delta kernels walk.
    AttentionShape rows_shape() const
    {
        AttentionShape s{1, nq, c.H, c.dqk, nk, c.G, c.dv, nk, scale, c.causal ? 1 : 0};
        s.strides = packed_strides(c.H, c.G, c.dqk, c.dv);
        return s;
    }

    void print(const char* type, const char* extra) const
    {
        std::string lengths;
        for (int s = 0; s < count; ++s) lengths += (s ? "," : "") + std::to_string(c.lq[s]) + (c.lk[s] != c.lq[s] ? "/" + std::to_string(c.lk[s]) : "");
        const std::string pages = is_paged() ? " paged " + std::to_string(c.page_size) + "×" + std::to_string(paged.pool_pages) : "";
        printf("%s ragged [%s] (q/k) H%d G%d dqk%d dv%d causal%d%s%s\n", type, lengths.c_str(), c.H, c.G, c.dqk, c.dv, c.causal, pages.c_str(), extra);
    }

    // Backward reference contributions for the kernel's own o (as stored in T, what the delta kernel reads): delta [H, N_q]
    // and what dq, dk, dv receive. delta_in_float: dS uses delta rounded to fp32, as the tensor-core kernels receive it.
    void backward(const std::vector<T>& o, bool delta_in_float, std::vector<double>& delta, std::vector<double>& dq_c,
                  std::vector<double>& dk_c, std::vector<double>& dv_c) const
    {
        delta.assign((size_t)c.H * nq, 0.0);
        dq_c.assign(q.size(), 0.0);
        dk_c.assign(k.size(), 0.0);
        dv_c.assign(v.size(), 0.0);
        for (int s = 0; s < count; ++s) for (int h = 0; h < c.H; ++h) for (int i = 0; i < c.lq[s]; ++i) {
            const int g = h / group;
            const auto p = probabilities(s, i, h, nullptr);
            const size_t qi = query_row(s, i, h);
            double d = 0;
            for (int col = 0; col < c.dv; ++col) d += F(o, qi * c.dv + col) * F(dO, qi * c.dv + col);
            delta[lse_row(s, h, i)] = d;
            const double used = delta_in_float ? (double)(float)d : d;
            for (size_t j = 0; j < p.size(); ++j) {
                const size_t kj = key_row(s, (int)j, g);
                double dp = 0;
                for (int col = 0; col < c.dv; ++col) dp += F(dO, qi * c.dv + col) * F(v, kj * c.dv + col);
                const double ds = p[j] * (dp - used);
                for (int col = 0; col < c.dqk; ++col) {
                    dq_c[qi * c.dqk + col] += scale * ds * F(k, kj * c.dqk + col);
                    dk_c[kj * c.dqk + col] += scale * ds * F(q, qi * c.dqk + col);
                }
                for (int col = 0; col < c.dv; ++col) dv_c[kj * c.dv + col] += p[j] * F(dO, qi * c.dv + col);
            }
        }
    }
};

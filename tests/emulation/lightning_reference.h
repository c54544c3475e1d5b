// The double-precision reference of the Lightning recurrence's backward with an initial state S0 and a gradient G of the
// final state, term by term (no recurrence, no blocks), shared by lightning_harness.cpp and lightning_mma_harness.cpp.
#pragma once
#include <cmath>
#include <vector>
#include "cuda_shim.h"

struct LightningReference {
    std::vector<double> dq, dk, dv, ds0;
};

// q, k [B, T, H, dk], v and dO [B, T, H, dv], s0 and g [B, H, dk, dv], λ per head.
// o_t = Σ_{s≤t} λ^(t−s) (q_t·k_s) v_s + λ^(t+1) q_t·S0, final S = Σ_s λ^(T−1−s) k_sᵀ v_s + λ^T S0.
template <typename T>
LightningReference lightning_reference_backward(const std::vector<T>& q, const std::vector<T>& k, const std::vector<T>& v,
                                                const std::vector<T>& dO, const std::vector<float>& s0, const std::vector<float>& g,
                                                const std::vector<double>& lam, int B, int Tn, int H, int dk, int dv)
{
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    auto key = [&](int b, int t, int h, int i) { return (((size_t)b * Tn + t) * H + h) * dk + i; };
    auto val = [&](int b, int t, int h, int j) { return (((size_t)b * Tn + t) * H + h) * dv + j; };
    auto st = [&](int b, int h, int i, int j) { return (((size_t)b * H + h) * dk + i) * dv + j; };
    std::vector<double> rq(q.size()), rk(k.size()), rv(v.size()), rs(s0.size());
    for (int b = 0; b < B; ++b) for (int h = 0; h < H; ++h) {
        for (int t = 0; t < Tn; ++t) for (int u = 0; u <= t; ++u) {
            const double w = std::pow(lam[h], t - u);
            double score = 0, dscore = 0;
            for (int i = 0; i < dk; ++i) score += F(q, key(b, t, h, i)) * F(k, key(b, u, h, i));
            for (int j = 0; j < dv; ++j) { dscore += F(dO, val(b, t, h, j)) * F(v, val(b, u, h, j)); rv[val(b, u, h, j)] += w * score * F(dO, val(b, t, h, j)); }
            for (int i = 0; i < dk; ++i) { rq[key(b, t, h, i)] += w * dscore * F(k, key(b, u, h, i)); rk[key(b, u, h, i)] += w * dscore * F(q, key(b, t, h, i)); }
        }
        for (int i = 0; i < dk; ++i) for (int j = 0; j < dv; ++j) {
            const size_t at = st(b, h, i, j);
            rs[at] += std::pow(lam[h], Tn) * g[at];
            for (int t = 0; t < Tn; ++t) {
                const double w = std::pow(lam[h], t + 1), wg = std::pow(lam[h], Tn - 1 - t);
                rq[key(b, t, h, i)] += w * F(dO, val(b, t, h, j)) * s0[at];
                rs[at] += w * F(q, key(b, t, h, i)) * F(dO, val(b, t, h, j));
                rk[key(b, t, h, i)] += wg * g[at] * F(v, val(b, t, h, j));
                rv[val(b, t, h, j)] += wg * F(k, key(b, t, h, i)) * g[at];
            }
        }
    }
    return {rq, rk, rv, rs};
}

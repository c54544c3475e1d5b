// The double-precision reference of the Lightning recurrence's backward with an initial state S0 and a gradient G of the
// final state, term by term (no recurrence, no blocks), shared by lightning_harness.cpp and lightning_mma_harness.cpp; and
// the sequences of a launch, dense or ragged, as the kernels' lightning_rows reads them.
#pragma once
#include <cmath>
#include <cstdio>
#include <vector>
#include "cuda_shim.h"

// The sequences of a launch: dense, B sequences of T tokens (sequence b on rows b·T …, state row b), or ragged, `lengths`
// packed one after another along the token axis of [1, N, …] (the kernels' seq_offsets) with state rows `slots` of
// `state_rows` ≥ the sequence count.
struct LightningSequences {
    bool ragged = false;
    std::vector<int> offsets, slots; // the kernels' seq_offsets and state_rows (ragged only)
    std::vector<size_t> first;       // per sequence: its first row along the token axis,
    std::vector<int> length, state;  // its length and its state row
    size_t tokens = 0;               // B·T, or N
    int state_rows = 0;              // the state tensor's rows: B, or P
    int count() const { return (int)length.size(); }
    const int* device_offsets() const { return ragged ? offsets.data() : nullptr; }
    const int* device_slots() const { return ragged ? slots.data() : nullptr; }
};

inline LightningSequences lightning_dense(int B, int T)
{
    LightningSequences s;
    for (int b = 0; b < B; ++b) { s.first.push_back((size_t)b * T); s.length.push_back(T); s.state.push_back(b); }
    s.tokens = (size_t)B * T;
    s.state_rows = B;
    return s;
}

inline LightningSequences lightning_ragged(const std::vector<int>& lengths, const std::vector<int>& slots, int state_rows)
{
    LightningSequences s;
    s.ragged = true;
    s.offsets.push_back(0);
    for (size_t i = 0; i < lengths.size(); ++i) {
        s.first.push_back((size_t)s.offsets.back());
        s.length.push_back(lengths[i]);
        s.state.push_back(slots[i]);
        s.offsets.push_back(s.offsets.back() + lengths[i]);
    }
    s.slots = slots;
    s.tokens = (size_t)s.offsets.back();
    s.state_rows = state_rows;
    return s;
}

// "B2 T45", or "ragged 40→row 4 1→row 0 7→row 2 of 5" (each sequence's length and state row, and the state rows).
inline void print_sequences(const LightningSequences& s, int B, int T)
{
    if (!s.ragged) {
        printf("B%d T%d", B, T);
        return;
    }
    printf("ragged");
    for (int i = 0; i < s.count(); ++i) printf(" %d→row %d", s.length[i], s.state[i]);
    printf(" of %d", s.state_rows);
}

struct LightningReference {
    std::vector<double> dq, dk, dv, ds0;
};

// q, k [tokens, H, dk], v and dO [tokens, H, dv], s0 and g [state rows, H, dk, dv], λ per head; per sequence (its rows, its
// state row): o_t = Σ_{s≤t} λ^(t−s) (q_t·k_s) v_s + λ^(t+1) q_t·S0, final S = Σ_s λ^(T−1−s) k_sᵀ v_s + λ^T S0. State rows no
// sequence uses get no gradient.
template <typename T>
LightningReference lightning_reference_backward(const std::vector<T>& q, const std::vector<T>& k, const std::vector<T>& v,
                                                const std::vector<T>& dO, const std::vector<float>& s0, const std::vector<float>& g,
                                                const std::vector<double>& lam, const LightningSequences& seqs, int H, int dk, int dv)
{
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    std::vector<double> rq(q.size()), rk(k.size()), rv(v.size()), rs(s0.size());
    for (int b = 0; b < seqs.count(); ++b) for (int h = 0; h < H; ++h) {
        const int Tn = seqs.length[b];
        auto key = [&](int t, int i) { return ((seqs.first[b] + t) * H + h) * dk + i; };
        auto val = [&](int t, int j) { return ((seqs.first[b] + t) * H + h) * dv + j; };
        auto st = [&](int i, int j) { return (((size_t)seqs.state[b] * H + h) * dk + i) * dv + j; };
        for (int t = 0; t < Tn; ++t) for (int u = 0; u <= t; ++u) {
            const double w = std::pow(lam[h], t - u);
            double score = 0, dscore = 0;
            for (int i = 0; i < dk; ++i) score += F(q, key(t, i)) * F(k, key(u, i));
            for (int j = 0; j < dv; ++j) { dscore += F(dO, val(t, j)) * F(v, val(u, j)); rv[val(u, j)] += w * score * F(dO, val(t, j)); }
            for (int i = 0; i < dk; ++i) { rq[key(t, i)] += w * dscore * F(k, key(u, i)); rk[key(u, i)] += w * dscore * F(q, key(t, i)); }
        }
        for (int i = 0; i < dk; ++i) for (int j = 0; j < dv; ++j) {
            const size_t at = st(i, j);
            rs[at] += std::pow(lam[h], Tn) * g[at];
            for (int t = 0; t < Tn; ++t) {
                const double w = std::pow(lam[h], t + 1), wg = std::pow(lam[h], Tn - 1 - t);
                rq[key(t, i)] += w * F(dO, val(t, j)) * s0[at];
                rs[at] += w * F(q, key(t, i)) * F(dO, val(t, j));
                rk[key(t, i)] += wg * g[at] * F(v, val(t, j));
                rv[val(t, j)] += wg * F(k, key(t, i)) * g[at];
            }
        }
    }
    return {rq, rk, rv, rs};
}

// The dense form: q, k [B, T, H, dk], v and dO [B, T, H, dv], s0 and g [B, H, dk, dv].
template <typename T>
LightningReference lightning_reference_backward(const std::vector<T>& q, const std::vector<T>& k, const std::vector<T>& v,
                                                const std::vector<T>& dO, const std::vector<float>& s0, const std::vector<float>& g,
                                                const std::vector<double>& lam, int B, int Tn, int H, int dk, int dv)
{
    return lightning_reference_backward(q, k, v, dO, s0, g, lam, lightning_dense(B, Tn), H, dk, dv);
}

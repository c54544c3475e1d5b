// cuda/lightning_mma.cu (bf16 and fp16) under the emulation of cuda_shim.h + mma_shim.h against the recurrence written out in double
// on the same 16-bit-rounded inputs: out_t (+)= λ^(t+1) a_t·S0 + Σ_{s≤t} λ^(t−s) (a_t·b_s) c_s in sweep order, and the final
// state λ^T S0 + Σ_s λ^(T−1−s) b_sᵀ c_s; the state modes of lightning_state.cuh (S0 read transposed, S0 entering with the
// first token, λ·S added into the final state). out by design.md's 16-bit tolerance; the states are fp32 in memory but built
// from 16-bit products on the tensor cores (b scaled by λ^(n−1−c) and rounded to T), so they pass the 16-bit factor too.
// An accumulating sweep's out (the backward's gradients) and an added final state (dS0) by check_added, from starting
// values of the contribution's size. backward(): the three sweeps as LightningCuda.Backward composes them, with S0 and the
// final state's gradient G, against the gradients written out term by term (dq, dk, dv, dS0). Ragged batches
// (lightning_reference.h's LightningSequences): every sequence its own recurrence over its packed rows, from and to its state
// row (slots out of order, more state rows than sequences, the state updated in place).
#include "cuda_shim.h"
#include "mma_shim.h"
#include "bf16_check.h"
#include "lightning_mma.emu.cpp"
#include "lightning_reference.h"
#include <random>
#include <algorithm>

// Inputs: a ~ a_scale·N(0, 1/inner), b ~ b_mean + N(0, 1/inner), c ~ c_mean + N(0, 1); final_state false: none written;
// mode: LIGHTNING_STATE_* flags. lengths non-empty: a ragged batch (B and T unused) with state rows slots of `rows`; in_place:
// the final state written over the initial one.
struct P {
    int B, T, H, inner, width; double lambda; bool reverse, accumulate, state; float a_scale = 1, b_mean = 0, c_mean = 0; bool final_state = true; int mode = 0;
    std::vector<int> lengths = {}, slots = {}; int rows = 0; bool in_place = false;
};

// As LightningCuda.Recurrence launches it: (sequences · H, width / 64), the token axis's length (N when ragged, unused there).
template <typename T>
static void launch(T* out, float* fin, const float* init, const std::vector<T>& a, const std::vector<T>& b, const std::vector<T>& c,
                   LightningDecay decay, const LightningSequences& seqs, int Tn, int H, int inner, int width, int reverse, int accumulate, int mode)
{
    const int seq = seqs.ragged ? (int)seqs.tokens : Tn;
    const int *offsets = seqs.device_offsets(), *rows = seqs.device_slots();
    emu_launch(dim3{(unsigned)(seqs.count() * H), (unsigned)(width / LMMA_DV)}, dim3{LMMA_THREADS}, [&] {
        if (inner == 64) lightning_forward_mma<T, 64>(out, fin, init, a.data(), b.data(), c.data(), decay, 0, H, seq, H, inner, width, reverse, accumulate, mode, offsets, rows);
        else lightning_forward_mma<T, 128>(out, fin, init, a.data(), b.data(), c.data(), decay, 0, H, seq, H, inner, width, reverse, accumulate, mode, offsets, rows); });
}

template <typename T>
int run(P p)
{
    const bool ragged = !p.lengths.empty();
    const LightningSequences seqs = ragged ? lightning_ragged(p.lengths, p.slots, p.rows) : lightning_dense(p.B, p.T);
    std::mt19937 rng(p.B * 31 + p.T * 7 + p.inner + p.width + p.mode + (ragged ? (int)seqs.tokens : 0));
    std::normal_distribution<float> nd;
    float s = 1.0f / std::sqrt((float)p.inner);
    auto vec = [&](size_t n, float scale, float mean = 0) { std::vector<T> v(n); for (auto& x : v) x = from_float<T>(mean + nd(rng) * scale); return v; };
    auto floats_of = [&](size_t n, float scale) { std::vector<float> v(n); for (auto& x : v) x = nd(rng) * scale; return v; };
    auto a = vec(seqs.tokens * p.H * p.inner, s * p.a_scale), b = vec(a.size(), s, p.b_mean), c = vec(seqs.tokens * p.H * p.width, 1, p.c_mean);
    auto init = floats_of((size_t)seqs.state_rows * p.H * p.inner * p.width, 1);
    const bool transposed = (p.mode & LIGHTNING_STATE_TRANSPOSED) != 0, at_first = (p.mode & LIGHTNING_STATE_AT_FIRST) != 0;
    const bool add_final = (p.mode & LIGHTNING_STATE_ADD_FINAL) != 0;
    LightningDecay decay{};
    std::vector<double> lam(p.H);
    for (int h = 0; h < p.H; ++h) { lam[h] = std::pow(p.lambda, 1.0 + h); decay.lambda[h] = lam[h]; }
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    std::vector<double> out_ref(c.size()), fin_ref(init.size()); // out_ref: the contribution (added to out when accumulating)
    std::vector<bool> touched(init.size());
    for (int bb = 0; bb < seqs.count(); ++bb) for (int h = 0; h < p.H; ++h) {
        const int Tn = seqs.length[bb];
        std::vector<double> S((size_t)p.inner * p.width);
        size_t sb = ((size_t)seqs.state[bb] * p.H + h) * p.inner * p.width;
        for (int i = 0; i < p.inner; ++i) for (int j = 0; j < p.width; ++j)
            S[(size_t)i * p.width + j] = p.state ? init[sb + (transposed ? (size_t)j * p.inner + i : (size_t)i * p.width + j)] : 0.0;
        for (int step = 0; step < Tn; ++step) {  // the recurrence one token at a time: S ← λS + b_tᵀ c_t after out_t = a_t·(λS) + (a_t·b_t) c_t
            int t = p.reverse ? Tn - 1 - step : step;
            size_t at = (seqs.first[bb] + t) * p.H + h;
            const double d = at_first && step == 0 ? 1.0 : lam[h]; // AT_FIRST: S0 joins the first token's term undecayed
            for (size_t e = 0; e < S.size(); ++e) S[e] *= d;
            for (int i = 0; i < p.inner; ++i) for (int j = 0; j < p.width; ++j) S[(size_t)i * p.width + j] += F(b, at * p.inner + i) * F(c, at * p.width + j);
            for (int j = 0; j < p.width; ++j) {
                double sum = 0;
                for (int i = 0; i < p.inner; ++i) sum += F(a, at * p.inner + i) * S[(size_t)i * p.width + j];
                out_ref[at * p.width + j] += sum;
            }
        }
        const double next = at_first && Tn == 0 ? 1.0 : lam[h]; // ADD_FINAL adds the state one step on
        for (size_t e = 0; e < S.size(); ++e) { fin_ref[sb + e] = add_final ? next * S[e] : S[e]; touched[sb + e] = true; }
    }
    // Accumulating (the backward's dq, dv, dk), the kernel adds into out: starting values of the contribution's size.
    // Otherwise out starts as garbage the kernel must overwrite; likewise the final state.
    const std::vector<T> out0 = p.accumulate ? starting_values<T>(rng, out_ref) : vec(c.size(), 1);
    const std::vector<float> fin0 = add_final ? starting_values<float>(rng, fin_ref) : floats_of(init.size(), 1);
    // Rows no sequence uses keep what they held (ADD_FINAL adds nothing to them: a zero contribution, already there).
    for (size_t e = 0; e < init.size(); ++e) {
        if (!touched[e] && !add_final) fin_ref[e] = p.in_place ? init[e] : fin0[e];
    }
    std::vector<T> out = out0;
    std::vector<float> fin = p.in_place ? init : fin0; // in place: one tensor, the initial state read and the final written
    launch<T>(out.data(), p.final_state ? fin.data() : nullptr, p.in_place ? fin.data() : p.state ? init.data() : nullptr, a, b, c, decay, seqs, p.T,
              p.H, p.inner, p.width, p.reverse, p.accumulate, p.mode);
    double max_state = 0;
    for (double e : fin_ref) max_state = std::max(max_state, std::fabs(e));
    printf("%s ", type_name<T>());
    print_sequences(seqs, p.B, p.T);
    printf(" H%d inner%d width%d lambda%.4f reverse%d accumulate%d state%d mode%d%s (max|S| %.3g)\n", p.H, p.inner, p.width, p.lambda, p.reverse,
           p.accumulate, p.state, p.mode, p.in_place ? " in place" : "", max_state);
    auto floats = [](const std::vector<T>& x) { std::vector<float> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    int fails = 0;
    if (seqs.tokens > 0) { // no token: only the state
        fails += p.accumulate ? check_added<T>("out", out, out0, out_ref) : check("out", floats(out), out_ref, tolerance_of<T>()) > tolerance_of<T>();
    }
    if (p.final_state) {
        if (add_final) fails += check_added<float>("state", fin, p.in_place ? init : fin0, fin_ref, tolerance_of<T>());
        else fails += check("state", fin, fin_ref, tolerance_of<T>()) > tolerance_of<T>();
    }
    return fails != 0;
}

// The backward with S0 and G: dq += rec(dO, v, k) from S0ᵀ; dv += rec←(k, q, dO) from G with λ·D_0 added into dS0; dk +=
// rec←(v, dO, q) from Gᵀ (dk, dv ∈ {64, 128}: every sweep on the tensor cores).
template <typename T>
int backward(int B, int Tn, int H, int dk, int dv, double lambda, std::vector<int> lengths = {}, std::vector<int> slots = {}, int rows = 0)
{
    const bool ragged = !lengths.empty();
    const LightningSequences seqs = ragged ? lightning_ragged(lengths, slots, rows) : lightning_dense(B, Tn);
    std::mt19937 rng(B * 13 + Tn * 5 + dk + dv + (ragged ? (int)seqs.tokens : 0));
    std::normal_distribution<float> nd;
    const float s = 1.0f / std::sqrt((float)dk);
    auto vec = [&](size_t n, float scale) { std::vector<T> v(n); for (auto& x : v) x = from_float<T>(nd(rng) * scale); return v; };
    auto floats_of = [&](size_t n, float scale) { std::vector<float> v(n); for (auto& x : v) x = nd(rng) * scale; return v; };
    auto q = vec(seqs.tokens * H * dk, s), k = vec(q.size(), s), v = vec(seqs.tokens * H * dv, 1), dO = vec(v.size(), 1);
    auto s0 = floats_of((size_t)seqs.state_rows * H * dk * dv, 1), g = floats_of(s0.size(), 1);
    std::vector<double> lam(H);
    for (int h = 0; h < H; ++h) lam[h] = std::pow(lambda, 1.0 + h);
    const auto reference = lightning_reference_backward(q, k, v, dO, s0, g, lam, seqs, H, dk, dv);
    const auto &rq = reference.dq, &rk = reference.dk, &rv = reference.dv, &rs = reference.ds0;
    const auto dq0 = starting_values<T>(rng, rq), dk0 = starting_values<T>(rng, rk), dv0 = starting_values<T>(rng, rv);
    const auto ds00 = starting_values<float>(rng, rs);
    auto dq = dq0, dkg = dk0, dvg = dv0;
    auto ds0 = ds00;
    LightningDecay decay{};
    for (int h = 0; h < H; ++h) decay.lambda[h] = lam[h];
    launch<T>(dq.data(), nullptr, s0.data(), dO, v, k, decay, seqs, Tn, H, dv, dk, 0, 1, LIGHTNING_STATE_TRANSPOSED);
    launch<T>(dvg.data(), ds0.data(), g.data(), k, q, dO, decay, seqs, Tn, H, dk, dv, 1, 1, LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_ADD_FINAL);
    launch<T>(dkg.data(), nullptr, g.data(), v, dO, q, decay, seqs, Tn, H, dv, dk, 1, 1, LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_TRANSPOSED);
    printf("%s backward with S0 and G: ", type_name<T>());
    print_sequences(seqs, B, Tn);
    printf(" H%d dk%d dv%d lambda%.4f\n", H, dk, dv, lambda);
    int fails = check_added<T>("dq", dq, dq0, rq) + check_added<T>("dk", dkg, dk0, rk) + check_added<T>("dv", dvg, dv0, rv)
              + check_added<float>("dS0", ds0, ds00, rs, tolerance_of<T>());
    return fails != 0;
}

int main()
{
    int fails = 0;
    auto run_both = [](P p) { return emu_cases([&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_both({1, 1, 1, 64, 64, 0.9, false, false, false});     // one token
    fails += run_both({1, 150, 2, 64, 128, 0.95, false, false, true});  // three blocks (the last partial), initial state, two column slices
    fails += run_both({2, 70, 1, 128, 64, 0.99, true, true, true});     // a reverse, accumulating sweep (the backward's dv, dk)
    fails += run_both({1, 64, 2, 128, 128, 0.999, false, false, false}); // exactly one block
    fails += run_both({1, 100, 2, 64, 64, 0.97, false, true, false, 1, 0, 0, false}); // the backward's dq sweep: forward, accumulating, no states
    // A long sequence with λ near 1 and b, c of one sign: the state passes fp16's 65,504 (its 16-bit copy must not overflow);
    // small a keeps the outputs in range. The final state is fp32 in memory: written and checked.
    fails += run_both({1, 512, 1, 64, 64, 0.9999, false, false, false, 0.01f, 4, 64, true});
    // The state modes: the dq sweep from S0ᵀ; the dv sweep from G (at first) adding λ·D_0 into dS0; the dk sweep from Gᵀ;
    // no token (dS0 += G).
    fails += run_both({1, 100, 2, 64, 128, 0.97, false, true, true, 1, 0, 0, false, LIGHTNING_STATE_TRANSPOSED});
    fails += run_both({1, 130, 2, 128, 64, 0.99, true, true, true, 1, 0, 0, true, LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_ADD_FINAL});
    fails += run_both({1, 70, 1, 64, 128, 0.95, true, true, true, 1, 0, 0, false, LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_TRANSPOSED});
    fails += run_both({1, 0, 1, 64, 64, 0.9, true, true, true, 1, 0, 0, true, LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_ADD_FINAL});
    auto back_both = [](int B, int T, int H, int dk, int dv, double lambda) {
        return emu_cases([&] { return backward<bf16_t>(B, T, H, dk, dv, lambda); }, [&] { return backward<half_t>(B, T, H, dk, dv, lambda); }); };
    fails += back_both(1, 100, 2, 64, 128, 0.97); // two blocks (the last partial), dk ≠ dv
    fails += back_both(1, 70, 1, 128, 64, 0.995);
    // Ragged batches (LightningCuda with RaggedStates): the forward from and into out-of-order state rows of P > S (rows no
    // sequence uses come out untouched), in place and not; a 1-token sequence among longer ones (one past a 64-token block);
    // the backward's three sweeps with dS0 into the slots' rows only.
    fails += run_both({0, 0, 1, 64, 64, 0.97, false, false, true, 1, 0, 0, true, 0, {70, 1, 5}, {3, 0, 4}, 5, true});
    fails += run_both({0, 0, 1, 128, 64, 0.99, false, false, true, 1, 0, 0, true, 0, {1, 2, 65}, {1, 2, 0}, 4});
    fails += run_both({0, 0, 1, 64, 64, 0.99, true, true, true, 1, 0, 0, true, LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_ADD_FINAL, {3, 66, 1}, {2, 0, 4}, 6});
    auto back_ragged = [](int H, int dk, int dv, double lambda, std::vector<int> lengths, std::vector<int> slots, int rows) {
        return emu_cases([&] { return backward<bf16_t>(0, 0, H, dk, dv, lambda, lengths, slots, rows); },
                         [&] { return backward<half_t>(0, 0, H, dk, dv, lambda, lengths, slots, rows); }); };
    fails += back_ragged(1, 64, 64, 0.97, {65, 1, 3}, {4, 0, 2}, 5);
    printf("%d failing\n", fails);
    return fails != 0;
}

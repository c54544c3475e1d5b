// cuda/lightning.cu (the CUDA-core Lightning recurrence lightning_forward, and the decode step lightning_decode_step) in fp32,
// bf16 and fp16 under the emulation of cuda_shim.h, against the recurrence written out in double on the same rounded inputs,
// one token at a time in sweep order: S ← λS + b_tᵀ c_t, out_t (+)= a_t·S (so out_t = λ^(t+1) a_t·S0 + Σ_{s≤t} λ^(t−s)
// (a_t·b_s) c_s), and the final state; the state modes of lightning_state.cuh (S0 read transposed, S0 entering with the first
// token, λ·S added into the final state). Launches as LightningCuda (src/Managed/Attention.Native/Ops/Lightning/LightningCuda.cs):
// Recurrence on (B · heads of a launch, ceil(width / 32)) × 256 threads with its shared-memory formula, heads in launches of
// `group` (64 there: a smaller group here exercises head_offset as 65+ heads would); DecodeStep on the same grid × (32, 8).
// out by design.md's tolerance for T; the states are fp32 whatever T (built in fp32 from the rounded inputs): fp32's
// tolerance. An accumulating sweep's out (the backward's dq, dv, dk) and an added final state (dS0) by check_added from
// starting values of the contribution's size; a non-accumulating one starts from garbage.
// backward(): the three sweeps exactly as LightningCuda.Backward composes them, with S0 and the final state's gradient G,
// against the gradients written out term by term (dq, dk, dv, dS0). Ragged batches (lightning_reference.h's
// LightningSequences): every sequence its own recurrence over its packed rows, from and to its state row.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "lightning.emu.cpp"
#include "lightning_reference.h"
#include <random>
#include <algorithm>

// step: run lightning_decode_step (T must be 1); in_place: its final state written over the initial one; mode:
// LIGHTNING_STATE_* flags. lengths non-empty: a ragged batch (B and T unused; the kernels' seq_offsets over [1, N, …]) with
// state rows slots of `rows` (P); state rows no sequence uses must come out untouched.
struct P {
    int B, T, H, inner, width; double lambda; bool reverse, accumulate, state, final_state; int group; bool step = false, in_place = false; int mode = 0;
    std::vector<int> lengths = {}, slots = {}; int rows = 0;
};

template <typename T>
int run(P p)
{
    const bool ragged = !p.lengths.empty();
    const LightningSequences seqs = ragged ? lightning_ragged(p.lengths, p.slots, p.rows) : lightning_dense(p.B, p.T);
    std::mt19937 rng(p.B * 31 + p.T * 7 + p.inner + p.width + p.H + p.mode + (int)seqs.tokens);
    std::normal_distribution<float> nd;
    const float s = 1.0f / std::sqrt((float)p.inner);
    auto vec = [&](size_t n, float scale) { std::vector<T> v(n); for (auto& x : v) x = from_float<T>(nd(rng) * scale); return v; };
    auto floats_of = [&](size_t n, float scale) { std::vector<float> v(n); for (auto& x : v) x = nd(rng) * scale; return v; };
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    auto floats = [](const std::vector<T>& x) { std::vector<float> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    auto a = vec(seqs.tokens * p.H * p.inner, s), b = vec(a.size(), s), c = vec(seqs.tokens * p.H * p.width, 1);
    const size_t slice = (size_t)p.inner * p.width;
    const auto init = floats_of((size_t)seqs.state_rows * p.H * slice, 1);
    const bool transposed = (p.mode & LIGHTNING_STATE_TRANSPOSED) != 0, at_first = (p.mode & LIGHTNING_STATE_AT_FIRST) != 0;
    const bool add_final = (p.mode & LIGHTNING_STATE_ADD_FINAL) != 0;
    std::vector<double> lam(p.H);
    for (int h = 0; h < p.H; ++h) lam[h] = std::pow(p.lambda, 1.0 + 0.5 * h);
    std::vector<double> out_c(c.size()), fin_ref(init.size());
    std::vector<bool> touched(init.size());
    for (int bb = 0; bb < seqs.count(); ++bb) for (int h = 0; h < p.H; ++h) {
        const size_t sb = ((size_t)seqs.state[bb] * p.H + h) * slice;
        const int Tn = seqs.length[bb];
        std::vector<double> S(slice);
        for (int i = 0; i < p.inner; ++i) for (int j = 0; j < p.width; ++j)
            S[(size_t)i * p.width + j] = p.state ? init[sb + (transposed ? (size_t)j * p.inner + i : (size_t)i * p.width + j)] : 0.0;
        for (int step = 0; step < Tn; ++step) {
            const int t = p.reverse ? Tn - 1 - step : step;
            const size_t at = (seqs.first[bb] + t) * p.H + h;
            const double decay = at_first && step == 0 ? 1.0 : lam[h]; // AT_FIRST: S0 joins the first token's term undecayed
            for (int i = 0; i < p.inner; ++i) for (int j = 0; j < p.width; ++j)
                S[(size_t)i * p.width + j] = decay * S[(size_t)i * p.width + j] + F(b, at * p.inner + i) * F(c, at * p.width + j);
            for (int j = 0; j < p.width; ++j) {
                double sum = 0;
                for (int i = 0; i < p.inner; ++i) sum += F(a, at * p.inner + i) * S[(size_t)i * p.width + j];
                out_c[at * p.width + j] = sum;
            }
        }
        const double next = at_first && Tn == 0 ? 1.0 : lam[h]; // ADD_FINAL adds the state one step on
        for (size_t e = 0; e < S.size(); ++e) { fin_ref[sb + e] = add_final ? next * S[e] : S[e]; touched[sb + e] = true; }
    }
    const std::vector<T> out0 = p.accumulate ? starting_values<T>(rng, out_c) : vec(c.size(), 1);
    // fin: garbage the kernel overwrites, or starting values it adds into.
    const std::vector<float> fin0 = add_final ? starting_values<float>(rng, fin_ref) : floats_of(init.size(), 1);
    // Rows no sequence uses keep what they held (ADD_FINAL adds nothing to them: a zero contribution, already there).
    for (size_t e = 0; e < init.size(); ++e) {
        if (!touched[e] && !add_final) fin_ref[e] = p.in_place ? init[e] : fin0[e];
    }
    std::vector<T> out = out0;
    std::vector<float> fin = fin0, state = init;
    float* final_state = !p.final_state ? nullptr : p.in_place ? state.data() : fin.data();
    const float* initial_state = p.state ? state.data() : nullptr;
    for (int first = 0; first < p.H; first += p.group) {
        const int group = std::min(p.group, p.H - first);
        LightningDecay decay{};
        for (int h = 0; h < group; ++h) decay.lambda[h] = lam[first + h];
        const dim3 grid{(unsigned)(seqs.count() * group), (unsigned)((p.width + 31) / 32)};
        if (p.step) {
            // LightningCuda.DecodeStep: a ragged batch of one-token sequences passes its state rows only.
            emu_launch(grid, dim3{32, LIGHTNING_STEP_WARPS}, [&] {
                lightning_decode_step<T>(out.data(), final_state, initial_state, a.data(), b.data(), c.data(), decay, first, group, p.H, p.inner, p.width,
                                         seqs.device_slots()); });
        } else {
            // LightningCuda.Recurrence passes the token axis's length (N when ragged, unused there).
            const int seq = ragged ? (int)seqs.tokens : p.T;
            emu_launch(grid, dim3{LIGHTNING_THREADS}, [&] {
                lightning_forward<T>(out.data(), final_state, initial_state, a.data(), b.data(), c.data(), decay, first, group, seq, p.H, p.inner,
                                     p.width, p.reverse, p.accumulate, p.mode, seqs.device_offsets(), seqs.device_slots()); });
        }
    }
    printf("%s %s ", type_name<T>(), p.step ? "lightning_decode_step" : "lightning_forward");
    print_sequences(seqs, p.B, p.T);
    printf(" H%d (launches of %d) inner%d width%d lambda%.4f reverse%d accumulate%d state%d final%d mode%d%s\n", p.H, p.group, p.inner, p.width,
           p.lambda, p.reverse, p.accumulate, p.state, p.final_state, p.mode, p.in_place ? " in place" : "");
    int fails = 0;
    if (seqs.tokens > 0) { // no token: only the state
        fails += p.accumulate ? check_added<T>("out", out, out0, out_c) : check("out", floats(out), out_c, tolerance_of<T>()) > tolerance_of<T>();
    }
    if (p.final_state) {
        if (add_final) fails += check_added<float>("state", fin, fin0, fin_ref);
        else fails += check("state", p.in_place ? state : fin, fin_ref, tolerance_of<float>()) > tolerance_of<float>();
    }
    return fails != 0;
}

// The backward with S0 and G: dq += rec(dO, v, k) from S0ᵀ; dv += rec←(k, q, dO) from G with λ·D_0 added into dS0; dk +=
// rec←(v, dO, q) from Gᵀ. with_dv false: the dv sweep runs with a null out, for dS0 alone. lengths non-empty: a ragged
// batch (B and Tn unused) with state rows slots of `rows`, one upload of offsets and slots serving the three sweeps.
template <typename T>
int backward(int B, int Tn, int H, int dk, int dv, double lambda, bool with_dv = true, std::vector<int> lengths = {}, std::vector<int> slots = {}, int rows = 0)
{
    const bool ragged = !lengths.empty();
    const LightningSequences seqs = ragged ? lightning_ragged(lengths, slots, rows) : lightning_dense(B, Tn);
    std::mt19937 rng(B * 13 + Tn * 5 + dk + dv + (ragged ? (int)seqs.tokens : 0));
    std::normal_distribution<float> nd;
    const float s = 1.0f / std::sqrt((float)dk);
    auto vec = [&](size_t n, float scale) { std::vector<T> v(n); for (auto& x : v) x = from_float<T>(nd(rng) * scale); return v; };
    auto floats_of = [&](size_t n, float scale) { std::vector<float> v(n); for (auto& x : v) x = nd(rng) * scale; return v; };
    auto q = vec(seqs.tokens * H * dk, s), k = vec(q.size(), s), v = vec(seqs.tokens * H * dv, 1), dO = vec(v.size(), 1);
    const auto s0 = floats_of((size_t)seqs.state_rows * H * dk * dv, 1), g = floats_of(s0.size(), 1);
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
    auto grid = [&](int width) { return dim3{(unsigned)(seqs.count() * H), (unsigned)((width + 31) / 32)}; };
    const int seq = ragged ? (int)seqs.tokens : Tn;
    const int *offsets = seqs.device_offsets(), *state_rows = seqs.device_slots();
    emu_launch(grid(dk), dim3{LIGHTNING_THREADS}, [&] {
        lightning_forward<T>(dq.data(), nullptr, s0.data(), dO.data(), v.data(), k.data(), decay, 0, H, seq, H, dv, dk, 0, 1, LIGHTNING_STATE_TRANSPOSED,
                             offsets, state_rows); });
    emu_launch(grid(dv), dim3{LIGHTNING_THREADS}, [&] {
        lightning_forward<T>(with_dv ? dvg.data() : nullptr, ds0.data(), g.data(), k.data(), q.data(), dO.data(), decay, 0, H, seq, H, dk, dv, 1, 1,
                             LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_ADD_FINAL, offsets, state_rows); });
    emu_launch(grid(dk), dim3{LIGHTNING_THREADS}, [&] {
        lightning_forward<T>(dkg.data(), nullptr, g.data(), v.data(), dO.data(), q.data(), decay, 0, H, seq, H, dv, dk, 1, 1,
                             LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_TRANSPOSED, offsets, state_rows); });
    printf("%s backward with S0 and G: ", type_name<T>());
    print_sequences(seqs, B, Tn);
    printf(" H%d dk%d dv%d lambda%.4f%s\n", H, dk, dv, lambda, with_dv ? "" : " (no dv)");
    int fails = check_added<T>("dq", dq, dq0, rq) + check_added<T>("dk", dkg, dk0, rk) + check_added<float>("dS0", ds0, ds00, rs);
    if (with_dv) fails += check_added<T>("dv", dvg, dv0, rv);
    else fails += std::memcmp(dvg.data(), dv0.data(), dv0.size() * sizeof(T)) != 0; // dv untouched (not passed)
    return fails != 0;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 8, 8, 0.9, false, false, false, true, 64});          // one token through the chunked kernel
    fails += run_all({2, 45, 3, 20, 40, 0.95, false, false, true, true, 2});        // a partial last chunk, a partial column slice, head groups of 2
    fails += run_all({1, 70, 2, 16, 24, 0.99, true, true, false, false, 64});       // the backward's dv/dk sweep: reverse, accumulating
    fails += run_all({1, 33, 1, 12, 8, 0.8, false, true, false, false, 64});        // the backward's dq sweep: forward, accumulating, 32 + 1 tokens
    fails += run_all({2, 1, 3, 20, 40, 0.9, false, false, true, true, 2, true});    // the decode step: state in, state out, head groups
    fails += run_all({1, 1, 2, 36, 33, 0.97, false, false, true, true, 64, true, true}); // the decode step in place
    fails += run_all({1, 1, 1, 8, 8, 0.9, false, false, false, true, 64, true});    // the decode step from no state
    // The state modes alone: the dq sweep from S0ᵀ; the dv sweep from G (at first) adding λ·D_0 into dS0; the dk sweep from
    // Gᵀ (at first); no token at all (dS0 += G).
    fails += run_all({2, 45, 2, 12, 40, 0.95, false, true, true, false, 64, false, false, LIGHTNING_STATE_TRANSPOSED});
    fails += run_all({1, 70, 3, 20, 24, 0.99, true, true, true, true, 2, false, false, LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_ADD_FINAL});
    fails += run_all({1, 33, 2, 24, 12, 0.9, true, true, true, false, 64, false, false, LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_TRANSPOSED});
    fails += run_all({2, 0, 2, 8, 8, 0.9, true, true, true, true, 64, false, false, LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_ADD_FINAL});
    // Ragged batches: the forward from and into the state rows of out-of-order slots with P > S (rows no sequence uses come out
    // untouched), in place and into a separate tensor, with head groups; a sequence of 1 token among longer ones; the decode step
    // of a serving pool (every sequence one token) in place; the backward's state modes.
    fails += run_all({0, 0, 3, 20, 40, 0.95, false, false, true, true, 2, false, true, 0, {33, 1, 5}, {3, 0, 5}, 6});
    fails += run_all({0, 0, 2, 16, 24, 0.9, false, false, true, true, 64, false, false, 0, {1, 70, 2}, {2, 1, 0}, 4});
    fails += run_all({0, 0, 3, 20, 40, 0.9, false, false, true, true, 2, true, true, 0, {1, 1, 1, 1}, {5, 2, 0, 3}, 7});
    fails += run_all({0, 0, 1, 8, 8, 0.9, false, false, false, true, 64, true, false, 0, {1, 1}, {1, 0}, 2});
    fails += run_all({0, 0, 2, 12, 40, 0.95, false, true, true, false, 64, false, false, LIGHTNING_STATE_TRANSPOSED, {45, 2}, {1, 0}, 3});
    fails += run_all({0, 0, 2, 20, 24, 0.99, true, true, true, true, 64, false, false, LIGHTNING_STATE_AT_FIRST | LIGHTNING_STATE_ADD_FINAL, {3, 1, 34}, {2, 4, 0}, 5});
    auto back_all = [](int B, int T, int H, int dk, int dv, double lambda, bool with_dv) {
        return emu_cases([&] { return backward<float>(B, T, H, dk, dv, lambda, with_dv); }, [&] { return backward<bf16_t>(B, T, H, dk, dv, lambda, with_dv); },
                         [&] { return backward<half_t>(B, T, H, dk, dv, lambda, with_dv); }); };
    fails += back_all(2, 45, 2, 12, 20, 0.95, true);  // two chunks (the last partial), dk ≠ dv
    fails += back_all(1, 70, 1, 40, 8, 0.99, true);   // three chunks, two column slices of dq/dk
    fails += back_all(1, 20, 2, 8, 12, 0.9, false);   // dS0 alone: the dv sweep with a null out
    // Ragged batches [1, N, …] (LightningCuda with RaggedStates): lengths 40, 1, 7 (the first past a chunk) with state rows 4, 0, 2
    // of 5 (out of order, rows 1 and 3 unused: untouched) — the backward's three sweeps, dS0 into the slots' rows only.
    auto back_ragged = [](int H, int dk, int dv, double lambda, bool with_dv, std::vector<int> lengths, std::vector<int> slots, int rows) {
        return emu_cases([&] { return backward<float>(0, 0, H, dk, dv, lambda, with_dv, lengths, slots, rows); },
                         [&] { return backward<bf16_t>(0, 0, H, dk, dv, lambda, with_dv, lengths, slots, rows); },
                         [&] { return backward<half_t>(0, 0, H, dk, dv, lambda, with_dv, lengths, slots, rows); }); };
    fails += back_ragged(2, 12, 20, 0.95, true, {40, 1, 7}, {4, 0, 2}, 5);
    fails += back_ragged(1, 8, 40, 0.9, false, {3, 1}, {1, 0}, 3); // dS0 alone; two column slices
    printf("%d failing\n", fails);
    return fails != 0;
}

// cuda/lightning.cu (the CUDA-core Lightning recurrence lightning_forward, and the decode step lightning_decode_step) in fp32,
// bf16 and fp16 under the emulation of cuda_shim.h, against the recurrence written out in double on the same rounded inputs,
// one token at a time in sweep order: S ← λS + b_tᵀ c_t, out_t (+)= a_t·S (so out_t = λ^(t+1) a_t·S0 + Σ_{s≤t} λ^(t−s)
// (a_t·b_s) c_s), and the final state. Launches as LightningCuda (src/Managed/Attention.Native/Ops/Lightning/LightningCuda.cs):
// Recurrence on (B · heads of a launch, ceil(width / 32)) × 256 threads with its shared-memory formula, heads in launches of
// `group` (64 there: a smaller group here exercises head_offset as 65+ heads would); DecodeStep on the same grid × (32, 8).
// out and the states (stored in T) by design.md's tolerance for T; an accumulating sweep's out (the backward's dq, dv, dk)
// by check_added from starting values of the contribution's size; a non-accumulating one starts from garbage.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "lightning.emu.cpp"
#include <random>
#include <algorithm>

// step: run lightning_decode_step (T must be 1); in_place: its final state written over the initial one.
struct P { int B, T, H, inner, width; double lambda; bool reverse, accumulate, state, final_state; int group; bool step = false, in_place = false; };

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 31 + p.T * 7 + p.inner + p.width + p.H);
    std::normal_distribution<float> nd;
    const float s = 1.0f / std::sqrt((float)p.inner);
    auto vec = [&](size_t n, float scale) { std::vector<T> v(n); for (auto& x : v) x = from_float<T>(nd(rng) * scale); return v; };
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    auto floats = [](const std::vector<T>& x) { std::vector<float> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    auto a = vec((size_t)p.B * p.T * p.H * p.inner, s), b = vec(a.size(), s), c = vec((size_t)p.B * p.T * p.H * p.width, 1);
    const auto init = vec((size_t)p.B * p.H * p.inner * p.width, 1);
    std::vector<double> lam(p.H);
    for (int h = 0; h < p.H; ++h) lam[h] = std::pow(p.lambda, 1.0 + 0.5 * h);
    std::vector<double> out_c(c.size()), fin_ref(init.size());
    for (int bb = 0; bb < p.B; ++bb) for (int h = 0; h < p.H; ++h) {
        const size_t sb = ((size_t)bb * p.H + h) * p.inner * p.width;
        std::vector<double> S((size_t)p.inner * p.width);
        for (size_t e = 0; e < S.size(); ++e) S[e] = p.state ? F(init, sb + e) : 0.0;
        for (int step = 0; step < p.T; ++step) {
            const int t = p.reverse ? p.T - 1 - step : step;
            const size_t at = ((size_t)bb * p.T + t) * p.H + h;
            for (int i = 0; i < p.inner; ++i) for (int j = 0; j < p.width; ++j)
                S[(size_t)i * p.width + j] = lam[h] * S[(size_t)i * p.width + j] + F(b, at * p.inner + i) * F(c, at * p.width + j);
            for (int j = 0; j < p.width; ++j) {
                double sum = 0;
                for (int i = 0; i < p.inner; ++i) sum += F(a, at * p.inner + i) * S[(size_t)i * p.width + j];
                out_c[at * p.width + j] = sum;
            }
        }
        for (size_t e = 0; e < S.size(); ++e) fin_ref[sb + e] = S[e];
    }
    const std::vector<T> out0 = p.accumulate ? starting_values<T>(rng, out_c) : vec(c.size(), 1);
    std::vector<T> out = out0, fin = vec(init.size(), 1), state = init; // fin: garbage the kernel overwrites
    T* final_state = !p.final_state ? nullptr : p.in_place ? state.data() : fin.data();
    const T* initial_state = p.state ? state.data() : nullptr;
    for (int first = 0; first < p.H; first += p.group) {
        const int group = std::min(p.group, p.H - first);
        LightningDecay decay{};
        for (int h = 0; h < group; ++h) decay.lambda[h] = lam[first + h];
        const dim3 grid{(unsigned)(p.B * group), (unsigned)((p.width + 31) / 32)};
        if (p.step) {
            emu_launch(grid, dim3{32, LIGHTNING_STEP_WARPS}, [&] {
                lightning_decode_step<T>(out.data(), final_state, initial_state, a.data(), b.data(), c.data(), decay, first, group, p.H, p.inner, p.width); });
        } else {
            emu_launch(grid, dim3{LIGHTNING_THREADS}, [&] {
                lightning_forward<T>(out.data(), final_state, initial_state, a.data(), b.data(), c.data(), decay, first, group, p.T, p.H, p.inner,
                                     p.width, p.reverse, p.accumulate); });
        }
    }
    printf("%s %s B%d T%d H%d (launches of %d) inner%d width%d lambda%.4f reverse%d accumulate%d state%d final%d%s\n", type_name<T>(),
           p.step ? "lightning_decode_step" : "lightning_forward", p.B, p.T, p.H, p.group, p.inner, p.width, p.lambda, p.reverse, p.accumulate,
           p.state, p.final_state, p.in_place ? " in place" : "");
    int fails = p.accumulate ? check_added<T>("out", out, out0, out_c) : check("out", floats(out), out_c, tolerance_of<T>()) > tolerance_of<T>();
    if (p.final_state) fails += check("state", floats(p.in_place ? state : fin), fin_ref, tolerance_of<T>()) > tolerance_of<T>();
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
    printf("%d failing\n", fails);
    return fails != 0;
}

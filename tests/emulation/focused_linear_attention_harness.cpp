// cuda/focused_linear_attention.cu (FLatten's non-causal linear attention: the two-stage token sums, the forward, and the
// backward's query and key/value kernels) in fp32, bf16 and fp16 under the emulation of cuda_shim.h, against the math of
// the kernel's comment (FocusedLinearAttentionCpu) in double on the same rounded inputs, per (b, h), t over the Tq query
// tokens and s over the Tk key tokens: m = mean_s k_s, kv = kᵀv/Tk, z_t = 1/(q_t·m + 1e-6), o_t = z_t q_t kv;
// c_t = kv·dO_t, e_t = −z_t²(q_t·c_t), dq_t += z_t c_t + e_t m, dkv = Σ_t z_t q_tᵀdO_t, dm = Σ_t e_t q_t,
// dk_s += (dkv v_s + dm)/Tk, dv_s += k_s dkv/Tk. Launches as
// FocusedLinearAttentionCuda (src/Managed/Attention.Native/Ops/FocusedLinearAttention/FocusedLinearAttentionCuda.cs):
// chunks of max(64, ceil(n/64)) tokens for a sum over n tokens (Tk for k, v; Tq for q, dO); the partials, the combine,
// the forward and key/value kernels on Elementwise.Grid
// (256 threads; `cap` blocks at most, 32 per multiprocessor there: a small cap makes the grid-stride loops turn as a large
// problem would), the query kernel one warp per (token, head), 8 warps per block. o by design.md's tolerance for T; the
// fp32 statistics (kv | m), z, e and the backward statistics (dkv | dm) at 1e-4; dq, dk, dv (added into) by check_added.
// Tk = 0 in a case means Tk = Tq (the 1-D layer's form).
#include "cuda_shim.h"
#include "bf16_check.h"
#include "focused_linear_attention.emu.cpp"
#include <random>
#include <algorithm>

struct P { int B, T, H, d, dv; long long cap; int Tk = 0; };

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 31 + p.T * 7 + p.H * 3 + p.d + p.dv + p.Tk * 11);
    std::normal_distribution<float> nd;
    // q and k as the focusing map leaves them: positive, so q·m stays away from 0.
    auto positive = [&](size_t n) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(0.1f + std::fabs(nd(rng))); return x; };
    auto normal = [&](size_t n) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng)); return x; };
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    auto floats = [](const std::vector<T>& x) { std::vector<float> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    const int B = p.B, Tn = p.T, Tk = p.Tk != 0 ? p.Tk : p.T, H = p.H, d = p.d, dv = p.dv, W = dv + 1;
    const long long tokens = (long long)B * Tn * H, key_tokens = (long long)B * Tk * H;
    auto q = positive(tokens * d), k = positive(key_tokens * d), v = normal(key_tokens * dv), dO = normal(tokens * dv);
    const size_t per_chunk = (size_t)B * H * d * W;
    std::vector<double> stats_ref(per_chunk), grads_ref(per_chunk), o_ref(tokens * dv), z_ref(tokens), e_ref(tokens);
    std::vector<double> dq_c(q.size()), dk_c(k.size()), dv_c(v.size());
    for (int b = 0; b < B; ++b) for (int h = 0; h < H; ++h) {
        double* st = &stats_ref[((size_t)b * H + h) * d * W];
        double* gr = &grads_ref[((size_t)b * H + h) * d * W];
        auto tok = [&](int t) { return ((size_t)b * Tn + t) * H + h; };
        auto key = [&](int s) { return ((size_t)b * Tk + s) * H + h; };
        for (int s = 0; s < Tk; ++s) for (int i = 0; i < d; ++i) {
            st[i * W + dv] += F(k, key(s) * d + i) / Tk;
            for (int j = 0; j < dv; ++j) st[i * W + j] += F(k, key(s) * d + i) * F(v, key(s) * dv + j) / Tk;
        }
        for (int t = 0; t < Tn; ++t) {
            const size_t at = tok(t);
            double qm = 0, qc = 0;
            std::vector<double> c(d, 0.0);
            for (int i = 0; i < d; ++i) {
                qm += F(q, at * d + i) * st[i * W + dv];
                for (int j = 0; j < dv; ++j) c[i] += st[i * W + j] * F(dO, at * dv + j);
                qc += F(q, at * d + i) * c[i];
            }
            const double z = 1 / (qm + 1e-6), e = -z * z * qc;
            z_ref[at] = z; e_ref[at] = e;
            for (int j = 0; j < dv; ++j) {
                double acc = 0;
                for (int i = 0; i < d; ++i) acc += F(q, at * d + i) * st[i * W + j];
                o_ref[at * dv + j] = z * acc;
            }
            for (int i = 0; i < d; ++i) {
                dq_c[at * d + i] = z * c[i] + e * st[i * W + dv];
                gr[i * W + dv] += e * F(q, at * d + i);
                for (int j = 0; j < dv; ++j) gr[i * W + j] += z * F(q, at * d + i) * F(dO, at * dv + j);
            }
        }
        for (int s = 0; s < Tk; ++s) {
            const size_t at = key(s);
            for (int i = 0; i < d; ++i) {
                double sum = gr[i * W + dv];
                for (int j = 0; j < dv; ++j) sum += gr[i * W + j] * F(v, at * dv + j);
                dk_c[at * d + i] = sum / Tk;
            }
            for (int j = 0; j < dv; ++j) {
                double sum = 0;
                for (int i = 0; i < d; ++i) sum += F(k, at * d + i) * gr[i * W + j];
                dv_c[at * dv + j] = sum / Tk;
            }
        }
    }
    auto tokens_per_chunk = [](int n) { return std::max(64, (n + 63) / 64); };
    auto chunks = [&](int n) { return (n + tokens_per_chunk(n) - 1) / tokens_per_chunk(n); };
    auto grid = [&](long long n) { return dim3{(unsigned)std::clamp((n + 255) / 256, 1LL, p.cap)}; };
    // One buffer for both sums, as the launcher's scratch: sized for the one with more chunks.
    std::vector<float> partial(std::max(chunks(Tn), chunks(Tk)) * per_chunk);
    // FocusedLinearAttentionCuda.Sums: partials over chunks of the n tokens of a and b, then the chunks in order.
    auto sums = [&](std::vector<float>& out, const std::vector<T>& a, const std::vector<T>& bb, const float* w, const float* w2, int n, float scale) {
        const int c = chunks(n);
        emu_launch(grid((long long)(c * per_chunk)), dim3{256}, [&] {
            focused_linear_attention_token_partials<T>(partial.data(), a.data(), bb.data(), w, w2, B, n, H, d, dv, tokens_per_chunk(n), c); });
        emu_launch(grid((long long)per_chunk), dim3{256}, [&] {
            focused_linear_attention_token_combine<T>(out.data(), partial.data(), (index_t)per_chunk, c, scale); });
    };
    std::vector<float> stats(per_chunk), grads(per_chunk), z(tokens), e(tokens);
    std::vector<T> o = normal(tokens * dv); // garbage the forward overwrites
    sums(stats, k, v, nullptr, nullptr, Tk, 1.0f / Tk);
    emu_launch(grid(tokens * dv), dim3{256}, [&] { focused_linear_attention_forward<T>(o.data(), q.data(), stats.data(), B, Tn, Tk, H, d, dv); });
    const auto dq0 = starting_values<T>(rng, dq_c), dk0 = starting_values<T>(rng, dk_c), dv0 = starting_values<T>(rng, dv_c);
    std::vector<T> dq = dq0, dk = dk0, dvg = dv0;
    emu_launch(dim3{(unsigned)((tokens + 7) / 8)}, dim3{256}, [&] {
        focused_linear_attention_backward_query<T>(dq.data(), z.data(), e.data(), q.data(), dO.data(), stats.data(), B, Tn, Tk, H, d, dv); });
    sums(grads, q, dO, z.data(), e.data(), Tn, 1.0f);
    emu_launch(grid(key_tokens * (d + dv)), dim3{256}, [&] {
        focused_linear_attention_backward_key_value<T>(dk.data(), dvg.data(), k.data(), v.data(), grads.data(), B, Tn, Tk, H, d, dv); });
    printf("%s B%d Tq%d Tk%d H%d d%d dv%d chunks q%d k%d (of %d, %d tokens) grid cap %lld\n", type_name<T>(), B, Tn, Tk, H, d, dv,
           chunks(Tn), chunks(Tk), tokens_per_chunk(Tn), tokens_per_chunk(Tk), p.cap);
    int fails = check("stats", stats, stats_ref, 1e-4) > 1e-4; // fp32 whatever T
    fails += check("o", floats(o), o_ref, tolerance_of<T>()) > tolerance_of<T>();
    fails += check("z", z, z_ref, 1e-4) > 1e-4;
    fails += check("e", e, e_ref, 1e-4) > 1e-4;
    fails += check("grads", grads, grads_ref, 1e-4) > 1e-4;
    if (Tk > 1) {
        fails += check_added<T>("dq", dq, dq0, dq_c);
        fails += check_added<T>("dk", dk, dk0, dk_c);
    } else { // one key: o_t = v (q_t·k)/(q_t·k + 1e-6) ≈ v, so dq and dk are ~1e-6 by the math and must stay as they were
        auto doubles = [](const std::vector<T>& x) { std::vector<double> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
        fails += check("dq=dq0", floats(dq), doubles(dq0), tolerance_of<T>()) > tolerance_of<T>();
        fails += check("dk=dk0", floats(dk), doubles(dk0), tolerance_of<T>()) > tolerance_of<T>();
    }
    fails += check_added<T>("dv", dvg, dv0, dv_c);
    return fails != 0;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 1, 1, 32 * 132});     // one token of width 1
    fails += run_all({1, 2, 1, 2, 1, 32 * 132});     // two tokens (with width 1, o_t ≈ kv/m would not depend on q_t: dq ≈ 0)
    fails += run_all({2, 13, 3, 20, 9, 32 * 132});   // ragged sizes, one chunk, a warp's lanes past d
    fails += run_all({1, 150, 2, 40, 12, 32 * 132}); // three chunks of 64 tokens, the last 22; d past one warp
    fails += run_all({1, 70, 1, 8, 8, 3});           // two chunks; a 3-block grid: every grid-stride loop turns
    // Keys and values on another token count than the queries (flatten-pvt's spatial reduction, and the reverse).
    fails += run_all({2, 12, 3, 20, 9, 32 * 132, 3});   // Tk < Tq, one chunk each
    fails += run_all({2, 5, 1, 4, 3, 32 * 132, 1});     // one key for five queries (dq, dk ≈ 0 by the math)
    fails += run_all({1, 9, 2, 40, 12, 32 * 132, 150}); // Tk > Tq: three key chunks, one query chunk; d past one warp
    fails += run_all({1, 150, 2, 8, 8, 3, 70});         // Tq in three chunks, Tk in two; a 3-block grid
    printf("%d failing\n", fails);
    return fails != 0;
}

// cuda/attention_mma.cu (bf16 and fp16: forward, dq, dk/dv) under the emulation of cuda_shim.h + mma_shim.h against a
// double-precision reference computed on the same 16-bit-rounded inputs. The backward takes the kernel's own lse and a
// delta = rowsum(dO ∘ O) from the reference O, as attention_backward_delta would give it; gradients are added into
// nonzero starting values. Tolerance: design.md's 16-bit one, 2e-2·(1 + max|ref|); a misplaced fragment
// gives errors of order 1.
#include "cuda_shim.h"
#include "mma_shim.h"
#include "bf16_check.h"
#include "attention_mma.emu.cpp"
#include <random>
#include <algorithm>

struct P { int B, Tq, H, G, D, Tk, L; bool causal; int Dv = 0; int nan_row = -1; }; // Dv 0: the same as D; nan_row: a NaN in q's row (0, nan_row, 0)

template <typename T, int D>
static void launch_backward_narrow(std::vector<T>& dq, std::vector<T>& dk, std::vector<T>& dv, const std::vector<T>& q,
                            const std::vector<T>& k, const std::vector<T>& v, const std::vector<T>& dO,
                            const std::vector<float>& lse, const std::vector<float>& delta, AttentionShape s)
{
    emu_launch(dim3{(unsigned)((s.tq + MMA_BQ - 1) / MMA_BQ), (unsigned)s.heads, (unsigned)s.batch}, dim3{MMA_THREADS}, [&] {
        attention_backward_dq_mma<T, D>(dq.data(), q.data(), k.data(), v.data(), dO.data(), lse.data(), delta.data(), s); });
    emu_launch(dim3{(unsigned)((s.length + MMA_BK - 1) / MMA_BK), (unsigned)s.kv_heads, (unsigned)s.batch}, dim3{MMA_THREADS}, [&] {
        attention_backward_dkdv_mma<T, D>(dk.data(), dv.data(), q.data(), k.data(), v.data(), dO.data(), lse.data(), delta.data(), s); });
}

// (192, 128) and (256, 128): the 8-warp kernels.
template <typename T, int DQK, int DV>
static void launch_backward_wide(std::vector<T>& dq, std::vector<T>& dk, std::vector<T>& dv, const std::vector<T>& q,
                                 const std::vector<T>& k, const std::vector<T>& v, const std::vector<T>& dO,
                                 const std::vector<float>& lse, const std::vector<float>& delta, AttentionShape s)
{
    emu_launch(dim3{(unsigned)((s.tq + MMA_BQ - 1) / MMA_BQ), (unsigned)s.heads, (unsigned)s.batch}, dim3{MMA_WIDE_THREADS}, [&] {
        attention_backward_dq_wide<T, DQK, DV>(dq.data(), q.data(), k.data(), v.data(), dO.data(), lse.data(), delta.data(), s); });
    emu_launch(dim3{(unsigned)((s.length + MMA_BK - 1) / MMA_BK), (unsigned)s.kv_heads, (unsigned)s.batch}, dim3{MMA_WIDE_THREADS}, [&] {
        attention_backward_dkdv_wide<T, DQK, DV>(dk.data(), dv.data(), q.data(), k.data(), v.data(), dO.data(), lse.data(), delta.data(), s); });
}

template <typename T, int DQK, int DV>
static void launch(std::vector<T>& o, std::vector<float>& lse, const std::vector<T>& q, const std::vector<T>& k,
                   const std::vector<T>& v, AttentionShape s)
{
    emu_launch(dim3{(unsigned)((s.tq + MMA_BQ - 1) / MMA_BQ), (unsigned)s.heads, (unsigned)s.batch}, dim3{MMA_THREADS}, [&] {
        attention_forward_mma<T, DQK, DV>(o.data(), lse.data(), q.data(), k.data(), v.data(), s); });
}

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 131 + p.Tq * 7 + p.L + p.D);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n) { std::vector<T> v(n); for (auto& x : v) x = from_float<T>(nd(rng)); return v; };
    int H = p.H, G = p.G, D = p.D, Dv = p.Dv ? p.Dv : p.D, group = H / G;
    auto q = vec((size_t)p.B * p.Tq * H * D), k = vec((size_t)p.B * p.Tk * G * D), v = vec((size_t)p.B * p.Tk * G * Dv);
    // Cache rows at or past L hold garbage that must never count.
    for (int b = 0; b < p.B; ++b) for (int j = p.L; j < p.Tk; ++j) {
        for (int c = 0; c < G * D; ++c) k[((size_t)b * p.Tk + j) * G * D + c] = from_float<T>(1000);
        for (int c = 0; c < G * Dv; ++c) v[((size_t)b * p.Tk + j) * G * Dv + c] = from_float<T>(1000);
    }
    if (p.nan_row >= 0) q[(size_t)p.nan_row * H * D] = from_float<T>(NAN); // the reference's row turns NaN too, and only it
    float scale = 1.0f / std::sqrt((float)D);
    auto dO = vec((size_t)p.B * p.Tq * H * Dv);
    auto dq = vec(q.size()), dk = vec(k.size()), dv = vec(v.size());
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    std::vector<double> o_ref((size_t)p.B * p.Tq * H * Dv), lse_ref((size_t)p.B * H * p.Tq), delta_ref(lse_ref.size());
    std::vector<double> dq_ref(dq.size()), dk_ref(dk.size()), dv_ref(dv.size());
    for (size_t i = 0; i < dq.size(); ++i) dq_ref[i] = F(dq, i);
    for (size_t i = 0; i < dk.size(); ++i) dk_ref[i] = F(dk, i);
    for (size_t i = 0; i < dv.size(); ++i) dv_ref[i] = F(dv, i);
    for (int b = 0; b < p.B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < p.Tq; ++i) {
        int g = h / group, vis = p.causal ? std::min(p.L, p.L - p.Tq + i + 1) : p.L;
        size_t qi = (((size_t)b * p.Tq + i) * H + h) * D, oi = (((size_t)b * p.Tq + i) * H + h) * Dv;
        auto kj = [&](int j) { return (((size_t)b * p.Tk + j) * G + g) * D; };
        auto vj = [&](int j) { return (((size_t)b * p.Tk + j) * G + g) * Dv; };
        std::vector<double> s(vis);
        double m = -1e300, sum = 0;
        for (int j = 0; j < vis; ++j) {
            double d = 0;
            for (int c = 0; c < D; ++c) d += F(q, qi + c) * F(k, kj(j) + c);
            s[j] = d * scale; m = std::max(m, s[j]);
        }
        for (int j = 0; j < vis; ++j) { s[j] = std::exp(s[j] - m); sum += s[j]; }
        lse_ref[((size_t)b * H + h) * p.Tq + i] = m + std::log(sum);
        for (int j = 0; j < vis; ++j) s[j] /= sum;
        for (int j = 0; j < vis; ++j) for (int c = 0; c < Dv; ++c) o_ref[oi + c] += s[j] * F(v, vj(j) + c);
        double delta = 0;
        for (int c = 0; c < Dv; ++c) delta += o_ref[oi + c] * F(dO, oi + c);
        delta_ref[((size_t)b * H + h) * p.Tq + i] = delta;
        for (int j = 0; j < vis; ++j) {
            double dp = 0;
            for (int c = 0; c < Dv; ++c) dp += F(dO, oi + c) * F(v, vj(j) + c);
            double ds = s[j] * (dp - delta);
            for (int c = 0; c < D; ++c) {
                dq_ref[qi + c] += scale * ds * F(k, kj(j) + c);
                dk_ref[kj(j) + c] += scale * ds * F(q, qi + c);
            }
            for (int c = 0; c < Dv; ++c) dv_ref[vj(j) + c] += s[j] * F(dO, oi + c);
        }
    }
    AttentionShape sh{p.B, p.Tq, H, D, p.Tk, G, Dv, p.L, scale, p.causal ? 1 : 0};
    std::vector<T> o(o_ref.size());
    std::vector<float> lse(lse_ref.size());
    if (D == 64) launch<T, 64, 64>(o, lse, q, k, v, sh);
    else if (D == 128) launch<T, 128, 128>(o, lse, q, k, v, sh);
    else if (D == 192) launch<T, 192, 128>(o, lse, q, k, v, sh);
    else launch<T, 256, 128>(o, lse, q, k, v, sh);
    std::vector<float> of(o.size());
    for (size_t i = 0; i < o.size(); ++i) of[i] = to_float(o[i]);
    printf("%s B%d Tq%d H%d G%d D%d Dv%d Tk%d L%d causal%d%s\n", type_name<T>(), p.B, p.Tq, H, G, D, Dv, p.Tk, p.L, p.causal,
           p.nan_row >= 0 ? " NaN in one query row" : "");
    double worst = std::max(check("o", of, o_ref), check("lse", lse, lse_ref));
    if (p.nan_row >= 0) return worst <= 2e-2 ? 0 : 1; // the backward sums over rows: a NaN row reaches every dk, dv
    std::vector<float> delta(delta_ref.begin(), delta_ref.end());
    if (D == 64) launch_backward_narrow<T, 64>(dq, dk, dv, q, k, v, dO, lse, delta, sh);
    else if (D == 128) launch_backward_narrow<T, 128>(dq, dk, dv, q, k, v, dO, lse, delta, sh);
    else if (D == 192) launch_backward_wide<T, 192, 128>(dq, dk, dv, q, k, v, dO, lse, delta, sh);
    else launch_backward_wide<T, 256, 128>(dq, dk, dv, q, k, v, dO, lse, delta, sh);
    auto floats = [](const std::vector<T>& x) { std::vector<float> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    worst = std::max(worst, check("dq", floats(dq), dq_ref));
    worst = std::max(worst, check("dk", floats(dk), dk_ref));
    worst = std::max(worst, check("dv", floats(dv), dv_ref));
    return worst <= 2e-2 ? 0 : 1;
}

int main()
{
    int fails = check_conversions();
    auto run_both = [](P p) { return emu_cases([&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_both({1, 1, 1, 1, 64, 1, 1, false});        // one row, one key
    fails += run_both({2, 7, 4, 2, 64, 7, 7, true});          // partial tiles, GQA
    fails += run_both({1, 130, 2, 1, 128, 130, 130, true});   // three query tiles, three key tiles, causal skipping
    fails += run_both({1, 100, 2, 2, 64, 100, 100, false});   // non-causal, ragged last tile
    fails += run_both({1, 70, 2, 1, 128, 300, 260, true});    // a prefill chunk against a longer cache with garbage past L
    fails += run_both({1, 3, 8, 2, 64, 300, 200, false});     // few rows, many keys, KeyLength
    fails += run_both({1, 100, 2, 2, 192, 100, 100, true, 128});  // MLA widths, causal, two key tiles
    fails += run_both({1, 70, 2, 1, 256, 90, 90, false, 128});    // SAS widths, Tq ≠ Tk
    fails += run_both({1, 40, 4, 2, 256, 150, 130, true, 128});   // SAS widths, GQA, a chunk against a cache with garbage past L
    fails += run_both({1, 40, 2, 1, 64, 40, 40, true, 0, 17}); // NaN in one query row: NaN in exactly that output row
    printf("%d failing\n", fails);
    return fails;
}

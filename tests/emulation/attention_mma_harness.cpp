// cuda/attention_mma.cu (bf16 and fp16: forward, dq, dk/dv) under the emulation of cuda_shim.h + mma_shim.h against a
// double-precision reference computed on the same 16-bit-rounded inputs. The backward takes the kernel's own lse and a
// delta = rowsum(dO ∘ O) over the kernel's O as stored in T, as attention_backward_delta would give it. o by design.md's
// 16-bit tolerance, lse (fp32) at fp32's; the gradients by check_added (the reference contribution first, starting values of
// its size, then what the kernel added against it); a misplaced fragment gives errors of order 1. Ragged batches
// (ragged_attention.h) run through the same launches with the ragged shape: grids over the longest sequence's tiles and the
// sequences, as the C# launcher plans them. Strided cases (strided_layout.h) hand the kernels q, k, v, o, dO and the
// gradients in other row layouts (head-major views, gaps).
#include "cuda_shim.h"
#include "mma_shim.h"
#include "bf16_check.h"
#include "attention_mma.emu.cpp"
#include "ragged_attention.h"
#include "strided_layout.h"
#include <random>
#include <algorithm>

// Dv 0: the same as D; nan_row: a NaN in q's row (0, nan_row, 0); rows, mixed: the tensors' row layouts (strided_layout.h).
struct P { int B, Tq, H, G, D, Tk, L; bool causal; int Dv = 0; int nan_row = -1; Rows rows = Rows::contiguous; bool mixed = false; };

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
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    auto qrow = [&](int b, int i, int h) { return ((size_t)b * p.Tq + i) * H + h; };
    auto key = [&](int b, int j, int g) { return ((size_t)b * p.Tk + j) * G + g; };
    // P of row (b, i, h) in double.
    auto probabilities = [&](int b, int i, int h, double* lse_out) {
        const int g = h / group, vis = p.causal ? std::min(p.L, p.L - p.Tq + i + 1) : p.L;
        std::vector<double> s(vis);
        double m = -1e300, sum = 0;
        for (int j = 0; j < vis; ++j) {
            double d = 0;
            for (int c = 0; c < D; ++c) d += F(q, qrow(b, i, h) * D + c) * F(k, key(b, j, g) * D + c);
            s[j] = d * scale; m = std::max(m, s[j]);
        }
        for (int j = 0; j < vis; ++j) { s[j] = std::exp(s[j] - m); sum += s[j]; }
        for (int j = 0; j < vis; ++j) s[j] /= sum;
        if (lse_out) *lse_out = m + std::log(sum);
        return s;
    };
    std::vector<double> o_ref((size_t)p.B * p.Tq * H * Dv), lse_ref((size_t)p.B * H * p.Tq);
    for (int b = 0; b < p.B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < p.Tq; ++i) {
        const auto pr = probabilities(b, i, h, &lse_ref[((size_t)b * H + h) * p.Tq + i]);
        for (size_t j = 0; j < pr.size(); ++j) for (int c = 0; c < Dv; ++c) o_ref[qrow(b, i, h) * Dv + c] += pr[j] * F(v, key(b, (int)j, h / group) * Dv + c);
    }
    AttentionShape sh{p.B, p.Tq, H, D, p.Tk, G, Dv, p.L, scale, p.causal ? 1 : 0};
    // The kernels see every tensor in its layout; the checks read them back contiguous.
    const AttentionLayouts layout = attention_layouts(p.rows, p.mixed, p.B, p.Tq, p.Tk, H, G, D, Dv);
    sh.strides = layout.strides();
    const auto qs = layout.q.store(q), ks = layout.k.store(k), vs = layout.v.store(v), dOs = layout.d_o.store(dO);
    std::vector<T> os = layout.o.store(std::vector<T>(o_ref.size()));
    std::vector<float> lse(lse_ref.size());
    if (D == 64) launch<T, 64, 64>(os, lse, qs, ks, vs, sh);
    else if (D == 128) launch<T, 128, 128>(os, lse, qs, ks, vs, sh);
    else if (D == 192) launch<T, 192, 128>(os, lse, qs, ks, vs, sh);
    else launch<T, 256, 128>(os, lse, qs, ks, vs, sh);
    auto floats = [](const std::vector<T>& x) { std::vector<float> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    const bool strided = p.mixed || p.rows != Rows::contiguous;
    printf("%s B%d Tq%d H%d G%d D%d Dv%d Tk%d L%d causal%d%s%s%s\n", type_name<T>(), p.B, p.Tq, H, G, D, Dv, p.Tk, p.L, p.causal,
           p.nan_row >= 0 ? " NaN in one query row" : "", strided ? " rows " : "", strided ? layout.name() : "");
    const std::vector<T> o = layout.o.load(os);
    int fails = layout.o.gaps_kept("o", os);
    fails += check("o", floats(o), o_ref, tolerance_of<T>()) > tolerance_of<T>();
    fails += check("lse", lse, lse_ref, 1e-4) > 1e-4; // fp32 whatever T
    if (p.nan_row >= 0) return fails != 0; // the backward sums over rows: a NaN row reaches every dk, dv
    // Backward reference contributions, with delta = rowsum(dO ∘ O) over the kernel's O as stored in T (what
    // attention_backward_delta reads), given to the kernels in fp32 as that kernel would give it.
    std::vector<double> delta_ref(lse_ref.size()), dq_c(q.size()), dk_c(k.size()), dv_c(v.size());
    for (int b = 0; b < p.B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < p.Tq; ++i) {
        const int g = h / group;
        const auto pr = probabilities(b, i, h, nullptr);
        const size_t qi = qrow(b, i, h) * D, oi = qrow(b, i, h) * Dv;
        double delta = 0;
        for (int c = 0; c < Dv; ++c) delta += F(o, oi + c) * F(dO, oi + c);
        delta_ref[((size_t)b * H + h) * p.Tq + i] = (float)delta;
        for (size_t j = 0; j < pr.size(); ++j) {
            const size_t kk = key(b, (int)j, g);
            double dp = 0;
            for (int c = 0; c < Dv; ++c) dp += F(dO, oi + c) * F(v, kk * Dv + c);
            const double ds = pr[j] * (dp - (double)(float)delta);
            for (int c = 0; c < D; ++c) {
                dq_c[qi + c] += scale * ds * F(k, kk * D + c);
                dk_c[kk * D + c] += scale * ds * F(q, qi + c);
            }
            for (int c = 0; c < Dv; ++c) dv_c[kk * Dv + c] += pr[j] * F(dO, oi + c);
        }
    }
    // The kernels add into the gradients: starting values of each contribution's own size.
    const auto dq0 = starting_values<T>(rng, dq_c), dk0 = starting_values<T>(rng, dk_c), dv0 = starting_values<T>(rng, dv_c);
    std::vector<T> dqs = layout.dq.store(dq0), dks = layout.dk.store(dk0), dvs = layout.dv.store(dv0);
    std::vector<float> delta(delta_ref.begin(), delta_ref.end());
    if (D == 64) launch_backward_narrow<T, 64>(dqs, dks, dvs, qs, ks, vs, dOs, lse, delta, sh);
    else if (D == 128) launch_backward_narrow<T, 128>(dqs, dks, dvs, qs, ks, vs, dOs, lse, delta, sh);
    else if (D == 192) launch_backward_wide<T, 192, 128>(dqs, dks, dvs, qs, ks, vs, dOs, lse, delta, sh);
    else launch_backward_wide<T, 256, 128>(dqs, dks, dvs, qs, ks, vs, dOs, lse, delta, sh);
    const std::vector<T> dq = layout.dq.load(dqs), dk = layout.dk.load(dks), dv = layout.dv.load(dvs);
    fails += layout.dq.gaps_kept("dq", dqs) + layout.dk.gaps_kept("dk", dks) + layout.dv.gaps_kept("dv", dvs);
    if (p.L > 1) {
        fails += check_added<T>("dq", dq, dq0, dq_c);
        fails += check_added<T>("dk", dk, dk0, dk_c);
    } else { // one key: P = 1, so dS = dP − delta = 0; dq and dk must stay as they were
        auto doubles = [](const std::vector<T>& x) { std::vector<double> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
        fails += check("dq=dq0", floats(dq), doubles(dq0), tolerance_of<T>()) > tolerance_of<T>();
        fails += check("dk=dk0", floats(dk), doubles(dk0), tolerance_of<T>()) > tolerance_of<T>();
    }
    fails += check_added<T>("dv", dv, dv0, dv_c);
    return fails != 0;
}

// Forward, dq and dk/dv of a ragged batch against the per-sequence reference (delta over the kernel's O, in fp32).
template <typename T>
int run_ragged(const RaggedCase& rc)
{
    RaggedAttention<T> r(rc, 1201u + (unsigned)rc.lq.size() * 17u + (unsigned)rc.dqk);
    const AttentionShape sh = r.shape();
    std::vector<T> o(r.o_ref.size());
    std::vector<float> lse(r.lse_ref.size());
    if (rc.dqk == 64) launch<T, 64, 64>(o, lse, r.q, r.keys(), r.values(), sh);
    else launch<T, 192, 128>(o, lse, r.q, r.keys(), r.values(), sh);
    r.print(type_name<T>(), "");
    int fails = 0;
    fails += check("o", r.as_floats(o), r.o_ref, tolerance_of<T>()) > tolerance_of<T>();
    fails += check("lse", lse, r.lse_ref, 1e-4) > 1e-4; // fp32 whatever T
    if (r.is_paged()) {
        return fails != 0; // paged keys are inference only
    }
    std::vector<double> delta_ref, dq_c, dk_c, dv_c;
    r.backward(o, true, delta_ref, dq_c, dk_c, dv_c);
    std::mt19937 rng(r.nq * 7 + r.nk);
    const auto dq0 = starting_values<T>(rng, dq_c), dk0 = starting_values<T>(rng, dk_c), dv0 = starting_values<T>(rng, dv_c);
    std::vector<T> dq = dq0, dk = dk0, dv = dv0;
    std::vector<float> delta(delta_ref.begin(), delta_ref.end());
    if (rc.dqk == 64) launch_backward_narrow<T, 64>(dq, dk, dv, r.q, r.k, r.v, r.dO, lse, delta, sh);
    else launch_backward_wide<T, 192, 128>(dq, dk, dv, r.q, r.k, r.v, r.dO, lse, delta, sh);
    fails += check_added<T>("dq", dq, dq0, dq_c);
    fails += check_added<T>("dk", dk, dk0, dk_c);
    fails += check_added<T>("dv", dv, dv0, dv_c);
    return fails != 0;
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
    // Strided views: [B, H, T, d] memory seen as [B, T, H, d] (TorchSharp's layout) for every tensor: batch 2, GQA, two key
    // tiles; MLA's widths (the 8-warp backward).
    fails += run_both({2, 70, 4, 2, 64, 90, 80, true, 0, -1, Rows::head_major});
    fails += run_both({1, 70, 2, 1, 192, 90, 90, true, 128, -1, Rows::head_major});
    // Each tensor its own layout, gaps between rows (NaN, left untouched): d 128 (the 4-warp kernels), SAS's widths.
    fails += run_both({2, 40, 2, 2, 128, 70, 60, true, 0, -1, Rows::contiguous, true});
    fails += run_both({1, 40, 4, 2, 256, 100, 100, false, 128, -1, Rows::contiguous, true});
    // Ragged batches: a 1-token sequence beside one of 70 (two query and key tiles), two query heads on one KV head, causal.
    auto ragged_both = [](RaggedCase c) { return emu_cases([&] { return run_ragged<bf16_t>(c); }, [&] { return run_ragged<half_t>(c); }); };
    fails += ragged_both({{1, 70, 9}, {}, 2, 1, 64, 64, true});
    // Chunks against longer keys (KeySequences: 130 keys, three key tiles), causal.
    fails += ragged_both({{5, 66}, {130, 80}, 1, 1, 64, 64, true});
    // MLA widths (the 8-warp backward), non-causal, keys longer than queries.
    fails += ragged_both({{20, 2}, {40, 70}, 1, 1, 192, 128, false});
    // Paged keys (a prefill chunk over the serving pools): pages of 16, shuffled, sequence 1 forked from sequence 0's first
    // four pages; 130 keys (three key tiles, a page boundary inside each), causal.
    fails += ragged_both({{5, 66}, {130, 80}, 2, 1, 64, 64, true, 16, {{0, 1, 4}}});
    // Pages of 64 (FlashMLA's), MLA widths.
    fails += ragged_both({{20, 2}, {140, 70}, 1, 1, 192, 128, true, 64});
    printf("%d failing\n", fails);
    return fails != 0;
}

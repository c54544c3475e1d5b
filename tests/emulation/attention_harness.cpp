// cuda/attention.cu (forward with split-KV and the combine, backward dq, dk, dv, dbias) under the emulation of cuda_shim.h in
// fp32, bf16 and fp16 against a double-precision reference on the same (rounded) inputs.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "attention.emu.cpp"  // cuda/attention.cu with its dynamic shared memory mapped to a host array
#include <random>
#include <algorithm>

struct P { int B, Tq, H, G, dqk, Tk, dv, L; bool causal, bias; int splits; };

static unsigned grid_rows(long long n) { return (unsigned)((n + 7) / 8); }

// fp32 runs against fp32's tolerance, the 16-bit ones (inputs rounded to T, the reference on the rounded values) against design.md's.
template <typename T> constexpr double tolerance() { return std::is_same_v<T, float> ? 1e-4 : 2e-2; }

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 131 + p.Tq * 7 + p.L);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n) { std::vector<T> v(n); for (auto& x : v) x = from_float<T>(nd(rng)); return v; };
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    auto floats = [](const std::vector<T>& x) { std::vector<float> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    int H = p.H, G = p.G, group = H / G;
    auto q = vec((size_t)p.B * p.Tq * H * p.dqk), k = vec((size_t)p.B * p.Tk * G * p.dqk), v = vec((size_t)p.B * p.Tk * G * p.dv);
    for (int b = 0; b < p.B; ++b) for (int j = p.L; j < p.Tk; ++j) { for (int g = 0; g < G; ++g) { for (int c = 0; c < p.dqk; ++c) k[(((size_t)b * p.Tk + j) * G + g) * p.dqk + c] = from_float<T>(1000); for (int c = 0; c < p.dv; ++c) v[(((size_t)b * p.Tk + j) * G + g) * p.dv + c] = from_float<T>(1000); } }
    auto bias = p.bias ? vec((size_t)H * p.Tq * p.Tk) : std::vector<T>();
    auto dO = vec((size_t)p.B * p.Tq * H * p.dv);
    auto dq0 = vec(q.size()), dk0 = vec(k.size()), dv0 = vec(v.size());
    auto db0 = p.bias ? vec(bias.size()) : std::vector<T>();
    float scale = 1.0f / std::sqrt((float)p.dqk);
    // Reference in double.
    std::vector<double> o_ref(dO.size()), lse_ref((size_t)p.B * H * p.Tq), dq_ref(dq0.size()), dk_ref(dk0.size()), dv_ref(dv0.size()), db_ref(db0.size());
    for (size_t i = 0; i < dq0.size(); ++i) dq_ref[i] = F(dq0, i);
    for (size_t i = 0; i < dk0.size(); ++i) dk_ref[i] = F(dk0, i);
    for (size_t i = 0; i < dv0.size(); ++i) dv_ref[i] = F(dv0, i);
    for (size_t i = 0; i < db0.size(); ++i) db_ref[i] = F(db0, i);
    for (int b = 0; b < p.B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < p.Tq; ++i) {
        int g = h / group;
        int vis = p.causal ? std::min(p.L, p.L - p.Tq + i + 1) : p.L;
        std::vector<double> s(vis), pr(vis);
        double m = -1e300;
        for (int j = 0; j < vis; ++j) {
            double d = 0; for (int c = 0; c < p.dqk; ++c) d += F(q, (((size_t)b * p.Tq + i) * H + h) * p.dqk + c) * F(k, (((size_t)b * p.Tk + j) * G + g) * p.dqk + c);
            s[j] = d * scale + (p.bias ? F(bias, ((size_t)h * p.Tq + i) * p.Tk + j) : 0.0); m = std::max(m, s[j]);
        }
        double sum = 0; for (int j = 0; j < vis; ++j) { pr[j] = std::exp(s[j] - m); sum += pr[j]; }
        for (int j = 0; j < vis; ++j) pr[j] /= sum;
        lse_ref[((size_t)b * H + h) * p.Tq + i] = m + std::log(sum);
        double* orow = &o_ref[(((size_t)b * p.Tq + i) * H + h) * p.dv];
        for (int j = 0; j < vis; ++j) for (int c = 0; c < p.dv; ++c) orow[c] += pr[j] * F(v, (((size_t)b * p.Tk + j) * G + g) * p.dv + c);
        double delta = 0; for (int c = 0; c < p.dv; ++c) delta += orow[c] * F(dO, (((size_t)b * p.Tq + i) * H + h) * p.dv + c);
        for (int j = 0; j < vis; ++j) {
            double dp = 0; for (int c = 0; c < p.dv; ++c) dp += F(dO, (((size_t)b * p.Tq + i) * H + h) * p.dv + c) * F(v, (((size_t)b * p.Tk + j) * G + g) * p.dv + c);
            double ds = pr[j] * (dp - delta);
            if (p.bias) db_ref[((size_t)h * p.Tq + i) * p.Tk + j] += ds;
            for (int c = 0; c < p.dqk; ++c) {
                dq_ref[(((size_t)b * p.Tq + i) * H + h) * p.dqk + c] += scale * ds * F(k, (((size_t)b * p.Tk + j) * G + g) * p.dqk + c);
                dk_ref[(((size_t)b * p.Tk + j) * G + g) * p.dqk + c] += scale * ds * F(q, (((size_t)b * p.Tq + i) * H + h) * p.dqk + c);
            }
            for (int c = 0; c < p.dv; ++c) dv_ref[(((size_t)b * p.Tk + j) * G + g) * p.dv + c] += pr[j] * F(dO, (((size_t)b * p.Tq + i) * H + h) * p.dv + c);
        }
    }
    AttentionShape s{p.B, p.Tq, H, p.dqk, p.Tk, G, p.dv, p.L, scale, p.causal ? 1 : 0};
    std::vector<T> o(dO.size());
    std::vector<float> lse(lse_ref.size());
    int qtiles = (p.Tq + ATTN_BQ - 1) / ATTN_BQ;
    int splits = p.splits, kps = ((p.L + splits - 1) / splits + 31) / 32 * 32;
    splits = (p.L + kps - 1) / kps;
    long long rows = (long long)p.B * H * p.Tq;
    std::vector<float> po((size_t)splits * rows * p.dv), pml((size_t)splits * rows * 2);
    const T* biasp = p.bias ? bias.data() : nullptr;
    int packed_tiles = (p.Tq * group + ATTN_BQ - 1) / ATTN_BQ; // the forward packs a KV group's (query, head) rows
    emu_launch(dim3{(unsigned)(packed_tiles * splits), (unsigned)G, (unsigned)p.B}, dim3{256}, [&] {
        attention_forward<T>(o.data(), lse.data(), po.data(), pml.data(), q.data(), k.data(), v.data(), biasp, s, splits, kps); });
    if (splits > 1) emu_launch(dim3{grid_rows(rows)}, dim3{256}, [&] { attention_combine<T>(o.data(), lse.data(), po.data(), pml.data(), s, splits); });
    printf("%s B%d Tq%d H%d G%d dqk%d dv%d Tk%d L%d causal%d bias%d splits%d\n", type_name<T>(), p.B, p.Tq, H, G, p.dqk, p.dv, p.Tk, p.L, p.causal, p.bias, splits);
    double worst = 0;
    constexpr double tol = tolerance<T>();
    worst = std::max(worst, check("o", floats(o), o_ref, tol));
    worst = std::max(worst, check("lse", lse, lse_ref, tol));
    std::vector<float> delta(rows);
    std::vector<T> dq = dq0, dk = dk0, dv = dv0, db = db0;
    emu_launch(dim3{grid_rows(rows)}, dim3{256}, [&] { attention_backward_delta<T>(delta.data(), o.data(), dO.data(), s); });
    emu_launch(dim3{(unsigned)qtiles, (unsigned)H, p.bias ? 1u : (unsigned)p.B}, dim3{256}, [&] {
        attention_backward_dq<T>(dq.data(), p.bias ? db.data() : nullptr, q.data(), k.data(), v.data(), biasp, dO.data(), lse.data(), delta.data(), s); });
    emu_launch(dim3{(unsigned)((p.L + ATTN_BKEYS - 1) / ATTN_BKEYS), (unsigned)G, (unsigned)p.B}, dim3{256}, [&] {
        attention_backward_dkdv<T>(dk.data(), dv.data(), q.data(), k.data(), v.data(), biasp, dO.data(), lse.data(), delta.data(), s); });
    worst = std::max(worst, check("dq", floats(dq), dq_ref, tol));
    worst = std::max(worst, check("dk", floats(dk), dk_ref, tol));
    worst = std::max(worst, check("dv", floats(dv), dv_ref, tol));
    if (p.bias) worst = std::max(worst, check("dbias", floats(db), db_ref, tol));
    return worst <= tol ? 0 : 1;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 1, 8, 1, 8, 1, false, false, 1});
    fails += run_all({2, 7, 4, 2, 12, 9, 20, 9, true, false, 1});
    fails += run_all({1, 40, 2, 1, 64, 40, 48, 40, true, false, 1});
    fails += run_all({1, 33, 2, 2, 40, 70, 24, 70, false, false, 1});
    fails += run_all({2, 5, 4, 4, 16, 21, 16, 21, false, true, 1});
    fails += run_all({1, 3, 4, 2, 32, 300, 32, 200, true, false, 1});
    fails += run_all({1, 1, 4, 1, 32, 700, 40, 650, true, false, 3});
    fails += run_all({2, 2, 2, 1, 256, 300, 256, 290, true, false, 2});
    fails += run_all({1, 17, 2, 1, 24, 17, 8, 17, true, true, 1});
    fails += run_all({1, 1, 16, 4, 64, 900, 64, 900, true, false, 4});   // GQA decode: 4 heads per group share each K/V tile
    fails += run_all({2, 5, 6, 2, 16, 40, 16, 33, true, true, 2});       // group of 3, bias, packed rows past a tile boundary
    printf("%d failing\n", fails);
    return fails;
}

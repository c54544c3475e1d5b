#include "cuda_shim.h"
#include "attention.emu.cpp"  // cuda/attention.cu with its dynamic shared memory mapped to a host array
#include <random>
#include <algorithm>

struct P { int B, Tq, H, G, dqk, Tk, dv, L; bool causal, bias; int splits; };

static unsigned grid_rows(long long n) { return (unsigned)((n + 7) / 8); }

static double check(const char* name, const std::vector<float>& got, const std::vector<double>& ref)
{
    double maxref = 0, maxerr = 0;
    for (size_t i = 0; i < ref.size(); ++i) { maxref = std::max(maxref, std::fabs(ref[i])); maxerr = std::max(maxerr, std::fabs(ref[i] - got[i])); if (std::isnan(got[i])) maxerr = 1e9; }
    double rel = maxerr / (1 + maxref);
    printf("  %-6s rel %.2e %s\n", name, rel, rel <= 1e-4 ? "ok" : "FAIL");
    return rel;
}

int run(P p)
{
    std::mt19937 rng(p.B * 131 + p.Tq * 7 + p.L);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n) { std::vector<float> v(n); for (auto& x : v) x = nd(rng); return v; };
    int H = p.H, G = p.G, group = H / G;
    auto q = vec((size_t)p.B * p.Tq * H * p.dqk), k = vec((size_t)p.B * p.Tk * G * p.dqk), v = vec((size_t)p.B * p.Tk * G * p.dv);
    for (int b = 0; b < p.B; ++b) for (int j = p.L; j < p.Tk; ++j) { for (int g = 0; g < G; ++g) { for (int c = 0; c < p.dqk; ++c) k[(((size_t)b * p.Tk + j) * G + g) * p.dqk + c] = 1000; for (int c = 0; c < p.dv; ++c) v[(((size_t)b * p.Tk + j) * G + g) * p.dv + c] = 1000; } }
    auto bias = p.bias ? vec((size_t)H * p.Tq * p.Tk) : std::vector<float>();
    auto dO = vec((size_t)p.B * p.Tq * H * p.dv);
    auto dq0 = vec(q.size()), dk0 = vec(k.size()), dv0 = vec(v.size());
    auto db0 = p.bias ? vec(bias.size()) : std::vector<float>();
    float scale = 1.0f / std::sqrt((float)p.dqk);
    // Reference in double.
    std::vector<double> o_ref(dO.size()), lse_ref((size_t)p.B * H * p.Tq), dq_ref(dq0.begin(), dq0.end()), dk_ref(dk0.begin(), dk0.end()), dv_ref(dv0.begin(), dv0.end()), db_ref(db0.begin(), db0.end());
    for (int b = 0; b < p.B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < p.Tq; ++i) {
        int g = h / group;
        int vis = p.causal ? std::min(p.L, p.L - p.Tq + i + 1) : p.L;
        std::vector<double> s(vis), pr(vis);
        double m = -1e300;
        for (int j = 0; j < vis; ++j) {
            double d = 0; for (int c = 0; c < p.dqk; ++c) d += (double)q[(((size_t)b * p.Tq + i) * H + h) * p.dqk + c] * k[(((size_t)b * p.Tk + j) * G + g) * p.dqk + c];
            s[j] = d * scale + (p.bias ? bias[((size_t)h * p.Tq + i) * p.Tk + j] : 0.0); m = std::max(m, s[j]);
        }
        double sum = 0; for (int j = 0; j < vis; ++j) { pr[j] = std::exp(s[j] - m); sum += pr[j]; }
        for (int j = 0; j < vis; ++j) pr[j] /= sum;
        lse_ref[((size_t)b * H + h) * p.Tq + i] = m + std::log(sum);
        double* orow = &o_ref[(((size_t)b * p.Tq + i) * H + h) * p.dv];
        for (int j = 0; j < vis; ++j) for (int c = 0; c < p.dv; ++c) orow[c] += pr[j] * v[(((size_t)b * p.Tk + j) * G + g) * p.dv + c];
        double delta = 0; for (int c = 0; c < p.dv; ++c) delta += orow[c] * dO[(((size_t)b * p.Tq + i) * H + h) * p.dv + c];
        for (int j = 0; j < vis; ++j) {
            double dp = 0; for (int c = 0; c < p.dv; ++c) dp += dO[(((size_t)b * p.Tq + i) * H + h) * p.dv + c] * v[(((size_t)b * p.Tk + j) * G + g) * p.dv + c];
            double ds = pr[j] * (dp - delta);
            if (p.bias) db_ref[((size_t)h * p.Tq + i) * p.Tk + j] += ds;
            for (int c = 0; c < p.dqk; ++c) {
                dq_ref[(((size_t)b * p.Tq + i) * H + h) * p.dqk + c] += scale * ds * k[(((size_t)b * p.Tk + j) * G + g) * p.dqk + c];
                dk_ref[(((size_t)b * p.Tk + j) * G + g) * p.dqk + c] += scale * ds * q[(((size_t)b * p.Tq + i) * H + h) * p.dqk + c];
            }
            for (int c = 0; c < p.dv; ++c) dv_ref[(((size_t)b * p.Tk + j) * G + g) * p.dv + c] += pr[j] * dO[(((size_t)b * p.Tq + i) * H + h) * p.dv + c];
        }
    }
    AttentionShape s{p.B, p.Tq, H, p.dqk, p.Tk, G, p.dv, p.L, scale, p.causal ? 1 : 0};
    std::vector<float> o(dO.size()), lse(lse_ref.size());
    int qtiles = (p.Tq + ATTN_BQ - 1) / ATTN_BQ;
    int splits = p.splits, kps = ((p.L + splits - 1) / splits + 31) / 32 * 32;
    splits = (p.L + kps - 1) / kps;
    long long rows = (long long)p.B * H * p.Tq;
    std::vector<float> po((size_t)splits * rows * p.dv), pml((size_t)splits * rows * 2);
    const float* biasp = p.bias ? bias.data() : nullptr;
    int packed_tiles = (p.Tq * group + ATTN_BQ - 1) / ATTN_BQ; // the forward packs a KV group's (query, head) rows
    emu_launch(dim3{(unsigned)(packed_tiles * splits), (unsigned)G, (unsigned)p.B}, dim3{256}, [&] {
        attention_forward<float>(o.data(), lse.data(), po.data(), pml.data(), q.data(), k.data(), v.data(), biasp, s, splits, kps); });
    if (splits > 1) emu_launch(dim3{grid_rows(rows)}, dim3{256}, [&] { attention_combine<float>(o.data(), lse.data(), po.data(), pml.data(), s, splits); });
    printf("B%d Tq%d H%d G%d dqk%d dv%d Tk%d L%d causal%d bias%d splits%d\n", p.B, p.Tq, H, G, p.dqk, p.dv, p.Tk, p.L, p.causal, p.bias, splits);
    double worst = 0;
    worst = std::max(worst, check("o", o, o_ref));
    worst = std::max(worst, check("lse", lse, lse_ref));
    std::vector<float> delta(rows), dq = dq0, dk = dk0, dv = dv0, db = db0;
    emu_launch(dim3{grid_rows(rows)}, dim3{256}, [&] { attention_backward_delta<float>(delta.data(), o.data(), dO.data(), s); });
    emu_launch(dim3{(unsigned)qtiles, (unsigned)H, p.bias ? 1u : (unsigned)p.B}, dim3{256}, [&] {
        attention_backward_dq<float>(dq.data(), p.bias ? db.data() : nullptr, q.data(), k.data(), v.data(), biasp, dO.data(), lse.data(), delta.data(), s); });
    emu_launch(dim3{(unsigned)((p.L + ATTN_BKEYS - 1) / ATTN_BKEYS), (unsigned)G, (unsigned)p.B}, dim3{256}, [&] {
        attention_backward_dkdv<float>(dk.data(), dv.data(), q.data(), k.data(), v.data(), biasp, dO.data(), lse.data(), delta.data(), s); });
    worst = std::max(worst, check("dq", dq, dq_ref));
    worst = std::max(worst, check("dk", dk, dk_ref));
    worst = std::max(worst, check("dv", dv, dv_ref));
    if (p.bias) worst = std::max(worst, check("dbias", db, db_ref));
    return worst <= 1e-4 ? 0 : 1;
}

int main()
{
    int fails = 0;
    fails += run({1, 1, 1, 1, 8, 1, 8, 1, false, false, 1});
    fails += run({2, 7, 4, 2, 12, 9, 20, 9, true, false, 1});
    fails += run({1, 40, 2, 1, 64, 40, 48, 40, true, false, 1});
    fails += run({1, 33, 2, 2, 40, 70, 24, 70, false, false, 1});
    fails += run({2, 5, 4, 4, 16, 21, 16, 21, false, true, 1});
    fails += run({1, 3, 4, 2, 32, 300, 32, 200, true, false, 1});
    fails += run({1, 1, 4, 1, 32, 700, 40, 650, true, false, 3});
    fails += run({2, 2, 2, 1, 256, 300, 256, 290, true, false, 2});
    fails += run({1, 17, 2, 1, 24, 17, 8, 17, true, true, 1});
    fails += run({1, 1, 16, 4, 64, 900, 64, 900, true, false, 4});   // GQA decode: 4 heads per group share each K/V tile
    fails += run({2, 5, 6, 2, 16, 40, 16, 33, true, true, 2});       // group of 3, bias, packed rows past a tile boundary
    printf("%d failing\n", fails);
    return fails;
}

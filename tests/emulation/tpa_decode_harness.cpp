// cuda/tpa_decode.cu's all-heads kernel (tpa_decode_heads) and its combine, bf16 and fp16, under the emulation of cuda_shim.h,
// against a double-precision reference from variants.md's TPA formulas (q, k, v materialised from the 16-bit-rounded
// factors): causal query tokens at the end of a cache with garbage past the valid length, several splits (one empty),
// partial key tiles, odd head counts and a width that is not a multiple of 4. Tolerance: design.md's 16-bit one.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "tpa_decode.emu.cpp"
#include <random>

struct P { int B, Tq, H, d, Rq, Rk, Rv, Cap, L, keys_per_split; };

static size_t shared_floats(const P& p)
{
    return (size_t)p.Rq * p.d + p.H * p.Rq + TPA_KT * p.Rk * (p.d + 1) + TPA_KT * p.H * p.Rk + TPA_KT * p.Rv * p.d +
           TPA_KT * p.H * p.Rv + 4 * TPA_KT * p.Rk * p.Rq + p.H * TPA_KT + 3 * p.H;
}

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 31 + p.H * 7 + p.d + p.L);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng)); return x; };
    const int B = p.B, Tq = p.Tq, H = p.H, d = p.d, Cap = p.Cap;
    auto aq = vec((size_t)B * Tq * H * p.Rq), bq = vec((size_t)B * Tq * p.Rq * d);
    auto ak = vec((size_t)B * Cap * H * p.Rk), bk = vec((size_t)B * Cap * p.Rk * d);
    auto av = vec((size_t)B * Cap * H * p.Rv), bv = vec((size_t)B * Cap * p.Rv * d);
    for (int b = 0; b < B; ++b) for (int s = p.L; s < Cap; ++s) { // garbage past L
        for (int c = 0; c < p.Rk * d; ++c) bk[((size_t)b * Cap + s) * p.Rk * d + c] = from_float<T>(1000);
        for (int c = 0; c < p.Rv * d; ++c) bv[((size_t)b * Cap + s) * p.Rv * d + c] = from_float<T>(1000);
    }
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    const double scale = 1.0 / std::sqrt((double)d);
    std::vector<double> o_ref((size_t)B * Tq * H * d);
    for (int b = 0; b < B; ++b) for (int t = 0; t < Tq; ++t) for (int h = 0; h < H; ++h) {
        const size_t bt = (size_t)b * Tq + t;
        const int vis = std::min(p.L, p.L - Tq + t + 1);
        std::vector<double> q(d, 0.0), s(vis);
        for (int r = 0; r < p.Rq; ++r) for (int c = 0; c < d; ++c) q[c] += F(aq, (bt * H + h) * p.Rq + r) * F(bq, (bt * p.Rq + r) * d + c) / p.Rq;
        double m = -1e300, sum = 0;
        for (int j = 0; j < vis; ++j) {
            const size_t key = (size_t)b * Cap + j;
            double dot = 0;
            for (int c = 0; c < d; ++c) {
                double kc = 0;
                for (int u = 0; u < p.Rk; ++u) kc += F(ak, (key * H + h) * p.Rk + u) * F(bk, (key * p.Rk + u) * d + c) / p.Rk;
                dot += q[c] * kc;
            }
            s[j] = dot * scale;
            m = std::max(m, s[j]);
        }
        for (int j = 0; j < vis; ++j) { s[j] = std::exp(s[j] - m); sum += s[j]; }
        for (int j = 0; j < vis; ++j) {
            const size_t key = (size_t)b * Cap + j;
            for (int c = 0; c < d; ++c) {
                double vc = 0;
                for (int u = 0; u < p.Rv; ++u) vc += F(av, (key * H + h) * p.Rv + u) * F(bv, (key * p.Rv + u) * d + c) / p.Rv;
                o_ref[(bt * H + h) * d + c] += s[j] / sum * vc;
            }
        }
    }

    const int tokens = B * Tq;
    const int splits = (p.L + p.keys_per_split - 1) / p.keys_per_split + 1; // the last split lies past L: it sees nothing
    const size_t rows = (size_t)tokens * H;
    std::vector<float> partial_o(splits * rows * d), partial_ml(splits * rows * 2);
    if (shared_floats(p) > (1u << 18)) { printf("shared memory too small\n"); return 1; }
    const float kscale = (float)(1.0 / (p.Rq * p.Rk * std::sqrt((double)d)));
    emu_launch(dim3{(unsigned)splits, (unsigned)tokens}, dim3{SPLIT_THREADS}, [&] {
        tpa_decode_heads<T>(partial_o.data(), partial_ml.data(), aq.data(), bq.data(), ak.data(), bk.data(), av.data(), bv.data(),
                                 0, Tq, H, p.Rq, p.Rk, p.Rv, d, Cap, p.L, kscale, p.keys_per_split); });
    std::vector<T> o(o_ref.size());
    emu_launch(dim3{(unsigned)rows}, dim3{SPLIT_THREADS}, [&] {
        tpa_decode_combine<T>(o.data(), partial_o.data(), partial_ml.data(), d, p.Rv, splits); });
    std::vector<float> of(o.size());
    for (size_t i = 0; i < o.size(); ++i) of[i] = to_float(o[i]);
    printf("%s B%d Tq%d H%d d%d ranks %d/%d/%d Cap%d L%d splits%d\n", type_name<T>(), B, Tq, H, d, p.Rq, p.Rk, p.Rv, Cap, p.L, splits);
    return check("o", of, o_ref) <= 2e-2 ? 0 : 1;
}

int main()
{
    int fails = 0;
    auto run_both = [](P p) { return emu_cases([&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_both({2, 2, 4, 16, 6, 2, 2, 80, 70, 32});   // the small config: causal pair of tokens, three splits + an empty one
    fails += run_both({1, 1, 32, 64, 6, 2, 2, 120, 100, 64}); // the benchmark config's shape, a partial tile per split
    fails += run_both({1, 3, 5, 18, 3, 1, 3, 40, 37, 256});   // odd heads, width not a multiple of 4, one split
    printf("%d failing\n", fails);
    return fails;
}

// cuda/tpa_contraction.cu (TPA's factor contraction y[tok,h,:] = (1/R) Σ_r a[tok,h,r] f[tok,r,:], and its backward
// da += (1/R) ⟨dy, f⟩, df += (1/R) Σ_h a dy) in fp32, bf16 and fp16 under the emulation of cuda_shim.h, against the formula
// in double on the same rounded inputs. y by design.md's tolerance for T; da and df, which the kernels add into, by
// check_added. Launches as TpaContractionCuda (src/Managed/Attention.Native/Ops/TpaContraction/TpaContractionCuda.cs):
// forward and df one thread per element on Elementwise.Grid (256 threads, at most 32 blocks per multiprocessor: `sms`
// small makes the grid-stride loops turn), da one warp per coefficient, 8 warps per block.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "tpa_contraction.emu.cpp"
#include <random>
#include <algorithm>

struct P { int tokens, H, R, d, sms; };

// Elementwise.Grid: ceil(n / 256) blocks, clamped to [1, 32 · multiprocessors].
static unsigned elementwise_grid(long long n, int sms) { return (unsigned)std::clamp((n + 255) / 256, 1LL, 32LL * sms); }

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.tokens * 31 + p.H * 7 + p.R * 3 + p.d);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng)); return x; };
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    auto floats = [](const std::vector<T>& x) { std::vector<float> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    const long long tokens = p.tokens;
    const int H = p.H, R = p.R, d = p.d;
    auto a = vec((size_t)tokens * H * R), f = vec((size_t)tokens * R * d), dy = vec((size_t)tokens * H * d);
    std::vector<double> y_ref(dy.size()), da_c(a.size()), df_c(f.size());
    for (long long t = 0; t < tokens; ++t) for (int h = 0; h < H; ++h) for (int r = 0; r < R; ++r) {
        const size_t ai = ((size_t)t * H + h) * R + r;
        for (int c = 0; c < d; ++c) {
            const size_t fi = ((size_t)t * R + r) * d + c, yi = ((size_t)t * H + h) * d + c;
            y_ref[yi] += F(a, ai) * F(f, fi) / R;
            da_c[ai] += F(dy, yi) * F(f, fi) / R;
            df_c[fi] += F(a, ai) * F(dy, yi) / R;
        }
    }
    std::vector<T> y = vec(dy.size()); // garbage the forward overwrites
    emu_launch(dim3{elementwise_grid((long long)y.size(), p.sms)}, dim3{256}, [&] {
        tpa_contraction_forward<T>(y.data(), a.data(), f.data(), tokens, H, R, d); });
    const auto da0 = starting_values<T>(rng, da_c), df0 = starting_values<T>(rng, df_c);
    std::vector<T> da = da0, df = df0;
    emu_launch(dim3{(unsigned)((a.size() + 7) / 8)}, dim3{256}, [&] { tpa_contraction_backward_a<T>(da.data(), f.data(), dy.data(), tokens, H, R, d); });
    emu_launch(dim3{elementwise_grid((long long)f.size(), p.sms)}, dim3{256}, [&] {
        tpa_contraction_backward_f<T>(df.data(), a.data(), dy.data(), tokens, H, R, d); });
    printf("%s tokens%lld H%d R%d d%d (grid cap %d blocks)\n", type_name<T>(), tokens, H, R, d, 32 * p.sms);
    int fails = check("y", floats(y), y_ref, tolerance_of<T>()) > tolerance_of<T>();
    fails += check_added<T>("da", da, da0, da_c);
    fails += check_added<T>("df", df, df0, df_c);
    return fails != 0;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 1, 132});      // one token, one head, rank 1, width 1
    fails += run_all({6, 5, 3, 37, 132});     // odd sizes: a width past one warp, not a multiple of 32
    fails += run_all({2, 32, 6, 64, 132});    // the benchmark config's head count and ranks
    fails += run_all({40, 4, 2, 80, 1});      // 12,800 outputs on a 32-block grid: the grid-stride loops turn
    printf("%d failing\n", fails);
    return fails != 0;
}

// cuda/adaptive_pool.cu (AdaptiveAvgPool1d over time as PyTorch defines it, forward and dx) in fp32, bf16 and fp16 under the
// emulation of cuda_shim.h, against the windows in double on the same rounded inputs: one element, windows that overlap
// (T not a multiple of n), more outputs than positions (each position in several windows), as many as positions, one
// global window, and a clamped grid (grid-stride).
#include "cuda_shim.h"
#include "bf16_check.h"
#include "adaptive_pool.emu.cpp"
#include "launch_plans.h"

struct P { int B, T, n, C, sms; };

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 19 + p.T * 7 + p.n * 3 + p.C);
    const int B = p.B, Tm = p.T, n = p.n, C = p.C;
    auto x = random_values<T>(rng, (size_t)B * Tm * C), dy = random_values<T>(rng, (size_t)B * n * C);
    // Reference: output i averages positions floor(i·T/n) … ceil((i+1)·T/n) − 1; dx spreads dy[i] / |window i| over them.
    std::vector<double> y_ref(dy.size(), 0.0), dx_ref(x.size(), 0.0);
    for (int b = 0; b < B; ++b) for (int i = 0; i < n; ++i) {
        const int start = (int)((long long)i * Tm / n), end = (int)(((long long)(i + 1) * Tm + n - 1) / n);
        for (int c = 0; c < C; ++c) {
            const size_t o = ((size_t)b * n + i) * C + c;
            for (int t = start; t < end; ++t) {
                const size_t e = ((size_t)b * Tm + t) * C + c;
                y_ref[o] += (double)to_float(x[e]) / (end - start);
                dx_ref[e] += (double)to_float(dy[o]) / (end - start);
            }
        }
    }
    // AdaptivePoolCuda: Elementwise.Grid over the outputs (forward) or the inputs (backward).
    const dim3 y_grid = elementwise_grid(p.sms, (long long)y_ref.size()), x_grid = elementwise_grid(p.sms, (long long)x.size());
    printf("%s B%d T%d n%d C%d sms%d: %u/%u blocks\n", type_name<T>(), B, Tm, n, C, p.sms, y_grid.x, x_grid.x);
    int fails = 0;

    auto y = filled<T>(y_ref.size(), NAN); // every element must be written
    emu_launch(y_grid, dim3{elementwise_threads}, [&] { adaptive_pool_forward<T>(y.data(), x.data(), B, Tm, n, C); });
    fails += check_output("y", floats(y), y_ref, tolerance_of<T>());

    const auto dx0 = starting_values<T>(rng, dx_ref);
    auto dx = dx0;
    emu_launch(x_grid, dim3{elementwise_threads}, [&] { adaptive_pool_backward<T>(dx.data(), dy.data(), B, Tm, n, C); });
    fails += check_added<T>("dx", dx, dx0, dx_ref);
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 1, h200_sms});    // one element
    fails += run_all({2, 7, 3, 5, h200_sms});    // overlapping windows of 3
    fails += run_all({1, 3, 7, 4, h200_sms});    // 7 outputs from 3 positions
    fails += run_all({2, 10, 4, 3, h200_sms});   // windows of 3 overlapping by one
    fails += run_all({3, 13, 13, 2, h200_sms});  // the identity
    fails += run_all({1, 9, 1, 6, h200_sms});    // one global window
    fails += run_all({2, 50, 45, 100, 1});       // 9,000 outputs and 10,000 inputs on 32 blocks (grid-stride)
    fails += run_all({2, 31, 64, 70, h200_sms}); // 64 outputs from 31 positions, windows of 1 and 2
    printf("%d failing\n", fails);
    return fails != 0;
}

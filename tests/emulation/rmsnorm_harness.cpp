// cuda/rmsnorm.cu (forward, backward with its inverse RMS, the gain gradient's two-stage column sum; with a gain and without,
// SRMSNorm) in fp32, bf16 and fp16 under the emulation of cuda_shim.h, against variants.md's RMSNorm in double on the same
// rounded inputs: one row, rows that leave warps of the last block idle, widths below, at and past a warp and
// not multiples of it, several row chunks with a partial last one; dx and dgain both written and accumulated.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "rmsnorm.emu.cpp"
#include "launch_plans.h"

struct P { long long rows; int n; bool gain; int sms; };

template <typename T>
int run(P p)
{
    std::mt19937 rng((unsigned)(p.rows * 13 + p.n * 3 + p.gain));
    const long long rows = p.rows;
    const int n = p.n;
    const float epsilon = 1e-5f;
    const size_t count = (size_t)rows * n;
    auto x = random_values<T>(rng, count), dy = random_values<T>(rng, count);
    auto gain = p.gain ? random_values<T>(rng, n) : std::vector<T>();
    const T* g = p.gain ? gain.data() : nullptr;
    auto G = [&](int c) { return p.gain ? (double)to_float(gain[c]) : 1.0; };
    auto X = [&](long long r, int c) { return (double)to_float(x[r * n + c]); };
    auto DY = [&](long long r, int c) { return (double)to_float(dy[r * n + c]); };
    // Reference: r = 1/sqrt(mean x² + ε), y = x·r·g, dx = r·g·dy − r³·x·mean(g·dy·x), dgain = Σ_rows dy·x·r.
    std::vector<double> y_ref(count), dx_ref(count), r_ref(rows), dgain_ref(n, 0.0);
    for (long long r = 0; r < rows; ++r) {
        double squares = 0, dot = 0;
        for (int c = 0; c < n; ++c) { squares += X(r, c) * X(r, c); dot += G(c) * DY(r, c) * X(r, c); }
        const double inv = 1.0 / std::sqrt(squares / n + (double)epsilon);
        r_ref[r] = inv;
        for (int c = 0; c < n; ++c) {
            y_ref[r * n + c] = X(r, c) * inv * G(c);
            dx_ref[r * n + c] = inv * G(c) * DY(r, c) - inv * inv * inv * X(r, c) * dot / n;
            dgain_ref[c] += DY(r, c) * X(r, c) * inv;
        }
    }
    // RmsNormCuda: one warp per row, 4 warps a block.
    const dim3 grid{(unsigned)((rows + 3) / 4)}, block{128};
    const auto plan = column_sum_plan(p.sms, rows, n);
    printf("%s rows%lld n%d %s sms%d chunks%d\n", type_name<T>(), rows, n, p.gain ? "gain" : "no gain", p.sms, plan.chunks);
    int fails = 0;

    auto y = filled<T>(count, NAN); // every element must be written
    emu_launch(grid, block, [&] { rmsnorm_forward<T>(y.data(), x.data(), g, rows, n, epsilon); });
    fails += check_output("y", floats(y), y_ref, tolerance_of<T>());

    // Backward, without and with accumulate; without, dx starts as garbage the kernel must overwrite.
    std::vector<float> inverse_rms(rows, NAN);
    for (int accumulate = 0; accumulate < 2; ++accumulate) {
        auto start = starting_values<T>(rng, dx_ref);
        const auto before = accumulate ? start : std::vector<T>(count, from_float<T>(0.0f));
        auto dx = start;
        // RmsNormCuda.Backward passes no inverse-RMS buffer when there is no dgain to compute.
        float* ir = p.gain && accumulate == 0 ? inverse_rms.data() : nullptr;
        emu_launch(grid, block, [&] { rmsnorm_backward<T>(dx.data(), ir, x.data(), g, dy.data(), rows, n, epsilon, accumulate); });
        fails += check_added<T>(accumulate ? "dx+" : "dx=", dx, before, dx_ref);
    }
    if (!p.gain) return fails;
    fails += check_output("r", inverse_rms, r_ref, 1e-4); // fp32 whatever the storage type

    std::vector<float> partial((size_t)plan.chunks * n, NAN);
    emu_launch(column_sum_grid(n, plan.chunks), column_sum_block, [&] {
        rmsnorm_gain_backward_partials<T>(partial.data(), x.data(), dy.data(), inverse_rms.data(), rows, n, plan.rows_per_chunk); });
    for (int accumulate = 0; accumulate < 2; ++accumulate) {
        auto start = starting_values<T>(rng, dgain_ref);
        const auto before = accumulate ? start : std::vector<T>(n, from_float<T>(0.0f));
        auto dgain = start;
        emu_launch(finalize_grid(n), dim3{finalize_threads}, [&] {
            rmsnorm_gain_backward_finalize<T>(dgain.data(), partial.data(), plan.chunks, n, accumulate); });
        fails += check_added<T>(accumulate ? "dgain+" : "dgain=", dgain, before, dgain_ref);
    }
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    // One row: three idle warps. (Not one column: there dx = r·g·dy·ε/(x² + ε), a cancellation no fp32 kernel resolves.)
    fails += run_all({1, 3, true, h200_sms});
    fails += run_all({7, 37, true, h200_sms});   // a partial block, a width past a warp by 5
    fails += run_all({6, 20, false, h200_sms});  // SRMSNorm: no gain, no inverse RMS
    fails += run_all({150, 70, true, h200_sms}); // three row chunks of 50, three column tiles
    fails += run_all({90, 64, true, 1});         // one chunk of 90 rows: the tile's row loop runs 12 times, partly
    printf("%d failing\n", fails);
    return fails != 0;
}

// cuda/linear.cu (the bias fill before the GEMM, the bias gradient's two-stage column sum) in fp32, bf16 and fp16 under the
// emulation of cuda_shim.h, against a double-precision reference on the same rounded inputs: one row of one column, column
// counts that are not multiples of the 32-column tile, several row chunks with a partial last one, and a clamped grid whose
// grid-stride loop runs more than once. The GEMMs run on cuBLAS and are not here.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "linear.emu.cpp"
#include "launch_plans.h"

struct P { long long m; int n; int sms; };

template <typename T>
int run(P p)
{
    std::mt19937 rng((unsigned)(p.m * 7 + p.n));
    const long long m = p.m;
    const int n = p.n;
    auto bias = random_values<T>(rng, n), dy = random_values<T>(rng, (size_t)m * n);
    const auto plan = column_sum_plan(p.sms, m, n);
    printf("%s m%lld n%d sms%d chunks%d\n", type_name<T>(), m, n, p.sms, plan.chunks);
    int fails = 0;

    // Forward: y[row, :] = bias. LinearCuda.Forward: min(ceil(m·n / 256), 8·sms) blocks of 256. y starts NaN: every
    // element must be written.
    auto y = filled<T>((size_t)m * n, NAN);
    std::vector<double> y_ref(y.size());
    for (size_t i = 0; i < y.size(); ++i) y_ref[i] = to_float(bias[i % n]);
    const unsigned blocks = (unsigned)std::min((m * n + 255) / 256, 8LL * p.sms);
    emu_launch(dim3{blocks}, dim3{256}, [&] { linear_bias_fill<T>(y.data(), bias.data(), m, n); });
    fails += check_output("y", floats(y), y_ref, tolerance_of<T>());

    // Backward: dbias (+)= Σ_rows dy (LinearCuda.Backward: ColumnSum.Plan's chunks, then ColumnSum.Finalize).
    std::vector<double> c(n, 0.0);
    for (long long r = 0; r < m; ++r) for (int j = 0; j < n; ++j) c[j] += to_float(dy[r * n + j]);
    std::vector<float> partial((size_t)plan.chunks * n, NAN);
    emu_launch(column_sum_grid(n, plan.chunks), column_sum_block, [&] {
        linear_bias_backward_partials<T>(partial.data(), dy.data(), m, n, plan.rows_per_chunk); });
    for (int accumulate = 0; accumulate < 2; ++accumulate) {
        // Without accumulate the buffer starts as garbage the kernel must overwrite: its contribution counts from zero.
        auto start = starting_values<T>(rng, c);
        const auto before = accumulate ? start : std::vector<T>(n, from_float<T>(0.0f));
        auto dbias = start;
        emu_launch(finalize_grid(n), dim3{finalize_threads}, [&] {
            linear_bias_backward_finalize<T>(dbias.data(), partial.data(), plan.chunks, n, accumulate); });
        fails += check_added<T>(accumulate ? "dbias+" : "dbias=", dbias, before, c);
    }
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, h200_sms});   // one row, one column
    fails += run_all({5, 33, h200_sms});  // a second column tile with one column
    fails += run_all({130, 70, h200_sms}); // three row chunks (44, 44, 42 rows), three column tiles
    fails += run_all({300, 40, 1});       // the fill's grid clamped to 8 blocks (grid-stride); two chunks of 150 rows
    printf("%d failing\n", fails);
    return fails != 0;
}

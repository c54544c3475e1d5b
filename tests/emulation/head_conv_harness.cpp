// cuda/head_conv.cu (SAS's Conv1d across heads: forward, dx, dweight and dbias by a two-stage column sum) in fp32, bf16 and
// fp16 under the emulation of cuda_shim.h, against the convolution in double on the same rounded inputs: one element with a
// 1-tap kernel, a kernel as wide as the row (every tap reaches the padding), no bias, several item chunks, a clamped grid
// (grid-stride), and more weights than one finalize block.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "head_conv.emu.cpp"
#include "launch_plans.h"

struct P { long long count; int cin, cout, length, kernel; bool bias; int sms; };

template <typename T>
int run(P p)
{
    std::mt19937 rng((unsigned)(p.count * 11 + p.cin * 5 + p.cout * 3 + p.length + p.kernel));
    const long long N = p.count;
    const int Ci = p.cin, Co = p.cout, L = p.length, K = p.kernel, pad = (K - 1) / 2;
    const int weights = Co * Ci * K, columns = weights + Co;
    auto x = random_values<T>(rng, (size_t)N * Ci * L), w = random_values<T>(rng, weights);
    auto bias = p.bias ? random_values<T>(rng, Co) : std::vector<T>();
    auto dy = random_values<T>(rng, (size_t)N * Co * L);
    auto X = [&](long long n, int c, int l) { return (double)to_float(x[((size_t)n * Ci + c) * L + l]); };
    auto DY = [&](long long n, int c, int l) { return (double)to_float(dy[((size_t)n * Co + c) * L + l]); };
    auto Wt = [&](int c, int ci, int j) { return (double)to_float(w[((size_t)c * Ci + ci) * K + j]); };
    // Reference: y[n,c,l] = bias[c] + Σ_{c',j} w[c,c',j]·x[n,c',l+j−pad] (zero padding), and its adjoints.
    std::vector<double> y_ref(dy.size()), dx_ref(x.size(), 0.0), dw_ref(weights, 0.0), db_ref(Co, 0.0);
    for (long long n = 0; n < N; ++n) for (int c = 0; c < Co; ++c) for (int l = 0; l < L; ++l) {
        double acc = p.bias ? (double)to_float(bias[c]) : 0.0;
        const double g = DY(n, c, l);
        db_ref[c] += g;
        for (int ci = 0; ci < Ci; ++ci) for (int j = 0; j < K; ++j) {
            const int s = l + j - pad;
            if (s < 0 || s >= L) continue;
            acc += Wt(c, ci, j) * X(n, ci, s);
            dx_ref[((size_t)n * Ci + ci) * L + s] += Wt(c, ci, j) * g;
            dw_ref[((size_t)c * Ci + ci) * K + j] += g * X(n, ci, s);
        }
        y_ref[((size_t)n * Co + c) * L + l] = acc;
    }
    // HeadConvCuda: Elementwise.Grid over y (forward) and x (dx); ColumnSum.Plan over the N items for the parameters.
    const dim3 y_grid = elementwise_grid(p.sms, (long long)y_ref.size()), x_grid = elementwise_grid(p.sms, (long long)x.size());
    const auto plan = column_sum_plan(p.sms, N, columns);
    printf("%s N%lld Cin%d Cout%d L%d k%d%s sms%d: %u/%u blocks, %d chunks\n", type_name<T>(), N, Ci, Co, L, K, p.bias ? " bias" : "",
           p.sms, y_grid.x, x_grid.x, plan.chunks);
    int fails = 0;

    auto y = filled<T>(y_ref.size(), NAN); // every element must be written
    emu_launch(y_grid, dim3{elementwise_threads}, [&] {
        head_conv_forward<T>(y.data(), x.data(), w.data(), p.bias ? bias.data() : nullptr, N, Ci, Co, L, K); });
    fails += check_output("y", floats(y), y_ref, tolerance_of<T>());

    const auto dx0 = starting_values<T>(rng, dx_ref);
    auto dx = dx0;
    emu_launch(x_grid, dim3{elementwise_threads}, [&] { head_conv_backward<T>(dx.data(), w.data(), dy.data(), N, Ci, Co, L, K); });
    fails += check_added<T>("dx", dx, dx0, dx_ref);

    // Parameters: one partials launch, then a finalize (always adding) per target: dweight at offset 0, dbias after it.
    std::vector<float> partial((size_t)plan.chunks * columns, NAN);
    emu_launch(column_sum_grid(columns, plan.chunks), column_sum_block, [&] {
        head_conv_params_backward_partials<T>(partial.data(), x.data(), dy.data(), N, Ci, Co, L, K, plan.rows_per_chunk); });
    auto finalize = [&](const char* name, const std::vector<double>& ref, int offset) {
        const auto before = starting_values<T>(rng, ref);
        auto out = before;
        const int n = (int)ref.size();
        emu_launch(finalize_grid(n), dim3{finalize_threads}, [&] {
            head_conv_params_backward_finalize<T>(out.data(), partial.data(), plan.chunks, columns, offset, n); });
        return check_added<T>(name, out, before, ref);
    };
    fails += finalize("dw", dw_ref, 0);
    if (p.bias) fails += finalize("dbias", db_ref, weights); // no bias, no dbias: the launcher skips it
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 1, 1, true, h200_sms});     // one element, one tap
    fails += run_all({3, 2, 3, 7, 3, true, h200_sms});     // odd length, padding at both ends
    fails += run_all({2, 4, 5, 5, 5, false, h200_sms});    // a kernel as wide as the row, no bias
    fails += run_all({150, 3, 2, 9, 3, true, h200_sms});   // three item chunks of 50
    fails += run_all({2, 8, 8, 6, 5, true, h200_sms});     // 320 weights: two finalize blocks
    fails += run_all({70, 4, 4, 33, 7, true, 1});          // 9,240 elements on 32 blocks (grid-stride), one chunk
    printf("%d failing\n", fails);
    return fails != 0;
}

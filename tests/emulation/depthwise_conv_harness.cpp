// cuda/depthwise_conv.cu (depthwise Conv1d over time: forward, dx, dweight and dbias by a column sum over the tokens and then
// over the channels sharing a filter) in fp32, bf16 and fp16 under the emulation of cuda_shim.h, against the convolution in
// double on the same rounded inputs: one element with a 1-tap kernel, filters shared by several channels, a kernel wider
// than the sequence, several token chunks, a clamped grid (grid-stride), two finalize blocks, and dweight or dbias alone.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "depthwise_conv.emu.cpp"
#include "launch_plans.h"

// F divides C (DepthwiseConv.cs requires it); k odd.
struct P { int B, T, C, F, k; bool bias, dweight; int sms; };

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 13 + p.T * 7 + p.C * 3 + p.F + p.k);
    const long long rows = (long long)p.B * p.T;
    const int C = p.C, F = p.F, K = p.k, pad = (K - 1) / 2;
    const size_t count = (size_t)rows * C;
    auto x = random_values<T>(rng, count), w = random_values<T>(rng, (size_t)F * K), dy = random_values<T>(rng, count);
    auto bias = p.bias ? random_values<T>(rng, F) : std::vector<T>();
    auto at = [&](const std::vector<T>& v, long long row, int c) { return (double)to_float(v[(size_t)row * C + c]); };
    // Reference: y[b,t,c] = bias[f] + Σ_j w[f,j]·x[b, t+j−pad, c], f = c mod F, zero padding; and its adjoints.
    std::vector<double> y_ref(count), dx_ref(count, 0.0), dw_ref((size_t)F * K, 0.0), db_ref(F, 0.0);
    for (int b = 0; b < p.B; ++b) for (int t = 0; t < p.T; ++t) for (int c = 0; c < C; ++c) {
        const int f = c % F;
        const long long row = (long long)b * p.T + t;
        const double g = at(dy, row, c);
        double acc = p.bias ? (double)to_float(bias[f]) : 0.0;
        db_ref[f] += g;
        for (int j = 0; j < K; ++j) {
            const int s = t + j - pad;
            if (s < 0 || s >= p.T) continue;
            const double wj = to_float(w[f * K + j]);
            acc += wj * at(x, row + s - t, c);
            dx_ref[(size_t)(row + s - t) * C + c] += wj * g;
            dw_ref[f * K + j] += g * at(x, row + s - t, c);
        }
        y_ref[(size_t)row * C + c] = acc;
    }
    // DepthwiseConvCuda: Elementwise.Grid over the elements; ColumnSum.Plan over the tokens for (k + 1)·C columns; the
    // finalize on ceil(F·(k + 1) / 128) blocks of 128.
    const dim3 grid = elementwise_grid(p.sms, (long long)count);
    const int columns = (K + 1) * C;
    const auto plan = column_sum_plan(p.sms, rows, columns);
    printf("%s B%d T%d C%d F%d k%d%s%s sms%d: %u blocks, %d chunks\n", type_name<T>(), p.B, p.T, C, F, K, p.bias ? " bias" : "",
           p.dweight ? " dweight" : "", p.sms, grid.x, plan.chunks);
    int fails = 0;

    auto y = filled<T>(count, NAN); // every element must be written
    emu_launch(grid, dim3{elementwise_threads}, [&] {
        depthwise_conv_forward<T>(y.data(), x.data(), w.data(), p.bias ? bias.data() : nullptr, rows, p.T, C, F, K); });
    fails += check_output("y", floats(y), y_ref, tolerance_of<T>());

    const auto dx0 = starting_values<T>(rng, dx_ref);
    auto dx = dx0;
    emu_launch(grid, dim3{elementwise_threads}, [&] { depthwise_conv_backward<T>(dx.data(), w.data(), dy.data(), rows, p.T, C, F, K); });
    fails += check_added<T>("dx", dx, dx0, dx_ref);

    // Parameters: dweight and dbias (each may be absent) added into.
    std::vector<float> partial((size_t)plan.chunks * columns, NAN);
    emu_launch(column_sum_grid(columns, plan.chunks), column_sum_block, [&] {
        depthwise_conv_params_backward_partials<T>(partial.data(), x.data(), dy.data(), rows, p.T, C, K, plan.rows_per_chunk); });
    const auto dw0 = starting_values<T>(rng, dw_ref), db0 = starting_values<T>(rng, db_ref);
    auto dw = dw0, db = db0;
    emu_launch(dim3{(unsigned)((F * (K + 1) + 127) / 128)}, dim3{128}, [&] {
        depthwise_conv_params_backward_finalize<T>(p.dweight ? dw.data() : nullptr, p.bias ? db.data() : nullptr, partial.data(),
                                                   plan.chunks, C, F, K); });
    if (p.dweight) fails += check_added<T>("dw", dw, dw0, dw_ref);
    if (p.bias) fails += check_added<T>("dbias", db, db0, db_ref);
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 1, 1, true, true, h200_sms});    // one element, one tap
    fails += run_all({2, 5, 6, 3, 3, true, true, h200_sms});    // each filter shared by two channels
    fails += run_all({3, 3, 5, 5, 7, false, true, h200_sms});   // a kernel wider than the sequence; no bias
    fails += run_all({2, 75, 12, 4, 3, true, false, h200_sms}); // 150 tokens in three chunks, 48 columns in two tiles; dbias alone
    fails += run_all({3, 100, 31, 31, 5, true, true, 1});       // 9,300 elements on 32 blocks (grid-stride); 186 finalize threads
    printf("%d failing\n", fails);
    return fails != 0;
}

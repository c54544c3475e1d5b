// cuda/depthwise_conv.cu (depthwise convolution over a channels-last token grid: forward, dx, dweight and dbias by a column
// sum over the tokens and then over the channels sharing a filter) in fp32, bf16 and fp16 under the emulation of
// cuda_shim.h, against the convolution in double on the same rounded inputs. The 1-D form runs as DepthwiseConvCuda
// launches it (H = 1, W = T, kh = 1): one element with a 1-tap kernel, filters shared by several channels, a kernel wider
// than the sequence, several token chunks, a clamped grid (grid-stride), two finalize blocks, and dweight or dbias alone.
// The 2-D form: one filter per channel and filters shared by the heads, kh ≠ kw, grids 1×W, H×1 and 7×5, a kernel larger
// than the grid, several token chunks, and a clamped grid.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "depthwise_conv.emu.cpp"
#include "launch_plans.h"

// Images of H×W tokens (the 1-D form: H = 1, W = T, kh = 1); F divides C (DepthwiseConv.cs requires it); kh, kw odd.
struct P { int B, H, W, C, F, kh, kw; bool bias, dweight; int sms; };

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 13 + p.H * 11 + p.W * 7 + p.C * 3 + p.F + p.kh * 5 + p.kw);
    const long long rows = (long long)p.B * p.H * p.W;
    const int C = p.C, F = p.F, KH = p.kh, KW = p.kw, taps = KH * KW, ph = (KH - 1) / 2, pw = (KW - 1) / 2;
    const size_t count = (size_t)rows * C;
    auto x = random_values<T>(rng, count), w = random_values<T>(rng, (size_t)F * taps), dy = random_values<T>(rng, count);
    auto bias = p.bias ? random_values<T>(rng, F) : std::vector<T>();
    auto index = [&](int b, int i, int j, int c) { return (((size_t)b * p.H + i) * p.W + j) * C + c; };
    // Reference: y[b,i,j,c] = bias[f] + Σ_{u,v} w[f,u,v]·x[b, i+u−ph, j+v−pw, c], f = c mod F, zero padding; and its adjoints.
    std::vector<double> y_ref(count), dx_ref(count, 0.0), dw_ref((size_t)F * taps, 0.0), db_ref(F, 0.0);
    for (int b = 0; b < p.B; ++b) for (int i = 0; i < p.H; ++i) for (int j = 0; j < p.W; ++j) for (int c = 0; c < C; ++c) {
        const int f = c % F;
        const double g = to_float(dy[index(b, i, j, c)]);
        double acc = p.bias ? (double)to_float(bias[f]) : 0.0;
        db_ref[f] += g;
        for (int u = 0; u < KH; ++u) for (int v = 0; v < KW; ++v) {
            const int si = i + u - ph, sj = j + v - pw;
            if (si < 0 || si >= p.H || sj < 0 || sj >= p.W) continue;
            const double wt = to_float(w[f * taps + u * KW + v]), xs = to_float(x[index(b, si, sj, c)]);
            acc += wt * xs;
            dx_ref[index(b, si, sj, c)] += wt * g;
            dw_ref[f * taps + u * KW + v] += g * xs;
        }
        y_ref[index(b, i, j, c)] = acc;
    }
    // DepthwiseConvCuda: Elementwise.Grid over the elements; ColumnSum.Plan over the tokens for (kh·kw + 1)·C columns;
    // the finalize on ceil(F·(kh·kw + 1) / 128) blocks of 128.
    const dim3 grid = elementwise_grid(p.sms, (long long)count);
    const int columns = (taps + 1) * C;
    const auto plan = column_sum_plan(p.sms, rows, columns);
    printf("%s B%d H%d W%d C%d F%d k%dx%d%s%s sms%d: %u blocks, %d chunks\n", type_name<T>(), p.B, p.H, p.W, C, F, KH, KW,
           p.bias ? " bias" : "", p.dweight ? " dweight" : "", p.sms, grid.x, plan.chunks);
    int fails = 0;

    auto y = filled<T>(count, NAN); // every element must be written
    emu_launch(grid, dim3{elementwise_threads}, [&] {
        depthwise_conv_forward<T>(y.data(), x.data(), w.data(), p.bias ? bias.data() : nullptr, rows, p.H, p.W, C, F, KH, KW); });
    fails += check_output("y", floats(y), y_ref, tolerance_of<T>());

    const auto dx0 = starting_values<T>(rng, dx_ref);
    auto dx = dx0;
    emu_launch(grid, dim3{elementwise_threads}, [&] {
        depthwise_conv_backward<T>(dx.data(), w.data(), dy.data(), rows, p.H, p.W, C, F, KH, KW); });
    fails += check_added<T>("dx", dx, dx0, dx_ref);

    // Parameters: dweight and dbias (each may be absent) added into.
    std::vector<float> partial((size_t)plan.chunks * columns, NAN);
    emu_launch(column_sum_grid(columns, plan.chunks), column_sum_block, [&] {
        depthwise_conv_params_backward_partials<T>(partial.data(), x.data(), dy.data(), rows, p.H, p.W, C, KH, KW, plan.rows_per_chunk); });
    const auto dw0 = starting_values<T>(rng, dw_ref), db0 = starting_values<T>(rng, db_ref);
    auto dw = dw0, db = db0;
    emu_launch(dim3{(unsigned)((F * (taps + 1) + 127) / 128)}, dim3{128}, [&] {
        depthwise_conv_params_backward_finalize<T>(p.dweight ? dw.data() : nullptr, p.bias ? db.data() : nullptr, partial.data(),
                                                   plan.chunks, C, F, taps); });
    if (p.dweight) fails += check_added<T>("dw", dw, dw0, dw_ref);
    if (p.bias) fails += check_added<T>("dbias", db, db0, db_ref);
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    // 1-D [B, T, C] with weight [F, 1, k], as {B, 1, T, C, F, 1, k}.
    fails += run_all({1, 1, 1, 1, 1, 1, 1, true, true, h200_sms});    // one element, one tap
    fails += run_all({2, 1, 5, 6, 3, 1, 3, true, true, h200_sms});    // each filter shared by two channels
    fails += run_all({3, 1, 3, 5, 5, 1, 7, false, true, h200_sms});   // a kernel wider than the sequence; no bias
    fails += run_all({2, 1, 75, 12, 4, 1, 3, true, false, h200_sms}); // 150 tokens in three chunks, 48 columns in two tiles; dbias alone
    fails += run_all({3, 1, 100, 31, 31, 1, 5, true, true, 1});       // 9,300 elements on 32 blocks (grid-stride); 186 finalize threads
    // 2-D [B, H, W, C] with weight [F, 1, kh, kw].
    fails += run_all({2, 7, 5, 6, 6, 3, 3, true, true, h200_sms});    // 7×5 grid, one filter per channel (agent)
    fails += run_all({1, 7, 5, 8, 2, 3, 5, true, true, h200_sms});    // filters shared by four heads (flatten), kh ≠ kw
    fails += run_all({2, 1, 9, 4, 4, 3, 3, true, true, h200_sms});    // a 1×W grid: the vertical taps fall outside
    fails += run_all({2, 6, 1, 6, 3, 5, 3, false, true, h200_sms});   // an H×1 grid, kh ≠ kw; no bias
    fails += run_all({1, 3, 4, 4, 2, 5, 7, true, true, h200_sms});    // a kernel larger than the grid both ways
    fails += run_all({2, 12, 14, 32, 16, 5, 5, true, false, h200_sms}); // 336 tokens in six chunks, 832 columns; dbias alone
    fails += run_all({2, 9, 11, 48, 16, 3, 5, true, true, 1});        // 9,504 elements on 32 blocks (grid-stride); 256 finalize threads
    printf("%d failing\n", fails);
    return fails != 0;
}

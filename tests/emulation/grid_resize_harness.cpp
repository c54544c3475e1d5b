// cuda/grid_resize.cu (bilinear resizing of channels-last token grids, F.interpolate(mode='bilinear', align_corners=False),
// forward and dx) in fp32, bf16 and fp16 under the emulation of cuda_shim.h, against the definition in double on the same
// rounded inputs: one cell, up and down on both axes, the identity, 1-D linear, a column replicated, one cell to many,
// large ratios (many outputs read each input: the backward's reader ranges), and a clamped grid (grid-stride).
#include "cuda_shim.h"
#include "bf16_check.h"
#include "grid_resize.emu.cpp"
#include "launch_plans.h"

struct P { int B, ih, iw, oh, ow, C, sms; };

// Output o's cells and the weight of i1 along one axis (docs/vision-forms.md §0), in double.
struct Tap { int i0, i1; double lambda; };
static Tap source(int o, int in, int out)
{
    const double src = std::max((double)in / out * (o + 0.5) - 0.5, 0.0);
    const int i0 = (int)std::floor(src);
    return {i0, std::min(i0 + 1, in - 1), src - i0};
}

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 31 + p.ih * 17 + p.iw * 13 + p.oh * 7 + p.ow * 3 + p.C);
    const int B = p.B, ih = p.ih, iw = p.iw, oh = p.oh, ow = p.ow, C = p.C;
    auto x = random_values<T>(rng, (size_t)B * ih * iw * C), dy = random_values<T>(rng, (size_t)B * oh * ow * C);
    // Reference: y = Σ of the four cells (r, k) each output reads with weight w_row·w_col; dx gets dy back with the same weights.
    std::vector<double> y_ref(dy.size(), 0.0), dx_ref(x.size(), 0.0);
    for (int b = 0; b < B; ++b) for (int i = 0; i < oh; ++i) for (int j = 0; j < ow; ++j) {
        const Tap r = source(i, ih, oh), k = source(j, iw, ow);
        const int rows[2] = {r.i0, r.i1}, cols[2] = {k.i0, k.i1};
        const double wr[2] = {1 - r.lambda, r.lambda}, wc[2] = {1 - k.lambda, k.lambda};
        for (int c = 0; c < C; ++c) {
            const size_t o = (((size_t)b * oh + i) * ow + j) * C + c;
            for (int u = 0; u < 2; ++u) for (int v = 0; v < 2; ++v) {
                const size_t e = (((size_t)b * ih + rows[u]) * iw + cols[v]) * C + c;
                y_ref[o] += wr[u] * wc[v] * (double)to_float(x[e]);
                dx_ref[e] += wr[u] * wc[v] * (double)to_float(dy[o]);
            }
        }
    }
    // GridResizeCuda: Elementwise.Grid over the outputs (forward) or the inputs (backward).
    const dim3 y_grid = elementwise_grid(p.sms, (long long)y_ref.size()), x_grid = elementwise_grid(p.sms, (long long)x.size());
    printf("%s B%d %dx%d -> %dx%d C%d sms%d: %u/%u blocks\n", type_name<T>(), B, ih, iw, oh, ow, C, p.sms, y_grid.x, x_grid.x);
    int fails = 0;

    auto y = filled<T>(y_ref.size(), NAN); // every element must be written
    emu_launch(y_grid, dim3{elementwise_threads}, [&] { grid_resize_forward<T>(y.data(), x.data(), B, ih, iw, oh, ow, C); });
    fails += check_output("y", floats(y), y_ref, tolerance_of<T>());

    const auto dx0 = starting_values<T>(rng, dx_ref);
    auto dx = dx0;
    emu_launch(x_grid, dim3{elementwise_threads}, [&] { grid_resize_backward<T>(dx.data(), dy.data(), B, ih, iw, oh, ow, C); });
    fails += check_added<T>("dx", dx, dx0, dx_ref);
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 1, 1, 1, h200_sms});      // one cell
    fails += run_all({2, 2, 2, 4, 4, 3, h200_sms});      // ×2 up: clamped at both edges
    fails += run_all({1, 5, 7, 3, 4, 5, h200_sms});      // down on both axes, two cells read per axis
    fails += run_all({2, 6, 5, 6, 5, 4, h200_sms});      // the identity
    fails += run_all({2, 1, 3, 1, 5, 8, h200_sms});      // 1-D linear over the tokens, 3 → 5
    fails += run_all({1, 4, 1, 4, 6, 7, h200_sms});      // a column replicated over 6 (i0 = i1)
    fails += run_all({1, 1, 1, 5, 3, 2, h200_sms});      // one cell to 15
    fails += run_all({2, 14, 14, 7, 7, 16, h200_sms});   // ÷2 (PVT's spatial reduction)
    fails += run_all({1, 7, 7, 28, 28, 8, h200_sms});    // ×4: each input read by up to six outputs per axis
    fails += run_all({1, 3, 2, 100, 64, 2, h200_sms});   // ×33 and ×32: long reader ranges
    fails += run_all({2, 9, 13, 17, 5, 3, h200_sms});    // up on rows, down on columns
    fails += run_all({2, 40, 30, 50, 45, 16, 1});        // 72,000 outputs, 38,400 inputs on 32 blocks (grid-stride)
    printf("%d failing\n", fails);
    return fails != 0;
}

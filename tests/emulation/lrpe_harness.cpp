// cuda/lrpe.cu (forward, dx, dθ's two-stage column sum) in fp32, bf16 and fp16 under the emulation of cuda_shim.h, against
// variants.md's LRPE in double on the same rounded inputs: one element, odd heads and widths, several row chunks, column
// counts that are not multiples of the 32-column tile, and a clamped grid (grid-stride) at positions past 1000; ragged batches
// [1, N, …] (per-token positions: sequences of different lengths, one of 1 token, starting past position 0).
#include "cuda_shim.h"
#include "bf16_check.h"
#include "lrpe.emu.cpp"
#include "launch_plans.h"

// lengths/starts non-empty: a ragged batch (B = 1, T = Σ lengths), sequence s's tokens at starts[s], starts[s] + 1, … (the
// kernels read these per-token positions; position_offset is then ignored).
struct P { int B, T, H, W, position_offset, sms; std::vector<int> lengths = {}, starts = {}; };

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 17 + p.T * 5 + p.H * 3 + p.W);
    const long long rows = (long long)p.B * p.T;
    const int H = p.H, W = p.W, columns = H * W;
    const size_t count = (size_t)rows * columns;
    auto x = random_values<T>(rng, count), theta = random_values<T>(rng, columns), dy = random_values<T>(rng, 2 * count);
    // Reference: angle θ[h, j]·p with p = offset + t; y = [x cos | x sin]; dx = dy_cos cos + dy_sin sin;
    // dθ[h, j] = Σ_(b,t) p·x·(dy_sin cos − dy_cos sin).
    // The position of every row: SequenceLayout.TokenPositions for a ragged batch (as LrpeCuda passes them), else offset + t.
    const bool ragged = !p.lengths.empty();
    std::vector<int> token_positions;
    for (size_t s = 0; s < p.lengths.size(); ++s) for (int t = 0; t < p.lengths[s]; ++t) token_positions.push_back(p.starts[s] + t);
    const int* positions = ragged ? token_positions.data() : nullptr;
    const int position_offset = p.position_offset; // with positions, a kernel must ignore it
    std::vector<double> y_ref(2 * count), dx_ref(count), dtheta_ref(columns, 0.0);
    for (long long bt = 0; bt < rows; ++bt) for (int h = 0; h < H; ++h) for (int j = 0; j < W; ++j) {
        const double position = ragged ? (double)token_positions[bt] : p.position_offset + (double)(bt % p.T);
        const double angle = (double)to_float(theta[h * W + j]) * position, c = std::cos(angle), s = std::sin(angle);
        const size_t e = ((size_t)bt * H + h) * W + j, o = ((size_t)bt * H + h) * 2 * W + j;
        const double v = to_float(x[e]), dc = to_float(dy[o]), ds = to_float(dy[o + W]);
        y_ref[o] = v * c;
        y_ref[o + W] = v * s;
        dx_ref[e] = dc * c + ds * s;
        dtheta_ref[h * W + j] += position * v * (ds * c - dc * s);
    }
    const dim3 grid = elementwise_grid(p.sms, (long long)count); // LrpeCuda: Elementwise.Grid over the elements of x
    const auto plan = column_sum_plan(p.sms, rows, columns);
    printf("%s B%d T%d H%d W%d position %d sms%d: %u blocks, %d chunks", type_name<T>(), p.B, p.T, H, W, p.position_offset, p.sms,
           grid.x, plan.chunks);
    if (ragged) {
        printf(", ragged lengths");
        for (size_t s = 0; s < p.lengths.size(); ++s) printf(" %d@%d", p.lengths[s], p.starts[s]);
    }
    printf("\n");
    int fails = 0;

    auto y = filled<T>(2 * count, NAN); // every element must be written
    emu_launch(grid, dim3{elementwise_threads}, [&] {
        lrpe_forward<T>(y.data(), x.data(), theta.data(), rows, p.T, H, W, position_offset, positions); });
    fails += check_output("y", floats(y), y_ref, tolerance_of<T>());

    // dx: always added into.
    const auto dx0 = starting_values<T>(rng, dx_ref);
    auto dx = dx0;
    emu_launch(grid, dim3{elementwise_threads}, [&] {
        lrpe_backward<T>(dx.data(), theta.data(), dy.data(), rows, p.T, H, W, position_offset, positions); });
    fails += check_added<T>("dx", dx, dx0, dx_ref);

    // dθ: LrpeCuda.Backward finalizes with accumulate; the kernel's overwriting mode is checked too.
    std::vector<float> partial((size_t)plan.chunks * columns, NAN);
    emu_launch(column_sum_grid(columns, plan.chunks), column_sum_block, [&] {
        lrpe_theta_backward_partials<T>(partial.data(), x.data(), theta.data(), dy.data(), rows, p.T, H, W, position_offset, positions,
                                        plan.rows_per_chunk); });
    for (int accumulate = 0; accumulate < 2; ++accumulate) {
        auto start = starting_values<T>(rng, dtheta_ref);
        const auto before = accumulate ? start : std::vector<T>(columns, from_float<T>(0.0f));
        auto dtheta = start;
        emu_launch(finalize_grid(columns), dim3{finalize_threads}, [&] {
            lrpe_theta_backward_finalize<T>(dtheta.data(), partial.data(), plan.chunks, columns, accumulate); });
        fails += check_added<T>(accumulate ? "dtheta+" : "dtheta=", dtheta, before, dtheta_ref);
    }
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 1, 1, h200_sms});      // one element (position 1: at 0, dθ is zero)
    fails += run_all({2, 3, 3, 5, 2, h200_sms});      // odd heads and width
    fails += run_all({3, 50, 2, 24, 0, h200_sms});    // 150 rows in three chunks, 48 columns in two tiles
    fails += run_all({1, 40, 4, 60, 1000, 1});        // 9,600 elements on 32 blocks (grid-stride), long positions
    // Ragged: lengths 3, 1, 5 from positions 2, 0, 1000 (the position_offset given, 7, must be ignored); one sequence of 1
    // token at 30; 70 rows in two chunks on a clamped grid.
    fails += run_all({1, 9, 3, 5, 7, h200_sms, {3, 1, 5}, {2, 0, 1000}});
    fails += run_all({1, 1, 2, 8, 0, h200_sms, {1}, {30}});
    fails += run_all({1, 70, 2, 24, 0, 1, {40, 1, 29}, {0, 500, 3}});
    printf("%d failing\n", fails);
    return fails != 0;
}

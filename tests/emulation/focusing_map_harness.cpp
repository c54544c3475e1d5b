// cuda/focusing_map.cu (FLatten's focusing map: forward, the row backward dx, and the two-stage dscale column sums) in fp32,
// bf16 and fp16 under the emulation of cuda_shim.h, against the math of FocusingMapCpu in double on the same rounded inputs:
// u = (ReLU(x) + ε)/softplus(scale), ŵ = u^p/‖u^p‖, y = ‖u‖ŵ; with s = dy·ŵ, n = ‖u‖, du = s·u/n + p·n·ŵ⊙(dy − s·ŵ)/u,
// dx += du/softplus(scale) where x > 0, dscale −= Σ_rows du⊙u · sigmoid(scale)/softplus(scale). y by design.md's
// tolerance for T, the per-row statistics (fp32) at 1e-4, dx and dscale (added into) by check_added. Launches as
// FocusingMapCuda (src/Managed/Attention.Native/Ops/FocusingMap/FocusingMapCuda.cs): one warp per row, 8 warps per block;
// dscale's partials on grid (ceil(C/32), chunks) × (32, 8) with ColumnSum.Plan's chunks, the finalize on ceil(C/256) × 256.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "focusing_map.emu.cpp"
#include <random>
#include <algorithm>

struct P { long long rows; int C; float p; int sms; bool in_place = false; };

// ColumnSum.Plan (src/Managed/Attention.Native/Ops/ColumnSum.cs): row chunks of at least 64 rows, enough to fill the device.
static std::pair<int, long long> column_sum_plan(int sms, long long rows, int n)
{
    if (rows <= 0) return {1, 1};
    const long long column_blocks = std::max(1LL, (long long)(n + 31) / 32), wanted = std::max(1LL, 4LL * sms / column_blocks);
    const long long chunks = std::clamp((rows + 63) / 64, 1LL, std::min(wanted, 1024LL)), per_chunk = (rows + chunks - 1) / chunks;
    return {(int)((rows + per_chunk - 1) / per_chunk), per_chunk};
}

template <typename T>
int run(P p)
{
    std::mt19937 rng((unsigned)(p.rows * 31 + p.C * 7) + (unsigned)(p.p * 10));
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n, float mean, float sd) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(mean + sd * nd(rng)); return x; };
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    auto floats = [](const std::vector<T>& x) { std::vector<float> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    const long long rows = p.rows;
    const int C = p.C;
    const double fp = (double)p.p;
    auto x = vec((size_t)rows * C, 0, 1), scale = vec(C, 0.3f, 1), dy = vec(x.size(), 0, 1);
    x[0] = from_float<T>(std::fabs(to_float(x[0]))); // a single element must be positive, else dx is zero by the math
    std::vector<double> sp(C), sg(C);
    for (int c = 0; c < C; ++c) {
        const double s = F(scale, c);
        sp[c] = std::max(s, 0.0) + std::log1p(std::exp(-std::fabs(s)));
        sg[c] = 1 / (1 + std::exp(-s));
    }
    std::vector<double> y_ref(x.size()), stats_ref((size_t)rows * 4), dx_c(x.size()), dscale_c(C);
    for (long long r = 0; r < rows; ++r) {
        std::vector<double> u(C), w(C);
        double nn = 0, largest = 0, pn = 0, s = 0;
        for (int c = 0; c < C; ++c) { u[c] = (std::max(F(x, r * C + c), 0.0) + 1e-6) / sp[c]; nn += u[c] * u[c]; largest = std::max(largest, u[c]); }
        nn = std::sqrt(nn);
        for (int c = 0; c < C; ++c) { w[c] = std::pow(u[c] / largest, fp); pn += w[c] * w[c]; }
        pn = std::sqrt(pn);
        for (int c = 0; c < C; ++c) { w[c] /= pn; y_ref[r * C + c] = nn * w[c]; s += F(dy, r * C + c) * w[c]; }
        stats_ref[4 * r] = nn; stats_ref[4 * r + 1] = largest; stats_ref[4 * r + 2] = pn; stats_ref[4 * r + 3] = s;
        for (int c = 0; c < C; ++c) {
            const double du = s * u[c] / nn + fp * nn * w[c] * (F(dy, r * C + c) - s * w[c]) / u[c];
            if (F(x, r * C + c) > 0) dx_c[r * C + c] = du / sp[c];
            dscale_c[c] -= du * u[c] * sg[c] / sp[c];
        }
    }
    const unsigned row_blocks = (unsigned)((rows + 7) / 8);
    std::vector<T> y = p.in_place ? x : vec(x.size(), 0, 1); // in place: y is x (the kernel reads a row's x before writing it)
    emu_launch(dim3{row_blocks}, dim3{256}, [&] { focusing_map_forward<T>(y.data(), p.in_place ? y.data() : x.data(), scale.data(), rows, C, p.p); });
    const auto dx0 = starting_values<T>(rng, dx_c), dscale0 = starting_values<T>(rng, dscale_c);
    std::vector<T> dx = dx0, dscale = dscale0;
    const auto [chunks, rows_per_chunk] = column_sum_plan(p.sms, rows, C);
    std::vector<float> stats((size_t)rows * 4), partial((size_t)chunks * C);
    emu_launch(dim3{row_blocks}, dim3{256}, [&] {
        focusing_map_backward<T>(dx.data(), stats.data(), x.data(), scale.data(), dy.data(), rows, C, p.p); });
    emu_launch(dim3{(unsigned)((C + 31) / 32), (unsigned)chunks}, dim3{32, 8}, [&] {
        focusing_map_scale_backward_partials<T>(partial.data(), x.data(), scale.data(), dy.data(), stats.data(), rows, C, p.p, rows_per_chunk); });
    emu_launch(dim3{(unsigned)((C + 255) / 256)}, dim3{256}, [&] {
        focusing_map_scale_backward_finalize<T>(dscale.data(), partial.data(), scale.data(), chunks, C); });
    printf("%s rows%lld C%d p%.2f chunks%d%s\n", type_name<T>(), rows, C, p.p, chunks, p.in_place ? " in place" : "");
    int fails = check("y", floats(y), y_ref, tolerance_of<T>()) > tolerance_of<T>();
    fails += check("stats", stats, stats_ref, 1e-4) > 1e-4; // fp32 whatever T
    fails += check_added<T>("dx", dx, dx0, dx_c);
    fails += check_added<T>("dscale", dscale, dscale0, dscale_c);
    return fails != 0;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 3, 132});          // one row of one channel
    fails += run_all({13, 40, 3, 132, true});  // ragged: 13 rows (a partly idle block), 40 channels (two column tiles), in place
    fails += run_all({130, 70, 1.5f, 132});    // three row chunks for dscale (the last short), a fractional power
    fails += run_all({200, 24, 2, 1});         // one multiprocessor: chunks as many as it wants (4 · 1), 50 rows each
    printf("%d failing\n", fails);
    return fails != 0;
}

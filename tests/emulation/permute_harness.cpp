// cuda/permute.cu (contiguous transpose of rank ≤ 6, torch.permute(x, p).contiguous(), forward and dx) in fp32, bf16 and
// fp16 under the emulation of cuda_shim.h: the forward must move every value unchanged, the backward add the inverse
// permutation of dy; ranks 1 … 6 (padded to six axes as the launcher does), the identity, axes of length 1, and a clamped
// grid (grid-stride).
#include "cuda_shim.h"
#include "bf16_check.h"
#include "permute.emu.cpp"
#include "launch_plans.h"

#include <array>

struct P { std::vector<int> dims, perm; int sms; };

// Ops/Permute/PermuteCpu.cs PermutePlan: the written tensor's dims padded in front to six axes, and per axis the stride of
// the axis it reads in the contiguous tensor read (0 for padding). Written axis a reads axis read_axis[a].
struct Plan { std::array<int, 6> d; std::array<long long, 6> s; long long n; };
static Plan plan_of(const std::vector<int>& written, const std::vector<int>& read, const std::vector<int>& read_axis)
{
    const int rank = (int)written.size(), pad = 6 - rank;
    std::vector<long long> read_strides(rank);
    long long stride = 1;
    for (int k = rank - 1; k >= 0; --k) { read_strides[k] = stride; stride *= read[k]; }
    Plan p{};
    p.n = 1;
    for (int a = 0; a < 6; ++a) { p.d[a] = 1; p.s[a] = 0; }
    for (int a = 0; a < rank; ++a) { p.d[pad + a] = written[a]; p.s[pad + a] = read_strides[read_axis[a]]; p.n *= written[a]; }
    return p;
}

template <typename T>
int run(const P& p)
{
    const int rank = (int)p.dims.size();
    std::vector<int> out_dims(rank), inverse(rank);
    for (int a = 0; a < rank; ++a) { out_dims[a] = p.dims[p.perm[a]]; inverse[p.perm[a]] = a; }
    size_t n = 1;
    for (int d : p.dims) n *= (size_t)d;
    std::mt19937 rng((unsigned)n * 7 + (unsigned)rank);
    auto x = random_values<T>(rng, n), dy = random_values<T>(rng, n);
    // Reference: y[i] = x[j] with j[perm[a]] = i[a], walked by the multi-index i of y; dx[j] gets dy[i] back.
    std::vector<double> y_ref(n), dx_ref(n);
    std::vector<int> i(rank), j(rank);
    for (size_t e = 0; e < n; ++e) {
        size_t rest = e;
        for (int a = rank - 1; a >= 0; --a) { i[a] = (int)(rest % out_dims[a]); rest /= out_dims[a]; }
        for (int a = 0; a < rank; ++a) j[p.perm[a]] = i[a];
        size_t src = 0;
        for (int a = 0; a < rank; ++a) src = src * p.dims[a] + j[a];
        y_ref[e] = to_float(x[src]);
        dx_ref[src] = to_float(dy[e]);
    }
    const Plan fwd = plan_of(out_dims, p.dims, p.perm), bwd = plan_of(p.dims, out_dims, inverse);
    const dim3 grid = elementwise_grid(p.sms, (long long)n);
    printf("%s rank%d n%zu sms%d: %u blocks\n", type_name<T>(), rank, n, p.sms, grid.x);
    int fails = 0;

    auto y = filled<T>(n, NAN); // every element must be written
    emu_launch(grid, dim3{elementwise_threads}, [&] {
        permute_forward<T>(y.data(), x.data(), fwd.n, fwd.d[0], fwd.d[1], fwd.d[2], fwd.d[3], fwd.d[4], fwd.d[5], fwd.s[0], fwd.s[1], fwd.s[2], fwd.s[3], fwd.s[4], fwd.s[5]);
    });
    fails += check_output("y", floats(y), y_ref, 0.0); // a copy: exact

    const auto dx0 = starting_values<T>(rng, dx_ref);
    auto dx = dx0;
    emu_launch(grid, dim3{elementwise_threads}, [&] {
        permute_backward<T>(dx.data(), dy.data(), bwd.n, bwd.d[0], bwd.d[1], bwd.d[2], bwd.d[3], bwd.d[4], bwd.d[5], bwd.s[0], bwd.s[1], bwd.s[2], bwd.s[3], bwd.s[4], bwd.s[5]);
    });
    fails += check_added<T>("dx", dx, dx0, dx_ref);
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](const P& p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({{1}, {0}, h200_sms});                                  // one element
    fails += run_all({{37}, {0}, h200_sms});                                 // rank 1
    fails += run_all({{5, 9}, {1, 0}, h200_sms});                            // a transpose
    fails += run_all({{4, 6, 3}, {0, 1, 2}, h200_sms});                      // the identity
    fails += run_all({{4, 6, 3}, {2, 0, 1}, h200_sms});                      // a cycle
    fails += run_all({{2, 7, 3, 16}, {0, 2, 1, 3}, h200_sms});               // heads: [B, T, h, d] → [B, h, T, d]
    fails += run_all({{2, 1, 5, 3, 4}, {4, 1, 3, 0, 2}, h200_sms});          // rank 5 with an axis of 1
    fails += run_all({{2, 3, 2, 4, 3, 2}, {5, 4, 3, 2, 1, 0}, h200_sms});    // rank 6 reversed
    fails += run_all({{3, 2, 2, 3, 2, 5}, {1, 3, 5, 0, 2, 4}, h200_sms});    // rank 6 interleaved
    fails += run_all({{2, 49, 8, 64}, {0, 3, 1, 2}, 1});                     // 50,176 elements on 32 blocks (grid-stride)
    printf("%d failing\n", fails);
    return fails != 0;
}

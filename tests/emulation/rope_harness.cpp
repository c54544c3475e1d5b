// cuda/rope.cu (forward and backward, half and interleaved pairs, a rotated slice with the rest copied, in place) in fp32,
// bf16 and fp16 under the emulation of cuda_shim.h, against variants.md's RoPE in double on the same rounded inputs: a single
// pair, odd head counts and sequence lengths, a slice in the middle of the row, more pairs than threads (the pair loop runs
// twice), a row wider than the block (the copy loop runs three times), positions past 10^5 (angles in double); YaRN scaling
// (variants.md "RoPE scaling": the frequency ramp and the amplitude on cos and sin) with DeepSeek-V3's values and others;
// ragged batches [1, N, …] (per-token positions: sequences of different lengths, one of 1 token, starting past position 0).
#include "cuda_shim.h"
#include "bf16_check.h"
#include "rope.emu.cpp"
#include "launch_plans.h"

// YaRN's rope_scaling; factor 0 = none.
struct Yarn { double factor = 0; int original = 0; double beta_fast = 32, beta_slow = 1, mscale = 1, mscale_all_dim = 0; };
// lengths/starts non-empty: a ragged batch (B = 1, T = Σ lengths), sequence s's tokens at starts[s], starts[s] + 1, … (the
// kernel reads these per-token positions; position_offset is then ignored).
struct P { int B, T, H, width, offset, rotary; bool interleaved, in_place; int position_offset; Yarn yarn = {}; std::vector<int> lengths = {}, starts = {}; };

// The position of every row b·T + t: SequenceLayout.TokenPositions for a ragged batch, else position_offset + t.
static std::vector<int> row_positions(const P& p)
{
    std::vector<int> positions;
    if (p.lengths.empty()) {
        for (int b = 0; b < p.B; ++b) for (int t = 0; t < p.T; ++t) positions.push_back(p.position_offset + t);
    } else {
        for (size_t s = 0; s < p.lengths.size(); ++s) for (int t = 0; t < p.lengths[s]; ++t) positions.push_back(p.starts[s] + t);
    }
    return positions;
}

// variants.md "RoPE scaling" on the rotated width n: corr(r) = n·ln(L0/(2πr))/(2 ln b); lo = max(floor(corr(βf)), 0),
// hi = min(ceil(corr(βs)), n−1), hi += 0.001 if equal.
static std::pair<double, double> yarn_ramp(const Yarn& y, int n, double base)
{
    auto corr = [&](double r) { return n * std::log(y.original / (2 * M_PI * r)) / (2 * std::log(base)); };
    const double lo = std::max(std::floor(corr(y.beta_fast)), 0.0);
    double hi = std::min(std::ceil(corr(y.beta_slow)), (double)(n - 1));
    if (lo == hi) hi += 0.001;
    return {lo, hi};
}

static double yarn_mu(double s, double a) { return s > 1 ? 0.1 * a * std::log(s) + 1 : 1; }

// variants.md: pair (a, b) at position p turns by p·θ_j, θ_j = base^(−2j/n) (YaRN: θ⁰_j/s · ramp_j + θ⁰_j · (1 − ramp_j),
// cos and sin times μ(s, m)/μ(s, m_a)); sign −1 turns back (the backward).
static std::vector<double> rotate(const std::vector<double>& x, const P& p, double base, double sign)
{
    std::vector<double> y = x;
    const int half = p.rotary / 2;
    const bool yarn = p.yarn.factor > 0;
    const auto [lo, hi] = yarn ? yarn_ramp(p.yarn, p.rotary, base) : std::pair<double, double>{0, 1};
    const double amplitude = yarn ? yarn_mu(p.yarn.factor, p.yarn.mscale) / yarn_mu(p.yarn.factor, p.yarn.mscale_all_dim) : 1;
    const auto positions = row_positions(p);
    for (int b = 0; b < p.B; ++b) for (int t = 0; t < p.T; ++t) for (int h = 0; h < p.H; ++h) {
        const size_t row = (((size_t)b * p.T + t) * p.H + h) * p.width;
        for (int j = 0; j < half; ++j) {
            double theta = std::pow(base, -2.0 * j / p.rotary);
            if (yarn) {
                const double ramp = std::clamp((j - lo) / (hi - lo), 0.0, 1.0);
                theta = theta / p.yarn.factor * ramp + theta * (1 - ramp);
            }
            const double angle = (double)positions[(size_t)b * p.T + t] * theta;
            const double c = amplitude * std::cos(angle), s = amplitude * sign * std::sin(angle);
            const size_t ia = row + p.offset + (p.interleaved ? 2 * j : j), ib = p.interleaved ? ia + 1 : ia + half;
            y[ia] = x[ia] * c - x[ib] * s;
            y[ib] = x[ib] * c + x[ia] * s;
        }
    }
    return y;
}

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 31 + p.T * 7 + p.width + p.offset);
    const double base = 10000.0;
    const size_t count = (size_t)p.B * p.T * p.H * p.width;
    auto x = random_values<T>(rng, count), dy = random_values<T>(rng, count);
    // RopeCuda.Apply: one block per (b, t); threads: the pairs, or the row when the rest is copied, rounded up to a warp,
    // 32 … 256.
    const bool copies = p.rotary < p.width && !p.in_place;
    auto round32 = [](int n) { return (n + 31) / 32 * 32; };
    const unsigned threads = (unsigned)std::clamp(round32(std::max(p.rotary / 2, copies ? p.width : 1)), 32, 256);
    const dim3 grid{(unsigned)(p.B * p.T)};
    printf("%s B%d T%d H%d width%d rotary%d at %d %s%s position %d, %u threads", type_name<T>(), p.B, p.T, p.H, p.width, p.rotary,
           p.offset, p.interleaved ? "interleaved" : "half", p.in_place ? " in place" : "", p.position_offset, threads);
    // A ragged batch: RopeCuda passes the per-token positions as SequenceLayout.TokenPositions gives them.
    const bool ragged = !p.lengths.empty();
    const auto token_positions = row_positions(p);
    const int* positions = ragged ? token_positions.data() : nullptr;
    const int position_offset = p.position_offset; // with positions, a kernel must ignore it
    if (ragged) {
        printf(", ragged lengths");
        for (size_t s = 0; s < p.lengths.size(); ++s) printf(" %d@%d", p.lengths[s], p.starts[s]);
    }
    // RopeCuda.Apply: scaled = 1 with the factor, the ramp's ends and μ(s, m)/μ(s, m_a); else 0, 1, 0, 1, 1.
    const bool yarn = p.yarn.factor > 0;
    const auto [low, high] = yarn ? yarn_ramp(p.yarn, p.rotary, base) : std::pair<double, double>{0, 1};
    const double factor = yarn ? p.yarn.factor : 1;
    const double amplitude = yarn ? yarn_mu(p.yarn.factor, p.yarn.mscale) / yarn_mu(p.yarn.factor, p.yarn.mscale_all_dim) : 1;
    if (yarn) printf(", yarn factor %g L0 %d ramp %g…%g amplitude %g", factor, p.yarn.original, low, high, amplitude);
    printf("\n");
    int fails = 0;

    // Forward; y starts NaN (or is x itself): every element must be written, the copied ones too.
    auto y = p.in_place ? x : filled<T>(count, NAN);
    const T* xin = p.in_place ? y.data() : x.data();
    emu_launch(grid, dim3{threads}, [&] {
        rope_forward<T>(y.data(), xin, p.T, p.H, p.width, p.offset, p.rotary, p.interleaved, position_offset, positions, base, yarn,
                       factor, low, high, amplitude); });
    fails += check_output("y", floats(y), rotate(doubles(x), p, base, 1.0), tolerance_of<T>());

    // Backward: dx = dy turned back; it overwrites dx (garbage at the start, so its contribution counts from zero).
    const auto dx_ref = rotate(doubles(dy), p, base, -1.0);
    auto dx = p.in_place ? dy : starting_values<T>(rng, dx_ref);
    const T* dyin = p.in_place ? dx.data() : dy.data();
    emu_launch(grid, dim3{threads}, [&] {
        rope_backward<T>(dx.data(), dyin, p.T, p.H, p.width, p.offset, p.rotary, p.interleaved, position_offset, positions, base, yarn,
                        factor, low, high, amplitude); });
    fails += check_added<T>("dx", dx, std::vector<T>(count, from_float<T>(0.0f)), dx_ref);
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 2, 0, 2, false, false, 0});      // one pair at position 0
    fails += run_all({2, 3, 3, 20, 0, 20, false, false, 5});    // the whole row, half pairs
    fails += run_all({1, 5, 2, 40, 8, 24, true, false, 7});     // interleaved slice in the middle: columns on both sides copied
    fails += run_all({2, 3, 3, 40, 16, 24, false, true, 3});    // trailing slice in place (MLA's d_r): nothing copied
    fails += run_all({1, 2, 1, 600, 0, 600, false, false, 100000}); // 300 pairs on 256 threads, long-context angles
    fails += run_all({1, 2, 3, 600, 40, 520, true, false, 11}); // copies: a 600-wide row on 256 threads
    fails += run_all({1, 3, 1, 30, 0, 30, true, true, 0});      // interleaved in place, one head
    // YaRN. DeepSeek-V3 (factor 40, L0 4096, β 32/1, mscale 1/1) on MLA's d_r 64: ramp over pairs 10 … 23, amplitude 1; at
    // positions past L0 and 10^5.
    const Yarn v3{40, 4096, 32, 1, 1, 1};
    fails += run_all({2, 3, 3, 192, 128, 64, true, true, 5000, v3});     // MLA q_pe: trailing 64 of 192, in place
    fails += run_all({1, 2, 1, 64, 0, 64, true, false, 163840, v3});     // k_pe at 160k positions
    // mscale 1, mscale_all_dim 0 (the defaults): amplitude μ(40, 1) = 1.369 on cos and sin; half pairs, a copied slice.
    fails += run_all({1, 3, 2, 80, 8, 64, false, false, 4100, Yarn{40, 4096}});
    // DeepSeek-V2's mscale 0.707/0.707; then the clamps: an L0 so long that hi = n−1 (300 pairs on 256 threads), one so
    // short that lo = 0, and L0 4 on n 16, where lo = hi = 0 and hi becomes 0.001.
    fails += run_all({1, 2, 3, 128, 0, 128, false, true, 30000, Yarn{40, 4096, 32, 1, 0.707, 0.707}});
    fails += run_all({1, 2, 2, 600, 0, 600, true, false, 9000, Yarn{4, 1000000000, 64, 0.5, 0.8, 0.3}});
    fails += run_all({2, 2, 1, 16, 0, 16, false, false, 70, Yarn{4, 64}});
    fails += run_all({1, 3, 2, 16, 0, 16, true, false, 3, Yarn{4, 4}});
    // Ragged batches [1, N, …]: lengths 3, 1, 4 from positions 5, 0, 100000 (a copied slice; the position_offset given, 7,
    // must be ignored); a single-token sequence between two long ones in place with YaRN past L0; one sequence of 1 token.
    fails += run_all({1, 8, 3, 40, 8, 24, true, false, 7, {}, {3, 1, 4}, {5, 0, 100000}});
    fails += run_all({1, 6, 2, 64, 0, 64, false, true, 0, Yarn{40, 4096}, {2, 1, 3}, {4100, 9000, 0}});
    fails += run_all({1, 1, 2, 16, 0, 16, false, false, 0, {}, {1}, {12}});
    printf("%d failing\n", fails);
    return fails != 0;
}

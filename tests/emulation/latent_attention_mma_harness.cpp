// cuda/latent_attention_mma.cu (MLA's absorbed decode on tensor cores, bf16 and fp16, latent 512 + rope 64) with latent_attention.cu's
// absorb and combine, under the emulation of cuda_shim.h + mma_shim.h, against a double-precision reference of the absorbed
// form on the same 16-bit-rounded inputs: causal query tokens, a cache with garbage past the valid length, several splits
// (one empty), partial tiles, and a head count that leaves the second 16-head block partly empty. o by design.md's tolerance
// for T; each split's partial log-sum-exp (fp32) at 1e-4, its reference scoring with q̂ rounded to T as the kernel does.
// The paged form (run_paged): several sequences in a pool of shuffled, partly shared pages, read through block tables.
#include "cuda_shim.h"
#include "mma_shim.h"
#include "bf16_check.h"
#include "split_check.h"
#include "paged_layout.h"
#include "latent_attention.emu.cpp"
#include "latent_attention_mma.emu.cpp"
#include <random>

struct P { int B, Tq, H, Cap, L, keys_per_split; };
constexpr int Latent = 512, Rope = 64, Nope = 16, Dv = 16, W = Latent + Rope;

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 31 + p.H * 7 + p.L);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n, float s) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng) * s); return x; };
    const int B = p.B, Tq = p.Tq, H = p.H, Cap = p.Cap;
    auto q = vec((size_t)B * Tq * H * (Nope + Rope), 1.0f), cache = vec((size_t)B * Cap * W, 1.0f);
    auto kv_up = vec((size_t)H * (Nope + Dv) * Latent, 1.0f / std::sqrt((float)Latent));
    for (int b = 0; b < B; ++b) for (int s = p.L; s < Cap; ++s) for (int c = 0; c < W; ++c) cache[((size_t)b * Cap + s) * W + c] = from_float<T>(1000);
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    const double scale = 1.0 / std::sqrt((double)(Nope + Rope));
    std::vector<double> o_ref((size_t)B * Tq * H * Dv);
    const int splits = (p.L + p.keys_per_split - 1) / p.keys_per_split + 1; // the last split lies past L: it sees nothing
    std::vector<double> split_ref((size_t)splits * B * Tq * H);
    for (int b = 0; b < B; ++b) for (int t = 0; t < Tq; ++t) for (int h = 0; h < H; ++h) {
        const size_t row = ((size_t)b * Tq + t) * H + h;
        const int vis = std::min(p.L, p.L - Tq + t + 1);
        std::vector<double> qhat(W, 0.0), s(vis), avg(Latent, 0.0);
        for (int c = 0; c < Latent; ++c) for (int i = 0; i < Nope; ++i) qhat[c] += F(q, row * (Nope + Rope) + i) * F(kv_up, ((size_t)h * (Nope + Dv) + i) * Latent + c);
        for (int c = 0; c < Rope; ++c) qhat[Latent + c] = F(q, row * (Nope + Rope) + Nope + c);
        double m = -1e300, sum = 0;
        for (int j = 0; j < vis; ++j) {
            double dot = 0;
            for (int c = 0; c < W; ++c) dot += qhat[c] * F(cache, ((size_t)b * Cap + j) * W + c);
            s[j] = dot * scale;
            m = std::max(m, s[j]);
        }
        for (int j = 0; j < vis; ++j) { s[j] = std::exp(s[j] - m); sum += s[j]; }
        for (int j = 0; j < vis; ++j) for (int c = 0; c < Latent; ++c) avg[c] += s[j] / sum * F(cache, ((size_t)b * Cap + j) * W + c);
        for (int jv = 0; jv < Dv; ++jv) for (int c = 0; c < Latent; ++c) o_ref[row * Dv + jv] += F(kv_up, ((size_t)h * (Nope + Dv) + Nope + jv) * Latent + c) * avg[c];
    }

    const int tokens = B * Tq;
    const size_t rows = (size_t)tokens * H;
    std::vector<float> qhat(rows * W), partial_o(splits * rows * Latent), partial_ml(splits * rows * 2);
    emu_launch(dim3{(unsigned)((rows * W + 255) / 256)}, dim3{256}, [&] {
        latent_attention_absorb<T>(qhat.data(), q.data(), kv_up.data(), (index_t)rows, H, Nope, Rope, Latent, Dv); });
    emu_launch(dim3{(unsigned)splits, (unsigned)tokens, (unsigned)((H + LMLA_ROWS - 1) / LMLA_ROWS)}, dim3{LMLA_THREADS}, [&] {
        latent_attention_decode_mma<T, Latent, Rope>(partial_o.data(), partial_ml.data(), qhat.data(), cache.data(), 0, Tq, H,
                                                          Latent, Rope, Cap, p.L, (float)scale, p.keys_per_split, PagedKeys{}); });
    // The split reference on what the kernel scores with: absorb's fp32 q̂, rounded to T by design (its 16-bit A operand).
    for (int b = 0; b < B; ++b) for (int t = 0; t < Tq; ++t) for (int h = 0; h < H; ++h) {
        const size_t row = ((size_t)b * Tq + t) * H + h;
        std::vector<double> s(std::min(p.L, p.L - Tq + t + 1));
        for (size_t j = 0; j < s.size(); ++j) {
            double dot = 0;
            for (int c = 0; c < W; ++c) dot += (double)to_float(from_float<T>(qhat[row * W + c])) * F(cache, ((size_t)b * Cap + j) * W + c);
            s[j] = dot * scale;
        }
        split_lse_ref(split_ref, rows, row, s, p.keys_per_split, splits);
    }
    std::vector<T> o(o_ref.size());
    emu_launch(dim3{(unsigned)rows}, dim3{SPLIT_THREADS}, [&] {
        latent_attention_decode_combine<T>(o.data(), partial_o.data(), partial_ml.data(), kv_up.data(), H, Nope, Latent, Dv, splits, nullptr,
                                           p.keys_per_split); });
    std::vector<float> of(o.size());
    for (size_t i = 0; i < o.size(); ++i) of[i] = to_float(o[i]);
    printf("%s B%d Tq%d H%d Cap%d L%d splits%d\n", type_name<T>(), B, Tq, H, Cap, p.L, splits);
    int fails = check("o", of, o_ref, tolerance_of<T>()) > tolerance_of<T>();
    fails += check_split_lse("split", partial_ml, split_ref);
    return fails != 0;
}

// The paged form as PagedAttentionCuda.Latent launches it: q [1, N_q, H, dn + dr] packs each sequence's new queries, the
// latents are a pool [P, page_size, W] read through the block tables; the splits are planned for the longest sequence and
// the blocks past a token's keys exit: the partials start as NaN, a combine that read one fails, and each must still be NaN
// where its split holds none of the token's keys.
struct PP { int page_size; std::vector<int> lengths, queries; std::vector<std::array<int, 3>> shares; int H, keys_per_split; };

template <typename T>
int run_paged(const PP& p)
{
    const PagedBatch pb = make_paged_batch(p.page_size, p.lengths, p.queries, p.shares, 1, (unsigned)(p.H * 17 + p.page_size));
    std::mt19937 rng(pb.tokens * 5 + p.H);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n, float s) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng) * s); return x; };
    const int H = p.H, N = pb.tokens;
    auto q = vec((size_t)N * H * (Nope + Rope), 1.0f), pool = vec(pb.slots() * W, 1.0f);
    auto kv_up = vec((size_t)H * (Nope + Dv) * Latent, 1.0f / std::sqrt((float)Latent));
    for (size_t slot = 0; slot < pb.slots(); ++slot) if (!pb.used[slot]) for (int c = 0; c < W; ++c) pool[slot * W + c] = from_float<T>(1000);
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    const double scale = 1.0 / std::sqrt((double)(Nope + Rope));
    const size_t rows = (size_t)N * H;
    std::vector<double> o_ref(rows * Dv);
    for (int t = 0; t < N; ++t) for (int h = 0; h < H; ++h) {
        const int s = pb.sequence[t], vis = pb.visible[t];
        const size_t row = (size_t)t * H + h;
        std::vector<double> qhat(W, 0.0), sc(vis), avg(Latent, 0.0);
        for (int c = 0; c < Latent; ++c) for (int i = 0; i < Nope; ++i) qhat[c] += F(q, row * (Nope + Rope) + i) * F(kv_up, ((size_t)h * (Nope + Dv) + i) * Latent + c);
        for (int c = 0; c < Rope; ++c) qhat[Latent + c] = F(q, row * (Nope + Rope) + Nope + c);
        double m = -1e300, sum = 0;
        for (int j = 0; j < vis; ++j) {
            double dot = 0;
            for (int c = 0; c < W; ++c) dot += qhat[c] * F(pool, pb.slot(s, j) * W + c);
            sc[j] = dot * scale;
            m = std::max(m, sc[j]);
        }
        for (int j = 0; j < vis; ++j) { sc[j] = std::exp(sc[j] - m); sum += sc[j]; }
        for (int j = 0; j < vis; ++j) for (int c = 0; c < Latent; ++c) avg[c] += sc[j] / sum * F(pool, pb.slot(s, j) * W + c);
        for (int jv = 0; jv < Dv; ++jv) for (int c = 0; c < Latent; ++c) o_ref[row * Dv + jv] += F(kv_up, ((size_t)h * (Nope + Dv) + Nope + jv) * Latent + c) * avg[c];
    }

    const int splits = (pb.max_length + p.keys_per_split - 1) / p.keys_per_split;
    const PagedKeys paged{pb.table.data(), pb.sequence.data(), pb.visible.data(), pb.pages_per_sequence, pb.page_size};
    std::vector<float> qhat(rows * W), partial_o(splits * rows * Latent, NAN), partial_ml(splits * rows * 2, NAN);
    emu_launch(dim3{(unsigned)((rows * W + 255) / 256)}, dim3{256}, [&] {
        latent_attention_absorb<T>(qhat.data(), q.data(), kv_up.data(), (index_t)rows, H, Nope, Rope, Latent, Dv); });
    emu_launch(dim3{(unsigned)splits, (unsigned)N, (unsigned)((H + LMLA_ROWS - 1) / LMLA_ROWS)}, dim3{LMLA_THREADS}, [&] {
        latent_attention_decode_mma<T, Latent, Rope>(partial_o.data(), partial_ml.data(), qhat.data(), pool.data(), 0, 1, H,
                                                          Latent, Rope, 0, pb.max_length, (float)scale, p.keys_per_split, paged); });
    // The split reference on what the kernel scores with, absorb's q̂ rounded to T (as the dense case above).
    std::vector<double> split_ref((size_t)splits * rows);
    for (int t = 0; t < N; ++t) for (int h = 0; h < H; ++h) {
        const size_t row = (size_t)t * H + h;
        std::vector<double> sc(pb.visible[t]);
        for (size_t j = 0; j < sc.size(); ++j) {
            double dot = 0;
            for (int c = 0; c < W; ++c) dot += (double)to_float(from_float<T>(qhat[row * W + c])) * F(pool, pb.slot(pb.sequence[t], (int)j) * W + c);
            sc[j] = dot * scale;
        }
        split_lse_ref(split_ref, rows, row, sc, p.keys_per_split, splits);
    }
    std::vector<T> o(o_ref.size());
    emu_launch(dim3{(unsigned)rows}, dim3{SPLIT_THREADS}, [&] {
        latent_attention_decode_combine<T>(o.data(), partial_o.data(), partial_ml.data(), kv_up.data(), H, Nope, Latent, Dv, splits, pb.visible.data(),
                                           p.keys_per_split); });
    printf("%s paged: page %d, %d sequences (lengths", type_name<T>(), pb.page_size, pb.count());
    for (int s = 0; s < pb.count(); ++s) printf(" %d/%dq", pb.lengths[s], pb.queries[s]);
    printf("), %zu shared, pool %d pages, H%d splits%d\n", p.shares.size(), pb.pool_pages, H, splits);
    std::vector<float> of(o.size());
    for (size_t i = 0; i < o.size(); ++i) of[i] = to_float(o[i]);
    int fails = check("o", of, o_ref, tolerance_of<T>()) > tolerance_of<T>();
    fails += check_paged_split_lse("split", partial_ml, split_ref);
    return fails != 0;
}

int main()
{
    int fails = 0;
    auto run_both = [](P p) { return emu_cases([&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_both({1, 1, 16, 100, 90, 64});  // the benchmark's 16 heads: one head block; 2 splits (the second partial) + an empty one
    fails += run_both({2, 2, 20, 80, 70, 32});   // causal token pair, batch 2, a second head block with 4 heads
    auto run_paged_both = [](PP p) { return emu_cases([&] { return run_paged<bf16_t>(p); }, [&] { return run_paged<half_t>(p); }); };
    // Pages of 16 holding 1, 75 (three splits of one tile each) and 40 keys (its first two pages shared with the 75, two
    // queries); the 1 and the 40 exit from the later splits.
    fails += run_paged_both({16, {1, 75, 40}, {1, 1, 2}, {{1, 2, 2}}, 16, 32});
    // Pages of 5 (a tile spans seven), one split of 128 keys holding four tiles (each tile's rows looked up two tiles ahead),
    // a prefill chunk of 3 whose first two pages are the 100's; 20 heads (two head blocks).
    fails += run_paged_both({5, {100, 12}, {1, 3}, {{0, 1, 2}}, 20, 128});
    printf("%d failing\n", fails);
    return fails != 0;
}

// cuda/latent_attention.cu's CUDA-core MLA decode (absorb, latent_attention_decode_split, combine) in fp32, bf16 and fp16
// under the emulation of cuda_shim.h, against a double-precision reference of the absorbed form on the same rounded inputs:
// causal query tokens at the end of a cache with garbage past the valid length, several splits (one empty), partial key
// tiles, a latent wider than one column per thread (SPLIT_COLS), query tokens in chunks (bt0 > 0). Launches as
// LatentAttentionCuda.Decode (src/Managed/Attention.Native/Ops/LatentAttention/LatentAttentionCuda.cs) when the tensor-core
// kernel does not apply: per chunk, absorb on Elementwise.Grid (256 threads), the split on (splits, tokens of the chunk, H) ×
// SPLIT_THREADS with (latent + rope) floats of shared memory, the combine on the chunk's rows × SPLIT_THREADS. o by
// design.md's tolerance for T; q̂ (fp32, from the rounded inputs) at 1e-4; each split's partial log-sum-exp (fp32) at 1e-4.
// The paged form (run_paged) over several sequences whose pages are shuffled and partly shared, in the same types.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "split_check.h"
#include "paged_layout.h"
#include "latent_attention.emu.cpp"
#include <random>
#include <algorithm>

struct P { int B, Tq, H, latent, rope, nope, dv, Cap, L, keys_per_split, chunk; };

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 31 + p.H * 7 + p.L + p.latent);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n, float s) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng) * s); return x; };
    const int B = p.B, Tq = p.Tq, H = p.H, Cap = p.Cap, Latent = p.latent, Rope = p.rope, Nope = p.nope, Dv = p.dv, W = Latent + Rope;
    auto q = vec((size_t)B * Tq * H * (Nope + Rope), 1.0f), cache = vec((size_t)B * Cap * W, 1.0f);
    auto kv_up = vec((size_t)H * (Nope + Dv) * Latent, 1.0f / std::sqrt((float)Nope));
    for (int b = 0; b < B; ++b) for (int s = p.L; s < Cap; ++s) for (int c = 0; c < W; ++c) cache[((size_t)b * Cap + s) * W + c] = from_float<T>(1000);
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    const double scale = 1.0 / std::sqrt((double)(Nope + Rope));
    const int tokens = B * Tq;
    const size_t rows = (size_t)tokens * H;
    const int splits = (p.L + p.keys_per_split - 1) / p.keys_per_split + 1; // the last split lies past L: it sees nothing
    std::vector<double> o_ref(rows * Dv), qhat_ref(rows * W), split_ref(splits * rows);
    for (int b = 0; b < B; ++b) for (int t = 0; t < Tq; ++t) for (int h = 0; h < H; ++h) {
        const size_t row = ((size_t)b * Tq + t) * H + h;
        const int vis = std::min(p.L, p.L - Tq + t + 1);
        double* qhat = &qhat_ref[row * W];
        std::vector<double> s(vis), avg(Latent, 0.0);
        for (int c = 0; c < Latent; ++c) for (int i = 0; i < Nope; ++i) qhat[c] += F(q, row * (Nope + Rope) + i) * F(kv_up, ((size_t)h * (Nope + Dv) + i) * Latent + c);
        for (int c = 0; c < Rope; ++c) qhat[Latent + c] = F(q, row * (Nope + Rope) + Nope + c);
        double m = -1e300, sum = 0;
        for (int j = 0; j < vis; ++j) {
            double dot = 0;
            for (int c = 0; c < W; ++c) dot += qhat[c] * F(cache, ((size_t)b * Cap + j) * W + c);
            s[j] = dot * scale;
            m = std::max(m, s[j]);
        }
        split_lse_ref(split_ref, rows, row, s, p.keys_per_split, splits);
        for (int j = 0; j < vis; ++j) { s[j] = std::exp(s[j] - m); sum += s[j]; }
        for (int j = 0; j < vis; ++j) for (int c = 0; c < Latent; ++c) avg[c] += s[j] / sum * F(cache, ((size_t)b * Cap + j) * W + c);
        for (int jv = 0; jv < Dv; ++jv) for (int c = 0; c < Latent; ++c) o_ref[row * Dv + jv] += F(kv_up, ((size_t)h * (Nope + Dv) + Nope + jv) * Latent + c) * avg[c];
    }

    std::vector<T> o(o_ref.size());
    std::vector<float> qhat_all(rows * W), ml_all(splits * rows * 2);
    for (int bt0 = 0; bt0 < tokens; bt0 += p.chunk) {
        const int count = std::min(p.chunk, tokens - bt0);
        const size_t crows = (size_t)count * H;
        std::vector<float> qhat(crows * W), partial_o(splits * crows * Latent), partial_ml(splits * crows * 2);
        emu_launch(dim3{(unsigned)std::min<size_t>((crows * W + 255) / 256, 32 * 132)}, dim3{256}, [&] {
            latent_attention_absorb<T>(qhat.data(), q.data() + (size_t)bt0 * H * (Nope + Rope), kv_up.data(), (index_t)crows, H, Nope, Rope, Latent, Dv); });
        emu_launch(dim3{(unsigned)splits, (unsigned)count, (unsigned)H}, dim3{SPLIT_THREADS}, [&] {
            latent_attention_decode_split<T>(partial_o.data(), partial_ml.data(), qhat.data(), cache.data(), bt0, Tq, H, Latent, Rope, Cap, p.L,
                                             (float)scale, p.keys_per_split, PagedKeys{}); });
        emu_launch(dim3{(unsigned)crows}, dim3{SPLIT_THREADS}, [&] {
            latent_attention_decode_combine<T>(o.data() + (size_t)bt0 * H * Dv, partial_o.data(), partial_ml.data(), kv_up.data(), H, Nope, Latent, Dv, splits,
                                               nullptr, p.keys_per_split); });
        std::copy(qhat.begin(), qhat.end(), qhat_all.begin() + (size_t)bt0 * H * W);
        for (int sp = 0; sp < splits; ++sp) for (size_t r = 0; r < crows; ++r) for (int e = 0; e < 2; ++e)
            ml_all[2 * (sp * rows + (size_t)bt0 * H + r) + e] = partial_ml[2 * (sp * crows + r) + e];
    }
    std::vector<float> of(o.size());
    for (size_t i = 0; i < o.size(); ++i) of[i] = to_float(o[i]);
    printf("%s B%d Tq%d H%d latent%d rope%d nope%d dv%d Cap%d L%d splits%d chunk%d\n", type_name<T>(), B, Tq, H, Latent, Rope, Nope, Dv, Cap, p.L, splits, p.chunk);
    int fails = check("qhat", qhat_all, qhat_ref, 1e-4) > 1e-4; // fp32 whatever T
    fails += check_split_lse("split", ml_all, split_ref);
    fails += check("o", of, o_ref, tolerance_of<T>()) > tolerance_of<T>();
    return fails != 0;
}

// The paged form (PagedAttentionCuda.Latent → LatentAttentionCuda.Paged): q [1, N_q, H, dn + dr] packs each sequence's new
// queries, the latents are a pool [P, page_size, dc + dr] read through the block tables; the splits are planned for the
// longest sequence and the blocks past a token's keys exit: the partials start as NaN, a combine that read one fails, and
// each must still be NaN where its split holds none of the token's keys.
struct PP { int page_size; std::vector<int> lengths, queries; std::vector<std::array<int, 3>> shares; int H, latent, rope, nope, dv, keys_per_split, chunk; };

template <typename T>
int run_paged(const PP& p)
{
    const PagedBatch pb = make_paged_batch(p.page_size, p.lengths, p.queries, p.shares, 2, (unsigned)(p.H * 13 + p.latent));
    std::mt19937 rng(pb.tokens * 7 + p.latent);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n, float s) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng) * s); return x; };
    const int H = p.H, Latent = p.latent, Rope = p.rope, Nope = p.nope, Dv = p.dv, W = Latent + Rope, N = pb.tokens;
    auto q = vec((size_t)N * H * (Nope + Rope), 1.0f), pool = vec(pb.slots() * W, 1.0f);
    auto kv_up = vec((size_t)H * (Nope + Dv) * Latent, 1.0f / std::sqrt((float)Nope));
    for (size_t slot = 0; slot < pb.slots(); ++slot) if (!pb.used[slot]) for (int c = 0; c < W; ++c) pool[slot * W + c] = from_float<T>(1000);
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    const double scale = 1.0 / std::sqrt((double)(Nope + Rope));
    const size_t rows = (size_t)N * H;
    const int splits = (pb.max_length + p.keys_per_split - 1) / p.keys_per_split;
    std::vector<double> o_ref(rows * Dv), split_ref((size_t)splits * rows);
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
        split_lse_ref(split_ref, rows, row, sc, p.keys_per_split, splits);
        for (int j = 0; j < vis; ++j) { sc[j] = std::exp(sc[j] - m); sum += sc[j]; }
        for (int j = 0; j < vis; ++j) for (int c = 0; c < Latent; ++c) avg[c] += sc[j] / sum * F(pool, pb.slot(s, j) * W + c);
        for (int jv = 0; jv < Dv; ++jv) for (int c = 0; c < Latent; ++c) o_ref[row * Dv + jv] += F(kv_up, ((size_t)h * (Nope + Dv) + Nope + jv) * Latent + c) * avg[c];
    }

    const PagedKeys paged{pb.table.data(), pb.sequence.data(), pb.visible.data(), pb.pages_per_sequence, pb.page_size};
    std::vector<T> o(o_ref.size());
    std::vector<float> ml_all(splits * rows * 2);
    for (int bt0 = 0; bt0 < N; bt0 += p.chunk) {
        const int count = std::min(p.chunk, N - bt0);
        const size_t crows = (size_t)count * H;
        std::vector<float> qhat(crows * W), partial_o(splits * crows * Latent, NAN), partial_ml(splits * crows * 2, NAN);
        emu_launch(dim3{(unsigned)std::min<size_t>((crows * W + 255) / 256, 32 * 132)}, dim3{256}, [&] {
            latent_attention_absorb<T>(qhat.data(), q.data() + (size_t)bt0 * H * (Nope + Rope), kv_up.data(), (index_t)crows, H, Nope, Rope, Latent, Dv); });
        emu_launch(dim3{(unsigned)splits, (unsigned)count, (unsigned)H}, dim3{SPLIT_THREADS}, [&] {
            latent_attention_decode_split<T>(partial_o.data(), partial_ml.data(), qhat.data(), pool.data(), bt0, 1, H, Latent, Rope, 0, pb.max_length,
                                             (float)scale, p.keys_per_split, paged); });
        emu_launch(dim3{(unsigned)crows}, dim3{SPLIT_THREADS}, [&] {
            latent_attention_decode_combine<T>(o.data() + (size_t)bt0 * H * Dv, partial_o.data(), partial_ml.data(), kv_up.data(), H, Nope, Latent, Dv, splits,
                                               pb.visible.data() + bt0, p.keys_per_split); });
        for (int sp = 0; sp < splits; ++sp) for (size_t r = 0; r < crows; ++r) for (int e = 0; e < 2; ++e)
            ml_all[2 * (sp * rows + (size_t)bt0 * H + r) + e] = partial_ml[2 * (sp * crows + r) + e];
    }
    printf("%s paged: page %d, %d sequences (lengths", type_name<T>(), pb.page_size, pb.count());
    for (int s = 0; s < pb.count(); ++s) printf(" %d/%dq", pb.lengths[s], pb.queries[s]);
    printf("), %zu shared, pool %d pages, H%d latent%d rope%d splits%d chunk%d\n", p.shares.size(), pb.pool_pages, H, Latent, Rope, splits, p.chunk);
    std::vector<float> of(o.size());
    for (size_t i = 0; i < o.size(); ++i) of[i] = to_float(o[i]);
    int fails = check("o", of, o_ref, tolerance_of<T>()) > tolerance_of<T>();
    fails += check_paged_split_lse("split", ml_all, split_ref);
    return fails != 0;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 3, 40, 8, 12, 10, 100, 90, 64, 1});   // one token, 2 splits (the second partial) + an empty one
    fails += run_all({2, 2, 2, 300, 24, 16, 8, 50, 45, 32, 3});   // latent past 256 columns (two per thread), causal pair, chunks of 3 and 1
    fails += run_all({1, 2, 1, 16, 4, 4, 3, 3, 2, 32, 2});        // two valid keys: the first token sees one
    auto run_paged_all = [](PP p) { return emu_cases([&] { return run_paged<float>(p); }, [&] { return run_paged<bf16_t>(p); }, [&] { return run_paged<half_t>(p); }); };
    // Lengths 1 (one key), 70 (five pages, three splits), 37 (its first two pages shared with the 70) with a chunk of 3
    // queries, 5 (one page, a prefill of all of it); chunks of 4 tokens cut sequences apart.
    fails += run_paged_all({16, {1, 70, 37, 5}, {1, 1, 3, 5}, {{1, 2, 2}}, 2, 40, 8, 12, 10, 32, 4});
    // Pages of 3 rows (a tile spans four), splits of 8 keys (the 4's second split exits), a latent past 256 columns,
    // one token per chunk.
    fails += run_paged_all({3, {11, 4, 9}, {2, 1, 1}, {{0, 2, 2}}, 2, 300, 24, 16, 8, 8, 1});
    printf("%d failing\n", fails);
    return fails != 0;
}

// cuda/tpa_decode.cu's two paths, the all-heads kernel (tpa_decode_heads) and the per-head one (tpa_decode_query, then
// tpa_decode_split), each with the combine, in fp32, bf16 and fp16, under the emulation of cuda_shim.h,
// against a double-precision reference from variants.md's TPA formulas (q, k, v materialised from the 16-bit-rounded
// factors): causal query tokens at the end of a cache with garbage past the valid length, several splits (one empty),
// partial key tiles, odd head counts and a width that is not a multiple of 4, query tokens in chunks (bt0 > 0) as
// TpaDecodeCuda.Forward(…, maxChunk) launches them. o by design.md's tolerance for T; each split's partial log-sum-exp
// (fp32) at 1e-4. The paged form of both paths (run_paged): several sequences whose factor pools have shuffled, partly
// shared pages, read through block tables.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "split_check.h"
#include "paged_layout.h"
#include "tpa_decode.emu.cpp"
#include <random>

struct P { int B, Tq, H, d, Rq, Rk, Rv, Cap, L, keys_per_split, chunk; }; // chunk: query tokens per launch

static size_t shared_floats(const P& p)
{
    return (size_t)p.Rq * p.d + p.H * p.Rq + TPA_KT * p.Rk * (p.d + 1) + TPA_KT * p.H * p.Rk + TPA_KT * p.Rv * p.d +
           TPA_KT * p.H * p.Rv + 4 * TPA_KT * p.Rk * p.Rq + p.H * TPA_KT + 3 * p.H;
}

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 31 + p.H * 7 + p.d + p.L);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng)); return x; };
    const int B = p.B, Tq = p.Tq, H = p.H, d = p.d, Cap = p.Cap;
    auto aq = vec((size_t)B * Tq * H * p.Rq), bq = vec((size_t)B * Tq * p.Rq * d);
    auto ak = vec((size_t)B * Cap * H * p.Rk), bk = vec((size_t)B * Cap * p.Rk * d);
    auto av = vec((size_t)B * Cap * H * p.Rv), bv = vec((size_t)B * Cap * p.Rv * d);
    for (int b = 0; b < B; ++b) for (int s = p.L; s < Cap; ++s) { // garbage past L
        for (int c = 0; c < p.Rk * d; ++c) bk[((size_t)b * Cap + s) * p.Rk * d + c] = from_float<T>(1000);
        for (int c = 0; c < p.Rv * d; ++c) bv[((size_t)b * Cap + s) * p.Rv * d + c] = from_float<T>(1000);
    }
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    const double scale = 1.0 / std::sqrt((double)d);
    std::vector<double> o_ref((size_t)B * Tq * H * d);
    const int splits_ref = (p.L + p.keys_per_split - 1) / p.keys_per_split + 1;
    std::vector<double> split_ref((size_t)splits_ref * B * Tq * H);
    for (int b = 0; b < B; ++b) for (int t = 0; t < Tq; ++t) for (int h = 0; h < H; ++h) {
        const size_t bt = (size_t)b * Tq + t;
        const int vis = std::min(p.L, p.L - Tq + t + 1);
        std::vector<double> q(d, 0.0), s(vis);
        for (int r = 0; r < p.Rq; ++r) for (int c = 0; c < d; ++c) q[c] += F(aq, (bt * H + h) * p.Rq + r) * F(bq, (bt * p.Rq + r) * d + c) / p.Rq;
        double m = -1e300, sum = 0;
        for (int j = 0; j < vis; ++j) {
            const size_t key = (size_t)b * Cap + j;
            double dot = 0;
            for (int c = 0; c < d; ++c) {
                double kc = 0;
                for (int u = 0; u < p.Rk; ++u) kc += F(ak, (key * H + h) * p.Rk + u) * F(bk, (key * p.Rk + u) * d + c) / p.Rk;
                dot += q[c] * kc;
            }
            s[j] = dot * scale;
            m = std::max(m, s[j]);
        }
        split_lse_ref(split_ref, (size_t)B * Tq * H, bt * H + h, s, p.keys_per_split, splits_ref);
        for (int j = 0; j < vis; ++j) { s[j] = std::exp(s[j] - m); sum += s[j]; }
        for (int j = 0; j < vis; ++j) {
            const size_t key = (size_t)b * Cap + j;
            for (int c = 0; c < d; ++c) {
                double vc = 0;
                for (int u = 0; u < p.Rv; ++u) vc += F(av, (key * H + h) * p.Rv + u) * F(bv, (key * p.Rv + u) * d + c) / p.Rv;
                o_ref[(bt * H + h) * d + c] += s[j] / sum * vc;
            }
        }
    }

    const int tokens = B * Tq;
    const int splits = (p.L + p.keys_per_split - 1) / p.keys_per_split + 1; // the last split lies past L: it sees nothing
    const size_t rows = (size_t)tokens * H;
    if (shared_floats(p) > (1u << 18)) { printf("shared memory too small\n"); return 1; }
    const float kscale = (float)(1.0 / (p.Rq * p.Rk * std::sqrt((double)d)));
    printf("%s B%d Tq%d H%d d%d ranks %d/%d/%d Cap%d L%d splits%d chunk%d\n", type_name<T>(), B, Tq, H, d, p.Rq, p.Rk, p.Rv, Cap, p.L, splits, p.chunk);
    int fails = 0;
    // Both of TpaDecodeCuda's paths, over the query tokens in chunks of p.chunk as its Forward(…, maxChunk) runs them: the
    // partials hold one chunk's rows, and o is written from the chunk's first row on.
    for (int all_heads = 1; all_heads >= 0; --all_heads) {
        std::vector<T> o(o_ref.size());
        std::vector<float> ml_all(splits * rows * 2);
        for (int bt0 = 0; bt0 < tokens; bt0 += p.chunk) {
            const int count = std::min(p.chunk, tokens - bt0);
            const size_t crows = (size_t)count * H;
            std::vector<float> partial_o(splits * crows * d), partial_ml(splits * crows * 2);
            if (all_heads) {
                emu_launch(dim3{(unsigned)splits, (unsigned)count}, dim3{SPLIT_THREADS}, [&] {
                    tpa_decode_heads<T>(partial_o.data(), partial_ml.data(), aq.data(), bq.data(), ak.data(), bk.data(), av.data(), bv.data(),
                                        bt0, Tq, H, p.Rq, p.Rk, p.Rv, d, Cap, p.L, kscale, p.keys_per_split, PagedKeys{}); });
            } else {
                // The per-head path: q̃ per row on Elementwise.Grid (a 132-multiprocessor device), then a block per (split, token, head).
                std::vector<float> qtilde(crows * d);
                emu_launch(dim3{(unsigned)std::min<size_t>((crows * d + 255) / 256, 32 * 132)}, dim3{256}, [&] {
                    tpa_decode_query<T>(qtilde.data(), aq.data() + (size_t)bt0 * H * p.Rq, bq.data() + (size_t)bt0 * p.Rq * d, count, H, p.Rq, d); });
                emu_launch(dim3{(unsigned)splits, (unsigned)count, (unsigned)H}, dim3{SPLIT_THREADS}, [&] {
                    tpa_decode_split<T>(partial_o.data(), partial_ml.data(), qtilde.data(), ak.data(), bk.data(), av.data(), bv.data(),
                                        bt0, Tq, H, p.Rk, p.Rv, d, Cap, p.L, kscale, p.keys_per_split, PagedKeys{}); });
            }
            emu_launch(dim3{(unsigned)crows}, dim3{SPLIT_THREADS}, [&] {
                tpa_decode_combine<T>(o.data() + (size_t)bt0 * H * d, partial_o.data(), partial_ml.data(), d, p.Rv, splits, H, nullptr, p.keys_per_split); });
            for (int sp = 0; sp < splits; ++sp) for (size_t r = 0; r < crows; ++r) for (int e = 0; e < 2; ++e)
                ml_all[2 * (sp * rows + (size_t)bt0 * H + r) + e] = partial_ml[2 * (sp * crows + r) + e];
        }
        std::vector<float> of(o.size());
        for (size_t i = 0; i < o.size(); ++i) of[i] = to_float(o[i]);
        printf(" %s\n", all_heads ? "tpa_decode_heads" : "tpa_decode_query + tpa_decode_split");
        fails += check("o", of, o_ref, tolerance_of<T>()) > tolerance_of<T>();
        fails += check_split_lse("split", ml_all, split_ref);
    }
    return fails != 0;
}

// The paged form as PagedAttentionCuda.Tpa launches it: aq [1, N_q, H, Rq] and bq pack each sequence's new queries, the
// four factors are pools [P, page_size, …] read through the block tables; the splits are planned for the longest sequence
// and the blocks past a token's keys exit: the partials start as NaN, a combine that read one fails, and each must still be
// NaN where its split holds none of the token's keys.
struct PP { int page_size; std::vector<int> lengths, queries; std::vector<std::array<int, 3>> shares; int H, d, Rq, Rk, Rv, keys_per_split, chunk; };

template <typename T>
int run_paged(const PP& p)
{
    const PagedBatch pb = make_paged_batch(p.page_size, p.lengths, p.queries, p.shares, 2, (unsigned)(p.H * 11 + p.d));
    std::mt19937 rng(pb.tokens * 3 + p.d);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng)); return x; };
    const int H = p.H, d = p.d, N = pb.tokens;
    const size_t slots = pb.slots();
    auto aq = vec((size_t)N * H * p.Rq), bq = vec((size_t)N * p.Rq * d);
    auto ak = vec(slots * H * p.Rk), bk = vec(slots * p.Rk * d), av = vec(slots * H * p.Rv), bv = vec(slots * p.Rv * d);
    for (size_t slot = 0; slot < slots; ++slot) if (!pb.used[slot]) { // garbage where no sequence's token lives
        for (int c = 0; c < p.Rk * d; ++c) bk[slot * p.Rk * d + c] = from_float<T>(1000);
        for (int c = 0; c < p.Rv * d; ++c) bv[slot * p.Rv * d + c] = from_float<T>(1000);
    }
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    const double scale = 1.0 / std::sqrt((double)d);
    const int splits = (pb.max_length + p.keys_per_split - 1) / p.keys_per_split;
    const size_t rows = (size_t)N * H;
    std::vector<double> o_ref(rows * d), split_ref((size_t)splits * rows);
    for (int t = 0; t < N; ++t) for (int h = 0; h < H; ++h) {
        const int s = pb.sequence[t], vis = pb.visible[t];
        std::vector<double> q(d, 0.0), sc(vis);
        for (int r = 0; r < p.Rq; ++r) for (int c = 0; c < d; ++c) q[c] += F(aq, ((size_t)t * H + h) * p.Rq + r) * F(bq, ((size_t)t * p.Rq + r) * d + c) / p.Rq;
        double m = -1e300, sum = 0;
        for (int j = 0; j < vis; ++j) {
            const size_t key = pb.slot(s, j);
            double dot = 0;
            for (int c = 0; c < d; ++c) {
                double kc = 0;
                for (int u = 0; u < p.Rk; ++u) kc += F(ak, (key * H + h) * p.Rk + u) * F(bk, (key * p.Rk + u) * d + c) / p.Rk;
                dot += q[c] * kc;
            }
            sc[j] = dot * scale;
            m = std::max(m, sc[j]);
        }
        split_lse_ref(split_ref, rows, (size_t)t * H + h, sc, p.keys_per_split, splits);
        for (int j = 0; j < vis; ++j) { sc[j] = std::exp(sc[j] - m); sum += sc[j]; }
        for (int j = 0; j < vis; ++j) {
            const size_t key = pb.slot(s, j);
            for (int c = 0; c < d; ++c) {
                double vc = 0;
                for (int u = 0; u < p.Rv; ++u) vc += F(av, (key * H + h) * p.Rv + u) * F(bv, (key * p.Rv + u) * d + c) / p.Rv;
                o_ref[((size_t)t * H + h) * d + c] += sc[j] / sum * vc;
            }
        }
    }

    const PagedKeys paged{pb.table.data(), pb.sequence.data(), pb.visible.data(), pb.pages_per_sequence, pb.page_size};
    const float kscale = (float)(1.0 / (p.Rq * p.Rk * std::sqrt((double)d)));
    printf("%s paged: page %d, %d sequences (lengths", type_name<T>(), pb.page_size, pb.count());
    for (int s = 0; s < pb.count(); ++s) printf(" %d/%dq", pb.lengths[s], pb.queries[s]);
    printf("), %zu shared, pool %d pages, H%d d%d ranks %d/%d/%d splits%d chunk%d\n", p.shares.size(), pb.pool_pages, H, d, p.Rq, p.Rk, p.Rv, splits, p.chunk);
    int fails = 0;
    for (int all_heads = 1; all_heads >= 0; --all_heads) {
        std::vector<T> o(o_ref.size());
        std::vector<float> ml_all(splits * rows * 2);
        for (int bt0 = 0; bt0 < N; bt0 += p.chunk) {
            const int count = std::min(p.chunk, N - bt0);
            const size_t crows = (size_t)count * H;
            std::vector<float> partial_o(splits * crows * d, NAN), partial_ml(splits * crows * 2, NAN);
            if (all_heads) {
                emu_launch(dim3{(unsigned)splits, (unsigned)count}, dim3{SPLIT_THREADS}, [&] {
                    tpa_decode_heads<T>(partial_o.data(), partial_ml.data(), aq.data(), bq.data(), ak.data(), bk.data(), av.data(), bv.data(),
                                        bt0, 1, H, p.Rq, p.Rk, p.Rv, d, 0, pb.max_length, kscale, p.keys_per_split, paged); });
            } else {
                std::vector<float> qtilde(crows * d);
                emu_launch(dim3{(unsigned)std::min<size_t>((crows * d + 255) / 256, 32 * 132)}, dim3{256}, [&] {
                    tpa_decode_query<T>(qtilde.data(), aq.data() + (size_t)bt0 * H * p.Rq, bq.data() + (size_t)bt0 * p.Rq * d, count, H, p.Rq, d); });
                emu_launch(dim3{(unsigned)splits, (unsigned)count, (unsigned)H}, dim3{SPLIT_THREADS}, [&] {
                    tpa_decode_split<T>(partial_o.data(), partial_ml.data(), qtilde.data(), ak.data(), bk.data(), av.data(), bv.data(),
                                        bt0, 1, H, p.Rk, p.Rv, d, 0, pb.max_length, kscale, p.keys_per_split, paged); });
            }
            emu_launch(dim3{(unsigned)crows}, dim3{SPLIT_THREADS}, [&] {
                tpa_decode_combine<T>(o.data() + (size_t)bt0 * H * d, partial_o.data(), partial_ml.data(), d, p.Rv, splits, H, pb.visible.data() + bt0,
                                      p.keys_per_split); });
            for (int sp = 0; sp < splits; ++sp) for (size_t r = 0; r < crows; ++r) for (int e = 0; e < 2; ++e)
                ml_all[2 * (sp * rows + (size_t)bt0 * H + r) + e] = partial_ml[2 * (sp * crows + r) + e];
        }
        std::vector<float> of(o.size());
        for (size_t i = 0; i < o.size(); ++i) of[i] = to_float(o[i]);
        printf(" %s\n", all_heads ? "tpa_decode_heads" : "tpa_decode_query + tpa_decode_split");
        fails += check("o", of, o_ref, tolerance_of<T>()) > tolerance_of<T>();
        fails += check_paged_split_lse("split", ml_all, split_ref);
    }
    return fails != 0;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({2, 2, 4, 16, 6, 2, 2, 80, 70, 32, 4});   // the small config: causal pair of tokens, three splits + an empty one
    fails += run_all({1, 1, 32, 64, 6, 2, 2, 120, 100, 64, 1}); // the benchmark config's shape, a partial tile per split
    fails += run_all({1, 3, 5, 18, 3, 1, 3, 40, 37, 256, 2});   // odd heads, width not a multiple of 4, one split, chunks of 2 and 1 tokens
    fails += run_all({2, 1, 2, 40, 2, 2, 1, 1, 1, 32, 1});      // a cache of one key; width past one warp; one token per chunk
    auto run_paged_all = [](PP p) { return emu_cases([&] { return run_paged<float>(p); }, [&] { return run_paged<bf16_t>(p); }, [&] { return run_paged<half_t>(p); }); };
    // Pages of 16 holding 1, 70 (three splits, a tile across three pages) and 36 keys (a chunk of 3 queries, its first two
    // pages the 70's), 4 heads, d 16 (16-byte loads of every factor row); chunks of 2 tokens.
    fails += run_paged_all({16, {1, 70, 36}, {1, 1, 3}, {{1, 2, 2}}, 4, 16, 6, 2, 2, 32, 2});
    // Pages of 3, odd heads and a width not a multiple of 4 or 8 (element loads), splits of 8 keys, one token per chunk.
    fails += run_paged_all({3, {13, 2, 7}, {2, 2, 1}, {{0, 2, 2}}, 3, 18, 3, 1, 3, 8, 1});
    printf("%d failing\n", fails);
    return fails != 0;
}

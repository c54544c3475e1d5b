// cuda/attention_decode.cu (bf16 and fp16) and the split-KV combine of cuda/attention.cu under the emulation of cuda_shim.h, against a
// double-precision reference on the same 16-bit-rounded inputs: o and lse for decode-shaped problems (a few query rows, a long
// cache with garbage past L), packed GQA rows, row blocks (more packed rows than a block takes), causal rows with different
// key limits, an empty split, SAS's widths, and MFA's one wide head (256, 256) shared by a group of many heads, launched as
// the C# launcher plans it (launch_plans.h: rows per block and splits for an H200). o by design.md's 16-bit tolerance,
// 2e-2·(1 + max|ref|); lse and each split's partial log-sum-exp (fp32) at fp32's, 1e-4. Ragged batches (ragged_attention.h,
// the serving decode: a step of many sequences of different lengths) run as the C# launcher runs them: rows per block and
// splits planned on the longest sequence, one launch over all sequences, the combine over the packed rows. Strided cases
// (strided_layout.h) hand the kernels q, k, v and o in other row layouts (head-major views, gaps).
#include "cuda_shim.h"
#include "bf16_check.h"
#include "launch_plans.h"
#include "split_check.h"
#include "attention.emu.cpp"
#include "attention_decode.emu.cpp"
#include "ragged_attention.h"
#include "strided_layout.h"
#include <random>

// keys_per_split 0: the C# launcher's plan for an H200 (no empty split); otherwise that split length plus one split past L.
// rows, mixed: the tensors' row layouts (strided_layout.h).
struct P { int B, Tq, H, G, D, Dv, Tk, L; bool causal; int keys_per_split; Rows rows = Rows::contiguous; bool mixed = false; };

template <typename T, int DQK, int DV, int ROWS>
static void launch(std::vector<float>& partial_o, std::vector<float>& partial_ml, const std::vector<T>& q,
                   const std::vector<T>& k, const std::vector<T>& v, AttentionShape s, int splits, int keys_per_split)
{
    const int packed = s.tq * (s.heads / s.kv_heads), row_blocks = (packed + ROWS - 1) / ROWS;
    emu_launch(dim3{(unsigned)splits, (unsigned)(s.kv_heads * row_blocks), (unsigned)s.batch}, dim3{DEC_THREADS}, [&] {
        attention_decode<T, DQK, DV, ROWS>(partial_o.data(), partial_ml.data(), q.data(), k.data(), v.data(), s, keys_per_split); });
}

// The instantiation the C# launcher picks: widths (d_qk, d_v) and rows per block.
template <typename T>
static bool launch_planned(int D, int Dv, int rows, std::vector<float>& partial_o, std::vector<float>& partial_ml, const std::vector<T>& q,
                           const std::vector<T>& k, const std::vector<T>& v, AttentionShape s, int splits, int keys_per_split)
{
#define DECODE_CASE(DQK, DV, ROWS) \
    if (D == DQK && Dv == DV && rows == ROWS) { launch<T, DQK, DV, ROWS>(partial_o, partial_ml, q, k, v, s, splits, keys_per_split); return true; }
    DECODE_CASE(128, 128, 1) DECODE_CASE(128, 128, 4) DECODE_CASE(128, 128, 8)
    DECODE_CASE(64, 64, 4) DECODE_CASE(64, 64, 8)
    DECODE_CASE(256, 128, 1) DECODE_CASE(256, 128, 4)
    DECODE_CASE(256, 256, 1) DECODE_CASE(256, 256, 4) DECODE_CASE(256, 256, 8)
#undef DECODE_CASE
    return false;
}

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 131 + p.Tq * 7 + p.L + p.D + p.H);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n) { std::vector<T> x(n); for (auto& e : x) e = from_float<T>(nd(rng)); return x; };
    const int H = p.H, G = p.G, D = p.D, Dv = p.Dv, group = H / G;
    auto q = vec((size_t)p.B * p.Tq * H * D), k = vec((size_t)p.B * p.Tk * G * D), v = vec((size_t)p.B * p.Tk * G * Dv);
    for (int b = 0; b < p.B; ++b) for (int j = p.L; j < p.Tk; ++j) {
        for (int c = 0; c < G * D; ++c) k[((size_t)b * p.Tk + j) * G * D + c] = from_float<T>(1000);
        for (int c = 0; c < G * Dv; ++c) v[((size_t)b * p.Tk + j) * G * Dv + c] = from_float<T>(1000);
    }
    const float scale = 1.0f / std::sqrt((float)D);
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    std::vector<double> o_ref((size_t)p.B * p.Tq * H * Dv), lse_ref((size_t)p.B * H * p.Tq);
    const int packed = p.Tq * group, rows_per_block = decode_rows_per_block(packed);
    const long long blocks = (long long)p.B * G * ((packed + rows_per_block - 1) / rows_per_block);
    const DecodeSplits plan = p.keys_per_split > 0
        ? DecodeSplits{(p.L + p.keys_per_split - 1) / p.keys_per_split + 1, p.keys_per_split} // the last split lies past L: it sees nothing
        : decode_plan_splits(h200_sms, blocks, p.L);
    const int splits = plan.splits, keys_per_split = plan.keys_per_split;
    std::vector<double> split_ref((size_t)splits * lse_ref.size());
    for (int b = 0; b < p.B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < p.Tq; ++i) {
        const int g = h / group, vis = p.causal ? std::min(p.L, p.L - p.Tq + i + 1) : p.L;
        const size_t qi = (((size_t)b * p.Tq + i) * H + h) * D, oi = (((size_t)b * p.Tq + i) * H + h) * Dv;
        std::vector<double> s(vis);
        double m = -1e300, sum = 0;
        for (int j = 0; j < vis; ++j) {
            double d = 0;
            for (int c = 0; c < D; ++c) d += F(q, qi + c) * F(k, (((size_t)b * p.Tk + j) * G + g) * D + c);
            s[j] = d * scale;
            m = std::max(m, s[j]);
        }
        split_lse_ref(split_ref, lse_ref.size(), ((size_t)b * H + h) * p.Tq + i, s, keys_per_split, splits);
        for (int j = 0; j < vis; ++j) { s[j] = std::exp(s[j] - m); sum += s[j]; }
        lse_ref[((size_t)b * H + h) * p.Tq + i] = m + std::log(sum);
        for (int j = 0; j < vis; ++j) for (int c = 0; c < Dv; ++c)
            o_ref[oi + c] += s[j] / sum * F(v, (((size_t)b * p.Tk + j) * G + g) * Dv + c);
    }

    AttentionShape sh{p.B, p.Tq, H, D, p.Tk, G, Dv, p.L, scale, p.causal ? 1 : 0};
    // The kernels see q, k, v and o in their layouts; the checks read o back contiguous.
    const AttentionLayouts layout = attention_layouts(p.rows, p.mixed, p.B, p.Tq, p.Tk, H, G, D, Dv);
    sh.strides = layout.strides();
    const auto qs = layout.q.store(q), ks = layout.k.store(k), vs = layout.v.store(v);
    const size_t rows = (size_t)p.B * H * p.Tq;
    std::vector<float> partial_o(splits * rows * Dv), partial_ml(splits * rows * 2);
    if (!launch_planned<T>(D, Dv, rows_per_block, partial_o, partial_ml, qs, ks, vs, sh, splits, keys_per_split)) {
        printf("no decode instantiation for D%d Dv%d rows %d\n", D, Dv, rows_per_block);
        return 1;
    }
    std::vector<T> os = layout.o.store(std::vector<T>(o_ref.size()));
    std::vector<float> lse(lse_ref.size());
    emu_launch(dim3{(unsigned)((rows + ATTN_WARPS - 1) / ATTN_WARPS)}, dim3{ATTN_THREADS}, [&] {
        attention_combine<T>(os.data(), lse.data(), partial_o.data(), partial_ml.data(), sh, splits); });
    const std::vector<T> o = layout.o.load(os);
    std::vector<float> of(o.size());
    for (size_t i = 0; i < o.size(); ++i) of[i] = to_float(o[i]);
    const bool strided = p.mixed || p.rows != Rows::contiguous;
    printf("%s B%d Tq%d H%d G%d D%d Dv%d Tk%d L%d causal%d splits%d×%d rows/block %d%s%s\n", type_name<T>(), p.B, p.Tq, H, G, D, Dv, p.Tk, p.L,
           p.causal, splits, keys_per_split, rows_per_block, strided ? " rows " : "", strided ? layout.name() : "");
    int fails = layout.o.gaps_kept("o", os);
    fails += check("o", of, o_ref, tolerance_of<T>()) > tolerance_of<T>();
    fails += check("lse", lse, lse_ref, 1e-4) > 1e-4; // fp32 whatever T
    fails += check_split_lse("split", partial_ml, split_ref);
    return fails != 0;
}

// keys_per_split 0: the launcher's plan for an H200 on the longest sequence; otherwise splits of that length over it.
template <typename T>
int run_ragged(const RaggedCase& rc, int keys_per_split)
{
    RaggedAttention<T> r(rc, 733u + (unsigned)rc.lq.size() * 13u + (unsigned)rc.dqk);
    const int packed = r.max_lq * r.group, rows_per_block = decode_rows_per_block(packed);
    const long long blocks = (long long)r.count * rc.G * ((packed + rows_per_block - 1) / rows_per_block);
    const DecodeSplits plan = keys_per_split > 0 ? DecodeSplits{(r.max_lk + keys_per_split - 1) / keys_per_split, keys_per_split}
                                                 : decode_plan_splits(h200_sms, blocks, r.max_lk);
    const size_t rows = (size_t)rc.H * r.nq;
    std::vector<double> split_ref((size_t)plan.splits * rows);
    for (int s = 0; s < r.count; ++s) for (int h = 0; h < rc.H; ++h) for (int i = 0; i < rc.lq[s]; ++i)
        split_lse_ref(split_ref, rows, r.lse_row(s, h, i), r.scores(s, i, h), plan.keys_per_split, plan.splits);
    std::vector<float> partial_o(plan.splits * rows * rc.dv), partial_ml(plan.splits * rows * 2);
    if (!launch_planned<T>(rc.dqk, rc.dv, rows_per_block, partial_o, partial_ml, r.q, r.keys(), r.values(), r.shape(), plan.splits, plan.keys_per_split)) {
        printf("no decode instantiation for D%d Dv%d rows %d\n", rc.dqk, rc.dv, rows_per_block);
        return 1;
    }
    std::vector<T> o(r.o_ref.size());
    std::vector<float> lse(r.lse_ref.size());
    const AttentionShape rows_shape = r.rows_shape();
    emu_launch(dim3{(unsigned)((rows + ATTN_WARPS - 1) / ATTN_WARPS)}, dim3{ATTN_THREADS}, [&] {
        attention_combine<T>(o.data(), lse.data(), partial_o.data(), partial_ml.data(), rows_shape, plan.splits); });
    char extra[64];
    snprintf(extra, sizeof extra, " splits%d×%d rows/block %d", plan.splits, plan.keys_per_split, rows_per_block);
    r.print(type_name<T>(), extra);
    int fails = check("o", r.as_floats(o), r.o_ref, tolerance_of<T>()) > tolerance_of<T>();
    fails += check("lse", lse, r.lse_ref, 1e-4) > 1e-4; // fp32 whatever T
    fails += check_split_lse("split", partial_ml, split_ref);
    return fails != 0;
}

int main()
{
    int fails = 0;
    auto run_both = [](P p) { return emu_cases([&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_both({1, 1, 16, 4, 128, 128, 900, 850, true, 256});   // GQA decode: 4 packed rows, 4 splits
    fails += run_both({2, 1, 4, 4, 128, 128, 300, 300, true, 128});    // MHA decode: one row per block
    fails += run_both({1, 1, 16, 1, 128, 128, 500, 480, true, 96});    // MQA: 16 packed rows in two row blocks of 8
    fails += run_both({1, 3, 8, 2, 64, 64, 400, 390, true, 64});       // 3 queries × group 4: causal limits differ per row
    fails += run_both({2, 2, 6, 2, 64, 64, 200, 150, false, 512});     // non-causal, one split, group of 3
    fails += run_both({1, 1, 4, 4, 256, 128, 333, 333, true, 192});    // SAS widths
    fails += run_both({1, 1, 2, 1, 128, 128, 5, 3, true, 64});         // a cache shorter than one step
    fails += run_both({1, 1, 64, 1, 256, 256, 700, 650, true, 0});     // MFA (Step-3): 64 heads on one KV head, 8 row blocks, H200 plan
    fails += run_both({2, 2, 4, 1, 256, 256, 300, 270, true, 0});      // MFA widths: 2 queries × group 4, 8 packed rows, causal limits
    fails += run_both({1, 1, 1, 1, 256, 256, 200, 77, true, 64});      // MFA widths, one row per block, an empty split
    fails += run_both({1, 1, 3, 1, 256, 256, 300, 260, false, 0});     // MFA widths, non-causal, group of 3 in a block of 4
    // Strided views: [B, H, T, d] memory seen as [B, T, H, d] (TorchSharp's layout) for q, k, v, o: GQA decode over two
    // batch entries, speculative rows with causal limits.
    fails += run_both({2, 1, 16, 4, 128, 128, 500, 450, true, 128, Rows::head_major});
    fails += run_both({2, 3, 8, 2, 64, 64, 300, 290, true, 64, Rows::head_major});
    // Each tensor its own layout, gaps between rows (NaN, left untouched): SAS's widths; MFA's one wide head in row blocks.
    fails += run_both({2, 1, 4, 4, 256, 128, 333, 333, true, 192, Rows::contiguous, true});
    fails += run_both({1, 2, 8, 1, 256, 256, 300, 270, true, 0, Rows::contiguous, true});
    auto ragged_both = [](RaggedCase c, int keys_per_split) {
        return emu_cases([&] { return run_ragged<bf16_t>(c, keys_per_split); }, [&] { return run_ragged<half_t>(c, keys_per_split); });
    };
    // The serving decode step: one query per sequence, caches of 300, 5, 1 and 77 keys, GQA; the H200 plan on the longest
    // (2 splits of 192) leaves the short sequences' second split empty.
    fails += ragged_both({{1, 1, 1, 1}, {300, 5, 1, 77}, 8, 2, 128, 128, true}, 0);
    // Speculative rows (3, 2, 1 per sequence) of a group of 4: the 12 packed rows of the longest take two row blocks of 8,
    // the others' second row block exits; splits of 64 keys.
    fails += ragged_both({{2, 3, 1}, {200, 3, 50}, 4, 1, 64, 64, true}, 64);
    // MFA widths (256, 256), non-causal: 2 splits of 192, the second empty for the 20-key sequence.
    fails += ragged_both({{1, 1}, {300, 20}, 4, 1, 256, 256, false}, 0);
    // Paged (the serving pools' decode step): the first case over pages of 16, shuffled over a pool with spares, sequence 3
    // forked from sequence 0's first two pages; each 16-byte load from a page slot.
    fails += ragged_both({{1, 1, 1, 1}, {300, 5, 1, 77}, 8, 2, 128, 128, true, 16, {{0, 3, 2}}}, 0);
    // Speculative rows over pages of 16 with splits of 64 (four pages a split); SAS's widths over pages of 64.
    fails += ragged_both({{2, 3, 1}, {200, 3, 50}, 4, 1, 64, 64, true, 16}, 64);
    fails += ragged_both({{1, 2}, {150, 64}, 4, 4, 256, 128, true, 64, {{0, 1, 1}}}, 0);
    // MFA's widths (256, 256): 8 heads on one KV head, pages of 16.
    fails += ragged_both({{1, 1, 1}, {260, 17, 33}, 8, 1, 256, 256, true, 16, {{0, 2, 2}}}, 0);
    printf("%d failing\n", fails);
    return fails != 0;
}

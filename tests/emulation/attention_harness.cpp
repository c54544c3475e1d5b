// cuda/attention.cu (forward with split-KV and the combine, backward dq, dk, dv, dbias) under the emulation of cuda_shim.h in
// fp32, bf16 and fp16 against a double-precision reference on the same (rounded) inputs. o by design.md's tolerance for T;
// lse and delta (fp32 whatever T) at fp32's; the gradients by check_added: the reference contribution first, starting values
// of its size, then what the kernel added against it (delta from the kernel's own o, as the delta kernel reads it).
// Ragged batches (ragged_attention.h) run as the C# launcher runs them: one launch per kernel over all sequences. Strided
// cases (strided_layout.h) hand the kernels q, k, v, o, dO and the gradients in other row layouts (head-major views, gaps).
#include "cuda_shim.h"
#include "bf16_check.h"
#include "attention.emu.cpp"  // cuda/attention.cu with its dynamic shared memory mapped to a host array
#include "ragged_attention.h"
#include <random>
#include <algorithm>

// rows, mixed: the tensors' row layouts (strided_layout.h).
struct P { int B, Tq, H, G, dqk, Tk, dv, L; bool causal, bias; int splits; Rows rows = Rows::contiguous; bool mixed = false; };

static unsigned grid_rows(long long n) { return (unsigned)((n + 7) / 8); }

template <typename T>
int run(P p)
{
    std::mt19937 rng(p.B * 131 + p.Tq * 7 + p.L);
    std::normal_distribution<float> nd;
    auto vec = [&](size_t n) { std::vector<T> v(n); for (auto& x : v) x = from_float<T>(nd(rng)); return v; };
    auto F = [](const std::vector<T>& x, size_t i) { return (double)to_float(x[i]); };
    auto floats = [](const std::vector<T>& x) { std::vector<float> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    auto doubles = [](const std::vector<T>& x) { std::vector<double> f(x.size()); for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]); return f; };
    int H = p.H, G = p.G, group = H / G;
    auto q = vec((size_t)p.B * p.Tq * H * p.dqk), k = vec((size_t)p.B * p.Tk * G * p.dqk), v = vec((size_t)p.B * p.Tk * G * p.dv);
    for (int b = 0; b < p.B; ++b) for (int j = p.L; j < p.Tk; ++j) { for (int g = 0; g < G; ++g) { for (int c = 0; c < p.dqk; ++c) k[(((size_t)b * p.Tk + j) * G + g) * p.dqk + c] = from_float<T>(1000); for (int c = 0; c < p.dv; ++c) v[(((size_t)b * p.Tk + j) * G + g) * p.dv + c] = from_float<T>(1000); } }
    auto bias = p.bias ? vec((size_t)H * p.Tq * p.Tk) : std::vector<T>();
    auto dO = vec((size_t)p.B * p.Tq * H * p.dv);
    float scale = 1.0f / std::sqrt((float)p.dqk);
    auto qi = [&](int b, int i, int h) { return (((size_t)b * p.Tq + i) * H + h); };
    auto kj = [&](int b, int j, int g) { return (((size_t)b * p.Tk + j) * G + g); };
    auto visible = [&](int i) { return p.causal ? std::min(p.L, p.L - p.Tq + i + 1) : p.L; };
    // P of row (b, i, h) in double.
    auto probabilities = [&](int b, int i, int h, double* lse_out) {
        const int g = h / group, vis = visible(i);
        std::vector<double> s(vis);
        double m = -1e300, sum = 0;
        for (int j = 0; j < vis; ++j) {
            double d = 0; for (int c = 0; c < p.dqk; ++c) d += F(q, qi(b, i, h) * p.dqk + c) * F(k, kj(b, j, g) * p.dqk + c);
            s[j] = d * scale + (p.bias ? F(bias, ((size_t)h * p.Tq + i) * p.Tk + j) : 0.0); m = std::max(m, s[j]);
        }
        for (int j = 0; j < vis; ++j) { s[j] = std::exp(s[j] - m); sum += s[j]; }
        for (int j = 0; j < vis; ++j) s[j] /= sum;
        if (lse_out) *lse_out = m + std::log(sum);
        return s;
    };
    // Forward reference in double.
    std::vector<double> o_ref(dO.size()), lse_ref((size_t)p.B * H * p.Tq);
    for (int b = 0; b < p.B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < p.Tq; ++i) {
        const auto pr = probabilities(b, i, h, &lse_ref[((size_t)b * H + h) * p.Tq + i]);
        double* orow = &o_ref[qi(b, i, h) * p.dv];
        for (size_t j = 0; j < pr.size(); ++j) for (int c = 0; c < p.dv; ++c) orow[c] += pr[j] * F(v, kj(b, (int)j, h / group) * p.dv + c);
    }
    AttentionShape s{p.B, p.Tq, H, p.dqk, p.Tk, G, p.dv, p.L, scale, p.causal ? 1 : 0};
    // The kernels see every tensor in its layout; the checks read them back contiguous.
    const AttentionLayouts layout = attention_layouts(p.rows, p.mixed, p.B, p.Tq, p.Tk, H, G, p.dqk, p.dv);
    s.strides = layout.strides();
    const auto qs = layout.q.store(q), ks = layout.k.store(k), vs = layout.v.store(v), dOs = layout.d_o.store(dO);
    std::vector<T> os = layout.o.store(std::vector<T>(dO.size()));
    std::vector<float> lse(lse_ref.size());
    int qtiles = (p.Tq + ATTN_BQ - 1) / ATTN_BQ;
    int splits = p.splits, kps = ((p.L + splits - 1) / splits + 31) / 32 * 32;
    splits = (p.L + kps - 1) / kps;
    long long rows = (long long)p.B * H * p.Tq;
    std::vector<float> po((size_t)splits * rows * p.dv), pml((size_t)splits * rows * 2);
    const T* biasp = p.bias ? bias.data() : nullptr;
    int packed_tiles = (p.Tq * group + ATTN_BQ - 1) / ATTN_BQ; // the forward packs a KV group's (query, head) rows
    emu_launch(dim3{(unsigned)(packed_tiles * splits), (unsigned)G, (unsigned)p.B}, dim3{256}, [&] {
        attention_forward<T>(os.data(), lse.data(), po.data(), pml.data(), qs.data(), ks.data(), vs.data(), biasp, s, splits, kps); });
    if (splits > 1) emu_launch(dim3{grid_rows(rows)}, dim3{256}, [&] { attention_combine<T>(os.data(), lse.data(), po.data(), pml.data(), s, splits); });
    printf("%s B%d Tq%d H%d G%d dqk%d dv%d Tk%d L%d causal%d bias%d splits%d%s%s\n", type_name<T>(), p.B, p.Tq, H, G, p.dqk, p.dv, p.Tk, p.L, p.causal,
           p.bias, splits, p.mixed || p.rows != Rows::contiguous ? " rows " : "", p.mixed || p.rows != Rows::contiguous ? layout.name() : "");
    const std::vector<T> o = layout.o.load(os);
    constexpr double tol = tolerance_of<T>();
    int fails = layout.o.gaps_kept("o", os);
    fails += check("o", floats(o), o_ref, tol) > tol;
    fails += check("lse", lse, lse_ref, 1e-4) > 1e-4; // fp32 whatever T
    // Backward reference contributions. delta comes from the kernel's own o, as stored in T (what the delta kernel reads).
    std::vector<double> delta_ref(rows), dq_c(q.size()), dk_c(k.size()), dv_c(v.size()), db_c(bias.size());
    for (int b = 0; b < p.B; ++b) for (int h = 0; h < H; ++h) for (int i = 0; i < p.Tq; ++i) {
        const int g = h / group;
        const auto pr = probabilities(b, i, h, nullptr);
        const size_t oi = qi(b, i, h) * p.dv;
        double delta = 0; for (int c = 0; c < p.dv; ++c) delta += F(o, oi + c) * F(dO, oi + c);
        delta_ref[((size_t)b * H + h) * p.Tq + i] = delta;
        for (size_t j = 0; j < pr.size(); ++j) {
            const size_t kk = kj(b, (int)j, g);
            double dp = 0; for (int c = 0; c < p.dv; ++c) dp += F(dO, oi + c) * F(v, kk * p.dv + c);
            double ds = pr[j] * (dp - delta);
            if (p.bias) db_c[((size_t)h * p.Tq + i) * p.Tk + j] += ds;
            for (int c = 0; c < p.dqk; ++c) {
                dq_c[qi(b, i, h) * p.dqk + c] += scale * ds * F(k, kk * p.dqk + c);
                dk_c[kk * p.dqk + c] += scale * ds * F(q, qi(b, i, h) * p.dqk + c);
            }
            for (int c = 0; c < p.dv; ++c) dv_c[kk * p.dv + c] += pr[j] * F(dO, oi + c);
        }
    }
    // The kernels add into the gradients: starting values of each contribution's own size.
    const auto dq0 = starting_values<T>(rng, dq_c), dk0 = starting_values<T>(rng, dk_c), dv0 = starting_values<T>(rng, dv_c);
    const auto db0 = starting_values<T>(rng, db_c);
    std::vector<float> delta(rows);
    std::vector<T> dqs = layout.dq.store(dq0), dks = layout.dk.store(dk0), dvs = layout.dv.store(dv0), db = db0;
    emu_launch(dim3{grid_rows(rows)}, dim3{256}, [&] { attention_backward_delta<T>(delta.data(), os.data(), dOs.data(), s); });
    emu_launch(dim3{(unsigned)qtiles, (unsigned)H, p.bias ? 1u : (unsigned)p.B}, dim3{256}, [&] {
        attention_backward_dq<T>(dqs.data(), p.bias ? db.data() : nullptr, qs.data(), ks.data(), vs.data(), biasp, dOs.data(), lse.data(), delta.data(), s); });
    emu_launch(dim3{(unsigned)((p.L + ATTN_BKEYS - 1) / ATTN_BKEYS), (unsigned)G, (unsigned)p.B}, dim3{256}, [&] {
        attention_backward_dkdv<T>(dks.data(), dvs.data(), qs.data(), ks.data(), vs.data(), biasp, dOs.data(), lse.data(), delta.data(), s); });
    const std::vector<T> dq = layout.dq.load(dqs), dk = layout.dk.load(dks), dv = layout.dv.load(dvs);
    fails += layout.dq.gaps_kept("dq", dqs) + layout.dk.gaps_kept("dk", dks) + layout.dv.gaps_kept("dv", dvs);
    fails += check("delta", delta, delta_ref, 1e-4) > 1e-4;
    if (p.L > 1) {
        fails += check_added<T>("dq", dq, dq0, dq_c);
        fails += check_added<T>("dk", dk, dk0, dk_c);
    } else { // one key: P = 1, so dS = dP − delta = 0; dq and dk must stay as they were
        fails += check("dq=dq0", floats(dq), doubles(dq0), tol) > tol;
        fails += check("dk=dk0", floats(dk), doubles(dk0), tol) > tol;
    }
    fails += check_added<T>("dv", dv, dv0, dv_c);
    if (p.bias) fails += check_added<T>("dbias", db, db0, db_c);
    return fails != 0;
}

// A ragged batch: the forward over grid (query tiles of the longest sequence × splits, G, sequences), the combine and delta
// kernels over the packed rows as one dense sequence, dq over (query tiles, H, sequences), dk/dv over (key tiles, G,
// sequences). `splits` as the dense cases take it: keys per split a multiple of ATTN_BK, planned on the longest sequence.
template <typename T>
int run_ragged(const RaggedCase& rc, int splits)
{
    RaggedAttention<T> r(rc, 977u + (unsigned)rc.lq.size() * 31u + (unsigned)rc.dqk);
    const AttentionShape s = r.shape(), rows_shape = r.rows_shape();
    const int H = rc.H, G = rc.G, group = H / G;
    const int kps = ((r.max_lk + splits - 1) / splits + 31) / 32 * 32;
    splits = (r.max_lk + kps - 1) / kps;
    const long long rows = (long long)H * r.nq;
    std::vector<T> o(r.o_ref.size());
    std::vector<float> lse(r.lse_ref.size()), po((size_t)splits * rows * rc.dv), pml((size_t)splits * rows * 2);
    const int packed_tiles = (r.max_lq * group + ATTN_BQ - 1) / ATTN_BQ;
    emu_launch(dim3{(unsigned)(packed_tiles * splits), (unsigned)G, (unsigned)r.count}, dim3{256}, [&] {
        attention_forward<T>(o.data(), lse.data(), po.data(), pml.data(), r.q.data(), r.keys().data(), r.values().data(), nullptr, s, splits, kps); });
    if (splits > 1) emu_launch(dim3{grid_rows(rows)}, dim3{256}, [&] { attention_combine<T>(o.data(), lse.data(), po.data(), pml.data(), rows_shape, splits); });
    char extra[32];
    snprintf(extra, sizeof extra, " splits%d", splits);
    r.print(type_name<T>(), extra);
    constexpr double tol = tolerance_of<T>();
    int fails = 0;
    fails += check("o", r.as_floats(o), r.o_ref, tol) > tol;
    fails += check("lse", lse, r.lse_ref, 1e-4) > 1e-4; // fp32 whatever T
    if (r.is_paged()) {
        return fails != 0; // paged keys are inference only
    }

    std::vector<double> delta_ref, dq_c, dk_c, dv_c;
    r.backward(o, false, delta_ref, dq_c, dk_c, dv_c);
    std::mt19937 rng(rows);
    const auto dq0 = starting_values<T>(rng, dq_c), dk0 = starting_values<T>(rng, dk_c), dv0 = starting_values<T>(rng, dv_c);
    std::vector<T> dq = dq0, dk = dk0, dv = dv0;
    std::vector<float> delta(rows);
    emu_launch(dim3{grid_rows(rows)}, dim3{256}, [&] { attention_backward_delta<T>(delta.data(), o.data(), r.dO.data(), rows_shape); });
    emu_launch(dim3{(unsigned)((r.max_lq + ATTN_BQ - 1) / ATTN_BQ), (unsigned)H, (unsigned)r.count}, dim3{256}, [&] {
        attention_backward_dq<T>(dq.data(), nullptr, r.q.data(), r.k.data(), r.v.data(), nullptr, r.dO.data(), lse.data(), delta.data(), s); });
    emu_launch(dim3{(unsigned)((r.max_lk + ATTN_BKEYS - 1) / ATTN_BKEYS), (unsigned)G, (unsigned)r.count}, dim3{256}, [&] {
        attention_backward_dkdv<T>(dk.data(), dv.data(), r.q.data(), r.k.data(), r.v.data(), nullptr, r.dO.data(), lse.data(), delta.data(), s); });
    fails += check("delta", delta, delta_ref, 1e-4) > 1e-4;
    fails += check_added<T>("dq", dq, dq0, dq_c);
    fails += check_added<T>("dk", dk, dk0, dk_c);
    fails += check_added<T>("dv", dv, dv0, dv_c);
    return fails != 0;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 1, 1, 8, 1, 8, 1, false, false, 1});
    fails += run_all({2, 7, 4, 2, 12, 9, 20, 9, true, false, 1});
    fails += run_all({1, 40, 2, 1, 64, 40, 48, 40, true, false, 1});
    fails += run_all({1, 33, 2, 2, 40, 70, 24, 70, false, false, 1});
    fails += run_all({2, 5, 4, 4, 16, 21, 16, 21, false, true, 1});
    fails += run_all({1, 3, 4, 2, 32, 300, 32, 200, true, false, 1});
    fails += run_all({1, 1, 4, 1, 32, 700, 40, 650, true, false, 3});
    fails += run_all({2, 2, 2, 1, 256, 300, 256, 290, true, false, 2});
    fails += run_all({1, 17, 2, 1, 24, 17, 8, 17, true, true, 1});
    fails += run_all({1, 1, 16, 4, 64, 900, 64, 900, true, false, 4});   // GQA decode: 4 heads per group share each K/V tile
    fails += run_all({2, 5, 6, 2, 16, 40, 16, 33, true, true, 2});       // group of 3, bias, packed rows past a tile boundary
    // Strided views: [B, H, T, d] memory seen as [B, T, H, d] (TorchSharp's layout) for every tensor, batch 2, GQA; with
    // split-KV, the combine writing o through its strides.
    fails += run_all({2, 7, 4, 2, 12, 9, 20, 9, true, false, 1, Rows::head_major});
    fails += run_all({2, 2, 4, 2, 16, 200, 16, 150, true, false, 3, Rows::head_major});
    // Each tensor its own layout, gaps between rows (NaN, left untouched): bias, split-KV; non-causal with ragged tiles.
    fails += run_all({2, 5, 6, 2, 16, 40, 24, 33, true, true, 2, Rows::contiguous, true});
    fails += run_all({1, 33, 2, 2, 40, 70, 24, 70, false, false, 1, Rows::contiguous, true});
    // Ragged batches: a 1-token sequence, lengths across tile boundaries (19·2 packed rows: three tiles of 16), GQA.
    auto ragged_all = [](RaggedCase c, int splits) {
        return emu_cases([&] { return run_ragged<float>(c, splits); }, [&] { return run_ragged<bf16_t>(c, splits); }, [&] { return run_ragged<half_t>(c, splits); });
    };
    fails += ragged_all({{1, 19, 5}, {}, 4, 2, 16, 24, true}, 1);
    // Decode-like: few queries per sequence against longer keys (KeySequences), split-KV planned on the longest (70 keys, 3
    // splits of 32): the 2-key sequence leaves two splits empty, the 40-key one the last.
    fails += ragged_all({{3, 1, 2}, {40, 70, 2}, 4, 1, 32, 32, true}, 3);
    // Non-causal, keys longer than queries, one KV head per query head.
    fails += ragged_all({{7, 12}, {9, 30}, 2, 2, 8, 8, false}, 1);
    // Paged keys (PagedAttention.Forward, fp32 and prompt chunks): pages of 16, sequence 1 forked from sequence 0's first two
    // pages, the pages shuffled over a pool with spares; chunks of 3, 1 and 20 queries; split-KV (3 splits of 32) and not.
    fails += ragged_all({{3, 1, 20}, {40, 70, 20}, 4, 2, 32, 24, true, 16, {{0, 1, 2}}}, 3);
    fails += ragged_all({{3, 1, 20}, {40, 70, 20}, 4, 2, 32, 24, true, 16, {{0, 1, 2}}}, 1);
    // A page size that is not a power of two, one sequence's keys within one page.
    fails += ragged_all({{2, 5}, {5, 33}, 2, 1, 16, 16, true, 7}, 1);
    printf("%d failing\n", fails);
    return fails != 0;
}

// cuda/pointwise.cu (SiLU, ReLU, scale, broadcast add, multiply: forward, backward, the broadcast add's db as a two-stage
// column sum) in fp32, bf16 and fp16 under the emulation of cuda_shim.h, against the math in double on the same rounded
// inputs: one element of each op, sizes that leave the last block partly idle, a clamped grid (grid-stride), several row
// chunks for db, in place, and multiply's db alone (no da).
#include "cuda_shim.h"
#include "bf16_check.h"
#include "pointwise.emu.cpp"
#include "launch_plans.h"

// op: 0 SiLU, 1 ReLU, 2 scale, 3 broadcast add (b of `period` elements), 4 multiply.
struct P { long long n; int op; long long period; int sms; bool in_place, da; };
static const char* op_names[] = {"silu", "relu", "scale", "add", "mul"};

template <typename T>
int run(P p)
{
    std::mt19937 rng((unsigned)(p.n * 5 + p.op * 101 + p.period));
    const long long n = p.n;
    const float alpha = 0.37f;
    const long long b_count = p.op == 3 ? p.period : p.op == 4 ? n : 0;
    auto a = random_values<T>(rng, n), b = random_values<T>(rng, b_count), dy = random_values<T>(rng, n);
    const T* bp = b_count ? b.data() : nullptr;
    // Reference: y and ∂y/∂a·dy per element; db: the multiply's a·dy, the broadcast add's Σ over the repeats.
    std::vector<double> y_ref(n), da_ref(n), db_ref(b_count, 0.0);
    for (long long i = 0; i < n; ++i) {
        const double x = to_float(a[i]), g = to_float(dy[i]), s = 1.0 / (1.0 + std::exp(-x));
        switch (p.op) {
        case 0: y_ref[i] = x * s; da_ref[i] = g * s * (1.0 + x * (1.0 - s)); break;
        case 1: y_ref[i] = x > 0 ? x : 0.0; da_ref[i] = x > 0 ? g : 0.0; break;
        case 2: y_ref[i] = (double)alpha * x; da_ref[i] = (double)alpha * g; break;
        case 3: y_ref[i] = x + to_float(b[i % p.period]); da_ref[i] = g; db_ref[i % p.period] += g; break;
        default: y_ref[i] = x * to_float(b[i]); da_ref[i] = g * to_float(b[i]); db_ref[i] = g * x; break;
        }
    }
    const dim3 grid = elementwise_grid(p.sms, n); // PointwiseCuda: Elementwise.Grid over n
    printf("%s %s n%lld period%lld sms%d%s%s: %u blocks\n", type_name<T>(), op_names[p.op], n, p.period, p.sms,
           p.in_place ? " in place" : "", p.da ? "" : " no da", grid.x);
    int fails = 0;

    // Forward; y starts NaN (or is a itself).
    auto y = p.in_place ? a : filled<T>(n, NAN);
    const T* ain = p.in_place ? y.data() : a.data();
    emu_launch(grid, dim3{elementwise_threads}, [&] { pointwise_forward<T>(y.data(), ain, bp, n, p.period, p.op, alpha); });
    fails += check_output("y", floats(y), y_ref, tolerance_of<T>());

    // Backward: da += ∂y/∂a·dy; multiply's db += a·dy in the same pass (PointwiseCuda passes db for multiply only).
    const auto da0 = starting_values<T>(rng, da_ref);
    auto da = da0;
    std::vector<T> db0 = p.op == 4 ? starting_values<T>(rng, db_ref) : std::vector<T>(), db = db0;
    emu_launch(grid, dim3{elementwise_threads}, [&] {
        pointwise_backward<T>(p.da ? da.data() : nullptr, p.op == 4 ? db.data() : nullptr, a.data(), bp, dy.data(), n, p.op, alpha); });
    if (p.da) {
        // ReLU's da is zero wherever a ≤ 0, so the check's 0.9× kernel is caught by the rest; a 1-element case at a ≤ 0 has
        // nothing to check.
        if (p.op != 1 || std::any_of(da_ref.begin(), da_ref.end(), [](double v) { return v != 0; })) fails += check_added<T>("da", da, da0, da_ref);
        else fails += check_output("da", floats(da), doubles(da0), tolerance_of<T>());
    } else {
        fails += check_output("da", floats(da), doubles(da0), 0.0); // untouched
    }
    if (p.op == 4) fails += check_added<T>("db", db, db0, db_ref);

    if (p.op == 3) {
        // db: ColumnSum.Sum over dy viewed as [n / period, period], finalized with accumulate; the overwriting mode too.
        const long long repeats = n / p.period;
        const int period = (int)p.period;
        const auto plan = column_sum_plan(p.sms, repeats, period);
        printf("  db over %lld repeats in %d chunks\n", repeats, plan.chunks);
        std::vector<float> partial((size_t)plan.chunks * period, NAN);
        emu_launch(column_sum_grid(period, plan.chunks), column_sum_block, [&] {
            pointwise_add_db_partials<T>(partial.data(), dy.data(), repeats, period, plan.rows_per_chunk); });
        for (int accumulate = 0; accumulate < 2; ++accumulate) {
            auto start = starting_values<T>(rng, db_ref);
            const auto before = accumulate ? start : std::vector<T>(period, from_float<T>(0.0f));
            auto dbs = start;
            emu_launch(finalize_grid(period), dim3{finalize_threads}, [&] {
                pointwise_add_db_finalize<T>(dbs.data(), partial.data(), plan.chunks, period, accumulate); });
            fails += check_added<T>(accumulate ? "db+" : "db=", dbs, before, db_ref);
        }
    }
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    for (int op = 0; op < 5; ++op) fails += run_all({1, op, 1, h200_sms, false, true});     // one element
    for (int op = 0; op < 5; ++op) fails += run_all({1000, op, 40, h200_sms, false, true}); // four blocks, the last partly idle
    fails += run_all({10500, 3, 70, h200_sms, false, true}); // db: 150 repeats in three chunks, three column tiles
    fails += run_all({9250, 3, 37, 1, false, true});         // 32 blocks (grid-stride); db in two chunks of 125
    fails += run_all({9001, 0, 1, 1, true, true});           // SiLU in place, grid-stride
    fails += run_all({9001, 4, 1, 1, false, true});          // multiply, grid-stride
    fails += run_all({777, 4, 1, h200_sms, false, false});   // multiply's db alone
    printf("%d failing\n", fails);
    return fails != 0;
}

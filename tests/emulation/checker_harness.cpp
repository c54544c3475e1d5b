// The harnesses' checker (bf16_check.h) on made-up gradients, in bf16, fp16 and fp32: a right one passes; one that added
// nothing, one that added 0.9×, one that overwrote instead of adding, and one with a NaN fail; a case whose contribution
// drowns in the rounding of large starting values fails as insensitive. And `check` for outputs: within, beyond, NaN.
#include "cuda_shim.h"
#include "bf16_check.h"

template <typename T>
int run()
{
    std::mt19937 rng(7);
    std::normal_distribution<double> nd;
    std::vector<double> c(500);
    for (auto& x : c) x = 0.01 * nd(rng); // a small contribution: the case 1 + max|ref| used to mask
    auto before = starting_values<T>(rng, c);
    auto added = [&](double factor, bool overwrite) {
        std::vector<T> after(c.size());
        for (size_t i = 0; i < c.size(); ++i) after[i] = from_float<T>((float)((overwrite ? 0.0 : (double)to_float(before[i])) + factor * c[i]));
        return after;
    };
    printf("%s checker (\"right\" and \"out\" must pass; every other line is a wrong result and must print FAIL)\n", type_name<T>());
    int wrong = 0;
    wrong += check_added<T>("right", added(1.0, false), before, c) != 0;
    wrong += check_added<T>("none", added(0.0, false), before, c) != 1;
    wrong += check_added<T>("0.9x", added(0.9, false), before, c) != 1;
    wrong += check_added<T>("1.1x", added(1.1, false), before, c) != 1;
    wrong += check_added<T>("overw", added(1.0, true), before, c) != 1;
    auto nan = added(1.0, false);
    nan[17] = from_float<T>(NAN);
    wrong += check_added<T>("nan", nan, before, c) != 1;
    // Starting values 1000× the contribution: the stored sum's rounding hides it, and the check says so instead of passing.
    std::vector<T> big(c.size());
    for (size_t i = 0; i < c.size(); ++i) big[i] = from_float<T>((float)(10.0 * nd(rng)));
    std::vector<T> big_after(c.size());
    for (size_t i = 0; i < c.size(); ++i) big_after[i] = from_float<T>((float)((double)to_float(big[i]) + c[i]));
    if (!std::is_same_v<T, float>) wrong += check_added<T>("drown", big_after, big, c) != 1;
    // Outputs: design.md's rule.
    std::vector<double> ref(c.begin(), c.end());
    std::vector<float> got(ref.begin(), ref.end()), off(ref.begin(), ref.end());
    off[3] += 0.05f;
    wrong += check("out", got, ref, tolerance_of<T>()) > tolerance_of<T>();
    wrong += check("out+", off, ref, tolerance_of<T>()) <= tolerance_of<T>();
    got[5] = NAN;
    wrong += check("outnan", got, ref, tolerance_of<T>()) <= tolerance_of<T>();
    printf("  the checker %s\n", wrong == 0 ? "ok" : "FAIL: it judged a case wrongly");
    return wrong != 0;
}

int main()
{
    int fails = check_conversions();
    fails += emu_cases([] { return run<bf16_t>(); }, [] { return run<half_t>(); }, [] { return run<float>(); });
    printf("%d failing\n", fails);
    return fails != 0;
}

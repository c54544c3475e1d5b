// The comparisons of the harnesses.
// - Outputs (`check`): max|got − ref| / (1 + max|ref|) against design.md's tolerance, 2e-2 for 16-bit storage (fp32 results
//   such as lse and fp32 states pass 1e-4, whatever the storage type of the inputs).
// - Gradients a kernel adds into (`check_added`): what it added, after − before, against the reference contribution,
//   normalised by the contribution's own size (see there).
// NaN where the reference is finite, or finite where it is NaN, fails outright.
#pragma once
#include "cuda_shim.h"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <type_traits>
#include <vector>

template <typename T> const char* type_name() { return std::is_same_v<T, bf16_t> ? "bf16" : std::is_same_v<T, half_t> ? "fp16" : "fp32"; }

inline double check(const char* name, const std::vector<float>& got, const std::vector<double>& ref, double tolerance = 2e-2)
{
    double maxref = 0, maxerr = 0;
    size_t mismatched_nan = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        if (std::isnan(ref[i]) || std::isnan(got[i])) {
            if (std::isnan(ref[i]) != std::isnan(got[i])) { maxerr = 1e9; ++mismatched_nan; }
            continue;
        }
        maxref = std::max(maxref, std::fabs(ref[i]));
        maxerr = std::max(maxerr, std::fabs(ref[i] - got[i]));
    }
    double rel = maxerr / (1 + maxref);
    printf("  %-6s rel %.2e %s", name, rel, rel <= tolerance ? "ok" : "FAIL");
    if (mismatched_nan != 0) printf(" (%zu of %zu NaN in one of got and ref only)", mismatched_nan, ref.size());
    printf("\n");
    return rel;
}

template <typename T> constexpr double tolerance_of() { return std::is_same_v<T, float> ? 1e-4 : 2e-2; }
// The unit roundoff of storing a value in T (round to nearest): half an ulp relative, 2^-8 for bf16, 2^-11 for fp16.
template <typename T> constexpr double unit_roundoff() { return std::is_same_v<T, bf16_t> ? 0x1p-8 : std::is_same_v<T, half_t> ? 0x1p-11 : 0x1p-24; }

// max|(after − before) − ref_c| and whether a NaN appears in only one of the two, over the elements.
template <typename T>
inline double added_error(const std::vector<T>& after, const std::vector<T>& before, const std::vector<double>& ref_c, size_t& mismatched_nan)
{
    double maxerr = 0;
    mismatched_nan = 0;
    for (size_t i = 0; i < ref_c.size(); ++i) {
        const double got = (double)to_float(after[i]) - (double)to_float(before[i]);
        if (std::isnan(ref_c[i]) || std::isnan(got)) {
            if (std::isnan(ref_c[i]) != std::isnan(got)) { maxerr = 1e9; ++mismatched_nan; }
            continue;
        }
        maxerr = std::max(maxerr, std::fabs(got - ref_c[i]));
    }
    return maxerr;
}

// A gradient the kernel adds into `before`: max|(after − before) − ref_c| ≤ tol·max|ref_c| + u·max|before + ref_c|, with tol
// design.md's factor for T and u T's unit roundoff (storing the sum rounds it; starting values of the contribution's own
// size, from starting_values, keep that term small). Normalising by the contribution, not by 1 + max, is what makes a small
// gradient count. The check checks itself on every call: a kernel that added nothing, and one that added 0.9× the
// contribution, must both fail this bound (else the case could not tell them from a right one, and it fails as
// "insensitive"). Returns 1 on failure. `tolerance`: tol for a result stored in T but computed from inputs of lower precision
// (an fp32 state built from 16-bit products passes the 16-bit factor).
template <typename T>
inline int check_added(const char* name, const std::vector<T>& after, const std::vector<T>& before, const std::vector<double>& ref_c,
                       double tolerance = tolerance_of<T>())
{
    double scale = 0, sum_max = 0;
    for (size_t i = 0; i < ref_c.size(); ++i) {
        if (std::isnan(ref_c[i])) continue;
        scale = std::max(scale, std::fabs(ref_c[i]));
        sum_max = std::max(sum_max, std::fabs((double)to_float(before[i]) + ref_c[i]));
    }
    const double bound = tolerance * scale + unit_roundoff<T>() * sum_max;
    size_t mismatched_nan = 0, unused = 0;
    const double err = added_error(after, before, ref_c, mismatched_nan);
    // The two wrong kernels, stored as a kernel would store them: after = before (nothing added), after = before + 0.9·ref_c.
    std::vector<T> ninety(before.size());
    for (size_t i = 0; i < before.size(); ++i) ninety[i] = from_float<T>((float)((double)to_float(before[i]) + 0.9 * ref_c[i]));
    const bool sensitive = added_error(before, before, ref_c, unused) > bound && added_error(ninety, before, ref_c, unused) > bound;
    const bool ok = err <= bound && sensitive;
    printf("  %-6s added: rel %.2e (bound %.2e) %s", name, scale > 0 ? err / scale : err, scale > 0 ? bound / scale : bound, ok ? "ok" : "FAIL");
    if (!sensitive) printf(" (insensitive: a kernel adding nothing or 0.9x would pass; max|contribution| %.2e)", scale);
    if (mismatched_nan != 0) printf(" (%zu of %zu NaN in one of got and ref only)", mismatched_nan, ref_c.size());
    printf("\n");
    return ok ? 0 : 1;
}

// Starting values for a gradient the kernel adds into: normal, scaled to the reference contribution's root mean square, so
// the rounding of the stored sum stays small against the contribution and a kernel that overwrites instead of adding fails.
template <typename T, typename Rng>
inline std::vector<T> starting_values(Rng& rng, const std::vector<double>& ref_c)
{
    double squares = 0;
    size_t finite = 0;
    for (double c : ref_c) if (std::isfinite(c)) { squares += c * c; ++finite; }
    const double rms = finite != 0 ? std::sqrt(squares / (double)finite) : 1.0;
    std::normal_distribution<double> nd;
    std::vector<T> v(ref_c.size());
    for (auto& x : v) x = from_float<T>((float)(nd(rng) * (rms > 0 ? rms : 1.0)));
    return v;
}

// The emulation's own cvt.rn.f16.f32 / cvt.rn.bf16.f32 against IEEE: every fp16 value round-trips, every tie between
// neighbours rounds to the even one, 65,520 overflows, and NaN (whatever its payload) stays NaN in both types.
inline int check_conversions()
{
    int bad = 0;
    for (unsigned b = 0; b < 0x10000; ++b) {
        const float f = to_float(half_t{(unsigned short)b});
        if (std::isnan(f)) continue;
        bad += from_float<half_t>(f).bits != b;
        if ((b & 0x7fff) >= 0x7bff) continue; // the largest finite and ±inf have no finite upper neighbour
        const double mid = ((double)f + to_float(half_t{(unsigned short)(b + 1)})) / 2;
        if ((double)(float)mid == mid) bad += from_float<half_t>((float)mid).bits != ((b & 1) ? b + 1 : b);
    }
    bad += from_float<half_t>(65519.0f).bits != 0x7bff || from_float<half_t>(65520.0f).bits != 0x7c00;
    for (unsigned payload : {0x7f800001u, 0x7fc00000u, 0x7fffffffu, 0xffffffffu, 0xff800001u}) {
        bad += !std::isnan(to_float(from_float<bf16_t>(__uint_as_float(payload))));
        bad += !std::isnan(to_float(from_float<half_t>(__uint_as_float(payload))));
    }
    printf("fp16/bf16 conversions: %s\n", bad == 0 ? "ok" : "FAIL");
    return bad != 0;
}

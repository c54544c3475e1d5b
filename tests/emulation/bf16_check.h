// The comparison of the harnesses: max|got − ref| / (1 + max|ref|) against a tolerance, by default design.md's 16-bit one,
// 2e-2 (fp32 runs pass their own). NaN where the reference is finite, or finite where it is NaN, fails outright.
#pragma once
#include "cuda_shim.h"
#include <algorithm>
#include <cmath>
#include <cstdio>
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

// The comparison of the 16-bit harnesses: max|got − ref| / (1 + max|ref|) against design.md's 16-bit tolerance, 2e-2.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

inline double check(const char* name, const std::vector<float>& got, const std::vector<double>& ref)
{
    double maxref = 0, maxerr = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        maxref = std::max(maxref, std::fabs(ref[i]));
        maxerr = std::max(maxerr, std::isnan(got[i]) ? 1e9 : std::fabs(ref[i] - got[i]));
    }
    double rel = maxerr / (1 + maxref);
    printf("  %-6s rel %.2e %s\n", name, rel, rel <= 2e-2 ? "ok" : "FAIL");
    return rel;
}

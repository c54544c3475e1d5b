// The fp32 partials of the split-KV decode kernels: per (split, row), part = split·rows + row, a running max m and sum
// l = Σ e^(s − m) over the split's keys (natural-log units). The pair is defined only up to the choice of m, so what is
// checked is the split's log-sum-exp m + log l, at fp32's tolerance (1e-4) whatever the storage type; a split that sees no
// key must leave l = 0.
#pragma once
#include "bf16_check.h"

// The reference: ref[split·rows + row] = log Σ_{keys of the split} e^(score), −∞ where the split sees no key; scores are the
// row's visible scores (key j at index j), split s covering keys [s·keys_per_split, (s + 1)·keys_per_split).
inline void split_lse_ref(std::vector<double>& ref, size_t rows, size_t row, const std::vector<double>& scores, int keys_per_split, int splits)
{
    for (int sp = 0; sp < splits; ++sp) {
        const size_t begin = (size_t)sp * keys_per_split, end = std::min(scores.size(), begin + keys_per_split);
        double m = -INFINITY, sum = 0;
        for (size_t j = begin; j < end; ++j) m = std::max(m, scores[j]);
        for (size_t j = begin; j < end; ++j) sum += std::exp(scores[j] - m);
        ref[sp * rows + row] = begin < end ? m + std::log(sum) : -INFINITY;
    }
}

// Returns 1 on failure.
inline int check_split_lse(const char* name, const std::vector<float>& partial_ml, const std::vector<double>& ref)
{
    std::vector<float> got;
    std::vector<double> want;
    size_t empty_wrong = 0;
    for (size_t part = 0; part < ref.size(); ++part) {
        const float m = partial_ml[2 * part], l = partial_ml[2 * part + 1];
        if (std::isinf(ref[part])) { empty_wrong += l != 0.0f; continue; }
        got.push_back(m + std::log(l));
        want.push_back(ref[part]);
    }
    const double rel = check(name, got, want, 1e-4);
    if (empty_wrong != 0) printf("  %-6s FAIL: %zu empty splits with l ≠ 0\n", name, empty_wrong);
    return rel > 1e-4 || empty_wrong != 0;
}

// The partials of a paged split kernel, whose blocks past their token's keys exit without writing: where the reference is
// −∞ (the split starts past the row's keys) the partial must still hold the NaN it started with; elsewhere its log-sum-exp
// is checked as check_split_lse does. Returns 1 on failure.
inline int check_paged_split_lse(const char* name, const std::vector<float>& partial_ml, const std::vector<double>& ref)
{
    std::vector<float> got;
    std::vector<double> want;
    size_t written = 0, exited = 0;
    for (size_t part = 0; part < ref.size(); ++part) {
        const float m = partial_ml[2 * part], l = partial_ml[2 * part + 1];
        if (std::isinf(ref[part])) { ++exited; written += !std::isnan(m) || !std::isnan(l); continue; }
        got.push_back(m + std::log(l));
        want.push_back(ref[part]);
    }
    const double rel = check(name, got, want, 1e-4);
    if (written != 0) printf("  %-6s FAIL: %zu of %zu splits past their keys wrote a partial (their blocks must exit)\n", name, written, exited);
    return rel > 1e-4 || written != 0;
}

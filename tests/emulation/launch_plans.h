// The launch shapes of the C# launchers of the elementwise, column-sum and decode-attention kernels (Ops/Elementwise.cs,
// Ops/ColumnSum.cs, Ops/Attention/SoftmaxAttentionDecodeCuda.cs), for their harnesses, and the harnesses' small helpers. `sms` stands for the device's multiprocessor count, which the
// shapes depend on: 132 (an H200) in most cases; 1 in a case that wants the grid clamped, so a grid-stride loop runs more
// than once, or one row chunk.
#pragma once
#include "cuda_shim.h"
#include "bf16_check.h"
#include <algorithm>
#include <random>
#include <vector>

constexpr int h200_sms = 132;

// Ops/Elementwise.cs Grid: 256 threads, ceil(n / 256) blocks, at most 32 per multiprocessor.
constexpr unsigned elementwise_threads = 256;
inline dim3 elementwise_grid(int sms, long long n) { return dim3{(unsigned)std::clamp((n + 255) / 256, 1LL, 32LL * sms)}; }

// Ops/ColumnSum.cs Plan: enough row chunks to fill the device, each at least 64 rows, at most 1024 chunks.
struct ColumnSumPlan { int chunks; long long rows_per_chunk; };
inline ColumnSumPlan column_sum_plan(int sms, long long rows, int n)
{
    if (rows <= 0) return {1, 1};
    const long long column_blocks = std::max(1, (n + 31) / 32);
    const long long wanted = std::max(1LL, 4LL * sms / column_blocks);
    const long long chunks = std::clamp((rows + 63) / 64, 1LL, std::min(wanted, 1024LL));
    const long long per_chunk = (rows + chunks - 1) / chunks;
    return {(int)((rows + per_chunk - 1) / per_chunk), per_chunk};
}
// The partials kernels: grid (ceil(n / 32), chunks), block (32, 8); the finalize kernels: ceil(n / 256) blocks of 256.
inline dim3 column_sum_grid(int n, int chunks) { return dim3{(unsigned)((n + 31) / 32), (unsigned)chunks}; }
constexpr dim3 column_sum_block{32, 8}; // ColumnSum.TileX, TileY (reduce.cuh's COLUMN_SUM_TILE_X, _Y)
inline dim3 finalize_grid(int n) { return dim3{(unsigned)((n + 255) / 256)}; }
constexpr unsigned finalize_threads = 256;

// Ops/Attention/SoftmaxAttentionDecodeCuda.cs: RowsPerBlock takes the smallest instantiated row count (1, 4, 8) that holds
// a KV head's packed rows, else 8; PlanSplits cuts the keys so about four blocks run per multiprocessor, each split at
// least 128 keys (MinKeysPerSplit) and a multiple of 64 (KeyGranule). The grid is (splits, G · row blocks, B).
inline int decode_rows_per_block(int packed) { return packed <= 1 ? 1 : packed <= 4 ? 4 : 8; }
struct DecodeSplits { int splits, keys_per_split; };
inline DecodeSplits decode_plan_splits(int sms, long long blocks, int keys)
{
    const long long wanted = 4LL * sms;
    const long long splits = std::clamp((wanted + blocks - 1) / blocks, 1LL, std::max(1LL, (long long)keys / 128));
    int per_split = (int)((keys + splits - 1) / splits);
    per_split = (per_split + 63) / 64 * 64;
    return {(keys + per_split - 1) / per_split, per_split};
}

// Normal values stored in T (the reference reads the stored, rounded values back).
template <typename T, typename Rng>
std::vector<T> random_values(Rng& rng, size_t n, double scale = 1.0)
{
    std::normal_distribution<double> nd;
    std::vector<T> v(n);
    for (auto& x : v) x = from_float<T>((float)(scale * nd(rng)));
    return v;
}
template <typename T> std::vector<T> filled(size_t n, float value) { return std::vector<T>(n, from_float<T>(value)); }
template <typename T> std::vector<float> floats(const std::vector<T>& x)
{
    std::vector<float> f(x.size());
    for (size_t i = 0; i < x.size(); ++i) f[i] = to_float(x[i]);
    return f;
}
template <typename T> std::vector<double> doubles(const std::vector<T>& x)
{
    std::vector<double> d(x.size());
    for (size_t i = 0; i < x.size(); ++i) d[i] = to_float(x[i]);
    return d;
}
// An output check against design.md's tolerance for T: 1 on failure.
inline int check_output(const char* name, const std::vector<float>& got, const std::vector<double>& ref, double tolerance)
{
    return check(name, got, ref, tolerance) <= tolerance ? 0 : 1;
}

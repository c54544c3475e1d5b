// Host emulation of cuda/include/common.cuh and the CUDA built-ins the kernels use: each block runs its threads as real
// threads with barriers for __syncthreads and per-warp barriers for shuffles (fp32, bf16 and fp16 paths).
#pragma once
#include <cmath>
#include <cstring>
#include <thread>
#include <barrier>
#include <vector>
#include <functional>
#include <memory>
#include <cstdio>
#include <cstdlib>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct BlockSync {
    std::unique_ptr<std::barrier<>> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<float> xchg;
};
inline BlockSync* g_sync = nullptr;
inline thread_local int t_linear = 0;

inline void __syncthreads() { g_sync->block->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int offset)
{
    int warp = t_linear / 32, lane = t_linear % 32;
    g_sync->xchg[warp * 32 + lane] = v;
    g_sync->warps[warp]->arrive_and_wait();
    float r = g_sync->xchg[warp * 32 + (lane ^ offset)];
    g_sync->warps[warp]->arrive_and_wait();
    return r;
}

inline float __shfl_sync(unsigned, float v, int src)
{
    int warp = t_linear / 32, lane = t_linear % 32;
    g_sync->xchg[warp * 32 + lane] = v;
    g_sync->warps[warp]->arrive_and_wait();
    float r = g_sync->xchg[warp * 32 + src];
    g_sync->warps[warp]->arrive_and_wait();
    return r;
}

inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }

struct bf16_t { unsigned short bits; };
struct half_t { unsigned short bits; };
inline float to_float(float v) { return v; }
inline float to_float(bf16_t v) { return __uint_as_float(((unsigned int)v.bits) << 16); }
// IEEE binary16: (1024 + m)·2^(e − 25) when normal, m·2^−24 when subnormal.
inline float to_float(half_t v)
{
    const int e = (v.bits >> 10) & 31, m = v.bits & 1023;
    const float f = e == 0 ? std::ldexp((float)m, -24) : e == 31 ? (m != 0 ? NAN : INFINITY) : std::ldexp((float)(m + 1024), e - 25);
    return (v.bits & 0x8000) != 0 ? -f : f;
}
template <typename T> T from_float(float v);
template <> inline float from_float<float>(float v) { return v; }
// cvt.rn.bf16.f32 and cvt.rn.f16.f32: round to nearest even, overflow to ±inf; a NaN stays NaN (the canonical 0x7fff; the
// plain rounding add would carry a payload into +0 or ±inf).
template <> inline bf16_t from_float<bf16_t>(float v)
{
    bf16_t r;
    const unsigned u = __float_as_uint(v);
    r.bits = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short)0x7fff : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return r;
}
// IEEE binary16: normals from 2^−14, subnormals in steps of 2^−24 below, ±inf from 65,520 (the tie above 65,504 rounds to even).
template <> inline half_t from_float<half_t>(float v)
{
    const unsigned u = __float_as_uint(v), a = u & 0x7fffffffu;
    const unsigned short sign = (unsigned short)((u >> 16) & 0x8000u);
    half_t r;
    if (a > 0x7f800000u) {
        r.bits = 0x7fff;
    } else if (a >= 0x477ff000u) {
        r.bits = sign | 0x7c00;
    } else if (a >= 0x38800000u) {
        const unsigned m = a - 0x38000000u; // the exponent rebiased from 127 to 15
        r.bits = sign | (unsigned short)((m + 0xfffu + ((m >> 13) & 1u)) >> 13);
    } else {
        r.bits = sign | (unsigned short)std::nearbyint(std::fabs(v) * 16777216.0f); // exact scaling; nearbyint rounds to even
    }
    return r;
}

// Which types a harness case runs in. EMU_FULL=1 (CI's full run, after the test suite): every case in every type. Otherwise
// (the test suite's run, kept short): the cases take the types in turn, so every harness still runs every type, and a case
// marked `all` (one that exists for a type, like fp16's range) runs in every type; a case marked `heavy` (minutes under
// emulation) runs only in the full run.
inline bool emu_full() { const char* v = std::getenv("EMU_FULL"); return v != nullptr && v[0] == '1'; }
enum EmuCase { emu_turn, emu_all, emu_heavy };
template <typename... Runs>
int emu_cases(int& turn, EmuCase kind, Runs... runs)
{
    if (kind == emu_heavy && !emu_full()) return 0;
    const bool all = kind != emu_turn;
    const int k = turn++ % (int)sizeof...(Runs);
    int i = 0, fails = 0;
    ((fails += (emu_full() || all || i == k) ? runs() : 0, ++i), ...);
    return fails;
}

inline float warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
inline float warp_max(float v) { for (int o = 16; o > 0; o >>= 1) v = std::fmax(v, __shfl_xor_sync(0xffffffffu, v, o)); return v; }
#define NEG_INF (-INFINITY)
typedef long long index_t;

// extern __shared__ float smem[] → a host array.
inline float g_dynamic_smem[1 << 18];

// Runs the grid block by block, each block's threads as real threads with barriers.
template <typename F>
void emu_launch(dim3 grid, dim3 block, F&& body)
{
    gridDim = grid; blockDim = block;
    int n = block.x * block.y * block.z;
    int nwarps = (n + 31) / 32;
    for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
        BlockSync sync;
        sync.block = std::make_unique<std::barrier<>>(n);
        for (int w = 0; w < nwarps; ++w) sync.warps.push_back(std::make_unique<std::barrier<>>(std::min(32, n - 32 * w)));
        sync.xchg.assign(nwarps * 32, 0.0f);
        g_sync = &sync;
        std::vector<std::thread> threads;
        for (int t = 0; t < n; ++t) {
            threads.emplace_back([&, t] {
                t_linear = t;
                threadIdx = dim3{(unsigned)(t % block.x), (unsigned)(t / block.x % block.y), (unsigned)(t / (block.x * block.y))};
                blockIdx = dim3{bx, by, bz};
                body();
                sync.block->arrive_and_drop();
                sync.warps[t / 32]->arrive_and_drop();
            });
        }
        for (auto& th : threads) th.join();
        g_sync = nullptr;
    }
}

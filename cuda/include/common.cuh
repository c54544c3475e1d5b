// Attention.Native: shared device helpers.
// Header-free by design: no CUDA toolkit header is included, so the same source compiles with
// NVRTC 11.8 ... 13.x on a machine that has no GPU and no toolkit (CI compiles every kernel).
#pragma once

// 16-bit storage types as plain bit patterns. Arithmetic always happens in fp32: load with to_float,
// store with from_float<T> (round to nearest even).
struct bf16_t { unsigned short bits; };
struct half_t { unsigned short bits; };

__device__ __forceinline__ float to_float(float v) { return v; }

__device__ __forceinline__ float to_float(bf16_t v) { return __uint_as_float(((unsigned int)v.bits) << 16); }

__device__ __forceinline__ float to_float(half_t v)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

template <typename T> __device__ __forceinline__ T from_float(float v);

template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }

template <> __device__ __forceinline__ bf16_t from_float<bf16_t>(float v)
{
    bf16_t r;
#if __CUDA_ARCH__ >= 800
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(v));
#else
    // Pre-Ampere has no bf16 cvt: round to nearest even by hand, keeping NaN quiet.
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.bits = (unsigned short)((u >> 16) | 0x40u);
    } else {
        r.bits = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
#endif
    return r;
}

template <> __device__ __forceinline__ half_t from_float<half_t>(float v)
{
    half_t r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(v));
    return r;
}

// Sum over the 32 lanes of a warp; every lane gets the total.
__device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

// Maximum over the 32 lanes of a warp; every lane gets it.
__device__ __forceinline__ float warp_max(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

// −∞ without a toolkit header (masked scores, empty running maxima).
#define NEG_INF __int_as_float(0xff800000)

// Flat indices are 64-bit: B*T*H*d passes 2^31 at long contexts.
typedef long long index_t;

// Host emulation of cuda/include/common.cuh and the CUDA built-ins the kernels use. Each block runs its threads as fibers on
// one OS thread (a hand-written x86-64 context switch: no system call per switch, so a barrier costs nanoseconds, not a
// futex): __syncthreads and the per-warp exchanges of shuffles and mma are barriers that park a fiber until all of its
// block (or warp) has arrived. The fibers run in turn, in alternating order from one round to the next (forward, then
// backward), so a thread that reads shared memory another writes without a barrier between them sees the value too early in
// one of the two orders; shared memory (dynamic and static) is filled with a NaN pattern before each block, so an
// uninitialised read turns the result NaN. A barrier no thread can pass (a divergent __syncthreads) aborts with a message.
#pragma once
#include <cmath>
#include <cstring>
#include <cstdint>
#include <vector>
#include <functional>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <sys/mman.h>

#if !defined(__x86_64__)
#error "tests/emulation needs x86-64 (its fibers switch context in x86-64 assembly)"
#endif

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 { unsigned x = 1, y = 1, z = 1; };
// The running fiber's indices: set by the scheduler before it resumes a fiber.
inline dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline int t_linear = 0;

// emu_switch(save, load): saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the
// stack pointer in *save, loads `load` and restores the same from there (System V x86-64 ABI).
extern "C" void emu_switch(void** save, void* load);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

struct EmuBarrier { int expected = 0, arrived = 0; unsigned generation = 0; };

struct EmuScheduler {
    static constexpr size_t stack_bytes = 256 * 1024;
    static constexpr int max_threads = 1024;
    std::vector<char*> stacks;                 // one per thread slot, reused across blocks and launches
    std::vector<void*> sp;                     // each fiber's saved stack pointer
    std::vector<unsigned char> done;
    void* scheduler_sp = nullptr;
    int current = -1, finished = 0;
    unsigned long long progress = 0;           // arrivals, releases and exits: a round without any is a deadlock
    EmuBarrier block;
    std::vector<EmuBarrier> warps;
    std::vector<float> xchg;
    const std::function<void()>* body = nullptr;
    std::vector<std::pair<void*, size_t>> shared_regions; // static __shared__ arrays, registered on first use
};
inline EmuScheduler g_emu;

// NaN in fp32 and in both halves as bf16 and fp16: an uninitialised shared-memory read of any type is NaN.
constexpr unsigned emu_poison_word = 0x7fc07fc0u;
inline void emu_poison(void* p, size_t bytes)
{
    unsigned* w = (unsigned*)p;
    for (size_t i = 0; i < bytes / 4; ++i) w[i] = emu_poison_word;
}
struct emu_shared_region {
    emu_shared_region(void* p, size_t bytes) { emu_poison(p, bytes); g_emu.shared_regions.push_back({p, bytes}); }
};
// After each static __shared__ declaration (run.sh's sed adds it): registers the array, so each block starts with it poisoned.
#define EMU_SHARED(name) static emu_shared_region emu_shared_##name{(void*)&name, sizeof name}

inline void emu_yield() { emu_switch(&g_emu.sp[g_emu.current], g_emu.scheduler_sp); }

inline void emu_release(EmuBarrier& b) { b.arrived = 0; ++b.generation; ++g_emu.progress; }
inline void emu_arrive_and_wait(EmuBarrier& b)
{
    const unsigned generation = b.generation;
    ++g_emu.progress;
    if (++b.arrived == b.expected) { emu_release(b); return; }
    while (b.generation == generation) emu_yield();
}
// A thread that exits no longer counts (as std::barrier's arrive_and_drop, and as exited threads on a GPU).
inline void emu_drop(EmuBarrier& b)
{
    --b.expected;
    ++g_emu.progress;
    if (b.expected > 0 && b.arrived == b.expected) emu_release(b);
}

inline void __syncthreads() { emu_arrive_and_wait(g_emu.block); }
inline void emu_warp_sync() { emu_arrive_and_wait(g_emu.warps[t_linear / 32]); }

inline float __shfl_xor_sync(unsigned, float v, int offset)
{
    int warp = t_linear / 32, lane = t_linear % 32;
    g_emu.xchg[warp * 32 + lane] = v;
    emu_warp_sync();
    float r = g_emu.xchg[warp * 32 + (lane ^ offset)];
    emu_warp_sync();
    return r;
}

inline float __shfl_sync(unsigned, float v, int src)
{
    int warp = t_linear / 32, lane = t_linear % 32;
    g_emu.xchg[warp * 32 + lane] = v;
    emu_warp_sync();
    float r = g_emu.xchg[warp * 32 + src];
    emu_warp_sync();
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

// A harness case in each of its types (bf16 and fp16, and fp32 where the kernel has it): the number that failed.
template <typename... Runs>
int emu_cases(Runs... runs) { return (runs() + ...); }

inline float warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
inline float warp_max(float v) { for (int o = 16; o > 0; o >>= 1) v = std::fmax(v, __shfl_xor_sync(0xffffffffu, v, o)); return v; }
#define NEG_INF (-INFINITY)
typedef long long index_t;

inline float g_dynamic_smem[1 << 18];
// Per-thread state other shims keep (mma_shim.h's cp.async groups) is cleared here at the end of each block.
inline std::vector<std::function<void()>> g_emu_block_end_hooks;
inline void emu_block_end() { for (auto& h : g_emu_block_end_hooks) h(); }

// The fiber entry: runs the kernel body for the current thread, leaves the barriers, and returns to the scheduler for good.
inline void emu_fiber_main()
{
    (*g_emu.body)();
    emu_drop(g_emu.block);
    emu_drop(g_emu.warps[t_linear / 32]);
    g_emu.done[g_emu.current] = 1;
    ++g_emu.finished;
    void* unused;
    emu_switch(&unused, g_emu.scheduler_sp);
    std::abort(); // never resumed
}

// A fresh fiber's stack, laid out as emu_switch leaves one: the control words, six registers, then the return address
// (emu_fiber_main) at a 16-byte boundary, so the entry sees the stack alignment of a call.
inline void* emu_fresh_stack(char* stack)
{
    uintptr_t top = ((uintptr_t)stack + EmuScheduler::stack_bytes) & ~(uintptr_t)15;
    uintptr_t* ret = (uintptr_t*)(top - 16);
    ret[0] = (uintptr_t)&emu_fiber_main;
    ret[1] = 0;
    uintptr_t* frame = ret - 7;
    for (int i = 1; i < 7; ++i) frame[i] = 0;          // r15 r14 r13 r12 rbx rbp
    unsigned* control = (unsigned*)frame;
    control[0] = 0x1f80;                                 // MXCSR: round to nearest, exceptions masked
    control[1] = 0x037f;                                 // x87 control word (default)
    return frame;
}

// extern __shared__ float smem[] → a host array (run.sh's sed), poisoned before each block.
// Runs the grid block by block, each block's threads as fibers (see the top of this file).
template <typename F>
void emu_launch(dim3 grid, dim3 block, F&& kernel)
{
    gridDim = grid; blockDim = block;
    const int n = (int)(block.x * block.y * block.z);
    if (n < 1 || n > EmuScheduler::max_threads) { fprintf(stderr, "emu_launch: %d threads per block\n", n); std::abort(); }
    const int nwarps = (n + 31) / 32;
    auto& e = g_emu;
    while ((int)e.stacks.size() < n) {
        void* m = mmap(nullptr, EmuScheduler::stack_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) { perror("emu_launch: mmap"); std::abort(); }
        e.stacks.push_back((char*)m);
    }
    std::function<void()> body = [&] { kernel(); };
    e.body = &body;
    e.sp.assign(n, nullptr);
    e.done.assign(n, 0);
    e.xchg.assign(nwarps * 32, 0.0f);
    for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = dim3{bx, by, bz};
        emu_poison(g_dynamic_smem, sizeof g_dynamic_smem);
        for (auto& r : e.shared_regions) emu_poison(r.first, r.second);
        e.block = EmuBarrier{n, 0, 0};
        e.warps.assign(nwarps, EmuBarrier{});
        for (int w = 0; w < nwarps; ++w) e.warps[w].expected = std::min(32, n - 32 * w);
        for (int t = 0; t < n; ++t) { e.sp[t] = emu_fresh_stack(e.stacks[t]); e.done[t] = 0; }
        e.finished = 0;
        for (int round = 0; e.finished < n; ++round) {
            const unsigned long long before = e.progress;
            for (int i = 0; i < n; ++i) {
                const int t = (round & 1) ? n - 1 - i : i;
                if (e.done[t]) continue;
                e.current = t; t_linear = t;
                threadIdx = dim3{(unsigned)(t % block.x), (unsigned)(t / block.x % block.y), (unsigned)(t / (block.x * block.y))};
                emu_switch(&e.scheduler_sp, e.sp[t]);
            }
            if (e.progress == before && e.finished < n) {
                fprintf(stderr, "emu_launch: deadlock in block (%u, %u, %u): %d of %d threads wait at a barrier no other thread reaches\n",
                        bx, by, bz, n - e.finished, n);
                std::abort();
            }
        }
        emu_block_end();
    }
    e.body = nullptr;
    e.current = -1;
}

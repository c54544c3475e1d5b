// Host emulation of cuda/include/mma.cuh, written from the PTX ISA's fragment definitions (not from mma.cuh): ldmatrix
// and mma.sync gather the warp's registers through an exchange buffer and compute what the instruction defines, so a
// kernel that misplaces a fragment fails here as it would on a GPU. bf16 and fp16 (the .bf16 and .f16 forms of mma and cvt.rn.*x2:
// the 16-bit operands are exact in fp32, their products too, so only the rounding of cvt, from_float's, differs by type).
#pragma once
#include "cuda_shim.h"
#include <type_traits>

struct frag_a { unsigned r[4]; };
struct frag_b { unsigned r[2]; };
struct frag_c { float c[4]; };

inline void frag_zero(frag_c& f) { f.c[0] = f.c[1] = f.c[2] = f.c[3] = 0.0f; }

// Per-thread exchange slots (a block has at most 1024 threads).
inline unsigned long long g_mma_xchg[1024][8];

// Publishes this lane's values, then runs `read` over the warp's (32 × 8 slots); barriers on both sides.
template <typename F>
inline void warp_exchange(const unsigned long long (&mine)[8], F&& read)
{
    int warp = t_linear / 32;
    for (int i = 0; i < 8; ++i) g_mma_xchg[t_linear][i] = mine[i];
    emu_warp_sync();
    read(&g_mma_xchg[warp * 32]);
    emu_warp_sync();
}

template <typename T> inline float bits_to_float(unsigned short b) { T x; x.bits = b; return to_float(x); }

// cvt.rn.{bf16x2,f16x2}.f32 d, a, b (PTX ISA): a, rounded, lands in the upper half of d and b in the lower.
template <typename T> inline unsigned cvt_rn_x2(float a, float b)
{
    static_assert(std::is_same_v<T, bf16_t> || std::is_same_v<T, half_t>, "16-bit storage types only");
    return ((unsigned)from_float<T>(a).bits << 16) | (unsigned)from_float<T>(b).bits;
}
// mma.cuh's pack2 passes (hi, lo) as (a, b), so lo sits in the low half, where the fragment layouts put the lower column.
template <typename T> inline unsigned pack2(float lo, float hi) { return cvt_rn_x2<T>(hi, lo); }

// ldmatrix .x4: lanes 8i…8i+7 address the rows of matrix i; lane (g = lane/4, t = lane%4) receives row g, columns 2t and
// 2t+1 of each matrix (transposed: rows 2t and 2t+1 of column g).
inline void ldmatrix_emulated(unsigned (&r)[4], const void* row, bool trans)
{
    unsigned long long mine[8] = {(unsigned long long)(size_t)row};
    int lane = t_linear % 32, g = lane / 4, t = lane % 4;
    warp_exchange(mine, [&](unsigned long long (*all)[8]) {
        for (int i = 0; i < 4; ++i) {
            unsigned short lo, hi;
            if (!trans) {
                const unsigned short* p = (const unsigned short*)(size_t)all[8 * i + g][0];
                lo = p[2 * t]; hi = p[2 * t + 1];
            } else {
                lo = ((const unsigned short*)(size_t)all[8 * i + 2 * t][0])[g];
                hi = ((const unsigned short*)(size_t)all[8 * i + 2 * t + 1][0])[g];
            }
            r[i] = (unsigned)lo | ((unsigned)hi << 16);
        }
    });
}
inline void ldmatrix_x4(unsigned (&r)[4], const void* row) { ldmatrix_emulated(r, row, false); }
inline void ldmatrix_x4_trans(unsigned (&r)[4], const void* row) { ldmatrix_emulated(r, row, true); }

// mma.m16n8k16 (row.col, f32 accumulate). A[row][k] lives in lane (row%8)·4 + (k%8)/2, register (row≥8) + 2·(k≥8), half k%2;
// B[k][n] in lane n·4 + (k%8)/2, register (k≥8), half k%2; lane (g, t) holds D[g][2t, 2t+1] and D[g+8][2t, 2t+1].
template <typename T> inline void mma_16816(frag_c& d, const frag_a& a, const frag_b& b)
{
    static_assert(std::is_same_v<T, bf16_t> || std::is_same_v<T, half_t>, "16-bit storage types only");
    unsigned long long mine[8] = {a.r[0], a.r[1], a.r[2], a.r[3], b.r[0], b.r[1]};
    int lane = t_linear % 32, g = lane / 4, t = lane % 4;
    warp_exchange(mine, [&](unsigned long long (*all)[8]) {
        auto half = [](unsigned long long reg, int k) { return bits_to_float<T>((unsigned short)(k % 2 ? reg >> 16 : reg & 0xffff)); };
        auto A = [&](int row, int k) { return half(all[(row % 8) * 4 + (k % 8) / 2][(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k); };
        auto B = [&](int k, int n) { return half(all[n * 4 + (k % 8) / 2][4 + (k >= 8 ? 1 : 0)], k); };
        for (int e = 0; e < 4; ++e) {
            int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
            float sum = d.c[e];
            for (int k = 0; k < 16; ++k) sum += A(row, k) * B(k, col);
            d.c[e] = sum;
        }
    });
}

// cp.async at its latest legal completion: a thread's copies wait in commit groups and land only when a wait_group (or the
// end of the group list) requires them, so a wait that allows too many groups in flight leaves stale shared memory and the
// harness fails. Sources are read when the copy lands (global memory the kernels only read).
struct CpAsyncCopy { void* dst; const void* src; bool valid; };
// Per thread of the block (indexed by t_linear), cleared when a block ends (copies never waited for never land).
inline std::vector<CpAsyncCopy> g_cp_open[1024];                  // not yet committed
inline std::vector<std::vector<CpAsyncCopy>> g_cp_groups[1024];   // committed, oldest first
inline const bool g_cp_hook = (g_emu_block_end_hooks.push_back([] { for (auto& v : g_cp_open) v.clear(); for (auto& v : g_cp_groups) v.clear(); }), true);
inline void cp_async_16(void* dst, const void* src, bool valid) { g_cp_open[t_linear].push_back({dst, src, valid}); }
inline void cp_async_commit()
{
    g_cp_groups[t_linear].push_back(std::move(g_cp_open[t_linear]));
    g_cp_open[t_linear].clear();
}
template <int N> inline void cp_async_wait()
{
    auto& groups = g_cp_groups[t_linear];
    while (groups.size() > (size_t)N) {
        for (const auto& c : groups.front()) {
            if (c.valid) std::memcpy(c.dst, c.src, 16); else std::memset(c.dst, 0, 16);
        }
        groups.erase(groups.begin());
    }
}

// Attention.Native: warp-level tensor-core tiles (sm_80+), as inline PTX so no toolkit header is needed.
// The fragment types name what each lane holds of one mma.sync.m16n8k16 operand (PTX ISA, "Matrix Fragments for
// mma.m16n8k16"): with g = lane / 4 and t = lane % 4,
//   frag_a (A 16×16, row-major): r[0] = A[g][2t, 2t+1], r[1] = A[g+8][2t, 2t+1], r[2] = A[g][2t+8, 2t+9], r[3] = A[g+8][2t+8, 2t+9]
//   frag_b (B 16×8, "col"):      r[0] = B[2t, 2t+1][g], r[1] = B[2t+8, 2t+9][g]
//   frag_c (C 16×8, fp32):       c[0], c[1] = C[g][2t, 2t+1], c[2], c[3] = C[g+8][2t, 2t+1]
// Two 16-bit values share a 32-bit register, the lower column (or row) in the low half.
// tests/emulation/cuda_shim.h implements the same functions from these definitions, so kernels can run on a CPU.
#pragma once
#include "common.cuh"

struct frag_a { unsigned r[4]; };
struct frag_b { unsigned r[2]; };
struct frag_c { float c[4]; };

__device__ __forceinline__ void frag_zero(frag_c& f)
{
    f.c[0] = f.c[1] = f.c[2] = f.c[3] = 0.0f;
}

// The 32-bit shared-window address ldmatrix and cp.async take.
__device__ __forceinline__ unsigned shared_address(const void* p)
{
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// d += a·b with fp32 accumulation.
template <typename T> __device__ __forceinline__ void mma_16816(frag_c& d, const frag_a& a, const frag_b& b);

template <> __device__ __forceinline__ void mma_16816<bf16_t>(frag_c& d, const frag_a& a, const frag_b& b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d.c[0]), "+f"(d.c[1]), "+f"(d.c[2]), "+f"(d.c[3])
                 : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}

template <> __device__ __forceinline__ void mma_16816<half_t>(frag_c& d, const frag_a& a, const frag_b& b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d.c[0]), "+f"(d.c[1]), "+f"(d.c[2]), "+f"(d.c[3])
                 : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}

// Two fp32 values rounded into one register of two 16-bit values (lo in the low half). cvt's first source lands high.
template <typename T> __device__ __forceinline__ unsigned pack2(float lo, float hi);

template <> __device__ __forceinline__ unsigned pack2<bf16_t>(float lo, float hi)
{
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

template <> __device__ __forceinline__ unsigned pack2<half_t>(float lo, float hi)
{
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// Four 8×8 16-bit matrices from shared memory: lanes 8i…8i+7 give the row addresses of matrix i (16 bytes each);
// r[i] receives row g, columns 2t, 2t+1 of matrix i.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(row)));
}

// As ldmatrix_x4, transposed: r[i] receives rows 2t, 2t+1 of column g of matrix i.
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(row)));
}

// 16 bytes global → shared without passing through registers; zero-filled when !valid (src-size 0 reads nothing).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(shared_address(dst)), "l"(src), "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;");
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;" :: "n"(N));
}

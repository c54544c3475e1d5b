using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>Row-major GEMM for the CPU backend: C = alpha · op(A) · op(B) + beta · C.</summary>
internal static class CpuGemm
{
    /// <summary>
    /// C = alpha · op(A) · op(B) + beta · C, row-major. op(A) is [m, k]: A stored [m, k] (row stride lda), or when
    /// <paramref name="transA"/> stored [k, m]. op(B) is [k, n]: B stored [k, n] (ldb), or when <paramref name="transB"/>
    /// stored [n, k]. beta == 0 overwrites C. Single-threaded.
    /// </summary>
    public static void Serial<T>(bool transA, bool transB, int m, int n, int k, T alpha, ReadOnlySpan<T> a, int lda, ReadOnlySpan<T> b, int ldb, T beta, Span<T> c, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T[] aRow = new T[k];
        for (int i = 0; i < m; i++)
        {
            var ci = c.Slice(i * ldc, n);
            if (beta == T.Zero)
            {
                ci.Clear();
            }
            else if (beta != T.One)
            {
                TensorPrimitives.Multiply<T>(ci, beta, ci);
            }
            for (int p = 0; p < k; p++)
            {
                aRow[p] = transA ? a[(p * lda) + i] : a[(i * lda) + p];
            }
            if (transB)
            {
                for (int j = 0; j < n; j++)
                {
                    ci[j] += alpha * TensorPrimitives.Dot<T>(aRow, b.Slice(j * ldb, k));
                }
            }
            else
            {
                for (int p = 0; p < k; p++)
                {
                    T s = alpha * aRow[p];
                    if (s != T.Zero)
                    {
                        TensorPrimitives.MultiplyAdd<T>(b.Slice(p * ldb, n), s, ci, ci);
                    }
                }
            }
        }
    }
}

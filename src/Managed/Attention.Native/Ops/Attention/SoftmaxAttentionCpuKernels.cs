using System.Numerics;
using System.Runtime.CompilerServices;

namespace Attention.Native.Ops;

/// <summary>
/// The register kernels of <see cref="SoftmaxAttentionCpu"/>: C (±)= A · B over a depth, one tile of
/// <see cref="TileRows"/> rows × 2 vectors of C at a time, with A read in place (no packing: the attention packs each
/// operand once, where it is reused many times) and B a row-major block whose rows lie <c>ldb</c> apart.
/// </summary>
internal static unsafe class SoftmaxAttentionCpuKernels
{
    /// <summary>Rows of the register tile: 6 rows × 2 vectors = 12 accumulators, which fit 16 AVX2 registers with the operands.</summary>
    public const int TileRows = 6;

    /// <summary>How a tile is written: overwrite C, add to it, or scale each of its rows first (C = s_r · C + A · B).</summary>
    public enum Store
    {
        Overwrite,
        Add,
        ScaleRows,
    }

    /// <summary>
    /// C[groups · TileRows, panels · 2 vectors] (±)= A · B over <paramref name="depth"/>, A row-major: row r at
    /// <c>a + r·lda</c>. Column panel j of B starts at <c>b + j·panelStride</c> (2 vectors further for a row-major B, a
    /// whole panel further for packed panels), its rows ldb apart. <paramref name="scales"/> holds one factor per row of
    /// C for <see cref="Store.ScaleRows"/>.
    /// </summary>
    public static void MultiplyRows<T, TVec, TSimd>(int groups, int panels, int depth, T* a, long lda, T* b, long ldb, long panelStride, T* c, long ldc, Store store, T* scales = null)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int width = 2 * TSimd.Lanes;
        // Column panels outside: one panel of B stays in L1 while the rows of A stream past it.
        for (int panel = 0; panel < panels; panel++)
        {
            for (int group = 0; group < groups; group++)
            {
                long row = (long)group * TileRows;
                TileOfRows<T, TVec, TSimd>(depth, a + (row * lda), lda, b + (panel * panelStride), ldb, c + (row * ldc) + ((long)panel * width), ldc, store,
                    scales is null ? null : scales + row);
            }
        }
    }

    /// <summary>
    /// As <see cref="MultiplyRows"/> with A stored transposed: the rows of a tile at depth p are the consecutive
    /// elements <c>a + p·lda + r</c> (so op(A) = Xᵀ for a row-major X with row stride lda).
    /// </summary>
    public static void MultiplyTransposed<T, TVec, TSimd>(int groups, int panels, int depth, T* a, long lda, T* b, long ldb, long panelStride, T* c, long ldc, Store store)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int width = 2 * TSimd.Lanes;
        for (int panel = 0; panel < panels; panel++)
        {
            for (int group = 0; group < groups; group++)
            {
                long row = (long)group * TileRows;
                TileOfColumns<T, TVec, TSimd>(depth, a + row, lda, b + (panel * panelStride), ldb, c + (row * ldc) + ((long)panel * width), ldc, store);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileOfRows<T, TVec, TSimd>(int depth, T* a, long lda, T* b, long ldb, T* c, long ldc, Store store, T* scales)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int lanes = TSimd.Lanes;
        TVec c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        TVec c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        T* a0 = a, a1 = a + lda, a2 = a1 + lda, a3 = a2 + lda, a4 = a3 + lda, a5 = a4 + lda;
        for (int p = 0; p < depth; p++)
        {
            TVec b0 = TSimd.Load(b), b1 = TSimd.Load(b + lanes);
            TVec x = TSimd.Broadcast(a0[p]);
            c00 = TSimd.MultiplyAdd(x, b0, c00);
            c01 = TSimd.MultiplyAdd(x, b1, c01);
            x = TSimd.Broadcast(a1[p]);
            c10 = TSimd.MultiplyAdd(x, b0, c10);
            c11 = TSimd.MultiplyAdd(x, b1, c11);
            x = TSimd.Broadcast(a2[p]);
            c20 = TSimd.MultiplyAdd(x, b0, c20);
            c21 = TSimd.MultiplyAdd(x, b1, c21);
            x = TSimd.Broadcast(a3[p]);
            c30 = TSimd.MultiplyAdd(x, b0, c30);
            c31 = TSimd.MultiplyAdd(x, b1, c31);
            x = TSimd.Broadcast(a4[p]);
            c40 = TSimd.MultiplyAdd(x, b0, c40);
            c41 = TSimd.MultiplyAdd(x, b1, c41);
            x = TSimd.Broadcast(a5[p]);
            c50 = TSimd.MultiplyAdd(x, b0, c50);
            c51 = TSimd.MultiplyAdd(x, b1, c51);
            b += ldb;
        }
        Write<T, TVec, TSimd>(c00, c01, c, store, scales, 0);
        Write<T, TVec, TSimd>(c10, c11, c + ldc, store, scales, 1);
        Write<T, TVec, TSimd>(c20, c21, c + (2 * ldc), store, scales, 2);
        Write<T, TVec, TSimd>(c30, c31, c + (3 * ldc), store, scales, 3);
        Write<T, TVec, TSimd>(c40, c41, c + (4 * ldc), store, scales, 4);
        Write<T, TVec, TSimd>(c50, c51, c + (5 * ldc), store, scales, 5);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileOfColumns<T, TVec, TSimd>(int depth, T* a, long lda, T* b, long ldb, T* c, long ldc, Store store)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int lanes = TSimd.Lanes;
        TVec c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        TVec c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < depth; p++)
        {
            TVec b0 = TSimd.Load(b), b1 = TSimd.Load(b + lanes);
            TVec x = TSimd.Broadcast(a[0]);
            c00 = TSimd.MultiplyAdd(x, b0, c00);
            c01 = TSimd.MultiplyAdd(x, b1, c01);
            x = TSimd.Broadcast(a[1]);
            c10 = TSimd.MultiplyAdd(x, b0, c10);
            c11 = TSimd.MultiplyAdd(x, b1, c11);
            x = TSimd.Broadcast(a[2]);
            c20 = TSimd.MultiplyAdd(x, b0, c20);
            c21 = TSimd.MultiplyAdd(x, b1, c21);
            x = TSimd.Broadcast(a[3]);
            c30 = TSimd.MultiplyAdd(x, b0, c30);
            c31 = TSimd.MultiplyAdd(x, b1, c31);
            x = TSimd.Broadcast(a[4]);
            c40 = TSimd.MultiplyAdd(x, b0, c40);
            c41 = TSimd.MultiplyAdd(x, b1, c41);
            x = TSimd.Broadcast(a[5]);
            c50 = TSimd.MultiplyAdd(x, b0, c50);
            c51 = TSimd.MultiplyAdd(x, b1, c51);
            a += lda;
            b += ldb;
        }
        Write<T, TVec, TSimd>(c00, c01, c, store, null, 0);
        Write<T, TVec, TSimd>(c10, c11, c + ldc, store, null, 1);
        Write<T, TVec, TSimd>(c20, c21, c + (2 * ldc), store, null, 2);
        Write<T, TVec, TSimd>(c30, c31, c + (3 * ldc), store, null, 3);
        Write<T, TVec, TSimd>(c40, c41, c + (4 * ldc), store, null, 4);
        Write<T, TVec, TSimd>(c50, c51, c + (5 * ldc), store, null, 5);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Write<T, TVec, TSimd>(TVec sum0, TVec sum1, T* c, Store store, T* scales, int row)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        T* c1 = c + TSimd.Lanes;
        switch (store)
        {
            case Store.Overwrite:
                TSimd.Store(sum0, c);
                TSimd.Store(sum1, c1);
                break;
            case Store.Add:
                TSimd.Store(TSimd.Add(TSimd.Load(c), sum0), c);
                TSimd.Store(TSimd.Add(TSimd.Load(c1), sum1), c1);
                break;
            default:
                TVec scale = TSimd.Broadcast(scales[row]);
                TSimd.Store(TSimd.MultiplyAdd(scale, TSimd.Load(c), sum0), c);
                TSimd.Store(TSimd.MultiplyAdd(scale, TSimd.Load(c1), sum1), c1);
                break;
        }
    }

    /// <summary>The largest of <paramref name="count"/> elements (a multiple of the vector width).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static T RowMax<T, TVec, TSimd>(T* row, int count)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int lanes = TSimd.Lanes;
        TVec m0 = TSimd.Broadcast(T.NegativeInfinity), m1 = m0;
        int j = 0;
        for (; j + (2 * lanes) <= count; j += 2 * lanes)
        {
            m0 = TSimd.Max(m0, TSimd.Load(row + j));
            m1 = TSimd.Max(m1, TSimd.Load(row + j + lanes));
        }
        if (j < count)
        {
            m0 = TSimd.Max(m0, TSimd.Load(row + j));
        }
        return TSimd.MaxAcross(TSimd.Max(m0, m1));
    }

    /// <summary>row = 2^(row − shift) over <paramref name="count"/> elements (a multiple of the vector width); returns their sum.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static T Exp2Shifted<T, TVec, TSimd>(T* row, int count, T shift)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int lanes = TSimd.Lanes;
        TVec s = TSimd.Broadcast(shift);
        TVec sum0 = default, sum1 = default;
        int j = 0;
        for (; j + (2 * lanes) <= count; j += 2 * lanes)
        {
            TVec e0 = TSimd.Exp2(TSimd.Subtract(TSimd.Load(row + j), s));
            TVec e1 = TSimd.Exp2(TSimd.Subtract(TSimd.Load(row + j + lanes), s));
            TSimd.Store(e0, row + j);
            TSimd.Store(e1, row + j + lanes);
            sum0 = TSimd.Add(sum0, e0);
            sum1 = TSimd.Add(sum1, e1);
        }
        if (j < count)
        {
            TVec e0 = TSimd.Exp2(TSimd.Subtract(TSimd.Load(row + j), s));
            TSimd.Store(e0, row + j);
            sum0 = TSimd.Add(sum0, e0);
        }
        return TSimd.Sum(TSimd.Add(sum0, sum1));
    }

    /// <summary>ds = p ⊙ (dp − delta) over <paramref name="count"/> elements (a multiple of the vector width), written over dp.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ScoreGradient<T, TVec, TSimd>(T* p, T* dp, int count, T delta)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int lanes = TSimd.Lanes;
        TVec d = TSimd.Broadcast(delta);
        for (int j = 0; j < count; j += lanes)
        {
            TSimd.Store(TSimd.Multiply(TSimd.Load(p + j), TSimd.Subtract(TSimd.Load(dp + j), d)), dp + j);
        }
    }
}

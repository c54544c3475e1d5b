using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>
/// CPU reference of <see cref="Linear"/>, generic over float and double (the gradient checker runs the very
/// same code in double). Work is tiled so a block of weight rows stays in cache while a block of input rows
/// reuses it; inner products and row updates are vectorised by <see cref="TensorPrimitives"/>.
/// </summary>
internal static class LinearCpu
{
    private const int RowTile = 16;
    private const int ColTile = 64;

    /// <summary>y[m, n] = x[m, k] · w[n, k]ᵀ (+ b[n]).</summary>
    public static void Forward<T>(PinnedBuffer<T> x, PinnedBuffer<T> w, PinnedBuffer<T> b, PinnedBuffer<T> y, int m, int n, int k)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int rowTiles = CeilDiv(m, RowTile), colTiles = CeilDiv(n, ColTile);
        Parallel.For(0, rowTiles * colTiles, tile =>
        {
            int i0 = tile / colTiles * RowTile, j0 = tile % colTiles * ColTile;
            int i1 = Math.Min(m, i0 + RowTile), j1 = Math.Min(n, j0 + ColTile);
            for (int i = i0; i < i1; i++)
            {
                var xi = x.Slice((long)i * k, k);
                var yi = y.Slice((long)i * n, n);
                for (int j = j0; j < j1; j++)
                {
                    T dot = TensorPrimitives.Dot<T>(xi, w.Slice((long)j * k, k));
                    yi[j] = b.IsEmpty ? dot : dot + b[j];
                }
            }
        });
    }

    /// <summary>dx (+)= dy · w; dw (+)= dyᵀ · x; db (+)= Σ_rows dy. Empty buffers are skipped.</summary>
    public static void Backward<T>(PinnedBuffer<T> x, PinnedBuffer<T> w, PinnedBuffer<T> dy, PinnedBuffer<T> dx, PinnedBuffer<T> dw, PinnedBuffer<T> db, int m, int n, int k, bool accumulate)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (!dx.IsEmpty)
        {
            // dx[i, :] = Σ_j dy[i, j] · w[j, :]: row tiles in parallel, weight rows in cache-sized tiles.
            Parallel.For(0, CeilDiv(m, RowTile), tile =>
            {
                int i0 = tile * RowTile, i1 = Math.Min(m, i0 + RowTile);
                for (int i = i0; i < i1; i++)
                {
                    if (!accumulate)
                    {
                        dx.Slice((long)i * k, k).Clear();
                    }
                }
                for (int j0 = 0; j0 < n; j0 += ColTile)
                {
                    int j1 = Math.Min(n, j0 + ColTile);
                    for (int i = i0; i < i1; i++)
                    {
                        var dxi = dx.Slice((long)i * k, k);
                        for (int j = j0; j < j1; j++)
                        {
                            T g = dy[((long)i * n) + j];
                            if (g != T.Zero)
                            {
                                TensorPrimitives.MultiplyAdd<T>(w.Slice((long)j * k, k), g, dxi, dxi);
                            }
                        }
                    }
                }
            });
        }
        if (!dw.IsEmpty)
        {
            // dw[j, :] = Σ_i dy[i, j] · x[i, :]: weight-row tiles in parallel, input rows in tiles.
            Parallel.For(0, CeilDiv(n, ColTile), tile =>
            {
                int j0 = tile * ColTile, j1 = Math.Min(n, j0 + ColTile);
                for (int j = j0; j < j1; j++)
                {
                    if (!accumulate)
                    {
                        dw.Slice((long)j * k, k).Clear();
                    }
                }
                for (int i0 = 0; i0 < m; i0 += RowTile)
                {
                    int i1 = Math.Min(m, i0 + RowTile);
                    for (int j = j0; j < j1; j++)
                    {
                        var dwj = dw.Slice((long)j * k, k);
                        for (int i = i0; i < i1; i++)
                        {
                            T g = dy[((long)i * n) + j];
                            if (g != T.Zero)
                            {
                                TensorPrimitives.MultiplyAdd<T>(x.Slice((long)i * k, k), g, dwj, dwj);
                            }
                        }
                    }
                }
            });
        }
        if (!db.IsEmpty)
        {
            var sum = db.Span;
            if (!accumulate)
            {
                sum.Clear();
            }
            for (int i = 0; i < m; i++)
            {
                TensorPrimitives.Add<T>(sum, dy.Slice((long)i * n, n), sum);
            }
        }
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;
}

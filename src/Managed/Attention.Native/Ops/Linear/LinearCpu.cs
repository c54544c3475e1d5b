using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>
/// CPU reference of <see cref="Linear"/>, generic over float and double (the gradient checker runs the very
/// same code in double). Every product is one call of the packed, vectorised, multi-threaded <see cref="CpuGemm"/>.
/// </summary>
internal static class LinearCpu
{
    private const int FillChunk = 1 << 16;

    /// <summary>y[m, n] = x[m, k] · w[n, k]ᵀ (+ b[n]).</summary>
    public static void Forward<T>(PinnedBuffer<T> x, PinnedBuffer<T> w, PinnedBuffer<T> b, PinnedBuffer<T> y, int m, int n, int k)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (!b.IsEmpty)
        {
            // Start every row from the bias and let the product add to it (beta = 1); large outputs fill in parallel.
            int rowsPerChunk = Math.Max(1, FillChunk / Math.Max(1, n));
            Parallel.For(0, (m + rowsPerChunk - 1) / rowsPerChunk, chunk =>
            {
                var bias = b.Slice(0, n);
                for (int i = chunk * rowsPerChunk, end = Math.Min(m, i + rowsPerChunk); i < end; i++)
                {
                    bias.CopyTo(y.Slice((long)i * n, n));
                }
            });
        }
        CpuGemm.Parallel(false, true, m, n, k, T.One, x, k, w, k, b.IsEmpty ? T.Zero : T.One, y, n);
    }

    /// <summary>dx (+)= dy · w; dw (+)= dyᵀ · x; db (+)= Σ_rows dy. Empty buffers are skipped.</summary>
    public static void Backward<T>(PinnedBuffer<T> x, PinnedBuffer<T> w, PinnedBuffer<T> dy, PinnedBuffer<T> dx, PinnedBuffer<T> dw, PinnedBuffer<T> db, int m, int n, int k, bool accumulate)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T beta = accumulate ? T.One : T.Zero;
        if (!dx.IsEmpty)
        {
            // dx[m, k] = dy[m, n] · w[n, k].
            CpuGemm.Parallel(false, false, m, k, n, T.One, dy, n, w, k, beta, dx, k);
        }
        if (!dw.IsEmpty)
        {
            // dw[n, k] = dy[m, n]ᵀ · x[m, k]: the transpose is taken while packing, never materialised.
            CpuGemm.Parallel(true, false, n, k, m, T.One, dy, n, x, k, beta, dw, k);
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
}

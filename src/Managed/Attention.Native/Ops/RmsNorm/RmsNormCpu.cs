using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="RmsNorm"/>, generic over float and double.</summary>
internal static class RmsNormCpu
{
    /// <summary>y = x · gain · r per row of width n, r = 1/sqrt(mean(x²) + ε); y may be x.</summary>
    public static void Forward<T>(PinnedBuffer<T> x, PinnedBuffer<T> gain, PinnedBuffer<T> y, long rows, int n, T epsilon)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Parallel.For(0L, rows, row =>
        {
            var xr = x.Slice(row * n, n);
            var yr = y.Slice(row * n, n);
            T r = InverseRms(xr, epsilon);
            TensorPrimitives.Multiply<T>(xr, r, yr);
            if (!gain.IsEmpty)
            {
                TensorPrimitives.Multiply<T>(yr, gain.Span, yr);
            }
        });
    }

    /// <summary>dx (+)= r·g⊙dy − r³·x·mean(g⊙dy⊙x); dgain (+)= Σ_rows dy⊙x·r.</summary>
    public static void Backward<T>(PinnedBuffer<T> x, PinnedBuffer<T> gain, PinnedBuffer<T> dy, PinnedBuffer<T> dx, PinnedBuffer<T> dgain, long rows, int n, T epsilon, bool accumulate)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var inverseRms = new T[rows];
        T count = T.CreateChecked(n);
        Parallel.For(0L, rows, row =>
        {
            var xr = x.Slice(row * n, n);
            var dyr = dy.Slice(row * n, n);
            var dxr = dx.Slice(row * n, n);
            T r = InverseRms(xr, epsilon);
            inverseRms[row] = r;
            // g⊙dy, then its inner product with x.
            T[] gdy = new T[n];
            if (gain.IsEmpty)
            {
                dyr.CopyTo(gdy);
            }
            else
            {
                TensorPrimitives.Multiply<T>(dyr, gain.Span, gdy);
            }
            T meanGdyX = TensorPrimitives.Dot<T>(gdy, xr) / count;
            T r3 = r * r * r;
            for (int i = 0; i < n; i++)
            {
                T value = (r * gdy[i]) - (r3 * xr[i] * meanGdyX);
                dxr[i] = accumulate ? dxr[i] + value : value;
            }
        });
        if (!dgain.IsEmpty)
        {
            // Column sums in a fixed order: deterministic, like the GPU's two-stage reduction.
            const int ColTile = 256;
            Parallel.For(0, (n + ColTile - 1) / ColTile, tile =>
            {
                int c0 = tile * ColTile, c1 = Math.Min(n, c0 + ColTile);
                var sum = new T[c1 - c0];
                for (long row = 0; row < rows; row++)
                {
                    T r = inverseRms[row];
                    var xr = x.Slice((row * n) + c0, c1 - c0);
                    var dyr = dy.Slice((row * n) + c0, c1 - c0);
                    for (int c = 0; c < sum.Length; c++)
                    {
                        sum[c] += dyr[c] * xr[c] * r;
                    }
                }
                var target = dgain.Slice(c0, c1 - c0);
                for (int c = 0; c < sum.Length; c++)
                {
                    target[c] = accumulate ? target[c] + sum[c] : sum[c];
                }
            });
        }
    }

    private static T InverseRms<T>(ReadOnlySpan<T> row, T epsilon)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T meanSquare = TensorPrimitives.SumOfSquares<T>(row) / T.CreateChecked(row.Length);
        return T.One / T.Sqrt(meanSquare + epsilon);
    }
}

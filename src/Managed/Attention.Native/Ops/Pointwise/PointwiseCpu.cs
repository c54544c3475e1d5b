using System.Numerics;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="Pointwise"/>, generic over float and double.</summary>
internal static class PointwiseCpu
{
    private const int Chunk = 1 << 14;

    public static void Forward<T>(PointwiseOp op, PinnedBuffer<T> a, PinnedBuffer<T> b, PinnedBuffer<T> y, T alpha)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        long n = a.Length, period = b.IsEmpty ? 1 : b.Length;
        Parallel.For(0, (int)((n + Chunk - 1) / Chunk), chunk =>
        {
            long i0 = (long)chunk * Chunk, i1 = Math.Min(n, i0 + Chunk);
            for (long i = i0; i < i1; i++)
            {
                T x = a[i];
                y[i] = op switch
                {
                    PointwiseOp.Silu => x / (T.One + T.Exp(-x)),
                    PointwiseOp.Relu => T.Max(x, T.Zero),
                    PointwiseOp.Scale => alpha * x,
                    PointwiseOp.Add => x + b[i % period],
                    _ => x * b[i],
                };
            }
        });
    }

    public static void Backward<T>(PointwiseOp op, PinnedBuffer<T> a, PinnedBuffer<T> b, PinnedBuffer<T> dy, PinnedBuffer<T> da, PinnedBuffer<T> db, T alpha)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        long n = a.Length;
        if (!da.IsEmpty)
        {
            Parallel.For(0, (int)((n + Chunk - 1) / Chunk), chunk =>
            {
                long i0 = (long)chunk * Chunk, i1 = Math.Min(n, i0 + Chunk);
                for (long i = i0; i < i1; i++)
                {
                    T x = a[i], g = dy[i];
                    da[i] += op switch
                    {
                        PointwiseOp.Silu => g * SiluDerivative(x),
                        PointwiseOp.Relu => x > T.Zero ? g : T.Zero,
                        PointwiseOp.Scale => alpha * g,
                        PointwiseOp.Add => g,
                        _ => g * b[i],
                    };
                }
            });
        }
        if (db.IsEmpty)
        {
            return;
        }
        if (op == PointwiseOp.Multiply)
        {
            Parallel.For(0, (int)((n + Chunk - 1) / Chunk), chunk =>
            {
                long i0 = (long)chunk * Chunk, i1 = Math.Min(n, i0 + Chunk);
                for (long i = i0; i < i1; i++)
                {
                    db[i] += dy[i] * a[i];
                }
            });
            return;
        }
        // Add: db gets the sum over the repeats, each element owned by one task (no races).
        long period = b.Length, repeats = n / period;
        Parallel.For(0, (int)((period + Chunk - 1) / Chunk), chunk =>
        {
            long j0 = (long)chunk * Chunk, j1 = Math.Min(period, j0 + Chunk);
            for (long r = 0; r < repeats; r++)
            {
                for (long j = j0; j < j1; j++)
                {
                    db[j] += dy[(r * period) + j];
                }
            }
        });
    }

    // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x))).
    private static T SiluDerivative<T>(T x)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T s = T.One / (T.One + T.Exp(-x));
        return s * (T.One + (x * (T.One - s)));
    }
}

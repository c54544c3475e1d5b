using System.Numerics;

namespace Attention.Native.Ops;

/// <summary>
/// CPU reference of <see cref="Lrpe"/>, generic over float and double. Angles θ·p are formed and their sine and
/// cosine taken in double, as RoPE does, so float and double see the same positions exactly.
/// </summary>
internal static class LrpeCpu
{
    public static void Forward<T>(PinnedBuffer<T> x, PinnedBuffer<T> theta, PinnedBuffer<T> y, int batch, int seq, int heads, int width, TokenPositions positions)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        // One task per token row: it owns the output rows of every head of that token.
        Parallel.For(0, batch * seq, bt =>
        {
            double position = positions.At(bt % seq);
            for (int h = 0; h < heads; h++)
            {
                var xr = x.Slice((((long)bt * heads) + h) * width, width);
                var yr = y.Slice((((long)bt * heads) + h) * 2 * width, 2 * width);
                var th = theta.Slice((long)h * width, width);
                for (int j = 0; j < width; j++)
                {
                    var (sin, cos) = Math.SinCos(double.CreateTruncating(th[j]) * position);
                    yr[j] = xr[j] * T.CreateTruncating(cos);
                    yr[width + j] = xr[j] * T.CreateTruncating(sin);
                }
            }
        });
    }

    public static void Backward<T>(PinnedBuffer<T> x, PinnedBuffer<T> theta, PinnedBuffer<T> dy, PinnedBuffer<T> dx, PinnedBuffer<T> dtheta, int batch, int seq, int heads, int width, TokenPositions positions)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (!dx.IsEmpty)
        {
            // dx = dy_cos ⊙ cos + dy_sin ⊙ sin; one task per token row.
            Parallel.For(0, batch * seq, bt =>
            {
                double position = positions.At(bt % seq);
                for (int h = 0; h < heads; h++)
                {
                    var dxr = dx.Slice((((long)bt * heads) + h) * width, width);
                    var dyr = dy.Slice((((long)bt * heads) + h) * 2 * width, 2 * width);
                    var th = theta.Slice((long)h * width, width);
                    for (int j = 0; j < width; j++)
                    {
                        var (sin, cos) = Math.SinCos(double.CreateTruncating(th[j]) * position);
                        dxr[j] += (dyr[j] * T.CreateTruncating(cos)) + (dyr[width + j] * T.CreateTruncating(sin));
                    }
                }
            });
        }
        if (dtheta.IsEmpty)
        {
            return;
        }
        // dθ = Σ_{b,t} p · x ⊙ (dy_sin ⊙ cos − dy_cos ⊙ sin). One task per head owns its row of dθ and sums the
        // rows in a fixed order, so the result is deterministic.
        Parallel.For(0, heads, h =>
        {
            var th = theta.Slice((long)h * width, width);
            var sum = new T[width];
            for (int bt = 0; bt < batch * seq; bt++)
            {
                double position = positions.At(bt % seq);
                T p = T.CreateTruncating(position);
                var xr = x.Slice((((long)bt * heads) + h) * width, width);
                var dyr = dy.Slice((((long)bt * heads) + h) * 2 * width, 2 * width);
                for (int j = 0; j < width; j++)
                {
                    var (sin, cos) = Math.SinCos(double.CreateTruncating(th[j]) * position);
                    sum[j] += p * xr[j] * ((dyr[width + j] * T.CreateTruncating(cos)) - (dyr[j] * T.CreateTruncating(sin)));
                }
            }
            var destination = dtheta.Slice((long)h * width, width);
            for (int j = 0; j < width; j++)
            {
                destination[j] += sum[j];
            }
        });
    }
}

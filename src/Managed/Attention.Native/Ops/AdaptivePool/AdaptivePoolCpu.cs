using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="AdaptivePool"/>, generic over float and double.</summary>
internal static class AdaptivePoolCpu
{
    /// <summary>y[b,i,:] = mean of x[b, start(i) … end(i)−1, :]; one task per output row.</summary>
    public static void Forward<T>(PinnedBuffer<T> x, PinnedBuffer<T> y, int batch, int time, int outputs, int channels)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Parallel.For(0L, (long)batch * outputs, row =>
        {
            long b = row / outputs;
            int i = (int)(row % outputs);
            var (start, end) = Window(i, time, outputs);
            var yr = y.Slice(row * channels, channels);
            yr.Clear();
            for (int t = start; t < end; t++)
            {
                TensorPrimitives.Add<T>(yr, x.Slice(((b * time) + t) * channels, channels), yr);
            }
            TensorPrimitives.Multiply<T>(yr, T.One / T.CreateChecked(end - start), yr);
        });
    }

    /// <summary>dx[b,t,:] += Σ over the windows i containing t of dy[b,i,:] / |window i|; one task per input row.</summary>
    public static void Backward<T>(PinnedBuffer<T> dy, PinnedBuffer<T> dx, int batch, int time, int outputs, int channels)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Parallel.For(0L, (long)batch * time, row =>
        {
            long b = row / time;
            int t = (int)(row % time);
            var dxr = dx.Slice(row * channels, channels);
            // Windows are monotone in i: t lies in start(i) ≤ t < end(i) exactly for
            // floor(t·n/T) ≤ i ≤ ceil((t+1)·n/T) − 1.
            int first = (int)((long)t * outputs / time);
            int last = (int)Math.Min(outputs - 1, ((((long)t + 1) * outputs) + time - 1) / time - 1);
            for (int i = first; i <= last; i++)
            {
                var (start, end) = Window(i, time, outputs);
                T share = T.One / T.CreateChecked(end - start);
                TensorPrimitives.MultiplyAdd<T>(dy.Slice(((b * outputs) + i) * channels, channels), share, dxr, dxr);
            }
        });
    }

    /// <summary>The positions [start, end) that output i averages: floor(i·T/n) … ceil((i+1)·T/n) − 1.</summary>
    private static (int Start, int End) Window(int i, int time, int outputs) =>
        ((int)((long)i * time / outputs), (int)(((((long)i + 1) * time) + outputs - 1) / outputs));
}

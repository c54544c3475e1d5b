using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="DepthwiseConv"/>, generic over float and double.</summary>
internal static class DepthwiseConvCpu
{
    /// <summary>Rows per partial sum of the filter gradients, at most this many partials (fixed by the shape, so sums are deterministic).</summary>
    private const int MaxPartials = 256;

    /// <summary>y[b,t,:] = bias (tiled) + Σ_j w[:,j] (tiled) ⊙ x[b,t+j−pad,:]; one task per output row (b, t).</summary>
    public static void Forward<T>(PinnedBuffer<T> x, PinnedBuffer<T> weight, PinnedBuffer<T> bias, PinnedBuffer<T> y, int batch, int time, int channels, int filters, int kernel)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T[] taps = TapMajor(weight, filters, kernel);
        int pad = (kernel - 1) / 2;
        Parallel.For(0L, (long)batch * time, row =>
        {
            int t = (int)(row % time);
            var yr = y.Slice(row * channels, channels);
            for (int g = 0; g < channels; g += filters)
            {
                if (bias.IsEmpty)
                {
                    yr.Slice(g, filters).Clear();
                }
                else
                {
                    bias.Span.CopyTo(yr.Slice(g, filters));
                }
            }
            for (int j = 0; j < kernel; j++)
            {
                int source = t + j - pad;
                if (source < 0 || source >= time)
                {
                    continue;
                }
                var xr = x.Slice((row + source - t) * channels, channels);
                var tap = taps.AsSpan(j * filters, filters);
                for (int g = 0; g < channels; g += filters)
                {
                    var target = yr.Slice(g, filters);
                    TensorPrimitives.MultiplyAdd<T>(xr.Slice(g, filters), tap, target, target);
                }
            }
        });
    }

    /// <summary>Adds dx, dweight and dbias (each skipped when empty).</summary>
    public static void Backward<T>(PinnedBuffer<T> x, PinnedBuffer<T> weight, PinnedBuffer<T> dy, PinnedBuffer<T> dx, PinnedBuffer<T> dweight, PinnedBuffer<T> dbias, int batch, int time, int channels, int filters, int kernel)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int pad = (kernel - 1) / 2;
        long rows = (long)batch * time;
        if (!dx.IsEmpty)
        {
            T[] taps = TapMajor(weight, filters, kernel);
            // One task per input row (b, s): dx[b,s,:] += w[:,j] ⊙ dy[b,s−j+pad,:].
            Parallel.For(0L, rows, row =>
            {
                int s = (int)(row % time);
                var dxr = dx.Slice(row * channels, channels);
                for (int j = 0; j < kernel; j++)
                {
                    int t = s - j + pad;
                    if (t < 0 || t >= time)
                    {
                        continue;
                    }
                    var dyr = dy.Slice((row + t - s) * channels, channels);
                    var tap = taps.AsSpan(j * filters, filters);
                    for (int g = 0; g < channels; g += filters)
                    {
                        var target = dxr.Slice(g, filters);
                        TensorPrimitives.MultiplyAdd<T>(dyr.Slice(g, filters), tap, target, target);
                    }
                }
            });
        }
        if ((dweight.IsEmpty && dbias.IsEmpty) || rows == 0)
        {
            return;
        }
        // The filter gradients reduce over every row: per-chunk partials [k + 1, Cw] (taps, then bias),
        // summed afterwards in chunk order.
        long rowsPerChunk = Math.Max(1, (rows + MaxPartials - 1) / MaxPartials);
        int chunks = (int)((rows + rowsPerChunk - 1) / rowsPerChunk);
        var partials = new T[chunks][];
        Parallel.For(0, chunks, chunk =>
        {
            var partial = new T[(kernel + 1) * filters];
            var biasPartial = partial.AsSpan(kernel * filters, filters);
            long r0 = chunk * rowsPerChunk, r1 = Math.Min(rows, r0 + rowsPerChunk);
            for (long row = r0; row < r1; row++)
            {
                int t = (int)(row % time);
                var dyr = dy.Slice(row * channels, channels);
                for (int g = 0; g < channels; g += filters)
                {
                    TensorPrimitives.Add<T>(biasPartial, dyr.Slice(g, filters), biasPartial);
                }
                for (int j = 0; j < kernel; j++)
                {
                    int source = t + j - pad;
                    if (source < 0 || source >= time)
                    {
                        continue;
                    }
                    var xr = x.Slice((row + source - t) * channels, channels);
                    var tapPartial = partial.AsSpan(j * filters, filters);
                    for (int g = 0; g < channels; g += filters)
                    {
                        TensorPrimitives.MultiplyAdd<T>(dyr.Slice(g, filters), xr.Slice(g, filters), tapPartial, tapPartial);
                    }
                }
            }
            partials[chunk] = partial;
        });
        var total = partials[0];
        for (int chunk = 1; chunk < chunks; chunk++)
        {
            TensorPrimitives.Add<T>(total, partials[chunk], total);
        }
        for (int f = 0; f < filters; f++)
        {
            if (!dweight.IsEmpty)
            {
                for (int j = 0; j < kernel; j++)
                {
                    dweight[((long)f * kernel) + j] += total[(j * filters) + f];
                }
            }
            if (!dbias.IsEmpty)
            {
                dbias[f] += total[(kernel * filters) + f];
            }
        }
    }

    // weight [Cw, 1, k] → [k, Cw], so each tap is a contiguous vector across the filters.
    private static T[] TapMajor<T>(PinnedBuffer<T> weight, int filters, int kernel)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var taps = new T[kernel * filters];
        for (int f = 0; f < filters; f++)
        {
            for (int j = 0; j < kernel; j++)
            {
                taps[(j * filters) + f] = weight[((long)f * kernel) + j];
            }
        }
        return taps;
    }
}

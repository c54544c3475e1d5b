using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="GridResize"/>, generic over float and double (the type PyTorch computes the source coordinates in).</summary>
internal static class GridResizeCpu
{
    /// <summary>Below this many channels the kernels loop over elements instead of calling vector primitives per cell.</summary>
    private const int NarrowChannels = 16;

    /// <summary>The sizes of one resize: B, the input and output grids, C.</summary>
    public readonly record struct Grid(int Batch, int InHeight, int InWidth, int OutHeight, int OutWidth, int Channels);

    /// <summary>The two cells output o reads along one axis and their weights 1 − λ and λ.</summary>
    public readonly record struct Tap<T>(int I0, int I1, T W0, T W1);

    /// <summary>
    /// The taps of every output along an axis of length <paramref name="inSize"/> resized to <paramref name="outSize"/>, as
    /// PyTorch computes them: scale = in/out and src = scale·(o + 0.5) − 0.5 in <typeparamref name="T"/>, clamped at 0;
    /// i0 = min(⌊src⌋, in − 1), λ = src − i0 clamped to [0, 1].
    /// </summary>
    public static Tap<T>[] Taps<T>(int inSize, int outSize)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T scale = T.CreateChecked(inSize) / T.CreateChecked(outSize), half = T.CreateChecked(0.5);
        var taps = new Tap<T>[outSize];
        for (int o = 0; o < outSize; o++)
        {
            T src = T.Max((scale * (T.CreateChecked(o) + half)) - half, T.Zero);
            int i0 = Math.Min(int.CreateTruncating(T.Floor(src)), inSize - 1);
            T lambda = T.Clamp(src - T.CreateChecked(i0), T.Zero, T.One);
            taps[o] = new Tap<T>(i0, Math.Min(i0 + 1, inSize - 1), T.One - lambda, lambda);
        }
        return taps;
    }

    /// <summary>y[b, (i, j), :] = Σ of the four cells output (i, j) reads, weighted by the row and column weights; one task per output row of the grid.</summary>
    public static void Forward<T>(PinnedBuffer<T> x, PinnedBuffer<T> y, Grid g)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var rows = Taps<T>(g.InHeight, g.OutHeight);
        var cols = Taps<T>(g.InWidth, g.OutWidth);
        int c = g.Channels;
        ForRows((long)g.Batch * g.OutHeight, (long)g.OutWidth * c, row =>
        {
            long b = row / g.OutHeight;
            var r = rows[row % g.OutHeight];
            long top = ((b * g.InHeight) + r.I0) * g.InWidth, bottom = ((b * g.InHeight) + r.I1) * g.InWidth;
            if (c < NarrowChannels)
            {
                // Few channels (the resized bias maps have one): per-element spans would cost more than the arithmetic.
                long outRow = row * g.OutWidth;
                for (int j = 0; j < g.OutWidth; j++)
                {
                    var k = cols[j];
                    for (int ch = 0; ch < c; ch++)
                    {
                        y[((outRow + j) * c) + ch] = (r.W0 * ((k.W0 * x[((top + k.I0) * c) + ch]) + (k.W1 * x[((top + k.I1) * c) + ch])))
                            + (r.W1 * ((k.W0 * x[((bottom + k.I0) * c) + ch]) + (k.W1 * x[((bottom + k.I1) * c) + ch])));
                    }
                }
                return;
            }
            for (int j = 0; j < g.OutWidth; j++)
            {
                var k = cols[j];
                var yr = y.Slice(((row * g.OutWidth) + j) * c, c);
                TensorPrimitives.Multiply<T>(x.Slice((top + k.I0) * c, c), r.W0 * k.W0, yr);
                TensorPrimitives.MultiplyAdd<T>(x.Slice((top + k.I1) * c, c), r.W0 * k.W1, yr, yr);
                TensorPrimitives.MultiplyAdd<T>(x.Slice((bottom + k.I0) * c, c), r.W1 * k.W0, yr, yr);
                TensorPrimitives.MultiplyAdd<T>(x.Slice((bottom + k.I1) * c, c), r.W1 * k.W1, yr, yr);
            }
        });
    }

    /// <summary>
    /// dx[b, (s, ·), :] += what the outputs reading input row s send back; one task per input row of the grid, so each
    /// task writes only its own row (the outputs that read row s are listed per row first).
    /// </summary>
    public static void Backward<T>(PinnedBuffer<T> dy, PinnedBuffer<T> dx, Grid g)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var rows = Taps<T>(g.InHeight, g.OutHeight);
        var cols = Taps<T>(g.InWidth, g.OutWidth);
        // readers[s]: (output row, weight) for each time an output row reads input row s; an edge row read as both i0
        // and i1 is listed twice, its weights 1 − λ and λ summing to what it read.
        var readers = new List<(int Row, T Weight)>[g.InHeight];
        for (int s = 0; s < g.InHeight; s++)
        {
            readers[s] = [];
        }
        for (int o = 0; o < g.OutHeight; o++)
        {
            readers[rows[o].I0].Add((o, rows[o].W0));
            readers[rows[o].I1].Add((o, rows[o].W1));
        }
        int c = g.Channels;
        // An input row collects about OutHeight/InHeight + 1 output rows of OutWidth·C values.
        ForRows((long)g.Batch * g.InHeight, (long)g.OutWidth * c * ((g.OutHeight / g.InHeight) + 1), row =>
        {
            long b = row / g.InHeight;
            long target = row * g.InWidth;
            foreach (var (o, weight) in readers[row % g.InHeight])
            {
                long source = ((b * g.OutHeight) + o) * g.OutWidth;
                if (c < NarrowChannels)
                {
                    for (int j = 0; j < g.OutWidth; j++)
                    {
                        var k = cols[j];
                        for (int ch = 0; ch < c; ch++)
                        {
                            T d = dy[((source + j) * c) + ch] * weight;
                            dx[((target + k.I0) * c) + ch] += d * k.W0;
                            dx[((target + k.I1) * c) + ch] += d * k.W1;
                        }
                    }
                    continue;
                }
                for (int j = 0; j < g.OutWidth; j++)
                {
                    var k = cols[j];
                    var dyr = dy.Slice((source + j) * c, c);
                    var left = dx.Slice((target + k.I0) * c, c);
                    TensorPrimitives.MultiplyAdd<T>(dyr, weight * k.W0, left, left);
                    var right = dx.Slice((target + k.I1) * c, c);
                    TensorPrimitives.MultiplyAdd<T>(dyr, weight * k.W1, right, right);
                }
            }
        });
    }

    /// <summary>Runs <paramref name="body"/> for rows 0 … count − 1 in parallel, in tasks of at least ~16k elements' work (a row of a resized bias map is a few dozen).</summary>
    private static void ForRows(long count, long workPerRow, Action<long> body)
    {
        long perTask = Math.Max(1, 16384 / Math.Max(1, workPerRow));
        Parallel.For(0L, (count + perTask - 1) / perTask, task =>
        {
            for (long row = task * perTask, end = Math.Min(count, row + perTask); row < end; row++)
            {
                body(row);
            }
        });
    }
}

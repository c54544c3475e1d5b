using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Attention.Native.Ops;

/// <summary>
/// CPU reference of <see cref="DepthwiseConv"/>, generic over float and double. Both forms run as the 2-D one
/// (<see cref="DepthwiseGrid"/>): x is [tokens, C] with token row = (b·H + i)·W + j, so the token (i + Δi, j + Δj) lies
/// Δi·W + Δj rows away.
/// </summary>
internal static class DepthwiseConvCpu
{
    /// <summary>Rows per partial sum of the filter gradients, at most this many partials (fixed by the shape, so sums are deterministic).</summary>
    private const int MaxPartials = 256;

    /// <summary>y[token,:] = bias (tiled) + Σ_{u,v} w[:,u,v] (tiled) ⊙ x[token + (u−ph)·W + v−pw, :] over the taps inside the image; one task per token.</summary>
    public static void Forward<T>(PinnedBuffer<T> x, PinnedBuffer<T> weight, PinnedBuffer<T> bias, PinnedBuffer<T> y, DepthwiseGrid g)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T[] taps = TapMajor(weight, g);
        T[]? biasRow = bias.IsEmpty ? null : Tiled(bias.Span, g.Channels);
        int channels = g.Channels;
        Parallel.For(0L, g.Tokens, row =>
        {
            var yr = y.Slice(row * channels, channels);
            if (biasRow is null)
            {
                yr.Clear();
            }
            else
            {
                biasRow.CopyTo(yr);
            }
            Accumulate(yr, x, taps, row, new Window(g, row), g, mirrored: false);
        });
    }

    /// <summary>Adds dx, dweight and dbias (each skipped when empty).</summary>
    public static void Backward<T>(PinnedBuffer<T> x, PinnedBuffer<T> weight, PinnedBuffer<T> dy, PinnedBuffer<T> dx, PinnedBuffer<T> dweight, PinnedBuffer<T> dbias, DepthwiseGrid g)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int channels = g.Channels, taps = g.Taps;
        long rows = g.Tokens;
        if (!dx.IsEmpty)
        {
            T[] tapRows = TapMajor(weight, g);
            // One task per input token s: dx[s,:] += w[:,u,v] ⊙ dy[s − (u−ph)·W − (v−pw), :]; the output tokens reading s
            // are the window of s mirrored (kh, kw odd), so tap (u, v) of s's window carries weight (kh−1−u, kw−1−v).
            Parallel.For(0L, rows, row =>
            {
                Accumulate(dx.Slice(row * channels, channels), dy, tapRows, row, new Window(g, row), g, mirrored: true);
            });
        }
        if ((dweight.IsEmpty && dbias.IsEmpty) || rows == 0)
        {
            return;
        }
        // The filter gradients reduce over every token: per-chunk partials [kh·kw + 1, C] (taps, then bias), summed
        // afterwards in chunk order, then over the channels sharing a filter in channel order.
        long rowsPerChunk = Math.Max(1, (rows + MaxPartials - 1) / MaxPartials);
        int chunks = (int)((rows + rowsPerChunk - 1) / rowsPerChunk);
        var partials = new T[chunks][];
        Parallel.For(0, chunks, chunk =>
        {
            var partial = new T[(taps + 1) * channels];
            long r0 = chunk * rowsPerChunk, r1 = Math.Min(rows, r0 + rowsPerChunk);
            for (long row = r0; row < r1; row++)
            {
                AccumulateFilterGradients(partial, dy.Slice(row * channels, channels), x, row, new Window(g, row), g);
            }
            partials[chunk] = partial;
        });
        var total = partials[0];
        for (int chunk = 1; chunk < chunks; chunk++)
        {
            TensorPrimitives.Add<T>(total, partials[chunk], total);
        }
        int filters = g.Filters;
        for (int f = 0; f < filters; f++)
        {
            if (!dweight.IsEmpty)
            {
                for (int tap = 0; tap < taps; tap++)
                {
                    dweight[((long)f * taps) + tap] += GroupSum(total, (tap * channels) + f, channels, filters);
                }
            }
            if (!dbias.IsEmpty)
            {
                dbias[f] += GroupSum(total, (taps * channels) + f, channels, filters);
            }
        }
    }

    /// <summary>
    /// target += Σ over the window's taps (u, v) of tapRows[tap] ⊙ source[row + offset(u, v), :], tap = (u, v), or
    /// (kh−1−u, kw−1−v) when <paramref name="mirrored"/>, in tap order. Channel blocks of one vector keep the sum in
    /// a register across the taps (two loads per multiply-add, where a multiply-add per tap over the whole row would
    /// reload and store the target each time).
    /// </summary>
    private static void Accumulate<T>(Span<T> target, PinnedBuffer<T> source, T[] tapRows, long row, Window window, DepthwiseGrid g, bool mirrored)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int channels = g.Channels, kh = g.KernelH, kw = g.KernelW;
        // The rows the window reads, from tap (U0, V0) to tap (U1 − 1, V1 − 1); tap (u, v) starts (u − U0)·W + v − V0 rows in.
        long first = row + window.Offset(window.U0, window.V0), last = row + window.Offset(window.U1 - 1, window.V1 - 1);
        var rows = source.Slice(first * channels, checked((int)((last - first + 1) * channels)));
        ref T s0 = ref MemoryMarshal.GetReference(rows);
        ref T t0 = ref MemoryMarshal.GetReference(target);
        ref T w0 = ref MemoryMarshal.GetReference(tapRows.AsSpan());
        int c = 0;
        for (; c <= channels - Vector<T>.Count; c += Vector<T>.Count)
        {
            var acc = Vector.LoadUnsafe(ref t0, (nuint)c);
            for (int u = window.U0; u < window.U1; u++)
            {
                long line = ((long)(u - window.U0) * g.Width) - window.V0;
                for (int v = window.V0; v < window.V1; v++)
                {
                    int tap = mirrored ? ((kh - 1 - u) * kw) + (kw - 1 - v) : (u * kw) + v;
                    acc += Vector.LoadUnsafe(ref w0, (nuint)((tap * channels) + c)) * Vector.LoadUnsafe(ref s0, (nuint)(((line + v) * channels) + c));
                }
            }
            acc.StoreUnsafe(ref t0, (nuint)c);
        }
        for (; c < channels; c++)
        {
            T acc = target[c];
            for (int u = window.U0; u < window.U1; u++)
            {
                long line = ((long)(u - window.U0) * g.Width) - window.V0;
                for (int v = window.V0; v < window.V1; v++)
                {
                    int tap = mirrored ? ((kh - 1 - u) * kw) + (kw - 1 - v) : (u * kw) + v;
                    acc += tapRows[(tap * channels) + c] * rows[checked((int)(((line + v) * channels) + c))];
                }
            }
            target[c] = acc;
        }
    }

    /// <summary>partial [kh·kw + 1, C] += one token's terms: row tap (u, v) gets dy ⊙ x[row + offset(u, v), :] over the window, the last row dy.</summary>
    private static void AccumulateFilterGradients<T>(T[] partial, Span<T> dyRow, PinnedBuffer<T> x, long row, Window window, DepthwiseGrid g)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int channels = g.Channels, taps = g.Taps, kw = g.KernelW;
        var biasPartial = partial.AsSpan(taps * channels, channels);
        TensorPrimitives.Add<T>(biasPartial, dyRow, biasPartial);
        long first = row + window.Offset(window.U0, window.V0), last = row + window.Offset(window.U1 - 1, window.V1 - 1);
        var rows = x.Slice(first * channels, checked((int)((last - first + 1) * channels)));
        ref T s0 = ref MemoryMarshal.GetReference(rows);
        ref T p0 = ref MemoryMarshal.GetReference(partial.AsSpan());
        ref T d0 = ref MemoryMarshal.GetReference(dyRow);
        int c = 0;
        for (; c <= channels - Vector<T>.Count; c += Vector<T>.Count)
        {
            var g0 = Vector.LoadUnsafe(ref d0, (nuint)c);
            for (int u = window.U0; u < window.U1; u++)
            {
                long line = ((long)(u - window.U0) * g.Width) - window.V0;
                for (int v = window.V0; v < window.V1; v++)
                {
                    nuint at = (nuint)((((u * kw) + v) * channels) + c);
                    var sum = Vector.LoadUnsafe(ref p0, at) + (g0 * Vector.LoadUnsafe(ref s0, (nuint)(((line + v) * channels) + c)));
                    sum.StoreUnsafe(ref p0, at);
                }
            }
        }
        for (; c < channels; c++)
        {
            for (int u = window.U0; u < window.U1; u++)
            {
                long line = ((long)(u - window.U0) * g.Width) - window.V0;
                for (int v = window.V0; v < window.V1; v++)
                {
                    partial[(((u * kw) + v) * channels) + c] += dyRow[c] * rows[checked((int)(((line + v) * channels) + c))];
                }
            }
        }
    }

    // Σ over the channels c ≡ f (mod Cw) of one [C] row of the partials starting at `first` (= row start + f).
    private static T GroupSum<T>(T[] total, int first, int channels, int filters)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T sum = T.Zero;
        for (int c = 0; c < channels; c += filters)
        {
            sum += total[first + c];
        }
        return sum;
    }

    // weight [Cw, 1, kh, kw] → [kh·kw, C] with filter c mod Cw in column c: each tap is one contiguous vector across all
    // channels, so a token takes one multiply-add per tap whatever the filter sharing.
    private static T[] TapMajor<T>(PinnedBuffer<T> weight, DepthwiseGrid g)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int taps = g.Taps, channels = g.Channels;
        var rows = new T[taps * channels];
        for (int c = 0; c < channels; c++)
        {
            long filter = (long)(c % g.Filters) * taps;
            for (int tap = 0; tap < taps; tap++)
            {
                rows[(tap * channels) + c] = weight[filter + tap];
            }
        }
        return rows;
    }

    private static T[] Tiled<T>(ReadOnlySpan<T> values, int channels)
    {
        var row = new T[channels];
        for (int c = 0; c < channels; c += values.Length)
        {
            values.CopyTo(row.AsSpan(c, values.Length));
        }
        return row;
    }

    /// <summary>
    /// The taps [U0, U1) × [V0, V1) of token <c>row</c> that land inside its image (zero padding drops the rest; the
    /// centre tap always lands, so the window is never empty), and the row distance to the token tap (u, v) reads.
    /// </summary>
    private readonly struct Window
    {
        public readonly int U0, U1, V0, V1;
        private readonly int _width, _padH, _padW;

        public Window(DepthwiseGrid g, long row)
        {
            long line = row / g.Width;
            int j = (int)(row - (line * g.Width));
            int i = g.Height == 1 ? 0 : (int)(line % g.Height);
            _width = g.Width;
            _padH = (g.KernelH - 1) / 2;
            _padW = (g.KernelW - 1) / 2;
            // Tap u reads image row i + u − padH, which must lie in [0, H).
            U0 = Math.Max(0, _padH - i);
            U1 = Math.Min(g.KernelH, g.Height + _padH - i);
            V0 = Math.Max(0, _padW - j);
            V1 = Math.Min(g.KernelW, g.Width + _padW - j);
        }

        public long Offset(int u, int v) => ((long)(u - _padH) * _width) + (v - _padW);
    }
}

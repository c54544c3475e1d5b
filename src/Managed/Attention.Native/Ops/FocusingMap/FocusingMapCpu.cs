using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="FocusingMap"/>, generic over float and double.</summary>
internal static class FocusingMapCpu
{
    // Rows are processed in fixed chunks: each chunk owns its scratch and its partial dscale, and the
    // partials are summed in chunk order, so results do not depend on thread scheduling.
    private const int RowsPerChunk = 32;

    /// <summary>y = ‖u‖ · u^p / ‖u^p‖ per row of <paramref name="channels"/>, u = (ReLU(x) + ε) / softplus(scale); y may be x.</summary>
    public static void Forward<T>(PinnedBuffer<T> x, PinnedBuffer<T> scale, PinnedBuffer<T> y, long rows, int channels, T focusingFactor)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (channels == 0)
        {
            return;
        }
        T[] softplus = Softplus(scale);
        Parallel.For(0, ChunkCount(rows), chunk =>
        {
            var u = new T[channels];
            var direction = new T[channels];
            for (long row = (long)chunk * RowsPerChunk; row < Math.Min(rows, ((long)chunk + 1) * RowsPerChunk); row++)
            {
                T norm = Focus(x.Slice(row * channels, channels), softplus, focusingFactor, u, direction);
                TensorPrimitives.Multiply<T>(direction, norm, y.Slice(row * channels, channels));
            }
        });
    }

    /// <summary>
    /// With ŵ = u^p/‖u^p‖, n = ‖u‖, s = dy·ŵ: du = s·u/n + p·n·ŵ⊙(dy − s·ŵ)/u;
    /// dx += du/softplus(scale) where x &gt; 0; dscale += −Σ_rows du⊙u · sigmoid(scale)/softplus(scale).
    /// </summary>
    public static void Backward<T>(PinnedBuffer<T> x, PinnedBuffer<T> scale, PinnedBuffer<T> dy, PinnedBuffer<T> dx, PinnedBuffer<T> dscale, long rows, int channels, T focusingFactor)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (channels == 0 || (dx.IsEmpty && dscale.IsEmpty))
        {
            return;
        }
        T[] softplus = Softplus(scale);
        int chunks = ChunkCount(rows);
        T[] partialDscale = dscale.IsEmpty ? [] : new T[(long)chunks * channels];
        Parallel.For(0, chunks, chunk =>
        {
            var u = new T[channels];
            var direction = new T[channels];
            var du = new T[channels];
            for (long row = (long)chunk * RowsPerChunk; row < Math.Min(rows, ((long)chunk + 1) * RowsPerChunk); row++)
            {
                var xr = x.Slice(row * channels, channels);
                var dyr = dy.Slice(row * channels, channels);
                T norm = Focus(xr, softplus, focusingFactor, u, direction);
                T s = TensorPrimitives.Dot<T>(dyr, direction);
                for (int c = 0; c < channels; c++)
                {
                    // Through the norm n, then through the normalised power u^p/‖u^p‖ (the scale of u^p cancels).
                    du[c] = (s * u[c] / norm) + (focusingFactor * norm * direction[c] * (dyr[c] - (s * direction[c])) / u[c]);
                }
                if (!dx.IsEmpty)
                {
                    var dxr = dx.Slice(row * channels, channels);
                    for (int c = 0; c < channels; c++)
                    {
                        if (xr[c] > T.Zero)
                        {
                            dxr[c] += du[c] / softplus[c];
                        }
                    }
                }
                if (partialDscale.Length > 0)
                {
                    var partial = partialDscale.AsSpan(chunk * channels, channels);
                    for (int c = 0; c < channels; c++)
                    {
                        partial[c] += du[c] * u[c];
                    }
                }
            }
        });
        if (dscale.IsEmpty)
        {
            return;
        }
        // u = a / softplus(scale): ∂u/∂scale = −u · sigmoid(scale) / softplus(scale).
        var target = dscale.Span;
        var sum = new T[channels];
        for (int chunk = 0; chunk < chunks; chunk++)
        {
            TensorPrimitives.Add<T>(sum, partialDscale.AsSpan(chunk * channels, channels), sum);
        }
        for (int c = 0; c < channels; c++)
        {
            target[c] -= sum[c] * Sigmoid(scale[c]) / softplus[c];
        }
    }

    /// <summary>Fills u and the unit direction ŵ = u^p/‖u^p‖ of one row; returns n = ‖u‖.</summary>
    private static T Focus<T>(ReadOnlySpan<T> x, T[] softplus, T focusingFactor, Span<T> u, Span<T> direction)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T epsilon = T.CreateChecked(FocusingMap.Epsilon);
        for (int c = 0; c < x.Length; c++)
        {
            u[c] = (T.Max(x[c], T.Zero) + epsilon) / softplus[c];
        }
        T norm = TensorPrimitives.Norm<T>(u);
        // ŵ is invariant to rescaling u, so powers of u/max(u) (all ≤ 1) avoid overflow and underflow of u^p.
        T largest = TensorPrimitives.Max<T>(u);
        for (int c = 0; c < u.Length; c++)
        {
            direction[c] = T.Pow(u[c] / largest, focusingFactor);
        }
        TensorPrimitives.Divide<T>(direction, TensorPrimitives.Norm<T>(direction), direction);
        return norm;
    }

    private static int ChunkCount(long rows) => checked((int)((rows + RowsPerChunk - 1) / RowsPerChunk));

    // softplus(s) = max(s, 0) + log(1 + e^−|s|): no overflow, and accurate where e^−|s| is tiny.
    private static T[] Softplus<T>(PinnedBuffer<T> scale)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var result = new T[scale.Length];
        for (int c = 0; c < result.Length; c++)
        {
            T s = scale[c];
            result[c] = T.Max(s, T.Zero) + LogOnePlus(T.Exp(-T.Abs(s)));
        }
        return result;
    }

    // log(1 + e) for 0 ≤ e ≤ 1, accurate for small e: the rounding of 1 + e is divided out again.
    private static T LogOnePlus<T>(T e)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T onePlus = T.One + e;
        return onePlus == T.One ? e : T.Log(onePlus) * e / (onePlus - T.One);
    }

    private static T Sigmoid<T>(T s)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T e = T.Exp(-T.Abs(s));
        return s >= T.Zero ? T.One / (T.One + e) : e / (T.One + e);
    }
}

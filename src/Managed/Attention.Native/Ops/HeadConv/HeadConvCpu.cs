using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="HeadConv"/>, generic over float and double.</summary>
internal static class HeadConvCpu
{
    /// <summary>y[n,c,:] = bias[c] + Σ_{c',j} w[c,c',j] · x[n,c',·+j−pad]; one task per output row (n, c).</summary>
    public static void Forward<T>(PinnedBuffer<T> x, PinnedBuffer<T> weight, PinnedBuffer<T> bias, PinnedBuffer<T> y, int count, int inChannels, int outChannels, int length, int kernel)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Parallel.For(0L, (long)count * outChannels, row =>
        {
            long n = row / outChannels;
            int c = (int)(row % outChannels);
            var yr = y.Slice(row * length, length);
            yr.Fill(bias.IsEmpty ? T.Zero : bias[c]);
            for (int ci = 0; ci < inChannels; ci++)
            {
                var xr = x.Slice(((n * inChannels) + ci) * length, length);
                for (int j = 0; j < kernel; j++)
                {
                    var (l0, span, shift) = Overlap(length, kernel, j);
                    if (span > 0)
                    {
                        T w = weight[((((long)c * inChannels) + ci) * kernel) + j];
                        var target = yr.Slice(l0, span);
                        TensorPrimitives.MultiplyAdd<T>(xr.Slice(l0 + shift, span), w, target, target);
                    }
                }
            }
        });
    }

    /// <summary>Adds dx, dweight and dbias (each skipped when empty); every task owns the elements it writes.</summary>
    public static void Backward<T>(PinnedBuffer<T> x, PinnedBuffer<T> weight, PinnedBuffer<T> dy, PinnedBuffer<T> dx, PinnedBuffer<T> dweight, PinnedBuffer<T> dbias, int count, int inChannels, int outChannels, int length, int kernel)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (!dx.IsEmpty)
        {
            // One task per input row (n, c'): dx[n,c',l+shift] += w[c,c',j] · dy[n,c,l].
            Parallel.For(0L, (long)count * inChannels, row =>
            {
                long n = row / inChannels;
                int ci = (int)(row % inChannels);
                var dxr = dx.Slice(row * length, length);
                for (int c = 0; c < outChannels; c++)
                {
                    var dyr = dy.Slice(((n * outChannels) + c) * length, length);
                    for (int j = 0; j < kernel; j++)
                    {
                        var (l0, span, shift) = Overlap(length, kernel, j);
                        if (span > 0)
                        {
                            T w = weight[((((long)c * inChannels) + ci) * kernel) + j];
                            var target = dxr.Slice(l0 + shift, span);
                            TensorPrimitives.MultiplyAdd<T>(dyr.Slice(l0, span), w, target, target);
                        }
                    }
                }
            });
        }
        if (!dweight.IsEmpty)
        {
            // One task per filter pair (c, c'), summing over n in order: deterministic.
            Parallel.For(0, outChannels * inChannels, pair =>
            {
                int c = pair / inChannels, ci = pair % inChannels;
                for (int j = 0; j < kernel; j++)
                {
                    var (l0, span, shift) = Overlap(length, kernel, j);
                    if (span <= 0)
                    {
                        continue;
                    }
                    T sum = T.Zero;
                    for (long n = 0; n < count; n++)
                    {
                        var dyr = dy.Slice((((n * outChannels) + c) * length) + l0, span);
                        var xr = x.Slice((((n * inChannels) + ci) * length) + l0 + shift, span);
                        sum += TensorPrimitives.Dot<T>(dyr, xr);
                    }
                    dweight[((long)pair * kernel) + j] += sum;
                }
            });
        }
        if (!dbias.IsEmpty)
        {
            Parallel.For(0, outChannels, c =>
            {
                T sum = T.Zero;
                for (long n = 0; n < count; n++)
                {
                    sum += TensorPrimitives.Sum<T>(dy.Slice(((n * outChannels) + c) * length, length));
                }
                dbias[c] += sum;
            });
        }
    }

    /// <summary>
    /// For tap j (input offset shift = j − pad), the output positions l0 … l0+span−1 whose input l+shift lies
    /// inside [0, length): the rest read the zero padding and contribute nothing.
    /// </summary>
    private static (int First, int Span, int Shift) Overlap(int length, int kernel, int j)
    {
        int shift = j - ((kernel - 1) / 2);
        int first = Math.Max(0, -shift), end = Math.Min(length, length - shift);
        return (first, end - first, shift);
    }
}

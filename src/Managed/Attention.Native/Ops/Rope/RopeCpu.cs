using System.Numerics;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="Rope"/>, generic over float and double. Angles and the YaRN amplitude in double, as on the GPU.</summary>
internal static class RopeCpu
{
    /// <summary>
    /// Rotates each row of x [batch, seq, heads, width] into y (which may be x); <paramref name="inverse"/>
    /// rotates by the opposite angles with the same amplitude (the backward, the transpose).
    /// </summary>
    public static void Apply<T>(PinnedBuffer<T> x, PinnedBuffer<T> y, int batch, int seq, int heads, int width, RopeOptions options, TokenPositions positions, bool inverse)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int rotary = options.RotaryWidth(width);
        int offset = options.RotaryOffset;
        int half = rotary / 2;
        var inverseFrequency = options.Frequencies(rotary);
        double amplitude = options.Amplitude;
        bool interleaved = options.Style == RopeStyle.Interleaved;
        bool copyPassThrough = rotary < width && !SameStorage(x, y);
        Parallel.For(0, batch * seq, bt =>
        {
            int t = bt % seq;
            double position = positions.At(t);
            Span<T> cos = half <= 256 ? stackalloc T[half] : new T[half];
            Span<T> sin = half <= 256 ? stackalloc T[half] : new T[half];
            for (int j = 0; j < half; j++)
            {
                var (s, c) = Math.SinCos(position * inverseFrequency[j]);
                cos[j] = T.CreateTruncating(amplitude * c);
                sin[j] = T.CreateTruncating(amplitude * (inverse ? -s : s));
            }
            for (int h = 0; h < heads; h++)
            {
                long row = (((long)bt * heads) + h) * width;
                var xr = x.Slice(row, width);
                var yr = y.Slice(row, width);
                if (copyPassThrough)
                {
                    xr[..offset].CopyTo(yr);
                    xr[(offset + rotary)..].CopyTo(yr[(offset + rotary)..]);
                }
                for (int j = 0; j < half; j++)
                {
                    int ia = interleaved ? offset + (2 * j) : offset + j;
                    int ib = interleaved ? ia + 1 : ia + half;
                    T a = xr[ia], b = xr[ib];
                    yr[ia] = (a * cos[j]) - (b * sin[j]);
                    yr[ib] = (b * cos[j]) + (a * sin[j]);
                }
            }
        });
    }

    private static unsafe bool SameStorage<T>(PinnedBuffer<T> a, PinnedBuffer<T> b)
        where T : unmanaged => a.Length == b.Length && (a.IsEmpty || System.Runtime.CompilerServices.Unsafe.AreSame(ref a[0], ref b[0]));
}

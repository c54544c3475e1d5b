using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="Columns"/>: one task per source row, so a broadcast's repeats are summed in order.</summary>
internal static class ColumnsCpu
{
    public static void Copy<T>(PinnedBuffer<T> src, int srcWidth, int srcOffset, PinnedBuffer<T> dst, int dstWidth, int dstOffset, int width, int repeat, bool accumulate)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        long rows = srcWidth == 0 ? 0 : src.Length / srcWidth;
        Parallel.For(0L, rows, r =>
        {
            var from = src.Slice((r * srcWidth) + srcOffset, width);
            for (int i = 0; i < repeat; i++)
            {
                var to = dst.Slice((((r * repeat) + i) * dstWidth) + dstOffset, width);
                if (accumulate)
                {
                    TensorPrimitives.Add<T>(to, from, to);
                }
                else
                {
                    from.CopyTo(to);
                }
            }
        });
    }

    public static void Gather<T>(PinnedBuffer<T> ddst, int dstWidth, int dstOffset, PinnedBuffer<T> dsrc, int srcWidth, int srcOffset, int width, int repeat)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        long rows = srcWidth == 0 ? 0 : dsrc.Length / srcWidth;
        Parallel.For(0L, rows, r =>
        {
            var to = dsrc.Slice((r * srcWidth) + srcOffset, width);
            for (int i = 0; i < repeat; i++)
            {
                var from = ddst.Slice((((r * repeat) + i) * dstWidth) + dstOffset, width);
                TensorPrimitives.Add<T>(to, from, to);
            }
        });
    }
}

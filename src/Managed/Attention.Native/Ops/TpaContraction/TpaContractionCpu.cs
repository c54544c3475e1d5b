using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="TpaContraction"/>, generic over float and double.</summary>
internal static class TpaContractionCpu
{
    /// <summary>y[tok,h,:] = (1/R) Σ_r a[tok,h,r] · f[tok,r,:]; one task per token (b, t).</summary>
    public static void Forward<T>(PinnedBuffer<T> a, PinnedBuffer<T> f, PinnedBuffer<T> y, long tokens, int heads, int rank, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T inverseRank = T.One / T.CreateChecked(rank);
        Parallel.For(0L, tokens, token =>
        {
            for (int h = 0; h < heads; h++)
            {
                long head = (token * heads) + h;
                var yr = y.Slice(head * width, width);
                yr.Clear();
                for (int r = 0; r < rank; r++)
                {
                    T coefficient = a[(head * rank) + r] * inverseRank;
                    TensorPrimitives.MultiplyAdd<T>(f.Slice(((token * rank) + r) * width, width), coefficient, yr, yr);
                }
            }
        });
    }

    /// <summary>da += (1/R) ⟨dy_h, f_r⟩, df_r += (1/R) Σ_h a[h,r] · dy_h; one task per token (each owns its rows).</summary>
    public static void Backward<T>(PinnedBuffer<T> a, PinnedBuffer<T> f, PinnedBuffer<T> dy, PinnedBuffer<T> da, PinnedBuffer<T> df, long tokens, int heads, int rank, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T inverseRank = T.One / T.CreateChecked(rank);
        Parallel.For(0L, tokens, token =>
        {
            for (int r = 0; r < rank; r++)
            {
                var fr = f.Slice(((token * rank) + r) * width, width);
                var dfr = df.IsEmpty ? default : df.Slice(((token * rank) + r) * width, width);
                for (int h = 0; h < heads; h++)
                {
                    long head = (token * heads) + h;
                    var dyr = dy.Slice(head * width, width);
                    if (!da.IsEmpty)
                    {
                        da[(head * rank) + r] += TensorPrimitives.Dot<T>(dyr, fr) * inverseRank;
                    }
                    if (!df.IsEmpty)
                    {
                        TensorPrimitives.MultiplyAdd<T>(dyr, a[(head * rank) + r] * inverseRank, dfr, dfr);
                    }
                }
            }
        });
    }
}

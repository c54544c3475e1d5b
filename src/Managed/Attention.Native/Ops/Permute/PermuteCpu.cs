using System.Numerics;

namespace Attention.Native.Ops;

/// <summary>
/// What a permute kernel walks: the dims of the contiguous tensor it writes, and for each of its axes the stride (in
/// elements) of the same axis in the contiguous tensor it reads. Ranks below <see cref="Permute.MaxRank"/> are padded in
/// front with axes of length 1 and stride 0.
/// </summary>
internal readonly struct PermutePlan
{
    public readonly int[] Dims;
    public readonly long[] Strides;

    private PermutePlan(int[] dims, long[] strides)
    {
        Dims = dims;
        Strides = strides;
    }

    public long Count => Dims.Aggregate(1L, (n, d) => n * d);

    /// <summary>Forward: writes y, whose axis a is x's axis p[a].</summary>
    public static PermutePlan Forward(Shape x, ReadOnlySpan<int> p) => Of(Permute.Permuted(x, p), x, p);

    /// <summary>Backward: writes dx (shape <paramref name="x"/>), whose axis p[a] is dy's axis a.</summary>
    public static PermutePlan Backward(Shape x, ReadOnlySpan<int> p)
    {
        Span<int> inverse = stackalloc int[p.Length];
        for (int a = 0; a < p.Length; a++)
        {
            inverse[p[a]] = a;
        }
        return Of(x, Permute.Permuted(x, p), inverse);
    }

    // output's axis a reads source's axis readAxis[a].
    private static PermutePlan Of(Shape output, Shape source, ReadOnlySpan<int> readAxis)
    {
        int rank = output.Rank, pad = Permute.MaxRank - rank;
        Span<long> sourceStrides = stackalloc long[rank];
        long stride = 1;
        for (int k = rank - 1; k >= 0; k--)
        {
            sourceStrides[k] = stride;
            stride *= source[k];
        }
        var dims = new int[Permute.MaxRank];
        var strides = new long[Permute.MaxRank];
        dims.AsSpan(0, pad).Fill(1);
        for (int a = 0; a < rank; a++)
        {
            dims[pad + a] = output[a];
            strides[pad + a] = sourceStrides[readAxis[a]];
        }
        return new PermutePlan(dims, strides);
    }
}

/// <summary>CPU reference of <see cref="Permute"/>, generic over float and double.</summary>
internal static class PermuteCpu
{
    /// <summary>About this many elements per task.</summary>
    private const long Chunk = 1 << 14;

    /// <summary>
    /// output[e] = source[offset(e)] (or += when <paramref name="add"/>), offset(e) = Σ_a index_a(e)·stride_a over the axes
    /// of the contiguous output; tasks take whole rows of its last axis.
    /// </summary>
    public static void Gather<T>(PinnedBuffer<T> source, PinnedBuffer<T> output, PermutePlan plan, bool add)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        const int last = Permute.MaxRank - 1;
        int length = plan.Dims[last];
        long rows = length == 0 ? 0 : plan.Count / length;
        if (rows == 0)
        {
            return;
        }
        long inner = plan.Strides[last];
        long rowsPerTask = Math.Max(1, Chunk / length);
        Parallel.For(0L, (rows + rowsPerTask - 1) / rowsPerTask, task =>
        {
            long end = Math.Min(rows, (task + 1) * rowsPerTask);
            for (long row = task * rowsPerTask; row < end; row++)
            {
                long rest = row, offset = 0;
                for (int a = last - 1; a >= 0; a--)
                {
                    offset += rest % plan.Dims[a] * plan.Strides[a];
                    rest /= plan.Dims[a];
                }
                var o = output.Slice(row * length, length);
                for (int k = 0; k < length; k++)
                {
                    T v = source[offset + (k * inner)];
                    o[k] = add ? o[k] + v : v;
                }
            }
        });
    }
}

namespace Attention.Native.Ops;

/// <summary>
/// Column-range copies between tensors viewed as matrices over their last axis: slicing and concatenating along the
/// last axis (MLA's <c>[q_nope | q_pe]</c> and <c>[c | k_pe]</c>), with row broadcast (one shared <c>k_pe</c> row feeding
/// every head), and the cache appends of inference. <c>src</c> is viewed as <c>[R, src.Shape[-1]]</c> and <c>dst</c> as
/// <c>[R·f, dst.Shape[-1]]</c> for an integer repeat f ≥ 1: destination row <c>r·f + i</c> receives source row r.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class Columns
{
    /// <summary>
    /// <c>dst[r·f + i, dstOffset + c] = src[r, srcOffset + c]</c> for <c>c &lt; width</c>, <c>i &lt; f</c> (added to the
    /// contents with <paramref name="accumulate"/>). Other columns of <paramref name="dst"/> are untouched.
    /// </summary>
    public static void Copy(Tensor src, int srcOffset, Tensor dst, int dstOffset, int width, bool accumulate = false)
    {
        int repeat = Validate(src, srcOffset, dst, dstOffset, width);
        src.Backend.ColumnsCopy(src, srcOffset, dst, dstOffset, width, repeat, accumulate);
    }

    /// <summary>
    /// The adjoint of <see cref="Copy"/>: <c>dsrc[r, srcOffset + c] += Σ_i ddst[r·f + i, dstOffset + c]</c>, summing the
    /// broadcast repeats in order.
    /// </summary>
    public static void CopyBackward(Tensor ddst, int dstOffset, Tensor dsrc, int srcOffset, int width)
    {
        int repeat = Validate(dsrc, srcOffset, ddst, dstOffset, width);
        dsrc.Backend.ColumnsGather(ddst, dstOffset, dsrc, srcOffset, width, repeat);
    }

    /// <summary>Returns the columns <c>[offset, offset + width)</c> of the last axis as a new tensor.</summary>
    public static Tensor Slice(Tensor x, int offset, int width)
    {
        Check.Usable(x, nameof(x));
        Check.RankAtLeast(x, 1, nameof(x), "[..., n]");
        return x.Backend.Create(x.Shape.WithLast(width), x.DType, y => Copy(x, offset, y, 0, width));
    }

    private static int Validate(Tensor src, int srcOffset, Tensor dst, int dstOffset, int width)
    {
        Check.Usable(src, nameof(src));
        Check.DTypeSupported(src, nameof(src));
        Check.RankAtLeast(src, 1, nameof(src), "[..., n]");
        Check.Compatible(src, nameof(src), dst, nameof(dst));
        Check.RankAtLeast(dst, 1, nameof(dst), "[..., n]");
        Check.Distinct(dst, nameof(dst), src, nameof(src));
        if (width < 0 || srcOffset < 0 || srcOffset > src.Shape[-1] - width)
        {
            throw new ArgumentOutOfRangeException(nameof(srcOffset), $"srcOffset: expected columns [{srcOffset}, {srcOffset + width}) inside the last axis of {src.Shape}");
        }
        if (dstOffset < 0 || dstOffset > dst.Shape[-1] - width)
        {
            throw new ArgumentOutOfRangeException(nameof(dstOffset), $"dstOffset: expected columns [{dstOffset}, {dstOffset + width}) inside the last axis of {dst.Shape}");
        }
        long srcRows = src.Shape.Rows, dstRows = dst.Shape.Rows;
        if (srcRows == 0 ? dstRows != 0 : dstRows % srcRows != 0)
        {
            throw new ArgumentException($"dst: expected a row count that is a multiple of {srcRows} (the rows of src {src.Shape}), actual {dstRows} ({dst.Shape})", nameof(dst));
        }
        return srcRows == 0 ? 1 : checked((int)(dstRows / srcRows));
    }
}

using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of Columns: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void ColumnsCopy(Tensor src, int srcOffset, Tensor dst, int dstOffset, int width, int repeat, bool accumulate) => throw Unsupported(nameof(Columns));

    internal virtual void ColumnsGather(Tensor ddst, int dstOffset, Tensor dsrc, int srcOffset, int width, int repeat) => throw Unsupported(nameof(Columns));
}

public sealed partial class CpuBackend
{
    internal override void ColumnsCopy(Tensor src, int srcOffset, Tensor dst, int dstOffset, int width, int repeat, bool accumulate)
    {
        if (src.DType.IsHalfPrecision())
        {
            // Widening and rounding back is exact for a copy.
            using var w = new Widening(this);
            ColumnsCopy(w.In(src), srcOffset, w.Out(dst, keepContents: true), dstOffset, width, repeat, accumulate);
            return;
        }
        if (src.DType == DType.F64)
        {
            ColumnsCpu.Copy(P<double>(src), src.Shape[-1], srcOffset, P<double>(dst), dst.Shape[-1], dstOffset, width, repeat, accumulate);
        }
        else
        {
            ColumnsCpu.Copy(P<float>(src), src.Shape[-1], srcOffset, P<float>(dst), dst.Shape[-1], dstOffset, width, repeat, accumulate);
        }
    }

    internal override void ColumnsGather(Tensor ddst, int dstOffset, Tensor dsrc, int srcOffset, int width, int repeat)
    {
        if (ddst.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            ColumnsGather(w.In(ddst), dstOffset, w.Out(dsrc, keepContents: true), srcOffset, width, repeat);
            return;
        }
        if (ddst.DType == DType.F64)
        {
            ColumnsCpu.Gather(P<double>(ddst), ddst.Shape[-1], dstOffset, P<double>(dsrc), dsrc.Shape[-1], srcOffset, width, repeat);
        }
        else
        {
            ColumnsCpu.Gather(P<float>(ddst), ddst.Shape[-1], dstOffset, P<float>(dsrc), dsrc.Shape[-1], srcOffset, width, repeat);
        }
    }
}

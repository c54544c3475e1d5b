using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of GridResize: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void GridResizeForward(Tensor x, int inHeight, int inWidth, Tensor y, int outHeight, int outWidth) => throw Unsupported(nameof(GridResize));

    internal virtual void GridResizeBackward(Tensor dy, int outHeight, int outWidth, Tensor dx, int inHeight, int inWidth) => throw Unsupported(nameof(GridResize));
}

public sealed partial class CpuBackend
{
    internal override void GridResizeForward(Tensor x, int inHeight, int inWidth, Tensor y, int outHeight, int outWidth)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            GridResizeForward(w.In(x), inHeight, inWidth, w.Out(y, keepContents: false), outHeight, outWidth);
            return;
        }
        var g = new GridResizeCpu.Grid(x.Shape[0], inHeight, inWidth, outHeight, outWidth, x.Shape[2]);
        if (x.DType == DType.F64)
        {
            GridResizeCpu.Forward(P<double>(x), P<double>(y), g);
        }
        else
        {
            GridResizeCpu.Forward(P<float>(x), P<float>(y), g);
        }
    }

    internal override void GridResizeBackward(Tensor dy, int outHeight, int outWidth, Tensor dx, int inHeight, int inWidth)
    {
        if (dx.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            GridResizeBackward(w.In(dy), outHeight, outWidth, w.Out(dx, keepContents: true), inHeight, inWidth);
            return;
        }
        var g = new GridResizeCpu.Grid(dx.Shape[0], inHeight, inWidth, outHeight, outWidth, dx.Shape[2]);
        if (dx.DType == DType.F64)
        {
            GridResizeCpu.Backward(P<double>(dy), P<double>(dx), g);
        }
        else
        {
            GridResizeCpu.Backward(P<float>(dy), P<float>(dx), g);
        }
    }
}

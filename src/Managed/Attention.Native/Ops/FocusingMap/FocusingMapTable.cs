using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of FocusingMap: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void FocusingMapForward(Tensor x, Tensor scale, double focusingFactor, Tensor y) => throw Unsupported(nameof(FocusingMap));

    internal virtual void FocusingMapBackward(Tensor x, Tensor scale, double focusingFactor, Tensor dy, Tensor? dx, Tensor? dscale) => throw Unsupported(nameof(FocusingMap));
}

public sealed partial class CpuBackend
{
    internal override void FocusingMapForward(Tensor x, Tensor scale, double focusingFactor, Tensor y)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            FocusingMapForward(w.In(x), w.In(scale), focusingFactor, w.Out(y, keepContents: false));
            return;
        }
        if (x.DType == DType.F64)
        {
            FocusingMapCpu.Forward(P<double>(x), P<double>(scale), P<double>(y), x.Shape.Rows, x.Shape[-1], focusingFactor);
        }
        else
        {
            FocusingMapCpu.Forward(P<float>(x), P<float>(scale), P<float>(y), x.Shape.Rows, x.Shape[-1], (float)focusingFactor);
        }
    }

    internal override void FocusingMapBackward(Tensor x, Tensor scale, double focusingFactor, Tensor dy, Tensor? dx, Tensor? dscale)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            FocusingMapBackward(w.In(x), w.In(scale), focusingFactor, w.In(dy), w.OutOptional(dx, keepContents: true), w.OutOptional(dscale, keepContents: true));
            return;
        }
        if (x.DType == DType.F64)
        {
            FocusingMapCpu.Backward(P<double>(x), P<double>(scale), P<double>(dy), P<double>(dx), P<double>(dscale), x.Shape.Rows, x.Shape[-1], focusingFactor);
        }
        else
        {
            FocusingMapCpu.Backward(P<float>(x), P<float>(scale), P<float>(dy), P<float>(dx), P<float>(dscale), x.Shape.Rows, x.Shape[-1], (float)focusingFactor);
        }
    }
}

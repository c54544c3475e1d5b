using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of AdaptivePool: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void AdaptivePoolForward(Tensor x, Tensor y) => throw Unsupported(nameof(AdaptivePool));

    internal virtual void AdaptivePoolBackward(Tensor dy, Tensor dx) => throw Unsupported(nameof(AdaptivePool));
}

public sealed partial class CpuBackend
{
    internal override void AdaptivePoolForward(Tensor x, Tensor y)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            AdaptivePoolForward(w.In(x), w.Out(y, keepContents: false));
            return;
        }
        var s = x.Shape;
        int outputs = y.Shape[1];
        if (x.DType == DType.F64)
        {
            AdaptivePoolCpu.Forward(P<double>(x), P<double>(y), s[0], s[1], outputs, s[2]);
        }
        else
        {
            AdaptivePoolCpu.Forward(P<float>(x), P<float>(y), s[0], s[1], outputs, s[2]);
        }
    }

    internal override void AdaptivePoolBackward(Tensor dy, Tensor dx)
    {
        if (dx.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            AdaptivePoolBackward(w.In(dy), w.Out(dx, keepContents: true));
            return;
        }
        var s = dx.Shape;
        int outputs = dy.Shape[1];
        if (dx.DType == DType.F64)
        {
            AdaptivePoolCpu.Backward(P<double>(dy), P<double>(dx), s[0], s[1], outputs, s[2]);
        }
        else
        {
            AdaptivePoolCpu.Backward(P<float>(dy), P<float>(dx), s[0], s[1], outputs, s[2]);
        }
    }
}

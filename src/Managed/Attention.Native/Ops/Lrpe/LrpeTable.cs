using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of Lrpe: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void LrpeForward(Tensor x, Tensor theta, Tensor y, TokenPositions positions) => throw Unsupported(nameof(Lrpe));

    internal virtual void LrpeBackward(Tensor x, Tensor theta, Tensor dy, Tensor? dx, Tensor? dtheta, TokenPositions positions) => throw Unsupported(nameof(Lrpe));
}

public sealed partial class CpuBackend
{
    internal override void LrpeForward(Tensor x, Tensor theta, Tensor y, TokenPositions positions)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            LrpeForward(w.In(x), w.In(theta), w.Out(y, keepContents: false), positions);
            return;
        }
        var s = x.Shape;
        if (x.DType == DType.F64)
        {
            LrpeCpu.Forward(P<double>(x), P<double>(theta), P<double>(y), s[0], s[1], s[2], s[3], positions);
        }
        else
        {
            LrpeCpu.Forward(P<float>(x), P<float>(theta), P<float>(y), s[0], s[1], s[2], s[3], positions);
        }
    }

    internal override void LrpeBackward(Tensor x, Tensor theta, Tensor dy, Tensor? dx, Tensor? dtheta, TokenPositions positions)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            LrpeBackward(w.In(x), w.In(theta), w.In(dy), w.OutOptional(dx, keepContents: true), w.OutOptional(dtheta, keepContents: true), positions);
            return;
        }
        var s = x.Shape;
        if (x.DType == DType.F64)
        {
            LrpeCpu.Backward(P<double>(x), P<double>(theta), P<double>(dy), P<double>(dx), P<double>(dtheta), s[0], s[1], s[2], s[3], positions);
        }
        else
        {
            LrpeCpu.Backward(P<float>(x), P<float>(theta), P<float>(dy), P<float>(dx), P<float>(dtheta), s[0], s[1], s[2], s[3], positions);
        }
    }
}

using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of Pointwise: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void PointwiseForward(PointwiseOp op, Tensor a, Tensor? b, Tensor y, double alpha) => throw Unsupported(nameof(Pointwise));

    internal virtual void PointwiseBackward(PointwiseOp op, Tensor a, Tensor? b, Tensor dy, Tensor? da, Tensor? db, double alpha) => throw Unsupported(nameof(Pointwise));
}

public sealed partial class CpuBackend
{
    internal override void PointwiseForward(PointwiseOp op, Tensor a, Tensor? b, Tensor y, double alpha)
    {
        if (a.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            PointwiseForward(op, w.In(a), w.InOptional(b), w.Out(y, keepContents: false), alpha);
            return;
        }
        if (a.DType == DType.F64)
        {
            PointwiseCpu.Forward(op, P<double>(a), P<double>(b), P<double>(y), alpha);
        }
        else
        {
            PointwiseCpu.Forward(op, P<float>(a), P<float>(b), P<float>(y), (float)alpha);
        }
    }

    internal override void PointwiseBackward(PointwiseOp op, Tensor a, Tensor? b, Tensor dy, Tensor? da, Tensor? db, double alpha)
    {
        if (a.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            PointwiseBackward(op, w.In(a), w.InOptional(b), w.In(dy), w.OutOptional(da, keepContents: true), w.OutOptional(db, keepContents: true), alpha);
            return;
        }
        if (a.DType == DType.F64)
        {
            PointwiseCpu.Backward(op, P<double>(a), P<double>(b), P<double>(dy), P<double>(da), P<double>(db), alpha);
        }
        else
        {
            PointwiseCpu.Backward(op, P<float>(a), P<float>(b), P<float>(dy), P<float>(da), P<float>(db), (float)alpha);
        }
    }
}

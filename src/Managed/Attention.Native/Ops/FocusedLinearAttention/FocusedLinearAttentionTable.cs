using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of FocusedLinearAttention: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void FocusedLinearAttentionForward(Tensor q, Tensor k, Tensor v, Tensor o) => throw Unsupported(nameof(FocusedLinearAttention));

    internal virtual void FocusedLinearAttentionBackward(Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv) => throw Unsupported(nameof(FocusedLinearAttention));
}

public sealed partial class CpuBackend
{
    internal override void FocusedLinearAttentionForward(Tensor q, Tensor k, Tensor v, Tensor o)
    {
        if (q.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            FocusedLinearAttentionForward(w.In(q), w.In(k), w.In(v), w.Out(o, keepContents: false));
            return;
        }
        var dims = LinearAttentionDims(q, v);
        if (q.DType == DType.F64)
        {
            FocusedLinearAttentionCpu.Forward(P<double>(q), P<double>(k), P<double>(v), P<double>(o), dims);
        }
        else
        {
            FocusedLinearAttentionCpu.Forward(P<float>(q), P<float>(k), P<float>(v), P<float>(o), dims);
        }
    }

    internal override void FocusedLinearAttentionBackward(Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv)
    {
        if (q.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            FocusedLinearAttentionBackward(
                w.In(q), w.In(k), w.In(v), w.In(dO),
                w.OutOptional(dq, keepContents: true), w.OutOptional(dk, keepContents: true), w.OutOptional(dv, keepContents: true));
            return;
        }
        var dims = LinearAttentionDims(q, v);
        if (q.DType == DType.F64)
        {
            FocusedLinearAttentionCpu.Backward(P<double>(q), P<double>(k), P<double>(v), P<double>(dO), P<double>(dq), P<double>(dk), P<double>(dv), dims);
        }
        else
        {
            FocusedLinearAttentionCpu.Backward(P<float>(q), P<float>(k), P<float>(v), P<float>(dO), P<float>(dq), P<float>(dk), P<float>(dv), dims);
        }
    }

    private static FocusedLinearAttentionCpu.Dims LinearAttentionDims(Tensor q, Tensor v) =>
        new(q.Shape[0], q.Shape[1], v.Shape[1], q.Shape[2], q.Shape[3], v.Shape[3]);
}

using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of SoftmaxAttention: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void SoftmaxAttentionForward(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o, Tensor lse, AttentionOptions options) =>
        throw Unsupported(nameof(SoftmaxAttention));

    internal virtual void SoftmaxAttentionBackward(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o, Tensor lse, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? dbias, AttentionOptions options) =>
        throw Unsupported(nameof(SoftmaxAttention));
}

public sealed partial class CpuBackend
{
    internal override void SoftmaxAttentionForward(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o, Tensor lse, AttentionOptions options)
    {
        if (q.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            SoftmaxAttentionForward(w.In(q), w.In(k), w.In(v), w.InOptional(bias), w.Out(o, keepContents: false), lse, options);
            return;
        }
        var d = SoftmaxAttention.DimsOf(q, k, v, options);
        if (options.Sequences is not null)
        {
            if (q.DType == DType.F64)
            {
                SoftmaxAttentionCpu.ForwardRagged(P<double>(q), P<double>(k), P<double>(v), P<double>(o), P<double>(lse), d, options);
            }
            else
            {
                SoftmaxAttentionCpu.ForwardRagged(P<float>(q), P<float>(k), P<float>(v), P<float>(o), P<float>(lse), d, options);
            }
            return;
        }
        if (q.DType == DType.F64)
        {
            SoftmaxAttentionCpu.Forward(P<double>(q), P<double>(k), P<double>(v), P<double>(bias), P<double>(o), P<double>(lse), d, SoftmaxAttention.Layouts.Of(q, k, v, o), options);
        }
        else
        {
            SoftmaxAttentionCpu.Forward(P<float>(q), P<float>(k), P<float>(v), P<float>(bias), P<float>(o), P<float>(lse), d, SoftmaxAttention.Layouts.Of(q, k, v, o), options);
        }
    }

    internal override void SoftmaxAttentionBackward(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o, Tensor lse, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? dbias, AttentionOptions options)
    {
        if (q.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            SoftmaxAttentionBackward(w.In(q), w.In(k), w.In(v), w.InOptional(bias), w.In(o), lse, w.In(dO),
                w.OutOptional(dq, keepContents: true), w.OutOptional(dk, keepContents: true), w.OutOptional(dv, keepContents: true), w.OutOptional(dbias, keepContents: true), options);
            return;
        }
        var d = SoftmaxAttention.DimsOf(q, k, v, options);
        if (options.Sequences is not null)
        {
            if (q.DType == DType.F64)
            {
                SoftmaxAttentionCpu.BackwardRagged(P<double>(q), P<double>(k), P<double>(v), P<double>(o), P<double>(lse), P<double>(dO), P<double>(dq), P<double>(dk), P<double>(dv), d, options);
            }
            else
            {
                SoftmaxAttentionCpu.BackwardRagged(P<float>(q), P<float>(k), P<float>(v), P<float>(o), P<float>(lse), P<float>(dO), P<float>(dq), P<float>(dk), P<float>(dv), d, options);
            }
            return;
        }
        if (q.DType == DType.F64)
        {
            SoftmaxAttentionCpu.Backward(P<double>(q), P<double>(k), P<double>(v), P<double>(bias), P<double>(o), P<double>(lse), P<double>(dO), P<double>(dq), P<double>(dk), P<double>(dv), P<double>(dbias), d,
                SoftmaxAttention.Layouts.Of(q, k, v, o, dO, dq, dk, dv), options);
        }
        else
        {
            SoftmaxAttentionCpu.Backward(P<float>(q), P<float>(k), P<float>(v), P<float>(bias), P<float>(o), P<float>(lse), P<float>(dO), P<float>(dq), P<float>(dk), P<float>(dv), P<float>(dbias), d,
                SoftmaxAttention.Layouts.Of(q, k, v, o, dO, dq, dk, dv), options);
        }
    }
}

using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of HeadConv: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void HeadConvForward(Tensor x, Tensor weight, Tensor? bias, Tensor y) => throw Unsupported(nameof(HeadConv));

    internal virtual void HeadConvBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias) => throw Unsupported(nameof(HeadConv));
}

public sealed partial class CpuBackend
{
    internal override void HeadConvForward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            HeadConvForward(w.In(x), w.In(weight), w.InOptional(bias), w.Out(y, keepContents: false));
            return;
        }
        var s = x.Shape;
        int outChannels = weight.Shape[0], kernel = weight.Shape[2];
        if (x.DType == DType.F64)
        {
            HeadConvCpu.Forward(P<double>(x), P<double>(weight), P<double>(bias), P<double>(y), s[0], s[1], outChannels, s[2], kernel);
        }
        else
        {
            HeadConvCpu.Forward(P<float>(x), P<float>(weight), P<float>(bias), P<float>(y), s[0], s[1], outChannels, s[2], kernel);
        }
    }

    internal override void HeadConvBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            HeadConvBackward(w.In(x), w.In(weight), w.In(dy), w.OutOptional(dx, keepContents: true), w.OutOptional(dweight, keepContents: true), w.OutOptional(dbias, keepContents: true));
            return;
        }
        var s = x.Shape;
        int outChannels = weight.Shape[0], kernel = weight.Shape[2];
        if (x.DType == DType.F64)
        {
            HeadConvCpu.Backward(P<double>(x), P<double>(weight), P<double>(dy), P<double>(dx), P<double>(dweight), P<double>(dbias), s[0], s[1], outChannels, s[2], kernel);
        }
        else
        {
            HeadConvCpu.Backward(P<float>(x), P<float>(weight), P<float>(dy), P<float>(dx), P<float>(dweight), P<float>(dbias), s[0], s[1], outChannels, s[2], kernel);
        }
    }
}

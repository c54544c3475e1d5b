using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of DepthwiseConv: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void DepthwiseConvForward(Tensor x, Tensor weight, Tensor? bias, Tensor y) => throw Unsupported(nameof(DepthwiseConv));

    internal virtual void DepthwiseConvBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias) => throw Unsupported(nameof(DepthwiseConv));
}

public sealed partial class CpuBackend
{
    internal override void DepthwiseConvForward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            DepthwiseConvForward(w.In(x), w.In(weight), w.InOptional(bias), w.Out(y, keepContents: false));
            return;
        }
        var grid = DepthwiseConv.Grid(x, weight);
        if (x.DType == DType.F64)
        {
            DepthwiseConvCpu.Forward(P<double>(x), P<double>(weight), P<double>(bias), P<double>(y), grid);
        }
        else
        {
            DepthwiseConvCpu.Forward(P<float>(x), P<float>(weight), P<float>(bias), P<float>(y), grid);
        }
    }

    internal override void DepthwiseConvBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            DepthwiseConvBackward(w.In(x), w.In(weight), w.In(dy), w.OutOptional(dx, keepContents: true), w.OutOptional(dweight, keepContents: true), w.OutOptional(dbias, keepContents: true));
            return;
        }
        var grid = DepthwiseConv.Grid(x, weight);
        if (x.DType == DType.F64)
        {
            DepthwiseConvCpu.Backward(P<double>(x), P<double>(weight), P<double>(dy), P<double>(dx), P<double>(dweight), P<double>(dbias), grid);
        }
        else
        {
            DepthwiseConvCpu.Backward(P<float>(x), P<float>(weight), P<float>(dy), P<float>(dx), P<float>(dweight), P<float>(dbias), grid);
        }
    }
}

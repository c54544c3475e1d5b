using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of TpaContraction: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void TpaContractionForward(Tensor a, Tensor f, Tensor y) => throw Unsupported(nameof(TpaContraction));

    internal virtual void TpaContractionBackward(Tensor a, Tensor f, Tensor dy, Tensor? da, Tensor? df) => throw Unsupported(nameof(TpaContraction));
}

public sealed partial class CpuBackend
{
    internal override void TpaContractionForward(Tensor a, Tensor f, Tensor y)
    {
        if (a.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            TpaContractionForward(w.In(a), w.In(f), w.Out(y, keepContents: false));
            return;
        }
        var s = a.Shape;
        long tokens = (long)s[0] * s[1];
        int width = f.Shape[3];
        if (a.DType == DType.F64)
        {
            TpaContractionCpu.Forward(P<double>(a), P<double>(f), P<double>(y), tokens, s[2], s[3], width);
        }
        else
        {
            TpaContractionCpu.Forward(P<float>(a), P<float>(f), P<float>(y), tokens, s[2], s[3], width);
        }
    }

    internal override void TpaContractionBackward(Tensor a, Tensor f, Tensor dy, Tensor? da, Tensor? df)
    {
        if (a.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            TpaContractionBackward(w.In(a), w.In(f), w.In(dy), w.OutOptional(da, keepContents: true), w.OutOptional(df, keepContents: true));
            return;
        }
        var s = a.Shape;
        long tokens = (long)s[0] * s[1];
        int width = f.Shape[3];
        if (a.DType == DType.F64)
        {
            TpaContractionCpu.Backward(P<double>(a), P<double>(f), P<double>(dy), P<double>(da), P<double>(df), tokens, s[2], s[3], width);
        }
        else
        {
            TpaContractionCpu.Backward(P<float>(a), P<float>(f), P<float>(dy), P<float>(da), P<float>(df), tokens, s[2], s[3], width);
        }
    }
}

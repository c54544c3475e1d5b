using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of TpaDecode: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void TpaDecodeForward(Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int length, Tensor o) => throw Unsupported(nameof(TpaDecode));
}

public sealed partial class CpuBackend
{
    internal override void TpaDecodeForward(Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int length, Tensor o)
    {
        if (aq.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            TpaDecodeForward(w.In(aq), w.In(bq), w.In(ak), w.In(bk), w.In(av), w.In(bv), length, w.Out(o, keepContents: false));
            return;
        }
        var sizes = new TpaDecodeSizes(
            Batch: aq.Shape[0], Queries: aq.Shape[1], Heads: aq.Shape[2], QueryRank: aq.Shape[3], KeyRank: ak.Shape[3],
            ValueRank: av.Shape[3], Width: bq.Shape[3], Capacity: ak.Shape[1], Length: length);
        if (aq.DType == DType.F64)
        {
            TpaDecodeCpu.Forward(P<double>(aq), P<double>(bq), P<double>(ak), P<double>(bk), P<double>(av), P<double>(bv), P<double>(o), sizes);
        }
        else
        {
            TpaDecodeCpu.Forward(P<float>(aq), P<float>(bq), P<float>(ak), P<float>(bk), P<float>(av), P<float>(bv), P<float>(o), sizes);
        }
    }
}

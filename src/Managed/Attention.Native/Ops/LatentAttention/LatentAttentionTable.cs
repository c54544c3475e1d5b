using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of LatentAttention: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void LatentAttentionDecode(Tensor q, Tensor cache, Tensor kvUp, Tensor o, int nopeDim, int length, double scale) =>
        throw Unsupported(nameof(LatentAttention));
}

public sealed partial class CpuBackend
{
    internal override void LatentAttentionDecode(Tensor q, Tensor cache, Tensor kvUp, Tensor o, int nopeDim, int length, double scale)
    {
        if (q.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            LatentAttentionDecode(w.In(q), w.In(cache), w.In(kvUp), w.Out(o, keepContents: false), nopeDim, length, scale);
            return;
        }
        int b = q.Shape[0], tq = q.Shape[1], h = q.Shape[2], rope = q.Shape[3] - nopeDim, latent = kvUp.Shape[1], dv = o.Shape[3], cap = cache.Shape[1];
        if (q.DType == DType.F64)
        {
            LatentAttentionCpu.Decode(P<double>(q), P<double>(cache), P<double>(kvUp), P<double>(o), b, tq, h, nopeDim, rope, latent, dv, cap, length, scale);
        }
        else
        {
            LatentAttentionCpu.Decode(P<float>(q), P<float>(cache), P<float>(kvUp), P<float>(o), b, tq, h, nopeDim, rope, latent, dv, cap, length, (float)scale);
        }
    }
}

using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="LatentAttention"/>: one task per (batch, query, head).</summary>
internal static class LatentAttentionCpu
{
    public static void Decode<T>(PinnedBuffer<T> q, PinnedBuffer<T> cache, PinnedBuffer<T> kvUp, PinnedBuffer<T> o,
        int batch, int tq, int heads, int nope, int rope, int latent, int dv, int capacity, int length, T scale)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int qWidth = nope + rope, row = latent + rope, perHead = nope + dv;
        Parallel.For(0, batch * tq * heads, task =>
        {
            int h = task % heads, t = task / heads % tq, b = task / heads / tq;
            var query = q.Slice((((((long)b * tq) + t) * heads) + h) * qWidth, qWidth);
            // q̂ = [q_nope · W_kb_h | q_pe]: the key up-projection absorbed into the query.
            var absorbed = new T[row];
            for (int i = 0; i < nope; i++)
            {
                T a = query[i];
                if (a != T.Zero)
                {
                    TensorPrimitives.MultiplyAdd<T>(kvUp.Slice((((long)h * perHead) + i) * latent, latent), a, absorbed.AsSpan(0, latent), absorbed.AsSpan(0, latent));
                }
            }
            query[nope..].CopyTo(absorbed.AsSpan(latent));
            int visible = length - tq + t + 1;
            var scores = new T[visible];
            long cacheBase = (long)b * capacity * row;
            for (int s = 0; s < visible; s++)
            {
                scores[s] = scale * TensorPrimitives.Dot<T>(absorbed, cache.Slice(cacheBase + ((long)s * row), row));
            }
            T max = TensorPrimitives.Max<T>(scores);
            TensorPrimitives.Subtract<T>(scores, max, scores);
            TensorPrimitives.Exp<T>(scores, scores);
            TensorPrimitives.Divide<T>(scores, TensorPrimitives.Sum<T>(scores), scores);
            // Average the latents, then lift with W_vb_h.
            var mixed = new T[latent];
            for (int s = 0; s < visible; s++)
            {
                TensorPrimitives.MultiplyAdd<T>(cache.Slice(cacheBase + ((long)s * row), latent), scores[s], mixed, mixed);
            }
            var output = o.Slice((((((long)b * tq) + t) * heads) + h) * dv, dv);
            for (int j = 0; j < dv; j++)
            {
                output[j] = TensorPrimitives.Dot<T>(kvUp.Slice((((long)h * perHead) + nope + j) * latent, latent), mixed);
            }
        });
    }
}

using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>CPU reference of <see cref="TpaDecode"/>, generic over float and double.</summary>
internal static class TpaDecodeCpu
{
    /// <summary>Keys per task when forming the factor products.</summary>
    private const int KeyChunk = 64;

    /// <summary>Bound on the factor products held at once (elements); queries are processed in blocks under it.</summary>
    private const long MaxProducts = 1 << 22;

    /// <summary>
    /// Per query, first the products G[s,r,u] = ⟨bq[r], bk[s,u]⟩ (Rq·Rk dots of length d per key, shared by all
    /// heads); then per head the scores Σ_u ak[s,h,u] Σ_r aq[h,r]·G[s,r,u], their softmax, and
    /// o[h] = (1/Rv) Σ_s Σ_u P[h,s]·av[s,h,u]·bv[s,u,:]. Both phases are parallel (over keys, then over heads).
    /// </summary>
    public static void Forward<T>(PinnedBuffer<T> aq, PinnedBuffer<T> bq, PinnedBuffer<T> ak, PinnedBuffer<T> bk, PinnedBuffer<T> av, PinnedBuffer<T> bv, PinnedBuffer<T> o, TpaDecodeSizes n)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        long totalQueries = (long)n.Batch * n.Queries;
        long perQuery = (long)n.Length * n.QueryRank * n.KeyRank;
        if (totalQueries == 0 || n.Heads == 0)
        {
            return;
        }
        int block = (int)Math.Clamp(MaxProducts / perQuery, 1, totalQueries);
        var products = new T[block * perQuery];
        T scale = T.One / (T.CreateChecked(n.QueryRank * n.KeyRank) * T.Sqrt(T.CreateChecked(n.Width)));
        T inverseValueRank = T.One / T.CreateChecked(n.ValueRank);
        int keyChunks = (n.Length + KeyChunk - 1) / KeyChunk;
        for (long first = 0; first < totalQueries; first += block)
        {
            int count = (int)Math.Min(block, totalQueries - first);
            Parallel.For(0L, (long)count * keyChunks, item =>
            {
                int slot = (int)(item / keyChunks);
                long query = first + slot;
                long b = query / n.Queries;
                int visible = Visible(n, query);
                int s0 = (int)(item % keyChunks) * KeyChunk, s1 = Math.Min(visible, s0 + KeyChunk);
                var g = products.AsSpan((int)(slot * perQuery), (int)perQuery);
                for (int s = s0; s < s1; s++)
                {
                    long key = (b * n.Capacity) + s;
                    for (int r = 0; r < n.QueryRank; r++)
                    {
                        var bqr = bq.Slice(((query * n.QueryRank) + r) * n.Width, n.Width);
                        for (int u = 0; u < n.KeyRank; u++)
                        {
                            g[(((s * n.QueryRank) + r) * n.KeyRank) + u] = TensorPrimitives.Dot<T>(bqr, bk.Slice(((key * n.KeyRank) + u) * n.Width, n.Width));
                        }
                    }
                }
            });
            Parallel.For(0L, (long)count * n.Heads, item =>
            {
                int slot = (int)(item / n.Heads), h = (int)(item % n.Heads);
                long query = first + slot;
                long b = query / n.Queries;
                int visible = Visible(n, query);
                var g = products.AsSpan((int)(slot * perQuery), (int)perQuery);
                var aqh = aq.Slice(((query * n.Heads) + h) * n.QueryRank, n.QueryRank);
                var weights = new T[visible];
                for (int s = 0; s < visible; s++)
                {
                    var akh = ak.Slice(((((b * n.Capacity) + s) * n.Heads) + h) * n.KeyRank, n.KeyRank);
                    T score = T.Zero;
                    for (int u = 0; u < n.KeyRank; u++)
                    {
                        T inner = T.Zero;
                        for (int r = 0; r < n.QueryRank; r++)
                        {
                            inner += aqh[r] * g[(((s * n.QueryRank) + r) * n.KeyRank) + u];
                        }
                        score += akh[u] * inner;
                    }
                    weights[s] = score * scale;
                }
                // Max-subtracted softmax; the normaliser and 1/Rv are folded into the per-key weights.
                TensorPrimitives.Subtract<T>(weights, TensorPrimitives.Max<T>(weights), weights);
                TensorPrimitives.Exp<T>(weights, weights);
                T normaliser = inverseValueRank / TensorPrimitives.Sum<T>(weights);
                var oh = o.Slice(((query * n.Heads) + h) * n.Width, n.Width);
                oh.Clear();
                for (int s = 0; s < visible; s++)
                {
                    long key = (b * n.Capacity) + s;
                    var avh = av.Slice(((key * n.Heads) + h) * n.ValueRank, n.ValueRank);
                    T p = weights[s] * normaliser;
                    for (int u = 0; u < n.ValueRank; u++)
                    {
                        TensorPrimitives.MultiplyAdd<T>(bv.Slice(((key * n.ValueRank) + u) * n.Width, n.Width), p * avh[u], oh, oh);
                    }
                }
            });
        }
    }

    // Query i of a batch row sits at position length − Tq + i and sees that many keys plus itself.
    private static int Visible(TpaDecodeSizes n, long query) => n.Length - n.Queries + (int)(query % n.Queries) + 1;
}

/// <summary>The sizes of a <see cref="TpaDecode"/> call.</summary>
internal readonly record struct TpaDecodeSizes(int Batch, int Queries, int Heads, int QueryRank, int KeyRank, int ValueRank, int Width, int Capacity, int Length);

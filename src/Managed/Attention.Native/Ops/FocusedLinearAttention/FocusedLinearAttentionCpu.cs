using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>
/// CPU reference of <see cref="FocusedLinearAttention"/>, generic over float and double. Sums over tokens run
/// per (batch, head) in token order, one task each; per-token work runs in parallel over tokens: every
/// output element is written by one task, so results are deterministic. Query-side work (o, dq, z, e and the sums of
/// the backward over t) runs over the Tq query tokens, key-side work (mean k, kᵀv, dk, dv) over the Tk key tokens.
/// </summary>
internal static class FocusedLinearAttentionCpu
{
    /// <summary>The sizes of <c>q [B, Tq, h, d]</c>, <c>k [B, Tk, h, d]</c>, <c>v [B, Tk, h, dv]</c>.</summary>
    public readonly record struct Dims(int Batch, int QueryTokens, int KeyTokens, int Heads, int KeyWidth, int ValueWidth)
    {
        public int HeadCount => Batch * Heads;

        /// <summary>Rows b·Tq + t of q, o and dO.</summary>
        public long QueryRows => (long)Batch * QueryTokens;

        /// <summary>Rows b·Tk + s of k and v.</summary>
        public long KeyRows => (long)Batch * KeyTokens;

        /// <summary>Index of head h at row b·T + t in a [B, T, h, width] tensor (T = Tq or Tk, as the tensor has).</summary>
        public long Offset(long row, int h, int width) => ((row * Heads) + h) * width;
    }

    /// <summary>o_t = z_t · q_t kv with z_t = 1/(q_t·mean(k) + ε), kv = kᵀv/Tk.</summary>
    public static void Forward<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> o, Dims dims)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (keyMean, kv) = Statistics(k, v, dims);
        int d = dims.KeyWidth, dv = dims.ValueWidth;
        T epsilon = T.CreateChecked(FocusedLinearAttention.Epsilon);
        Parallel.For(0L, dims.QueryRows, row =>
        {
            long b = row / dims.QueryTokens;
            for (int h = 0; h < dims.Heads; h++)
            {
                int head = (int)(b * dims.Heads) + h;
                var qt = q.Slice(dims.Offset(row, h, d), d);
                var ot = o.Slice(dims.Offset(row, h, dv), dv);
                T z = T.One / (TensorPrimitives.Dot<T>(qt, keyMean.AsSpan(head * d, d)) + epsilon);
                ot.Clear();
                for (int i = 0; i < d; i++)
                {
                    TensorPrimitives.MultiplyAdd<T>(Row(kv, (((long)head * d) + i) * dv, dv), qt[i], ot, ot);
                }
                TensorPrimitives.Multiply<T>(ot, z, ot);
            }
        });
    }

    /// <summary>
    /// With m = mean(k), c_t = kv·dO_t, e_t = −z_t²(q_t·c_t): dq_t += z_t c_t + e_t m; dkv = Σ_t z_t q_tᵀ dO_t;
    /// dk_s += (dkv v_s + Σ_t e_t q_t)/Tk; dv_s += k_s dkv / Tk (t over the query tokens, s over the key tokens).
    /// </summary>
    public static void Backward<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> dO, PinnedBuffer<T> dq, PinnedBuffer<T> dk, PinnedBuffer<T> dv, Dims dims)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (dq.IsEmpty && dk.IsEmpty && dv.IsEmpty)
        {
            return;
        }
        var (keyMean, kv) = Statistics(k, v, dims);
        int d = dims.KeyWidth, dvWidth = dims.ValueWidth;
        T epsilon = T.CreateChecked(FocusedLinearAttention.Epsilon);

        // Per token and head: the normaliser z_t and the gradient e_t of its denominator; dq directly.
        var normaliser = new T[dims.QueryRows * dims.Heads];
        var denominatorGradient = new T[dims.QueryRows * dims.Heads];
        Parallel.For(0L, dims.QueryRows, () => new T[d], (row, _, kvTimesGradient) =>
        {
            long b = row / dims.QueryTokens;
            for (int h = 0; h < dims.Heads; h++)
            {
                int head = (int)(b * dims.Heads) + h;
                var qt = q.Slice(dims.Offset(row, h, d), d);
                var gt = dO.Slice(dims.Offset(row, h, dvWidth), dvWidth);
                var mean = keyMean.AsSpan(head * d, d);
                T z = T.One / (TensorPrimitives.Dot<T>(qt, mean) + epsilon);
                for (int i = 0; i < d; i++)
                {
                    kvTimesGradient[i] = TensorPrimitives.Dot<T>(Row(kv, (((long)head * d) + i) * dvWidth, dvWidth), gt);
                }
                T e = -z * z * TensorPrimitives.Dot<T>(qt, kvTimesGradient);
                normaliser[(row * dims.Heads) + h] = z;
                denominatorGradient[(row * dims.Heads) + h] = e;
                if (!dq.IsEmpty)
                {
                    var dqt = dq.Slice(dims.Offset(row, h, d), d);
                    for (int i = 0; i < d; i++)
                    {
                        dqt[i] += (z * kvTimesGradient[i]) + (e * mean[i]);
                    }
                }
            }
            return kvTimesGradient;
        }, _ => { });
        if (dk.IsEmpty && dv.IsEmpty)
        {
            return;
        }

        // Per (batch, head), summed over the query tokens in order: dkv = Σ_t z_t q_tᵀ dO_t and dm = Σ_t e_t q_t.
        var kvGradient = new T[(long)dims.HeadCount * d * dvWidth];
        var meanGradient = new T[(long)dims.HeadCount * d];
        Parallel.For(0, dims.HeadCount, head =>
        {
            int b = head / dims.Heads, h = head % dims.Heads;
            var dm = meanGradient.AsSpan(head * d, d);
            for (int t = 0; t < dims.QueryTokens; t++)
            {
                long row = ((long)b * dims.QueryTokens) + t;
                var qt = q.Slice(dims.Offset(row, h, d), d);
                var gt = dO.Slice(dims.Offset(row, h, dvWidth), dvWidth);
                T z = normaliser[(row * dims.Heads) + h];
                TensorPrimitives.MultiplyAdd<T>(qt, denominatorGradient[(row * dims.Heads) + h], dm, dm);
                for (int i = 0; i < d; i++)
                {
                    var dkvRow = Row(kvGradient, (((long)head * d) + i) * dvWidth, dvWidth);
                    TensorPrimitives.MultiplyAdd<T>(gt, z * qt[i], dkvRow, dkvRow);
                }
            }
        });

        // Per key token: the 1/Tk of both means (kv and m) applied once here.
        T inverseTokens = T.One / T.CreateChecked(dims.KeyTokens);
        Parallel.For(0L, dims.KeyRows, () => new T[dvWidth], (row, _, valueGradient) =>
        {
            long b = row / dims.KeyTokens;
            for (int h = 0; h < dims.Heads; h++)
            {
                int head = (int)(b * dims.Heads) + h;
                var kt = k.Slice(dims.Offset(row, h, d), d);
                var vt = v.Slice(dims.Offset(row, h, dvWidth), dvWidth);
                var dm = meanGradient.AsSpan(head * d, d);
                if (!dk.IsEmpty)
                {
                    var dkt = dk.Slice(dims.Offset(row, h, d), d);
                    for (int i = 0; i < d; i++)
                    {
                        T dkvTimesValue = TensorPrimitives.Dot<T>(Row(kvGradient, (((long)head * d) + i) * dvWidth, dvWidth), vt);
                        dkt[i] += (dkvTimesValue + dm[i]) * inverseTokens;
                    }
                }
                if (!dv.IsEmpty)
                {
                    Array.Clear(valueGradient);
                    for (int i = 0; i < d; i++)
                    {
                        TensorPrimitives.MultiplyAdd<T>(Row(kvGradient, (((long)head * d) + i) * dvWidth, dvWidth), kt[i], valueGradient, valueGradient);
                    }
                    var dvt = dv.Slice(dims.Offset(row, h, dvWidth), dvWidth);
                    TensorPrimitives.MultiplyAdd<T>(valueGradient, inverseTokens, dvt, dvt);
                }
            }
            return valueGradient;
        }, _ => { });
    }

    /// <summary>Per (batch, head): mean_Tk(k) [d] and kv = kᵀv/Tk [d, dv], each summed in key token order by one task.</summary>
    private static (T[] KeyMean, T[] Kv) Statistics<T>(PinnedBuffer<T> k, PinnedBuffer<T> v, Dims dims)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int d = dims.KeyWidth, dv = dims.ValueWidth;
        var keyMean = new T[(long)dims.HeadCount * d];
        var kv = new T[(long)dims.HeadCount * d * dv];
        T inverseTokens = T.One / T.CreateChecked(Math.Max(dims.KeyTokens, 1));
        Parallel.For(0, dims.HeadCount, head =>
        {
            int b = head / dims.Heads, h = head % dims.Heads;
            var mean = keyMean.AsSpan(head * d, d);
            var headKv = Row(kv, (long)head * d * dv, checked(d * dv));
            for (int s = 0; s < dims.KeyTokens; s++)
            {
                long row = ((long)b * dims.KeyTokens) + s;
                var kt = k.Slice(dims.Offset(row, h, d), d);
                var vt = v.Slice(dims.Offset(row, h, dv), dv);
                TensorPrimitives.Add<T>(mean, kt, mean);
                for (int i = 0; i < d; i++)
                {
                    var kvRow = headKv.Slice(i * dv, dv);
                    TensorPrimitives.MultiplyAdd<T>(vt, kt[i], kvRow, kvRow);
                }
            }
            TensorPrimitives.Multiply<T>(mean, inverseTokens, mean);
            TensorPrimitives.Multiply<T>(headKv, inverseTokens, headKv);
        });
        return (keyMean, kv);
    }

    private static Span<T> Row<T>(T[] array, long start, int length) => array.AsSpan(checked((int)start), length);
}

using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>
/// CPU reference of <see cref="FocusedLinearAttention"/>, generic over float and double. Sums over tokens run
/// per (batch, head) in token order, one task each; per-token work runs in parallel over tokens: every
/// output element is written by one task, so results are deterministic.
/// </summary>
internal static class FocusedLinearAttentionCpu
{
    /// <summary>The sizes of <c>q, k [B, T, h, d]</c>, <c>v [B, T, h, dv]</c>.</summary>
    public readonly record struct Dims(int Batch, int Tokens, int Heads, int KeyWidth, int ValueWidth)
    {
        public int HeadCount => Batch * Heads;

        public long Rows => (long)Batch * Tokens;

        /// <summary>Index of head h at token t of batch b in a [B, T, h, width] tensor.</summary>
        public long Offset(int b, int t, int h, int width) => ((((long)b * Tokens) + t) * Heads + h) * width;

        /// <summary>Index of head h at row b·T + t in a [B, T, h, width] tensor.</summary>
        public long Offset(long row, int h, int width) => ((row * Heads) + h) * width;
    }

    /// <summary>o_t = z_t · q_t kv with z_t = 1/(q_t·mean(k) + ε), kv = kᵀv/T.</summary>
    public static void Forward<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> o, Dims dims)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (keyMean, kv) = Statistics(k, v, dims);
        int d = dims.KeyWidth, dv = dims.ValueWidth;
        T epsilon = T.CreateChecked(FocusedLinearAttention.Epsilon);
        Parallel.For(0L, dims.Rows, row =>
        {
            long b = row / dims.Tokens;
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
    /// dk_s += (dkv v_s + Σ_t e_t q_t)/T; dv_s += k_s dkv / T.
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
        var normaliser = new T[dims.Rows * dims.Heads];
        var denominatorGradient = new T[dims.Rows * dims.Heads];
        Parallel.For(0L, dims.Rows, () => new T[d], (row, _, kvTimesGradient) =>
        {
            long b = row / dims.Tokens;
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

        // Per (batch, head), summed over tokens in order: dkv = Σ_t z_t q_tᵀ dO_t and dm = Σ_t e_t q_t.
        var kvGradient = new T[(long)dims.HeadCount * d * dvWidth];
        var meanGradient = new T[(long)dims.HeadCount * d];
        Parallel.For(0, dims.HeadCount, head =>
        {
            int b = head / dims.Heads, h = head % dims.Heads;
            var dm = meanGradient.AsSpan(head * d, d);
            for (int t = 0; t < dims.Tokens; t++)
            {
                long row = ((long)b * dims.Tokens) + t;
                var qt = q.Slice(dims.Offset(b, t, h, d), d);
                var gt = dO.Slice(dims.Offset(b, t, h, dvWidth), dvWidth);
                T z = normaliser[(row * dims.Heads) + h];
                TensorPrimitives.MultiplyAdd<T>(qt, denominatorGradient[(row * dims.Heads) + h], dm, dm);
                for (int i = 0; i < d; i++)
                {
                    var dkvRow = Row(kvGradient, (((long)head * d) + i) * dvWidth, dvWidth);
                    TensorPrimitives.MultiplyAdd<T>(gt, z * qt[i], dkvRow, dkvRow);
                }
            }
        });

        // Per token: the 1/T of both means (kv and m) applied once here.
        T inverseTokens = T.One / T.CreateChecked(dims.Tokens);
        Parallel.For(0L, dims.Rows, () => new T[dvWidth], (row, _, valueGradient) =>
        {
            long b = row / dims.Tokens;
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

    /// <summary>Per (batch, head): mean_T(k) [d] and kv = kᵀv/T [d, dv], each summed in token order by one task.</summary>
    private static (T[] KeyMean, T[] Kv) Statistics<T>(PinnedBuffer<T> k, PinnedBuffer<T> v, Dims dims)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int d = dims.KeyWidth, dv = dims.ValueWidth;
        var keyMean = new T[(long)dims.HeadCount * d];
        var kv = new T[(long)dims.HeadCount * d * dv];
        T inverseTokens = T.One / T.CreateChecked(Math.Max(dims.Tokens, 1));
        Parallel.For(0, dims.HeadCount, head =>
        {
            int b = head / dims.Heads, h = head % dims.Heads;
            var mean = keyMean.AsSpan(head * d, d);
            var headKv = Row(kv, (long)head * d * dv, checked(d * dv));
            for (int t = 0; t < dims.Tokens; t++)
            {
                var kt = k.Slice(dims.Offset(b, t, h, d), d);
                var vt = v.Slice(dims.Offset(b, t, h, dv), dv);
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

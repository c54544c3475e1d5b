using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>
/// CPU reference of <see cref="Lightning"/>, generic over float and double: the chunked algorithm of Lightning
/// Attention-2 (arXiv 2401.04658), parallel over (batch, head). Each (b, h) pair owns its rows of every output and
/// its slice of the final state, so tasks never share writes.
/// </summary>
/// <remarks>
/// Notation for one (b, h) with λ = λ_h: T is split into blocks of length B (the last one may be shorter, of length
/// n ≤ B); inside a block starting at token t0, a and c are local indices (token t0 + a). The forward state after
/// token t is <c>S_t = Σ_{s≤t} λ^(t−s) k_sᵀ v_s (+ λ^(t+1) S0)</c>; KV is the state before the block, S_{t0−1}.
/// Since <c>S_{t0+a} = λ^(a+1) KV + Σ_{c≤a} λ^(a−c) k_cᵀ v_c</c>:
/// <list type="bullet">
/// <item>forward: <c>o_a = λ^(a+1) q_a·KV</c> (inter) <c>+ Σ_{c≤a} λ^(a−c) (q_a·k_c) v_c</c> (intra, the mask M);
/// then <c>KV ← λ^n KV + Σ_c λ^(n−1−c) k_cᵀ v_c</c>.</item>
/// <item>backward, forward sweep: <c>dq_a = dO_a·S_aᵀ = λ^(a+1) dO_a·KVᵀ + Σ_{c≤a} λ^(a−c) (dO_a·v_c) k_c</c>,
/// with KV carried as in the forward (from S0).</item>
/// <item>backward, reverse sweep: with G the gradient of the final state S_{T−1} (zero when absent) and
/// <c>D_s = ∂L/∂S_s = Σ_{t≥s} λ^(t−s) q_tᵀ dO_t + λ^(T−1−s) G</c>, <c>dk_s = D_s v_s</c> and <c>dv_s = k_s D_s</c>.
/// The carried dKV is <c>λ·D</c> at the start of the next block, i.e.
/// <c>dKV = Σ_{t ≥ t0+n} λ^(t−(t0+n)+1) q_tᵀ dO_t + λ^(T−t0−n) G</c> (G itself before the last block), so
/// <c>D_{t0+c} = Σ_{a≥c} λ^(a−c) q_aᵀ dO_a + λ^(n−1−c) dKV</c>:
/// <c>dk_c = Σ_{a≥c} λ^(a−c) (dO_a·v_c) q_a + λ^(n−1−c) dKV·v_c</c>,
/// <c>dv_c = Σ_{a≥c} λ^(a−c) (q_a·k_c) dO_a + λ^(n−1−c) k_c·dKV</c>;
/// then <c>dKV ← λ^n dKV + Σ_a λ^(a+1) q_aᵀ dO_a</c>. After the first block dKV = λ·D_0 = ∂L/∂S0 (S0 enters S_t as
/// λ^(t+1) S0), the gradient of the initial state.</item>
/// </list>
/// Every exponent uses the current block's own length n, so the partial last block needs no special case.
/// Powers are taken from a table of λ^0 … λ^B (no division by powers of λ, which could underflow).
/// </remarks>
internal static class LightningCpu
{
    public static void Forward<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, double[] decay, PinnedBuffer<T> o, PinnedBuffer<T> initialState, PinnedBuffer<T> finalState, Dimensions dims, int blockSize)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int block = dims.EffectiveBlock(blockSize);
        int stateSize = dims.KeyWidth * dims.ValueWidth;
        Parallel.For(0, dims.Batch * dims.Heads, bh =>
        {
            int b = bh / dims.Heads, h = bh % dims.Heads;
            var qRows = dims.KeyRows(q, b, h);
            var kRows = dims.KeyRows(k, b, h);
            var vRows = dims.ValueRows(v, b, h);
            var oRows = dims.ValueRows(o, b, h);
            T[] powers = Powers<T>(decay[h], block);
            var state = new T[stateSize];
            if (!initialState.IsEmpty)
            {
                // Copied before anything is written: the final state may be the same tensor.
                initialState.Slice((long)bh * stateSize, stateSize).CopyTo(state);
            }
            for (int t0 = 0; t0 < dims.Seq; t0 += block)
            {
                int n = Math.Min(block, dims.Seq - t0);
                for (int a = t0; a < t0 + n; a++)
                {
                    var output = oRows[a];
                    output.Clear();
                    AddRowTimesMatrix(qRows[a], powers[a - t0 + 1], state, output);
                    AddDecayedSum(qRows[a], kRows, vRows, a, t0, a, powers, output);
                }
                AdvanceState(state, kRows, vRows, t0, n, powers);
            }
            if (!finalState.IsEmpty)
            {
                state.CopyTo(finalState.Slice((long)bh * stateSize, stateSize));
            }
        });
    }

    public static void Backward<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, double[] decay, PinnedBuffer<T> dO, PinnedBuffer<T> dq, PinnedBuffer<T> dk, PinnedBuffer<T> dv, PinnedBuffer<T> initialState, PinnedBuffer<T> dInitialState, PinnedBuffer<T> dFinalState, Dimensions dims, int blockSize)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int block = dims.EffectiveBlock(blockSize);
        int stateSize = dims.KeyWidth * dims.ValueWidth;
        Parallel.For(0, dims.Batch * dims.Heads, bh =>
        {
            int b = bh / dims.Heads, h = bh % dims.Heads;
            var qRows = dims.KeyRows(q, b, h);
            var kRows = dims.KeyRows(k, b, h);
            var vRows = dims.ValueRows(v, b, h);
            var dORows = dims.ValueRows(dO, b, h);
            T[] powers = Powers<T>(decay[h], block);
            var state = new T[stateSize];
            // One row of a gradient, summed here and then added once to the caller's tensor.
            var sum = new T[Math.Max(dims.KeyWidth, dims.ValueWidth)];
            if (!dq.IsEmpty)
            {
                if (!initialState.IsEmpty)
                {
                    initialState.Slice((long)bh * stateSize, stateSize).CopyTo(state);
                }
                var dqRows = dims.KeyRows(dq, b, h);
                var row = sum.AsSpan(0, dims.KeyWidth);
                for (int t0 = 0; t0 < dims.Seq; t0 += block)
                {
                    int n = Math.Min(block, dims.Seq - t0);
                    for (int a = t0; a < t0 + n; a++)
                    {
                        row.Clear();
                        AddMatrixTimesRow(state, dORows[a], powers[a - t0 + 1], row);
                        AddDecayedSum(dORows[a], vRows, kRows, a, t0, a, powers, row);
                        TensorPrimitives.Add(dqRows[a], row, dqRows[a]);
                    }
                    AdvanceState(state, kRows, vRows, t0, n, powers);
                }
            }
            if (dk.IsEmpty && dv.IsEmpty && dInitialState.IsEmpty)
            {
                return;
            }
            var dkRows = dims.KeyRows(dk, b, h);
            var dvRows = dims.ValueRows(dv, b, h);
            Array.Clear(state);
            if (!dFinalState.IsEmpty)
            {
                dFinalState.Slice((long)bh * stateSize, stateSize).CopyTo(state);
            }
            for (int t0 = (dims.Seq - 1) / block * block; t0 >= 0; t0 -= block)
            {
                int n = Math.Min(block, dims.Seq - t0), last = t0 + n - 1;
                for (int c = t0; c <= last; c++)
                {
                    T interFactor = powers[last - c];
                    if (!dk.IsEmpty)
                    {
                        var row = sum.AsSpan(0, dims.KeyWidth);
                        row.Clear();
                        AddMatrixTimesRow(state, vRows[c], interFactor, row);
                        AddDecayedSum(vRows[c], dORows, qRows, c, c, last, powers, row);
                        TensorPrimitives.Add(dkRows[c], row, dkRows[c]);
                    }
                    if (!dv.IsEmpty)
                    {
                        var row = sum.AsSpan(0, dims.ValueWidth);
                        row.Clear();
                        AddRowTimesMatrix(kRows[c], interFactor, state, row);
                        AddDecayedSum(kRows[c], qRows, dORows, c, c, last, powers, row);
                        TensorPrimitives.Add(dvRows[c], row, dvRows[c]);
                    }
                }
                // dKV ← λ^n dKV + Σ_a λ^(a+1) q_aᵀ dO_a.
                TensorPrimitives.Multiply(state, powers[n], state);
                for (int a = t0; a <= last; a++)
                {
                    AddOuter(state, qRows[a], dORows[a], powers[a - t0 + 1]);
                }
            }
            if (!dInitialState.IsEmpty)
            {
                // dKV is now λ·D_0 = ∂L/∂S0 (G itself when T = 0).
                var target = dInitialState.Slice((long)bh * stateSize, stateSize);
                TensorPrimitives.Add(target, state, target);
            }
        });
    }

    /// <summary>KV ← λ^n KV + Σ_c λ^(n−1−c) k_cᵀ v_c over the block of n tokens from <paramref name="t0"/>.</summary>
    private static void AdvanceState<T>(T[] state, HeadRows<T> keys, HeadRows<T> values, int t0, int n, T[] powers)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        TensorPrimitives.Multiply(state, powers[n], state);
        for (int c = 0; c < n; c++)
        {
            AddOuter(state, keys[t0 + c], values[t0 + c], powers[n - 1 - c]);
        }
    }

    /// <summary>
    /// The intra-block term: <c>sum += Σ_{j ∈ [from, to]} λ^|center−j| (row·keys_j) values_j</c>. With j ≤ center it is a
    /// row of <c>((Q Kᵀ) ⊙ M) V</c>; with j ≥ center a row of the transposed product of the backward.
    /// </summary>
    private static void AddDecayedSum<T>(ReadOnlySpan<T> row, HeadRows<T> keys, HeadRows<T> values, int center, int from, int to, T[] powers, Span<T> sum)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int j = from; j <= to; j++)
        {
            T weight = powers[Math.Abs(center - j)] * TensorPrimitives.Dot(row, keys[j]);
            TensorPrimitives.MultiplyAdd(values[j], weight, sum, sum);
        }
    }

    /// <summary><c>y += scale · x·M</c> for a row x of length r and M [r, y.Length].</summary>
    private static void AddRowTimesMatrix<T>(ReadOnlySpan<T> x, T scale, ReadOnlySpan<T> matrix, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int cols = y.Length;
        for (int i = 0; i < x.Length; i++)
        {
            TensorPrimitives.MultiplyAdd(matrix.Slice(i * cols, cols), scale * x[i], y, y);
        }
    }

    /// <summary><c>y += scale · M·x</c> (y = scale · x·Mᵀ) for M [y.Length, x.Length].</summary>
    private static void AddMatrixTimesRow<T>(ReadOnlySpan<T> matrix, ReadOnlySpan<T> x, T scale, Span<T> y)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int cols = x.Length;
        for (int i = 0; i < y.Length; i++)
        {
            y[i] += scale * TensorPrimitives.Dot(matrix.Slice(i * cols, cols), x);
        }
    }

    /// <summary><c>M += scale · xᵀ y</c> for M [x.Length, y.Length].</summary>
    private static void AddOuter<T>(Span<T> matrix, ReadOnlySpan<T> x, ReadOnlySpan<T> y, T scale)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int cols = y.Length;
        for (int i = 0; i < x.Length; i++)
        {
            var destination = matrix.Slice(i * cols, cols);
            TensorPrimitives.MultiplyAdd(y, scale * x[i], destination, destination);
        }
    }

    /// <summary>λ^0 … λ^count, each computed directly in double.</summary>
    private static T[] Powers<T>(double lambda, int count)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var powers = new T[count + 1];
        for (int p = 0; p <= count; p++)
        {
            powers[p] = T.CreateTruncating(Math.Pow(lambda, p));
        }
        return powers;
    }

    /// <summary>The sizes of one call: q, k [Batch, Seq, Heads, KeyWidth], v [Batch, Seq, Heads, ValueWidth].</summary>
    internal readonly record struct Dimensions(int Batch, int Seq, int Heads, int KeyWidth, int ValueWidth)
    {
        /// <summary>The block length actually used: never longer than the sequence (same result, smaller tables).</summary>
        public int EffectiveBlock(int blockSize) => Math.Max(1, Math.Min(blockSize, Seq));

        public HeadRows<T> KeyRows<T>(PinnedBuffer<T> data, int b, int h)
            where T : unmanaged => new(data, b, h, this, KeyWidth);

        public HeadRows<T> ValueRows<T>(PinnedBuffer<T> data, int b, int h)
            where T : unmanaged => new(data, b, h, this, ValueWidth);
    }

    /// <summary>The token rows of one (batch, head) pair in a [B, T, H, width] tensor: row t is contiguous.</summary>
    internal readonly struct HeadRows<T>
        where T : unmanaged
    {
        private readonly PinnedBuffer<T> _data;
        private readonly long _first;
        private readonly long _stride;
        private readonly int _width;

        public HeadRows(PinnedBuffer<T> data, int b, int h, Dimensions dims, int width)
        {
            _data = data;
            _width = width;
            _stride = (long)dims.Heads * width;
            _first = (((long)b * dims.Seq * dims.Heads) + h) * width;
        }

        public Span<T> this[int t] => _data.Slice(_first + (t * _stride), _width);
    }
}

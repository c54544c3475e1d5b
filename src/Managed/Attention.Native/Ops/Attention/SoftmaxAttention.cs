namespace Attention.Native.Ops;

/// <summary>Settings of <see cref="SoftmaxAttention"/>.</summary>
/// <param name="Scale">Multiplies q·k before the softmax (usually 1/sqrt(d_qk)).</param>
/// <param name="Causal">Mask keys after the query's position. Query i sits at position <c>L − T_q + i</c>, L the number of valid keys, so a
/// block of new queries attends to a cache that already holds earlier tokens.</param>
/// <param name="KeyLength">Number of valid key positions L when k and v are preallocated caches longer than that; null uses all of them.</param>
/// <param name="Sequences">A ragged batch: q is <c>[1, N_q, H, d_qk]</c>, the packed queries of these sequences, each attending only
/// to its own keys (and lse is <c>[1, H, N_q]</c>); null for the dense <c>[B, T, …]</c> form. No bias or <paramref name="KeyLength"/> with it.</param>
/// <param name="KeySequences">The keys' layout of a ragged batch, <c>[1, N_k, G, …]</c> with as many sequences as
/// <paramref name="Sequences"/>; null when each sequence's keys are its queries' own tokens. With <paramref name="Causal"/>, query i of
/// sequence s sits at position <c>L_k(s) − L_q(s) + i</c>, so a sequence's new queries attend to the keys of its earlier tokens too.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public readonly record struct AttentionOptions(double Scale, bool Causal, int? KeyLength = null, SequenceLayout? Sequences = null, SequenceLayout? KeySequences = null)
{
    /// <summary>The keys' layout of a ragged batch: <see cref="KeySequences"/>, or <see cref="Sequences"/> when that is null.</summary>
    public SequenceLayout? KeyLayout => KeySequences ?? Sequences;
}

/// <summary>
/// Softmax attention, the core of mha/gqa/mqa/mla/tpa/sas and of agent attention's two softmaxes:
/// <c>o = softmax(scale · q kᵀ + bias + mask) v</c> per head. Layouts are token-major as the projections produce them:
/// <c>q [B, T_q, H, d_qk]</c>, <c>k [B, T_k, G, d_qk]</c>, <c>v [B, T_k, G, d_v]</c> with H a multiple of G (query head h reads
/// KV head h / (H/G)), <c>o [B, T_q, H, d_v]</c>, and an optional additive <c>bias [H, T_q, T_k]</c> shared by the batch.
/// q, k, v, o, dO and the gradients may be views of other memory whose last axis is contiguous (e.g. <c>[B, H, T, d]</c> seen
/// as <c>[B, T, H, d]</c> through <see cref="Tensor.Transpose"/>), read and written in place on either backend.
/// The forward also returns the log-sum-exp of each score row, <c>lse [B, H, T_q]</c> (F32; F64 for F64 inputs), from which the
/// backward recomputes the probabilities. Scores are formed one block of query rows at a time, never as a whole T×T matrix.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class SoftmaxAttention
{
    /// <summary>Returns o and (through <paramref name="logSumExp"/>) the row log-sum-exp.</summary>
    public static Tensor Forward(Tensor q, Tensor k, Tensor v, AttentionOptions options, Tensor? bias, out Tensor logSumExp)
    {
        var dims = Validate(q, k, v, bias, options);
        var backend = q.Backend;
        var lse = backend.Zeros(new Shape(dims.B, dims.H, dims.Tq), LseType(q.DType));
        try
        {
            var o = backend.Create(new Shape(dims.B, dims.Tq, dims.H, dims.Dv), q.DType, o => backend.SoftmaxAttentionForward(q, k, v, bias, o, lse, options));
            logSumExp = lse;
            return o;
        }
        catch
        {
            lse.Dispose();
            throw;
        }
    }

    /// <summary>Returns o, discarding the log-sum-exp (inference).</summary>
    public static Tensor Forward(Tensor q, Tensor k, Tensor v, AttentionOptions options, Tensor? bias = null)
    {
        var o = Forward(q, k, v, options, bias, out var lse);
        lse.Dispose();
        return o;
    }

    /// <summary>Writes o and the row log-sum-exp into preallocated tensors.</summary>
    public static void Forward(Tensor q, Tensor k, Tensor v, AttentionOptions options, Tensor? bias, Tensor o, Tensor logSumExp)
    {
        var d = Validate(q, k, v, bias, options);
        Check.Compatible(q, nameof(q), o, nameof(o), strided: true);
        Check.Shape(o, new Shape(d.B, d.Tq, d.H, d.Dv), nameof(o));
        CheckRagged(o, nameof(o), options);
        CheckLse(q, logSumExp, d);
        q.Backend.SoftmaxAttentionForward(q, k, v, bias, o, logSumExp, options);
    }

    /// <summary>
    /// Adds the gradients of the forward given <paramref name="dO"/> into <paramref name="dq"/>, <paramref name="dk"/>,
    /// <paramref name="dv"/> and <paramref name="dbias"/> (any may be null); <paramref name="o"/> and <paramref name="logSumExp"/>
    /// are the forward's outputs. Probabilities are recomputed block by block from the log-sum-exp.
    /// </summary>
    public static void Backward(Tensor q, Tensor k, Tensor v, AttentionOptions options, Tensor? bias, Tensor o, Tensor logSumExp, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? dbias = null)
    {
        var d = Validate(q, k, v, bias, options);
        var oShape = new Shape(d.B, d.Tq, d.H, d.Dv);
        Check.Compatible(q, nameof(q), o, nameof(o), strided: true);
        Check.Shape(o, oShape, nameof(o));
        Check.Compatible(q, nameof(q), dO, nameof(dO), strided: true);
        Check.Shape(dO, oShape, nameof(dO));
        CheckRagged(o, nameof(o), options);
        CheckRagged(dO, nameof(dO), options);
        CheckLse(q, logSumExp, d);
        CheckGrad(q, dq, q.Shape, nameof(dq), options);
        CheckGrad(q, dk, k.Shape, nameof(dk), options);
        CheckGrad(q, dv, v.Shape, nameof(dv), options);
        if (dbias is not null && bias is null)
        {
            throw new ArgumentException("dbias: expected null when there is no bias, actual a tensor", nameof(dbias));
        }
        CheckGrad(q, dbias, bias?.Shape ?? default, nameof(dbias), options, strided: false);
        q.Backend.SoftmaxAttentionBackward(q, k, v, bias, o, logSumExp, dO, dq, dk, dv, dbias, options);
    }

    internal static DType LseType(DType dtype) => dtype == DType.F64 ? DType.F64 : DType.F32;

    /// <summary>The problem's sizes; <paramref name="LseStride"/> is the distance between heads in lse (T_q, or N_q for one sequence of a ragged batch).</summary>
    internal readonly record struct Dims(int B, int Tq, int H, int Dqk, int Tk, int G, int Dv, int Length, int LseStride)
    {
        /// <summary>Sequence <paramref name="s"/> of a ragged batch as a dense problem of batch 1 (its parts are cut out by the caller).</summary>
        public Dims Sequence(SequenceLayout queries, SequenceLayout keys, int s) =>
            this with { B = 1, Tq = queries.Length(s), Tk = keys.Length(s), Length = keys.Length(s), LseStride = queries.TokenCount };
    }

    internal static Dims DimsOf(Tensor q, Tensor k, Tensor v, AttentionOptions options) =>
        new(q.Shape[0], q.Shape[1], q.Shape[2], q.Shape[3], k.Shape[1], k.Shape[2], v.Shape[3], options.KeyLength ?? k.Shape[1], q.Shape[1]);

    private static Dims Validate(Tensor q, Tensor k, Tensor v, Tensor? bias, AttentionOptions options)
    {
        Check.UsableStrided(q, nameof(q));
        Check.DTypeSupported(q, nameof(q));
        Check.Rank(q, 4, nameof(q), "[B, T_q, H, d_qk]");
        Check.Compatible(q, nameof(q), k, nameof(k), strided: true);
        Check.Rank(k, 4, nameof(k), "[B, T_k, G, d_qk]");
        Check.Compatible(q, nameof(q), v, nameof(v), strided: true);
        Check.Rank(v, 4, nameof(v), "[B, T_k, G, d_v]");
        var d = DimsOf(q, k, v, options);
        Check.Shape(k, new Shape(d.B, d.Tk, d.G, d.Dqk), nameof(k));
        Check.Shape(v, new Shape(d.B, d.Tk, d.G, d.Dv), nameof(v));
        if (d.G == 0 || d.H % d.G != 0)
        {
            throw new ArgumentException($"k: expected a KV head count dividing the {d.H} query heads, actual {d.G}", nameof(k));
        }
        if (!(options.Scale > 0) || !double.IsFinite(options.Scale))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.Scale, $"options: expected a finite Scale > 0, actual {options.Scale}");
        }
        if (d.Length < 0 || d.Length > d.Tk)
        {
            throw new ArgumentOutOfRangeException(nameof(options), d.Length, $"options: expected KeyLength in [0, {d.Tk}], actual {d.Length}");
        }
        if (options.Causal && d.Tq > d.Length)
        {
            throw new ArgumentException($"q: expected at most {d.Length} causal queries (one per valid key position), actual {d.Tq}", nameof(q));
        }
        if (d.Length == 0 && d.Tq > 0)
        {
            throw new ArgumentException("k: expected at least one valid key position, actual 0", nameof(k));
        }
        if (bias is not null)
        {
            Check.Compatible(q, nameof(q), bias, nameof(bias));
            Check.Shape(bias, new Shape(d.H, d.Tq, d.Tk), nameof(bias));
        }
        ValidateSequences(q, k, d, bias, options);
        CheckRagged(q, nameof(q), options);
        CheckRagged(k, nameof(k), options);
        CheckRagged(v, nameof(v), options);
        return d;
    }

    // A ragged batch: [1, N, …] tensors whose token counts are the layouts', no bias or KeyLength, and (causal) no sequence
    // with more queries than keys.
    private static void ValidateSequences(Tensor q, Tensor k, Dims d, Tensor? bias, AttentionOptions options)
    {
        if (options.Sequences is not { } queries)
        {
            if (options.KeySequences is not null)
            {
                throw new ArgumentException("options: expected KeySequences only with Sequences (a ragged batch), actual KeySequences alone", nameof(options));
            }
            return;
        }
        var keys = options.KeyLayout!;
        if (d.B != 1 || d.Tq != queries.TokenCount)
        {
            throw new ArgumentException($"q: expected shape [1, {queries.TokenCount}, {d.H}, {d.Dqk}] (the packed tokens of options.Sequences), actual {q.Shape}", nameof(q));
        }
        if (keys.Count != queries.Count)
        {
            throw new ArgumentException($"options: expected KeySequences of {queries.Count} sequences (as Sequences), actual {keys.Count}", nameof(options));
        }
        if (d.Tk != keys.TokenCount)
        {
            throw new ArgumentException($"k: expected {keys.TokenCount} packed key tokens (options.{(options.KeySequences is null ? "Sequences" : "KeySequences")}), actual {k.Shape[1]}", nameof(k));
        }
        if (options.KeyLength is not null)
        {
            throw new ArgumentException($"options: expected KeyLength null with a ragged batch (each sequence's keys are its own), actual {options.KeyLength}", nameof(options));
        }
        if (bias is not null)
        {
            throw new ArgumentException("bias: expected null with a ragged batch (a bias [H, T_q, T_k] has no per-sequence form), actual a tensor", nameof(bias));
        }
        if (options.Causal)
        {
            for (int s = 0; s < queries.Count; s++)
            {
                if (queries.Length(s) > keys.Length(s))
                {
                    throw new ArgumentException($"options: expected at most {keys.Length(s)} causal queries in sequence {s} (one per key), actual {queries.Length(s)}", nameof(options));
                }
            }
        }
    }

    private static void CheckLse(Tensor q, Tensor logSumExp, Dims d)
    {
        Check.Usable(logSumExp, nameof(logSumExp));
        if (logSumExp.DType != LseType(q.DType) || !ReferenceEquals(logSumExp.Backend, q.Backend))
        {
            throw new ArgumentException($"logSumExp: expected {LseType(q.DType)} on {q.Backend.Name}, actual {logSumExp.DType} on {logSumExp.Backend.Name}", nameof(logSumExp));
        }
        Check.Shape(logSumExp, new Shape(d.B, d.H, d.Tq), nameof(logSumExp));
    }

    private static void CheckGrad(Tensor q, Tensor? grad, Shape shape, string name, AttentionOptions options, bool strided = true)
    {
        if (grad is not null)
        {
            Check.Compatible(q, nameof(q), grad, name, strided);
            Check.Shape(grad, shape, name);
            CheckRagged(grad, name, options);
        }
    }

    // A ragged batch's tensors are packed [1, N, …] rows: contiguous.
    private static void CheckRagged(Tensor tensor, string name, AttentionOptions options)
    {
        if (options.Sequences is not null && !tensor.IsContiguous)
        {
            throw new ArgumentException($"{name}: expected a contiguous tensor with a ragged batch (options.Sequences), actual strides [{string.Join(", ", tensor.Strides)}]", name);
        }
    }

    /// <summary>
    /// Element strides (batch, token, head) of a <c>[B, T, H, d]</c> view whose last axis is contiguous: row (b, t, h) starts at
    /// <c>b·Batch + t·Token + h·Head</c>.
    /// </summary>
    internal readonly record struct RowStrides(long Batch, long Token, long Head)
    {
        public static RowStrides Of(Tensor? t) =>
            t is null ? default
            : t.StridesOrNull is { } s ? new(s[0], s[1], s[2])
            : new((long)t.Shape[1] * t.Shape[2] * t.Shape[3], (long)t.Shape[2] * t.Shape[3], t.Shape[3]); // row-major, without allocating Strides (every decode step)

        /// <summary>The first element of row (b, t, h).</summary>
        public long At(long b, long t, long h) => (b * Batch) + (t * Token) + (h * Head);
    }

    /// <summary>The layouts of the attention's tensors (row-major <c>[B, T, H, d]</c> unless views: <see cref="Tensor.Transpose"/>).</summary>
    internal readonly record struct Layouts(RowStrides Q, RowStrides K, RowStrides V, RowStrides O, RowStrides DO, RowStrides DQ, RowStrides DK, RowStrides DV)
    {
        public static Layouts Of(Tensor q, Tensor k, Tensor v, Tensor o, Tensor? dO = null, Tensor? dq = null, Tensor? dk = null, Tensor? dv = null) =>
            new(RowStrides.Of(q), RowStrides.Of(k), RowStrides.Of(v), RowStrides.Of(o), RowStrides.Of(dO), RowStrides.Of(dq), RowStrides.Of(dk), RowStrides.Of(dv));

        /// <summary>The row-major layouts of a problem of <paramref name="d"/> (every tensor contiguous <c>[B, T, H, d]</c>).</summary>
        public static Layouts Contiguous(Dims d)
        {
            RowStrides Rows(int t, int heads, int width) => new((long)t * heads * width, (long)heads * width, width);
            var (q, k, v, o) = (Rows(d.Tq, d.H, d.Dqk), Rows(d.Tk, d.G, d.Dqk), Rows(d.Tk, d.G, d.Dv), Rows(d.Tq, d.H, d.Dv));
            return new(q, k, v, o, o, q, k, v);
        }
    }
}

namespace Attention.Native.Ops;

/// <summary>Settings of <see cref="SoftmaxAttention"/>.</summary>
/// <param name="Scale">Multiplies q·k before the softmax (usually 1/sqrt(d_qk)).</param>
/// <param name="Causal">Mask keys after the query's position. Query i sits at position <c>L − T_q + i</c>, L the number of valid keys, so a
/// block of new queries attends to a cache that already holds earlier tokens.</param>
/// <param name="KeyLength">Number of valid key positions L when k and v are preallocated caches longer than that; null uses all of them.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public readonly record struct AttentionOptions(double Scale, bool Causal, int? KeyLength = null);

/// <summary>
/// Softmax attention, the core of mha/gqa/mqa/mla/tpa/sas and of agent attention's two softmaxes:
/// <c>o = softmax(scale · q kᵀ + bias + mask) v</c> per head. Layouts are token-major as the projections produce them:
/// <c>q [B, T_q, H, d_qk]</c>, <c>k [B, T_k, G, d_qk]</c>, <c>v [B, T_k, G, d_v]</c> with H a multiple of G (query head h reads
/// KV head h / (H/G)), <c>o [B, T_q, H, d_v]</c>, and an optional additive <c>bias [H, T_q, T_k]</c> shared by the batch.
/// The forward also returns the log-sum-exp of each score row, <c>lse [B, H, T_q]</c> (F32; F64 for F64 inputs), from which the
/// backward recomputes the probabilities. Scores are formed one block of query rows at a time, never as a whole T×T matrix.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you).</remarks>
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
        Check.Compatible(q, nameof(q), o, nameof(o));
        Check.Shape(o, new Shape(d.B, d.Tq, d.H, d.Dv), nameof(o));
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
        Check.Compatible(q, nameof(q), o, nameof(o));
        Check.Shape(o, oShape, nameof(o));
        Check.Compatible(q, nameof(q), dO, nameof(dO));
        Check.Shape(dO, oShape, nameof(dO));
        CheckLse(q, logSumExp, d);
        CheckGrad(q, dq, q.Shape, nameof(dq));
        CheckGrad(q, dk, k.Shape, nameof(dk));
        CheckGrad(q, dv, v.Shape, nameof(dv));
        if (dbias is not null && bias is null)
        {
            throw new ArgumentException("dbias: expected null when there is no bias, actual a tensor", nameof(dbias));
        }
        CheckGrad(q, dbias, bias?.Shape ?? default, nameof(dbias));
        q.Backend.SoftmaxAttentionBackward(q, k, v, bias, o, logSumExp, dO, dq, dk, dv, dbias, options);
    }

    internal static DType LseType(DType dtype) => dtype == DType.F64 ? DType.F64 : DType.F32;

    internal readonly record struct Dims(int B, int Tq, int H, int Dqk, int Tk, int G, int Dv, int Length);

    internal static Dims DimsOf(Tensor q, Tensor k, Tensor v, AttentionOptions options) =>
        new(q.Shape[0], q.Shape[1], q.Shape[2], q.Shape[3], k.Shape[1], k.Shape[2], v.Shape[3], options.KeyLength ?? k.Shape[1]);

    private static Dims Validate(Tensor q, Tensor k, Tensor v, Tensor? bias, AttentionOptions options)
    {
        Check.Usable(q, nameof(q));
        Check.DTypeSupported(q, nameof(q));
        Check.Rank(q, 4, nameof(q), "[B, T_q, H, d_qk]");
        Check.Compatible(q, nameof(q), k, nameof(k));
        Check.Rank(k, 4, nameof(k), "[B, T_k, G, d_qk]");
        Check.Compatible(q, nameof(q), v, nameof(v));
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
        return d;
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

    private static void CheckGrad(Tensor q, Tensor? grad, Shape shape, string name)
    {
        if (grad is not null)
        {
            Check.Compatible(q, nameof(q), grad, name);
            Check.Shape(grad, shape, name);
        }
    }
}

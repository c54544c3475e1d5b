namespace Attention.Native.Ops;

/// <summary>
/// FLatten's non-causal linear attention core (variants.md §6), per batch and head:
/// <c>q [B, Tq, h, d]</c>, <c>k [B, Tk, h, d]</c>, <c>v [B, Tk, h, dv]</c> → <c>o [B, Tq, h, dv]</c> with
/// <c>z_t = 1 / (q_t · mean_Tk(k) + 1e-6)</c>, <c>kv = kᵀ v / Tk</c>, <c>o_t = (q_t kv) · z_t</c>. Keys and values may
/// have another number of tokens than the queries (flatten-pvt's keys on the spatially reduced grid, vision-forms.md §2);
/// the 1-D layer has <c>Tq = Tk</c>. The inputs are meant to be positive (outputs of <see cref="FocusingMap"/>): the
/// normaliser is ill-conditioned where <c>q_t · mean_Tk(k)</c> nears 0. Cost O((Tq + Tk)·d·dv) per head, forward and
/// backward (no Tq×Tk scores).
/// Backward passes <b>add</b> into the gradients they are given (start from zeros) and skip a null gradient.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class FocusedLinearAttention
{
    /// <summary>The 1e-6 added to the normaliser's denominator (variants.md).</summary>
    public const double Epsilon = 1e-6;

    /// <summary>Writes the attention output into <paramref name="o"/> (distinct from the inputs).</summary>
    /// <param name="q">Queries <c>[B, Tq, h, d]</c>.</param>
    /// <param name="k">Keys <c>[B, Tk, h, d]</c> (B, h, d of <paramref name="q"/>; Tk ≥ 1 unless Tq = 0).</param>
    /// <param name="v">Values <c>[B, Tk, h, dv]</c> (B, Tk, h of <paramref name="k"/>).</param>
    /// <param name="o">Output <c>[B, Tq, h, dv]</c>.</param>
    public static void Forward(Tensor q, Tensor k, Tensor v, Tensor o)
    {
        var outputShape = Validate(q, k, v);
        Check.Compatible(q, nameof(q), o, nameof(o));
        Check.Shape(o, outputShape, nameof(o));
        // Outputs of early tokens are written while later tokens' q are read, and k, v feed every output.
        Check.Distinct(o, nameof(o), q, nameof(q));
        Check.Distinct(o, nameof(o), k, nameof(k));
        Check.Distinct(o, nameof(o), v, nameof(v));
        q.Backend.FocusedLinearAttentionForward(q, k, v, o);
    }

    /// <summary>Returns the attention output <c>[B, Tq, h, dv]</c> as a new tensor.</summary>
    /// <param name="q">Queries <c>[B, Tq, h, d]</c>.</param>
    /// <param name="k">Keys <c>[B, Tk, h, d]</c> (B, h, d of <paramref name="q"/>; Tk ≥ 1 unless Tq = 0).</param>
    /// <param name="v">Values <c>[B, Tk, h, dv]</c> (B, Tk, h of <paramref name="k"/>).</param>
    public static Tensor Forward(Tensor q, Tensor k, Tensor v)
    {
        var outputShape = Validate(q, k, v);
        return q.Backend.Create(outputShape, q.DType, o => Forward(q, k, v, o));
    }

    /// <summary>
    /// Adds the gradients given <paramref name="dO"/> into <paramref name="dq"/>, <paramref name="dk"/> and
    /// <paramref name="dv"/> (any may be null). With <c>m = mean_Tk(k)</c>, <c>c_t = kv·dO_t</c> and
    /// <c>e_t = −z_t² (q_t·c_t)</c> (the gradient of the denominator), t over the Tq query tokens and s over the Tk key tokens:
    /// <c>dq_t = z_t c_t + e_t m</c>; <c>dkv = Σ_t z_t q_tᵀ dO_t</c>; <c>dk_s = (dkv v_s + Σ_t e_t q_t) / Tk</c>;
    /// <c>dv_s = k_s dkv / Tk</c>. Nothing is saved from the forward: the sums are recomputed.
    /// </summary>
    /// <param name="q">The forward's queries <c>[B, Tq, h, d]</c>.</param>
    /// <param name="k">The forward's keys <c>[B, Tk, h, d]</c>.</param>
    /// <param name="v">The forward's values <c>[B, Tk, h, dv]</c>.</param>
    /// <param name="dO">Gradient of the output <c>[B, Tq, h, dv]</c>.</param>
    /// <param name="dq">Receives (adds) the gradient of <paramref name="q"/> <c>[B, Tq, h, d]</c>, or null.</param>
    /// <param name="dk">Receives (adds) the gradient of <paramref name="k"/> <c>[B, Tk, h, d]</c>, or null.</param>
    /// <param name="dv">Receives (adds) the gradient of <paramref name="v"/> <c>[B, Tk, h, dv]</c>, or null.</param>
    public static void Backward(Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv)
    {
        var outputShape = Validate(q, k, v);
        Check.Compatible(q, nameof(q), dO, nameof(dO));
        Check.Shape(dO, outputShape, nameof(dO));
        CheckGradient(q, k, v, dO, dq, nameof(dq), q.Shape);
        CheckGradient(q, k, v, dO, dk, nameof(dk), k.Shape);
        CheckGradient(q, k, v, dO, dv, nameof(dv), v.Shape);
        if (dq is not null && dk is not null)
        {
            Check.Distinct(dk, nameof(dk), dq, nameof(dq));
        }
        if (dq is not null && dv is not null)
        {
            Check.Distinct(dv, nameof(dv), dq, nameof(dq));
        }
        if (dk is not null && dv is not null)
        {
            Check.Distinct(dv, nameof(dv), dk, nameof(dk));
        }
        q.Backend.FocusedLinearAttentionBackward(q, k, v, dO, dq, dk, dv);
    }

    // Returns the output's shape [B, Tq, h, dv].
    private static Shape Validate(Tensor q, Tensor k, Tensor v)
    {
        Check.Usable(q, nameof(q));
        Check.DTypeSupported(q, nameof(q));
        if (q.Shape.Rank != 4)
        {
            throw new ArgumentException($"q: expected rank 4 [B, Tq, h, d], actual shape {q.Shape}", nameof(q));
        }
        Check.Compatible(q, nameof(q), k, nameof(k));
        var s = q.Shape;
        if (k.Shape.Rank != 4 || k.Shape[0] != s[0] || k.Shape[2] != s[2] || k.Shape[3] != s[3])
        {
            // With rank 4, k's own token count in the expected shape: any Tk fits.
            string expected = k.Shape.Rank == 4 ? $"[{s[0]}, {k.Shape[1]}, {s[2]}, {s[3]}]" : $"[{s[0]}, Tk, {s[2]}, {s[3]}]";
            throw new ArgumentException($"k: expected shape {expected} (B, h, d of q; any token count Tk ≥ 1), actual {k.Shape}", nameof(k));
        }
        int keyTokens = k.Shape[1];
        // A query needs a key to average over (with none, mean_Tk(k) and kᵀv/Tk are undefined).
        if (keyTokens == 0 && s[1] > 0)
        {
            throw new ArgumentException($"k: expected at least 1 token (Tk ≥ 1 for q's {s[1]} tokens), actual shape {k.Shape}", nameof(k));
        }
        Check.Compatible(q, nameof(q), v, nameof(v));
        if (v.Shape.Rank != 4 || v.Shape[0] != s[0] || v.Shape[1] != keyTokens || v.Shape[2] != s[2])
        {
            throw new ArgumentException($"v: expected shape [{s[0]}, {keyTokens}, {s[2]}, dv] (B, h of q, Tk of k), actual {v.Shape}", nameof(v));
        }
        return new Shape(s[0], s[1], s[2], v.Shape[3]);
    }

    // A gradient is added to while every input is still being read, so it may alias none of them.
    private static void CheckGradient(Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? gradient, string name, Shape shape)
    {
        if (gradient is null)
        {
            return;
        }
        Check.Compatible(q, nameof(q), gradient, name);
        Check.Shape(gradient, shape, name);
        Check.Distinct(gradient, name, q, nameof(q));
        Check.Distinct(gradient, name, k, nameof(k));
        Check.Distinct(gradient, name, v, nameof(v));
        Check.Distinct(gradient, name, dO, nameof(dO));
    }
}

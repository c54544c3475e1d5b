namespace Attention.Native.Ops;

/// <summary>
/// FLatten's non-causal linear attention core (variants.md §6), per batch and head:
/// <c>q, k [B, T, h, d]</c>, <c>v [B, T, h, dv]</c> → <c>o [B, T, h, dv]</c> with
/// <c>z_t = 1 / (q_t · mean_T(k) + 1e-6)</c>, <c>kv = kᵀ v / T</c>, <c>o_t = (q_t kv) · z_t</c>.
/// The inputs are meant to be positive (outputs of <see cref="FocusingMap"/>): the normaliser is
/// ill-conditioned where <c>q_t · mean_T(k)</c> nears 0. Cost O(T·d·dv) per head, forward and backward (no T×T scores).
/// Backward passes <b>add</b> into the gradients they are given (start from zeros) and skip a null gradient.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class FocusedLinearAttention
{
    /// <summary>The 1e-6 added to the normaliser's denominator (variants.md).</summary>
    public const double Epsilon = 1e-6;

    /// <summary>Writes the attention output into <paramref name="o"/> (distinct from the inputs).</summary>
    /// <param name="q">Queries <c>[B, T, h, d]</c>.</param>
    /// <param name="k">Keys <c>[B, T, h, d]</c>.</param>
    /// <param name="v">Values <c>[B, T, h, dv]</c>.</param>
    /// <param name="o">Output <c>[B, T, h, dv]</c>.</param>
    public static void Forward(Tensor q, Tensor k, Tensor v, Tensor o)
    {
        Validate(q, k, v);
        Check.Compatible(q, nameof(q), o, nameof(o));
        Check.Shape(o, v.Shape, nameof(o));
        // Outputs of early tokens are written while later tokens' q are read, and k, v feed every output.
        Check.Distinct(o, nameof(o), q, nameof(q));
        Check.Distinct(o, nameof(o), k, nameof(k));
        Check.Distinct(o, nameof(o), v, nameof(v));
        q.Backend.FocusedLinearAttentionForward(q, k, v, o);
    }

    /// <summary>Returns the attention output <c>[B, T, h, dv]</c> as a new tensor.</summary>
    /// <param name="q">Queries <c>[B, T, h, d]</c>.</param>
    /// <param name="k">Keys <c>[B, T, h, d]</c>.</param>
    /// <param name="v">Values <c>[B, T, h, dv]</c>.</param>
    public static Tensor Forward(Tensor q, Tensor k, Tensor v)
    {
        Validate(q, k, v);
        return q.Backend.Create(v.Shape, q.DType, o => Forward(q, k, v, o));
    }

    /// <summary>
    /// Adds the gradients given <paramref name="dO"/> into <paramref name="dq"/>, <paramref name="dk"/> and
    /// <paramref name="dv"/> (any may be null). With <c>m = mean_T(k)</c>, <c>c_t = kv·dO_t</c> and
    /// <c>e_t = −z_t² (q_t·c_t)</c> (the gradient of the denominator):
    /// <c>dq_t = z_t c_t + e_t m</c>; <c>dkv = Σ_t z_t q_tᵀ dO_t</c>; <c>dk_s = (dkv v_s + Σ_t e_t q_t) / T</c>;
    /// <c>dv_s = k_s dkv / T</c>. Nothing is saved from the forward: the sums are recomputed.
    /// </summary>
    /// <param name="q">The forward's queries <c>[B, T, h, d]</c>.</param>
    /// <param name="k">The forward's keys <c>[B, T, h, d]</c>.</param>
    /// <param name="v">The forward's values <c>[B, T, h, dv]</c>.</param>
    /// <param name="dO">Gradient of the output <c>[B, T, h, dv]</c>.</param>
    /// <param name="dq">Receives (adds) the gradient of <paramref name="q"/>, or null.</param>
    /// <param name="dk">Receives (adds) the gradient of <paramref name="k"/>, or null.</param>
    /// <param name="dv">Receives (adds) the gradient of <paramref name="v"/>, or null.</param>
    public static void Backward(Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv)
    {
        Validate(q, k, v);
        Check.Compatible(q, nameof(q), dO, nameof(dO));
        Check.Shape(dO, v.Shape, nameof(dO));
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

    private static void Validate(Tensor q, Tensor k, Tensor v)
    {
        Check.Usable(q, nameof(q));
        Check.DTypeSupported(q, nameof(q));
        if (q.Shape.Rank != 4)
        {
            throw new ArgumentException($"q: expected rank 4 [B, T, h, d], actual shape {q.Shape}", nameof(q));
        }
        Check.Compatible(q, nameof(q), k, nameof(k));
        Check.Shape(k, q.Shape, nameof(k));
        Check.Compatible(q, nameof(q), v, nameof(v));
        var s = q.Shape;
        if (v.Shape.Rank != 4 || v.Shape[0] != s[0] || v.Shape[1] != s[1] || v.Shape[2] != s[2])
        {
            throw new ArgumentException($"v: expected shape [{s[0]}, {s[1]}, {s[2]}, dv] (B, T, h of q), actual {v.Shape}", nameof(v));
        }
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

namespace Attention.Native.Ops;

/// <summary>
/// Decayed causal linear attention, the core of TransNormerLLM (variants.md §7), computed with the chunked
/// algorithm of Lightning Attention-2: per block, an intra-block masked product and an inter-block product with
/// the running state. Per batch b and head h, with λ = λ_h:
/// <c>o_t = Σ_{s≤t} λ^(t−s) (q_t · k_s) v_s</c> (no scale, no normaliser); equivalently the recurrence
/// <c>state_t = λ·state_{t−1} + k_tᵀ v_t</c>, <c>o_t = q_t·state_t</c>, with <c>state_{−1}</c> the optional initial
/// state (zero when absent). Layouts: <c>q, k [B, T, H, dk]</c>, <c>v [B, T, H, dv]</c>, <c>o [B, T, H, dv]</c>,
/// states <c>[B, H, dk, dv]</c>. Backward passes <b>add</b> into the gradients they are given and skip a null one.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you).</remarks>
public static class Lightning
{
    /// <summary>
    /// Returns <c>o_t = Σ_{s≤t} λ_h^(t−s) (q_t · k_s) v_s</c> (plus <c>λ_h^(t+1) q_t·S0</c> with an initial state S0) as a
    /// new tensor <c>[B, T, H, dv]</c>.
    /// </summary>
    /// <param name="q">Queries <c>[B, T, H, dk]</c>.</param>
    /// <param name="k">Keys <c>[B, T, H, dk]</c>.</param>
    /// <param name="v">Values <c>[B, T, H, dv]</c>.</param>
    /// <param name="decay">λ_h per head, each in (0, 1].</param>
    /// <param name="initialState">Optional state before the first token, <c>[B, H, dk, dv]</c>.</param>
    /// <param name="finalState">Optional <c>[B, H, dk, dv]</c> that receives the state after the last token; may be
    /// <paramref name="initialState"/> itself (in-place update, as decode steps through the recurrence).</param>
    /// <param name="blockSize">Block length of the chunked algorithm (≥ 1); the result does not depend on it.</param>
    public static Tensor Forward(Tensor q, Tensor k, Tensor v, ReadOnlySpan<double> decay, Tensor? initialState = null, Tensor? finalState = null, int blockSize = 64)
    {
        ValidateInputs(q, k, v, decay, blockSize);
        ValidateStates(q, v, initialState, finalState);
        // A span cannot be captured by the fill callback: keep a copy.
        double[] decayCopy = decay.ToArray();
        var s = q.Shape;
        return q.Backend.Create(new Shape(s[0], s[1], s[2], v.Shape[-1]), q.DType, o => Forward(q, k, v, decayCopy, o, initialState, finalState, blockSize));
    }

    /// <summary>
    /// Writes <c>o_t = Σ_{s≤t} λ_h^(t−s) (q_t · k_s) v_s</c> (plus <c>λ_h^(t+1) q_t·S0</c> with an initial state S0) into
    /// <paramref name="o"/> <c>[B, T, H, dv]</c>, which must be distinct from the inputs.
    /// </summary>
    /// <param name="q">Queries <c>[B, T, H, dk]</c>.</param>
    /// <param name="k">Keys <c>[B, T, H, dk]</c>.</param>
    /// <param name="v">Values <c>[B, T, H, dv]</c>.</param>
    /// <param name="decay">λ_h per head, each in (0, 1].</param>
    /// <param name="o">The output <c>[B, T, H, dv]</c>.</param>
    /// <param name="initialState">Optional state before the first token, <c>[B, H, dk, dv]</c>.</param>
    /// <param name="finalState">Optional <c>[B, H, dk, dv]</c> that receives the state after the last token; may be
    /// <paramref name="initialState"/> itself (in-place update, as decode steps through the recurrence).</param>
    /// <param name="blockSize">Block length of the chunked algorithm (≥ 1); the result does not depend on it.</param>
    public static void Forward(Tensor q, Tensor k, Tensor v, ReadOnlySpan<double> decay, Tensor o, Tensor? initialState, Tensor? finalState, int blockSize = 64)
    {
        ValidateInputs(q, k, v, decay, blockSize);
        ValidateStates(q, v, initialState, finalState);
        var s = q.Shape;
        Check.Compatible(q, nameof(q), o, nameof(o));
        Check.Shape(o, new Shape(s[0], s[1], s[2], v.Shape[-1]), nameof(o));
        // o is written block by block while the block's values and later inputs are still being read.
        Check.Distinct(o, nameof(o), q, nameof(q));
        Check.Distinct(o, nameof(o), k, nameof(k));
        Check.Distinct(o, nameof(o), v, nameof(v));
        if (initialState is not null)
        {
            Check.Distinct(o, nameof(o), initialState, nameof(initialState));
        }
        if (finalState is not null)
        {
            Check.Distinct(o, nameof(o), finalState, nameof(finalState));
            Check.Distinct(finalState, nameof(finalState), q, nameof(q));
            Check.Distinct(finalState, nameof(finalState), k, nameof(k));
            Check.Distinct(finalState, nameof(finalState), v, nameof(v));
        }
        q.Backend.LightningForward(q, k, v, decay.ToArray(), o, initialState, finalState, blockSize);
    }

    /// <summary>
    /// Adds the gradients of the forward without initial state, given <paramref name="dO"/>:
    /// <c>dq_t = Σ_{s≤t} λ^(t−s) (dO_t·v_s) k_s</c>, <c>dk_s = Σ_{t≥s} λ^(t−s) (dO_t·v_s) q_t</c>,
    /// <c>dv_s = Σ_{t≥s} λ^(t−s) (q_t·k_s) dO_t</c>, with the two-sweep chunked algorithm of Lightning Attention-2.
    /// Any gradient may be null (not computed); the gradients must be distinct from the inputs.
    /// </summary>
    /// <param name="q">Queries <c>[B, T, H, dk]</c>.</param>
    /// <param name="k">Keys <c>[B, T, H, dk]</c>.</param>
    /// <param name="v">Values <c>[B, T, H, dv]</c>.</param>
    /// <param name="decay">λ_h per head, each in (0, 1].</param>
    /// <param name="dO">Gradient of the output <c>[B, T, H, dv]</c>.</param>
    /// <param name="dq">Receives (adds) the gradient of <paramref name="q"/>, or null.</param>
    /// <param name="dk">Receives (adds) the gradient of <paramref name="k"/>, or null.</param>
    /// <param name="dv">Receives (adds) the gradient of <paramref name="v"/>, or null.</param>
    /// <param name="blockSize">Block length of the chunked algorithm (≥ 1); the result does not depend on it.</param>
    public static void Backward(Tensor q, Tensor k, Tensor v, ReadOnlySpan<double> decay, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, int blockSize = 64)
    {
        ValidateInputs(q, k, v, decay, blockSize);
        var s = q.Shape;
        Check.Compatible(q, nameof(q), dO, nameof(dO));
        Check.Shape(dO, new Shape(s[0], s[1], s[2], v.Shape[-1]), nameof(dO));
        ValidateGradient(q, k, v, dO, dq, q.Shape, nameof(dq));
        ValidateGradient(q, k, v, dO, dk, k.Shape, nameof(dk));
        ValidateGradient(q, k, v, dO, dv, v.Shape, nameof(dv));
        q.Backend.LightningBackward(q, k, v, decay.ToArray(), dO, dq, dk, dv, blockSize);
    }

    private static void ValidateInputs(Tensor q, Tensor k, Tensor v, ReadOnlySpan<double> decay, int blockSize)
    {
        Check.Usable(q, nameof(q));
        Check.DTypeSupported(q, nameof(q));
        if (q.Shape.Rank != 4)
        {
            throw new ArgumentException($"q: expected rank 4 [B, T, H, dk], actual shape {q.Shape}", nameof(q));
        }
        Check.Compatible(q, nameof(q), k, nameof(k));
        Check.Shape(k, q.Shape, nameof(k));
        Check.Compatible(q, nameof(q), v, nameof(v));
        var s = q.Shape;
        if (v.Shape.Rank != 4 || v.Shape[0] != s[0] || v.Shape[1] != s[1] || v.Shape[2] != s[2])
        {
            throw new ArgumentException($"v: expected shape [{s[0]}, {s[1]}, {s[2]}, dv] (as q, any dv), actual {v.Shape}", nameof(v));
        }
        int heads = s[2];
        if (decay.Length != heads)
        {
            throw new ArgumentException($"decay: expected {heads} values (one per head), actual {decay.Length}", nameof(decay));
        }
        for (int h = 0; h < heads; h++)
        {
            // The negated comparison also rejects NaN.
            if (!(decay[h] > 0 && decay[h] <= 1))
            {
                throw new ArgumentOutOfRangeException(nameof(decay), decay[h], $"decay[{h}]: expected a value in (0, 1], actual {decay[h]}");
            }
        }
        if (blockSize < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, $"blockSize: expected a value ≥ 1, actual {blockSize}");
        }
    }

    private static void ValidateStates(Tensor q, Tensor v, Tensor? initialState, Tensor? finalState)
    {
        var stateShape = new Shape(q.Shape[0], q.Shape[2], q.Shape[3], v.Shape[3]);
        if (initialState is not null)
        {
            Check.Compatible(q, nameof(q), initialState, nameof(initialState));
            Check.Shape(initialState, stateShape, nameof(initialState));
        }
        if (finalState is not null)
        {
            Check.Compatible(q, nameof(q), finalState, nameof(finalState));
            Check.Shape(finalState, stateShape, nameof(finalState));
        }
    }

    private static void ValidateGradient(Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? gradient, Shape expected, string name)
    {
        if (gradient is null)
        {
            return;
        }
        Check.Compatible(q, nameof(q), gradient, name);
        Check.Shape(gradient, expected, name);
        // Gradients are accumulated while the inputs are still being read.
        Check.Distinct(gradient, name, q, nameof(q));
        Check.Distinct(gradient, name, k, nameof(k));
        Check.Distinct(gradient, name, v, nameof(v));
        Check.Distinct(gradient, name, dO, nameof(dO));
    }
}

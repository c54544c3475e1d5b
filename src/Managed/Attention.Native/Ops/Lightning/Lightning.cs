namespace Attention.Native.Ops;

/// <summary>
/// Decayed causal linear attention, the core of TransNormerLLM (variants.md §7), computed with the chunked
/// algorithm of Lightning Attention-2: per block, an intra-block masked product and an inter-block product with
/// the running state. Per batch b and head h, with λ = λ_h:
/// <c>o_t = Σ_{s≤t} λ^(t−s) (q_t · k_s) v_s</c> (no scale, no normaliser); equivalently the recurrence
/// <c>state_t = λ·state_{t−1} + k_tᵀ v_t</c>, <c>o_t = q_t·state_t</c>, with <c>state_{−1}</c> the optional initial
/// state (zero when absent). Layouts: <c>q, k [B, T, H, dk]</c>, <c>v [B, T, H, dv]</c>, <c>o [B, T, H, dv]</c>,
/// states <c>[B, H, dk, dv]</c> of dtype <see cref="StateDType"/> (F32 for BF16/F16 inputs: a 16-bit state drifts over a
/// long decode, and TransNormerLLM keeps its state in fp32 too). Backward passes <b>add</b> into the gradients they are
/// given and skip a null one.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class Lightning
{
    /// <summary>
    /// The dtype of the states (initial, final and their gradients) for inputs of <paramref name="dtype"/>: F32 for BF16 and
    /// F16, the input dtype otherwise.
    /// </summary>
    /// <param name="dtype">The dtype of q, k and v.</param>
    public static DType StateDType(DType dtype) => dtype.IsHalfPrecision() ? DType.F32 : dtype;

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
        q.Backend.LightningForward(q, k, v, decay.ToArray(), o, initialState, finalState, blockSize, null);
    }

    /// <summary>
    /// Adds the gradients of the forward without initial state, given <paramref name="dO"/>:
    /// <c>dq_t = Σ_{s≤t} λ^(t−s) (dO_t·v_s) k_s</c>, <c>dk_s = Σ_{t≥s} λ^(t−s) (dO_t·v_s) q_t</c>,
    /// <c>dv_s = Σ_{t≥s} λ^(t−s) (q_t·k_s) dO_t</c>, with the two-sweep chunked algorithm of Lightning Attention-2.
    /// Any gradient may be null (not computed); the gradients must be distinct from the inputs. The overload with states
    /// covers a forward that had an initial state or whose final state was used.
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
    public static void Backward(Tensor q, Tensor k, Tensor v, ReadOnlySpan<double> decay, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, int blockSize = 64) =>
        Backward(q, k, v, decay, dO, dq, dk, dv, initialState: null, dInitialState: null, dFinalState: null, blockSize);

    /// <summary>
    /// Adds the gradients of the forward with initial state S0 (<paramref name="initialState"/>, or none) and a final state
    /// S_{T−1} that itself has the gradient G (<paramref name="dFinalState"/>: chunked or truncated training through a carried
    /// state), given <paramref name="dO"/>. With <c>D_s = Σ_{t≥s} λ^(t−s) q_tᵀ dO_t + λ^(T−1−s) G</c> (the gradient of
    /// the state after token s): <c>dq_t = dO_t·S_tᵀ</c> with <c>S_t = λ^(t+1) S0 + Σ_{s≤t} λ^(t−s) k_sᵀ v_s</c>,
    /// <c>dk_s = D_s v_s</c>, <c>dv_s = k_s D_s</c> and <c>dS0 = λ·D_0</c> (G when T = 0). Any gradient may be null (not
    /// computed), as may the states; the gradients must be distinct from the inputs.
    /// </summary>
    /// <param name="q">Queries <c>[B, T, H, dk]</c>.</param>
    /// <param name="k">Keys <c>[B, T, H, dk]</c>.</param>
    /// <param name="v">Values <c>[B, T, H, dv]</c>.</param>
    /// <param name="decay">λ_h per head, each in (0, 1].</param>
    /// <param name="dO">Gradient of the output <c>[B, T, H, dv]</c>.</param>
    /// <param name="dq">Receives (adds) the gradient of <paramref name="q"/>, or null.</param>
    /// <param name="dk">Receives (adds) the gradient of <paramref name="k"/>, or null.</param>
    /// <param name="dv">Receives (adds) the gradient of <paramref name="v"/>, or null.</param>
    /// <param name="initialState">The forward's initial state S0 <c>[B, H, dk, dv]</c>, or null (zero).</param>
    /// <param name="dInitialState">Receives (adds) the gradient of S0 <c>[B, H, dk, dv]</c>, or null.</param>
    /// <param name="dFinalState">The gradient of the forward's final state <c>[B, H, dk, dv]</c>, or null (zero).</param>
    /// <param name="blockSize">Block length of the chunked algorithm (≥ 1); the result does not depend on it.</param>
    public static void Backward(Tensor q, Tensor k, Tensor v, ReadOnlySpan<double> decay, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? initialState, Tensor? dInitialState, Tensor? dFinalState, int blockSize = 64)
    {
        ValidateBackward(q, k, v, decay, blockSize, dO, dq, dk, dv);
        ValidateState(q, v, initialState, nameof(initialState));
        ValidateState(q, v, dFinalState, nameof(dFinalState));
        ValidateState(q, v, dInitialState, nameof(dInitialState));
        if (dInitialState is not null)
        {
            DistinctFromAll(dInitialState, nameof(dInitialState),
                [(q, nameof(q)), (k, nameof(k)), (v, nameof(v)), (dO, nameof(dO)), (dq, nameof(dq)), (dk, nameof(dk)), (dv, nameof(dv)), (initialState, nameof(initialState)), (dFinalState, nameof(dFinalState))]);
        }
        foreach (var (gradient, name) in new[] { (dq, nameof(dq)), (dk, nameof(dk)), (dv, nameof(dv)) })
        {
            if (gradient is null)
            {
                continue;
            }
            if (initialState is not null)
            {
                Check.Distinct(gradient, name, initialState, nameof(initialState));
            }
            if (dFinalState is not null)
            {
                Check.Distinct(gradient, name, dFinalState, nameof(dFinalState));
            }
        }
        q.Backend.LightningBackward(q, k, v, decay.ToArray(), dO, dq, dk, dv, initialState, dInitialState, dFinalState, blockSize, null);
    }

    /// <summary>
    /// The forward of a ragged batch: <paramref name="q"/>, <paramref name="k"/> <c>[1, N, H, dk]</c> and <paramref name="v"/>
    /// <c>[1, N, H, dv]</c> hold the packed tokens of <paramref name="sequences"/>, each sequence its own recurrence. Sequence s
    /// starts from row <c>slots[s]</c> of <paramref name="initialStates"/> (zero when null) and writes its final state to row
    /// <c>slots[s]</c> of <paramref name="finalStates"/>; the state tensors are <c>[P, H, dk, dv]</c> of
    /// <see cref="StateDType"/>, P ≥ the sequence count, and <paramref name="slots"/> (distinct rows in [0, P)) defaults to
    /// 0 … S − 1. <paramref name="finalStates"/> may be <paramref name="initialStates"/> (each sequence's state updated in place,
    /// as a serving pool decodes many sequences in one step). Returns o <c>[1, N, H, dv]</c>.
    /// </summary>
    /// <param name="q">Queries <c>[1, N, H, dk]</c>.</param>
    /// <param name="k">Keys <c>[1, N, H, dk]</c>.</param>
    /// <param name="v">Values <c>[1, N, H, dv]</c>.</param>
    /// <param name="decay">λ_h per head, each in (0, 1].</param>
    /// <param name="sequences">The packed sequences.</param>
    /// <param name="initialStates">Optional states before each sequence's first token, <c>[P, H, dk, dv]</c>.</param>
    /// <param name="finalStates">Optional <c>[P, H, dk, dv]</c> receiving each sequence's state after its last token.</param>
    /// <param name="slots">The state row of each sequence, or empty for 0 … S − 1.</param>
    /// <param name="blockSize">Block length of the chunked algorithm (≥ 1); the result does not depend on it.</param>
    public static Tensor ForwardRagged(Tensor q, Tensor k, Tensor v, ReadOnlySpan<double> decay, SequenceLayout sequences, Tensor? initialStates = null, Tensor? finalStates = null,
        ReadOnlySpan<int> slots = default, int blockSize = 64)
    {
        ValidateInputs(q, k, v, decay, blockSize);
        var ragged = ValidateRagged(q, v, sequences, slots, initialStates, nameof(initialStates), finalStates, nameof(finalStates));
        if (finalStates is not null)
        {
            Check.Distinct(finalStates, nameof(finalStates), q, nameof(q));
            Check.Distinct(finalStates, nameof(finalStates), k, nameof(k));
            Check.Distinct(finalStates, nameof(finalStates), v, nameof(v));
        }
        double[] decayCopy = decay.ToArray();
        var s = q.Shape;
        return q.Backend.Create(new Shape(s[0], s[1], s[2], v.Shape[-1]), q.DType, o => q.Backend.LightningForward(q, k, v, decayCopy, o, initialStates, finalStates, blockSize, ragged));
    }

    /// <summary>
    /// Adds the gradients of the ragged forward (<see cref="ForwardRagged"/>),
    /// each sequence as the overload with states computes them: its initial state is row <c>slots[s]</c> of
    /// <paramref name="initialStates"/>, its final state's gradient row <c>slots[s]</c> of <paramref name="dFinalStates"/>, and
    /// the gradient of its initial state is added into row <c>slots[s]</c> of <paramref name="dInitialStates"/>.
    /// </summary>
    /// <param name="q">Queries <c>[1, N, H, dk]</c>.</param>
    /// <param name="k">Keys <c>[1, N, H, dk]</c>.</param>
    /// <param name="v">Values <c>[1, N, H, dv]</c>.</param>
    /// <param name="decay">λ_h per head, each in (0, 1].</param>
    /// <param name="sequences">The packed sequences.</param>
    /// <param name="dO">Gradient of the output <c>[1, N, H, dv]</c>.</param>
    /// <param name="dq">Receives (adds) the gradient of <paramref name="q"/>, or null.</param>
    /// <param name="dk">Receives (adds) the gradient of <paramref name="k"/>, or null.</param>
    /// <param name="dv">Receives (adds) the gradient of <paramref name="v"/>, or null.</param>
    /// <param name="initialStates">The forward's initial states <c>[P, H, dk, dv]</c>, or null (zero).</param>
    /// <param name="dInitialStates">Receives (adds) the gradients of the initial states, or null.</param>
    /// <param name="dFinalStates">The gradients of the final states <c>[P, H, dk, dv]</c>, or null (zero).</param>
    /// <param name="slots">The state row of each sequence, or empty for 0 … S − 1.</param>
    /// <param name="blockSize">Block length of the chunked algorithm (≥ 1); the result does not depend on it.</param>
    public static void BackwardRagged(Tensor q, Tensor k, Tensor v, ReadOnlySpan<double> decay, SequenceLayout sequences, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv,
        Tensor? initialStates = null, Tensor? dInitialStates = null, Tensor? dFinalStates = null, ReadOnlySpan<int> slots = default, int blockSize = 64)
    {
        ValidateBackward(q, k, v, decay, blockSize, dO, dq, dk, dv);
        var ragged = ValidateRagged(q, v, sequences, slots, initialStates, nameof(initialStates), dFinalStates, nameof(dFinalStates));
        ValidateRagged(q, v, sequences, slots, dInitialStates, nameof(dInitialStates), null, nameof(dFinalStates));
        if (dInitialStates is not null)
        {
            DistinctFromAll(dInitialStates, nameof(dInitialStates),
                [(q, nameof(q)), (k, nameof(k)), (v, nameof(v)), (dO, nameof(dO)), (dq, nameof(dq)), (dk, nameof(dk)), (dv, nameof(dv)), (initialStates, nameof(initialStates)), (dFinalStates, nameof(dFinalStates))]);
        }
        q.Backend.LightningBackward(q, k, v, decay.ToArray(), dO, dq, dk, dv, initialStates, dInitialStates, dFinalStates, blockSize, ragged);
    }

    // q [1, N, …] over the layout's tokens; states [P ≥ max slot + 1, H, dk, dv] of the state dtype; slots distinct and in range.
    private static RaggedStates ValidateRagged(Tensor q, Tensor v, SequenceLayout sequences, ReadOnlySpan<int> slots, Tensor? first, string firstName, Tensor? second, string secondName)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        Rope.CheckPacked(q, nameof(q), sequences);
        int[] rows = slots.IsEmpty ? Enumerable.Range(0, sequences.Count).ToArray() : slots.ToArray();
        if (rows.Length != sequences.Count)
        {
            throw new ArgumentException($"slots: expected {sequences.Count} state rows (one per sequence) or none, actual {rows.Length}", nameof(slots));
        }
        int need = rows.Length == 0 ? 0 : rows.Max() + 1;
        var seen = new HashSet<int>();
        for (int s = 0; s < rows.Length; s++)
        {
            if (rows[s] < 0)
            {
                throw new ArgumentException($"slots[{s}]: expected a state row ≥ 0, actual {rows[s]}", nameof(slots));
            }
            if (!seen.Add(rows[s]))
            {
                throw new ArgumentException($"slots[{s}]: expected distinct state rows (two sequences cannot share a state), actual row {rows[s]} twice", nameof(slots));
            }
        }
        foreach (var (state, name) in new[] { (first, firstName), (second, secondName) })
        {
            if (state is null)
            {
                continue;
            }
            Check.Usable(state, name);
            if (!ReferenceEquals(state.Backend, q.Backend) || state.DType != StateDType(q.DType))
            {
                throw new ArgumentException($"{name}: expected a {StateDType(q.DType)} tensor on {q.Backend.Name} (the state dtype for {q.DType} q), actual {state.DType} on {Check.BackendOf(state, q.Backend)}", name);
            }
            var s = state.Shape;
            if (s.Rank != 4 || s[0] < need || s[1] != q.Shape[2] || s[2] != q.Shape[3] || s[3] != v.Shape[3])
            {
                throw new ArgumentException($"{name}: expected shape [P ≥ {need}, {q.Shape[2]}, {q.Shape[3]}, {v.Shape[3]}] (a state row per slot), actual {s}", name);
            }
        }
        return new RaggedStates(sequences, rows);
    }

    // The inputs, dO [B, T, H, dv] and the gradients of a backward (dense or ragged).
    private static void ValidateBackward(Tensor q, Tensor k, Tensor v, ReadOnlySpan<double> decay, int blockSize, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv)
    {
        ValidateInputs(q, k, v, decay, blockSize);
        var s = q.Shape;
        Check.Compatible(q, nameof(q), dO, nameof(dO));
        Check.Shape(dO, new Shape(s[0], s[1], s[2], v.Shape[-1]), nameof(dO));
        ValidateGradient(q, k, v, dO, dq, q.Shape, nameof(dq));
        ValidateGradient(q, k, v, dO, dk, k.Shape, nameof(dk));
        ValidateGradient(q, k, v, dO, dv, v.Shape, nameof(dv));
    }

    // The gradient of the initial state is accumulated while the inputs and the other gradients are still read or written.
    private static void DistinctFromAll(Tensor gradient, string name, (Tensor? Tensor, string Name)[] others)
    {
        foreach (var (other, otherName) in others)
        {
            if (other is not null)
            {
                Check.Distinct(gradient, name, other, otherName);
            }
        }
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
        ValidateState(q, v, initialState, nameof(initialState));
        ValidateState(q, v, finalState, nameof(finalState));
    }

    // A state (or its gradient): q's backend, dtype StateDType(q), shape [B, H, dk, dv].
    private static void ValidateState(Tensor q, Tensor v, Tensor? state, string name)
    {
        if (state is null)
        {
            return;
        }
        Check.Usable(state, name);
        if (!ReferenceEquals(state.Backend, q.Backend))
        {
            throw new ArgumentException($"{name}: expected a tensor on backend {q.Backend.Name} (as q), actual {Check.BackendOf(state, q.Backend)}", name);
        }
        var dtype = StateDType(q.DType);
        if (state.DType != dtype)
        {
            throw new ArgumentException($"{name}: expected dtype {dtype} (the state dtype for {q.DType} q), actual {state.DType}", name);
        }
        Check.Shape(state, new Shape(q.Shape[0], q.Shape[2], q.Shape[3], v.Shape[3]), name);
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

/// <summary>A ragged Lightning call: the packed sequences and the state row of each.</summary>
internal sealed record RaggedStates(SequenceLayout Sequences, int[] Slots);

namespace Attention.Native.Variants;

// The graph forms of the Lightning Attention-2 op and LRPE: their backwards add into the gradients directly.
internal sealed partial class Graph
{
    /// <summary><c>o_t = Σ_{s≤t} λ^(t−s) (q_t·k_s) v_s</c> per head (no initial state: a training sequence starts empty).</summary>
    public Node Lightning(Node q, Node k, Node v, double[] decay)
    {
        if (Sequences is { } sequences)
        {
            // Each packed sequence its own recurrence from an empty state.
            var ragged = Ops.Lightning.ForwardRagged(q.Value, k.Value, v.Value, decay, sequences);
            return Result(ragged, out_ => Ops.Lightning.BackwardRagged(q.Value, k.Value, v.Value, decay, sequences, GradOf(out_), GradIfNeeded(q), GradIfNeeded(k), GradIfNeeded(v)), q, k, v);
        }
        var o = Ops.Lightning.Forward(q.Value, k.Value, v.Value, decay);
        return Result(o, out_ => Ops.Lightning.Backward(q.Value, k.Value, v.Value, decay, GradOf(out_), GradIfNeeded(q), GradIfNeeded(k), GradIfNeeded(v)), q, k, v);
    }

    /// <summary><c>[x ⊙ cos(θ_h t) | x ⊙ sin(θ_h t)]</c> at positions <paramref name="positionOffset"/>….</summary>
    public Node Lrpe(Node x, Node theta, int positionOffset)
    {
        if (Sequences is { } sequences)
        {
            if (positionOffset != 0)
            {
                throw new InvalidOperationException("Lrpe: a ragged graph's positions come from its SequenceLayout's start positions, not an offset");
            }
            var ragged = Ops.Lrpe.Forward(x.Value, theta.Value, sequences);
            return Result(ragged, out_ => Ops.Lrpe.Backward(x.Value, theta.Value, GradOf(out_), GradIfNeeded(x), GradIfNeeded(theta), sequences), x, theta);
        }
        var y = Ops.Lrpe.Forward(x.Value, theta.Value, positionOffset);
        return Result(y, out_ => Ops.Lrpe.Backward(x.Value, theta.Value, GradOf(out_), GradIfNeeded(x), GradIfNeeded(theta), positionOffset), x, theta);
    }
}

namespace Attention.Native.Variants;

// The graph form of the TPA factor contraction.
internal sealed partial class Graph
{
    /// <summary>y [B,T,H,d] = (1/R) Σ_r a[B,T,H,r] · f[B,T,r,d] (<see cref="Ops.TpaContraction"/>).</summary>
    public Node TpaContraction(Node a, Node f)
    {
        var y = Ops.TpaContraction.Forward(a.Value, f.Value);
        return Result(y, out_ => Ops.TpaContraction.Backward(a.Value, f.Value, GradOf(out_), GradIfNeeded(a), GradIfNeeded(f)), a, f);
    }
}

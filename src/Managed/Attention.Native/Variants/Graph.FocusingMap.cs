namespace Attention.Native.Variants;

// The graph form of FLatten's focusing map (Ops.FocusingMap): its backward adds into both gradients directly.
internal sealed partial class Graph
{
    /// <summary><c>‖u‖ · u^p / ‖u^p‖</c> per token with <c>u = (ReLU(x) + 1e-6) / softplus(scale)</c>.</summary>
    public Node FocusingMap(Node x, Node scale, double focusingFactor)
    {
        var y = Ops.FocusingMap.Forward(x.Value, scale.Value, focusingFactor);
        return Result(y, out_ => Ops.FocusingMap.Backward(x.Value, scale.Value, focusingFactor, GradOf(out_), GradIfNeeded(x), GradIfNeeded(scale)), x, scale);
    }
}

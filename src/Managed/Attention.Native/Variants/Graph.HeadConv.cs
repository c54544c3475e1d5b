namespace Attention.Native.Variants;

// The graph form of the SAS convolution across heads.
internal sealed partial class Graph
{
    /// <summary>Conv1d over <paramref name="x"/> [N, C_in, L] with channels = heads (<see cref="Ops.HeadConv"/>).</summary>
    public Node HeadConv(Node x, Node weight, Node? bias = null)
    {
        var y = Ops.HeadConv.Forward(x.Value, weight.Value, bias?.Value);
        return Result(y, out_ => Ops.HeadConv.Backward(x.Value, weight.Value, GradOf(out_), GradIfNeeded(x), GradIfNeeded(weight), GradIfNeeded(bias)), x, weight, bias);
    }
}

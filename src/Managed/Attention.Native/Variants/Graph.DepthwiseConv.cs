namespace Attention.Native.Variants;

// The graph form of the depthwise Conv1d over T (Ops.DepthwiseConv): its backward adds into the gradients directly.
internal sealed partial class Graph
{
    /// <summary>x [B, T, C], weight [Cw, 1, k], bias [Cw]: channel c uses filter c mod Cw, zero padding (k−1)/2.</summary>
    public Node DepthwiseConv(Node x, Node weight, Node? bias)
    {
        var y = Ops.DepthwiseConv.Forward(x.Value, weight.Value, bias?.Value);
        return Result(y, out_ => Ops.DepthwiseConv.Backward(x.Value, weight.Value, GradOf(out_), GradIfNeeded(x), GradIfNeeded(weight), GradIfNeeded(bias)), x, weight, bias);
    }
}

namespace Attention.Native.Variants;

// The graph form of the depthwise convolution (Ops.DepthwiseConv), 1-D over T or 2-D over a token grid: its backward adds
// into the gradients directly.
internal sealed partial class Graph
{
    /// <summary>
    /// x [B, T, C] with weight [Cw, 1, k], or x [B, H, W, C] with weight [Cw, 1, kh, kw]; bias [Cw]: channel c uses filter
    /// c mod Cw, zero padding (k−1)/2 on each convolved axis.
    /// </summary>
    public Node DepthwiseConv(Node x, Node weight, Node? bias)
    {
        var y = Ops.DepthwiseConv.Forward(x.Value, weight.Value, bias?.Value);
        return Result(y, out_ => Ops.DepthwiseConv.Backward(x.Value, weight.Value, GradOf(out_), GradIfNeeded(x), GradIfNeeded(weight), GradIfNeeded(bias)), x, weight, bias);
    }
}

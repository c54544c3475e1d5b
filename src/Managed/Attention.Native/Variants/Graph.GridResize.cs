namespace Attention.Native.Variants;

// The graph form of bilinear grid resizing (Ops.GridResize): linear, so its backward needs only the output gradient.
internal sealed partial class Graph
{
    /// <summary>x [B, inH·inW, C] → [B, outH·outW, C], F.interpolate(mode='bilinear', align_corners=False) of the token grid.</summary>
    public Node GridResize(Node x, int inH, int inW, int outH, int outW)
    {
        var y = Ops.GridResize.Forward(x.Value, inH, inW, outH, outW);
        return Result(y, out_ => Ops.GridResize.Backward(GradOf(out_), outH, outW, GradOf(x), inH, inW), x);
    }
}

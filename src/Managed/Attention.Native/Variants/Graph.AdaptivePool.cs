namespace Attention.Native.Variants;

// The graph form of AdaptiveAvgPool1d over T (Ops.AdaptivePool): linear, so its backward needs only the output gradient.
internal sealed partial class Graph
{
    /// <summary>x [B, T, C] → [B, outputLength, C], output i averaging positions floor(iT/n) … ceil((i+1)T/n)−1.</summary>
    public Node AdaptivePool(Node x, int outputLength)
    {
        var y = Ops.AdaptivePool.Forward(x.Value, outputLength);
        return Result(y, out_ => Ops.AdaptivePool.Backward(GradOf(out_), GradOf(x)), x);
    }
}

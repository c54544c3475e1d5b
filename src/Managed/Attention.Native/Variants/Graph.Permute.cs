namespace Attention.Native.Variants;

// The graph form of a contiguous transpose (Ops.Permute): its backward permutes the output gradient back.
internal sealed partial class Graph
{
    /// <summary>x → x permuted (y's axis a is x's axis permutation[a]), as a new contiguous tensor.</summary>
    public Node Permute(Node x, int[] permutation)
    {
        // A copy: the backward runs later, and the caller may reuse its array.
        int[] p = (int[])permutation.Clone();
        var y = Ops.Permute.Forward(x.Value, p);
        return Result(y, out_ => Ops.Permute.Backward(GradOf(out_), p, GradOf(x)), x);
    }
}

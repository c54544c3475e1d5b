namespace Attention.Native.Variants;

// TEMPORARY compile stand-in (replaced by the grid-ops branch).
internal sealed partial class Graph
{
    public Node Permute(Node x, int[] permutation) => throw new NotImplementedException();
}

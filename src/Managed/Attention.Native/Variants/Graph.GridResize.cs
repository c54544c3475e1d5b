namespace Attention.Native.Variants;

// TEMPORARY compile stand-in (replaced by the grid-ops branch).
internal sealed partial class Graph
{
    public Node GridResize(Node x, int inH, int inW, int outH, int outW) => throw new NotImplementedException();
}

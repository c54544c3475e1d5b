using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// What a causal variant's paged cache holds and how its new tokens are scored against it (design.md: variants expose
/// their cache form; the pool, pages and block tables live in the Inference layer). Each per-token component is paged as
/// <c>[P, page_size, …row]</c> in the layer's dtype; a variant with a constant-size state (transnormer) has a state row per
/// sequence slot instead.
/// </summary>
internal abstract class PagedForm
{
    /// <summary>The row shape of each per-token component (k and v; MLA's latent; TPA's four factors), none for a state.</summary>
    public abstract IReadOnlyList<Shape> Rows { get; }

    /// <summary>The per-sequence state's shape (without the slot axis) and dtype, or null when the cache is per token.</summary>
    public virtual (Shape Shape, DType DType)? State => null;

    /// <summary>
    /// The outputs of the new tokens <paramref name="x"/> <c>[1, N, d_model]</c>, packed by the graph's
    /// <see cref="Graph.Sequences"/> (whose start positions are each sequence's cached length): writes their rows into
    /// <paramref name="pages"/> at the positions <paramref name="table"/> gives (its lengths count them), then attends over
    /// everything cached. With a state, <paramref name="states"/> rows <paramref name="slots"/> are read and updated in place.
    /// </summary>
    public abstract Tensor Step(Graph graph, Node x, PageTable? table, IReadOnlyList<Tensor> pages, Tensor? states, int[] slots);

    /// <summary>Writes <paramref name="values"/> (the new tokens' rows of one component) into its pages.</summary>
    private protected static void Write(Graph graph, Node values, Tensor pages, PageTable? table) =>
        PagedAttention.Write(values.Value, pages, graph.Sequences!, table!);
}

/// <summary>The paged form of the variants whose keys and values are plain heads (mha/gqa/mqa, mfa): k after RoPE and v, [G, d] each.</summary>
internal sealed class KvHeadsPagedForm(int kvHeads, int headDim, double scale,
    Func<Graph, Node, int, (Node Q, Node K, Node V)> project, Func<Graph, Node, Node> output) : PagedForm
{
    public override IReadOnlyList<Shape> Rows { get; } = [new Shape(kvHeads, headDim), new Shape(kvHeads, headDim)];

    public override Tensor Step(Graph graph, Node x, PageTable? table, IReadOnlyList<Tensor> pages, Tensor? states, int[] slots)
    {
        var (q, k, v) = project(graph, x, 0);
        Write(graph, graph.Reshape(k, new Shape(1, k.Shape[1], kvHeads, headDim)), pages[0], table);
        Write(graph, graph.Reshape(v, new Shape(1, v.Shape[1], kvHeads, headDim)), pages[1], table);
        var o = graph.Own(PagedAttention.Forward(q.Value, pages[0], pages[1], graph.Sequences!, table!, scale));
        return output(graph, graph.Input(o, requiresGrad: false)).Value;
    }
}

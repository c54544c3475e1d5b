using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// The cache of the variants whose keys and values are plain heads (mha/gqa/mqa, and mfa's one wide head): rotated k and
/// v, [B, capacity, G, d] each. A step projects the new tokens with the layer's own projection, appends their k and v, and
/// attends over the whole cache (the decode kernels score all heads of a KV group as the cache streams past).
/// </summary>
internal sealed class KvHeadsCache : KvCache
{
    private readonly Func<Graph, Node, int, (Node Q, Node K, Node V)> _project;
    private readonly Func<Graph, Node, Node> _output;
    private readonly double _scale;
    private readonly CacheBuffer _k;
    private readonly CacheBuffer _v;

    /// <param name="layer">The layer.</param>
    /// <param name="batch">Sequences in the batch.</param>
    /// <param name="options">Capacity and growth.</param>
    /// <param name="kvHeads">G, the cached heads.</param>
    /// <param name="headDim">d.</param>
    /// <param name="scale">The layer's softmax scale.</param>
    /// <param name="project">q [B,T,H,d], k and v [B,T,G,d] of new tokens at a position.</param>
    /// <param name="output">The attention output [B,T,H,d] to y.</param>
    public KvHeadsCache(CausalAttentionLayer layer, int batch, CacheOptions options, int kvHeads, int headDim, double scale,
        Func<Graph, Node, int, (Node Q, Node K, Node V)> project, Func<Graph, Node, Node> output)
        : base(layer, batch, options)
    {
        _project = project;
        _output = output;
        _scale = scale;
        _k = Buffer(new Shape(kvHeads, headDim));
        _v = Buffer(new Shape(kvHeads, headDim));
    }

    private protected override Tensor Append(Graph graph, Tensor x, int position)
    {
        var (q, k, v) = _project(graph, graph.Input(x, requiresGrad: false), position);
        _k.Write(k.Value, position);
        _v.Write(v.Value, position);
        var options = new AttentionOptions(_scale, Causal: true, KeyLength: position + x.Shape[1]);
        var o = graph.Attention(q, graph.Input(_k.Tensor, false), graph.Input(_v.Tensor, false), options);
        return _output(graph, o).Value;
    }
}

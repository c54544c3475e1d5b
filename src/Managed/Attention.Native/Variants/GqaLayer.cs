using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>mha</c>, <c>gqa</c> and <c>mqa</c> (variants.md §1): grouped-query softmax attention, query head i reading KV head
/// i / (H/G). Cache: k after RoPE and v, <c>2·G·d</c> elements per token.
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call.</remarks>
public sealed class GqaLayer : CausalAttentionLayer
{
    /// <summary>Creates the layer with zero parameters (fill them with <see cref="AttentionLayer.InitializeParameters"/> or <see cref="AttentionLayer.LoadParameters(IReadOnlyDictionary{string, Tensor})"/>).</summary>
    public GqaLayer(GqaConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
    }

    /// <summary>The config.</summary>
    public GqaConfig Settings { get; }

    /// <inheritdoc/>
    public override bool IsCausal => Settings.Causal;

    /// <inheritdoc/>
    public override long CacheElementsPerToken => 2L * Settings.KvHeads * Settings.HeadDim;

    private RopeOptions RopeOptions => new(Settings.RopeStyle, Settings.RopeBase, Scaling: Settings.RopeScaling);

    // YaRN multiplies the softmax scale by μ(s, m_a)² (variants.md "RoPE scaling").
    private double Scale => 1 / Math.Sqrt(Settings.HeadDim) * LayerConfig.SoftmaxScaleFactor(Settings.RopeScaling);

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (GqaConfig)config;
        int hd = c.Heads * c.HeadDim, gd = c.KvHeads * c.HeadDim;
        return
        [
            new("w_q", new Shape(hd, c.DModel)), new("w_k", new Shape(gd, c.DModel)), new("w_v", new Shape(gd, c.DModel)),
            new("w_o", new Shape(c.DModel, hd)),
        ];
    }

    internal override Node Build(Graph graph, Node x)
    {
        var (q, k, v) = Project(graph, x, position: 0);
        var o = graph.Attention(q, k, v, new AttentionOptions(Scale, Settings.Causal));
        return Output(graph, o);
    }

    private protected override KvCache NewCache(int batch, CacheOptions options) => new Cache(this, batch, options);

    // q [B,T,H,d], k and v [B,T,G,d], rotated for positions position…
    private (Node Q, Node K, Node V) Project(Graph graph, Node x, int position)
    {
        var c = Settings;
        int b = x.Shape[0], t = x.Shape[1];
        var q = graph.Reshape(graph.Linear(x, Param(graph, "w_q")), new Shape(b, t, c.Heads, c.HeadDim));
        var k = graph.Reshape(graph.Linear(x, Param(graph, "w_k")), new Shape(b, t, c.KvHeads, c.HeadDim));
        var v = graph.Reshape(graph.Linear(x, Param(graph, "w_v")), new Shape(b, t, c.KvHeads, c.HeadDim));
        if (c.Rope)
        {
            q = graph.Rope(q, RopeOptions, position);
            k = graph.Rope(k, RopeOptions, position);
        }
        return (q, k, v);
    }

    private Node Output(Graph graph, Node o)
    {
        int b = o.Shape[0], t = o.Shape[1];
        return graph.Linear(graph.Reshape(o, new Shape(b, t, o.Shape[2] * o.Shape[3])), Param(graph, "w_o"));
    }

    /// <summary>The cache of mha/gqa/mqa: rotated k and v, [B, capacity, G, d] each.</summary>
    private sealed class Cache : KvCache
    {
        private readonly GqaLayer _layer;
        private readonly CacheBuffer _k;
        private readonly CacheBuffer _v;

        public Cache(GqaLayer layer, int batch, CacheOptions options)
            : base(layer, batch, options)
        {
            _layer = layer;
            _k = Buffer(new Shape(layer.Settings.KvHeads, layer.Settings.HeadDim));
            _v = Buffer(new Shape(layer.Settings.KvHeads, layer.Settings.HeadDim));
        }

        private protected override Tensor Append(Graph graph, Tensor x, int position)
        {
            var (q, k, v) = _layer.Project(graph, graph.Input(x, requiresGrad: false), position);
            _k.Write(k.Value, position);
            _v.Write(v.Value, position);
            var options = new AttentionOptions(_layer.Scale, Causal: true, KeyLength: position + x.Shape[1]);
            var o = graph.Attention(q, graph.Input(_k.Tensor, false), graph.Input(_v.Tensor, false), options);
            return _layer.Output(graph, o).Value;
        }
    }
}

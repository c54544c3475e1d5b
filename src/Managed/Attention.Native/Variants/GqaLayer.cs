using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>mha</c>, <c>gqa</c> and <c>mqa</c> (variants.md §1): grouped-query softmax attention, query head i reading KV head
/// i / (H/G). Cache: k after RoPE and v, <c>2·G·d</c> elements per token.
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
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
        return MergeHeads(graph, o);
    }

    private protected override KvCache NewCache(int batch, CacheOptions options) =>
        new KvHeadsCache(this, batch, options, Settings.KvHeads, Settings.HeadDim, Scale, Project, (graph, o) => MergeHeads(graph, o));

    internal override PagedForm CreatePagedForm() =>
        new KvHeadsPagedForm(Settings.KvHeads, Settings.HeadDim, Scale, Project, (graph, o) => MergeHeads(graph, o));

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
}

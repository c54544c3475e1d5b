using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>mfa</c> (variants.md §8), StepFun Step-3's multi-matrix factorization attention: many wide query heads up-projected
/// from a normalised low-rank query, all reading one shared key/value head. Cache: k after RoPE and v, <c>2·d</c> elements
/// per token (an MQA cache of one wide head), decoded like <see cref="GqaLayer"/>'s.
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
public sealed class MfaLayer : CausalAttentionLayer
{
    /// <summary>Creates the layer with zero parameters (the norm gain is set by <see cref="AttentionLayer.InitializeParameters"/>).</summary>
    public MfaLayer(MfaConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
    }

    /// <summary>The config.</summary>
    public MfaConfig Settings { get; }

    /// <inheritdoc/>
    public override bool IsCausal => Settings.Causal;

    /// <inheritdoc/>
    public override long CacheElementsPerToken => 2L * Settings.HeadDim;

    private RopeOptions RopeOptions => new(Settings.RopeStyle, Settings.RopeBase, Scaling: Settings.RopeScaling);

    // YaRN multiplies the softmax scale by μ(s, m_a)² (variants.md "RoPE scaling").
    private double Scale => 1 / Math.Sqrt(Settings.HeadDim) * LayerConfig.SoftmaxScaleFactor(Settings.RopeScaling);

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (MfaConfig)config;
        int hd = c.Heads * c.HeadDim;
        return
        [
            new("w_q_a", new Shape(c.QLoraDim, c.DModel)), new("q_norm", new Shape(c.QLoraDim), ParameterInit.Ones),
            new("w_q_b", new Shape(hd, c.QLoraDim)), new("w_k", new Shape(c.HeadDim, c.DModel)),
            new("w_v", new Shape(c.HeadDim, c.DModel)), new("w_o", new Shape(c.DModel, hd)),
        ];
    }

    internal override Node Build(Graph graph, Node x)
    {
        var (q, k, v) = Project(graph, x, position: 0);
        var o = graph.Attention(q, k, v, new AttentionOptions(Scale, Settings.Causal));
        return MergeHeads(graph, o);
    }

    // All H query heads form one group over the single cached head: the decode kernel scores them in one pass.
    private protected override KvCache NewCache(int batch, CacheOptions options) =>
        new KvHeadsCache(this, batch, options, 1, Settings.HeadDim, Scale, Project, (graph, o) => MergeHeads(graph, o));

    internal override PagedForm CreatePagedForm() => new KvHeadsPagedForm(1, Settings.HeadDim, Scale, Project, (graph, o) => MergeHeads(graph, o));

    // q [B,T,H,d], k and v [B,T,1,d], rotated for positions position…
    private (Node Q, Node K, Node V) Project(Graph graph, Node x, int position)
    {
        var c = Settings;
        int b = x.Shape[0], t = x.Shape[1];
        // Step-3 normalises the low-rank query with its rms_norm_eps (norm_eps), not the 1e-6 of the other variants.
        var qa = graph.RmsNorm(graph.Linear(x, Param(graph, "w_q_a")), Param(graph, "q_norm"), (float)c.NormEpsilon);
        var q = graph.Reshape(graph.Linear(qa, Param(graph, "w_q_b")), new Shape(b, t, c.Heads, c.HeadDim));
        var k = graph.Reshape(graph.Linear(x, Param(graph, "w_k")), new Shape(b, t, 1, c.HeadDim));
        var v = graph.Reshape(graph.Linear(x, Param(graph, "w_v")), new Shape(b, t, 1, c.HeadDim));
        if (c.Rope)
        {
            q = graph.Rope(q, RopeOptions, position);
            k = graph.Rope(k, RopeOptions, position);
        }
        return (q, k, v);
    }
}

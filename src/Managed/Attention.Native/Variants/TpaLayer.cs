using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>tpa</c> (variants.md §3), tensor product attention (T6): per token, q, k and v of every head are low-rank contractions
/// of a head factor <c>A [H, R]</c> and a feature factor <c>B [R, d]</c> (<see cref="TpaContraction"/>), RoPE acting on the
/// feature factors of q and k. The cache holds only the factors <c>A_k, RoPE(B_k), A_v, B_v</c>,
/// <c>(R_k + R_v)·(H + d)</c> elements per token, and decode scores straight from them (<see cref="TpaDecode"/>).
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
public sealed class TpaLayer : CausalAttentionLayer
{
    /// <summary>Creates the layer with zero parameters (fill them with <see cref="AttentionLayer.InitializeParameters"/> or <see cref="AttentionLayer.LoadParameters(IReadOnlyDictionary{string, Tensor})"/>).</summary>
    public TpaLayer(TpaConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
    }

    /// <summary>The config.</summary>
    public TpaConfig Settings { get; }

    /// <inheritdoc/>
    public override bool IsCausal => Settings.Causal;

    /// <inheritdoc/>
    public override long CacheElementsPerToken => ((long)Settings.KRank + Settings.VRank) * ((long)Settings.Heads + Settings.HeadDim);

    // YaRN multiplies the softmax scale by μ(s, m_a)² (variants.md "RoPE scaling").
    private double Scale => 1 / Math.Sqrt(Settings.HeadDim) * LayerConfig.SoftmaxScaleFactor(Settings.RopeScaling);

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (TpaConfig)config;
        ParameterSpec[] subln = c.Subln ? [new("subln", new Shape(c.HeadDim), ParameterInit.Ones)] : [];
        return
        [
            new("w_a_q", new Shape(c.Heads * c.QRank, c.DModel)), new("w_a_k", new Shape(c.Heads * c.KRank, c.DModel)),
            new("w_a_v", new Shape(c.Heads * c.VRank, c.DModel)),
            new("w_b_q", new Shape(c.QRank * c.HeadDim, c.DModel)), new("w_b_k", new Shape(c.KRank * c.HeadDim, c.DModel)),
            new("w_b_v", new Shape(c.VRank * c.HeadDim, c.DModel)),
            new("w_o", new Shape(c.DModel, c.Heads * c.HeadDim)),
            .. subln,
        ];
    }

    internal override Node Build(Graph graph, Node x)
    {
        var c = Settings;
        var (aq, bq) = Factors(graph, x, "q", c.QRank, c.Rope, position: 0);
        var (ak, bk) = Factors(graph, x, "k", c.KRank, c.Rope, position: 0);
        var (av, bv) = Factors(graph, x, "v", c.VRank, rotate: false, position: 0);
        var q = graph.TpaContraction(aq, bq);
        var k = graph.TpaContraction(ak, bk);
        var v = graph.TpaContraction(av, bv);
        var o = graph.Attention(q, k, v, new AttentionOptions(Scale, c.Causal));
        return Output(graph, o);
    }

    private protected override KvCache NewCache(int batch, CacheOptions options) => new Cache(this, batch, options);

    // The head factor A [B,T,H,R] and the feature factor B [B,T,R,d] of one stream, B rotated for positions position…
    // (RoPE treats the R rank rows as heads: each is a d-vector of the token at its position).
    private (Node A, Node B) Factors(Graph graph, Node x, string stream, int rank, bool rotate, int position)
    {
        var c = Settings;
        int b = x.Shape[0], t = x.Shape[1];
        var a = graph.Reshape(graph.Linear(x, Param(graph, $"w_a_{stream}")), new Shape(b, t, c.Heads, rank));
        var f = graph.Reshape(graph.Linear(x, Param(graph, $"w_b_{stream}")), new Shape(b, t, rank, c.HeadDim));
        if (rotate)
        {
            f = graph.Rope(f, new RopeOptions(c.RopeStyle, c.RopeBase, Scaling: c.RopeScaling), position);
        }
        return (a, f);
    }

    // TpaDecode's score has the fixed 1/(R_q·R_k·sqrt(d)); YaRN's μ(s, m_a)² goes onto the query head factor instead.
    private Node DecodeQueryHeads(Graph graph, Node aq)
    {
        double scaleFactor = LayerConfig.SoftmaxScaleFactor(Settings.RopeScaling);
        if (scaleFactor != 1)
        {
            aq = graph.Scale(aq, scaleFactor);
        }
        return aq;
    }

    private Node Output(Graph graph, Node o)
    {
        if (Settings.Subln)
        {
            // T6's subln: each head's output vector normalised over head_dim, one gain for all heads.
            o = graph.RmsNorm(o, Param(graph, "subln"), TpaConfig.SublnEpsilon);
        }
        return MergeHeads(graph, o);
    }

    internal override PagedForm CreatePagedForm() => new Paged(this);

    /// <summary>The paged TPA cache: the four factors A_k, RoPE(B_k), A_v, B_v per token, scored from the factors.</summary>
    private sealed class Paged(TpaLayer layer) : PagedForm
    {
        public override IReadOnlyList<Shape> Rows { get; } =
        [
            new Shape(layer.Settings.Heads, layer.Settings.KRank), new Shape(layer.Settings.KRank, layer.Settings.HeadDim),
            new Shape(layer.Settings.Heads, layer.Settings.VRank), new Shape(layer.Settings.VRank, layer.Settings.HeadDim),
        ];

        public override Tensor Step(Graph graph, Node x, PageTable? table, IReadOnlyList<Tensor> pages, Tensor? states, int[] slots)
        {
            var c = layer.Settings;
            var (aq, bq) = layer.Factors(graph, x, "q", c.QRank, c.Rope, 0);
            aq = layer.DecodeQueryHeads(graph, aq);
            var (ak, bk) = layer.Factors(graph, x, "k", c.KRank, c.Rope, 0);
            var (av, bv) = layer.Factors(graph, x, "v", c.VRank, rotate: false, 0);
            Write(graph, ak, pages[0], table);
            Write(graph, bk, pages[1], table);
            Write(graph, av, pages[2], table);
            Write(graph, bv, pages[3], table);
            var o = graph.Own(PagedAttention.Tpa(aq.Value, bq.Value, pages[0], pages[1], pages[2], pages[3], graph.Sequences!, table!));
            return layer.Output(graph, graph.Input(o, requiresGrad: false)).Value;
        }
    }

    /// <summary>The TPA cache: the factors A_k [H, R_k], RoPE(B_k) [R_k, d], A_v [H, R_v] and B_v [R_v, d] per token, never k or v.</summary>
    private sealed class Cache : KvCache
    {
        private readonly TpaLayer _layer;
        private readonly CacheBuffer _keyHeads;
        private readonly CacheBuffer _keyFeatures;
        private readonly CacheBuffer _valueHeads;
        private readonly CacheBuffer _valueFeatures;

        public Cache(TpaLayer layer, int batch, CacheOptions options)
            : base(layer, batch, options)
        {
            _layer = layer;
            var c = layer.Settings;
            _keyHeads = Buffer(new Shape(c.Heads, c.KRank));
            _keyFeatures = Buffer(new Shape(c.KRank, c.HeadDim));
            _valueHeads = Buffer(new Shape(c.Heads, c.VRank));
            _valueFeatures = Buffer(new Shape(c.VRank, c.HeadDim));
        }

        private protected override Tensor Append(Graph graph, Tensor x, int position)
        {
            var c = _layer.Settings;
            var input = graph.Input(x, requiresGrad: false);
            var (aq, bq) = _layer.Factors(graph, input, "q", c.QRank, c.Rope, position);
            aq = _layer.DecodeQueryHeads(graph, aq);
            var (ak, bk) = _layer.Factors(graph, input, "k", c.KRank, c.Rope, position);
            var (av, bv) = _layer.Factors(graph, input, "v", c.VRank, rotate: false, position);
            _keyHeads.Write(ak.Value, position);
            _keyFeatures.Write(bk.Value, position);
            _valueHeads.Write(av.Value, position);
            _valueFeatures.Write(bv.Value, position);
            var o = graph.Own(TpaDecode.Forward(aq.Value, bq.Value, _keyHeads.Tensor, _keyFeatures.Tensor, _valueHeads.Tensor, _valueFeatures.Tensor,
                position + x.Shape[1]));
            return _layer.Output(graph, graph.Input(o, requiresGrad: false)).Value;
        }
    }
}

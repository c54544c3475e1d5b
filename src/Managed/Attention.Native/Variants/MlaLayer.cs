using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>mla</c> (variants.md §2), DeepSeek's multi-head latent attention: keys and values are up-projected from a normalised
/// latent <c>c</c> of width d_c, plus one rotated key part <c>k_pe</c> shared by every head. The cache holds only
/// <c>[c | k_pe]</c>, <c>d_c + d_r</c> elements per token, and decode runs in the absorbed form (<see cref="LatentAttention"/>).
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
public sealed class MlaLayer : CausalAttentionLayer
{
    /// <summary>Creates the layer with zero parameters (norm gains are set by <see cref="AttentionLayer.InitializeParameters"/>).</summary>
    public MlaLayer(MlaConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
    }

    /// <summary>The config.</summary>
    public MlaConfig Settings { get; }

    /// <inheritdoc/>
    public override bool IsCausal => Settings.Causal;

    /// <inheritdoc/>
    public override long CacheElementsPerToken => Settings.KvLoraRank + Settings.QkRopeHeadDim;

    // 1/sqrt(d_n + d_r), times μ(s, m_a)² under YaRN (variants.md "RoPE scaling"); the absorbed decode uses it too.
    private double Scale => 1 / Math.Sqrt(Settings.QkNopeHeadDim + Settings.QkRopeHeadDim) * LayerConfig.SoftmaxScaleFactor(Settings.RopeScaling);

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (MlaConfig)config;
        int qk = c.QkNopeHeadDim + c.QkRopeHeadDim;
        var specs = new List<ParameterSpec>();
        if (c.QLoraRank > 0)
        {
            specs.Add(new("w_q_a", new Shape(c.QLoraRank, c.DModel)));
            specs.Add(new("q_norm", new Shape(c.QLoraRank), ParameterInit.Ones));
            specs.Add(new("w_q_b", new Shape(c.Heads * qk, c.QLoraRank)));
        }
        else
        {
            specs.Add(new("w_q", new Shape(c.Heads * qk, c.DModel)));
        }
        specs.Add(new("w_kv_a", new Shape(c.KvLoraRank + c.QkRopeHeadDim, c.DModel)));
        specs.Add(new("kv_norm", new Shape(c.KvLoraRank), ParameterInit.Ones));
        specs.Add(new("w_kv_b", new Shape(c.Heads * (c.QkNopeHeadDim + c.VHeadDim), c.KvLoraRank)));
        specs.Add(new("w_o", new Shape(c.DModel, c.Heads * c.VHeadDim)));
        return specs;
    }

    internal override Node Build(Graph graph, Node x)
    {
        var c = Settings;
        int b = x.Shape[0], t = x.Shape[1];
        var q = Query(graph, x, 0);
        var (latent, kpe) = Latent(graph, x, 0);
        var kvb = graph.Reshape(graph.Linear(latent, Param(graph, "w_kv_b")), new Shape(b, t, c.Heads, c.QkNopeHeadDim + c.VHeadDim));
        var kNope = graph.Slice(kvb, 0, c.QkNopeHeadDim);
        var v = graph.Slice(kvb, c.QkNopeHeadDim, c.VHeadDim);
        // k_i = [k_nope_i | k_pe]: the one rotated k_pe row of each token feeds all H heads.
        var k = graph.Concat(new Shape(b, t, c.Heads, c.QkNopeHeadDim + c.QkRopeHeadDim), kNope, kpe);
        var o = graph.Attention(q, k, v, new AttentionOptions(Scale, c.Causal));
        return MergeHeads(graph, o);
    }

    private protected override KvCache NewCache(int batch, CacheOptions options) => new Cache(this, batch, options);

    // q [B,T,H,d_n+d_r] with the q_pe columns rotated for positions position…
    private Node Query(Graph graph, Node x, int position)
    {
        var c = Settings;
        int b = x.Shape[0], t = x.Shape[1], qk = c.QkNopeHeadDim + c.QkRopeHeadDim;
        Node q = c.QLoraRank > 0
            ? graph.Linear(graph.RmsNorm(graph.Linear(x, Param(graph, "w_q_a")), Param(graph, "q_norm")), Param(graph, "w_q_b"))
            : graph.Linear(x, Param(graph, "w_q"));
        q = graph.Reshape(q, new Shape(b, t, c.Heads, qk));
        return graph.Rope(q, new RopeOptions(c.RopeStyle, c.RopeBase, RotaryOffset: c.QkNopeHeadDim, Scaling: c.RopeScaling), position);
    }

    // The normalised latent c [B,T,d_c] and the rotated shared key part k_pe [B,T,d_r].
    private (Node Latent, Node KPe) Latent(Graph graph, Node x, int position)
    {
        var c = Settings;
        var kva = graph.Linear(x, Param(graph, "w_kv_a"));
        var latent = graph.RmsNorm(graph.Slice(kva, 0, c.KvLoraRank), Param(graph, "kv_norm"));
        var kpe = graph.Rope(graph.Slice(kva, c.KvLoraRank, c.QkRopeHeadDim), new RopeOptions(c.RopeStyle, c.RopeBase, Scaling: c.RopeScaling), position);
        return (latent, kpe);
    }

    internal override PagedForm CreatePagedForm() => new Paged(this);

    /// <summary>The paged MLA cache: <c>[c | k_pe]</c> per token, scored in the absorbed form.</summary>
    private sealed class Paged(MlaLayer layer) : PagedForm
    {
        public override IReadOnlyList<Shape> Rows { get; } = [new Shape(layer.Settings.KvLoraRank + layer.Settings.QkRopeHeadDim)];

        public override Tensor Step(Graph graph, Node x, PageTable? table, IReadOnlyList<Tensor> pages, Tensor? states, int[] slots)
        {
            var c = layer.Settings;
            var q = layer.Query(graph, x, 0);
            var (latent, kpe) = layer.Latent(graph, x, 0);
            Write(graph, graph.Concat(new Shape(1, x.Shape[1], c.KvLoraRank + c.QkRopeHeadDim), latent, kpe), pages[0], table);
            var o = graph.Own(PagedAttention.Latent(q.Value, pages[0], layer.Parameters["w_kv_b"], c.QkNopeHeadDim, graph.Sequences!, table!, layer.Scale));
            return layer.MergeHeads(graph, graph.Input(o, requiresGrad: false)).Value;
        }
    }

    /// <summary>The MLA cache: <c>[c | k_pe]</c> per token, [B, capacity, d_c + d_r].</summary>
    private sealed class Cache : KvCache
    {
        private readonly MlaLayer _layer;
        private readonly CacheBuffer _latent;

        public Cache(MlaLayer layer, int batch, CacheOptions options)
            : base(layer, batch, options)
        {
            _layer = layer;
            _latent = Buffer(new Shape(layer.Settings.KvLoraRank + layer.Settings.QkRopeHeadDim));
        }

        private protected override Tensor Append(Graph graph, Tensor x, int position)
        {
            var c = _layer.Settings;
            var input = graph.Input(x, requiresGrad: false);
            var q = _layer.Query(graph, input, position);
            var (latent, kpe) = _layer.Latent(graph, input, position);
            var entry = graph.Concat(new Shape(x.Shape[0], x.Shape[1], c.KvLoraRank + c.QkRopeHeadDim), latent, kpe);
            _latent.Write(entry.Value, position);
            var o = graph.Own(LatentAttention.Decode(q.Value, _latent.Tensor, _layer.Parameters["w_kv_b"], c.QkNopeHeadDim, position + x.Shape[1], _layer.Scale));
            return _layer.MergeHeads(graph, graph.Input(o, requiresGrad: false)).Value;
        }
    }
}

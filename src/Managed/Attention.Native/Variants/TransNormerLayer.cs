using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>transnormer</c> (variants.md §7): TransNormerLLM's gated linear attention on the Lightning Attention-2 core.
/// <c>q = SiLU(x w_qᵀ)</c>, <c>k = SiLU(x w_kᵀ)</c>, <c>v = x w_vᵀ</c>, <c>u = x w_uᵀ</c>; optional LRPE on q and k;
/// <c>o_t = Σ_{s≤t} λ_h^(t−s) (q_t·k_s) v_s</c>; <c>y = (u ⊙ SRMSNorm(o)) w_oᵀ</c>. The decay λ_h comes from the ALiBi slopes
/// and the layer's depth and is not learnable. Inference keeps one constant-size state per head, <c>kv ∈ R^{d'×d}</c>.
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
public sealed class TransNormerLayer : CausalAttentionLayer
{
    private readonly double[] _decay;

    /// <summary>Creates the layer with zero parameters.</summary>
    public TransNormerLayer(TransNormerConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
        _decay = Decay(config);
    }

    /// <summary>The config.</summary>
    public TransNormerConfig Settings { get; }

    /// <summary>The per-head decay λ_h (non-learnable).</summary>
    public IReadOnlyList<double> DecayRates => _decay;

    /// <inheritdoc/>
    public override long CacheElementsPerToken => 0;

    /// <summary>Elements of the decode state per sequence, H·d'·d (d' = 2d with LRPE), of dtype <see cref="Lightning.StateDType"/> (F32 in a 16-bit layer).</summary>
    public long StateElements => Settings.StateElements;

    /// <summary>
    /// ALiBi slopes: for H a power of two <c>m_h = 2^(−8(h+1)/H)</c>; otherwise the slopes of the largest power of two
    /// P ≤ H followed by the even-indexed slopes of 2P, the first H − P of them.
    /// </summary>
    public static double[] AlibiSlopes(int heads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(heads, 1);
        static double[] PowerOfTwo(int n) => Enumerable.Range(0, n).Select(h => Math.Pow(2, -8.0 * (h + 1) / n)).ToArray();
        if ((heads & (heads - 1)) == 0)
        {
            return PowerOfTwo(heads);
        }
        int p = 1 << (int)Math.Floor(Math.Log2(heads));
        var extra = PowerOfTwo(2 * p).Where((_, i) => i % 2 == 0).Take(heads - p);
        return [.. PowerOfTwo(p), .. extra];
    }

    /// <summary><c>λ_h = exp(−m_h · (1 − l/(L−1) + 1e-5))</c>, the factor being 1 when L = 1.</summary>
    public static double[] Decay(TransNormerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        double depth = config.NumLayers == 1 ? 1.0 : 1 - ((double)config.LayerIndex / (config.NumLayers - 1)) + 1e-5;
        return AlibiSlopes(config.Heads).Select(m => Math.Exp(-m * depth)).ToArray();
    }

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (TransNormerConfig)config;
        int hd = c.Heads * c.HeadDim;
        var specs = new List<ParameterSpec>
        {
            new("w_q", new Shape(hd, c.DModel)), new("w_k", new Shape(hd, c.DModel)), new("w_v", new Shape(hd, c.DModel)),
            new("w_u", new Shape(hd, c.DModel)), new("w_o", new Shape(c.DModel, hd)),
        };
        if (c.Lrpe)
        {
            specs.Add(new("lrpe_theta", new Shape(c.Heads, c.HeadDim)));
        }
        return specs;
    }

    internal override Node Build(Graph graph, Node x)
    {
        var (q, k, v, u) = Project(graph, x, 0);
        return Output(graph, graph.Lightning(q, k, v, _decay), u);
    }

    private protected override KvCache NewCache(int batch, CacheOptions options) => new Cache(this, batch, options);

    // q, k [B,T,H,d'] (LRPE at positions position…), v [B,T,H,d], and the gate u [B,T,H·d].
    private (Node Q, Node K, Node V, Node U) Project(Graph graph, Node x, int position)
    {
        var c = Settings;
        var heads = new Shape(x.Shape[0], x.Shape[1], c.Heads, c.HeadDim);
        var q = graph.Reshape(graph.Silu(graph.Linear(x, Param(graph, "w_q"))), heads);
        var k = graph.Reshape(graph.Silu(graph.Linear(x, Param(graph, "w_k"))), heads);
        var v = graph.Reshape(graph.Linear(x, Param(graph, "w_v")), heads);
        var u = graph.Linear(x, Param(graph, "w_u"));
        if (c.Lrpe)
        {
            var theta = Param(graph, "lrpe_theta");
            q = graph.Lrpe(q, theta, position);
            k = graph.Lrpe(k, theta, position);
        }
        return (q, k, v, u);
    }

    // y = (u ⊙ SRMSNorm(o over all H·d)) w_oᵀ.
    private Node Output(Graph graph, Node o, Node u)
    {
        var merged = graph.Reshape(o, new Shape(o.Shape[0], o.Shape[1], o.Shape[2] * o.Shape[3]));
        return graph.Linear(graph.Multiply(u, graph.RmsNorm(merged, null)), Param(graph, "w_o"));
    }

    internal override PagedForm CreatePagedForm() => new Paged(this);

    /// <summary>The serving form: no pages, a state kv [H, d', d] per sequence slot (F32 in a 16-bit layer), updated in place.</summary>
    private sealed class Paged(TransNormerLayer layer) : PagedForm
    {
        public override IReadOnlyList<Shape> Rows { get; } = [];

        public override (Shape Shape, DType DType)? State =>
            (new Shape(layer.Settings.Heads, layer.Settings.StateKeyDim, layer.Settings.HeadDim), Lightning.StateDType(layer.DType));

        public override Tensor Step(Graph graph, Node x, PageTable? table, IReadOnlyList<Tensor> pages, Tensor? states, int[] slots)
        {
            var (q, k, v, u) = layer.Project(graph, x, 0);
            var o = graph.Own(Lightning.ForwardRagged(q.Value, k.Value, v.Value, layer._decay, graph.Sequences!, states, states, slots));
            return layer.Output(graph, graph.Input(o, requiresGrad: false), u).Value;
        }
    }

    /// <summary>
    /// The transnormer cache: the state <c>kv</c> [B, H, d', d], constant in the number of tokens, of dtype
    /// <see cref="Lightning.StateDType"/>: F32 in a 16-bit layer, as TransNormerLLM keeps it (a bf16 state, rounded at
    /// every step, drifts from the full forward over a long decode).
    /// </summary>
    private sealed class Cache : KvCache
    {
        private readonly TransNormerLayer _layer;
        private readonly Tensor _state;

        public Cache(TransNormerLayer layer, int batch, CacheOptions options)
            : base(layer, batch, options)
        {
            _layer = layer;
            var c = layer.Settings;
            _state = State(new Shape(batch, c.Heads, c.StateKeyDim, c.HeadDim), Lightning.StateDType(layer.DType));
        }

        public override long ByteCount => base.ByteCount + _state.ByteCount;

        private protected override void ResetState() => _state.CopyFrom(new float[_state.ElementCount]);

        protected override void Dispose(bool disposing)
        {
            _state.Dispose();
            base.Dispose(disposing);
        }

        private protected override Tensor Append(Graph graph, Tensor x, int position)
        {
            var (q, k, v, u) = _layer.Project(graph, graph.Input(x, requiresGrad: false), position);
            // kv ← λ kv + k_tᵀ v_t and o_t = q_t kv, chunked over the new tokens, the state updated in place.
            var o = graph.Own(Lightning.Forward(q.Value, k.Value, v.Value, _layer._decay, _state, _state));
            return _layer.Output(graph, graph.Input(o, requiresGrad: false), u).Value;
        }
    }
}

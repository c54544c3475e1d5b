using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>sas</c> (variants.md §4), simulated attention score: the H heads of q, k and v are expanded to H' simulated heads by
/// two convolutions across heads (<see cref="HeadConv"/>), and q and k to width D' by a residual MLP; softmax attention runs
/// over the H' heads, and parameter-efficient attention aggregation (PEAA) averages the r = H'/H groups of H heads back to
/// H·D columns before the output projection. Cache: the expanded, rotated k̃ and ṽ, <c>H'·(D' + D)</c> elements per token.
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
public sealed class SasLayer : CausalAttentionLayer
{
    private static readonly string[] Streams = ["q", "k", "v"];

    /// <summary>Creates the layer with zero parameters (fill them with <see cref="AttentionLayer.InitializeParameters"/> or <see cref="AttentionLayer.LoadParameters(IReadOnlyDictionary{string, Tensor})"/>).</summary>
    public SasLayer(SasConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
    }

    /// <summary>The config.</summary>
    public SasConfig Settings { get; }

    /// <inheritdoc/>
    public override bool IsCausal => Settings.Causal;

    /// <inheritdoc/>
    public override long CacheElementsPerToken => (long)Settings.SimHeads * (Settings.SimHeadDim + Settings.HeadDim);

    private RopeOptions RopeOptions => new(Settings.RopeStyle, Settings.RopeBase, Scaling: Settings.RopeScaling);

    // YaRN multiplies the softmax scale by μ(s, m_a)² (variants.md "RoPE scaling").
    private double Scale => 1 / Math.Sqrt(Settings.SimHeadDim) * LayerConfig.SoftmaxScaleFactor(Settings.RopeScaling);

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (SasConfig)config;
        int hd = c.Heads * c.HeadDim;
        var specs = new List<ParameterSpec>
        {
            new("w_q", new Shape(hd, c.DModel)), new("w_k", new Shape(hd, c.DModel)), new("w_v", new Shape(hd, c.DModel)),
        };
        foreach (var s in Streams)
        {
            specs.Add(new($"sas_{s}_conv1_w", new Shape(c.SimHeads, c.Heads, c.KernelSize)));
            specs.Add(new($"sas_{s}_conv1_b", new Shape(c.SimHeads)));
            specs.Add(new($"sas_{s}_conv2_w", new Shape(c.SimHeads, c.SimHeads, c.KernelSize)));
            specs.Add(new($"sas_{s}_conv2_b", new Shape(c.SimHeads)));
        }
        foreach (var s in Streams[..2])
        {
            specs.Add(new($"sas_{s}_fc1_w", new Shape(c.SimHeadDim, c.HeadDim)));
            specs.Add(new($"sas_{s}_fc1_b", new Shape(c.SimHeadDim)));
            specs.Add(new($"sas_{s}_fc2_w", new Shape(c.SimHeadDim, c.SimHeadDim)));
            specs.Add(new($"sas_{s}_fc2_b", new Shape(c.SimHeadDim)));
        }
        specs.Add(new("w_o", new Shape(c.DModel, hd)));
        specs.Add(new("b_o", new Shape(c.DModel)));
        return specs;
    }

    internal override Node Build(Graph graph, Node x)
    {
        var (q, k, v) = Project(graph, x, position: 0);
        var o = graph.Attention(q, k, v, new AttentionOptions(Scale, Settings.Causal));
        return Output(graph, o);
    }

    private protected override KvCache NewCache(int batch, CacheOptions options) => new Cache(this, batch, options);

    // The simulated q̃, k̃ [B,T,H',D'] (rotated for positions position…) and ṽ [B,T,H',D].
    private (Node Q, Node K, Node V) Project(Graph graph, Node x, int position)
    {
        var q = Simulate(graph, x, "q", expandWidth: true);
        var k = Simulate(graph, x, "k", expandWidth: true);
        var v = Simulate(graph, x, "v", expandWidth: false);
        if (Settings.Rope)
        {
            q = graph.Rope(q, RopeOptions, position);
            k = graph.Rope(k, RopeOptions, position);
        }
        return (q, k, v);
    }

    // One stream: project, expand the heads H → H' by the two residual convolutions across heads, and (q, k) the width D → D'.
    private Node Simulate(Graph graph, Node x, string stream, bool expandWidth)
    {
        var c = Settings;
        int b = x.Shape[0], t = x.Shape[1];
        Node P(string name) => Param(graph, $"sas_{stream}_{name}");
        // Each token is one conv sample: channels are its heads, length is the per-head feature axis.
        var heads = graph.Reshape(graph.Linear(x, Param(graph, $"w_{stream}")), new Shape(b * t, c.Heads, c.HeadDim));
        var x1 = graph.HeadConv(heads, P("conv1_w"), P("conv1_b"));
        var s = graph.Add(x1, graph.HeadConv(graph.Relu(x1), P("conv2_w"), P("conv2_b")));
        if (expandWidth)
        {
            var y1 = graph.Linear(s, P("fc1_w"), P("fc1_b"));
            s = graph.Add(y1, graph.Linear(graph.Relu(y1), P("fc2_w"), P("fc2_b")));
        }
        return graph.Reshape(s, new Shape(b, t, c.SimHeads, s.Shape[-1]));
    }

    // PEAA then the output projection: o [B,T,H',D] → mean over the r groups of H heads → [B,T,H·D] → y.
    private Node Output(Graph graph, Node o)
    {
        var c = Settings;
        int b = o.Shape[0], t = o.Shape[1], groups = c.SimHeads / c.Heads, width = c.Heads * c.HeadDim;
        var flat = graph.Reshape(o, new Shape(b, t, c.SimHeads * c.HeadDim));
        var aggregated = flat;
        if (groups > 1)
        {
            // Group g owns the contiguous heads g·H … g·H+H−1, i.e. columns g·H·D … (g+1)·H·D−1.
            aggregated = graph.Slice(flat, 0, width);
            for (int g = 1; g < groups; g++)
            {
                aggregated = graph.Add(aggregated, graph.Slice(flat, g * width, width));
            }
            aggregated = graph.Scale(aggregated, 1.0 / groups);
        }
        return graph.Linear(aggregated, Param(graph, "w_o"), Param(graph, "b_o"));
    }

    internal override PagedForm CreatePagedForm() => new Paged(this);

    /// <summary>The paged SAS cache: the expanded, rotated k̃ [H', D'] and ṽ [H', D] per token.</summary>
    private sealed class Paged(SasLayer layer) : PagedForm
    {
        public override IReadOnlyList<Shape> Rows { get; } =
            [new Shape(layer.Settings.SimHeads, layer.Settings.SimHeadDim), new Shape(layer.Settings.SimHeads, layer.Settings.HeadDim)];

        public override Tensor Step(Graph graph, Node x, PageTable? table, IReadOnlyList<Tensor> pages, Tensor? states, int[] slots)
        {
            var (q, k, v) = layer.Project(graph, x, 0);
            Write(graph, k, pages[0], table);
            Write(graph, v, pages[1], table);
            var o = graph.Own(PagedAttention.Forward(q.Value, pages[0], pages[1], graph.Sequences!, table!, layer.Scale));
            return layer.Output(graph, graph.Input(o, requiresGrad: false)).Value;
        }
    }

    /// <summary>The SAS cache: the expanded, rotated k̃ [B, capacity, H', D'] and ṽ [B, capacity, H', D].</summary>
    private sealed class Cache : KvCache
    {
        private readonly SasLayer _layer;
        private readonly CacheBuffer _k;
        private readonly CacheBuffer _v;

        public Cache(SasLayer layer, int batch, CacheOptions options)
            : base(layer, batch, options)
        {
            _layer = layer;
            var c = layer.Settings;
            _k = Buffer(new Shape(c.SimHeads, c.SimHeadDim));
            _v = Buffer(new Shape(c.SimHeads, c.HeadDim));
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

using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>agent</c> in its 2-D forms (variants.md §5b, docs/vision-forms.md §1 and §3): Agent Attention's vision modules under their
/// official parameter names (layouts <c>agent-pvt</c>, <c>agent-swin</c>, <c>agent-deit</c>). The agents are the queries pooled
/// to a √n×√n grid; the score biases are assembled from the official factorised parameters (7×7 maps resized bilinearly to
/// the grid plus row and column biases, and DeiT's class-token biases); a k×k depthwise convolution of v is added before the
/// output projection. PVT's keys and values may come from a grid reduced by <c>sr_ratio</c>; Swin's module runs per window;
/// DeiT's puts a class token before the grid. On a grid other than the built one every position parameter is resized
/// bilinearly, as the official detection/segmentation module does (for <c>sr_ratio</c> &gt; 1, and for DeiT, that is our
/// extension: the official modules there run only on their built grid).
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
public sealed class AgentVisionLayer : AttentionLayer
{
    private readonly Tensor? _centering;

    // Inference reuses the assembled score biases of a grid while the bias parameters stay as they are (a parameter write
    // changes a version, and writes never overlap calls, so a stale entry is never in use when it is replaced).
    private readonly Dictionary<(int Kh, int Kw, int H, int W), (BiasState State, Tensor B1, Tensor B2)> _biases = [];
    private readonly Lock _biasesLock = new();
    private const int CachedGrids = 16;

    /// <summary>Creates the layer with zero parameters (fill them with <see cref="AttentionLayer.InitializeParameters"/> or <see cref="AttentionLayer.LoadParameters(IReadOnlyDictionary{string, Tensor})"/>).</summary>
    public AgentVisionLayer(AgentVisionConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
        if (config.SrRatio > 1)
        {
            _centering = VisionGraph.Centering(Backend, config.DModel, dtype);
        }
    }

    /// <summary>The config.</summary>
    public AgentVisionConfig Settings { get; }

    /// <inheritdoc/>
    public override bool AcceptsSequences => false;

    private bool Deit => Settings.Form == VisionForms.Deit;

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (AgentVisionConfig)config;
        int dm = c.DModel, h = c.Heads, n = c.Agents, r = c.SrRatio, g = AgentVisionConfig.BiasGrid;
        // The official module's order: its own biases, then its layers (q and kv, or qkv; proj; sr and norm; dwc).
        var specs = new List<ParameterSpec>
        {
            new("an_bias", new Shape(h, n, g, g), ParameterInit.Normal),
            new("na_bias", new Shape(h, n, g, g), ParameterInit.Normal),
            new("ah_bias", new Shape(1, h, n, c.GridHeight / r, 1), ParameterInit.Normal),
            new("aw_bias", new Shape(1, h, n, 1, c.GridWidth / r), ParameterInit.Normal),
            new("ha_bias", new Shape(1, h, c.GridHeight, 1, n), ParameterInit.Normal),
            new("wa_bias", new Shape(1, h, 1, c.GridWidth, n), ParameterInit.Normal),
        };
        if (c.Form == VisionForms.Deit)
        {
            specs.Add(new("ac_bias", new Shape(1, h, n, 1), ParameterInit.Normal));
            specs.Add(new("ca_bias", new Shape(1, h, 1, n), ParameterInit.Normal));
        }
        specs.AddRange(VisionGraph.Projections(c.Form, dm, r, c.QkvBias));
        specs.Add(new("dwc.weight", new Shape(dm, 1, c.DwcKernel, c.DwcKernel)));
        specs.Add(new("dwc.bias", new Shape(dm)));
        return specs;
    }

    internal override Node Build(Graph graph, Node x)
    {
        var c = Settings;
        var (xt, height, width) = VisionGraph.Tokens(graph, x, c.Form, c.GridHeight, c.GridWidth);
        int b = xt.Shape[0], tokens = xt.Shape[1], dm = c.DModel, heads = c.Heads, r = c.SrRatio;
        int first = Deit ? 1 : 0, cells = height * width, kh = height / r, kw = width / r, keys = tokens - cells + (kh * kw);
        var (q, k, v) = VisionGraph.QueryKeyValue(this, graph, xt, c.Form, c.QkvBias, height, width, r, _centering);
        // The agents are pooled from the grid's projected queries (not DeiT's class token), so q's gradient collects both
        // the pooling's and P2's share.
        var gridQ = Deit ? VisionGraph.TokenRange(graph, q, first, cells) : q;
        int ph = c.PoolHeight, pw = c.PoolWidth;
        var agents = graph.Reshape(VisionGraph.Pool(graph, gridQ, height, width, ph, pw), new Shape(b, ph * pw, heads, c.HeadDim));
        var options = new AttentionOptions(1 / Math.Sqrt(c.HeadDim), Causal: false);
        var (keyBias, queryBias) = ScoreBiases(graph, kh, kw, height, width);
        var agentValues = graph.Attention(agents, graph.Reshape(k, new Shape(b, keys, heads, c.HeadDim)), graph.Reshape(v, new Shape(b, keys, heads, c.HeadDim)),
            options, keyBias);
        var o = graph.Reshape(graph.Attention(graph.Reshape(q, new Shape(b, tokens, heads, c.HeadDim)), agents, agentValues, options, queryBias),
            new Shape(b, tokens, dm));
        // v as an image on the key grid, bilinear to the query grid when reduced, through the k×k depthwise convolution;
        // DeiT's class token gets none.
        var gridV = Deit ? VisionGraph.TokenRange(graph, v, first, cells) : v;
        var vImage = r > 1 ? graph.GridResize(gridV, kh, kw, height, width) : gridV;
        var dwc = graph.Reshape(graph.DepthwiseConv(graph.Reshape(vImage, new Shape(b, height, width, dm)), Param(graph, "dwc.weight"), Param(graph, "dwc.bias")),
            new Shape(b, cells * dm));
        if (Deit)
        {
            var none = graph.Input(graph.Own(Backend.Zeros(new Shape(b, dm), DType)), requiresGrad: false);
            dwc = graph.Concat(new Shape(b, tokens * dm), none, dwc);
        }
        var mixed = graph.Add(o, graph.Reshape(dwc, new Shape(b, tokens, dm)));
        var y = graph.Linear(mixed, Param(graph, "proj.weight"), Param(graph, "proj.bias"));
        return VisionGraph.Untokens(graph, y, x, c.Form, c.GridHeight, c.GridWidth);
    }

    private protected override void CheckInput(Tensor x, string name) =>
        VisionGraph.CheckInput(this, x, name, Settings.Form, Settings.GridHeight, Settings.GridWidth, Settings.SrRatio);

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        _centering?.Dispose();
        lock (_biasesLock)
        {
            foreach (var (_, b1, b2) in _biases.Values)
            {
                b1.Dispose();
                b2.Dispose();
            }
            _biases.Clear();
        }
        base.Dispose(disposing);
    }

    /// <summary>
    /// b1 and b2 for a key grid kh×kw and a query grid H×W, on the graph's ops. With an agent grid other than √n×√n, each bias's
    /// agent axis (a √n×√n grid) is resized bilinearly to it after the spatial resize, as the downstream module does.
    /// </summary>
    private (Node KeyBias, Node QueryBias) BuildScoreBiases(Graph graph, int kh, int kw, int height, int width)
    {
        var c = Settings;
        var b1 = AgentToKeyBias(graph, kh, kw);
        var b2 = QueryToAgentBias(graph, height, width);
        int side = c.AgentSide, ph = c.PoolHeight, pw = c.PoolWidth;
        if ((ph, pw) == (side, side))
        {
            return (b1, b2);
        }
        var keysPerAgent = graph.GridResize(b1, side, side, ph, pw);
        var queriesPerAgent = graph.GridResize(graph.Permute(b2, [0, 2, 1]), side, side, ph, pw);
        return (keysPerAgent, graph.Permute(queriesPerAgent, [0, 2, 1]));
    }

    /// <summary>
    /// b1 and b2 for a key grid kh×kw and a query grid H×W: built on the graph (training: their gradients flow to the bias
    /// parameters), or in inference taken from the cache of this grid while the bias parameters are unchanged.
    /// </summary>
    private (Node KeyBias, Node QueryBias) ScoreBiases(Graph graph, int kh, int kw, int height, int width)
    {
        (Node, Node) Assemble() => BuildScoreBiases(graph, kh, kw, height, width);
        if (graph.Recording)
        {
            return Assemble();
        }
        var key = (kh, kw, height, width);
        var state = BiasParameters();
        lock (_biasesLock)
        {
            if (_biases.TryGetValue(key, out var cached) && cached.State.Matches(state))
            {
                return (graph.Input(cached.B1, requiresGrad: false), graph.Input(cached.B2, requiresGrad: false));
            }
        }
        var (b1, b2) = Assemble();
        lock (_biasesLock)
        {
            // Another call may have stored this grid meanwhile (and may be reading it): keep that one. An entry of other
            // parameter versions is in no call's use (writes never overlap calls), so it can go.
            if (_biases.TryGetValue(key, out var present))
            {
                if (present.State.Matches(state))
                {
                    return (b1, b2);
                }
                _biases.Remove(key);
                present.B1.Dispose();
                present.B2.Dispose();
            }
            if (_biases.Count < CachedGrids)
            {
                // The cache keeps its own copies; the graph frees its tensors as usual.
                _biases[key] = (state, Columns.Slice(b1.Value, 0, b1.Shape[-1]), Columns.Slice(b2.Value, 0, b2.Shape[-1]));
            }
        }
        return (b1, b2);
    }

    // The bias parameters as tensors and versions: a parameter bound anew is another tensor, one written has a new version.
    private BiasState BiasParameters()
    {
        string[] names = Deit ? ["an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias", "ac_bias", "ca_bias"] : ["an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias"];
        var tensors = names.Select(n => Parameters[n]).ToArray();
        return new BiasState(tensors, [.. tensors.Select(t => t.Version)]);
    }

    private sealed record BiasState(Tensor[] Tensors, long[] Versions)
    {
        public bool Matches(BiasState other) =>
            Tensors.Length == other.Tensors.Length && Tensors.Zip(other.Tensors).All(p => ReferenceEquals(p.First, p.Second)) && Versions.AsSpan().SequenceEqual(other.Versions);
    }

    /// <summary>
    /// b1 <c>[h, n, keys]</c> on the key grid kh×kw: <c>an_bias</c> bilinear from 7×7, plus the row bias <c>ah_bias</c> resized
    /// along rows and the column bias <c>aw_bias</c> along columns (the resize of a row bias as a G×1 grid to kh×kw is its
    /// linear resize along rows repeated over columns, which is the official bilinear resize of the row+column sum); DeiT's
    /// class key first, with <c>ac_bias</c>.
    /// </summary>
    private Node AgentToKeyBias(Graph graph, int kh, int kw)
    {
        var c = Settings;
        int hn = c.Heads * c.Agents, g = AgentVisionConfig.BiasGrid, gh = c.GridHeight / c.SrRatio, gw = c.GridWidth / c.SrRatio;
        var map = graph.GridResize(graph.Reshape(Param(graph, "an_bias"), new Shape(hn, g * g, 1)), g, g, kh, kw);
        var rows = graph.GridResize(graph.Reshape(Param(graph, "ah_bias"), new Shape(hn, gh, 1)), gh, 1, kh, kw);
        var columns = graph.GridResize(graph.Reshape(Param(graph, "aw_bias"), new Shape(hn, gw, 1)), 1, gw, kh, kw);
        var grid = graph.Reshape(graph.Add(graph.Add(map, rows), columns), new Shape(c.Heads, c.Agents, kh * kw));
        return Deit
            ? graph.Concat(new Shape(c.Heads, c.Agents, 1 + (kh * kw)), graph.Reshape(Param(graph, "ac_bias"), new Shape(c.Heads, c.Agents, 1)), grid)
            : grid;
    }

    /// <summary>
    /// b2 <c>[h, tokens, n]</c> on the query grid: <c>na_bias</c> (agents first, so transposed to put them on the channel axis)
    /// bilinear from 7×7, plus <c>ha_bias</c> along rows and <c>wa_bias</c> along columns; DeiT's class query first, with <c>ca_bias</c>.
    /// </summary>
    private Node QueryToAgentBias(Graph graph, int height, int width)
    {
        var c = Settings;
        int h = c.Heads, n = c.Agents, g = AgentVisionConfig.BiasGrid;
        var perAgent = graph.Permute(graph.Reshape(Param(graph, "na_bias"), new Shape(h, n, g * g)), [0, 2, 1]);
        var map = graph.GridResize(perAgent, g, g, height, width);
        var rows = graph.GridResize(graph.Reshape(Param(graph, "ha_bias"), new Shape(h, c.GridHeight, n)), c.GridHeight, 1, height, width);
        var columns = graph.GridResize(graph.Reshape(Param(graph, "wa_bias"), new Shape(h, c.GridWidth, n)), 1, c.GridWidth, height, width);
        var grid = graph.Add(graph.Add(map, rows), columns);
        if (!Deit)
        {
            return grid;
        }
        // The class query's row comes first: per head, [n] then [H·W·n] as one run of the last axis.
        int cells = height * width;
        var joined = graph.Concat(new Shape(h, (1 + cells) * n), graph.Reshape(Param(graph, "ca_bias"), new Shape(h, n)), graph.Reshape(grid, new Shape(h, cells * n)));
        return graph.Reshape(joined, new Shape(h, 1 + cells, n));
    }
}

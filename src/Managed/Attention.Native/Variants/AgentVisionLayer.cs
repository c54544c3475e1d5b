using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>agent</c> in its 2-D form (variants.md §5b, docs/vision-forms.md §1): Agent Attention's PVT module under its official
/// parameter names (layout <c>agent-pvt</c>). The agents are the queries pooled to a √n×√n grid; keys and values may come from
/// a grid reduced by <c>sr_ratio</c>; the score biases are assembled from the official factorised parameters (7×7 maps
/// resized bilinearly to the grid plus row and column biases), and a k×k depthwise convolution of v is added before the
/// output projection. On a grid other than the built one every position parameter is resized bilinearly, as the official
/// detection/segmentation module does (for <c>sr_ratio</c> &gt; 1 on another grid that rule is our extension).
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
public sealed class AgentVisionLayer : AttentionLayer
{
    private readonly Tensor? _centering;

    /// <summary>Creates the layer with zero parameters (fill them with <see cref="AttentionLayer.InitializeParameters"/> or <see cref="AttentionLayer.LoadParameters(IReadOnlyDictionary{string, Tensor})"/>).</summary>
    public AgentVisionLayer(AgentVisionConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
        if (config.SrRatio > 1)
        {
            _centering = VisionPvt.Centering(Backend, config.DModel, dtype);
        }
    }

    /// <summary>The config.</summary>
    public AgentVisionConfig Settings { get; }

    /// <inheritdoc/>
    public override bool AcceptsSequences => false;

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (AgentVisionConfig)config;
        int dm = c.DModel, h = c.Heads, n = c.Agents, r = c.SrRatio, g = AgentVisionConfig.BiasGrid;
        // The official module's order: its own six biases, then q, kv, proj, sr, norm, dwc.
        var specs = new List<ParameterSpec>
        {
            new("an_bias", new Shape(h, n, g, g), ParameterInit.Normal),
            new("na_bias", new Shape(h, n, g, g), ParameterInit.Normal),
            new("ah_bias", new Shape(1, h, n, c.GridHeight / r, 1), ParameterInit.Normal),
            new("aw_bias", new Shape(1, h, n, 1, c.GridWidth / r), ParameterInit.Normal),
            new("ha_bias", new Shape(1, h, c.GridHeight, 1, n), ParameterInit.Normal),
            new("wa_bias", new Shape(1, h, 1, c.GridWidth, n), ParameterInit.Normal),
        };
        specs.AddRange(VisionPvtSpecs.Projections(dm, r, c.QkvBias));
        specs.Add(new("dwc.weight", new Shape(dm, 1, c.DwcKernel, c.DwcKernel)));
        specs.Add(new("dwc.bias", new Shape(dm)));
        return specs;
    }

    internal override Node Build(Graph graph, Node x)
    {
        var c = Settings;
        var (height, width) = VisionPvt.Grid(x, c.GridHeight, c.GridWidth);
        int b = x.Shape[0], dm = c.DModel, heads = c.Heads, r = c.SrRatio, n = c.Agents, side = c.AgentSide;
        int tokens = height * width, kh = height / r, kw = width / r, keys = kh * kw;
        var xt = graph.Reshape(x, new Shape(b, tokens, dm));
        var q = graph.Linear(xt, Param(graph, "q.weight"), c.QkvBias ? Param(graph, "q.bias") : null);
        var kv = graph.Linear(VisionPvt.KeysInput(this, graph, xt, height, width, r, _centering), Param(graph, "kv.weight"), c.QkvBias ? Param(graph, "kv.bias") : null);
        var k = graph.Slice(kv, 0, dm);
        var v = graph.Slice(kv, dm, dm);
        // The agents are pooled from the projected queries, so q's gradient collects both the pooling's and P2's share.
        var agents = graph.Reshape(VisionPvt.Pool(graph, q, height, width, side, side), new Shape(b, n, heads, c.HeadDim));
        var options = new AttentionOptions(1 / Math.Sqrt(c.HeadDim), Causal: false);
        var agentValues = graph.Attention(agents, graph.Reshape(k, new Shape(b, keys, heads, c.HeadDim)), graph.Reshape(v, new Shape(b, keys, heads, c.HeadDim)),
            options, AgentToKeyBias(graph, kh, kw));
        var o = graph.Attention(graph.Reshape(q, new Shape(b, tokens, heads, c.HeadDim)), agents, agentValues, options, QueryToAgentBias(graph, height, width));
        // v as an image on the key grid, bilinear to the query grid when reduced, through the k×k depthwise convolution.
        var vImage = r > 1 ? graph.GridResize(v, kh, kw, height, width) : v;
        var dwc = graph.DepthwiseConv(graph.Reshape(vImage, new Shape(b, height, width, dm)), Param(graph, "dwc.weight"), Param(graph, "dwc.bias"));
        var mixed = graph.Add(graph.Reshape(o, new Shape(b, tokens, dm)), graph.Reshape(dwc, new Shape(b, tokens, dm)));
        return graph.Reshape(graph.Linear(mixed, Param(graph, "proj.weight"), Param(graph, "proj.bias")), x.Shape);
    }

    private protected override void CheckInput(Tensor x, string name) =>
        VisionPvt.CheckInput(this, x, name, Settings.GridHeight, Settings.GridWidth, Settings.SrRatio);

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        _centering?.Dispose();
        base.Dispose(disposing);
    }

    /// <summary>
    /// b1 <c>[h, n, keys]</c> on the key grid kh×kw: <c>an_bias</c> bilinear from 7×7, plus the row bias <c>ah_bias</c> resized
    /// along rows and the column bias <c>aw_bias</c> along columns. The resize of a row bias as a G×1 grid to kh×kw is its
    /// linear resize along rows repeated over columns, which is the official bilinear resize of the row+column sum.
    /// </summary>
    private Node AgentToKeyBias(Graph graph, int kh, int kw)
    {
        var c = Settings;
        int hn = c.Heads * c.Agents, g = AgentVisionConfig.BiasGrid, gh = c.GridHeight / c.SrRatio, gw = c.GridWidth / c.SrRatio;
        var map = graph.GridResize(graph.Reshape(Param(graph, "an_bias"), new Shape(hn, g * g, 1)), g, g, kh, kw);
        var rows = graph.GridResize(graph.Reshape(Param(graph, "ah_bias"), new Shape(hn, gh, 1)), gh, 1, kh, kw);
        var columns = graph.GridResize(graph.Reshape(Param(graph, "aw_bias"), new Shape(hn, gw, 1)), 1, gw, kh, kw);
        return graph.Reshape(graph.Add(graph.Add(map, rows), columns), new Shape(c.Heads, c.Agents, kh * kw));
    }

    /// <summary>
    /// b2 <c>[h, H·W, n]</c> on the query grid: <c>na_bias</c> (agents first, so transposed to put them on the channel axis)
    /// bilinear from 7×7, plus <c>ha_bias</c> along rows and <c>wa_bias</c> along columns.
    /// </summary>
    private Node QueryToAgentBias(Graph graph, int height, int width)
    {
        var c = Settings;
        int h = c.Heads, n = c.Agents, g = AgentVisionConfig.BiasGrid;
        var perAgent = graph.Permute(graph.Reshape(Param(graph, "na_bias"), new Shape(h, n, g * g)), [0, 2, 1]);
        var map = graph.GridResize(perAgent, g, g, height, width);
        var rows = graph.GridResize(graph.Reshape(Param(graph, "ha_bias"), new Shape(h, c.GridHeight, n)), c.GridHeight, 1, height, width);
        var columns = graph.GridResize(graph.Reshape(Param(graph, "wa_bias"), new Shape(h, c.GridWidth, n)), 1, c.GridWidth, height, width);
        return graph.Add(graph.Add(map, rows), columns);
    }
}

/// <summary>The projections the PVT forms share, under the official names: <c>q</c>, <c>kv</c> (rows k then v), <c>proj</c>, and with a reduction <c>sr</c> and <c>norm</c>.</summary>
internal static class VisionPvtSpecs
{
    public static IEnumerable<ParameterSpec> Projections(int dm, int r, bool qkvBias)
    {
        yield return new("q.weight", new Shape(dm, dm));
        if (qkvBias)
        {
            yield return new("q.bias", new Shape(dm));
        }
        yield return new("kv.weight", new Shape(2 * dm, dm));
        if (qkvBias)
        {
            yield return new("kv.bias", new Shape(2 * dm));
        }
        yield return new("proj.weight", new Shape(dm, dm));
        yield return new("proj.bias", new Shape(dm));
        if (r > 1)
        {
            yield return new("sr.weight", new Shape(dm, dm, r, r));
            yield return new("sr.bias", new Shape(dm));
            yield return new("norm.weight", new Shape(dm), ParameterInit.Ones);
            yield return new("norm.bias", new Shape(dm), ParameterInit.Zeros);
        }
    }
}

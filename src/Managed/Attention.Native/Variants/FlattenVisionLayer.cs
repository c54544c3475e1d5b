using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>flatten</c> in its 2-D forms (variants.md §6b, docs/vision-forms.md §2 and §3): FLatten's PVT and Swin modules under their
/// official parameter names (layouts <c>flatten-pvt</c>, <c>flatten-swin</c>). PVT's keys and values may come from a grid reduced
/// by <c>sr_ratio</c>; Swin's module runs per window; the positional encoding is per key; each head's values, as a d-channel
/// image, go through a k×k depthwise convolution whose d filters all heads share.
/// On a grid other than the built one the positional encoding is resized bilinearly as an image, the rule the official model
/// applies to its own <c>pos_embed</c> (the official attention module has none: our extension).
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
public sealed class FlattenVisionLayer : AttentionLayer
{
    private readonly Tensor? _centering;

    /// <summary>Creates the layer with zero parameters (fill them with <see cref="AttentionLayer.InitializeParameters"/> or <see cref="AttentionLayer.LoadParameters(IReadOnlyDictionary{string, Tensor})"/>).</summary>
    public FlattenVisionLayer(FlattenVisionConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
        if (config.SrRatio > 1)
        {
            _centering = VisionGraph.Centering(Backend, config.DModel, dtype);
        }
    }

    /// <summary>The config.</summary>
    public FlattenVisionConfig Settings { get; }

    /// <inheritdoc/>
    public override bool AcceptsSequences => false;

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (FlattenVisionConfig)config;
        int dm = c.DModel, r = c.SrRatio;
        // The official module's order: scale and the positional encoding, then its layers (q and kv, or qkv; proj; sr and norm; dwc).
        var specs = new List<ParameterSpec>
        {
            // softplus(0) = ln 2 for every channel at the start, as FLatten initialises it.
            new("scale", new Shape(1, 1, dm), ParameterInit.Zeros),
            new("positional_encoding", new Shape(1, c.GridHeight / r * (c.GridWidth / r), dm), ParameterInit.Normal),
        };
        specs.AddRange(VisionGraph.Projections(c.Form, dm, r, c.QkvBias));
        specs.Add(new("dwc.weight", new Shape(c.HeadDim, 1, c.DwcKernel, c.DwcKernel)));
        specs.Add(new("dwc.bias", new Shape(c.HeadDim)));
        return specs;
    }

    internal override Node Build(Graph graph, Node x)
    {
        var c = Settings;
        var (xt, height, width) = VisionGraph.Tokens(graph, x, c.Form, c.GridHeight, c.GridWidth);
        int b = xt.Shape[0], dm = c.DModel, heads = c.Heads, d = c.HeadDim, r = c.SrRatio;
        int tokens = height * width, kh = height / r, kw = width / r, keys = kh * kw;
        var (q, kPlain, v) = VisionGraph.QueryKeyValue(this, graph, xt, c.Form, c.QkvBias, height, width, r, _centering);
        // k + positional_encoding (repeated over the batch by Add's trailing broadcast), resized to another key grid.
        int gh = c.GridHeight / r, gw = c.GridWidth / r;
        var position = Param(graph, "positional_encoding");
        if (gh != kh || gw != kw)
        {
            position = graph.GridResize(position, gh, gw, kh, kw);
        }
        var k = graph.Add(kPlain, graph.Reshape(position, new Shape(keys, dm)));
        var scale = graph.Reshape(Param(graph, "scale"), new Shape(dm));
        var focusedQ = graph.Reshape(graph.FocusingMap(q, scale, c.FocusingFactor), new Shape(b, tokens, heads, d));
        var focusedK = graph.Reshape(graph.FocusingMap(k, scale, c.FocusingFactor), new Shape(b, keys, heads, d));
        var o = graph.FocusedLinearAttention(focusedQ, focusedK, graph.Reshape(v, new Shape(b, keys, heads, d)));
        // Reduced values are resized linearly over the row-major token sequence (a 1-D resize, as the official code does).
        var vTokens = r > 1 ? graph.GridResize(v, 1, keys, 1, tokens) : v;
        // The d filters of dwc.weight serve every head: channel e·d + j uses filter j.
        var dwc = graph.DepthwiseConv(graph.Reshape(vTokens, new Shape(b, height, width, dm)), Param(graph, "dwc.weight"), Param(graph, "dwc.bias"));
        var mixed = graph.Add(graph.Reshape(o, new Shape(b, tokens, dm)), graph.Reshape(dwc, new Shape(b, tokens, dm)));
        var y = graph.Linear(mixed, Param(graph, "proj.weight"), Param(graph, "proj.bias"));
        return VisionGraph.Untokens(graph, y, x, c.Form, c.GridHeight, c.GridWidth);
    }

    private protected override void CheckInput(Tensor x, string name) =>
        VisionGraph.CheckInput(this, x, name, Settings.Form, Settings.GridHeight, Settings.GridWidth, Settings.SrRatio);

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        _centering?.Dispose();
        base.Dispose(disposing);
    }
}

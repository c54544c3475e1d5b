namespace Attention.Native.Variants;

/// <summary>
/// <c>flatten</c> (variants.md §6), FLatten's focused linear attention: queries and keys (the keys with a learned
/// per-position encoding) pass through the focusing map sharing one learnable <c>scale</c>, attend linearly per head in
/// O(T·d²), and a depthwise convolution of v over T, its <c>d</c> filters shared by all heads, restores the feature
/// diversity the low-rank attention loses. Non-causal and tied to <c>seq_len</c>: no cache.
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
public sealed class FlattenLayer : AttentionLayer
{
    /// <summary>Creates the layer with zero parameters (fill them with <see cref="AttentionLayer.InitializeParameters"/> or <see cref="AttentionLayer.LoadParameters(IReadOnlyDictionary{string, Tensor})"/>).</summary>
    public FlattenLayer(FlattenConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
    }

    /// <summary>The config.</summary>
    public FlattenConfig Settings { get; }

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (FlattenConfig)config;
        int dm = c.DModel, d = c.HeadDim;
        return
        [
            new("w_q", new Shape(dm, dm)), new("w_k", new Shape(dm, dm)), new("w_v", new Shape(dm, dm)),
            new("b_q", new Shape(dm)), new("b_k", new Shape(dm)), new("b_v", new Shape(dm)),
            new("pos_enc", new Shape(c.SeqLen, dm), ParameterInit.Normal),
            // softplus(0) = ln 2 for every channel at the start, as FLatten initialises it.
            new("scale", new Shape(dm), ParameterInit.Zeros),
            new("dwc_w", new Shape(d, 1, c.DwcKernel)), new("dwc_b", new Shape(d)),
            new("w_o", new Shape(dm, dm)), new("b_o", new Shape(dm)),
        ];
    }

    internal override Node Build(Graph graph, Node x)
    {
        var c = Settings;
        int b = x.Shape[0], t = x.Shape[1];
        var q = graph.Linear(x, Param(graph, "w_q"), Param(graph, "b_q"));
        // pos_enc [T, C] is repeated over the batch by the trailing broadcast of Add.
        var k = graph.Add(graph.Linear(x, Param(graph, "w_k"), Param(graph, "b_k")), Param(graph, "pos_enc"));
        var v = graph.Linear(x, Param(graph, "w_v"), Param(graph, "b_v"));
        var scale = Param(graph, "scale");
        var heads = new Shape(b, t, c.Heads, c.HeadDim);
        var focusedQ = graph.Reshape(graph.FocusingMap(q, scale, c.FocusingFactor), heads);
        var focusedK = graph.Reshape(graph.FocusingMap(k, scale, c.FocusingFactor), heads);
        var o = graph.FocusedLinearAttention(focusedQ, focusedK, graph.Reshape(v, heads));
        // The d filters of dwc_w serve every head: channel i of v uses filter i mod d.
        var mixed = graph.Add(graph.Reshape(o, x.Shape), graph.DepthwiseConv(v, Param(graph, "dwc_w"), Param(graph, "dwc_b")));
        return graph.Linear(mixed, Param(graph, "w_o"), Param(graph, "b_o"));
    }

    /// <inheritdoc/>
    public override bool AcceptsSequences => false;

    private protected override void CheckInput(Tensor x, string name)
    {
        base.CheckInput(x, name);
        if (x.Shape[1] != Settings.SeqLen)
        {
            throw new ArgumentException($"{name}: expected [B, seq_len = {Settings.SeqLen}, {Settings.DModel}] (the positional encoding is per position), actual {x.Shape}", name);
        }
    }
}

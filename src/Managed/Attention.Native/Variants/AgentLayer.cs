using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// <c>agent</c> (variants.md §5), agent attention: n agent tokens, the queries average-pooled over T, first gather from
/// all keys and values (a softmax over T), then every query reads the agents (a softmax over n), so the cost is
/// O(T·n·d) per head instead of O(T²·d). Both score matrices get a learned per-position bias; a depthwise convolution of
/// v over T is added before the output projection. Non-causal and tied to <c>seq_len</c>: no cache.
/// </summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>: safe to share between threads; parameter writes must not overlap a call. Stream rules: as <see cref="AttentionLayer"/>.</remarks>
public sealed class AgentLayer : AttentionLayer
{
    /// <summary>Creates the layer with zero parameters (fill them with <see cref="AttentionLayer.InitializeParameters"/> or <see cref="AttentionLayer.LoadParameters(IReadOnlyDictionary{string, Tensor})"/>).</summary>
    public AgentLayer(AgentConfig config, Backend? backend = null, DType dtype = DType.F32)
        : base(config, backend, dtype)
    {
        Settings = config;
    }

    /// <summary>The config.</summary>
    public AgentConfig Settings { get; }

    private double Scale => 1 / Math.Sqrt(Settings.HeadDim);

    private protected override IEnumerable<ParameterSpec> Specs(LayerConfig config)
    {
        var c = (AgentConfig)config;
        int dm = c.DModel;
        return
        [
            new("w_q", new Shape(dm, dm)), new("w_k", new Shape(dm, dm)), new("w_v", new Shape(dm, dm)),
            new("b_q", new Shape(dm)), new("b_k", new Shape(dm)), new("b_v", new Shape(dm)),
            new("bias_ak", new Shape(c.Heads, c.Agents, c.SeqLen), ParameterInit.Normal),
            new("bias_qa", new Shape(c.Heads, c.SeqLen, c.Agents), ParameterInit.Normal),
            new("dwc_w", new Shape(dm, 1, c.DwcKernel)), new("dwc_b", new Shape(dm)),
            new("w_o", new Shape(dm, dm)), new("b_o", new Shape(dm)),
        ];
    }

    internal override Node Build(Graph graph, Node x)
    {
        var c = Settings;
        int b = x.Shape[0], t = x.Shape[1];
        var q = graph.Linear(x, Param(graph, "w_q"), Param(graph, "b_q"));
        var k = graph.Linear(x, Param(graph, "w_k"), Param(graph, "b_k"));
        var v = graph.Linear(x, Param(graph, "w_v"), Param(graph, "b_v"));
        // The agents are pooled from the projected queries, so q's gradient collects both the pooling's and P2's share.
        var agents = graph.AdaptivePool(q, c.Agents);
        var heads = new Shape(b, t, c.Heads, c.HeadDim);
        var agentHeads = graph.Reshape(agents, new Shape(b, c.Agents, c.Heads, c.HeadDim));
        var options = new AttentionOptions(Scale, Causal: false);
        var agentValues = graph.Attention(agentHeads, graph.Reshape(k, heads), graph.Reshape(v, heads), options, Param(graph, "bias_ak"));
        var o = graph.Attention(graph.Reshape(q, heads), agentHeads, agentValues, options, Param(graph, "bias_qa"));
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
            throw new ArgumentException($"{name}: expected [B, seq_len = {Settings.SeqLen}, {Settings.DModel}] (the score biases are per position), actual {x.Shape}", name);
        }
    }
}

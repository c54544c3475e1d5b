namespace Attention.Native.Variants;

/// <summary>Config of <c>transnormer</c>, TransNormerLLM's gated linear attention (variants.md §7; always causal).</summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record TransNormerConfig : LayerConfig
{
    /// <inheritdoc/>
    public override string Variant => "transnormer";

    /// <summary><c>head_dim</c> (d).</summary>
    public required int HeadDim { get; init; }

    /// <summary><c>layer_idx</c> (l, 0-based).</summary>
    public required int LayerIndex { get; init; }

    /// <summary><c>num_layers</c> (L).</summary>
    public required int NumLayers { get; init; }

    /// <summary><c>lrpe</c> (default false).</summary>
    public bool Lrpe { get; init; }

    internal static TransNormerConfig Read(ConfigReader r)
    {
        var config = new TransNormerConfig
        {
            DModel = r.Int("d_model"),
            Heads = r.Int("n_heads"),
            HeadDim = r.Int("head_dim"),
            LayerIndex = r.Int("layer_idx"),
            NumLayers = r.Int("num_layers"),
            Lrpe = r.Bool("lrpe", false),
        };
        Require(r.Bool("causal", true), "causal", "true (transnormer is always causal)", false);
        return config;
    }

    /// <inheritdoc/>
    public override long? CacheElementsPerToken => 0;

    /// <summary>The width d' of q and k in the state: d, or 2d with LRPE.</summary>
    public int StateKeyDim => Lrpe ? 2 * HeadDim : HeadDim;

    /// <summary>Elements of the constant-size decode state per sequence: H·d'·d.</summary>
    public long StateElements => (long)Heads * StateKeyDim * HeadDim;

    /// <inheritdoc/>
    public override void Validate()
    {
        Positive(DModel, "d_model");
        Positive(Heads, "n_heads");
        Positive(HeadDim, "head_dim");
        Positive(NumLayers, "num_layers");
        Require(LayerIndex >= 0 && LayerIndex < NumLayers, "layer_idx", $"a layer index in [0, {NumLayers})", LayerIndex);
        Axis("head_dim", "n_heads·head_dim", (Int128)Heads * HeadDim);
        Axis("head_dim", "2·head_dim (the LRPE width of q and k)", Lrpe ? 2 * (Int128)HeadDim : HeadDim);
    }

    /// <inheritdoc/>
    public override IEnumerable<KeyValuePair<string, object>> Keys() =>
    [
        new("d_model", DModel), new("n_heads", Heads), new("head_dim", HeadDim), new("layer_idx", LayerIndex), new("num_layers", NumLayers), new("lrpe", Lrpe),
    ];
}

using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>Config of <c>mha</c>, <c>gqa</c> and <c>mqa</c> (variants.md §1).</summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record GqaConfig : LayerConfig
{
    private readonly string _variant = "gqa";

    /// <inheritdoc/>
    public override string Variant => _variant;

    /// <summary>Which of mha (G = H), gqa (H mod G = 0) or mqa (G = 1) this config describes.</summary>
    public string Kind
    {
        get => _variant;
        init => _variant = value;
    }

    /// <summary><c>n_kv_heads</c> (G).</summary>
    public required int KvHeads { get; init; }

    /// <summary><c>head_dim</c> (d).</summary>
    public required int HeadDim { get; init; }

    /// <summary><c>causal</c> (default true).</summary>
    public bool Causal { get; init; } = true;

    /// <summary><c>rope</c> (default true).</summary>
    public bool Rope { get; init; } = true;

    /// <summary><c>rope_base</c> (default 10000).</summary>
    public double RopeBase { get; init; } = 10000;

    /// <summary><c>rope_style</c> (default half).</summary>
    public RopeStyle RopeStyle { get; init; } = RopeStyle.Half;

    /// <summary><c>rope_scaling</c>: YaRN scaling of the RoPE frequencies (variants.md "RoPE scaling"); null (default) for none.</summary>
    public RopeScaling? RopeScaling { get; init; }

    internal static GqaConfig Read(string variant, ConfigReader r)
    {
        int dModel = r.Int("d_model"), heads = r.Int("n_heads");
        int? kvDefault = variant switch { "mha" => heads, "mqa" => 1, _ => null };
        return new GqaConfig
        {
            Kind = variant,
            DModel = dModel,
            Heads = heads,
            KvHeads = r.Int("n_kv_heads", kvDefault),
            HeadDim = r.Int("head_dim"),
            Causal = r.Bool("causal", true),
            Rope = r.Bool("rope", true),
            RopeBase = r.Double("rope_base", 10000),
            RopeStyle = r.Style("rope_style"),
            RopeScaling = r.Scaling(),
        };
    }

    /// <inheritdoc/>
    public override long? CacheElementsPerToken => Causal ? 2L * KvHeads * HeadDim : null;

    /// <inheritdoc/>
    public override void Validate()
    {
        Require(Kind is "mha" or "gqa" or "mqa", "variant", "mha, gqa or mqa", Kind);
        Positive(DModel, "d_model");
        Positive(Heads, "n_heads");
        Positive(KvHeads, "n_kv_heads");
        Positive(HeadDim, "head_dim");
        Require(Heads % KvHeads == 0, "n_kv_heads", $"a divisor of n_heads {Heads} (n_heads mod n_kv_heads = 0)", KvHeads);
        Require(Kind != "mha" || KvHeads == Heads, "n_kv_heads", $"{Heads} (mha has n_kv_heads = n_heads)", KvHeads);
        Require(Kind != "mqa" || KvHeads == 1, "n_kv_heads", "1 (mqa has one KV head)", KvHeads);
        // n_kv_heads divides n_heads, so n_kv_heads·head_dim is at most this.
        Axis("head_dim", "n_heads·head_dim", (Int128)Heads * HeadDim);
        Require(!Rope || HeadDim % 2 == 0, "head_dim", "an even width for RoPE", HeadDim);
        Require(RopeBase > 0 && double.IsFinite(RopeBase), "rope_base", "a finite value > 0", RopeBase);
        ValidateScaling(RopeScaling, Rope);
    }

    /// <inheritdoc/>
    public override IEnumerable<KeyValuePair<string, object>> Keys() =>
    [
        new("d_model", DModel), new("n_heads", Heads), new("n_kv_heads", KvHeads), new("head_dim", HeadDim),
        new("causal", Causal), new("rope", Rope), new("rope_base", RopeBase), new("rope_style", StyleName(RopeStyle)), ScalingKey(RopeScaling),
    ];
}

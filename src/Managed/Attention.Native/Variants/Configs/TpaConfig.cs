using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>Config of <c>tpa</c>, tensor product attention (variants.md §3).</summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record TpaConfig : LayerConfig
{
    /// <inheritdoc/>
    public override string Variant => "tpa";

    /// <summary><c>head_dim</c> (d).</summary>
    public required int HeadDim { get; init; }

    /// <summary><c>q_rank</c> (R_q).</summary>
    public required int QRank { get; init; }

    /// <summary><c>k_rank</c> (R_k).</summary>
    public required int KRank { get; init; }

    /// <summary><c>v_rank</c> (R_v).</summary>
    public required int VRank { get; init; }

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

    /// <summary>
    /// <c>subln</c> (default false): T6's optional per-head RMSNorm of the attention output (its <c>using_groupnorm</c>),
    /// <c>o_h ← RMSNorm(o_h; subln)</c> with ε = 1e-5 and one gain <c>subln [d]</c> shared by the heads, before <c>w_o</c>.
    /// </summary>
    public bool Subln { get; init; }

    /// <summary>The ε of T6's <c>subln</c> RMSNorm.</summary>
    public const float SublnEpsilon = 1e-5f;

    internal static TpaConfig Read(ConfigReader r) => new()
    {
        DModel = r.Int("d_model"),
        Heads = r.Int("n_heads"),
        HeadDim = r.Int("head_dim"),
        QRank = r.Int("q_rank"),
        KRank = r.Int("k_rank"),
        VRank = r.Int("v_rank"),
        Causal = r.Bool("causal", true),
        Rope = r.Bool("rope", true),
        RopeBase = r.Double("rope_base", 10000),
        RopeStyle = r.Style("rope_style"),
        RopeScaling = r.Scaling(),
        Subln = r.Bool("subln", false),
    };

    /// <inheritdoc/>
    public override long? CacheElementsPerToken => Causal ? ((long)KRank + VRank) * ((long)Heads + HeadDim) : null;

    /// <inheritdoc/>
    public override void Validate()
    {
        Positive(DModel, "d_model");
        Positive(Heads, "n_heads");
        Positive(HeadDim, "head_dim");
        Positive(QRank, "q_rank");
        Positive(KRank, "k_rank");
        Positive(VRank, "v_rank");
        Require(!Rope || HeadDim % 2 == 0, "head_dim", "an even width for RoPE", HeadDim);
        Require(RopeBase > 0 && double.IsFinite(RopeBase), "rope_base", "a finite value > 0", RopeBase);
        ValidateScaling(RopeScaling, Rope);
        Axis("head_dim", "n_heads·head_dim", (Int128)Heads * HeadDim);
        foreach (var (key, rank) in new[] { ("q_rank", QRank), ("k_rank", KRank), ("v_rank", VRank) })
        {
            Axis(key, $"n_heads·{key}", (Int128)Heads * rank);
            Axis(key, $"{key}·head_dim", (Int128)rank * HeadDim);
        }
    }

    /// <inheritdoc/>
    public override IEnumerable<KeyValuePair<string, object>> Keys() =>
    [
        new("d_model", DModel), new("n_heads", Heads), new("head_dim", HeadDim), new("q_rank", QRank), new("k_rank", KRank),
        new("v_rank", VRank), new("causal", Causal), new("rope", Rope), new("rope_base", RopeBase), new("rope_style", StyleName(RopeStyle)), ScalingKey(RopeScaling),
        new("subln", Subln),
    ];
}

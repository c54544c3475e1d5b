using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>Config of <c>mfa</c>, StepFun Step-3's multi-matrix factorization attention (variants.md §8).</summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record MfaConfig : LayerConfig
{
    /// <summary>The default <c>norm_eps</c> of the query RMSNorm (Step-3's <c>rms_norm_eps</c>).</summary>
    public const double DefaultNormEpsilon = 1e-5;

    /// <inheritdoc/>
    public override string Variant => "mfa";

    /// <summary><c>head_dim</c> (d): the width of every query head and of the one key/value head.</summary>
    public required int HeadDim { get; init; }

    /// <summary><c>q_lora_dim</c> (C_q): the width of the normalised low-rank query.</summary>
    public required int QLoraDim { get; init; }

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
    /// <c>norm_eps</c> (default 1e-5): the epsilon of the query RMSNorm. It reaches the RMSNorm op as a float, as the
    /// other variants' 1e-6 does: in F64 a value not exact in binary32 moves by its rounding (1e-5 by 2.5e-13).
    /// </summary>
    public double NormEpsilon { get; init; } = DefaultNormEpsilon;

    internal static MfaConfig Read(ConfigReader r) => new()
    {
        DModel = r.Int("d_model"),
        Heads = r.Int("n_heads"),
        HeadDim = r.Int("head_dim"),
        QLoraDim = r.Int("q_lora_dim"),
        Causal = r.Bool("causal", true),
        Rope = r.Bool("rope", true),
        RopeBase = r.Double("rope_base", 10000),
        RopeStyle = r.Style("rope_style"),
        RopeScaling = r.Scaling(),
        NormEpsilon = r.Double("norm_eps", DefaultNormEpsilon),
    };

    /// <inheritdoc/>
    public override long? CacheElementsPerToken => Causal ? 2L * HeadDim : null;

    /// <inheritdoc/>
    public override void Validate()
    {
        Positive(DModel, "d_model");
        Positive(Heads, "n_heads");
        Positive(HeadDim, "head_dim");
        Positive(QLoraDim, "q_lora_dim");
        Axis("head_dim", "n_heads·head_dim", (Int128)Heads * HeadDim);
        Require(!Rope || HeadDim % 2 == 0, "head_dim", "an even width for RoPE", HeadDim);
        Require(RopeBase > 0 && double.IsFinite(RopeBase), "rope_base", "a finite value > 0", RopeBase);
        ValidateScaling(RopeScaling, Rope);
        // The RMSNorm op takes its epsilon in single precision: it must stay > 0 there.
        Require((float)NormEpsilon > 0 && float.IsFinite((float)NormEpsilon), "norm_eps", "a finite value > 0 (as a float)", NormEpsilon);
    }

    /// <inheritdoc/>
    public override IEnumerable<KeyValuePair<string, object>> Keys() =>
    [
        new("d_model", DModel), new("n_heads", Heads), new("head_dim", HeadDim), new("q_lora_dim", QLoraDim),
        new("causal", Causal), new("rope", Rope), new("rope_base", RopeBase), new("rope_style", StyleName(RopeStyle)), ScalingKey(RopeScaling),
        new("norm_eps", NormEpsilon),
    ];
}

using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>Config of <c>mla</c>, DeepSeek's multi-head latent attention (variants.md §2).</summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record MlaConfig : LayerConfig
{
    /// <inheritdoc/>
    public override string Variant => "mla";

    /// <summary><c>q_lora_rank</c> (d_c'; 0 = no query compression).</summary>
    public required int QLoraRank { get; init; }

    /// <summary><c>kv_lora_rank</c> (d_c).</summary>
    public required int KvLoraRank { get; init; }

    /// <summary><c>qk_nope_head_dim</c> (d_n).</summary>
    public required int QkNopeHeadDim { get; init; }

    /// <summary><c>qk_rope_head_dim</c> (d_r).</summary>
    public required int QkRopeHeadDim { get; init; }

    /// <summary><c>v_head_dim</c> (d_v).</summary>
    public required int VHeadDim { get; init; }

    /// <summary><c>causal</c> (default true).</summary>
    public bool Causal { get; init; } = true;

    /// <summary><c>rope_base</c> (default 10000).</summary>
    public double RopeBase { get; init; } = 10000;

    /// <summary><c>rope_style</c> (default half).</summary>
    public RopeStyle RopeStyle { get; init; } = RopeStyle.Half;

    /// <summary><c>rope_scaling</c>: YaRN scaling of the RoPE frequencies (variants.md "RoPE scaling"); null (default) for none.</summary>
    public RopeScaling? RopeScaling { get; init; }

    internal static MlaConfig Read(ConfigReader r) => new()
    {
        DModel = r.Int("d_model"),
        Heads = r.Int("n_heads"),
        QLoraRank = r.Int("q_lora_rank"),
        KvLoraRank = r.Int("kv_lora_rank"),
        QkNopeHeadDim = r.Int("qk_nope_head_dim"),
        QkRopeHeadDim = r.Int("qk_rope_head_dim"),
        VHeadDim = r.Int("v_head_dim"),
        Causal = r.Bool("causal", true),
        RopeBase = r.Double("rope_base", 10000),
        RopeStyle = r.Style("rope_style"),
        RopeScaling = r.Scaling(),
    };

    /// <inheritdoc/>
    public override long? CacheElementsPerToken => Causal ? (long)KvLoraRank + QkRopeHeadDim : null;

    /// <inheritdoc/>
    public override void Validate()
    {
        Positive(DModel, "d_model");
        Positive(Heads, "n_heads");
        Require(QLoraRank >= 0, "q_lora_rank", "0 (no query compression) or a positive rank", QLoraRank);
        Positive(KvLoraRank, "kv_lora_rank");
        Positive(QkNopeHeadDim, "qk_nope_head_dim");
        Positive(QkRopeHeadDim, "qk_rope_head_dim");
        Require(QkRopeHeadDim % 2 == 0, "qk_rope_head_dim", "an even width for RoPE", QkRopeHeadDim);
        Positive(VHeadDim, "v_head_dim");
        Require(RopeBase > 0 && double.IsFinite(RopeBase), "rope_base", "a finite value > 0", RopeBase);
        ValidateScaling(RopeScaling);
        Axis("qk_rope_head_dim", "n_heads·(qk_nope_head_dim + qk_rope_head_dim)", (Int128)Heads * ((long)QkNopeHeadDim + QkRopeHeadDim));
        Axis("v_head_dim", "n_heads·(qk_nope_head_dim + v_head_dim)", (Int128)Heads * ((long)QkNopeHeadDim + VHeadDim));
        Axis("kv_lora_rank", "kv_lora_rank + qk_rope_head_dim", (Int128)KvLoraRank + QkRopeHeadDim);
    }

    /// <inheritdoc/>
    public override IEnumerable<KeyValuePair<string, object>> Keys() =>
    [
        new("d_model", DModel), new("n_heads", Heads), new("q_lora_rank", QLoraRank), new("kv_lora_rank", KvLoraRank),
        new("qk_nope_head_dim", QkNopeHeadDim), new("qk_rope_head_dim", QkRopeHeadDim), new("v_head_dim", VHeadDim),
        new("causal", Causal), new("rope_base", RopeBase), new("rope_style", StyleName(RopeStyle)), ScalingKey(RopeScaling),
    ];
}

using System.Text.Json;

namespace Attention.Native.Variants;

/// <summary>Translates an official config's <c>rope_scaling</c> (HF's dict) into variants.md's <c>rope_scaling</c> key.</summary>
internal static class RopeScalingJson
{
    private static readonly string[] YarnKeys = ["factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"];

    /// <summary>
    /// Null when the official config has no scaling (absent, null, or HF's <c>"default"</c> type); the YaRN keys of
    /// variants.md for a <c>yarn</c> dict; a recorded refusal for any other type or a key that changes YaRN's result
    /// (<c>attention_factor</c>, <c>truncate: false</c>).
    /// </summary>
    public static RawJson? From(OfficialConfig official)
    {
        // transformers ≥ 5 writes the same dict as rope_parameters (with rope_theta inside).
        string key = official.Has("rope_scaling") || !official.Has("rope_parameters") ? "rope_scaling" : "rope_parameters";
        if (official.Object(key) is not { } scaling)
        {
            return null;
        }
        string? type = null;
        foreach (var name in new[] { "type", "rope_type" })
        {
            if (scaling.TryGetProperty(name, out var t) && t.ValueKind == JsonValueKind.String)
            {
                type = t.GetString();
            }
        }
        if (type == "default")
        {
            return null;
        }
        if (type != "yarn")
        {
            official.Refuse(key, "null or a {\"type\": \"yarn\", …} dict (the scaling variants.md defines)");
            return null;
        }
        if (scaling.TryGetProperty("attention_factor", out var af) && af.ValueKind != JsonValueKind.Null)
        {
            official.Refuse(key, "YaRN without attention_factor (the mscale is derived from mscale and mscale_all_dim)");
        }
        if (scaling.TryGetProperty("truncate", out var tr) && tr.ValueKind == JsonValueKind.False)
        {
            official.Refuse(key, "YaRN with truncate true (the correction range rounded to whole dimensions)");
        }
        var parts = new List<string> { "\"type\": \"yarn\"" };
        foreach (var name in YarnKeys)
        {
            if (scaling.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null)
            {
                parts.Add($"\"{name}\": {v.GetRawText()}");
            }
        }
        return new RawJson("{" + string.Join(", ", parts) + "}");
    }

    /// <summary>The RoPE base: <c>rope_theta</c>, or inside transformers ≥ 5's <c>rope_parameters</c>, else 10000.</summary>
    public static double Theta(OfficialConfig official)
    {
        if (official.Double("rope_theta") is { } theta)
        {
            return theta;
        }
        if (official.Object("rope_parameters") is { } parameters && parameters.TryGetProperty("rope_theta", out var t) && t.ValueKind == JsonValueKind.Number)
        {
            return t.GetDouble();
        }
        return 10000.0;
    }
}

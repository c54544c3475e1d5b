using TorchSharp;

namespace Attention.Native.Tests.Variants.Vision;

using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Tensor = TorchSharp.torch.Tensor;

/// <summary>An agent-swin module as agent_swin.py's <c>AgentAttention</c> is built: one square window of side <paramref name="Window"/>.</summary>
internal sealed record AgentSwinConfig(int DModel, int Heads, int Agents, int Window, bool QkvBias = true)
{
    public int HeadDim => DModel / Heads;
}

/// <summary>An agent-deit module as agent_deit.py's <c>AgentAttention</c> is built: a class token, then a <paramref name="Window"/>² grid.</summary>
internal sealed record AgentDeitConfig(int DModel, int Heads, int Agents, int Window, bool QkvBias = true)
{
    public int HeadDim => DModel / Heads;
}

/// <summary>A flatten-swin module as flatten_swin.py's <c>FocusedLinearAttention</c> is built: one square window.</summary>
internal sealed record FlattenSwinConfig(int DModel, int Heads, int Window, bool QkvBias = true, double FocusingFactor = 3, int DwcKernel = 5)
{
    public int HeadDim => DModel / Heads;
}

/// <summary>
/// The Swin and DeiT modules (docs/vision-forms.md §3) written step by step after their official forward (agent_swin.py:234-276,
/// agent_deit.py:215-263, flatten_swin.py:198-236) in torch ops, float64, independent of the library: x <c>[B', N, C]</c> →
/// y of the same shape, B' the windows (Swin) or the images (DeiT, N = 1 + window²).
/// </summary>
internal static class VisionTorchReferenceWindows
{
    /// <summary>The module's parameters in state_dict order: its own biases first, then qkv, proj, dwc.</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> Parameters(AgentSwinConfig c) => AgentParameters(c.DModel, c.Heads, c.Agents, c.Window, c.QkvBias, deit: false);

    /// <inheritdoc cref="Parameters(AgentSwinConfig)"/>
    public static IReadOnlyList<(string Name, long[] Shape)> Parameters(AgentDeitConfig c) => AgentParameters(c.DModel, c.Heads, c.Agents, c.Window, c.QkvBias, deit: true);

    /// <inheritdoc cref="Parameters(AgentSwinConfig)"/>
    public static IReadOnlyList<(string Name, long[] Shape)> Parameters(FlattenSwinConfig c)
    {
        long dm = c.DModel, d = c.HeadDim, k = c.DwcKernel;
        var list = new List<(string, long[])> { ("scale", [1, 1, dm]), ("positional_encoding", [1, (long)c.Window * c.Window, dm]) };
        list.AddRange(Layers(dm, c.QkvBias));
        list.Add(("dwc.weight", [d, 1, k, k]));
        list.Add(("dwc.bias", [d]));
        return list;
    }

    public static Tensor AgentSwin(AgentSwinConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor x) =>
        Agent(c.DModel, c.Heads, c.Agents, c.Window, c.QkvBias, deit: false, w, x);

    public static Tensor AgentDeit(AgentDeitConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor x) =>
        Agent(c.DModel, c.Heads, c.Agents, c.Window, c.QkvBias, deit: true, w, x);

    public static Tensor FlattenSwin(FlattenSwinConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor x)
    {
        long b = x.shape[0], n = x.shape[1], dm = c.DModel, heads = c.Heads;
        var qkv = F.linear(x, w["qkv.weight"], c.QkvBias ? w["qkv.bias"] : null).reshape(b, n, 3, dm).permute(2, 0, 1, 3);
        var (q, k, v) = (qkv[0], qkv[1], qkv[2]);
        k = k + w["positional_encoding"];
        q = F.relu(q) + 1e-6;
        k = F.relu(k) + 1e-6;
        var scale = F.softplus(w["scale"]);
        q = q / scale;
        k = k / scale;
        var qNorm = q.norm(-1, true);
        var kNorm = k.norm(-1, true);
        q = q.pow(c.FocusingFactor);
        k = k.pow(c.FocusingFactor);
        q = q / q.norm(-1, true) * qNorm;
        k = k / k.norm(-1, true) * kNorm;
        q = q.reshape(b, n, heads, -1).permute(0, 2, 1, 3);
        k = k.reshape(b, n, heads, -1).permute(0, 2, 1, 3);
        v = v.reshape(b, n, heads, -1).permute(0, 2, 1, 3);
        var z = 1 / (q.matmul(k.mean([-2L], keepdim: true).transpose(-2, -1)) + 1e-6);
        var kv = (k.transpose(-2, -1) * Math.Pow(n, -0.5)).matmul(v * Math.Pow(n, -0.5));
        var o = q.matmul(kv) * z;
        long side = (long)Math.Sqrt(n);
        o = o.transpose(1, 2).reshape(b, n, dm);
        var image = v.reshape(b * heads, side, side, -1).permute(0, 3, 1, 2);
        long pad = c.DwcKernel / 2;
        var dwc = F.conv2d(image, w["dwc.weight"], w["dwc.bias"], padding: [pad, pad], groups: c.HeadDim);
        o = o + dwc.reshape(b, dm, n).permute(0, 2, 1);
        return F.linear(o, w["proj.weight"], w["proj.bias"]);
    }

    private static List<(string, long[])> AgentParameters(long dm, long h, long n, long window, bool qkvBias, bool deit)
    {
        var list = new List<(string, long[])>
        {
            ("an_bias", [h, n, 7, 7]), ("na_bias", [h, n, 7, 7]),
            ("ah_bias", [1, h, n, window, 1]), ("aw_bias", [1, h, n, 1, window]),
            ("ha_bias", [1, h, window, 1, n]), ("wa_bias", [1, h, 1, window, n]),
        };
        if (deit)
        {
            list.Add(("ac_bias", [1, h, n, 1]));
            list.Add(("ca_bias", [1, h, 1, n]));
        }
        list.AddRange(Layers(dm, qkvBias));
        list.Add(("dwc.weight", [dm, 1, 3, 3]));
        list.Add(("dwc.bias", [dm]));
        return list;
    }

    private static IEnumerable<(string, long[])> Layers(long dm, bool qkvBias)
    {
        yield return ("qkv.weight", [3 * dm, dm]);
        if (qkvBias)
        {
            yield return ("qkv.bias", [3 * dm]);
        }
        yield return ("proj.weight", [dm, dm]);
        yield return ("proj.bias", [dm]);
    }

    // The two official agent modules share everything but DeiT's class token (its own row and column of biases, no DWC).
    private static Tensor Agent(long dm, long heads, long agents, long window, bool qkvBias, bool deit, IReadOnlyDictionary<string, Tensor> w, Tensor x)
    {
        long b = x.shape[0], n = x.shape[1], side = (long)Math.Sqrt(n), headDim = dm / heads, pool = (long)Math.Sqrt(agents);
        double scale = Math.Pow(headDim, -0.5);
        var qkv = F.linear(x, w["qkv.weight"], qkvBias ? w["qkv.bias"] : null).reshape(b, n, 3, dm).permute(2, 0, 1, 3);
        var (q, k, v) = (qkv[0], qkv[1], qkv[2]);
        var gridQ = deit ? q[.., 1.., ..] : q;
        var agentTokens = F.adaptive_avg_pool2d(gridQ.reshape(b, side, side, dm).permute(0, 3, 1, 2), [pool, pool]).reshape(b, dm, -1).permute(0, 2, 1);
        q = q.reshape(b, n, heads, headDim).permute(0, 2, 1, 3);
        k = k.reshape(b, n, heads, headDim).permute(0, 2, 1, 3);
        v = v.reshape(b, n, heads, headDim).permute(0, 2, 1, 3);
        agentTokens = agentTokens.reshape(b, agents, heads, headDim).permute(0, 2, 1, 3);

        // The official calls leave align_corners unset, which is false; it is written out here only to keep libtorch quiet.
        var positionBias1 = F.interpolate(w["an_bias"], [window, window], mode: InterpolationMode.Bilinear, align_corners: false).reshape(1, heads, agents, -1).repeat(b, 1, 1, 1);
        var positionBias2 = (w["ah_bias"] + w["aw_bias"]).reshape(1, heads, agents, -1).repeat(b, 1, 1, 1);
        var positionBias = positionBias1 + positionBias2;
        if (deit)
        {
            positionBias = torch.cat([w["ac_bias"].repeat(b, 1, 1, 1), positionBias], -1);
        }
        var agentAttn = F.softmax((agentTokens * scale).matmul(k.transpose(-2, -1)) + positionBias, -1);
        var agentV = agentAttn.matmul(v);

        var agentBias1 = F.interpolate(w["na_bias"], [window, window], mode: InterpolationMode.Bilinear, align_corners: false).reshape(1, heads, agents, -1).permute(0, 1, 3, 2).repeat(b, 1, 1, 1);
        var agentBias2 = (w["ha_bias"] + w["wa_bias"]).reshape(1, heads, -1, agents).repeat(b, 1, 1, 1);
        var agentBias = agentBias1 + agentBias2;
        if (deit)
        {
            agentBias = torch.cat([w["ca_bias"].repeat(b, 1, 1, 1), agentBias], -2);
        }
        var qAttn = F.softmax((q * scale).matmul(agentTokens.transpose(-2, -1)) + agentBias, -1);
        var o = qAttn.matmul(agentV).transpose(1, 2).reshape(b, n, dm);

        var gridV = deit ? v[.., .., 1.., ..] : v;
        var image = gridV.transpose(1, 2).reshape(b, side, side, dm).permute(0, 3, 1, 2);
        var dwc = F.conv2d(image, w["dwc.weight"], w["dwc.bias"], padding: [1, 1], groups: dm).permute(0, 2, 3, 1).reshape(b, side * side, dm);
        // The official x[:, 1:, :] += dwc, written without an in-place update of a tensor autograd needs.
        o = deit ? torch.cat([o[.., ..1, ..], o[.., 1.., ..] + dwc], 1) : o + dwc;
        return F.linear(o, w["proj.weight"], w["proj.bias"]);
    }
}

using Attention.Native.Tests.Support;
using TorchSharp;

namespace Attention.Native.Tests.Variants.Vision;

using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Tensor = TorchSharp.torch.Tensor;

/// <summary>
/// An agent-pvt attention module as the official <c>AgentAttention</c> of agent_pvt.py is built (docs/vision-forms.md §1):
/// <paramref name="GridH"/>×<paramref name="GridW"/> is the token grid its biases were made for (officially √num_patches
/// square), <paramref name="PoolH"/>×<paramref name="PoolW"/> the agents' pooled grid at run time (0: √n × √n; the
/// downstream code's <c>downstream_agent_shape</c> otherwise).
/// </summary>
internal sealed record AgentPvtConfig(int DModel, int Heads, int Agents, int GridH, int GridW, int SrRatio = 1, bool QkvBias = false,
    int DwcKernel = 3, int PoolH = 0, int PoolW = 0)
{
    public int HeadDim => DModel / Heads;

    /// <summary>√n: the side of the agents' own grid, which the bias parameters index.</summary>
    public int AgentSide => (int)Math.Round(Math.Sqrt(Agents));

    public (int H, int W) Pool => PoolH > 0 ? (PoolH, PoolW) : (AgentSide, AgentSide);
}

/// <summary>
/// A flatten-pvt attention module as the official <c>FocusedLinearAttention</c> of flatten_pvt.py is built
/// (docs/vision-forms.md §2): <paramref name="GridH"/>×<paramref name="GridW"/> is the grid its positional encoding was made for.
/// </summary>
internal sealed record FlattenPvtConfig(int DModel, int Heads, int GridH, int GridW, int SrRatio = 1, bool QkvBias = false,
    double FocusingFactor = 3, int DwcKernel = 5)
{
    public int HeadDim => DModel / Heads;
}

/// <summary>
/// The PVT forms of agent and flatten attention (docs/vision-forms.md) written as compositions of torch ops, independent of
/// the library: the official modules' parameters by their state_dict names, x [B, N, C] on an H×W grid (row-major), y [B, N, C].
/// Meant for float64 (libtorch's float32 convolution gradients are not trusted on this project's machines; see TorchKit.Conv1d).
/// </summary>
internal static class VisionTorchReference
{
    /// <summary>LayerNorm after the spatial reduction: nn.LayerNorm(dim), PyTorch's default eps.</summary>
    public const double NormEpsilon = 1e-5;

    /// <summary>The official module's parameters (name, shape) in the order it registers them.</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> Parameters(AgentPvtConfig c)
    {
        long dm = c.DModel, h = c.Heads, n = c.Agents, r = c.SrRatio, k = c.DwcKernel;
        var list = new List<(string, long[])>
        {
            ("an_bias", [h, n, 7, 7]), ("na_bias", [h, n, 7, 7]),
            ("ah_bias", [1, h, n, c.GridH / r, 1]), ("aw_bias", [1, h, n, 1, c.GridW / r]),
            ("ha_bias", [1, h, c.GridH, 1, n]), ("wa_bias", [1, h, 1, c.GridW, n]),
        };
        list.AddRange(Shared(dm, r, c.QkvBias));
        list.Add(("dwc.weight", [dm, 1, k, k]));
        list.Add(("dwc.bias", [dm]));
        return list;
    }

    /// <inheritdoc cref="Parameters(AgentPvtConfig)"/>
    public static IReadOnlyList<(string Name, long[] Shape)> Parameters(FlattenPvtConfig c)
    {
        long dm = c.DModel, d = c.HeadDim, r = c.SrRatio, k = c.DwcKernel;
        var list = new List<(string, long[])>
        {
            ("scale", [1, 1, dm]),
            ("positional_encoding", [1, c.GridH / r * (c.GridW / r), dm]),
        };
        list.AddRange(Shared(dm, r, c.QkvBias));
        list.Add(("dwc.weight", [d, 1, k, k]));
        list.Add(("dwc.bias", [d]));
        return list;
    }

    // q, kv, proj, and with a spatial reduction sr (Conv2d r×r, stride r) and its LayerNorm: the PVT attention's own layers.
    private static IEnumerable<(string, long[])> Shared(long dm, long r, bool qkvBias)
    {
        yield return ("q.weight", [dm, dm]);
        if (qkvBias)
        {
            yield return ("q.bias", [dm]);
        }
        yield return ("kv.weight", [2 * dm, dm]);
        if (qkvBias)
        {
            yield return ("kv.bias", [2 * dm]);
        }
        yield return ("proj.weight", [dm, dm]);
        yield return ("proj.bias", [dm]);
        if (r > 1)
        {
            yield return ("sr.weight", [dm, dm, r, r]);
            yield return ("sr.bias", [dm]);
            yield return ("norm.weight", [dm]);
            yield return ("norm.bias", [dm]);
        }
    }

    /// <summary>
    /// Parameters drawn from a normal distribution (seeded by <paramref name="seed"/> and the parameter's index), none a no-op:
    /// weights with standard deviation 1/sqrt(fan_in), biases, the score biases, FLatten's scale and positional encoding ± 0.5,
    /// the LayerNorm gain 1 ± 0.5. (The official init, zeros and std 0.02, would leave most of them invisible to a test.)
    /// </summary>
    public static Dictionary<string, double[]> Draw(IReadOnlyList<(string Name, long[] Shape)> parameters, int seed = 17)
    {
        var drawn = new Dictionary<string, double[]>(StringComparer.Ordinal);
        int index = 0;
        foreach (var (name, shape) in parameters)
        {
            long count = shape.Aggregate(1L, (a, e) => a * e);
            bool weight = name.EndsWith(".weight", StringComparison.Ordinal) && name != "norm.weight";
            double scale = weight ? 1 / Math.Sqrt(count / shape[0]) : 0.5;
            var values = TestData.Normal((seed * 1000) + index++, count, scale);
            drawn[name] = name == "norm.weight" ? [.. values.Select(v => 1 + v)] : values;
        }
        return drawn;
    }

    /// <summary>Float64 leaves of <paramref name="values"/> in the shapes of <paramref name="parameters"/>.</summary>
    public static Dictionary<string, Tensor> Leaves(IReadOnlyList<(string Name, long[] Shape)> parameters, IReadOnlyDictionary<string, double[]> values,
        bool requiresGrad) =>
        parameters.ToDictionary(p => p.Name, p => torch.tensor(values[p.Name], p.Shape, ScalarType.Float64, requires_grad: requiresGrad), StringComparer.Ordinal);

    /// <summary>PyTorch's bilinear interpolate, align_corners false (the official calls leave it unset, which means false).</summary>
    public static Tensor Bilinear(Tensor image, long height, long width) =>
        F.interpolate(image, [height, width], mode: InterpolationMode.Bilinear, align_corners: false);

    /// <summary>
    /// agent-pvt's y [B, N, C] for x [B, N, C] on an H×W grid (N = H·W), the steps of docs/vision-forms.md §1. A grid other
    /// than the one the biases were made for interpolates them as the official downstream (detection/segmentation) code does.
    /// </summary>
    public static Tensor AgentPvt(AgentPvtConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor x, long height, long width)
    {
        long b = x.shape[0], tokens = x.shape[1], dm = c.DModel, heads = c.Heads, r = c.SrRatio;
        long kh = height / r, kw = width / r, keys = kh * kw, side = c.AgentSide;
        var (ph, pw) = c.Pool;
        long agents = (long)ph * pw;
        double scale = 1 / Math.Sqrt(c.HeadDim);
        // q = x q.weightᵀ (+ q.bias);  [k | v] = x' kv.weightᵀ (+ kv.bias) with x' the reduced grid when r > 1
        var q = F.linear(x, w["q.weight"], c.QkvBias ? w["q.bias"] : null);
        var kv = F.linear(Reduced(c.SrRatio, w, x, height, width), w["kv.weight"], c.QkvBias ? w["kv.bias"] : null);
        var k = kv[.., .., ..(int)dm];
        var v = kv[.., .., (int)dm..];
        // agents: AdaptiveAvgPool2d of q as an image [B, C, H, W] to ph×pw, row-major over the pooled grid
        var agentTokens = F.adaptive_avg_pool2d(Image(q, height, width), [ph, pw]).reshape(b, dm, agents).transpose(1, 2);
        Tensor Split(Tensor z) => z.reshape(b, z.shape[1], heads, c.HeadDim).transpose(1, 2);
        var (qh, kh2, vh, ah) = (Split(q), Split(k), Split(v), Split(agentTokens));

        // b1 [h, n, keys]: an_bias bilinear to the key grid, plus ah_bias[i] + aw_bias[j]
        var rowCol1 = (w["ah_bias"] + w["aw_bias"]).squeeze(0);                          // [h, n, GridH/r, GridW/r]
        var b1 = Bilinear(w["an_bias"], kh, kw) + ToGrid(rowCol1, kh, kw);               // [h, n, kh, kw]
        b1 = ToAgents(b1.reshape(heads, c.Agents, keys), side, ph, pw).transpose(1, 2); // [h, agents, keys]
        // b2 [h, N, n]: na_bias bilinear to the query grid, plus ha_bias[i] + wa_bias[j]
        var rowCol2 = (w["ha_bias"] + w["wa_bias"]).squeeze(0).permute(0, 3, 1, 2);      // [h, n, GridH, GridW]
        var b2 = Bilinear(w["na_bias"], height, width) + ToGrid(rowCol2, height, width);
        b2 = ToAgents(b2.reshape(heads, c.Agents, tokens), side, ph, pw);               // [h, N, agents]

        // V_A = softmax(scale·A kᵀ + b1) v;   O = softmax(scale·q Aᵀ + b2) V_A
        var agentValues = F.softmax((ah * scale).matmul(kh2.transpose(-2, -1)) + b1, -1).matmul(vh);
        var o = F.softmax((qh * scale).matmul(ah.transpose(-2, -1)) + b2, -1).matmul(agentValues);
        var merged = o.transpose(1, 2).reshape(b, tokens, dm);
        // v as an image on the key grid, bilinear to H×W when reduced, through the depthwise k×k Conv2d (zero padding k/2)
        var vImage = Image(v, kh, kw);
        if (r > 1)
        {
            vImage = Bilinear(vImage, height, width);
        }
        long pad = c.DwcKernel / 2;
        var dwc = F.conv2d(vImage, w["dwc.weight"], w["dwc.bias"], padding: [pad, pad], groups: dm);
        return F.linear(merged + dwc.reshape(b, dm, tokens).transpose(1, 2), w["proj.weight"], w["proj.bias"]);
    }

    /// <summary>flatten-pvt's y [B, N, C] for x [B, N, C] on an H×W grid, the steps of docs/vision-forms.md §2.</summary>
    public static Tensor FlattenPvt(FlattenPvtConfig c, IReadOnlyDictionary<string, Tensor> w, Tensor x, long height, long width)
    {
        long b = x.shape[0], tokens = x.shape[1], dm = c.DModel, heads = c.Heads, d = c.HeadDim, r = c.SrRatio;
        long kh = height / r, kw = width / r, keys = kh * kw;
        var q = F.linear(x, w["q.weight"], c.QkvBias ? w["q.bias"] : null);
        var kv = F.linear(Reduced(c.SrRatio, w, x, height, width), w["kv.weight"], c.QkvBias ? w["kv.bias"] : null);
        var k = kv[.., .., ..(int)dm];
        var v = kv[.., .., (int)dm..];
        // k + positional_encoding [1, T', C]; on another grid the encoding, as an image, bilinear to the key grid
        var pos = w["positional_encoding"];
        if (kh != c.GridH / r || kw != c.GridW / r)
        {
            pos = Bilinear(Image(pos, c.GridH / r, c.GridW / r), kh, kw).reshape(1, dm, keys).transpose(1, 2);
        }
        k = k + pos;
        // ReLU + 1e-6, / softplus(scale), then the focusing function per token over all C channels
        var sc = F.softplus(w["scale"]);
        Tensor Focus(Tensor z)
        {
            z = (F.relu(z) + 1e-6) / sc;
            var norm = z.norm(-1, true);
            var powered = z.pow(c.FocusingFactor);
            return powered / powered.norm(-1, true) * norm;
        }
        Tensor Split(Tensor z) => z.reshape(b, z.shape[1], heads, d).transpose(1, 2);
        var (qh, kh2, vh) = (Split(Focus(q)), Split(Focus(k)), Split(v));
        // z = 1 / (q · mean(k) + 1e-6);  kv = (kᵀ/√T')(v/√T');  O = (q kv) z
        var z = 1 / (qh.matmul(kh2.mean([-2L], keepdim: true).transpose(-2, -1)) + 1e-6);
        var kvProduct = (kh2.transpose(-2, -1) / Math.Sqrt(keys)).matmul(vh / Math.Sqrt(keys));
        var o = qh.matmul(kvProduct) * z;
        var merged = o.transpose(1, 2).reshape(b, tokens, dm);
        // v per head [B·h, d, T'] linear over the row-major token sequence to N tokens (1-D, not bilinear), when reduced
        var vSeq = vh.transpose(-2, -1).reshape(b * heads, d, keys);
        if (r > 1)
        {
            vSeq = F.interpolate(vSeq, [tokens], mode: InterpolationMode.Linear, align_corners: false);
        }
        // each head's v as a d-channel image, the k×k depthwise filters shared by the heads; channel h·d + j of the output
        long pad = c.DwcKernel / 2;
        var dwc = F.conv2d(vSeq.reshape(b * heads, d, height, width), w["dwc.weight"], w["dwc.bias"], padding: [pad, pad], groups: d);
        return F.linear(merged + dwc.reshape(b, dm, tokens).transpose(1, 2), w["proj.weight"], w["proj.bias"]);
    }

    // [B, N, C] as an image [B, C, H, W] (row-major tokens).
    private static Tensor Image(Tensor tokens, long height, long width) =>
        tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width);

    // x' for the keys and values: x itself, or LayerNorm(Conv2d_{r×r, stride r}(x as an image)) on the (H/r)×(W/r) grid.
    private static Tensor Reduced(int r, IReadOnlyDictionary<string, Tensor> w, Tensor x, long height, long width)
    {
        if (r == 1)
        {
            return x;
        }
        var reduced = F.conv2d(Image(x, height, width), w["sr.weight"], w["sr.bias"], strides: [r, r]);
        reduced = reduced.reshape(x.shape[0], x.shape[2], -1).transpose(1, 2);
        return F.layer_norm(reduced, [x.shape[2]], w["norm.weight"], w["norm.bias"], NormEpsilon);
    }

    // A row+column bias sum [h, n, gh, gw] on the grid it was made for, or bilinear to another (the downstream code's rule).
    private static Tensor ToGrid(Tensor rowCol, long height, long width) =>
        rowCol.shape[2] == height && rowCol.shape[3] == width ? rowCol : Bilinear(rowCol, height, width);

    // [h, n, P] over the agents' own √n×√n grid → [h, P, agents]: unchanged, or bilinear over the agent axes to ph×pw.
    private static Tensor ToAgents(Tensor bias, long side, long ph, long pw)
    {
        long heads = bias.shape[0], positions = bias.shape[2];
        var perPosition = bias.transpose(1, 2);
        if (ph == side && pw == side)
        {
            return perPosition;
        }
        var grid = perPosition.reshape(heads, positions, side, side);
        return Bilinear(grid, ph, pw).reshape(heads, positions, ph * pw);
    }
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>
/// The shared pieces of the independent F64 formulas of variants.md (the <c>*Formula</c> classes of this folder): plain loops
/// over <see cref="double"/> arrays, never the library's ops. Only the layer under test (built, filled and run here) uses
/// library types; the formulas see its parameters as plain arrays.
/// </summary>
internal static class FormulaKit
{
    /// <summary>
    /// Tolerance of a layer output against its formula, relative to 1 + max|formula|. Both sides compute in F64 (unit round-off
    /// 1.1e-16) through at most a few hundred multiply-adds per output, on values of order 1, so their honest difference is
    /// ~1e-14; 1e-10 leaves four orders of headroom for summation order and the exp/sin/cos of each side, while every real
    /// mistake (a wrong scale, RoPE pair, head mapping, decay or bias) moves the output by ≥ 1e-6 relative.
    /// </summary>
    public const double Tolerance = 1e-10;

    /// <summary>
    /// A layer in F64 on the CPU with every parameter drawn from a normal distribution (seeded by <paramref name="seed"/> and
    /// the parameter's index): weights with standard deviation 1/sqrt(fan_in), the parameters the library starts at 0 or 1
    /// (norm gains, biases, FLatten's scale) and the score biases at 1 ± 0.5 or ± 0.5, so that none of them is a no-op.
    /// </summary>
    public static AttentionLayer Layer(LayerConfig config, int seed = 17)
    {
        var layer = AttentionLayer.Create(config, Backend.Cpu, DType.F64);
        int index = 0;
        foreach (var spec in layer.ParameterSpecs)
        {
            long count = spec.Shape.ElementCount;
            long fanIn = spec.Shape.Rank <= 1 ? count : count / spec.Shape[0];
            double scale = spec.Init == ParameterInit.FanIn ? 1 / Math.Sqrt(fanIn) : 0.5;
            var values = TestData.Normal((seed * 1000) + index++, count, scale);
            if (spec.Init == ParameterInit.Ones)
            {
                values = [.. values.Select(v => 1 + v)];
            }
            layer.Parameters[spec.Name].CopyFrom(values);
        }
        return layer;
    }

    /// <summary>The layer's parameters as plain arrays, by their variants.md names.</summary>
    public static Dictionary<string, double[]> Weights(AttentionLayer layer) =>
        layer.Parameters.ToDictionary(p => p.Key, p => p.Value.ToDoubleArray(), StringComparer.Ordinal);

    /// <summary>The layer's forward of x [batch, tokens, d_model].</summary>
    public static double[] Forward(AttentionLayer layer, double[] x, int batch, int tokens)
    {
        using var tx = Backend.Cpu.FromArray(x, new Shape(batch, tokens, layer.Config.DModel), DType.F64);
        using var y = layer.Forward(tx);
        return y.ToDoubleArray();
    }

    /// <summary>
    /// The layer's outputs for x [batch, tokens, d_model] through its cache: prefill of the first <paramref name="prompt"/>
    /// tokens (none when 0), then one token at a time; the rows laid out as the full forward's.
    /// </summary>
    public static double[] Decode(CausalAttentionLayer layer, double[] x, int batch, int tokens, int prompt)
    {
        int dm = layer.Config.DModel;
        var y = new double[x.Length];
        using var cache = layer.CreateCache(batch, new CacheOptions(InitialCapacity: 1));
        for (int t0 = 0; t0 < tokens;)
        {
            int count = t0 == 0 && prompt > 0 ? prompt : 1;
            var part = new double[batch * count * dm];
            for (int b = 0; b < batch; b++)
            {
                Array.Copy(x, ((b * tokens) + t0) * dm, part, b * count * dm, count * dm);
            }
            using var tx = Backend.Cpu.FromArray(part, new Shape(batch, count, dm), DType.F64);
            using var ty = count == 1 && t0 >= prompt ? cache.DecodeStep(tx) : cache.Prefill(tx);
            var values = ty.ToDoubleArray();
            for (int b = 0; b < batch; b++)
            {
                Array.Copy(values, b * count * dm, y, ((b * tokens) + t0) * dm, count * dm);
            }
            t0 += count;
        }
        Assert.That(cache.Length, Is.EqualTo(tokens));
        return y;
    }

    /// <summary>
    /// Adds a depthwise Conv1d over the tokens of v [batch, t, channels] into o: zero padding (k − 1)/2, channel ch through
    /// filter <paramref name="filterOf"/>(ch) (its own, or one shared across heads) with that filter's bias.
    /// </summary>
    public static void AddDepthwiseConv(double[] o, double[] v, int batch, int t, int channels, double[] weight, double[] bias, int kernel, Func<int, int> filterOf)
    {
        int pad = (kernel - 1) / 2;
        for (int b = 0; b < batch; b++)
        {
            for (int p = 0; p < t; p++)
            {
                for (int ch = 0; ch < channels; ch++)
                {
                    int filter = filterOf(ch);
                    double sum = bias[filter];
                    for (int j = 0; j < kernel; j++)
                    {
                        int at = p + j - pad;
                        if (at >= 0 && at < t)
                        {
                            sum += weight[(filter * kernel) + j] * v[(((b * t) + at) * channels) + ch];
                        }
                    }
                    o[(((b * t) + p) * channels) + ch] += sum;
                }
            }
        }
    }

    /// <summary>The formula of <paramref name="config"/>'s variant: y of x [batch, tokens, d_model] with the weights <paramref name="w"/>.</summary>
    public static double[] ForwardOf(LayerConfig config, IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens) => config switch
    {
        GqaConfig c => GqaFormula.Forward(c, w, x, batch, tokens),
        MlaConfig c => MlaFormula.Forward(c, w, x, batch, tokens),
        TpaConfig c => TpaFormula.Forward(c, w, x, batch, tokens),
        SasConfig c => SasLayerFormula.Forward(c, w, x, batch, tokens),
        AgentConfig c => AgentFormula.Forward(c, w, x, batch),
        FlattenConfig c => FlattenFormula.Forward(c, w, x, batch),
        TransNormerConfig c => TransNormerFormula.Forward(c, w, x, batch, tokens),
        MfaConfig c => MfaFormula.Forward(c, w, x, batch, tokens),
        _ => throw new ArgumentException($"no formula for {config.GetType().Name}", nameof(config)),
    };

    /// <summary>Asserts max|actual − formula| ≤ <see cref="Tolerance"/> · (1 + max|formula|).</summary>
    public static void AssertMatches(double[] actual, double[] formula, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(formula.Length), what);
        double scale = 1 + formula.Max(Math.Abs);
        double error = actual.Zip(formula, (a, e) => Math.Abs(a - e)).Max() / scale;
        TestContext.Out.WriteLine($"{what}: max |layer − formula| / (1 + max|formula|) = {error:E2}");
        Assert.That(error, Is.LessThanOrEqualTo(Tolerance), $"{what}: max |layer − formula| / (1 + max|formula|)");
    }

    /// <summary>rows [n, inWidth] · wᵀ (+ bias), w [outWidth, inWidth] → [n, outWidth] (the nn.Linear convention).</summary>
    public static double[] Dense(double[] rows, int n, int inWidth, double[] w, double[]? bias, int outWidth)
    {
        var y = new double[n * outWidth];
        for (int r = 0; r < n; r++)
        {
            for (int o = 0; o < outWidth; o++)
            {
                double sum = bias is null ? 0 : bias[o];
                for (int i = 0; i < inWidth; i++)
                {
                    sum += rows[(r * inWidth) + i] * w[(o * inWidth) + i];
                }
                y[(r * outWidth) + o] = sum;
            }
        }
        return y;
    }

    /// <summary>
    /// RMSNorm(x; g) = x · g / sqrt(mean(x²) + ε) over each row of [n, width], ε = 1e-6 unless given (mfa's norm_eps);
    /// SRMSNorm when g is null.
    /// </summary>
    public static double[] RmsNorm(double[] rows, int n, int width, double[]? gain, double epsilon = 1e-6)
    {
        var y = new double[n * width];
        for (int r = 0; r < n; r++)
        {
            double squares = 0;
            for (int i = 0; i < width; i++)
            {
                squares += rows[(r * width) + i] * rows[(r * width) + i];
            }
            double inverse = 1 / Math.Sqrt((squares / width) + epsilon);
            for (int i = 0; i < width; i++)
            {
                y[(r * width) + i] = rows[(r * width) + i] * inverse * (gain is null ? 1 : gain[i]);
            }
        }
        return y;
    }

    /// <summary>
    /// RoPE in place on every row of data [batch, tokens, rows, width]: the n columns from <paramref name="offset"/> of the row
    /// of token t turn by position t, θ_j = base^(−2j/n); <c>half</c> pairs (j, j+n/2), <c>interleaved</c> pairs (2j, 2j+1):
    /// y_a = x_a cos(tθ_j) − x_b sin(tθ_j), y_b = x_b cos(tθ_j) + x_a sin(tθ_j). With <paramref name="scaling"/>, YaRN's θ_j
    /// and cos, sin times its amplitude (<see cref="RopeFrequencies"/>).
    /// </summary>
    public static void Rope(double[] data, int batch, int tokens, int rows, int width, int offset, int n, double ropeBase, RopeStyle style,
        RopeScaling? scaling = null)
    {
        var (theta, amplitude) = RopeFrequencies(n, ropeBase, scaling);
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < rows; r++)
                {
                    int start = (((((b * tokens) + t) * rows) + r) * width) + offset;
                    for (int j = 0; j < n / 2; j++)
                    {
                        double angle = t * theta[j];
                        int ia = style == RopeStyle.Half ? start + j : start + (2 * j);
                        int ib = style == RopeStyle.Half ? ia + (n / 2) : ia + 1;
                        double xa = data[ia], xb = data[ib];
                        data[ia] = amplitude * ((xa * Math.Cos(angle)) - (xb * Math.Sin(angle)));
                        data[ib] = amplitude * ((xb * Math.Cos(angle)) + (xa * Math.Sin(angle)));
                    }
                }
            }
        }
    }

    /// <summary>
    /// The RoPE frequencies θ_j (j &lt; n/2) on a rotated width n and the amplitude on cos and sin, from variants.md "RoPE scaling"
    /// alone: θ⁰_j = base^(−2j/n) and amplitude 1 without scaling; with YaRN (s, L0, β_f, β_s, m, m_a),
    /// corr(r) = n·ln(L0/(2πr))/(2 ln base), lo = max(floor(corr(β_f)), 0), hi = min(ceil(corr(β_s)), n−1) (+0.001 if equal),
    /// ramp_j = clamp((j − lo)/(hi − lo), 0, 1), θ_j = θ⁰_j/s · ramp_j + θ⁰_j · (1 − ramp_j), amplitude μ(s, m)/μ(s, m_a).
    /// </summary>
    public static (double[] Theta, double Amplitude) RopeFrequencies(int n, double ropeBase, RopeScaling? scaling)
    {
        var theta = new double[n / 2];
        for (int j = 0; j < n / 2; j++)
        {
            theta[j] = Math.Pow(ropeBase, -2.0 * j / n);
        }
        if (scaling is null)
        {
            return (theta, 1.0);
        }
        double Correction(double rotations) => n * Math.Log(scaling.OriginalMaxPositions / (2 * Math.PI * rotations)) / (2 * Math.Log(ropeBase));
        double lo = Math.Max(Math.Floor(Correction(scaling.BetaFast)), 0);
        double hi = Math.Min(Math.Ceiling(Correction(scaling.BetaSlow)), n - 1);
        if (lo == hi)
        {
            hi += 0.001;
        }
        for (int j = 0; j < n / 2; j++)
        {
            double ramp = Math.Clamp((j - lo) / (hi - lo), 0, 1);
            theta[j] = (theta[j] / scaling.Factor * ramp) + (theta[j] * (1 - ramp));
        }
        return (theta, Mu(scaling.Factor, scaling.MScale) / Mu(scaling.Factor, scaling.MScaleAllDim));
    }

    /// <summary>The factor on a variant's softmax scale under YaRN: μ(s, m_a)² (1 without scaling).</summary>
    public static double SoftmaxScaleFactor(RopeScaling? scaling) =>
        scaling is null ? 1 : Mu(scaling.Factor, scaling.MScaleAllDim) * Mu(scaling.Factor, scaling.MScaleAllDim);

    // μ(s, a) = 0.1·a·ln(s) + 1 if s > 1 else 1.
    private static double Mu(double s, double a) => s > 1 ? (0.1 * a * Math.Log(s)) + 1 : 1;

    /// <summary>
    /// Softmax attention: q [batch, tokens, heads, dk], k [batch, tokens, kvHeads, dk], v [batch, tokens, kvHeads, dv]; query
    /// head i reads key/value head <paramref name="kvHead"/>(i); S = q kᵀ · scale with keys after the query masked to −∞ when
    /// causal; o = softmax_row(S) v → [batch, tokens, heads, dv].
    /// </summary>
    public static double[] SoftmaxAttention(double[] q, double[] k, double[] v, int batch, int tokens, int heads, int kvHeads, int dk, int dv,
        Func<int, int> kvHead, double scale, bool causal)
    {
        var o = new double[batch * tokens * heads * dv];
        var scores = new double[tokens];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                int g = kvHead(h);
                for (int i = 0; i < tokens; i++)
                {
                    int keys = causal ? i + 1 : tokens;
                    double max = double.NegativeInfinity;
                    for (int s = 0; s < keys; s++)
                    {
                        double dot = 0;
                        for (int c = 0; c < dk; c++)
                        {
                            dot += q[(((((b * tokens) + i) * heads) + h) * dk) + c] * k[(((((b * tokens) + s) * kvHeads) + g) * dk) + c];
                        }
                        scores[s] = dot * scale;
                        max = Math.Max(max, scores[s]);
                    }
                    double total = 0;
                    for (int s = 0; s < keys; s++)
                    {
                        scores[s] = Math.Exp(scores[s] - max);
                        total += scores[s];
                    }
                    for (int s = 0; s < keys; s++)
                    {
                        for (int c = 0; c < dv; c++)
                        {
                            o[(((((b * tokens) + i) * heads) + h) * dv) + c] += scores[s] / total * v[(((((b * tokens) + s) * kvHeads) + g) * dv) + c];
                        }
                    }
                }
            }
        }
        return o;
    }
}

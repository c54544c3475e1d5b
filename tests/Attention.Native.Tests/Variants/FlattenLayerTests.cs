using Attention.Native.Variants;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Variants;

public class FlattenLayerTests
{
    private static FlattenConfig Config(int dModel, int heads, int seqLen, double p, int kernel) => new()
    {
        DModel = dModel, Heads = heads, SeqLen = seqLen, FocusingFactor = p, DwcKernel = kernel,
    };

    // p = 1, 2, 3 and a fractional one; T = 1; one head and several; kernels 1, 3, 5 (5 wider than T = 3).
    [TestCase(6, 2, 5, 3.0, 5, 2)]
    [TestCase(4, 1, 1, 1.0, 1, 1)]
    [TestCase(6, 3, 4, 2.0, 3, 2)]
    [TestCase(8, 2, 3, 3.0, 5, 1)]
    [TestCase(4, 2, 6, 2.5, 3, 1)]
    public void Gradients_match_finite_differences(int dModel, int heads, int seqLen, double p, int kernel, int batch)
    {
        using var layer = VariantTestKit.Layer(Config(dModel, heads, seqLen, p, kernel));
        // scale starts at zeros (the same softplus for every channel): spread it so a channel mix-up would show.
        Randomize(layer, "scale", 31);
        // Away from the points where q·mean k nears its 1e-6 (see the helper): there the FD truncation, not the gradient, errs.
        ShiftQueriesAndKeysPositive(layer);
        double error = VariantTestKit.GradientError(layer, batch, seqLen);
        GradientCheck.AssertClose($"flatten C={dModel} h={heads} T={seqLen} p={p} k={kernel} B={batch}", error);
    }

    [TestCase(6, 2, 5, 3.0, 3, 2)]
    [TestCase(4, 1, 3, 2.0, 5, 1)]
    public void Forward_equals_the_formula_written_out(int c, int h, int t, double p, int kernel, int b)
    {
        using var layer = VariantTestKit.Layer(Config(c, h, t, p, kernel));
        Randomize(layer, "scale", 32);
        int d = c / h;
        var x = TestData.Normal(9, b * t * c);
        double[] W(string name) => layer.Parameters[name].ToDoubleArray();
        var q = Project(x, W("w_q"), W("b_q"), b * t, c);
        var k = Project(x, W("w_k"), W("b_k"), b * t, c);
        var v = Project(x, W("w_v"), W("b_v"), b * t, c);
        var posEnc = W("pos_enc");
        for (int r = 0; r < b * t; r++)
        {
            for (int ch = 0; ch < c; ch++)
            {
                k[(r * c) + ch] += posEnc[((r % t) * c) + ch];
            }
        }
        var softplus = W("scale").Select(s => Math.Log(1 + Math.Exp(s))).ToArray();
        Focus(q, softplus, b * t, c, p);
        Focus(k, softplus, b * t, c, p);
        var dwcW = W("dwc_w");
        var dwcB = W("dwc_b");
        var mixed = new double[b * t * c];
        for (int bi = 0; bi < b; bi++)
        {
            for (int hi = 0; hi < h; hi++)
            {
                int Index(int tt, int j) => (((bi * t) + tt) * c) + (hi * d) + j;
                // kv = kᵀ v / T and mean_T(k), then O_t = (q_t kv) / (q_t · mean k + 1e-6).
                var kv = new double[d, d];
                var meanK = new double[d];
                for (int tt = 0; tt < t; tt++)
                {
                    for (int i = 0; i < d; i++)
                    {
                        meanK[i] += k[Index(tt, i)] / t;
                        for (int j = 0; j < d; j++)
                        {
                            kv[i, j] += k[Index(tt, i)] * v[Index(tt, j)] / t;
                        }
                    }
                }
                for (int tt = 0; tt < t; tt++)
                {
                    double z = 1e-6;
                    for (int i = 0; i < d; i++)
                    {
                        z += q[Index(tt, i)] * meanK[i];
                    }
                    for (int j = 0; j < d; j++)
                    {
                        double sum = 0;
                        for (int i = 0; i < d; i++)
                        {
                            sum += q[Index(tt, i)] * kv[i, j];
                        }
                        // Depthwise conv of v over T: head hi's channel j uses filter j, shared by all heads.
                        double conv = dwcB[j];
                        for (int tap = 0; tap < kernel; tap++)
                        {
                            int source = tt + tap - ((kernel - 1) / 2);
                            if (source >= 0 && source < t)
                            {
                                conv += dwcW[(j * kernel) + tap] * v[Index(source, j)];
                            }
                        }
                        mixed[Index(tt, j)] = (sum / z) + conv;
                    }
                }
            }
        }
        var expected = Project(mixed, W("w_o"), W("b_o"), b * t, c);
        using var tx = Backend.Cpu.FromArray(x, new Shape(b, t, c), DType.F64);
        using var y = layer.Forward(tx);
        Assert.That(y.ToDoubleArray(), Is.EqualTo(expected).Within(1e-12));
    }

    [Test]
    public void Parameters_have_the_names_and_shapes_of_variants_md()
    {
        // Benchmark config: C 512, h 8 (d 64), T 3136, p 3, k 5.
        using var layer = new FlattenLayer(Config(512, 8, 3136, 3, 5));
        Assert.That(layer.ParameterSpecs.Select(s => $"{s.Name} {s.Shape}"), Is.EqualTo(new[]
        {
            "w_q [512, 512]", "w_k [512, 512]", "w_v [512, 512]", "b_q [512]", "b_k [512]", "b_v [512]",
            "pos_enc [3136, 512]", "scale [512]", "dwc_w [64, 1, 5]", "dwc_b [64]", "w_o [512, 512]", "b_o [512]",
        }));
        Assert.That(layer.ParameterSpecs.All(s => s.Learnable));
        Assert.That(layer.IsCausal, Is.False);
        Assert.That(layer.ParameterCount, Is.EqualTo((4L * 512 * 512) + (5 * 512) + (3136L * 512) + (64 * 5) + 64));
    }

    [Test]
    public void Initialization_starts_scale_at_zero_and_pos_enc_small()
    {
        using var layer = VariantTestKit.Layer(Config(8, 2, 16, 3, 5));
        Assert.That(layer.Parameters["scale"].ToDoubleArray(), Is.All.EqualTo(0.0));
        var posEnc = layer.Parameters["pos_enc"].ToDoubleArray();
        Assert.That(Math.Sqrt(posEnc.Select(v => v * v).Average()), Is.InRange(0.01, 0.03));
    }

    [Test]
    public void Input_length_must_equal_seq_len()
    {
        using var layer = new FlattenLayer(Config(4, 2, 5, 3, 3));
        using var x = Backend.Cpu.Zeros(new Shape(1, 6, 4));
        Ops.LinearTests.AssertArgument(() => layer.Forward(x), "x", "[B, seq_len = 5, 4]", "[1, 6, 4]");
        Ops.LinearTests.AssertArgument(() => layer.ForwardForTraining(x), "x", "[B, seq_len = 5, 4]", "[1, 6, 4]");
        using var right = Backend.Cpu.Zeros(new Shape(1, 5, 4));
        using var y = layer.Forward(right);
        Assert.That(y.Shape, Is.EqualTo(new Shape(1, 5, 4)));
    }

    [Test]
    public void Configs_are_validated_with_clear_errors()
    {
        static string Message(string json) => Assert.Throws<ArgumentException>(() => LayerConfig.Parse("flatten", json))!.Message;
        const string Good = "\"d_model\": 64, \"n_heads\": 4, \"seq_len\": 32";
        Assert.That(Message("{" + Good + ", \"causal\": true}"), Does.Contain("causal").And.Contain("non-causal"));
        Assert.That(Message("{" + Good + ", \"dwc_kernel\": 2}"), Does.Contain("dwc_kernel").And.Contain("odd"));
        Assert.That(Message("{" + Good + ", \"focusing_factor\": 0}"), Does.Contain("focusing_factor"));
        Assert.That(Message("{" + Good + ", \"focusing_factor\": \"3\"}"), Does.Contain("focusing_factor: expected a number"));
        Assert.That(Message("{" + Good.Replace("\"n_heads\": 4", "\"n_heads\": 6", StringComparison.Ordinal) + "}"), Does.Contain("n_heads").And.Contain("divisor of d_model 64"));
        Assert.That(Message("{\"d_model\": 64, \"n_heads\": 4, \"n_agents\": 8}"), Does.Contain("missing keys: seq_len").And.Contain("unknown keys: n_agents"));
        var parsed = (FlattenConfig)LayerConfig.Parse("flatten", "{" + Good + "}");
        Assert.That((parsed.FocusingFactor, parsed.DwcKernel, parsed.HeadDim), Is.EqualTo((3.0, 5, 16)));
        Assert.That(LayerConfig.Parse("flatten", parsed.ToJson()), Is.EqualTo(parsed));
        Assert.That(AttentionLayer.Create(parsed with { DModel = 8, Heads = 2 }), Is.TypeOf<FlattenLayer>());
    }

    // The focusing map normalises over all C channels, and with p = 3 and a spread scale one head of a token can take nearly
    // all of its mass, leaving another head's q (or a channel's mean key) so small that q·mean k lands near the normaliser's
    // 1e-6. There o = q·kv / (q·mean k + 1e-6) turns over within a few 1e-3 of a small positive pre-activation: the layer is
    // smooth but its third derivative reaches 1e7 and more, and the h² truncation of the central difference alone exceeds the
    // tolerance (checked on such a point: the difference falls 100× per 10× smaller step, to 5e-8 at h = 1e-7, so the
    // analytic gradient is right there too). Raising b_q and b_k by 1 keeps most pre-activations well above 0 and every
    // head's q·mean k far above 1e-6; a few still fall below the ReLU.
    private static void ShiftQueriesAndKeysPositive(AttentionLayer layer)
    {
        foreach (var name in new[] { "b_q", "b_k" })
        {
            var bias = layer.Parameters[name];
            bias.CopyFrom(bias.ToDoubleArray().Select(v => v + 1.0).ToArray());
        }
    }

    private static void Randomize(AttentionLayer layer, string name, int seed)
    {
        var tensor = layer.Parameters[name];
        tensor.CopyFrom(TestData.Normal(seed, tensor.Shape.ElementCount));
    }

    // Per token over all C channels: u = (ReLU(x) + 1e-6) / softplus(scale); x ← ‖u‖ · u^p / ‖u^p‖.
    private static void Focus(double[] x, double[] softplus, int rows, int c, double p)
    {
        for (int r = 0; r < rows; r++)
        {
            var u = Enumerable.Range(0, c).Select(ch => (Math.Max(x[(r * c) + ch], 0) + 1e-6) / softplus[ch]).ToArray();
            var powered = u.Select(e => Math.Pow(e, p)).ToArray();
            double norm = Math.Sqrt(u.Sum(e => e * e)), poweredNorm = Math.Sqrt(powered.Sum(e => e * e));
            for (int ch = 0; ch < c; ch++)
            {
                x[(r * c) + ch] = powered[ch] / poweredNorm * norm;
            }
        }
    }

    private static double[] Project(double[] x, double[] w, double[] bias, int rows, int width)
    {
        var y = new double[rows * width];
        for (int r = 0; r < rows; r++)
        {
            for (int o = 0; o < width; o++)
            {
                double sum = bias[o];
                for (int i = 0; i < width; i++)
                {
                    sum += x[(r * width) + i] * w[(o * width) + i];
                }
                y[(r * width) + o] = sum;
            }
        }
        return y;
    }
}

using Attention.Native.Variants;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Variants;

public class AgentLayerTests
{
    private static AgentConfig Config(int dModel, int heads, int agents, int seqLen, int kernel) => new()
    {
        DModel = dModel, Heads = heads, Agents = agents, SeqLen = seqLen, DwcKernel = kernel,
    };

    // T = 1 with one agent; more agents than tokens; n not dividing T; one head and several; kernels 1, 3, 5.
    [TestCase(4, 2, 1, 1, 1, 1)]
    [TestCase(4, 1, 5, 3, 3, 2)]
    [TestCase(6, 2, 3, 7, 5, 2)]
    [TestCase(8, 4, 2, 6, 3, 1)]
    [TestCase(6, 3, 4, 4, 1, 2)]
    public void Gradients_match_finite_differences(int dModel, int heads, int agents, int seqLen, int kernel, int batch)
    {
        using var layer = VariantTestKit.Layer(Config(dModel, heads, agents, seqLen, kernel));
        // The score biases start near zero (std 0.02): make them large enough that a wrong bias gradient shows.
        Randomize(layer, "bias_ak", 21);
        Randomize(layer, "bias_qa", 22);
        double error = VariantTestKit.GradientError(layer, batch, seqLen);
        GradientCheck.AssertClose($"agent C={dModel} h={heads} n={agents} T={seqLen} k={kernel} B={batch}", error);
    }

    [TestCase(6, 2, 3, 7, 3, 2)]
    [TestCase(4, 1, 5, 3, 5, 1)]
    public void Forward_equals_the_formula_written_out(int c, int h, int n, int t, int kernel, int b)
    {
        using var layer = VariantTestKit.Layer(Config(c, h, n, t, kernel));
        Randomize(layer, "bias_ak", 23);
        Randomize(layer, "bias_qa", 24);
        int d = c / h;
        double s = 1 / Math.Sqrt(d);
        var x = TestData.Normal(9, b * t * c);
        double[] W(string name) => layer.Parameters[name].ToDoubleArray();
        var q = Project(x, W("w_q"), W("b_q"), b * t, c);
        var k = Project(x, W("w_k"), W("b_k"), b * t, c);
        var v = Project(x, W("w_v"), W("b_v"), b * t, c);
        var biasAk = W("bias_ak");
        var biasQa = W("bias_qa");
        var dwcW = W("dwc_w");
        var dwcB = W("dwc_b");
        var mixed = new double[b * t * c];
        for (int bi = 0; bi < b; bi++)
        {
            // A[i] = mean of q over positions floor(iT/n) … ceil((i+1)T/n)-1.
            var agents = new double[n * c];
            for (int i = 0; i < n; i++)
            {
                int start = i * t / n, end = ((i + 1) * t + n - 1) / n;
                for (int tt = start; tt < end; tt++)
                {
                    for (int ch = 0; ch < c; ch++)
                    {
                        agents[(i * c) + ch] += q[(((bi * t) + tt) * c) + ch] / (end - start);
                    }
                }
            }
            for (int hi = 0; hi < h; hi++)
            {
                // V_A[i] = Σ_s softmax_s(s A_i·k_s + bias_ak[h,i,s]) v_s.
                var agentValues = new double[n * d];
                for (int i = 0; i < n; i++)
                {
                    var p = Softmax(Enumerable.Range(0, t).Select(ss =>
                        (s * Dot(agents, (i * c) + (hi * d), k, (((bi * t) + ss) * c) + (hi * d), d)) + biasAk[(((hi * n) + i) * t) + ss]).ToArray());
                    for (int ss = 0; ss < t; ss++)
                    {
                        for (int j = 0; j < d; j++)
                        {
                            agentValues[(i * d) + j] += p[ss] * v[(((bi * t) + ss) * c) + (hi * d) + j];
                        }
                    }
                }
                // O_t = Σ_i softmax_i(s q_t·A_i + bias_qa[h,t,i]) V_A[i].
                for (int tt = 0; tt < t; tt++)
                {
                    var p = Softmax(Enumerable.Range(0, n).Select(i =>
                        (s * Dot(q, (((bi * t) + tt) * c) + (hi * d), agents, (i * c) + (hi * d), d)) + biasQa[(((hi * t) + tt) * n) + i]).ToArray());
                    for (int i = 0; i < n; i++)
                    {
                        for (int j = 0; j < d; j++)
                        {
                            mixed[(((bi * t) + tt) * c) + (hi * d) + j] += p[i] * agentValues[(i * d) + j];
                        }
                    }
                }
            }
            // Depthwise conv of v over T, one filter per channel of C, zero padding (k-1)/2.
            for (int tt = 0; tt < t; tt++)
            {
                for (int ch = 0; ch < c; ch++)
                {
                    double sum = dwcB[ch];
                    for (int j = 0; j < kernel; j++)
                    {
                        int source = tt + j - ((kernel - 1) / 2);
                        if (source >= 0 && source < t)
                        {
                            sum += dwcW[(ch * kernel) + j] * v[(((bi * t) + source) * c) + ch];
                        }
                    }
                    mixed[(((bi * t) + tt) * c) + ch] += sum;
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
        // Benchmark config: C 512, h 8, n 49, T 3136, k 3.
        using var layer = new AgentLayer(Config(512, 8, 49, 3136, 3));
        Assert.That(layer.ParameterSpecs.Select(p => $"{p.Name} {p.Shape}"), Is.EqualTo(new[]
        {
            "w_q [512, 512]", "w_k [512, 512]", "w_v [512, 512]", "b_q [512]", "b_k [512]", "b_v [512]",
            "bias_ak [8, 49, 3136]", "bias_qa [8, 3136, 49]", "dwc_w [512, 1, 3]", "dwc_b [512]", "w_o [512, 512]", "b_o [512]",
        }));
        Assert.That(layer.ParameterSpecs.All(p => p.Learnable));
        Assert.That(layer.IsCausal, Is.False);
        Assert.That(layer.ParameterCount, Is.EqualTo((4L * 512 * 512) + (4 * 512) + (2L * 8 * 49 * 3136) + (512 * 3) + 512));
    }

    [Test]
    public void Initialization_gives_biases_of_scores_a_small_normal_spread()
    {
        using var layer = VariantTestKit.Layer(Config(8, 2, 4, 16, 3));
        var bias = layer.Parameters["bias_ak"].ToDoubleArray();
        double std = Math.Sqrt(bias.Select(v => v * v).Average());
        Assert.That(std, Is.InRange(0.01, 0.03));
        Assert.That(layer.Parameters["w_q"].ToDoubleArray().Max(Math.Abs), Is.LessThanOrEqualTo((1 / Math.Sqrt(8)) + 1e-7));
    }

    [Test]
    public void Input_length_must_equal_seq_len()
    {
        using var layer = new AgentLayer(Config(4, 2, 2, 5, 3));
        using var x = Backend.Cpu.Zeros(new Shape(2, 4, 4));
        Ops.LinearTests.AssertArgument(() => layer.Forward(x), "x", "[B, seq_len = 5, 4]", "[2, 4, 4]");
        Ops.LinearTests.AssertArgument(() => layer.ForwardForTraining(x), "x", "[B, seq_len = 5, 4]", "[2, 4, 4]");
        using var wide = Backend.Cpu.Zeros(new Shape(2, 5, 3));
        Ops.LinearTests.AssertArgument(() => layer.Forward(wide), "x", "[B, T, 4]", "[2, 5, 3]");
        using var right = Backend.Cpu.Zeros(new Shape(2, 5, 4));
        using var y = layer.Forward(right);
        Assert.That(y.Shape, Is.EqualTo(new Shape(2, 5, 4)));
    }

    [Test]
    public void Configs_are_validated_with_clear_errors()
    {
        static string Message(string json) => Assert.Throws<ArgumentException>(() => LayerConfig.Parse("agent", json))!.Message;
        const string Good = "\"d_model\": 64, \"n_heads\": 4, \"n_agents\": 8, \"seq_len\": 32";
        Assert.That(Message("{" + Good + ", \"causal\": true}"), Does.Contain("causal").And.Contain("non-causal"));
        Assert.That(Message("{" + Good + ", \"dwc_kernel\": 4}"), Does.Contain("dwc_kernel").And.Contain("odd"));
        Assert.That(Message("{" + Good + ", \"dwc_kernel\": 0}"), Does.Contain("dwc_kernel"));
        Assert.That(Message("{" + Good.Replace("\"n_heads\": 4", "\"n_heads\": 5", StringComparison.Ordinal) + "}"), Does.Contain("n_heads").And.Contain("divisor of d_model 64"));
        Assert.That(Message("{" + Good.Replace("\"n_agents\": 8", "\"n_agents\": 0", StringComparison.Ordinal) + "}"), Does.Contain("n_agents"));
        Assert.That(Message("{\"d_model\": 64, \"n_heads\": 4, \"n_agents\": 8, \"focusing_factor\": 3}"), Does.Contain("missing keys: seq_len").And.Contain("unknown keys: focusing_factor"));
        var parsed = (AgentConfig)LayerConfig.Parse("agent", "{" + Good + ", \"causal\": false}");
        Assert.That((parsed.Agents, parsed.SeqLen, parsed.DwcKernel, parsed.HeadDim), Is.EqualTo((8, 32, 3, 16)));
        Assert.That(LayerConfig.Parse("agent", parsed.ToJson()), Is.EqualTo(parsed));
        Assert.That(AttentionLayer.Create(parsed with { DModel = 8, Heads = 2 }), Is.TypeOf<AgentLayer>());
    }

    private static void Randomize(AttentionLayer layer, string name, int seed)
    {
        var tensor = layer.Parameters[name];
        tensor.CopyFrom(TestData.Normal(seed, tensor.Shape.ElementCount));
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

    private static double Dot(double[] a, int aOffset, double[] b, int bOffset, int length)
    {
        double sum = 0;
        for (int i = 0; i < length; i++)
        {
            sum += a[aOffset + i] * b[bOffset + i];
        }
        return sum;
    }

    private static double[] Softmax(double[] scores)
    {
        double max = scores.Max();
        var e = scores.Select(v => Math.Exp(v - max)).ToArray();
        double total = e.Sum();
        return e.Select(v => v / total).ToArray();
    }
}

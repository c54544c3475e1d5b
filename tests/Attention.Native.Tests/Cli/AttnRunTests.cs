using Attention.Cli;
using Attention.Native.IO;
using Attention.Native.Tests.Support;
using Attention.Native.Tests.Runtime;
using Attention.Native.Tests.Variants;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Cli;

/// <summary>
/// <c>attn run</c> end to end on files, against the independent F64 formulas of variants.md (Variants/Formulas): y against the
/// formula, every gradient against the formula's directional derivative (so neither side is the library under test).
/// </summary>
public class AttnRunTests
{
    /// <summary>The small configs of variants.md (agent and flatten at T = 6 to keep the run short).</summary>
    internal static readonly Dictionary<string, string> SmallConfigs = new()
    {
        ["mha"] = """{"d_model": 64, "n_heads": 4, "n_kv_heads": 4, "head_dim": 16, "causal": true, "rope": true}""",
        ["gqa"] = """{"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16}""",
        ["mqa"] = """{"d_model": 64, "n_heads": 4, "n_kv_heads": 1, "head_dim": 16, "rope_style": "interleaved"}""",
        ["mla"] = """{"d_model": 64, "n_heads": 4, "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16}""",
        ["tpa"] = """{"d_model": 64, "n_heads": 4, "head_dim": 16, "q_rank": 6, "k_rank": 2, "v_rank": 2}""",
        ["sas"] = """{"d_model": 64, "n_heads": 4, "head_dim": 16, "sim_heads": 8, "sim_head_dim": 32, "kernel_size": 3}""",
        ["agent"] = """{"d_model": 64, "n_heads": 4, "n_agents": 8, "seq_len": 6}""",
        ["flatten"] = """{"d_model": 64, "n_heads": 4, "seq_len": 6, "focusing_factor": 3}""",
        ["transnormer"] = """{"d_model": 64, "n_heads": 4, "head_dim": 16, "layer_idx": 0, "num_layers": 2}""",
        // norm_eps 2⁻⁶: not the default, and exact as the float the RmsNorm op takes (decode is checked to 1e-12).
        ["mfa"] = """{"d_model": 64, "n_heads": 8, "head_dim": 16, "q_lora_dim": 32, "norm_eps": 0.015625}""",
    };

    internal static (int Code, string Output, string Error) Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = AttnCli.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    internal sealed class Files : IDisposable
    {
        private readonly TempDirectory _dir = new();

        public Files(string variant, DType dtype = DType.F32, int batch = 2, int tokens = 6)
        {
            Variant = variant;
            Config = Path.Combine(_dir.Path, "cfg.json");
            Weights = Path.Combine(_dir.Path, "w.safetensors");
            Input = Path.Combine(_dir.Path, "x.safetensors");
            Grad = Path.Combine(_dir.Path, "dy.safetensors");
            Out = Path.Combine(_dir.Path, "out.safetensors");
            File.WriteAllText(Config, SmallConfigs[variant]);
            Layer = AttentionLayer.Create(LayerConfig.Parse(variant, SmallConfigs[variant]), Backend.Cpu, dtype);
            Layer.InitializeParameters(17);
            SafeTensors.Write(Weights, Layer.Parameters);
            var shape = new Shape(batch, tokens, Layer.Config.DModel);
            X = Backend.Cpu.FromArray(TestData.Normal(18, shape.ElementCount), shape, dtype);
            Dy = Backend.Cpu.FromArray(TestData.Normal(19, shape.ElementCount), shape, dtype);
            SafeTensors.Write(Input, [new("x", X)]);
            SafeTensors.Write(Grad, [new("dy", Dy)]);
        }

        public string Variant { get; }
        public string Config { get; }
        public string Weights { get; }
        public string Input { get; }
        public string Grad { get; }
        public string Out { get; }
        public AttentionLayer Layer { get; }
        public Tensor X { get; }
        public Tensor Dy { get; }
        public string Dir => _dir.Path;

        public string[] Args(params string[] extra) => ArgsOn("cpu", extra);

        public string[] ArgsOn(string backend, params string[] extra) =>
            ["run", "--variant", Variant, "--config", Config, "--weights", Weights, "--input", Input, "--out", Out, "--backend", backend, .. extra];

        public void Dispose()
        {
            Layer.Dispose();
            X.Dispose();
            Dy.Dispose();
            _dir.Dispose();
        }
    }

    private static double RelativeError(Tensor expected, Tensor actual)
    {
        Assert.That(actual.Shape, Is.EqualTo(expected.Shape));
        return RelativeError(expected.ToDoubleArray(), actual.ToDoubleArray());
    }

    private static double RelativeError(double[] expected, double[] actual)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        double scale = 1 + expected.Select(Math.Abs).DefaultIfEmpty().Max();
        return expected.Zip(actual, (x, y) => Math.Abs(x - y)).DefaultIfEmpty().Max() / scale;
    }

    /// <summary>
    /// A written gradient g of the loss Σ dy ⊙ formula(…) against the formula's central difference along a random direction e:
    /// |⟨g, e⟩ − (L(+he) − L(−he)) / 2h| ≤ 1e-4 · Σ|g ⊙ e| + 1e-6 · Σ|e|. The F32 run's rounding is ~1e-7 of the first scale, and
    /// the second admits F32 noise of 1e-6 per element where the true gradient is zero (agent's key bias: softmax ignores a
    /// shift shared by a row). A gradient 0.9× too small, of another tensor, or of a wrong formula moves ⟨g, e⟩ by far more
    /// (⟨g, e⟩ is ~Σ|g ⊙ e| / sqrt(n) for random e). A small step keeps SAS's ReLU kinks from bending the difference.
    /// </summary>
    private static void AssertDirectionalDerivative(string what, double[] gradient, double[] point, Func<double[], double> loss, int seed)
    {
        var e = TestData.Normal(seed, point.Length);
        const double H = 1e-6;
        double Along(double step) => loss([.. point.Select((p, i) => p + (step * e[i]))]);
        double numeric = (Along(H) - Along(-H)) / (2 * H);
        double analytic = gradient.Zip(e, (g, d) => g * d).Sum();
        double bound = (1e-4 * gradient.Zip(e, (g, d) => Math.Abs(g * d)).Sum()) + (1e-6 * e.Sum(Math.Abs));
        Assert.That(Math.Abs(analytic - numeric), Is.LessThanOrEqualTo(bound), $"{what}: ⟨g, e⟩ = {analytic:E6}, the formula's derivative {numeric:E6}");
    }

    [TestCaseSource(typeof(LayerConfig), nameof(LayerConfig.Variants))]
    public void Run_writes_y_dx_and_every_parameter_gradient(string variant)
    {
        using var files = new Files(variant);
        var (code, _, error) = Run(files.Args("--grad", files.Grad));
        Assert.That(code, Is.Zero, error);
        using var result = SafeTensors.Read(files.Out);
        var learnable = files.Layer.ParameterSpecs.Where(s => s.Learnable).Select(s => s.Name).ToArray();
        Assert.That(result.Names, Is.EquivalentTo(new[] { "y", "dx" }.Concat(learnable.Select(k => $"grad.{k}"))));
        Assert.That(result.Metadata["variant"], Is.EqualTo(variant));

        var config = files.Layer.Config;
        int batch = files.X.Shape[0], tokens = files.X.Shape[1];
        var weights = FormulaKit.Weights(files.Layer);
        var x = files.X.ToDoubleArray();
        var dy = files.Dy.ToDoubleArray();
        double Loss(IReadOnlyDictionary<string, double[]> w, double[] input) =>
            FormulaKit.ForwardOf(config, w, input, batch, tokens).Zip(dy, (a, b) => a * b).Sum();
        Assert.That(RelativeError(FormulaKit.ForwardOf(config, weights, x, batch, tokens), result["y"].ToDoubleArray()), Is.LessThanOrEqualTo(1e-4), "y against the formula");
        Assert.Multiple(() =>
        {
            AssertDirectionalDerivative("dx", result["dx"].ToDoubleArray(), x, input => Loss(weights, input), 31);
            int seed = 32;
            foreach (string name in learnable)
            {
                AssertDirectionalDerivative($"grad.{name}", result[$"grad.{name}"].ToDoubleArray(), weights[name],
                    values => Loss(new Dictionary<string, double[]>(weights) { [name] = values }, x), seed++);
            }
        });
    }

    [TestCase("mha")]
    [TestCase("gqa")]
    [TestCase("mqa")]
    [TestCase("mla")]
    [TestCase("tpa")]
    [TestCase("sas")]
    [TestCase("transnormer")]
    [TestCase("mfa")]
    public void Decode_computes_y_token_by_token_equal_to_the_forward(string variant)
    {
        using var files = new Files(variant, DType.F64);
        var (code, _, error) = Run(files.Args("--decode"));
        Assert.That(code, Is.Zero, error);
        using var result = SafeTensors.Read(files.Out);
        Assert.That(result.Metadata["mode"], Is.EqualTo("decode"));
        var formula = FormulaKit.ForwardOf(files.Layer.Config, FormulaKit.Weights(files.Layer), files.X.ToDoubleArray(), files.X.Shape[0], files.X.Shape[1]);
        Assert.That(RelativeError(formula, result["y"].ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "decoded y against the formula");
    }

    /// <summary><c>attn run --backend cuda</c> meets the same contract as on the CPU: y, dx and every gradient, and decode.</summary>
    [Category("Gpu")]
    [TestCaseSource(typeof(LayerConfig), nameof(LayerConfig.Variants))]
    public void Run_on_cuda_matches_the_cpu_library(string variant)
    {
        Requires.CudaDevice();
        using var files = new Files(variant);
        var (code, _, error) = Run(files.ArgsOn("cuda", "--grad", files.Grad));
        Assert.That(code, Is.Zero, error);
        using var result = SafeTensors.Read(files.Out);
        using var pass = files.Layer.ForwardForTraining(files.X);
        using var grads = pass.Backward(files.Dy);
        Assert.That(result.Names, Is.EquivalentTo(new[] { "y", "dx" }.Concat(grads.Parameters.Keys.Select(k => $"grad.{k}"))));
        Assert.That(RelativeError(pass.Output, result["y"]), Is.LessThanOrEqualTo(1e-4), "y");
        Assert.That(RelativeError(grads.Input, result["dx"]), Is.LessThanOrEqualTo(1e-4), "dx");
        foreach (var (name, g) in grads.Parameters)
        {
            Assert.That(RelativeError(g, result[$"grad.{name}"]), Is.LessThanOrEqualTo(1e-4), name);
        }
        if (files.Layer is CausalAttentionLayer)
        {
            (code, _, error) = Run(files.ArgsOn("cuda", "--decode"));
            Assert.That(code, Is.Zero, error);
            using var decoded = SafeTensors.Read(files.Out);
            Assert.That(RelativeError(pass.Output, decoded["y"]), Is.LessThanOrEqualTo(1e-4), "decode y");
        }
    }

    [TestCase("agent")]
    [TestCase("flatten")]
    public void Decode_is_refused_for_non_causal_variants(string variant)
    {
        using var files = new Files(variant);
        var (code, _, error) = Run(files.Args("--decode"));
        AssertFailed(files, code, error, "--decode");
    }

    [Test]
    public void Bad_inputs_fail_with_one_line_and_no_output_file()
    {
        using var files = new Files("gqa");
        var (code, _, error) = Run([.. files.Args()[..2], "mla", .. files.Args()[3..]]);
        AssertFailed(files, code, error, "missing keys");

        File.WriteAllText(files.Config, """{"d_model": 64, "n_heads": 4, "n_kv_heads": 3, "head_dim": 16}""");
        (code, _, error) = Run(files.Args());
        AssertFailed(files, code, error, "n_kv_heads");

        File.WriteAllText(files.Config, SmallConfigs["gqa"]);
        File.WriteAllBytes(files.Weights, [1, 2, 3]);
        (code, _, error) = Run(files.Args());
        AssertFailed(files, code, error, "w.safetensors");

        using (var other = new Files("mha"))
        {
            File.Copy(other.Weights, files.Weights, overwrite: true);
        }
        (code, _, error) = Run(files.Args());
        AssertFailed(files, code, error, "w_k expected [32, 64] actual [64, 64]");

        using var gqa = new Files("gqa");
        SafeTensors.Write(gqa.Input, [new("y", gqa.X)]);
        (code, _, error) = Run(gqa.Args());
        AssertFailed(gqa, code, error, "'x'");

        using var wrong = Backend.Cpu.Zeros(new Shape(2, 5, 64));
        using var good = new Files("gqa");
        SafeTensors.Write(good.Grad, [new("dy", wrong)]);
        (code, _, error) = Run(good.Args("--grad", good.Grad));
        AssertFailed(good, code, error, "dy of shape [2, 6, 64]");

        (code, _, error) = Run(good.Args("--grad", Path.Combine(good.Dir, "absent.safetensors")));
        AssertFailed(good, code, error, "not found");
    }

    [Test]
    public void Agent_refuses_an_input_whose_length_is_not_seq_len()
    {
        using var files = new Files("agent", tokens: 5);
        var (code, _, error) = Run(files.Args());
        AssertFailed(files, code, error, "seq_len");
    }

    internal static void AssertFailed(Files files, int code, string error, string fragment)
    {
        Assert.Multiple(() =>
        {
            Assert.That(code, Is.Not.Zero);
            Assert.That(error.TrimEnd().Split('\n'), Has.Length.EqualTo(1), error);
            Assert.That(error, Does.Contain(fragment));
            Assert.That(File.Exists(files.Out), Is.False, "no output file on failure");
            Assert.That(Directory.GetFiles(files.Dir, "*.tmp*"), Is.Empty);
        });
    }
}

using Attention.Cli;
using Attention.Native.IO;
using Attention.Native.Tests.Support;
using Attention.Native.Tests.Runtime;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Cli;

/// <summary><c>attn run</c> end to end on files, against the library called directly.</summary>
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
        var e = expected.ToDoubleArray();
        var a = actual.ToDoubleArray();
        double scale = 1 + e.Select(Math.Abs).DefaultIfEmpty().Max();
        return e.Zip(a, (x, y) => Math.Abs(x - y)).DefaultIfEmpty().Max() / scale;
    }

    [TestCaseSource(typeof(LayerConfig), nameof(LayerConfig.Variants))]
    public void Run_writes_y_dx_and_every_parameter_gradient(string variant)
    {
        using var files = new Files(variant);
        var (code, _, error) = Run(files.Args("--grad", files.Grad));
        Assert.That(code, Is.Zero, error);
        using var result = SafeTensors.Read(files.Out);
        using var y = files.Layer.Forward(files.X);
        using var pass = files.Layer.ForwardForTraining(files.X);
        using var grads = pass.Backward(files.Dy);
        var expectedNames = new[] { "y", "dx" }.Concat(grads.Parameters.Keys.Select(k => $"grad.{k}"));
        Assert.That(result.Names, Is.EquivalentTo(expectedNames));
        Assert.That(grads.Parameters.Keys, Is.EquivalentTo(files.Layer.ParameterSpecs.Where(s => s.Learnable).Select(s => s.Name)));
        Assert.That(RelativeError(y, result["y"]), Is.LessThanOrEqualTo(1e-6));
        Assert.That(RelativeError(grads.Input, result["dx"]), Is.LessThanOrEqualTo(1e-6));
        foreach (var (name, g) in grads.Parameters)
        {
            Assert.That(RelativeError(g, result[$"grad.{name}"]), Is.LessThanOrEqualTo(1e-6), name);
        }
        Assert.That(result.Metadata["variant"], Is.EqualTo(variant));
    }

    [TestCase("mha")]
    [TestCase("gqa")]
    [TestCase("mqa")]
    [TestCase("mla")]
    [TestCase("tpa")]
    [TestCase("sas")]
    [TestCase("transnormer")]
    public void Decode_computes_y_token_by_token_equal_to_the_forward(string variant)
    {
        using var files = new Files(variant, DType.F64);
        var (code, _, error) = Run(files.Args("--decode"));
        Assert.That(code, Is.Zero, error);
        using var result = SafeTensors.Read(files.Out);
        using var y = files.Layer.Forward(files.X);
        Assert.That(result.Metadata["mode"], Is.EqualTo("decode"));
        Assert.That(RelativeError(y, result["y"]), Is.LessThanOrEqualTo(1e-12));
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

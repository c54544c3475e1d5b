using Attention.Native.IO;
using Attention.Native.Tests.Runtime;
using Attention.Native.Tests.Support;
using Attention.Native.Tests.TorchReference;
using Attention.Native.Tests.Variants;
using Attention.Native.Tests.Variants.Vision;
using TorchSharp;

namespace Attention.Native.Tests.Cli;

/// <summary>
/// <c>attn run --layout</c> with the vision layouts: a whole-model checkpoint holding one official module's tensors under a
/// prefix, and the module's own arguments as the config file, give the official module's y (the float64 torch references of
/// <see cref="VisionTorchReference"/> and <see cref="VisionTorchReferenceWindows"/>).
/// </summary>
public class AttnRunVisionLayoutTests : TorchReferenceFixture
{
    private const string Prefix = "stages.0.blocks.1.attn.";
    private const int Batch = 2, Dm = 16;

    private sealed record Case(string Layout, string Config, IReadOnlyList<(string Name, long[] Shape)> Parameters, int Tokens,
        Func<IReadOnlyDictionary<string, torch.Tensor>, torch.Tensor, torch.Tensor> Official);

    private static readonly AgentPvtConfig AgentPvt = new(Dm, 2, 4, 6, 6, SrRatio: 2, QkvBias: true);
    private static readonly AgentSwinConfig AgentSwin = new(Dm, 2, 4, 5);
    private static readonly AgentDeitConfig AgentDeit = new(Dm, 2, 9, 6);
    private static readonly FlattenPvtConfig FlattenPvt = new(Dm, 2, 6, 6, SrRatio: 2, QkvBias: true);
    private static readonly FlattenSwinConfig FlattenSwin = new(Dm, 4, 5, DwcKernel: 3);

    private static IEnumerable<Case> All()
    {
        yield return new("agent-pvt", """{"dim": 16, "num_heads": 2, "num_patches": 36, "agent_num": 4, "sr_ratio": 2, "qkv_bias": true, "qk_scale": null, "attn_drop": 0.0}""",
            VisionTorchReference.Parameters(AgentPvt), 36, (w, x) => VisionTorchReference.AgentPvt(AgentPvt, w, x, 6, 6));
        yield return new("agent-swin", """{"dim": 16, "window_size": [5, 5], "num_heads": 2, "qkv_bias": true, "shift_size": 2, "agent_num": 4}""",
            VisionTorchReferenceWindows.Parameters(AgentSwin), 25, (w, x) => VisionTorchReferenceWindows.AgentSwin(AgentSwin, w, x));
        yield return new("agent-deit", """{"dim": 16, "num_heads": 2, "qkv_bias": true, "agent_num": 9, "window": 6}""",
            VisionTorchReferenceWindows.Parameters(AgentDeit), 37, (w, x) => VisionTorchReferenceWindows.AgentDeit(AgentDeit, w, x));
        yield return new("flatten-pvt", """{"dim": 16, "num_heads": 2, "num_patches": 36, "sr_ratio": 2, "qkv_bias": true, "focusing_factor": 3, "kernel_size": 5}""",
            VisionTorchReference.Parameters(FlattenPvt), 36, (w, x) => VisionTorchReference.FlattenPvt(FlattenPvt, w, x, 6, 6));
        yield return new("flatten-swin", """{"dim": 16, "window_size": 5, "num_heads": 4, "focusing_factor": 3, "kernel_size": 3}""",
            VisionTorchReferenceWindows.Parameters(FlattenSwin), 25, (w, x) => VisionTorchReferenceWindows.FlattenSwin(FlattenSwin, w, x));
    }

    private static IEnumerable<string> Names() => All().Select(c => c.Layout);

    [TestCaseSource(nameof(Names))]
    public void Official_module_files_as_they_are_give_the_official_output(string layout)
    {
        var c = All().Single(a => a.Layout == layout);
        using var dir = new TempDirectory();
        var w = VisionTorchReference.Draw(c.Parameters, seed: 131);
        var x = TestData.Normal(132, Batch * c.Tokens * Dm);
        string config = Path.Combine(dir.Path, "config.json"), weights = Path.Combine(dir.Path, "model.safetensors");
        string input = Path.Combine(dir.Path, "x.safetensors"), output = Path.Combine(dir.Path, "out.safetensors");
        File.WriteAllText(config, c.Config);
        var tensors = c.Parameters.Select(p => new KeyValuePair<string, Tensor>(Prefix + p.Name,
            Backend.Cpu.FromArray(w[p.Name], new Shape([.. p.Shape.Select(s => (int)s)]), DType.F64))).ToList();
        tensors.Add(new("stages.0.blocks.1.norm1.weight", Backend.Cpu.Zeros(new Shape(Dm))));
        using (var tx = Backend.Cpu.FromArray(x, new Shape(Batch, c.Tokens, Dm), DType.F64))
        {
            SafeTensors.Write(weights, tensors);
            SafeTensors.Write(input, [new("x", tx)]);
        }
        foreach (var (_, t) in tensors)
        {
            t.Dispose();
        }

        var (code, _, error) = AttnRunTests.Run("run", "--layout", layout, "--prefix", Prefix, "--config", config, "--weights", weights, "--input", input,
            "--out", output, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), error);
        using var results = SafeTensors.Read(output);
        using var scope = torch.NewDisposeScope();
        var y = c.Official(VisionTorchReference.Leaves(c.Parameters, w, requiresGrad: false), torch.tensor(x, [Batch, c.Tokens, Dm], torch.ScalarType.Float64));
        FormulaKit.AssertMatches(results["y"].ToDoubleArray(), y.detach().contiguous().data<double>().ToArray(), $"{layout}: y");
    }
}

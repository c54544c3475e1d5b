using System.Text.Json.Nodes;
using Attention.Cli;
using Attention.Native.Tests.Runtime;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Cli;

/// <summary><c>attn bench --sweep</c> end to end on the CPU backend (its reduced sweep), joined with a peers file.</summary>
public class BenchSweepTests
{
    [Test]
    public void Sweep_writes_a_row_per_kernel_and_length_and_joins_the_peers()
    {
        using var dir = new TempDirectory();
        string peers = Path.Combine(dir.Path, "peers.json");
        File.WriteAllText(peers, """
            {"device": "cpu", "date": "2026-11-27", "rows": [
              {"kernel": "forward", "variant": "mha", "dtype": "f32", "causal": true, "T": 64, "ms": 1000.0, "peer": "sdpa-flash", "tflops": null, "gbps": null}
            ]}
            """);
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = AttnCli.Run(["bench", "--sweep", "--backend", "cpu", "--repeats", "1", "--variant", "gqa", "--peers", peers, "--results", dir.Path], output, error);
        Assert.That(code, Is.Zero, error.ToString());

        var json = Directory.GetFiles(dir.Path, "cpu-*.json").Single();
        Assert.That(File.Exists(Path.ChangeExtension(json, ".md")) && File.Exists(Path.ChangeExtension(json, ".svg")), Is.True);
        var rows = JsonNode.Parse(File.ReadAllText(json))!["rows"]!.AsArray();
        // Reduced CPU sweep, T ∈ {64, 128}: per T the core forward and backward (causal and not) and the Lightning core;
        // the GQA decode core; the gqa layer's forward, backward and decode per T.
        Assert.That(rows, Has.Count.EqualTo((2 * 5) + 1 + (2 * 3)));
        var kernels = rows.Select(r => ((string)r!["kernel"]!, (string)r["variant"]!)).Distinct().ToList();
        Assert.That(kernels, Is.EquivalentTo(new[]
        {
            ("forward", "mha"), ("backward", "mha"), ("forward+backward", "transnormer"), ("decode", "gqa"),
            ("layer forward", "gqa"), ("layer backward", "gqa"), ("layer decode", "gqa"),
        }));
        Assert.That(rows.All(r => (double)r!["ms"]! > 0), Is.True, "every row timed");
        var joined = rows.Single(r => (string?)r!["peer"] == "sdpa-flash")!;
        Assert.That(((string)joined["kernel"]!, (bool)joined["causal"]!, (int)joined["T"]!), Is.EqualTo(("forward", true, 64)));
        Assert.That((double)joined["speedup"]!, Is.EqualTo(1000.0 / (double)joined["ms"]!).Within(1e-9));
        var decode = rows.Single(r => (string)r!["kernel"]! == "decode")!;
        Assert.That((double)decode["gbps"]!, Is.EqualTo(2.0 * 256 * 4 * 128 * 4 / ((double)decode["ms"]! * 1e-3) / 1e9).Within(1e-9), "K and V of a 256-token f32 cache");
    }

    [Test]
    public void Attention_core_flops_are_counted_as_flash_attention_counts_them()
    {
        // 4·T²·d·H per sequence for d_qk = d_v = d, halved when causal.
        Assert.That(BenchSweep.AttentionFlops(2, 1024, 16, 128, 128, false), Is.EqualTo(2 * 4.0 * 1024 * 1024 * 128 * 16));
        Assert.That(BenchSweep.AttentionFlops(1, 1024, 16, 128, 128, true), Is.EqualTo(4.0 * 1024 * 1024 * 128 * 16 / 2));
        // SAS attends over H' heads of width D' (scores) and D (values).
        var sas = new SasConfig { DModel = 2048, Heads = 16, HeadDim = 128, SimHeads = 32, SimHeadDim = 256, KernelSize = 3 };
        Assert.That(BenchSweep.CoreFlops(sas, 1, 512, true), Is.EqualTo(2.0 * 32 * 512 * 512 * (256 + 128) / 2));
        // MFA: all H query heads of width d attend (the one KV head is shared, not fewer FLOPs).
        var mfa = new MfaConfig { DModel = 4096, Heads = 64, HeadDim = 256, QLoraDim = 2048 };
        Assert.That(BenchSweep.CoreFlops(mfa, 1, 512, true), Is.EqualTo(2.0 * 64 * 512 * 512 * (256 + 256) / 2));
        Assert.That(BenchSweep.CoreFlops(new FlattenConfig { DModel = 64, Heads = 4, SeqLen = 32 }, 1, 32, false), Is.Null);
    }

    [Test]
    public void Bad_sweep_arguments_exit_2_naming_the_option()
    {
        using var error = new StringWriter();
        Assert.That(AttnCli.Run(["bench", "--sweep", "--backend", "cpu", "--variant", "nope"], TextWriter.Null, error), Is.EqualTo(2));
        Assert.That(error.ToString(), Does.Contain("--variant").And.Contain("nope"));
    }

    [Test]
    public void Peak_fractions_use_the_device_spec_sheet()
    {
        Assert.That(DevicePeaks.Fraction("NVIDIA H100 80GB HBM3", 494.7, null), Is.EqualTo(0.5).Within(1e-12));
        Assert.That(DevicePeaks.Fraction("NVIDIA H200", null, 2400), Is.EqualTo(0.5).Within(1e-12));
        Assert.That(DevicePeaks.Fraction("cpu-2-threads", 1.0, 1.0), Is.Null);
    }
}

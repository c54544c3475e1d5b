using Attention.Native.Tests.Gpu;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Core;

/// <summary>The parity report groups comparisons by variant, pass and dtype (and by op), keeping the worst of each.</summary>
public class ParityReportTests
{
    [Test]
    public void Report_keeps_the_worst_relative_error_of_each_variant_pass_and_dtype()
    {
        Parity.Record R(string op, DType dtype, double rel, double factor) => new(op, dtype, "[2, 3]", rel * 2, factor * 2, rel, factor);
        var records = new[]
        {
            R(ParityReport.VariantTag("gqa", "forward") + " d32 y", DType.F32, 1e-6, 1e-4),
            R(ParityReport.VariantTag("gqa", "forward") + " d128 y", DType.F32, 3e-6, 1e-4),
            R(ParityReport.VariantTag("gqa", "backward") + " d32 dx", DType.F32, 2e-6, 1e-4),
            R(ParityReport.VariantTag("gqa", "decode") + " d32", DType.BF16, 4e-3, 2e-2),
            R("attention B1 o", DType.F32, 5e-7, 1e-4),
            R("attention B2 dq", DType.F32, 9e-7, 1e-4),
        };
        var json = ParityReport.Build(records, "NVIDIA H100 80GB HBM3", "sm_90", new DateTime(2026, 11, 22));
        Assert.That((string?)json["date"], Is.EqualTo("2026-11-22"));
        var variants = json["variants"]!.AsArray();
        Assert.That(variants, Has.Count.EqualTo(3));
        var forward = variants.Single(v => (string?)v!["pass"] == "forward")!;
        Assert.Multiple(() =>
        {
            Assert.That((string?)forward["variant"], Is.EqualTo("gqa"));
            Assert.That((int?)forward["comparisons"], Is.EqualTo(2));
            Assert.That((double?)forward["max_rel_error"], Is.EqualTo(3e-6));
            Assert.That((double?)forward["tolerance"], Is.EqualTo(1e-4));
            Assert.That((bool?)forward["within_tolerance"], Is.True);
            Assert.That((string?)variants.Single(v => (string?)v!["pass"] == "decode")!["dtype"], Is.EqualTo("bf16"));
        });
        var ops = json["ops"]!.AsArray();
        Assert.That(ops, Has.Count.EqualTo(1));
        Assert.That((double?)ops[0]!["max_rel_error"], Is.EqualTo(9e-7));
        Assert.That(ParityReport.Slug("NVIDIA H100 80GB HBM3"), Is.EqualTo("nvidia-h100-80gb-hbm3"));
    }

    [Test]
    public void An_overflowed_comparison_is_written_as_valid_json()
    {
        var records = new[] { new Parity.Record("lrpe dtheta", DType.F16, "[2, 32]", double.PositiveInfinity, 9.9e3, double.PositiveInfinity, 2e-2) };
        var json = ParityReport.Build(records, "NVIDIA H100 80GB HBM3", "sm_90", new DateTime(2026, 11, 22));
        string text = json.ToJsonString();
        var op = System.Text.Json.Nodes.JsonNode.Parse(text)!["ops"]![0]!;
        Assert.Multiple(() =>
        {
            Assert.That((string?)op["max_rel_error"], Is.EqualTo("Infinity"));
            Assert.That((bool?)op["within_tolerance"], Is.False);
        });
    }
}

using System.Xml.Linq;
using Attention.Cli;
using Attention.Native.Tests.Runtime;
using M = Attention.Cli.BenchReport.Measurement;

namespace Attention.Native.Tests.Cli;

/// <summary>The join of our benchmark rows with the PyTorch peers, and the JSON, markdown and SVG written from it.</summary>
public class BenchReportTests
{
    private static readonly M[] Ours =
    [
        new("forward", "mha", "bf16", true, 2048, 2.0, 300, null),
        new("forward", "gqa", "bf16", true, 4096, 8.0, 310, null),
        new("decode", "tpa", "bf16", true, 32768, 0.05, null, 2000),
    ];

    private const string PeersJson = """
        {"device": "NVIDIA H100 80GB HBM3", "date": "2026-11-22", "torch": "2.9",
         "rows": [
          {"kernel": "forward", "variant": "mha", "dtype": "bf16", "causal": true, "T": 2048, "ms": 3.0, "peer": "sdpa-flash", "tflops": 200.0, "gbps": null},
          {"kernel": "forward", "variant": "mha", "dtype": "bf16", "causal": true, "T": 2048, "ms": 1.5, "peer": "sdpa-cudnn", "tflops": 400.0, "gbps": null},
          {"kernel": "forward", "variant": "mha", "dtype": "bf16", "causal": false, "T": 2048, "ms": 5.0, "peer": "sdpa-flash", "tflops": 240.0, "gbps": null},
          {"kernel": "forward", "variant": "mha", "dtype": "bf16", "causal": true, "T": 4096, "ms": 9.0, "peer": "sdpa-flash", "tflops": 280.0, "gbps": null}
         ]}
        """;

    [Test]
    public void Each_row_meets_every_peer_of_the_same_shape_and_speedup_is_peer_over_ours()
    {
        var rows = BenchReport.Join(Ours, BenchReport.ReadPeers(PeersJson));
        Assert.That(rows, Has.Count.EqualTo(4), "mha T2048 twice (two peers), gqa T4096 once (mha peers time the same shapes), tpa decode alone");
        var cudnn = rows.Single(r => r.Peer?.Peer == "sdpa-cudnn");
        Assert.That(cudnn.Speedup, Is.EqualTo(0.75).Within(1e-12));
        var gqa = rows.Single(r => r.Ours.Variant == "gqa");
        Assert.That(gqa.Peer!.Ms, Is.EqualTo(9.0));
        Assert.That(gqa.Speedup, Is.EqualTo(9.0 / 8.0).Within(1e-12));
        Assert.That(rows.Single(r => r.Ours.Variant == "tpa").Peer, Is.Null, "no peer: the row stands alone");
    }

    [Test]
    public void Json_markdown_and_svg_carry_every_row()
    {
        var rows = BenchReport.Join(Ours, BenchReport.ReadPeers(PeersJson));
        using var dir = new TempDirectory();
        string path = BenchReport.Write(dir.Path, "NVIDIA H100 80GB HBM3", new DateTime(2026, 11, 22), rows);
        Assert.That(Path.GetFileName(path), Is.EqualTo("nvidia-h100-80gb-hbm3-20261122.json"));

        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!;
        var jsonRows = json["rows"]!.AsArray();
        Assert.That(jsonRows, Has.Count.EqualTo(rows.Count));
        var first = jsonRows[0]!;
        foreach (var key in new[] { "kernel", "variant", "dtype", "causal", "T", "ms", "tflops", "gbps", "peer", "peer_ms", "speedup" })
        {
            Assert.That(first.AsObject().ContainsKey(key), Is.True, key);
        }
        Assert.That((double?)first["speedup"], Is.EqualTo(1.5).Within(1e-12));

        var markdown = File.ReadAllText(Path.ChangeExtension(path, ".md"));
        var table = markdown.Split('\n').TakeWhile(line => line.Length > 0).ToList();
        Assert.That(table, Has.Count.EqualTo(rows.Count + 2), "header, rule, a line per row");
        Assert.That(markdown, Does.Contain("| sdpa-cudnn | 1.500 | 0.75 |"));

        var svg = XDocument.Parse(File.ReadAllText(Path.ChangeExtension(path, ".svg")));
        var lines = svg.Descendants().Where(e => e.Name.LocalName == "polyline").ToList();
        // Panels: forward mha causal (ours, flash, cudnn), forward gqa causal (ours, flash); the decode row has no TFLOP/s.
        Assert.That(lines, Has.Count.EqualTo(5));
    }

    [Test]
    public void Decode_rows_are_related_to_the_runs_own_device_to_device_copy()
    {
        M[] ours =
        [
            new("decode", "gqa", "bf16", true, 32768, 0.03, null, 2400),
            new("layer decode", "tpa", "bf16", true, 16384, 0.05, null, 1500),
            new("forward", "mha", "bf16", true, 2048, 2.0, 300, null),
            new("copy", "device-to-device", "bf16", false, 0, 0.2, null, 3000),
        ];
        var rows = BenchReport.Join(ours, []);
        Assert.Multiple(() =>
        {
            Assert.That(BenchReport.CopyFraction(rows, ours[0]), Is.EqualTo(0.8).Within(1e-12));
            Assert.That(BenchReport.CopyFraction(rows, ours[1]), Is.EqualTo(0.5).Within(1e-12));
            Assert.That(BenchReport.CopyFraction(rows, ours[2]), Is.Null, "not a decode row");
            Assert.That(BenchReport.CopyFraction(rows, ours[3]), Is.Null, "the copy itself");
            Assert.That(BenchReport.CopyFraction(BenchReport.Join(ours.Take(3), []), ours[0]), Is.Null, "no copy measured");
        });
        var markdown = BenchReport.Markdown(rows);
        Assert.That(markdown, Does.Contain("- decode gqa T=32768: 2400 GB/s, 80 % of this run's device-to-device copy (3000 GB/s)"));
        Assert.That(markdown, Does.Contain("- layer decode tpa T=16384: 1500 GB/s, 50 %"));
    }

    [Test]
    public void Targets_are_checked_on_every_shape_the_rows_hold()
    {
        M[] ours =
        [
            new("forward", "mha", "bf16", true, 2048, 2.0, 300, null),
            new("forward", "mha", "bf16", false, 1024, 1.0, 300, null),   // below 2k: no target
            new("backward", "mha", "bf16", false, 4096, 10.0, 300, null),
            new("decode", "gqa", "bf16", true, 32768, 0.03, null, 2000),
            new("copy", "device-to-device", "bf16", false, 0, 0.2, null, 3000),
            new("layer decode", "tpa", "bf16", true, 16384, 0.04, null, 500),
            new("layer decode", "gqa", "bf16", true, 16384, 0.05, null, 1500),
            new("layer decode", "tpa", "bf16", true, 8192, 0.04, null, 500),  // below 16k: no target
            new("forward+backward", "transnormer", "bf16", true, 4096, 4.0, null, null),
            new("forward+backward", "transnormer", "bf16", true, 1024, 1.0, null, null),
        ];
        M[] peers =
        [
            new("forward", "mha", "bf16", true, 2048, 2.2, null, null, "sdpa-flash"),
            new("forward", "mha", "bf16", true, 2048, 1.4, null, null, "sdpa-cudnn"),
            new("forward", "mha", "bf16", false, 1024, 0.5, null, null, "sdpa-flash"),
            new("backward", "mha", "bf16", false, 4096, 9.0, null, null, "sdpa-flash"),
            new("forward+backward", "transnormer", "bf16", true, 4096, 5.0, null, null, "sdpa-flash"),
            new("forward+backward", "transnormer", "bf16", true, 4096, 40.0, null, null, "torch-chunked"),
            new("forward+backward", "transnormer", "bf16", true, 1024, 0.5, null, null, "sdpa-flash"),  // below 4k: no target
            new("forward+backward", "transnormer", "bf16", true, 1024, 0.9, null, null, "torch-chunked"),
        ];
        var checks = BenchReport.Targets(BenchReport.Join(ours, peers)).ToDictionary(c => $"{c.Target} @ {c.Shape}");
        Assert.Multiple(() =>
        {
            Assert.That(checks.Keys, Is.EquivalentTo(new[]
            {
                "forward: speedup vs sdpa-flash @ T=2048 causal", "forward: speedup vs sdpa-cudnn @ T=2048 causal",
                "backward: speedup vs sdpa-flash @ T=4096", "gqa decode: fraction of the device-to-device copy's GB/s @ T=32768 causal",
                "tpa decode step: gqa ms / tpa ms @ T=16384 causal", "lightning fwd+bwd: speedup vs sdpa-flash (causal) @ T=4096 causal",
                "lightning fwd+bwd: speedup vs chunked PyTorch @ T=4096 causal", "lightning fwd+bwd: speedup vs chunked PyTorch @ T=1024 causal",
            }));
            Assert.That(checks["forward: speedup vs sdpa-flash @ T=2048 causal"].Met, Is.True, "2.2 / 2.0 = 1.1 ≥ 1");
            Assert.That(checks["forward: speedup vs sdpa-cudnn @ T=2048 causal"].Met, Is.False, "1.4 / 2.0 = 0.7 < 0.75");
            Assert.That(checks["backward: speedup vs sdpa-flash @ T=4096"].Met, Is.False, "0.9 < 1");
            Assert.That(checks["gqa decode: fraction of the device-to-device copy's GB/s @ T=32768 causal"].Measured, Is.EqualTo(2000.0 / 3000).Within(1e-12));
            Assert.That(checks["gqa decode: fraction of the device-to-device copy's GB/s @ T=32768 causal"].Met, Is.False);
            Assert.That(checks["tpa decode step: gqa ms / tpa ms @ T=16384 causal"].Met, Is.True, "0.05 / 0.04 = 1.25 > 1");
            Assert.That(checks["lightning fwd+bwd: speedup vs sdpa-flash (causal) @ T=4096 causal"].Met, Is.True);
            Assert.That(checks["lightning fwd+bwd: speedup vs chunked PyTorch @ T=1024 causal"].Met, Is.False, "0.9 / 1.0 < 1");
        });
        var markdown = BenchReport.Markdown(BenchReport.Join(ours, peers));
        Assert.That(markdown, Does.Contain("| forward: speedup vs sdpa-cudnn | T=2048 causal | 0.70 | ≥ 0.75 | **no** |"));
    }
}

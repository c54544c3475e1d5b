using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Attention.Native.Variants;
using Spectre.Console;

namespace Attention.Cli;

/// <summary>
/// <c>attn bench --vision</c> (issue 18): the 2-D forms of agent and flatten at their papers' stage-1 shapes, each beside the
/// 1-D form on the same tokens and plain softmax attention (non-causal MHA over all tokens, the cost the linear forms avoid):
/// layer forward and backward, medians of timed runs (CUDA events on the GPU). On a grid of H×W tokens the 2-D layer takes
/// <c>x [B, H·W, C]</c>, the 1-D layers <c>x [B, T = H·W, C]</c>.
/// </summary>
internal static class BenchVision
{
    /// <summary>One shape of a paper's first stage, and the three layers measured on it.</summary>
    internal sealed record Stage(string Paper, int Height, int Width, int Channels, int Heads, int Agents, int FlattenKernel)
    {
        public int Tokens => Height * Width;

        public IEnumerable<(string Form, LayerConfig Config)> Layers()
        {
            yield return ("agent-pvt", new AgentVisionConfig { DModel = Channels, Heads = Heads, Agents = Agents, GridHeight = Height, GridWidth = Width, QkvBias = true });
            yield return ("agent 1-D", new AgentConfig { DModel = Channels, Heads = Heads, Agents = Agents, SeqLen = Tokens });
            yield return ("flatten-pvt", new FlattenVisionConfig { DModel = Channels, Heads = Heads, GridHeight = Height, GridWidth = Width, QkvBias = true, DwcKernel = FlattenKernel });
            yield return ("flatten 1-D", new FlattenConfig { DModel = Channels, Heads = Heads, SeqLen = Tokens, DwcKernel = FlattenKernel });
            yield return ("softmax (mha)", new GqaConfig { Kind = "mha", DModel = Channels, Heads = Heads, KvHeads = Heads, HeadDim = Channels / Heads, Causal = false, Rope = false });
        }
    }

    /// <summary>
    /// PVT-S stage 1 (Agent-PVT-S and FLatten-PVT-S: 56×56 tokens of width 64, one head; agents 49 as issue 18 names them, FLatten's
    /// 5×5 depthwise filters); PVT-M/L's stage 1 has the same shape. The stages' <c>sr_ratio</c> is 1 in both papers' agent and
    /// linear stages.
    /// </summary>
    internal static IReadOnlyList<Stage> Stages { get; } = [new("PVT-S stage 1", 56, 56, 64, 1, 49, 5)];

    internal sealed record Row(string Paper, string Form, string DType, int Batch, int Tokens, double ForwardMs, double BackwardMs);

    public static List<Row> Run(IAnsiConsole console, Backend backend, int repeats, int batch)
    {
        var dtype = backend.Kind == BackendKind.Cuda ? DType.BF16 : DType.F32;
        string type = dtype == DType.BF16 ? "bf16" : "f32";
        var rows = new List<Row>();
        var timer = new BenchTimer(backend, repeats);
        console.MarkupLine(Markup.Escape($"attn bench --vision on {backend.Name}, {type}, B = {batch}, median of {repeats}"));
        foreach (var stage in Stages)
        {
            foreach (var (form, config) in stage.Layers())
            {
                var (fwd, bwd) = BenchSweep.Layer(backend, timer, config, dtype, batch, stage.Tokens);
                rows.Add(new(stage.Paper, form, type, batch, stage.Tokens, fwd, bwd));
                console.MarkupLine(Markup.Escape($"{stage.Paper} {form}: forward {fwd:F3} ms, backward {bwd:F3} ms"));
            }
        }
        return rows;
    }

    public static string Markdown(IReadOnlyList<Row> rows, string device)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"Vision forms on {device}: layer forward and backward (backward = one training backward, its forward untimed), median ms.");
        text.AppendLine();
        text.AppendLine("| stage | layer | dtype | B | tokens | forward ms | backward ms | forward vs softmax | forward vs 1-D form |");
        text.AppendLine("|---|---|---|---:|---:|---:|---:|---:|---:|");
        foreach (var row in rows)
        {
            var softmax = rows.FirstOrDefault(r => r.Paper == row.Paper && r.Form.StartsWith("softmax", StringComparison.Ordinal));
            string family = row.Form.Split(' ', '-')[0];
            var oneD = row.Form.EndsWith("-pvt", StringComparison.Ordinal) ? rows.FirstOrDefault(r => r.Paper == row.Paper && r.Form == family + " 1-D") : null;
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {row.Paper} | {row.Form} | {row.DType} | {row.Batch} | {row.Tokens} | {row.ForwardMs:F3} | {row.BackwardMs:F3} | {Ratio(softmax, row)} | {Ratio(oneD, row)} |");
        }
        text.AppendLine();
        text.AppendLine("Ratios are the other layer's forward time over this one's (> 1: this one is faster).");
        return text.ToString();
    }

    public static string Write(string folder, string device, DateTime date, IReadOnlyList<Row> rows)
    {
        Directory.CreateDirectory(folder);
        string stem = Path.Combine(folder, $"{BenchReport.Slug(device)}-{date:yyyyMMdd}-vision");
        var json = new JsonObject
        {
            ["device"] = device,
            ["date"] = date.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
            ["rows"] = new JsonArray([.. rows.Select(r => (JsonNode)new JsonObject
            {
                ["stage"] = r.Paper, ["layer"] = r.Form, ["dtype"] = r.DType, ["batch"] = r.Batch, ["tokens"] = r.Tokens,
                ["forward_ms"] = r.ForwardMs, ["backward_ms"] = r.BackwardMs,
            })]),
        };
        File.WriteAllText(stem + ".json", json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        File.WriteAllText(stem + ".md", Markdown(rows, device));
        return stem + ".json";
    }

    private static string Ratio(Row? other, Row row) => other is null || ReferenceEquals(other, row) ? "—" : (other.ForwardMs / row.ForwardMs).ToString("F2", CultureInfo.InvariantCulture);
}

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
/// layer forward and backward, medians of timed runs (CUDA events on the GPU). Every layer takes <c>x [B, tokens, C]</c>: the
/// 2-D forms on their built grid (DeiT: the class token first), the 1-D forms as a sequence of the same tokens.
/// </summary>
internal static class BenchVision
{
    /// <summary>One shape of a paper's first stage and the layers measured on it (each with its token count).</summary>
    internal sealed record Stage(string Paper, IReadOnlyList<(string Form, LayerConfig Config, int Tokens)> Layers);

    /// <summary>
    /// The papers' first stages. PVT-S stage 1 (Agent-PVT-S, FLatten-PVT-S): 56×56 tokens of width 64, one head, agents 49 as
    /// issue 18 names them, FLatten's 5×5 depthwise filters, <c>sr_ratio</c> 1 as both papers' agent and linear stages have.
    /// Swin-T stage 1 (Agent-Swin-T, FLatten-Swin-T): 56×56 tokens of width 96, 3 heads, one 56×56 window (the official configs'
    /// window 56), 9 agents. DeiT-S (Agent-DeiT-S): a class token and 14×14 patches of width 384, 6 heads, 49 agents. Beside each:
    /// the 1-D form on the same tokens and non-causal softmax attention (MHA) over them.
    /// </summary>
    internal static IReadOnlyList<Stage> Stages { get; } =
    [
        new("PVT-S stage 1",
        [
            ("agent-pvt", new AgentVisionConfig { DModel = 64, Heads = 1, Agents = 49, GridHeight = 56, GridWidth = 56, QkvBias = true }, 3136),
            ("agent 1-D", new AgentConfig { DModel = 64, Heads = 1, Agents = 49, SeqLen = 3136 }, 3136),
            ("flatten-pvt", new FlattenVisionConfig { DModel = 64, Heads = 1, GridHeight = 56, GridWidth = 56, QkvBias = true, DwcKernel = 5 }, 3136),
            ("flatten 1-D", new FlattenConfig { DModel = 64, Heads = 1, SeqLen = 3136, DwcKernel = 5 }, 3136),
            ("softmax (mha)", Softmax(64, 1), 3136),
        ]),
        new("Swin-T stage 1",
        [
            ("agent-swin", new AgentVisionConfig { DModel = 96, Heads = 3, Agents = 9, GridHeight = 56, GridWidth = 56, QkvBias = true, Form = "swin" }, 3136),
            ("agent 1-D", new AgentConfig { DModel = 96, Heads = 3, Agents = 9, SeqLen = 3136 }, 3136),
            ("flatten-swin", new FlattenVisionConfig { DModel = 96, Heads = 3, GridHeight = 56, GridWidth = 56, QkvBias = true, Form = "swin" }, 3136),
            ("flatten 1-D", new FlattenConfig { DModel = 96, Heads = 3, SeqLen = 3136, DwcKernel = 5 }, 3136),
            ("softmax (mha)", Softmax(96, 3), 3136),
        ]),
        new("DeiT-S",
        [
            ("agent-deit", new AgentVisionConfig { DModel = 384, Heads = 6, Agents = 49, GridHeight = 14, GridWidth = 14, QkvBias = true, Form = "deit" }, 197),
            ("agent 1-D", new AgentConfig { DModel = 384, Heads = 6, Agents = 49, SeqLen = 197 }, 197),
            ("softmax (mha)", Softmax(384, 6), 197),
        ]),
    ];

    private static GqaConfig Softmax(int dm, int heads) =>
        new() { Kind = "mha", DModel = dm, Heads = heads, KvHeads = heads, HeadDim = dm / heads, Causal = false, Rope = false };

    internal sealed record Row(string Paper, string Form, string DType, int Batch, int Tokens, double ForwardMs, double BackwardMs);

    public static List<Row> Run(IAnsiConsole console, Backend backend, int repeats, int batch)
    {
        var dtype = backend.Kind == BackendKind.Cuda ? DType.BF16 : DType.F32;
        string type = dtype == DType.BF16 ? "bf16" : "f32";
        var rows = new List<Row>();
        var timer = new BenchTimer(backend, repeats);
        console.MarkupLine(Markup.Escape($"attn bench --vision on {backend.Name}, {type}, B = {batch}, median of {repeats}"));
        // One untimed pass over every layer first: the layers share ops, and without it the first layer measured would
        // carry the JIT's tiering of the shared code while the later ones ran it optimised.
        var warm = new BenchTimer(backend, 1);
        foreach (var (_, config, tokens) in Stages.SelectMany(s => s.Layers))
        {
            BenchSweep.Layer(backend, warm, config, dtype, batch, tokens);
        }
        foreach (var stage in Stages)
        {
            foreach (var (form, config, tokens) in stage.Layers)
            {
                var (fwd, bwd) = BenchSweep.Layer(backend, timer, config, dtype, batch, tokens);
                rows.Add(new(stage.Paper, form, type, batch, tokens, fwd, bwd));
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
            var oneD = row.Form.Contains('-', StringComparison.Ordinal) && !row.Form.Contains(' ', StringComparison.Ordinal) ? rows.FirstOrDefault(r => r.Paper == row.Paper && r.Form == family + " 1-D") : null;
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

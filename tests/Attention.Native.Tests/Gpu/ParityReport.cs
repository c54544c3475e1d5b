using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// After the Gpu tests, writes <c>bench/results/parity-&lt;device&gt;-&lt;yyyymmdd&gt;.json</c>: for each variant and pass (forward,
/// backward, decode) and storage type, and for each op, the largest relative error max|gpu − cpu| / (1 + max|cpu|) seen and the
/// tolerance factor it was held to. The folder is <c>ATTENTION_NATIVE_RESULTS_DIR</c> when set, else the repository's
/// <c>bench/results</c>. Nothing is written when no comparison ran (no GPU).
/// </summary>
[SetUpFixture]
public sealed partial class ParityReport
{
    public const string ResultsVariable = "ATTENTION_NATIVE_RESULTS_DIR";

    /// <summary>The tag prefix of variant comparisons: <c>variant &lt;name&gt; &lt;pass&gt; …</c>.</summary>
    public static string VariantTag(string variant, string pass) => $"variant {variant} {pass}";

    [OneTimeTearDown]
    public void Write()
    {
        var records = Parity.Records;
        var gpu = Requires.CudaDeviceIfPresent();
        if (records.Count == 0 || gpu is null)
        {
            return;
        }
        var now = DateTime.UtcNow;
        var json = Build(records, gpu.Device.Name, gpu.Device.Arch, now);
        string folder = Environment.GetEnvironmentVariable(ResultsVariable) is { Length: > 0 } dir ? dir : Path.Combine(RepositoryRoot(), "bench", "results");
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, $"parity-{Slug(gpu.Device.Name)}-{now:yyyyMMdd}.json");
        File.WriteAllText(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + Environment.NewLine);
        TestContext.Progress.WriteLine($"parity report: {path} ({records.Count} comparisons)");
    }

    /// <summary>The report for <paramref name="records"/> (public for its own test).</summary>
    internal static JsonObject Build(IReadOnlyList<Parity.Record> records, string device, string arch, DateTime date)
    {
        var variants = new JsonArray();
        var ops = new JsonArray();
        var groups = records.GroupBy(r =>
        {
            var m = VariantPattern().Match(r.Op);
            return m.Success ? (Kind: "variant", Name: m.Groups[1].Value, Pass: m.Groups[2].Value, r.DType)
                             : (Kind: "op", Name: r.Op.Split(' ', 2)[0], Pass: "", r.DType);
        });
        foreach (var g in groups.OrderBy(g => g.Key.Kind).ThenBy(g => g.Key.Name, StringComparer.Ordinal).ThenBy(g => g.Key.Pass, StringComparer.Ordinal).ThenBy(g => g.Key.DType))
        {
            var worst = g.MaxBy(r => r.RelativeError)!;
            var entry = new JsonObject
            {
                [g.Key.Kind] = g.Key.Name,
            };
            if (g.Key.Kind == "variant")
            {
                entry["pass"] = g.Key.Pass;
            }
            entry["dtype"] = g.Key.DType.ToString().ToLowerInvariant();
            entry["comparisons"] = g.Count();
            entry["max_rel_error"] = Round(worst.RelativeError);
            entry["tolerance"] = worst.ToleranceFactor;
            entry["worst_case"] = worst.Op + " " + worst.Shape;
            entry["within_tolerance"] = g.All(r => r.MaxError <= r.Tolerance);
            (g.Key.Kind == "variant" ? variants : ops).Add(entry);
        }
        return new JsonObject
        {
            ["device"] = device,
            ["arch"] = arch,
            ["date"] = date.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
            ["rule"] = "outputs: max|gpu - cpu| <= tolerance * (1 + max|cpu|), rel error = max|gpu - cpu| / (1 + max|cpu|); "
                + "gradients, by what the backward added (after - before) against the cpu's contribution c: "
                + "max|added - c| <= tolerance * max|c| + u * max|before + c| (u: the storage type's unit roundoff), rel error = max|added - c| / max|c|",
            ["variants"] = variants,
            ["ops"] = ops,
        };
    }

    public static string Slug(string device) => NonAlphanumeric().Replace(device.ToLowerInvariant(), "-").Trim('-');

    // JSON has no infinity: an overflowed or NaN comparison (Parity maps NaN to +∞) is written as the string "Infinity".
    private static JsonValue Round(double value) => double.IsFinite(value)
        ? JsonValue.Create(double.Parse(value.ToString("E3", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture))
        : JsonValue.Create("Infinity");

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Attention.Native.sln")))
            {
                return dir.FullName;
            }
        }
        return Directory.GetCurrentDirectory();
    }

    [GeneratedRegex(@"^variant (\S+) (forward|backward|decode)\b")]
    private static partial Regex VariantPattern();

    [GeneratedRegex("[^a-z0-9]+")]
    private static partial Regex NonAlphanumeric();
}

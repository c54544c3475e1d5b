using System.Globalization;

namespace Attention.Native.Tests.Support;

/// <summary>
/// GPU-vs-CPU comparisons (<see cref="Closeness"/>'s rules), reported on the test output and kept for the parity report
/// (<see cref="Gpu.ParityReport"/>); when <c>ATTENTION_NATIVE_PARITY_LOG</c> names a file, each is also appended there (one
/// tab-separated line). CPU-vs-CPU comparisons use <see cref="Precision"/>, which keeps nothing.
/// </summary>
internal static class Parity
{
    public const string LogVariable = "ATTENTION_NATIVE_PARITY_LOG";

    private static readonly Lock LogGate = new();
    private static readonly List<Record> s_records = [];

    /// <summary>
    /// One comparison: the op or variant tag, storage type, shape, max|err|, the bound it was held to, the relative error
    /// (outputs: max|err| / (1 + max|ref|); gradients: max|err| / max|reference contribution|) and the tolerance factor.
    /// </summary>
    public sealed record Record(string Op, DType DType, string Shape, double MaxError, double Tolerance, double RelativeError, double ToleranceFactor);

    /// <summary>Every comparison made so far in this run.</summary>
    public static IReadOnlyList<Record> Records
    {
        get
        {
            lock (LogGate)
            {
                return [.. s_records];
            }
        }
    }

    /// <summary>An output of the GPU against the CPU's (design.md's rule).</summary>
    public static void AssertClose(string op, DType dtype, string shape, float[] reference, float[] actual)
    {
        Assert.That(actual, Has.Length.EqualTo(reference.Length), $"{op}: output length");
        var r = Closeness.Output(reference, actual, dtype);
        Keep(new Record(op, dtype, shape, r.MaxError, r.Tolerance, r.Relative, r.Factor));
        Precision.AssertOutput(op, dtype, shape, r, "gpu − cpu");
    }

    /// <summary>
    /// A gradient the GPU op added into <paramref name="before"/> (null: wrote from zero) against the CPU's contribution
    /// (<see cref="Closeness.Added"/>).
    /// </summary>
    public static void AssertAdded(string op, DType dtype, string shape, float[]? before, float[] contribution, float[] after)
    {
        Assert.That(after, Has.Length.EqualTo(contribution.Length), $"{op}: gradient length");
        var r = Closeness.Added(before, contribution, after, dtype);
        Keep(new Record(op, dtype, shape, r.MaxError, r.Bound, r.Relative, r.Factor));
        Precision.AssertAdded(op, dtype, shape, r, "gpu − cpu");
    }

    private static void Keep(Record record)
    {
        string line = string.Create(CultureInfo.InvariantCulture, $"{record.Op}\t{record.DType}\t{record.Shape}\t{record.MaxError:E3}\t{record.Tolerance:E3}\t{record.RelativeError:E3}");
        TestContext.Out.WriteLine("[parity] " + line);
        lock (LogGate)
        {
            s_records.Add(record);
            if (Environment.GetEnvironmentVariable(LogVariable) is { Length: > 0 } path)
            {
                File.AppendAllText(path, line + Environment.NewLine);
            }
        }
    }
}

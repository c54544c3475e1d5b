using System.Globalization;

namespace Attention.Native.Tests.Support;

/// <summary>
/// GPU-vs-CPU comparison with the tolerances of design.md: fp32 max|err| ≤ 1e-4·(1 + max|ref|); bf16/fp16
/// storage with fp32 accumulation ≤ 2e-2·(1 + max|ref|). Each comparison is reported on the test output and,
/// when <c>ATTENTION_NATIVE_PARITY_LOG</c> names a file, appended there (one tab-separated line).
/// </summary>
internal static class Parity
{
    public const string LogVariable = "ATTENTION_NATIVE_PARITY_LOG";

    private static readonly Lock LogGate = new();
    private static readonly List<Record> s_records = [];

    /// <summary>One comparison: the op or variant tag, storage type, shape, max|err|, the tolerance and max|err| / (1 + max|ref|).</summary>
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

    public static double ToleranceFactor(DType dtype) => dtype == DType.F32 ? 1e-4 : 2e-2;

    public static void AssertClose(string op, DType dtype, string shape, float[] reference, float[] actual)
    {
        Assert.That(actual, Has.Length.EqualTo(reference.Length), $"{op}: output length");
        double maxRef = 0, maxErr = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(reference[i]));
            double err = Math.Abs((double)reference[i] - actual[i]);
            if (double.IsNaN(err))
            {
                err = double.PositiveInfinity;
            }
            maxErr = Math.Max(maxErr, err);
        }
        double tolerance = ToleranceFactor(dtype) * (1 + maxRef);
        string line = string.Create(CultureInfo.InvariantCulture, $"{op}\t{dtype}\t{shape}\t{maxErr:E3}\t{tolerance:E3}\t{maxErr / (1 + maxRef):E3}");
        TestContext.Out.WriteLine("[parity] " + line);
        lock (LogGate)
        {
            s_records.Add(new Record(op, dtype, shape, maxErr, tolerance, maxErr / (1 + maxRef), ToleranceFactor(dtype)));
            if (Environment.GetEnvironmentVariable(LogVariable) is { Length: > 0 } path)
            {
                File.AppendAllText(path, line + Environment.NewLine);
            }
        }
        Assert.That(maxErr, Is.LessThanOrEqualTo(tolerance), $"{op} {dtype} {shape}: max |gpu − cpu| = {maxErr:E3} > {tolerance:E3}");
    }
}

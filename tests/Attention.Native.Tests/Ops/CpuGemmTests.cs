using System.Numerics;
using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public unsafe class CpuGemmTests
{
    private const int Padding = 3;

    private static readonly Backend Cpu = Backend.Cpu;

    /// <summary>(alpha, beta) pairs; beta 0 runs with NaN in C, which must be ignored.</summary>
    private static readonly (double Alpha, double Beta)[] Scalings = [(1, 0), (-0.75, 1.5), (2, 1), (0.5, -1)];

    /// <summary>
    /// m, n, k mixing 0, 1, 7, 17, 64, 65, 129, 300, plus shapes that cross every block of the packed path
    /// (several row blocks, two depth blocks, two column blocks, a single row split across threads by columns).
    /// </summary>
    private static readonly object[] Shapes =
    [
        new object[] { 0, 5, 7 },
        new object[] { 5, 0, 7 },
        new object[] { 5, 7, 0 },
        new object[] { 1, 1, 1 },
        new object[] { 1, 300, 17 },
        new object[] { 300, 1, 65 },
        new object[] { 7, 17, 64 },
        new object[] { 17, 7, 129 },
        new object[] { 64, 64, 64 },
        new object[] { 65, 129, 300 },
        new object[] { 129, 65, 7 },
        new object[] { 300, 300, 17 },
        new object[] { 1, 129, 300 },
        new object[] { 300, 17, 1 },
        new object[] { 2 * CpuGemm.RowBlock + 5, 3, (2 * CpuGemm.DepthBlock) + 1 },
        new object[] { 7, CpuGemm.ColumnBlock + 4, 3 },
        new object[] { 5, CpuGemm.ColumnBlock + 33, 64 },
        new object[] { CpuGemm.FewRowsLimitPlainB, 1500, 300 },          // few rows, large enough to run in parallel
        new object[] { CpuGemm.FewRowsLimitPlainB + 1, 700, 300 },
        new object[] { CpuGemm.FewRowsLimitTransposedB, 300, 129 },
        new object[] { CpuGemm.FewRowsLimitTransposedB + 1, 129, 300 },
    ];

    [TestCaseSource(nameof(Shapes))]
    public void Double_matches_the_triple_loop(int m, int n, int k) => CheckAllVariants<double>(m, n, k, 1e-12);

    [TestCaseSource(nameof(Shapes))]
    public void Float_matches_the_triple_loop_within_rounding(int m, int n, int k) => CheckAllVariants<float>(m, n, k, 1e-4);

    [Test]
    public void Alpha_zero_or_empty_depth_only_scales_c()
    {
        foreach (int k in new[] { 0, 40 })
        {
            double[] a = TestData.Normal(1, 30 * 40), b = TestData.Normal(2, 40 * 20), c = TestData.Normal(3, 30 * 20);
            double[] scaled = (double[])c.Clone();
            CpuGemm.Serial(false, false, 30, 20, k, k == 0 ? 1.0 : 0.0, a, 40, b, 20, -2.0, scaled, 20);
            Assert.That(scaled, Is.EqualTo(c.Select(v => -2.0 * v)), $"k={k}");
            double[] cleared = Enumerable.Repeat(double.NaN, c.Length).ToArray();
            CpuGemm.Serial(false, false, 30, 20, k, k == 0 ? 1.0 : 0.0, a, 40, b, 20, 0.0, cleared, 20);
            Assert.That(cleared, Is.All.EqualTo(0.0), $"k={k}");
        }
    }

    [Test]
    public void Bad_arguments_name_the_argument()
    {
        var a = new double[12];
        var b = new double[12];
        var c = new double[9];
        LinearTests.AssertArgument(() => CpuGemm.Serial(false, false, 3, 3, 4, 1.0, a, 3, b, 3, 0.0, c, 3), "lda", "at least 4", "actual 3");
        LinearTests.AssertArgument(() => CpuGemm.Serial(true, false, 3, 3, 4, 1.0, a, 2, b, 3, 0.0, c, 3), "lda", "at least 3", "actual 2");
        LinearTests.AssertArgument(() => CpuGemm.Serial(false, true, 3, 3, 4, 1.0, a, 4, b, 3, 0.0, c, 3), "ldb", "at least 4", "actual 3");
        LinearTests.AssertArgument(() => CpuGemm.Serial(false, false, 3, 3, 4, 1.0, a, 4, b, 3, 0.0, c, 2), "ldc", "at least 3", "actual 2");
        LinearTests.AssertArgument(() => CpuGemm.Serial(false, false, 3, 3, 4, 1.0, a, 5, b, 3, 0.0, c, 3), "a", "at least 14", "actual 12");
        LinearTests.AssertArgument(() => CpuGemm.Serial(false, false, 3, 4, 4, 1.0, a, 4, b, 4, 0.0, c, 4), "b", "at least 16", "actual 12");
        LinearTests.AssertArgument(() => CpuGemm.Serial(false, false, 4, 3, 3, 1.0, a, 3, b, 3, 0.0, c, 3), "c", "at least 12", "actual 9");
        LinearTests.AssertArgument(() => CpuGemm.Serial(false, false, -1, 3, 3, 1.0, a, 3, b, 3, 0.0, c, 3), "m", "non-negative", "-1");
        fixed (double* pa = a, pb = b, pc = c)
        {
            var ba = new PinnedBuffer<double>(pa, a.Length);
            var bb = new PinnedBuffer<double>(pb, b.Length);
            var bc = new PinnedBuffer<double>(pc, c.Length);
            LinearTests.AssertArgument(() => CpuGemm.Parallel(false, false, 3, 3, 5, 1.0, ba, 5, bb, 3, 0.0, bc, 3), "a", "at least 15", "actual 12");
            LinearTests.AssertArgument(() => CpuGemm.Parallel(false, false, 3, 3, -2, 1.0, ba, 4, bb, 3, 0.0, bc, 3), "k", "non-negative", "-2");
        }
    }

    [TestCase(2, 40, 70, 33, true)]     // every product on the packed kernel, with edge tiles
    [TestCase(1, 30, 300, 9, true)]     // packed, two depth blocks forward and in dx/dw
    [TestCase(1, 1, 300, 200, false)]   // one token (T = 1): few-row paths forward and for dx
    [TestCase(2, 2, 130, 130, true)]    // four tokens: the few-row paths at their limit
    public void Linear_gradients_through_every_gemm_path_match_finite_differences(int batch, int seq, int inFeatures, int outFeatures, bool withBias)
    {
        Shape[] shapes = [new Shape(batch, seq, inFeatures), new Shape(outFeatures, inFeatures), new Shape(outFeatures)];
        double error = OpGradientCheck.MaxError(
            shapes,
            t => Linear.Forward(t[0], t[1], withBias ? t[2] : null),
            (t, dy, g) => Linear.Backward(t[0], t[1], dy, g[0], g[1], withBias ? g[2] : null),
            [true, true, withBias]);
        GradientCheck.AssertClose($"linear (cpu gemm) [{batch},{seq},{inFeatures}]→{outFeatures} bias={withBias}", error);
    }

    [Test]
    public void Linear_forward_through_the_packed_kernel_equals_the_definition()
    {
        const int m = 70, n = 90, k = 150;
        var x = TestData.Normal(1, m * k);
        var w = TestData.Normal(2, n * k);
        var bias = TestData.Normal(3, n);
        using var tx = Cpu.FromArray(x, new Shape(m, k), DType.F64);
        using var tw = Cpu.FromArray(w, new Shape(n, k), DType.F64);
        using var tb = Cpu.FromArray(bias, new Shape(n), DType.F64);
        using var y = Linear.Forward(tx, tw, tb);
        var actual = y.ToDoubleArray();
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double expected = bias[j], magnitude = Math.Abs(bias[j]);
                for (int c = 0; c < k; c++)
                {
                    expected += x[(i * k) + c] * w[(j * k) + c];
                    magnitude += Math.Abs(x[(i * k) + c] * w[(j * k) + c]);
                }
                Assert.That(actual[(i * n) + j], Is.EqualTo(expected).Within(1e-12 * magnitude), $"y[{i}, {j}]");
            }
        }
    }

    [Test]
    public void Linear_float_path_matches_double()
    {
        const int m = 70, n = 90, k = 150;
        var x = TestData.Normal(1, m * k);
        var w = TestData.Normal(2, n * k);
        var bias = TestData.Normal(3, n);
        var dy = TestData.Normal(4, m * n);
        double[][] Run(DType dtype)
        {
            using var tx = Cpu.FromArray(x, new Shape(m, k), dtype);
            using var tw = Cpu.FromArray(w, new Shape(n, k), dtype);
            using var tb = Cpu.FromArray(bias, new Shape(n), dtype);
            using var tdy = Cpu.FromArray(dy, new Shape(m, n), dtype);
            using var y = Linear.Forward(tx, tw, tb);
            using var dx = Cpu.Zeros(tx.Shape, dtype);
            using var dw = Cpu.Zeros(tw.Shape, dtype);
            using var db = Cpu.Zeros(tb.Shape, dtype);
            Linear.Backward(tx, tw, tdy, dx, dw, db);
            return [y.ToDoubleArray(), dx.ToDoubleArray(), dw.ToDoubleArray(), db.ToDoubleArray()];
        }
        var f64 = Run(DType.F64);
        var f32 = Run(DType.F32);
        for (int o = 0; o < f64.Length; o++)
        {
            double scale = f64[o].Max(Math.Abs);
            for (int i = 0; i < f64[o].Length; i++)
            {
                Assert.That(f32[o][i], Is.EqualTo(f64[o][i]).Within(1e-4 * scale), $"output {o} element {i}");
            }
        }
    }

    private static void CheckAllVariants<T>(int m, int n, int k, double tolerance)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        foreach (bool transA in new[] { false, true })
        {
            foreach (bool transB in new[] { false, true })
            {
                foreach (var (alpha, beta) in Scalings)
                {
                    Check<T>(transA, transB, m, n, k, alpha, beta, tolerance);
                }
            }
        }
    }

    /// <summary>
    /// Runs Serial and Parallel on strided operands (row strides wider than the rows, the gap filled with NaN so a
    /// read outside the matrix would show) against a plain triple loop in double, and requires the two to agree bit for bit.
    /// </summary>
    private static void Check<T>(bool transA, bool transB, int m, int n, int k, double alpha, double beta, double tolerance)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        string what = $"{typeof(T).Name} transA={transA} transB={transB} m={m} n={n} k={k} alpha={alpha} beta={beta}";
        var (a, lda) = Strided<T>(transA ? k : m, transA ? m : k, seed: 1);
        var (b, ldb) = Strided<T>(transB ? n : k, transB ? k : n, seed: 2);
        var (c, ldc) = Strided<T>(m, n, seed: 3, gap: T.CreateTruncating(7777));
        if (beta == 0 && n > 0)
        {
            for (int i = 0; i < m; i++)
            {
                Array.Fill(c, T.NaN, i * ldc, n);
            }
        }
        double A(int i, int p) => double.CreateTruncating(transA ? a[(p * lda) + i] : a[(i * lda) + p]);
        double B(int p, int j) => double.CreateTruncating(transB ? b[(j * ldb) + p] : b[(p * ldb) + j]);

        T[] serial = (T[])c.Clone(), parallel = (T[])c.Clone();
        CpuGemm.Serial(transA, transB, m, n, k, T.CreateTruncating(alpha), a, lda, b, ldb, T.CreateTruncating(beta), serial, ldc);
        fixed (T* pa = a, pb = b, pc = parallel)
        {
            CpuGemm.Parallel(
                transA, transB, m, n, k, T.CreateTruncating(alpha),
                new PinnedBuffer<T>(pa, a.Length), lda, new PinnedBuffer<T>(pb, b.Length), ldb,
                T.CreateTruncating(beta), new PinnedBuffer<T>(pc, parallel.Length), ldc);
        }
        Assert.That(parallel, Is.EqualTo(serial), $"{what}: Serial and Parallel differ");

        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double sum = 0, magnitude = 0;
                for (int p = 0; p < k; p++)
                {
                    sum += A(i, p) * B(p, j);
                    magnitude += Math.Abs(A(i, p) * B(p, j));
                }
                double old = beta == 0 ? 0 : double.CreateTruncating(c[(i * ldc) + j]);
                double expected = (alpha * sum) + (beta * old);
                double bound = tolerance * ((Math.Abs(alpha) * magnitude) + Math.Abs(beta * old));
                double actual = double.CreateTruncating(serial[(i * ldc) + j]);
                if (!(Math.Abs(actual - expected) <= bound))
                {
                    Assert.Fail($"{what}: C[{i}, {j}] = {actual}, expected {expected} ± {bound}");
                }
            }
            // The gap past each row of C is not C's: it must come back untouched.
            for (int j = n; j < ldc && (i * ldc) + j < c.Length; j++)
            {
                Assert.That(serial[(i * ldc) + j], Is.EqualTo(c[(i * ldc) + j]), $"{what}: gap of C row {i} written");
            }
        }
    }

    /// <summary>A rows × columns matrix with a row stride <see cref="Padding"/> wider, exactly as long as it must be, gaps NaN by default.</summary>
    private static (T[] Values, int Stride) Strided<T>(int rows, int columns, int seed, T? gap = null)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int stride = columns + Padding;
        int length = rows == 0 || columns == 0 ? 0 : ((rows - 1) * stride) + columns;
        var normal = TestData.Normal(seed, length);
        var values = new T[length];
        for (int i = 0; i < length; i++)
        {
            values[i] = i % stride < columns ? T.CreateTruncating(normal[i]) : gap ?? T.NaN;
        }
        return (values, stride);
    }
}

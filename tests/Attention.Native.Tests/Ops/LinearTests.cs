using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class LinearTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    [TestCase(3, 5, 4, true)]
    [TestCase(1, 1, 1, false)]
    [TestCase(37, 70, 19, true)]   // not multiples of the CPU tiles
    public void Forward_equals_the_definition(int m, int n, int k, bool withBias)
    {
        var x = TestData.Normal(1, m * k);
        var w = TestData.Normal(2, n * k);
        var b = TestData.Normal(3, n);
        using var tx = Cpu.FromArray(x, new Shape(m, k), DType.F64);
        using var tw = Cpu.FromArray(w, new Shape(n, k), DType.F64);
        using var tb = Cpu.FromArray(b, new Shape(n), DType.F64);
        using var y = Linear.Forward(tx, tw, withBias ? tb : null);
        var actual = y.ToDoubleArray();
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double expected = withBias ? b[j] : 0;
                for (int c = 0; c < k; c++)
                {
                    expected += x[(i * k) + c] * w[(j * k) + c];
                }
                Assert.That(actual[(i * n) + j], Is.EqualTo(expected).Within(1e-12));
            }
        }
    }

    [TestCase(2, 3, 4, 5, true)]
    [TestCase(1, 1, 1, 1, false)]
    [TestCase(1, 17, 33, 9, true)]
    public void Gradients_match_finite_differences(int batch, int seq, int inFeatures, int outFeatures, bool withBias)
    {
        var shapeX = new Shape(batch, seq, inFeatures);
        var shapeW = new Shape(outFeatures, inFeatures);
        double[][] inputs = [TestData.Normal(4, shapeX.ElementCount), TestData.Normal(5, shapeW.ElementCount), TestData.Normal(6, outFeatures)];
        var dyValues = TestData.Normal(7, batch * seq * outFeatures);

        double[] Forward(double[][] p)
        {
            using var x = Cpu.FromArray(p[0], shapeX, DType.F64);
            using var w = Cpu.FromArray(p[1], shapeW, DType.F64);
            using var b = Cpu.FromArray(p[2], new Shape(outFeatures), DType.F64);
            using var y = Linear.Forward(x, w, withBias ? b : null);
            return y.ToDoubleArray();
        }

        using var tx = Cpu.FromArray(inputs[0], shapeX, DType.F64);
        using var tw = Cpu.FromArray(inputs[1], shapeW, DType.F64);
        using var dy = Cpu.FromArray(dyValues, new Shape(batch, seq, outFeatures), DType.F64);
        using var dx = Cpu.Zeros(shapeX, DType.F64);
        using var dw = Cpu.Zeros(shapeW, DType.F64);
        using var db = Cpu.Zeros(new Shape(outFeatures), DType.F64);
        Linear.Backward(tx, tw, dy, dx, dw, withBias ? db : null);
        double error = GradientCheck.MaxError(inputs, Forward, dyValues, [dx.ToDoubleArray(), dw.ToDoubleArray(), withBias ? db.ToDoubleArray() : null!]);
        GradientCheck.AssertClose($"linear [{batch},{seq},{inFeatures}]→{outFeatures} bias={withBias}", error);
    }

    [Test]
    public void Accumulate_adds_to_existing_gradients()
    {
        using var x = Cpu.FromArray(TestData.NormalSingle(1, 12), new Shape(3, 4));
        using var w = Cpu.FromArray(TestData.NormalSingle(2, 8), new Shape(2, 4));
        using var dy = Cpu.FromArray(TestData.NormalSingle(3, 6), new Shape(3, 2));
        using var dx = Cpu.Zeros(x.Shape);
        using var dw = Cpu.Zeros(w.Shape);
        using var db = Cpu.Zeros(new Shape(2));
        Linear.Backward(x, w, dy, dx, dw, db);
        var once = (dx.ToArray(), dw.ToArray(), db.ToArray());
        Linear.Backward(x, w, dy, dx, dw, db, accumulate: true);
        Assert.Multiple(() =>
        {
            Assert.That(dx.ToArray(), Is.EqualTo(once.Item1.Select(v => 2 * v)).Within(1e-5));
            Assert.That(dw.ToArray(), Is.EqualTo(once.Item2.Select(v => 2 * v)).Within(1e-5));
            Assert.That(db.ToArray(), Is.EqualTo(once.Item3.Select(v => 2 * v)).Within(1e-5));
        });
        Linear.Backward(x, w, dy, dx, dw, db, accumulate: false);
        Assert.That(dx.ToArray(), Is.EqualTo(once.Item1));
    }

    [Test]
    public void Half_precision_storage_matches_fp32_within_tolerance()
    {
        var xs = TestData.Representable(TestData.NormalSingle(1, 64 * 48), DType.BF16);
        var ws = TestData.Representable(TestData.NormalSingle(2, 32 * 48), DType.BF16);
        using var x32 = Cpu.FromArray(xs, new Shape(64, 48));
        using var w32 = Cpu.FromArray(ws, new Shape(32, 48));
        using var x16 = Cpu.FromArray(xs, new Shape(64, 48), DType.BF16);
        using var w16 = Cpu.FromArray(ws, new Shape(32, 48), DType.BF16);
        using var y32 = Linear.Forward(x32, w32);
        using var y16 = Linear.Forward(x16, w16);
        Assert.That(y16.DType, Is.EqualTo(DType.BF16));
        Precision.AssertClose("linear cpu bf16 vs f32", DType.BF16, "[64,48]x[32,48]", y32.ToArray(), y16.ToArray());
    }

    [Test]
    public void Bad_shapes_name_the_argument_and_both_shapes()
    {
        using var x = Cpu.Zeros(new Shape(2, 3, 4));
        using var w = Cpu.Zeros(new Shape(5, 4));
        using var wrongW = Cpu.Zeros(new Shape(5, 6));
        using var wrongB = Cpu.Zeros(new Shape(4));
        using var wrongY = Cpu.Zeros(new Shape(2, 3, 6));
        using var f64 = Cpu.Zeros(new Shape(5, 4), DType.F64);
        using var dy = Cpu.Zeros(new Shape(2, 3, 5));
        using var wrongDx = Cpu.Zeros(new Shape(2, 3, 5));

        AssertArgument(() => Linear.Forward(x, wrongW), "weight", "[5, 4]", "[5, 6]");
        AssertArgument(() => Linear.Forward(x, w, wrongB), "bias", "[5]", "[4]");
        AssertArgument(() => Linear.Forward(x, w, null, wrongY), "y", "[2, 3, 5]", "[2, 3, 6]");
        AssertArgument(() => Linear.Forward(x, f64), "weight", "F32", "F64");
        AssertArgument(() => Linear.Backward(x, w, dy, wrongDx, null, null), "dx", "[2, 3, 4]", "[2, 3, 5]");
        AssertArgument(() => Linear.Backward(x, w, wrongDx, null, wrongW, null), "dweight", "[5, 4]", "[5, 6]");
    }

    internal static void AssertArgument(TestDelegate call, string argument, string expected, string actual)
    {
        var e = Assert.Throws(Is.InstanceOf<ArgumentException>(), call) as ArgumentException;
        Assert.Multiple(() =>
        {
            Assert.That(e!.ParamName, Is.EqualTo(argument));
            Assert.That(e.Message, Does.Contain("expected " + expected).Or.Contain(expected));
            Assert.That(e.Message, Does.Contain("actual " + actual).Or.Contain(actual));
        });
    }
}

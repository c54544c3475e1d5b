using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class PermuteTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    // (shape, permutation) of every rank 1 … 6: the identity, transposes, the head split [B, T, h, d] → [B, h, T, d], a
    // cycle, axes of length 1, and a reversal of six axes.
    private static readonly object[] Configs =
    [
        new object[] { new[] { 5 }, new[] { 0 } },
        new object[] { new[] { 3, 4 }, new[] { 1, 0 } },
        new object[] { new[] { 3, 4 }, new[] { 0, 1 } },
        new object[] { new[] { 2, 3, 4 }, new[] { 2, 0, 1 } },
        new object[] { new[] { 2, 3, 4 }, new[] { 1, 2, 0 } },
        new object[] { new[] { 2, 5, 3, 4 }, new[] { 0, 2, 1, 3 } },
        new object[] { new[] { 2, 1, 3, 4 }, new[] { 3, 1, 0, 2 } },
        new object[] { new[] { 2, 3, 1, 4, 2 }, new[] { 4, 2, 0, 3, 1 } },
        new object[] { new[] { 2, 3, 2, 1, 3, 2 }, new[] { 5, 4, 3, 2, 1, 0 } },
        new object[] { new[] { 3, 2, 2, 3, 2, 2 }, new[] { 1, 3, 5, 0, 2, 4 } },
    ];

    /// <summary>y[i] = x[j] with j[p[a]] = i[a], by the multi-index of every output element.</summary>
    private static double[] Loops(double[] x, int[] dims, int[] p)
    {
        int rank = dims.Length;
        var outDims = p.Select(a => dims[a]).ToArray();
        var y = new double[x.Length];
        var i = new int[rank];
        var j = new int[rank];
        for (int e = 0; e < y.Length; e++)
        {
            int rest = e;
            for (int a = rank - 1; a >= 0; a--)
            {
                i[a] = rest % outDims[a];
                rest /= outDims[a];
            }
            for (int a = 0; a < rank; a++)
            {
                j[p[a]] = i[a];
            }
            int source = 0;
            for (int a = 0; a < rank; a++)
            {
                source = (source * dims[a]) + j[a];
            }
            y[e] = x[source];
        }
        return y;
    }

    [TestCaseSource(nameof(Configs))]
    public void Forward_equals_the_definition(int[] dims, int[] p)
    {
        var shape = new Shape(dims);
        var x = TestData.Normal(81, shape.ElementCount);
        using var tx = Cpu.FromArray(x, shape, DType.F64);
        using var y = Permute.Forward(tx, p);
        Assert.That(y.Shape, Is.EqualTo(new Shape(p.Select(a => dims[a]).ToArray())));
        Assert.That(y.ToDoubleArray(), Is.EqualTo(Loops(x, dims, p)));
        using var given = Cpu.FromArray(TestData.Normal(82, shape.ElementCount), y.Shape, DType.F64);
        Permute.Forward(tx, p, given);
        Assert.That(given.ToDoubleArray(), Is.EqualTo(y.ToDoubleArray()));
    }

    [TestCaseSource(nameof(Configs))]
    public void Backward_adds_the_inverse_permutation(int[] dims, int[] p)
    {
        var shape = new Shape(dims);
        var yShape = new Shape(p.Select(a => dims[a]).ToArray());
        var x = TestData.Normal(83, shape.ElementCount);
        var dy = TestData.Normal(84, shape.ElementCount);
        var before = TestData.Normal(85, shape.ElementCount);
        using var tdy = Cpu.FromArray(dy, yShape, DType.F64);
        using var dx = Cpu.FromArray(before, shape, DType.F64);
        Permute.Backward(tdy, p, dx);
        var added = dx.ToDoubleArray().Zip(before, (a, b) => a - b).ToArray();
        // The inverse permutation q (q[p[a]] = a) applied to dy, by the same loops.
        var q = new int[p.Length];
        for (int a = 0; a < p.Length; a++)
        {
            q[p[a]] = a;
        }
        Assert.That(added, Is.EqualTo(Loops(dy, yShape.Dims.ToArray(), q)).Within(1e-12));
        // ⟨dy, P x⟩ = ⟨Pᵀ dy, x⟩.
        using var tx = Cpu.FromArray(x, shape, DType.F64);
        using var y = Permute.Forward(tx, p);
        double left = dy.Zip(y.ToDoubleArray(), (a, b) => a * b).Sum();
        double right = added.Zip(x, (a, b) => a * b).Sum();
        Assert.That(right, Is.EqualTo(left).Within(1e-12 * (1 + Math.Abs(left))));
    }

    [Test]
    public void Worked_values_are_torchs()
    {
        // [[0, 1, 2], [3, 4, 5]] transposed.
        using var m = Cpu.FromArray(new double[] { 0, 1, 2, 3, 4, 5 }, new Shape(2, 3), DType.F64);
        using var mt = Permute.Forward(m, [1, 0]);
        Assert.That(mt.Shape, Is.EqualTo(new Shape(3, 2)));
        Assert.That(mt.ToDoubleArray(), Is.EqualTo(new double[] { 0, 3, 1, 4, 2, 5 }));
        // x = 0 … 7 as [2, 2, 2] (x[a, b, c] = 4a + 2b + c); x.permute(2, 0, 1)[a, b, c] = x[b, c, a] = 4b + 2c + a.
        using var cube = Cpu.FromArray(Enumerable.Range(0, 8).Select(v => (double)v).ToArray(), new Shape(2, 2, 2), DType.F64);
        using var cycled = Permute.Forward(cube, [2, 0, 1]);
        Assert.That(cycled.ToDoubleArray(), Is.EqualTo(new double[] { 0, 2, 4, 6, 1, 3, 5, 7 }));
        // [1, 2, 3] (x = 0 … 5) with p = (2, 0, 1) → [3, 1, 2]: y[a, 0, c] = x[0, c, a] = 3c + a.
        using var flat = Cpu.FromArray(Enumerable.Range(0, 6).Select(v => (double)v).ToArray(), new Shape(1, 2, 3), DType.F64);
        using var moved = Permute.Forward(flat, [2, 0, 1]);
        Assert.That(moved.Shape, Is.EqualTo(new Shape(3, 1, 2)));
        Assert.That(moved.ToDoubleArray(), Is.EqualTo(new double[] { 0, 3, 1, 4, 2, 5 }));
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    [TestCase(DType.F16)]
    public void Storage_types_move_values_exactly_and_add_gradients(DType dtype)
    {
        int[] dims = [2, 7, 3, 16];
        int[] p = [0, 2, 1, 3];
        var shape = new Shape(dims);
        var yShape = new Shape(2, 3, 7, 16);
        var x = TestData.Representable(TestData.NormalSingle(86, shape.ElementCount), dtype);
        var dy = TestData.Representable(TestData.NormalSingle(87, shape.ElementCount), dtype);
        var before = TestData.Representable(TestData.NormalSingle(88, shape.ElementCount), dtype);
        using var tx = Cpu.FromArray(x, shape, dtype);
        using var y = Permute.Forward(tx, p);
        Assert.That(y.ToArray(), Is.EqualTo(Loops(Array.ConvertAll(x, v => (double)v), dims, p).Select(v => (float)v)), "a permutation moves values unchanged");
        var results = new Dictionary<DType, float[]>();
        foreach (var t in new[] { DType.F64, dtype })
        {
            using var tdy = Cpu.FromArray(dy, yShape, t);
            using var dx = Cpu.FromArray(before, shape, t);
            Permute.Backward(tdy, p, dx);
            results[t] = dx.ToArray();
        }
        var contribution = results[DType.F64].Zip(before, (a, b) => a - b).ToArray();
        Precision.AssertAdded("permute cpu dx", dtype, shape.ToString(), before, contribution, results[dtype]);
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var x = Cpu.Zeros(new Shape(2, 3, 4));
        using var y = Cpu.Zeros(new Shape(4, 2, 3));
        using var wrong = Cpu.Zeros(new Shape(2, 4, 3));
        using var f64 = Cpu.Zeros(new Shape(4, 2, 3), DType.F64);
        using var rank7 = Cpu.Zeros(new Shape(1, 1, 1, 1, 1, 1, 1));
        LinearTests.AssertArgument(() => Permute.Forward(x, [0, 1]), "permutation", "the 3 axes", "[0, 1]");
        LinearTests.AssertArgument(() => Permute.Forward(x, [0, 1, 1]), "permutation", "each once", "[0, 1, 1]");
        LinearTests.AssertArgument(() => Permute.Forward(x, [0, 1, 3]), "permutation", "0 … 2", "[0, 1, 3]");
        LinearTests.AssertArgument(() => Permute.Forward(x, [-1, 1, 2]), "permutation", "0 … 2", "[-1, 1, 2]");
        LinearTests.AssertArgument(() => Permute.Forward(rank7, [0, 1, 2, 3, 4, 5, 6]), "x", "rank 1 … 6", "[1, 1, 1, 1, 1, 1, 1]");
        LinearTests.AssertArgument(() => Permute.Forward(x, [2, 0, 1], wrong), "y", "[4, 2, 3]", "[2, 4, 3]");
        LinearTests.AssertArgument(() => Permute.Forward(x, [2, 0, 1], f64), "y", "F32", "F64");
        LinearTests.AssertArgument(() => Permute.Forward(x, [0, 1, 2], x), "y", "distinct from x", "same tensor");
        LinearTests.AssertArgument(() => Permute.Backward(wrong, [2, 0, 1], x), "dy", "[4, 2, 3]", "[2, 4, 3]");
        LinearTests.AssertArgument(() => Permute.Backward(f64, [2, 0, 1], x), "dy", "F32", "F64");
        LinearTests.AssertArgument(() => Permute.Backward(y, [2, 0], x), "permutation", "the 3 axes", "[2, 0]");
        LinearTests.AssertArgument(() => Permute.Backward(x, [0, 1, 2], x), "dx", "distinct from dy", "same tensor");
    }
}

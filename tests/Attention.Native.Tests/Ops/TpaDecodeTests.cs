using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class TpaDecodeTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    // (B, Tq, H, Rq, Rk, Rv, d, Cap, length): one query and several, length < Cap and = Cap, length = 1,
    // Tq = length, rank 1, one head; the last needs several key chunks.
    private static readonly object[] Configs =
    [
        new object[] { 2, 1, 3, 2, 2, 1, 4, 8, 5 },
        new object[] { 1, 3, 2, 3, 1, 2, 5, 10, 7 },
        new object[] { 2, 4, 2, 1, 2, 3, 3, 6, 6 },
        new object[] { 1, 1, 1, 1, 1, 1, 2, 4, 1 },
        new object[] { 1, 2, 3, 2, 2, 2, 4, 12, 2 },
        new object[] { 2, 3, 1, 2, 3, 2, 6, 9, 4 },
        new object[] { 1, 2, 2, 2, 2, 2, 8, 200, 150 },
    ];

    [TestCaseSource(nameof(Configs))]
    public void Forward_equals_attention_over_the_materialised_q_k_v(int batch, int queries, int heads, int queryRank, int keyRank, int valueRank, int width, int capacity, int length)
    {
        var sizes = new Sizes(batch, queries, heads, queryRank, keyRank, valueRank, width, capacity);
        var factors = sizes.Random(81);
        using var o = Run(sizes, factors, length, DType.F64);
        Assert.That(o.Shape, Is.EqualTo(new Shape(batch, queries, heads, width)));
        Assert.That(o.ToDoubleArray(), Is.EqualTo(Reference(sizes, factors, length)).Within(1e-12));
    }

    [TestCase(3)]
    [TestCase(4)]
    [TestCase(8)]
    public void Every_valid_length_sees_exactly_its_prefix(int length)
    {
        // The same caches at several lengths: positions at and beyond length must not leak in.
        var sizes = new Sizes(2, 3, 2, 2, 2, 2, 4, 8);
        var factors = sizes.Random(82);
        using var o = Run(sizes, factors, length, DType.F64);
        Assert.That(o.ToDoubleArray(), Is.EqualTo(Reference(sizes, factors, length)).Within(1e-12));
    }

    [Test]
    public void Query_blocks_bounded_by_the_product_buffer_give_the_same_result()
    {
        // length·Rq·Rk = 1,500,000 factor products per query: the three queries run in two blocks.
        var sizes = new Sizes(1, 3, 2, 25, 24, 1, 2, 2500);
        var factors = sizes.Random(83);
        using var o = Run(sizes, factors, 2500, DType.F64);
        Assert.That(o.ToDoubleArray(), Is.EqualTo(Reference(sizes, factors, 2500)).Within(1e-12));
    }

    [Test]
    public void Float_path_matches_double()
    {
        var sizes = new Sizes(2, 2, 4, 3, 2, 2, 32, 70);
        var factors = sizes.Random(84);
        using var o64 = Run(sizes, factors, 65, DType.F64);
        using var o32 = Run(sizes, factors, 65, DType.F32);
        Precision.AssertClose("tpadecode cpu f32 vs f64", DType.F32, "B=2 Tq=2 H=4 d=32 length=65", o64.ToArray(), o32.ToArray());
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        // Rq = H, so bq has the output's shape and can stand in for an aliased output.
        var sizes = new Sizes(2, 2, 3, 3, 2, 1, 4, 6);
        var factors = sizes.Random(85);
        var t = sizes.Shapes.Select((s, i) => Cpu.FromArray(factors[i], s, DType.F32)).ToArray();
        try
        {
            Tensor aq = t[0], bq = t[1], ak = t[2], bk = t[3], av = t[4], bv = t[5];
            using var bkWidth = Cpu.Zeros(new Shape(2, 6, 2, 5));
            using var akHeads = Cpu.Zeros(new Shape(2, 6, 2, 2));
            using var avCapacity = Cpu.Zeros(new Shape(2, 5, 3, 1));
            using var bqRank = Cpu.Zeros(new Shape(2, 2, 2, 4));
            using var bvRank = Cpu.Zeros(new Shape(2, 6, 2, 4));
            using var rank3 = Cpu.Zeros(new Shape(2, 6, 8));
            using var wrongO = Cpu.Zeros(new Shape(2, 2, 3, 5));
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bq, ak, bk, av, bv, 7), "length", "≤ Cap = 6", "7");
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bq, ak, bk, av, bv, 1), "length", "Tq = 2 ≤ length", "1");
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bq, ak, bk, av, bv, 0), "length", "length ≥ 1", "0");
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bq, ak, bkWidth, av, bv, 4), "bk", "[2, 6, 2, 4]", "[2, 6, 2, 5]");
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bq, akHeads, bk, av, bv, 4), "ak", "[2, Cap, 3, Rk]", "[2, 6, 2, 2]");
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bq, ak, bk, avCapacity, bv, 4), "av", "[2, 6, 3, Rv]", "[2, 5, 3, 1]");
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bqRank, ak, bk, av, bv, 4), "bq", "[2, 2, 3, d]", "[2, 2, 2, 4]");
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bq, ak, bk, av, bvRank, 4), "bv", "[2, 6, 1, 4]", "[2, 6, 2, 4]");
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bq, ak, rank3, av, bv, 4), "bk", "rank 4", "[2, 6, 8]");
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bq, ak, bk, av, bv, 4, wrongO), "o", "[2, 2, 3, 4]", "[2, 2, 3, 5]");
            LinearTests.AssertArgument(() => TpaDecode.Forward(aq, bq, ak, bk, av, bv, 4, bq), "o", "distinct from bq", "same tensor");
        }
        finally
        {
            foreach (var tensor in t)
            {
                tensor.Dispose();
            }
        }
    }

    private static Tensor Run(Sizes n, double[][] factors, int length, DType dtype)
    {
        var t = n.Shapes.Select((s, i) => Cpu.FromArray(factors[i], s, dtype)).ToArray();
        try
        {
            return TpaDecode.Forward(t[0], t[1], t[2], t[3], t[4], t[5], length);
        }
        finally
        {
            foreach (var tensor in t)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>Materialises q, k, v from the factors, then plain causal softmax attention.</summary>
    private static double[] Reference(Sizes n, double[][] f, int length)
    {
        double[] aq = f[0], bq = f[1], ak = f[2], bk = f[3], av = f[4], bv = f[5];
        int d = n.Width;
        var o = new double[n.Batch * n.Queries * n.Heads * d];
        for (int b = 0; b < n.Batch; b++)
        {
            for (int i = 0; i < n.Queries; i++)
            {
                int position = length - n.Queries + i;
                for (int h = 0; h < n.Heads; h++)
                {
                    var q = new double[d];
                    for (int r = 0; r < n.QueryRank; r++)
                    {
                        for (int e = 0; e < d; e++)
                        {
                            q[e] += aq[(((((b * n.Queries) + i) * n.Heads) + h) * n.QueryRank) + r] * bq[(((((b * n.Queries) + i) * n.QueryRank) + r) * d) + e] / n.QueryRank;
                        }
                    }
                    var scores = new double[position + 1];
                    var values = new double[position + 1][];
                    for (int s = 0; s <= position; s++)
                    {
                        var k = new double[d];
                        values[s] = new double[d];
                        for (int u = 0; u < n.KeyRank; u++)
                        {
                            for (int e = 0; e < d; e++)
                            {
                                k[e] += ak[(((((b * n.Capacity) + s) * n.Heads) + h) * n.KeyRank) + u] * bk[(((((b * n.Capacity) + s) * n.KeyRank) + u) * d) + e] / n.KeyRank;
                            }
                        }
                        for (int u = 0; u < n.ValueRank; u++)
                        {
                            for (int e = 0; e < d; e++)
                            {
                                values[s][e] += av[(((((b * n.Capacity) + s) * n.Heads) + h) * n.ValueRank) + u] * bv[(((((b * n.Capacity) + s) * n.ValueRank) + u) * d) + e] / n.ValueRank;
                            }
                        }
                        double dot = 0;
                        for (int e = 0; e < d; e++)
                        {
                            dot += q[e] * k[e];
                        }
                        scores[s] = dot / Math.Sqrt(d);
                    }
                    double max = scores.Max();
                    double[] p = scores.Select(x => Math.Exp(x - max)).ToArray();
                    double sum = p.Sum();
                    for (int s = 0; s <= position; s++)
                    {
                        for (int e = 0; e < d; e++)
                        {
                            o[(((((b * n.Queries) + i) * n.Heads) + h) * d) + e] += p[s] / sum * values[s][e];
                        }
                    }
                }
            }
        }
        return o;
    }

    private readonly record struct Sizes(int Batch, int Queries, int Heads, int QueryRank, int KeyRank, int ValueRank, int Width, int Capacity)
    {
        public Shape[] Shapes =>
        [
            new(Batch, Queries, Heads, QueryRank), new(Batch, Queries, QueryRank, Width),
            new(Batch, Capacity, Heads, KeyRank), new(Batch, Capacity, KeyRank, Width),
            new(Batch, Capacity, Heads, ValueRank), new(Batch, Capacity, ValueRank, Width),
        ];

        public double[][] Random(int seed) => Shapes.Select((s, i) => TestData.Normal(seed + (17 * i), s.ElementCount)).ToArray();
    }
}

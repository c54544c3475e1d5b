using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Serving;

/// <summary>
/// The ops of a ragged batch (<see cref="SequenceLayout"/>) on the CPU backend against the same ops called once per sequence on
/// its own rows (F64 to 1e-12): RoPE and LRPE at each sequence's start position, Lightning from and into each sequence's state
/// row (slots out of order, more state rows than sequences, the states updated in place), forward and backward with the state
/// gradients; and the bad inputs of the ragged entries, each naming its argument.
/// </summary>
[TestFixture]
public sealed class RaggedOpsTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    // A sequence of one token between two longer ones; the second and third continue cached prefixes.
    private static readonly SequenceLayout Shifted = SequenceLayout.FromLengths(4, 1, 6).WithStartPositions([0, 9, 100]);

    private static IEnumerable<TestCaseData> RopeCases()
    {
        yield return new TestCaseData(new Shape(1, 11, 2, 8), new RopeOptions(RopeStyle.Half)).SetName("Ragged RoPE half [1, N, H, d]");
        yield return new TestCaseData(new Shape(1, 11, 12), new RopeOptions(RopeStyle.Interleaved, RotaryOffset: 4, RotaryDim: 6)).SetName("Ragged RoPE interleaved slice [1, N, d]");
        yield return new TestCaseData(new Shape(1, 11, 2, 16), new RopeOptions(RopeStyle.Interleaved, Scaling: new RopeScaling(4, 8))).SetName("Ragged RoPE YaRN [1, N, H, d]");
    }

    [TestCaseSource(nameof(RopeCases))]
    public void Ragged_rope_equals_dense_rope_at_each_sequence_start(Shape shape, RopeOptions options)
    {
        long row = shape.ElementCount / shape[1];
        var x = TestData.Normal(1, shape.ElementCount);
        var dy = TestData.Normal(2, shape.ElementCount);
        using var xt = Cpu.FromArray(x, shape, DType.F64);
        using var dyt = Cpu.FromArray(dy, shape, DType.F64);
        using var y = Rope.Forward(xt, options, Shifted);
        using var dx = Cpu.Zeros(shape, DType.F64);
        Rope.Backward(dyt, dx, options, Shifted);

        var yExpected = new double[x.Length];
        var dxExpected = new double[x.Length];
        for (int s = 0; s < Shifted.Count; s++)
        {
            var part = Part(shape, Shifted.Length(s));
            using var xs = Cpu.FromArray(Rows(Shifted, x, s, row), part, DType.F64);
            using var ys = Rope.Forward(xs, options, Shifted.StartPosition(s));
            ys.ToDoubleArray().CopyTo(yExpected, Shifted.Start(s) * row);
            using var dys = Cpu.FromArray(Rows(Shifted, dy, s, row), part, DType.F64);
            using var dxs = Cpu.Zeros(part, DType.F64);
            Rope.Backward(dys, dxs, options, Shifted.StartPosition(s));
            dxs.ToDoubleArray().CopyTo(dxExpected, Shifted.Start(s) * row);
        }
        Assert.Multiple(() =>
        {
            Assert.That(RaggedLayerTests.MaxRelative(yExpected, y.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "y");
            Assert.That(RaggedLayerTests.MaxRelative(dxExpected, dx.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "dx");
        });

        // In place, as the layers rotate q and k.
        Rope.Forward(xt, xt, options, Shifted);
        Assert.That(RaggedLayerTests.MaxRelative(yExpected, xt.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "y in place");
    }

    [Test]
    public void Ragged_rope_and_lrpe_differ_from_the_dense_batch_when_sequences_start_past_zero()
    {
        // The position of each token matters: the packed batch rotated as one dense sequence is another result.
        var shape = new Shape(1, 11, 2, 8);
        var x = TestData.Normal(3, shape.ElementCount);
        using var xt = Cpu.FromArray(x, shape, DType.F64);
        using var theta = Cpu.FromArray(TestData.Normal(4, 16), new Shape(2, 8), DType.F64);
        using var ragged = Rope.Forward(xt, default, Shifted);
        using var dense = Rope.Forward(xt);
        using var lrpeRagged = Lrpe.Forward(xt, theta, Shifted);
        using var lrpeDense = Lrpe.Forward(xt, theta);
        Assert.Multiple(() =>
        {
            Assert.That(RaggedLayerTests.MaxRelative(dense.ToDoubleArray(), ragged.ToDoubleArray()), Is.GreaterThan(1e-3));
            Assert.That(RaggedLayerTests.MaxRelative(lrpeDense.ToDoubleArray(), lrpeRagged.ToDoubleArray()), Is.GreaterThan(1e-3));
        });
    }

    [Test]
    public void Ragged_lrpe_equals_dense_lrpe_at_each_sequence_start()
    {
        const int H = 2, W = 5;
        var shape = new Shape(1, Shifted.TokenCount, H, W);
        long row = H * W;
        var x = TestData.Normal(11, shape.ElementCount);
        var dy = TestData.Normal(12, 2 * shape.ElementCount);
        var thetaValues = TestData.Normal(13, H * W, 0.3);
        using var xt = Cpu.FromArray(x, shape, DType.F64);
        using var theta = Cpu.FromArray(thetaValues, new Shape(H, W), DType.F64);
        using var dyt = Cpu.FromArray(dy, new Shape(1, Shifted.TokenCount, H, 2 * W), DType.F64);
        using var y = Lrpe.Forward(xt, theta, Shifted);
        // The backward adds: start from values, as the per-sequence sums do.
        var dxStart = TestData.Normal(14, shape.ElementCount);
        var dthetaStart = TestData.Normal(15, H * W);
        using var dx = Cpu.FromArray(dxStart, shape, DType.F64);
        using var dtheta = Cpu.FromArray(dthetaStart, theta.Shape, DType.F64);
        Lrpe.Backward(xt, theta, dyt, dx, dtheta, Shifted);

        var yExpected = new double[2 * x.Length];
        var dxExpected = (double[])dxStart.Clone();
        using var dthetaExpected = Cpu.FromArray(dthetaStart, theta.Shape, DType.F64);
        for (int s = 0; s < Shifted.Count; s++)
        {
            var part = new Shape(1, Shifted.Length(s), H, W);
            using var xs = Cpu.FromArray(Rows(Shifted, x, s, row), part, DType.F64);
            using var ys = Lrpe.Forward(xs, theta, Shifted.StartPosition(s));
            ys.ToDoubleArray().CopyTo(yExpected, Shifted.Start(s) * 2 * row);
            using var dys = Cpu.FromArray(Rows(Shifted, dy, s, 2 * row), new Shape(1, Shifted.Length(s), H, 2 * W), DType.F64);
            using var dxs = Cpu.FromArray(Rows(Shifted, dxStart, s, row), part, DType.F64);
            Lrpe.Backward(xs, theta, dys, dxs, dthetaExpected, Shifted.StartPosition(s));
            dxs.ToDoubleArray().CopyTo(dxExpected, Shifted.Start(s) * row);
        }
        Assert.Multiple(() =>
        {
            Assert.That(RaggedLayerTests.MaxRelative(yExpected, y.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "y");
            Assert.That(RaggedLayerTests.MaxRelative(dxExpected, dx.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "dx");
            Assert.That(RaggedLayerTests.MaxRelative(dthetaExpected.ToDoubleArray(), dtheta.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "dtheta");
        });
    }

    // Lightning: heads, widths and λ per head; sequences of 5, 1 and 70 tokens (past the default 64-token block), their state
    // rows 3, 0 and 2 of 5 (out of order; rows 1 and 4 belong to no sequence and must stay as they are).
    private const int Heads = 2, Dk = 3, Dv = 4, StateRows = 5;
    private static readonly double[] Decay = [0.9, 0.99];
    private static readonly SequenceLayout Sequences = SequenceLayout.FromLengths(5, 1, 70);
    private static readonly int[] Slots = [3, 0, 2];
    private static readonly Shape StateShape = new(StateRows, Heads, Dk, Dv);

    private static long StateSize => Heads * Dk * Dv;

    [TestCase(false, TestName = "Ragged Lightning forward equals per-sequence calls (separate final states)")]
    [TestCase(true, TestName = "Ragged Lightning forward equals per-sequence calls (states updated in place)")]
    public void Ragged_lightning_forward_equals_each_sequence_alone_with_its_state_row(bool inPlace)
    {
        var (q, k, v) = LightningInputs(21);
        var s0 = TestData.Normal(24, StateShape.ElementCount);
        var garbage = TestData.Normal(25, StateShape.ElementCount, 100);
        using var qt = Cpu.FromArray(q, KeyShape(Sequences.TokenCount), DType.F64);
        using var kt = Cpu.FromArray(k, KeyShape(Sequences.TokenCount), DType.F64);
        using var vt = Cpu.FromArray(v, ValueShape(Sequences.TokenCount), DType.F64);
        using var initial = Cpu.FromArray(s0, StateShape, DType.F64);
        using var separate = Cpu.FromArray(garbage, StateShape, DType.F64);
        var final = inPlace ? initial : separate;
        using var o = Lightning.ForwardRagged(qt, kt, vt, Decay, Sequences, initial, final, Slots);

        var oExpected = new double[Sequences.TokenCount * Heads * Dv];
        var finalExpected = inPlace ? (double[])s0.Clone() : (double[])garbage.Clone();
        for (int s = 0; s < Sequences.Count; s++)
        {
            int n = Sequences.Length(s);
            using var qs = Cpu.FromArray(Rows(Sequences, q, s, Heads * Dk), KeyShape(n), DType.F64);
            using var ks = Cpu.FromArray(Rows(Sequences, k, s, Heads * Dk), KeyShape(n), DType.F64);
            using var vs = Cpu.FromArray(Rows(Sequences, v, s, Heads * Dv), ValueShape(n), DType.F64);
            using var s0s = Cpu.FromArray(StateRow(s0, Slots[s]), new Shape(1, Heads, Dk, Dv), DType.F64);
            using var fs = Cpu.Zeros(s0s.Shape, DType.F64);
            using var os = Lightning.Forward(qs, ks, vs, Decay, s0s, fs);
            os.ToDoubleArray().CopyTo(oExpected, Sequences.Start(s) * Heads * Dv);
            fs.ToDoubleArray().CopyTo(finalExpected, Slots[s] * StateSize);
        }
        Assert.Multiple(() =>
        {
            Assert.That(RaggedLayerTests.MaxRelative(oExpected, o.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "o");
            Assert.That(RaggedLayerTests.MaxRelative(finalExpected, final.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "final states (rows 1 and 4 unchanged)");
            if (!inPlace)
            {
                Assert.That(initial.ToDoubleArray(), Is.EqualTo(s0), "the initial states are only read");
            }
        });
    }

    [Test]
    public void Ragged_lightning_without_states_starts_each_sequence_from_zero()
    {
        var (q, k, v) = LightningInputs(31);
        using var qt = Cpu.FromArray(q, KeyShape(Sequences.TokenCount), DType.F64);
        using var kt = Cpu.FromArray(k, KeyShape(Sequences.TokenCount), DType.F64);
        using var vt = Cpu.FromArray(v, ValueShape(Sequences.TokenCount), DType.F64);
        using var o = Lightning.ForwardRagged(qt, kt, vt, Decay, Sequences);
        var expected = new double[Sequences.TokenCount * Heads * Dv];
        for (int s = 0; s < Sequences.Count; s++)
        {
            int n = Sequences.Length(s);
            using var qs = Cpu.FromArray(Rows(Sequences, q, s, Heads * Dk), KeyShape(n), DType.F64);
            using var ks = Cpu.FromArray(Rows(Sequences, k, s, Heads * Dk), KeyShape(n), DType.F64);
            using var vs = Cpu.FromArray(Rows(Sequences, v, s, Heads * Dv), ValueShape(n), DType.F64);
            using var os = Lightning.Forward(qs, ks, vs, Decay);
            os.ToDoubleArray().CopyTo(expected, Sequences.Start(s) * Heads * Dv);
        }
        Assert.That(RaggedLayerTests.MaxRelative(expected, o.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12));
    }

    [Test]
    public void Ragged_lightning_backward_equals_each_sequence_alone_with_its_state_rows()
    {
        var (q, k, v) = LightningInputs(41);
        var dO = TestData.Normal(44, Sequences.TokenCount * Heads * Dv);
        var s0 = TestData.Normal(45, StateShape.ElementCount);
        var g = TestData.Normal(46, StateShape.ElementCount);
        // Every gradient adds into starting values; dS0's rows 1 and 4 (no sequence's) must keep theirs.
        var dqStart = TestData.Normal(47, q.Length);
        var dkStart = TestData.Normal(48, k.Length);
        var dvStart = TestData.Normal(49, v.Length);
        var ds0Start = TestData.Normal(50, StateShape.ElementCount);
        int n = Sequences.TokenCount;
        using var qt = Cpu.FromArray(q, KeyShape(n), DType.F64);
        using var kt = Cpu.FromArray(k, KeyShape(n), DType.F64);
        using var vt = Cpu.FromArray(v, ValueShape(n), DType.F64);
        using var dOt = Cpu.FromArray(dO, ValueShape(n), DType.F64);
        using var initial = Cpu.FromArray(s0, StateShape, DType.F64);
        using var dFinal = Cpu.FromArray(g, StateShape, DType.F64);
        using var dq = Cpu.FromArray(dqStart, qt.Shape, DType.F64);
        using var dk = Cpu.FromArray(dkStart, kt.Shape, DType.F64);
        using var dv = Cpu.FromArray(dvStart, vt.Shape, DType.F64);
        using var dInitial = Cpu.FromArray(ds0Start, StateShape, DType.F64);
        Lightning.BackwardRagged(qt, kt, vt, Decay, Sequences, dOt, dq, dk, dv, initial, dInitial, dFinal, Slots);

        var dqExpected = (double[])dqStart.Clone();
        var dkExpected = (double[])dkStart.Clone();
        var dvExpected = (double[])dvStart.Clone();
        var ds0Expected = (double[])ds0Start.Clone();
        for (int s = 0; s < Sequences.Count; s++)
        {
            int len = Sequences.Length(s);
            var stateRow = new Shape(1, Heads, Dk, Dv);
            using var qs = Cpu.FromArray(Rows(Sequences, q, s, Heads * Dk), KeyShape(len), DType.F64);
            using var ks = Cpu.FromArray(Rows(Sequences, k, s, Heads * Dk), KeyShape(len), DType.F64);
            using var vs = Cpu.FromArray(Rows(Sequences, v, s, Heads * Dv), ValueShape(len), DType.F64);
            using var dOs = Cpu.FromArray(Rows(Sequences, dO, s, Heads * Dv), ValueShape(len), DType.F64);
            using var s0s = Cpu.FromArray(StateRow(s0, Slots[s]), stateRow, DType.F64);
            using var gs = Cpu.FromArray(StateRow(g, Slots[s]), stateRow, DType.F64);
            using var dqs = Cpu.FromArray(Rows(Sequences, dqStart, s, Heads * Dk), qs.Shape, DType.F64);
            using var dks = Cpu.FromArray(Rows(Sequences, dkStart, s, Heads * Dk), ks.Shape, DType.F64);
            using var dvs = Cpu.FromArray(Rows(Sequences, dvStart, s, Heads * Dv), vs.Shape, DType.F64);
            using var ds0s = Cpu.FromArray(StateRow(ds0Start, Slots[s]), stateRow, DType.F64);
            Lightning.Backward(qs, ks, vs, Decay, dOs, dqs, dks, dvs, s0s, ds0s, gs);
            dqs.ToDoubleArray().CopyTo(dqExpected, Sequences.Start(s) * Heads * Dk);
            dks.ToDoubleArray().CopyTo(dkExpected, Sequences.Start(s) * Heads * Dk);
            dvs.ToDoubleArray().CopyTo(dvExpected, Sequences.Start(s) * Heads * Dv);
            ds0s.ToDoubleArray().CopyTo(ds0Expected, Slots[s] * StateSize);
        }
        Assert.Multiple(() =>
        {
            Assert.That(RaggedLayerTests.MaxRelative(dqExpected, dq.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "dq");
            Assert.That(RaggedLayerTests.MaxRelative(dkExpected, dk.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "dk");
            Assert.That(RaggedLayerTests.MaxRelative(dvExpected, dv.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "dv");
            Assert.That(RaggedLayerTests.MaxRelative(ds0Expected, dInitial.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "dS0 (rows 1 and 4 unchanged)");
        });
    }

    [Test]
    public void Ragged_lightning_slots_default_to_the_sequence_order()
    {
        var (q, k, v) = LightningInputs(51);
        var s0 = TestData.Normal(54, StateShape.ElementCount);
        int n = Sequences.TokenCount;
        using var qt = Cpu.FromArray(q, KeyShape(n), DType.F64);
        using var kt = Cpu.FromArray(k, KeyShape(n), DType.F64);
        using var vt = Cpu.FromArray(v, ValueShape(n), DType.F64);
        using var initial = Cpu.FromArray(s0, StateShape, DType.F64);
        using var byDefault = Cpu.Zeros(StateShape, DType.F64);
        using var explicitSlots = Cpu.Zeros(StateShape, DType.F64);
        using var o1 = Lightning.ForwardRagged(qt, kt, vt, Decay, Sequences, initial, byDefault);
        using var o2 = Lightning.ForwardRagged(qt, kt, vt, Decay, Sequences, initial, explicitSlots, [0, 1, 2]);
        Assert.Multiple(() =>
        {
            Assert.That(o1.ToDoubleArray(), Is.EqualTo(o2.ToDoubleArray()));
            Assert.That(byDefault.ToDoubleArray(), Is.EqualTo(explicitSlots.ToDoubleArray()));
        });
    }

    private static IEnumerable<TestCaseData> BadLightningCases()
    {
        // (what, the argument it must name, a fragment of the message); each call is otherwise valid.
        yield return new TestCaseData("duplicate slots", "slots", "row 3 twice").SetName("Ragged Lightning refuses duplicate slots");
        yield return new TestCaseData("negative slot", "slots", "actual -1").SetName("Ragged Lightning refuses a negative slot");
        yield return new TestCaseData("too few slots", "slots", "expected 3 state rows").SetName("Ragged Lightning refuses a wrong slot count");
        yield return new TestCaseData("slot past the states", "initialStates", "P ≥ 6").SetName("Ragged Lightning refuses a slot past the state rows");
        yield return new TestCaseData("state widths", "finalStates", "[P ≥ 4, 2, 3, 4]").SetName("Ragged Lightning refuses final states of the wrong widths");
        yield return new TestCaseData("state dtype", "initialStates", "F64").SetName("Ragged Lightning refuses states of another dtype");
        yield return new TestCaseData("tokens", "q", "[1, 76, …]").SetName("Ragged Lightning refuses q that is not the packed tokens");
        yield return new TestCaseData("backward dS0 shape", "dInitialStates", "[P ≥ 4, 2, 3, 4]").SetName("Ragged Lightning backward refuses dInitialStates of the wrong shape");
        yield return new TestCaseData("backward dG shape", "dFinalStates", "[P ≥ 4, 2, 3, 4]").SetName("Ragged Lightning backward refuses dFinalStates of the wrong shape");
        yield return new TestCaseData("backward slots", "slots", "row 0 twice").SetName("Ragged Lightning backward refuses duplicate slots");
    }

    [TestCaseSource(nameof(BadLightningCases))]
    public void Bad_ragged_lightning_inputs_name_the_argument(string what, string argument, string fragment)
    {
        int n = Sequences.TokenCount;
        using var q = Cpu.Zeros(KeyShape(n), DType.F64);
        using var k = Cpu.Zeros(KeyShape(n), DType.F64);
        using var v = Cpu.Zeros(ValueShape(n), DType.F64);
        using var dO = Cpu.Zeros(ValueShape(n), DType.F64);
        using var states = Cpu.Zeros(StateShape, DType.F64);
        using var narrow = Cpu.Zeros(new Shape(StateRows, Heads, Dk, Dv + 1), DType.F64);
        using var f32 = Cpu.Zeros(StateShape, DType.F32);
        using var shortQ = Cpu.Zeros(KeyShape(n - 1), DType.F64);
        using var shortV = Cpu.Zeros(ValueShape(n - 1), DType.F64);
        Action call = what switch
        {
            "duplicate slots" => () => Lightning.ForwardRagged(q, k, v, Decay, Sequences, states, states, [3, 0, 3]).Dispose(),
            "negative slot" => () => Lightning.ForwardRagged(q, k, v, Decay, Sequences, states, null, [3, -1, 2]).Dispose(),
            "too few slots" => () => Lightning.ForwardRagged(q, k, v, Decay, Sequences, states, states, [3, 0]).Dispose(),
            "slot past the states" => () => Lightning.ForwardRagged(q, k, v, Decay, Sequences, states, null, [5, 0, 2]).Dispose(),
            "state widths" => () => Lightning.ForwardRagged(q, k, v, Decay, Sequences, states, narrow, Slots).Dispose(),
            "state dtype" => () => Lightning.ForwardRagged(q, k, v, Decay, Sequences, f32, null, Slots).Dispose(),
            "tokens" => () => Lightning.ForwardRagged(shortQ, shortQ, shortV, Decay, Sequences).Dispose(),
            "backward dS0 shape" => () => Lightning.BackwardRagged(q, k, v, Decay, Sequences, dO, null, null, null, states, narrow, states, Slots),
            "backward dG shape" => () => Lightning.BackwardRagged(q, k, v, Decay, Sequences, dO, null, null, null, states, null, narrow, Slots),
            "backward slots" => () => Lightning.BackwardRagged(q, k, v, Decay, Sequences, dO, null, null, null, states, null, null, [0, 0, 1]),
            _ => throw new ArgumentOutOfRangeException(nameof(what), what, "no such case"),
        };
        var e = Assert.Throws<ArgumentException>(() => call());
        Assert.Multiple(() =>
        {
            Assert.That(e!.ParamName, Is.EqualTo(argument));
            Assert.That(e.Message, Does.Contain(fragment));
        });
    }

    [Test]
    public void Bad_ragged_rope_and_lrpe_inputs_name_the_argument()
    {
        using var x = Cpu.Zeros(new Shape(1, 10, 2, 8), DType.F64);
        using var theta = Cpu.Zeros(new Shape(2, 8), DType.F64);
        using var batch2 = Cpu.Zeros(new Shape(2, 11, 2, 8), DType.F64);
        using var dy = Cpu.Zeros(new Shape(1, 10, 2, 16), DType.F64);
        Assert.Multiple(() =>
        {
            Assert.That(Assert.Throws<ArgumentException>(() => Rope.Forward(x, default, Shifted).Dispose())!.ParamName, Is.EqualTo("x"));
            Assert.That(Assert.Throws<ArgumentException>(() => Rope.Backward(x, x, default, Shifted))!.ParamName, Is.EqualTo("dy"));
            Assert.That(Assert.Throws<ArgumentException>(() => Rope.Forward(batch2, default, Shifted).Dispose())!.Message, Does.Contain("expected [1, 11, …]"));
            Assert.That(Assert.Throws<ArgumentException>(() => Lrpe.Forward(x, theta, Shifted).Dispose())!.ParamName, Is.EqualTo("x"));
            Assert.That(Assert.Throws<ArgumentException>(() => Lrpe.Backward(x, theta, dy, null, null, Shifted))!.ParamName, Is.EqualTo("x"));
            Assert.That(Assert.Throws<ArgumentNullException>(() => Rope.Forward(x, default, (SequenceLayout)null!).Dispose())!.ParamName, Is.EqualTo("sequences"));
        });
    }

    private static (double[] Q, double[] K, double[] V) LightningInputs(int seed)
    {
        int n = Sequences.TokenCount;
        double scale = 1.0 / Math.Sqrt(Dk);
        return (TestData.Normal(seed, n * Heads * Dk, scale), TestData.Normal(seed + 1, n * Heads * Dk, scale), TestData.Normal(seed + 2, n * Heads * Dv));
    }

    private static Shape KeyShape(int tokens) => new(1, tokens, Heads, Dk);

    private static Shape ValueShape(int tokens) => new(1, tokens, Heads, Dv);

    // [1, N, …] with N the tokens of one sequence.
    private static Shape Part(Shape shape, int tokens) => shape.Rank == 4 ? new Shape(1, tokens, shape[2], shape[3]) : new Shape(1, tokens, shape[2]);

    // The rows of sequence s of a [1, N, …] array packed by layout, rowSize values each.
    private static double[] Rows(SequenceLayout layout, double[] values, int s, long rowSize) =>
        values.AsSpan((int)(layout.Start(s) * rowSize), (int)(layout.Length(s) * rowSize)).ToArray();

    private static double[] StateRow(double[] states, int row) => states.AsSpan((int)(row * StateSize), (int)StateSize).ToArray();
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// The ragged-batch forms (<see cref="SequenceLayout"/>) of RoPE, LRPE and Lightning on the CUDA backend against the CPU
/// reference, every storage type: per-token positions (sequences starting past position 0, one of a single token, more than
/// 16,384 tokens so the device index buffer grows), Lightning from and into state rows (slots out of order, more rows than
/// sequences, in place), the serving pool's decode step (every sequence one token), the backward with the state gradients, on
/// the CUDA-core and the tensor-core kernels and in launches of 64 heads; and ragged calls queued back to back, each
/// reading its own indices.
/// </summary>
[Category("Gpu")]
public class GpuRaggedLinearTests
{
    /// <summary>A ragged layout: lengths and start positions.</summary>
    public sealed record Layout(int[] Lengths, int[] Starts)
    {
        public SequenceLayout Sequences => SequenceLayout.FromLengths(Lengths).WithStartPositions(Starts);

        public override string ToString() => Sequences.ToString();
    }

    private static readonly Layout[] PositionLayouts =
    [
        new([1], [12]),
        new([7, 1, 33], [0, 4095, 100000]),
        new([129, 2, 1, 64], [5, 0, 163000, 31]),
        new([20000, 1], [0, 70000]), // more indices than the index buffer first holds
    ];

    private static IEnumerable<TestCaseData> RopeCases()
    {
        var deepSeekV3 = new RopeScaling(40, 4096, BetaFast: 32, BetaSlow: 1, MScale: 1, MScaleAllDim: 1);
        var options = new (string Name, int[] Trailing, RopeOptions Options)[]
        {
            ("half", [3, 64], new RopeOptions(RopeStyle.Half)),
            ("interleaved slice", [2, 24], new RopeOptions(RopeStyle.Interleaved, RotaryOffset: 16, RotaryDim: 8)),
            ("yarn [1, N, d]", [64], new RopeOptions(RopeStyle.Interleaved, Scaling: deepSeekV3)),
        };
        return from dtype in GpuPair.StorageTypes
               from layout in PositionLayouts
               from o in options
               select new TestCaseData(dtype, layout, o.Trailing, o.Options).SetName($"Ragged RoPE {o.Name} {dtype} {layout}");
    }

    [TestCaseSource(nameof(RopeCases))]
    public void Ragged_rope_forward_and_backward(DType dtype, Layout layout, int[] rest, RopeOptions options)
    {
        var gpu = Requires.CudaDevice();
        var sequences = layout.Sequences;
        var shape = new Shape([1, sequences.TokenCount, .. rest]);
        string tag = $"ragged rope {options.Style} {layout}";
        using var x = GpuPair.Random(gpu, 101, shape, dtype);
        using var y = GpuPair.Random(gpu, 102, shape, dtype, 100); // garbage the forward must overwrite
        Rope.Forward(x.Cpu, y.Cpu, options, sequences);
        Rope.Forward(x.Gpu, y.Gpu, options, sequences);
        y.Compare(tag + " forward", dtype);

        using var dx = GradientPair.Zeros(gpu, 103, shape, dtype);
        Rope.Backward(y.Cpu, dx.Cpu, options, sequences);
        dx.Start(adds: false); // the backward writes dx
        Rope.Backward(y.Gpu, dx.Gpu, options, sequences);
        dx.Compare(tag + " backward", dtype);

        Rope.Forward(x.Cpu, x.Cpu, options, sequences);
        Rope.Forward(x.Gpu, x.Gpu, options, sequences);
        x.Compare(tag + " forward in place", dtype);
    }

    private static IEnumerable<TestCaseData> LrpeCases() =>
        from dtype in GpuPair.StorageTypes
        from layout in PositionLayouts.Take(3)
        from widths in new[] { (2, 16), (4, 128) }
        select new TestCaseData(dtype, layout, widths.Item1, widths.Item2).SetName($"Ragged LRPE {dtype} {layout} H{widths.Item1} d{widths.Item2}");

    [TestCaseSource(nameof(LrpeCases))]
    public void Ragged_lrpe_forward_and_backward(DType dtype, Layout layout, int heads, int width)
    {
        var gpu = Requires.CudaDevice();
        var sequences = layout.Sequences;
        var shape = new Shape(1, sequences.TokenCount, heads, width);
        string tag = $"ragged lrpe {layout} H{heads} d{width}";
        using var x = GpuPair.Random(gpu, 111, shape, dtype);
        // Small angles: θ·p stays a few turns at positions near 10^5, as LRPE's learned θ are.
        using var theta = GpuPair.Uniform(gpu, 112, new Shape(heads, width), dtype, 0.0, 1e-3);
        using var y = GpuPair.Wrap(Lrpe.Forward(x.Cpu, theta.Cpu, sequences), Lrpe.Forward(x.Gpu, theta.Gpu, sequences));
        y.Compare(tag + " forward", dtype);
        // dθ sums p·x·dy over the tokens: at positions past 10^5 it passes F16's largest value unless dy is small (1/4096 is exact).
        double dyScale = dtype == DType.F16 ? 1.0 / 4096 : 1.0;
        using var dy = GpuPair.Random(gpu, 113, y.Cpu.Shape, dtype, dyScale);
        using var dx = GradientPair.Zeros(gpu, 114, shape, dtype);
        using var dtheta = GradientPair.Zeros(gpu, 115, theta.Cpu.Shape, dtype);
        Lrpe.Backward(x.Cpu, theta.Cpu, dy.Cpu, dx.Cpu, dtheta.Cpu, sequences);
        GradientPair.Start(true, dx, dtheta);
        Lrpe.Backward(x.Gpu, theta.Gpu, dy.Gpu, dx.Gpu, dtheta.Gpu, sequences);
        dx.Compare(tag + " dx", dtype);
        dtheta.Compare(tag + " dtheta", dtype);
    }

    /// <summary>A ragged Lightning call: lengths, each sequence's state row of <paramref name="Rows"/>, heads and widths.</summary>
    public sealed record Ragged(int[] Lengths, int[] Slots, int Rows, int H, int Dk, int Dv)
    {
        public SequenceLayout Sequences => SequenceLayout.FromLengths(Lengths);

        public Shape Keys => new(1, Sequences.TokenCount, H, Dk);

        public Shape Values => new(1, Sequences.TokenCount, H, Dv);

        public Shape States => new(Rows, H, Dk, Dv);

        public override string ToString() => $"{Sequences} → rows [{string.Join(", ", Slots)}] of {Rows} H{H} dk{Dk} dv{Dv}";
    }

    // The CUDA-core kernel (widths 8, 16); the tensor-core one for 16-bit heads of 64 and 128 (a sequence past a 64-token block);
    // 70 heads in two launches; one-token sequences only (the decode-step kernel with state rows).
    internal static readonly Ragged[] LightningShapes =
    [
        new([5, 1, 70], [3, 0, 2], 5, 4, 8, 16),
        new([1, 129, 64], [1, 3, 0], 4, 2, 64, 64),
        new([33, 1, 300], [2, 0, 1], 3, 2, 128, 128),
        new([300, 1, 7], [0, 2, 1], 4, 70, 8, 8),
        new([1, 1, 1, 1], [2, 5, 0, 3], 6, 4, 64, 128),
        new([1, 1, 1], [1, 2, 0], 3, 70, 8, 16),
    ];

    private static IEnumerable<TestCaseData> LightningCases(string name) =>
        from dtype in GpuPair.StorageTypes
        from s in LightningShapes
        select new TestCaseData(dtype, s).SetName($"{name} {dtype} {s}");

    private static IEnumerable<TestCaseData> LightningForwardCases() => LightningCases("Ragged Lightning forward");

    private static IEnumerable<TestCaseData> LightningBackwardCases() => LightningCases("Ragged Lightning backward");

    /// <summary>λ per head (as <see cref="GpuLinearAttentionTests.Decays"/>).</summary>
    private static double[] Decays(Ragged s) => GpuLinearAttentionTests.Decays(new GpuLinearAttentionTests.Dims(1, 1, s.H, s.Dk, s.Dv, 0.97));

    [TestCaseSource(nameof(LightningForwardCases))]
    public void Ragged_lightning_forward_from_and_into_state_rows(DType dtype, Ragged s)
    {
        var gpu = Requires.CudaDevice();
        double[] decay = Decays(s);
        double scale = 1.0 / Math.Sqrt(s.Dk);
        var stateType = Lightning.StateDType(dtype);
        using var q = GpuPair.Random(gpu, 121, s.Keys, dtype, scale);
        using var k = GpuPair.Random(gpu, 122, s.Keys, dtype, scale);
        using var v = GpuPair.Random(gpu, 123, s.Values, dtype);
        using var initial = GpuPair.Random(gpu, 124, s.States, stateType, 0.1);

        using (var o = GpuPair.Wrap(Lightning.ForwardRagged(q.Cpu, k.Cpu, v.Cpu, decay, s.Sequences), Lightning.ForwardRagged(q.Gpu, k.Gpu, v.Gpu, decay, s.Sequences)))
        {
            o.Compare($"ragged lightning {s} o (no state)", dtype);
        }

        // Into a separate tensor whose rows no sequence uses stay as they were (garbage on both backends).
        using (var final = GpuPair.Random(gpu, 125, s.States, stateType, 100))
        using (var o = GpuPair.Wrap(
            Lightning.ForwardRagged(q.Cpu, k.Cpu, v.Cpu, decay, s.Sequences, initial.Cpu, final.Cpu, s.Slots),
            Lightning.ForwardRagged(q.Gpu, k.Gpu, v.Gpu, decay, s.Sequences, initial.Gpu, final.Gpu, s.Slots)))
        {
            o.Compare($"ragged lightning {s} o", dtype);
            final.Compare($"ragged lightning {s} final states", dtype);
        }

        // In place, several calls in a row: the pool's states advance step by step.
        using var state = GpuPair.Random(gpu, 126, s.States, stateType, 0.1);
        for (int step = 0; step < 3; step++)
        {
            using var o = GpuPair.Wrap(
                Lightning.ForwardRagged(q.Cpu, k.Cpu, v.Cpu, decay, s.Sequences, state.Cpu, state.Cpu, s.Slots),
                Lightning.ForwardRagged(q.Gpu, k.Gpu, v.Gpu, decay, s.Sequences, state.Gpu, state.Gpu, s.Slots));
            o.Compare($"ragged lightning {s} o in place, call {step}", dtype);
            state.Compare($"ragged lightning {s} states in place, call {step}", dtype);
        }
    }

    [TestCaseSource(nameof(LightningBackwardCases))]
    public void Ragged_lightning_backward_adds_into_the_gradients_and_state_rows(DType dtype, Ragged s)
    {
        var gpu = Requires.CudaDevice();
        double[] decay = Decays(s);
        double scale = 1.0 / Math.Sqrt(s.Dk);
        var stateType = Lightning.StateDType(dtype);
        using var q = GpuPair.Random(gpu, 131, s.Keys, dtype, scale);
        using var k = GpuPair.Random(gpu, 132, s.Keys, dtype, scale);
        using var v = GpuPair.Random(gpu, 133, s.Values, dtype);
        using var dO = GpuPair.Random(gpu, 134, s.Values, dtype);
        using var s0 = GpuPair.Random(gpu, 135, s.States, stateType, 0.5);
        using var g = GpuPair.Random(gpu, 136, s.States, stateType, 0.5);
        using (var dq = GradientPair.Zeros(gpu, 137, s.Keys, dtype))
        using (var dk = GradientPair.Zeros(gpu, 138, s.Keys, dtype))
        using (var dv = GradientPair.Zeros(gpu, 139, s.Values, dtype))
        using (var ds0 = GradientPair.Zeros(gpu, 140, s.States, stateType))
        {
            Lightning.BackwardRagged(q.Cpu, k.Cpu, v.Cpu, decay, s.Sequences, dO.Cpu, dq.Cpu, dk.Cpu, dv.Cpu, s0.Cpu, ds0.Cpu, g.Cpu, s.Slots);
            GradientPair.Start(true, dq, dk, dv, ds0);
            Lightning.BackwardRagged(q.Gpu, k.Gpu, v.Gpu, decay, s.Sequences, dO.Gpu, dq.Gpu, dk.Gpu, dv.Gpu, s0.Gpu, ds0.Gpu, g.Gpu, s.Slots);
            dq.Compare($"ragged lightning {s} dq with S0", dtype);
            dk.Compare($"ragged lightning {s} dk with G", dtype);
            dv.Compare($"ragged lightning {s} dv with G", dtype);
            ds0.Compare($"ragged lightning {s} dS0 rows", dtype);
        }

        // Without states, the gradients of the inputs alone; then dS0 alone (the dv sweep for the states only).
        using (var dq = GradientPair.Zeros(gpu, 141, s.Keys, dtype))
        using (var dk = GradientPair.Zeros(gpu, 142, s.Keys, dtype))
        using (var dv = GradientPair.Zeros(gpu, 143, s.Values, dtype))
        {
            Lightning.BackwardRagged(q.Cpu, k.Cpu, v.Cpu, decay, s.Sequences, dO.Cpu, dq.Cpu, dk.Cpu, dv.Cpu);
            GradientPair.Start(true, dq, dk, dv);
            Lightning.BackwardRagged(q.Gpu, k.Gpu, v.Gpu, decay, s.Sequences, dO.Gpu, dq.Gpu, dk.Gpu, dv.Gpu);
            dq.Compare($"ragged lightning {s} dq", dtype);
            dk.Compare($"ragged lightning {s} dk", dtype);
            dv.Compare($"ragged lightning {s} dv", dtype);
        }
        using (var ds0 = GradientPair.Zeros(gpu, 144, s.States, stateType))
        {
            Lightning.BackwardRagged(q.Cpu, k.Cpu, v.Cpu, decay, s.Sequences, dO.Cpu, null, null, null, s0.Cpu, ds0.Cpu, g.Cpu, s.Slots);
            GradientPair.Start(true, ds0);
            Lightning.BackwardRagged(q.Gpu, k.Gpu, v.Gpu, decay, s.Sequences, dO.Gpu, null, null, null, s0.Gpu, ds0.Gpu, g.Gpu, s.Slots);
            ds0.Compare($"ragged lightning {s} dS0 rows alone", dtype);
        }
    }

    private static IEnumerable<TestCaseData> StorageTypeCases() =>
        GpuPair.StorageTypes.Select(d => new TestCaseData(d).SetName($"Ragged calls queued back to back read their own indices {d}"));

    /// <summary>
    /// Ragged RoPE, Lightning and LRPE calls of different layouts queued one after another with nothing read back in between
    /// (the index buffer grows on the first): each launch reads the indices uploaded for it, not a later call's.
    /// </summary>
    [TestCaseSource(nameof(StorageTypeCases))]
    public void Ragged_calls_queued_back_to_back_read_their_own_indices(DType dtype)
    {
        var gpu = Requires.CudaDevice();
        var big = SequenceLayout.FromLengths(20000, 3).WithStartPositions([0, 50000]);
        var lightning = new Ragged([40, 1, 9], [2, 0, 1], 3, 2, 16, 16);
        var small = SequenceLayout.FromLengths(2, 5).WithStartPositions([900, 3]);
        var stateType = Lightning.StateDType(dtype);
        using var x = GpuPair.Random(gpu, 151, new Shape(1, big.TokenCount, 2, 32), dtype);
        using var q = GpuPair.Random(gpu, 152, lightning.Keys, dtype, 0.25);
        using var k = GpuPair.Random(gpu, 153, lightning.Keys, dtype, 0.25);
        using var v = GpuPair.Random(gpu, 154, lightning.Values, dtype);
        using var state = GpuPair.Random(gpu, 155, lightning.States, stateType, 0.1);
        using var z = GpuPair.Random(gpu, 156, new Shape(1, small.TokenCount, 2, 8), dtype);
        using var theta = GpuPair.Uniform(gpu, 157, new Shape(2, 8), dtype, 0.0, 0.01);
        double[] decay = Decays(lightning);

        using var rope = GpuPair.Wrap(Rope.Forward(x.Cpu, default, big), Rope.Forward(x.Gpu, default, big));
        using var o = GpuPair.Wrap(
            Lightning.ForwardRagged(q.Cpu, k.Cpu, v.Cpu, decay, lightning.Sequences, state.Cpu, state.Cpu, lightning.Slots),
            Lightning.ForwardRagged(q.Gpu, k.Gpu, v.Gpu, decay, lightning.Sequences, state.Gpu, state.Gpu, lightning.Slots));
        using var lrpe = GpuPair.Wrap(Lrpe.Forward(z.Cpu, theta.Cpu, small), Lrpe.Forward(z.Gpu, theta.Gpu, small));
        rope.Compare("back to back: rope of 20,003 tokens", dtype);
        o.Compare("back to back: lightning o", dtype);
        state.Compare("back to back: lightning states", dtype);
        lrpe.Compare("back to back: lrpe", dtype);
    }
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// The linear attentions on the CUDA backend against the CPU reference, every storage type: Lightning Attention-2
/// (forward with every combination of initial and final state, the state updated in place, backward into gradients that
/// already hold values, the single-token decode-step kernel alone and after a chunked prefill, more than 64 heads) and
/// FLatten's focused linear attention (forward, backward, a null gradient, more than 64 token chunks; keys and values on
/// fewer or more tokens than the queries).
/// </summary>
[Category("Gpu")]
public class GpuLinearAttentionTests
{
    /// <summary>Sizes; <paramref name="Lambda"/> is Lightning's λ when there is one head (four heads use 0.5, 0.9, 0.999, 1).</summary>
    public sealed record Dims(int B, int T, int H, int Dk, int Dv, double Lambda = 0.9)
    {
        public Shape Keys => new(B, T, H, Dk);

        public Shape Values => new(B, T, H, Dv);

        public Shape States => new(B, H, Dk, Dv);

        public override string ToString() => $"B{B} T{T} H{H} dk{Dk} dv{Dv}";

        public string WithDecay => H == 1 ? $"{this} λ={Lambda}" : ToString();
    }

    // T ∈ {1, 7, 129, 1000}, widths {8, 64, 128} and one 256, H ∈ {1, 4}; T = 1 runs the decode-step kernel; 70 heads
    // launch in two groups of at most 64; T = 33 and 65 end in partial blocks of the 32-token chunk.
    internal static readonly Dims[] LightningShapes =
    [
        new(1, 1, 1, 8, 8, 1.0),
        new(2, 1, 4, 128, 128),
        new(2, 7, 4, 8, 64),
        new(1, 7, 4, 128, 64),
        new(1, 33, 1, 64, 8, 0.9),
        new(1, 129, 4, 64, 64),
        new(1, 129, 1, 256, 256, 0.999),
        new(1, 1000, 1, 128, 128, 1.0),
        new(2, 1000, 4, 8, 8),
        new(2, 65, 70, 8, 16),
    ];

    /// <summary>λ per head: one head takes the shape's λ; four span fast decay to none; more repeat a pattern with λ = 1 in it.</summary>
    internal static double[] Decays(Dims s) => s.H switch
    {
        1 => [s.Lambda],
        4 => [0.5, 0.9, 0.999, 1.0],
        _ => [.. Enumerable.Range(0, s.H).Select(h => h % 4 == 3 ? 1.0 : 0.5 + (0.49 * ((h % 4) + 1) / 4))],
    };

    private static IEnumerable<TestCaseData> LightningCases(string name) =>
        from dtype in GpuPair.StorageTypes
        from s in LightningShapes
        select new TestCaseData(dtype, s).SetName($"{name} {dtype} {s.WithDecay}");

    private static IEnumerable<TestCaseData> LightningForwardCases() => LightningCases("Lightning forward");

    private static IEnumerable<TestCaseData> LightningBackwardCases() => LightningCases("Lightning backward");

    private static IEnumerable<TestCaseData> LightningBackwardWithStatesCases() => LightningCases("Lightning backward with states");

    [TestCaseSource(nameof(LightningForwardCases))]
    public void Lightning_forward_with_and_without_states(DType dtype, Dims s)
    {
        var gpu = Requires.CudaDevice();
        double[] decay = Decays(s);
        double scale = 1.0 / Math.Sqrt(s.Dk);
        using var q = GpuPair.Random(gpu, 1, s.Keys, dtype, scale);
        using var k = GpuPair.Random(gpu, 2, s.Keys, dtype, scale);
        using var v = GpuPair.Random(gpu, 3, s.Values, dtype);
        // States are F32 for 16-bit inputs (Lightning.StateDType); compared at the inputs' tolerance (the tensor-core kernel
        // builds the state from 16-bit products).
        var stateType = Lightning.StateDType(dtype);
        using var initial = GpuPair.Random(gpu, 4, s.States, stateType, 0.1);

        // No state: the returning overload.
        using (var o = GpuPair.Wrap(Lightning.Forward(q.Cpu, k.Cpu, v.Cpu, decay), Lightning.Forward(q.Gpu, k.Gpu, v.Gpu, decay)))
        {
            o.Compare($"lightning {s} o (no state)", dtype);
        }

        // Every combination of initial and final state; outputs and final states start as garbage that must be overwritten.
        foreach (var (withInitial, withFinal) in new[] { (true, true), (true, false), (false, true) })
        {
            string tag = $"lightning {s} initial={withInitial} final={withFinal}";
            using var o = GpuPair.Random(gpu, 5, s.Values, dtype, 100);
            using var final = GpuPair.Random(gpu, 6, s.States, stateType, 100);
            Lightning.Forward(q.Cpu, k.Cpu, v.Cpu, decay, o.Cpu, withInitial ? initial.Cpu : null, withFinal ? final.Cpu : null);
            Lightning.Forward(q.Gpu, k.Gpu, v.Gpu, decay, o.Gpu, withInitial ? initial.Gpu : null, withFinal ? final.Gpu : null);
            o.Compare(tag + " o", dtype);
            if (withFinal)
            {
                final.Compare(tag + " final state", dtype);
            }
        }

        // The state updated in place (initialState == finalState), as the transnormer cache does.
        using (var state = GpuPair.Random(gpu, 4, s.States, stateType, 0.1))
        using (var o = GpuPair.Zeros(gpu, s.Values, dtype))
        {
            Lightning.Forward(q.Cpu, k.Cpu, v.Cpu, decay, o.Cpu, state.Cpu, state.Cpu);
            Lightning.Forward(q.Gpu, k.Gpu, v.Gpu, decay, o.Gpu, state.Gpu, state.Gpu);
            o.Compare($"lightning {s} o (state in place)", dtype);
            state.Compare($"lightning {s} state in place", dtype);
        }
    }

    [TestCaseSource(nameof(LightningBackwardCases))]
    public void Lightning_backward_adds_into_the_gradients(DType dtype, Dims s)
    {
        var gpu = Requires.CudaDevice();
        double[] decay = Decays(s);
        double scale = 1.0 / Math.Sqrt(s.Dk);
        using var q = GpuPair.Random(gpu, 11, s.Keys, dtype, scale);
        using var k = GpuPair.Random(gpu, 12, s.Keys, dtype, scale);
        using var v = GpuPair.Random(gpu, 13, s.Values, dtype);
        using var dO = GpuPair.Random(gpu, 14, s.Values, dtype);

        // The CPU reference into zeros gives the contributions; the GPU adds into starting values of their size.
        using (var dq = GradientPair.Zeros(gpu, 15, s.Keys, dtype))
        using (var dk = GradientPair.Zeros(gpu, 16, s.Keys, dtype))
        using (var dv = GradientPair.Zeros(gpu, 17, s.Values, dtype))
        {
            Lightning.Backward(q.Cpu, k.Cpu, v.Cpu, decay, dO.Cpu, dq.Cpu, dk.Cpu, dv.Cpu);
            GradientPair.Start(true, dq, dk, dv);
            Lightning.Backward(q.Gpu, k.Gpu, v.Gpu, decay, dO.Gpu, dq.Gpu, dk.Gpu, dv.Gpu);
            dq.Compare($"lightning {s} dq", dtype);
            dk.Compare($"lightning {s} dk", dtype);
            dv.Compare($"lightning {s} dv", dtype);
        }

        // Null gradients are skipped; each pass alone gives the same.
        using (var dk = GradientPair.Zeros(gpu, 18, s.Keys, dtype))
        {
            Lightning.Backward(q.Cpu, k.Cpu, v.Cpu, decay, dO.Cpu, null, dk.Cpu, null);
            GradientPair.Start(true, dk);
            Lightning.Backward(q.Gpu, k.Gpu, v.Gpu, decay, dO.Gpu, null, dk.Gpu, null);
            dk.Compare($"lightning {s} dk alone", dtype);
        }
        using (var dq = GradientPair.Zeros(gpu, 19, s.Keys, dtype))
        using (var dv = GradientPair.Zeros(gpu, 20, s.Values, dtype))
        {
            Lightning.Backward(q.Cpu, k.Cpu, v.Cpu, decay, dO.Cpu, dq.Cpu, null, dv.Cpu);
            GradientPair.Start(true, dq, dv);
            Lightning.Backward(q.Gpu, k.Gpu, v.Gpu, decay, dO.Gpu, dq.Gpu, null, dv.Gpu);
            dq.Compare($"lightning {s} dq without dk", dtype);
            dv.Compare($"lightning {s} dv without dk", dtype);
        }
    }

    /// <summary>
    /// The backward of a forward with an initial state S0 whose final state has a gradient G (training through a carried
    /// state): dq (from S0ᵀ), dk and dv (from G) and dS0 (F32 for 16-bit inputs) added into starting values, against the
    /// CPU; then dS0 alone (the dv sweep run for the state only).
    /// </summary>
    [TestCaseSource(nameof(LightningBackwardWithStatesCases))]
    public void Lightning_backward_with_states_adds_into_the_gradients(DType dtype, Dims s)
    {
        var gpu = Requires.CudaDevice();
        double[] decay = Decays(s);
        double scale = 1.0 / Math.Sqrt(s.Dk);
        var stateType = Lightning.StateDType(dtype);
        using var q = GpuPair.Random(gpu, 71, s.Keys, dtype, scale);
        using var k = GpuPair.Random(gpu, 72, s.Keys, dtype, scale);
        using var v = GpuPair.Random(gpu, 73, s.Values, dtype);
        using var dO = GpuPair.Random(gpu, 74, s.Values, dtype);
        using var s0 = GpuPair.Random(gpu, 75, s.States, stateType, 0.5);
        using var g = GpuPair.Random(gpu, 76, s.States, stateType, 0.5);
        using (var dq = GradientPair.Zeros(gpu, 77, s.Keys, dtype))
        using (var dk = GradientPair.Zeros(gpu, 78, s.Keys, dtype))
        using (var dv = GradientPair.Zeros(gpu, 79, s.Values, dtype))
        using (var ds0 = GradientPair.Zeros(gpu, 80, s.States, stateType))
        {
            Lightning.Backward(q.Cpu, k.Cpu, v.Cpu, decay, dO.Cpu, dq.Cpu, dk.Cpu, dv.Cpu, s0.Cpu, ds0.Cpu, g.Cpu);
            GradientPair.Start(true, dq, dk, dv, ds0);
            Lightning.Backward(q.Gpu, k.Gpu, v.Gpu, decay, dO.Gpu, dq.Gpu, dk.Gpu, dv.Gpu, s0.Gpu, ds0.Gpu, g.Gpu);
            dq.Compare($"lightning {s} dq with S0", dtype);
            dk.Compare($"lightning {s} dk with G", dtype);
            dv.Compare($"lightning {s} dv with G", dtype);
            ds0.Compare($"lightning {s} dS0", dtype);
        }
        using (var ds0 = GradientPair.Zeros(gpu, 81, s.States, stateType))
        {
            Lightning.Backward(q.Cpu, k.Cpu, v.Cpu, decay, dO.Cpu, null, null, null, s0.Cpu, ds0.Cpu, g.Cpu);
            GradientPair.Start(true, ds0);
            Lightning.Backward(q.Gpu, k.Gpu, v.Gpu, decay, dO.Gpu, null, null, null, s0.Gpu, ds0.Gpu, g.Gpu);
            ds0.Compare($"lightning {s} dS0 alone", dtype);
        }
    }

    public sealed record DecodeDims(int B, int H, int Dk, int Dv, int Prefill)
    {
        public override string ToString() => $"B{B} H{H} dk{Dk} dv{Dv} prefill{Prefill}";
    }

    private static IEnumerable<TestCaseData> DecodeCases() =>
        from dtype in GpuPair.StorageTypes
        from s in new DecodeDims[] { new(1, 1, 8, 8, 0), new(2, 4, 64, 64, 0), new(2, 4, 128, 128, 7), new(1, 4, 256, 256, 129), new(1, 70, 8, 16, 33), new(2, 4, 24, 40, 1000) }
        select new TestCaseData(dtype, s).SetName($"Lightning decode steps {dtype} {s}");

    /// <summary>
    /// The transnormer cache's path: an optional chunked prefill into a zero state, then single-token steps, the state
    /// updated in place each time (the decode-step kernel). Each step's output and state match the CPU doing the same.
    /// </summary>
    [TestCaseSource(nameof(DecodeCases))]
    public void Lightning_decode_steps_update_the_state_in_place(DType dtype, DecodeDims s)
    {
        var gpu = Requires.CudaDevice();
        const int Steps = 6;
        double[] decay = Decays(new Dims(s.B, 1, s.H, s.Dk, s.Dv, 0.97));
        double scale = 1.0 / Math.Sqrt(s.Dk);
        var states = new Shape(s.B, s.H, s.Dk, s.Dv);
        var stateType = Lightning.StateDType(dtype);
        using var state = s.Prefill == 0 ? GpuPair.Random(gpu, 21, states, stateType, 0.1) : GpuPair.Zeros(gpu, states, stateType);
        if (s.Prefill > 0)
        {
            var prefill = new Dims(s.B, s.Prefill, s.H, s.Dk, s.Dv);
            using var q = GpuPair.Random(gpu, 22, prefill.Keys, dtype, scale);
            using var k = GpuPair.Random(gpu, 23, prefill.Keys, dtype, scale);
            using var v = GpuPair.Random(gpu, 24, prefill.Values, dtype);
            using var o = GpuPair.Wrap(
                Lightning.Forward(q.Cpu, k.Cpu, v.Cpu, decay, state.Cpu, state.Cpu),
                Lightning.Forward(q.Gpu, k.Gpu, v.Gpu, decay, state.Gpu, state.Gpu));
            o.Compare($"lightning decode {s} prefill o", dtype);
            state.Compare($"lightning decode {s} prefill state", dtype);
        }
        var one = new Dims(s.B, 1, s.H, s.Dk, s.Dv);
        for (int step = 0; step < Steps; step++)
        {
            using var q = GpuPair.Random(gpu, 30 + step, one.Keys, dtype, scale);
            using var k = GpuPair.Random(gpu, 40 + step, one.Keys, dtype, scale);
            using var v = GpuPair.Random(gpu, 50 + step, one.Values, dtype);
            using var o = GpuPair.Wrap(
                Lightning.Forward(q.Cpu, k.Cpu, v.Cpu, decay, state.Cpu, state.Cpu),
                Lightning.Forward(q.Gpu, k.Gpu, v.Gpu, decay, state.Gpu, state.Gpu));
            o.Compare($"lightning decode {s} step {step} o", dtype);
            state.Compare($"lightning decode {s} step {step} state", dtype);
        }
    }

    /// <summary>T decode steps from a zero state give the rows of one chunked forward over the T tokens, and its final state.</summary>
    [TestCaseSource(nameof(StorageTypeCases))]
    public void Lightning_decode_steps_equal_the_chunked_forward(DType dtype)
    {
        var gpu = Requires.CudaDevice();
        var s = new Dims(2, 9, 4, 64, 32);
        double[] decay = Decays(s);
        double scale = 1.0 / Math.Sqrt(s.Dk);
        var q = TestData.Representable(TestData.NormalSingle(61, s.Keys.ElementCount, scale), dtype);
        var k = TestData.Representable(TestData.NormalSingle(62, s.Keys.ElementCount, scale), dtype);
        var v = TestData.Representable(TestData.NormalSingle(63, s.Values.ElementCount), dtype);

        // Reference: the CPU's chunked forward over all tokens.
        using var qc = Backend.Cpu.FromArray(q, s.Keys);
        using var kc = Backend.Cpu.FromArray(k, s.Keys);
        using var vc = Backend.Cpu.FromArray(v, s.Values);
        using var finalCpu = Backend.Cpu.Zeros(s.States);
        using var oCpu = Lightning.Forward(qc, kc, vc, decay, null, finalCpu);
        float[] reference = oCpu.ToArray();
        var rows = new float[reference.Length];

        using var state = gpu.Zeros(s.States, Lightning.StateDType(dtype));
        var one = new Dims(s.B, 1, s.H, s.Dk, s.Dv);
        for (int t = 0; t < s.T; t++)
        {
            using var qt = gpu.FromArray(Token(q, s, t, s.Dk), one.Keys, dtype);
            using var kt = gpu.FromArray(Token(k, s, t, s.Dk), one.Keys, dtype);
            using var vt = gpu.FromArray(Token(v, s, t, s.Dv), one.Values, dtype);
            using var ot = Lightning.Forward(qt, kt, vt, decay, state, state);
            float[] row = ot.ToArray();
            for (int b = 0; b < s.B; b++)
            {
                Array.Copy(row, (long)b * s.H * s.Dv, rows, (((long)b * s.T) + t) * s.H * s.Dv, s.H * s.Dv);
            }
        }
        Parity.AssertClose("lightning decode steps vs chunked forward o", dtype, s.ToString(), reference, rows);
        Parity.AssertClose("lightning decode steps vs chunked forward state", dtype, s.ToString(), finalCpu.ToArray(), state.ToArray());
    }

    // Token t of [B, T, H, width] as [B, 1, H, width].
    private static float[] Token(float[] values, Dims s, int t, int width)
    {
        var row = new float[s.B * s.H * width];
        for (int b = 0; b < s.B; b++)
        {
            Array.Copy(values, (((long)b * s.T) + t) * s.H * width, row, (long)b * s.H * width, s.H * width);
        }
        return row;
    }

    private static IEnumerable<TestCaseData> StorageTypeCases() =>
        GpuPair.StorageTypes.Select(d => new TestCaseData(d).SetName($"Lightning decode steps equal the chunked forward {d}"));

    // T ∈ {1, 7, 129, 1000} (and 4100: more than 64 chunks of 64 tokens), widths {8, 64, 128} and one 256, H ∈ {1, 4}.
    internal static readonly Dims[] FlattenShapes =
    [
        new(1, 1, 1, 8, 8),
        new(2, 7, 4, 64, 64),
        new(1, 129, 4, 128, 128),
        new(1, 129, 1, 256, 256),
        new(1, 1000, 1, 64, 8),
        new(2, 1000, 4, 8, 128),
        new(1, 4100, 1, 8, 8),
    ];

    private static IEnumerable<TestCaseData> FlattenCases() =>
        from dtype in GpuPair.StorageTypes
        from s in FlattenShapes
        select new TestCaseData(dtype, s).SetName($"FocusedLinearAttention {dtype} {s}");

    [TestCaseSource(nameof(FlattenCases))]
    public void FocusedLinearAttention_forward_and_backward(DType dtype, Dims s) =>
        FocusedLinearAttentionCase(dtype, s.ToString(), s.Keys, s.Keys, s.Values, s.Values);

    /// <summary>FLatten's sizes with keys and values on <paramref name="Tk"/> tokens, queries on <paramref name="Tq"/>.</summary>
    public sealed record FlattenDims(int B, int Tq, int Tk, int H, int Dk, int Dv)
    {
        public Shape Queries => new(B, Tq, H, Dk);

        public Shape Keys => new(B, Tk, H, Dk);

        public Shape Values => new(B, Tk, H, Dv);

        public Shape Outputs => new(B, Tq, H, Dv);

        public override string ToString() => $"B{B} Tq{Tq} Tk{Tk} H{H} dk{Dk} dv{Dv}";
    }

    // flatten-pvt's spatial reduction (3136 queries on a 56×56 grid, 49 keys on 7×7; 1000 and 10) and the reverse; 4100 keys
    // take more than 64 chunks of the key sums while the query sums have one, and 4100 queries the other way round.
    internal static readonly FlattenDims[] FlattenKeyShapes =
    [
        new(2, 3136, 49, 2, 64, 64),
        new(1, 1000, 10, 4, 8, 128),
        new(1, 7, 129, 4, 128, 8),
        new(1, 65, 4100, 1, 8, 8),
        new(1, 4100, 65, 1, 8, 8),
    ];

    private static IEnumerable<TestCaseData> FlattenKeyCases() =>
        from dtype in GpuPair.StorageTypes
        from s in FlattenKeyShapes
        select new TestCaseData(dtype, s).SetName($"FocusedLinearAttention other key count {dtype} {s}");

    [TestCaseSource(nameof(FlattenKeyCases))]
    public void FocusedLinearAttention_with_another_key_count_forward_and_backward(DType dtype, FlattenDims s) =>
        FocusedLinearAttentionCase(dtype, s.ToString(), s.Queries, s.Keys, s.Values, s.Outputs);

    private static void FocusedLinearAttentionCase(DType dtype, string s, Shape queries, Shape keys, Shape values, Shape outputs)
    {
        var gpu = Requires.CudaDevice();
        // Positive inputs, as the focusing map produces them (the normaliser is ill-conditioned near q·mean(k) = 0).
        using var q = GpuPair.Uniform(gpu, 71, queries, dtype, 0.05, 1.0);
        using var k = GpuPair.Uniform(gpu, 72, keys, dtype, 0.05, 1.0);
        using var v = GpuPair.Random(gpu, 73, values, dtype);

        using (var o = GpuPair.Random(gpu, 74, outputs, dtype, 100))
        {
            FocusedLinearAttention.Forward(q.Cpu, k.Cpu, v.Cpu, o.Cpu);
            FocusedLinearAttention.Forward(q.Gpu, k.Gpu, v.Gpu, o.Gpu);
            o.Compare($"focused linear attention {s} o", dtype);
        }
        using (var o = GpuPair.Wrap(FocusedLinearAttention.Forward(q.Cpu, k.Cpu, v.Cpu), FocusedLinearAttention.Forward(q.Gpu, k.Gpu, v.Gpu)))
        {
            o.Compare($"focused linear attention {s} o (returned)", dtype);
        }

        using var dO = GpuPair.Random(gpu, 75, outputs, dtype);
        using (var dq = GradientPair.Zeros(gpu, 76, queries, dtype))
        using (var dk = GradientPair.Zeros(gpu, 77, keys, dtype))
        using (var dv = GradientPair.Zeros(gpu, 78, values, dtype))
        {
            FocusedLinearAttention.Backward(q.Cpu, k.Cpu, v.Cpu, dO.Cpu, dq.Cpu, dk.Cpu, dv.Cpu);
            GradientPair.Start(true, dq, dk, dv);
            FocusedLinearAttention.Backward(q.Gpu, k.Gpu, v.Gpu, dO.Gpu, dq.Gpu, dk.Gpu, dv.Gpu);
            dq.Compare($"focused linear attention {s} dq", dtype);
            dk.Compare($"focused linear attention {s} dk", dtype);
            dv.Compare($"focused linear attention {s} dv", dtype);
        }
        using (var dk = GradientPair.Zeros(gpu, 79, keys, dtype))
        {
            FocusedLinearAttention.Backward(q.Cpu, k.Cpu, v.Cpu, dO.Cpu, null, dk.Cpu, null);
            GradientPair.Start(true, dk);
            FocusedLinearAttention.Backward(q.Gpu, k.Gpu, v.Gpu, dO.Gpu, null, dk.Gpu, null);
            dk.Compare($"focused linear attention {s} dk alone", dtype);
        }
        using (var dq = GradientPair.Zeros(gpu, 80, queries, dtype))
        {
            FocusedLinearAttention.Backward(q.Cpu, k.Cpu, v.Cpu, dO.Cpu, dq.Cpu, null, null);
            GradientPair.Start(true, dq);
            FocusedLinearAttention.Backward(q.Gpu, k.Gpu, v.Gpu, dO.Gpu, dq.Gpu, null, null);
            dq.Compare($"focused linear attention {s} dq alone", dtype);
        }
    }
}

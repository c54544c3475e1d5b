using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// Softmax attention on ragged batches (<see cref="AttentionOptions.Sequences"/>, <see cref="AttentionOptions.KeySequences"/>)
/// on the CUDA backend against the CPU reference, every storage type, forward (o, lse) and backward (what dq, dk, dv receive):
/// one launch per kernel over all sequences, on each kernel family: the CUDA-core kernels (other widths, and F32), their
/// split-KV forward (few queries against long keys), the tensor-core forward and backward (16-bit heads of 64, 128, and MLA's
/// 192/128), and the 16-bit decode kernel (a serving decode step: one query per sequence, caches of different lengths). Lengths
/// include 1, lengths that are not multiples of any tile, and key layouts longer than the queries'.
/// </summary>
[Category("Gpu")]
public class GpuRaggedAttentionTests
{
    /// <summary>A ragged problem: each sequence's query length and key length (null: the queries' own), heads and widths.</summary>
    public sealed record Problem(int[] QueryLengths, int[]? KeyLengths, int H, int G, int Dqk, int Dv, bool Causal)
    {
        public SequenceLayout Queries => SequenceLayout.FromLengths(QueryLengths);

        public SequenceLayout? Keys => KeyLengths is null ? null : SequenceLayout.FromLengths(KeyLengths);

        public AttentionOptions Options => new(1.0 / Math.Sqrt(Dqk), Causal, Sequences: Queries, KeySequences: Keys);

        public int KeyTokens => (Keys ?? Queries).TokenCount;

        public override string ToString() =>
            $"{Queries}{(Keys is null ? "" : $" keys {Keys}")} H{H} G{G} dqk{Dqk} dv{Dv} {(Causal ? "causal" : "full")}";
    }

    internal static readonly Problem[] Cases =
    [
        // CUDA-core kernels (widths with no fast kernel): a 1-token sequence, packed rows across tiles, GQA.
        new([1, 19, 5], null, 4, 2, 8, 8, true),
        new([7, 12], [9, 30], 2, 2, 32, 32, false),
        // CUDA-core split-KV: a few queries per sequence against keys of 3000, 40 and 700, planned on the longest (the short
        // sequences' later splits are empty).
        new([1, 2, 1], [3000, 40, 700], 4, 1, 96, 64, true),
        // Tensor cores (16-bit): several query and key tiles, ragged ends, GQA; chunks against longer keys; MLA widths.
        new([1, 70, 130, 9], null, 8, 2, 128, 128, true),
        new([5, 64, 33], [200, 64, 90], 4, 4, 64, 64, true),
        new([40, 3], [100, 3], 4, 2, 192, 128, false),
        // The decode kernel (16-bit): a serving decode step over caches of different lengths (one of a single key); speculative
        // rows of different counts; MFA's one wide KV head.
        new([1, 1, 1, 1, 1], [2000, 1, 77, 513, 64], 8, 2, 128, 128, true),
        new([3, 1, 2], [50, 300, 2], 4, 1, 64, 64, true),
        new([1, 2], [600, 30], 16, 1, 256, 256, true),
    ];

    private static IEnumerable<TestCaseData> CaseData() =>
        from dtype in GpuPair.StorageTypes
        from c in Cases
        select new TestCaseData(dtype, c).SetName($"Ragged attention {dtype} {c}");

    [TestCaseSource(nameof(CaseData))]
    public void Forward_and_backward_match_the_cpu(DType dtype, Problem c)
    {
        var gpu = Requires.CudaDevice();
        var options = c.Options;
        int queries = c.Queries.TokenCount;
        using var q = GpuPair.Random(gpu, 21, new Shape(1, queries, c.H, c.Dqk), dtype);
        using var k = GpuPair.Random(gpu, 22, new Shape(1, c.KeyTokens, c.G, c.Dqk), dtype);
        using var v = GpuPair.Random(gpu, 23, new Shape(1, c.KeyTokens, c.G, c.Dv), dtype);

        var oCpu = SoftmaxAttention.Forward(q.Cpu, k.Cpu, v.Cpu, options, null, out var lseCpu);
        var oGpu = SoftmaxAttention.Forward(q.Gpu, k.Gpu, v.Gpu, options, null, out var lseGpu);
        using var o = GpuPair.Wrap(oCpu, oGpu);
        using var lse = GpuPair.Wrap(lseCpu, lseGpu);
        o.Compare($"ragged attention {c} o", dtype);
        lse.Compare($"ragged attention {c} lse", DType.F32); // [1, H, N_q], fp32 whatever the storage type

        using var dO = GpuPair.Random(gpu, 24, o.Cpu.Shape, dtype);
        using var dq = GradientPair.Zeros(gpu, 25, q.Cpu.Shape, dtype);
        using var dk = GradientPair.Zeros(gpu, 26, k.Cpu.Shape, dtype);
        using var dv = GradientPair.Zeros(gpu, 27, v.Cpu.Shape, dtype);
        SoftmaxAttention.Backward(q.Cpu, k.Cpu, v.Cpu, options, null, o.Cpu, lse.Cpu, dO.Cpu, dq.Cpu, dk.Cpu, dv.Cpu);
        GradientPair.Start(true, dq, dk, dv);
        SoftmaxAttention.Backward(q.Gpu, k.Gpu, v.Gpu, options, null, o.Gpu, lse.Gpu, dO.Gpu, dq.Gpu, dk.Gpu, dv.Gpu);
        dq.Compare($"ragged attention {c} dq", dtype);
        dk.Compare($"ragged attention {c} dk", dtype);
        dv.Compare($"ragged attention {c} dv", dtype);
    }

    /// <summary>
    /// A ragged batch's shape for the kernels is its longest sequence's: a 16-bit decode step of many sequences (one query
    /// each, keys of any length) takes the decode kernel, and one whose longest chunk has more query rows than decode has does
    /// not (so the decode cases above test the decode kernel, the others the tensor-core or CUDA-core kernels).
    /// </summary>
    [Test]
    public void A_sixteen_bit_ragged_decode_step_takes_the_decode_kernel()
    {
        var gpu = Requires.CudaDevice();
        Assume.That(SoftmaxAttentionTensorCoreCuda.Enabled, Is.True, $"{SoftmaxAttentionTensorCoreCuda.DisableVariable}=0: fast kernels disabled");
        foreach (var (c, expected) in new[] { (Cases[6], true), (Cases[7], true), (Cases[8], true), (Cases[3], false), (Cases[4], false) })
        {
            using var q = gpu.Zeros(new Shape(1, c.Queries.TokenCount, c.H, c.Dqk), DType.BF16);
            using var k = gpu.Zeros(new Shape(1, c.KeyTokens, c.G, c.Dqk), DType.BF16);
            using var v = gpu.Zeros(new Shape(1, c.KeyTokens, c.G, c.Dv), DType.BF16);
            using var o = gpu.Zeros(new Shape(1, c.Queries.TokenCount, c.H, c.Dv), DType.BF16);
            var (shape, rows) = SoftmaxAttentionCuda.ShapesOf(gpu, SoftmaxAttention.DimsOf(q, k, v, c.Options), c.Options, SoftmaxAttention.Layouts.Of(q, k, v, o));
            Assert.Multiple(() =>
            {
                Assert.That(shape.Batch, Is.EqualTo(c.Queries.Count), $"{c}: a batch entry per sequence");
                Assert.That(shape.Tq, Is.EqualTo(c.QueryLengths.Max()), $"{c}: the longest query length");
                Assert.That(shape.Length, Is.EqualTo((c.KeyLengths ?? c.QueryLengths).Max()), $"{c}: the longest key length");
                Assert.That(rows.Batch * rows.Tq, Is.EqualTo(c.Queries.TokenCount), $"{c}: the combine's rows are the packed queries");
                Assert.That(SoftmaxAttentionDecodeCuda.Handles(gpu, q, k, v, null, o, shape), Is.EqualTo(expected), c.ToString());
            });
        }
    }

    private static IEnumerable<TestCaseData> StorageTypeCases() =>
        GpuPair.StorageTypes.Select(d => new TestCaseData(d).SetName($"Ragged attention calls queued back to back read their own offsets {d}"));

    /// <summary>
    /// Ragged attention calls of different layouts (their offsets share one device buffer, refilled per call) queued one after
    /// another with nothing read back in between, a forward and a backward among them: each launch reads its own offsets.
    /// </summary>
    [TestCaseSource(nameof(StorageTypeCases))]
    public void Ragged_calls_queued_back_to_back_read_their_own_offsets(DType dtype)
    {
        var gpu = Requires.CudaDevice();
        var first = new Problem([3, 40, 1], [60, 40, 9], 4, 2, 64, 64, true);
        var second = new Problem([17, 2, 9, 30], null, 4, 2, 64, 64, false);
        using var q1 = GpuPair.Random(gpu, 31, new Shape(1, first.Queries.TokenCount, 4, 64), dtype);
        using var k1 = GpuPair.Random(gpu, 32, new Shape(1, first.KeyTokens, 2, 64), dtype);
        using var v1 = GpuPair.Random(gpu, 33, new Shape(1, first.KeyTokens, 2, 64), dtype);
        using var q2 = GpuPair.Random(gpu, 34, new Shape(1, second.Queries.TokenCount, 4, 64), dtype);
        using var k2 = GpuPair.Random(gpu, 35, new Shape(1, second.KeyTokens, 2, 64), dtype);
        using var v2 = GpuPair.Random(gpu, 36, new Shape(1, second.KeyTokens, 2, 64), dtype);

        var o1Cpu = SoftmaxAttention.Forward(q1.Cpu, k1.Cpu, v1.Cpu, first.Options, null, out var lse1Cpu);
        var o2Cpu = SoftmaxAttention.Forward(q2.Cpu, k2.Cpu, v2.Cpu, second.Options, null, out var lse2Cpu);
        using var dO = GpuPair.Random(gpu, 37, o1Cpu.Shape, dtype);
        using var dq = GradientPair.Zeros(gpu, 38, q1.Cpu.Shape, dtype);
        SoftmaxAttention.Backward(q1.Cpu, k1.Cpu, v1.Cpu, first.Options, null, o1Cpu, lse1Cpu, dO.Cpu, dq.Cpu, null, null);
        dq.Start();

        // Queued: forward 1, forward 2, backward 1 (its offsets uploaded after forward 2's), forward 2 again.
        var o1Gpu = SoftmaxAttention.Forward(q1.Gpu, k1.Gpu, v1.Gpu, first.Options, null, out var lse1Gpu);
        var o2Gpu = SoftmaxAttention.Forward(q2.Gpu, k2.Gpu, v2.Gpu, second.Options, null, out var lse2Gpu);
        SoftmaxAttention.Backward(q1.Gpu, k1.Gpu, v1.Gpu, first.Options, null, o1Gpu, lse1Gpu, dO.Gpu, dq.Gpu, null, null);
        var o2Again = SoftmaxAttention.Forward(q2.Gpu, k2.Gpu, v2.Gpu, second.Options);
        using var o1 = GpuPair.Wrap(o1Cpu, o1Gpu);
        using var lse1 = GpuPair.Wrap(lse1Cpu, lse1Gpu);
        using var o2 = GpuPair.Wrap(o2Cpu, o2Gpu);
        using var lse2 = GpuPair.Wrap(lse2Cpu, lse2Gpu);
        using var o2b = GpuPair.Wrap(SoftmaxAttention.Forward(q2.Cpu, k2.Cpu, v2.Cpu, second.Options), o2Again);
        o1.Compare($"back to back: {first} o", dtype);
        lse1.Compare($"back to back: {first} lse", DType.F32);
        o2.Compare($"back to back: {second} o", dtype);
        lse2.Compare($"back to back: {second} lse", DType.F32);
        dq.Compare($"back to back: {first} dq", dtype);
        o2b.Compare($"back to back: {second} o again", dtype);
    }
}

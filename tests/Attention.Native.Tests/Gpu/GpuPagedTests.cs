using Attention.Native.Inference;
using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// The paged-cache ops on the CUDA backend against the CPU reference (<see cref="PagedAttention"/>: writes, page copies, softmax
/// attention, MLA's latent and TPA's factor attention over pages), on batches of sequences of different lengths (1, several pages, a long one
/// among short ones, which the split-KV plan cuts), pages shuffled through the pool and shared between two sequences, single
/// decode queries and prompt chunks; and <see cref="ServingPool"/> scenarios that run the same steps on a CUDA pool and a CPU
/// pool. Cache slots no sequence uses hold large garbage that must not reach a result.
/// </summary>
[Category("Gpu")]
public class GpuPagedTests
{
    /// <summary>
    /// Sequences of <paramref name="Lengths"/> keys (their new tokens included) with <paramref name="Queries"/> new queries each,
    /// in pages of <paramref name="PageSize"/>; each share (From, To, Pages) gives sequence To the first pages of sequence From.
    /// </summary>
    public sealed record Batch(string Label, int PageSize, int[] Lengths, int[] Queries, (int From, int To, int Pages)[] Shares)
    {
        public override string ToString() => Label;
    }

    private static readonly Batch[] Batches =
    [
        new("decode of 4 (lengths 1, 70, 37, 5; page 16)", 16, [1, 70, 37, 5], [1, 1, 1, 1], [(1, 2, 2)]),
        new("decode and chunks (lengths 1, 70, 37, 5; page 16)", 16, [1, 70, 37, 5], [1, 1, 3, 5], [(1, 2, 2)]),
        new("long among short (lengths 3000, 2, 40; page 16)", 16, [3000, 2, 40], [1, 1, 2], [(0, 2, 2)]),
        new("pages of 3 (lengths 11, 4, 9)", 3, [11, 4, 9], [2, 1, 1], [(0, 2, 2)]),
    ];

    private static IEnumerable<TestCaseData> LatentCases() =>
        from dtype in GpuPair.StorageTypes
        from b in Batches
        from wide in new[] { false, true }
        select new TestCaseData(dtype, b, wide).SetName($"PagedAttention.Latent {dtype} {b} {(wide ? "latent 512 rope 64" : "latent 32 rope 8")}");

    private static IEnumerable<TestCaseData> TpaCases() =>
        from dtype in GpuPair.StorageTypes
        from b in Batches
        from allHeads in new[] { true, false }
        select new TestCaseData(dtype, b, allHeads).SetName($"PagedAttention.Tpa {dtype} {b} {(allHeads ? "all heads" : "per head")}");

    /// <summary>
    /// Softmax attention's batches: <see cref="Batches"/> (decode steps and short chunks: the memory-speed decode kernel in 16
    /// bits, split-KV for the long one) and prompt chunks of 40 queries (the tensor-core forward in 16 bits).
    /// </summary>
    private static readonly Batch[] SoftmaxBatches =
    [
        .. Batches,
        new("prompt chunks (lengths 90, 40, 6; queries 40, 40, 6; page 16)", 16, [90, 40, 6], [40, 40, 6], [(0, 1, 2)]),
    ];

    /// <summary>Heads H on G KV heads with widths (d_qk, d_v): GQA, MHA, SAS's expanded cache, MFA's one wide KV head, and widths no fast kernel has.</summary>
    private static readonly (string Label, int Heads, int KvHeads, int Dqk, int Dv)[] SoftmaxWidths =
    [
        ("gqa 8/2 d64", 8, 2, 64, 64),
        ("mha 4 d128", 4, 4, 128, 128),
        ("sas 4 d256/128", 4, 4, 256, 128),
        ("mfa 16/1 d256", 16, 1, 256, 256),
        ("gqa 4/2 d40/24", 4, 2, 40, 24),
    ];

    private static IEnumerable<TestCaseData> SoftmaxCases() =>
        from dtype in GpuPair.StorageTypes
        from b in SoftmaxBatches
        from w in SoftmaxWidths
        select new TestCaseData(dtype, b, w.Heads, w.KvHeads, w.Dqk, w.Dv).SetName($"PagedAttention.Forward {dtype} {b} {w.Label}");

    private static IEnumerable<TestCaseData> StorageCases(string name) =>
        from dtype in GpuPair.StorageTypes
        select new TestCaseData(dtype).SetName($"{name} {dtype}");

    private static IEnumerable<TestCaseData> WriteCases() => StorageCases("PagedAttention.Write");

    private static IEnumerable<TestCaseData> CopyCases() => StorageCases("PagedAttention.CopyPage");

    /// <summary>The block table of <paramref name="b"/> (pages numbered in a shuffled order over a pool with two spare pages).</summary>
    internal static (PageTable Table, SequenceLayout Queries, int PoolPages, bool[] Used) Build(Batch b, int seed)
    {
        int count = b.Lengths.Length, size = b.PageSize;
        int perSequence = b.Lengths.Max(l => (l + size - 1) / size) + 1; // a padding entry even for the longest
        var pages = new int[count * perSequence];
        Array.Fill(pages, -1);
        int next = 0;
        for (int s = 0; s < count; s++)
        {
            for (int i = 0; i < (b.Lengths[s] + size - 1) / size; i++)
            {
                pages[(s * perSequence) + i] = next++;
            }
        }
        foreach (var (from, to, n) in b.Shares)
        {
            Array.Copy(pages, from * perSequence, pages, to * perSequence, n);
        }
        int pool = next + 2;
        var order = Enumerable.Range(0, pool).ToArray();
        new Random(seed).Shuffle(order);
        for (int e = 0; e < pages.Length; e++)
        {
            pages[e] = pages[e] < 0 ? -1 : order[pages[e]];
        }
        var table = new PageTable(size, perSequence, pages, b.Lengths);
        var used = new bool[pool * size];
        for (int s = 0; s < count; s++)
        {
            for (int j = 0; j < b.Lengths[s]; j++)
            {
                used[table.Slot(s, j)] = true;
            }
        }
        return (table, SequenceLayout.FromLengths(b.Queries), pool, used);
    }

    // A pool [P, page_size, …row] of normal values, 1000 in every slot no sequence uses.
    private static GpuPair Pool(CudaBackend gpu, int seed, int pool, int pageSize, Shape row, bool[] used, DType dtype)
    {
        long width = row.ElementCount;
        var values = TestData.NormalSingle(seed, pool * pageSize * width);
        for (int slot = 0; slot < used.Length; slot++)
        {
            if (!used[slot])
            {
                Array.Fill(values, 1000f, (int)(slot * width), (int)width);
            }
        }
        var dims = new int[row.Rank + 2];
        dims[0] = pool;
        dims[1] = pageSize;
        for (int i = 0; i < row.Rank; i++)
        {
            dims[i + 2] = row[i];
        }
        return GpuPair.Of(gpu, values, new Shape(dims), dtype);
    }

    /// <summary>
    /// Softmax attention over pages (<see cref="PagedAttention.Forward"/>: the gqa/mha/mqa, sas and mfa pools) on CUDA against
    /// the CPU's gather-then-attend reference; the pools hold 1000 in every slot no sequence uses.
    /// </summary>
    [TestCaseSource(nameof(SoftmaxCases))]
    public void Softmax_attention_over_pages_matches_the_cpu(DType dtype, Batch b, int heads, int kvHeads, int dqk, int dv)
    {
        var gpu = Requires.CudaDevice();
        var (table, queries, poolPages, used) = Build(b, 101);
        using var q = GpuPair.Random(gpu, 102, new Shape(1, queries.TokenCount, heads, dqk), dtype);
        using var k = Pool(gpu, 103, poolPages, b.PageSize, new Shape(kvHeads, dqk), used, dtype);
        using var v = Pool(gpu, 104, poolPages, b.PageSize, new Shape(kvHeads, dv), used, dtype);
        double scale = 1.0 / Math.Sqrt(dqk);
        using var o = GpuPair.Wrap(
            PagedAttention.Forward(q.Cpu, k.Cpu, v.Cpu, queries, table, scale),
            PagedAttention.Forward(q.Gpu, k.Gpu, v.Gpu, queries, table, scale));
        o.Compare($"paged-softmax {b} H{heads} G{kvHeads} d{dqk}/{dv}", dtype);
    }

    [TestCaseSource(nameof(LatentCases))]
    public void Latent_attention_over_pages_matches_the_cpu(DType dtype, Batch b, bool wide)
    {
        var gpu = Requires.CudaDevice();
        // Small widths, and DeepSeek's latent 512 + rope 64 with 16 heads: the tensor-core split kernel in BF16/F16.
        int heads = wide ? 16 : 4, nope = 16, rope = wide ? 64 : 8, latent = wide ? 512 : 32, dv = 16;
        var (table, queries, poolPages, used) = Build(b, 81);
        using var q = GpuPair.Random(gpu, 82, new Shape(1, queries.TokenCount, heads, nope + rope), dtype);
        using var pages = Pool(gpu, 83, poolPages, b.PageSize, new Shape(latent + rope), used, dtype);
        using var kvUp = GpuPair.Random(gpu, 84, new Shape(heads * (nope + dv), latent), dtype, 1.0 / Math.Sqrt(latent));
        double scale = 1.0 / Math.Sqrt(nope + rope);
        using var o = GpuPair.Wrap(
            PagedAttention.Latent(q.Cpu, pages.Cpu, kvUp.Cpu, nope, queries, table, scale),
            PagedAttention.Latent(q.Gpu, pages.Gpu, kvUp.Gpu, nope, queries, table, scale));
        o.Compare($"paged-latent {b} latent {latent}", dtype);

        // The same in chunks of 2 query tokens (a chunk's tokens from several sequences; its combine reads their keys).
        using var chunked = gpu.Zeros(o.Gpu.Shape, dtype);
        PagedAttentionCuda.Latent(gpu, q.Gpu, pages.Gpu, kvUp.Gpu, chunked, nope, queries, table, scale, maxChunk: 2);
        Parity.AssertClose($"paged-latent {b} latent {latent} chunks of 2", dtype, o.Cpu.Shape.ToString(), o.Cpu.ToArray(), chunked.ToArray());
    }

    [TestCaseSource(nameof(TpaCases))]
    public void Tpa_attention_over_pages_matches_the_cpu(DType dtype, Batch b, bool allHeads)
    {
        var gpu = Requires.CudaDevice();
        const int Heads = 4, Rq = 6, Rk = 2, Rv = 2;
        int d = b.Lengths.Max() >= 1000 ? 128 : 32;
        var (table, queries, poolPages, used) = Build(b, 91);
        int n = queries.TokenCount;
        using var aq = GpuPair.Random(gpu, 92, new Shape(1, n, Heads, Rq), dtype);
        using var bq = GpuPair.Random(gpu, 93, new Shape(1, n, Rq, d), dtype);
        using var ak = Pool(gpu, 94, poolPages, b.PageSize, new Shape(Heads, Rk), used, dtype);
        using var bk = Pool(gpu, 95, poolPages, b.PageSize, new Shape(Rk, d), used, dtype);
        using var av = Pool(gpu, 96, poolPages, b.PageSize, new Shape(Heads, Rv), used, dtype);
        using var bv = Pool(gpu, 97, poolPages, b.PageSize, new Shape(Rv, d), used, dtype);
        using var reference = PagedAttention.Tpa(aq.Cpu, bq.Cpu, ak.Cpu, bk.Cpu, av.Cpu, bv.Cpu, queries, table);
        foreach (int maxChunk in new[] { LatentAttentionCuda.MaxGridY, 2 })
        {
            using var o = gpu.Zeros(reference.Shape, dtype);
            PagedAttentionCuda.Tpa(gpu, aq.Gpu, bq.Gpu, ak.Gpu, bk.Gpu, av.Gpu, bv.Gpu, o, queries, table, maxChunk, allHeads);
            Parity.AssertClose($"paged-tpa {b} d{d} {(allHeads ? "all heads" : "per head")} chunks of {Math.Min(maxChunk, n)}", dtype, reference.Shape.ToString(),
                reference.ToArray(), o.ToArray());
        }
        // The public entry takes the all-heads kernel where its shared memory fits (these shapes).
        using var viaOp = GpuPair.Wrap(PagedAttention.Tpa(aq.Cpu, bq.Cpu, ak.Cpu, bk.Cpu, av.Cpu, bv.Cpu, queries, table),
            PagedAttention.Tpa(aq.Gpu, bq.Gpu, ak.Gpu, bk.Gpu, av.Gpu, bv.Gpu, queries, table));
        viaOp.Compare($"paged-tpa {b} d{d}", dtype);
    }

    /// <summary>
    /// A step's new tokens written into the pages: rows of 16 elements (16-byte units), of 6 (4-byte) and of 3 (2-byte units in
    /// 16 bits); every slot of the pool, written or not, equals the CPU's exactly.
    /// </summary>
    [TestCaseSource(nameof(WriteCases))]
    public void Writes_into_pages_match_the_cpu_exactly(DType dtype)
    {
        var gpu = Requires.CudaDevice();
        // New tokens: a decode token each, a chunk of 20 across two pages, a first token; none lands in a shared page.
        var b = new Batch("writes", 8, [1, 9, 30, 17], [1, 1, 20, 1], [(2, 3, 1)]);
        var (table, queries, poolPages, used) = Build(b, 71);
        var starts = b.Lengths.Zip(b.Queries, (l, q) => l - q).ToArray();
        var tokens = queries.WithStartPositions(starts);
        foreach (var row in new[] { new Shape(2, 8), new Shape(6), new Shape(3) })
        {
            using var pages = Pool(gpu, 72, poolPages, b.PageSize, row, used, dtype);
            var dims = new int[row.Rank + 2];
            dims[0] = 1;
            dims[1] = queries.TokenCount;
            for (int i = 0; i < row.Rank; i++)
            {
                dims[i + 2] = row[i];
            }
            using var values = GpuPair.Random(gpu, 73, new Shape(dims), dtype);
            PagedAttention.Write(values.Cpu, pages.Cpu, tokens, table);
            PagedAttention.Write(values.Gpu, pages.Gpu, tokens, table);
            Assert.That(pages.Gpu.ToArray(), Is.EqualTo(pages.Cpu.ToArray()), $"pool of rows {row}");
        }
    }

    /// <summary>Copy on write of a page (rows of 2 × 8 and of 3), and a transnormer state slot (F32) cleared from the zero row.</summary>
    [TestCaseSource(nameof(CopyCases))]
    public void Page_copies_match_the_cpu_exactly(DType dtype)
    {
        var gpu = Requires.CudaDevice();
        foreach (var (shape, type, source, destination) in new[]
        {
            (new Shape(6, 4, 2, 8), dtype, 5, 1), (new Shape(4, 3, 3), dtype, 0, 3), (new Shape(3, 2, 16, 8), DType.F32, 2, 0),
        })
        {
            using var pages = GpuPair.Random(gpu, 74, shape, type);
            PagedAttention.CopyPage(pages.Cpu, source, destination);
            PagedAttention.CopyPage(pages.Gpu, source, destination);
            Assert.That(pages.Gpu.ToArray(), Is.EqualTo(pages.Cpu.ToArray()), $"{shape} {type}: page {source} onto {destination}");
        }
    }

    /// <summary>
    /// Once warmed up, the paged ops take no device memory per call: the block tables go through the backend's launch-index
    /// buffer, the partials through its scratch and the output through its tensor cache, so a second step never raises the
    /// context's allocated bytes.
    /// </summary>
    [Test]
    public void Warm_paged_calls_allocate_nothing()
    {
        var gpu = Requires.CudaDevice();
        var b = Batches[1];
        var (table, queries, poolPages, used) = Build(b, 61);
        using var q = gpu.FromArray(TestData.NormalSingle(62, (long)queries.TokenCount * 4 * 24), new Shape(1, queries.TokenCount, 4, 24), DType.BF16);
        using var pages = Pool(gpu, 63, poolPages, b.PageSize, new Shape(40), used, DType.BF16);
        using var kvUp = gpu.FromArray(TestData.NormalSingle(64, 4 * 32 * 32), new Shape(4 * 32, 32), DType.BF16);
        using var values = gpu.FromArray(TestData.NormalSingle(65, (long)queries.TokenCount * 40), new Shape(1, queries.TokenCount, 40), DType.BF16);
        // Softmax attention over pages too: 4 heads on 2 KV heads of 64 (the decode kernel, a pooled lse).
        using var qs = gpu.FromArray(TestData.NormalSingle(66, (long)queries.TokenCount * 4 * 64), new Shape(1, queries.TokenCount, 4, 64), DType.BF16);
        using var kPages = Pool(gpu, 67, poolPages, b.PageSize, new Shape(2, 64), used, DType.BF16);
        using var vPages = Pool(gpu, 68, poolPages, b.PageSize, new Shape(2, 64), used, DType.BF16);
        var tokens = queries.WithStartPositions(b.Lengths.Zip(b.Queries, (l, n) => l - n).ToArray());
        void Step()
        {
            PagedAttention.Write(values, pages.Gpu, tokens, table);
            PagedAttention.CopyPage(pages.Gpu, table.Pages[0], poolPages - 1);
            using var o = PagedAttention.Latent(q, pages.Gpu, kvUp, 16, queries, table, 0.2);
            using var os = PagedAttention.Forward(qs, kPages.Gpu, vPages.Gpu, queries, table, 0.125);
            _ = o.ToArray(); // waits for the work
            _ = os.ToArray();
        }
        Step();
        gpu.Synchronize();
        gpu.Context.ResetPeakAllocatedBytes();
        long before = gpu.Context.AllocatedBytes, driverAllocations = gpu.DriverAllocations;
        Step();
        Assert.That(gpu.Context.PeakAllocatedBytes - before, Is.Zero, "device bytes a warm step allocated");
        Assert.That(gpu.DriverAllocations, Is.EqualTo(driverAllocations), "tensor blocks a warm step took from the driver");
    }

    // --------------------------------------------------------------------------------------------------------------------
    // ServingPool on CUDA against the same scenario on the CPU.

    /// <summary>
    /// The serving cases: GQA with heads of 64 and MFA with its one KV head of 256 (softmax attention over pages: the decode
    /// kernel for decode steps, the tensor-core forward for the 128-token prompt chunks in 16 bits), MLA (small widths, and
    /// DeepSeek's latent 512 + rope 64, the tensor-core kernel in 16 bits), TPA with and without RoPE, and transnormer (a state
    /// slot per sequence). All but TPA without RoPE also need the ragged batches' RoPE/LRPE and Lightning on CUDA.
    /// </summary>
    internal static IEnumerable<(string Label, LayerConfig Config)> ServingConfigs()
    {
        yield return ("gqa d64", new GqaConfig { DModel = 256, Heads = 8, KvHeads = 2, HeadDim = 64 });
        yield return ("mfa d256", new MfaConfig { DModel = 256, Heads = 4, HeadDim = 256, QLoraDim = 64 });
        yield return ("mla small", new MlaConfig { DModel = 128, Heads = 4, QLoraRank = 64, KvLoraRank = 32, QkNopeHeadDim = 16, QkRopeHeadDim = 8, VHeadDim = 16 });
        yield return ("mla deepseek widths", new MlaConfig { DModel = 256, Heads = 16, QLoraRank = 64, KvLoraRank = 512, QkNopeHeadDim = 16, QkRopeHeadDim = 64, VHeadDim = 16 });
        yield return ("tpa small", new TpaConfig { DModel = 128, Heads = 4, HeadDim = 32, QRank = 6, KRank = 2, VRank = 2 });
        yield return ("tpa no rope", new TpaConfig { DModel = 128, Heads = 4, HeadDim = 32, QRank = 6, KRank = 2, VRank = 2, Rope = false });
        yield return ("transnormer lrpe", new TransNormerConfig { DModel = 128, Heads = 4, HeadDim = 32, LayerIndex = 1, NumLayers = 4, Lrpe = true });
    }

    private static IEnumerable<TestCaseData> ServingCases() =>
        from dtype in GpuPair.StorageTypes
        from c in ServingConfigs()
        select new TestCaseData(dtype, c.Label, c.Config).SetName($"ServingPool {c.Label} {dtype}");

    /// <summary>
    /// Continuous batching through a CUDA pool and a CPU pool (F32, the same parameters, the same inputs rounded to the storage
    /// type): admit, chunked prefill, a long prompt beside short ones (its decode steps split the keys), decode steps of changing
    /// sets, a mixed step of chunks and single tokens, forks (a shared partial page copied on write; a transnormer state copied)
    /// and releases. Every step's outputs agree within design.md's tolerance, and both pools end with the same free pages.
    /// </summary>
    [TestCaseSource(nameof(ServingCases))]
    public void Serving_pool_on_cuda_matches_the_cpu(DType dtype, string label, LayerConfig config)
    {
        var gpu = Requires.CudaDevice();
        using var onGpu = (CausalAttentionLayer)AttentionLayer.Create(config, gpu, dtype);
        onGpu.InitializeParameters(GpuVariantSeeds.Parameters);
        using var onCpu = (CausalAttentionLayer)AttentionLayer.Create(config, Backend.Cpu, DType.F32);
        onCpu.LoadParameters(onGpu.Parameters);
        var options = new ServingPoolOptions(TokenBudget: 1024, PageSize: 16, MaxSequences: 8);
        using var cpuPool = new ServingPool(onCpu, options);
        using var gpuPool = new ServingPool(onGpu, options);
        var run = new TwinPools(cpuPool, gpuPool, gpu, dtype, $"{ParityReport.VariantTag(config.Variant, "serving")} {label}");
        run.Admit("a");
        run.Prefill("a", 7, chunk: 3);
        run.Admit("b");
        run.Prefill("b", 2);
        run.Decode("a");
        run.Admit("c");
        run.Prefill("c", 300, chunk: 128);
        run.Decode("a", "b", "c");
        run.Step(("b", 3), ("a", 1), ("c", 2));
        run.Fork("d", "a");
        run.Decode("d", "a");
        run.Release("b");
        run.Decode("c", "d", "a");
        run.Fork("e", "c");
        run.Release("c");
        run.Decode("e", "d");
        run.Decode("e");
        Assert.That(gpuPool.FreePages, Is.EqualTo(cpuPool.FreePages), "free pages");
    }

    /// <summary>Runs each serving call on both pools with the same inputs and compares the outputs (<see cref="Parity"/>).</summary>
    private sealed class TwinPools(ServingPool cpu, ServingPool gpu, CudaBackend backend, DType dtype, string tag)
    {
        private readonly Dictionary<string, (SequenceId Cpu, SequenceId Gpu)> _ids = [];
        private int _seed = 500;

        private int Width => cpu.Layer.Config.DModel;

        public void Admit(string name) => _ids[name] = (cpu.Admit(), gpu.Admit());

        public void Fork(string name, string from) => _ids[name] = (cpu.Fork(_ids[from].Cpu), gpu.Fork(_ids[from].Gpu));

        public void Release(string name)
        {
            cpu.Release(_ids[name].Cpu);
            gpu.Release(_ids[name].Gpu);
            _ids.Remove(name);
        }

        public void Prefill(string name, int tokens, int? chunk = null) =>
            Run($"prefill {name} {tokens}" + (chunk is { } c ? $" in chunks of {c}" : ""), new Shape(1, tokens, Width),
                (pool, x) => pool.Prefill(Id(pool, name), x, chunk));

        public void Decode(params string[] names) =>
            Run($"decode {string.Join(",", names)}", new Shape(names.Length, 1, Width), (pool, x) => pool.Decode(names.Select(n => Id(pool, n)).ToArray(), x));

        public void Step(params (string Name, int Tokens)[] parts)
        {
            var layout = SequenceLayout.FromLengths(parts.Select(p => p.Tokens).ToArray());
            Run($"step {string.Join(",", parts.Select(p => $"{p.Name}:{p.Tokens}"))}", new Shape(1, layout.TokenCount, Width),
                (pool, x) => pool.Step(parts.Select(p => Id(pool, p.Name)).ToArray(), x, layout));
        }

        private SequenceId Id(ServingPool pool, string name) => ReferenceEquals(pool, cpu) ? _ids[name].Cpu : _ids[name].Gpu;

        private void Run(string what, Shape shape, Func<ServingPool, Tensor, Tensor> call)
        {
            var values = TestData.Representable(TestData.NormalSingle(_seed++, shape.ElementCount), dtype);
            using var xCpu = Backend.Cpu.FromArray(values, shape);
            using var xGpu = backend.FromArray(values, shape, dtype);
            using var yCpu = call(cpu, xCpu);
            using var yGpu = call(gpu, xGpu);
            Parity.AssertClose($"{tag} {what}", dtype, shape.ToString(), yCpu.ToArray(), yGpu.ToArray());
        }
    }
}

/// <summary>The block tables as the paged CUDA kernels read them (host arithmetic only; runs without a GPU).</summary>
public class PagedKeysLayoutTests
{
    /// <summary>
    /// <c>[table | sequence | visible]</c>: the table's entries as given (padding included), then each packed query token's
    /// sequence, then the keys it sees: query i of sequence s sits at position Length(s) − L_q(s) + i and sees one more.
    /// </summary>
    [Test]
    public void Keys_are_the_table_then_each_tokens_sequence_and_visible_keys()
    {
        // Lengths 5, 1, 9 with 2, 1 and 3 new queries; pages of 4, three entries per sequence.
        var table = new PageTable(4, 3, [7, 2, -1, 0, -1, -1, 3, 5, 1], [5, 1, 9]);
        var queries = SequenceLayout.FromLengths(2, 1, 3);
        var staged = new int[9 + (2 * 6)];
        PagedAttentionCuda.FillKeys(staged, queries, table);
        Assert.That(staged, Is.EqualTo(new[]
        {
            7, 2, -1, 0, -1, -1, 3, 5, 1, // the table
            0, 0, 1, 2, 2, 2,             // sequences
            4, 5, 1, 7, 8, 9,             // visible keys: positions 3, 4 | 0 | 6, 7, 8, each + 1
        }));
    }

    /// <summary>
    /// Softmax attention's paged shape (<see cref="SoftmaxAttentionCuda.Paged"/>): the query offsets, the offsets of the
    /// sequences' cached keys (a ragged batch's key offsets, so each block narrows itself to its sequence's key count), then
    /// the table's entries as given.
    /// </summary>
    [Test]
    public void Softmax_attention_takes_query_offsets_then_key_offsets_then_the_table()
    {
        var table = new PageTable(4, 3, [7, 2, -1, 0, -1, -1, 3, 5, 1], [5, 1, 9]);
        var queries = SequenceLayout.FromLengths(2, 1, 3);
        var staged = new int[(2 * 4) + 9];
        SoftmaxAttentionCuda.FillPaged(staged, queries, table);
        Assert.That(staged, Is.EqualTo(new[]
        {
            0, 2, 3, 6,                   // queries
            0, 5, 6, 15,                  // keys: lengths 5, 1, 9
            7, 2, -1, 0, -1, -1, 3, 5, 1, // the table
        }));
    }
}

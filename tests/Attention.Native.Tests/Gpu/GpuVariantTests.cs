using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Tests.Variants;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// Every variant on the CUDA backend against the CPU reference: forward, backward (dx and every parameter gradient) and
/// decode (prefill, then token-by-token steps with the caches on the device), in each storage type. Comparisons are tagged
/// <c>variant &lt;name&gt; &lt;pass&gt;</c> for the parity report.
/// </summary>
[Category("Gpu")]
public class GpuVariantTests
{
    /// <summary>A variant config and the sequence lengths it runs at.</summary>
    public sealed record Setup(string Label, LayerConfig Config, int Batch, int[] Lengths)
    {
        public override string ToString() => Label;
    }

    internal static IEnumerable<Setup> Setups()
    {
        int[] lengths = [1, 7, 129];
        // Head width 32, several heads: the shapes of the CPU tests.
        yield return new("mha d32", new GqaConfig { Kind = "mha", DModel = 128, Heads = 4, KvHeads = 4, HeadDim = 32 }, 2, lengths);
        yield return new("gqa d32", new GqaConfig { Kind = "gqa", DModel = 128, Heads = 4, KvHeads = 2, HeadDim = 32 }, 2, lengths);
        yield return new("mqa d32", new GqaConfig { Kind = "mqa", DModel = 128, Heads = 4, KvHeads = 1, HeadDim = 32 }, 2, lengths);
        yield return new("mla small", new MlaConfig { DModel = 128, Heads = 4, QLoraRank = 64, KvLoraRank = 32, QkNopeHeadDim = 16, QkRopeHeadDim = 8, VHeadDim = 16 }, 2, lengths);
        // DeepSeek-V3's YaRN rope_scaling (factor 40, L0 4096, β 32/1, mscale 1/1) and interleaved pairs on its d_r 64.
        yield return new("mla yarn", new MlaConfig
        {
            DModel = 128, Heads = 4, QLoraRank = 64, KvLoraRank = 32, QkNopeHeadDim = 16, QkRopeHeadDim = 64, VHeadDim = 16, RopeStyle = RopeStyle.Interleaved,
            RopeScaling = new RopeScaling(40, 4096, BetaFast: 32, BetaSlow: 1, MScale: 1, MScaleAllDim: 1),
        }, 2, lengths);
        yield return new("tpa small", new TpaConfig { DModel = 128, Heads = 4, HeadDim = 32, QRank = 6, KRank = 2, VRank = 2 }, 2, lengths);
        // T6's layout: k and v share one rank, and the per-head output RMSNorm subln (ε 1e-5).
        yield return new("tpa t6 subln", new TpaConfig { DModel = 128, Heads = 4, HeadDim = 32, QRank = 6, KRank = 2, VRank = 2, Subln = true }, 2, lengths);
        yield return new("sas small", new SasConfig { DModel = 128, Heads = 4, HeadDim = 32, SimHeads = 8, SimHeadDim = 48, KernelSize = 3 }, 2, lengths);
        yield return new("transnormer small", new TransNormerConfig { DModel = 128, Heads = 4, HeadDim = 32, LayerIndex = 1, NumLayers = 4 }, 2, lengths);
        yield return new("mfa small", new MfaConfig { DModel = 128, Heads = 8, HeadDim = 32, QLoraDim = 64 }, 2, lengths);
        // Agent and FLatten fix the sequence length in their config.
        foreach (int t in new[] { 7, 129 })
        {
            yield return new($"agent T{t}", new AgentConfig { DModel = 128, Heads = 4, Agents = 16, SeqLen = t }, 2, [t]);
            yield return new($"flatten T{t}", new FlattenConfig { DModel = 128, Heads = 4, SeqLen = t, FocusingFactor = 3 }, 2, [t]);
        }
        // The 2-D (PVT) forms on their built grids: a reduced key grid (sr 2: patch gather, LayerNorm, v resized back) and a
        // 14×14 grid of 49 agents (the bias maps resized from 7×7, stage-1 widths).
        yield return new("agent-pvt 8x8 sr2", new AgentVisionConfig { DModel = 128, Heads = 4, Agents = 16, GridHeight = 8, GridWidth = 8, SrRatio = 2, QkvBias = true }, 2, [64]);
        yield return new("agent-pvt 14x14", new AgentVisionConfig { DModel = 64, Heads = 1, Agents = 49, GridHeight = 14, GridWidth = 14, QkvBias = true }, 2, [196]);
        yield return new("flatten-pvt 8x8 sr2", new FlattenVisionConfig { DModel = 128, Heads = 4, GridHeight = 8, GridWidth = 8, SrRatio = 2, QkvBias = true, DwcKernel = 3 }, 2, [64]);
        yield return new("flatten-pvt 14x14", new FlattenVisionConfig { DModel = 64, Heads = 2, GridHeight = 14, GridWidth = 14, QkvBias = true }, 2, [196]);
        // Head width 128 (256 for SAS's expanded heads) and one KV head, at T = 1000.
        yield return new("gqa d128", new GqaConfig { Kind = "gqa", DModel = 1024, Heads = 8, KvHeads = 2, HeadDim = 128 }, 1, [1000]);
        yield return new("mqa d256", new GqaConfig { Kind = "mqa", DModel = 512, Heads = 2, KvHeads = 1, HeadDim = 256 }, 1, [129, 1000]);
        yield return new("mla bench widths", new MlaConfig { DModel = 1024, Heads = 4, QLoraRank = 384, KvLoraRank = 512, QkNopeHeadDim = 128, QkRopeHeadDim = 64, VHeadDim = 128 }, 1, [1000]);
        yield return new("tpa d128", new TpaConfig { DModel = 1024, Heads = 8, HeadDim = 128, QRank = 6, KRank = 2, VRank = 2 }, 1, [1000]);
        // SAS's backward runs on data whose ReLU inputs keep clear of 0 (SasFormula.KinkFreeInput; see ParityInput).
        yield return new("sas d256", new SasConfig { DModel = 512, Heads = 4, HeadDim = 128, SimHeads = 8, SimHeadDim = 256, KernelSize = 3 }, 1, [1000]);
        // Step-3's attention shape: 64 query heads of width 256 on one KV head (decode: the (256, 256) decode kernel, 8 row
        // blocks in one launch; forward and backward: the CUDA-core kernels, which the tensor-core widths do not cover).
        yield return new("mfa step3 widths", new MfaConfig { DModel = 512, Heads = 64, HeadDim = 256, QLoraDim = 256 }, 1, [512]);
        yield return new("transnormer d128", new TransNormerConfig { DModel = 1024, Heads = 8, HeadDim = 128, LayerIndex = 0, NumLayers = 2 }, 1, [1000]);
        yield return new("agent d128", new AgentConfig { DModel = 1024, Heads = 8, Agents = 49, SeqLen = 1000 }, 1, [1000]);
        yield return new("flatten d128", new FlattenConfig { DModel = 1024, Heads = 8, SeqLen = 1000, FocusingFactor = 3 }, 1, [1000]);
    }

    private static IEnumerable<TestCaseData> ForwardBackwardCases() =>
        from dtype in GpuPair.StorageTypes
        from setup in Setups()
        from t in setup.Lengths
        select new TestCaseData(dtype, setup, t).SetName($"{setup.Config.Variant} {setup.Label} {dtype} T{t} forward and backward");

    private static IEnumerable<TestCaseData> DecodeCases() =>
        from dtype in GpuPair.StorageTypes
        from setup in Setups().Where(s => s.Config is not (AgentConfig or FlattenConfig or AgentVisionConfig or FlattenVisionConfig))
        from growth in new[] { true, false }
        select new TestCaseData(dtype, setup, growth).SetName($"{setup.Config.Variant} {setup.Label} {dtype} decode {(growth ? "growing cache" : "preallocated cache")}");

    /// <summary>The GPU layer in <paramref name="dtype"/> and the CPU reference (in <paramref name="referenceType"/>) holding
    /// exactly the same parameters.</summary>
    private static (AttentionLayer Gpu, AttentionLayer Cpu) Layers(CudaBackend gpu, LayerConfig config, DType dtype, DType referenceType = DType.F32)
    {
        var onGpu = AttentionLayer.Create(config, gpu, dtype);
        onGpu.InitializeParameters(GpuVariantSeeds.Parameters);
        var onCpu = AttentionLayer.Create(config, Backend.Cpu, referenceType);
        onCpu.LoadParameters(onGpu.Parameters);
        return (onGpu, onCpu);
    }

    /// <summary>
    /// The storage type of the CPU reference for forward and backward: F32, except for SAS in BF16/F16. SAS's gradient jumps
    /// where a ReLU input crosses 0; against an F32 reference, the rounding of the ReLU inputs to 16 bits moves about 0.1% of
    /// them across 0 and each such flip moves a parameter-gradient sum by about 1/√n of its size (seen: up to 3e-2), which
    /// measures where rounding lands, not the kernels. A CPU reference in the same storage type rounds at the same points,
    /// so the masks agree. SAS's half-precision forward is still held to the F32 reference by the decode test.
    /// </summary>
    internal static DType ReferenceType(LayerConfig config, DType dtype) => config is SasConfig && dtype != DType.F32 ? dtype : DType.F32;

    /// <summary>
    /// The forward/backward input: normal values from <see cref="GpuVariantSeeds.Input"/>. SAS's gradient jumps where a ReLU
    /// input crosses 0, and a random input of 1000 tokens has millions of ReLU inputs, a few within fp32 rounding of 0
    /// (seen: one flip moved dw_q by 4e-3, the same in F64 under a 1e-7 input change), so its data is drawn token by token
    /// keeping every ReLU input clear of 0 by 1e-4 of its scale (<see cref="SasFormula.KinkFreeInput"/>).
    /// </summary>
    internal static float[] ParityInput(Setup setup, AttentionLayer reference, int tokens, DType dtype) => setup.Config is SasConfig sas
        ? SasFormula.KinkFreeInput(sas, reference.Parameters.ToDictionary(p => p.Key, p => p.Value.ToDoubleArray()), GpuVariantSeeds.Input, setup.Batch, tokens, dtype)
        : TestData.NormalSingle(GpuVariantSeeds.Input, (long)setup.Batch * tokens * setup.Config.DModel);

    [TestCaseSource(nameof(ForwardBackwardCases))]
    public void Forward_and_backward_match_the_cpu(DType dtype, Setup setup, int tokens)
    {
        var gpu = Requires.CudaDevice();
        var referenceType = ReferenceType(setup.Config, dtype);
        var (layerGpu, layerCpu) = Layers(gpu, setup.Config, dtype, referenceType);
        using var _g = layerGpu;
        using var _c = layerCpu;
        string name = setup.Config.Variant;
        string shape = $"{setup.Label} B{setup.Batch} T{tokens}" + (referenceType == DType.F32 ? "" : $" ref {referenceType}");
        using var x = GpuPair.Of(gpu, ParityInput(setup, layerCpu, tokens, dtype), new Shape(setup.Batch, tokens, setup.Config.DModel), dtype);
        using var xReference = Backend.Cpu.FromArray(x.Cpu.ToArray(), x.Cpu.Shape, referenceType);

        using var passCpu = layerCpu.ForwardForTraining(xReference);
        using var passGpu = layerGpu.ForwardForTraining(x.Gpu);
        Parity.AssertClose($"{ParityReport.VariantTag(name, "forward")} {shape} y", dtype, passCpu.Output.Shape.ToString(), passCpu.Output.ToArray(), passGpu.Output.ToArray());

        using var dy = GpuPair.Random(gpu, GpuVariantSeeds.OutputGradient, passCpu.Output.Shape, dtype);
        using var dyReference = Backend.Cpu.FromArray(dy.Cpu.ToArray(), dy.Cpu.Shape, referenceType);
        using var gradsCpu = passCpu.Backward(dyReference);
        using var gradsGpu = passGpu.Backward(dy.Gpu);
        Assert.That(gradsGpu.Parameters.Keys, Is.EquivalentTo(gradsCpu.Parameters.Keys));
        Assert.Multiple(() =>
        {
            // The layer returns fresh gradients: each is its own contribution (a zero start).
            Parity.AssertAdded($"{ParityReport.VariantTag(name, "backward")} {shape} dx", dtype, x.Cpu.Shape.ToString(), null, gradsCpu.Input.ToArray(), gradsGpu.Input.ToArray());
            foreach (var (parameter, g) in gradsCpu.Parameters.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                Parity.AssertAdded($"{ParityReport.VariantTag(name, "backward")} {shape} d{parameter}", dtype, g.Shape.ToString(), null, g.ToArray(), gradsGpu.Parameters[parameter].ToArray());
            }
        });
    }

    /// <summary>
    /// Prefill of most of the sequence, then token-by-token decode on the GPU, against the CPU's full forward over the same tokens.
    /// With a growing cache the capacity starts small and doubles on the device; otherwise the whole length is preallocated.
    /// </summary>
    [TestCaseSource(nameof(DecodeCases))]
    public void Decode_matches_the_full_forward_on_the_cpu(DType dtype, Setup setup, bool growth)
    {
        var gpu = Requires.CudaDevice();
        var (layerGpu, layerCpu) = Layers(gpu, setup.Config, dtype);
        using var _g = layerGpu;
        using var _c = layerCpu;
        int tokens = setup.Lengths.Max(), steps = Math.Min(tokens, 6), prompt = tokens - steps, batch = setup.Batch, d = setup.Config.DModel;
        using var x = GpuPair.Random(gpu, 5, new Shape(batch, tokens, d), dtype);
        using var full = layerCpu.Forward(x.Cpu);
        var expected = full.ToArray();
        var actual = new float[expected.Length];
        var xs = x.Cpu.ToArray();
        var options = growth ? new CacheOptions(InitialCapacity: 4) : new CacheOptions(MaxLength: tokens);
        using var cache = ((CausalAttentionLayer)layerGpu).CreateCache(batch, options);

        void Step(int t0, int count)
        {
            var part = new float[batch * count * d];
            for (int b = 0; b < batch; b++)
            {
                Array.Copy(xs, ((b * tokens) + t0) * d, part, b * count * d, count * d);
            }
            using var input = gpu.FromArray(part, new Shape(batch, count, d), dtype);
            using var y = count == 1 && t0 > 0 ? cache.DecodeStep(input) : cache.Prefill(input);
            var values = y.ToArray();
            for (int b = 0; b < batch; b++)
            {
                Array.Copy(values, b * count * d, actual, ((b * tokens) + t0) * d, count * d);
            }
        }
        if (prompt > 0)
        {
            Step(0, prompt);
        }
        for (int t = prompt; t < tokens; t++)
        {
            Step(t, 1);
        }
        Assert.That(cache.Length, Is.EqualTo(tokens));
        Parity.AssertClose($"{ParityReport.VariantTag(setup.Config.Variant, "decode")} {setup.Label} B{batch} T{tokens} prompt{prompt} {(growth ? "growing" : "preallocated")}",
            dtype, full.Shape.ToString(), expected, actual);
    }
}

/// <summary>The seeds of the variant parity data (shared with the CPU check that the SAS setups are well-conditioned).</summary>
internal static class GpuVariantSeeds
{
    public const int Parameters = 17, Input = 3, OutputGradient = 4;
}

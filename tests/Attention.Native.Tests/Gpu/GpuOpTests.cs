using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>Every op, forward and backward, on the CUDA backend against the CPU reference (design.md tolerances).</summary>
[Category("Gpu")]
public class GpuOpTests
{
    private static DType[] StorageTypes => GpuPair.StorageTypes;

    private static IEnumerable<TestCaseData> LinearCases() =>
        from dtype in StorageTypes
        from dims in new[] { (1, 1, 1), (7, 33, 65), (129, 64, 128), (1000, 256, 512), (3, 2048, 2048) }
        from bias in new[] { true, false }
        select new TestCaseData(dtype, dims.Item1, dims.Item2, dims.Item3, bias);

    [TestCaseSource(nameof(LinearCases))]
    public void Linear_forward_and_backward(DType dtype, int m, int n, int k, bool withBias)
    {
        var gpu = Requires.CudaDevice();
        string tag = $"linear m{m} n{n} k{k} bias={withBias}";
        using var x = GpuPair.Random(gpu, 1, new Shape(m, k), dtype);
        using var w = GpuPair.Random(gpu, 2, new Shape(n, k), dtype, 1.0 / Math.Sqrt(k));
        using var b = GpuPair.Random(gpu, 3, new Shape(n), dtype);
        using var y = GpuPair.Random(gpu, 4, new Shape(m, n), dtype);
        Linear.Forward(x.Cpu, w.Cpu, withBias ? b.Cpu : null, y.Cpu);
        Linear.Forward(x.Gpu, w.Gpu, withBias ? b.Gpu : null, y.Gpu);
        y.Compare(tag + " forward", dtype);

        foreach (bool accumulate in new[] { false, true })
        {
            // Without accumulate the GPU's starting values are garbage it must overwrite.
            using var dy = GpuPair.Random(gpu, 5, new Shape(m, n), dtype);
            using var dx = GradientPair.Zeros(gpu, 6, new Shape(m, k), dtype);
            using var dw = GradientPair.Zeros(gpu, 7, new Shape(n, k), dtype);
            using var db = GradientPair.Zeros(gpu, 8, new Shape(n), dtype);
            Linear.Backward(x.Cpu, w.Cpu, dy.Cpu, dx.Cpu, dw.Cpu, withBias ? db.Cpu : null, accumulate);
            GradientPair.Start(accumulate, dx, dw, db);
            Linear.Backward(x.Gpu, w.Gpu, dy.Gpu, dx.Gpu, dw.Gpu, withBias ? db.Gpu : null, accumulate);
            dx.Compare($"{tag} dx accumulate={accumulate}", dtype);
            dw.Compare($"{tag} dweight accumulate={accumulate}", dtype);
            if (withBias)
            {
                db.Compare($"{tag} dbias accumulate={accumulate}", dtype);
            }
        }
    }

    private static IEnumerable<TestCaseData> RopeCases()
    {
        var shapes = new[] { new Shape(1, 1, 1, 8), new Shape(2, 7, 3, 64), new Shape(1, 129, 4, 128), new Shape(1, 1000, 2, 256), new Shape(2, 5, 16) };
        foreach (var dtype in StorageTypes)
        {
            foreach (var shape in shapes)
            {
                yield return new TestCaseData(dtype, shape, new RopeOptions(RopeStyle.Half), 0);
                yield return new TestCaseData(dtype, shape, new RopeOptions(RopeStyle.Interleaved, 500), 32000);
            }
            yield return new TestCaseData(dtype, new Shape(2, 9, 4, 24), new RopeOptions(RopeStyle.Interleaved, RotaryOffset: 16, RotaryDim: 8), 3);
            yield return new TestCaseData(dtype, new Shape(1, 33, 2, 192), new RopeOptions(RopeStyle.Half, RotaryOffset: 128, RotaryDim: 64), 0);
            // YaRN (variants.md "RoPE scaling"): DeepSeek-V3's values on MLA's q_pe and k_pe widths past L0; the default mscales
            // (amplitude 1.37) on 300 pairs (more than the block's threads) at 10^5.
            var deepSeekV3 = new RopeScaling(40, 4096, BetaFast: 32, BetaSlow: 1, MScale: 1, MScaleAllDim: 1);
            yield return new TestCaseData(dtype, new Shape(2, 9, 16, 192), new RopeOptions(RopeStyle.Interleaved, RotaryOffset: 128, Scaling: deepSeekV3), 5000);
            yield return new TestCaseData(dtype, new Shape(2, 129, 64), new RopeOptions(RopeStyle.Interleaved, Scaling: deepSeekV3), 163000);
            yield return new TestCaseData(dtype, new Shape(1, 7, 2, 600), new RopeOptions(RopeStyle.Half, Scaling: new RopeScaling(40, 4096)), 100000);
        }
    }

    [TestCaseSource(nameof(RopeCases))]
    public void Rope_forward_and_backward(DType dtype, Shape shape, RopeOptions options, int positionOffset)
    {
        var gpu = Requires.CudaDevice();
        string tag = $"rope {options.Style} off{options.RotaryOffset} dim{options.RotaryDim} pos{positionOffset}{(options.Scaling is { } yarn ? $" yarn{yarn.Factor}/{yarn.OriginalMaxPositions}/{yarn.MScale}/{yarn.MScaleAllDim}" : "")}";
        using var x = GpuPair.Random(gpu, 11, shape, dtype);
        using var y = GpuPair.Random(gpu, 12, shape, dtype);
        Rope.Forward(x.Cpu, y.Cpu, options, positionOffset);
        Rope.Forward(x.Gpu, y.Gpu, options, positionOffset);
        y.Compare(tag + " forward", dtype);

        using var dx = GradientPair.Zeros(gpu, 13, shape, dtype);
        Rope.Backward(y.Cpu, dx.Cpu, options, positionOffset);
        dx.Start(adds: false); // the backward writes dx
        Rope.Backward(y.Gpu, dx.Gpu, options, positionOffset);
        dx.Compare(tag + " backward", dtype);

        // In place on both backends.
        Rope.Forward(x.Cpu, x.Cpu, options, positionOffset);
        Rope.Forward(x.Gpu, x.Gpu, options, positionOffset);
        x.Compare(tag + " forward in place", dtype);
    }

    private static IEnumerable<TestCaseData> RmsNormCases() =>
        from dtype in StorageTypes
        from shape in new[] { new Shape(1, 1), new Shape(7, 33), new Shape(2, 129, 512), new Shape(1000, 2048), new Shape(3, 8192) }
        from gain in new[] { true, false }
        select new TestCaseData(dtype, shape, gain);

    [TestCaseSource(nameof(RmsNormCases))]
    public void RmsNorm_forward_and_backward(DType dtype, Shape shape, bool withGain)
    {
        var gpu = Requires.CudaDevice();
        string tag = $"rmsnorm gain={withGain}";
        int n = shape[-1];
        using var x = GpuPair.Random(gpu, 21, shape, dtype);
        using var g = GpuPair.Random(gpu, 22, new Shape(n), dtype);
        using var y = GpuPair.Random(gpu, 23, shape, dtype);
        RmsNorm.Forward(x.Cpu, withGain ? g.Cpu : null, y.Cpu);
        RmsNorm.Forward(x.Gpu, withGain ? g.Gpu : null, y.Gpu);
        y.Compare(tag + " forward", dtype);

        foreach (bool accumulate in new[] { false, true })
        {
            using var dy = GpuPair.Random(gpu, 24, shape, dtype);
            using var dx = GradientPair.Zeros(gpu, 25, shape, dtype);
            using var dg = GradientPair.Zeros(gpu, 26, new Shape(n), dtype);
            RmsNorm.Backward(x.Cpu, withGain ? g.Cpu : null, dy.Cpu, dx.Cpu, withGain ? dg.Cpu : null, accumulate: accumulate);
            GradientPair.Start(accumulate, dx, dg);
            RmsNorm.Backward(x.Gpu, withGain ? g.Gpu : null, dy.Gpu, dx.Gpu, withGain ? dg.Gpu : null, accumulate: accumulate);
            dx.Compare($"{tag} dx accumulate={accumulate}", dtype);
            if (withGain)
            {
                dg.Compare($"{tag} dgain accumulate={accumulate}", dtype);
            }
        }
    }

    [Test]
    public void Ops_reject_tensors_from_another_backend()
    {
        var gpu = Requires.CudaDevice();
        using var x = gpu.Zeros(new Shape(2, 4));
        using var w = Backend.Cpu.Zeros(new Shape(3, 4));
        var e = Assert.Throws<ArgumentException>(() => Linear.Forward(x, w));
        Assert.That(e!.Message, Does.Contain("weight").And.Contain("cpu"));
        using var f64 = Backend.Cpu.Zeros(new Shape(2), DType.F64);
        Assert.Throws<ArgumentException>(() => gpu.Zeros(new Shape(2), DType.F64));
    }
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// The ops the variants are built from (besides Linear, RoPE, RMSNorm and softmax attention), forward and every backward
/// gradient, on the CUDA backend against the CPU reference in each storage type. Gradients are checked by what the backward
/// adds (<see cref="GradientPair"/>).
/// </summary>
[Category("Gpu")]
public class GpuLayerOpTests
{
    private static IEnumerable<TestCaseData> With<T>(IEnumerable<T> shapes, string name) =>
        from dtype in GpuPair.StorageTypes
        from s in shapes
        select new TestCaseData(dtype, s).SetName($"{name} {dtype} {s}");

    // ---- Pointwise ----------------------------------------------------------------------------------------------

    private static IEnumerable<TestCaseData> PointwiseCases() =>
        from dtype in GpuPair.StorageTypes
        from op in Enum.GetValues<PointwiseOp>()
        from shape in new[] { new Shape(1, 1), new Shape(7, 33), new Shape(2, 129, 128), new Shape(1000, 256) }
        select new TestCaseData(dtype, op, shape).SetName($"Pointwise {op} {dtype} {shape}");

    [TestCaseSource(nameof(PointwiseCases))]
    public void Pointwise_forward_and_backward(DType dtype, PointwiseOp op, Shape shape)
    {
        var gpu = Requires.CudaDevice();
        using var a = GpuPair.Random(gpu, 1, shape, dtype);
        // Add broadcasts b over the trailing axis; Multiply takes a full b.
        var bShape = op == PointwiseOp.Add ? new Shape(shape[-1]) : shape;
        using var b = op is PointwiseOp.Add or PointwiseOp.Multiply ? GpuPair.Random(gpu, 2, bShape, dtype) : null;
        using var y = GpuPair.Wrap(Pointwise.Forward(op, a.Cpu, b?.Cpu, 0.7), Pointwise.Forward(op, a.Gpu, b?.Gpu, 0.7));
        y.Compare($"pointwise {op} forward", dtype);
        using var dy = GpuPair.Random(gpu, 3, shape, dtype);
        using var da = GradientPair.Zeros(gpu, 4, shape, dtype);
        using var db = b is null ? null : GradientPair.Zeros(gpu, 5, bShape, dtype);
        Pointwise.Backward(op, a.Cpu, b?.Cpu, dy.Cpu, da.Cpu, db?.Cpu, 0.7);
        GradientPair.Start(true, da, db);
        Pointwise.Backward(op, a.Gpu, b?.Gpu, dy.Gpu, da.Gpu, db?.Gpu, 0.7);
        da.Compare($"pointwise {op} da", dtype);
        db?.Compare($"pointwise {op} db", dtype);
    }

    // ---- Columns --------------------------------------------------------------------------------------------------

    private static IEnumerable<TestCaseData> ColumnsCases() => With(new[] { (1, 1), (7, 1), (129, 2), (1000, 3) }, "Columns");

    [TestCaseSource(nameof(ColumnsCases))]
    public void Columns_copy_and_backward(DType dtype, (int Rows, int Repeat) c)
    {
        var gpu = Requires.CudaDevice();
        using var src = GpuPair.Random(gpu, 11, new Shape(c.Rows, 48), dtype);
        foreach (bool accumulate in new[] { false, true })
        {
            using var dst = GpuPair.Random(gpu, 12, new Shape(c.Rows * c.Repeat, 100), dtype);
            Columns.Copy(src.Cpu, 8, dst.Cpu, 20, 32, accumulate);
            Columns.Copy(src.Gpu, 8, dst.Gpu, 20, 32, accumulate);
            dst.Compare($"columns copy repeat={c.Repeat} accumulate={accumulate}", dtype);
        }
        using var ddst = GpuPair.Random(gpu, 13, new Shape(c.Rows * c.Repeat, 100), dtype);
        using var dsrc = GradientPair.Zeros(gpu, 14, new Shape(c.Rows, 48), dtype);
        Columns.CopyBackward(ddst.Cpu, 20, dsrc.Cpu, 8, 32);
        GradientPair.Start(true, dsrc);
        Columns.CopyBackward(ddst.Gpu, 20, dsrc.Gpu, 8, 32);
        dsrc.Compare($"columns backward repeat={c.Repeat}", dtype);
    }

    // ---- Lrpe -----------------------------------------------------------------------------------------------------

    private static IEnumerable<TestCaseData> LrpeCases() =>
        With(new[] { (new Shape(1, 1, 1, 8), 0), (new Shape(2, 7, 4, 16), 3), (new Shape(1, 129, 2, 128), 0), (new Shape(1, 1000, 2, 32), 5000), (new Shape(1, 7, 2, 256), 0) }, "Lrpe");

    [TestCaseSource(nameof(LrpeCases))]
    public void Lrpe_forward_and_backward(DType dtype, (Shape Shape, int Offset) c)
    {
        var gpu = Requires.CudaDevice();
        var s = c.Shape;
        using var x = GpuPair.Random(gpu, 21, s, dtype);
        using var theta = GpuPair.Uniform(gpu, 22, new Shape(s[2], s[3]), dtype, 0.0, 1.0);
        using var y = GpuPair.Wrap(Lrpe.Forward(x.Cpu, theta.Cpu, c.Offset), Lrpe.Forward(x.Gpu, theta.Gpu, c.Offset));
        y.Compare($"lrpe forward offset={c.Offset}", dtype);
        // dθ sums (t + offset)·x·dy over the tokens: at offset 5000 it reaches ~5e5, past F16's largest finite value (65504),
        // so for F16 the upstream gradient is scaled by 1/16 (exact in binary) to keep the result representable.
        double dyScale = dtype == DType.F16 && c.Offset > 0 ? 1.0 / 16 : 1.0;
        using var dy = GpuPair.Random(gpu, 23, y.Cpu.Shape, dtype, dyScale);
        using var dx = GradientPair.Zeros(gpu, 24, s, dtype);
        using var dtheta = GradientPair.Zeros(gpu, 25, theta.Cpu.Shape, dtype);
        Lrpe.Backward(x.Cpu, theta.Cpu, dy.Cpu, dx.Cpu, dtheta.Cpu, c.Offset);
        GradientPair.Start(true, dx, dtheta);
        Lrpe.Backward(x.Gpu, theta.Gpu, dy.Gpu, dx.Gpu, dtheta.Gpu, c.Offset);
        dx.Compare($"lrpe dx offset={c.Offset}", dtype);
        dtheta.Compare($"lrpe dtheta offset={c.Offset}", dtype);
    }

    // ---- FocusingMap ------------------------------------------------------------------------------------------------

    private static IEnumerable<TestCaseData> FocusingCases() => With(new[] { new Shape(1, 8), new Shape(7, 32), new Shape(2, 129, 128), new Shape(1000, 64), new Shape(3, 256) }, "FocusingMap");

    [TestCaseSource(nameof(FocusingCases))]
    public void FocusingMap_forward_and_backward(DType dtype, Shape shape)
    {
        var gpu = Requires.CudaDevice();
        int channels = shape[-1];
        using var x = GpuPair.Random(gpu, 31, shape, dtype);
        using var scale = GpuPair.Random(gpu, 32, new Shape(channels), dtype);
        using var y = GpuPair.Zeros(gpu, shape, dtype);
        FocusingMap.Forward(x.Cpu, scale.Cpu, 3, y.Cpu);
        FocusingMap.Forward(x.Gpu, scale.Gpu, 3, y.Gpu);
        y.Compare("focusing map forward", dtype);
        using var dy = GpuPair.Random(gpu, 33, shape, dtype);
        using var dx = GradientPair.Zeros(gpu, 34, shape, dtype);
        using var dscale = GradientPair.Zeros(gpu, 35, new Shape(channels), dtype);
        FocusingMap.Backward(x.Cpu, scale.Cpu, 3, dy.Cpu, dx.Cpu, dscale.Cpu);
        GradientPair.Start(true, dx, dscale);
        FocusingMap.Backward(x.Gpu, scale.Gpu, 3, dy.Gpu, dx.Gpu, dscale.Gpu);
        dx.Compare("focusing map dx", dtype);
        dscale.Compare("focusing map dscale", dtype);
    }

    // ---- DepthwiseConv ----------------------------------------------------------------------------------------------

    private static IEnumerable<TestCaseData> DepthwiseCases() =>
        With(new[] { (new Shape(1, 1, 8), 8, 3), (new Shape(2, 7, 64), 64, 3), (new Shape(1, 129, 256), 32, 5), (new Shape(1, 1000, 128), 128, 3) }, "DepthwiseConv");

    [TestCaseSource(nameof(DepthwiseCases))]
    public void DepthwiseConv_forward_and_backward(DType dtype, (Shape Shape, int Filters, int Kernel) c)
    {
        var gpu = Requires.CudaDevice();
        using var x = GpuPair.Random(gpu, 41, c.Shape, dtype);
        using var w = GpuPair.Random(gpu, 42, new Shape(c.Filters, 1, c.Kernel), dtype, 0.5);
        using var bias = GpuPair.Random(gpu, 43, new Shape(c.Filters), dtype);
        using var y = GpuPair.Zeros(gpu, c.Shape, dtype);
        DepthwiseConv.Forward(x.Cpu, w.Cpu, bias.Cpu, y.Cpu);
        DepthwiseConv.Forward(x.Gpu, w.Gpu, bias.Gpu, y.Gpu);
        y.Compare($"depthwise conv forward filters={c.Filters} k={c.Kernel}", dtype);
        using var dy = GpuPair.Random(gpu, 44, c.Shape, dtype);
        using var dx = GradientPair.Zeros(gpu, 45, c.Shape, dtype);
        using var dw = GradientPair.Zeros(gpu, 46, w.Cpu.Shape, dtype);
        using var db = GradientPair.Zeros(gpu, 47, bias.Cpu.Shape, dtype);
        DepthwiseConv.Backward(x.Cpu, w.Cpu, dy.Cpu, dx.Cpu, dw.Cpu, db.Cpu);
        GradientPair.Start(true, dx, dw, db);
        DepthwiseConv.Backward(x.Gpu, w.Gpu, dy.Gpu, dx.Gpu, dw.Gpu, db.Gpu);
        dx.Compare($"depthwise conv dx filters={c.Filters}", dtype);
        dw.Compare($"depthwise conv dweight filters={c.Filters}", dtype);
        db.Compare($"depthwise conv dbias filters={c.Filters}", dtype);
    }

    // The 2-D form: x [B, H, W, C], weight [Cw, 1, kh, kw]; stage-1 shapes (56×56 tokens, C 64, agent's 3×3 per channel,
    // flatten's 5×5 shared by two heads), an H×1 grid with kh ≠ kw, one token.
    private static IEnumerable<TestCaseData> Depthwise2dCases() =>
        With(new[] { (new Shape(1, 1, 1, 8), 8, 3, 3), (new Shape(2, 7, 5, 64), 64, 3, 3), (new Shape(2, 56, 56, 64), 64, 3, 3), (new Shape(1, 56, 56, 64), 32, 5, 5), (new Shape(3, 9, 1, 16), 16, 3, 5) }, "DepthwiseConv2d");

    [TestCaseSource(nameof(Depthwise2dCases))]
    public void DepthwiseConv2d_forward_and_backward(DType dtype, (Shape Shape, int Filters, int KernelH, int KernelW) c)
    {
        var gpu = Requires.CudaDevice();
        using var x = GpuPair.Random(gpu, 61, c.Shape, dtype);
        using var w = GpuPair.Random(gpu, 62, new Shape(c.Filters, 1, c.KernelH, c.KernelW), dtype, 0.3);
        using var bias = GpuPair.Random(gpu, 63, new Shape(c.Filters), dtype);
        using var y = GpuPair.Zeros(gpu, c.Shape, dtype);
        DepthwiseConv.Forward(x.Cpu, w.Cpu, bias.Cpu, y.Cpu);
        DepthwiseConv.Forward(x.Gpu, w.Gpu, bias.Gpu, y.Gpu);
        y.Compare($"depthwise conv2d forward filters={c.Filters} k={c.KernelH}x{c.KernelW}", dtype);
        using var dy = GpuPair.Random(gpu, 64, c.Shape, dtype);
        using var dx = GradientPair.Zeros(gpu, 65, c.Shape, dtype);
        using var dw = GradientPair.Zeros(gpu, 66, w.Cpu.Shape, dtype);
        using var db = GradientPair.Zeros(gpu, 67, bias.Cpu.Shape, dtype);
        DepthwiseConv.Backward(x.Cpu, w.Cpu, dy.Cpu, dx.Cpu, dw.Cpu, db.Cpu);
        GradientPair.Start(true, dx, dw, db);
        DepthwiseConv.Backward(x.Gpu, w.Gpu, dy.Gpu, dx.Gpu, dw.Gpu, db.Gpu);
        dx.Compare($"depthwise conv2d dx filters={c.Filters} k={c.KernelH}x{c.KernelW}", dtype);
        dw.Compare($"depthwise conv2d dweight filters={c.Filters} k={c.KernelH}x{c.KernelW}", dtype);
        db.Compare($"depthwise conv2d dbias filters={c.Filters} k={c.KernelH}x{c.KernelW}", dtype);
    }

    // ---- AdaptivePool -----------------------------------------------------------------------------------------------

    private static IEnumerable<TestCaseData> PoolCases() =>
        With(new[] { (new Shape(1, 1, 8), 4), (new Shape(2, 7, 16), 4), (new Shape(1, 5, 8), 7), (new Shape(1, 129, 32), 49), (new Shape(1, 1000, 64), 49) }, "AdaptivePool");

    [TestCaseSource(nameof(PoolCases))]
    public void AdaptivePool_forward_and_backward(DType dtype, (Shape Shape, int Outputs) c)
    {
        var gpu = Requires.CudaDevice();
        using var x = GpuPair.Random(gpu, 51, c.Shape, dtype);
        using var y = GpuPair.Wrap(AdaptivePool.Forward(x.Cpu, c.Outputs), AdaptivePool.Forward(x.Gpu, c.Outputs));
        y.Compare($"adaptive pool forward n={c.Outputs}", dtype);
        using var dy = GpuPair.Random(gpu, 52, y.Cpu.Shape, dtype);
        using var dx = GradientPair.Zeros(gpu, 53, c.Shape, dtype);
        AdaptivePool.Backward(dy.Cpu, dx.Cpu);
        GradientPair.Start(true, dx);
        AdaptivePool.Backward(dy.Gpu, dx.Gpu);
        dx.Compare($"adaptive pool dx n={c.Outputs}", dtype);
    }

    // ---- GridResize -------------------------------------------------------------------------------------------------

    // (B, inH, inW, outH, outW, C): ×2 up, ÷2 down (PVT's reduction), the identity, 1-D linear, a column replicated, ×4 up on
    // a grid with more elements than the launch has threads.
    private static IEnumerable<TestCaseData> GridResizeCases() =>
        With(new[] { (2, 2, 2, 4, 4, 8), (2, 14, 14, 7, 7, 32), (1, 6, 5, 6, 5, 16), (2, 1, 49, 1, 196, 8), (1, 7, 1, 7, 9, 4), (1, 28, 28, 112, 112, 64) }, "GridResize");

    [TestCaseSource(nameof(GridResizeCases))]
    public void GridResize_forward_and_backward(DType dtype, (int B, int InH, int InW, int OutH, int OutW, int C) c)
    {
        var gpu = Requires.CudaDevice();
        var xs = new Shape(c.B, c.InH * c.InW, c.C);
        using var x = GpuPair.Random(gpu, 54, xs, dtype);
        using var y = GpuPair.Wrap(GridResize.Forward(x.Cpu, c.InH, c.InW, c.OutH, c.OutW), GridResize.Forward(x.Gpu, c.InH, c.InW, c.OutH, c.OutW));
        y.Compare($"grid resize forward {c.InH}×{c.InW} → {c.OutH}×{c.OutW}", dtype);
        using var dy = GpuPair.Random(gpu, 55, y.Cpu.Shape, dtype);
        using var dx = GradientPair.Zeros(gpu, 56, xs, dtype);
        GridResize.Backward(dy.Cpu, c.OutH, c.OutW, dx.Cpu, c.InH, c.InW);
        GradientPair.Start(true, dx);
        GridResize.Backward(dy.Gpu, c.OutH, c.OutW, dx.Gpu, c.InH, c.InW);
        dx.Compare($"grid resize dx {c.InH}×{c.InW} → {c.OutH}×{c.OutW}", dtype);
    }

    // ---- Permute ----------------------------------------------------------------------------------------------------

    // Rank 1, a transpose, the head split [B, T, h, d] → [B, h, T, d], six axes shuffled, and more elements than threads.
    private static IEnumerable<TestCaseData> PermuteCases() =>
        from dtype in GpuPair.StorageTypes
        from c in new[] { (new Shape(37), new[] { 0 }), (new Shape(7, 33), new[] { 1, 0 }), (new Shape(2, 129, 4, 32), new[] { 0, 2, 1, 3 }), (new Shape(2, 3, 5, 7, 2, 3), new[] { 5, 3, 1, 0, 2, 4 }), (new Shape(2, 1000, 64), new[] { 0, 2, 1 }) }
        select new TestCaseData(dtype, c).SetName($"Permute {dtype} {c.Item1} [{string.Join(", ", c.Item2)}]");

    [TestCaseSource(nameof(PermuteCases))]
    public void Permute_forward_and_backward(DType dtype, (Shape Shape, int[] Permutation) c)
    {
        var gpu = Requires.CudaDevice();
        using var x = GpuPair.Random(gpu, 57, c.Shape, dtype);
        using var y = GpuPair.Wrap(Permute.Forward(x.Cpu, c.Permutation), Permute.Forward(x.Gpu, c.Permutation));
        y.Compare($"permute forward [{string.Join(", ", c.Permutation)}]", dtype);
        using var dy = GpuPair.Random(gpu, 58, y.Cpu.Shape, dtype);
        using var dx = GradientPair.Zeros(gpu, 59, c.Shape, dtype);
        Permute.Backward(dy.Cpu, c.Permutation, dx.Cpu);
        GradientPair.Start(true, dx);
        Permute.Backward(dy.Gpu, c.Permutation, dx.Gpu);
        dx.Compare($"permute dx [{string.Join(", ", c.Permutation)}]", dtype);
    }

    // ---- HeadConv ---------------------------------------------------------------------------------------------------

    private static IEnumerable<TestCaseData> HeadConvCases() =>
        With(new[] { (new Shape(1, 2, 8), 4, 3), (new Shape(7, 4, 32), 8, 3), (new Shape(129, 8, 128), 16, 3), (new Shape(1000, 4, 64), 8, 5) }, "HeadConv");

    [TestCaseSource(nameof(HeadConvCases))]
    public void HeadConv_forward_and_backward(DType dtype, (Shape Shape, int Out, int Kernel) c)
    {
        var gpu = Requires.CudaDevice();
        var s = c.Shape;
        var yShape = new Shape(s[0], c.Out, s[2]);
        using var x = GpuPair.Random(gpu, 61, s, dtype);
        using var w = GpuPair.Random(gpu, 62, new Shape(c.Out, s[1], c.Kernel), dtype, 0.5);
        using var bias = GpuPair.Random(gpu, 63, new Shape(c.Out), dtype);
        using var y = GpuPair.Zeros(gpu, yShape, dtype);
        HeadConv.Forward(x.Cpu, w.Cpu, bias.Cpu, y.Cpu);
        HeadConv.Forward(x.Gpu, w.Gpu, bias.Gpu, y.Gpu);
        y.Compare($"head conv forward out={c.Out} k={c.Kernel}", dtype);
        using var dy = GpuPair.Random(gpu, 64, yShape, dtype);
        using var dx = GradientPair.Zeros(gpu, 65, s, dtype);
        using var dw = GradientPair.Zeros(gpu, 66, w.Cpu.Shape, dtype);
        using var db = GradientPair.Zeros(gpu, 67, bias.Cpu.Shape, dtype);
        HeadConv.Backward(x.Cpu, w.Cpu, dy.Cpu, dx.Cpu, dw.Cpu, db.Cpu);
        GradientPair.Start(true, dx, dw, db);
        HeadConv.Backward(x.Gpu, w.Gpu, dy.Gpu, dx.Gpu, dw.Gpu, db.Gpu);
        dx.Compare($"head conv dx out={c.Out}", dtype);
        dw.Compare($"head conv dweight out={c.Out}", dtype);
        db.Compare($"head conv dbias out={c.Out}", dtype);
    }

    // ---- TpaContraction ---------------------------------------------------------------------------------------------

    private static IEnumerable<TestCaseData> TpaCases() =>
        With(new[] { (1, 1, 2, 2, 8), (2, 7, 4, 6, 32), (1, 129, 8, 2, 128), (1, 1000, 4, 2, 256) }, "TpaContraction");

    [TestCaseSource(nameof(TpaCases))]
    public void TpaContraction_forward_and_backward(DType dtype, (int B, int T, int H, int R, int D) c)
    {
        var gpu = Requires.CudaDevice();
        using var a = GpuPair.Random(gpu, 71, new Shape(c.B, c.T, c.H, c.R), dtype);
        using var f = GpuPair.Random(gpu, 72, new Shape(c.B, c.T, c.R, c.D), dtype);
        var yShape = new Shape(c.B, c.T, c.H, c.D);
        using var y = GpuPair.Zeros(gpu, yShape, dtype);
        TpaContraction.Forward(a.Cpu, f.Cpu, y.Cpu);
        TpaContraction.Forward(a.Gpu, f.Gpu, y.Gpu);
        y.Compare($"tpa contraction forward R={c.R} d={c.D}", dtype);
        using var dy = GpuPair.Random(gpu, 73, yShape, dtype);
        using var da = GradientPair.Zeros(gpu, 74, a.Cpu.Shape, dtype);
        using var df = GradientPair.Zeros(gpu, 75, f.Cpu.Shape, dtype);
        TpaContraction.Backward(a.Cpu, f.Cpu, dy.Cpu, da.Cpu, df.Cpu);
        GradientPair.Start(true, da, df);
        TpaContraction.Backward(a.Gpu, f.Gpu, dy.Gpu, da.Gpu, df.Gpu);
        da.Compare($"tpa contraction da R={c.R}", dtype);
        df.Compare($"tpa contraction df R={c.R}", dtype);
    }
}

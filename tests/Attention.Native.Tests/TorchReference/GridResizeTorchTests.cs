using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using TorchSharp;

namespace Attention.Native.Tests.TorchReference;

using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using TorchTensor = TorchSharp.torch.Tensor;

/// <summary>
/// <see cref="GridResize"/> against torch's <c>nn.functional.interpolate</c> (bilinear, and linear for 1×T grids,
/// align_corners false) on the token grid viewed as an image, forward and the input gradient of torch's autograd.
/// </summary>
public class GridResizeTorchTests : TorchReferenceFixture
{
    private static ScalarType Scalar(DType dtype) => dtype == DType.F64 ? ScalarType.Float64 : ScalarType.Float32;

    private static double[] Values(TorchTensor t) => t.detach().to(ScalarType.Float64).contiguous().data<double>().ToArray();

    // (B, inH, inW, outH, outW, C): up, down, up on one axis and down on the other, the identity, ÷2, 1-D (1×T).
    [TestCase(2, 2, 2, 4, 4, 3, DType.F64)]
    [TestCase(1, 5, 7, 3, 4, 2, DType.F64)]
    [TestCase(2, 9, 13, 17, 5, 3, DType.F64)]
    [TestCase(1, 6, 5, 6, 5, 2, DType.F64)]
    [TestCase(1, 14, 14, 7, 7, 4, DType.F64)]
    [TestCase(2, 1, 7, 1, 19, 3, DType.F64)]
    [TestCase(2, 9, 13, 17, 5, 3, DType.F32)]
    [TestCase(2, 1, 7, 1, 19, 3, DType.F32)]
    public void Grid_resize_equals_torch_interpolate(int batch, int inH, int inW, int outH, int outW, int channels, DType dtype)
    {
        var x = TestData.Normal(91, batch * inH * inW * channels);
        var dy = TestData.Normal(92, batch * outH * outW * channels);
        using var scope = torch.NewDisposeScope();
        // Made in float64 and converted, then marked: the leaf whose gradient autograd fills.
        var tx = torch.tensor(x, [batch, inH, inW, channels], ScalarType.Float64).to(Scalar(dtype)).requires_grad_(true);
        // The grid as an image [B, C, H, W] (a 1×T grid as a sequence [B, C, T] for mode 'linear'), back to channels-last.
        var ty = inH == 1 && outH == 1
            ? F.interpolate(tx.reshape(batch, inW, channels).transpose(1, 2), [outW], mode: InterpolationMode.Linear, align_corners: false).transpose(1, 2)
            : F.interpolate(tx.permute(0, 3, 1, 2), [outH, outW], mode: InterpolationMode.Bilinear, align_corners: false).permute(0, 2, 3, 1);
        ty = ty.reshape(batch, outH * outW, channels);
        ty.backward([torch.tensor(dy, [batch, outH * outW, channels], ScalarType.Float64).to(Scalar(dtype))]);

        using var ours = Backend.Cpu.FromArray(x, new Shape(batch, inH * inW, channels), dtype);
        using var y = GridResize.Forward(ours, inH, inW, outH, outW);
        using var tdy = Backend.Cpu.FromArray(dy, new Shape(batch, outH * outW, channels), dtype);
        using var dx = Backend.Cpu.Zeros(ours.Shape, dtype);
        GridResize.Backward(tdy, outH, outW, dx, inH, inW);
        // A handful of operations per value on both sides: F64 agrees to rounding, F32 to a few ulps of values of order 1.
        double tolerance = dtype == DType.F64 ? 1e-12 : 1e-5;
        Assert.That(y.ToDoubleArray(), Is.EqualTo(Values(ty)).Within(tolerance), "y");
        Assert.That(dx.ToDoubleArray(), Is.EqualTo(Values(tx.grad!)).Within(tolerance), "dx");
    }
}

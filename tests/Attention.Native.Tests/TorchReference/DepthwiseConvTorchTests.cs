using Attention.Native.Tests.Support;
using DepthwiseConv = Attention.Native.Ops.DepthwiseConv;

namespace Attention.Native.Tests.TorchReference;

using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

/// <summary>
/// The 2-D form of <see cref="DepthwiseConv"/> against torch's conv2d with groups = channels in float64 (the vision forms'
/// DWConv_k, vision-forms.md §0): forward and the three gradients by autograd. Float64 only: libtorch's float32
/// convolutions are not trusted here (TorchKit.Conv1d says why).
/// </summary>
public class DepthwiseConvTorchTests : TorchReferenceFixture
{
    // (B, H, W, heads, d, kh, kw): the filters [d, 1, kh, kw] are shared by the heads (C = heads·d); one head is agent's
    // Conv2d(C, C, k, padding=k//2, groups=C).
    [TestCase(2, 7, 5, 1, 6, 3, 3)]
    [TestCase(1, 6, 6, 2, 4, 5, 5)]
    [TestCase(2, 4, 9, 3, 2, 3, 5)]
    public void Equals_torch_conv2d_with_groups(int batch, int height, int width, int heads, int d, int kh, int kw)
    {
        int channels = heads * d;
        var xs = new Shape(batch, height, width, channels);
        var ws = new Shape(d, 1, kh, kw);
        var x = TestData.Normal(91, xs.ElementCount);
        var w = TestData.Normal(92, ws.ElementCount);
        var b = TestData.Normal(93, d);
        var dy = TestData.Normal(94, xs.ElementCount);

        using var scope = NewDisposeScope();
        var tx = tensor(x, [batch, height, width, channels], ScalarType.Float64, requires_grad: true);
        var tw = tensor(w, [d, 1, kh, kw], ScalarType.Float64, requires_grad: true);
        var tb = tensor(b, [d], ScalarType.Float64, requires_grad: true);
        // Channels-last tokens → one d-channel image per (batch, head): [B·heads, d, H, W].
        var images = tx.reshape(batch, height, width, heads, d).permute(0, 3, 4, 1, 2).reshape(batch * heads, d, height, width);
        var conv = F.conv2d(images, tw, tb, padding: [kh / 2, kw / 2], groups: d);
        var ty = conv.reshape(batch, heads, d, height, width).permute(0, 3, 4, 1, 2).reshape(batch, height, width, channels);
        ty.backward([tensor(dy, [batch, height, width, channels], ScalarType.Float64)]);

        var cpu = Backend.Cpu;
        using var ox = cpu.FromArray(x, xs, DType.F64);
        using var ow = cpu.FromArray(w, ws, DType.F64);
        using var ob = cpu.FromArray(b, new Shape(d), DType.F64);
        using var ody = cpu.FromArray(dy, xs, DType.F64);
        using var oy = DepthwiseConv.Forward(ox, ow, ob);
        using var dx = cpu.Zeros(xs, DType.F64);
        using var dw = cpu.Zeros(ws, DType.F64);
        using var db = cpu.Zeros(new Shape(d), DType.F64);
        DepthwiseConv.Backward(ox, ow, ody, dx, dw, db);

        static double[] Values(Tensor t) => t.detach().contiguous().data<double>().ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(oy.ToDoubleArray(), Is.EqualTo(Values(ty)).Within(1e-12), "y");
            Assert.That(dx.ToDoubleArray(), Is.EqualTo(Values(tx.grad!)).Within(1e-12), "dx");
            Assert.That(dw.ToDoubleArray(), Is.EqualTo(Values(tw.grad!)).Within(1e-11), "dweight");
            Assert.That(db.ToDoubleArray(), Is.EqualTo(Values(tb.grad!)).Within(1e-11), "dbias");
        });
    }
}

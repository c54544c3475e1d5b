using Attention.Native.Tests.Support;
using Attention.Native.Tests.TorchReference;
using TorchSharp;

namespace Attention.Native.Tests.Variants.Vision;

using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

/// <summary>
/// Makes the torch references of the Swin and DeiT modules (<see cref="VisionTorchReferenceWindows"/>) trustworthy: a Swin module
/// on one window is the PVT module (without reduction, q and kv cut from qkv's rows) on that grid, and both references' autograd
/// gradients agree with central finite differences.
/// </summary>
public class VisionWindowReferenceTests : TorchReferenceFixture
{
    private const int Batch = 2;

    [Test]
    public void Agent_swin_reference_on_a_window_is_the_pvt_reference()
    {
        var swin = new AgentSwinConfig(16, 2, 4, 5);
        var pvt = new AgentPvtConfig(16, 2, 4, 5, 5, QkvBias: true);
        var w = VisionTorchReference.Draw(VisionTorchReferenceWindows.Parameters(swin), seed: 101);
        var x = TestData.Normal(102, Batch * 25 * 16);
        using var scope = torch.NewDisposeScope();
        var ySwin = VisionTorchReferenceWindows.AgentSwin(swin, Leaves(VisionTorchReferenceWindows.Parameters(swin), w), Input(x, 25, 16));
        var yPvt = VisionTorchReference.AgentPvt(pvt, Leaves(VisionTorchReference.Parameters(pvt), AsPvt(w, 16)), Input(x, 25, 16), 5, 5);
        Compare(Values(ySwin), Values(yPvt), "agent-swin against agent-pvt on one 5×5 window");
    }

    [Test]
    public void Flatten_swin_reference_on_a_window_is_the_pvt_reference()
    {
        var swin = new FlattenSwinConfig(16, 4, 5, DwcKernel: 3);
        var pvt = new FlattenPvtConfig(16, 4, 5, 5, QkvBias: true, DwcKernel: 3);
        var w = VisionTorchReference.Draw(VisionTorchReferenceWindows.Parameters(swin), seed: 103);
        var x = TestData.Normal(104, Batch * 25 * 16);
        using var scope = torch.NewDisposeScope();
        var ySwin = VisionTorchReferenceWindows.FlattenSwin(swin, Leaves(VisionTorchReferenceWindows.Parameters(swin), w), Input(x, 25, 16));
        var yPvt = VisionTorchReference.FlattenPvt(pvt, Leaves(VisionTorchReference.Parameters(pvt), AsPvt(w, 16)), Input(x, 25, 16), 5, 5);
        Compare(Values(ySwin), Values(yPvt), "flatten-swin against flatten-pvt on one 5×5 window");
    }

    [Test]
    public void Swin_and_deit_reference_gradients_agree_with_finite_differences()
    {
        var agentSwin = new AgentSwinConfig(8, 2, 4, 3);
        CheckGradients(VisionTorchReferenceWindows.Parameters(agentSwin), 9, 8, (w, x) => VisionTorchReferenceWindows.AgentSwin(agentSwin, w, x), "agent-swin");
        var deit = new AgentDeitConfig(8, 2, 4, 3);
        CheckGradients(VisionTorchReferenceWindows.Parameters(deit), 10, 8, (w, x) => VisionTorchReferenceWindows.AgentDeit(deit, w, x), "agent-deit");
        var flattenSwin = new FlattenSwinConfig(8, 2, 3, DwcKernel: 3);
        CheckGradients(VisionTorchReferenceWindows.Parameters(flattenSwin), 9, 8, (w, x) => VisionTorchReferenceWindows.FlattenSwin(flattenSwin, w, x), "flatten-swin");
    }

    private static void CheckGradients(IReadOnlyList<(string Name, long[] Shape)> parameters, int tokens, int dm,
        Func<IReadOnlyDictionary<string, Tensor>, Tensor, Tensor> run, string label) =>
        VisionReferenceTests.CheckReferenceGradients(parameters, [Batch, tokens, dm], run, label, seed: 111);

    // The PVT module's q and kv are the rows of the Swin module's qkv: q first, then k and v.
    private static Dictionary<string, double[]> AsPvt(Dictionary<string, double[]> w, int dm)
    {
        var pvt = new Dictionary<string, double[]>(w, StringComparer.Ordinal);
        pvt["q.weight"] = w["qkv.weight"][..(dm * dm)];
        pvt["kv.weight"] = w["qkv.weight"][(dm * dm)..];
        pvt["q.bias"] = w["qkv.bias"][..dm];
        pvt["kv.bias"] = w["qkv.bias"][dm..];
        return pvt;
    }

    private static Dictionary<string, Tensor> Leaves(IReadOnlyList<(string Name, long[] Shape)> parameters, Dictionary<string, double[]> w) =>
        VisionTorchReference.Leaves(parameters, w, requiresGrad: false);

    private static Tensor Input(double[] x, int tokens, int dm) => torch.tensor(x, [Batch, tokens, dm], ScalarType.Float64);

    private static double[] Values(Tensor t) => t.detach().contiguous().data<double>().ToArray();

    // Both F64 through the same operations in another arrangement: 1e-12 relative to 1 + max is ~100× round-off.
    private static void Compare(double[] actual, double[] expected, string what)
    {
        double error = actual.Zip(expected, (a, e) => Math.Abs(a - e)).Max() / (1 + expected.Max(Math.Abs));
        TestContext.Out.WriteLine($"{what}: {error:E2}");
        Assert.That(error, Is.LessThanOrEqualTo(1e-12), what);
    }
}

namespace Attention.Native.Tests.TorchReference;

/// <summary>
/// Base of the torch reference tests: each test skips, with the one reason <see cref="TorchRuntime"/> gives, where TorchSharp
/// cannot run. The check runs before the test method is compiled, so a build without TorchSharp (the GPU bundle) skips too.
/// </summary>
[Category("TorchReference")]
public abstract class TorchReferenceFixture
{
    [SetUp]
    public void RequireTorch() => TorchRuntime.Require();
}

using Attention.Native.Tests.Kernels;

namespace Attention.Native.Tests;

/// <summary>
/// Starts the kernel emulation when the whole suite starts, if <see cref="EmulationRun.EarlyVariable"/> asks for it (in the
/// root namespace, so before any test).
/// </summary>
[SetUpFixture]
public sealed class EmulationEarlyStart
{
    [OneTimeSetUp]
    public void Start()
    {
        if (Environment.GetEnvironmentVariable(EmulationRun.EarlyVariable) == "1"
            && KernelEmulationTests.SourceRoot() is { } root && KernelEmulationTests.ExistsOnPath("g++"))
        {
            EmulationRun.StartEarly(root);
        }
    }
}

using System.Runtime.CompilerServices;
using Attention.Native.TorchSupport;

namespace Attention.Native.Tests.TorchReference;

/// <summary>
/// Loads TorchSharp's native library once for the torch reference tests (tests/torchsharp/TorchNativeLoader.cs, shared with
/// the libtorch bench peer), or gives the one reason they skip.
/// </summary>
internal static class TorchRuntime
{
    private const string Hint = "run tests/torchsharp/prepare.sh (./build.sh --target=Test runs it)";

    private static readonly Lazy<string?> Problem = new(Load);

    /// <summary>Ignores the calling test, with the reason, unless TorchSharp runs here.</summary>
    public static void Require()
    {
        if (Problem.Value is { } reason)
        {
            Assert.Ignore(reason);
        }
    }

    private static string? Load()
    {
        try
        {
            return LoadNative();
        }
        catch (Exception e) when (e is FileNotFoundException or FileLoadException && e.Message.Contains("TorchSharp", StringComparison.Ordinal))
        {
            // The GPU bundle publishes the tests without TorchSharp (Publish="false" in the project).
            return "TorchSharp is not part of this build (the published test bundle leaves it out)";
        }
        catch (DllNotFoundException e) when (e.Message.Contains("'torch_cpu'", StringComparison.Ordinal) && !File.Exists(Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libtorch_cpu.so")))
        {
            // TorchSharp's managed assembly comes with Attention.Native.TorchSharp; libtorch (TorchSharp-cpu) is left out of the bundle.
            return "libtorch is not part of this build (the published test bundle leaves TorchSharp-cpu out)";
        }
        catch (Exception e)
        {
            return $"TorchSharp native library cannot load: {TorchNativeLoader.Brief(e.Message)}; {Hint}";
        }
    }

    // Separate, so that a missing TorchSharp.dll surfaces as an exception of this call, not of Load's compilation.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static string? LoadNative() => TorchNativeLoader.Load(Hint);
}

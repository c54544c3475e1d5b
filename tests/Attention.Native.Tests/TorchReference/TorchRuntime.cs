using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using TorchSharp;

namespace Attention.Native.Tests.TorchReference;

/// <summary>
/// Loads TorchSharp's native library once for the torch reference tests, or gives the one reason they skip.
/// TorchSharp-cpu 0.107.0's libLibTorchSharp.so needs GLIBCXX_3.4.32, which older libstdc++ (Debian 12: 3.4.30) lacks;
/// tests/torchsharp/prepare.sh leaves a copy in artifacts/torchsharp-native whose needed version is marked weak. When the
/// shipped library does not load, that copy is loaded in its place (after the libtorch libraries TorchSharp itself loads,
/// the same files, so that libtorch is in the process once) and TorchSharp's P/Invokes are pointed at it.
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
        catch (Exception e)
        {
            return $"TorchSharp native library cannot load: {Brief(e.Message)}; {Hint}";
        }
    }

    // Separate, so that a missing TorchSharp.dll surfaces as an exception of this call, not of Load's compilation.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static string? LoadNative()
    {
        var assembly = typeof(torch).Assembly;
        if (OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64 && !TryLoadShipped(assembly, out string? refused))
        {
            string? copy = PreparedCopy(out string? stale);
            if (copy is null)
            {
                return $"TorchSharp native library cannot load: {refused}; {stale ?? Hint}";
            }
            var handle = NativeLibrary.Load(copy);
            NativeLibrary.SetDllImportResolver(assembly, (name, _, _) => name == "LibTorchSharp" ? handle : IntPtr.Zero);
        }
        // TorchSharp's own loader: it finds libLibTorchSharp.so already in the process (by its soname) when the copy was loaded.
        torch.InitializeDeviceType(DeviceType.CPU);
        using var probe = torch.arange(4, torch.float64);
        double sum = probe.sum().item<double>();
        return sum == 6 ? null : $"TorchSharp loaded but computes Σ 0..3 = {sum}";
    }

    private static bool TryLoadShipped(Assembly assembly, out string? refused)
    {
        // libtorch itself loads as shipped; these are the names TorchSharp loads it by.
        NativeLibrary.Load("torch_cpu", assembly, null);
        NativeLibrary.Load("torch", assembly, null);
        try
        {
            NativeLibrary.Load("LibTorchSharp", assembly, null);
            refused = null;
            return true;
        }
        catch (DllNotFoundException e)
        {
            refused = Brief(e.Message);
            return false;
        }
    }

    /// <summary>The prepared copy, when it exists and was made from the library this build ships; else null and why.</summary>
    private static string? PreparedCopy(out string? stale)
    {
        stale = null;
        string? root = AppContext.BaseDirectory;
        while (root is not null && !File.Exists(Path.Combine(root, "Attention.Native.sln")))
        {
            root = Path.GetDirectoryName(root);
        }
        if (root is null)
        {
            return null;
        }
        string folder = Path.Combine(root, "artifacts", "torchsharp-native"), copy = Path.Combine(folder, "libLibTorchSharp.so");
        string source = Path.Combine(folder, "source.txt");
        if (!File.Exists(copy) || !File.Exists(source))
        {
            return null;
        }
        string shipped = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        string recorded = File.ReadAllText(source).Split(' ')[0];
        string actual = File.Exists(shipped) ? Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(shipped))) : "(none)";
        if (recorded != actual)
        {
            stale = $"{copy} was made from another libLibTorchSharp.so (SHA-256 {recorded}, this build's {actual}): {Hint}";
            return null;
        }
        return copy;
    }

    // The loader's reason without the list of every path tried: "…: version `GLIBCXX_3.4.32' not found (required by …)".
    private static string Brief(string message)
    {
        var match = Regex.Match(message, @"[^:\n]*: version `[^']*' not found \(required by [^)]*\)");
        if (match.Success)
        {
            return match.Value.Trim();
        }
        return message.Length <= 400 ? message : message[..400] + "…";
    }
}

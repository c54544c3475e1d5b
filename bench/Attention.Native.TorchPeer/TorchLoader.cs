using System.Runtime.InteropServices;
using System.Security.Cryptography;
using TorchSharp;

namespace Attention.Native.TorchPeer;

/// <summary>
/// Loads TorchSharp's native library as the torch reference tests do (tests/.../TorchReference/TorchRuntime.cs): the shipped
/// libLibTorchSharp.so when it loads, else the mended copy tests/torchsharp/prepare.sh leaves in artifacts/torchsharp-native
/// (made from this very file: its SHA-256 is checked), after the shipped libtorch, so that libtorch is in the process once.
/// </summary>
internal static class TorchLoader
{
    /// <summary>Null when torch runs here; else why not.</summary>
    public static string? Load()
    {
        var assembly = typeof(torch).Assembly;
        if (OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64)
        {
            NativeLibrary.Load("torch_cpu", assembly, null);
            NativeLibrary.Load("torch", assembly, null);
            if (!NativeLibrary.TryLoad("LibTorchSharp", assembly, null, out _))
            {
                string? copy = PreparedCopy(out string reason);
                if (copy is null)
                {
                    return reason;
                }
                var handle = NativeLibrary.Load(copy);
                NativeLibrary.SetDllImportResolver(assembly, (name, _, _) => name == "LibTorchSharp" ? handle : IntPtr.Zero);
            }
        }
        torch.InitializeDeviceType(DeviceType.CPU);
        using var probe = torch.arange(4, torch.float64);
        double sum = probe.sum().item<double>();
        return sum == 6 ? null : $"TorchSharp loaded but computes Σ 0..3 = {sum}";
    }

    private static string? PreparedCopy(out string reason)
    {
        const string hint = "run tests/torchsharp/prepare.sh (./build.sh --target=BenchTorch runs it)";
        string? root = AppContext.BaseDirectory;
        while (root is not null && !File.Exists(Path.Combine(root, "Attention.Native.sln")))
        {
            root = Path.GetDirectoryName(root);
        }
        string folder = Path.Combine(root ?? ".", "artifacts", "torchsharp-native");
        string copy = Path.Combine(folder, "libLibTorchSharp.so"), source = Path.Combine(folder, "source.txt");
        if (root is null || !File.Exists(copy) || !File.Exists(source))
        {
            reason = $"the shipped libLibTorchSharp.so does not load and there is no prepared copy: {hint}";
            return null;
        }
        string shipped = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        string recorded = File.ReadAllText(source).Split(' ')[0];
        string actual = File.Exists(shipped) ? Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(shipped))) : "(none)";
        if (recorded != actual)
        {
            reason = $"{copy} was made from another libLibTorchSharp.so (SHA-256 {recorded}, this build's {actual}): {hint}";
            return null;
        }
        reason = "";
        return copy;
    }
}

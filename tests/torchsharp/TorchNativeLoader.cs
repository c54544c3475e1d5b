using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using TorchSharp;

namespace Attention.Native.TorchSupport;

/// <summary>
/// Loads TorchSharp's native library, for the torch reference tests and the libtorch bench peer (this file is compiled into
/// both). TorchSharp-cpu 0.107.0's libLibTorchSharp.so needs GLIBCXX_3.4.32, which older libstdc++ (Debian 12: 3.4.30)
/// lacks; tests/torchsharp/prepare.sh leaves a copy in artifacts/torchsharp-native whose needed version is marked weak. When
/// the shipped library does not load, that copy is loaded in its place (after the libtorch libraries TorchSharp itself
/// loads, the same files, so that libtorch is in the process once) and TorchSharp's P/Invokes are pointed at it.
/// </summary>
internal static class TorchNativeLoader
{
    /// <summary>Null when torch runs here; else why not, ending with <paramref name="hint"/> where preparing would help.</summary>
    public static string? Load(string hint)
    {
        var assembly = typeof(torch).Assembly;
        if (OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64 && !TryLoadShipped(assembly, out string? refused))
        {
            string? copy = PreparedCopy(hint, out string? stale);
            if (copy is null)
            {
                return $"TorchSharp native library cannot load: {refused}; {stale ?? hint}";
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

    /// <summary>The loader's reason without the list of every path tried: "…: version `GLIBCXX_3.4.32' not found (required by …)".</summary>
    public static string Brief(string message)
    {
        var match = Regex.Match(message, @"[^:\n]*: version `[^']*' not found \(required by [^)]*\)");
        if (match.Success)
        {
            return match.Value.Trim();
        }
        return message.Length <= 400 ? message : message[..400] + "…";
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
    private static string? PreparedCopy(string hint, out string? stale)
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
            stale = $"{copy} was made from another libLibTorchSharp.so (SHA-256 {recorded}, this build's {actual}): {hint}";
            return null;
        }
        return copy;
    }
}

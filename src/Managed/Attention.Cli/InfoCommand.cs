using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using Attention.Native.Interop;
using Attention.Native.Runtime;
using Spectre.Console;

namespace Attention.Cli;

/// <summary><c>attn info</c>: what this machine offers the library. Never fails: each probe reports its own error.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var command = new Command("info", "Print the .NET runtime, CPU, native libraries loaded (or why not), devices, NVRTC and the kernel cache.");
        command.SetAction(result =>
        {
            var console = AttnCli.Console(result.InvocationConfiguration.Output);
            var table = new Table().Border(TableBorder.Rounded).AddColumn("item").AddColumn("value");
            foreach (var (key, value) in Collect())
            {
                table.AddRow(Markup.Escape(key), Markup.Escape(value));
            }
            console.Write(table);
            return 0;
        });
        return command;
    }

    /// <summary>The rows of the report, in order.</summary>
    public static List<(string Key, string Value)> Collect()
    {
        var rows = new List<(string, string)>
        {
            ("Attention.Native", typeof(Backend).Assembly.GetName().Version?.ToString() ?? "?"),
            (".NET runtime", $"{RuntimeInformation.FrameworkDescription} on {RuntimeInformation.OSDescription} ({RuntimeInformation.ProcessArchitecture})"),
            ("CPU", $"{CpuModel()}, {Environment.ProcessorCount} logical cores"),
        };
        foreach (var kind in Enum.GetValues<NativeLibraryKind>())
        {
            rows.Add(($"library {kind}", NativeLibraries.Get(kind).Describe()));
        }
        rows.Add(("NVRTC", Probe(() => $"{Nvrtc.VersionText}; targets {string.Join(", ", Nvrtc.SupportedArchs.Select(a => "sm_" + a))}")));
        rows.Add(("CUDA driver", Probe(() =>
        {
            int v = CudaDevice.DriverVersion;
            return string.Create(CultureInfo.InvariantCulture, $"CUDA {v / 1000}.{v % 1000 / 10}");
        })));
        int count = 0;
        rows.Add(("devices", Probe(() => (count = CudaDevice.Count).ToString(CultureInfo.InvariantCulture))));
        for (int i = 0; i < count; i++)
        {
            int ordinal = i;
            rows.Add(($"device {ordinal}", Probe(() =>
            {
                var d = CudaDevice.Get(ordinal);
                return string.Create(CultureInfo.InvariantCulture,
                    $"{d.Name}, compute capability {d.ComputeCapabilityMajor}.{d.ComputeCapabilityMinor} ({d.Arch}), {d.MultiprocessorCount} SMs, {d.TotalMemoryBytes / (double)(1L << 30):F1} GiB, {d.PeakMemoryBandwidthGBps:F0} GB/s peak, {d.MaxSharedMemoryPerBlockOptin / 1024} KiB shared/block");
            })));
        }
        rows.Add(("kernel cache", KernelCompiler.DefaultCacheDirectory + $" (override with {KernelCompiler.CacheVariable})"));
        rows.Add(("default backend", Probe(() => $"{Backend.Default.Name}: {Backend.DefaultReason}")));
        return rows;
    }

    private static string Probe(Func<string> probe)
    {
        try
        {
            return probe();
        }
#pragma warning disable CA1031 // info reports every failure instead of failing
        catch (Exception e)
#pragma warning restore CA1031
        {
            return $"unavailable: {e.Message}";
        }
    }

    private static string CpuModel()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
            {
                var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
                if (line is not null)
                {
                    return line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
                }
            }
        }
        catch (IOException)
        {
        }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }
}

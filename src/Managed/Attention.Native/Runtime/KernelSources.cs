using System.Collections.Immutable;
using System.Reflection;
using System.Text;

namespace Attention.Native.Runtime;

/// <summary>
/// The CUDA sources a program is compiled from: kernel files (<c>*.cu</c>, by file name) and the headers
/// they include (<c>*.cuh</c>, passed to NVRTC in memory under their file names).
/// </summary>
/// <remarks>Thread safety: immutable once built; safe to share between threads.</remarks>
public sealed class KernelSources
{
    private static readonly Lazy<KernelSources> EmbeddedLazy = new(LoadEmbedded);

    /// <summary>Creates a source set (tests use this to vary a source or header).</summary>
    public KernelSources(IReadOnlyDictionary<string, string> kernels, IReadOnlyDictionary<string, string> headers)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        ArgumentNullException.ThrowIfNull(headers);
        Kernels = kernels.ToImmutableSortedDictionary(StringComparer.Ordinal);
        Headers = headers.ToImmutableSortedDictionary(StringComparer.Ordinal);
    }

    /// <summary>The sources embedded in this assembly from the repository's <c>cuda/</c> folder.</summary>
    public static KernelSources Embedded => EmbeddedLazy.Value;

    /// <summary>Kernel files by name, e.g. <c>rope.cu</c>.</summary>
    public ImmutableSortedDictionary<string, string> Kernels { get; }

    /// <summary>Headers by include name, e.g. <c>common.cuh</c>.</summary>
    public ImmutableSortedDictionary<string, string> Headers { get; }

    /// <summary>The text of kernel file <paramref name="name"/>.</summary>
    public string Kernel(string name) => Kernels.TryGetValue(name, out var text)
        ? text
        : throw new ArgumentException($"name: expected one of the kernel files [{string.Join(", ", Kernels.Keys)}], actual '{name}'", nameof(name));

    private static KernelSources LoadEmbedded()
    {
        var assembly = typeof(KernelSources).Assembly;
        var kernels = new Dictionary<string, string>(StringComparer.Ordinal);
        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var resource in assembly.GetManifestResourceNames())
        {
            if (!resource.StartsWith("cuda/", StringComparison.Ordinal))
            {
                continue;
            }
            string text = Read(assembly, resource);
            string fileName = resource[(resource.LastIndexOf('/') + 1)..];
            if (resource.EndsWith(".cuh", StringComparison.Ordinal))
            {
                headers[fileName] = text;
            }
            else if (resource.EndsWith(".cu", StringComparison.Ordinal))
            {
                kernels[fileName] = text;
            }
        }
        return new KernelSources(kernels, headers);
    }

    private static string Read(Assembly assembly, string resource)
    {
        using var stream = assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"embedded kernel resource '{resource}' is missing");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }
}

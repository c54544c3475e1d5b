using System.Collections.Concurrent;
using System.Reflection;
using System.Runtime.InteropServices;

namespace Attention.Native.Interop;

/// <summary>The native libraries the CUDA backend binds to.</summary>
public enum NativeLibraryKind
{
    /// <summary>The CUDA driver API (libcuda.so.1 / nvcuda.dll).</summary>
    Cuda,
    /// <summary>The NVRTC run-time compiler.</summary>
    Nvrtc,
    /// <summary>cuBLAS.</summary>
    Cublas,
}

/// <summary>Where a native library was loaded from, or every path tried and why each failed.</summary>
/// <param name="Kind">Which library.</param>
/// <param name="Path">The file that was loaded, or null.</param>
/// <param name="Attempts">Each path or name tried, with the loader's answer, in order.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record NativeLibraryStatus(NativeLibraryKind Kind, string? Path, IReadOnlyList<string> Attempts)
{
    /// <summary>True when the library is loaded.</summary>
    public bool IsLoaded => Path is not null;

    internal nint Handle { get; init; }

    /// <summary>One line: the loaded path, or the list of attempts.</summary>
    public string Describe() => IsLoaded
        ? Path!
        : $"not found; tried: {string.Join("; ", Attempts)}";
}

/// <summary>
/// Finds and loads libcuda, NVRTC and cuBLAS: directories named in <c>ATTENTION_NATIVE_CUDA_LIBS</c>
/// first, then versioned names newest first (in <c>CUDA_PATH</c>/<c>CUDA_HOME</c>, <c>/usr/local/cuda</c>,
/// then the system loader's own search), then unversioned names. NVRTC's builtins library is preloaded
/// from NVRTC's own directory, and cuBLASLt from cuBLAS's, so a library found outside the loader's
/// search path still finds its companion.
/// </summary>
/// <remarks>Thread safety: safe from any thread; each library is resolved once.</remarks>
public static class NativeLibraries
{
    /// <summary>Environment variable: directories (path-list separated) searched before anything else.</summary>
    public const string SearchPathVariable = "ATTENTION_NATIVE_CUDA_LIBS";

    private static readonly ConcurrentDictionary<NativeLibraryKind, Lazy<NativeLibraryStatus>> Loaded = new();

    /// <summary>Loads (once) and returns the status of <paramref name="kind"/>.</summary>
    public static NativeLibraryStatus Get(NativeLibraryKind kind) =>
        Loaded.GetOrAdd(kind, k => new Lazy<NativeLibraryStatus>(() => Load(k))).Value;

    /// <summary>Loads <paramref name="kind"/> or throws <see cref="NativeLibraryNotFoundException"/> listing every path tried.</summary>
    public static NativeLibraryStatus Require(NativeLibraryKind kind)
    {
        var status = Get(kind);
        return status.IsLoaded ? status : throw new NativeLibraryNotFoundException(kind.ToString(), status.Attempts);
    }

    /// <summary>File names tried for <paramref name="kind"/> on this OS, newest version first.</summary>
    public static IReadOnlyList<string> CandidateNames(NativeLibraryKind kind) => OperatingSystem.IsWindows()
        ? kind switch
        {
            NativeLibraryKind.Cuda => ["nvcuda.dll"],
            NativeLibraryKind.Nvrtc => ["nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll"],
            _ => ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"],
        }
        : kind switch
        {
            NativeLibraryKind.Cuda => ["libcuda.so.1", "libcuda.so"],
            NativeLibraryKind.Nvrtc => ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"],
            _ => ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"],
        };

    /// <summary>
    /// Tries each name in each directory (full paths), then each bare name through the system loader, and
    /// records every attempt. Exposed for tests and diagnostics; the resolver uses it for the real libraries.
    /// </summary>
    public static NativeLibraryStatus TryLoad(NativeLibraryKind kind, IReadOnlyList<string> names, IReadOnlyList<string> firstDirectories, IReadOnlyList<string> toolkitDirectories)
    {
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(firstDirectories);
        ArgumentNullException.ThrowIfNull(toolkitDirectories);
        var attempts = new List<string>();
        foreach (var dir in firstDirectories)
        {
            foreach (var name in names)
            {
                if (TryOne(kind, Path.Combine(dir, name), attempts) is { } hit)
                {
                    return hit;
                }
            }
        }
        foreach (var name in names)
        {
            foreach (var dir in toolkitDirectories)
            {
                if (TryOne(kind, Path.Combine(dir, name), attempts) is { } hit)
                {
                    return hit;
                }
            }
            if (TryOne(kind, name, attempts) is { } bare)
            {
                return bare;
            }
        }
        return new NativeLibraryStatus(kind, null, attempts);
    }

    private static NativeLibraryStatus Load(NativeLibraryKind kind)
    {
        var first = (Environment.GetEnvironmentVariable(SearchPathVariable) ?? "")
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        // The driver must come from the system (a toolkit's lib64 holds only link stubs of it).
        var toolkit = kind == NativeLibraryKind.Cuda ? [] : ToolkitDirectories();
        return TryLoad(kind, CandidateNames(kind), first, toolkit);
    }

    private static List<string> ToolkitDirectories()
    {
        var dirs = new List<string>();
        foreach (var variable in new[] { "CUDA_PATH", "CUDA_HOME" })
        {
            if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } root)
            {
                if (OperatingSystem.IsWindows())
                {
                    dirs.Add(Path.Combine(root, "bin", "x64")); // CUDA 13 layout
                    dirs.Add(Path.Combine(root, "bin"));
                }
                else
                {
                    dirs.Add(Path.Combine(root, "lib64"));
                }
            }
        }
        if (!OperatingSystem.IsWindows())
        {
            dirs.Add("/usr/local/cuda/lib64");
        }
        return dirs.Distinct().ToList();
    }

    private static NativeLibraryStatus? TryOne(NativeLibraryKind kind, string pathOrName, List<string> attempts)
    {
        bool isPath = Path.IsPathRooted(pathOrName);
        if (isPath && !File.Exists(pathOrName))
        {
            attempts.Add($"{pathOrName} (no such file)");
            return null;
        }
        string? directory = isPath ? Path.GetDirectoryName(pathOrName) : null;
        if (kind == NativeLibraryKind.Cublas && directory is not null)
        {
            PreloadCompanion(directory, Path.GetFileName(pathOrName).Replace("cublas", "cublasLt", StringComparison.Ordinal));
        }
        try
        {
            nint handle = NativeLibrary.Load(pathOrName);
            string path = isPath ? pathOrName : LoadedPathOf(pathOrName) ?? pathOrName;
            attempts.Add($"{pathOrName} (loaded)");
            if (kind == NativeLibraryKind.Nvrtc)
            {
                PreloadNvrtcBuiltins(Path.GetDirectoryName(path));
            }
            return new NativeLibraryStatus(kind, path, attempts) { Handle = handle };
        }
        catch (DllNotFoundException e)
        {
            attempts.Add($"{pathOrName} ({LoaderReason(e.Message, pathOrName)})");
            return null;
        }
        catch (BadImageFormatException e)
        {
            attempts.Add($"{pathOrName} (wrong format: {LoaderReason(e.Message, pathOrName)})");
            return null;
        }
    }

    // NVRTC dlopens its builtins by soname at compile time; loading the copy beside NVRTC first makes
    // that succeed when NVRTC's directory is not on the loader's search path (pip wheels, bundles).
    private static void PreloadNvrtcBuiltins(string? directory)
    {
        if (string.IsNullOrEmpty(directory) || !Directory.Exists(directory))
        {
            return;
        }
        string pattern = OperatingSystem.IsWindows() ? "nvrtc-builtins64_*.dll" : "libnvrtc-builtins.so.*";
        foreach (var file in Directory.GetFiles(directory, pattern).OrderDescending(StringComparer.Ordinal))
        {
            if (NativeLibrary.TryLoad(file, out _))
            {
                return;
            }
        }
    }

    private static void PreloadCompanion(string directory, string fileName)
    {
        string path = Path.Combine(directory, fileName);
        if (File.Exists(path))
        {
            NativeLibrary.TryLoad(path, out _);
        }
    }

    // For a library found by bare name, the loader's map of this process tells which file it opened.
    private static string? LoadedPathOf(string name)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }
        // The soname (libnvrtc.so.11.2) and the real file (libnvrtc.so.11.8.89) share the stem before the version.
        int so = name.IndexOf(".so", StringComparison.Ordinal);
        string stem = so >= 0 ? name[..(so + 3)] : name;
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                int slash = line.IndexOf('/', StringComparison.Ordinal);
                if (slash >= 0)
                {
                    var file = line[slash..];
                    var fileName = Path.GetFileName(file);
                    if (fileName == stem || fileName.StartsWith(stem + ".", StringComparison.Ordinal))
                    {
                        return file;
                    }
                }
            }
        }
        catch (IOException)
        {
        }
        return null;
    }

    // .NET prefixes the loader's own words (dlerror: "libcuda.so.1: cannot open shared object file: ...")
    // with generic advice; keep the loader's last line, without the file name it repeats.
    private static string LoaderReason(string message, string pathOrName)
    {
        var line = message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? message;
        return line.StartsWith(pathOrName + ": ", StringComparison.Ordinal) ? line[(pathOrName.Length + 2)..] : line;
    }

    // One resolver for the assembly: the [LibraryImport] names "cuda", "nvrtc", "cublas" and "libc" map here.
    internal static void RegisterResolver() =>
        NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);

    private static nint Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName == NativeMethods.LibcLibrary)
        {
            return NativeLibrary.GetMainProgramHandle();
        }
        NativeLibraryKind? kind = libraryName switch
        {
            NativeMethods.CudaLibrary => NativeLibraryKind.Cuda,
            NativeMethods.NvrtcLibrary => NativeLibraryKind.Nvrtc,
            NativeMethods.CublasLibrary => NativeLibraryKind.Cublas,
            _ => null,
        };
        return kind is { } k ? Require(k).Handle : 0;
    }
}

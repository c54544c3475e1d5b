using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>
/// Compiles kernel programs with NVRTC for an exact architecture and caches the result: in this process
/// (each program compiles once per compiler) and on disk under a SHA-256 of source, headers, options,
/// name expressions, NVRTC version and target. The disk cache defaults to the user's cache directory,
/// or <c>ATTENTION_NATIVE_CACHE</c> when set.
/// </summary>
/// <remarks>Thread safety: safe to share; concurrent compiles of one program compile it once, and processes sharing the disk cache never see a partial entry.</remarks>
public sealed unsafe class KernelCompiler
{
    /// <summary>Environment variable naming the on-disk cache directory.</summary>
    public const string CacheVariable = "ATTENTION_NATIVE_CACHE";

    private readonly ConcurrentDictionary<string, Lazy<CompiledProgram>> _memory = new(StringComparer.Ordinal);
    private readonly KernelDiskCache _disk;
    private int _compilations;

    /// <summary>Creates a compiler over <paramref name="sources"/> (default: the embedded kernels) caching in <paramref name="cacheDirectory"/>.</summary>
    public KernelCompiler(string? cacheDirectory = null, KernelSources? sources = null)
    {
        Sources = sources ?? KernelSources.Embedded;
        string? chosen = cacheDirectory ?? (Environment.GetEnvironmentVariable(CacheVariable) is { Length: > 0 } variable ? variable : null);
        _disk = chosen is null
            ? new KernelDiskCache(DefaultCacheDirectory, KernelCacheFolder.PerUser)
            : new KernelDiskCache(chosen, KernelCacheFolder.Chosen);
    }

    /// <summary>The shared compiler the CUDA backend uses.</summary>
    public static KernelCompiler Shared { get; } = new();

    /// <summary>The sources this compiler reads.</summary>
    public KernelSources Sources { get; }

    /// <summary>The on-disk cache directory.</summary>
    public string CacheDirectory => _disk.Directory;

    /// <summary>How many NVRTC compilations this compiler ran (cache hits excluded).</summary>
    public int CompilationCount => Volatile.Read(ref _compilations);

    /// <summary>
    /// The one warning about the on-disk cache, or null while it works: why its folder is refused (on Unix it must
    /// be owned by this user or root and writable by nobody else) or why an entry could not be written. Either
    /// way kernels still compile, in memory; the same text is traced once as
    /// <see cref="AttentionNativeEventSource.KernelCacheUnavailable"/>.
    /// </summary>
    public string? CacheWarning => _disk.Warning;

    /// <summary>
    /// The default cache directory: <c>ATTENTION_NATIVE_CACHE</c>; else on Windows the local application data
    /// folder; else <c>$XDG_CACHE_HOME</c> or <c>~/.cache</c> (the home from <c>HOME</c>, else the user's passwd
    /// entry), each followed by <c>attention-native/kernels</c>; else, with no usable home,
    /// <c>&lt;temp&gt;/attention-native-&lt;uid&gt;</c>, private to this user. The cache creates these folders 0700;
    /// a folder named by <c>ATTENTION_NATIVE_CACHE</c> or the constructor, 0755 (others may read, as a service
    /// reading a cache that a deployment step filled must).
    /// </summary>
    public static string DefaultCacheDirectory
    {
        get
        {
            string? explicitDirectory = Environment.GetEnvironmentVariable(CacheVariable);
            if (OperatingSystem.IsWindows())
            {
                return explicitDirectory is { Length: > 0 }
                    ? explicitDirectory
                    : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "attention-native", "kernels");
            }
            return KernelCacheFolder.DefaultFor(
                explicitDirectory,
                Environment.GetEnvironmentVariable("XDG_CACHE_HOME"),
                Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), // HOME, else the passwd entry
                Path.GetTempPath(),
                UnixFileStatus.EffectiveUserId);
        }
    }

    /// <summary>
    /// NVRTC options for a target. <c>ATTN_NVRTC_VERSION</c> (e.g. 118, 128) lets kernels use newer
    /// instructions only where the compiler knows them.
    /// </summary>
    public static IReadOnlyList<string> OptionsFor(string target, int nvrtcMajor, int nvrtcMinor) =>
    [
        $"--gpu-architecture={target}",
        "--std=c++17",
        "-lineinfo",
        $"-DATTN_NVRTC_VERSION={(nvrtcMajor * 10) + nvrtcMinor}",
    ];

    /// <summary>
    /// The NVRTC target for a device architecture: the exact <c>sm_XY</c> when this NVRTC emits CUBIN for
    /// it, else PTX for the newest older <c>compute_XY</c> it knows (the driver JIT-compiles that).
    /// </summary>
    public static string TargetFor(string arch, IReadOnlyList<int> supportedArchs)
    {
        ArgumentNullException.ThrowIfNull(supportedArchs);
        int number = ParseArch(arch);
        if (supportedArchs.Contains(number))
        {
            return $"sm_{number}";
        }
        var older = supportedArchs.Where(a => a < number).DefaultIfEmpty(-1).Max();
        return older >= 0
            ? $"compute_{older}"
            : throw new ArgumentException($"arch: expected an architecture this NVRTC supports ({string.Join(", ", supportedArchs.Select(a => "sm_" + a))}), actual {arch}", nameof(arch));
    }

    /// <summary>
    /// The cache key: SHA-256 over the program's source, every header, the options, the name expressions,
    /// the NVRTC version and the target. Each field is length-prefixed so no two inputs collide by concatenation.
    /// </summary>
    public static string CacheKey(KernelSources sources, KernelProgram program, IReadOnlyList<string> options, string nvrtcVersion, string target)
    {
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentNullException.ThrowIfNull(program);
        ArgumentNullException.ThrowIfNull(options);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Field(string text)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(text);
            Span<byte> length = stackalloc byte[8];
            BitConverter.TryWriteBytes(length, (long)bytes.Length);
            hash.AppendData(length);
            hash.AppendData(bytes);
        }
        Field("attention-native kernel cache v1");
        Field(program.SourceName);
        Field(sources.Kernel(program.SourceName));
        foreach (var (name, text) in sources.Headers)
        {
            Field(name);
            Field(text);
        }
        Field(string.Join('\n', options));
        Field(string.Join('\n', program.NameExpressions));
        Field(nvrtcVersion);
        Field(target);
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>
    /// Compiles <paramref name="program"/> for <paramref name="arch"/> (e.g. <c>sm_90</c>) or returns the
    /// cached result. Throws <see cref="NvrtcException"/> with the compiler log when compilation fails.
    /// </summary>
    public CompiledProgram Compile(KernelProgram program, string arch) => Compile(program, arch, []);

    /// <summary>As <see cref="Compile(KernelProgram, string)"/> with NVRTC options added (the tests pass
    /// <c>--ptxas-options=-v</c> to read register use and spills from the log).</summary>
    internal CompiledProgram Compile(KernelProgram program, string arch, IReadOnlyList<string> extraOptions)
    {
        ArgumentNullException.ThrowIfNull(program);
        var (major, minor) = Nvrtc.Version;
        string target = TargetFor(arch, Nvrtc.SupportedArchs);
        IReadOnlyList<string> options = [.. OptionsFor(target, major, minor), .. extraOptions];
        string key = CacheKey(Sources, program, options, Nvrtc.VersionText, target);
        bool created = false;
        var lazy = _memory.GetOrAdd(key, k => new Lazy<CompiledProgram>(() =>
        {
            created = true;
            return LoadOrCompile(k, program, target, options);
        }));
        try
        {
            var result = lazy.Value;
            return created ? result : result with { Origin = CompileOrigin.Memory };
        }
        catch
        {
            _memory.TryRemove(new KeyValuePair<string, Lazy<CompiledProgram>>(key, lazy)); // let a later call retry
            throw;
        }
    }

    private CompiledProgram LoadOrCompile(string key, KernelProgram program, string target, IReadOnlyList<string> options)
    {
        if (_disk.TryRead(key) is { } cached)
        {
            return cached;
        }
        var compiled = CompileWithNvrtc(key, program, target, options);
        _disk.TryWrite(compiled); // an unwritable cache costs a recompile next run and one warning
        return compiled;
    }

    private CompiledProgram CompileWithNvrtc(string key, KernelProgram program, string target, IReadOnlyList<string> options)
    {
        Interlocked.Increment(ref _compilations);
        var headers = Sources.Headers.ToArray();
        using var strings = new Utf8Strings();
        byte* source = strings.Add(Sources.Kernel(program.SourceName));
        byte* name = strings.Add(program.SourceName);
        byte** headerTexts = stackalloc byte*[Math.Max(1, headers.Length)];
        byte** headerNames = stackalloc byte*[Math.Max(1, headers.Length)];
        for (int i = 0; i < headers.Length; i++)
        {
            headerNames[i] = strings.Add(headers[i].Key);
            headerTexts[i] = strings.Add(headers[i].Value);
        }
        nint prog;
        StatusCheck.Check(nvrtcCreateProgram(&prog, source, name, headers.Length, headerTexts, headerNames), nameof(nvrtcCreateProgram), Describe(program));
        try
        {
            foreach (var expression in program.NameExpressions)
            {
                StatusCheck.Check(nvrtcAddNameExpression(prog, strings.Add(expression)), nameof(nvrtcAddNameExpression), Describe(program));
            }
            byte** opts = stackalloc byte*[options.Count];
            for (int i = 0; i < options.Count; i++)
            {
                opts[i] = strings.Add(options[i]);
            }
            var status = nvrtcCompileProgram(prog, options.Count, opts);
            string log = ProgramLog(prog);
            StatusCheck.Check(status, nameof(nvrtcCompileProgram), Describe(program), log);

            var lowered = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var expression in program.NameExpressions)
            {
                byte* loweredName;
                StatusCheck.Check(nvrtcGetLoweredName(prog, strings.Add(expression), &loweredName), nameof(nvrtcGetLoweredName), Describe(program));
                lowered[expression] = new string((sbyte*)loweredName);
            }

            bool ptx = target.StartsWith("compute_", StringComparison.Ordinal);
            nuint size;
            byte[] image;
            if (ptx)
            {
                StatusCheck.Check(nvrtcGetPTXSize(prog, &size), nameof(nvrtcGetPTXSize), Describe(program));
                image = new byte[size];
                fixed (byte* p = image)
                {
                    StatusCheck.Check(nvrtcGetPTX(prog, p), nameof(nvrtcGetPTX), Describe(program));
                }
            }
            else
            {
                StatusCheck.Check(nvrtcGetCUBINSize(prog, &size), nameof(nvrtcGetCUBINSize), Describe(program));
                image = new byte[size];
                fixed (byte* p = image)
                {
                    StatusCheck.Check(nvrtcGetCUBIN(prog, p), nameof(nvrtcGetCUBIN), Describe(program));
                }
            }
            return new CompiledProgram(key, target, image, lowered, log) { Origin = CompileOrigin.Compiled };
        }
        finally
        {
            _ = nvrtcDestroyProgram(&prog);
        }
    }

    // "rope.cu (rope_forward<float>, ...)": the file and the kernels, for error messages.
    private static string Describe(KernelProgram program) => $"{program.SourceName} ({string.Join(", ", program.NameExpressions)})";

    private static string ProgramLog(nint prog)
    {
        nuint size;
        if (nvrtcGetProgramLogSize(prog, &size) != nvrtcResult.NVRTC_SUCCESS || size <= 1)
        {
            return "";
        }
        var buffer = new byte[size];
        fixed (byte* p = buffer)
        {
            if (nvrtcGetProgramLog(prog, p) != nvrtcResult.NVRTC_SUCCESS)
            {
                return "";
            }
        }
        return Encoding.UTF8.GetString(buffer, 0, (int)size - 1);
    }

    private static int ParseArch(string arch)
    {
        ArgumentNullException.ThrowIfNull(arch);
        return arch.StartsWith("sm_", StringComparison.Ordinal)
            && int.TryParse(arch.AsSpan(3), NumberStyles.None, CultureInfo.InvariantCulture, out int n)
            ? n
            : throw new ArgumentException($"arch: expected the form sm_XY (e.g. sm_90), actual '{arch}'", nameof(arch));
    }

    /// <summary>Null-terminated UTF-8 copies in native memory, freed together.</summary>
    private sealed class Utf8Strings : IDisposable
    {
        private readonly List<nint> _blocks = [];

        public byte* Add(string text)
        {
            nint p = Marshal.StringToCoTaskMemUTF8(text);
            _blocks.Add(p);
            return (byte*)p;
        }

        public void Dispose()
        {
            foreach (var p in _blocks)
            {
                Marshal.FreeCoTaskMem(p);
            }
            _blocks.Clear();
        }
    }
}

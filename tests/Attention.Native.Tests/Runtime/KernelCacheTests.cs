using System.Collections.Concurrent;
using Attention.Native.Interop;
using Attention.Native.Ops;
using Attention.Native.Runtime;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Runtime;

public class KernelCacheTests
{
    private static readonly KernelProgram Program = new("k.cu", ["k<float>"]);

    private static KernelSources Sources(string kernel = "K1", string header = "H1") =>
        new(new Dictionary<string, string> { ["k.cu"] = kernel }, new Dictionary<string, string> { ["common.cuh"] = header });

    private static string Key(KernelSources s, KernelProgram? p = null, string option = "-O3", string version = "12.8", string target = "sm_90") =>
        KernelCompiler.CacheKey(s, p ?? Program, ["--std=c++17", option], version, target);

    [Test]
    public void Cache_key_changes_with_source_header_option_names_version_and_target()
    {
        string baseline = Key(Sources());
        Assert.Multiple(() =>
        {
            Assert.That(Key(Sources()), Is.EqualTo(baseline), "deterministic");
            Assert.That(baseline, Has.Length.EqualTo(64), "SHA-256 hex");
            Assert.That(Key(Sources(kernel: "K2")), Is.Not.EqualTo(baseline), "source");
            Assert.That(Key(Sources(header: "H2")), Is.Not.EqualTo(baseline), "header");
            Assert.That(Key(Sources(), option: "-O2"), Is.Not.EqualTo(baseline), "option");
            Assert.That(Key(Sources(), p: new KernelProgram("k.cu", ["k<double>"])), Is.Not.EqualTo(baseline), "name expressions");
            Assert.That(Key(Sources(), version: "13.0"), Is.Not.EqualTo(baseline), "NVRTC version");
            Assert.That(Key(Sources(), target: "sm_80"), Is.Not.EqualTo(baseline), "target");
        });
    }

    [Test]
    public void Cache_key_fields_cannot_collide_by_concatenation()
    {
        var a = new KernelSources(new Dictionary<string, string> { ["k.cu"] = "K" }, new Dictionary<string, string> { ["ab"] = "c" });
        var b = new KernelSources(new Dictionary<string, string> { ["k.cu"] = "K" }, new Dictionary<string, string> { ["a"] = "bc" });
        Assert.That(Key(a), Is.Not.EqualTo(Key(b)));
    }

    [Test]
    public void Target_is_the_exact_arch_or_ptx_for_the_newest_older_one()
    {
        int[] supported = [75, 80, 86, 89, 90];
        Assert.Multiple(() =>
        {
            Assert.That(KernelCompiler.TargetFor("sm_90", supported), Is.EqualTo("sm_90"));
            Assert.That(KernelCompiler.TargetFor("sm_100", supported), Is.EqualTo("compute_90"));
            Assert.That(KernelCompiler.TargetFor("sm_87", supported), Is.EqualTo("compute_86"));
            Assert.Throws<ArgumentException>(() => KernelCompiler.TargetFor("sm_70", supported));
            Assert.Throws<ArgumentException>(() => KernelCompiler.TargetFor("gfx90a", supported));
        });
    }

    [Test]
    public void Disk_entry_round_trips()
    {
        var program = Entry("abc");
        var decoded = KernelDiskCache.Decode(KernelDiskCache.Encode(program), "abc");
        Assert.That(decoded, Is.Not.Null);
        Assert.Multiple(() =>
        {
            Assert.That(decoded!.Image, Is.EqualTo(program.Image));
            Assert.That(decoded.LoweredNames, Is.EqualTo(program.LoweredNames));
            Assert.That(decoded.Target, Is.EqualTo("sm_90"));
            Assert.That(decoded.Log, Is.EqualTo("warning: x"));
            Assert.That(decoded.Origin, Is.EqualTo(CompileOrigin.DiskCache));
        });
    }

    [Test]
    public void Truncated_flipped_foreign_or_empty_entries_are_rejected()
    {
        byte[] good = KernelDiskCache.Encode(Entry("abc"));
        byte[] flipped = (byte[])good.Clone();
        flipped[good.Length / 2] ^= 0x40;
        Assert.Multiple(() =>
        {
            Assert.That(KernelDiskCache.Decode(good[..^1], "abc"), Is.Null, "truncated by one byte");
            Assert.That(KernelDiskCache.Decode(good[..20], "abc"), Is.Null, "truncated to the header");
            Assert.That(KernelDiskCache.Decode(flipped, "abc"), Is.Null, "one bit flipped");
            Assert.That(KernelDiskCache.Decode([], "abc"), Is.Null, "empty");
            Assert.That(KernelDiskCache.Decode(good, "other"), Is.Null, "another key's entry");
        });
    }

    [Test]
    public void A_corrupt_file_on_disk_is_a_miss_and_is_removed()
    {
        using var dir = new TempDirectory();
        var cache = new KernelDiskCache(dir.Path);
        cache.TryWrite(Entry("abc"));
        Assert.That(cache.TryRead("abc"), Is.Not.Null);
        var path = cache.PathFor("abc");
        File.WriteAllBytes(path, File.ReadAllBytes(path)[..^10]);
        Assert.Multiple(() =>
        {
            Assert.That(cache.TryRead("abc"), Is.Null);
            Assert.That(File.Exists(path), Is.False);
        });
    }

    [Test]
    public void Concurrent_writers_leave_one_complete_entry_and_no_temporary_files()
    {
        using var dir = new TempDirectory();
        var cache = new KernelDiskCache(dir.Path);
        var failures = new ConcurrentBag<string>();
        Parallel.For(0, 32, i =>
        {
            if (!cache.TryWrite(Entry("same")))
            {
                failures.Add(cache.Warning ?? "a write failed without a warning");
            }
            if (cache.TryRead("same") is null)
            {
                failures.Add("a reader saw a partial entry");
            }
        });
        Assert.Multiple(() =>
        {
            Assert.That(failures, Is.Empty);
            Assert.That(Directory.GetFiles(dir.Path), Has.Length.EqualTo(1));
            Assert.That(cache.TryRead("same"), Is.Not.Null);
        });
    }

    [Test]
    [Category("Kernels")]
    public void Compiler_caches_in_memory_then_on_disk_and_recovers_a_corrupted_entry()
    {
        Requires.Nvrtc();
        using var dir = new TempDirectory();
        var program = RopeProgram();
        var first = new KernelCompiler(dir.Path);
        var compiled = first.Compile(program, "sm_80");
        var again = first.Compile(program, "sm_80");
        Assert.Multiple(() =>
        {
            Assert.That(compiled.Origin, Is.EqualTo(CompileOrigin.Compiled));
            Assert.That(again.Origin, Is.EqualTo(CompileOrigin.Memory));
            Assert.That(first.CompilationCount, Is.EqualTo(1));
        });

        var fromDisk = new KernelCompiler(dir.Path).Compile(program, "sm_80");
        Assert.That(fromDisk.Origin, Is.EqualTo(CompileOrigin.DiskCache));
        Assert.That(fromDisk.Image, Is.EqualTo(compiled.Image));

        // Corrupt the entry: flip a byte inside the CUBIN. A new process (compiler) must recompile.
        string file = Directory.GetFiles(dir.Path, "*.kernel").Single();
        byte[] bytes = File.ReadAllBytes(file);
        bytes[bytes.Length / 2] ^= 0xFF;
        File.WriteAllBytes(file, bytes);
        var recovering = new KernelCompiler(dir.Path);
        var recovered = recovering.Compile(program, "sm_80");
        Assert.Multiple(() =>
        {
            Assert.That(recovered.Origin, Is.EqualTo(CompileOrigin.Compiled));
            Assert.That(recovering.CompilationCount, Is.EqualTo(1));
            Assert.That(new KernelCompiler(dir.Path).Compile(program, "sm_80").Origin, Is.EqualTo(CompileOrigin.DiskCache), "rewritten whole");
        });
    }

    [Test]
    [Category("Kernels")]
    public void Cache_directory_comes_from_the_environment_variable()
    {
        string? saved = Environment.GetEnvironmentVariable(KernelCompiler.CacheVariable);
        try
        {
            Environment.SetEnvironmentVariable(KernelCompiler.CacheVariable, "/tmp/attention-native-test-cache");
            Assert.That(KernelCompiler.DefaultCacheDirectory, Is.EqualTo("/tmp/attention-native-test-cache"));
            Environment.SetEnvironmentVariable(KernelCompiler.CacheVariable, null);
            Assert.That(KernelCompiler.DefaultCacheDirectory, Does.EndWith(Path.Combine("attention-native", "kernels")));
        }
        finally
        {
            Environment.SetEnvironmentVariable(KernelCompiler.CacheVariable, saved);
        }
    }

    private static KernelProgram RopeProgram() => KernelCatalog.All.Single(p => p.SourceName == "rope.cu");

    private static CompiledProgram Entry(string key) =>
        new(key, "sm_90", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], new Dictionary<string, string> { ["k<float>"] = "_Z1kIfEvv" }, "warning: x");
}

internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "attention-native-tests-" + Guid.NewGuid().ToString("N"));
        // Private whatever the umask: the kernel cache refuses a folder others can write.
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(Path);
        }
        else
        {
            Directory.CreateDirectory(Path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    public string Path { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

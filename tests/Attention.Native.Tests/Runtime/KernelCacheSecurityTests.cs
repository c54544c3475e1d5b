using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Tracing;
using System.Runtime.Versioning;
using System.Security.Cryptography;
using System.Text;
using Attention.Native.Ops;
using Attention.Native.Runtime;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Runtime;

/// <summary>Issue 13 item 5: the on-disk kernel cache only trusts a private folder, only reads regular files of
/// bounded size whose length fields agree, deletes what it cannot use, and warns once when it cannot cache.</summary>
[NonParallelizable]
public class KernelCacheSecurityTests
{
    private const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    [Test]
    public void Without_a_usable_home_the_default_folder_is_the_users_own_under_temp_not_a_shared_one()
    {
        string temp = Path.GetTempPath();
        string own = Path.Combine(temp, "attention-native-1234");
        string home = Path.GetTempPath(); // any existing folder stands in for a home
        Assert.Multiple(() =>
        {
            Assert.That(KernelCacheFolder.DefaultFor(null, null, null, temp, 1234), Is.EqualTo(own), "HOME unset, no passwd home");
            Assert.That(KernelCacheFolder.DefaultFor(null, null, "", temp, 1234), Is.EqualTo(own), "empty home");
            Assert.That(KernelCacheFolder.DefaultFor(null, null, "relative", temp, 1234), Is.EqualTo(own), "relative home");
            Assert.That(KernelCacheFolder.DefaultFor(null, null, "/", temp, 1234), Is.EqualTo(own), "home is /");
            Assert.That(KernelCacheFolder.DefaultFor(null, null, "/nonexistent-" + Guid.NewGuid().ToString("N"), temp, 1234), Is.EqualTo(own), "nobody's /nonexistent");
            Assert.That(KernelCacheFolder.DefaultFor(null, "cache", home, temp, 1234), Is.EqualTo(Path.Combine(home, ".cache", "attention-native", "kernels")), "a relative XDG_CACHE_HOME is ignored");
            Assert.That(KernelCacheFolder.DefaultFor(null, "/xdg", home, temp, 1234), Is.EqualTo(Path.Combine("/xdg", "attention-native", "kernels")));
            Assert.That(KernelCacheFolder.DefaultFor("/explicit", "/xdg", home, temp, 1234), Is.EqualTo("/explicit"));
        });
    }

    [Test]
    [SupportedOSPlatform("linux")] // the test ignores itself elsewhere
    public void Per_user_folders_are_created_0700_named_ones_0755_and_entries_0644()
    {
        RequireLinux();
        using var temp = new TempDirectory();
        string fallback = KernelCacheFolder.DefaultFor(null, null, null, temp.Path, UnixFileStatus.EffectiveUserId);
        string xdg = Path.Combine(temp.Path, "xdg");
        string nested = KernelCacheFolder.DefaultFor(null, xdg, null, temp.Path, UnixFileStatus.EffectiveUserId);
        string named = Path.Combine(temp.Path, "deploy", "kernels");
        var cache = new KernelDiskCache(fallback);
        Assert.That(cache.TryWrite(Entry("abc")), Is.True, cache.Warning);
        Assert.That(new KernelDiskCache(nested).TryWrite(Entry("abc")), Is.True);
        // A named folder: a deployment step fills it, a service running as another user reads it.
        Assert.That(new KernelDiskCache(named, KernelCacheFolder.Chosen).TryWrite(Entry("abc")), Is.True);
        var readable = KernelCacheFolder.Chosen;
        Assert.Multiple(() =>
        {
            Assert.That(File.GetUnixFileMode(fallback), Is.EqualTo(Private), fallback);
            Assert.That(UnixFileStatus.Of(fallback, followLinks: false).Owner, Is.EqualTo(UnixFileStatus.EffectiveUserId));
            Assert.That(File.GetUnixFileMode(cache.PathFor("abc")), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead));
            foreach (var level in new[] { xdg, Path.Combine(xdg, "attention-native"), nested })
            {
                Assert.That(File.GetUnixFileMode(level), Is.EqualTo(Private), level);
            }
            Assert.That(File.GetUnixFileMode(named), Is.EqualTo(readable), named);
            Assert.That(File.GetUnixFileMode(Path.GetDirectoryName(named)!), Is.EqualTo(readable));
        });
    }

    [TestCase(0b111_111_111, "writable by others")]
    [TestCase(0b111_111_000, "writable by others")]
    [TestCase(0b111_101_010, "writable by others")]
    [SupportedOSPlatform("linux")] // the test ignores itself elsewhere
    public void A_folder_others_can_write_is_refused_its_entries_neither_read_nor_written(int mode, string reason)
    {
        RequireLinux();
        using var dir = new TempDirectory();
        File.SetUnixFileMode(dir.Path, (UnixFileMode)mode);
        AssertRefused(dir.Path, reason);
    }

    [Test]
    [SupportedOSPlatform("linux")] // the test ignores itself elsewhere
    public void A_folder_owned_by_another_user_is_refused()
    {
        RequireRoot();
        using var dir = new TempDirectory();
        File.SetUnixFileMode(dir.Path, Private | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        Run("chown", "65534", dir.Path);
        AssertRefused(dir.Path, "owned by uid 65534");
    }

    [Test]
    [SupportedOSPlatform("linux")] // the test ignores itself elsewhere
    public void A_symbolic_link_to_the_folder_is_followed_only_when_the_link_is_the_users_own()
    {
        RequireRoot();
        using var dir = new TempDirectory();
        string target = Path.Combine(dir.Path, "target");
        Directory.CreateDirectory(target, Private);
        string ours = Path.Combine(dir.Path, "ours");
        string theirs = Path.Combine(dir.Path, "theirs");
        File.CreateSymbolicLink(ours, target);
        File.CreateSymbolicLink(theirs, target);
        Run("chown", "-h", "65534", theirs);
        File.WriteAllBytes(Path.Combine(target, "abc.kernel"), KernelDiskCache.Encode(Entry("abc")));
        Assert.That(new KernelDiskCache(ours).TryRead("abc"), Is.Not.Null, "a link of one's own (~/.cache on another disk) is fine");
        AssertRefused(theirs, "symbolic link owned by uid 65534");
    }

    [Test]
    public void A_fifo_entry_is_a_miss_that_does_not_block_and_is_removed()
    {
        RequireLinux();
        using var dir = new TempDirectory();
        var cache = new KernelDiskCache(dir.Path);
        string path = cache.PathFor("abc");
        Run("mkfifo", path);
        var read = Task.Run(() => cache.TryRead("abc"));
        bool finished = read.Wait(TimeSpan.FromSeconds(10));
        if (!finished)
        {
            using var writer = new FileStream(path, FileMode.Open, FileAccess.Write); // release the blocked reader
        }
        Assert.Multiple(() =>
        {
            Assert.That(finished, Is.True, "opening a FIFO for reading blocks until a writer comes");
            Assert.That(read.Result, Is.Null);
            Assert.That(File.Exists(path), Is.False, "removed");
        });
    }

    [Test]
    public void A_symbolic_link_entry_is_a_miss_read_through_to_nothing_and_removed()
    {
        RequireLinux();
        using var dir = new TempDirectory();
        using var elsewhere = new TempDirectory();
        var cache = new KernelDiskCache(dir.Path);
        // A link to a valid entry: whoever could plant the link chose what it points at.
        string valid = Path.Combine(elsewhere.Path, "abc.kernel");
        File.WriteAllBytes(valid, KernelDiskCache.Encode(Entry("abc")));
        File.CreateSymbolicLink(cache.PathFor("abc"), valid);
        // A link to /dev/zero: reading it would never end. It must not even be opened.
        File.CreateSymbolicLink(cache.PathFor("zero"), "/dev/zero");
        var zero = Task.Run(() => cache.TryRead("zero"));
        bool finished = zero.Wait(TimeSpan.FromSeconds(10));
        Assert.Multiple(() =>
        {
            Assert.That(cache.TryRead("abc"), Is.Null, "link to a valid entry");
            Assert.That(Path.Exists(cache.PathFor("abc")), Is.False, "link removed");
            Assert.That(File.Exists(valid), Is.True, "its target left alone");
            Assert.That(finished, Is.True, "a link to /dev/zero is refused without reading");
            Assert.That(zero.Result, Is.Null);
            Assert.That(Path.Exists(cache.PathFor("zero")), Is.False, "link removed");
        });
    }

    [Test]
    [SupportedOSPlatform("linux")] // the test ignores itself elsewhere
    public void An_entry_others_can_write_is_a_miss_and_removed()
    {
        RequireLinux();
        using var dir = new TempDirectory();
        var cache = new KernelDiskCache(dir.Path);
        Assert.That(cache.TryWrite(Entry("abc")), Is.True);
        File.SetUnixFileMode(cache.PathFor("abc"), (UnixFileMode)0b110_110_110);
        Assert.Multiple(() =>
        {
            Assert.That(cache.TryRead("abc"), Is.Null, "a valid entry others could have rewritten");
            Assert.That(File.Exists(cache.PathFor("abc")), Is.False);
        });
    }

    [Test]
    [SupportedOSPlatform("linux")] // the test ignores itself elsewhere
    public void An_entry_owned_by_another_user_is_a_miss_and_removed()
    {
        RequireRoot();
        using var dir = new TempDirectory();
        var cache = new KernelDiskCache(dir.Path);
        Assert.That(cache.TryWrite(Entry("abc")), Is.True);
        Run("chown", "65534", cache.PathFor("abc"));
        Assert.Multiple(() =>
        {
            Assert.That(cache.TryRead("abc"), Is.Null);
            Assert.That(File.Exists(cache.PathFor("abc")), Is.False);
        });
    }

    [Test]
    public void An_entry_over_the_size_cap_is_deleted_without_being_read()
    {
        using var dir = new TempDirectory();
        var cache = new KernelDiskCache(dir.Path);
        var huge = new CompiledProgram("big", "sm_90", new byte[KernelDiskCache.MaxEntryBytes], new Dictionary<string, string>(), "");
        File.WriteAllBytes(cache.PathFor("big"), KernelDiskCache.Encode(huge)); // valid, but over the cap with its header
        Assert.Multiple(() =>
        {
            Assert.That(cache.TryRead("big"), Is.Null);
            Assert.That(File.Exists(cache.PathFor("big")), Is.False);
        });
    }

    private static IEnumerable<TestCaseData> BadLengths()
    {
        byte[] image = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        yield return new TestCaseData(Body(imageLength: -1, image: image)).SetName("Image length -1 is rejected and the entry deleted");
        yield return new TestCaseData(Body(imageLength: 11, image: image)).SetName("Image length past the body is rejected and the entry deleted");
        yield return new TestCaseData(Body(imageLength: int.MaxValue, image: image)).SetName("Image length int.MaxValue is rejected and the entry deleted");
        yield return new TestCaseData(Body(imageLength: 9, image: image)).SetName("Image length short of the body is rejected and the entry deleted");
        yield return new TestCaseData(Body(imageLength: 0, image: [])).SetName("An empty image is rejected and the entry deleted");
        yield return new TestCaseData(Body(nameCount: -1, image: image)).SetName("A negative name count is rejected and the entry deleted");
        yield return new TestCaseData(Body(image: image, logLengthPrefix: [0xFF, 0xFF, 0xFF, 0xFF, 0x0F])).SetName("A negative string length is rejected and the entry deleted");
        yield return new TestCaseData(Body(image: image, logLengthPrefix: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])).SetName("A malformed string length is rejected and the entry deleted");
    }

    [TestCaseSource(nameof(BadLengths))]
    public void Length_fields_are_checked_against_the_body_even_under_a_valid_checksum(byte[] body)
    {
        using var dir = new TempDirectory();
        var cache = new KernelDiskCache(dir.Path);
        // The helper's body is well formed when its lengths are: a rejection below comes from the bad length.
        Assert.That(KernelDiskCache.Decode(Frame(Body(image: [1, 2, 3])), "abc")?.Image, Is.EqualTo(new byte[] { 1, 2, 3 }));
        File.WriteAllBytes(cache.PathFor("abc"), Frame(body));
        Assert.That(() => cache.TryRead("abc"), Throws.Nothing);
        Assert.Multiple(() =>
        {
            Assert.That(File.Exists(cache.PathFor("abc")), Is.False, "deleted, so the next run recompiles instead of failing again");
            Assert.That(KernelDiskCache.Decode(Frame(body), "abc"), Is.Null);
        });
    }

    [Test]
    public void A_folder_that_cannot_be_created_warns_once_however_many_reads_and_writes()
    {
        using var dir = new TempDirectory();
        string file = Path.Combine(dir.Path, "a-file");
        File.WriteAllText(file, "not a folder"); // root writes anywhere, but nobody makes a folder inside a file
        string cacheDirectory = Path.Combine(file, "kernels");
        using var warnings = new CacheWarnings();
        var cache = new KernelDiskCache(cacheDirectory);
        for (int i = 0; i < 20; i++)
        {
            Assert.That(cache.TryRead("k" + i), Is.Null);
            Assert.That(cache.TryWrite(Entry("k" + i)), Is.False);
        }
        Assert.Multiple(() =>
        {
            Assert.That(warnings.For(cacheDirectory), Has.Count.EqualTo(1));
            Assert.That(warnings.For(cacheDirectory).Single(), Does.Contain("cannot create the folder"));
            Assert.That(cache.Warning, Does.Contain(cacheDirectory).And.Contain("cannot create the folder"));
        });
    }

    [Test]
    public void An_entry_that_cannot_be_written_warns_once_and_other_entries_still_write()
    {
        using var dir = new TempDirectory();
        using var warnings = new CacheWarnings();
        var cache = new KernelDiskCache(dir.Path);
        Directory.CreateDirectory(cache.PathFor("blocked")); // a folder where the entry goes: the rename fails
        for (int i = 0; i < 5; i++)
        {
            Assert.That(cache.TryWrite(Entry("blocked")), Is.False);
        }
        Assert.Multiple(() =>
        {
            Assert.That(cache.TryWrite(Entry("other")), Is.True);
            Assert.That(warnings.For(dir.Path), Has.Count.EqualTo(1));
            Assert.That(cache.Warning, Does.Contain("cannot be written"));
            Assert.That(Directory.GetFiles(dir.Path, "*.tmp"), Is.Empty, "no temporary file left behind");
        });
    }

    [Test]
    [Category("Kernels")]
    public void A_compiler_with_an_unwritable_cache_compiles_every_program_and_warns_once()
    {
        Requires.Nvrtc();
        using var dir = new TempDirectory();
        string file = Path.Combine(dir.Path, "a-file");
        File.WriteAllText(file, "not a folder");
        string cacheDirectory = Path.Combine(file, "kernels");
        using var warnings = new CacheWarnings();
        var compiler = new KernelCompiler(cacheDirectory);
        var programs = KernelCatalog.All.Where(p => p.SourceName is "rope.cu" or "rmsnorm.cu").ToList();
        foreach (var program in programs)
        {
            Assert.That(compiler.Compile(program, "sm_80").Origin, Is.EqualTo(CompileOrigin.Compiled));
        }
        Assert.That(new KernelCompiler(cacheDirectory).Compile(programs[0], "sm_80").Origin, Is.EqualTo(CompileOrigin.Compiled));
        Assert.Multiple(() =>
        {
            Assert.That(programs, Has.Count.EqualTo(2));
            Assert.That(compiler.CompilationCount, Is.EqualTo(2));
            Assert.That(compiler.CacheWarning, Does.Contain("cannot create the folder"));
            Assert.That(warnings.For(cacheDirectory), Has.Count.EqualTo(2), "one per compiler, not one per kernel");
        });
    }

    [Test]
    [Category("Kernels")]
    [SupportedOSPlatform("linux")] // the test ignores itself elsewhere
    public void A_compiler_creates_its_default_folder_0700_and_a_named_one_0755()
    {
        RequireLinux();
        Requires.Nvrtc();
        using var dir = new TempDirectory();
        string xdg = Path.Combine(dir.Path, "xdg");
        string named = Path.Combine(dir.Path, "named");
        var program = KernelCatalog.All.Single(p => p.SourceName == "rope.cu");
        string? savedXdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string? savedCache = Environment.GetEnvironmentVariable(KernelCompiler.CacheVariable);
        try
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", xdg);
            Environment.SetEnvironmentVariable(KernelCompiler.CacheVariable, null);
            var perUser = new KernelCompiler();
            perUser.Compile(program, "sm_80");
            new KernelCompiler(named).Compile(program, "sm_80");
            Assert.Multiple(() =>
            {
                Assert.That(perUser.CacheDirectory, Is.EqualTo(Path.Combine(xdg, "attention-native", "kernels")));
                Assert.That(perUser.CacheWarning, Is.Null);
                foreach (var level in new[] { xdg, Path.Combine(xdg, "attention-native"), perUser.CacheDirectory })
                {
                    Assert.That(File.GetUnixFileMode(level), Is.EqualTo(Private), level);
                }
                Assert.That(File.GetUnixFileMode(named), Is.EqualTo(KernelCacheFolder.Chosen), "a service running as another user reads what a deployment step compiled");
                Assert.That(Directory.GetFiles(named, "*.kernel"), Has.Length.EqualTo(1));
            });
        }
        finally
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", savedXdg);
            Environment.SetEnvironmentVariable(KernelCompiler.CacheVariable, savedCache);
        }
    }

    private static void AssertRefused(string directory, string reason)
    {
        string planted = Path.Combine(directory, "abc.kernel");
        File.WriteAllBytes(planted, KernelDiskCache.Encode(Entry("abc"))); // a valid entry: the checksum cannot tell
        using var warnings = new CacheWarnings();
        var cache = new KernelDiskCache(directory);
        Assert.Multiple(() =>
        {
            Assert.That(cache.TryRead("abc"), Is.Null, "a planted entry is not loaded");
            Assert.That(cache.TryWrite(Entry("def")), Is.False);
            Assert.That(cache.TryRead("abc"), Is.Null);
            Assert.That(File.Exists(cache.PathFor("def")), Is.False, "nothing written");
            Assert.That(File.Exists(planted), Is.True, "a refused folder is left alone");
            Assert.That(warnings.For(directory), Has.Count.EqualTo(1));
            Assert.That(cache.Warning, Does.Contain(reason));
        });
    }

    private static byte[] Body(int? imageLength = null, byte[]? image = null, int nameCount = 1, byte[]? logLengthPrefix = null)
    {
        image ??= [1, 2, 3];
        using var body = new MemoryStream();
        using (var w = new BinaryWriter(body, Encoding.UTF8, leaveOpen: true))
        {
            w.Write("abc");
            w.Write("sm_90");
            if (logLengthPrefix is null)
            {
                w.Write("");
            }
            else
            {
                w.Write(logLengthPrefix);
            }
            w.Write(nameCount);
            w.Write("k<float>");
            w.Write("_Z1kIfEvv");
            w.Write(imageLength ?? image.Length);
            w.Write(image);
        }
        return body.ToArray();
    }

    // The file format, written out here so the tests do not lean on the code under test: "ANKC", version 1,
    // body length, body, SHA-256 of the body.
    private static byte[] Frame(byte[] body)
    {
        using var file = new MemoryStream();
        using (var w = new BinaryWriter(file))
        {
            w.Write("ANKC"u8);
            w.Write(1);
            w.Write((long)body.Length);
            w.Write(body);
            w.Write(SHA256.HashData(body));
        }
        return file.ToArray();
    }

    private static CompiledProgram Entry(string key) =>
        new(key, "sm_90", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], new Dictionary<string, string> { ["k<float>"] = "_Z1kIfEvv" }, "");

    private static void RequireLinux()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Ignore("Linux file types and modes");
        }
    }

    private static void RequireRoot()
    {
        RequireLinux();
        if (UnixFileStatus.EffectiveUserId != 0)
        {
            Assert.Ignore("needs root to give a file to another user");
        }
    }

    private static void Run(string command, params string[] args)
    {
        var start = new ProcessStartInfo(command) { RedirectStandardError = true };
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }
        using var process = Process.Start(start)!;
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.Zero, $"{command} {string.Join(' ', args)}: {error}");
    }

    /// <summary>The library's cache warnings, as a user would see them: through its event source.</summary>
    private sealed class CacheWarnings : EventListener
    {
        private readonly ConcurrentQueue<(string Directory, string Reason)> _events = new();

        public List<string> For(string directory) => [.. _events.Where(e => e.Directory == directory).Select(e => e.Reason)];

        protected override void OnEventSourceCreated(EventSource eventSource)
        {
            if (eventSource.Name == AttentionNativeEventSource.SourceName)
            {
                EnableEvents(eventSource, EventLevel.Warning);
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs eventData)
        {
            if (eventData.EventId == AttentionNativeEventSource.KernelCacheUnavailableId && eventData.Payload is [string directory, string reason])
            {
                _events.Enqueue((directory, reason));
            }
        }
    }
}

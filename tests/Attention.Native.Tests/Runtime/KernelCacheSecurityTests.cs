using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Attention.Native.Runtime;

namespace Attention.Native.Tests.Runtime;

/// <summary>Issue 13 item 5: the on-disk kernel cache only reads regular files of bounded size whose length
/// fields agree, and deletes what it cannot use.</summary>
[NonParallelizable]
public class KernelCacheSecurityTests
{
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
}

using System.Diagnostics;
using Attention.Native.IO;
using Attention.Native.Runtime;
using Attention.Native.Tests.Runtime;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.IO;

/// <summary>The path entries of <see cref="SafeTensors"/> refuse what is not a regular file before opening it, and never lose one.</summary>
public class SafeTensorsFileTests
{
    private static KeyValuePair<string, Tensor>[] One(Tensor t) => [new("t", t)];

    [Test]
    public void Read_of_a_fifo_is_refused_without_blocking_and_a_link_to_a_file_is_read()
    {
        using var dir = new TempDirectory();
        string fifo = Fifo.Create(Path.Combine(dir.Path, "w.safetensors"));
        var e = Fifo.Within(fifo, 10, () => Assert.Throws<ArgumentException>(() => SafeTensors.Read(fifo).Dispose()))!;
        Assert.That(e.Message, Does.StartWith("path: expected a regular file, actual a FIFO"));

        using var t = Backend.Cpu.FromArray([1f, 2f, 3f], new Shape(3));
        string file = Path.Combine(dir.Path, "file.safetensors");
        SafeTensors.Write(file, One(t));
        string link = Path.Combine(dir.Path, "link.safetensors");
        File.CreateSymbolicLink(link, file);
        using var read = SafeTensors.Read(link);
        Assert.That(read["t"].ToArray(), Is.EqualTo(new[] { 1f, 2f, 3f }), "a link to a regular file is read through");
    }

    [Test]
    public void Write_over_a_fifo_a_link_or_a_folder_is_refused_and_leaves_it_as_it_was()
    {
        using var dir = new TempDirectory();
        using var t = Backend.Cpu.Zeros(new Shape(2));
        string fifo = Fifo.Create(Path.Combine(dir.Path, "fifo"));
        string target = Path.Combine(dir.Path, "target");
        File.WriteAllText(target, "keep");
        string link = Path.Combine(dir.Path, "link");
        File.CreateSymbolicLink(link, target);
        string folder = Directory.CreateDirectory(Path.Combine(dir.Path, "folder")).FullName;
        foreach (var (path, kind) in new[] { (fifo, "a FIFO"), (link, "a symbolic link"), (folder, "a folder") })
        {
            var e = Assert.Throws<ArgumentException>(() => SafeTensors.Write(path, One(t)))!;
            Assert.That(e.Message, Does.StartWith($"path: expected a regular file to replace or a new name, actual {kind}"));
        }
        Assert.Multiple(() =>
        {
            Assert.That(new FileInfo(link).LinkTarget, Is.EqualTo(target));
            Assert.That(File.ReadAllText(target), Is.EqualTo("keep"));
            Assert.That(LocalFile.Kind(fifo, followLinks: false), Is.EqualTo(UnixFileKind.Fifo));
            Assert.That(Directory.GetFiles(dir.Path, "*.tmp"), Is.Empty);
        });
    }

    [Test]
    public void Write_to_a_240_character_name_succeeds_and_leaves_no_temporary_file()
    {
        using var dir = new TempDirectory();
        using var t = Backend.Cpu.FromArray([4f], new Shape(1));
        // 'é' is two UTF-8 bytes: these 240 characters are 250 bytes, so the temporary name must be shortened by bytes, not characters.
        string path = Path.Combine(dir.Path, new string('é', 10) + new string('n', 230));
        SafeTensors.Write(path, One(t));
        using var read = SafeTensors.Read(path);
        Assert.Multiple(() =>
        {
            Assert.That(read["t"].ToArray(), Is.EqualTo(new[] { 4f }));
            Assert.That(Directory.GetFileSystemEntries(dir.Path), Is.EqualTo(new[] { path }));
        });
    }

    [Test]
    public void Same_file_is_decided_by_identity_not_spelling()
    {
        using var dir = new TempDirectory();
        string a = Path.Combine(dir.Path, "a");
        string b = Path.Combine(dir.Path, "b");
        File.WriteAllText(a, "a");
        File.WriteAllText(b, "a");
        string hard = Path.Combine(dir.Path, "hard");
        using (var ln = Process.Start(new ProcessStartInfo("ln") { ArgumentList = { a, hard } })!)
        {
            ln.WaitForExit();
            Assert.That(ln.ExitCode, Is.Zero, "ln");
        }
        Assert.Multiple(() =>
        {
            Assert.That(LocalFile.SameFile(a, Path.Combine(dir.Path, ".", "..", Path.GetFileName(dir.Path), "a")), Is.True, "another spelling");
            Assert.That(LocalFile.SameFile(a, hard), Is.True, "a hard link");
            Assert.That(LocalFile.SameFile(a, b), Is.False, "equal contents, different files");
        });
    }
}

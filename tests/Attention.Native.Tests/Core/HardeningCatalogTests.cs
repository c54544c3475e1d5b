using System.Globalization;
using Attention.Native.IO;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;
using static Attention.Native.Tests.Cli.AttnRunTests;

namespace Attention.Native.Tests.Core;

/// <summary>
/// Issue 13 item 7: one table of the hardening cases of items 1–6, each run in a fresh folder holding a small model's files.
/// Each must give its typed error (the CLI: exit 2 and exactly one stderr line) and leave every file in the folder as it was,
/// with nothing added. The focused tests of each item live beside the code they test; this is the catalogue.
/// </summary>
public class HardeningCatalogTests
{
    /// <summary>A case: <paramref name="Prepare"/> sets up its files (before the snapshot), <paramref name="Act"/> is the call under test.</summary>
    internal sealed record Case(string Name, Type? Expected, Func<Files, string?> Prepare, Func<Files, string?, object?> Act);

    private static readonly Shape Wrapping = new(2147418113, 429509837, 5);

    private static readonly Dictionary<string, Case> Catalogue = All().ToDictionary(c => c.Name, StringComparer.Ordinal);

    private static string[] Names() => [.. Catalogue.Keys];

    private static IEnumerable<Case> All()
    {
        static Case Lib(string name, Type expected, Func<Files, object?> act) => new(name, expected, _ => null, (f, _) => act(f));
        static Case Cli(string name, Func<Files, string[]> args) => new(name, null, _ => null, (f, _) => args(f));
        static string[] WithOut(Files f, string path)
        {
            var a = f.Args("--grad", f.Grad);
            a[Array.IndexOf(a, "--out") + 1] = path;
            return a;
        }
        static string[] WithConfig(Files f, string path)
        {
            var a = f.Args();
            a[Array.IndexOf(a, "--config") + 1] = path;
            return a;
        }

        // 1. Memory safety.
        yield return Lib("1 Zeros of 2^62+1 elements", typeof(ArgumentException), _ => Backend.Cpu.Zeros(Wrapping));
        yield return Lib("1 Shape past 64 bits", typeof(ArgumentException), _ => new Shape(int.MaxValue, int.MaxValue, int.MaxValue));
        yield return Lib("1 FromArray of a wrapping shape", typeof(ArgumentException), _ => Backend.Cpu.FromArray(new float[4], Wrapping));
        // 2. No lost files.
        yield return Cli("2 --out equal to --input", f => WithOut(f, f.Input));
        yield return Cli("2 --out equal to --weights", f => WithOut(f, f.Weights));
        yield return Cli("2 --out equal to --config", f => WithOut(f, f.Config));
        yield return Cli("2 --out equal to --grad", f => WithOut(f, f.Grad));
        yield return Cli("2 --out a symlink", f =>
        {
            string link = Path.Combine(f.Dir, "link.safetensors");
            File.CreateSymbolicLink(link, f.Input);
            return WithOut(f, link);
        });
        yield return Cli("2 --out a FIFO", f => WithOut(f, Fifo.Create(Path.Combine(f.Dir, "pipe"))));
        yield return Cli("4 --out empty", f => WithOut(f, ""));
        // 3. No hangs, no runaway memory.
        yield return Cli("3 --config a FIFO", f => WithConfig(f, Fifo.Create(Path.Combine(f.Dir, "cfg-pipe"))));
        yield return Cli("3 --config /dev/urandom", f => WithConfig(f, "/dev/urandom"));
        yield return Cli("3 --config over 1 MiB", f =>
        {
            string big = Path.Combine(f.Dir, "big.json");
            File.WriteAllText(big, "{\"d_model\": 64" + new string(' ', 1 << 20) + "}");
            return WithConfig(f, big);
        });
        yield return new Case("3 SafeTensors.Read of a FIFO", typeof(ArgumentException), f => Fifo.Create(Path.Combine(f.Dir, "w-pipe")), (_, fifo) => SafeTensors.Read(fifo!));
        // 4. Typed errors, keys named.
        yield return Lib("4 n_heads·head_dim past int", typeof(ArgumentException), _ => LayerConfig.Parse("gqa", """{"d_model": 64, "n_heads": 65536, "n_kv_heads": 1, "head_dim": 65536}"""));
        yield return Lib("4 CreateCache(int.MaxValue)", typeof(ArgumentException), f => ((CausalAttentionLayer)f.Layer).CreateCache(int.MaxValue));
        yield return Cli("4 --backend cuda without a driver", f => f.ArgsOn("cuda"));
        // 6. Misuse of passes and caches.
        yield return Lib("6 Backward of a disposed pass", typeof(ObjectDisposedException), f =>
        {
            var pass = f.Layer.ForwardForTraining(f.X);
            pass.Dispose();
            return pass.Backward(f.Dy);
        });
        yield return Lib("6 Backward after LoadParameters", typeof(InvalidOperationException), f =>
        {
            using var pass = f.Layer.ForwardForTraining(f.X);
            f.Layer.LoadParameters(f.Layer.Parameters);
            return pass.Backward(f.Dy);
        });
    }

    [TestCaseSource(nameof(Names))]
    public void Each_case_gives_its_typed_error_and_writes_nothing(string name)
    {
        var c = Catalogue[name];
        using var files = new Files("gqa");
        if (c.Name.StartsWith("4 --backend cuda", StringComparison.Ordinal) && Requires.CudaDeviceIfPresent() is not null)
        {
            Assert.Ignore("a CUDA driver is present here: --backend cuda is not an error");
        }
        string? prepared = c.Prepare(files);
        if (c.Expected is { } expected)
        {
            var before = Snapshot(files.Dir);
            var call = Task.Run(() => Dispose(c.Act(files, prepared)));
            bool finished = Task.WhenAny(call, Task.Delay(TimeSpan.FromSeconds(20))).Result == call;
            Assert.That(finished, Is.True, $"{c.Name}: still running after 20 s");
            var e = call.Exception?.InnerException;
            Assert.That(e, Is.TypeOf(expected), $"{c.Name}: {e}");
            Assert.That(Snapshot(files.Dir), Is.EqualTo(before), $"{c.Name}: the folder is as it was");
        }
        else
        {
            var args = (string[])c.Act(files, prepared)!;
            var before = Snapshot(files.Dir); // the case's own setup (a link, a FIFO, a big config) is part of "before"
            var run = Task.Run(() => Run(args));
            Assert.That(run.Wait(TimeSpan.FromSeconds(20)), Is.True, $"{c.Name}: attn run still running after 20 s");
            var (code, _, error) = run.Result;
            Assert.That(code, Is.EqualTo(2), $"{c.Name}: {error}");
            Assert.That(error.TrimEnd('\n').Split('\n'), Has.Length.EqualTo(1), $"{c.Name}: one line: {error}");
            Assert.That(error, Does.Not.Contain("   at "), $"{c.Name}: no stack trace");
            Assert.That(Snapshot(files.Dir), Is.EqualTo(before), $"{c.Name}: the folder is as it was");
        }
    }

    private static void Dispose(object? result)
    {
        if (result is IDisposable d)
        {
            d.Dispose();
        }
    }

    // Every entry's name, kind, link target, size and last write: a replaced, added or removed file shows.
    private static string[] Snapshot(string dir) => new DirectoryInfo(dir).EnumerateFileSystemInfos()
        .Select(i => string.Create(CultureInfo.InvariantCulture, $"{i.Name} {i.Attributes} {i.LinkTarget} {(i is FileInfo f ? f.Length : -1)} {i.LastWriteTimeUtc.Ticks}"))
        .Order(StringComparer.Ordinal)
        .ToArray();
}

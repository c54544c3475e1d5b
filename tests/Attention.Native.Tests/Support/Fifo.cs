using System.Diagnostics;

namespace Attention.Native.Tests.Support;

/// <summary>Named pipes for the tests that check nothing blocks on one.</summary>
internal static class Fifo
{
    /// <summary>Makes a FIFO at <paramref name="path"/> with mkfifo (ignores the test where there is none).</summary>
    public static string Create(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            Assert.Ignore("no FIFOs on Windows");
        }
        using var process = Process.Start(new ProcessStartInfo("mkfifo") { ArgumentList = { path }, RedirectStandardError = true })!;
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.Zero, $"mkfifo: {error}");
        return path;
    }

    /// <summary>
    /// <paramref name="action"/>'s result, failing the test if it takes longer than <paramref name="seconds"/>; a reader stuck
    /// on <paramref name="fifo"/> is then released by opening it for writing once, so the test run itself does not hang.
    /// </summary>
    public static T Within<T>(string fifo, double seconds, Func<T> action)
    {
        var task = Task.Run(action);
        if (!task.Wait(TimeSpan.FromSeconds(seconds)))
        {
            using (new FileStream(fifo, FileMode.Open, FileAccess.Write))
            {
            }
            Assert.Fail($"still blocked on the FIFO {fifo} after {seconds} s");
        }
        return task.Result;
    }
}

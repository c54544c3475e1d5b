using Attention.Native.Interop;

namespace Attention.Native.Tests.Interop;

public class NativeLibraryTests
{
    [Test]
    public void A_failed_load_lists_every_path_tried()
    {
        string[] names = ["libnvrtc.so.99", "libnvrtc-attention-native-missing.so"];
        var status = NativeLibraries.TryLoad(NativeLibraryKind.Nvrtc, names, ["/nonexistent/first"], ["/nonexistent/toolkit/lib64"]);
        var error = new NativeLibraryNotFoundException("nvrtc", status.Attempts);
        Assert.Multiple(() =>
        {
            Assert.That(status.IsLoaded, Is.False);
            Assert.That(status.Attempts, Has.Count.EqualTo(6));
            Assert.That(error.Message, Does.Contain("/nonexistent/first/libnvrtc.so.99 (no such file)"));
            Assert.That(error.Message, Does.Contain("/nonexistent/first/libnvrtc-attention-native-missing.so"));
            Assert.That(error.Message, Does.Contain("/nonexistent/toolkit/lib64/libnvrtc.so.99"));
            Assert.That(error.Message, Does.Contain("libnvrtc-attention-native-missing.so ("));
            Assert.That(status.Describe(), Does.StartWith("not found; tried: "));
        });
    }

    [Test]
    public void Versioned_names_are_tried_newest_first()
    {
        var names = NativeLibraries.CandidateNames(NativeLibraryKind.Nvrtc);
        var cublas = NativeLibraries.CandidateNames(NativeLibraryKind.Cublas);
        if (OperatingSystem.IsLinux())
        {
            Assert.That(names, Is.EqualTo(new[] { "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so" }));
            Assert.That(cublas, Is.EqualTo(new[] { "libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so" }));
        }
        Assert.That(NativeLibraries.CandidateNames(NativeLibraryKind.Cuda), Is.Not.Empty);
    }

    [Test]
    public void The_driver_library_is_reported_either_loaded_or_with_every_path_tried()
    {
        var status = NativeLibraries.Get(NativeLibraryKind.Cuda);
        if (status.IsLoaded)
        {
            Assert.That(File.Exists(status.Path) || !Path.IsPathRooted(status.Path), Is.True);
            return;
        }
        var e = Assert.Throws<NativeLibraryNotFoundException>(() => NativeLibraries.Require(NativeLibraryKind.Cuda));
        foreach (var name in NativeLibraries.CandidateNames(NativeLibraryKind.Cuda))
        {
            Assert.That(e!.Message, Does.Contain(name));
        }
    }

    [Test]
    public void Default_backend_says_why_it_is_what_it_is()
    {
        var backend = Backend.Default;
        Assert.That(Backend.DefaultReason, Is.Not.Empty);
        if (backend.Kind == BackendKind.Cpu && !NativeLibraries.Get(NativeLibraryKind.Cuda).IsLoaded
            && Environment.GetEnvironmentVariable(Backend.BackendVariable) is null)
        {
            Assert.That(Backend.DefaultReason, Does.Contain("libcuda").Or.Contain("nvcuda"));
        }
    }

    [Test]
    public void Nvrtc_is_loaded_with_its_builtins_when_installed()
    {
        var status = NativeLibraries.Get(NativeLibraryKind.Nvrtc);
        if (!status.IsLoaded)
        {
            Assert.Ignore($"no NVRTC library: {status.Describe()}");
        }
        Assert.That(status.Path, Does.Contain("nvrtc"));
        Assert.That(Native.Runtime.Nvrtc.Version.Major, Is.GreaterThanOrEqualTo(11));
        Assert.That(Native.Runtime.Nvrtc.SupportedArchs, Does.Contain(80).And.Contain(90));
    }
}

using Attention.Native.Interop;
using Attention.Native.Runtime;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>Device memory, streams, events and module loading on a real device.</summary>
[Category("Gpu")]
public class GpuRuntimeTests
{
    [Test]
    public void Device_properties_are_sane()
    {
        var gpu = Requires.CudaDevice();
        var d = gpu.Device;
        TestContext.Out.WriteLine($"[device] {d} driver {CudaDevice.DriverVersion} NVRTC {Nvrtc.VersionText} cuBLAS {gpu.Blas.Version} peak {d.PeakMemoryBandwidthGBps:F0} GB/s");
        Assert.Multiple(() =>
        {
            Assert.That(d.Name, Is.Not.Empty);
            Assert.That(d.ComputeCapabilityMajor, Is.GreaterThanOrEqualTo(5));
            Assert.That(d.MultiprocessorCount, Is.GreaterThan(0));
            Assert.That(d.TotalMemoryBytes, Is.GreaterThan(1L << 30));
            Assert.That(d.Arch, Does.Match(@"^sm_\d+$"));
        });
    }

    [Test]
    public void Buffers_upload_download_slice_zero_and_copy()
    {
        var gpu = Requires.CudaDevice();
        using var a = gpu.Context.Allocate<float>(1000);
        using var b = gpu.Context.Allocate<float>(1000);
        var values = Enumerable.Range(0, 1000).Select(i => (float)i).ToArray();
        a.Upload(values);
        Assert.That(a.ToArray(), Is.EqualTo(values));

        using (var slice = a.Slice(100, 10))
        {
            Assert.That(slice.ToArray(), Is.EqualTo(values[100..110]));
            slice.Zero(gpu.Stream);
        }
        var expected = (float[])values.Clone();
        Array.Clear(expected, 100, 10);
        Assert.That(a.ToArray(), Is.EqualTo(expected), "slice wrote through; disposing the slice freed nothing");

        a.CopyTo(b, gpu.Stream);
        var back = new float[1000];
        b.Download(back, gpu.Stream);
        Assert.That(back, Is.EqualTo(expected));
        Assert.That(a.Cast<byte>().Length, Is.EqualTo(4000));
    }

    [Test]
    public void Disposed_buffers_and_their_slices_throw_and_double_dispose_is_harmless()
    {
        var gpu = Requires.CudaDevice();
        var a = gpu.Context.Allocate<int>(16);
        var slice = a.Slice(0, 4);
        a.Dispose();
        a.Dispose();
        Assert.Multiple(() =>
        {
            Assert.That(a.IsDisposed && slice.IsDisposed, Is.True);
            Assert.Throws<ObjectDisposedException>(() => a.ToArray());
            Assert.Throws<ObjectDisposedException>(() => slice.ToArray());
            Assert.Throws<ObjectDisposedException>(() => _ = a.Pointer);
        });
    }

    [Test]
    public void Out_of_memory_is_an_exception_and_leaves_nothing_behind()
    {
        var gpu = Requires.CudaDevice();
        var (freeBefore, total) = gpu.Context.MemoryInfo();
        // Four times the device's memory, through the buffer API and through the tensor API (512 GiB).
        var e = Assert.Throws<CudaOutOfMemoryException>(() => gpu.Context.Allocate<float>(total));
        Assert.That(e!.StatusName, Is.EqualTo("CUDA_ERROR_OUT_OF_MEMORY"));
        Assert.That(e.RequestedBytes, Is.EqualTo(4 * total));
        Assert.Throws<CudaOutOfMemoryException>(() => gpu.Empty(new Shape(int.MaxValue, 64), DType.F32));
        var (freeAfter, _) = gpu.Context.MemoryInfo();
        Assert.That(freeAfter, Is.GreaterThanOrEqualTo(freeBefore - (64L << 20)), "no buffer left behind");
    }

    [Test]
    public void Events_time_work_on_the_stream()
    {
        var gpu = Requires.CudaDevice();
        using var start = new CudaEvent(gpu.Context);
        using var end = new CudaEvent(gpu.Context);
        // Zeroing 1 GiB cannot beat 20 TB/s (no device is that fast) nor, on any device, take a second: events that timed
        // nothing (recorded on another stream, or before the work was queued) give about 0 and fail the lower bound.
        const long Bytes = 1L << 30;
        using var buffer = gpu.Context.Allocate<byte>(Bytes);
        start.Record(gpu.Stream);
        buffer.Zero(gpu.Stream);
        end.Record(gpu.Stream);
        float elapsed = CudaEvent.ElapsedMilliseconds(start, end);
        Assert.That(elapsed, Is.GreaterThan(Bytes / 20e12 * 1e3).And.LessThan(1000f), "ms to zero 1 GiB");
    }

    [Test]
    public void A_kernel_compiles_once_per_process_and_runs()
    {
        var gpu = Requires.CudaDevice();
        using var x = gpu.FromArray([1f, 2f, 3f, 4f], new Shape(1, 1, 4));
        using var y = Native.Ops.Rope.Forward(x);
        Assert.That(y.ToArray()[0], Is.EqualTo(1f), "position 0 is the identity");
        var compiled = KernelCompiler.Shared.Compile(Native.Ops.KernelCatalog.All.Single(p => p.SourceName == "rope.cu"), gpu.Device.Arch);
        Assert.That(compiled.Origin, Is.EqualTo(CompileOrigin.Memory));
    }
}

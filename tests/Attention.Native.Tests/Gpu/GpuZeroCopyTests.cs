using Attention.Native.Interop;
using Attention.Native.Ops;
using Attention.Native.Runtime;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// Device memory and streams the caller owns: <see cref="CudaBackend.Wrap"/> over another owner's device memory (ops read it
/// in place and write into it; disposing the wrapper frees nothing), and backends created on the caller's stream
/// (<see cref="CudaBackend.Create(int, nint, KernelCompiler?)"/>), two of them running at once from two threads with their own
/// scratch. Results against the CPU within design.md's tolerances. Strided views (<see cref="Tensor.Transpose"/>) of device
/// memory: softmax attention reads and writes them in place, bitwise as on contiguous copies.
/// </summary>
[Category("Gpu")]
public class GpuZeroCopyTests
{
    private static readonly Shape QkvShape = new(2, 40, 4, 64);

    private static readonly AttentionOptions Causal = new(0.125, Causal: true);

    private static IEnumerable<TestCaseData> Cases() =>
        from dtype in GpuPair.StorageTypes select new TestCaseData(dtype).SetName($"Wrapped device memory {dtype}");

    [TestCaseSource(nameof(Cases))]
    public void Ops_read_and_write_wrapped_device_memory_in_place(DType dtype)
    {
        var gpu = Requires.CudaDevice();
        // "The caller's" memory: tensors another owner holds (here the same backend's, standing for another library's).
        using var q = GpuPair.Random(gpu, 11, QkvShape, dtype);
        using var k = GpuPair.Random(gpu, 12, QkvShape, dtype);
        using var v = GpuPair.Random(gpu, 13, QkvShape, dtype);
        using var oOwner = gpu.Zeros(QkvShape, dtype);
        using var lseOwner = gpu.Zeros(new Shape(2, 4, 40));
        using (var qw = gpu.Wrap(((DeviceTensor)q.Gpu).Pointer, QkvShape, dtype))
        using (var kw = gpu.Wrap(((DeviceTensor)k.Gpu).Pointer, QkvShape, dtype))
        using (var vw = gpu.Wrap(((DeviceTensor)v.Gpu).Pointer, QkvShape, dtype))
        using (var ow = gpu.Wrap(((DeviceTensor)oOwner).Pointer, QkvShape, dtype))
        using (var lw = gpu.Wrap(((DeviceTensor)lseOwner).Pointer, new Shape(2, 4, 40), DType.F32))
        {
            Assert.That(qw.IsExternal, Is.True);
            SoftmaxAttention.Forward(qw, kw, vw, Causal, null, ow, lw);
        }
        // The wrappers are gone; the owners' memory is still allocated and holds the op's output.
        using var reference = SoftmaxAttention.Forward(q.Cpu, k.Cpu, v.Cpu, Causal);
        Parity.AssertClose("zero-copy attention (wrapped device memory)", dtype, QkvShape.ToString(), reference.ToArray(), oOwner.ToArray());
        Assert.That(q.Gpu.IsDisposed, Is.False);
    }

    [Test]
    public void A_backend_on_the_callers_stream_queues_its_work_there_and_leaves_the_stream_alive()
    {
        var gpu = Requires.CudaDevice();
        using var stream = new CudaStream(gpu.Context, nonBlocking: true);
        var x = TestData.Representable(TestData.NormalSingle(21, QkvShape.ElementCount), DType.BF16);
        float[] result;
        using (var onCallers = CudaBackend.Create(gpu.Device.Ordinal, stream.Handle))
        {
            Assert.That(onCallers.Stream.Handle, Is.EqualTo(stream.Handle));
            Assert.That(onCallers.Stream.IsOwned, Is.False);
            using var q = onCallers.FromArray(x, QkvShape, DType.BF16);
            using var o = SoftmaxAttention.Forward(q, q, q, Causal);
            stream.Synchronize(); // the caller's own wait covers the backend's work
            result = o.ToArray();
        }
        stream.Synchronize(); // still a live stream after the backend is disposed
        using var qc = Backend.Cpu.FromArray(x, QkvShape);
        using var reference = SoftmaxAttention.Forward(qc, qc, qc, Causal);
        Parity.AssertClose("attention on the caller's stream", DType.BF16, QkvShape.ToString(), reference.ToArray(), result);
    }

    /// <summary>
    /// Per call: a <see cref="CudaBackend.UseStream"/> scope queues the backend's work on the caller's stream (split-KV decode:
    /// its scratch on that stream), returns to the backend's own stream after, and results are right on both sides of the switch.
    /// </summary>
    [Test]
    public void A_use_stream_scope_queues_the_calls_work_on_the_callers_stream()
    {
        var gpu = Requires.CudaDevice();
        using var stream = new CudaStream(gpu.Context, nonBlocking: true);
        var shapeQ = new Shape(1, 1, 8, 128);
        var shapeK = new Shape(1, 2000, 2, 128);
        var q = TestData.Representable(TestData.NormalSingle(51, shapeQ.ElementCount), DType.BF16);
        var kv = TestData.Representable(TestData.NormalSingle(52, shapeK.ElementCount), DType.BF16);
        using var qt = gpu.FromArray(q, shapeQ, DType.BF16);
        using var kt = gpu.FromArray(kv, shapeK, DType.BF16);
        using var before = SoftmaxAttention.Forward(qt, kt, kt, Causal); // queued on the backend's own stream
        Tensor inScope;
        using (gpu.UseStream(stream))
        {
            Assert.That(gpu.Stream.Handle, Is.EqualTo(stream.Handle), "current stream in the scope");
            inScope = SoftmaxAttention.Forward(qt, kt, kt, Causal);
        }
        Assert.That(gpu.Stream.Handle, Is.EqualTo(gpu.OwnStream.Handle), "the backend's own stream after the scope");
        stream.Synchronize();
        using (inScope)
        {
            using var qc = Backend.Cpu.FromArray(q, shapeQ);
            using var kc = Backend.Cpu.FromArray(kv, shapeK);
            using var reference = SoftmaxAttention.Forward(qc, kc, kc, Causal);
            Parity.AssertClose("attention in a UseStream scope", DType.BF16, shapeQ.ToString(), reference.ToArray(), inScope.ToArray());
            Parity.AssertClose("attention before a UseStream scope", DType.BF16, shapeQ.ToString(), reference.ToArray(), before.ToArray());
        }
    }

    [Test]
    public void Two_backends_on_two_streams_run_at_once_with_their_own_scratch()
    {
        var gpu = Requires.CudaDevice();
        using var streamA = new CudaStream(gpu.Context, nonBlocking: true);
        using var streamB = new CudaStream(gpu.Context, nonBlocking: true);
        using var a = CudaBackend.Create(gpu.Device.Ordinal, streamA.Handle);
        using var b = CudaBackend.Create(gpu.Device.Ordinal, streamB.Handle);
        // Decode-shaped problems (split-KV: both backends use their scratch for partials), different on each stream.
        var shapeQ = new Shape(1, 1, 8, 128);
        var shapeK = new Shape(1, 3000, 2, 128);
        float[] Run(CudaBackend backend, int seed)
        {
            var q = TestData.Representable(TestData.NormalSingle(seed, shapeQ.ElementCount), DType.BF16);
            var kv = TestData.Representable(TestData.NormalSingle(seed + 1, shapeK.ElementCount), DType.BF16);
            using var qt = backend.FromArray(q, shapeQ, DType.BF16);
            using var kt = backend.FromArray(kv, shapeK, DType.BF16);
            float[] last = [];
            for (int i = 0; i < 20; i++)
            {
                using var o = SoftmaxAttention.Forward(qt, kt, kt, Causal);
                last = o.ToArray();
            }
            return last;
        }
        var ta = Task.Run(() => Run(a, 31));
        var tb = Task.Run(() => Run(b, 41));
        Task.WaitAll(ta, tb);
        foreach (var (seed, actual) in new[] { (31, ta.Result), (41, tb.Result) })
        {
            using var qc = Backend.Cpu.FromArray(TestData.Representable(TestData.NormalSingle(seed, shapeQ.ElementCount), DType.BF16), shapeQ);
            using var kc = Backend.Cpu.FromArray(TestData.Representable(TestData.NormalSingle(seed + 1, shapeK.ElementCount), DType.BF16), shapeK);
            using var reference = SoftmaxAttention.Forward(qc, kc, kc, Causal);
            Parity.AssertClose($"attention on stream {(seed == 31 ? "A" : "B")} beside another", DType.BF16, shapeQ.ToString(), reference.ToArray(), actual);
        }
    }

    /// <summary>One strided-attention case: the kernel path it is sized for, and the problem.</summary>
    public sealed record StridedCase(string Path, DType DType, int B, int Tq, int Tk, int H, int G, int Dqk, int Dv, bool Causal)
    {
        public override string ToString() => $"{Path} {DType} B{B} Tq{Tq} Tk{Tk} H{H} G{G} {Dqk}/{Dv}{(Causal ? " causal" : "")}";
    }

    private static IEnumerable<TestCaseData> StridedCases() =>
        new StridedCase[]
        {
            new("CUDA cores", DType.F32, 2, 40, 40, 4, 2, 32, 32, true),
            new("split-KV", DType.F32, 1, 1, 2000, 8, 2, 64, 64, true),
            new("tensor cores", DType.BF16, 2, 70, 70, 4, 2, 64, 64, true),
            new("tensor cores, wide heads", DType.F16, 1, 70, 90, 2, 1, 192, 128, true),
            new("decode", DType.BF16, 2, 1, 500, 16, 4, 128, 128, true),
        }.Select(c => new TestCaseData(c).SetName($"Attention on head-major device views equals attention on contiguous copies ({c})"));

    /// <summary>
    /// q, k, v, o, dO and the gradients held head-major (<c>[B, H, T, d]</c>, TorchSharp's and PyTorch's layout) in device memory
    /// and seen as <c>[B, T, H, d]</c>: the forward and the backward on the views give bitwise what they give on contiguous copies
    /// (the same kernels, arithmetic in the same order; only the addresses differ), on each kernel path; the 16-bit views take
    /// the fast kernels, as their contiguous copies do.
    /// </summary>
    [TestCaseSource(nameof(StridedCases))]
    public void Attention_on_head_major_device_views_equals_attention_on_contiguous_copies(StridedCase c)
    {
        var gpu = Requires.CudaDevice();
        var options = new AttentionOptions(1.0 / Math.Sqrt(c.Dqk), Causal: c.Causal);
        // Head-major storage, seen as [B, T, H, d]; contiguous copies of the views.
        Tensor Store(int seed, int t, int heads, int d) =>
            gpu.FromArray(TestData.Representable(TestData.NormalSingle(seed, (long)c.B * heads * t * d), c.DType), new Shape(c.B, heads, t, d), c.DType);
        Tensor Copy(Tensor view) => gpu.FromArray(view.ToArray(), view.Shape, c.DType);
        using var qStore = Store(61, c.Tq, c.H, c.Dqk);
        using var kStore = Store(62, c.Tk, c.G, c.Dqk);
        using var vStore = Store(63, c.Tk, c.G, c.Dv);
        using var dOStore = Store(64, c.Tq, c.H, c.Dv);
        using var oStore = gpu.Zeros(new Shape(c.B, c.H, c.Tq, c.Dv), c.DType);
        using var q = qStore.Transpose(1, 2);
        using var k = kStore.Transpose(1, 2);
        using var v = vStore.Transpose(1, 2);
        using var dO = dOStore.Transpose(1, 2);
        using var o = oStore.Transpose(1, 2);
        using var qc = Copy(q);
        using var kc = Copy(k);
        using var vc = Copy(v);
        using var dOc = Copy(dO);
        Assert.That(q.IsContiguous || k.IsContiguous || o.IsContiguous, Is.False, "the views are strided");
        if (SoftmaxAttentionTensorCoreCuda.Enabled && c.DType != DType.F32)
        {
            // Every row of a 16-bit head-major view starts on 16 bytes: the views take the fast kernels, forward and backward.
            var (shape, _) = SoftmaxAttentionCuda.ShapesOf(gpu, SoftmaxAttention.DimsOf(q, k, v, options), options, SoftmaxAttention.Layouts.Of(q, k, v, o));
            Assert.That(SoftmaxAttentionDecodeCuda.Handles(gpu, q, k, v, null, o, shape) || SoftmaxAttentionTensorCoreCuda.Handles(gpu, q, k, v, null, o), Is.True, "fast forward");
            Assert.That(SoftmaxAttentionTensorCoreCuda.HandlesBackward(gpu, q, k, v, null, dO), Is.True, "fast backward");
        }

        using var lse = gpu.Zeros(new Shape(c.B, c.H, c.Tq));
        SoftmaxAttention.Forward(q, k, v, options, null, o, lse);
        using var oc = SoftmaxAttention.Forward(qc, kc, vc, options, null, out var lsec);
        using (lsec)
        {
            Assert.That(o.ToArray(), Is.EqualTo(oc.ToArray()), "o written through the head-major view");
            Assert.That(lse.ToArray(), Is.EqualTo(lsec.ToArray()), "lse");
        }

        // Gradients into head-major views, from the same nonzero values (the backward adds).
        using var dqStore = Store(65, c.Tq, c.H, c.Dqk);
        using var dkStore = Store(66, c.Tk, c.G, c.Dqk);
        using var dvStore = Store(67, c.Tk, c.G, c.Dv);
        using var dq = dqStore.Transpose(1, 2);
        using var dk = dkStore.Transpose(1, 2);
        using var dv = dvStore.Transpose(1, 2);
        using var dqc = Copy(dq);
        using var dkc = Copy(dk);
        using var dvc = Copy(dv);
        var dqStart = dq.ToArray();
        SoftmaxAttention.Backward(q, k, v, options, null, o, lse, dO, dq, dk, dv);
        SoftmaxAttention.Backward(qc, kc, vc, options, null, oc, lse, dOc, dqc, dkc, dvc);
        Assert.Multiple(() =>
        {
            Assert.That(dq.ToArray(), Is.EqualTo(dqc.ToArray()), "dq");
            Assert.That(dk.ToArray(), Is.EqualTo(dkc.ToArray()), "dk");
            Assert.That(dv.ToArray(), Is.EqualTo(dvc.ToArray()), "dv");
            Assert.That(dq.ToArray(), Is.Not.EqualTo(dqStart), "the backward added something");
        });
    }

    [TestCaseSource(nameof(Cases))]
    public void Attention_reads_and_writes_fused_projection_slices_through_strided_device_wraps(DType dtype)
    {
        // One device [B, T, 3, H, d] buffer (a fused qkv projection, as a PyTorch CUDA tensor would hold it) and a fused
        // gradient buffer: q, k, v and dq, dv are wraps with the caller's strides (token stride 3·H·d), the path
        // Attention.Native.TorchSharp takes for CUDA tensors. Bitwise what contiguous copies give; the gaps stay untouched.
        var gpu = Requires.CudaDevice();
        const int b = 2, t = 40, h = 4, d = 64;
        var shape = new Shape(b, t, h, d);
        long[] strides = [(long)t * 3 * h * d, 3 * h * d, d, 1];
        long part = (long)h * d * dtype.SizeInBytes();
        using var fused = GpuPair.Random(gpu, 31, new Shape(b, t, 3, h, d), dtype);
        using var dfused = gpu.Zeros(new Shape(b, t, 3, h, d), dtype);
        var at = ((DeviceTensor)fused.Gpu).Pointer;
        var dat = ((DeviceTensor)dfused).Pointer;
        using var q = gpu.Wrap(at, shape, strides, dtype);
        using var k = gpu.Wrap(at + part, shape, strides, dtype);
        using var v = gpu.Wrap(at + (2 * part), shape, strides, dtype);
        using var qc = gpu.FromArray(q.ToDoubleArray(), shape, dtype);
        using var kc = gpu.FromArray(k.ToDoubleArray(), shape, dtype);
        using var vc = gpu.FromArray(v.ToDoubleArray(), shape, dtype);
        using var o = SoftmaxAttention.Forward(q, k, v, Causal, null, out var lse);
        using var oc = SoftmaxAttention.Forward(qc, kc, vc, Causal, null, out var lsec);
        using (lse)
        using (lsec)
        {
            Assert.That(o.ToDoubleArray(), Is.EqualTo(oc.ToDoubleArray()), "o from fused device memory");
            using var dO = GpuPair.Random(gpu, 32, shape, dtype);
            using var dq = gpu.Wrap(dat, shape, strides, dtype);
            using var dv = gpu.Wrap(dat + (2 * part), shape, strides, dtype);
            using var dqc = gpu.Zeros(shape, dtype);
            using var dvc = gpu.Zeros(shape, dtype);
            SoftmaxAttention.Backward(q, k, v, Causal, null, o, lse, dO.Gpu, dq, null, dv);
            SoftmaxAttention.Backward(qc, kc, vc, Causal, null, oc, lsec, dO.Gpu, dqc, null, dvc);
            Assert.That(dq.ToDoubleArray(), Is.EqualTo(dqc.ToDoubleArray()), "dq into the fused gradient");
            Assert.That(dv.ToDoubleArray(), Is.EqualTo(dvc.ToDoubleArray()), "dv into the fused gradient");
            using var dk = gpu.Wrap(dat + part, shape, strides, dtype);
            Assert.That(dk.ToDoubleArray(), Is.All.EqualTo(0), "the k slots were not written");
        }
    }

    [Test]
    public void Wrapping_bad_device_memory_is_refused()
    {
        var gpu = Requires.CudaDevice();
        using var owner = gpu.Zeros(new Shape(8));
        var pointer = ((DeviceTensor)owner).Pointer;
        Assert.Multiple(() =>
        {
            Assert.That(Assert.Throws<ArgumentException>(() => gpu.Wrap(pointer + 2, new Shape(4), DType.F32))!.ParamName, Is.EqualTo("pointer"));
            Assert.That(Assert.Throws<ArgumentException>(() => gpu.Wrap(CUdeviceptr.Null, new Shape(4), DType.F32))!.Message, Does.Contain("actual null"));
            Assert.That(Assert.Throws<ArgumentException>(() => gpu.Wrap(pointer, new Shape(4), DType.F64))!.ParamName, Is.EqualTo("dtype"));
        });
    }
}

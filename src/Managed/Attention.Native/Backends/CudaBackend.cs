using System.Collections.Concurrent;
using Attention.Native.Interop;
using Attention.Native.Ops;
using Attention.Native.Runtime;

namespace Attention.Native;

/// <summary>
/// The CUDA backend: device tensors, kernels from <c>cuda/</c> compiled by NVRTC for the device's exact
/// architecture (cached on disk), projections on cuBLAS. All work is queued in order on one stream: the backend's own
/// (<see cref="OwnStream"/>, which may be the caller's: <see cref="Create(int, nint, KernelCompiler?)"/>), or the caller's
/// for the span of a <see cref="UseStream"/> scope; reading a tensor back waits for it.
/// </summary>
/// <remarks>Thread safety: layer calls from several threads are serialised (each holds the backend for its whole forward, backward or cache step, since all ops share the stream, its scratch buffers and one cuBLAS handle); direct op calls and the runtime objects it exposes must be used from one thread at a time. Stream rules: every op, upload and layer call is queued on <see cref="Stream"/> (<see cref="OwnStream"/>, or the caller's stream within a <see cref="UseStream"/> scope) in call order, also across <see cref="UseStream"/> switches, and may return before the GPU has run it. Reading a tensor back (<c>CopyTo</c>, <c>ToArray</c>) waits for the work queued before it, and writing one from the host (<c>CopyFrom</c>, <c>FromArray</c>) returns when the copy is done, so results need no explicit synchronisation; <see cref="Synchronize"/> waits for all of it. A disposed tensor's memory is reused only by this backend's later work, so a tensor may be disposed as soon as the call that reads it returns. Work on any other stream (the caller's outside a scope, or another backend's: two backends, each on its own stream with its own scratch, run concurrently) is not ordered with this backend's: the caller orders their work on shared tensors with events (<c>CudaStream.WaitEvent</c>) or synchronisation, or queues this backend's work on that stream (<see cref="UseStream"/>, <see cref="Create(int, nint, KernelCompiler?)"/>). <see cref="Blas"/> follows <see cref="Stream"/>.</remarks>
public sealed partial class CudaBackend : Backend
{
    private readonly ConcurrentDictionary<KernelProgram, Lazy<CudaModule>> _modules = new();
    private readonly Lock _scratchGate = new();
    private readonly Lock _callGate = new();
    private readonly Lock _launchIndicesGate = new();
    // Scratch and launch-index buffers of each stream work has been queued on (UseStream): never shared between streams.
    private readonly Dictionary<nint, StreamBuffers> _streamBuffers = [];
    private CudaStream? _scopeStream;
    private CudaEvent? _joinEvent;

    private CudaBackend(CudaDevice device, KernelCompiler compiler, nint? stream)
    {
        Device = device;
        Compiler = compiler;
        Context = new CudaContext(device);
        MemoryCache = new DeviceMemoryCache(Context.AllocateBytes, Context.FreeBytes);
        try
        {
            OwnStream = stream is { } handle ? CudaStream.Wrap(Context, handle) : new CudaStream(Context);
            Blas = new CudaBlas(Context, OwnStream);
        }
        catch
        {
            OwnStream?.Dispose();
            Context.Dispose();
            throw;
        }
    }

    /// <summary>The device.</summary>
    public CudaDevice Device { get; }

    /// <inheritdoc/>
    internal override CallGate EnterCall()
    {
        _callGate.Enter(); // re-entrant: a cache step inside a layer call takes it again
        return new CallGate(_callGate);
    }

    /// <summary>Bytes of device memory this backend keeps for reuse: freed tensors' blocks, taken again by later tensors of their size.</summary>
    public long CachedBytes => MemoryCache.CachedBytes;

    /// <summary>Device blocks this backend's tensors have allocated from the driver (a reused cached block does not count).</summary>
    public long DriverAllocations => MemoryCache.DriverAllocations;

    /// <summary>Returns the cached blocks (<see cref="CachedBytes"/>) to the driver, for other users of the device.</summary>
    public void ReleaseCachedMemory() => MemoryCache.Trim();

    /// <summary>The caching allocator of this backend's tensors (their blocks are reused in stream order).</summary>
    internal DeviceMemoryCache MemoryCache { get; }

    /// <summary>The device's primary context.</summary>
    public CudaContext Context { get; }

    /// <summary>
    /// The stream this backend queues its work on now: <see cref="OwnStream"/>, or the caller's stream while a
    /// <see cref="UseStream"/> scope is open.
    /// </summary>
    public CudaStream Stream => _scopeStream ?? OwnStream;

    /// <summary>The backend's own stream: one it created, or the caller's it was created on (<see cref="Create(int, nint, KernelCompiler?)"/>).</summary>
    public CudaStream OwnStream { get; }

    /// <summary>
    /// Queues this backend's work on the caller's <paramref name="stream"/> (a stream of this backend's device, in its primary
    /// context: <see cref="CudaStream.Wrap"/> takes a <c>CUstream</c> from another library) until the returned scope is
    /// disposed. The switch is ordered both ways without blocking the host: the caller's stream first waits for the work this
    /// backend queued before, and on Dispose the previous stream waits for the scope's work; the caller's own work queued on
    /// <paramref name="stream"/> before and after the scope is ordered with it as on any stream. The scope holds the backend (as
    /// a layer call does: other threads' layer calls wait), so dispose it on the thread that opened it, without an await in
    /// between. Scratch and launch-index buffers are kept per stream, so no two streams share one. Scopes nest.
    /// </summary>
    public StreamScope UseStream(CudaStream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var gate = EnterCall();
        try
        {
            var previous = _scopeStream;
            Join(Stream, stream);
            _scopeStream = stream;
            Blas.SetStream(stream);
            return new StreamScope(this, previous, gate);
        }
        catch
        {
            gate.Dispose();
            throw;
        }
    }

    // Ends a UseStream scope: the previous stream waits for the scope's work and becomes current again.
    private void EndScope(CudaStream? previous, CallGate gate)
    {
        try
        {
            var scoped = Stream;
            _scopeStream = previous;
            Blas.SetStream(Stream);
            Join(scoped, Stream);
        }
        finally
        {
            gate.Dispose();
        }
    }

    // Orders everything queued on `from` so far before anything queued on `to` from now on.
    private void Join(CudaStream from, CudaStream to)
    {
        if (from.Handle == to.Handle)
        {
            return;
        }
        _joinEvent ??= new CudaEvent(Context, timing: false);
        _joinEvent.Record(from);
        to.WaitEvent(_joinEvent);
    }

    /// <summary>An open <see cref="UseStream"/> scope; Dispose returns the backend to the stream it used before.</summary>
    /// <remarks>Thread safety: dispose it once, on the thread that opened it.</remarks>
    public sealed class StreamScope : IDisposable
    {
        private readonly CudaBackend _backend;
        private readonly CudaStream? _previous;
        private readonly CallGate _gate;
        private bool _disposed;

        internal StreamScope(CudaBackend backend, CudaStream? previous, CallGate gate)
        {
            _backend = backend;
            _previous = previous;
            _gate = gate;
        }

        /// <inheritdoc/>
        public void Dispose()
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            _backend.EndScope(_previous, _gate);
        }
    }

    /// <summary>The cuBLAS handle (bound to <see cref="Stream"/>).</summary>
    public CudaBlas Blas { get; }

    /// <summary>The kernel compiler (and its cache).</summary>
    public KernelCompiler Compiler { get; }

    /// <inheritdoc/>
    public override BackendKind Kind => BackendKind.Cuda;

    /// <inheritdoc/>
    public override string Name => $"cuda:{Device.Ordinal} ({Device.Name}, {Device.Arch})";

    /// <inheritdoc/>
    public override bool Supports(DType dtype) => dtype is DType.F32 or DType.BF16 or DType.F16;

    /// <summary>Starts the backend on device <paramref name="ordinal"/>, on a stream of its own; throws with the reason when it cannot.</summary>
    public static CudaBackend Create(int ordinal = 0, KernelCompiler? compiler = null)
    {
        return new CudaBackend(RequireDevice(ordinal), compiler ?? KernelCompiler.Shared, stream: null);
    }

    /// <summary>
    /// Starts a backend on device <paramref name="ordinal"/> that queues all its work on the caller's <paramref name="stream"/>
    /// (a <c>CUstream</c> of the device's primary context, e.g. an inference host's or PyTorch's current stream; 0 is the legacy
    /// default stream) instead of a stream of its own. Its scratch memory, launch metadata, cuBLAS handle and tensor cache are
    /// its own, so two backends on two streams never share a buffer. The caller keeps the stream alive while the backend is
    /// used; disposing the backend does not destroy it.
    /// </summary>
    public static CudaBackend Create(int ordinal, nint stream, KernelCompiler? compiler = null)
    {
        return new CudaBackend(RequireDevice(ordinal), compiler ?? KernelCompiler.Shared, stream);
    }

    // Device ordinal's device, once the driver, NVRTC and cuBLAS have loaded.
    private static CudaDevice RequireDevice(int ordinal)
    {
        foreach (var kind in new[] { NativeLibraryKind.Cuda, NativeLibraryKind.Nvrtc, NativeLibraryKind.Cublas })
        {
            NativeLibraries.Require(kind);
        }
        if (CudaDevice.Count == 0)
        {
            throw new CudaException(CUresult.CUDA_ERROR_NO_DEVICE, nameof(NativeMethods.cuDeviceGetCount), "the driver reports no CUDA device");
        }
        return CudaDevice.Get(ordinal);
    }

    /// <summary>
    /// A tensor of <paramref name="shape"/> and <paramref name="dtype"/> over the caller's device memory at
    /// <paramref name="pointer"/> (row-major; in this backend's device, e.g. a TorchSharp/PyTorch CUDA tensor's data pointer),
    /// without a copy: ops read it where it lies and writes into the tensor land in the caller's memory. This library never
    /// frees it: disposing the tensor only ends its use. The caller keeps the memory valid until then, and orders its own
    /// work on the memory with this backend's <see cref="Stream"/> (or creates the backend on its own stream:
    /// <see cref="Create(int, nint, KernelCompiler?)"/>).
    /// </summary>
    public DeviceTensor Wrap(CUdeviceptr pointer, Shape shape, DType dtype) => Wrap(pointer, shape, Tensor.ContiguousStrides(shape), dtype);

    /// <summary>
    /// A strided view of <paramref name="shape"/> over the caller's device memory at <paramref name="pointer"/>, without a copy:
    /// element <c>(i₀, i₁, …)</c> lies <c>Σ iₐ·strides[a]</c> elements after <paramref name="pointer"/> (a PyTorch or TorchSharp
    /// CUDA tensor's <c>data_ptr</c> and <c>stride()</c> as they are). Strides are non-negative and the last axis contiguous
    /// (stride 1). <see cref="Ops.SoftmaxAttention"/> takes such views as they are; other ops take contiguous tensors only.
    /// Ownership and stream rules as <see cref="Wrap(CUdeviceptr, Shape, DType)"/>.
    /// </summary>
    public DeviceTensor Wrap(CUdeviceptr pointer, Shape shape, IReadOnlyList<long> strides, DType dtype)
    {
        if (!Supports(dtype))
        {
            throw new ArgumentException($"dtype: expected a dtype the {Kind} backend supports, actual {dtype}", nameof(dtype));
        }
        var checkedStrides = Tensor.CheckStrides(shape, strides, nameof(strides));
        long bytes = checkedStrides is null ? shape.BytesOf(dtype, nameof(shape)) : checked(Tensor.Extent(shape, checkedStrides) * dtype.SizeInBytes());
        if (pointer.IsNull && bytes > 0)
        {
            throw new ArgumentException($"pointer: expected a device address for {bytes} bytes, actual null", nameof(pointer));
        }
        if (pointer.Value % (ulong)dtype.SizeInBytes() != 0)
        {
            throw new ArgumentException($"pointer: expected an address aligned to the {dtype.SizeInBytes()}-byte elements, actual 0x{pointer.Value:x}", nameof(pointer));
        }
        var buffer = new DeviceBuffer<byte>(DeviceAllocation.External(Context, pointer, bytes));
        return new DeviceTensor(this, shape, dtype, buffer, checkedStrides);
    }

    /// <summary>Tries to start the backend; on failure <paramref name="reason"/> says what is missing.</summary>
    public static bool TryCreate(int ordinal, out CudaBackend? backend, out string reason)
    {
        try
        {
            backend = Create(ordinal);
            reason = "ok";
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or CudaException or CublasException or NvrtcException or ArgumentOutOfRangeException)
        {
            backend = null;
            reason = e.Message;
            return false;
        }
    }

    /// <inheritdoc/>
    public override void Synchronize() => Stream.Synchronize();

    private protected override Tensor Allocate(Shape shape, DType dtype, bool zero)
    {
        var tensor = new DeviceTensor(this, shape, dtype);
        if (zero)
        {
            tensor.Buffer.Zero(Stream);
        }
        return tensor;
    }

    /// <summary>The kernel <paramref name="nameExpression"/> of <paramref name="program"/>, compiled and loaded on first use.</summary>
    internal CudaKernel Kernel(KernelProgram program, string nameExpression)
    {
        var module = _modules.GetOrAdd(program, p => new Lazy<CudaModule>(() => new CudaModule(Context, Compiler.Compile(p, Device.Arch)))).Value;
        return module.GetKernel(nameExpression);
    }

    /// <summary>
    /// Scratch device memory of at least <paramref name="bytes"/>, valid until the next call. Ops on this
    /// backend run in order on one stream, so a later op never overwrites scratch an earlier one still reads.
    /// </summary>
    internal DeviceBuffer<byte> Scratch(long bytes)
    {
        lock (_scratchGate)
        {
            var buffers = BuffersOf(Stream);
            if (buffers.Scratch is null || buffers.Scratch.Length < bytes)
            {
                if (buffers.Scratch is not null)
                {
                    Stream.Synchronize(); // queued kernels may still read the old scratch
                    buffers.Scratch.Dispose();
                    buffers.Scratch = null;
                }
                buffers.Scratch = Context.Allocate<byte>(Math.Max(bytes, 1 << 20));
            }
            return buffers.Scratch.Slice(0, bytes);
        }
    }

    /// <summary>
    /// A device copy of <paramref name="values"/>, the small int arrays a ragged launch reads (per-token positions, sequence
    /// offsets, state rows), queued on <see cref="Stream"/> without waiting. It lives in one buffer of its own (not
    /// <see cref="Scratch"/>, which the same op may use), grown on demand, so a warm backend allocates nothing per call. Valid
    /// for the launches queued before the next call: a later upload is ordered after them on the stream.
    /// </summary>
    internal CUdeviceptr UploadLaunchIndices(ReadOnlySpan<int> values)
    {
        if (values.IsEmpty)
        {
            return CUdeviceptr.Null;
        }
        lock (_launchIndicesGate)
        {
            var buffers = BuffersOf(Stream);
            if (buffers.LaunchIndices is null || buffers.LaunchIndices.Length < values.Length)
            {
                if (buffers.LaunchIndices is not null)
                {
                    Stream.Synchronize(); // queued kernels may still read the old copy
                    buffers.LaunchIndices.Dispose();
                    buffers.LaunchIndices = null;
                }
                buffers.LaunchIndices = Context.Allocate<int>(Math.Max(values.Length, 1 << 14));
            }
            buffers.LaunchIndices.UploadQueued(values, Stream);
            return buffers.LaunchIndices.Pointer;
        }
    }

    // The buffers of one stream (created on its first use).
    private StreamBuffers BuffersOf(CudaStream stream)
    {
        lock (_streamBuffers)
        {
            if (!_streamBuffers.TryGetValue(stream.Handle, out var buffers))
            {
                _streamBuffers[stream.Handle] = buffers = new StreamBuffers();
            }
            return buffers;
        }
    }

    private sealed class StreamBuffers
    {
        public DeviceBuffer<byte>? Scratch;
        public DeviceBuffer<int>? LaunchIndices;

        public void Dispose()
        {
            Scratch?.Dispose();
            LaunchIndices?.Dispose();
        }
    }

    internal static DeviceTensor D(Tensor tensor) => (DeviceTensor)tensor;

    internal static CUdeviceptr Ptr(Tensor? tensor) => tensor is null ? CUdeviceptr.Null : ((DeviceTensor)tensor).Pointer;

    internal override void LinearForward(Tensor x, Tensor weight, Tensor? bias, Tensor y) => LinearCuda.Forward(this, x, weight, bias, y);

    internal override void LinearBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias, bool accumulate) =>
        LinearCuda.Backward(this, x, weight, dy, dx, dweight, dbias, accumulate);

    /// <summary>The per-token positions of a ragged batch on the device (RoPE, LRPE), or null for positions offset + t.</summary>
    internal CUdeviceptr PositionsOnDevice(TokenPositions positions) =>
        positions.PerToken is { } perToken ? UploadLaunchIndices(perToken) : CUdeviceptr.Null;

    /// <summary>Ragged batches whose CUDA kernels are not written yet are refused, naming the op.</summary>
    internal static void ThrowIfRagged(bool ragged, string op)
    {
        if (ragged)
        {
            throw new NotSupportedException($"{op}: ragged batches (SequenceLayout) are not yet implemented on the CUDA backend; run them on the CPU backend");
        }
    }

    internal override void RopeForward(Tensor x, Tensor y, RopeOptions options, TokenPositions positions) =>
        RopeCuda.Apply(this, x, y, options, positions, inverse: false);

    internal override void RopeBackward(Tensor dy, Tensor dx, RopeOptions options, TokenPositions positions) =>
        RopeCuda.Apply(this, dy, dx, options, positions, inverse: true);

    internal override void RmsNormForward(Tensor x, Tensor? gain, Tensor y, float epsilon) => RmsNormCuda.Forward(this, x, gain, y, epsilon);

    internal override void RmsNormBackward(Tensor x, Tensor? gain, Tensor dy, Tensor dx, Tensor? dgain, float epsilon, bool accumulate) =>
        RmsNormCuda.Backward(this, x, gain, dy, dx, dgain, epsilon, accumulate);

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        try
        {
            if (disposing && !Context.IsDisposed)
            {
                ReleaseNative();
            }
        }
        finally
        {
            base.Dispose(disposing);
        }
    }

    private void ReleaseNative()
    {
        try
        {
            OwnStream.Synchronize();
        }
        catch (CudaException)
        {
            // A failed kernel leaves the context in error; release what we can anyway.
        }
        foreach (var module in _modules.Values.Where(l => l.IsValueCreated))
        {
            module.Value.Dispose();
        }
        foreach (var buffers in _streamBuffers.Values)
        {
            buffers.Dispose();
        }
        _joinEvent?.Dispose();
        MemoryCache.Dispose();
        Blas.Dispose();
        OwnStream.Dispose();
        Context.Dispose();
    }
}

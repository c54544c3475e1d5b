using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>A CUDA stream: work queued on it runs in order.</summary>
/// <remarks>Thread safety: launches from several threads are each queued safely, but in no defined order between threads; serialise them when order matters. Stream rules: work on one stream runs in the order queued, and each queuing call returns before its work runs; <see cref="Synchronize"/> waits on the host for all of it. Work on different streams is unordered unless the caller orders it (<see cref="WaitEvent"/> on a recorded <see cref="CudaEvent"/>, or synchronising one stream before queuing on another); a blocking stream (<c>nonBlocking: false</c>, the default) is also ordered with the legacy default stream (handle 0), which the <see cref="DeviceBuffer{T}"/> calls without a stream use.</remarks>
public sealed unsafe class CudaStream : IDisposable
{
    private readonly CudaContext _context;
    private readonly bool _owned = true;
    private nint _handle;

    // The caller's stream (Wrap): used, never destroyed here.
    private CudaStream(CudaContext context, nint handle, bool owned)
    {
        _context = context;
        _handle = handle;
        _owned = owned;
    }

    /// <summary>Creates a stream; <paramref name="nonBlocking"/> streams do not synchronise with the legacy default stream.</summary>
    public CudaStream(CudaContext context, bool nonBlocking = false)
    {
        ArgumentNullException.ThrowIfNull(context);
        _context = context;
        context.MakeCurrent();
        nint handle;
        StatusCheck.Check(cuStreamCreate(&handle, nonBlocking ? CU_STREAM_NON_BLOCKING : CU_STREAM_DEFAULT), nameof(cuStreamCreate));
        _handle = handle;
    }

    /// <summary>
    /// A stream the caller created (a <c>CUstream</c> of <paramref name="context"/>'s device, e.g. from another library working
    /// in the device's primary context), to queue this library's work on. Disposing the result does not destroy the stream;
    /// the caller keeps it alive while the work runs. The legacy default stream is handle 0.
    /// </summary>
    public static CudaStream Wrap(CudaContext context, nint handle)
    {
        ArgumentNullException.ThrowIfNull(context);
        return new CudaStream(context, handle, owned: false);
    }

    /// <summary>True for a stream this object created and destroys; false for the caller's (<see cref="Wrap"/>).</summary>
    public bool IsOwned => _owned;

    /// <summary>The <c>CUstream</c> handle, for passing to other CUDA libraries (0 is the legacy default stream).</summary>
    public nint Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _handle;
        }
    }

    /// <summary>Makes work queued on this stream from now on wait for the work recorded in <paramref name="recorded"/> (on any stream), without blocking the host.</summary>
    public void WaitEvent(CudaEvent recorded)
    {
        ArgumentNullException.ThrowIfNull(recorded);
        _context.MakeCurrent();
        StatusCheck.Check(cuStreamWaitEvent(Handle, recorded.Handle, 0), nameof(cuStreamWaitEvent));
    }

    /// <summary>Waits until all work queued on the stream has finished.</summary>
    public void Synchronize()
    {
        _context.MakeCurrent();
        StatusCheck.Check(cuStreamSynchronize(Handle), nameof(cuStreamSynchronize));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (!_disposed && _owned && _handle != 0 && !_context.IsDisposed)
        {
            _context.MakeCurrent();
            _ = cuStreamDestroy_v2(_handle);
        }
        _handle = 0;
        _disposed = true;
    }

    private bool _disposed;
}

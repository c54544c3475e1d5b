using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>A CUDA stream: work queued on it runs in order.</summary>
/// <remarks>Thread safety: launches from several threads are each queued safely, but in no defined order between threads; serialise them when order matters.</remarks>
public sealed unsafe class CudaStream : IDisposable
{
    private readonly CudaContext _context;
    private nint _handle;

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

    internal nint Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_handle == 0, this);
            return _handle;
        }
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
        if (_handle != 0 && !_context.IsDisposed)
        {
            _context.MakeCurrent();
            _ = cuStreamDestroy_v2(_handle);
        }
        _handle = 0;
    }
}

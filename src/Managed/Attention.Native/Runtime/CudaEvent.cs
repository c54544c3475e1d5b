using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>A CUDA event, for ordering and GPU-side timing.</summary>
/// <remarks>Thread safety: one thread at a time (record and wait are ordered operations on a stream). Stream rules: <see cref="Record"/> marks the current end of a stream and returns at once; <see cref="Synchronize"/> and <see cref="ElapsedMilliseconds"/> wait on the host until the recorded work has finished; <see cref="CudaStream.WaitEvent"/> makes another stream wait for it without blocking the host.</remarks>
public sealed unsafe class CudaEvent : IDisposable
{
    private static bool s_useV2;

    private readonly CudaContext _context;
    private nint _handle;

    /// <summary>Creates an event that records timing (<paramref name="timing"/>), or one only for ordering streams, which costs less.</summary>
    public CudaEvent(CudaContext context, bool timing = true)
    {
        ArgumentNullException.ThrowIfNull(context);
        _context = context;
        context.MakeCurrent();
        nint handle;
        StatusCheck.Check(cuEventCreate(&handle, timing ? CU_EVENT_DEFAULT : CU_EVENT_DISABLE_TIMING), nameof(cuEventCreate));
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

    /// <summary>Records the event at the current end of <paramref name="stream"/>.</summary>
    public void Record(CudaStream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        _context.MakeCurrent();
        StatusCheck.Check(cuEventRecord(Handle, stream.Handle), nameof(cuEventRecord));
    }

    /// <summary>Waits until the recorded work has finished.</summary>
    public void Synchronize()
    {
        _context.MakeCurrent();
        StatusCheck.Check(cuEventSynchronize(Handle), nameof(cuEventSynchronize));
    }

    /// <summary>Milliseconds of GPU time between <paramref name="start"/> and <paramref name="end"/> (both recorded; waits for <paramref name="end"/>).</summary>
    public static float ElapsedMilliseconds(CudaEvent start, CudaEvent end)
    {
        ArgumentNullException.ThrowIfNull(start);
        ArgumentNullException.ThrowIfNull(end);
        end.Synchronize();
        float ms;
        if (!s_useV2)
        {
            try
            {
                StatusCheck.Check(cuEventElapsedTime(&ms, start.Handle, end.Handle), nameof(cuEventElapsedTime));
                return ms;
            }
            catch (EntryPointNotFoundException)
            {
                s_useV2 = true;
            }
        }
        StatusCheck.Check(cuEventElapsedTime_v2(&ms, start.Handle, end.Handle), nameof(cuEventElapsedTime_v2));
        return ms;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_handle != 0 && !_context.IsDisposed)
        {
            _context.MakeCurrent();
            _ = cuEventDestroy_v2(_handle);
        }
        _handle = 0;
    }
}

using Attention.Native.Interop;

namespace Attention.Native.Runtime;

/// <summary>
/// A caching allocator for one CUDA backend's tensors: a disposed tensor's memory goes back to a free list of its size
/// bucket instead of to the driver, and the next tensor of that bucket takes it, so a step that runs again (a decode step,
/// a training step) allocates nothing from the driver once warmed up. Every tensor of a backend is used in order on that
/// backend's stream (and a <see cref="CudaBackend.UseStream"/> switch orders the new stream after the old one, both ways), so
/// a block reused by a later op is only touched after the earlier ops that read it. On an
/// out-of-memory error the cached blocks are freed and the allocation tried once more.
/// </summary>
internal sealed class DeviceMemoryCache : IDisposable
{
    private const long Small = 1L << 20;
    private readonly Func<long, CUdeviceptr> _allocate;
    private readonly Action<CUdeviceptr, long> _free;
    private readonly Dictionary<long, Stack<CUdeviceptr>> _blocks = [];
    private readonly Lock _gate = new();
    private bool _disposed;

    /// <param name="allocate">Allocates a block of the given bytes from the driver (throws <see cref="CudaOutOfMemoryException"/> when it cannot).</param>
    /// <param name="free">Returns a block of the given bytes to the driver.</param>
    public DeviceMemoryCache(Func<long, CUdeviceptr> allocate, Action<CUdeviceptr, long> free)
    {
        _allocate = allocate;
        _free = free;
    }

    /// <summary>Bytes held in free blocks.</summary>
    public long CachedBytes { get; private set; }

    /// <summary>Blocks allocated from the driver so far (not counting reuses).</summary>
    public long DriverAllocations { get; private set; }

    /// <summary>
    /// The bucket a request of <paramref name="bytes"/> is served from: the next power of two up to 1 MiB (256 bytes at
    /// least), whole MiB above, so a request wastes at most half its size when small and under 1 MiB when large.
    /// </summary>
    public static long BucketOf(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        if (bytes > Small)
        {
            return checked((bytes + Small - 1) / Small * Small);
        }
        long bucket = 256;
        while (bucket < bytes)
        {
            bucket <<= 1;
        }
        return bucket;
    }

    /// <summary>A block of <see cref="BucketOf"/>(<paramref name="bytes"/>) bytes: a cached one, or a new one from the driver.</summary>
    public CUdeviceptr Take(long bytes, out long bucket)
    {
        bucket = BucketOf(bytes);
        lock (_gate)
        {
            if (_blocks.TryGetValue(bucket, out var free) && free.Count > 0)
            {
                CachedBytes -= bucket;
                return free.Pop();
            }
        }
        CUdeviceptr block;
        try
        {
            block = _allocate(bucket);
        }
        catch (CudaOutOfMemoryException) when (CachedBytes > 0)
        {
            // Cached blocks of other sizes may be what the device lacks: give them back and try once more.
            Trim();
            block = _allocate(bucket);
        }
        lock (_gate)
        {
            DriverAllocations++;
        }
        return block;
    }

    /// <summary>Keeps a block taken with <see cref="Take"/> for reuse (frees it once the cache is disposed).</summary>
    public void Give(CUdeviceptr block, long bucket)
    {
        lock (_gate)
        {
            if (!_disposed)
            {
                if (!_blocks.TryGetValue(bucket, out var free))
                {
                    _blocks[bucket] = free = new Stack<CUdeviceptr>();
                }
                free.Push(block);
                CachedBytes += bucket;
                return;
            }
        }
        _free(block, bucket);
    }

    /// <summary>Returns every cached block to the driver.</summary>
    public void Trim()
    {
        List<(CUdeviceptr Block, long Bytes)> blocks;
        lock (_gate)
        {
            blocks = [.. _blocks.SelectMany(b => b.Value.Select(p => (p, b.Key)))];
            _blocks.Clear();
            CachedBytes = 0;
        }
        foreach (var (block, bytes) in blocks)
        {
            _free(block, bytes);
        }
    }

    /// <summary>Frees the cached blocks; blocks given back later are freed at once.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
        }
        Trim();
    }
}

using Attention.Native.Interop;
using Attention.Native.Runtime;

namespace Attention.Native.Tests.Runtime;

/// <summary>
/// The CUDA backend's caching allocator, against a pretend driver: freed blocks are reused by requests of their bucket, so
/// a repeated step allocates nothing; on out-of-memory the cached blocks go back and the request is tried again.
/// </summary>
[TestFixture]
public sealed class DeviceMemoryCacheTests
{
    [TestCase(1, 256)]
    [TestCase(256, 256)]
    [TestCase(257, 512)]
    [TestCase(1000, 1024)]
    [TestCase(1 << 20, 1 << 20)]
    [TestCase((1 << 20) + 1, 2 << 20)]
    [TestCase((7 << 20) / 2, 4 << 20)]
    public void Requests_are_served_from_their_bucket(long bytes, long bucket) =>
        Assert.That(DeviceMemoryCache.BucketOf(bytes), Is.EqualTo(bucket));

    [Test]
    public void A_repeated_step_reuses_blocks_and_allocates_nothing()
    {
        var driver = new PretendDriver(limit: 1 << 30);
        using var cache = new DeviceMemoryCache(driver.Allocate, driver.Free);
        long[] step = [1000, 64 << 10, 3 << 20, 1000, 200];
        void Run()
        {
            var taken = step.Select(b => (Block: cache.Take(b, out long bucket), Bucket: bucket)).ToList();
            Assert.That(taken.Select(t => t.Block).Distinct().Count(), Is.EqualTo(step.Length), "live blocks are distinct");
            foreach (var (block, bucket) in taken)
            {
                cache.Give(block, bucket);
            }
        }
        Run();
        long first = cache.DriverAllocations;
        Assert.That(first, Is.EqualTo(5));
        for (int i = 0; i < 10; i++)
        {
            Run();
        }
        Assert.That((cache.DriverAllocations, driver.Allocations), Is.EqualTo((first, first)), "ten more steps, no allocation from the driver");
        Assert.That(cache.CachedBytes, Is.EqualTo(1024 + (64 << 10) + (3 << 20) + 1024 + 256));
        cache.Trim();
        Assert.That((cache.CachedBytes, driver.LiveBytes), Is.EqualTo((0L, 0L)));
    }

    [Test]
    public void Out_of_memory_gives_the_cache_back_and_tries_once_more()
    {
        var driver = new PretendDriver(limit: 8 << 20);
        using var cache = new DeviceMemoryCache(driver.Allocate, driver.Free);
        var a = cache.Take(6 << 20, out long bucketA);
        cache.Give(a, bucketA);
        var b = cache.Take(5 << 20, out long bucketB);
        Assert.That(driver.LiveBytes, Is.EqualTo(5 << 20), "the cached 6 MiB block went back to make room");
        cache.Give(b, bucketB);
        Assert.Throws<CudaOutOfMemoryException>(() => cache.Take(9 << 20, out _), "more than the device has: the error still comes");
        Assert.That(cache.CachedBytes, Is.EqualTo(0));
    }

    [Test]
    public void Blocks_given_back_after_dispose_go_to_the_driver()
    {
        var driver = new PretendDriver(limit: 1 << 30);
        var cache = new DeviceMemoryCache(driver.Allocate, driver.Free);
        var kept = cache.Take(4096, out long bucket);
        var cached = cache.Take(100, out long small);
        cache.Give(cached, small);
        cache.Dispose();
        Assert.That(driver.LiveBytes, Is.EqualTo(4096), "the cached block was freed");
        cache.Give(kept, bucket);
        Assert.That(driver.LiveBytes, Is.EqualTo(0));
    }

    private sealed class PretendDriver(long limit)
    {
        private readonly Dictionary<ulong, long> _live = [];
        private ulong _next = 1 << 16;

        public long Allocations { get; private set; }

        public long LiveBytes => _live.Values.Sum();

        public CUdeviceptr Allocate(long bytes)
        {
            if (LiveBytes + bytes > limit)
            {
                throw new CudaOutOfMemoryException("cuMemAlloc_v2", bytes);
            }
            Allocations++;
            var block = new CUdeviceptr(_next);
            _next += (ulong)bytes;
            _live.Add(block.Value, bytes);
            return block;
        }

        public void Free(CUdeviceptr block, long bytes)
        {
            Assert.That(_live.Remove(block.Value, out long size) && size == bytes, Is.True, "freed once, with its size");
        }
    }
}

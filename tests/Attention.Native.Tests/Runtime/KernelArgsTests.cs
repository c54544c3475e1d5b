using Attention.Native.Interop;
using Attention.Native.Ops;
using Attention.Native.Runtime;

namespace Attention.Native.Tests.Runtime;

public class KernelArgsTests
{
    [Test]
    public void Arguments_are_packed_at_their_natural_alignment()
    {
        var args = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
        args.Add(new CUdeviceptr(0x1234));
        args.Add(7);
        args.Add(3.5);          // 8-byte aligned after a 4-byte int
        args.Add((short)2);
        args.Add(1.5f);
        int[] offsets = [args.Offset(0), args.Offset(1), args.Offset(2), args.Offset(3), args.Offset(4)];
        int count = args.Count;
        double packedDouble = BitConverter.ToDouble(args.Storage[16..24]);
        ulong packedPointer = BitConverter.ToUInt64(args.Storage[0..8]);
        Assert.Multiple(() =>
        {
            Assert.That(count, Is.EqualTo(5));
            Assert.That(offsets, Is.EqualTo(new[] { 0, 8, 16, 24, 28 }));
            Assert.That(packedDouble, Is.EqualTo(3.5));
            Assert.That(packedPointer, Is.EqualTo(0x1234UL));
        });
    }

    /// <summary>
    /// The paged decode kernels take cuda/include/paged_keys.cuh's <c>PagedKeys</c> by value: three device pointers (table,
    /// sequence, visible) and two ints (pages per sequence, page size), 32 bytes; the managed mirror packs the same bytes.
    /// </summary>
    [Test]
    public void Paged_keys_are_packed_as_the_kernels_struct()
    {
        var args = new KernelArgs(stackalloc byte[64], stackalloc int[4]);
        args.Add(3);
        args.Add(new PagedKeys(new CUdeviceptr(0x100), new CUdeviceptr(0x200), new CUdeviceptr(0x300), 7, 16));
        int offset = args.Offset(1);
        var bytes = args.Storage.Slice(offset, 32).ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(System.Runtime.CompilerServices.Unsafe.SizeOf<PagedKeys>(), Is.EqualTo(32));
            Assert.That(offset, Is.EqualTo(8), "8-byte aligned, as its pointers");
            Assert.That(BitConverter.ToUInt64(bytes, 0), Is.EqualTo(0x100UL), "table");
            Assert.That(BitConverter.ToUInt64(bytes, 8), Is.EqualTo(0x200UL), "sequence");
            Assert.That(BitConverter.ToUInt64(bytes, 16), Is.EqualTo(0x300UL), "visible");
            Assert.That(BitConverter.ToInt32(bytes, 24), Is.EqualTo(7), "pages_per_sequence");
            Assert.That(BitConverter.ToInt32(bytes, 28), Is.EqualTo(16), "page_size");
        });
    }

    [Test]
    public void Overflowing_the_storage_throws()
    {
        Assert.Throws<InvalidOperationException>(() =>
        {
            var args = new KernelArgs(stackalloc byte[8], stackalloc int[4]);
            args.Add(1L);
            args.Add(2L);
        });
    }
}

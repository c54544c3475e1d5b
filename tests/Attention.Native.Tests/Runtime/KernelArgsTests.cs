using Attention.Native.Interop;
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

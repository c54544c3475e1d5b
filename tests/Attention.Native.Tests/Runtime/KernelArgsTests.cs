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

    /// <summary>
    /// The softmax-attention kernels take cuda/include/attention_shape.cuh's <c>AttentionShape</c> by value: ten 4-byte fields,
    /// the query and key offsets, the block table, pages per sequence and page size, then the rows of q, k, v, o, dO, dq, dk, dv
    /// (an 8-byte batch stride and 4-byte token and head strides each), 200 bytes; the managed mirror packs the same bytes, and
    /// the largest launches (the CUDA-core forward's eleven arguments, the backward's nine pointers and the shape) fit
    /// <see cref="SoftmaxAttentionCuda.ArgumentBytes"/>.
    /// </summary>
    [Test]
    public void Attention_shapes_are_packed_as_the_kernels_struct()
    {
        static SoftmaxAttentionCuda.Rows R(int i) => new((1L << 40) + i, 100 + i, 200 + i);
        var strides = new SoftmaxAttentionCuda.Strides(R(0), R(1), R(2), R(3), R(4), R(5), R(6), R(7));
        var shape = new SoftmaxAttentionCuda.Shape(2, 3, 4, 5, 6, 7, 8, 9, 0.5f, 1, new CUdeviceptr(0x100), new CUdeviceptr(0x200), new CUdeviceptr(0x300), 11, 16, strides);
        var args = new KernelArgs(stackalloc byte[SoftmaxAttentionCuda.ArgumentBytes], stackalloc int[16]);
        for (int i = 0; i < 8; i++)
        {
            args.Add(new CUdeviceptr((ulong)i)); // the forward's o, lse, partials, q, k, v, bias
        }
        args.Add(shape);
        args.Add(2);
        args.Add(64);
        int offset = args.Offset(8), end = args.Offset(10) + sizeof(int);
        var bytes = args.Storage.Slice(offset, 200).ToArray();
        var backward = new KernelArgs(stackalloc byte[SoftmaxAttentionCuda.ArgumentBytes], stackalloc int[16]);
        for (int i = 0; i < 9; i++)
        {
            backward.Add(new CUdeviceptr((ulong)i)); // dq, dbias (or dk, dv), q, k, v, bias, dO, lse, delta
        }
        backward.Add(shape);
        int backwardEnd = backward.Offset(9) + 200;
        Assert.Multiple(() =>
        {
            Assert.That(System.Runtime.CompilerServices.Unsafe.SizeOf<SoftmaxAttentionCuda.Shape>(), Is.EqualTo(200));
            Assert.That(System.Runtime.CompilerServices.Unsafe.SizeOf<SoftmaxAttentionCuda.Rows>(), Is.EqualTo(16));
            Assert.That(BitConverter.ToInt32(bytes, 0), Is.EqualTo(2), "batch");
            Assert.That(BitConverter.ToInt32(bytes, 28), Is.EqualTo(9), "length");
            Assert.That(BitConverter.ToSingle(bytes, 32), Is.EqualTo(0.5f), "scale");
            Assert.That(BitConverter.ToInt32(bytes, 36), Is.EqualTo(1), "causal");
            Assert.That(BitConverter.ToUInt64(bytes, 40), Is.EqualTo(0x100UL), "cu_q");
            Assert.That(BitConverter.ToUInt64(bytes, 48), Is.EqualTo(0x200UL), "cu_k");
            Assert.That(BitConverter.ToUInt64(bytes, 56), Is.EqualTo(0x300UL), "pages");
            Assert.That(BitConverter.ToInt32(bytes, 64), Is.EqualTo(11), "pages_per_sequence");
            Assert.That(BitConverter.ToInt32(bytes, 68), Is.EqualTo(16), "page_size");
            string[] names = ["q", "k", "v", "o", "d_o", "dq", "dk", "dv"];
            for (int i = 0; i < 8; i++)
            {
                int at = 72 + (16 * i);
                Assert.That(BitConverter.ToInt64(bytes, at), Is.EqualTo((1L << 40) + i), $"strides.{names[i]}.batch");
                Assert.That(BitConverter.ToInt32(bytes, at + 8), Is.EqualTo(100 + i), $"strides.{names[i]}.token");
                Assert.That(BitConverter.ToInt32(bytes, at + 12), Is.EqualTo(200 + i), $"strides.{names[i]}.head");
            }
            Assert.That(offset, Is.EqualTo(64), "after eight pointers");
            Assert.That(end, Is.LessThanOrEqualTo(SoftmaxAttentionCuda.ArgumentBytes), "the forward's arguments fit their storage");
            Assert.That(backwardEnd, Is.LessThanOrEqualTo(SoftmaxAttentionCuda.ArgumentBytes), "the backward's arguments fit their storage");
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

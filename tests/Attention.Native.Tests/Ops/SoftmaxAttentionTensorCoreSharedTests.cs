using Attention.Native.Ops;

namespace Attention.Native.Tests.Ops;

/// <summary>The tensor-core attention kernels' shared memory (host arithmetic, checked without a GPU).</summary>
public class SoftmaxAttentionTensorCoreSharedTests
{
    // Q tile (64 rows) + two K and two V tiles (64 rows each), 16-bit.
    [TestCase(64, 64, ExpectedResult = ((64 + 128) * 64 * 2) + (128 * 64 * 2))]
    [TestCase(128, 128, ExpectedResult = 80 * 1024)]
    [TestCase(256, 128, ExpectedResult = 128 * 1024)]
    public int Forward_holds_q_and_two_k_and_v_tiles(int dqk, int dv) => SoftmaxAttentionTensorCoreCuda.ForwardSharedBytes(dqk, dv);

    [TestCase(128, 128, ExpectedResult = 128 * 256 * 2)]                  // Q, dO, K, V: 64 rows each
    [TestCase(256, 128, ExpectedResult = (128 * 384 * 2) + (64 * 64 * 2))] // + the wide kernel's dS tile
    public int Dq_kernel(int dqk, int dv) => SoftmaxAttentionTensorCoreCuda.DqSharedBytes(dqk, dv);

    [TestCase(128, 128, ExpectedResult = (96 * 256 * 2) + 256)]
    [TestCase(192, 128, ExpectedResult = (96 * 320 * 2) + 256 + (2 * 64 * 32 * 2))]
    public int DkDv_kernel(int dqk, int dv) => SoftmaxAttentionTensorCoreCuda.DkDvSharedBytes(dqk, dv);

    [Test]
    public void Every_width_fits_an_a100s_opt_in_shared_memory()
    {
        const int a100 = 163 * 1024; // sm_80's largest dynamic shared memory per block
        foreach (var (qk, v) in SoftmaxAttentionTensorCoreCuda.Widths)
        {
            Assert.That(SoftmaxAttentionTensorCoreCuda.ForwardSharedBytes(qk, v), Is.LessThanOrEqualTo(a100), $"forward {qk}/{v}");
            Assert.That(SoftmaxAttentionTensorCoreCuda.DqSharedBytes(qk, v), Is.LessThanOrEqualTo(a100), $"dq {qk}/{v}");
            Assert.That(SoftmaxAttentionTensorCoreCuda.DkDvSharedBytes(qk, v), Is.LessThanOrEqualTo(a100), $"dk/dv {qk}/{v}");
        }
    }
}

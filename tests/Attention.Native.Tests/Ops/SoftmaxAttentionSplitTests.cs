using Attention.Native.Ops;

namespace Attention.Native.Tests.Ops;

/// <summary>The split-KV plan of the CUDA attention forward (a pure function, checked without a GPU).</summary>
public class SoftmaxAttentionSplitTests
{
    [TestCase(132, 8, 5000)]
    [TestCase(132, 16, 1000)]
    [TestCase(108, 1, 32768)]
    [TestCase(132, 64, 600)]
    [TestCase(1, 1, 100000)]
    public void Splits_cover_every_key_once_in_tile_multiples(int multiprocessors, long blocks, int keys)
    {
        var (splits, perSplit) = SoftmaxAttentionCuda.PlanSplits(multiprocessors, blocks, keys);
        Assert.Multiple(() =>
        {
            Assert.That(splits, Is.GreaterThanOrEqualTo(1));
            Assert.That((long)splits * perSplit, Is.GreaterThanOrEqualTo(keys), "every key is in a split");
            Assert.That((long)(splits - 1) * perSplit, Is.LessThan(keys), "no split is empty");
            if (splits > 1)
            {
                Assert.That(perSplit % 32, Is.Zero, "splits start on key-tile boundaries");
                Assert.That(perSplit, Is.GreaterThanOrEqualTo(256), "a split is worth a block");
                Assert.That(blocks * splits, Is.LessThanOrEqualTo(4L * multiprocessors), "no more blocks than the device needs");
            }
        });
    }

    [Test]
    public void A_decode_step_against_a_long_cache_is_split_and_a_full_prefill_is_not()
    {
        Assert.That(SoftmaxAttentionCuda.PlanSplits(132, 8, 32768).Splits, Is.GreaterThan(16));
        Assert.That(SoftmaxAttentionCuda.PlanSplits(132, 64 * 32 * 8, 1024).Splits, Is.EqualTo(1));
        Assert.That(SoftmaxAttentionCuda.PlanSplits(132, 8, 300).Splits, Is.EqualTo(1), "short caches are not worth a combine pass");
    }
}
